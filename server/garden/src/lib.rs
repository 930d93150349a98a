//! Garden: the cell's lowest layer, a narrow interface to containers.
//!
//! The executor runs action recipes through this trait only; it never sees
//! Docker. A container is a long-lived sandbox (created from a rootfs, with
//! limits, port mappings and properties) in which any number of processes are
//! run, each with streamed output and an exit status, as in Cloud Foundry's
//! Garden. The `docker` backend (cargo feature `docker`) implements it with bollard; bollard's types
//! never leave that module.
//!
//! # Layout
//! - [`Garden`], [`Process`], [`InteractiveProcess`]: the traits.
//! - [`ContainerSpec`], [`ProcessSpec`], [`ContainerInfo`],
//!   [`ContainerEvent`], [`ContainerUsage`]: plain data.
//! - `docker` (cargo feature `docker`): the Docker backend.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use lattice_models::lifecycle::ImageConfig;

#[cfg(feature = "docker")]
pub mod docker;

/// The label/property every container we create carries, naming its owner
/// (a cell id), so a rep can find and reap its own containers and tests can
/// clean up by label.
pub const OWNER_PROPERTY: &str = "io.lattice.owner";

/// An image reference parsed from a Diego rootfs URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// `registry:port/repo` or `repo`, as Docker names it.
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    /// Parses `docker:///image#tag`, `docker:///org/image`, and
    /// `docker://host:port/repo#tag`. The tag defaults to `latest`.
    pub fn from_rootfs(rootfs: &str) -> Result<ImageRef, GardenError> {
        let rest = rootfs.strip_prefix("docker://").ok_or_else(|| {
            GardenError::InvalidSpec(format!("rootfs {rootfs:?} is not a docker:// URL"))
        })?;
        let (path, tag) = match rest.split_once('#') {
            Some((path, tag)) if !tag.is_empty() => (path, tag.to_string()),
            Some((path, _)) => (path, "latest".to_string()),
            None => (rest, "latest".to_string()),
        };
        let repository = if let Some(local) = path.strip_prefix('/') {
            local.to_string()
        } else {
            // docker://host:port/repo
            path.to_string()
        };
        if repository.is_empty() {
            return Err(GardenError::InvalidSpec(format!(
                "rootfs {rootfs:?} names no image"
            )));
        }
        Ok(ImageRef { repository, tag })
    }

    /// `repository:tag`, as `docker run` takes it.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Hard memory limit; 0 means none. Swap is not allowed beyond it.
    pub memory_mb: u64,
    /// Relative CPU share, 1-100 (0: the default share).
    pub cpu_weight: u64,
    /// Disk limit; 0 means none. Enforced where the storage driver can.
    pub disk_mb: u64,
    /// Most processes (and threads) alive in the container at once; 0 means
    /// [`DEFAULT_PIDS_LIMIT`]. There is no "unlimited": a fork bomb in one
    /// container must not exhaust the host's PIDs.
    pub pids: u64,
}

/// The PID limit of a container whose recipe asks for none.
pub const DEFAULT_PIDS_LIMIT: u64 = 1024;

/// The largest PID limit a container may ask for: the kernel's default
/// `pid_max` on 64-bit hosts is 4,194,304; one container asking for more is
/// asking for the whole machine.
pub const MAX_PIDS_LIMIT: u64 = 1 << 22;

impl Limits {
    /// The PID limit the backend applies: `pids`, or the default for 0.
    pub fn effective_pids(&self) -> u64 {
        if self.pids == 0 {
            DEFAULT_PIDS_LIMIT
        } else {
            self.pids.min(MAX_PIDS_LIMIT)
        }
    }
}

/// A directory of the host visible inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub host_path: String,
    pub container_path: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// Unique name of the container; the executor chooses it.
    pub handle: String,
    /// Diego rootfs URL, e.g. `docker:///busybox#latest`.
    pub rootfs: String,
    /// Environment every process in the container inherits.
    pub env: Vec<(String, String)>,
    pub limits: Limits,
    /// Container ports to publish; each gets a free host port.
    pub ports: Vec<u16>,
    /// Labels on the container; must include [`OWNER_PROPERTY`].
    pub properties: BTreeMap<String, String>,
    pub privileged: bool,
    pub bind_mounts: Vec<BindMount>,
}

/// A published port: the wire type of actual LRPs, so that a container's
/// ports reach the BBS without a conversion.
pub use lattice_models::PortMapping;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub handle: String,
    /// Address at which published ports are reachable from the host.
    pub host_ip: String,
    /// Address of the container on its network (for same-host traffic).
    pub container_ip: String,
    pub ports: Vec<PortMapping>,
    pub properties: BTreeMap<String, String>,
    /// Whether the container's init is still running.
    pub running: bool,
    /// Set when the container was killed for exceeding its memory limit.
    pub oom_killed: bool,
    /// The engine's id of the image the container was made from (a tag
    /// rebuilt later names another); empty when the engine does not say.
    pub image: String,
    /// Ids of the processes started with [`Garden::run`] that still run.
    /// They outlive whoever started them: after a cell restarts, these are
    /// what its previous run left running (how a rep tells a live instance
    /// it can adopt from a container whose process is gone).
    pub processes: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ProcessSpec {
    pub path: String,
    pub args: Vec<String>,
    /// Working directory; the image's default when `None`.
    pub dir: Option<String>,
    /// Added to the container's environment.
    pub env: Vec<(String, String)>,
    /// User to run as; the image's default when `None`.
    pub user: Option<String>,
    /// RLIMIT_NOFILE for the process, when set.
    pub nofile: Option<u64>,
}

/// What a container uses at one moment, as the engine counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerUsage {
    /// CPU time used by the container since it started (cumulative): a rate
    /// needs two samples.
    pub cpu_nanos: u64,
    /// Memory in use, without the page cache the kernel can reclaim.
    pub memory_bytes: u64,
    /// The memory limit the engine enforces (the machine's memory when the
    /// container has none).
    pub memory_limit_bytes: u64,
    /// Bytes in the container's own writable layer.
    pub disk_bytes: u64,
}

/// Something the engine reports about one container, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    pub handle: String,
    /// The container's properties (labels) as the event carried them.
    pub properties: BTreeMap<String, String>,
    pub kind: ContainerEventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerEventKind {
    /// The kernel killed a process of the container for exceeding its
    /// memory limit: its init or any child process of it (which leaves the
    /// container running, so that [`ContainerInfo::oom_killed`] never shows
    /// it).
    OutOfMemory,
    /// The container's init exited: every process in it is gone (killed
    /// from outside, or the container was stopped), with the init's exit
    /// status when the engine gave one.
    Exited { status: Option<i64> },
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A chunk of process output, as written (not split into lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: OutputStream,
    pub bytes: Bytes,
}

/// Signals a process can be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Kill,
}

#[derive(Debug, thiserror::Error)]
pub enum GardenError {
    /// The spec is unusable (bad rootfs, bad handle); not worth retrying.
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),
    /// The image is not present and could not be pulled.
    #[error("image {image} is not available: {reason}")]
    ImageUnavailable { image: String, reason: String },
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// A container with that handle exists already.
    #[error("container {0} already exists")]
    ContainerExists(String),
    #[error("path {path} not found in container {handle}")]
    PathNotFound { handle: String, path: String },
    /// The backend (Docker) failed or could not be reached.
    #[error("container backend failed: {0}")]
    Backend(String),
}

pub type GardenResult<T> = Result<T, GardenError>;

/// A running process in a container.
#[async_trait]
pub trait Process: Send + Sync {
    /// Output chunks until the process closes its streams. Can be taken once;
    /// later calls return an empty stream.
    fn output(&mut self) -> BoxStream<'static, OutputChunk>;
    /// Waits for the process to exit; its exit status (128+N when killed by
    /// signal N, as a shell reports it).
    async fn wait(&mut self) -> GardenResult<i64>;
    /// Sends a signal to the process (not the container).
    async fn signal(&self, signal: Signal) -> GardenResult<()>;
}

/// The terminal size of an interactive process (see
/// [`Garden::exec_interactive`]).
pub use lattice_models::ssh::TtySize;

/// A process started with [`Garden::exec_interactive`]: what a user typing
/// into it (`ltc ssh`) needs beside what [`Process`] gives.
#[async_trait]
pub trait InteractiveProcess: Process {
    /// Tells the process's terminal its new size (a no-op without one).
    async fn resize(&self, size: TtySize) -> GardenResult<()>;
}

/// An interactive process and its standard input.
pub struct Interactive {
    /// Closing (shutting down) it is the process's end of input.
    pub stdin: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    pub process: Box<dyn InteractiveProcess>,
}

/// A container backend.
///
/// # Guarantees
/// - `destroy` of a missing container succeeds (it is idempotent), and kills
///   every process of the container.
/// - Every container `create` makes carries its `properties` as labels, so
///   `list` with [`OWNER_PROPERTY`] finds it even after a restart of the cell.
#[async_trait]
pub trait Garden: Send + Sync + 'static {
    /// Creates and starts a container; pulls the image only when it is not
    /// present locally.
    async fn create(&self, spec: ContainerSpec) -> GardenResult<ContainerInfo>;
    async fn destroy(&self, handle: &str) -> GardenResult<()>;
    async fn info(&self, handle: &str) -> GardenResult<ContainerInfo>;
    /// Containers whose properties include every given key/value pair.
    async fn list(&self, properties: &BTreeMap<String, String>)
        -> GardenResult<Vec<ContainerInfo>>;
    /// Unpacks a tar archive into `destination` (a directory, created if
    /// missing) in the container.
    async fn stream_in(&self, handle: &str, destination: &str, tar: Bytes) -> GardenResult<()>;
    /// Every later out-of-memory kill and exit of a container whose
    /// properties include all of `properties`, as the engine reports them:
    /// a cell learns that a container died without polling it. The stream
    /// ends when the backend's event stream does; callers subscribe again.
    async fn container_events(
        &self,
        properties: &BTreeMap<String, String>,
    ) -> GardenResult<BoxStream<'static, ContainerEvent>>;
    /// As [`Garden::stream_in`], reading the tar from `tar` (at its current
    /// position) as it goes, so that a large archive never sits in memory.
    async fn stream_in_file(
        &self,
        handle: &str,
        destination: &str,
        tar: std::fs::File,
    ) -> GardenResult<()>;
    /// A tar archive of `path` (file or directory) of the container.
    async fn stream_out(
        &self,
        handle: &str,
        path: &str,
    ) -> GardenResult<BoxStream<'static, GardenResult<Bytes>>>;
    /// Starts a process in the container.
    async fn run(&self, handle: &str, spec: ProcessSpec) -> GardenResult<Box<dyn Process>>;
    /// Starts a process in the container with its standard input attached
    /// and, with `tty`, a pseudo-terminal of that size (its output then
    /// all comes as [`OutputStream::Stdout`]). For `ltc ssh`: nothing needs
    /// to be installed in the image.
    async fn exec_interactive(
        &self,
        handle: &str,
        spec: ProcessSpec,
        tty: Option<TtySize>,
    ) -> GardenResult<Interactive>;

    /// The config of the image of `rootfs` (a Diego rootfs URL), pulling
    /// the image only when it is not present: what the Docker lifecycle's
    /// builder would read, without making a container.
    async fn image_config(&self, rootfs: &str) -> GardenResult<ImageConfig>;
    /// The engine's id of the image `rootfs` names now, without pulling;
    /// `None` when the engine does not have it. A container whose
    /// [`ContainerInfo::image`] differs was made from an older build of it.
    async fn image_id(&self, rootfs: &str) -> GardenResult<Option<String>>;
    /// Total memory (MB) and disk (MB) the backend's machine offers; the rep's
    /// default capacity.
    async fn machine_capacity(&self) -> GardenResult<(u64, u64)>;
    /// What the container uses now (one sample; see [`ContainerUsage`]).
    async fn usage(&self, handle: &str) -> GardenResult<ContainerUsage>;
}

/// How long `destroy` lets processes end after SIGTERM before SIGKILL.
pub const DESTROY_GRACE: Duration = Duration::from_secs(2);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rootfs() {
        let r = ImageRef::from_rootfs("docker:///busybox").unwrap();
        assert_eq!(r.reference(), "busybox:latest");
        let r = ImageRef::from_rootfs("docker:///cloudfoundry/lattice-app#v1").unwrap();
        assert_eq!(r.reference(), "cloudfoundry/lattice-app:v1");
        let r = ImageRef::from_rootfs("docker://registry.local:5000/team/app#2").unwrap();
        assert_eq!(r.reference(), "registry.local:5000/team/app:2");
        assert!(ImageRef::from_rootfs("docker:///").is_err());
        assert!(ImageRef::from_rootfs("preloaded:///x").is_err());
    }
}
