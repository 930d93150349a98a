//! The executor: the cell's layer between the rep and Garden.
//!
//! It creates containers and runs action trees (`run`, `download`, `upload`,
//! `timeout`, `try`, `serial`, `parallel`, `codependent`, `emit_progress`) in
//! them, turning every process's output into [`LogMessage`] lines for a
//! [`LogSink`]. It knows nothing of tasks or LRPs, keeps no state about them,
//! and never sees Docker: everything goes through `Arc<dyn Garden>`.
//!
//! # Layout
//! - [`Executor`]: the entry points (create, run, read a file, destroy).
//! - `steps`: the semantics of each action kind.
//! - `run`: the `run` action (processes, output, stopping).
//! - `download`: HTTP fetches and the on-disk download cache.
//! - `archive`: tar and gzip plumbing.
//! - [`log`]: the [`LogSink`] trait, its implementations, line splitting.
//! - [`error`]: [`ActionError`] (a failure reason) and the errors inside it.
//! - `fake` (feature `fake`, and in tests): a recording fake Garden.
//!
//! # Cancellation
//! Every run takes a [`CancellationToken`]. When it fires, every process the
//! tree is running gets SIGTERM, then SIGKILL after
//! [`ExecutorConfig::stop_grace`]; `run` returns [`ActionError::Cancelled`]
//! once they are gone. Dropping the `run` future instead leaves processes
//! running: cancel through the token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use lattice_garden::{ContainerInfo, ContainerSpec, Garden, GardenResult, OWNER_PROPERTY};
use lattice_models::action::Action;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod archive;
mod download;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod log;
mod run;
mod steps;
#[cfg(test)]
mod tests;

pub use error::{ActionError, DownloadError, FileError, UploadError};
pub use lattice_garden::{BindMount, Limits};
pub use lattice_models::log::{LogMessage, MessageType};
pub use log::{ChannelSink, CollectingSink, LineSplitter, LogSink, MAX_LINE_BYTES};

use download::DownloadCache;
use log::LogTarget;

/// What the executor needs to create a container: Garden's spec, as is.
pub type ContainerRequest = ContainerSpec;

/// Most a task's `result_file` may hold, as in Diego.
pub const RESULT_FILE_MAX_BYTES: u64 = 10 * 1024;

#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Stamped on every container as [`OWNER_PROPERTY`] (unless the request
    /// names an owner), so the cell can find and reap its own containers.
    pub owner: String,
    /// Where downloads with a `cache_key` are kept; created when needed.
    pub cache_dir: PathBuf,
    /// Used for downloads and uploads; its timeouts are theirs.
    pub http: reqwest::Client,
    /// How long a cancelled process has between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// How long we wait for a process to go after SIGKILL before giving up on
    /// it (and logging that).
    pub kill_wait: Duration,
    /// Longest log line; longer output lines are cut.
    pub max_line_bytes: usize,
    /// The most one download may take on the cell's disk and write into a
    /// container (the body, and what an archive expands to), when the
    /// container's own disk limit is not lower.
    pub max_download_bytes: u64,
}

/// [`ExecutorConfig::max_download_bytes`] by default: 4 GiB, above any
/// droplet or buildpack we know of.
pub const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 4 << 30;

impl ExecutorConfig {
    /// Defaults: 10 s of grace after SIGTERM, as Diego; lines of 64 KiB.
    pub fn new(owner: impl Into<String>, cache_dir: impl Into<PathBuf>) -> ExecutorConfig {
        ExecutorConfig {
            owner: owner.into(),
            cache_dir: cache_dir.into(),
            http: reqwest::Client::new(),
            stop_grace: Duration::from_secs(10),
            kill_wait: Duration::from_secs(10),
            max_line_bytes: MAX_LINE_BYTES,
            max_download_bytes: DEFAULT_MAX_DOWNLOAD_BYTES,
        }
    }
}

/// Who a run's log lines belong to, and what every process of it gets.
#[derive(Debug, Clone, Default)]
pub struct RunContext {
    /// Tags every log line.
    pub log_guid: String,
    /// The source of lines from actions that name no `log_source` (e.g.
    /// `APP` for an LRP's action, `HEALTH` for its monitor).
    pub log_source: String,
    /// The instance index, or `""` for a task.
    pub instance: String,
    /// Added to the environment of every process (before the run's own
    /// variables, which win), e.g. `INSTANCE_INDEX` or `PORT`.
    pub env: Vec<(String, String)>,
    /// The container's disk limit in MB (0: none): a download that is, or
    /// expands to, more fails.
    pub disk_mb: u64,
}

/// Runs action trees in containers. Cheap to clone; clones share the
/// backend, the sink and the download cache.
#[derive(Clone)]
pub struct Executor {
    garden: Arc<dyn Garden>,
    sink: Arc<dyn LogSink>,
    config: Arc<ExecutorConfig>,
    downloads: Arc<DownloadCache>,
}

impl Executor {
    pub fn new(
        garden: Arc<dyn Garden>,
        sink: Arc<dyn LogSink>,
        config: ExecutorConfig,
    ) -> Executor {
        let downloads = DownloadCache::new(config.http.clone(), config.cache_dir.clone());
        Executor {
            garden,
            sink,
            config: Arc::new(config),
            downloads: Arc::new(downloads),
        }
    }

    pub fn garden(&self) -> &Arc<dyn Garden> {
        &self.garden
    }

    /// Creates (and starts) a container, labelled with this executor's owner.
    ///
    /// # Errors
    /// Garden's: the handle exists, the image is missing, the backend failed.
    pub async fn create_container(
        &self,
        mut request: ContainerRequest,
    ) -> GardenResult<ContainerInfo> {
        request
            .properties
            .entry(OWNER_PROPERTY.to_string())
            .or_insert_with(|| self.config.owner.clone());
        let span = tracing::info_span!("create_container", handle = %request.handle);
        async {
            let info = self.garden.create(request).await?;
            tracing::debug!(ports = ?info.ports, "container created");
            Ok(info)
        }
        .instrument(span)
        .await
    }

    /// Destroys a container and every process in it; a missing container is
    /// not an error.
    pub async fn destroy(&self, handle: &str) -> GardenResult<()> {
        self.garden
            .destroy(handle)
            .instrument(tracing::info_span!("destroy_container", handle))
            .await
    }

    pub async fn info(&self, handle: &str) -> GardenResult<ContainerInfo> {
        self.garden.info(handle).await
    }

    /// The containers this executor's owner owns.
    pub async fn list_owned(&self) -> GardenResult<Vec<ContainerInfo>> {
        let owner = BTreeMap::from([(OWNER_PROPERTY.to_string(), self.config.owner.clone())]);
        self.garden.list(&owner).await
    }

    /// Performs `action` in the container `handle`.
    ///
    /// # Errors
    /// The reason the action failed ([`ActionError`]'s `Display` is meant for
    /// a task's `failure_reason`), or [`ActionError::Cancelled`] when `cancel`
    /// fired, after every process of the tree was stopped.
    ///
    /// # Guarantees
    /// When this returns, no process it started is still running (short of
    /// one that survived SIGKILL, which is logged).
    pub async fn run(
        &self,
        handle: &str,
        action: &Action,
        context: &RunContext,
        cancel: CancellationToken,
    ) -> Result<(), ActionError> {
        let span = tracing::info_span!(
            "run",
            handle,
            log_guid = %context.log_guid,
            instance = %context.instance,
        );
        let log = LogTarget {
            sink: self.sink.clone(),
            log_guid: context.log_guid.clone(),
            source: context.log_source.clone(),
            instance: context.instance.clone(),
        };
        let scope = steps::Scope {
            handle,
            disk_mb: context.disk_mb,
            env: &context.env,
        };
        async {
            let result = self.perform(&scope, action, &log, &cancel).await;
            match &result {
                Ok(()) => tracing::debug!("action succeeded"),
                Err(ActionError::Cancelled) => tracing::debug!("action cancelled"),
                // Debug: a failing monitor is normal while an app starts;
                // callers log the failures that matter (crash, task failed).
                Err(reason) => tracing::debug!(%reason, "action failed"),
            }
            result
        }
        .instrument(span)
        .await
    }

    /// The first `max_bytes` of the file at `path` in the container, with
    /// invalid UTF-8 replaced; for a task's `result_file`
    /// ([`RESULT_FILE_MAX_BYTES`]).
    ///
    /// # Errors
    /// The path is missing or not a regular file, or the backend failed.
    pub async fn read_file(
        &self,
        handle: &str,
        path: &str,
        max_bytes: u64,
    ) -> Result<String, FileError> {
        let contents = self
            .file_contents(handle, path, Some(max_bytes))
            .instrument(tracing::debug_span!("read_file", handle, path))
            .await?;
        Ok(String::from_utf8_lossy(&contents).into_owned())
    }

    /// The contents of the regular file at `path`, or its first `limit` bytes.
    /// With a limit, stops streaming once enough of the archive has arrived.
    pub(crate) async fn file_contents(
        &self,
        handle: &str,
        path: &str,
        limit: Option<u64>,
    ) -> Result<Vec<u8>, FileError> {
        // Room for the entry's headers (a long name or PAX record takes a few
        // blocks) on top of the bytes we want.
        const HEADER_ROOM: u64 = 64 * 1024;
        let enough = limit.map(|l| l.saturating_add(HEADER_ROOM));
        let mut stream = self.garden.stream_out(handle, path).await?;
        let mut tar = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            tar.extend_from_slice(&chunk?);
            if enough.is_some_and(|enough| tar.len() as u64 >= enough) {
                break;
            }
        }
        let owned_path = path.to_string();
        tokio::task::spawn_blocking(move || archive::first_file(&tar, &owned_path, limit))
            .await
            .map_err(|e| FileError::Archive {
                path: path.to_string(),
                source: std::io::Error::other(e),
            })?
    }
}
