//! The health check an LRP's monitor runs inside its container.
//!
//! `healthcheck --port N [--uri /path] [--timeout 1s|500ms] [--host H]
//! [--until-ready-interval 20ms]`: without `--uri`, healthy when a TCP
//! connection to H:N opens; with it, healthy when an HTTP/1.1 `GET` of the
//! path answers 2xx or 3xx (redirects are not followed). The whole check
//! (connect and answer) must finish within the timeout.
//!
//! With `--until-ready-interval`, an unhealthy target is tried again after
//! that interval, until it is healthy or the timeout has passed (as Diego's
//! healthcheck `-until-ready-interval`): the rep's checks of a starting
//! instance, one process per timeout instead of one per try.
//!
//! HTTP is written by hand over a `TcpStream`: the binary goes into every
//! container, so it stays small and static (no TLS, no HTTP library).
//!
//! # Exit codes
//! 0 healthy; 1 unhealthy, with one line on stderr saying why ("failed to
//! connect to 127.0.0.1:8080: connection refused"); 2 bad usage.
//!
//! # Caveats
//! A `--host` that is neither an IP address nor `localhost` is resolved
//! through the C library, which in a static binary works only where the
//! image holds the libc's name-service modules.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::args::{flags, UsageError};

pub const USAGE: &str = "usage: healthcheck --port N [--uri /path] [--timeout 1s|500ms] [--host 127.0.0.1] [--until-ready-interval 20ms]";

/// Default of `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default of `--host`: the container's own loopback.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Most bytes read while looking for the HTTP status line.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthcheckArgs {
    pub host: String,
    pub port: u16,
    /// The path to `GET`, always starting with `/`; a TCP check when `None`.
    pub uri: Option<String>,
    pub timeout: Duration,
    /// Try again after this long while unhealthy, until the timeout.
    pub until_ready_interval: Option<Duration>,
}

impl HealthcheckArgs {
    /// `None` when help was asked for.
    ///
    /// # Errors
    /// An unknown flag, a missing or bad `--port`, a bad `--timeout`.
    pub fn parse(args: Vec<OsString>) -> Result<Option<HealthcheckArgs>, UsageError> {
        let mut port = None;
        let mut uri = None;
        let mut timeout = DEFAULT_TIMEOUT;
        let mut host = DEFAULT_HOST.to_string();
        let mut until_ready_interval = None;
        for flag in flags(args)? {
            match flag.name.as_str() {
                "--help" => return Ok(None),
                "--port" => {
                    let parsed = flag.value.parse::<u16>().ok().filter(|p| *p != 0);
                    port = Some(parsed.ok_or_else(|| {
                        UsageError(format!("--port {:?} is not a port (1-65535)", flag.value))
                    })?);
                }
                "--uri" if flag.value.starts_with('/') => uri = Some(flag.value),
                "--uri" => uri = Some(format!("/{}", flag.value)),
                "--timeout" => timeout = parse_duration(&flag.value)?,
                "--host" if !flag.value.is_empty() => host = flag.value,
                "--host" => return Err(UsageError("--host needs a value".to_string())),
                "--until-ready-interval" => {
                    let interval = parse_duration(&flag.value).map_err(|_| {
                        UsageError(format!(
                            "--until-ready-interval {:?} is not a duration like 20ms or 1s",
                            flag.value
                        ))
                    })?;
                    until_ready_interval = Some(interval);
                }
                other => return Err(UsageError(format!("unknown flag {other}"))),
            }
        }
        let port = port.ok_or_else(|| UsageError("--port is required".to_string()))?;
        Ok(Some(HealthcheckArgs {
            host,
            port,
            uri,
            timeout,
            until_ready_interval,
        }))
    }

    /// `host:port`, bracketing an IPv6 address.
    pub fn target(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A positive duration: a number (fractions allowed) with a unit of `ms`,
/// `s` or `m`: `1s`, `500ms`, `1.5s`.
///
/// # Errors
/// No unit, an unknown unit, or not a positive number.
pub fn parse_duration(text: &str) -> Result<Duration, UsageError> {
    let bad = || {
        UsageError(format!(
            "--timeout {text:?} is not a duration like 1s or 500ms"
        ))
    };
    let (number, unit_secs) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        return Err(bad());
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let secs = value * unit_secs;
    if !secs.is_finite() || secs <= 0.0 || secs > 24.0 * 3600.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `1s`, `1.5s` or `500ms`, as a user would write it.
pub fn format_duration(duration: Duration) -> String {
    if duration.as_secs() == 0 {
        format!("{}ms", duration.as_millis())
    } else if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}

/// Why the target is unhealthy: one line for stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub String);

/// Probes the target; with an until-ready interval, again and again until
/// it is healthy or the timeout has passed.
///
/// # Errors
/// [`Unhealthy`] naming the target and the (last) reason.
pub fn check(args: &HealthcheckArgs) -> Result<(), Unhealthy> {
    let deadline = Instant::now() + args.timeout;
    let Some(interval) = args.until_ready_interval else {
        return check_by(args, deadline);
    };
    loop {
        let unhealthy = match check_by(args, deadline) {
            Ok(()) => return Ok(()),
            Err(unhealthy) => unhealthy,
        };
        let now = Instant::now();
        if now + interval >= deadline {
            return Err(unhealthy);
        }
        std::thread::sleep(interval);
    }
}

/// One probe, finished by `deadline`.
fn check_by(args: &HealthcheckArgs, deadline: Instant) -> Result<(), Unhealthy> {
    let target = args.target();
    let stream = connect(args, deadline).map_err(|err| {
        Unhealthy(format!(
            "failed to connect to {target}: {}",
            describe(&err, args.timeout)
        ))
    })?;
    let Some(uri) = &args.uri else {
        return Ok(());
    };
    let url = format!("http://{target}{uri}");
    let status_line = http_get(stream, &target, uri, deadline)
        .map_err(|err| Unhealthy(format!("GET {url}: {}", describe(&err, args.timeout))))?;
    match parse_status_line(&status_line) {
        Some((code, _)) if (200..400).contains(&code) => Ok(()),
        Some((code, reason)) => Err(Unhealthy(
            format!("GET {url} answered {code} {reason}")
                .trim_end()
                .to_string(),
        )),
        None => Err(Unhealthy(format!(
            "GET {url}: not an HTTP response: {:?}",
            status_line
        ))),
    }
}

/// The addresses of `--host`. IP literals and `localhost` are handled here,
/// since a static binary's resolver needs files most images lack.
fn addresses(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)]);
    }
    let found: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    if found.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "host has no address",
        ));
    }
    Ok(found)
}

fn connect(args: &HealthcheckArgs, deadline: Instant) -> io::Result<TcpStream> {
    let mut last_error = None;
    for address in addresses(&args.host, args.port)? {
        match TcpStream::connect_timeout(&address, remaining(deadline)?) {
            Ok(stream) => return Ok(stream),
            Err(err) => last_error = Some(err),
        }
    }
    Err(last_error.expect("addresses returns at least one address or an error"))
}

/// Time left before `deadline`; a timeout error once it has passed (a zero
/// socket timeout would mean "none").
fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::from(io::ErrorKind::TimedOut))
    } else {
        Ok(left)
    }
}

/// Sends the request and returns the response's status line.
fn http_get(
    mut stream: TcpStream,
    target: &str,
    uri: &str,
    deadline: Instant,
) -> io::Result<String> {
    stream.set_write_timeout(Some(remaining(deadline)?))?;
    let request = format!(
        "GET {uri} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: lattice-healthcheck\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        if let Some(end) = response.windows(2).position(|w| w == b"\r\n") {
            response.truncate(end);
            break;
        }
        if response.len() > MAX_STATUS_LINE {
            break;
        }
        stream.set_read_timeout(Some(remaining(deadline)?))?;
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            if response.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before any response",
                ));
            }
            break;
        }
        response.extend_from_slice(&buffer[..read]);
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// The code and reason of `HTTP/1.x CODE REASON`.
pub fn parse_status_line(line: &str) -> Option<(u16, &str)> {
    let rest = line.strip_prefix("HTTP/")?;
    let (_version, rest) = rest.split_once(' ')?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let code = code
        .parse::<u16>()
        .ok()
        .filter(|c| (100..600).contains(c))?;
    Some((code, reason.trim()))
}

/// An I/O error in a few lower-case words, without "(os error N)".
pub fn describe(err: &io::Error, timeout: Duration) -> String {
    match err.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("timed out after {}", format_duration(timeout))
        }
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset".to_string(),
        _ => {
            let text = err.to_string();
            let text = match text.find(" (os error") {
                Some(at) => &text[..at],
                None => &text,
            };
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => "unknown error".to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::os;
    use std::net::TcpListener;

    fn args(port: u16, uri: Option<&str>) -> HealthcheckArgs {
        HealthcheckArgs {
            host: "127.0.0.1".to_string(),
            port,
            uri: uri.map(String::from),
            timeout: Duration::from_secs(2),
            until_ready_interval: None,
        }
    }

    #[test]
    fn parses_arguments_with_defaults() {
        assert_eq!(
            HealthcheckArgs::parse(os(&["--port", "8080"])),
            Ok(Some(args(8080, None)).map(|a| HealthcheckArgs {
                timeout: DEFAULT_TIMEOUT,
                ..a
            }))
        );
        let parsed = HealthcheckArgs::parse(os(&[
            "--port=9",
            "--uri",
            "health",
            "--timeout",
            "500ms",
            "--host",
            "::1",
        ]))
        .expect("valid")
        .expect("not help");
        assert_eq!(parsed.uri.as_deref(), Some("/health"));
        assert_eq!(parsed.timeout, Duration::from_millis(500));
        assert_eq!(parsed.target(), "[::1]:9");
        assert_eq!(parsed.until_ready_interval, None);
        let parsed = HealthcheckArgs::parse(os(&["--port", "9", "--until-ready-interval", "20ms"]))
            .expect("valid")
            .expect("not help");
        assert_eq!(parsed.until_ready_interval, Some(Duration::from_millis(20)));
        assert_eq!(HealthcheckArgs::parse(os(&["-h"])), Ok(None));
    }

    #[test]
    fn refuses_bad_arguments() {
        for bad in [
            &[][..],
            &["--port", "0"],
            &["--port", "65536"],
            &["--port", "http"],
            &["--port", "1", "--timeout", "1"],
            &["--port", "1", "--host", ""],
            &["--port", "1", "--verbose", "yes"],
            &["--port", "1", "--until-ready-interval", "20"],
            &["--port", "1", "--until-ready-interval", ""],
            &["8080"],
        ] {
            assert!(HealthcheckArgs::parse(os(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_and_formats_durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "s", "0s", "-1s", "1h", "1", "NaNs", "infs"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some((200, "OK")));
        assert_eq!(
            parse_status_line("HTTP/1.0 404 Not Found"),
            Some((404, "Not Found"))
        );
        assert_eq!(parse_status_line("HTTP/1.1 204"), Some((204, "")));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line("HTTP/1.1 abc OK"), None);
        assert_eq!(parse_status_line("HTTP/1.1 999 Odd"), None);
    }

    #[test]
    fn describes_errors_in_lower_case() {
        let timeout = Duration::from_secs(1);
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(describe(&refused, timeout), "connection refused");
        let eagain = io::Error::from_raw_os_error(libc::EAGAIN);
        assert_eq!(describe(&eagain, timeout), "timed out after 1s");
        let unreachable = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert_eq!(describe(&unreachable, timeout), "no route to host");
    }

    #[test]
    fn until_ready_waits_for_a_port_that_opens_later() {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("loopback is available");
            probe.local_addr().expect("bound").port()
        };
        let (opened_sender, opened) = std::sync::mpsc::channel();
        let opener = std::thread::spawn(move || {
            // Refused at first: the check must try again.
            std::thread::sleep(Duration::from_millis(200));
            let listener = TcpListener::bind(("127.0.0.1", port)).expect("the port is still free");
            opened_sender.send(()).expect("the test waits");
            let _ = listener.accept();
        });
        let until_ready = HealthcheckArgs {
            timeout: Duration::from_secs(30),
            until_ready_interval: Some(Duration::from_millis(10)),
            ..args(port, None)
        };
        assert_eq!(check(&until_ready), Ok(()));
        assert!(opened.try_recv().is_ok(), "passed before the port opened");
        opener.join().expect("the opener ends");
    }

    #[test]
    fn until_ready_gives_up_with_the_last_reason_once_the_timeout_passed() {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("loopback is available");
            probe.local_addr().expect("bound").port()
        };
        let until_ready = HealthcheckArgs {
            timeout: Duration::from_millis(300),
            until_ready_interval: Some(Duration::from_millis(20)),
            ..args(port, None)
        };
        let err = check(&until_ready).expect_err("nothing listens");
        assert!(err.0.contains("connection refused"), "{err}");
    }

    #[test]
    fn tcp_check_passes_on_a_listening_port_and_fails_on_a_closed_one() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback is available");
        let port = listener.local_addr().expect("bound").port();
        assert_eq!(check(&args(port, None)), Ok(()));
        drop(listener);
        let err = check(&args(port, None)).expect_err("nothing listens");
        assert_eq!(
            err.0,
            format!("failed to connect to 127.0.0.1:{port}: connection refused")
        );
    }

    /// Serves one connection with `response`, returning the request seen.
    fn serve_once(response: &'static str) -> (u16, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback is available");
        let port = listener.local_addr().expect("bound").port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("the check connects");
            let mut request = Vec::new();
            let mut buffer = [0u8; 512];
            while !request.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buffer).expect("request arrives");
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buffer[..n]);
            }
            stream
                .write_all(response.as_bytes())
                .expect("the check reads");
            String::from_utf8_lossy(&request).into_owned()
        });
        (port, server)
    }

    #[test]
    fn http_check_sends_a_get_and_judges_the_status() {
        let (port, server) = serve_once("HTTP/1.1 302 Found\r\nLocation: /x\r\n\r\n");
        assert_eq!(check(&args(port, Some("/health?x=1"))), Ok(()));
        let request = server.join().expect("server thread ends");
        assert!(
            request.starts_with("GET /health?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains(&format!("Host: 127.0.0.1:{port}\r\n")));

        let (port, server) = serve_once("HTTP/1.1 500 Internal Server Error\r\n\r\n");
        let err = check(&args(port, Some("/"))).expect_err("500 is unhealthy");
        assert_eq!(
            err.0,
            format!("GET http://127.0.0.1:{port}/ answered 500 Internal Server Error")
        );
        server.join().expect("server thread ends");

        let (port, server) = serve_once("hello\r\n");
        let err = check(&args(port, Some("/"))).expect_err("not http");
        assert!(err.0.contains("not an HTTP response"), "{}", err.0);
        server.join().expect("server thread ends");
    }

    #[test]
    fn http_check_times_out_on_a_silent_server() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("loopback is available");
        let port = listener.local_addr().expect("bound").port();
        let mut silent = args(port, Some("/"));
        silent.timeout = Duration::from_millis(200);
        // The kernel completes the handshake from the backlog; nobody answers.
        let err = check(&silent).expect_err("no answer");
        assert_eq!(
            err.0,
            format!("GET http://127.0.0.1:{port}/: timed out after 200ms")
        );
        drop(listener);
    }
}
