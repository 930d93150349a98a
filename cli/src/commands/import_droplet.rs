//! `ltc import-droplet DROPLET FILE`: upload a droplet's tarball (one
//! `ltc export-droplet` wrote, or a Cloud Foundry droplet) under a name.
//!
//! The droplet's metadata is read from the tarball's `staging_info.yml`:
//! the start command, and as its buildpack the name the buildpack detected
//! as. The stack is not in the tarball: `--stack` gives it.
//!
//! # Guarantees
//! The file server stores the upload only when it arrived whole (its
//! sha256 is sent with it) and is safe to extract; a droplet of the same
//! name is replaced only then.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use flate2::read::GzDecoder;
use lattice_models::droplet::{DropletMetadata, DropletName};
use lattice_models::lifecycle::{StagingInfo, STAGING_INFO_FILE};

use crate::commands::build_droplet::DEFAULT_STACK;
use crate::image::rootfs_for_image;
use crate::transfer::{self, human_size, ByteBar};
use crate::Context;

/// A `staging_info.yml` larger than this is not one.
const MAX_STAGING_INFO: u64 = 1024 * 1024;

pub const EXAMPLES: &str = "\
Examples:
  ltc import-droplet site site.tgz
  ltc import-droplet site-copy /tmp/site.tgz --stack lattice-test/stack:v1";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The droplet's name: letters, digits, '-' and '_'. A droplet of that
    /// name is replaced.
    pub droplet: String,

    /// The droplet's tarball (gzip'd or plain tar) with staging_info.yml at
    /// its root.
    pub file: PathBuf,

    /// The stack the droplet runs in: a Docker image as `ltc create` takes
    /// it (`repo`, `repo:tag`, `host:5000/repo:tag`) or a docker:// URL.
    #[arg(long, default_value = DEFAULT_STACK, value_name = "IMAGE",
          value_parser = rootfs_for_image)]
    pub stack: String,
}

pub async fn run(args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let name = &args.droplet;
    DropletName::parse(name)?;
    let file = args.file.clone();
    let info = tokio::task::spawn_blocking(move || staging_info(&file))
        .await
        .context("reading the droplet stopped")??;
    let metadata = DropletMetadata {
        buildpack: Some(info.detected_buildpack).filter(|b| !b.is_empty()),
        start_command: Some(info.start_command).filter(|c| !c.is_empty()),
        stack: Some(args.stack.clone()),
    };
    let shown = args.file.display();
    let size = std::fs::metadata(&args.file)
        .with_context(|| format!("cannot read {shown}"))?
        .len();
    let bar = ByteBar::new(&ctx.stderr, format!("Uploading {shown}"), Some(size));
    let droplet = transfer::file_server(ctx)
        .upload_droplet(name, &args.file, &metadata, bar.progress())
        .await
        .with_context(|| format!("cannot import {shown} as droplet {name}"))?;
    drop(bar);
    writeln!(
        out,
        "Imported {shown} as droplet {name}: {} (sha256 {})",
        human_size(droplet.size),
        droplet.sha256
    )?;
    Ok(())
}

/// The `staging_info.yml` at the root of the droplet tarball at `path`
/// (gzip'd or not, told by its first bytes).
///
/// # Errors
/// An unreadable file, not a tar, no `staging_info.yml` at the root, or
/// one that is not a staging info (Cloud Foundry writes it as JSON, which
/// is what is read).
pub fn staging_info(path: &Path) -> anyhow::Result<StagingInfo> {
    let shown = path.display();
    let mut file = std::fs::File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let mut magic = [0u8; 2];
    let gzip = file
        .read(&mut magic)
        .with_context(|| format!("cannot read {shown}"))?
        == 2
        && magic == [0x1f, 0x8b];
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut tar = tar::Archive::new(reader);
    let not_tar = || format!("{shown} is not a droplet: not a readable tar");
    for entry in tar.entries().with_context(not_tar)? {
        let entry = entry.with_context(not_tar)?;
        let entry_path = entry.path().with_context(not_tar)?;
        let at_root = entry_path
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect::<PathBuf>();
        if at_root != Path::new(STAGING_INFO_FILE) {
            continue;
        }
        let mut text = String::new();
        entry
            .take(MAX_STAGING_INFO)
            .read_to_string(&mut text)
            .with_context(|| format!("cannot read {STAGING_INFO_FILE} in {shown}"))?;
        return serde_json::from_str(&text)
            .with_context(|| format!("{STAGING_INFO_FILE} in {shown} is not a staging info"));
    }
    bail!("{shown} is not a droplet: it has no {STAGING_INFO_FILE} at its root")
}

#[cfg(test)]
mod tests {
    use flate2::write::GzEncoder;

    use super::*;

    fn tarball(entries: &[(&str, &str)], gzip: bool) -> tempfile::NamedTempFile {
        let mut tar = tar::Builder::new(Vec::new());
        for (name, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(content.len() as u64);
            tar.append_data(&mut header, name, content.as_bytes())
                .unwrap();
        }
        let mut bytes = tar.into_inner().unwrap();
        if gzip {
            let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&bytes).unwrap();
            bytes = encoder.finish().unwrap();
        }
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    const INFO: &str =
        r#"{"detected_buildpack":"Static-sh","start_command":"sh ./start.sh","env":[]}"#;

    #[test]
    fn the_staging_info_is_read_from_either_kind_of_tarball() {
        for (gzip, name) in [(true, "staging_info.yml"), (false, "./staging_info.yml")] {
            let file = tarball(&[("app/index.html", "hi"), (name, INFO)], gzip);
            let info = staging_info(file.path()).unwrap();
            assert_eq!(info.detected_buildpack, "Static-sh");
            assert_eq!(info.start_command, "sh ./start.sh");
        }
    }

    #[test]
    fn what_is_not_a_droplet_says_why() {
        let file = tarball(&[("app/staging_info.yml", INFO)], true);
        let err = staging_info(file.path()).unwrap_err().to_string();
        assert!(
            err.ends_with("is not a droplet: it has no staging_info.yml at its root"),
            "{err}"
        );
        let file = tarball(&[("staging_info.yml", "web: [")], false);
        let err = staging_info(file.path()).unwrap_err().to_string();
        assert!(err.ends_with("is not a staging info"), "{err}");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "not a tar at all, just some text").unwrap();
        let err = staging_info(file.path()).unwrap_err().to_string();
        assert!(err.contains("is not a droplet"), "{err}");
    }
}
