//! `ltc submit-lrp FILE`: create an app from a JSON DesiredLrpCreateRequest,
//! for everything `ltc create`'s flags do not cover.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use lattice_models::parse::from_json_slice;
use lattice_models::DesiredLrpCreateRequest;

use crate::commands::submit_task::read_input;
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc submit-lrp lrp.json
  # From stdin
  ltc submit-lrp - < lrp.json";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A JSON DesiredLrpCreateRequest (process_guid, domain, rootfs,
    /// action, instances, ...); `-` reads it from standard input.
    pub file: PathBuf,
}

/// Parses the file locally (so that a typo is reported with its field and
/// line) and leaves every rule about the request to the receptor, whose
/// answer names the offending field.
pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let (name, bytes) = read_input(&args.file)?;
    let request: DesiredLrpCreateRequest =
        from_json_slice(&bytes).with_context(|| format!("{name} is not a valid LRP request"))?;
    ctx.client()?
        .create_desired_lrp(&request)
        .await
        .with_context(|| format!("LRP {:?} was not submitted", request.process_guid))?;
    writeln!(out, "Submitted LRP {}", request.process_guid)?;
    writeln!(out, "Follow it with `ltc status {}`", request.process_guid)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{app_request, output, TestReceptor};

    fn write(dir: &std::path::Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn lrp_json() -> String {
        serde_json::to_string_pretty(&app_request("web", 2)).unwrap()
    }

    #[tokio::test]
    async fn submits_an_lrp() {
        let receptor = TestReceptor::start().await;
        let file = write(receptor.dir.path(), "lrp.json", &lrp_json());
        let mut out = Vec::new();
        run(&Args { file }, &receptor.context(&[]), &mut out)
            .await
            .unwrap();
        assert_eq!(
            output(out),
            "Submitted LRP web\nFollow it with `ltc status web`\n"
        );
        let lrp = receptor.store.get_desired_lrp("web").await.unwrap();
        assert_eq!(lrp.instances, 2);
        assert_eq!(lrp.routes.http[0].hostnames, ["web.localhost"]);
    }

    #[tokio::test]
    async fn a_local_parse_error_names_field_and_line() {
        let receptor = TestReceptor::start().await;
        let json = lrp_json().replace("\"instances\": 2", "\"instances\": \"two\"");
        assert!(json.contains("\"two\""), "the test edits the request");
        let file = write(receptor.dir.path(), "bad.json", &json);
        let err = run(&Args { file }, &receptor.context(&[]), &mut Vec::new())
            .await
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("bad.json is not a valid LRP request"),
            "{message}"
        );
        assert!(message.contains("instances: invalid type"), "{message}");
        assert!(message.contains("line 5"), "{message}");
        assert!(receptor.store.get_desired_lrp("web").await.is_err());
    }

    #[tokio::test]
    async fn server_errors_name_the_field_and_duplicates_are_refused() {
        let receptor = TestReceptor::start().await;
        let json = lrp_json().replace("\"memory_mb\": 128", "\"memory_mb\": -1");
        let file = write(receptor.dir.path(), "bad.json", &json);
        let err = run(&Args { file }, &receptor.context(&[]), &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "LRP \"web\" was not submitted: memory_mb: must be >= 0, got -1"
        );

        let file = write(receptor.dir.path(), "lrp.json", &lrp_json());
        run(
            &Args { file: file.clone() },
            &receptor.context(&[]),
            &mut Vec::new(),
        )
        .await
        .unwrap();
        let err = run(&Args { file }, &receptor.context(&[]), &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "LRP \"web\" was not submitted: desired LRP \"web\" already exists"
        );
    }
}
