//! The lifecycle binaries as the cell runs them: statically built, put into
//! containers by the Docker Garden, run with `Garden::run` against the real
//! engine and locally built images. Every test owns its containers through
//! an `OwnerGuard`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::StreamExt;
use lattice_garden::docker::DockerGarden;
use lattice_garden::{ContainerSpec, Garden, ProcessSpec, Signal};
use lattice_models::lifecycle::{ExecutionMetadata, BUILDER_PATH, HEALTHCHECK_PATH, LAUNCHER_PATH};
use lattice_models::EnvironmentVariable;
use lattice_testkit::docker::OwnerGuard;
use lattice_testkit::garden::{connect as garden, process, run};
use lattice_testkit::{docker, images, lifecycles};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

async fn create(garden: &DockerGarden, guard: &OwnerGuard, rootfs: String) -> String {
    let spec = ContainerSpec {
        handle: format!("{}-c", guard.owner()),
        rootfs,
        properties: guard.properties(),
        ..Default::default()
    };
    garden.create(spec).await.expect("created").handle
}

/// The content of the one file `stream_out` of `path` archives.
async fn read_file(garden: &DockerGarden, handle: &str, path: &str) -> Vec<u8> {
    let archive: Vec<u8> = garden
        .stream_out(handle, path)
        .await
        .expect("found")
        .map(|chunk| chunk.expect("streamed").to_vec())
        .concat()
        .await;
    let mut tar = tar::Archive::new(archive.as_slice());
    let mut entry = tar
        .entries()
        .expect("a tar")
        .next()
        .expect("one entry")
        .expect("readable");
    let mut content = Vec::new();
    entry.read_to_end(&mut content).expect("readable");
    content
}

/// Runs the health check until it passes, for at most five seconds: the
/// server was just started.
async fn wait_healthy(garden: &DockerGarden, handle: &str, args: &[&str]) {
    let mut last = None;
    for _ in 0..50 {
        let done = run(garden, handle, process(HEALTHCHECK_PATH, args)).await;
        if done.status == 0 {
            return;
        }
        last = Some(done);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never healthy: {last:?}");
}

#[test]
fn every_binary_is_statically_linked() {
    let dir = lifecycles::build_static();
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .expect("built")
        .map(|e| e.expect("listable"))
        // Garden uploads the top level's files only; the sample apps'
        // subdirectory stays on the cell.
        .filter(|e| e.file_type().expect("listable").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut expected: Vec<&str> = lifecycles::BINARIES.to_vec();
    expected.sort();
    assert_eq!(
        found, expected,
        "the lifecycle directory holds the binaries only"
    );
    let samples = lifecycles::SAMPLES
        .iter()
        .map(|name| Path::new(lifecycles::SAMPLES_DIR).join(name));
    let binaries = lifecycles::BINARIES.iter().map(PathBuf::from);
    for name in binaries.chain(samples) {
        let output = Command::new("ldd")
            .arg(dir.join(&name))
            .output()
            .expect("ldd is installed");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            text.contains("not a dynamic executable") || text.contains("statically linked"),
            "{}: ldd says {text}",
            name.display()
        );
    }
}

#[tokio::test]
async fn builder_reports_the_image_config() {
    let guard = OwnerGuard::new("lifecycle-builder");
    let garden = garden().await;
    let handle = create(&garden, &guard, images::docker_app_image().await).await;

    let done = run(
        &garden,
        &handle,
        process(BUILDER_PATH, &["--output", "/tmp/staging/result.json"]),
    )
    .await;
    assert_eq!(done.status, 0, "{done:?}");
    assert_eq!(
        done.stdout,
        "Image exposes port 8080; start command: httpd -f -p 8080 -h /www\n"
    );
    let metadata: ExecutionMetadata =
        serde_json::from_slice(&read_file(&garden, &handle, "/tmp/staging/result.json").await)
            .expect("the result is JSON");
    assert_eq!(
        metadata,
        ExecutionMetadata {
            start_command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
                .map(String::from)
                .to_vec(),
            ports: vec![8080],
            user: String::new(),
            working_dir: "/www".to_string(),
            env: vec![
                EnvironmentVariable::new("PATH", PATH),
                EnvironmentVariable::new("GREETING", "hello"),
            ],
        }
    );
}

#[tokio::test]
async fn builder_refuses_an_image_without_start_command() {
    const IMAGE: &str = "lattice-test/no-start-command:v1";
    let engine = docker::connect().await;
    images::ensure_image(&engine, IMAGE, &[&format!("ENV PATH={PATH}")], || {
        Ok(images::busybox_rootfs()?.into_inner()?)
    })
    .await
    .expect("image imported");
    let guard = OwnerGuard::new("lifecycle-no-cmd");
    let garden = garden().await;
    let handle = create(
        &garden,
        &guard,
        "docker:///lattice-test/no-start-command#v1".to_string(),
    )
    .await;

    let done = run(
        &garden,
        &handle,
        process(BUILDER_PATH, &["--output", "/tmp/result.json"]),
    )
    .await;
    assert_eq!(done.status, 1, "{done:?}");
    assert_eq!(
        done.stderr,
        "builder: the image has no start command: it sets neither ENTRYPOINT nor CMD\n"
    );
    let exists = run(
        &garden,
        &handle,
        process("test", &["-e", "/tmp/result.json"]),
    )
    .await;
    assert_eq!(exists.status, 1, "nothing is written");

    let usage = run(&garden, &handle, process(BUILDER_PATH, &[])).await;
    assert_eq!(usage.status, 2);
    assert!(usage.stderr.contains("--output is required"), "{usage:?}");
}

#[tokio::test]
async fn launcher_serves_the_image_and_healthcheck_probes_it() {
    let guard = OwnerGuard::new("lifecycle-launch");
    let garden = garden().await;
    let handle = create(&garden, &guard, images::docker_app_image().await).await;

    let mut app = ProcessSpec {
        env: vec![("PORT".to_string(), "8080".to_string())],
        ..process(LAUNCHER_PATH, &[])
    };
    // lattice-init starts it in /tmp: the launcher must move to the image's
    // WORKDIR.
    app.dir = Some("/tmp".to_string());
    let mut server = garden.run(&handle, app).await.expect("launcher starts");
    wait_healthy(&garden, &handle, &["--port", "8080"]).await;

    // The launcher replaced itself with the image's start command.
    let ps = run(&garden, &handle, process("ps", &["-o", "args"])).await;
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.trim() == "httpd -f -p 8080 -h /www"),
        "{}",
        ps.stdout
    );
    assert!(!ps.stdout.contains("launcher"), "{}", ps.stdout);

    let served = run(
        &garden,
        &handle,
        process(
            HEALTHCHECK_PATH,
            &["--port", "8080", "--uri", "/index.html"],
        ),
    )
    .await;
    assert_eq!((served.status, served.stderr.as_str()), (0, ""));
    let missing = run(
        &garden,
        &handle,
        process(
            HEALTHCHECK_PATH,
            &["--port", "8080", "--uri", "/missing", "--timeout", "2s"],
        ),
    )
    .await;
    assert_eq!(missing.status, 1);
    assert_eq!(
        missing.stderr,
        "GET http://127.0.0.1:8080/missing answered 404 Not Found\n"
    );
    let closed = run(
        &garden,
        &handle,
        process(HEALTHCHECK_PATH, &["--port", "8081"]),
    )
    .await;
    assert_eq!(closed.status, 1);
    assert_eq!(
        closed.stderr,
        "failed to connect to 127.0.0.1:8081: connection refused\n"
    );
    let usage = run(&garden, &handle, process(HEALTHCHECK_PATH, &["--port"])).await;
    assert_eq!(usage.status, 2, "{usage:?}");

    server.signal(Signal::Terminate).await.expect("signalled");
    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .expect("httpd ends on SIGTERM")
        .expect("exit status");
    assert_eq!(status, 128 + 15, "httpd itself got the signal");
}

#[tokio::test]
async fn launcher_applies_env_and_workdir_to_a_given_command() {
    let guard = OwnerGuard::new("lifecycle-env");
    let garden = garden().await;
    let handle = create(&garden, &guard, images::docker_app_image().await).await;

    let script = "echo $PORT $INSTANCE_INDEX $GREETING $(pwd)";
    let mut spec = ProcessSpec {
        env: vec![
            ("PORT".to_string(), "8080".to_string()),
            ("INSTANCE_INDEX".to_string(), "3".to_string()),
        ],
        ..process(LAUNCHER_PATH, &["--", "sh", "-c", script])
    };
    spec.dir = Some("/tmp".to_string());
    let done = run(&garden, &handle, spec.clone()).await;
    assert_eq!(done.status, 0, "{done:?}");
    assert_eq!(done.stdout, "8080 3 hello /www\n");

    // The process's own environment wins over the image's.
    spec.env.push(("GREETING".to_string(), "bye".to_string()));
    let done = run(&garden, &handle, spec).await;
    assert_eq!(done.stdout, "8080 3 bye /www\n");

    let done = run(
        &garden,
        &handle,
        process(LAUNCHER_PATH, &["--", "no-such-program", "x"]),
    )
    .await;
    assert_eq!(done.status, 127);
    assert_eq!(
        done.stderr,
        "launcher: no-such-program: command not found\n"
    );
}

/// An image with no libc, no shell and no program: only what Garden puts in
/// (`/.lattice/bin/*`), so every lifecycle binary must be static to run.
const SCRATCH_IMAGE: &str = "lattice-test/scratch-lifecycles:v1";

#[tokio::test]
async fn binaries_run_in_an_image_without_libc_or_shell() {
    let engine = docker::connect().await;
    images::ensure_image(
        &engine,
        SCRATCH_IMAGE,
        &[
            "ENV GREETING=hello",
            "WORKDIR /work",
            "EXPOSE 7070",
            r#"CMD ["/.lattice/bin/builder", "--output", "result.json"]"#,
        ],
        || Ok(images::scratch_rootfs()?.into_inner()?),
    )
    .await
    .expect("image imported");
    let guard = OwnerGuard::new("lifecycle-scratch");
    let garden = garden().await;
    // PID 1 is lattice-init: the container runs at all only if it is static.
    let handle = create(
        &garden,
        &guard,
        "docker:///lattice-test/scratch-lifecycles#v1".to_string(),
    )
    .await;

    let done = run(
        &garden,
        &handle,
        process(BUILDER_PATH, &["--output", "/tmp/result.json"]),
    )
    .await;
    assert_eq!(done.status, 0, "{done:?}");
    assert_eq!(
        done.stdout,
        "Image exposes port 7070; start command: /.lattice/bin/builder --output result.json\n"
    );

    // The launcher runs the image's CMD (the builder again) in its WORKDIR.
    let done = run(&garden, &handle, process(LAUNCHER_PATH, &[])).await;
    assert_eq!(done.status, 0, "{done:?}");
    let metadata: ExecutionMetadata =
        serde_json::from_slice(&read_file(&garden, &handle, "/work/result.json").await)
            .expect("the result is JSON");
    assert_eq!(metadata.ports, vec![7070]);
    assert_eq!(metadata.working_dir, "/work");

    // The health check against a server in another container, and against
    // a closed port.
    let server_guard = OwnerGuard::new("lifecycle-scratch-server");
    let server = create(&garden, &server_guard, images::docker_app_image().await).await;
    let _httpd = garden
        .run(&server, process(LAUNCHER_PATH, &[]))
        .await
        .expect("launcher starts");
    wait_healthy(&garden, &server, &["--port", "8080"]).await;
    let server_ip = garden.info(&server).await.expect("exists").container_ip;
    let done = run(
        &garden,
        &handle,
        process(
            HEALTHCHECK_PATH,
            &["--host", &server_ip, "--port", "8080", "--uri", "/"],
        ),
    )
    .await;
    assert_eq!((done.status, done.stderr.as_str()), (0, ""));
    let done = run(
        &garden,
        &handle,
        process(HEALTHCHECK_PATH, &["--port", "8080", "--host", "localhost"]),
    )
    .await;
    assert_eq!(done.status, 1);
    assert_eq!(
        done.stderr,
        "failed to connect to localhost:8080: connection refused\n"
    );
}
