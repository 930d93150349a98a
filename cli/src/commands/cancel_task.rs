//! `ltc cancel-task GUID`: stop a task that has not completed.

use std::io::Write;

use anyhow::Context as _;

use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc cancel-task my-task";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The task's guid.
    pub guid: String,
}

/// The task completes as failed ("task was cancelled"); a cell running it
/// stops its container.
pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    ctx.client()?
        .cancel_task(&args.guid)
        .await
        .with_context(|| format!("cannot cancel task {:?}", args.guid))?;
    writeln!(out, "Cancelled task {}", args.guid)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use lattice_models::TaskState;

    use super::*;
    use crate::testing::{output, task_json, TestReceptor};

    #[tokio::test]
    async fn cancels_a_pending_task_once() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        let request = lattice_models::parse::from_json_slice(task_json("t1").as_bytes()).unwrap();
        ctx.client().unwrap().create_task(&request).await.unwrap();

        let mut out = Vec::new();
        run(&Args { guid: "t1".into() }, &ctx, &mut out)
            .await
            .unwrap();
        assert_eq!(output(out), "Cancelled task t1\n");
        let task = receptor.store.get_task("t1").await.unwrap();
        assert_eq!(task.state, TaskState::Completed);
        assert!(task.failed);

        let err = run(&Args { guid: "t1".into() }, &ctx, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("already COMPLETED"), "{err:#}");
    }
}
