//! Tar plumbing, all synchronous (callers run it on a blocking thread):
//! telling archives from plain files, unpacking gzip, wrapping one file in a
//! tar for `Garden::stream_in`, and taking one file out of the tar that
//! `Garden::stream_out` returns.
//!
//! Downloads are handled as files, never whole in memory: a body that the
//! cell unpacks in its own process could otherwise take the cell down with
//! it (a 2 MB gzip can expand to gigabytes). What a download expands to is
//! capped ([`unpack_download`]'s `max_bytes`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{DownloadError, FileError};

/// What to stream into a container for a download to `to`.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// The directory to unpack `tar` into.
    pub destination: String,
    /// An unnamed temporary file (or the download itself), at its start.
    pub tar: File,
    /// The size of `tar`.
    pub bytes: u64,
}

/// Turns a downloaded body into a tar to stream in: a tar is unpacked into
/// `to` as it is; a gzip'd tar is unzipped first; anything else is a single
/// file written at `to`. Decided by magic bytes, never by the URL's name.
/// Temporary files go to `scratch` (the cell's cache directory), so they
/// count against the cell's data dir and vanish when closed.
///
/// # Errors
/// [`DownloadError::Archive`] when the body is gzip but corrupt,
/// [`DownloadError::Destination`] when a single file must go to a path
/// without a file name (such as `/`), [`DownloadError::TooLarge`] when what
/// would be written into the container exceeds `max_bytes`: the unzipping
/// stops there, so a decompression bomb costs at most `max_bytes` of disk
/// and a buffer of memory.
pub(crate) fn unpack_download(
    mut body: File,
    to: &str,
    max_bytes: u64,
    scratch: &Path,
) -> Result<Unpacked, DownloadError> {
    let io = DownloadError::Archive;
    let head = peek(&mut body, 512).map_err(io)?;
    if is_gzip(&head) {
        let mut unzipped = tempfile::tempfile_in(scratch).map_err(io)?;
        let written = copy_capped(
            &mut flate2::read::GzDecoder::new(std::io::BufReader::new(&mut body)),
            &mut unzipped,
            max_bytes,
        )?;
        let unzipped_head = peek(&mut unzipped, 512).map_err(io)?;
        if is_tar(&unzipped_head) {
            return Ok(Unpacked {
                destination: to.to_string(),
                tar: unzipped,
                bytes: written,
            });
        }
        // A gzip'd single file is kept compressed, as it was served.
        body.seek(SeekFrom::Start(0)).map_err(io)?;
    } else if is_tar(&head) {
        let bytes = body.metadata().map_err(io)?.len();
        check_size(bytes, max_bytes)?;
        return Ok(Unpacked {
            destination: to.to_string(),
            tar: body,
            bytes,
        });
    }
    single_file(body, to, max_bytes, scratch)
}

fn check_size(bytes: u64, max_bytes: u64) -> Result<(), DownloadError> {
    if bytes > max_bytes {
        return Err(DownloadError::TooLarge { limit: max_bytes });
    }
    Ok(())
}

/// Copies at most `max_bytes`; more is [`DownloadError::TooLarge`].
fn copy_capped(
    reader: &mut impl Read,
    writer: &mut File,
    max_bytes: u64,
) -> Result<u64, DownloadError> {
    let copied = std::io::copy(&mut reader.take(max_bytes.saturating_add(1)), writer)
        .map_err(DownloadError::Archive)?;
    check_size(copied, max_bytes)?;
    writer.flush().map_err(DownloadError::Archive)?;
    writer
        .seek(SeekFrom::Start(0))
        .map_err(DownloadError::Archive)?;
    Ok(copied)
}

/// Up to `n` first bytes of `file`, which is left at its start.
fn peek(file: &mut File, n: usize) -> std::io::Result<Vec<u8>> {
    file.seek(SeekFrom::Start(0))?;
    let mut head = Vec::with_capacity(n);
    (&mut *file).take(n as u64).read_to_end(&mut head)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(head)
}

fn single_file(
    mut body: File,
    to: &str,
    max_bytes: u64,
    scratch: &Path,
) -> Result<Unpacked, DownloadError> {
    let io = DownloadError::Archive;
    let path = Path::new(to);
    let (Some(name), Some(parent)) = (path.file_name(), path.parent()) else {
        return Err(DownloadError::Destination { to: to.to_string() });
    };
    let parent = match parent.to_string_lossy() {
        p if p.is_empty() => ".".to_string(),
        p => p.into_owned(),
    };
    let size = body.metadata().map_err(io)?.len();
    check_size(size, max_bytes)?;
    let mut builder = tar::Builder::new(tempfile::tempfile_in(scratch).map_err(io)?);
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, name.to_string_lossy().as_ref(), &mut body)
        .map_err(io)?;
    let mut tar = builder.into_inner().map_err(io)?;
    tar.flush().map_err(io)?;
    let bytes = tar.stream_position().map_err(io)?;
    tar.seek(SeekFrom::Start(0)).map_err(io)?;
    Ok(Unpacked {
        destination: parent,
        tar,
        bytes,
    })
}

/// A tar holding one regular file `name` with `contents` (for the tests and
/// the recording fake).
#[cfg(any(test, feature = "fake"))]
pub(crate) fn tar_of_file(name: &str, contents: &[u8], mode: u32) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(contents.len() as u64);
    header.set_mode(mode);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, contents)?;
    builder.into_inner()
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// POSIX and GNU tars both carry `ustar` at offset 257 of their first header.
fn is_tar(bytes: &[u8]) -> bool {
    bytes.get(257..262) == Some(b"ustar")
}

/// The contents of the first entry of `tar` (at most `limit` bytes of it),
/// which must be a regular file; `path` only names it in errors.
pub(crate) fn first_file(tar: &[u8], path: &str, limit: Option<u64>) -> Result<Vec<u8>, FileError> {
    let archive_error = |source| FileError::Archive {
        path: path.to_string(),
        source,
    };
    let mut archive = tar::Archive::new(tar);
    let mut entries = archive.entries().map_err(archive_error)?;
    let entry = entries
        .next()
        .ok_or_else(|| FileError::NotAFile {
            path: path.to_string(),
        })?
        .map_err(archive_error)?;
    if !entry.header().entry_type().is_file() {
        return Err(FileError::NotAFile {
            path: path.to_string(),
        });
    }
    let mut contents = Vec::new();
    let mut reader = entry.take(limit.unwrap_or(u64::MAX));
    match reader.read_to_end(&mut contents) {
        Ok(_) => Ok(contents),
        // When we stopped reading the stream at the limit, the archive ends
        // inside the entry; what we read is what we wanted.
        Err(e) if limit.is_some() && e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(contents),
        Err(e) => Err(archive_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    const MAX: u64 = 1 << 20;

    fn file_of(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        file
    }

    fn unpack(bytes: &[u8], to: &str) -> Result<Unpacked, DownloadError> {
        unpack_download(file_of(bytes), to, MAX, &std::env::temp_dir())
    }

    fn contents(mut unpacked: Unpacked) -> Vec<u8> {
        let mut out = Vec::new();
        unpacked.tar.read_to_end(&mut out).unwrap();
        assert_eq!(out.len() as u64, unpacked.bytes);
        out
    }

    #[test]
    fn tar_is_streamed_as_is() {
        let tar = tar_of_file("a.txt", b"hello", 0o644).unwrap();
        let unpacked = unpack(&tar, "/app").unwrap();
        assert_eq!(unpacked.destination, "/app");
        assert_eq!(contents(unpacked), tar);
    }

    #[test]
    fn gzip_tar_is_unzipped() {
        let tar = tar_of_file("a.txt", b"hello", 0o644).unwrap();
        let unpacked = unpack(&gzip(&tar), "/app").unwrap();
        assert_eq!(unpacked.destination, "/app");
        assert_eq!(contents(unpacked), tar);
    }

    #[test]
    fn plain_file_is_wrapped() {
        let unpacked = unpack(b"#!/bin/sh\n", "/tmp/run.sh").unwrap();
        assert_eq!(unpacked.destination, "/tmp");
        let tar = contents(unpacked);
        assert_eq!(first_file(&tar, "x", None).unwrap(), b"#!/bin/sh\n");
        let mut archive = tar::Archive::new(&tar[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("run.sh"));

        // A gzip'd file that is not a tar stays as it was served.
        let gz = gzip(b"just text");
        let unpacked = unpack(&gz, "/tmp/notes.gz").unwrap();
        assert_eq!(first_file(&contents(unpacked), "x", None).unwrap(), gz);
    }

    #[test]
    fn plain_file_needs_a_name() {
        let err = unpack(b"data", "/").unwrap_err();
        assert!(matches!(err, DownloadError::Destination { .. }), "{err}");
    }

    #[test]
    fn corrupt_gzip_fails() {
        let err = unpack(&[0x1f, 0x8b, 0, 1, 2], "/app").unwrap_err();
        assert!(matches!(err, DownloadError::Archive(_)), "{err}");
    }

    /// Regression (issue 15): a 2 MB gzip expanding to 2 GB was unzipped in
    /// the cell's memory. Now the unzipping stops at the cap.
    #[test]
    fn regression_a_decompression_bomb_stops_at_the_cap() {
        // 64 MiB of zeros in a tar, gzip'd to well under 1 MiB.
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(64 << 20);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, "zeros", std::io::repeat(0).take(64 << 20))
            .unwrap();
        let bomb = gzip(&builder.into_inner().unwrap());
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let err = unpack(&bomb, "/app").unwrap_err();
        assert!(
            matches!(err, DownloadError::TooLarge { limit: MAX }),
            "{err}"
        );
        assert!(err.to_string().contains("1048576"), "{err}");
        // A plain file or tar over the cap is refused the same way.
        let big = vec![b'x'; (MAX + 1) as usize];
        assert!(matches!(
            unpack(&big, "/app/big").unwrap_err(),
            DownloadError::TooLarge { .. }
        ));
    }

    #[test]
    fn first_file_limits_and_rejects_directories() {
        let tar = tar_of_file("big", &[b'z'; 5000], 0o644).unwrap();
        assert_eq!(first_file(&tar, "big", Some(10)).unwrap(), b"zzzzzzzzzz");
        // Cut the archive short, as read_file does when it stops streaming.
        assert_eq!(
            first_file(&tar[..1024], "big", Some(4000)).unwrap().len(),
            512
        );

        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(0o755);
        builder.append_data(&mut header, "dir/", &[][..]).unwrap();
        let tar = builder.into_inner().unwrap();
        let err = first_file(&tar, "/dir", None).unwrap_err();
        assert!(matches!(err, FileError::NotAFile { .. }), "{err}");
    }
}
