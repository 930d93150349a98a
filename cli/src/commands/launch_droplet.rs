//! `ltc launch-droplet APP DROPLET [-- START_COMMAND ARGS...]`: run a
//! droplet (see `ltc build-droplet`) as an app and wait until its instances
//! are RUNNING, as `ltc create` does for an image.
//!
//! The LRP runs in the droplet's stack: its `setup` downloads the droplet
//! from the file server (the receptor's address, with the target's
//! credentials) into `/home/lattice`, and its action is `droplet-launcher
//! --droplet-dir /home/lattice [-- START_COMMAND...]`, which starts the
//! droplet's start command (or the one given) from `app/` with the
//! buildpack's environment. Ports default to 8080; health check, routes and
//! every other flag are `ltc create`'s. The app's environment holds Cloud
//! Foundry's `VCAP_APPLICATION`, `VCAP_SERVICES`, `MEMORY_LIMIT` and
//! `CF_STACK` (see `cf_env`) under the user's `-e` ones.
//!
//! # Errors
//! Exit code 1 for bad input, a missing droplet, one without a stack or
//! (with no START_COMMAND) without a start command, an existing app, or a
//! refused request (nothing is desired then); exit code 3 when the
//! instances are not RUNNING within `--timeout` (the app stays desired).

use std::io::Write;

use anyhow::{bail, Context as _};
use lattice_models::action::DownloadAction;
use lattice_models::droplet::{Droplet, DropletName};
use lattice_models::lifecycle::{ExecutionMetadata, DROPLET_DIR, DROPLET_LAUNCHER_PATH};
use lattice_models::{Action, DesiredLrpCreateRequest, EnvironmentVariable};

use crate::cf_env::{with_cf_env, AppEnv};
use crate::commands::create::{self, AppFlags, AppProcess};
use crate::log_stream::{LineFormat, LogTail};
use crate::transfer;
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  # Two instances of the droplet `site`, at http://web.localhost:8080
  ltc launch-droplet web site -i 2
  # Its own start command, environment and an HTTP health check
  ltc launch-droplet api api-droplet -e MODE=prod --monitor-url 8080:/healthz -- ./bin/api -v";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The app's name: letters, digits, '-' and '_'. It names the app's
    /// LRP, its logs and its default route APP.DOMAIN.
    pub app: String,

    /// The droplet to run (`ltc list-droplets` shows them).
    pub droplet: String,

    /// The command to run instead of the droplet's start command, after
    /// `--`; it runs in the app's directory with the buildpack's
    /// environment and profile scripts.
    #[arg(last = true, value_name = "START_COMMAND")]
    pub start_command: Vec<String>,

    #[command(flatten)]
    pub flags: AppFlags,
}

pub async fn run(
    args: &Args,
    ctx: &Context,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let app = &args.app;
    let env = args.flags.check(app, lookup)?;
    DropletName::parse(&args.droplet)?;
    let client = ctx.client()?;
    let files = transfer::file_server(ctx);
    let droplet = files
        .droplet(&args.droplet)
        .await
        .with_context(|| format!("cannot launch {app}"))?;
    let info = client
        .info()
        .await
        .context("cannot read the cluster's domain")?;
    create::refuse_existing(&client, app).await?;
    let download =
        transfer::cell_url(ctx, &format!("/v1/droplets/{}/download", droplet.name), &[])?;
    let request = droplet_request(args, &droplet, &env, download, &info.domain)?;
    request
        .validate()
        .with_context(|| format!("cannot create {app}"))?;

    let format = LineFormat::new(ctx.stderr.color);
    let mut tail = LogTail::start(ctx.logs_client()?, app, format).await;
    create::desire_and_wait(
        ctx,
        &mut tail,
        &request,
        &format!("droplet {}", droplet.name),
        args.flags.timeout,
        info.router_address.as_deref(),
        out,
    )
    .await
}

/// The LRP that runs `droplet`, fetched by the cells from `download_url`.
///
/// # Errors
/// The droplet has no stack, or neither it nor the command line has a
/// start command.
pub(crate) fn droplet_request(
    args: &Args,
    droplet: &Droplet,
    env: &[EnvironmentVariable],
    download_url: String,
    domain: &str,
) -> anyhow::Result<DesiredLrpCreateRequest> {
    let name = &droplet.name;
    let Some(stack) = droplet.stack.clone().filter(|s| !s.is_empty()) else {
        bail!(
            "droplet {name} has no stack to run in; import it again with \
             `ltc import-droplet {name} FILE --stack IMAGE`"
        );
    };
    let has_command = droplet
        .start_command
        .as_ref()
        .is_some_and(|c| !c.is_empty());
    if args.start_command.is_empty() && !has_command {
        bail!("droplet {name} has no start command; give one after `--`");
    }
    let setup = Action::Download(DownloadAction {
        from: download_url,
        to: DROPLET_DIR.to_string(),
        // One fetch per cell: later instances revalidate it (the file
        // server answers 304 while the droplet is unchanged).
        cache_key: Some(format!("droplet-{name}")),
        artifact: Some(format!("droplet {name}")),
        user: None,
        log_source: None,
    });
    // Nothing was staged from an image: ports default to 8080, and the
    // user and directory are the stack's (the launcher enters `app/`).
    let staged = ExecutionMetadata::default();
    let action = create::lifecycle_action(
        DROPLET_LAUNCHER_PATH,
        vec!["--droplet-dir".to_string(), DROPLET_DIR.to_string()],
        &args.start_command,
        &args.flags,
        &staged,
    );
    let process = AppProcess {
        rootfs: stack.clone(),
        setup: Some(setup),
        action,
    };
    let mut request = create::app_request(&args.app, &args.flags, env, process, &staged, domain);
    // Cloud Foundry's environment, which buildpacks' apps read.
    let uris = request
        .routes
        .iter()
        .flat_map(|routes| &routes.http)
        .flat_map(|route| route.hostnames.iter().cloned())
        .collect();
    let app = AppEnv {
        name: &args.app,
        uris,
        memory_mb: args.flags.memory_mb,
        disk_mb: args.flags.disk_mb,
        stack: &stack,
    };
    request.env = with_cf_env(&app, &request.env);
    Ok(request)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use serde_json::json;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(argv: &[&str]) -> Args {
        let argv = ["ltc", "launch-droplet"].iter().chain(argv).copied();
        match Cli::try_parse_from(argv).expect("the test command line parses") {
            Cli {
                command: Command::LaunchDroplet(args),
            } => args,
            other => panic!("not a launch-droplet: {other:?}"),
        }
    }

    fn droplet() -> Droplet {
        serde_json::from_value(json!({
            "name": "site",
            "sha256": "ab".repeat(32),
            "size": 1234,
            "created_at": 1,
            "buildpack": "static-sh",
            "start_command": "sh ./start.sh",
            "stack": "docker:///lattice-test/stack#v1"
        }))
        .expect("a valid droplet")
    }

    const URL: &str = "http://u:p@10.0.0.1:8888/v1/droplets/site/download";

    fn request(argv: &[&str], droplet: &Droplet) -> anyhow::Result<serde_json::Value> {
        let args = args(argv);
        let env = args.flags.check(&args.app, &|_| None)?;
        let request = droplet_request(&args, droplet, &env, URL.into(), "lattice.dev")?;
        request.validate()?;
        Ok(serde_json::to_value(request).expect("a request serialises"))
    }

    /// The request without its env, and the env as name -> value.
    fn split_env(
        mut value: serde_json::Value,
    ) -> (
        serde_json::Value,
        std::collections::BTreeMap<String, String>,
    ) {
        let env = value
            .as_object_mut()
            .expect("an object")
            .remove("env")
            .unwrap_or_default();
        let env = env
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| {
                let field = |f: &str| v[f].as_str().expect("a string").to_string();
                (field("name"), field("value"))
            })
            .collect();
        (value, env)
    }

    #[test]
    fn golden_request() {
        let (value, env) = split_env(request(&["web", "site", "-i", "2"], &droplet()).unwrap());
        let names: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "CF_STACK",
                "MEMORY_LIMIT",
                "VCAP_APPLICATION",
                "VCAP_SERVICES"
            ]
        );
        assert_eq!(env["CF_STACK"], "stack");
        assert_eq!(env["MEMORY_LIMIT"], "128m");
        assert_eq!(env["VCAP_SERVICES"], "{}");
        let vcap: serde_json::Value = serde_json::from_str(&env["VCAP_APPLICATION"]).unwrap();
        assert_eq!(vcap["application_name"], "web");
        assert_eq!(vcap["application_uris"], json!(["web.lattice.dev"]));
        assert_eq!(vcap["limits"]["mem"], 128);
        assert_eq!(
            value,
            json!({
                "process_guid": "web",
                "domain": "lattice",
                "rootfs": "docker:///lattice-test/stack#v1",
                "instances": 2,
                "setup": {"download": {
                    "from": URL,
                    "to": "/home/lattice",
                    "cache_key": "droplet-site",
                    "artifact": "droplet site"}},
                "action": {"run": {
                    "path": "/.lattice/bin/droplet-launcher",
                    "args": ["--droplet-dir", "/home/lattice"]}},
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
    fn create_flags_and_a_start_command() {
        let argv = [
            "api",
            "site",
            "-p",
            "9000",
            "-e",
            "MODE=prod",
            "--no-monitor",
            "-R",
            "api.example.com",
            "--",
            "sh",
            "-c",
            "exec ./api",
        ];
        let value = request(&argv, &droplet()).unwrap();
        assert_eq!(
            value["action"]["run"]["args"],
            json!([
                "--droplet-dir",
                "/home/lattice",
                "--",
                "sh",
                "-c",
                "exec ./api"
            ])
        );
        assert_eq!(value["ports"], json!([9000]));
        let (value, env) = split_env(value);
        assert_eq!(env["MODE"], "prod");
        let vcap: serde_json::Value = serde_json::from_str(&env["VCAP_APPLICATION"]).unwrap();
        assert_eq!(vcap["application_uris"], json!(["api.example.com"]));
        assert_eq!(value.get("monitor"), None);
        assert_eq!(
            value["routes"],
            json!({"cf-router": [{"hostnames": ["api.example.com"], "port": 9000}]})
        );
    }

    #[test]
    fn a_droplet_without_stack_or_start_command_is_refused() {
        let mut no_stack = droplet();
        no_stack.stack = None;
        let err = request(&["web", "site"], &no_stack).unwrap_err();
        assert!(
            err.to_string().starts_with("droplet site has no stack"),
            "{err}"
        );

        let mut no_command = droplet();
        no_command.start_command = None;
        let err = request(&["web", "site"], &no_command).unwrap_err();
        assert_eq!(
            err.to_string(),
            "droplet site has no start command; give one after `--`"
        );
        request(&["web", "site", "--", "./run"], &no_command).expect("a command is given");
    }
}
