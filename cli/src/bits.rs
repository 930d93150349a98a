//! Directories and zips turned into the gzip'd tars a cell unpacks: the
//! app's bits and local buildpacks for `ltc build-droplet`.
//!
//! # Guarantees
//! - A directory is packed as `cf push` would upload it: `.cfignore` and
//!   `.gitignore` rules (anywhere in the tree, as git reads them, whether or
//!   not the directory is a git repository) leave files out, and `.git/` is
//!   never included. Ignore files above the directory, git's global
//!   excludes and `.git/info/exclude` are not read, so the same directory
//!   packs the same on every machine.
//! - Entries are in name order with fixed owners and times (tar's
//!   deterministic mode: mode 0755 or 0644 by the owner's execute bit), so
//!   the same files give the same bytes and the same blob digest.
//! - Symbolic links are kept as links, never followed.
//! - A zip's entries keep their Unix modes, and `bin/` is executable
//!   (`bin/detect` must run); an entry that would land outside the
//!   directory refuses the whole zip.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use flate2::write::GzEncoder;
use flate2::Compression;
use tempfile::NamedTempFile;

/// The per-directory ignore file of Cloud Foundry, read beside `.gitignore`
/// (and winning over it).
pub const CFIGNORE: &str = ".cfignore";

/// A gzip'd tar written to a temporary file, deleted when dropped.
#[derive(Debug)]
pub struct Packed {
    pub file: NamedTempFile,
    /// Files, directories and links in it.
    pub entries: usize,
}

impl Packed {
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// What [`pack_dir`] puts in the archive: `(name in the archive, path on
/// disk)`, in archive order, without the directory itself.
///
/// # Errors
/// `dir` is not a readable directory, or an ignore file or entry cannot be
/// read.
pub fn included(dir: &Path) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut walk = ignore::WalkBuilder::new(dir);
    walk.hidden(false)
        .parents(false)
        .ignore(false)
        .git_ignore(true)
        .git_global(false)
        .git_exclude(false)
        .require_git(false)
        .follow_links(false)
        .add_custom_ignore_filename(CFIGNORE)
        .filter_entry(|entry| entry.file_name() != ".git")
        .sort_by_file_name(|a, b| a.cmp(b));
    let mut found = Vec::new();
    for entry in walk.build() {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        if entry.depth() == 0 {
            continue;
        }
        // Sockets and FIFOs are not files an app can ship.
        let shipped = entry
            .file_type()
            .is_some_and(|t| t.is_file() || t.is_dir() || t.is_symlink());
        if !shipped {
            continue;
        }
        let name = entry
            .path()
            .strip_prefix(dir)
            // The walk starts at `dir`, so every path it yields is under it.
            .expect("walked paths are under the walked directory")
            .to_path_buf();
        found.push((name, entry.into_path()));
    }
    Ok(found)
}

/// Packs `dir` (see the module's guarantees) into a temporary gzip'd tar.
///
/// # Errors
/// As [`included`]; an unreadable file; a temporary file that cannot be
/// written.
pub fn pack_dir(dir: &Path) -> anyhow::Result<Packed> {
    let entries = included(dir)?;
    let file = temp_tgz()?;
    let mut tar = tar::Builder::new(gzip_writer(&file)?);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.follow_symlinks(false);
    for (name, path) in &entries {
        tar.append_path_with_name(path, name)
            .with_context(|| format!("cannot pack {}", path.display()))?;
    }
    finish(tar, &file)?;
    Ok(Packed {
        file,
        entries: entries.len(),
    })
}

/// Rewrites the zip at `zip_path` as a temporary gzip'd tar with the same
/// entries (see the module's guarantees). Files under `bin/`, a buildpack's
/// scripts, are made executable whatever their mode says; a file without a
/// mode elsewhere gets 0644.
///
/// # Errors
/// Not a zip, a damaged or unsafe entry, or a temporary file that cannot be
/// written.
pub fn zip_to_tgz(zip_path: &Path) -> anyhow::Result<Packed> {
    let shown = zip_path.display();
    let reader =
        BufReader::new(File::open(zip_path).with_context(|| format!("cannot open {shown}"))?);
    let mut zip = zip::ZipArchive::new(reader).with_context(|| format!("{shown} is not a zip"))?;
    let file = temp_tgz()?;
    let mut tar = tar::Builder::new(gzip_writer(&file)?);
    for index in 0..zip.len() {
        let mut entry = zip
            .by_index(index)
            .with_context(|| format!("cannot read entry {index} of {shown}"))?;
        let Some(name) = entry.enclosed_name() else {
            bail!(
                "{shown}: entry {:?} would land outside the buildpack's directory",
                String::from_utf8_lossy(entry.name_raw())
            );
        };
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        let added = if entry.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, &name, std::io::empty())
        } else if entry.is_symlink() {
            let mut target = String::new();
            entry
                .read_to_string(&mut target)
                .with_context(|| format!("cannot read the link {name:?} in {shown}"))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            tar.append_link(&mut header, &name, target)
        } else {
            let mut mode = entry
                .unix_mode()
                .map(|mode| mode & 0o777)
                .filter(|mode| *mode != 0)
                .unwrap_or(0o644);
            if name.starts_with("bin") {
                // The builder runs bin/detect & co. directly; a zip made
                // without Unix modes (on Windows) marks nothing executable.
                mode |= 0o111;
            }
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(mode);
            header.set_size(entry.size());
            tar.append_data(&mut header, &name, &mut entry)
        };
        added.with_context(|| format!("cannot convert {name:?} of {shown}"))?;
    }
    finish(tar, &file)?;
    Ok(Packed {
        file,
        entries: zip.len(),
    })
}

/// Whether `path` names a tar or gzip'd tar by its extension, the archives
/// a cell unpacks as they are.
pub fn is_tarball(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    [".tgz", ".tar.gz", ".tar"]
        .iter()
        .any(|ext| lower.ends_with(ext))
}

/// Whether `path` names a zip by its extension.
pub fn is_zip(path: &str) -> bool {
    path.to_ascii_lowercase().ends_with(".zip")
}

fn temp_tgz() -> anyhow::Result<NamedTempFile> {
    tempfile::Builder::new()
        .prefix("ltc-")
        .suffix(".tgz")
        .tempfile()
        .context("cannot create a temporary file")
}

fn gzip_writer(file: &NamedTempFile) -> anyhow::Result<GzEncoder<BufWriter<File>>> {
    let handle = file
        .reopen()
        .with_context(|| format!("cannot write {}", file.path().display()))?;
    Ok(GzEncoder::new(
        BufWriter::new(handle),
        Compression::default(),
    ))
}

fn finish(
    tar: tar::Builder<GzEncoder<BufWriter<File>>>,
    file: &NamedTempFile,
) -> anyhow::Result<()> {
    let written = || format!("cannot write {}", file.path().display());
    let gzip = tar.into_inner().with_context(written)?;
    let mut buffered = gzip.finish().with_context(written)?;
    buffered.flush().with_context(written)?;
    buffered
        .into_inner()
        .map_err(|err| err.into_error())
        .with_context(written)?
        .sync_all()
        .with_context(written)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use flate2::read::GzDecoder;

    use super::*;

    fn write(root: &Path, name: &str, content: &str) {
        let path = root.join(name);
        std::fs::create_dir_all(path.parent().expect("a file has a parent")).unwrap();
        std::fs::write(path, content).unwrap();
    }

    /// name -> (mode, content or link target) of a gzip'd tar.
    fn entries(path: &Path) -> BTreeMap<String, (u32, String)> {
        let mut archive = tar::Archive::new(GzDecoder::new(File::open(path).unwrap()));
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().display().to_string();
                let mode = entry.header().mode().unwrap();
                let mut content = String::new();
                if let Some(target) = entry.link_name().unwrap() {
                    content = format!("-> {}", target.display());
                } else {
                    entry.read_to_string(&mut content).unwrap();
                }
                (name, (mode, content))
            })
            .collect()
    }

    #[test]
    fn ignore_files_and_git_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "index.html", "hi");
        write(root, ".profile", "export A=1");
        write(root, ".git/HEAD", "ref: refs/heads/main");
        write(root, ".gitignore", "*.log\n/build/\n");
        write(root, ".cfignore", "secrets.txt\n!keep.log\n");
        write(root, "app.log", "noise");
        write(root, "keep.log", "kept: .cfignore wins over .gitignore");
        write(root, "secrets.txt", "no");
        write(root, "build/out.bin", "no");
        write(
            root,
            "src/build/kept.txt",
            "anchored rules apply at the root",
        );
        write(root, "src/.gitignore", "*.tmp\n");
        write(root, "src/a.tmp", "no");
        write(root, "src/main.sh", "echo");
        std::fs::set_permissions(
            root.join("src/main.sh"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::os::unix::fs::symlink("index.html", root.join("link.html")).unwrap();

        let names: Vec<String> = included(root)
            .unwrap()
            .into_iter()
            .map(|(name, _)| name.display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                ".cfignore",
                ".gitignore",
                ".profile",
                "index.html",
                "keep.log",
                "link.html",
                "src",
                "src/.gitignore",
                "src/build",
                "src/build/kept.txt",
                "src/main.sh",
            ]
        );

        let packed = pack_dir(root).unwrap();
        assert_eq!(packed.entries, names.len());
        let found = entries(packed.path());
        assert_eq!(found.keys().cloned().collect::<Vec<_>>(), names);
        assert_eq!(found["index.html"], (0o644, "hi".to_string()));
        assert_eq!(found["src/main.sh"], (0o755, "echo".to_string()));
        assert_eq!(found["link.html"].1, "-> index.html");

        // The same files give the same bytes, whatever their times.
        let again = pack_dir(root).unwrap();
        assert_eq!(
            std::fs::read(packed.path()).unwrap(),
            std::fs::read(again.path()).unwrap()
        );
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let err = pack_dir(Path::new("/nonexistent/app")).unwrap_err();
        assert_eq!(err.to_string(), "/nonexistent/app is not a directory");
    }

    fn zip_of(entries: &[(&str, Option<u32>, &str)]) -> NamedTempFile {
        let file = NamedTempFile::new().unwrap();
        let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
        for (name, mode, content) in entries {
            let mut options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            if let Some(mode) = mode {
                options = options.unix_permissions(*mode);
            }
            if name.ends_with('/') {
                zip.add_directory(*name, options).unwrap();
            } else {
                zip.start_file(*name, options).unwrap();
                zip.write_all(content.as_bytes()).unwrap();
            }
        }
        zip.finish().unwrap();
        file
    }

    #[test]
    fn a_zip_becomes_a_tgz_with_its_modes() {
        let zip = zip_of(&[
            ("bin/", Some(0o755), ""),
            ("bin/detect", Some(0o755), "#!/bin/sh\necho Go\n"),
            ("bin/compile", Some(0o644), "#!/bin/sh\n"),
            ("manifest.yml", Some(0o640), "language: go\n"),
            ("README", None, "read me"),
        ]);
        let packed = zip_to_tgz(zip.path()).unwrap();
        assert_eq!(packed.entries, 5);
        let found = entries(packed.path());
        assert_eq!(found["bin"], (0o755, String::new()));
        assert_eq!(
            found["bin/detect"],
            (0o755, "#!/bin/sh\necho Go\n".to_string())
        );
        assert_eq!(found["bin/compile"].0, 0o755, "bin/ is made executable");
        assert_eq!(found["manifest.yml"], (0o640, "language: go\n".to_string()));
        assert_eq!(found["README"].0, 0o644);
    }

    #[test]
    fn a_zip_escaping_its_directory_or_no_zip_is_refused() {
        let zip = zip_of(&[("../evil", Some(0o644), "x")]);
        let err = zip_to_tgz(zip.path()).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("entry \"../evil\" would land outside the buildpack's directory"),
            "{err}"
        );
        let not_zip = NamedTempFile::new().unwrap();
        std::fs::write(not_zip.path(), "plain text").unwrap();
        let err = zip_to_tgz(not_zip.path()).unwrap_err();
        assert!(err.to_string().ends_with("is not a zip"), "{err}");
    }

    #[test]
    fn archive_kinds_by_extension() {
        for tarball in ["bp.tgz", "bp.TAR.GZ", "bp.tar", "https://x/y/bp-v1.tgz"] {
            assert!(is_tarball(tarball), "{tarball}");
            assert!(!is_zip(tarball), "{tarball}");
        }
        assert!(is_zip("go-buildpack-cflinuxfs4-v1.10.26.Zip"));
        assert!(!is_tarball("bp.gz") && !is_zip("bp"));
    }
}
