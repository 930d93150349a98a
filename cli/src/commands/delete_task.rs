//! `ltc delete-task GUID`: remove a completed task.

use std::io::Write;

use anyhow::Context as _;

use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc delete-task my-task";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The task's guid. Only a COMPLETED task can be deleted; cancel a
    /// running one first.
    pub guid: String,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    ctx.client()?
        .delete_task(&args.guid)
        .await
        .with_context(|| format!("cannot delete task {:?}", args.guid))?;
    writeln!(out, "Deleted task {}", args.guid)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{output, task_json, TestReceptor};

    #[tokio::test]
    async fn deletes_only_completed_tasks() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        let client = ctx.client().unwrap();
        let request = lattice_models::parse::from_json_slice(task_json("t1").as_bytes()).unwrap();
        client.create_task(&request).await.unwrap();

        let err = run(&Args { guid: "t1".into() }, &ctx, &mut Vec::new())
            .await
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.starts_with("cannot delete task \"t1\": "),
            "{message}"
        );
        assert!(
            message.contains("only a COMPLETED task can be deleted"),
            "{message}"
        );

        client.cancel_task("t1").await.unwrap();
        let mut out = Vec::new();
        run(&Args { guid: "t1".into() }, &ctx, &mut out)
            .await
            .unwrap();
        assert_eq!(output(out), "Deleted task t1\n");
        assert!(receptor.store.get_task("t1").await.is_err());
    }
}
