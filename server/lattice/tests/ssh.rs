//! `ltc ssh` end to end on the real Docker engine: Debian's OpenSSH client
//! (with sshpass for the password) and `ltc ssh` log into instances through
//! the cluster's SSH proxy; commands run in a busybox image and in an image
//! without a shell; a port the app does not route is reached with `-L`.

mod common;

use std::process::Output;
use std::time::Duration;

use common::{eventually, run_ltc, Cluster, ClusterOptions};
use lattice_models::{ActualLrpState, DesiredLrpCreateRequest};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(90);
const USER: &str = "admin";
const PASSWORD: &str = "s3cret";

/// Busybox httpd on $PORT (routed) and on 9090 (not routed), each serving
/// a page of its own.
async fn web_app(guid: &str) -> DesiredLrpCreateRequest {
    let rootfs = lattice_testkit::images::busybox_image().await;
    serde_json::from_value(json!({
        "process_guid": guid,
        "domain": "tests",
        "rootfs": rootfs,
        "instances": 1,
        "memory_mb": 32,
        "ports": [8080],
        "start_timeout": 30,
        "action": {"run": {"path": "/bin/sh", "args": ["-c",
            "mkdir -p /tmp/hidden && echo not-routed > /tmp/hidden/index.html && httpd -p 9090 -h /tmp/hidden; \
             echo $INSTANCE_INDEX > /tmp/index.html; exec httpd -f -p $PORT -h /tmp"]}},
        "monitor": {"run": {"path": "/bin/wget", "args": ["-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html"]}},
    }))
    .expect("valid request")
}

/// The sample app's image: one static program, no shell, no tools.
fn bare_app(guid: &str) -> DesiredLrpCreateRequest {
    serde_json::from_value(json!({
        "process_guid": guid,
        "domain": "tests",
        "rootfs": "docker:///lattice/lattice-app#latest",
        "instances": 1,
        "memory_mb": 32,
        "ports": [8080],
        "start_timeout": 30,
        "action": {"run": {"path": "/bin/lattice-app", "args": []}},
        "monitor": {"run": {"path": "/.lattice/bin/healthcheck", "args": ["--port", "8080"]}},
    }))
    .expect("valid request")
}

async fn running(cluster: &Cluster, guid: &str) {
    eventually(&format!("{guid} running"), WAIT, || async {
        let lrps = cluster
            .client
            .actual_lrps_by_process_guid(guid)
            .await
            .ok()?;
        lrps.iter()
            .any(|l| l.state == ActualLrpState::Running)
            .then_some(())
    })
    .await;
}

/// The OpenSSH command line for `user` at the cluster's proxy.
fn ssh_command(cluster: &Cluster, user: &str, password: &str) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("sshpass");
    command.env("SSHPASS", password).args([
        "-e",
        "ssh",
        "-p",
        &cluster.ssh.port().to_string(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=INFO",
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "ConnectTimeout=10",
        "-l",
        user,
        "127.0.0.1",
    ]);
    command.kill_on_drop(true);
    command
}

/// Runs `ssh USER@proxy ARGS` with `stdin`, and waits for it.
async fn ssh(cluster: &Cluster, user: &str, password: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = ssh_command(cluster, user, password);
    command
        .arg("-T")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("sshpass and ssh are installed");
    let mut input = child.stdin.take().expect("piped");
    let data = stdin.to_vec();
    let writer = tokio::spawn(async move {
        // A command that does not read its stdin closes it early.
        let _ = input.write_all(&data).await;
    });
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("ssh finishes")
        .expect("ssh ran");
    writer.await.expect("the writer ends");
    output
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The variable that makes this test binary act as `ltc` (see [`ltc_main`]):
/// its arguments, separated by newlines.
const RUN_LTC: &str = "LATTICE_TEST_RUN_LTC";

/// Not a test of its own: `ltc`'s main when this binary is started by
/// [`interactive_shell`] with [`RUN_LTC`] set (ignored otherwise), so that
/// `ltc` runs on a pseudo-terminal without a binary of its own to build.
#[test]
#[ignore = "run by interactive_shell as ltc"]
fn ltc_main() {
    let Some(args) = std::env::var(RUN_LTC).ok() else {
        return;
    };
    use clap::Parser as _;
    let cli = ltc::cli::Cli::parse_from(std::iter::once("ltc").chain(args.lines()));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut stdout = std::io::stdout();
    let code = match runtime.block_on(ltc::run(cli, &ltc::config::process_env, &mut stdout)) {
        Ok(()) => 0,
        Err(err) => {
            if !ltc::is_silent(&err) {
                eprintln!("error: {err:#}");
            }
            ltc::exit_code(&err)
        }
    };
    std::process::exit(i32::from(code));
}

/// Asks the remote terminal its size (`stty size`) until it is `rows
/// columns`: the local size reaches it a moment after it changes.
fn remote_size_becomes(shell: &mut expectrl::session::OsSession, size: &str) {
    use expectrl::Expect as _;

    shell.set_expect_timeout(Some(Duration::from_secs(2)));
    for _ in 0..30 {
        shell.send_line("stty size").expect("typed");
        if shell.expect(size).is_ok() {
            shell.set_expect_timeout(Some(WAIT));
            return;
        }
    }
    panic!("the remote terminal never became {size}");
}

/// Runs `ltc ssh web` on a pseudo-terminal and uses the shell.
fn interactive_shell(base: &str, config_dir: &std::path::Path) {
    use expectrl::Expect as _;

    let mut command = std::process::Command::new(std::env::current_exe().expect("this test"));
    command
        .args([
            "--ignored",
            "--exact",
            "ltc_main",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(RUN_LTC, "ssh\nweb")
        .env("LTC_TARGET", base)
        .env("LTC_USERNAME", USER)
        .env("LTC_PASSWORD", PASSWORD)
        .env("LTC_CONFIG_DIR", config_dir)
        .env("TERM", "xterm");
    let mut shell = expectrl::Session::spawn(command).expect("ltc starts on a pty");
    shell.set_expect_timeout(Some(WAIT));
    shell
        .get_process_mut()
        .set_window_size(100, 30)
        .expect("sized");
    shell.send_line("tty; echo term=$TERM").expect("typed");
    shell.expect("/dev/pts/").expect("a remote terminal");
    shell.expect("term=xterm").expect("TERM passed on");
    remote_size_becomes(&mut shell, "30 100");
    shell
        .get_process_mut()
        .set_window_size(120, 40)
        .expect("resized");
    remote_size_becomes(&mut shell, "40 120");
    shell.send_line("exit 7").expect("typed");
    let status = shell.get_process().wait().expect("ltc ends");
    // ptyprocess's WaitStatus, `Exited(Pid(N), CODE)`; expectrl does not
    // re-export its type.
    let status = format!("{status:?}");
    assert!(
        status.starts_with("Exited(") && status.ends_with(", 7)"),
        "ltc exits with the shell's status: {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openssh_and_ltc_reach_instances_through_the_proxy() {
    let cluster = Cluster::start_with(ClusterOptions {
        credentials: Some(lattice_receptor::Credentials {
            username: USER.to_string(),
            password: PASSWORD.to_string(),
        }),
        ..ClusterOptions::default()
    })
    .await;
    let password = format!("{USER}:{PASSWORD}");
    cluster
        .client
        .create_desired_lrp(&web_app("web").await)
        .await
        .expect("created");
    cluster
        .client
        .create_desired_lrp(&bare_app("bare"))
        .await
        .expect("created");
    let mut closed = web_app("closed").await;
    closed.disable_ssh = true;
    cluster
        .client
        .create_desired_lrp(&closed)
        .await
        .expect("created");
    running(&cluster, "web").await;
    running(&cluster, "bare").await;

    // A command through the shell: output, stderr and exit status.
    let out = ssh(
        &cluster,
        "diego:web/0",
        &password,
        &["echo hello; echo oops >&2; exit 3"],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\n");
    assert!(text(&out.stderr).contains("oops"), "{}", text(&out.stderr));

    // `APP/INDEX` works too; the instance's own files are there.
    let out = ssh(
        &cluster,
        "web/0",
        &password,
        &["cat", "/tmp/index.html"],
        b"",
    )
    .await;
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "0\n".to_string()),
        "{}",
        text(&out.stderr)
    );

    // Stdin is piped through, binary safe.
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = ssh(&cluster, "diego:web/0", &password, &["cat"], &data).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout == data,
        "cat returned {} bytes, not the {} sent",
        out.stdout.len(),
        data.len()
    );

    // Wrong password, unknown app, index, ssh turned off: refused, saying why.
    // sshpass exits 5 when ssh asks for the password again: refused.
    let out = ssh(&cluster, "diego:web/0", "admin:wrong", &["true"], b"").await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    for (user, why) in [
        ("diego:nope/0", "no app \"nope\""),
        ("diego:web/5", "web has no instance 5"),
        ("diego:closed/0", "ssh is turned off for closed"),
        ("diego:web/x", "names no instance"),
    ] {
        let out = ssh(&cluster, user, &password, &["true"], b"").await;
        assert_eq!(out.status.code(), Some(255), "{user}");
        assert!(
            text(&out.stderr).contains(why),
            "{user}: {}",
            text(&out.stderr)
        );
    }

    // An image without a shell runs a plain command; one that needs a shell
    // fails saying so.
    let out = ssh(
        &cluster,
        "diego:bare/0",
        &password,
        &["/.lattice/bin/healthcheck", "--port", "8080"],
        b"",
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = ssh(&cluster, "diego:bare/0", &password, &["echo $HOME"], b"").await;
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("/bin/sh"),
        "{}",
        text(&out.stderr)
    );

    // -L reaches a port the app listens on but does not route.
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("an address")
        .port();
    let mut forward = ssh_command(&cluster, "diego:web/0", &password);
    forward.args([
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-L",
        &format!("{local}:localhost:9090"),
    ]);
    forward.stderr(std::process::Stdio::null());
    let _forward = forward.spawn().expect("ssh -L runs");
    let page = eventually("the forwarded port to answer", WAIT, || async {
        let response = reqwest::get(format!("http://127.0.0.1:{local}/index.html"))
            .await
            .ok()?;
        response.text().await.ok()
    })
    .await;
    assert_eq!(page, "not-routed\n");

    // ltc ssh: a command's output and exit status, the host key recorded
    // at first use and refused once it changes.
    // Where the embedded ltc keeps its known hosts.
    let config = tempfile::tempdir().expect("a temp dir");
    std::env::set_var("LTC_CONFIG_DIR", config.path());
    let credentials = Some(lattice_client::Credentials::new(USER, PASSWORD));
    let ltc = |args: &'static [&'static str]| run_ltc(&cluster.base, credentials.clone(), args);
    let (code, out, err) = ltc(&["ssh", "web", "--", "sh", "-c", "echo from-ltc; exit 4"]).await;
    assert_eq!((code, out.as_str()), (4, "from-ltc\n"), "{err}");
    let (code, out, err) = ltc(&["ssh", "--print-host-key"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("SHA256:"), "{out}");
    let (code, _, err) = ltc(&["ssh", "web", "-i", "3", "--", "true"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("web has no instance 3"), "{err}");
    let (code, _, err) = ltc(&["ssh", "closed", "--", "true"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("--no-ssh"), "{err}");
    let known_hosts = std::fs::read_to_string(config.path().join("known_hosts")).expect("recorded");
    assert!(known_hosts.contains("127.0.0.1"), "{known_hosts}");

    // ltc ssh on a pseudo-terminal: an interactive shell with a remote
    // terminal that follows the local one's size, and the shell's exit
    // status as ltc's.
    let base = cluster.base.clone();
    let config_dir = config.path().to_path_buf();
    tokio::task::spawn_blocking(move || interactive_shell(&base, &config_dir))
        .await
        .expect("the interactive session ran");

    cluster.stop().await;
}
