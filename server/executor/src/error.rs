//! The executor's errors.
//!
//! [`ActionError`]'s `Display` is the failure reason a user reads (a task's
//! `failure_reason`, a crash reason), so its messages are short and say what
//! happened in the container, not how we found out.

use std::error::Error as StdError;

use lattice_garden::GardenError;

/// Why an action did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The caller's cancellation token fired; the action's processes were
    /// stopped. Not a failure of the work itself.
    #[error("cancelled")]
    Cancelled,
    /// A `run` process exited with a non-zero status. Capitalised because it is
    /// Diego's failure reason, word for word, which users and tools match on.
    #[error("Exited with status {status}")]
    Exited { status: i64 },
    /// A `run` process was killed (status 137) because the container ran out
    /// of memory.
    #[error("Exited with status {status} (out of memory)")]
    OutOfMemory { status: i64 },
    /// A `timeout` action's inner action did not end in time; it was cancelled.
    #[error("timed out after {timeout_ms} ms")]
    TimedOut { timeout_ms: u64 },
    /// A `download` failed.
    #[error("failed to download {url}: {source}")]
    Download {
        url: String,
        #[source]
        source: DownloadError,
    },
    /// An `upload` failed.
    #[error("failed to upload {from} to {to}: {source}")]
    Upload {
        from: String,
        to: String,
        #[source]
        source: UploadError,
    },
    /// The container backend failed while starting or watching a process, or
    /// streaming files in.
    #[error(transparent)]
    Container(#[from] GardenError),
    /// Several actions of a `parallel` or `codependent` failed.
    #[error("{}", join_reasons(.0))]
    Multiple(Vec<ActionError>),
}

impl ActionError {
    pub fn is_cancelled(&self) -> bool {
        matches!(self, ActionError::Cancelled)
    }

    /// `Ok` for no errors, the error itself for one, [`ActionError::Multiple`]
    /// for more.
    pub(crate) fn combine(mut errors: Vec<ActionError>) -> Result<(), ActionError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(ActionError::Multiple(errors)),
        }
    }
}

fn join_reasons(errors: &[ActionError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("request failed: {}", chain(.0))]
    Request(#[source] reqwest::Error),
    /// The server answered with a status other than 2xx (or 304 to a
    /// revalidation).
    #[error("server answered {status}")]
    Status { status: u16 },
    /// The body looked like a gzip archive but could not be unpacked.
    #[error("unpacking the archive: {0}")]
    Archive(#[source] std::io::Error),
    /// A single file (not an archive) needs a file name to be written to.
    #[error("cannot write a file to {to:?}: it names no file")]
    Destination { to: String },
    /// The body, or what it expands to, is larger than the container may
    /// take: its `disk_mb`, or the cell's maximum download size.
    #[error("the download is, or expands to, more than {limit} bytes (the container's disk_mb, or the cell's maximum download size); stopped there")]
    TooLarge { limit: u64 },
    /// Writing the body to the cell's scratch space failed.
    #[error("cannot keep the download on disk: {0}")]
    Disk(#[source] std::io::Error),
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("request failed: {}", chain(.0))]
    Request(#[source] reqwest::Error),
    #[error("server answered {status}")]
    Status { status: u16 },
}

/// Why a file could not be read out of a container.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Container(#[from] GardenError),
    /// The path is a directory, a link or some other non-regular file.
    #[error("{path} is not a regular file")]
    NotAFile { path: String },
    /// The archive the backend sent could not be read.
    #[error("reading {path} from the container's archive: {source}")]
    Archive {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The error and its causes, `: `-separated; reqwest's own message omits the
/// cause (e.g. "connection refused") that a user needs.
fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_like_diego() {
        assert_eq!(
            ActionError::Exited { status: 3 }.to_string(),
            "Exited with status 3"
        );
        assert_eq!(
            ActionError::OutOfMemory { status: 137 }.to_string(),
            "Exited with status 137 (out of memory)"
        );
        let both = ActionError::Multiple(vec![
            ActionError::Exited { status: 1 },
            ActionError::TimedOut { timeout_ms: 50 },
        ]);
        assert_eq!(
            both.to_string(),
            "Exited with status 1; timed out after 50 ms"
        );
    }

    #[test]
    fn combine() {
        assert!(ActionError::combine(vec![]).is_ok());
        let one = ActionError::combine(vec![ActionError::Exited { status: 2 }]).unwrap_err();
        assert!(matches!(one, ActionError::Exited { status: 2 }));
        let two = ActionError::combine(vec![ActionError::Cancelled, ActionError::Cancelled]);
        assert!(matches!(two, Err(ActionError::Multiple(e)) if e.len() == 2));
    }
}
