//! Routed throughput against what a user would put in front of the same
//! instance (issue 16, goal 4): one instance of the sample app
//! (`lattice-app`, the image `ltc create APP lattice/lattice-app` runs) in
//! a real container, and `wrk` against, in one run:
//!
//! - `container`: the container's own address (no proxy at all);
//! - `host port`: the port the engine publishes (its port proxy);
//! - `router direct`: our HTTP router, routing as it does when the cell
//!   advertises its container network (the container's address);
//! - `router host`: our router through the published port (as it must when
//!   routers cannot reach the container network);
//! - `nginx`, `haproxy` (Debian's packages): proxying the published port,
//!   the way they can without knowing the container's address;
//! - `nginx direct`, `haproxy direct`: the same two proxying the
//!   container's address, as our router does: what the proxy hop itself
//!   costs on this machine, whoever makes it.
//!
//! Each row is `wrk -t2 -c32 -d5s --latency` with the route's `Host`,
//! after one unmeasured second against the container. The targets that
//! reach the container's address (`container`, `router direct`, `nginx
//! direct`, `haproxy direct`) run in turn `ROUTING_BENCH_ROUNDS` times (3),
//! so a slow moment of the machine does not land on one of them only;
//! each round is printed and the median one is each row.
//!
//! The app answers `Connection: close`, so every request is a new
//! connection from each proxy to the app, as with many small apps.
//!
//! Then the same with a backend that keeps connections alive (an nginx
//! on loopback answering a fixed 2-byte body, one worker): `keep-alive
//! backend` itself, `router keep-alive`, and nginx (`keepalive 64` to its
//! upstream, HTTP/1.1) and haproxy (`http-reuse always`) in front of it,
//! so each proxy may reuse its backend connections.
//!
//! Run: `cargo bench -p lattice --bench routing` (needs Docker, and `wrk`,
//! `nginx` and `haproxy` on PATH: `apt-get install wrk nginx-light
//! haproxy`; a missing one is skipped with a note). Builds the static
//! lifecycles on first use. `ROUTING_BENCH_SECONDS` changes the duration.
//! Run it with `sysctl -w net.ipv4.tcp_tw_reuse=1` (and set it back to
//! `2` after): see [`tcp_time_wait_reuse`]; without it the bench says so
//! and its later rows are not comparable.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use lattice_garden::docker::{DockerGarden, DockerGardenConfig};
use lattice_garden::{ContainerSpec, Garden, ProcessSpec};
use lattice_router::{Endpoint, HttpRouter, HttpRouterConfig, RoutingTable, TableHandle};
use tokio_util::sync::CancellationToken;

/// As the `lattice` binary the router ships in.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const APP_IMAGE: &str = "lattice/lattice-app:latest";
const DIRECT_HOST: &str = "direct.bench";
const HOST_HOST: &str = "host.bench";
const KEEP_ALIVE_HOST: &str = "keepalive.bench";
const PATH: &str = "/index";

/// What `wrk` measured for one target.
#[derive(Clone)]
struct Row {
    name: &'static str,
    requests_per_second: f64,
    p99_ms: f64,
    errors: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    if which("wrk").is_none() {
        println!("routing bench skipped: `wrk` is not installed (apt-get install wrk)");
        return Ok(());
    }
    let seconds: u64 = std::env::var("ROUTING_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rounds: usize = std::env::var("ROUTING_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1);
    let owner = lattice_testkit::docker::OwnerGuard::new("bench-routing");
    let lifecycles = lattice_testkit::lifecycles::build_static();
    let garden = DockerGarden::connect(DockerGardenConfig::new(&lifecycles)).await?;
    garden
        .ensure_program_image(
            APP_IMAGE,
            &lifecycles.join("samples").join("lattice-app"),
            &["EXPOSE 8080".to_string()],
        )
        .await
        .context("cannot build the sample app's image")?;
    let handle = format!("{}-app", owner.owner());
    let info = garden
        .create(ContainerSpec {
            handle: handle.clone(),
            rootfs: "docker:///lattice/lattice-app#latest".to_string(),
            ports: vec![8080],
            properties: owner.properties(),
            ..Default::default()
        })
        .await
        .context("cannot create the app's container")?;
    let mut app = garden
        .run(
            &handle,
            ProcessSpec {
                path: "/bin/lattice-app".to_string(),
                env: vec![
                    ("PORT".to_string(), "8080".to_string()),
                    ("INSTANCE_INDEX".to_string(), "0".to_string()),
                ],
                ..Default::default()
            },
        )
        .await
        .context("cannot start the app")?;
    // The app logs a line per request: read them, or its pipe fills up.
    let output = app.output();
    tokio::spawn(output.for_each(|_| async {}));

    let host_port = info
        .ports
        .iter()
        .find(|p| p.container_port == 8080)
        .context("port 8080 is not published")?
        .host_port;
    let published = format!("{}:{host_port}", info.host_ip);
    let container = format!("{}:8080", info.container_ip);
    anyhow::ensure!(
        !info.container_ip.is_empty() && garden.container_network_is_local().await,
        "this machine does not reach its containers' network; nothing to compare"
    );
    wait_for_answer(&published).await?;
    wait_for_answer(&container).await?;

    let scratch = tempfile::tempdir()?;
    let keep_alive = start_keep_alive_backend(scratch.path())?;
    let keep_alive_backend = keep_alive
        .as_ref()
        .map(|(_, port)| format!("127.0.0.1:{port}"));
    let shutdown = CancellationToken::new();
    let router = start_router(
        &container,
        &published,
        keep_alive_backend.as_deref(),
        shutdown.clone(),
    )
    .await?;
    let nginx = start_nginx(
        scratch.path(),
        &published,
        &container,
        keep_alive_backend.as_deref(),
    )?;
    let haproxy = start_haproxy(
        scratch.path(),
        &published,
        &container,
        keep_alive_backend.as_deref(),
    )?;

    if !tcp_time_wait_reuse() {
        println!(
            "note: net.ipv4.tcp_tw_reuse is not 1: after the first rows the ephemeral ports to the container run out (TIME_WAIT) and every row falls below 1k requests/s; `sysctl -w net.ipv4.tcp_tw_reuse=1` for the run gives comparable rows"
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "routing bench: wrk -t2 -c32 -d{seconds}s --latency, GET {PATH} of one lattice-app instance (Connection: close), {rounds} alternated rounds of container and router direct; load before: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let router = router.to_string();
    // The app's first second is slower than the rest (and varies): not
    // measured.
    wrk("warm-up", &container, "app.bench", 1)?;
    // Everything that reaches the container's address, in turn, each
    // round; the median round of each is its row.
    let mut direct_targets = vec![
        ("container", container.clone(), "app.bench"),
        ("router direct", router.clone(), DIRECT_HOST),
    ];
    if let Some((_, port)) = &nginx {
        direct_targets.push((
            "nginx direct",
            format!("127.0.0.1:{}", port + 2),
            "app.bench",
        ));
    }
    if let Some((_, port)) = &haproxy {
        direct_targets.push((
            "haproxy direct",
            format!("127.0.0.1:{}", port + 2),
            "app.bench",
        ));
    }
    let mut rounds_of: Vec<Vec<Row>> = vec![Vec::new(); direct_targets.len()];
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        for ((name, address, host), measured) in direct_targets.iter().zip(&mut rounds_of) {
            let row = wrk(name, address, host, seconds)?;
            line.push_str(&format!(" {name} {:.0} req/s;", row.requests_per_second));
            measured.push(row);
        }
        println!("{}", line.trim_end_matches(';'));
    }
    let mut rows: Vec<Row> = rounds_of.into_iter().map(median).collect();
    rows.push(wrk("host port", &published, "app.bench", seconds)?);
    rows.push(wrk("router host", &router, HOST_HOST, seconds)?);
    if let Some((_, port)) = &nginx {
        rows.push(wrk(
            "nginx",
            &format!("127.0.0.1:{port}"),
            "app.bench",
            seconds,
        )?);
    }
    if let Some((_, port)) = &haproxy {
        rows.push(wrk(
            "haproxy",
            &format!("127.0.0.1:{port}"),
            "app.bench",
            seconds,
        )?);
    }
    print_rows(
        &rows,
        "router direct",
        &[
            "container",
            "nginx direct",
            "haproxy direct",
            "host port",
            "nginx",
            "haproxy",
        ],
    );

    if let Some(backend) = &keep_alive_backend {
        println!("with a keep-alive backend (nginx on loopback, fixed answer):");
        let mut rows = vec![
            wrk("keep-alive backend", backend, "app.bench", seconds)?,
            wrk("router keep-alive", &router, KEEP_ALIVE_HOST, seconds)?,
        ];
        if let Some((_, port)) = &nginx {
            rows.push(wrk(
                "nginx keep-alive",
                &format!("127.0.0.1:{}", port + 1),
                "app.bench",
                seconds,
            )?);
        }
        if let Some((_, port)) = &haproxy {
            rows.push(wrk(
                "haproxy keep-alive",
                &format!("127.0.0.1:{}", port + 1),
                "app.bench",
                seconds,
            )?);
        }
        print_rows(
            &rows,
            "router keep-alive",
            &[
                "keep-alive backend",
                "nginx keep-alive",
                "haproxy keep-alive",
            ],
        );
    }

    for (mut child, _) in [nginx, haproxy, keep_alive].into_iter().flatten() {
        // SIGTERM, not SIGKILL: nginx's master stops its workers on the
        // way out; killed outright, it leaves them running.
        let stopped = Command::new("kill")
            .arg(child.id().to_string())
            .status()
            .is_ok_and(|status| status.success());
        if !stopped {
            let _ = child.kill();
        }
        let _ = child.wait();
    }
    shutdown.cancel();
    garden.destroy(&handle).await?;
    Ok(())
}

/// The round with the median rate (the upper one of an even count).
fn median(mut rounds: Vec<Row>) -> Row {
    rounds.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    rounds.swap_remove(rounds.len() / 2)
}

/// The rows, then `routed` against each of `anchors`.
fn print_rows(rows: &[Row], routed: &str, anchors: &[&str]) {
    println!(
        "{:<20} {:>12} {:>9} {:>7}",
        "target", "requests/s", "p99 ms", "errors"
    );
    for row in rows {
        println!(
            "{:<20} {:>12.0} {:>9.2} {:>7}",
            row.name, row.requests_per_second, row.p99_ms, row.errors
        );
    }
    let find = |name: &str| rows.iter().find(|r| r.name == name);
    let Some(routed_row) = find(routed) else {
        return;
    };
    let routed = routed_row;
    for &other in anchors {
        if let Some(other_row) = find(other) {
            println!(
                "{} / {other}: {:.2}x requests/s, p99 {:.2} vs {:.2} ms",
                routed.name,
                routed.requests_per_second / other_row.requests_per_second,
                routed.p99_ms,
                other_row.p99_ms
            );
        }
    }
}

/// `program`'s path on PATH, if installed.
fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

async fn wait_for_answer(address: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(response) = http.get(format!("http://{address}{PATH}")).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the app does not answer at {address}")
}

/// Our HTTP router with one route to the container's address (falling
/// back to the published port), one to the published port only, and one
/// to the keep-alive backend if there is one.
async fn start_router(
    container: &str,
    published: &str,
    keep_alive_backend: Option<&str>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let endpoint = |address: &str, fallback: Option<&str>| Endpoint {
        address: address.to_string(),
        fallback: fallback.map(str::to_string),
        process_guid: "bench".into(),
        log_guid: "bench".into(),
        index: 0,
        instance_guid: "bench-0".into(),
    };
    let mut http: std::collections::HashMap<String, Vec<Endpoint>> = [
        (
            DIRECT_HOST.to_string(),
            vec![endpoint(container, Some(published))],
        ),
        (HOST_HOST.to_string(), vec![endpoint(published, None)]),
    ]
    .into();
    if let Some(backend) = keep_alive_backend {
        http.insert(KEEP_ALIVE_HOST.to_string(), vec![endpoint(backend, None)]);
    }
    let table = TableHandle::new(RoutingTable {
        http,
        tcp: Default::default(),
    });
    // As `lattice up` and `lattice router` run it: one shard per core.
    let listener = lattice_router::bind_shared("127.0.0.1:0".parse()?)?;
    let address = listener.local_addr()?;
    let shards = std::thread::available_parallelism().map_or(1, usize::from);
    tokio::spawn(HttpRouter::serve_sharded(
        table,
        Arc::new(lattice_router::TracingAccessLog),
        HttpRouterConfig::default(),
        listener,
        shards,
        shutdown,
    ));
    Ok(address)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A free port whose next two ports are free too (checked, not reserved).
fn free_port_run() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let port = free_port()?;
        let next_free = |offset: u16| {
            port.checked_add(offset)
                .is_some_and(|next| std::net::TcpListener::bind(("127.0.0.1", next)).is_ok())
        };
        if next_free(1) && next_free(2) {
            return Ok(port);
        }
    }
    anyhow::bail!("no three adjacent free ports")
}

/// An nginx with one worker that answers every request with a fixed body
/// and keeps connections alive: the keep-alive backend.
fn start_keep_alive_backend(dir: &Path) -> anyhow::Result<Option<(Child, u16)>> {
    let Some(nginx) = which("nginx") else {
        println!(
            "keep-alive backend skipped: nginx is not installed (apt-get install nginx-light)"
        );
        return Ok(None);
    };
    let port = free_port()?;
    let servers = format!(
        "server {{\n\
           listen 127.0.0.1:{port};\n\
           keepalive_requests 1000000;\n\
           location / {{ default_type text/plain; return 200 \"0\\n\"; }}\n\
         }}\n"
    );
    let child = run_nginx(&nginx, &dir.join("backend"), 1, &servers)?;
    wait_for_port(port)?;
    Ok(Some((child, port)))
}

/// nginx in the foreground with two workers (one per core, like the
/// router's shards) proxying to `published` on a free port, on the port
/// after it to the keep-alive backend with pooled connections, and on the
/// next one to the container's address.
fn start_nginx(
    dir: &Path,
    published: &str,
    container: &str,
    keep_alive_backend: Option<&str>,
) -> anyhow::Result<Option<(Child, u16)>> {
    let Some(nginx) = which("nginx") else {
        println!("nginx skipped: not installed (apt-get install nginx-light)");
        return Ok(None);
    };
    let port = free_port_run()?;
    let mut servers = format!(
        "upstream app {{ server {published}; }}\n\
         server {{\n\
           listen 127.0.0.1:{port};\n\
           location / {{ proxy_pass http://app; proxy_set_header Host $host; }}\n\
         }}\n\
         upstream container {{ server {container}; }}\n\
         server {{\n\
           listen 127.0.0.1:{direct_port};\n\
           location / {{ proxy_pass http://container; proxy_set_header Host $host; }}\n\
         }}\n",
        direct_port = port + 2
    );
    if let Some(backend) = keep_alive_backend {
        servers.push_str(&format!(
            "upstream keepalive {{ server {backend}; keepalive 64; }}\n\
             server {{\n\
               listen 127.0.0.1:{};\n\
               keepalive_requests 1000000;\n\
               location / {{\n\
                 proxy_pass http://keepalive; proxy_set_header Host $host;\n\
                 proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
               }}\n\
             }}\n",
            port + 1
        ));
    }
    let child = run_nginx(&nginx, &dir.join("nginx"), 2, &servers)?;
    wait_for_port(port)?;
    Ok(Some((child, port)))
}

/// Runs nginx in the foreground with `workers` workers, its files under
/// `prefix`, serving `servers` (upstream and server blocks).
fn run_nginx(nginx: &Path, prefix: &Path, workers: usize, servers: &str) -> anyhow::Result<Child> {
    std::fs::create_dir_all(prefix.join("logs"))?;
    let config = format!(
        "worker_processes {workers};\n\
         error_log {prefix}/logs/error.log;\n\
         pid {prefix}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n\
           access_log off;\n\
           client_body_temp_path {prefix};\n\
           proxy_temp_path {prefix};\n\
           fastcgi_temp_path {prefix};\n\
           uwsgi_temp_path {prefix};\n\
           scgi_temp_path {prefix};\n\
           {servers}\
         }}\n",
        prefix = prefix.display()
    );
    let config_path = prefix.join("nginx.conf");
    std::fs::write(&config_path, config)?;
    Command::new(nginx)
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(&config_path)
        .args(["-g", "daemon off; master_process on;"])
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start nginx")
}

/// haproxy in the foreground with two threads proxying to `published` on
/// a free port, on the port after it to the keep-alive backend, and on the
/// next one to the container's address.
fn start_haproxy(
    dir: &Path,
    published: &str,
    container: &str,
    keep_alive_backend: Option<&str>,
) -> anyhow::Result<Option<(Child, u16)>> {
    let Some(haproxy) = which("haproxy") else {
        println!("haproxy skipped: not installed (apt-get install haproxy)");
        return Ok(None);
    };
    let port = free_port_run()?;
    let mut config = format!(
        "global\n  nbthread 2\n  maxconn 4096\n\
         defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
         frontend web\n  bind 127.0.0.1:{port}\n  default_backend app\n\
         backend app\n  server app {published}\n\
         frontend direct\n  bind 127.0.0.1:{direct_port}\n  default_backend container\n\
         backend container\n  server container {container}\n",
        direct_port = port + 2
    );
    if let Some(backend) = keep_alive_backend {
        config.push_str(&format!(
            "frontend keepalive\n  bind 127.0.0.1:{}\n  default_backend keepalive\n\
             backend keepalive\n  http-reuse always\n  server keepalive {backend}\n",
            port + 1
        ));
    }
    let config_path = dir.join("haproxy.cfg");
    std::fs::write(&config_path, config)?;
    let child = Command::new(haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start haproxy")?;
    wait_for_port(port)?;
    Ok(Some((child, port)))
}

fn wait_for_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("nothing listens on 127.0.0.1:{port}")
}

/// Runs `wrk` against `address` with `Host: host`; parses requests/s, the
/// 99th percentile and the errors.
fn wrk(name: &'static str, address: &str, host: &str, seconds: u64) -> anyhow::Result<Row> {
    let output = Command::new("wrk")
        .args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency"])
        .args(["-H", &format!("Host: {host}")])
        .arg(format!("http://{address}{PATH}"))
        .output()
        .context("cannot run wrk")?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    anyhow::ensure!(output.status.success(), "wrk failed: {text}");
    let requests_per_second = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))?;
    let p99_ms = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(|v| parse_wrk_duration(v.trim()))
        .with_context(|| format!("no 99% latency in wrk's output:\n{text}"))?;
    let errors = parse_errors(&text);
    Ok(Row {
        name,
        requests_per_second,
        p99_ms,
        errors,
    })
}

/// Whether the kernel may reuse a TIME_WAIT port for a new outgoing
/// connection to another machine (`net.ipv4.tcp_tw_reuse = 1`).
///
/// Every request to the app is a new connection to one address and port,
/// and the clients (`wrk`, the proxies) close first, so each leaves a port
/// in TIME_WAIT for 60 s. With the default (`2`: loopback only) some 28,000
/// ephemeral ports run out after a few seconds at 20k requests/s, and
/// from then on every target, the container itself included, falls to
/// under 1k requests/s: such a row measures the port range, not the proxy.
fn tcp_time_wait_reuse() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_tw_reuse").is_ok_and(|v| v.trim() == "1")
}

/// `1.23ms`, `456.00us`, `1.02s` as milliseconds.
fn parse_wrk_duration(text: &str) -> Option<f64> {
    let units: BTreeMap<&str, f64> =
        [("us", 0.001), ("ms", 1.0), ("s", 1000.0), ("m", 60_000.0)].into();
    for suffix in ["us", "ms", "s", "m"] {
        if let Some(number) = text.strip_suffix(suffix) {
            if let Ok(value) = number.parse::<f64>() {
                return Some(value * units[suffix]);
            }
        }
    }
    None
}

/// Socket errors and non-2xx/3xx answers wrk reports.
fn parse_errors(text: &str) -> u64 {
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    errors
}
