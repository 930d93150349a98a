//! `ltc list`: every app (desired LRP) with its running instances, then
//! every task.

use std::io::Write;

use anyhow::Context as _;
use comfy_table::{Cell, Color};
use lattice_models::{ActualLrp, DesiredLrp, Task};
use serde::Serialize;

use crate::output::{self, or_dash};
use crate::wait::Progress;
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc list
  ltc list --json";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print `{"desired_lrps": [...], "actual_lrps": [...], "tasks": [...]}`
    /// in the receptor's JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints: the receptor's own records.
#[derive(Debug, Serialize)]
struct Listing {
    desired_lrps: Vec<DesiredLrp>,
    actual_lrps: Vec<ActualLrp>,
    tasks: Vec<Task>,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let listing = Listing {
        desired_lrps: client.desired_lrps().await.context("cannot list apps")?,
        actual_lrps: client
            .actual_lrps()
            .await
            .context("cannot list instances")?,
        tasks: client.tasks().await.context("cannot list tasks")?,
    };
    if args.json {
        return output::write_json(out, &listing);
    }
    if listing.desired_lrps.is_empty() {
        writeln!(out, "No apps.")?;
    } else {
        let apps = apps(&listing.desired_lrps, &listing.actual_lrps, ctx.color);
        output::write_table(out, &apps)?;
    }
    if listing.tasks.is_empty() {
        writeln!(out, "No tasks.")?;
    } else {
        output::write_table(out, &tasks(&listing.tasks))?;
    }
    Ok(())
}

fn apps(desired: &[DesiredLrp], actuals: &[ActualLrp], color: bool) -> comfy_table::Table {
    let mut table = output::table(&["App", "Instances", "Memory (MB)", "Disk (MB)", "Routes"]);
    output::allow_color(&mut table, color);
    for lrp in desired {
        let own: Vec<ActualLrp> = actuals
            .iter()
            .filter(|a| a.process_guid == lrp.process_guid)
            .cloned()
            .collect();
        let progress = Progress::of(&own, lrp.instances);
        let mut instances = Cell::new(format!("{}/{}", progress.running, lrp.instances));
        if color {
            // Green when all run, yellow on the way, red when none does.
            instances = instances.fg(match progress.running {
                n if n >= lrp.instances => Color::Green,
                0 => Color::Red,
                _ => Color::Yellow,
            });
        }
        let routes: Vec<String> = lrp
            .routes
            .http
            .iter()
            .flat_map(|r| r.hostnames.iter().cloned())
            .chain(
                lrp.routes
                    .tcp
                    .iter()
                    .map(|r| format!("tcp {}", r.external_port)),
            )
            .collect();
        table.add_row(vec![
            Cell::new(&lrp.process_guid),
            instances,
            Cell::new(lrp.memory_mb),
            Cell::new(lrp.disk_mb),
            Cell::new(or_dash(&routes.join("\n"))),
        ]);
    }
    table
}

fn tasks(tasks: &[Task]) -> comfy_table::Table {
    let mut table = output::table(&["Task", "State", "Cell", "Failed"]);
    for task in tasks {
        table.add_row(vec![
            task.task_guid.clone(),
            task.state.to_string(),
            or_dash(&task.cell_id),
            if task.failed { "yes" } else { "no" }.to_string(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use lattice_models::ActualLrpState;

    use super::*;
    use crate::testing::{app_request, output, seed_actual, task_json, TestReceptor};

    #[tokio::test]
    async fn nothing_to_list() {
        let receptor = TestReceptor::start().await;
        let mut out = Vec::new();
        run(&Args { json: false }, &receptor.context(&[]), &mut out)
            .await
            .unwrap();
        assert_eq!(output(out), "No apps.\nNo tasks.\n");
    }

    #[tokio::test]
    async fn lists_apps_and_tasks() {
        let receptor = TestReceptor::start().await;
        let ctx = receptor.context(&[]);
        let client = ctx.client().unwrap();
        client
            .create_desired_lrp(&app_request("web", 2))
            .await
            .unwrap();
        client
            .create_desired_lrp(&app_request("api", 1))
            .await
            .unwrap();
        seed_actual(&receptor.store, "web", 0, ActualLrpState::Running, "cell-1").await;
        seed_actual(&receptor.store, "web", 1, ActualLrpState::Claimed, "cell-1").await;
        let task = lattice_models::parse::from_json_slice(task_json("job-1").as_bytes()).unwrap();
        client.create_task(&task).await.unwrap();

        let mut out = Vec::new();
        run(&Args { json: false }, &ctx, &mut out).await.unwrap();
        let shown = output(out);
        for expected in [
            "web",
            "1/2",
            "api",
            "0/1",
            "web.localhost",
            "128",
            "256",
            "job-1",
            "PENDING",
        ] {
            assert!(shown.contains(expected), "{expected} missing from\n{shown}");
        }
        // api sorts before web: the receptor's order, kept.
        assert!(
            shown.find("api").unwrap() < shown.find("web").unwrap(),
            "{shown}"
        );

        let mut out = Vec::new();
        run(&Args { json: true }, &ctx, &mut out).await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["desired_lrps"].as_array().unwrap().len(), 2);
        assert_eq!(json["actual_lrps"].as_array().unwrap().len(), 2);
        assert_eq!(json["tasks"][0]["task_guid"], "job-1");
    }
}
