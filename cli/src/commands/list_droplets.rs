//! `ltc list-droplets`: the droplets the cluster's file server holds.

use std::io::Write;

use anyhow::Context as _;
use lattice_models::droplet::Droplet;

use crate::output::{self, or_dash};
use crate::transfer::{self, human_size};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc list-droplets
  ltc list-droplets --json";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the file server's records as JSON (with each droplet's sha256
    /// and stack) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let droplets = transfer::file_server(ctx)
        .list_droplets()
        .await
        .context("cannot list droplets")?;
    if args.json {
        return output::write_json(out, &droplets);
    }
    if droplets.is_empty() {
        writeln!(out, "No droplets.")?;
        return Ok(());
    }
    output::write_table(out, &table(&droplets))?;
    Ok(())
}

fn table(droplets: &[Droplet]) -> comfy_table::Table {
    let mut table = output::table(&["Droplet", "Size", "Created", "Buildpack", "Start command"]);
    for droplet in droplets {
        table.add_row(vec![
            droplet.name.to_string(),
            human_size(droplet.size),
            output::timestamp(droplet.created_at),
            or_dash(droplet.buildpack.as_deref().unwrap_or_default()),
            or_dash(droplet.start_command.as_deref().unwrap_or_default()),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_table_shows_each_droplet() {
        let droplets: Vec<Droplet> = serde_json::from_value(json!([
            {"name": "site", "sha256": "ab".repeat(32), "size": 2048,
             "created_at": 1_700_000_000_000_000_000_i64, "buildpack": "static-sh",
             "start_command": "sh ./start.sh", "stack": "docker:///lattice-test/stack#v1"},
            {"name": "bare", "sha256": "cd".repeat(32), "size": 10, "created_at": 0}
        ]))
        .expect("valid droplets");
        let shown = table(&droplets).to_string();
        let rows: Vec<&str> = shown.lines().collect();
        assert!(
            rows[1].contains("Droplet") && rows[1].contains("Start command"),
            "{shown}"
        );
        let site = rows
            .iter()
            .find(|r| r.contains("site"))
            .expect("a site row");
        for cell in [
            "2.00 KiB",
            "2023-11-14T22:13:20Z",
            "static-sh",
            "sh ./start.sh",
        ] {
            assert!(site.contains(cell), "{cell} in {site}");
        }
        let bare = rows
            .iter()
            .find(|r| r.contains("bare"))
            .expect("a bare row");
        assert_eq!(
            bare.matches(" - ").count(),
            3,
            "created, buildpack, command: {bare}"
        );
    }
}
