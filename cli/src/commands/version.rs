//! `ltc version`: the versions of ltc and of the receptor it targets.

use std::io::Write;

use anyhow::Context as _;

use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc version";

#[derive(Debug, clap::Args)]
pub struct Args {}

/// Prints ltc's version, then the receptor's.
///
/// # Errors
/// When the receptor cannot be asked; ltc's own version is printed first.
pub async fn run(_args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "ltc version {}", env!("CARGO_PKG_VERSION"))?;
    let client = ctx.client()?;
    let info = client
        .info()
        .await
        .context("cannot get the receptor's version")?;
    writeln!(
        out,
        "receptor version {} at {}",
        info.version,
        client.target()
    )?;
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
                "ltc version {version}\nreceptor version {version} at {}\n",
                receptor.url
            )
        );
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
