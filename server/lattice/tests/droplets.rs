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

    // A buildpack that detects nothing (no index.html, no www/).
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
