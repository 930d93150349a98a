//! `ltc task GUID`: one task in detail, with its result or failure reason.

use std::io::Write;

use anyhow::Context as _;
use lattice_models::Task;

use crate::output::{self, or_dash, timestamp};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc task my-task
  # The task's record as the receptor has it, e.g. for its result
  ltc task my-task --json";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The task's guid.
    pub guid: String,

    /// Print the task as the receptor's JSON (with its action) instead of a
    /// table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let task = client
        .task(&args.guid)
        .await
        .with_context(|| format!("cannot get task {:?}", args.guid))?;
    if args.json {
        return output::write_json(out, &task);
    }
    output::write_table(out, &details(&task))?;
    Ok(())
}

fn details(task: &Task) -> comfy_table::Table {
    let mut rows = vec![
        ("Guid", task.task_guid.clone()),
        ("Domain", task.domain.clone()),
        ("State", task.state.to_string()),
        ("Cell", or_dash(&task.cell_id)),
        ("Rootfs", task.rootfs.clone()),
        ("Memory", format!("{} MB", task.memory_mb)),
        ("Disk", format!("{} MB", task.disk_mb)),
        ("CPU weight", task.cpu_weight.to_string()),
        ("Created", timestamp(task.created_at)),
        ("Updated", timestamp(task.updated_at)),
        ("Completed", timestamp(task.first_completed_at)),
    ];
    if task.state.is_terminal() {
        rows.push(("Failed", if task.failed { "yes" } else { "no" }.to_string()));
        if task.failed {
            rows.push(("Failure reason", or_dash(&task.failure_reason)));
        } else {
            // A result file usually ends in a newline: no empty row under it.
            rows.push(("Result", or_dash(task.result.trim_end())));
        }
    }
    if !task.annotation.is_empty() {
        rows.push(("Annotation", task.annotation.clone()));
    }
    output::details(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{output, task_json, TestReceptor};

    #[tokio::test]
    async fn shows_a_task_and_its_failure() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        let request = lattice_models::parse::from_json_slice(task_json("t1").as_bytes()).unwrap();
        let client = ctx.client().unwrap();
        client.create_task(&request).await.unwrap();

        let args = Args {
            guid: "t1".into(),
            json: false,
        };
        let mut out = Vec::new();
        run(&args, &ctx, &mut out).await.unwrap();
        let shown = output(out);
        assert!(
            shown.contains("t1") && shown.contains("PENDING") && shown.contains("64 MB"),
            "{shown}"
        );
        assert!(!shown.contains("Failure reason"), "{shown}");

        client.cancel_task("t1").await.unwrap();
        let mut out = Vec::new();
        run(&args, &ctx, &mut out).await.unwrap();
        let shown = output(out);
        assert!(
            shown.contains("COMPLETED") && shown.contains("task was cancelled"),
            "{shown}"
        );

        let mut out = Vec::new();
        run(
            &Args {
                guid: "t1".into(),
                json: true,
            },
            &ctx,
            &mut out,
        )
        .await
        .unwrap();
        let task: Task = serde_json::from_slice(&out).unwrap();
        assert!(task.failed);
    }

    #[tokio::test]
    async fn an_unknown_task_is_an_error() {
        let receptor = TestReceptor::start().await;
        let err = run(
            &Args {
                guid: "nope".into(),
                json: false,
            },
            &receptor.context(&[]),
            &mut Vec::new(),
        )
        .await
        .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.starts_with("cannot get task \"nope\": "),
            "{message}"
        );
        assert!(message.contains("not found"), "{message}");
    }
}
