//! `ltc export-droplet DROPLET [FILE]`: download a droplet's tarball.
//!
//! # Guarantees
//! FILE is written only with the complete droplet whose sha256 is the one
//! the file server holds (the download goes to a temporary file beside it,
//! renamed into place once checked); on any error an existing FILE is left
//! as it was.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::transfer::{self, human_size, ByteBar};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  # Writes site.tgz in the current directory
  ltc export-droplet site
  ltc export-droplet site /tmp/site-v2.tgz";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The droplet to export.
    pub droplet: String,

    /// Where to write it (default: DROPLET.tgz); an existing file is
    /// replaced.
    pub file: Option<PathBuf>,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let name = &args.droplet;
    let dest = args
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}.tgz")));
    let files = transfer::file_server(ctx);
    let failed = || format!("cannot export droplet {name}");
    let droplet = files.droplet(name).await.with_context(failed)?;
    let bar = ByteBar::new(
        &ctx.stderr,
        format!("Downloading droplet {name}"),
        Some(droplet.size),
    );
    let blob = files
        .download_droplet(name, &dest, bar.progress())
        .await
        .with_context(failed)?;
    drop(bar);
    writeln!(
        out,
        "Exported droplet {name} to {}: {} (sha256 {})",
        dest.display(),
        human_size(blob.size),
        blob.sha256
    )?;
    Ok(())
}
