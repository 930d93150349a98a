//! The buildpack lifecycle as the cell runs it: `buildpack-builder` stages
//! the sample app with the sample buildpacks in a container of the stack
//! image, and `droplet-launcher` runs the droplet in another, all on the
//! real engine with locally built images. Every test owns its containers
//! through an `OwnerGuard`.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use lattice_garden::docker::DockerGarden;
use lattice_garden::{ContainerSpec, Garden, ProcessSpec, Signal};
use lattice_models::lifecycle::{
    StagingInfo, StagingResult, BUILDPACK_BUILDER_PATH, DROPLET_DIR, DROPLET_LAUNCHER_PATH,
    HEALTHCHECK_PATH, STAGING_DROPLET_PATH, STAGING_INFO_FILE, STAGING_RESULT_PATH,
};
use lattice_models::EnvironmentVariable;
use lattice_testkit::docker::OwnerGuard;
use lattice_testkit::garden::{connect as garden, process, run, Finished};
use lattice_testkit::images;

fn samples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/samples"))
}

async fn create(garden: &DockerGarden, guard: &OwnerGuard, name: &str) -> String {
    let spec = ContainerSpec {
        handle: format!("{}-{name}", guard.owner()),
        rootfs: images::stack_image().await,
        properties: guard.properties(),
        ..Default::default()
    };
    garden.create(spec).await.expect("created").handle
}

async fn sh(garden: &DockerGarden, handle: &str, script: &str) -> Finished {
    run(garden, handle, process("sh", &["-c", script])).await
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

/// A tar of the given sample directories, each under its own name, plus
/// inline buildpacks (name, script, body).
fn tar_of(dirs: &[(&str, &Path)], inline: &[(&str, &str, &str)]) -> bytes::Bytes {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, dir) in dirs {
        tar.append_dir_all(name, dir).expect("samples are readable");
    }
    for (name, script, body) in inline {
        let data = format!("#!/bin/sh\n{body}\n");
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o755);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, format!("{name}/bin/{script}"), data.as_bytes())
            .expect("writing to memory");
    }
    tar.into_inner().expect("writing to memory").into()
}

fn sample_buildpack(name: &str) -> (&str, std::path::PathBuf) {
    (name, samples().join("buildpacks").join(name))
}

/// Streams the app (the sample app, or an app holding only a README) and
/// the buildpacks into `/tmp/CASE/`, then runs the builder on them with
/// `extra` arguments.
async fn stage_case(
    garden: &DockerGarden,
    handle: &str,
    case: &str,
    sample_app: bool,
    buildpacks: &[&str],
    extra: &[&str],
) -> Finished {
    let root = format!("/tmp/{case}");
    let app = if sample_app {
        tar_of(&[(".", &samples().join("apps/static-app"))], &[])
    } else {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(4);
        tar.append_data(&mut header, "README", b"bits".as_slice())
            .expect("writing to memory");
        tar.into_inner().expect("writing to memory").into()
    };
    garden
        .stream_in(handle, &format!("{root}/app"), app)
        .await
        .expect("app streamed in");
    let dirs: Vec<_> = buildpacks
        .iter()
        .map(|name| sample_buildpack(name))
        .collect();
    let dirs: Vec<(&str, &Path)> = dirs.iter().map(|(n, p)| (*n, p.as_path())).collect();
    garden
        .stream_in(handle, &format!("{root}/buildpacks"), tar_of(&dirs, &[]))
        .await
        .expect("buildpacks streamed in");
    let mut args: Vec<String> = [
        "--app-dir",
        &format!("{root}/app"),
        "--buildpacks-dir",
        &format!("{root}/buildpacks"),
        "--output-droplet",
        &format!("{root}/droplet.tgz"),
        "--output-metadata",
        &format!("{root}/result.json"),
        "--cache-dir",
        &format!("{root}/cache"),
        "--deps-dir",
        &format!("{root}/deps"),
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run(garden, handle, process(BUILDPACK_BUILDER_PATH, &args)).await
}

/// The droplet's entries: path -> content (empty for directories).
fn droplet_entries(droplet: &[u8]) -> Vec<(String, String)> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(droplet));
    archive
        .entries()
        .expect("a gzip tar")
        .map(|entry| {
            let mut entry = entry.expect("readable");
            let path = entry.path().expect("a path").display().to_string();
            let mut content = String::new();
            entry.read_to_string(&mut content).expect("text");
            (path, content)
        })
        .collect()
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

#[tokio::test]
async fn stages_the_sample_app_and_runs_its_droplet() {
    let guard = OwnerGuard::new("lifecycle-buildpack");
    let garden = garden().await;
    let stager = create(&garden, &guard, "stager").await;

    // The default paths, as the staging task uses them; a buildpack that
    // sorts first but detects nothing is passed over.
    let app = tar_of(&[(".", &samples().join("apps/static-app"))], &[]);
    garden
        .stream_in(&stager, "/tmp/app", app)
        .await
        .expect("app streamed in");
    let (name, dir) = sample_buildpack("static-sh");
    let buildpacks = tar_of(&[(name, &dir)], &[("aaa-never", "detect", "exit 1")]);
    garden
        .stream_in(&stager, "/tmp/buildpacks", buildpacks)
        .await
        .expect("buildpacks streamed in");
    let done = run(&garden, &stager, process(BUILDPACK_BUILDER_PATH, &[])).await;
    assert_eq!(done.status, 0, "{done:?}");
    assert_eq!(done.stderr, "");
    for line in [
        "-----> Buildpack static-sh detected the app (Static-sh)",
        "-----> Static-sh buildpack: installing",
        "-----> Static-sh buildpack: done",
        "-----> Staged with buildpack static-sh (Static-sh)",
        "-----> Start command: sh ./start.sh",
    ] {
        assert!(
            done.stdout.lines().any(|l| l == line),
            "{line:?} in {}",
            done.stdout
        );
    }

    let expected = StagingResult {
        detected_buildpack: "Static-sh".into(),
        start_command: "sh ./start.sh".into(),
        buildpack: "static-sh".into(),
        env: vec![EnvironmentVariable::new(
            "STATIC_SH_GREETING",
            "hello from static-sh",
        )],
    };
    let result: StagingResult =
        serde_json::from_slice(&read_file(&garden, &stager, STAGING_RESULT_PATH).await)
            .expect("the result is JSON");
    assert_eq!(result, expected);
    let droplet = read_file(&garden, &stager, STAGING_DROPLET_PATH).await;
    let entries = droplet_entries(&droplet);
    let content = |path: &str| {
        entries
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, c)| c.as_str())
            .unwrap_or_else(|| panic!("{path} in the droplet: {entries:?}"))
    };
    assert_eq!(content("app/compiled-by-buildpack"), "static-sh\n");
    assert!(content("app/index.html").contains("hello from static-app"));
    let info: StagingInfo =
        serde_json::from_str(content(STAGING_INFO_FILE)).expect("staging info is JSON");
    assert_eq!(info, expected.staging_info());

    // A second container runs the droplet, unpacked as a download would.
    let cell = create(&garden, &guard, "app").await;
    let missing = run(&garden, &cell, process(DROPLET_LAUNCHER_PATH, &[])).await;
    assert_eq!(missing.status, 1, "{missing:?}");
    assert_eq!(
        missing.stderr,
        "droplet-launcher: no droplet in /home/lattice: \
         /home/lattice/staging_info.yml is missing\n"
    );
    let mut droplet_tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_mode(0o644);
    header.set_size(droplet.len() as u64);
    droplet_tar
        .append_data(&mut header, "droplet.tgz", droplet.as_slice())
        .expect("writing to memory");
    let droplet_tar = droplet_tar.into_inner().expect("writing to memory");
    garden
        .stream_in(&cell, "/tmp", droplet_tar.into())
        .await
        .expect("droplet streamed in");
    let unpack = sh(
        &garden,
        &cell,
        &format!("tar -xzf /tmp/droplet.tgz -C {DROPLET_DIR}"),
    )
    .await;
    assert_eq!(unpack.status, 0, "{unpack:?}");

    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    };
    // lattice-init starts it in /tmp: the launcher must move to app/.
    let mut server_spec = ProcessSpec {
        env: env(&[("PORT", "8080"), ("INSTANCE_INDEX", "3")]),
        ..process(DROPLET_LAUNCHER_PATH, &[])
    };
    server_spec.dir = Some("/tmp".to_string());
    let mut server = garden
        .run(&cell, server_spec)
        .await
        .expect("launcher starts");
    wait_healthy(&garden, &cell, &["--port", "8080", "--uri", "/index.html"]).await;
    let served = sh(
        &garden,
        &cell,
        "wget -qO- http://127.0.0.1:8080/instance && wget -qO- http://127.0.0.1:8080/",
    )
    .await;
    assert_eq!(served.status, 0, "{served:?}");
    assert!(
        served.stdout.starts_with("3\n<!doctype html>"),
        "{}",
        served.stdout
    );

    // A given command gets the droplet's env under its own, HOME, the
    // profile script's STATIC_SH_ROOT, and its arguments unchanged.
    let script = "echo \"$STATIC_SH_GREETING|$HOME|$STATIC_SH_ROOT|$(pwd)|$PORT|$1\"";
    let mut spec = ProcessSpec {
        env: env(&[("PORT", "9090")]),
        ..process(
            DROPLET_LAUNCHER_PATH,
            &["--", "sh", "-c", script, "sh", "a  b"],
        )
    };
    let done = run(&garden, &cell, spec.clone()).await;
    assert_eq!(done.status, 0, "{done:?}");
    assert_eq!(
        done.stdout,
        "hello from static-sh|/home/lattice/app|/home/lattice/app|/home/lattice/app|9090|a  b\n"
    );
    spec.env.push(("STATIC_SH_GREETING".into(), "mine".into()));
    let done = run(&garden, &cell, spec).await;
    assert!(done.stdout.starts_with("mine|"), "{done:?}");

    server.signal(Signal::Terminate).await.expect("signalled");
    tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .expect("the app ends on SIGTERM")
        .expect("exit status");
}

#[tokio::test]
async fn failed_staging_exits_with_the_builder_codes_and_writes_no_droplet() {
    let guard = OwnerGuard::new("lifecycle-buildpack-fail");
    let garden = garden().await;
    let handle = create(&garden, &guard, "stager").await;

    let done = stage_case(&garden, &handle, "compile", true, &["fails-compile"], &[]).await;
    assert_eq!(done.status, 223, "{done:?}");
    assert!(
        done.stdout
            .contains("-----> Fails-compile buildpack: compiling"),
        "{done:?}"
    );
    assert_eq!(
        done.stderr,
        "fails-compile: this buildpack always fails\n\
         buildpack-builder: compile failed: exit status 3\n"
    );
    let written = sh(&garden, &handle, "ls /tmp/compile").await;
    assert_eq!(
        written.stdout, "app\nbuildpacks\ncache\ndeps\n",
        "no droplet, no result"
    );

    let done = stage_case(&garden, &handle, "detect", false, &["static-sh"], &[]).await;
    assert_eq!(done.status, 222, "{done:?}");
    assert_eq!(
        done.stderr,
        "buildpack-builder: none of the buildpacks detected the app: static-sh\n"
    );

    // Name order: fails-compile detects everything and comes first, unless
    // a buildpack is named.
    let both = ["static-sh", "fails-compile"];
    let done = stage_case(&garden, &handle, "order", true, &both, &[]).await;
    assert_eq!(done.status, 223, "{done:?}");
    let done = stage_case(
        &garden,
        &handle,
        "named",
        true,
        &both,
        &["--buildpack", "static-sh"],
    )
    .await;
    assert_eq!(done.status, 0, "{done:?}");
    let result: StagingResult =
        serde_json::from_slice(&read_file(&garden, &handle, "/tmp/named/result.json").await)
            .expect("the result is JSON");
    assert_eq!(
        (
            result.buildpack.as_str(),
            result.detected_buildpack.as_str()
        ),
        ("static-sh", "static-sh"),
        "no detection ran"
    );

    let usage = run(
        &garden,
        &handle,
        process(BUILDPACK_BUILDER_PATH, &["--bogus", "1"]),
    )
    .await;
    assert_eq!(usage.status, 2);
    assert!(usage.stderr.contains("unknown flag --bogus"), "{usage:?}");
}
