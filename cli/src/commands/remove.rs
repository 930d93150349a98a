//! `ltc remove APP...`: stop running apps and forget them.

use std::io::Write;

use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc remove hello
  ltc rm hello web api";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The apps to remove. Each is tried even if an earlier one fails.
    #[arg(required = true, value_name = "APP")]
    pub apps: Vec<String>,
}

/// Removes each app's desired LRP; the brain then stops its instances.
///
/// # Errors
/// One line per app that could not be removed (e.g. not found), after every
/// app was tried.
pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let mut failures = Vec::new();
    for app in &args.apps {
        match client.delete_desired_lrp(app).await {
            Ok(()) => writeln!(out, "Removed {app}")?,
            Err(err) => failures.push(format!("cannot remove {app}: {err}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow::Error::msg(failures.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{app_request, output, TestReceptor};

    #[tokio::test]
    async fn removes_each_and_names_the_missing() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        let client = ctx.client().unwrap();
        client
            .create_desired_lrp(&app_request("web", 1))
            .await
            .unwrap();
        client
            .create_desired_lrp(&app_request("api", 1))
            .await
            .unwrap();

        let mut out = Vec::new();
        let err = run(
            &Args {
                apps: vec!["web".into(), "nope".into(), "api".into()],
            },
            &ctx,
            &mut out,
        )
        .await
        .unwrap_err();
        assert_eq!(output(out), "Removed web\nRemoved api\n");
        assert_eq!(
            format!("{err:#}"),
            "cannot remove nope: desired LRP \"nope\" not found"
        );
        assert_eq!(crate::exit_code(&err), crate::EXIT_FAILURE);
        assert!(receptor.store.get_desired_lrp("web").await.is_err());
        assert!(receptor.store.get_desired_lrp("api").await.is_err());
    }
}
