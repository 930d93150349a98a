//! `ltc submit-task FILE`: submit a task described by a JSON file.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use lattice_models::parse::from_json_slice;
use lattice_models::TaskCreateRequest;

use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc submit-task task.json
  # From stdin
  ltc submit-task - < task.json";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A JSON TaskCreateRequest (task_guid, domain, rootfs, action, ...);
    /// `-` reads it from standard input.
    pub file: PathBuf,
}

/// Parses the file locally (so that a typo is reported with its field and
/// line) and leaves every rule about the request to the receptor, whose
/// answer names the offending field.
pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let (name, bytes) = read_input(&args.file)?;
    let request: TaskCreateRequest =
        from_json_slice(&bytes).with_context(|| format!("{name} is not a valid task request"))?;
    let client = ctx.client()?;
    client
        .create_task(&request)
        .await
        .with_context(|| format!("task {:?} was not submitted", request.task_guid))?;
    writeln!(out, "Submitted task {}", request.task_guid)?;
    writeln!(out, "Follow it with `ltc task {}`", request.task_guid)?;
    Ok(())
}

pub(crate) fn read_input(file: &PathBuf) -> anyhow::Result<(String, Vec<u8>)> {
    if file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read standard input")?;
        Ok(("standard input".to_string(), bytes))
    } else {
        let bytes =
            std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        Ok((file.display().to_string(), bytes))
    }
}

#[cfg(test)]
mod tests {
    use lattice_models::TaskState;

    use super::*;
    use crate::testing::{output, task_json, TestReceptor};

    fn write(dir: &std::path::Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[tokio::test]
    async fn submits_a_task() {
        let receptor = TestReceptor::start().await;
        let file = write(receptor.dir.path(), "task.json", &task_json("hello"));
        let mut out = Vec::new();
        run(&Args { file }, &receptor.context(&[]), &mut out)
            .await
            .unwrap();
        assert_eq!(
            output(out),
            "Submitted task hello\nFollow it with `ltc task hello`\n"
        );
        let task = receptor.store.get_task("hello").await.unwrap();
        assert_eq!(task.state, TaskState::Pending);
        assert_eq!(task.memory_mb, 64);
    }

    #[tokio::test]
    async fn a_local_parse_error_names_field_and_line() {
        let receptor = TestReceptor::start().await;
        let json = task_json("hello").replace(r#""path": "/bin/true""#, r#""path": 17"#);
        let file = write(receptor.dir.path(), "bad.json", &json);
        let err = run(&Args { file }, &receptor.context(&[]), &mut Vec::new())
            .await
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("bad.json is not a valid task request"),
            "{message}"
        );
        assert!(message.contains("action.run.path"), "{message}");
        assert!(message.contains("line 5"), "{message}");
        assert!(
            receptor.store.get_task("hello").await.is_err(),
            "nothing was sent"
        );
    }

    #[tokio::test]
    async fn a_server_error_names_the_field() {
        let receptor = TestReceptor::start().await;
        let json = task_json("hello").replace("64", "-1");
        let file = write(receptor.dir.path(), "bad.json", &json);
        let err = run(&Args { file }, &receptor.context(&[]), &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "task \"hello\" was not submitted: memory_mb: must be >= 0, got -1"
        );
    }

    #[tokio::test]
    async fn a_missing_file_is_named() {
        let receptor = TestReceptor::start().await;
        let file = receptor.dir.path().join("nope.json");
        let err = run(&Args { file }, &receptor.context(&[]), &mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("nope.json"), "{err:#}");
    }
}
