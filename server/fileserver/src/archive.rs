//! Safe tar extraction: [`check_archive`] validates a tar (or gzip'd tar)
//! without writing anything; [`unpack_safely`] extracts one into a
//! directory. Both apply the same rules, so an archive that passes the check
//! extracts, and one that fails it writes nothing outside the destination.
//!
//! # The rules
//! - Entry paths are relative and never climb: no root, no `..`.
//! - No device files or FIFOs: app bits have no use for them, and a device
//!   node is a way into the host.
//! - A symbolic link must resolve inside the destination, following the
//!   archive's other symbolic links the way the kernel would. Symbolic links
//!   are checked again once the whole archive is known, because a later link
//!   can change where an earlier one leads (`a -> b/..` then `b -> .`).
//! - No entry lies under one of the archive's symbolic links (`link -> ..`
//!   then `link/file` would write through it), and no symbolic link takes
//!   the path of another entry or of one of its parents.
//! - A hard link must point at a regular file earlier in the same archive:
//!   a hard link to a symbolic link would be a symbolic link that resolves
//!   from a different directory.
//!
//! [`unpack_safely`] also checks the disk: it creates parent directories one
//! by one and refuses to go through a symbolic link that was already in the
//! destination, and it creates the archive's symbolic links last, so no
//! entry is ever written through one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// How many symbolic links one resolution may follow before it is called a
/// loop (Linux's own limit is 40).
const MAX_SYMLINK_HOPS: usize = 40;

/// Why an archive was refused. Every variant about an entry names it, so a
/// client learns which file to fix.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeArchive {
    /// An entry's path starts at the file system root.
    #[error("entry {entry:?} has an absolute path")]
    AbsolutePath { entry: String },
    /// An entry's path climbs with `..`.
    #[error("entry {entry:?} has a `..` component")]
    ParentComponent { entry: String },
    /// An entry that is not a directory has a path that names nothing.
    #[error("entry {entry:?} has an empty path")]
    EmptyPath { entry: String },
    /// A symbolic or hard link without a target.
    #[error("link {entry:?} has no target")]
    MissingLinkTarget { entry: String },
    /// A link whose target resolves outside the destination.
    #[error("{kind} {entry:?} points to {target:?}, outside the destination")]
    LinkEscapes {
        entry: String,
        /// "symbolic link" or "hard link".
        kind: &'static str,
        target: String,
    },
    /// A hard link whose target is not a regular file earlier in the archive.
    #[error(
        "hard link {entry:?} points to {target:?}, which is not a regular file earlier in the archive"
    )]
    HardLinkTarget { entry: String, target: String },
    /// Symbolic links that lead to each other without end.
    #[error("symbolic link {entry:?} loops")]
    SymlinkLoop { entry: String },
    /// An entry under one of the archive's symbolic links: writing it would
    /// follow the link.
    #[error("entry {entry:?} lies under the symbolic link {link:?}")]
    UnderSymlink { entry: String, link: String },
    /// A symbolic link at the path of another entry or of one's parent.
    #[error("symbolic link {entry:?} takes the path of another entry or its parent")]
    SymlinkConflict { entry: String },
    /// A device file, a FIFO, or a kind of entry app bits have no use for.
    #[error("entry {entry:?} is a {kind}, which is not allowed")]
    SpecialFile { entry: String, kind: String },
    /// The destination already held a symbolic link on the entry's way.
    #[error("entry {entry:?} would be written through the symbolic link {path} already in the destination")]
    ExistingSymlink { entry: String, path: PathBuf },
    /// A parent of the entry is a file, not a directory.
    #[error("entry {entry:?} needs {path} to be a directory")]
    NotADirectory { entry: String, path: PathBuf },
    /// Not a tar or gzip'd tar, or cut short.
    #[error("not a valid tar archive: {0}")]
    Malformed(#[source] io::Error),
    /// Writing into the destination failed.
    #[error("could not write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Checks `reader`, a tar or gzip'd tar, against the module's rules without
/// writing anything.
///
/// # Errors
/// The first rule broken, naming its entry; [`UnsafeArchive::Malformed`]
/// when the input is not a tar.
///
/// # Caveats
/// It reads (and decompresses) the whole archive: its cost grows with the
/// unpacked size, which for gzip can be far above the compressed size.
pub fn check_archive(reader: impl Read) -> Result<(), UnsafeArchive> {
    let mut archive = tar::Archive::new(decompressed(reader).map_err(UnsafeArchive::Malformed)?);
    let mut rules = Rules::default();
    for entry in archive.entries().map_err(UnsafeArchive::Malformed)? {
        let entry = entry.map_err(UnsafeArchive::Malformed)?;
        rules.check(&entry)?;
    }
    rules.finish().map(drop)
}

/// Extracts `reader`, a tar or gzip'd tar, into `dest` (created if missing).
///
/// File modes keep their permission bits (no setuid, setgid or sticky bits),
/// minus the process umask; owners and times are not restored.
///
/// # Errors
/// As [`check_archive`], plus [`UnsafeArchive::ExistingSymlink`] and
/// [`UnsafeArchive::NotADirectory`] for what was already on disk, and
/// [`UnsafeArchive::Io`].
///
/// # Guarantees
/// Nothing is created, written or linked outside `dest`: every entry is
/// checked before it is written.
///
/// # Caveats
/// On an error the entries before the bad one stay in `dest`; callers
/// extract into a fresh directory and remove it on failure.
pub fn unpack_safely(reader: impl Read, dest: &Path) -> Result<(), UnsafeArchive> {
    fs::create_dir_all(dest).map_err(io_error(dest))?;
    // Resolved once, so that a destination reached through a symbolic link
    // (such as /tmp on some systems) is still walked without following any.
    let root = fs::canonicalize(dest).map_err(io_error(dest))?;
    let mut archive = tar::Archive::new(decompressed(reader).map_err(UnsafeArchive::Malformed)?);
    let mut rules = Rules::default();
    for entry in archive.entries().map_err(UnsafeArchive::Malformed)? {
        let mut entry = entry.map_err(UnsafeArchive::Malformed)?;
        match rules.check(&entry)? {
            Checked::Skip | Checked::Symlink => {}
            Checked::Directory { path, name } => {
                let at = prepare(&root, &path, &name)?;
                let mode = entry.header().mode().unwrap_or(0o755) & 0o777;
                make_directory(&at, mode | 0o700)?;
            }
            Checked::File { path, name } => {
                let at = prepare(&root, &path, &name)?;
                let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
                remove_non_directory(&at)?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    // Never follows a symbolic link, never reuses a file.
                    .create_new(true)
                    .mode(mode)
                    .open(&at)
                    .map_err(io_error(&at))?;
                io::copy(&mut entry, &mut file).map_err(|source| match source.kind() {
                    // The archive ended inside the entry.
                    io::ErrorKind::UnexpectedEof => UnsafeArchive::Malformed(source),
                    _ => UnsafeArchive::Io {
                        path: at.clone(),
                        source,
                    },
                })?;
            }
            Checked::HardLink { path, target, name } => {
                let at = prepare(&root, &path, &name)?;
                // The rules only allow targets written as regular files by
                // this extraction, through directories it checked.
                let source = root.join(&target);
                remove_non_directory(&at)?;
                fs::hard_link(&source, &at).map_err(io_error(&at))?;
            }
        }
    }
    // Symbolic links last, once every entry is known and written: no entry
    // can be written through one.
    for (path, target) in rules.finish()? {
        let name = path.to_string_lossy().into_owned();
        let at = prepare(&root, &path, &name)?;
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {
                return Err(UnsafeArchive::SymlinkConflict { entry: name })
            }
            _ => remove_non_directory(&at)?,
        }
        std::os::unix::fs::symlink(&target, &at).map_err(io_error(&at))?;
    }
    Ok(())
}

/// What an entry turned out to be, with its normalized path.
enum Checked {
    /// Nothing to write: the root directory itself, or a pax global header.
    Skip,
    Directory {
        path: PathBuf,
        name: String,
    },
    File {
        path: PathBuf,
        name: String,
    },
    HardLink {
        path: PathBuf,
        target: PathBuf,
        name: String,
    },
    /// Recorded in [`Rules`]; created by [`Rules::finish`]'s caller.
    Symlink,
}

/// The module's rules, applied entry by entry with what the archive has
/// shown so far.
#[derive(Default)]
struct Rules {
    /// Regular files (and hard links to them): the only valid hard link
    /// targets.
    files: HashSet<PathBuf>,
    /// Every path of a file or directory entry, and every parent of one.
    occupied: HashSet<PathBuf>,
    /// Symbolic links: path to raw target.
    symlinks: HashMap<PathBuf, PathBuf>,
}

impl Rules {
    fn check<R: Read>(&mut self, entry: &tar::Entry<'_, R>) -> Result<Checked, UnsafeArchive> {
        let raw = entry.path().map_err(UnsafeArchive::Malformed)?;
        let name = raw.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if kind == EntryType::XGlobalHeader {
            return Ok(Checked::Skip);
        }
        let path = normalize(&raw).map_err(|problem| match problem {
            PathProblem::Absolute => UnsafeArchive::AbsolutePath {
                entry: name.clone(),
            },
            PathProblem::Parent => UnsafeArchive::ParentComponent {
                entry: name.clone(),
            },
        })?;
        if path.as_os_str().is_empty() {
            return match kind {
                EntryType::Directory => Ok(Checked::Skip),
                _ => Err(UnsafeArchive::EmptyPath { entry: name }),
            };
        }
        self.refuse_under_symlink(&path, &name)?;
        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.occupy(&path)?;
                self.files.insert(path.clone());
                Ok(Checked::File { path, name })
            }
            EntryType::Directory => {
                self.occupy(&path)?;
                Ok(Checked::Directory { path, name })
            }
            EntryType::Link => {
                let raw_target = link_target(entry, &name)?;
                let target = normalize(&raw_target).map_err(|_| UnsafeArchive::LinkEscapes {
                    entry: name.clone(),
                    kind: "hard link",
                    target: raw_target.to_string_lossy().into_owned(),
                })?;
                if !self.files.contains(&target) {
                    return Err(UnsafeArchive::HardLinkTarget {
                        entry: name,
                        target: raw_target.to_string_lossy().into_owned(),
                    });
                }
                self.occupy(&path)?;
                self.files.insert(path.clone());
                Ok(Checked::HardLink { path, target, name })
            }
            EntryType::Symlink => {
                let target = link_target(entry, &name)?;
                if self.occupied.contains(&path) {
                    return Err(UnsafeArchive::SymlinkConflict { entry: name });
                }
                // Refuse early what already leads outside; `finish` checks
                // again with every link known.
                resolve(&path, &target, &self.symlinks, &name)?;
                // Its parents must stay directories, as for any entry.
                if let Some(parent) = path.parent() {
                    self.occupy(parent)?;
                }
                self.symlinks.insert(path, target);
                Ok(Checked::Symlink)
            }
            EntryType::Char | EntryType::Block => Err(UnsafeArchive::SpecialFile {
                entry: name,
                kind: "device file".to_string(),
            }),
            EntryType::Fifo => Err(UnsafeArchive::SpecialFile {
                entry: name,
                kind: "fifo".to_string(),
            }),
            other => Err(UnsafeArchive::SpecialFile {
                entry: name,
                kind: format!("entry of type {:?}", other.as_byte() as char),
            }),
        }
    }

    /// Checks every symbolic link against the complete archive and returns
    /// them (sorted by path) for creation.
    fn finish(self) -> Result<Vec<(PathBuf, PathBuf)>, UnsafeArchive> {
        let mut links: Vec<_> = self.symlinks.iter().collect();
        links.sort();
        for (path, target) in &links {
            resolve(path, target, &self.symlinks, &path.to_string_lossy())?;
        }
        Ok(links
            .into_iter()
            .map(|(path, target)| (path.clone(), target.clone()))
            .collect())
    }

    fn refuse_under_symlink(&self, path: &Path, name: &str) -> Result<(), UnsafeArchive> {
        for parent in path.ancestors().skip(1) {
            if self.symlinks.contains_key(parent) {
                return Err(UnsafeArchive::UnderSymlink {
                    entry: name.to_string(),
                    link: parent.to_string_lossy().into_owned(),
                });
            }
        }
        Ok(())
    }

    /// Records `path` and its parents as taken by files and directories.
    fn occupy(&mut self, path: &Path) -> Result<(), UnsafeArchive> {
        if path.as_os_str().is_empty() {
            return Ok(());
        }
        if self.symlinks.contains_key(path) {
            // A file or directory where the archive put a symbolic link: one
            // would replace the other on disk, after the link was checked
            // as part of the tree.
            return Err(UnsafeArchive::SymlinkConflict {
                entry: path.to_string_lossy().into_owned(),
            });
        }
        for part in path.ancestors() {
            if part.as_os_str().is_empty() || !self.occupied.insert(part.to_path_buf()) {
                break;
            }
        }
        Ok(())
    }
}

enum PathProblem {
    Absolute,
    Parent,
}

/// `raw` as plain names relative to the destination (`.` dropped).
fn normalize(raw: &Path) -> Result<PathBuf, PathProblem> {
    let mut path = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => path.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(PathProblem::Parent),
            Component::RootDir | Component::Prefix(_) => return Err(PathProblem::Absolute),
        }
    }
    Ok(path)
}

fn link_target<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<PathBuf, UnsafeArchive> {
    match entry.link_name().map_err(UnsafeArchive::Malformed)? {
        Some(target) if !target.as_os_str().is_empty() => Ok(target.into_owned()),
        _ => Err(UnsafeArchive::MissingLinkTarget {
            entry: name.to_string(),
        }),
    }
}

/// Where the symbolic link at `link` with `target` leads, relative to the
/// destination, following `symlinks` as the kernel would follow them on
/// disk.
fn resolve(
    link: &Path,
    target: &Path,
    symlinks: &HashMap<PathBuf, PathBuf>,
    name: &str,
) -> Result<PathBuf, UnsafeArchive> {
    let escapes = || UnsafeArchive::LinkEscapes {
        entry: name.to_string(),
        kind: "symbolic link",
        target: target.to_string_lossy().into_owned(),
    };
    let mut at: Vec<OsString> = link
        .parent()
        .map(|parent| parent.iter().map(OsString::from).collect())
        .unwrap_or_default();
    let mut pending = VecDeque::new();
    push_front_components(&mut pending, target).map_err(|()| escapes())?;
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        match part {
            Part::Up => {
                at.pop().ok_or_else(escapes)?;
            }
            Part::Name(part) => {
                at.push(part);
                let here: PathBuf = at.iter().collect();
                if let Some(next) = symlinks.get(&here) {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(UnsafeArchive::SymlinkLoop {
                            entry: name.to_string(),
                        });
                    }
                    // The link is replaced by its target, resolved from
                    // the link's own directory.
                    at.pop();
                    push_front_components(&mut pending, next).map_err(|()| escapes())?;
                }
            }
        }
    }
    Ok(at.iter().collect())
}

enum Part {
    Up,
    Name(OsString),
}

/// Puts `path`'s components in front of `pending`, in order; an absolute
/// path is refused.
fn push_front_components(pending: &mut VecDeque<Part>, path: &Path) -> Result<(), ()> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(Part::Name(part.to_os_string())),
            Component::ParentDir => parts.push(Part::Up),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(()),
        }
    }
    for part in parts.into_iter().rev() {
        pending.push_front(part);
    }
    Ok(())
}

/// Peeks at the first bytes: gzip is unzipped, anything else read as tar.
fn decompressed<'r>(mut reader: impl Read + 'r) -> io::Result<Box<dyn Read + 'r>> {
    let mut magic = [0u8; 2];
    let mut filled = 0;
    while filled < magic.len() {
        match reader.read(&mut magic[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let whole = io::Cursor::new(magic[..filled].to_vec()).chain(reader);
    if magic[..filled] == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(whole)))
    } else {
        Ok(Box::new(whole))
    }
}

/// The on-disk path of `path` under `root`, with its parents created one by
/// one; refuses to pass through anything that is not a real directory.
fn prepare(root: &Path, path: &Path, name: &str) -> Result<PathBuf, UnsafeArchive> {
    let mut at = root.to_path_buf();
    let mut parts = path.iter().peekable();
    while let Some(part) = parts.next() {
        at.push(part);
        if parts.peek().is_none() {
            break;
        }
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(UnsafeArchive::ExistingSymlink {
                    entry: name.to_string(),
                    path: at,
                })
            }
            Ok(_) => {
                return Err(UnsafeArchive::NotADirectory {
                    entry: name.to_string(),
                    path: at,
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&at)
                    .map_err(io_error(&at))?;
            }
            Err(source) => return Err(UnsafeArchive::Io { path: at, source }),
        }
    }
    Ok(at)
}

fn make_directory(at: &Path, mode: u32) -> Result<(), UnsafeArchive> {
    match fs::symlink_metadata(at) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => remove_non_directory(at)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(UnsafeArchive::Io {
                path: at.to_path_buf(),
                source,
            })
        }
    }
    fs::DirBuilder::new()
        .mode(mode)
        .create(at)
        .map_err(io_error(at))
}

/// Removes a file or symbolic link at `at` (a later entry replaces an
/// earlier one, as with tar); a directory stays and makes the write fail.
fn remove_non_directory(at: &Path) -> Result<(), UnsafeArchive> {
    match fs::symlink_metadata(at) {
        Ok(meta) if !meta.is_dir() => fs::remove_file(at).map_err(io_error(at)),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UnsafeArchive::Io {
            path: at.to_path_buf(),
            source,
        }),
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> UnsafeArchive + '_ {
    move |source| UnsafeArchive::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds archives with raw header fields, so that the paths `tar`'s
    /// builder refuses to write (absolute, `..`) can be made.
    struct TarMaker {
        builder: tar::Builder<Vec<u8>>,
    }

    impl TarMaker {
        fn new() -> TarMaker {
            TarMaker {
                builder: tar::Builder::new(Vec::new()),
            }
        }

        fn header(path: &str, kind: EntryType, size: u64, link: Option<&str>) -> tar::Header {
            let mut header = tar::Header::new_gnu();
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            if let Some(link) = link {
                let linkname = &mut header.as_old_mut().linkname;
                linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
            header.set_entry_type(kind);
            header.set_size(size);
            header.set_mode(if kind == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            header.set_cksum();
            header
        }

        fn file(mut self, path: &str, contents: &[u8]) -> TarMaker {
            let header = Self::header(path, EntryType::Regular, contents.len() as u64, None);
            self.builder.append(&header, contents).unwrap();
            self
        }

        fn dir(mut self, path: &str) -> TarMaker {
            let header = Self::header(path, EntryType::Directory, 0, None);
            self.builder.append(&header, &[][..]).unwrap();
            self
        }

        fn symlink(mut self, path: &str, target: &str) -> TarMaker {
            let header = Self::header(path, EntryType::Symlink, 0, Some(target));
            self.builder.append(&header, &[][..]).unwrap();
            self
        }

        fn hard_link(mut self, path: &str, target: &str) -> TarMaker {
            let header = Self::header(path, EntryType::Link, 0, Some(target));
            self.builder.append(&header, &[][..]).unwrap();
            self
        }

        fn special(mut self, path: &str, kind: EntryType) -> TarMaker {
            let header = Self::header(path, kind, 0, None);
            self.builder.append(&header, &[][..]).unwrap();
            self
        }

        fn build(self) -> Vec<u8> {
            self.builder.into_inner().unwrap()
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// Checks and unpacks `tar` into a fresh `dest` inside a sandbox, and
    /// asserts that nothing appeared in the sandbox outside `dest`.
    fn refuse(tar: &[u8]) -> UnsafeArchive {
        let sandbox = tempfile::tempdir().unwrap();
        let dest = sandbox.path().join("a/b/dest");
        let checked = check_archive(tar).expect_err("check_archive accepted it");
        let unpacked = unpack_safely(tar, &dest).expect_err("unpack_safely accepted it");
        assert_eq!(
            checked.to_string(),
            unpacked.to_string(),
            "both must refuse for the same reason"
        );
        let mut outside = Vec::new();
        list_tree(sandbox.path(), &mut outside);
        outside.retain(|p| !p.starts_with(&dest) && !dest.starts_with(p));
        assert!(outside.is_empty(), "written outside dest: {outside:?}");
        checked
    }

    fn list_tree(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.clone());
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                list_tree(&path, out);
            }
        }
    }

    #[test]
    fn good_archive_extracts() {
        let tar = TarMaker::new()
            .dir("app/")
            .file("app/run.sh", b"#!/bin/sh\necho hi\n")
            .file("./app/lib/deep/data.bin", &[7u8; 3000])
            .symlink("app/current", "lib/deep/data.bin")
            .symlink("app/lib/up", "../run.sh")
            .hard_link("app/again.sh", "app/run.sh")
            .build();
        check_archive(&tar[..]).unwrap();
        for bytes in [tar.clone(), gzip(&tar)] {
            let dest = tempfile::tempdir().unwrap();
            unpack_safely(&bytes[..], dest.path()).unwrap();
            let app = dest.path().join("app");
            assert_eq!(
                fs::read(app.join("run.sh")).unwrap(),
                b"#!/bin/sh\necho hi\n"
            );
            assert_eq!(fs::read(app.join("current")).unwrap(), vec![7u8; 3000]);
            assert_eq!(
                fs::read(app.join("lib/up")).unwrap(),
                b"#!/bin/sh\necho hi\n"
            );
            assert_eq!(
                fs::read_link(app.join("current")).unwrap(),
                Path::new("lib/deep/data.bin")
            );
            assert_eq!(
                fs::read(app.join("again.sh")).unwrap(),
                b"#!/bin/sh\necho hi\n"
            );
        }
    }

    #[test]
    fn parent_component_is_refused() {
        let tar = TarMaker::new().file("../evil", b"x").build();
        assert!(
            matches!(refuse(&tar), UnsafeArchive::ParentComponent { entry } if entry == "../evil")
        );
        let tar = TarMaker::new().file("ok/../../evil", b"x").build();
        assert!(matches!(
            refuse(&tar),
            UnsafeArchive::ParentComponent { .. }
        ));
    }

    #[test]
    fn absolute_path_is_refused() {
        let tar = TarMaker::new().file("/etc/evil", b"x").build();
        assert!(
            matches!(refuse(&tar), UnsafeArchive::AbsolutePath { entry } if entry == "/etc/evil")
        );
    }

    #[test]
    fn escaping_symlink_then_write_through_it_is_refused() {
        let tar = TarMaker::new()
            .symlink("link", "../../outside")
            .file("link/file", b"x")
            .build();
        let err = refuse(&tar);
        assert!(
            matches!(err, UnsafeArchive::LinkEscapes { ref entry, .. } if entry == "link"),
            "{err}"
        );
    }

    #[test]
    fn write_through_an_inside_symlink_is_refused() {
        let tar = TarMaker::new()
            .dir("real/")
            .symlink("link", "real")
            .file("link/file", b"x")
            .build();
        let err = refuse(&tar);
        assert!(
            matches!(err, UnsafeArchive::UnderSymlink { ref link, .. } if link == "link"),
            "{err}"
        );
    }

    #[test]
    fn symlink_made_to_escape_by_a_later_symlink_is_refused() {
        // `a -> b/..` looks like `.` until `b -> .` makes it the parent.
        let tar = TarMaker::new()
            .symlink("a", "b/..")
            .symlink("b", ".")
            .build();
        let err = refuse(&tar);
        assert!(
            matches!(err, UnsafeArchive::LinkEscapes { ref entry, .. } if entry == "a"),
            "{err}"
        );
    }

    #[test]
    fn symlink_over_an_earlier_directory_is_refused() {
        let tar = TarMaker::new()
            .file("dir/file", b"x")
            .symlink("dir", "../..")
            .build();
        assert!(matches!(
            refuse(&tar),
            UnsafeArchive::SymlinkConflict { .. }
        ));
    }

    #[test]
    fn symlink_over_the_parent_of_an_earlier_symlink_is_refused() {
        let tar = TarMaker::new()
            .symlink("a/b", "../x")
            .symlink("a", ".")
            .build();
        assert!(matches!(refuse(&tar), UnsafeArchive::SymlinkConflict { entry } if entry == "a"));
    }

    #[test]
    fn absolute_symlink_and_loops_are_refused() {
        let tar = TarMaker::new().symlink("passwd", "/etc/passwd").build();
        assert!(matches!(refuse(&tar), UnsafeArchive::LinkEscapes { .. }));
        let tar = TarMaker::new()
            .symlink("a", "b/x")
            .symlink("b", "a/y")
            .build();
        assert!(matches!(refuse(&tar), UnsafeArchive::SymlinkLoop { .. }));
    }

    #[test]
    fn hard_link_outside_is_refused() {
        let tar = TarMaker::new().hard_link("passwd", "/etc/passwd").build();
        let err = refuse(&tar);
        assert!(
            matches!(err, UnsafeArchive::LinkEscapes { ref entry, kind: "hard link", ref target } if entry == "passwd" && target == "/etc/passwd"),
            "{err}"
        );
        let tar = TarMaker::new().hard_link("x", "../outside").build();
        assert!(matches!(refuse(&tar), UnsafeArchive::LinkEscapes { .. }));
    }

    #[test]
    fn hard_link_to_a_symlink_or_missing_file_is_refused() {
        let tar = TarMaker::new()
            .file("x", b"x")
            .symlink("d/s", "../x")
            .hard_link("h", "d/s")
            .build();
        assert!(matches!(refuse(&tar), UnsafeArchive::HardLinkTarget { .. }));
        let tar = TarMaker::new().hard_link("h", "nothing").build();
        assert!(matches!(refuse(&tar), UnsafeArchive::HardLinkTarget { .. }));
    }

    #[test]
    fn device_files_and_fifos_are_refused() {
        for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
            let tar = TarMaker::new().special("dev", kind).build();
            assert!(matches!(refuse(&tar), UnsafeArchive::SpecialFile { .. }));
        }
    }

    #[test]
    fn gzip_of_a_bad_archive_is_refused_too() {
        let tar = TarMaker::new().file("../evil", b"x").build();
        assert!(matches!(
            refuse(&gzip(&tar)),
            UnsafeArchive::ParentComponent { .. }
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        let garbage = vec![b'x'; 2048];
        assert!(matches!(
            check_archive(&garbage[..]),
            Err(UnsafeArchive::Malformed(_))
        ));
    }

    #[test]
    fn existing_symlink_in_destination_is_not_followed() {
        let sandbox = tempfile::tempdir().unwrap();
        let dest = sandbox.path().join("dest");
        let outside = sandbox.path().join("outside");
        fs::create_dir_all(&dest).unwrap();
        fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("sub")).unwrap();
        let tar = TarMaker::new().file("sub/file", b"x").build();
        // The archive itself is fine; the destination is not.
        check_archive(&tar[..]).unwrap();
        let err = unpack_safely(&tar[..], &dest).unwrap_err();
        assert!(
            matches!(err, UnsafeArchive::ExistingSymlink { .. }),
            "{err}"
        );
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

        // A symbolic link at the entry's own path is replaced, not followed.
        std::os::unix::fs::symlink(outside.join("victim"), dest.join("top")).unwrap();
        let tar = TarMaker::new().file("top", b"mine").build();
        unpack_safely(&tar[..], &dest).unwrap();
        assert_eq!(fs::read(dest.join("top")).unwrap(), b"mine");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }
}
