//! `ltc visualize`: one row per cell with a block per instance on it,
//! coloured by state, what its containers use against what its work was
//! allocated, and a line for the instances no cell holds.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use comfy_table::Cell;
use lattice_client::Client;
use lattice_models::{ActualLrp, ActualLrpState, CellResponse};

use crate::output::{self, or_dash};
use crate::Context;

/// A placed instance's block; an unplaced one's.
const BLOCK: char = '■';
const EMPTY_BLOCK: char = '□';
/// Blocks drawn per state and cell before the rest is only counted, so that
/// a cell with thousands of instances still fits on a screen.
const MAX_BLOCKS: usize = 50;

pub const EXAMPLES: &str = "\
Examples:
  ltc visualize
  # Redrawn every second until Ctrl-C
  ltc visualize --rate 1s";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Refresh every RATE (e.g. 1s) until Ctrl-C.
    #[arg(long, value_name = "RATE", value_parser = output::parse_rate)]
    pub rate: Option<Duration>,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let client = ctx.client()?;
    match args.rate {
        None => show(&client, ctx.color, out).await,
        Some(rate) => {
            output::refresh(
                rate,
                ctx.color,
                out,
                output::ctrl_c(),
                async |frame: &mut Vec<u8>| show(&client, ctx.color, frame).await,
            )
            .await
        }
    }
}

async fn show(client: &Client, color: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let cells = client.cells().await.context("cannot list cells")?;
    let actuals = client
        .actual_lrps()
        .await
        .context("cannot list instances")?;
    if cells.is_empty() && actuals.is_empty() {
        writeln!(out, "No cells and no instances.")?;
        return Ok(());
    }
    output::write_table(out, &table(&cells, &actuals, color))?;
    write_unplaced(out, &actuals)?;
    Ok(())
}

/// Instances per cell id and state; those without a cell are left out.
type Placed<'a> = BTreeMap<&'a str, BTreeMap<StateKey, usize>>;

/// States in the order the columns show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum StateKey {
    Running,
    Claimed,
    Crashed,
}

fn placed(actuals: &[ActualLrp]) -> Placed<'_> {
    let mut placed: Placed<'_> = BTreeMap::new();
    for actual in actuals.iter().filter(|a| !a.cell_id.is_empty()) {
        let key = match actual.state {
            ActualLrpState::Running => StateKey::Running,
            ActualLrpState::Claimed => StateKey::Claimed,
            ActualLrpState::Crashed => StateKey::Crashed,
            ActualLrpState::Unclaimed => continue,
        };
        *placed
            .entry(actual.cell_id.as_str())
            .or_default()
            .entry(key)
            .or_default() += 1;
    }
    placed
}

fn table(cells: &[CellResponse], actuals: &[ActualLrp], color: bool) -> comfy_table::Table {
    let mut table = output::table(&[
        "Cell",
        "Zone",
        "Running",
        "Claimed",
        "Crashed",
        "Memory used/allocated (MB)",
        "CPU",
    ]);
    output::allow_color(&mut table, color);
    let mut placed = placed(actuals);
    // Live cells first, in the receptor's order; then cells that are gone
    // but still hold instances in the store (the brain will re-place them).
    let mut rows: Vec<(String, String, Option<&CellResponse>)> = cells
        .iter()
        .map(|c| {
            let presence = &c.presence;
            (presence.cell_id.clone(), or_dash(&presence.zone), Some(c))
        })
        .collect();
    let gone: Vec<String> = placed
        .keys()
        .filter(|id| !cells.iter().any(|c| c.presence.cell_id == **id))
        .map(|id| id.to_string())
        .collect();
    rows.extend(
        gone.into_iter()
            .map(|id| (id, "(cell gone)".to_string(), None)),
    );
    for (cell_id, zone, cell) in rows {
        let counts = placed.remove(cell_id.as_str()).unwrap_or_default();
        let column = |key: StateKey, state: ActualLrpState| {
            let n = counts.get(&key).copied().unwrap_or(0);
            output::state_cell(blocks(BLOCK, n), state, color)
        };
        table.add_row(vec![
            Cell::new(cell_id),
            Cell::new(zone),
            column(StateKey::Running, ActualLrpState::Running),
            column(StateKey::Claimed, ActualLrpState::Claimed),
            column(StateKey::Crashed, ActualLrpState::Crashed),
            Cell::new(cell.map_or("-".to_string(), super::cells::memory_used_of_allocated)),
            Cell::new(cell.map_or("-".to_string(), super::cells::cpu)),
        ]);
    }
    table
}

/// `■■■ 3`; `0` alone for none; at most [`MAX_BLOCKS`] blocks.
fn blocks(block: char, n: usize) -> String {
    if n == 0 {
        return "0".to_string();
    }
    let drawn: String = std::iter::repeat_n(block, n.min(MAX_BLOCKS)).collect();
    let more = if n > MAX_BLOCKS { "…" } else { "" };
    format!("{drawn}{more} {n}")
}

/// The instances no cell holds: UNCLAIMED ones (waiting for, or refused by,
/// the auction), with the distinct placement errors.
fn write_unplaced(out: &mut dyn Write, actuals: &[ActualLrp]) -> std::io::Result<()> {
    let unplaced: Vec<&ActualLrp> = actuals
        .iter()
        .filter(|a| a.state == ActualLrpState::Unclaimed || a.cell_id.is_empty())
        .collect();
    if unplaced.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "Unplaced: {} UNCLAIMED",
        blocks(EMPTY_BLOCK, unplaced.len())
    )?;
    let mut errors: Vec<&str> = unplaced
        .iter()
        .map(|a| a.placement_error.as_str())
        .filter(|e| !e.is_empty())
        .collect();
    errors.sort_unstable();
    errors.dedup();
    for error in errors {
        writeln!(out, "  placement failed: {error}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use lattice_models::{CellCapacity, CellPresence};

    use super::*;
    use crate::testing::{output, seed_actual, TestReceptor};

    fn cell(id: &str, zone: &str) -> CellPresence {
        CellPresence {
            cell_id: id.into(),
            zone: zone.into(),
            rep_address: "http://127.0.0.1:1".into(),
            capacity: CellCapacity {
                memory_mb: 1024,
                disk_mb: 1024,
                containers: 10,
            },
            rootfs_providers: lattice_models::cell::docker_rootfs_providers(),
        }
    }

    #[test]
    fn block_strings() {
        assert_eq!(blocks(BLOCK, 0), "0");
        assert_eq!(blocks(BLOCK, 3), "■■■ 3");
        assert_eq!(blocks(EMPTY_BLOCK, 1), "□ 1");
        let many = blocks(BLOCK, 120);
        assert_eq!(many.chars().filter(|c| *c == BLOCK).count(), MAX_BLOCKS);
        assert!(many.ends_with("… 120"), "{many}");
    }

    #[tokio::test]
    async fn a_row_per_cell_and_a_line_for_the_unplaced() {
        let receptor = TestReceptor::start().await;
        let store = &receptor.store;
        for presence in [cell("cell-1", "z1"), cell("cell-2", "z2")] {
            store
                .upsert_cell(presence, Duration::from_secs(60))
                .await
                .unwrap();
        }
        seed_actual(store, "web", 0, ActualLrpState::Running, "cell-1").await;
        seed_actual(store, "web", 1, ActualLrpState::Running, "cell-1").await;
        seed_actual(store, "api", 0, ActualLrpState::Claimed, "cell-1").await;
        seed_actual(store, "api", 1, ActualLrpState::Crashed, "cell-2").await;
        seed_actual(store, "db", 0, ActualLrpState::Running, "cell-9").await;
        let mut unplaced = seed_actual(store, "db", 1, ActualLrpState::Unclaimed, "").await;
        unplaced.placement_error = "insufficient resources: disk".into();
        store.update_actual_lrp(unplaced).await.unwrap();
        seed_actual(store, "db", 2, ActualLrpState::Unclaimed, "").await;

        let mut out = Vec::new();
        run(&Args { rate: None }, &receptor.context(&[]), &mut out)
            .await
            .unwrap();
        let shown = output(out);
        let line = |needle: &str| {
            shown
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no line with {needle} in\n{shown}"))
                .to_string()
        };
        let row = line("cell-1");
        assert!(
            row.contains("z1") && row.contains("■■ 2") && row.contains("■ 1"),
            "{row}"
        );
        let row = line("cell-2");
        assert!(row.contains("z2") && row.contains("■ 1"), "{row}");
        assert!(line("cell-9").contains("(cell gone)"), "{shown}");
        assert!(line("Unplaced").contains("□□ 2 UNCLAIMED"), "{shown}");
        assert!(
            line("placement failed").contains("insufficient resources: disk"),
            "{shown}"
        );
        assert!(!shown.contains('\x1b'), "no colour when not asked");

        let mut ctx = receptor.context(&[]);
        ctx.color = true;
        let mut out = Vec::new();
        run(&Args { rate: None }, &ctx, &mut out).await.unwrap();
        assert!(output(out).contains('\x1b'), "coloured blocks");
    }

    #[tokio::test]
    async fn an_empty_cluster() {
        let receptor = TestReceptor::start().await;
        let mut out = Vec::new();
        run(&Args { rate: None }, &receptor.context(&[]), &mut out)
            .await
            .unwrap();
        assert_eq!(output(out), "No cells and no instances.\n");
    }
}
