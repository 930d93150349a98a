//! `ltc list-tasks`: the tasks of the cluster, or of one domain.

use std::io::Write;

use anyhow::Context as _;
use lattice_models::Task;

use crate::output::{self, or_dash};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc list-tasks
  ltc list-tasks --domain lattice-staging
  ltc list-tasks --json";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only the tasks of this domain.
    #[arg(long)]
    pub domain: Option<String>,

    /// Print the tasks as the receptor's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let tasks = match &args.domain {
        Some(domain) => client.tasks_by_domain(domain).await,
        None => client.tasks().await,
    }
    .context("cannot list tasks")?;
    if args.json {
        return output::write_json(out, &tasks);
    }
    if tasks.is_empty() {
        writeln!(out, "No tasks.")?;
        return Ok(());
    }
    output::write_table(out, &table(&tasks))?;
    Ok(())
}

fn table(tasks: &[Task]) -> comfy_table::Table {
    let mut table = output::table(&[
        "Guid",
        "Domain",
        "State",
        "Cell",
        "Failed",
        "Failure reason",
    ]);
    for task in tasks {
        table.add_row(vec![
            task.task_guid.clone(),
            task.domain.clone(),
            task.state.to_string(),
            or_dash(&task.cell_id),
            if task.failed { "yes" } else { "no" }.to_string(),
            or_dash(&task.failure_reason),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{output, task_json, TestReceptor};

    async fn submit(ctx: &Context, guid: &str, domain: &str) {
        let json = task_json(guid).replace("\"tests\"", &format!("{domain:?}"));
        let request = lattice_models::parse::from_json_slice(json.as_bytes()).unwrap();
        ctx.client().unwrap().create_task(&request).await.unwrap();
    }

    #[tokio::test]
    async fn no_tasks() {
        let receptor = TestReceptor::start().await;
        let mut out = Vec::new();
        run(
            &Args {
                domain: None,
                json: false,
            },
            &receptor.context(&[]),
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(output(out), "No tasks.\n");
    }

    #[tokio::test]
    async fn lists_tasks_as_a_table_and_as_json() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        submit(&ctx, "first", "apps").await;
        submit(&ctx, "second", "batch").await;

        let mut out = Vec::new();
        run(
            &Args {
                domain: None,
                json: false,
            },
            &ctx,
            &mut out,
        )
        .await
        .unwrap();
        let table = output(out);
        for expected in [
            "Guid",
            "Failure reason",
            "first",
            "second",
            "apps",
            "batch",
            "PENDING",
        ] {
            assert!(table.contains(expected), "{expected} missing from\n{table}");
        }

        let mut out = Vec::new();
        run(
            &Args {
                domain: Some("batch".into()),
                json: true,
            },
            &ctx,
            &mut out,
        )
        .await
        .unwrap();
        let tasks: Vec<Task> = serde_json::from_slice(&out).unwrap();
        let guids: Vec<_> = tasks.iter().map(|t| t.task_guid.as_str()).collect();
        assert_eq!(guids, ["second"]);
    }
}
