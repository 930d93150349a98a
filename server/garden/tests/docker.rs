//! The Docker backend against the real engine of this machine, with the
//! locally built busybox image. Every test owns its containers through an
//! `OwnerGuard`, which removes them by label even when the test fails.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lattice_garden::docker::{DockerGarden, DockerGardenConfig, LifecycleDelivery};
use lattice_garden::{
    BindMount, ContainerSpec, Garden, GardenError, Limits, OutputStream, Process, ProcessSpec,
    Signal,
};
use lattice_testkit::docker::OwnerGuard;
use lattice_testkit::{images, lifecycles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The default: on this machine, the lifecycles are bind-mounted.
async fn garden() -> DockerGarden {
    garden_delivering(LifecycleDelivery::Auto).await
}

async fn garden_delivering(delivery: LifecycleDelivery) -> DockerGarden {
    let config = DockerGardenConfig {
        lifecycle_delivery: delivery,
        ..DockerGardenConfig::new(lifecycles::build_static())
    };
    DockerGarden::connect(config)
        .await
        .expect("the engine is reachable")
}

async fn spec(guard: &OwnerGuard, name: &str) -> ContainerSpec {
    ContainerSpec {
        handle: format!("{}-{name}", guard.owner()),
        rootfs: images::busybox_image().await,
        properties: guard.properties(),
        ..Default::default()
    }
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec {
        path: "sh".to_string(),
        args: vec!["-c".to_string(), script.to_string()],
        ..Default::default()
    }
}

/// Output of a finished process, by stream, and its exit status.
struct Finished {
    stdout: String,
    stderr: String,
    status: i64,
}

async fn finish(mut process: Box<dyn Process>) -> Finished {
    let chunks: Vec<_> = process.output().collect().await;
    let status = process.wait().await.expect("process ends");
    let text = |stream| {
        let bytes: Vec<u8> = chunks
            .iter()
            .filter(|c| c.stream == stream)
            .flat_map(|c| c.bytes.to_vec())
            .collect();
        String::from_utf8(bytes).expect("test output is utf-8")
    };
    Finished {
        stdout: text(OutputStream::Stdout),
        stderr: text(OutputStream::Stderr),
        status,
    }
}

async fn run(garden: &DockerGarden, handle: &str, spec: ProcessSpec) -> Finished {
    finish(garden.run(handle, spec).await.expect("process starts")).await
}

fn tar_of(files: &[(&str, &[u8])]) -> Bytes {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, path, *data)
            .expect("in memory");
    }
    tar.into_inner().expect("in memory").into()
}

#[tokio::test]
async fn creates_and_destroys_a_container() {
    let guard = OwnerGuard::new("garden-create");
    let garden = garden().await;
    let mut spec = spec(&guard, "c").await;
    spec.properties
        .insert("role".to_string(), "test".to_string());
    let info = garden.create(spec.clone()).await.expect("created");
    assert_eq!(info.handle, spec.handle);
    assert!(info.running);
    assert!(!info.oom_killed);
    assert_eq!(info.properties, spec.properties);
    assert!(
        !info.container_ip.is_empty(),
        "on the default bridge it has an address"
    );

    let again = garden.create(spec.clone()).await;
    assert!(
        matches!(again, Err(GardenError::ContainerExists(_))),
        "{again:?}"
    );

    garden.destroy(&spec.handle).await.expect("destroyed");
    let gone = garden.info(&spec.handle).await;
    assert!(
        matches!(gone, Err(GardenError::ContainerNotFound(_))),
        "{gone:?}"
    );
    garden
        .destroy(&spec.handle)
        .await
        .expect("destroying a missing container is ok");
}

#[tokio::test]
async fn refuses_a_container_without_owner() {
    let guard = OwnerGuard::new("garden-noowner");
    let garden = garden().await;
    let mut spec = spec(&guard, "c").await;
    spec.properties.clear();
    let result = garden.create(spec).await;
    assert!(
        matches!(result, Err(GardenError::InvalidSpec(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn missing_image_is_unavailable() {
    let guard = OwnerGuard::new("garden-noimage");
    let garden = garden().await;
    let mut spec = spec(&guard, "c").await;
    spec.rootfs = "docker:///lattice-test/no-such-image#v0".to_string();
    let result = garden.create(spec.clone()).await;
    assert!(
        matches!(result, Err(GardenError::ImageUnavailable { .. })),
        "{result:?}"
    );
    assert!(matches!(
        garden.info(&spec.handle).await,
        Err(GardenError::ContainerNotFound(_))
    ));
}

#[tokio::test]
async fn runs_processes_with_output_and_exit_status() {
    let guard = OwnerGuard::new("garden-run");
    let garden = garden().await;
    let info = garden
        .create(spec(&guard, "c").await)
        .await
        .expect("created");

    let done = run(&garden, &info.handle, sh("echo out; echo err >&2; exit 3")).await;
    assert_eq!(done.stdout, "out\n");
    assert_eq!(done.stderr, "err\n");
    assert_eq!(done.status, 3);

    let done = run(
        &garden,
        &info.handle,
        ProcessSpec {
            path: "true".to_string(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(done.status, 0);

    let done = run(
        &garden,
        &info.handle,
        ProcessSpec {
            path: "/no/such/program".to_string(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(done.status, 127, "as a shell reports it");
    assert!(done.stderr.contains("/no/such/program"), "{}", done.stderr);

    // Output not taken is dropped, and the process still finishes.
    let mut process = garden
        .run(&info.handle, sh("seq 1 100000"))
        .await
        .expect("started");
    assert_eq!(process.wait().await.expect("ends"), 0);
    assert_eq!(process.wait().await.expect("same answer"), 0);
    assert_eq!(process.output().count().await, 0, "taken by wait");

    // Pidfiles of finished processes are swept: only this one's is left.
    let done = run(&garden, &info.handle, sh("ls /.lattice/run | wc -l")).await;
    assert_eq!(done.stdout.trim(), "1");
}

#[tokio::test]
async fn applies_env_dir_user_and_nofile() {
    let guard = OwnerGuard::new("garden-env");
    let garden = garden().await;
    let mut spec = spec(&guard, "c").await;
    spec.env = vec![
        ("FROM_CONTAINER".to_string(), "c1".to_string()),
        ("SHARED".to_string(), "container".to_string()),
    ];
    let info = garden.create(spec).await.expect("created");

    let process = ProcessSpec {
        env: vec![
            ("FROM_PROCESS".to_string(), "p1".to_string()),
            ("SHARED".to_string(), "process".to_string()),
        ],
        dir: Some("/tmp/work/sub".to_string()),
        user: Some("nobody".to_string()),
        nofile: Some(123),
        ..sh("echo $FROM_CONTAINER $FROM_PROCESS $SHARED; pwd; id -u; ulimit -n; ulimit -Hn")
    };
    let done = run(&garden, &info.handle, process).await;
    assert_eq!(
        done.stdout, "c1 p1 process\n/tmp/work/sub\n65534\n123\n123\n",
        "stderr: {}",
        done.stderr
    );
    assert_eq!(done.status, 0);

    // The image's defaults otherwise: root, in /.
    let done = run(&garden, &info.handle, sh("pwd; id -u")).await;
    assert_eq!(done.stdout, "/\n0\n");
}

#[tokio::test]
async fn signals_reach_the_process_and_its_children() {
    let guard = OwnerGuard::new("garden-signal");
    let garden = garden().await;
    let info = garden
        .create(spec(&guard, "c").await)
        .await
        .expect("created");

    let process = garden
        .run(
            &info.handle,
            ProcessSpec {
                path: "sleep".to_string(),
                args: vec!["1000".to_string()],
                ..Default::default()
            },
        )
        .await
        .expect("started");
    process.signal(Signal::Terminate).await.expect("signalled");
    assert_eq!(finish(process).await.status, 128 + 15);

    // The shell waits for its child: TERM must reach the sleep too, or
    // the output stream (held open by the sleep) would never end.
    let process = garden
        .run(&info.handle, sh("sleep 1000; echo not reached"))
        .await
        .expect("started");
    process.signal(Signal::Kill).await.expect("signalled");
    let done = finish(process).await;
    assert_eq!(done.status, 128 + 9);
    assert_eq!(done.stdout, "");

    // Signalling a finished process is not an error.
    let mut process = garden
        .run(&info.handle, sh("exit 0"))
        .await
        .expect("started");
    assert_eq!(process.wait().await.expect("ends"), 0);
    process
        .signal(Signal::Kill)
        .await
        .expect("nothing to signal");
}

#[tokio::test]
async fn streams_files_in_and_out() {
    let guard = OwnerGuard::new("garden-stream");
    let garden = garden().await;
    let info = garden
        .create(spec(&guard, "c").await)
        .await
        .expect("created");

    let archive = tar_of(&[
        ("hello.txt", b"hello from the host\n"),
        ("sub/other.txt", b"x"),
    ]);
    garden
        .stream_in(&info.handle, "/tmp/in/deep", archive)
        .await
        .expect("streamed in");
    let done = run(
        &garden,
        &info.handle,
        sh("cat /tmp/in/deep/hello.txt; cat /tmp/in/deep/sub/other.txt"),
    )
    .await;
    assert_eq!(done.stdout, "hello from the host\nx");

    // An existing directory keeps its mode.
    garden
        .stream_in(&info.handle, "/tmp", tar_of(&[("t.txt", b"t")]))
        .await
        .expect("streamed in");
    let done = run(&garden, &info.handle, sh("stat -c %a /tmp; cat /tmp/t.txt")).await;
    assert_eq!(done.stdout, "1777\nt");

    let done = run(
        &garden,
        &info.handle,
        sh("echo written inside > /tmp/out.txt"),
    )
    .await;
    assert_eq!(done.status, 0);
    let archive: Vec<u8> = garden
        .stream_out(&info.handle, "/tmp/out.txt")
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
    assert_eq!(entry.path().expect("utf-8").to_str(), Some("out.txt"));
    let mut content = String::new();
    entry.read_to_string(&mut content).expect("readable");
    assert_eq!(content, "written inside\n");

    let missing = garden
        .stream_out(&info.handle, "/no/such/file")
        .await
        .map(|_| ());
    assert!(
        matches!(missing, Err(GardenError::PathNotFound { .. })),
        "{missing:?}"
    );
    let missing = garden
        .stream_out("lattice-no-such-container", "/tmp")
        .await
        .map(|_| ());
    assert!(
        matches!(missing, Err(GardenError::ContainerNotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn published_port_is_reachable_from_the_host() {
    let guard = OwnerGuard::new("garden-port");
    let garden = garden().await;
    let mut spec = spec(&guard, "c").await;
    spec.ports = vec![8080];
    let info = garden.create(spec).await.expect("created");
    assert_eq!(info.ports.len(), 1);
    assert_eq!(info.ports[0].container_port, 8080);
    assert_eq!(info.host_ip, "127.0.0.1");

    let server = garden
        .run(&info.handle, sh("mkdir -p /www && echo hello web > /www/index.html && exec httpd -f -p 8080 -h /www"))
        .await
        .expect("started");
    let address = format!("{}:{}", info.host_ip, info.ports[0].host_port);
    // The port is published before httpd listens; ask until it answers.
    let mut response = String::new();
    for _ in 0..100 {
        response.clear();
        if let Ok(mut stream) = tokio::net::TcpStream::connect(&address).await {
            let _ = stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await;
            let _ = stream.read_to_string(&mut response).await;
            if response.contains("hello web") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        response.starts_with("HTTP/1.") && response.contains("hello web"),
        "{response:?}"
    );
    server.signal(Signal::Kill).await.expect("signalled");
}

#[tokio::test]
async fn memory_limit_kills_a_greedy_process() {
    let guard = OwnerGuard::new("garden-oom");
    let garden = garden().await;
    let mut spec = spec(&guard, "c").await;
    spec.limits = Limits {
        memory_mb: 32,
        ..Default::default()
    };
    let info = garden.create(spec).await.expect("created");

    let done = run(
        &garden,
        &info.handle,
        sh("x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}"),
    )
    .await;
    let after = garden.info(&info.handle).await.expect("still there");
    assert!(
        done.status == 137 || after.oom_killed,
        "status {} oom_killed {}",
        done.status,
        after.oom_killed
    );
    assert_ne!(
        done.stdout, "200000000\n",
        "the process must not get its 200 MB"
    );
}

#[tokio::test]
async fn lists_containers_by_properties() {
    let guard = OwnerGuard::new("garden-list");
    let garden = garden().await;
    let plain = spec(&guard, "a").await;
    let mut tagged = spec(&guard, "b").await;
    tagged
        .properties
        .insert("role".to_string(), "web".to_string());
    garden.create(plain.clone()).await.expect("created");
    garden.create(tagged.clone()).await.expect("created");

    let all = garden.list(&guard.properties()).await.expect("listed");
    let handles: Vec<&str> = all.iter().map(|c| c.handle.as_str()).collect();
    assert_eq!(handles, vec![plain.handle.as_str(), tagged.handle.as_str()]);

    let mut filter = guard.properties();
    filter.insert("role".to_string(), "web".to_string());
    let web = garden.list(&filter).await.expect("listed");
    assert_eq!(web.len(), 1);
    assert_eq!(web[0].handle, tagged.handle);

    let none = garden
        .list(&BTreeMap::from([(
            "io.lattice.owner".to_string(),
            "nobody-owns-this".to_string(),
        )]))
        .await
        .expect("listed");
    assert!(none.is_empty());
}

#[tokio::test]
async fn destroy_ends_running_processes() {
    let guard = OwnerGuard::new("garden-destroy");
    let garden = garden().await;
    let info = garden
        .create(spec(&guard, "c").await)
        .await
        .expect("created");
    let mut process = garden
        .run(&info.handle, sh("sleep 1000"))
        .await
        .expect("started");
    garden.destroy(&info.handle).await.expect("destroyed");
    // Either the exit was recorded before removal, or the container is gone.
    match process.wait().await {
        Ok(status) => assert_ne!(status, 0),
        Err(err) => assert!(matches!(err, GardenError::ContainerNotFound(_)), "{err:?}"),
    }
    let result = garden.run(&info.handle, sh("true")).await.map(|_| ());
    assert!(
        matches!(result, Err(GardenError::ContainerNotFound(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn bind_mounts_and_capacity() {
    let guard = OwnerGuard::new("garden-bind");
    let garden = garden().await;
    let host_dir = tempfile::tempdir().expect("temp dir is writable");
    std::fs::write(host_dir.path().join("from-host.txt"), "shared\n")
        .expect("temp dir is writable");
    let mut spec = spec(&guard, "c").await;
    spec.bind_mounts = vec![BindMount {
        host_path: host_dir.path().display().to_string(),
        container_path: "/mnt/host".to_string(),
        read_only: true,
    }];
    let info = garden.create(spec).await.expect("created");
    let done = run(
        &garden,
        &info.handle,
        sh("cat /mnt/host/from-host.txt; touch /mnt/host/x"),
    )
    .await;
    assert_eq!(done.stdout, "shared\n");
    assert_ne!(done.status, 0, "the mount is read-only");

    let (memory_mb, disk_mb) = garden.machine_capacity().await.expect("capacity");
    assert!(
        memory_mb > 0 && disk_mb > 0,
        "{memory_mb} MB memory, {disk_mb} MB disk"
    );
}

/// An image setting every field of the config the Docker app lifecycle reads.
const CONFIG_IMAGE: &str = "lattice-test/garden-image-config:v1";
const CONFIG_IMAGE_CHANGES: &[&str] = &[
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV A=1 B=x=y",
    "WORKDIR /srv",
    "EXPOSE 9090 8080/tcp 53/udp",
    "USER nobody",
    r#"ENTRYPOINT ["/bin/sh", "-c"]"#,
    r#"CMD ["echo hi"]"#,
];

/// The whole content of the one file `stream_out` of `path` archives.
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

#[tokio::test]
async fn mounts_every_lifecycle_binary_and_the_image_config() {
    injects_every_lifecycle_binary_and_the_image_config(LifecycleDelivery::Mount).await;
}

/// The fallback for an engine that does not read this machine's paths.
#[tokio::test]
async fn uploads_every_lifecycle_binary_and_the_image_config() {
    injects_every_lifecycle_binary_and_the_image_config(LifecycleDelivery::Upload).await;
}

async fn injects_every_lifecycle_binary_and_the_image_config(delivery: LifecycleDelivery) {
    use lattice_models::lifecycle::ImageConfig;

    let engine = lattice_testkit::docker::connect().await;
    images::ensure_image(&engine, CONFIG_IMAGE, CONFIG_IMAGE_CHANGES, || {
        Ok(images::busybox_rootfs()?.into_inner()?)
    })
    .await
    .expect("image imported");
    let guard = OwnerGuard::new(match delivery {
        LifecycleDelivery::Upload => "garden-upload",
        _ => "garden-mount",
    });
    let garden = garden_delivering(delivery).await;
    let mut spec = spec(&guard, "c").await;
    spec.rootfs = "docker:///lattice-test/garden-image-config#v1".to_string();
    let info = garden.create(spec).await.expect("created");

    let config: ImageConfig = serde_json::from_slice(
        &read_file(&garden, &info.handle, "/.lattice/image-config.json").await,
    )
    .expect("the config is JSON");
    assert_eq!(
        config,
        ImageConfig {
            entrypoint: vec!["/bin/sh".to_string(), "-c".to_string()],
            cmd: vec!["echo hi".to_string()],
            env: vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
                "A=1".to_string(),
                "B=x=y".to_string(),
            ],
            working_dir: "/srv".to_string(),
            user: "nobody".to_string(),
            exposed_ports: vec![8080, 9090],
        }
    );

    // As the image's user (nobody): the files are readable and executable
    // by anyone.
    let listing = run(
        &garden,
        &info.handle,
        sh("id -u; cd /.lattice/bin && stat -c '%n %a %s' * && stat -c %a ../image-config.json"),
    )
    .await;
    assert_eq!(listing.status, 0, "{}", listing.stderr);
    let lifecycle_dir = lifecycles::build_static();
    let mut expected = vec!["65534".to_string()];
    let mut names: Vec<String> = lattice_testkit::lifecycles::BINARIES
        .iter()
        .map(|n| n.to_string())
        .collect();
    names.sort();
    for name in &names {
        let size = std::fs::metadata(lifecycle_dir.join(name))
            .expect("built")
            .len();
        expected.push(format!("{name} 755 {size}"));
    }
    expected.push("644".to_string());
    assert_eq!(listing.stdout.lines().collect::<Vec<_>>(), expected);

    // A process as that user leaves its pidfile in the writable run dir,
    // which `signal` needs.
    let process = garden
        .run(&info.handle, sh("sleep 1000"))
        .await
        .expect("started");
    process.signal(Signal::Kill).await.expect("signalled");
    assert_eq!(finish(process).await.status, 128 + 9);
}

#[tokio::test]
async fn an_image_without_config_fields_gets_an_empty_config() {
    use lattice_models::lifecycle::ImageConfig;

    const BARE_IMAGE: &str = "lattice-test/garden-bare:v1";
    let engine = lattice_testkit::docker::connect().await;
    images::ensure_image(&engine, BARE_IMAGE, &[], || {
        Ok(images::busybox_rootfs()?.into_inner()?)
    })
    .await
    .expect("image imported");
    let guard = OwnerGuard::new("garden-bare");
    let garden = garden().await;
    let mut spec = spec(&guard, "c").await;
    spec.rootfs = "docker:///lattice-test/garden-bare#v1".to_string();
    let info = garden.create(spec).await.expect("created");
    let config: ImageConfig = serde_json::from_slice(
        &read_file(&garden, &info.handle, "/.lattice/image-config.json").await,
    )
    .expect("the config is JSON");
    assert_eq!(config, ImageConfig::default());
}

/// A restarted cell tells a live instance from a dead one by the processes
/// its previous run left (issue 15, item 4): they are listed while they
/// run, even once their caller let go of them, and not after they end.
#[tokio::test]
async fn info_lists_running_processes_even_once_their_caller_is_gone() {
    let guard = OwnerGuard::new("garden-processes");
    let garden = garden().await;
    let info = garden
        .create(spec(&guard, "c").await)
        .await
        .expect("created");
    assert!(info.processes.is_empty(), "{:?}", info.processes);

    let left = garden
        .run(&info.handle, sh("sleep 1000"))
        .await
        .expect("started");
    drop(left);
    let processes = |garden: DockerGarden, handle: String| async move {
        garden.info(&handle).await.expect("info").processes
    };
    let after_left = processes(garden.clone(), info.handle.clone()).await;
    assert_eq!(after_left.len(), 1, "{after_left:?}");

    let mut ending = garden
        .run(&info.handle, sh("sleep 1000"))
        .await
        .expect("started");
    let both = processes(garden.clone(), info.handle.clone()).await;
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both.contains(&after_left[0]));
    ending.signal(Signal::Kill).await.expect("signalled");
    ending.wait().await.expect("ends");
    // The engine forgets an exec as it handles its exit: wait for that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while processes(garden.clone(), info.handle.clone()).await != after_left {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ended process is still listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Regression (issue 15): only a child process is OOM-killed, the container
/// keeps running, and the engine's OOM event is the one trace of it.
#[tokio::test]
async fn regression_a_child_oom_kill_is_reported() {
    let guard = OwnerGuard::new("garden-child-oom");
    let garden = garden().await;
    let mut spec = spec(&guard, "c").await;
    spec.limits = Limits {
        memory_mb: 32,
        ..Default::default()
    };
    let info = garden.create(spec).await.expect("created");
    let mut events = garden
        .container_events(&guard.properties())
        .await
        .expect("subscribed");

    let done = run(
        &garden,
        &info.handle,
        sh("(x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo ${#x}); echo parent alive"),
    )
    .await;
    assert!(done.stdout.ends_with("parent alive\n"), "{}", done.stdout);
    // Waits for the event itself; the bound only keeps a broken engine from
    // hanging the suite.
    let event = tokio::time::timeout(std::time::Duration::from_secs(60), events.next())
        .await
        .expect("an OOM event")
        .expect("the stream is open");
    assert_eq!(event.handle, info.handle);
    assert_eq!(event.kind, lattice_garden::ContainerEventKind::OutOfMemory);
    assert_eq!(
        event.properties.get(lattice_garden::OWNER_PROPERTY),
        Some(&guard.owner().to_string())
    );
    assert!(garden.info(&info.handle).await.expect("there").running);
}

/// Issue 16: a cell learns that a container died from the engine's events,
/// without polling it.
#[tokio::test]
async fn a_killed_containers_exit_is_reported() {
    let guard = OwnerGuard::new("garden-exit-event");
    let garden = garden().await;
    let info = garden
        .create(spec(&guard, "c").await)
        .await
        .expect("created");
    let mut events = garden
        .container_events(&guard.properties())
        .await
        .expect("subscribed");
    let docker = lattice_testkit::docker::connect().await;
    let options = bollard::query_parameters::KillContainerOptionsBuilder::default()
        .signal("KILL")
        .build();
    docker
        .kill_container(&info.handle, Some(options))
        .await
        .expect("the engine kills the container");
    let event = tokio::time::timeout(std::time::Duration::from_secs(60), events.next())
        .await
        .expect("an exit event")
        .expect("the stream is open");
    assert_eq!(event.handle, info.handle);
    assert_eq!(
        event.kind,
        lattice_garden::ContainerEventKind::Exited { status: Some(137) }
    );
    assert_eq!(
        event.properties.get(lattice_garden::OWNER_PROPERTY),
        Some(&guard.owner().to_string())
    );
}

/// Regression (issue 15): containers had no PID limit.
#[tokio::test]
async fn regression_every_container_has_a_pid_limit() {
    let guard = OwnerGuard::new("garden-pids");
    let garden = garden().await;
    // cgroup v2 and v1 keep the limit in different places.
    let read_limit =
        sh("cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max");
    let mut limited = spec(&guard, "limited").await;
    limited.limits = Limits {
        pids: 20,
        ..Default::default()
    };
    let info = garden.create(limited).await.expect("created");
    let done = run(&garden, &info.handle, read_limit.clone()).await;
    assert_eq!(done.stdout.trim(), "20", "stderr: {}", done.stderr);
    let info = garden
        .create(spec(&guard, "default").await)
        .await
        .expect("created");
    let done = run(&garden, &info.handle, read_limit).await;
    assert_eq!(
        done.stdout.trim(),
        lattice_garden::DEFAULT_PIDS_LIMIT.to_string()
    );
}

/// Usage reads what the container really uses: memory held in `/dev/shm`
/// (a tmpfs charged to the container), a file written to its writable
/// layer, CPU time spent in a busy loop; and its memory limit.
#[tokio::test]
async fn usage_reads_memory_disk_and_cpu_time() {
    const MIB: u64 = 1024 * 1024;
    let guard = OwnerGuard::new("garden-usage");
    let garden = garden().await;
    let mut spec = spec(&guard, "u").await;
    spec.limits.memory_mb = 96;
    garden.create(spec.clone()).await.expect("created");
    let idle = garden.usage(&spec.handle).await.expect("a sample");
    assert_eq!(idle.memory_limit_bytes, 96 * MIB);

    let done = run(
        &garden,
        &spec.handle,
        sh("head -c 33554432 /dev/zero > /dev/shm/held && \
            head -c 4194304 /dev/zero > /tmp/written && \
            i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"),
    )
    .await;
    assert_eq!(done.status, 0, "{}", done.stderr);
    let busy = garden.usage(&spec.handle).await.expect("a sample");
    assert!(
        (30 * MIB..=70 * MIB).contains(&busy.memory_bytes),
        "32 MiB held: {busy:?}"
    );
    assert!(busy.disk_bytes >= 4 * MIB, "4 MiB written: {busy:?}");
    assert!(
        busy.cpu_nanos > idle.cpu_nanos,
        "the loop used CPU: {busy:?}"
    );

    garden.destroy(&spec.handle).await.expect("destroyed");
    let gone = garden.usage(&spec.handle).await;
    assert!(
        matches!(gone, Err(GardenError::ContainerNotFound(_))),
        "{gone:?}"
    );
}

/// A program's image (the sample app's, the cell lock's) is made again
/// when the program changes (an upgrade of lattice), and the build it
/// replaced does not stay on the engine.
#[tokio::test]
async fn a_changed_program_gets_a_new_image_and_the_old_build_goes() {
    let garden = garden().await;
    let docker = lattice_testkit::docker::connect().await;
    // Our own tag: other tests run beside this one on the same engine.
    let tag = format!(
        "lattice-test/program-{}:latest",
        uuid::Uuid::new_v4().simple()
    );
    let dir = tempfile::tempdir().expect("temporary directory");
    let program = dir.path().join("app");
    let image_id = |docker: bollard::Docker, tag: String| async move {
        docker
            .inspect_image(&tag)
            .await
            .expect("the image exists")
            .id
            .expect("an image id")
    };

    std::fs::write(&program, b"first build").expect("write the program");
    garden
        .ensure_program_image(&tag, &program, &[])
        .await
        .expect("image made");
    let first = image_id(docker.clone(), tag.clone()).await;
    garden
        .ensure_program_image(&tag, &program, &[])
        .await
        .expect("image kept");
    assert_eq!(
        image_id(docker.clone(), tag.clone()).await,
        first,
        "the same program keeps its image"
    );

    std::fs::write(&program, b"second build").expect("write the program");
    garden
        .ensure_program_image(&tag, &program, &[])
        .await
        .expect("image made again");
    let second = image_id(docker.clone(), tag.clone()).await;
    assert_ne!(second, first, "a changed program gets a new image");
    assert!(
        docker.inspect_image(&first).await.is_err(),
        "the first build is still on the engine"
    );

    images::remove_image(&docker, &tag).await;
}
