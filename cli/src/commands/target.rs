//! `ltc target [URL]`: show the receptor ltc talks to, or check and save a
//! new one.

use std::io::Write;

use anyhow::{bail, Context as _};
use lattice_client::{Client, ClientError, Credentials};

use crate::config::{self, SavedConfig, Source, ENV_TARGET};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  # Show the current target
  ltc target
  ltc target 127.0.0.1:8888
  ltc target http://lattice.example.com:8888 --username admin --password s3cret";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The receptor's URL, e.g. http://127.0.0.1:8888 (a bare host:port gets
    /// http://). Without it, the current target is shown.
    pub url: Option<String>,

    /// User name for the receptor's HTTP basic auth. Without --username and
    /// --password, the credentials in force for URL (saved, or from
    /// LTC_USERNAME and LTC_PASSWORD) are kept.
    #[arg(long, requires = "url", requires = "password")]
    pub username: Option<String>,

    /// Password for the receptor's HTTP basic auth. It is saved in the config
    /// file, which only its owner can read.
    #[arg(long, requires = "username")]
    pub password: Option<String>,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    match &args.url {
        None => show(ctx, out),
        Some(url) => set(args, url, ctx, out).await,
    }
}

fn show(ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let target = &ctx.target;
    let origin = match target.source {
        Source::File => String::new(),
        Source::Env => format!(" (from {ENV_TARGET})"),
        Source::Default => " (the default; set one with `ltc target URL`)".to_string(),
    };
    writeln!(out, "Target: {}{origin}", target.url)?;
    if let Some(credentials) = &target.credentials {
        writeln!(out, "User:   {}", credentials.username)?;
    }
    Ok(())
}

async fn set(args: &Args, url: &str, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let url = config::normalize_target(url)?;
    let credentials = match (&args.username, &args.password) {
        (Some(username), Some(password)) => Some(Credentials::new(username, password)),
        // Re-targeting the same receptor keeps the credentials in force.
        _ if ctx.target.url == url => ctx.target.credentials.clone(),
        _ => None,
    };
    let client = Client::new(&url, credentials.clone())?;
    let info = match client.info().await {
        Ok(info) => info,
        Err(err) if err.status() == Some(401) => {
            bail!(unauthorized(&url, credentials.is_some(), err))
        }
        Err(err) => {
            return Err(err).with_context(|| format!("target not saved: {url} does not answer"))
        }
    };
    ctx.config_file
        .save(&SavedConfig {
            target: Some(url.clone()),
            username: credentials.as_ref().map(|c| c.username.clone()),
            password: credentials.as_ref().map(|c| c.password.clone()),
        })
        .context("target not saved")?;
    writeln!(
        out,
        "Target set to {url} (receptor {}, domain {})",
        info.version, info.domain
    )?;
    if ctx.target.source == Source::Env {
        writeln!(
            out,
            "Note: {ENV_TARGET} is set and overrides the saved target"
        )?;
    }
    Ok(())
}

fn unauthorized(url: &str, had_credentials: bool, err: ClientError) -> String {
    if had_credentials {
        format!("target not saved: the receptor at {url} rejected the username or password ({err})")
    } else {
        format!("target not saved: the receptor at {url} requires credentials; pass --username and --password")
    }
}

#[cfg(test)]
mod tests {
    use lattice_receptor::ReceptorConfig;

    use super::*;
    use crate::testing::{output, TestReceptor};

    fn args(url: Option<&str>, credentials: Option<(&str, &str)>) -> Args {
        Args {
            url: url.map(str::to_string),
            username: credentials.map(|c| c.0.to_string()),
            password: credentials.map(|c| c.1.to_string()),
        }
    }

    /// A context with no target set anywhere, its config in `dir`.
    fn fresh_context(dir: &std::path::Path) -> Context {
        let dir = dir.display().to_string();
        Context::load(&move |name| (name == config::ENV_CONFIG_DIR).then(|| dir.clone())).unwrap()
    }

    fn refused_url() -> String {
        // A port that was just free: nothing listens there now.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn shows_the_default_target() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        run(&args(None, None), &fresh_context(dir.path()), &mut out)
            .await
            .unwrap();
        assert_eq!(
            output(out),
            "Target: http://127.0.0.1:8888 (the default; set one with `ltc target URL`)\n"
        );
    }

    #[tokio::test]
    async fn saves_a_target_that_answers() {
        let receptor = TestReceptor::start().await;
        let dir = tempfile::tempdir().unwrap();
        let bare = receptor.url.trim_start_matches("http://");
        let mut out = Vec::new();
        run(
            &args(Some(bare), None),
            &fresh_context(dir.path()),
            &mut out,
        )
        .await
        .unwrap();
        assert!(output(out).starts_with(&format!("Target set to {} (receptor ", receptor.url)));

        let ctx = fresh_context(dir.path());
        assert_eq!(ctx.target.url, receptor.url);
        assert_eq!(ctx.target.source, Source::File);
        let mut out = Vec::new();
        run(&args(None, None), &ctx, &mut out).await.unwrap();
        assert_eq!(output(out), format!("Target: {}\n", receptor.url));
    }

    #[tokio::test]
    async fn does_not_save_an_unreachable_target() {
        let dir = tempfile::tempdir().unwrap();
        let url = refused_url();
        let err = run(
            &args(Some(&url), None),
            &fresh_context(dir.path()),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("target not saved"), "{message}");
        assert!(message.contains("is not reachable"), "{message}");
        assert_eq!(fresh_context(dir.path()).target.source, Source::Default);
    }

    #[tokio::test]
    async fn checks_credentials_before_saving() {
        let receptor = TestReceptor::start_with(ReceptorConfig {
            credentials: Some(lattice_receptor::Credentials {
                username: "admin".into(),
                password: "s3cret".into(),
            }),
            ..ReceptorConfig::default()
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let url = receptor.url.as_str();

        let err = run(
            &args(Some(url), None),
            &fresh_context(dir.path()),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("requires credentials"), "{err:#}");

        let err = run(
            &args(Some(url), Some(("admin", "wrong"))),
            &fresh_context(dir.path()),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("rejected the username or password"),
            "{err:#}"
        );
        assert_eq!(fresh_context(dir.path()).target.source, Source::Default);

        run(
            &args(Some(url), Some(("admin", "s3cret"))),
            &fresh_context(dir.path()),
            &mut Vec::new(),
        )
        .await
        .unwrap();
        let ctx = fresh_context(dir.path());
        assert_eq!(
            ctx.target.credentials,
            Some(Credentials::new("admin", "s3cret"))
        );
        // The saved credentials work for the next command.
        ctx.client().unwrap().tasks().await.unwrap();
        // Re-targeting the same receptor without flags keeps them.
        run(&args(Some(url), None), &ctx, &mut Vec::new())
            .await
            .unwrap();
        assert_eq!(
            fresh_context(dir.path()).target.credentials,
            ctx.target.credentials
        );
    }
}
