//! `ltc cells`: the cells of the cluster, whether they drain, and their
//! capacity.

use std::io::Write;

use anyhow::Context as _;
use lattice_models::CellResponse;

use crate::output::{self, or_dash};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc cells
  ltc cells --json
  ltc cells drain cell-web-1";

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Print the cells as the receptor's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Drain a cell before taking it down: it takes no new work, and each
    /// of its running instances is started on another cell and stops only
    /// once that one runs and is routed (or the cell's evacuation timeout
    /// passes), so no request fails. The cell stays up, empty, until it is
    /// stopped.
    Drain(DrainArgs),
}

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The cell's id, as `ltc cells` lists it.
    pub cell_id: String,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    if let Some(Action::Drain(drain)) = &args.action {
        ctx.client()?
            .drain_cell(&drain.cell_id)
            .await
            .with_context(|| format!("cannot drain cell {}", drain.cell_id))?;
        writeln!(
            out,
            "Cell {} is draining: its instances move to other cells. `ltc cells` shows it empty when done.",
            drain.cell_id
        )?;
        return Ok(());
    }
    let cells = ctx.client()?.cells().await.context("cannot list cells")?;
    if args.json {
        return output::write_json(out, &cells);
    }
    if cells.is_empty() {
        writeln!(
            out,
            "No cells. Is a cell running (`lattice up` starts one)?"
        )?;
        return Ok(());
    }
    output::write_table(out, &table(&cells))?;
    Ok(())
}

fn table(cells: &[CellResponse]) -> comfy_table::Table {
    let mut table = output::table(&[
        "Cell",
        "Zone",
        "State",
        "Memory free/total (MB)",
        "Disk free/total (MB)",
        "Containers free/total",
        "Memory used/allocated (MB)",
        "Disk used/allocated (MB)",
        "CPU",
        "Instances",
        "Tasks",
    ]);
    for cell in cells {
        let total = cell.presence.capacity;
        let used = cell.allocated;
        table.add_row(vec![
            cell.presence.cell_id.clone(),
            or_dash(&cell.presence.zone),
            state(cell).to_string(),
            free_of(total.memory_mb, used.memory_mb),
            free_of(total.disk_mb, used.disk_mb),
            free_of(total.containers, used.containers),
            memory_used_of_allocated(cell),
            disk_used_of_allocated(cell),
            cpu(cell),
            cell.instances.to_string(),
            cell.tasks.to_string(),
        ]);
    }
    table
}

/// `draining` for a cell that takes no new work and moves its instances
/// away, `active` for one that takes work, `-` when its rep did not say.
pub fn state(cell: &CellResponse) -> &'static str {
    match cell.evacuating {
        Some(true) => "draining",
        Some(false) => "active",
        None => "-",
    }
}

/// `used/allocated` memory in MB: what the cell's containers use (its
/// latest samples) against what its work asked for; `-` for the used part
/// when the cell did not send its samples.
pub fn memory_used_of_allocated(cell: &CellResponse) -> String {
    used_of_allocated(cell.usage.map(|u| u.memory_bytes), cell.allocated.memory_mb)
}

/// As [`memory_used_of_allocated`], for disk.
pub fn disk_used_of_allocated(cell: &CellResponse) -> String {
    used_of_allocated(cell.usage.map(|u| u.disk_bytes), cell.allocated.disk_mb)
}

/// The CPU the cell's containers use, in percent of one core (200%: two
/// cores busy); `-` without samples.
pub fn cpu(cell: &CellResponse) -> String {
    cell.usage
        .map_or("-".to_string(), |u| format!("{:.1}%", u.cpu_percentage))
}

fn used_of_allocated(used_bytes: Option<u64>, allocated_mb: i64) -> String {
    let used = used_bytes.map_or("-".to_string(), |bytes| (bytes / (1024 * 1024)).to_string());
    format!("{used}/{allocated_mb}")
}

/// `free/total`; a total of 0 means the cell does not limit it.
fn free_of(total: i64, used: i64) -> String {
    if total == 0 {
        return "unlimited".to_string();
    }
    format!("{}/{total}", (total - used).max(0))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lattice_models::{CellCapacity, CellPresence};

    use super::*;
    use crate::testing::{output, TestReceptor};

    #[tokio::test]
    async fn no_cells() {
        let receptor = TestReceptor::start().await;
        let mut out = Vec::new();
        run(
            &Args {
                action: None,
                json: false,
            },
            &receptor.context(&[]),
            &mut out,
        )
        .await
        .unwrap();
        assert!(output(out).starts_with("No cells."));
    }

    #[tokio::test]
    async fn lists_cells_with_their_capacity() {
        let receptor = TestReceptor::start().await;
        let cell = CellPresence {
            cell_id: "cell-1".into(),
            zone: "z1".into(),
            rep_address: "http://127.0.0.1:1".into(),
            capacity: CellCapacity {
                memory_mb: 4096,
                disk_mb: 20480,
                containers: 250,
            },
            rootfs_providers: lattice_models::cell::docker_rootfs_providers(),
        };
        receptor
            .store
            .upsert_cell(cell.clone(), Duration::from_secs(60))
            .await
            .unwrap();

        let mut out = Vec::new();
        run(
            &Args {
                action: None,
                json: false,
            },
            &receptor.context(&[]),
            &mut out,
        )
        .await
        .unwrap();
        let table = output(out);
        for expected in ["cell-1", "z1", "4096/4096", "20480/20480", "250/250"] {
            assert!(table.contains(expected), "{expected} missing from\n{table}");
        }

        let mut out = Vec::new();
        run(
            &Args {
                action: None,
                json: true,
            },
            &receptor.context(&[]),
            &mut out,
        )
        .await
        .unwrap();
        let cells: Vec<CellResponse> = serde_json::from_slice(&out).unwrap();
        assert_eq!(cells[0].presence, cell);
        assert_eq!(cells[0].instances, 0);
        assert_eq!(cells[0].usage, None, "its rep cannot be reached");

        // The only cell: its instances would have nowhere to go.
        let drain = Args {
            action: Some(Action::Drain(DrainArgs {
                cell_id: "cell-1".into(),
            })),
            json: false,
        };
        let err = run(&drain, &receptor.context(&[]), &mut Vec::new())
            .await
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("only cell"), "{message}");
    }

    #[tokio::test]
    async fn draining_an_unknown_cell_says_so() {
        let receptor = TestReceptor::start().await;
        let drain = Args {
            action: Some(Action::Drain(DrainArgs {
                cell_id: "cell-nope".into(),
            })),
            json: false,
        };
        let err = run(&drain, &receptor.context(&[]), &mut Vec::new())
            .await
            .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("cannot drain cell cell-nope"), "{message}");
        assert!(message.contains("no live cell"), "{message}");
    }

    #[test]
    fn usage_against_allocation() {
        let mut cell = CellResponse {
            presence: CellPresence {
                cell_id: "cell-1".into(),
                zone: String::new(),
                rep_address: "http://127.0.0.1:1".into(),
                capacity: CellCapacity::default(),
                rootfs_providers: lattice_models::cell::docker_rootfs_providers(),
            },
            allocated: CellCapacity {
                memory_mb: 256,
                disk_mb: 1024,
                containers: 2,
            },
            instances: 2,
            tasks: 0,
            usage: None,
            evacuating: None,
        };
        assert_eq!(state(&cell), "-", "its rep did not say");
        assert_eq!(memory_used_of_allocated(&cell), "-/256");
        assert_eq!(cpu(&cell), "-");
        cell.usage = Some(lattice_models::CellUsage {
            containers: 2,
            cpu_percentage: 12.34,
            memory_bytes: 65 * 1024 * 1024,
            disk_bytes: 3 * 1024 * 1024,
        });
        assert_eq!(memory_used_of_allocated(&cell), "65/256");
        assert_eq!(disk_used_of_allocated(&cell), "3/1024");
        assert_eq!(cpu(&cell), "12.3%");
        cell.evacuating = Some(true);
        assert_eq!(state(&cell), "draining");
        cell.evacuating = Some(false);
        assert_eq!(state(&cell), "active");
    }
}
