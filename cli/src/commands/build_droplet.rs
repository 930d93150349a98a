//! `ltc build-droplet DROPLET [PATH] -b BUILDPACK`: stage an app's source
//! with a buildpack into a droplet stored by the cluster's file server, as
//! Lattice's `ltc build-droplet` did (its form `ltc build-droplet DROPLET
//! BUILDPACK -p PATH` is accepted too).
//!
//! 1. ltc packs PATH (honouring `.cfignore` and `.gitignore`, without
//!    `.git/`; see `bits`) and uploads it as a blob; a local buildpack is
//!    packed or converted and uploaded the same way (see `buildpacks`).
//! 2. A staging task (`DROPLET-staging-XXXXXXXX`, domain
//!    `lattice-staging`, log source `STG`) runs in a container of the stack:
//!    it downloads the app to `/tmp/app` and the buildpack to
//!    `/tmp/buildpacks/NAME`, runs `buildpack-builder`, and uploads
//!    `/tmp/droplet.tgz` to the file server as the droplet. The cell
//!    fetches from the receptor's own address (the target), with the
//!    target's credentials in the URLs.
//! 3. ltc reads the builder's [`StagingResult`] from the task, records it as
//!    the droplet's metadata (the buildpack as it detected the app, the
//!    start command, the stack) and deletes the task.
//!
//! The droplet's `STG` and `CELL` lines are shown on stderr while the task
//! runs.
//!
//! # Errors
//! Exit code 1 for bad input, a failed upload or a failed staging (the
//! reason, e.g. "no buildpack detected the app", and the last staging lines
//! are in the message; the upload step never ran, so no droplet was stored
//! and one of the same name stays as it was); exit code 3 when the staging
//! task did not finish within `--timeout` (it is cancelled).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use lattice_client::FileServerClient;
use lattice_models::action::{DownloadAction, RunAction, SerialAction, UploadAction};
use lattice_models::droplet::{BlobInfo, DropletMetadata, DropletName};
use lattice_models::lifecycle::{
    StagingResult, BUILDPACK_BUILDER_PATH, BUILDPACK_EXIT_COMPILE_FAILED,
    BUILDPACK_EXIT_DETECT_FAILED, BUILDPACK_EXIT_RELEASE_FAILED, STAGING_APP_DIR,
    STAGING_BUILDPACKS_DIR, STAGING_DROPLET_PATH,
};
use lattice_models::log::LogFilter;
use lattice_models::log::SOURCE_STAGING;
use lattice_models::validation::validate_guid;
use lattice_models::{Action, EnvironmentVariable, Task, TaskCreateRequest};
use tokio::io::AsyncWriteExt as _;

use crate::bits::{self, Packed};
use crate::buildpacks::{self, Buildpack};
use crate::cf_env::{with_cf_env, AppEnv};
use crate::commands::create::{self, parse_env, STAGING_DOMAIN};
use crate::image::rootfs_for_image;
use crate::log_stream::{LineFormat, LogTail};
use crate::progress::Spinner;
use crate::transfer::{self, human_size, ByteBar};
use crate::Context;

/// The stack when `--stack` is not given: Cloud Foundry's, which the
/// engine pulls from Docker Hub (so it needs a registry the cells reach).
pub const DEFAULT_STACK: &str = "docker:///cloudfoundry/cflinuxfs4";
/// Where the builder writes its [`StagingResult`], read back as the task's
/// result.
pub const STAGING_RESULT_FILE: &str = "/tmp/lattice-staging-result.json";
/// How many staging lines a failure shows at most.
const MAX_FAILURE_LINES: usize = 10;

pub const EXAMPLES: &str = "\
Examples:
  # The app in the current directory, with a buildpack directory
  ltc build-droplet site -b ../buildpacks/static-sh
  # An app directory, a buildpack archive, a stack image of your own
  ltc build-droplet site ./app -b ./static-sh.tgz --stack me/stack:v1
  # Lattice's form, with a well-known buildpack (fetched from GitHub)
  ltc build-droplet api go -p ./api -e GOVERSION=go1.22
  # A buildpack at a URL, whose bin/detect must accept the app
  ltc build-droplet web -b http://files.local/node.tgz --detect
  # A buildpack in a git repository, at a branch or tag
  ltc build-droplet web -b https://github.com/cloudfoundry/null-buildpack.git#master";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The droplet's name: letters, digits, '-' and '_'. Building it again
    /// replaces it once the new one is staged.
    pub droplet: String,

    /// The app's directory (default: the current one). In Lattice's form,
    /// `DROPLET BUILDPACK -p PATH`, this is the buildpack instead.
    #[arg(value_name = "PATH")]
    pub path_or_buildpack: Option<String>,

    /// The buildpack: a directory with bin/detect, a .zip, .tgz, .tar.gz or
    /// .tar file (one holding a single folder is unwrapped), an http(s) URL
    /// of one, a git repository (`https://host/org/bp.git#REF`,
    /// `file:///path#REF` or a local repository's path; cloned at the
    /// branch or tag REF, else HEAD), or a well-known name (binary, go,
    /// java, nodejs, php, python, ruby, staticfile: Cloud Foundry's
    /// releases, which ltc fetches from GitHub).
    #[arg(short = 'b', long, value_name = "BUILDPACK")]
    pub buildpack: Option<String>,

    /// The app's directory, in Lattice's form (`DROPLET BUILDPACK -p
    /// PATH`).
    #[arg(short = 'p', long, value_name = "PATH")]
    pub path: Option<PathBuf>,

    /// An environment variable of staging, NAME=VALUE; NAME alone takes the
    /// value ltc itself has. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,

    /// The stack: the image staging runs in, and the app later, as `ltc
    /// create` takes one (`repo`, `repo:tag`, `host:5000/repo:tag`) or a
    /// docker:// URL. The default is pulled from Docker Hub, so the cells
    /// need a registry; offline, pass an image of your own (docs/cli.md).
    #[arg(long, default_value = DEFAULT_STACK, value_name = "IMAGE",
          value_parser = rootfs_for_image)]
    pub stack: String,

    /// Memory limit of the staging task, in MB (0: no limit).
    #[arg(short = 'm', long, default_value_t = 1024,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub memory_mb: i64,

    /// Run the buildpack's bin/detect first, and fail when it refuses the
    /// app. Without it the buildpack given is used as it is, as Cloud
    /// Foundry does with a buildpack the user names (the binary buildpack's
    /// bin/detect always fails, by design).
    #[arg(long)]
    pub detect: bool,

    /// Detection is skipped by default; kept so that scripts written for
    /// earlier versions still run.
    #[arg(long, hide = true, conflicts_with = "detect")]
    pub skip_detect: bool,

    /// How long staging may take. Past it the task is cancelled and ltc
    /// exits with 3.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The app's directory and the buildpack, from either form of the command
/// line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inputs {
    pub app_dir: PathBuf,
    pub buildpack: String,
}

/// Reads the two forms: `DROPLET [PATH] -b BUILDPACK`, and Lattice's
/// `DROPLET BUILDPACK [-p PATH]` (the positional read as a buildpack when
/// there is no `-b` and it looks like one).
///
/// # Errors
/// No buildpack, or the app's directory given twice.
pub(crate) fn inputs(args: &Args) -> anyhow::Result<Inputs> {
    let current = || PathBuf::from(".");
    match (&args.buildpack, &args.path_or_buildpack, &args.path) {
        (Some(_), Some(positional), Some(path)) => bail!(
            "the app's directory is given twice: {positional} and --path {}",
            path.display()
        ),
        (Some(buildpack), positional, path) => Ok(Inputs {
            app_dir: path
                .clone()
                .or_else(|| positional.as_ref().map(PathBuf::from))
                .unwrap_or_else(current),
            buildpack: buildpack.clone(),
        }),
        (None, Some(positional), path)
            if path.is_some() || buildpacks::looks_like_buildpack(positional) =>
        {
            // With --path, the positional can only be the buildpack: say
            // why it is not one rather than that none was given.
            buildpacks::resolve(positional)?;
            Ok(Inputs {
                app_dir: path.clone().unwrap_or_else(current),
                buildpack: positional.clone(),
            })
        }
        (None, _, _) => bail!(
            "no buildpack: give one with --buildpack/-b: a directory with bin/detect, a .zip or \
             .tgz file, an http(s) URL, or one of: {}",
            buildpacks::known_names()
        ),
    }
}

/// What the staging task is made of, besides what every one shares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Staging {
    pub droplet: String,
    /// The end of the task's guid (see [`create::staging_suffix`]).
    pub suffix: String,
    pub stack: String,
    /// Where the cell fetches the app's bits (a blob).
    pub app_url: String,
    /// Where the cell fetches the buildpack.
    pub buildpack_url: String,
    /// Reuse the buildpack's download on the cell: set for blobs, whose URL
    /// names their content; a URL elsewhere may serve new content.
    pub buildpack_cache_key: Option<String>,
    /// The buildpack's directory name under `/tmp/buildpacks`.
    pub buildpack_name: String,
    /// Where the cell posts the droplet.
    pub upload_url: String,
    pub env: Vec<EnvironmentVariable>,
    pub memory_mb: i64,
    pub skip_detect: bool,
}

/// The staging task (see the module doc).
pub(crate) fn staging_task(staging: &Staging) -> TaskCreateRequest {
    let buildpack_dir = format!("{STAGING_BUILDPACKS_DIR}/{}", staging.buildpack_name);
    let mut builder_args: Vec<String> = [
        "--app-dir",
        STAGING_APP_DIR,
        "--buildpacks-dir",
        STAGING_BUILDPACKS_DIR,
        "--output-droplet",
        STAGING_DROPLET_PATH,
        "--output-metadata",
        STAGING_RESULT_FILE,
    ]
    .map(String::from)
    .to_vec();
    if staging.skip_detect {
        builder_args.extend(["--buildpack".to_string(), staging.buildpack_name.clone()]);
    }
    let actions = vec![
        Action::Download(DownloadAction {
            from: staging.app_url.clone(),
            to: STAGING_APP_DIR.to_string(),
            cache_key: None,
            artifact: Some("app".to_string()),
            user: None,
            log_source: None,
        }),
        Action::Download(DownloadAction {
            from: staging.buildpack_url.clone(),
            to: buildpack_dir,
            cache_key: staging.buildpack_cache_key.clone(),
            artifact: Some(format!("buildpack {}", staging.buildpack_name)),
            user: None,
            log_source: None,
        }),
        Action::Run(RunAction {
            path: BUILDPACK_BUILDER_PATH.to_string(),
            args: builder_args,
            dir: None,
            env: Vec::new(),
            user: None,
            resource_limits: None,
            log_source: None,
            suppress_log_output: false,
        }),
        Action::Upload(UploadAction {
            from: STAGING_DROPLET_PATH.to_string(),
            to: staging.upload_url.clone(),
            artifact: Some("droplet".to_string()),
            user: None,
            log_source: None,
        }),
    ];
    TaskCreateRequest {
        task_guid: format!("{}-staging-{}", staging.droplet, staging.suffix),
        domain: STAGING_DOMAIN.to_string(),
        rootfs: staging.stack.clone(),
        action: Action::Serial(SerialAction {
            actions,
            log_source: None,
        }),
        env: staging.env.clone(),
        cpu_weight: 0,
        disk_mb: 0,
        memory_mb: staging.memory_mb,
        privileged: false,
        log_guid: staging.droplet.clone(),
        log_source: SOURCE_STAGING.to_string(),
        result_file: STAGING_RESULT_FILE.to_string(),
        completion_callback_url: String::new(),
        annotation: String::new(),
        metrics_guid: String::new(),
        egress_rules: Vec::new(),
    }
}

pub async fn run(
    args: &Args,
    ctx: &Context,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let droplet = &args.droplet;
    // Both: it names a droplet (file server) and a task and log guid.
    DropletName::parse(droplet)?;
    validate_guid("DROPLET", droplet).map_err(|e| anyhow::anyhow!("invalid droplet name: {e}"))?;
    let inputs = inputs(args)?;
    let buildpack = buildpacks::resolve(&inputs.buildpack)?;
    let buildpack_name = buildpack.name(&inputs.buildpack);
    let env = args
        .env
        .iter()
        .map(|value| parse_env(value, lookup))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    // Cloud Foundry's staging environment, which real buildpacks read.
    let cf = AppEnv {
        name: droplet,
        uris: Vec::new(),
        memory_mb: args.memory_mb,
        disk_mb: 0,
        stack: &args.stack,
    };
    let env = with_cf_env(&cf, &env);
    if args.timeout.is_zero() {
        bail!("--timeout must be more than 0");
    }

    let files = transfer::file_server(ctx);
    let dir = inputs.app_dir.display().to_string();
    let app = pack(&inputs.app_dir).await?;
    if app.entries == 0 {
        bail!("{dir} holds nothing to stage (is every file ignored by .cfignore or .gitignore?)");
    }
    let app_blob = upload(ctx, &files, &app, &format!("the app ({dir})")).await?;
    writeln!(
        out,
        "Uploaded the app ({dir}): {}, {}",
        entries(app.entries),
        human_size(app_blob.size)
    )?;
    drop(app);
    let (buildpack_url, buildpack_cache_key) =
        stage_buildpack(ctx, &files, &buildpack, &buildpack_name, out).await?;

    let upload_url = transfer::cell_url(
        ctx,
        &format!("/v1/droplets/{droplet}/upload"),
        &[("stack", &args.stack)],
    )?;
    let request = staging_task(&Staging {
        droplet: droplet.clone(),
        suffix: create::staging_suffix(),
        stack: args.stack.clone(),
        app_url: transfer::cell_url(ctx, &format!("/v1/blobs/{}", app_blob.sha256), &[])?,
        buildpack_url,
        buildpack_cache_key,
        buildpack_name,
        upload_url,
        env,
        memory_mb: args.memory_mb,
        skip_detect: !args.detect,
    });
    request
        .validate()
        .with_context(|| format!("cannot stage {droplet}"))?;

    let client = ctx.client()?;
    let format = LineFormat::new(ctx.stderr.color);
    // Followed before the task exists, so that no line of it is missed.
    let mut tail = LogTail::start(ctx.logs_client()?, droplet, format).await;
    let task = create::run_staging_task(
        &client,
        ctx,
        &mut tail,
        &request,
        droplet,
        args.timeout,
        out,
    )
    .await?;
    drop(tail);
    if task.failed {
        if let Some(err) = stack_unavailable(&args.stack, &task.failure_reason) {
            return Err(err);
        }
        return Err(staging_failed(ctx, droplet, &task).await);
    }
    let result: StagingResult = serde_json::from_str(&task.result).with_context(|| {
        format!(
            "staging {droplet} gave no readable result ({:?})",
            task.result
        )
    })?;
    // What the buildpack detected the app as, which the droplet itself
    // records (`staging_info.yml`): an imported copy then says the same.
    let metadata = DropletMetadata {
        buildpack: Some(result.detected_buildpack.clone()).filter(|b| !b.is_empty()),
        start_command: Some(result.start_command.clone()).filter(|c| !c.is_empty()),
        stack: Some(args.stack.clone()),
    };
    let stored = files
        .set_droplet_metadata(droplet, &metadata)
        .await
        .with_context(|| format!("droplet {droplet} was built, but its metadata was not saved"))?;
    // Only detection names what the app was detected as.
    let detected = if args.detect {
        format!(" (detected as {})", result.detected_buildpack)
    } else {
        String::new()
    };
    writeln!(
        out,
        "Built droplet {droplet} with buildpack {}{detected}: {}",
        result.buildpack,
        human_size(stored.size)
    )?;
    if result.start_command.is_empty() {
        writeln!(
            out,
            "It has no start command: give one when launching it, after `--`"
        )?;
    } else {
        writeln!(out, "Start command: {}", result.start_command)?;
    }
    writeln!(out, "Launch it with: ltc launch-droplet APP {droplet}")?;
    Ok(())
}

/// Makes the buildpack reachable by the cell: its URL and download cache
/// key.
async fn stage_buildpack(
    ctx: &Context,
    files: &FileServerClient,
    buildpack: &Buildpack,
    name: &str,
    out: &mut dyn Write,
) -> anyhow::Result<(String, Option<String>)> {
    let packed = match buildpack {
        Buildpack::TarballUrl(url) => {
            writeln!(out, "The staging cell fetches buildpack {name} from {url}")?;
            return Ok((url.clone(), None));
        }
        Buildpack::Tarball(path) => {
            let blob = upload_file(ctx, files, path, &format!("buildpack {name}")).await?;
            return blob_source(ctx, out, name, &blob, None);
        }
        Buildpack::Dir(path) => pack(path).await?,
        Buildpack::Zip(path) => convert(path.clone()).await?,
        Buildpack::ZipUrl(url) => {
            let zip = fetch(ctx, url, name).await?;
            convert(zip.path().to_path_buf()).await?
        }
        Buildpack::Git { url, reference } => {
            let at = reference
                .as_ref()
                .map(|r| format!(" at {r}"))
                .unwrap_or_default();
            let spinner = Spinner::new(&ctx.stderr, format!("Cloning buildpack {name}{at}..."));
            let clone = clone(url.clone(), reference.clone())
                .await
                .with_context(|| format!("cannot clone buildpack {name} from {url}{at}"))?;
            drop(spinner);
            writeln!(out, "Cloned buildpack {name} from {url}{at}")?;
            pack(clone.path()).await?
        }
    };
    let blob = upload(ctx, files, &packed, &format!("buildpack {name}")).await?;
    blob_source(ctx, out, name, &blob, Some(packed.entries))
}

fn blob_source(
    ctx: &Context,
    out: &mut dyn Write,
    name: &str,
    blob: &BlobInfo,
    count: Option<usize>,
) -> anyhow::Result<(String, Option<String>)> {
    let count = count
        .map(|n| format!("{}, ", entries(n)))
        .unwrap_or_default();
    writeln!(
        out,
        "Uploaded buildpack {name}: {count}{}",
        human_size(blob.size)
    )?;
    let url = transfer::cell_url(ctx, &format!("/v1/blobs/{}", blob.sha256), &[])?;
    Ok((url, Some(format!("blob-{}", blob.sha256))))
}

/// `1 entry`, `3 entries`: what an archive holds.
fn entries(count: usize) -> String {
    if count == 1 {
        "1 entry".to_string()
    } else {
        format!("{count} entries")
    }
}

/// [`bits::pack_dir`], off the async threads (it reads every file).
async fn pack(dir: &Path) -> anyhow::Result<Packed> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || bits::pack_dir(&dir))
        .await
        .context("packing stopped")?
}

/// [`buildpacks::clone_git`] into a new temporary directory, off the async
/// threads.
async fn clone(url: String, reference: Option<String>) -> anyhow::Result<tempfile::TempDir> {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::Builder::new()
            .prefix("ltc-buildpack-")
            .tempdir()
            .context("cannot create a temporary directory")?;
        buildpacks::clone_git(&url, reference.as_deref(), dir.path())?;
        Ok(dir)
    })
    .await
    .context("cloning stopped")?
}

/// [`bits::zip_to_tgz`], off the async threads.
async fn convert(zip: PathBuf) -> anyhow::Result<Packed> {
    tokio::task::spawn_blocking(move || bits::zip_to_tgz(&zip))
        .await
        .context("converting stopped")?
}

async fn upload(
    ctx: &Context,
    files: &FileServerClient,
    packed: &Packed,
    what: &str,
) -> anyhow::Result<BlobInfo> {
    upload_file(ctx, files, packed.path(), what).await
}

async fn upload_file(
    ctx: &Context,
    files: &FileServerClient,
    path: &Path,
    what: &str,
) -> anyhow::Result<BlobInfo> {
    let size = tokio::fs::metadata(path)
        .await
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let bar = ByteBar::new(&ctx.stderr, format!("Uploading {what}"), Some(size));
    files
        .upload_blob(path, bar.progress())
        .await
        .with_context(|| format!("cannot upload {what}"))
}

/// Downloads the buildpack zip at `url` to a temporary file.
async fn fetch(ctx: &Context, url: &str, name: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    let failed = || format!("cannot fetch buildpack {name} from {url}");
    let response = reqwest::Client::new()
        .get(url)
        .send()
        .await
        .and_then(|response| response.error_for_status())
        .with_context(failed)?;
    let file = tempfile::Builder::new()
        .prefix("ltc-")
        .suffix(".zip")
        .tempfile()
        .context("cannot create a temporary file")?;
    let mut writer = tokio::fs::File::from_std(file.reopen().context("cannot reopen it")?);
    let bar = ByteBar::new(
        &ctx.stderr,
        format!("Fetching buildpack {name}"),
        response.content_length(),
    );
    let progress = bar.progress();
    let mut received: u64 = 0;
    let mut response = response;
    while let Some(chunk) = response.chunk().await.with_context(failed)? {
        writer
            .write_all(&chunk)
            .await
            .with_context(|| format!("cannot write {}", file.path().display()))?;
        received += chunk.len() as u64;
        progress(received);
    }
    writer
        .flush()
        .await
        .with_context(|| format!("cannot write {}", file.path().display()))?;
    Ok(file)
}

/// The error of a staging whose stack image the cell could not have (the
/// default one cannot be pulled offline), naming it and what to do; `None`
/// for any other failure.
pub(crate) fn stack_unavailable(stack: &str, reason: &str) -> Option<anyhow::Error> {
    if !(reason.contains("failed to create container") && reason.contains("is not available")) {
        return None;
    }
    Some(anyhow::anyhow!(
        "the stack {} cannot be had on the cell ({reason}); pass --stack with an image the \
         cells have locally (docs/cli.md shows how to make one), e.g. --stack my/stack:v1",
        crate::image::image_for_rootfs(stack)
    ))
}

/// Why the staging task failed, for a person: the builder's exit codes
/// named (see `lattice_models::lifecycle`), else the reason as the cell
/// gave it.
pub(crate) fn explain_failure(reason: &str) -> String {
    let status = reason
        .rsplit_once("status ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse::<i64>().ok());
    let named = match status {
        Some(BUILDPACK_EXIT_DETECT_FAILED) => "no buildpack detected the app",
        Some(BUILDPACK_EXIT_COMPILE_FAILED) => "the buildpack's compile failed",
        Some(BUILDPACK_EXIT_RELEASE_FAILED) => "the buildpack's release failed",
        _ => return reason.to_string(),
    };
    format!("{named} ({reason})")
}

/// The error of a failed staging: the reason, then the last staging lines
/// (read from the hub: lines shown live may have been cut short when the
/// wait ended), then that nothing was stored.
async fn staging_failed(ctx: &Context, droplet: &str, task: &Task) -> anyhow::Error {
    let mut message = format!(
        "staging {droplet} failed: {}",
        explain_failure(&task.failure_reason)
    );
    let filter = LogFilter {
        source: Some(SOURCE_STAGING.to_string()),
        instance: None,
    };
    let lines = match ctx.logs_client() {
        Ok(logs) => logs
            .recent(droplet, &filter)
            .await
            .map_err(anyhow::Error::from),
        Err(err) => Err(err),
    };
    match lines {
        Ok(lines) => {
            let format = LineFormat::new(false);
            let mine: Vec<String> = lines
                .iter()
                .filter(|line| line.timestamp >= task.created_at)
                .map(|line| format.render(line))
                .collect();
            if !mine.is_empty() {
                message.push_str("\n  last staging lines:");
                let skip = mine.len().saturating_sub(MAX_FAILURE_LINES);
                for line in &mine[skip..] {
                    message.push_str(&format!("\n    {line}"));
                }
            }
        }
        Err(err) => message.push_str(&format!("\n  the staging lines cannot be read: {err:#}")),
    }
    message.push_str(&format!(
        "\n  no droplet was stored; see `ltc logs {droplet}` for every line"
    ));
    anyhow::Error::msg(message)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use serde_json::json;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(argv: &[&str]) -> Args {
        let argv = ["ltc", "build-droplet"].iter().chain(argv).copied();
        match Cli::try_parse_from(argv).expect("the test command line parses") {
            Cli {
                command: Command::BuildDroplet(args),
            } => args,
            other => panic!("not a build-droplet: {other:?}"),
        }
    }

    fn buildpack_dir(root: &Path) -> String {
        let dir = root.join("static-sh");
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/detect"), "#!/bin/sh\n").unwrap();
        dir.display().to_string()
    }

    #[test]
    fn both_forms_of_the_command_line() {
        let root = tempfile::tempdir().unwrap();
        let bp = buildpack_dir(root.path());
        let found = |argv: &[&str]| inputs(&args(argv)).map_err(|e| e.to_string());
        let expect = |dir: &str, buildpack: &str| {
            Ok(Inputs {
                app_dir: PathBuf::from(dir),
                buildpack: buildpack.to_string(),
            })
        };

        assert_eq!(found(&["site", "-b", &bp]), expect(".", &bp));
        assert_eq!(found(&["site", "./app", "-b", &bp]), expect("./app", &bp));
        assert_eq!(
            found(&["site", "-b", "go", "-p", "app"]),
            expect("app", "go")
        );
        // Lattice's form: the positional is the buildpack.
        assert_eq!(found(&["site", &bp, "-p", "./app"]), expect("./app", &bp));
        assert_eq!(found(&["site", "go", "--path", "src"]), expect("src", "go"));
        assert_eq!(
            found(&["site", "https://x/bp.tgz"]),
            expect(".", "https://x/bp.tgz")
        );
        assert_eq!(found(&["site", "ruby"]), expect(".", "ruby"));

        let err = found(&["site", "./app"]).unwrap_err();
        assert!(
            err.starts_with("no buildpack: give one with --buildpack/-b"),
            "{err}"
        );
        let err = found(&["site", "cobol", "-p", "./app"]).unwrap_err();
        assert!(err.starts_with("unknown buildpack \"cobol\""), "{err}");
        let err = found(&["site", "./app", "-b", "go", "-p", "./other"]).unwrap_err();
        assert_eq!(
            err,
            "the app's directory is given twice: ./app and --path ./other"
        );
    }

    #[test]
    fn flags_and_their_defaults() {
        let parsed = args(&["site", "-b", "go"]);
        assert_eq!(parsed.stack, DEFAULT_STACK);
        assert_eq!(parsed.memory_mb, 1024);
        assert_eq!(parsed.timeout, Duration::from_secs(600));
        assert!(!parsed.skip_detect);
        let parsed = args(&["site", "-b", "go", "-e", "A=1", "-e", "B=2", "-m", "512"]);
        assert_eq!(parsed.env, ["A=1", "B=2"]);
        assert_eq!(parsed.memory_mb, 512);
        // A stack is named as `ltc create` names an image, or as a URL.
        for (stack, rootfs) in [
            ("lattice-test/stack:v1", "docker:///lattice-test/stack#v1"),
            ("cflinuxfs4", "docker:///cflinuxfs4"),
            ("host:5000/me/stack", "docker://host:5000/me/stack"),
            ("docker:///me/stack#v2", "docker:///me/stack#v2"),
        ] {
            assert_eq!(args(&["site", "-b", "go", "--stack", stack]).stack, rootfs);
        }
        for bad in [
            &["site", "-b", "go", "-m", "-1"][..],
            &["site", "-b"],
            &[],
            &["site", "-b", "go", "--stack", "Me/Stack"],
            &["site", "-b", "go", "--stack", "http://x/y"],
        ] {
            let argv = ["ltc", "build-droplet"].iter().chain(bad).copied();
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), i32::from(crate::EXIT_USAGE), "{bad:?}");
        }
    }

    #[test]
    fn golden_staging_task() {
        let mut staging = Staging {
            droplet: "site".into(),
            suffix: "0123abcd".into(),
            stack: "docker:///lattice-test/stack#v1".into(),
            app_url: "http://u:p@10.0.0.1:8888/v1/blobs/aa".into(),
            buildpack_url: "http://u:p@10.0.0.1:8888/v1/blobs/bb".into(),
            buildpack_cache_key: Some("blob-bb".into()),
            buildpack_name: "static-sh".into(),
            upload_url: "http://u:p@10.0.0.1:8888/v1/droplets/site/upload?stack=s".into(),
            env: vec![EnvironmentVariable::new("BP_DEBUG", "1")],
            memory_mb: 1024,
            skip_detect: false,
        };
        let task = staging_task(&staging);
        task.validate().expect("the receptor accepts it");
        assert_eq!(
            serde_json::to_value(&task).unwrap(),
            json!({
                "task_guid": "site-staging-0123abcd",
                "domain": "lattice-staging",
                "rootfs": "docker:///lattice-test/stack#v1",
                "action": {"serial": {"actions": [
                    {"download": {"from": "http://u:p@10.0.0.1:8888/v1/blobs/aa",
                                  "to": "/tmp/app", "artifact": "app"}},
                    {"download": {"from": "http://u:p@10.0.0.1:8888/v1/blobs/bb",
                                  "to": "/tmp/buildpacks/static-sh", "cache_key": "blob-bb",
                                  "artifact": "buildpack static-sh"}},
                    {"run": {"path": "/.lattice/bin/buildpack-builder",
                             "args": ["--app-dir", "/tmp/app",
                                      "--buildpacks-dir", "/tmp/buildpacks",
                                      "--output-droplet", "/tmp/droplet.tgz",
                                      "--output-metadata", "/tmp/lattice-staging-result.json"]}},
                    {"upload": {"from": "/tmp/droplet.tgz",
                                "to": "http://u:p@10.0.0.1:8888/v1/droplets/site/upload?stack=s",
                                "artifact": "droplet"}}
                ]}},
                "env": [{"name": "BP_DEBUG", "value": "1"}],
                "cpu_weight": 0,
                "disk_mb": 0,
                "memory_mb": 1024,
                "privileged": false,
                "log_guid": "site",
                "log_source": "STG",
                "result_file": "/tmp/lattice-staging-result.json"
            })
        );
        staging.skip_detect = true;
        let task = staging_task(&staging);
        let builder = task.action.run_actions()[0].clone();
        assert_eq!(builder.args[8..], ["--buildpack", "static-sh"]);
    }

    #[test]
    fn a_stack_that_cannot_be_had_is_named_with_what_to_do() {
        let reason = "failed to create container: image cloudfoundry/cflinuxfs4:latest is not \
                      available: pull access denied";
        let err = stack_unavailable(DEFAULT_STACK, reason)
            .expect("an unavailable image")
            .to_string();
        assert!(
            err.starts_with("the stack cloudfoundry/cflinuxfs4 cannot be had on the cell"),
            "{err}"
        );
        assert!(err.contains("pass --stack with an image"), "{err}");
        assert!(stack_unavailable(DEFAULT_STACK, "Exited with status 223").is_none());
    }

    #[test]
    fn failures_are_named_by_the_builder_exit_codes() {
        assert_eq!(
            explain_failure("Exited with status 222"),
            "no buildpack detected the app (Exited with status 222)"
        );
        assert_eq!(
            explain_failure("Exited with status 223"),
            "the buildpack's compile failed (Exited with status 223)"
        );
        assert_eq!(
            explain_failure("Exited with status 224"),
            "the buildpack's release failed (Exited with status 224)"
        );
        assert_eq!(
            explain_failure("Exited with status 1"),
            "Exited with status 1"
        );
        assert_eq!(
            explain_failure("failed to download http://x: request failed"),
            "failed to download http://x: request failed"
        );
    }

    /// Serves `body` once over plain HTTP, as a release server would.
    async fn serve_once(body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/dl/bp.zip", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(&body).await.unwrap();
        });
        url
    }

    #[tokio::test]
    async fn a_fetched_buildpack_is_written_whole() {
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let url = serve_once(body.clone()).await;
        let ctx = crate::transfer::test_context("http://127.0.0.1:9", None);
        let file = fetch(&ctx, &url, "bp").await.unwrap();
        assert_eq!(std::fs::read(file.path()).unwrap(), body);

        let missing = format!("{}/nope.zip", url.trim_end_matches("/dl/bp.zip"));
        let err = fetch(&ctx, &missing, "bp").await.unwrap_err();
        assert!(
            format!("{err:#}").starts_with(&format!("cannot fetch buildpack bp from {missing}")),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn bad_input_is_refused_before_anything_is_uploaded() {
        // No receptor listens at this target: each refusal happens first.
        let ctx = crate::transfer::test_context("http://127.0.0.1:9", None);
        let root = tempfile::tempdir().unwrap();
        let bp = buildpack_dir(root.path());
        let empty = root.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let empty = empty.display().to_string();
        let no_env = |_: &str| None;
        for (argv, expected) in [
            (
                vec!["bad.name", "-b", &bp],
                "droplet name \"bad.name\" must be",
            ),
            (
                vec!["site", "-b", &bp, "-e", "UNSET"],
                "--env UNSET: UNSET is not set",
            ),
            (
                vec!["site", "-b", &bp, "--timeout", "0s"],
                "--timeout must be more than 0",
            ),
            (vec!["site", &empty, "-b", &bp], "holds nothing to stage"),
        ] {
            let err = run(&args(&argv), &ctx, &no_env, &mut Vec::new())
                .await
                .unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{argv:?}: {err:#}");
        }
    }
}
