//! The buildpack lifecycle end to end, as a developer drives it with ltc:
//! `ltc build-droplet` stages the sample app's source with the sample
//! buildpacks on a real cluster (the local stack image, the real engine),
//! `ltc launch-droplet` runs the droplet, routed; failed stagings say why
//! and store nothing; a droplet survives export and import byte for byte.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, Cluster};

const WAIT: Duration = Duration::from_secs(60);

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lifecycles/samples")
}

fn sample(path: &str) -> String {
    samples().join(path).display().to_string()
}

/// One `ltc` command's exit code, stdout and stderr.
#[derive(Debug)]
struct Ran {
    code: u8,
    out: String,
    err: String,
}

async fn ltc(cluster: &Cluster, args: &[&str]) -> Ran {
    let (code, out, err) = common::run_ltc(&cluster.base, None, args).await;
    Ran { code, out, err }
}

/// The droplets `ltc list-droplets --json` shows: name -> record.
async fn droplets(cluster: &Cluster) -> serde_json::Map<String, serde_json::Value> {
    let ran = ltc(cluster, &["list-droplets", "--json"]).await;
    assert_eq!(ran.code, 0, "{ran:?}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&ran.out).expect("a JSON list");
    list.into_iter()
        .map(|d| (d["name"].as_str().expect("a name").to_string(), d))
        .collect()
}

/// The instance indexes that answered `/instance` through the router for
/// `host`, once every one of `expected` has.
async fn instances_answering(router: &str, host: &str, expected: usize) -> BTreeSet<String> {
    let http = reqwest::Client::new();
    eventually(
        "every instance to answer through the router",
        WAIT,
        || async {
            let mut seen = BTreeSet::new();
            for _ in 0..20 {
                let response = http
                    .get(format!("http://{router}/instance"))
                    .header("host", host)
                    .send()
                    .await
                    .ok()?;
                if !response.status().is_success() {
                    return None;
                }
                seen.insert(response.text().await.ok()?.trim().to_string());
            }
            (seen.len() == expected).then_some(seen)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn build_launch_fail_export_import_and_remove_droplets() {
    let stack = lattice_testkit::images::stack_image().await;
    let cluster = Cluster::start().await;

    // Built from source with a local buildpack directory; staging's lines
    // are shown while it runs.
    let built = ltc(
        &cluster,
        &[
            "build-droplet",
            "site",
            &sample("apps/static-app"),
            "-b",
            &sample("buildpacks/static-sh"),
            "--detect",
            "--stack",
            &stack,
        ],
    )
    .await;
    assert_eq!(built.code, 0, "{built:?}");
    assert!(
        built
            .out
            .contains("Built droplet site with buildpack static-sh (detected as Static-sh)"),
        "{built:?}"
    );
    assert!(
        built.out.contains("Start command: sh ./start.sh"),
        "{built:?}"
    );
    assert!(
        built
            .err
            .contains("[STG] -----> Static-sh buildpack: installing"),
        "{built:?}"
    );
    let listed = droplets(&cluster).await;
    let site = &listed["site"];
    assert_eq!(site["buildpack"], "Static-sh");
    assert_eq!(site["start_command"], "sh ./start.sh");
    assert_eq!(site["stack"], stack.as_str());
    let staging = cluster.client.tasks().await.expect("tasks");
    assert!(
        staging.is_empty(),
        "the staging task was deleted: {staging:?}"
    );

    // Launched with two instances, both routed.
    let launched = ltc(&cluster, &["launch-droplet", "web", "site", "-i", "2"]).await;
    assert_eq!(launched.code, 0, "{launched:?}");
    assert!(
        launched
            .out
            .starts_with("Created web: 2 instances of droplet site\nweb is now running.\n"),
        "{launched:?}"
    );
    let seen = instances_answering(&cluster.router, "web.localhost", 2).await;
    assert_eq!(seen, BTreeSet::from(["0".to_string(), "1".to_string()]));

    // A compile that fails: its output is in the staging lines, the reason
    // is named, and no droplet is stored.
    let broken = ltc(
        &cluster,
        &[
            "build-droplet",
            "broken",
            &sample("apps/static-app"),
            "-b",
            &sample("buildpacks/fails-compile"),
            "--stack",
            &stack,
        ],
    )
    .await;
    assert_eq!(broken.code, 1, "{broken:?}");
    assert!(
        broken
            .err
            .contains("fails-compile: this buildpack always fails"),
        "{broken:?}"
    );
    assert!(
        broken.err.contains(
            "error: staging broken failed: the buildpack's compile failed (Exited with status 223)"
        ),
        "{broken:?}"
    );

    // With --detect, a buildpack that detects nothing (no index.html, no
    // www/) fails the staging.
    let plain = tempfile::tempdir().expect("temp dir");
    std::fs::write(plain.path().join("README"), "no site here").expect("writable");
    let undetected = ltc(
        &cluster,
        &[
            "build-droplet",
            "undetected",
            &plain.path().display().to_string(),
            "-b",
            &sample("buildpacks/static-sh"),
            "--detect",
            "--stack",
            &stack,
        ],
    )
    .await;
    assert_eq!(undetected.code, 1, "{undetected:?}");
    assert!(
        undetected.err.contains(
            "error: staging undetected failed: no buildpack detected the app (Exited with status 222)"
        ),
        "{undetected:?}"
    );
    let listed = droplets(&cluster).await;
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        ["site"],
        "failed builds store nothing"
    );

    // Export, import under another name, export again: the same bytes.
    let files = tempfile::tempdir().expect("temp dir");
    let first = files.path().join("site.tgz");
    let second = files.path().join("copy.tgz");
    let path = |p: &Path| p.display().to_string();
    let exported = ltc(&cluster, &["export-droplet", "site", &path(&first)]).await;
    assert_eq!(exported.code, 0, "{exported:?}");
    let imported = ltc(
        &cluster,
        &[
            "import-droplet",
            "site-copy",
            &path(&first),
            "--stack",
            &stack,
        ],
    )
    .await;
    assert_eq!(imported.code, 0, "{imported:?}");
    let again = ltc(&cluster, &["export-droplet", "site-copy", &path(&second)]).await;
    assert_eq!(again.code, 0, "{again:?}");
    let bytes = std::fs::read(&first).expect("exported");
    assert!(!bytes.is_empty());
    assert_eq!(bytes, std::fs::read(&second).expect("exported"));
    let listed = droplets(&cluster).await;
    for field in ["sha256", "size", "buildpack", "start_command", "stack"] {
        assert_eq!(listed["site"][field], listed["site-copy"][field], "{field}");
    }

    // Removed: the app, then both droplets.
    let removed = ltc(&cluster, &["remove", "web"]).await;
    assert_eq!(removed.code, 0, "{removed:?}");
    let removed = ltc(&cluster, &["remove-droplet", "site", "site-copy"]).await;
    assert_eq!(removed.code, 0, "{removed:?}");
    assert_eq!(
        removed.out,
        "Removed droplet site\nRemoved droplet site-copy\n"
    );
    assert!(droplets(&cluster).await.is_empty());
    let gone = ltc(&cluster, &["remove-droplet", "site"]).await;
    assert_eq!(gone.code, 1, "{gone:?}");

    eventually("the app's containers to be removed", WAIT, || async {
        cluster.containers().await.is_empty().then_some(())
    })
    .await;
    cluster.stop().await;
}

/// Writes `files` (path -> content; scripts under `bin/` and `*.sh` are
/// made executable) under `root`.
fn write_tree(root: &Path, files: &[(&str, &str)]) {
    use std::os::unix::fs::PermissionsExt as _;
    for (path, content) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("writable");
        std::fs::write(&path, content).expect("writable");
        let executable = path.parent().is_some_and(|p| p.ends_with("bin"))
            || path.extension().is_some_and(|e| e == "sh");
        let mode = if executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("own file");
    }
}

fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@example.com"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?}");
}

/// A buildpack as Cloud Foundry's binary buildpack is: bin/detect always
/// fails, by design; compile leaves the app as it is.
const BINARY_LIKE: &[(&str, &str)] = &[
    ("bin/detect", "#!/bin/sh\nexit 1\n"),
    (
        "bin/compile",
        "#!/bin/sh\necho '-----> Binary-like: nothing to compile'\n",
    ),
    (
        "bin/release",
        "#!/bin/sh\nprintf -- '---\\ndefault_process_types:\\n  web: sh ./start.sh\\n'\n",
    ),
];

/// An app serving, on $PORT, a page of what its environment holds.
const ENV_APP: &[(&str, &str)] = &[
    (
        "start.sh",
        "#!/bin/sh\n\
         vcap_index=$(echo \"$VCAP_APPLICATION\" | grep -o '\"instance_index\":[0-9]*')\n\
         echo \"$GREETING $FROM_PROFILE $MEMORY_LIMIT $CF_STACK $INSTANCE_INDEX $vcap_index \
         ports=${CF_INSTANCE_PORTS:+set} services=$VCAP_SERVICES by=$STARTED_BY\" > index.html\n\
         exec httpd -f -p \"$PORT\" -h .\n",
    ),
    ("Procfile", "web: STARTED_BY=procfile sh ./start.sh\n"),
    (
        ".profile.d/greet.sh",
        "export GREETING=hello-from-profile-d\n",
    ),
    (".profile", "export FROM_PROFILE=profile-too\n"),
];

/// Issue 14, item 3: buildpacks in the shapes real ones come in, and the
/// environment Cloud Foundry gives staging and apps; item 2: a stack named
/// `repo:tag`.
#[tokio::test(flavor = "multi_thread")]
async fn real_buildpack_shapes_stage_and_run_with_cloud_foundrys_environment() {
    lattice_testkit::images::stack_image().await;
    let stack = lattice_testkit::images::STACK_IMAGE; // repo:tag, as ltc create takes it
    let cluster = Cluster::start().await;
    let root = tempfile::tempdir().expect("temp dir");
    let app = root.path().join("app");
    write_tree(&app, ENV_APP);

    // A buildpack whose detect always fails is used when named, and
    // nothing claims it was detected.
    let binary = root.path().join("binary-like");
    write_tree(&binary, BINARY_LIKE);
    let (app_dir, binary_dir) = (app.display().to_string(), binary.display().to_string());
    let args = [
        "build-droplet",
        "bin",
        &app_dir,
        "-b",
        &binary_dir,
        "--stack",
        stack,
    ];
    let built = ltc(&cluster, &args).await;
    assert_eq!(built.code, 0, "{built:?}");
    assert!(
        built
            .out
            .contains("Built droplet bin with buildpack binary-like: "),
        "{built:?}"
    );
    assert!(!built.out.contains("detected as"), "{built:?}");
    assert!(
        built
            .out
            .contains("Start command: STARTED_BY=procfile sh ./start.sh"),
        "the Procfile's web beats the release's: {built:?}"
    );
    assert_eq!(
        droplets(&cluster).await["bin"]["stack"],
        "docker:///lattice-test/stack#v1"
    );
    // With --detect, its detect is run, and refuses.
    let detected = ltc(&cluster, &[&args[..], &["--detect"]].concat()).await;
    assert_eq!(detected.code, 1, "{detected:?}");
    assert!(
        detected.err.contains("no buildpack detected the app"),
        "{detected:?}"
    );

    // A zip as GitHub serves it: one top-level folder.
    let zip_path = root.path().join("null-buildpack-master.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).expect("writable"));
    for (path, content) in BINARY_LIKE {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
        zip.start_file(format!("null-buildpack-master/{path}"), options)
            .expect("zip entry");
        std::io::Write::write_all(&mut zip, content.as_bytes()).expect("zip entry");
    }
    zip.finish().expect("zip written");
    let zip_arg = zip_path.display().to_string();
    let built = ltc(
        &cluster,
        &[
            "build-droplet",
            "zipped",
            &app_dir,
            "-b",
            &zip_arg,
            "--stack",
            stack,
        ],
    )
    .await;
    assert_eq!(built.code, 0, "{built:?}");

    // A git repository, at a branch: its compile fails unless staging has
    // Cloud Foundry's environment.
    let repo = root.path().join("cf-env-buildpack");
    write_tree(
        &repo,
        &[
            ("bin/detect", "#!/bin/sh\nexit 1\n"),
            (
                "bin/compile",
                "#!/bin/sh\n\
                 case \"$VCAP_APPLICATION\" in *'\"application_name\":\"envy\"'*) ;; \
                 *) echo \"no VCAP_APPLICATION: $VCAP_APPLICATION\" >&2; exit 1 ;; esac\n\
                 [ \"$MEMORY_LIMIT\" = 256m ] || { echo \"MEMORY_LIMIT is '$MEMORY_LIMIT'\" >&2; exit 1; }\n\
                 [ \"$CF_STACK\" = stack ] || { echo \"CF_STACK is '$CF_STACK'\" >&2; exit 1; }\n\
                 echo \"-----> cf-env: staged with $MEMORY_LIMIT on $CF_STACK\"\n",
            ),
            (
                "bin/release",
                "#!/bin/sh\nprintf -- '---\\ndefault_process_types:\\n  web: sh ./start.sh\\n'\n",
            ),
        ],
    );
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "a buildpack"]);
    git(&repo, &["checkout", "-q", "-b", "elsewhere"]);
    std::fs::remove_file(repo.join("bin/compile")).expect("removable");
    git(&repo, &["commit", "-q", "-am", "not on main"]);
    let git_url = format!("file://{}#main", repo.display());
    let built = ltc(
        &cluster,
        &[
            "build-droplet",
            "envy",
            &app_dir,
            "-b",
            &git_url,
            "-m",
            "256",
            "--stack",
            stack,
        ],
    )
    .await;
    assert_eq!(built.code, 0, "{built:?}");
    assert!(
        built.out.contains("Cloned buildpack cf-env-buildpack"),
        "{built:?}"
    );
    assert!(
        built.err.contains("cf-env: staged with 256m on stack"),
        "{built:?}"
    );

    // The app runs with the profile scripts sourced, the Procfile's
    // command, and Cloud Foundry's environment, per instance.
    let launched = ltc(&cluster, &["launch-droplet", "envy", "envy", "-m", "64"]).await;
    assert_eq!(launched.code, 0, "{launched:?}");
    let http = reqwest::Client::new();
    let page = eventually("the app to answer through the router", WAIT, || async {
        let response = http
            .get(format!("http://{}/index.html", cluster.router))
            .header("host", "envy.localhost")
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    })
    .await;
    assert_eq!(
        page.trim(),
        "hello-from-profile-d profile-too 64m stack 0 \"instance_index\":0 ports=set \
         services={} by=procfile"
    );

    // A stack the cells cannot have is named, with what to do.
    let missing = ltc(
        &cluster,
        &[
            "build-droplet",
            "nostack",
            &app_dir,
            "-b",
            &binary_dir,
            "--stack",
            "lattice-test/no-such-stack:v1",
        ],
    )
    .await;
    assert_eq!(missing.code, 1, "{missing:?}");
    assert!(
        missing
            .err
            .contains("the stack lattice-test/no-such-stack:v1 cannot be had on the cell"),
        "{missing:?}"
    );
    assert!(missing.err.contains("pass --stack"), "{missing:?}");
    cluster.stop().await;
}
