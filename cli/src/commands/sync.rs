//! `ltc sync`: replace this `ltc` with the one the cluster serves, so that
//! client and cluster come from the same build (as Lattice's `ltc sync`).

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context as _};
use futures::StreamExt;
use lattice_models::api::sync_arch;

use crate::transfer::{human_size, ByteBar};
use crate::Context;

pub const EXAMPLES: &str = "\
Examples:
  ltc sync";

/// Upper bound on the binary accepted: a runaway answer cannot fill the disk.
const MAX_LTC_BYTES: u64 = 512 * 1024 * 1024;

#[derive(Debug, clap::Args)]
pub struct Args {}

/// Replaces the running `ltc` with the cluster's copy.
///
/// # Errors
/// When this machine's kind has no sync name, the cluster has no `ltc` for
/// it, the download fails, or what came is not a program for this machine.
pub async fn run(_args: &Args, ctx: &Context, out: &mut dyn Write) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the running ltc")?;
    // A symlink (e.g. /usr/local/bin/ltc -> ...) is followed: the file it
    // points at is what runs and what is replaced.
    let exe =
        std::fs::canonicalize(&exe).with_context(|| format!("cannot resolve {}", exe.display()))?;
    sync_to(ctx, &exe, out).await
}

/// Downloads the cluster's `ltc` beside `dest`, checks that it is a program
/// for this machine, gives it `dest`'s mode and renames it over `dest`.
///
/// # Guarantees
/// `dest` is replaced whole or not at all: the new file is written and
/// synced under a temporary name in the same directory first, and removed
/// if anything fails.
pub async fn sync_to(ctx: &Context, dest: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let Some(arch) = sync_arch() else {
        bail!(
            "ltc sync supports linux and osx; this machine is {}",
            std::env::consts::OS
        );
    };
    let dir = dest
        .parent()
        .with_context(|| format!("{} has no directory", dest.display()))?;
    let mode = std::fs::metadata(dest)
        .with_context(|| format!("cannot read {}", dest.display()))?
        .permissions();
    let client = ctx.client()?;
    let download = client
        .sync_ltc(arch)
        .await
        .with_context(|| format!("cannot download ltc for {arch} from {}", client.target()))?;
    if download.length.is_some_and(|n| n > MAX_LTC_BYTES) {
        bail!(
            "the cluster's ltc is {} bytes, more than the {} ltc sync accepts",
            download.length.unwrap_or_default(),
            human_size(MAX_LTC_BYTES)
        );
    }
    let mut file = tempfile::Builder::new()
        .prefix(".ltc-sync-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let bar = ByteBar::new(&ctx.stderr, "downloading ltc", download.length);
    let progress = bar.progress();
    let mut written: u64 = 0;
    let mut chunks = download.chunks;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.context("the download of ltc broke off")?;
        written += chunk.len() as u64;
        if written > MAX_LTC_BYTES {
            bail!(
                "the cluster's ltc is larger than the {} ltc sync accepts",
                human_size(MAX_LTC_BYTES)
            );
        }
        file.write_all(&chunk)
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        progress(written);
    }
    drop(bar);
    if download.length.is_some_and(|n| n != written) {
        bail!("the download of ltc broke off after {written} bytes");
    }
    let header = {
        use std::io::{Read, Seek};
        let f = file.as_file_mut();
        f.rewind()?;
        let mut header = Vec::with_capacity(64);
        Read::by_ref(f).take(64).read_to_end(&mut header)?;
        header
    };
    check_executable_for_this_machine(&header)?;
    file.as_file()
        .set_permissions(mode)
        .with_context(|| format!("cannot set the mode of the new ltc in {}", dir.display()))?;
    file.as_file()
        .sync_all()
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    file.persist(dest)
        .with_context(|| format!("cannot replace {}", dest.display()))?;
    writeln!(
        out,
        "Updated {} ({}) from {}",
        dest.display(),
        human_size(written),
        client.target()
    )?;
    Ok(())
}

/// The executable format and machine in `header`, e.g. `linux x86_64`.
fn describe(header: &[u8]) -> Option<(&'static str, &'static str)> {
    const ELF: &[u8] = b"\x7fELF";
    // Mach-O 64-bit, little-endian magic (0xfeedfacf) as stored on disk.
    const MACHO_64: &[u8] = &[0xcf, 0xfa, 0xed, 0xfe];
    if header.starts_with(ELF) && header.len() >= 20 {
        // e_machine is at offset 18; both byte orders read as LE here, which
        // is what every target ltc is built for uses.
        let machine = u16::from_le_bytes([header[18], header[19]]);
        let arch = match machine {
            62 => "x86_64",
            183 => "aarch64",
            3 => "x86",
            40 => "arm",
            _ => "an unknown machine",
        };
        Some(("linux", arch))
    } else if header.starts_with(MACHO_64) && header.len() >= 8 {
        let cpu = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let arch = match cpu {
            0x0100_0007 => "x86_64",
            0x0100_000c => "aarch64",
            _ => "an unknown machine",
        };
        Some(("macos", arch))
    } else {
        None
    }
}

/// Refuses a download that would not run here: another OS's format or
/// another processor's machine code.
fn check_executable_for_this_machine(header: &[u8]) -> anyhow::Result<()> {
    let here = (std::env::consts::OS, std::env::consts::ARCH);
    match describe(header) {
        Some(found) if found == here => Ok(()),
        Some((os, arch)) => bail!(
            "the cluster's ltc is for {os} {arch}, but this machine is {} {}; ltc was not replaced",
            here.0,
            here.1
        ),
        None => bail!("what the cluster sent is not a program (no ELF or Mach-O header); ltc was not replaced"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{output, TestReceptor};
    use lattice_receptor::ReceptorConfig;
    use std::os::unix::fs::PermissionsExt;

    /// A receptor serving `served` as its ltc, and a `dest` "ltc" to replace.
    async fn setup(served: &[u8]) -> (TestReceptor, tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let served_path = dir.path().join("served-ltc");
        std::fs::write(&served_path, served).unwrap();
        let receptor = TestReceptor::start_with(ReceptorConfig {
            ltc_path: Some(served_path),
            ..Default::default()
        })
        .await;
        let dest = dir.path().join("ltc");
        std::fs::write(&dest, b"old ltc").unwrap();
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o751)).unwrap();
        (receptor, dir, dest)
    }

    fn this_program() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn replaces_the_file_and_keeps_its_mode() {
        let program = this_program();
        let (receptor, dir, dest) = setup(&program).await;
        let mut out = Vec::new();
        sync_to(&receptor.context(&[]), &dest, &mut out)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), program);
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o751);
        assert!(output(out).starts_with(&format!("Updated {}", dest.display())));
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with(".ltc-sync-")),
            "{names:?}"
        );
    }

    #[tokio::test]
    async fn refuses_another_machines_program() {
        let mut program = this_program();
        // Same format, another processor: aarch64 here is x86_64 there.
        let other: u16 = if std::env::consts::ARCH == "x86_64" {
            183
        } else {
            62
        };
        program[18..20].copy_from_slice(&other.to_le_bytes());
        let (receptor, _dir, dest) = setup(&program).await;
        let err = sync_to(&receptor.context(&[]), &dest, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("ltc was not replaced"),
            "{err:#}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"old ltc");

        let (receptor, _dir, dest) = setup(b"#!/bin/sh\necho not a binary\n").await;
        let err = sync_to(&receptor.context(&[]), &dest, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("not a program"), "{err:#}");
        assert_eq!(std::fs::read(&dest).unwrap(), b"old ltc");
    }

    #[tokio::test]
    async fn a_cluster_without_ltc_is_a_clear_error() {
        let receptor = TestReceptor::start().await;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("ltc");
        std::fs::write(&dest, b"old ltc").unwrap();
        let err = sync_to(&receptor.context(&[]), &dest, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("without an ltc to serve"),
            "{err:#}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"old ltc");
    }

    #[test]
    fn formats_are_told_apart() {
        assert_eq!(
            describe(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0"),
            Some(("linux", "x86_64"))
        );
        assert_eq!(
            describe(&[0xcf, 0xfa, 0xed, 0xfe, 0x0c, 0, 0, 0x01]),
            Some(("macos", "aarch64"))
        );
        assert_eq!(describe(b"MZ"), None);
    }
}
