//! `ltc version`: the versions of ltc and of the receptor it targets.

use std::io::Write;

use anyhow::Context as _;

use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc version";

#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints ltc's version, then what the cluster runs (`GET /v1/version`).
///
/// # Errors
/// When the receptor cannot be asked; ltc's own version is printed first.
pub async fn run(_args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "ltc version {}", env!("CARGO_PKG_VERSION"))?;
    let client = ctx.client()?;
    let versions = client
        .version()
        .await
        .context("cannot get the cluster's versions")?;
    let unknown = || "unknown".to_string();
    writeln!(
        out,
        "receptor version {} at {}",
        versions.receptor.clone().unwrap_or_else(unknown),
        client.target()
    )?;
    if let Some(release) = &versions.lattice_release {
        writeln!(out, "lattice release {release}")?;
    }
    if let Some(release) = &versions.diego_release {
        writeln!(out, "diego release {release}")?;
    }
    match &versions.ltc {
        Some(ltc) if ltc == env!("CARGO_PKG_VERSION") => {
            writeln!(out, "cluster's ltc {ltc} (the same)")?
        }
        Some(ltc) => writeln!(out, "cluster's ltc {ltc} (run `ltc sync` to use it)")?,
        None => writeln!(out, "cluster's ltc: none served")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{output, TestReceptor};

    #[tokio::test]
    async fn prints_both_versions() {
        let receptor = TestReceptor::start().await;
        let mut out = Vec::new();
        run(&Args {}, &receptor.context(&[]), &mut out)
            .await
            .unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            output(out),
            format!(
                "ltc version {version}\nreceptor version {version} at {}\n\
                 lattice release {version}\ncluster's ltc: none served\n",
                receptor.url
            )
        );
    }

    #[tokio::test]
    async fn names_the_ltc_the_cluster_serves() {
        let dir = tempfile::tempdir().unwrap();
        let ltc = dir.path().join("ltc");
        std::fs::write(&ltc, b"ltc").unwrap();
        let receptor = TestReceptor::start_with(lattice_receptor::ReceptorConfig {
            ltc_path: Some(ltc),
            ..Default::default()
        })
        .await;
        let mut out = Vec::new();
        run(&Args {}, &receptor.context(&[]), &mut out)
            .await
            .unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert!(output(out).ends_with(&format!("cluster's ltc {version} (the same)\n")),);
    }

    #[tokio::test]
    async fn an_unreachable_receptor_is_an_error_after_our_version() {
        let receptor = TestReceptor::start().await;
        let url = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", listener.local_addr().unwrap())
        };
        let ctx = receptor.context(&[(crate::config::ENV_TARGET, &url)]);
        let mut out = Vec::new();
        let err = run(&Args {}, &ctx, &mut out).await.unwrap_err();
        assert_eq!(
            output(out),
            format!("ltc version {}\n", env!("CARGO_PKG_VERSION"))
        );
        assert!(
            format!("{err:#}").contains(&format!("the receptor at {url} is not reachable")),
            "{err:#}"
        );
    }
}
