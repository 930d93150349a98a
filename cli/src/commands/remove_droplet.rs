//! `ltc remove-droplet DROPLET...`: delete droplets from the file server.
//! Apps already running one keep their instances (each has its copy); new
//! instances of them cannot start until it is built or imported again.

use std::io::Write;

use crate::transfer;
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc remove-droplet site
  ltc remove-droplet site api-droplet";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The droplets to remove. Each is tried even if an earlier one fails.
    #[arg(required = true, value_name = "DROPLET")]
    pub droplets: Vec<String>,
}

/// Deletes each droplet.
///
/// # Errors
/// One line per droplet that could not be removed (e.g. not found), after
/// every droplet was tried.
pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let files = transfer::file_server(ctx);
    let mut failures = Vec::new();
    for droplet in &args.droplets {
        match files.delete_droplet(droplet).await {
            Ok(()) => writeln!(out, "Removed droplet {droplet}")?,
            Err(err) => failures.push(format!("cannot remove droplet {droplet}: {err}")),
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(anyhow::Error::msg(failures.join("\n")))
    }
}
