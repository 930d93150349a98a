//! `lattice-app`: the built-in sample app (like Lattice's lattice-app).
//!
//! A tiny static HTTP server, so a machine that cannot pull images still has
//! an app to run: `ltc create hello lattice/lattice-app`. It answers `/` with
//! its instance index, guid and uptime, `/env` with its environment, `/index`
//! with just the index (for scripts), and `/exit` crashes it on purpose. One
//! log line per request goes to stdout.
//!
//! std only, so it links statically and runs in an image from scratch.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".to_string());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("lattice-app: cannot listen on port {port}: {err}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    println!("lattice-app listening on port {port}");
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => serve(stream, started),
            Err(err) => eprintln!("lattice-app: accept failed: {err}"),
        }
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "?".to_string())
}

fn serve(mut stream: TcpStream, started: Instant) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // Drain the headers; the app reads no bodies.
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
        line.clear();
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let index = env("INSTANCE_INDEX");
    let (status, body) = match path {
        "/" => (
            "200 OK",
            format!(
                "lattice-app: instance {index}, guid {}, up {} s\n",
                env("INSTANCE_GUID"),
                started.elapsed().as_secs()
            ),
        ),
        "/index" => ("200 OK", format!("{index}\n")),
        "/env" => {
            let mut vars: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
            vars.sort();
            ("200 OK", vars.join("\n") + "\n")
        }
        "/exit" => {
            println!("lattice-app instance {index}: exiting on request");
            std::process::exit(1);
        }
        _ => ("404 Not Found", format!("no such page: {path}\n")),
    };
    println!("lattice-app instance {index}: {method} {path} -> {status}");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
