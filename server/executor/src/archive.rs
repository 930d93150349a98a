//! Tar plumbing, all synchronous (callers run it on a blocking thread):
//! telling archives from plain files, unpacking gzip, wrapping one file in a
//! tar for `Garden::stream_in`, and taking one file out of the tar that
//! `Garden::stream_out` returns.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;

use crate::error::{DownloadError, FileError};

/// What to stream into a container for a download to `to`.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// The directory to unpack `tar` into.
    pub destination: String,
    pub tar: Bytes,
}

/// Turns a downloaded body into a tar to stream in: a tar is unpacked into
/// `to` as it is; a gzip'd tar is unzipped first; anything else is a single
/// file written at `to`. Decided by magic bytes, never by the URL's name.
///
/// # Errors
/// [`DownloadError::Archive`] when the body is gzip but corrupt,
/// [`DownloadError::Destination`] when a single file must go to a path
/// without a file name (such as `/`).
pub(crate) fn unpack_download(body: Bytes, to: &str) -> Result<Unpacked, DownloadError> {
    if is_gzip(&body) {
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut unzipped)
            .map_err(DownloadError::Archive)?;
        if is_tar(&unzipped) {
            return Ok(Unpacked {
                destination: to.to_string(),
                tar: Bytes::from(unzipped),
            });
        }
        // A gzip'd single file is kept compressed, as it was served.
    } else if is_tar(&body) {
        return Ok(Unpacked {
            destination: to.to_string(),
            tar: body,
        });
    }
    single_file(body, to)
}

fn single_file(body: Bytes, to: &str) -> Result<Unpacked, DownloadError> {
    let path = Path::new(to);
    let (Some(name), Some(parent)) = (path.file_name(), path.parent()) else {
        return Err(DownloadError::Destination { to: to.to_string() });
    };
    let parent = match parent.to_string_lossy() {
        p if p.is_empty() => ".".to_string(),
        p => p.into_owned(),
    };
    let tar = tar_of_file(&name.to_string_lossy(), &body, 0o644).map_err(DownloadError::Archive)?;
    Ok(Unpacked {
        destination: parent,
        tar: Bytes::from(tar),
    })
}

/// A tar holding one regular file `name` with `contents`.
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

    #[test]
    fn tar_is_streamed_as_is() {
        let tar = tar_of_file("a.txt", b"hello", 0o644).unwrap();
        let unpacked = unpack_download(Bytes::from(tar.clone()), "/app").unwrap();
        assert_eq!(unpacked.destination, "/app");
        assert_eq!(unpacked.tar, tar);
    }

    #[test]
    fn gzip_tar_is_unzipped() {
        let tar = tar_of_file("a.txt", b"hello", 0o644).unwrap();
        let unpacked = unpack_download(Bytes::from(gzip(&tar)), "/app").unwrap();
        assert_eq!(unpacked.destination, "/app");
        assert_eq!(unpacked.tar, tar);
    }

    #[test]
    fn plain_file_is_wrapped() {
        let unpacked = unpack_download(Bytes::from_static(b"#!/bin/sh\n"), "/tmp/run.sh").unwrap();
        assert_eq!(unpacked.destination, "/tmp");
        assert_eq!(
            first_file(&unpacked.tar, "x", None).unwrap(),
            b"#!/bin/sh\n"
        );
        let mut archive = tar::Archive::new(&unpacked.tar[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("run.sh"));

        // A gzip'd file that is not a tar stays as it was served.
        let gz = gzip(b"just text");
        let unpacked = unpack_download(Bytes::from(gz.clone()), "/tmp/notes.gz").unwrap();
        assert_eq!(first_file(&unpacked.tar, "x", None).unwrap(), gz);
    }

    #[test]
    fn plain_file_needs_a_name() {
        let err = unpack_download(Bytes::from_static(b"data"), "/").unwrap_err();
        assert!(matches!(err, DownloadError::Destination { .. }), "{err}");
    }

    #[test]
    fn corrupt_gzip_fails() {
        let err = unpack_download(Bytes::from_static(&[0x1f, 0x8b, 0, 1, 2]), "/app").unwrap_err();
        assert!(matches!(err, DownloadError::Archive(_)), "{err}");
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
