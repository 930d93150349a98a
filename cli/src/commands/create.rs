//! `ltc create APP IMAGE [-- START_COMMAND ARGS...]`: run a Docker image as
//! an app (a desired LRP) and wait until its instances are RUNNING.
//!
//! Three steps, as Lattice did them:
//! 1. stage: read the image's config (ports, user, working dir,
//!    entrypoint) through the receptor, which asks a cell's engine (one
//!    engine call, no container); a cluster that cannot answer that runs a
//!    staging task instead, whose builder reads it in a container of the
//!    image, as Lattice did;
//! 2. desire: the LRP runs the lifecycle's `launcher` (the image's
//!    entrypoint, or START_COMMAND) with `healthcheck` as its monitor;
//! 3. wait until every instance is RUNNING, then print where the app is.
//!
//! From before staging until the wait ends, the app's log lines (staging's,
//! the cell's, the app's) are shown above the spinner, so that a slow or
//! failing start shows its cause as it happens.
//!
//! # Errors
//! Exit code 1 for bad input, an existing app, a failed staging or a
//! refused request (nothing is desired then); exit code 3
//! ([`PlacementFailed`](crate::PlacementFailed)) when staging or the
//! instances did not finish in time: the app then stays desired.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context as _};
use lattice_client::Client;
use lattice_models::action::{RunAction, TimeoutAction};
use lattice_models::lifecycle::{ExecutionMetadata, BUILDER_PATH, HEALTHCHECK_PATH, LAUNCHER_PATH};
use lattice_models::lrp::MAX_INSTANCES;
use lattice_models::validation::validate_guid;
use lattice_models::{
    Action, ActualLrp, DesiredLrpCreateRequest, EnvironmentVariable, HttpRoute, Routes, Task,
    TaskCreateRequest, TaskState,
};
use tokio::time::Instant;

use crate::image::rootfs_for_image;
use crate::log_stream::{LineFormat, LogTail};
use crate::progress::Spinner;
use crate::routes::{
    default_hostname, http_routes, http_urls, parse_http_route, parse_monitor_url, parse_tcp_route,
    tcp_lines, tcp_routes, HttpRouteFlag, MonitorUrl, TcpRouteFlag,
};
use crate::wait::{self, AppLogs, PlacementFailed};
use crate::Context;

/// The domain of the apps ltc creates.
pub const APP_DOMAIN: &str = "lattice";
/// The domain of their staging tasks.
pub const STAGING_DOMAIN: &str = "lattice-staging";
/// Where the builder writes what it found, read back as the task's result.
pub const STAGING_RESULT: &str = "/tmp/lattice-staging.json";
/// Memory of the staging task: the builder only reads a JSON file.
const STAGING_MEMORY_MB: i64 = 64;
/// The user `--run-as-root` runs as: the uid, which needs no `/etc/passwd`.
pub const ROOT_UID: &str = "0";
/// The port an app listens on when neither `--ports` nor its image says.
pub const DEFAULT_PORT: u32 = 8080;

pub const EXAMPLES: &str = "\
Examples:
  # The built-in sample app, 3 instances, at http://hello.localhost:8080
  ltc create hello lattice/lattice-app -i 3
  # An image from Docker Hub, its port and more memory
  ltc create web nginx:alpine -p 80 -m 256
  # Environment, an HTTP health check, and a route of its own instead of api.DOMAIN
  ltc create api org/api:1.0 -e MODE=prod --monitor-url 9000:/healthz -R api.example.com
  # A start command instead of the image's, with no route or health check
  ltc create clock busybox --no-routes --no-monitor -- sh -c 'while sleep 5; do date; done'";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app's name: letters, digits, '-' and '_'. It names the app's
    /// LRP, its logs and its default route APP.DOMAIN (lower-cased, '_' as
    /// '-').
    pub app: String,

    /// The Docker image: `repo`, `repo:tag`, `org/repo:tag` or
    /// `host:5000/repo:tag`.
    pub image: String,

    /// The command to run instead of the image's entrypoint and command,
    /// after `--` (e.g. `-- /bin/sh -c 'httpd -f -p $PORT'`); the image
    /// then needs neither.
    #[arg(last = true, value_name = "START_COMMAND")]
    pub start_command: Vec<String>,

    #[command(flatten)]
    pub flags: AppFlags,
}

/// The flags of an app: instances, resources, environment, ports, routes,
/// health check, user and start timeout. `ltc launch-droplet` takes the
/// same.
#[derive(Debug, clap::Args)]
pub struct AppFlags {
    /// How many instances to run.
    #[arg(short = 'i', long, default_value_t = 1,
          value_parser = clap::value_parser!(i64).range(0..=MAX_INSTANCES))]
    pub instances: i64,

    /// Memory limit of each instance, in MB (0: no limit).
    #[arg(short = 'm', long, default_value_t = 128,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub memory_mb: i64,

    /// Disk limit of each instance, in MB (0: no limit).
    #[arg(short = 'd', long, default_value_t = 0,
          value_parser = clap::value_parser!(i64).range(0..))]
    pub disk_mb: i64,

    /// Relative CPU share of each instance, 0 to 100.
    #[arg(short = 'c', long, default_value_t = 100,
          value_parser = clap::value_parser!(i64).range(0..=100))]
    pub cpu_weight: i64,

    /// An environment variable of the app, NAME=VALUE; NAME alone takes
    /// the value ltc itself has. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,

    /// The ports the app listens on, comma separated (default: those an
    /// image exposes, else 8080; a droplet: 8080). The first one gets the
    /// default route and the health check, and is in $PORT.
    #[arg(short = 'p', long, value_delimiter = ',', value_name = "PORT[,PORT...]",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: Vec<u16>,

    /// An HTTP route, HOST[:PORT]: a HOST without a dot gets the system
    /// domain appended; PORT defaults to the first port. Repeatable;
    /// replaces the default route APP.DOMAIN.
    #[arg(short = 'R', long = "http-route", value_name = "HOST[:PORT]",
          value_parser = parse_http_route, conflicts_with = "no_routes")]
    pub http_routes: Vec<HttpRouteFlag>,

    /// A TCP route, EXTERNAL[:CONTAINER]: the router's port EXTERNAL goes
    /// to CONTAINER (default: the first port). Repeatable; replaces the
    /// default route APP.DOMAIN.
    #[arg(short = 'T', long = "tcp-route", value_name = "EXTERNAL[:CONTAINER]",
          value_parser = parse_tcp_route, conflicts_with = "no_routes")]
    pub tcp_routes: Vec<TcpRouteFlag>,

    /// Do not route to the app at all.
    #[arg(long)]
    pub no_routes: bool,

    /// Refuse `ltc ssh` (and OpenSSH through the cluster's proxy) into the
    /// app's instances.
    #[arg(long)]
    pub no_ssh: bool,

    /// The port the health check connects to (default: the first port).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..),
          conflicts_with_all = ["monitor_url", "no_monitor"])]
    pub monitor_port: Option<u16>,

    /// Check health with an HTTP GET of PORT:/PATH (2xx or 3xx is healthy)
    /// instead of a TCP connection.
    #[arg(long, value_name = "PORT:/PATH", value_parser = parse_monitor_url,
          conflicts_with = "no_monitor")]
    pub monitor_url: Option<MonitorUrl>,

    /// How long one health check may take.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub monitor_timeout: Duration,

    /// Run no health check: an instance is RUNNING as soon as it started.
    #[arg(long)]
    pub no_monitor: bool,

    /// The directory the app starts in (default: an image's own; a
    /// droplet's app/).
    #[arg(long)]
    pub working_dir: Option<String>,

    /// Run the app as root (uid 0, so no /etc/passwd is needed) instead of
    /// the image's or stack's user.
    #[arg(long, conflicts_with = "user")]
    pub run_as_root: bool,

    /// Run the app as this user instead of the image's or stack's.
    #[arg(long)]
    pub user: Option<String>,

    /// Run the containers privileged.
    #[arg(long)]
    pub privileged: bool,

    /// How long to wait for the app: staging an image (create only), then
    /// every instance RUNNING (also each instance's start timeout). Past it
    /// ltc exits with 3.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub async fn run(
    args: &Args,
    ctx: &Context,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let app = &args.app;
    let plan = Plan::new(args, env)?;
    let client = ctx.client()?;
    let info = client
        .info()
        .await
        .context("cannot read the cluster's domain")?;

    refuse_existing(&client, app).await?;
    // Everything but what staging finds can be checked now, so that a typo
    // does not cost a staging first.
    plan.request(args, &ExecutionMetadata::default(), &info.domain)
        .validate()
        .with_context(|| format!("cannot create {app}"))?;

    // Followed before anything runs, so that no line of staging is missed.
    let format = LineFormat::new(ctx.stderr.color);
    let mut tail = LogTail::start(ctx.logs_client()?, app, format).await;

    let staged = stage(&client, args, &plan.rootfs, ctx, &mut tail, out).await?;
    let request = plan.request(args, &staged, &info.domain);
    desire_and_wait(
        ctx,
        &mut tail,
        &request,
        &args.image,
        args.flags.timeout,
        info.router_address.as_deref(),
        out,
    )
    .await
}

/// Refuses an app that exists already, before anything slow (staging, an
/// upload) is done for nothing; the message is the receptor's own for a
/// duplicate create.
pub(crate) async fn refuse_existing(client: &Client, app: &str) -> anyhow::Result<()> {
    match client.desired_lrp(app).await {
        Ok(_) => bail!("cannot create {app}: desired LRP {app:?} already exists"),
        Err(err) if err.is_not_found() => Ok(()),
        Err(err) => Err(err).with_context(|| format!("cannot create {app}")),
    }
}

/// Desires `request`, waits until its instances are RUNNING (showing the
/// `tail`'s lines above the spinner), then prints where the app is.
/// `source` says what runs (an image, a droplet) in the first line.
///
/// # Errors
/// A refused request (nothing is desired then), or [`PlacementFailed`]
/// when the instances are not running within `timeout` (the app stays).
pub(crate) async fn desire_and_wait(
    ctx: &Context,
    tail: &mut LogTail,
    request: &DesiredLrpCreateRequest,
    source: &str,
    timeout: Duration,
    router_address: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let app = &request.process_guid;
    let client = ctx.client()?;
    let logs = ctx.logs_client()?;
    client
        .create_desired_lrp(request)
        .await
        .with_context(|| format!("cannot create {app}"))?;
    writeln!(
        out,
        "Created {app}: {} instance{} of {source}",
        request.instances,
        if request.instances == 1 { "" } else { "s" },
    )?;

    let spinner = Spinner::new(&ctx.stderr, format!("Starting {app}..."));
    let app_logs = AppLogs {
        client: &logs,
        log_guid: &request.log_guid,
    };
    let wait =
        wait::wait_for_instances(&client, app_logs, app, request.instances, timeout, &spinner);
    let actuals = tail.show_while(wait, &spinner).await?;
    drop(spinner);
    writeln!(out, "{app} is now running.")?;
    write_addresses(out, request.routes.as_ref(), router_address, &actuals)?;
    Ok(())
}

/// What create resolved from its flags before asking the cluster anything.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    rootfs: String,
    env: Vec<EnvironmentVariable>,
}

impl Plan {
    fn new(args: &Args, lookup: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Plan> {
        let env = args.flags.check(&args.app, lookup)?;
        let rootfs = rootfs_for_image(&args.image)?;
        Ok(Plan { rootfs, env })
    }

    /// The LRP to desire, given what staging found in the image.
    fn request(
        &self,
        args: &Args,
        staged: &ExecutionMetadata,
        domain: &str,
    ) -> DesiredLrpCreateRequest {
        let process = AppProcess {
            rootfs: self.rootfs.clone(),
            setup: None,
            action: lifecycle_action(
                LAUNCHER_PATH,
                Vec::new(),
                &args.start_command,
                &args.flags,
                staged,
            ),
        };
        app_request(&args.app, &args.flags, &self.env, process, staged, domain)
    }
}

impl AppFlags {
    /// Checks the app's name and the flags clap cannot; returns the app's
    /// environment (`-e`, looked up in `lookup` for a NAME alone).
    pub(crate) fn check(
        &self,
        app: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Vec<EnvironmentVariable>> {
        validate_guid("APP", app).map_err(|e| anyhow::anyhow!("invalid app name: {e}"))?;
        let env = self
            .env
            .iter()
            .map(|value| parse_env(value, lookup))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        if self.timeout.is_zero() {
            bail!("--timeout must be more than 0");
        }
        if self.monitor_timeout.as_millis() == 0 {
            bail!("--monitor-timeout must be at least 1ms");
        }
        Ok(env)
    }
}

/// Where an app's processes come from: the root filesystem, what is put
/// into each container before it starts, and what runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AppProcess {
    pub rootfs: String,
    pub setup: Option<Action>,
    pub action: Action,
}

/// The LRP of `app` as its flags say, running `process`; `staged` gives
/// the ports when `--ports` does not (else [`DEFAULT_PORT`]).
pub(crate) fn app_request(
    app: &str,
    flags: &AppFlags,
    env: &[EnvironmentVariable],
    process: AppProcess,
    staged: &ExecutionMetadata,
    domain: &str,
) -> DesiredLrpCreateRequest {
    let ports: Vec<u32> = if !flags.ports.is_empty() {
        flags.ports.iter().copied().map(u32::from).collect()
    } else if !staged.ports.is_empty() {
        staged.ports.clone()
    } else {
        vec![DEFAULT_PORT]
    };
    // `ports` was just made non-empty.
    let first_port = ports[0];
    DesiredLrpCreateRequest {
        process_guid: app.to_string(),
        domain: APP_DOMAIN.to_string(),
        rootfs: process.rootfs,
        instances: flags.instances,
        setup: process.setup,
        action: process.action,
        monitor: monitor_action(flags, first_port),
        start_timeout: i64::try_from(flags.timeout.as_secs()).unwrap_or(i64::MAX),
        env: env.to_vec(),
        cpu_weight: flags.cpu_weight,
        disk_mb: flags.disk_mb,
        memory_mb: flags.memory_mb,
        privileged: flags.privileged,
        ports,
        routes: app_routes(app, flags, domain, first_port),
        log_guid: app.to_string(),
        log_source: "APP".to_string(),
        annotation: String::new(),
        metrics_guid: String::new(),
        egress_rules: Vec::new(),
        disable_ssh: flags.no_ssh,
    }
}

/// `-e NAME=VALUE`, or `-e NAME` with the value of `lookup(NAME)`.
pub fn parse_env(
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<EnvironmentVariable, String> {
    let (name, value) = match value.split_once('=') {
        Some((name, value)) => (name, value.to_string()),
        None => match lookup(value) {
            Some(found) => (value, found),
            None => {
                return Err(format!(
                    "--env {value}: {value} is not set in ltc's environment; \
                     give a value with {value}=VALUE"
                ))
            }
        },
    };
    if name.is_empty() || name.contains('\0') {
        return Err(format!(
            "--env {name}={value}: {name:?} is not a variable name"
        ));
    }
    Ok(EnvironmentVariable::new(name, value))
}

/// Runs the lifecycle binary at `path` with `args`, then `-- START_COMMAND`
/// when one is given, in `--working-dir` (else the staged one) as `--user`
/// (or root with `--run-as-root`, else the staged user).
pub(crate) fn lifecycle_action(
    path: &str,
    mut args: Vec<String>,
    start_command: &[String],
    flags: &AppFlags,
    staged: &ExecutionMetadata,
) -> Action {
    if !start_command.is_empty() {
        args.push("--".to_string());
        args.extend(start_command.iter().cloned());
    }
    let dir = flags
        .working_dir
        .clone()
        .unwrap_or_else(|| staged.working_dir.clone());
    let user = match (&flags.user, flags.run_as_root) {
        (Some(user), _) => user.clone(),
        // uid 0, not the name "root": an image without /etc/passwd (scratch,
        // busybox) has no user of that name, and the engine refuses to run
        // as a name it cannot look up.
        (None, true) => ROOT_UID.to_string(),
        (None, false) => staged.user.clone(),
    };
    Action::Run(RunAction {
        path: path.to_string(),
        args,
        dir: Some(dir).filter(|d| !d.is_empty()),
        env: Vec::new(),
        user: Some(user).filter(|u| !u.is_empty()),
        resource_limits: None,
        log_source: None,
        suppress_log_output: false,
    })
}

fn monitor_action(flags: &AppFlags, first_port: u32) -> Option<Action> {
    if flags.no_monitor {
        return None;
    }
    let port = match (&flags.monitor_url, flags.monitor_port) {
        (Some(url), _) => url.port,
        (None, Some(port)) => u32::from(port),
        (None, None) => first_port,
    };
    let timeout_ms = flags.monitor_timeout.as_millis();
    let mut check_args = vec!["--port".to_string(), port.to_string()];
    if let Some(url) = &flags.monitor_url {
        check_args.extend(["--uri".to_string(), url.path.clone()]);
    }
    // The healthcheck has its own limit (1s by default); giving it ours
    // makes a longer --monitor-timeout count, and lets it say what timed
    // out. The timeout action around it stays as the backstop.
    check_args.extend(["--timeout".to_string(), format!("{timeout_ms}ms")]);
    let check = Action::Run(RunAction {
        path: HEALTHCHECK_PATH.to_string(),
        args: check_args,
        dir: None,
        env: Vec::new(),
        user: None,
        resource_limits: None,
        log_source: Some("HEALTH".to_string()),
        suppress_log_output: false,
    });
    Some(Action::Timeout(TimeoutAction {
        action: Box::new(check),
        timeout_ns: i64::try_from(flags.monitor_timeout.as_nanos()).unwrap_or(i64::MAX),
        log_source: None,
    }))
}

/// The default route `APP.DOMAIN` to the first port, or the `-R`/`-T` ones
/// instead, or none with `--no-routes`.
fn app_routes(app: &str, flags: &AppFlags, domain: &str, first_port: u32) -> Option<Routes> {
    if flags.no_routes {
        return None;
    }
    if flags.http_routes.is_empty() && flags.tcp_routes.is_empty() {
        return Some(Routes {
            http: vec![HttpRoute {
                hostnames: vec![default_hostname(app, domain)],
                port: first_port,
            }],
            tcp: Vec::new(),
            other: Default::default(),
        });
    }
    Some(Routes {
        http: http_routes(&flags.http_routes, domain, first_port),
        tcp: tcp_routes(&flags.tcp_routes, first_port),
        other: Default::default(),
    })
}

/// The staging task of `app`: the builder, in the app's own image. A
/// `start_command` given is passed on (after `--`): the image then needs
/// no start command of its own.
pub fn staging_task(
    app: &str,
    rootfs: &str,
    suffix: &str,
    start_command: &[String],
) -> TaskCreateRequest {
    let mut args = vec!["--output".to_string(), STAGING_RESULT.to_string()];
    if !start_command.is_empty() {
        args.push("--".to_string());
        args.extend(start_command.iter().cloned());
    }
    TaskCreateRequest {
        task_guid: format!("{app}-staging-{suffix}"),
        domain: STAGING_DOMAIN.to_string(),
        rootfs: rootfs.to_string(),
        action: Action::Run(RunAction {
            path: BUILDER_PATH.to_string(),
            args,
            dir: None,
            env: Vec::new(),
            user: None,
            resource_limits: None,
            log_source: None,
            suppress_log_output: false,
        }),
        env: Vec::new(),
        cpu_weight: 0,
        disk_mb: 0,
        memory_mb: STAGING_MEMORY_MB,
        privileged: false,
        log_guid: app.to_string(),
        log_source: "STG".to_string(),
        result_file: STAGING_RESULT.to_string(),
        completion_callback_url: String::new(),
        annotation: String::new(),
        metrics_guid: String::new(),
        egress_rules: Vec::new(),
    }
}

/// A fresh suffix for a staging task's guid: 8 hex digits, so that two
/// stagings of one app never share a guid.
pub(crate) fn staging_suffix() -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    // A v4 uuid's simple form is 32 hex digits.
    suffix[..8].to_string()
}

/// What the image runs and serves: its config as the cluster's engine has
/// it (`GET /v1/image_config`, one engine call on a cell), or, where the
/// cluster cannot answer that (no cell answers yet, an older brain), what
/// the staging task's builder found in a container of the image.
async fn stage(
    client: &Client,
    args: &Args,
    rootfs: &str,
    ctx: &Context,
    tail: &mut LogTail,
    out: &mut dyn Write,
) -> anyhow::Result<ExecutionMetadata> {
    let staged = match client.image_config(rootfs).await {
        Ok(config) => {
            ExecutionMetadata::runnable(&config, &args.start_command).ok_or_else(|| {
                anyhow::anyhow!(
                    "staging {} failed: the image has no start command: it sets neither \
                 ENTRYPOINT nor CMD; give one after `--`",
                    args.image
                )
            })?
        }
        Err(err) if cannot_read_image_configs(&err) => {
            stage_in_a_task(client, args, rootfs, ctx, tail, out).await?
        }
        Err(err) => {
            return Err(err).with_context(|| format!("cannot read the config of {}", args.image))
        }
    };
    let command = if args.start_command.is_empty() {
        &staged.start_command
    } else {
        &args.start_command
    };
    writeln!(
        out,
        "Staged {}: start command {}",
        args.image,
        command_line(command)
    )?;
    Ok(staged)
}

/// The cluster cannot read an image's config itself: no cell could be
/// asked (503), or the receptor has no such endpoint (a 404 that is not
/// about the image, whose 404 names the field `rootfs`).
fn cannot_read_image_configs(err: &lattice_client::ClientError) -> bool {
    match err {
        lattice_client::ClientError::Api { status: 503, .. } => true,
        lattice_client::ClientError::Api { status: 404, error } => {
            error.field.as_deref() != Some("rootfs")
        }
        _ => false,
    }
}

/// Runs the staging task and returns what the builder found.
async fn stage_in_a_task(
    client: &Client,
    args: &Args,
    rootfs: &str,
    ctx: &Context,
    tail: &mut LogTail,
    out: &mut dyn Write,
) -> anyhow::Result<ExecutionMetadata> {
    let request = staging_task(&args.app, rootfs, &staging_suffix(), &args.start_command);
    let task = run_staging_task(
        client,
        ctx,
        tail,
        &request,
        &args.image,
        args.flags.timeout,
        out,
    )
    .await?;
    if task.failed {
        bail!("staging {} failed: {}", args.image, task.failure_reason);
    }
    serde_json::from_str(&task.result).with_context(|| {
        format!(
            "staging {} gave no readable result ({:?})",
            args.image, task.result
        )
    })
}

/// Submits the staging task `request`, waits until it completes (showing
/// the `tail`'s lines above a spinner that names `label`), and returns it,
/// failed or not. The task is removed whatever happens (cancelled first if
/// it did not finish), since nobody else will read it.
///
/// # Errors
/// A refused submission; [`PlacementFailed`] when it did not complete
/// within `timeout`; a client error other than a lost connection.
pub(crate) async fn run_staging_task(
    client: &Client,
    ctx: &Context,
    tail: &mut LogTail,
    request: &TaskCreateRequest,
    label: &str,
    timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<Task> {
    let guid = &request.task_guid;
    client
        .create_task(request)
        .await
        .with_context(|| format!("cannot submit the staging task of {}", request.log_guid))?;

    let spinner = Spinner::new(&ctx.stderr, format!("Staging {label}..."));
    let wait = wait_for_task(client, request, label, timeout, &spinner);
    let finished = tail.show_while(wait, &spinner).await;
    drop(spinner);
    let cleanup = remove_task(client, guid, finished.is_ok()).await;
    let task = finished?;
    if let Err(err) = cleanup {
        // The converger expires completed tasks, so a task left behind only
        // shows in `ltc list` for a while: say so, but go on.
        writeln!(out, "Note: the staging task stays for now: {err:#}")?;
    }
    Ok(task)
}

/// `argv` as one would type it: words with blanks or quotes (or empty
/// ones) are quoted, so that what is shown is what runs.
pub(crate) fn command_line(argv: &[String]) -> String {
    if argv.is_empty() {
        return "(none)".to_string();
    }
    argv.iter()
        .map(|word| {
            let plain = !word.is_empty()
                && !word
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\'));
            if plain {
                word.clone()
            } else {
                format!("{word:?}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Polls the task of `request` until it is COMPLETED.
///
/// # Errors
/// [`PlacementFailed`] if it is not completed within `timeout`; a client
/// error other than a lost connection (retried until the time is up).
async fn wait_for_task(
    client: &Client,
    request: &TaskCreateRequest,
    label: &str,
    timeout: Duration,
    spinner: &Spinner,
) -> anyhow::Result<Task> {
    let guid = &request.task_guid;
    let deadline = Instant::now() + timeout;
    let mut last: Option<Task> = None;
    loop {
        match client.task(guid).await {
            Ok(task) if task.state.is_terminal() => return Ok(task),
            Ok(task) => {
                spinner.set_message(format!("Staging {label} ({})...", task.state));
                last = Some(task);
            }
            Err(err) if wait::is_transient(&err) => {
                spinner.set_message(format!("Staging {label}: {err}; retrying"));
            }
            Err(err) => return Err(err).with_context(|| format!("cannot follow task {guid}")),
        }
        if Instant::now() >= deadline {
            return Err(staging_timed_out(label, request, timeout, last.as_ref()).into());
        }
        tokio::time::sleep(wait::POLL_INTERVAL).await;
    }
}

fn staging_timed_out(
    label: &str,
    request: &TaskCreateRequest,
    waited: Duration,
    task: Option<&Task>,
) -> PlacementFailed {
    let guid = &request.task_guid;
    let detail = match task {
        Some(task) if task.state == TaskState::Pending => format!(
            "task {guid} is PENDING: no cell took it; are cells running with room \
             for {} MB (`ltc cells`)?",
            request.memory_mb
        ),
        Some(task) => format!("task {guid} is {} on cell {}", task.state, task.cell_id),
        None => format!("task {guid} could not be read"),
    };
    PlacementFailed {
        summary: format!(
            "staging {label} did not finish within {}",
            humantime::format_duration(waited)
        ),
        details: vec![
            detail,
            "the task was cancelled; nothing was created".to_string(),
        ],
    }
}

async fn remove_task(client: &Client, guid: &str, completed: bool) -> anyhow::Result<()> {
    if !completed {
        // Cancelling completes it (failed); it may have completed meanwhile,
        // which the delete below copes with either way.
        let _ = client.cancel_task(guid).await;
    }
    client
        .delete_task(guid)
        .await
        .with_context(|| format!("cannot delete staging task {guid}"))
}

/// Where the app can be reached: its route URLs through the router, or
/// the instances' own addresses when the cluster routes nothing.
pub fn write_addresses(
    out: &mut dyn Write,
    routes: Option<&Routes>,
    router_address: Option<&str>,
    actuals: &[ActualLrp],
) -> std::io::Result<()> {
    let routes = routes.cloned().unwrap_or_default();
    match router_address {
        Some(_) if !routes.is_empty() => {
            for url in http_urls(&routes, router_address) {
                writeln!(out, "{url}")?;
            }
            for line in tcp_lines(&routes) {
                writeln!(out, "{line}")?;
            }
            return Ok(());
        }
        Some(_) => writeln!(out, "It has no routes; its instances listen at:")?,
        None => writeln!(
            out,
            "Routing is not configured on this cluster; the instances listen at:"
        )?,
    }
    for actual in actuals {
        writeln!(
            out,
            "  instance {}: {}",
            actual.index,
            crate::commands::status::instance_address(actual)
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use serde_json::json;

    use lattice_models::lifecycle::{BUILDER_PATH, HEALTHCHECK_PATH, LAUNCHER_PATH};
    use lattice_testkit::cluster::Script;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::testing::{app_cluster, eventually, no_restarts, output, TestReceptor};

    fn args(argv: &[&str]) -> Args {
        let argv = ["ltc", "create"].iter().chain(argv).copied();
        match Cli::try_parse_from(argv).expect("the test command line parses") {
            Cli {
                command: Command::Create(args),
            } => args,
            other => panic!("not a create: {other:?}"),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn request(argv: &[&str], staged: &ExecutionMetadata) -> serde_json::Value {
        let args = args(argv);
        let plan = Plan::new(&args, &no_env).unwrap();
        serde_json::to_value(plan.request(&args, staged, "lattice.dev")).unwrap()
    }

    #[test]
    fn env_flags() {
        let lookup = |name: &str| (name == "HOME").then(|| "/home/me".to_string());
        assert_eq!(
            parse_env("A=b=c", &lookup),
            Ok(EnvironmentVariable::new("A", "b=c"))
        );
        assert_eq!(
            parse_env("A=", &lookup),
            Ok(EnvironmentVariable::new("A", ""))
        );
        assert_eq!(
            parse_env("HOME", &lookup),
            Ok(EnvironmentVariable::new("HOME", "/home/me"))
        );
        let err = parse_env("NOPE", &lookup).unwrap_err();
        assert!(err.contains("NOPE is not set"), "{err}");
        assert!(parse_env("=x", &lookup)
            .unwrap_err()
            .contains("not a variable name"));
    }

    #[test]
    fn golden_request_with_defaults() {
        let staged = ExecutionMetadata::default();
        assert_eq!(
            request(&["web", "busybox"], &staged),
            json!({
                "process_guid": "web",
                "domain": "lattice",
                "rootfs": "docker:///busybox",
                "instances": 1,
                "action": {"run": {"path": "/.lattice/bin/launcher"}},
                "monitor": {"timeout": {"timeout": 1_000_000_000, "action": {"run": {
                    "path": "/.lattice/bin/healthcheck",
                    "args": ["--port", "8080", "--timeout", "1000ms"],
                    "log_source": "HEALTH"}}}},
                "start_timeout": 120,
                "cpu_weight": 100,
                "disk_mb": 0,
                "memory_mb": 128,
                "privileged": false,
                "ports": [8080],
                "routes": {"cf-router": [{"hostnames": ["web.lattice.dev"], "port": 8080}]},
                "log_guid": "web",
                "log_source": "APP"
            })
        );
    }

    #[test]
    fn golden_request_with_the_image_config_and_a_start_command() {
        let staged = ExecutionMetadata {
            start_command: vec!["/bin/server".into()],
            ports: vec![9000, 9001],
            user: "app".into(),
            working_dir: "/srv".into(),
            env: vec![EnvironmentVariable::new("PATH", "/bin")],
        };
        let argv = [
            "api",
            "org/api:1.0",
            "-i",
            "3",
            "-m",
            "256",
            "-d",
            "512",
            "-c",
            "50",
            "-e",
            "MODE=prod",
            "--monitor-url",
            "9001:/healthz",
            "--monitor-timeout",
            "5s",
            "--timeout",
            "30s",
            "--privileged",
            "--",
            "/bin/sh",
            "-c",
            "exec server --port $PORT",
        ];
        assert_eq!(
            request(&argv, &staged),
            json!({
                "process_guid": "api",
                "domain": "lattice",
                "rootfs": "docker:///org/api#1.0",
                "instances": 3,
                "action": {"run": {
                    "path": "/.lattice/bin/launcher",
                    "args": ["--", "/bin/sh", "-c", "exec server --port $PORT"],
                    "dir": "/srv",
                    "user": "app"}},
                "monitor": {"timeout": {"timeout": 5_000_000_000_i64, "action": {"run": {
                    "path": "/.lattice/bin/healthcheck",
                    "args": ["--port", "9001", "--uri", "/healthz", "--timeout", "5000ms"],
                    "log_source": "HEALTH"}}}},
                "start_timeout": 30,
                "env": [{"name": "MODE", "value": "prod"}],
                "cpu_weight": 50,
                "disk_mb": 512,
                "memory_mb": 256,
                "privileged": true,
                "ports": [9000, 9001],
                "routes": {"cf-router": [{"hostnames": ["api.lattice.dev"], "port": 9000}]},
                "log_guid": "api",
                "log_source": "APP"
            })
        );
    }

    #[test]
    fn golden_request_with_explicit_routes_and_no_monitor() {
        let staged = ExecutionMetadata {
            user: "app".into(),
            working_dir: "/srv".into(),
            ..Default::default()
        };
        let argv = [
            "db",
            "host:5000/db",
            "-p",
            "5432,8080",
            "-R",
            "db",
            "-R",
            "admin.example.com:8080",
            "-T",
            "61000",
            "-T",
            "61001:8080",
            "--no-monitor",
            "--run-as-root",
            "--working-dir",
            "/data",
        ];
        assert_eq!(
            request(&argv, &staged),
            json!({
                "process_guid": "db",
                "domain": "lattice",
                "rootfs": "docker://host:5000/db",
                "instances": 1,
                "action": {"run": {"path": "/.lattice/bin/launcher", "dir": "/data", "user": "0"}},
                "start_timeout": 120,
                "cpu_weight": 100,
                "disk_mb": 0,
                "memory_mb": 128,
                "privileged": false,
                "ports": [5432, 8080],
                "routes": {
                    "cf-router": [
                        {"hostnames": ["db.lattice.dev"], "port": 5432},
                        {"hostnames": ["admin.example.com"], "port": 8080}
                    ],
                    "tcp-router": [
                        {"external_port": 61000, "container_port": 5432},
                        {"external_port": 61001, "container_port": 8080}
                    ]
                },
                "log_guid": "db",
                "log_source": "APP"
            })
        );
        let no_routes = request(&["db", "db", "--no-routes", "--monitor-port", "7"], &staged);
        assert_eq!(no_routes.get("routes"), None);
        assert_eq!(
            no_routes["monitor"]["timeout"]["action"]["run"]["args"],
            json!(["--port", "7", "--timeout", "1000ms"])
        );
        assert_eq!(
            request(&["db", "db", "--user", "nobody"], &staged)["action"]["run"]["user"],
            "nobody"
        );
    }

    #[test]
    fn conflicting_flags_are_usage_errors() {
        for argv in [
            &["create", "a", "b", "--no-routes", "-R", "x"][..],
            &["create", "a", "b", "--no-monitor", "--monitor-port", "1"],
            &[
                "create",
                "a",
                "b",
                "--monitor-port",
                "1",
                "--monitor-url",
                "1:/",
            ],
            &["create", "a", "b", "--run-as-root", "--user", "x"],
            &["create", "a", "b", "-p", "0"],
            &["create", "a", "b", "-c", "101"],
            &["create", "a", "b", "-R", "bad host"],
            &["create", "a", "b", "--timeout", "soon"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("ltc").chain(argv.iter().copied()))
                .unwrap_err();
            assert_eq!(err.exit_code(), i32::from(crate::EXIT_USAGE), "{argv:?}");
        }
    }

    #[test]
    fn bad_names_are_refused_before_asking_anything() {
        let err = Plan::new(&args(&["bad.name", "busybox"]), &no_env).unwrap_err();
        assert!(err.to_string().starts_with("invalid app name"), "{err}");
        let err = Plan::new(&args(&["web", "BusyBox"]), &no_env).unwrap_err();
        assert!(err.to_string().contains("lowercase"), "{err}");
        let err = Plan::new(&args(&["web", "busybox", "-e", "UNSET"]), &no_env).unwrap_err();
        assert!(err.to_string().contains("UNSET is not set"), "{err}");
        let err = Plan::new(&args(&["web", "busybox", "--timeout", "0s"]), &no_env).unwrap_err();
        assert!(err.to_string().contains("--timeout"), "{err}");
    }

    #[test]
    fn command_lines_show_what_runs() {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        assert_eq!(command_line(&[]), "(none)");
        assert_eq!(command_line(&argv(&["httpd", "-f"])), "httpd -f");
        assert_eq!(
            command_line(&argv(&["/bin/sh", "-c", "echo \"hi\" $PORT", ""])),
            r#"/bin/sh -c "echo \"hi\" $PORT" """#
        );
    }

    #[test]
    fn the_staging_task() {
        assert_eq!(
            serde_json::to_value(staging_task("web", "docker:///busybox", "0123abcd", &[]))
                .unwrap(),
            json!({
                "task_guid": "web-staging-0123abcd",
                "domain": "lattice-staging",
                "rootfs": "docker:///busybox",
                "action": {"run": {"path": "/.lattice/bin/builder",
                                   "args": ["--output", "/tmp/lattice-staging.json"]}},
                "cpu_weight": 0,
                "disk_mb": 0,
                "memory_mb": 64,
                "privileged": false,
                "log_guid": "web",
                "log_source": "STG",
                "result_file": "/tmp/lattice-staging.json"
            })
        );
        let given = ["sh".to_string(), "-c".to_string(), "date".to_string()];
        let task = staging_task("web", "docker:///busybox", "0123abcd", &given);
        assert_eq!(
            serde_json::to_value(task.action).unwrap(),
            json!({"run": {"path": "/.lattice/bin/builder",
                           "args": ["--output", "/tmp/lattice-staging.json",
                                    "--", "sh", "-c", "date"]}}),
            "a given start command makes the image's unnecessary"
        );
    }

    fn staged_json() -> String {
        json!({"start_command": ["/bin/httpd", "-f"], "ports": [8081], "user": "www",
               "working_dir": "/www", "env": [{"name": "PATH", "value": "/bin"}]})
        .to_string()
    }

    #[tokio::test]
    async fn stages_desires_and_waits_until_running() {
        let receptor = TestReceptor::with_cluster(app_cluster(&staged_json()).receptor(
            lattice_receptor::ReceptorConfig {
                router_address: Some("127.0.0.1:8080".into()),
                ..Default::default()
            },
        ))
        .await;
        let mut out = Vec::new();
        run(
            &args(&["web", "busybox:1.36", "-i", "2"]),
            &receptor.context(&[]),
            &no_env,
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(
            output(out),
            "Staged busybox:1.36: start command /bin/httpd -f\n\
             Created web: 2 instances of busybox:1.36\n\
             web is now running.\n\
             http://web.localhost:8080\n"
        );
        let lrp = receptor.store.get_desired_lrp("web").await.unwrap();
        assert_eq!(lrp.ports, [8081], "the image's ports");
        assert_eq!(lrp.rootfs, "docker:///busybox#1.36");
        let running = receptor
            .store
            .list_actual_lrps(&lattice_bbs::ActualLrpFilter::default())
            .await
            .unwrap();
        assert_eq!(running.len(), 2);
        assert!(
            running
                .iter()
                .all(|a| a.state == lattice_models::ActualLrpState::Running),
            "{running:?}"
        );
        let started = receptor
            .cluster()
            .cell(0)
            .garden
            .processes_of(LAUNCHER_PATH);
        assert_eq!(started.len(), 2, "the cell runs both");
        let tasks = receptor
            .store
            .list_tasks(&lattice_bbs::TaskFilter::default())
            .await
            .unwrap();
        assert!(tasks.is_empty(), "the staging task was deleted: {tasks:?}");
    }

    #[tokio::test]
    async fn the_waits_show_staging_and_cell_lines_above_the_spinner() {
        let receptor = TestReceptor::with_cluster(
            app_cluster(&staged_json()).script(HEALTHCHECK_PATH, Script::exits(1)),
        )
        .await;
        let (ctx, stderr) = receptor.context_with_stderr(&[]);
        let mut out = Vec::new();
        let args = args(&["web", "busybox"]);
        let command = run(&args, &ctx, &no_env, &mut out);
        // The instance passes its health check only once its cell line was
        // shown, so the line cannot be missed because the wait ended first.
        let driver = async {
            eventually("the cell's line is shown", || {
                stderr.contents().contains("[CELL/0] Creating container")
            })
            .await;
            receptor
                .cluster()
                .script(HEALTHCHECK_PATH, Script::exits(0));
        };
        let (result, ()) = tokio::join!(command, driver);
        result.unwrap();
        let shown = stderr.contents();
        let lines: Vec<&str> = shown.lines().map(|l| &l[13..]).collect();
        let position = |prefix: &str| {
            lines
                .iter()
                .position(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix:?} in:\n{shown}"))
        };
        // Only lines written before what ends each wait: a line the rep
        // writes as the task completes or the instance starts may be
        // shown or not, as the wait ends.
        let order = [
            "[CELL] Creating container for task web-staging-",
            "[STG] Reading the image's configuration",
            "[CELL/0] Creating container for instance 0 on cell cell-0",
        ]
        .map(position);
        assert!(order.is_sorted(), "{order:?} in:\n{shown}");
        assert!(output(out).contains("web is now running.\n"));
    }

    #[tokio::test]
    async fn without_a_router_the_instances_are_listed() {
        let receptor = TestReceptor::with_cluster(app_cluster(&staged_json())).await;
        let mut out = Vec::new();
        run(
            &args(&["web", "busybox"]),
            &receptor.context(&[]),
            &no_env,
            &mut out,
        )
        .await
        .unwrap();
        let shown = output(out);
        assert!(
            shown.ends_with(
                "web is now running.\n\
                 Routing is not configured on this cluster; the instances listen at:\n  \
                 instance 0: 127.0.0.1:61000\n"
            ),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn unplaceable_instances_exit_with_3_and_say_why() {
        // Room for the staging task (64 MB), not for the app (128 MB).
        let receptor = TestReceptor::with_cluster(app_cluster(&staged_json()).memory_mb(64)).await;
        let started = std::time::Instant::now();
        let err = run(
            &args(&["web", "busybox", "--timeout", "1s"]),
            &receptor.context(&[]),
            &no_env,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() >= Duration::from_secs(1), "it waited");
        assert_eq!(crate::exit_code(&err), crate::EXIT_PLACEMENT);
        let message = format!("{err:#}");
        assert!(
            message.starts_with("web is not running after 1s: 0 of 1 instances RUNNING"),
            "{message}"
        );
        assert!(
            message.contains(
                "instance 0: UNCLAIMED, placement failed: insufficient resources: \
                 no cell has 128 MB memory"
            ),
            "{message}"
        );
        // The app stays desired, as the message says.
        receptor.store.get_desired_lrp("web").await.unwrap();
    }

    #[tokio::test]
    async fn crashing_instances_are_explained() {
        let receptor = TestReceptor::with_cluster(
            app_cluster(&staged_json())
                .script(LAUNCHER_PATH, Script::exits(2))
                .policy(no_restarts()),
        )
        .await;
        let err = run(
            &args(&["web", "busybox", "--timeout", "500ms"]),
            &receptor.context(&[]),
            &no_env,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(crate::exit_code(&err), crate::EXIT_PLACEMENT);
        let message = format!("{err:#}");
        assert!(
            message.contains("instance 0: CRASHED (1 crash, last: Exited with status 2)"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_failed_staging_creates_nothing() {
        let receptor = TestReceptor::with_cluster(
            app_cluster(&staged_json()).script(BUILDER_PATH, Script::exits(1)),
        )
        .await;
        let err = run(
            &args(&["web", "nope"]),
            &receptor.context(&[]),
            &no_env,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(crate::exit_code(&err), crate::EXIT_FAILURE);
        assert_eq!(
            format!("{err:#}"),
            "staging nope failed: Exited with status 1"
        );
        assert!(receptor.store.get_desired_lrp("web").await.is_err());
        let tasks = receptor
            .store
            .list_tasks(&lattice_bbs::TaskFilter::default())
            .await
            .unwrap();
        assert!(tasks.is_empty(), "{tasks:?}");
    }

    #[tokio::test]
    async fn staging_that_no_cell_takes_exits_with_3() {
        let receptor = TestReceptor::start().await;
        let err = run(
            &args(&["web", "busybox", "--timeout", "300ms"]),
            &receptor.context(&[]),
            &no_env,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert_eq!(crate::exit_code(&err), crate::EXIT_PLACEMENT);
        let message = format!("{err:#}");
        assert!(
            message.starts_with("staging busybox did not finish within 300ms"),
            "{message}"
        );
        assert!(message.contains("is PENDING: no cell took it"), "{message}");
        let tasks = receptor
            .store
            .list_tasks(&lattice_bbs::TaskFilter::default())
            .await
            .unwrap();
        assert!(tasks.is_empty(), "cancelled and deleted: {tasks:?}");
        assert!(receptor.store.get_desired_lrp("web").await.is_err());
    }

    #[tokio::test]
    async fn a_duplicate_is_refused_before_staging() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        let existing = args(&["web", "busybox"]);
        let plan = Plan::new(&existing, &no_env).unwrap();
        ctx.client()
            .unwrap()
            .create_desired_lrp(&plan.request(&existing, &ExecutionMetadata::default(), "x"))
            .await
            .unwrap();
        let err = run(&existing, &ctx, &no_env, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(crate::exit_code(&err), crate::EXIT_FAILURE);
        assert_eq!(
            format!("{err:#}"),
            "cannot create web: desired LRP \"web\" already exists"
        );
        let tasks = receptor
            .store
            .list_tasks(&lattice_bbs::TaskFilter::default())
            .await
            .unwrap();
        assert!(tasks.is_empty(), "nothing was staged: {tasks:?}");
    }

    #[tokio::test]
    async fn a_request_the_receptor_would_refuse_is_refused_before_staging() {
        let receptor = TestReceptor::start().await;
        // A valid app name, but not a valid DNS label for its default route.
        let err = run(
            &args(&["web-", "busybox"]),
            &receptor.context(&[]),
            &no_env,
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.starts_with("cannot create web-: routes.cf-router[0].hostnames[0]: "),
            "{message}"
        );
        let tasks = receptor
            .store
            .list_tasks(&lattice_bbs::TaskFilter::default())
            .await
            .unwrap();
        assert!(tasks.is_empty(), "nothing was staged: {tasks:?}");
    }
}
