//! End-to-end: the built `ltc` binary against a real receptor in process,
//! with its config in a temporary directory.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use lattice_bbs::{SharedStore, SqliteStore};
use lattice_receptor::ReceptorConfig;
use tokio_util::sync::CancellationToken;

/// Runs `ltc args` with its config in `config_dir` and no ambient LTC_* setting.
fn ltc(config_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ltc"))
        .args(args)
        .env("LTC_CONFIG_DIR", config_dir)
        .env_remove("LTC_TARGET")
        .env_remove("LTC_USERNAME")
        .env_remove("LTC_PASSWORD")
        .output()
        .expect("the ltc binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

async fn start_receptor(dir: &Path) -> (String, CancellationToken) {
    let store: SharedStore = Arc::new(SqliteStore::open(&dir.join("bbs.sqlite3")).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let app = lattice_receptor::app(store, ReceptorConfig::default(), shutdown.clone());
    tokio::spawn(lattice_receptor::serve(listener, app, shutdown.clone()));
    (url, shutdown)
}

// Multi-threaded so that the receptor keeps serving while the test blocks
// on the ltc process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_submit_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let (url, shutdown) = start_receptor(dir.path()).await;
    let config = dir.path().join("config");

    let out = ltc(&config, &["target", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with(&format!("Target set to {url}")),
        "{}",
        stdout(&out)
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"task_guid": "t1", "domain": "tests", "rootfs": "docker:///busybox",
            "action": {"run": {"path": "/bin/true"}}, "memory_mb": -5}"#,
    )
    .unwrap();
    let out = ltc(&config, &["submit-task", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "error: task \"t1\" was not submitted: memory_mb: must be >= 0, got -5\n"
    );

    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"task_guid": "t2", "domain": "tests", "rootfs": "docker:///busybox",
            "action": {"run": {"path": "/bin/true"}}}"#,
    )
    .unwrap();
    let out = ltc(&config, &["submit-task", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = ltc(&config, &["list-tasks"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = stdout(&out);
    assert!(
        listing.contains("t2") && listing.contains("PENDING"),
        "{listing}"
    );
    assert!(
        !listing.contains("t1"),
        "the rejected task was stored:\n{listing}"
    );

    shutdown.cancel();
}

#[test]
fn usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = ltc(dir.path(), &["no-such-command"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn an_unreachable_receptor_exits_1_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_ltc"))
        .args(["list-tasks"])
        .env("LTC_CONFIG_DIR", dir.path())
        .env("LTC_TARGET", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let message = stderr(&out);
    assert!(
        message.starts_with(&format!(
            "error: cannot list tasks: the receptor at http://127.0.0.1:{port} is not reachable; start it with `lattice up`"
        )),
        "{message}"
    );
}
