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
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("task") {
        run_task(&args[1..]);
        return;
    }
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
    // A health check connects and closes without a request: nothing to log.
    if reader.read_line(&mut request_line).is_err() || request_line.trim().is_empty() {
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

/// `lattice-app task [--result FILE] [--count N]`: a one-off job for the
/// README's task tour: logs N numbered lines, then writes a small JSON result
/// (what a task's `result_file` returns).
fn run_task(args: &[String]) {
    let mut result = None;
    let mut count: u64 = 3;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--result" => result = rest.next().cloned(),
            "--count" => count = rest.next().and_then(|n| n.parse().ok()).unwrap_or(count),
            other => {
                eprintln!("lattice-app task: unknown argument {other:?}; usage: lattice-app task [--result FILE] [--count N]");
                std::process::exit(2);
            }
        }
    }
    let mut sum = 0;
    for i in 1..=count {
        sum += i;
        println!("lattice-app task: step {i} of {count}");
    }
    if let Some(path) = result {
        let json = format!("{{\"steps\": {count}, \"sum\": {sum}}}\n");
        if let Err(err) = std::fs::write(&path, json) {
            eprintln!("lattice-app task: cannot write {path}: {err}");
            std::process::exit(1);
        }
    }
}
