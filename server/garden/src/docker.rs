//! The Docker backend of Garden (bollard).
//!
//! A Garden container is a sandbox, not the image's program: it is created
//! with `/.lattice/bin/lattice-init pause` as its only command (the image's
//! entrypoint and cmd are ignored), and the executor starts the real work
//! with [`Garden::run`]. Every process is a Docker exec of `lattice-init
//! spawn`, which sets the limits Docker's exec API cannot, and records the
//! process's pid so that `lattice-init signal` can reach it later. So the
//! backend relies on nothing in the user's image: no shell, no `sleep`, no
//! `kill`.
//!
//! # How a container is made
//! 1. The image is looked up locally and pulled only when absent.
//! 2. The container is created (labels, env, memory and CPU limits, published
//!    ports, bind mounts) with `/.lattice` in place before it starts, since
//!    `lattice-init` is its PID 1: every lifecycle binary at
//!    `/.lattice/bin/`, and the image's config as JSON at
//!    `/.lattice/image-config.json` ([`lattice_models::lifecycle::ImageConfig`],
//!    for the Docker app lifecycle's `builder` and `launcher`, since the
//!    container's own command is `lattice-init pause`). They are
//!    bind-mounted when the engine runs on this machine, else uploaded
//!    ([`LifecycleDelivery`]).
//! 3. It is started, then inspected for its ports and address.
//!
//! # Docker quirks handled here
//! - An exec's attached stream can end before the engine records its exit:
//!   [`Process::wait`] polls the exec until it is no longer running.
//! - Exec cannot set rlimits or signal its process, hence `lattice-init`.
//! - A put-archive of a directory entry over an existing directory resets its
//!   mode (a `/tmp` would lose its sticky bit), so `stream_in` creates only a
//!   missing destination.
//! - A container that was stopped reports no published ports.
//!
//! # Caveats
//! - `Limits::disk_mb` is not enforced: the storage drivers we meet
//!   (overlay2 on ext4, fuse-overlayfs) cannot limit a container's size.
//! - The bollard client is bound to the tokio runtime it first runs on; use a
//!   `DockerGarden` within one runtime.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, ImageInspect, PortBinding,
};
use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, InspectContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder, StatsOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use lattice_models::lifecycle::{parse_exposed_ports, ImageConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{
    ContainerEvent, ContainerEventKind, ContainerInfo, ContainerSpec, ContainerUsage, Garden,
    GardenError, GardenResult, ImageRef, OutputChunk, OutputStream, PortMapping, Process,
    ProcessSpec, Signal, DESTROY_GRACE, OWNER_PROPERTY,
};

mod cell_lock;
mod interactive;
mod lifecycles;
pub use cell_lock::{
    cell_lock_name, CellLock, CellLockError, CELL_LOCK_IMAGE, CELL_LOCK_LABEL, HOLDER_GONE_GRACE,
};
pub use lifecycles::LifecycleDelivery;
use lifecycles::Lifecycles;

/// Where `lattice-init` lives inside every container.
pub const INIT_PATH: &str = "/.lattice/bin/lattice-init";
/// Where `lattice-init spawn` writes pidfiles (world-writable and sticky, as
/// processes may run as any user).
const RUN_DIR: &str = "/.lattice/run";
/// File name of the init helper in [`DockerGardenConfig::lifecycle_dir`].
pub const INIT_BINARY: &str = "lattice-init";

/// CPU shares of a container of weight 100; Garden's maximum, Docker's default.
const MAX_CPU_SHARES: u64 = 1024;
/// Docker refuses fewer CPU shares than this.
const MIN_CPU_SHARES: u64 = 2;
/// Output chunks buffered between the engine and a slow reader.
const OUTPUT_BUFFER: usize = 256;
/// Longest pause between two polls of an exec that is finishing.
const MAX_EXEC_POLL: Duration = Duration::from_millis(250);
/// Inspections of `list` run at once.
const LIST_CONCURRENCY: usize = 8;

/// How to reach the engine and what to put into containers.
#[derive(Debug, Clone)]
pub struct DockerGardenConfig {
    /// Directory of the static lifecycle binaries: `lattice-init` (required),
    /// `builder`, `launcher`, `healthcheck`. Every regular file in it (or
    /// link to one; subdirectories are skipped) is put into every container
    /// at `/.lattice/bin/`.
    pub lifecycle_dir: PathBuf,
    /// Whether they are bind-mounted or uploaded into each container.
    pub lifecycle_delivery: LifecycleDelivery,
    /// Where image configs are written to be bind-mounted (when mounting).
    pub image_config_dir: PathBuf,
    /// Address published ports are bound to on the host, and advertised in
    /// [`ContainerInfo::host_ip`].
    pub host_ip: String,
    /// Docker network containers join; the engine's default bridge if `None`.
    pub network: Option<String>,
}

impl DockerGardenConfig {
    /// Ports published on 127.0.0.1, default network, lifecycles mounted
    /// when the engine runs on this machine, image configs in the temporary
    /// directory.
    pub fn new(lifecycle_dir: impl Into<PathBuf>) -> DockerGardenConfig {
        DockerGardenConfig {
            lifecycle_dir: lifecycle_dir.into(),
            lifecycle_delivery: LifecycleDelivery::Auto,
            image_config_dir: std::env::temp_dir().join("lattice-image-configs"),
            host_ip: "127.0.0.1".to_string(),
            network: None,
        }
    }
}

/// The first host address of an IPv4 subnet (`172.17.0.0/16` gives
/// `172.17.0.1`), where an engine puts a bridge's default gateway.
fn first_host_of(subnet: &str) -> Option<std::net::IpAddr> {
    let (network, _) = subnet.split_once('/')?;
    let network: std::net::Ipv4Addr = network.parse().ok()?;
    Some(std::net::Ipv4Addr::from(u32::from(network).checked_add(1)?).into())
}

/// Garden on the local Docker engine.
#[derive(Debug, Clone)]
pub struct DockerGarden {
    docker: Docker,
    /// The lifecycle binaries, listed or read once at connect, shared by
    /// clones.
    lifecycles: Lifecycles,
    host_ip: String,
    network: Option<String>,
}

impl DockerGarden {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket),
    /// agreeing on an API version with it, and lists (to mount) or reads (to
    /// upload) the lifecycle binaries.
    ///
    /// # Errors
    /// [`GardenError::Backend`] when the lifecycle directory cannot be read
    /// or lacks `lattice-init`, or the engine cannot be reached.
    pub async fn connect(config: DockerGardenConfig) -> GardenResult<DockerGarden> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|err| backend("connect to docker", err))?
            .negotiate_version()
            .await
            .map_err(|err| backend("negotiate docker api version", err))?;
        let lifecycles = Lifecycles::prepare(
            &docker,
            &config.lifecycle_dir,
            config.lifecycle_delivery,
            &config.image_config_dir,
        )
        .await?;
        Ok(DockerGarden {
            docker,
            lifecycles,
            host_ip: config.host_ip,
            network: config.network,
        })
    }

    /// Whether this machine reaches its containers at their own addresses:
    /// the gateway of the network they join (the default bridge unless
    /// configured) is an address of this machine, so the kernel routes to
    /// that network directly. False on engines in a VM (Docker Desktop) or
    /// when the network cannot be read.
    pub async fn container_network_is_local(&self) -> bool {
        let name = self.network.as_deref().unwrap_or("bridge");
        let network = match self.docker.inspect_network(name, None).await {
            Ok(network) => network,
            Err(err) => {
                tracing::debug!(network = name, error = %err, "cannot inspect the containers' network");
                return false;
            }
        };
        let gateways: Vec<std::net::IpAddr> = network
            .ipam
            .and_then(|ipam| ipam.config)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|config| match config.gateway.filter(|g| !g.is_empty()) {
                Some(gateway) => gateway.parse().ok(),
                // Recent engines leave the default gateway out: it is the
                // subnet's first address.
                None => first_host_of(config.subnet.as_deref()?),
            })
            .collect();
        // Binding succeeds only to an address of one of this machine's
        // interfaces; nothing is sent.
        gateways
            .iter()
            .any(|gateway| std::net::UdpSocket::bind((*gateway, 0)).is_ok())
    }

    /// Makes `tag` (`repo:tag`) a local image holding just `program` at
    /// `/bin/NAME`, started as its command, with `changes` (Dockerfile lines
    /// such as `EXPOSE 8080`); does nothing if the image exists. This is how
    /// the built-in sample app becomes runnable on a machine that cannot
    /// pull.
    ///
    /// # Errors
    /// [`GardenError::Backend`] if the program cannot be read or the engine
    /// refuses the import.
    pub async fn ensure_program_image(
        &self,
        tag: &str,
        program: &Path,
        changes: &[String],
    ) -> GardenResult<()> {
        let bytes = std::fs::read(program)
            .map_err(|err| GardenError::Backend(format!("read {}: {err}", program.display())))?;
        // The image is rebuilt whenever the program changes (an upgrade of
        // lattice), and only then.
        let digest = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let replaced = match self.docker.inspect_image(tag).await {
            Ok(inspect) => {
                let labels = inspect.config.and_then(|c| c.labels).unwrap_or_default();
                if labels.get(PROGRAM_DIGEST_LABEL) == Some(&digest) {
                    return Ok(());
                }
                inspect.id
            }
            Err(err) if status(&err) == Some(404) => None,
            Err(err) => return Err(backend("inspect image", err)),
        };
        let name = program
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| GardenError::Backend(format!("{} names no file", program.display())))?;
        let rootfs = program_rootfs(name, &bytes)
            .map_err(|err| GardenError::Backend(format!("archive {}: {err}", program.display())))?;
        let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
        let mut all_changes = vec![
            format!("CMD [\"/bin/{name}\"]"),
            format!("LABEL {PROGRAM_DIGEST_LABEL}={digest}"),
        ];
        all_changes.extend(changes.iter().cloned());
        let options = CreateImageOptionsBuilder::default()
            .from_src("-")
            .repo(repo)
            .tag(version)
            .changes(all_changes)
            .build();
        self.docker
            .create_image(Some(options), Some(bollard::body_full(rootfs)), None)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|err| backend("import image", err))?;
        tracing::info!(image = tag, "built local image");
        // The build it replaced, now untagged, would stay on the engine
        // after every upgrade; the engine keeps it while a container uses it.
        if let Some(old) = replaced {
            match self
                .docker
                .remove_image(
                    &old,
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await
            {
                Ok(_) => tracing::debug!(image = tag, %old, "removed the build it replaced"),
                Err(err) if matches!(status(&err), Some(404 | 409)) => {}
                Err(err) => {
                    tracing::warn!(image = tag, %old, error = %err, "cannot remove the build it replaced")
                }
            }
        }
        Ok(())
    }

    /// Makes sure the image is present, pulling it if not; its inspection.
    async fn ensure_image(&self, image: &ImageRef) -> GardenResult<ImageInspect> {
        let reference = image.reference();
        match self.docker.inspect_image(&reference).await {
            Ok(inspect) => return Ok(inspect),
            Err(err) if status(&err) == Some(404) => {}
            Err(err) => return Err(backend("inspect image", err)),
        }
        tracing::info!(image = %reference, "pulling image");
        let options = CreateImageOptionsBuilder::default()
            .from_image(&image.repository)
            .tag(&image.tag)
            .build();
        self.docker
            .create_image(Some(options), None, None)
            .try_for_each(|_| async { Ok(()) })
            .await
            .map_err(|err| GardenError::ImageUnavailable {
                image: reference.clone(),
                reason: err.to_string(),
            })?;
        // A pull can end without error yet without the image (a registry
        // answering oddly); creating would then fail obscurely.
        match self.docker.inspect_image(&reference).await {
            Ok(inspect) => Ok(inspect),
            Err(err) => Err(GardenError::ImageUnavailable {
                image: reference,
                reason: format!("not present after pull: {err}"),
            }),
        }
    }

    fn create_body(
        &self,
        spec: &ContainerSpec,
        image: &ImageRef,
        lattice: lifecycles::Delivery,
    ) -> ContainerCreateBody {
        let port_key = |port: &u16| format!("{port}/tcp");
        let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
            .ports
            .iter()
            .map(|port| {
                let binding = PortBinding {
                    host_ip: Some(self.host_ip.clone()),
                    // Empty: the engine picks a free port.
                    host_port: Some(String::new()),
                };
                (port_key(port), Some(vec![binding]))
            })
            .collect();
        let memory = (spec.limits.memory_mb > 0).then(|| mb_to_bytes(spec.limits.memory_mb));
        let cpu_shares = (spec.limits.cpu_weight > 0).then(|| {
            let shares = MAX_CPU_SHARES * spec.limits.cpu_weight.min(100) / 100;
            shares.max(MIN_CPU_SHARES) as i64
        });
        let binds = spec
            .bind_mounts
            .iter()
            .map(|m| {
                let mode = if m.read_only { "ro" } else { "rw" };
                format!("{}:{}:{mode}", m.host_path, m.container_path)
            })
            .collect();
        ContainerCreateBody {
            image: Some(image.reference()),
            entrypoint: Some(vec![INIT_PATH.to_string(), "pause".to_string()]),
            // With an entrypoint given, the engine drops the image's cmd.
            cmd: None,
            env: Some(env_strings(&spec.env)),
            labels: Some(spec.properties.clone().into_iter().collect()),
            exposed_ports: Some(spec.ports.iter().map(port_key).collect()),
            stop_timeout: Some(DESTROY_GRACE.as_secs() as i64),
            host_config: Some(HostConfig {
                memory,
                // Equal to the memory limit: no swap beyond it.
                memory_swap: memory,
                cpu_shares,
                pids_limit: Some(spec.limits.effective_pids() as i64),
                port_bindings: Some(port_bindings),
                binds: Some(binds),
                mounts: Some(lattice.mounts),
                tmpfs: Some(lattice.tmpfs),
                privileged: Some(spec.privileged),
                network_mode: self.network.clone(),
                // Our pause must be PID 1 (it reaps orphans and ends the
                // others on stop), whatever the daemon's --init default.
                init: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates, fills (with `lattice`'s archive, if any, unpacked at `/`)
    /// and starts the container; the caller removes it on error.
    async fn create_started(
        &self,
        spec: &ContainerSpec,
        image: &ImageRef,
        mut lattice: lifecycles::Delivery,
    ) -> GardenResult<()> {
        let handle = &spec.handle;
        let options = CreateContainerOptionsBuilder::default()
            .name(handle)
            .build();
        let archive = lattice.archive.take();
        match self
            .docker
            .create_container(Some(options), self.create_body(spec, image, lattice))
            .await
        {
            Ok(_) => {}
            Err(err) if status(&err) == Some(409) => {
                return Err(GardenError::ContainerExists(handle.clone()))
            }
            Err(err) if status(&err) == Some(400) => {
                return Err(GardenError::InvalidSpec(message(&err)))
            }
            Err(err) if status(&err) == Some(404) => {
                return Err(GardenError::ImageUnavailable {
                    image: image.reference(),
                    reason: message(&err),
                })
            }
            Err(err) => return Err(backend("create container", err)),
        }
        if let Some(archive) = archive {
            let options = UploadToContainerOptionsBuilder::default().path("/").build();
            self.docker
                .upload_to_container(handle, Some(options), bollard::body_full(archive))
                .await
                .map_err(|err| backend("upload lifecycles", err))?;
        }
        self.docker
            .start_container(handle, None)
            .await
            .map_err(|err| backend("start container", err))
    }

    async fn inspect(&self, handle: &str) -> GardenResult<ContainerInspectResponse> {
        self.docker
            .inspect_container(handle, None)
            .await
            .map_err(|err| not_found_or(err, handle, "inspect container"))
    }

    fn container_info(&self, inspect: ContainerInspectResponse) -> ContainerInfo {
        let handle = inspect
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string();
        let state = inspect.state.unwrap_or_default();
        let settings = inspect.network_settings.unwrap_or_default();
        let mut ports: Vec<PortMapping> = settings
            .ports
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(key, bindings)| {
                // Parsed as u16: Docker never reports a port above 65535.
                let container_port = u32::from(key.split('/').next()?.parse::<u16>().ok()?);
                let host_port = bindings?
                    .into_iter()
                    .find_map(|b| b.host_port?.parse::<u16>().ok())
                    .map(u32::from)?;
                Some(PortMapping {
                    container_port,
                    host_port,
                })
            })
            .collect();
        ports.sort_by_key(|p| p.container_port);
        let networks = settings.networks.unwrap_or_default();
        let endpoint = match &self.network {
            Some(name) => networks.get(name),
            None => networks
                .values()
                .find(|e| e.ip_address.as_deref().is_some_and(|ip| !ip.is_empty())),
        };
        let container_ip = endpoint
            .and_then(|e| e.ip_address.clone())
            .unwrap_or_default();
        // The engine lists an exec here from its creation until it exits.
        let mut processes = inspect.exec_ids.unwrap_or_default();
        processes.sort();
        let image = inspect.image.unwrap_or_default();
        let properties = inspect
            .config
            .and_then(|c| c.labels)
            .unwrap_or_default()
            .into_iter()
            .collect();
        ContainerInfo {
            handle,
            host_ip: self.host_ip.clone(),
            container_ip,
            ports,
            properties,
            running: state.running.unwrap_or(false),
            // Docker only sets OOMKilled when the container's init died of
            // it; a process we exec'd that the kernel killed for memory
            // shows in the cgroup's own counter.
            oom_killed: state.oom_killed.unwrap_or(false)
                || state
                    .pid
                    .filter(|pid| *pid > 0)
                    .and_then(cgroup_oom_kills)
                    .is_some_and(|kills| kills > 0),
            image,
            processes,
        }
    }

    /// Creates `destination` as an empty directory (0755, root) if it is
    /// missing; leaves an existing one untouched.
    async fn ensure_directory(&self, handle: &str, destination: &str) -> GardenResult<()> {
        let options = ContainerArchiveInfoOptionsBuilder::default()
            .path(destination)
            .build();
        match self
            .docker
            .get_container_archive_info(handle, Some(options))
            .await
        {
            Ok(_) => return Ok(()),
            Err(err) if status(&err) == Some(404) => {}
            Err(err) => return Err(backend("stat destination", err)),
        }
        // The engine answers 404 for a missing container too.
        self.inspect(handle).await?;
        let archive = directory_archive(destination).map_err(|err| {
            GardenError::Backend(format!("archive directory {destination}: {err}"))
        })?;
        let options = UploadToContainerOptionsBuilder::default().path("/").build();
        self.docker
            .upload_to_container(handle, Some(options), bollard::body_full(archive))
            .await
            .map_err(|err| not_found_or(err, handle, "create destination"))
    }

    /// Maps a 404 of a path operation to the missing container or path.
    async fn path_not_found(&self, handle: &str, path: &str) -> GardenError {
        match self.inspect(handle).await {
            Err(err) => err,
            Ok(_) => GardenError::PathNotFound {
                handle: handle.to_string(),
                path: path.to_string(),
            },
        }
    }

    /// Starts an exec with attached output.
    async fn start_exec(
        &self,
        handle: &str,
        cmd: Vec<String>,
        env: &[(String, String)],
        user: Option<String>,
    ) -> GardenResult<(
        String,
        BoxStream<'static, Result<LogOutput, bollard::errors::Error>>,
    )> {
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(false),
            tty: Some(false),
            env: (!env.is_empty()).then(|| env_strings(env)),
            cmd: Some(cmd),
            user,
            ..Default::default()
        };
        let exec = self
            .docker
            .create_exec(handle, options)
            .await
            .map_err(|err| not_found_or(err, handle, "create exec"))?;
        let options = StartExecOptions {
            detach: false,
            tty: false,
            output_capacity: None,
        };
        match self.docker.start_exec(&exec.id, Some(options)).await {
            Ok(StartExecResults::Attached { output, .. }) => Ok((exec.id, output)),
            Ok(StartExecResults::Detached) => {
                Err(GardenError::Backend("exec started detached".to_string()))
            }
            Err(err) => Err(not_found_or(err, handle, "start exec")),
        }
    }
}

#[async_trait]
impl Garden for DockerGarden {
    async fn create(&self, spec: ContainerSpec) -> GardenResult<ContainerInfo> {
        validate(&spec)?;
        let image = ImageRef::from_rootfs(&spec.rootfs)?;
        let inspect = self.ensure_image(&image).await?;
        let lattice = self.lifecycles.for_container(&image_config(&inspect))?;
        if let Err(err) = self.create_started(&spec, &image, lattice).await {
            // A half-made container would hold its name and leak; one that
            // exists already is someone else's.
            if !matches!(err, GardenError::ContainerExists(_)) {
                if let Err(cleanup) = self.destroy(&spec.handle).await {
                    tracing::warn!(handle = %spec.handle, error = %cleanup, "removing a half-created container failed");
                }
            }
            return Err(err);
        }
        tracing::debug!(handle = %spec.handle, image = %image.reference(), "container created");
        self.info(&spec.handle).await
    }

    /// Stops the container (SIGTERM to every process, SIGKILL after
    /// [`DESTROY_GRACE`]), then removes it with its volumes.
    async fn destroy(&self, handle: &str) -> GardenResult<()> {
        let grace = DESTROY_GRACE.as_secs().max(1) as i32;
        let options = StopContainerOptionsBuilder::default().t(grace).build();
        match self.docker.stop_container(handle, Some(options)).await {
            Ok(()) => {}
            Err(err) if status(&err) == Some(404) => return Ok(()),
            // Removal below kills it anyway.
            Err(err) => tracing::warn!(handle, error = %err, "stopping container failed"),
        }
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(handle, Some(options)).await {
            Ok(()) => {
                tracing::debug!(handle, "container destroyed");
                Ok(())
            }
            Err(err) if status(&err) == Some(404) => Ok(()),
            // "removal already in progress": another destroy got there first.
            Err(err) if status(&err) == Some(409) => Ok(()),
            Err(err) => Err(backend("remove container", err)),
        }
    }

    async fn info(&self, handle: &str) -> GardenResult<ContainerInfo> {
        Ok(self.container_info(self.inspect(handle).await?))
    }

    /// Only containers carrying [`OWNER_PROPERTY`] are seen, so an engine's
    /// other containers never show up, even for an empty filter.
    async fn list(
        &self,
        properties: &BTreeMap<String, String>,
    ) -> GardenResult<Vec<ContainerInfo>> {
        let mut labels = vec![OWNER_PROPERTY.to_string()];
        labels.extend(properties.iter().map(|(k, v)| format!("{k}={v}")));
        let filters = HashMap::from([("label", labels)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|err| backend("list containers", err))?;
        let infos: Vec<GardenResult<ContainerInfo>> =
            futures::stream::iter(summaries.into_iter().filter_map(|s| s.id))
                .map(|id| async move { self.info(&id).await })
                .buffered(LIST_CONCURRENCY)
                .collect()
                .await;
        let mut containers = Vec::with_capacity(infos.len());
        for info in infos {
            match info {
                Ok(info) => containers.push(info),
                // Destroyed between listing and inspecting.
                Err(GardenError::ContainerNotFound(_)) => {}
                Err(err) => return Err(err),
            }
        }
        containers.sort_by(|a, b| a.handle.cmp(&b.handle));
        Ok(containers)
    }

    async fn stream_in(&self, handle: &str, destination: &str, tar: Bytes) -> GardenResult<()> {
        self.put_archive(handle, destination, TarBody::Whole(tar))
            .await
    }

    async fn container_events(
        &self,
        properties: &BTreeMap<String, String>,
    ) -> GardenResult<BoxStream<'static, ContainerEvent>> {
        let labels = properties.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                vec!["oom".to_string(), "die".to_string()],
            ),
            ("label".to_string(), labels),
        ]);
        // The engine's stream is only requested when first polled; `since`
        // makes it start here anyway, so that an event between this call
        // and the first poll is not missed.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let options = bollard::query_parameters::EventsOptions {
            since: Some(format!("{}.{:09}", now.as_secs(), now.subsec_nanos())),
            filters: Some(filters),
            ..Default::default()
        };
        let events = self
            .docker
            .events(Some(options))
            .filter_map(|event| async move {
                let event = match event {
                    Ok(event) => event,
                    Err(err) => {
                        tracing::warn!(error = %err, "the engine's event stream failed");
                        return None;
                    }
                };
                let mut attributes = event.actor?.attributes.unwrap_or_default();
                let handle = attributes.remove("name")?;
                // Besides the labels the engine adds `image`, `name` and, for
                // `die`, `exitCode` (and `execDuration`); only labels are
                // properties.
                attributes.remove("image");
                let status = attributes
                    .remove("exitCode")
                    .and_then(|code| code.parse().ok());
                attributes.remove("execDuration");
                let kind = match event.action.as_deref() {
                    Some("oom") => ContainerEventKind::OutOfMemory,
                    Some("die") => ContainerEventKind::Exited { status },
                    _ => return None,
                };
                Some(ContainerEvent {
                    handle,
                    properties: attributes.into_iter().collect(),
                    kind,
                })
            });
        Ok(events.boxed())
    }

    async fn stream_in_file(
        &self,
        handle: &str,
        destination: &str,
        tar: std::fs::File,
    ) -> GardenResult<()> {
        let file = tokio::fs::File::from_std(tar);
        self.put_archive(handle, destination, TarBody::File(file))
            .await
    }

    async fn stream_out(
        &self,
        handle: &str,
        path: &str,
    ) -> GardenResult<BoxStream<'static, GardenResult<Bytes>>> {
        // The archive's own errors only show in its body; ask first so a
        // missing path is a typed error.
        let options = ContainerArchiveInfoOptionsBuilder::default()
            .path(path)
            .build();
        match self
            .docker
            .get_container_archive_info(handle, Some(options))
            .await
        {
            Ok(_) => {}
            Err(err) if status(&err) == Some(404) => {
                return Err(self.path_not_found(handle, path).await)
            }
            Err(err) => return Err(backend("stat path", err)),
        }
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        Ok(self
            .docker
            .download_from_container(handle, Some(options))
            .map_err(|err| backend("stream out", err))
            .boxed())
    }

    async fn run(&self, handle: &str, spec: ProcessSpec) -> GardenResult<Box<dyn Process>> {
        if spec.path.is_empty() {
            return Err(GardenError::InvalidSpec(
                "process path is empty".to_string(),
            ));
        }
        validate_env(&spec.env)?;
        let (pidfile, cmd) = spawn_command(&spec);
        let (exec_id, output) = self
            .start_exec(handle, cmd, &spec.env, spec.user.clone())
            .await?;
        tracing::debug!(handle, exec_id, path = %spec.path, "process started");
        let (sender, receiver) = mpsc::channel(OUTPUT_BUFFER);
        let pump = tokio::spawn(pump_output(output, sender, exec_id.clone()));
        Ok(Box::new(DockerProcess {
            garden: self.clone(),
            handle: handle.to_string(),
            exec_id,
            pidfile,
            output: Some(receiver),
            pump: Some(pump),
            exit_status: None,
        }))
    }

    async fn exec_interactive(
        &self,
        handle: &str,
        spec: ProcessSpec,
        tty: Option<crate::TtySize>,
    ) -> GardenResult<crate::Interactive> {
        self.start_interactive(handle, spec, tty).await
    }

    async fn image_config(&self, rootfs: &str) -> GardenResult<ImageConfig> {
        let image = ImageRef::from_rootfs(rootfs)?;
        let inspect = self.ensure_image(&image).await?;
        Ok(image_config(&inspect))
    }

    async fn image_id(&self, rootfs: &str) -> GardenResult<Option<String>> {
        let image = ImageRef::from_rootfs(rootfs)?;
        match self.docker.inspect_image(&image.reference()).await {
            Ok(inspect) => Ok(inspect.id),
            Err(err) if status(&err) == Some(404) => Ok(None),
            Err(err) => Err(backend("inspect image", err)),
        }
    }

    /// Memory from the engine (`MemTotal`); disk: the size of the file
    /// system holding the engine's data when it is on this machine, else of
    /// `/`.
    async fn machine_capacity(&self) -> GardenResult<(u64, u64)> {
        let info = self
            .docker
            .info()
            .await
            .map_err(|err| backend("docker info", err))?;
        let memory_mb = info.mem_total.unwrap_or(0).max(0) as u64 / (1024 * 1024);
        let root = info
            .docker_root_dir
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir())
            .unwrap_or_else(|| PathBuf::from("/"));
        let disk_mb = disk_size_mb(&root)?;
        Ok((memory_mb, disk_mb))
    }

    /// CPU and memory from the engine's stats in one-shot mode (one read of
    /// the cgroup, no waiting for a second one: the caller keeps the
    /// previous sample for a rate); disk from an inspection with sizes,
    /// `SizeRw`: what the container wrote over its image. That is what an
    /// app fills, and what `disk_mb` is meant to bound; the image's own
    /// layers are shared between containers and not the instance's doing.
    async fn usage(&self, handle: &str) -> GardenResult<ContainerUsage> {
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut stats = std::pin::pin!(self.docker.stats(handle, Some(options)));
        let stats = stats
            .next()
            .await
            .ok_or_else(|| GardenError::Backend(format!("no stats for container {handle}")))?
            .map_err(|err| not_found_or(err, handle, "container stats"))?;
        let sized = InspectContainerOptionsBuilder::default().size(true).build();
        let inspect = self
            .docker
            .inspect_container(handle, Some(sized))
            .await
            .map_err(|err| not_found_or(err, handle, "inspect container size"))?;
        let memory = stats.memory_stats.unwrap_or_default();
        Ok(ContainerUsage {
            cpu_nanos: stats
                .cpu_stats
                .and_then(|cpu| cpu.cpu_usage)
                .and_then(|usage| usage.total_usage)
                .unwrap_or(0),
            memory_bytes: memory_in_use(&memory),
            memory_limit_bytes: memory.limit.unwrap_or(0),
            disk_bytes: inspect.size_rw.unwrap_or(0).max(0) as u64,
        })
    }
}

/// Memory in use as `docker stats` counts it: the cgroup's usage less the
/// inactive page cache (`inactive_file` on cgroup v2, `total_inactive_file`
/// on v1), which the kernel reclaims before it would kill anything.
fn memory_in_use(memory: &bollard::models::ContainerMemoryStats) -> u64 {
    let usage = memory.usage.unwrap_or(0);
    let cache = memory
        .stats
        .as_ref()
        .and_then(|stats| {
            stats
                .get("inactive_file")
                .or_else(|| stats.get("total_inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    usage.saturating_sub(cache)
}

/// `lattice-init spawn` of `spec` with a new pidfile (in the container),
/// so that `lattice-init signal` can reach the process later: the pidfile
/// and the exec's command.
fn spawn_command(spec: &ProcessSpec) -> (String, Vec<String>) {
    let pidfile = format!("{RUN_DIR}/{}.pid", uuid::Uuid::new_v4().simple());
    let mut cmd = vec![
        INIT_PATH.to_string(),
        "spawn".to_string(),
        "--pidfile".to_string(),
        pidfile.clone(),
    ];
    if let Some(nofile) = spec.nofile {
        cmd.extend(["--nofile".to_string(), nofile.to_string()]);
    }
    if let Some(dir) = &spec.dir {
        cmd.extend(["--dir".to_string(), dir.clone()]);
    }
    cmd.push("--".to_string());
    cmd.push(spec.path.clone());
    cmd.extend(spec.args.iter().cloned());
    (pidfile, cmd)
}

/// A process started by [`DockerGarden::run`] (or `exec_interactive`): a
/// Docker exec of `lattice-init spawn`.
struct DockerProcess {
    garden: DockerGarden,
    handle: String,
    exec_id: String,
    /// Inside the container; holds the process's pid for `signal`.
    pidfile: String,
    /// Until [`Process::output`] takes it.
    output: Option<mpsc::Receiver<OutputChunk>>,
    /// Forwards the exec's output; ends when the process's streams close.
    pump: Option<JoinHandle<()>>,
    exit_status: Option<i64>,
}

#[async_trait]
impl Process for DockerProcess {
    fn output(&mut self) -> BoxStream<'static, OutputChunk> {
        match self.output.take() {
            Some(receiver) => futures::stream::unfold(receiver, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            })
            .boxed(),
            None => futures::stream::empty().boxed(),
        }
    }

    /// # Caveats
    /// - Output not taken with [`Process::output`] before `wait` is
    ///   discarded, so an unread process cannot block on a full pipe.
    /// - Returns once the process's output streams have closed and it has
    ///   exited: a child left running with the streams open holds it up.
    ///
    /// # Errors
    /// [`GardenError::ContainerNotFound`] when the container was destroyed
    /// and its processes with it.
    ///
    /// # Assumptions
    /// Safe to cancel and call again; later calls return the same status.
    async fn wait(&mut self) -> GardenResult<i64> {
        if let Some(status) = self.exit_status {
            return Ok(status);
        }
        self.output = None;
        if let Some(pump) = self.pump.as_mut() {
            // Awaited by reference, so a cancelled wait leaves it in place.
            if let Err(err) = pump.await {
                tracing::warn!(handle = %self.handle, exec_id = %self.exec_id, error = %err, "output pump failed");
            }
            self.pump = None;
        }
        let status = exec_exit_status(&self.garden.docker, &self.exec_id, &self.handle).await?;
        self.exit_status = Some(status);
        Ok(status)
    }

    /// Signals the process's group: the process and the children it started.
    /// A process that exited already is not an error.
    async fn signal(&self, signal: Signal) -> GardenResult<()> {
        let exec = self
            .garden
            .docker
            .inspect_exec(&self.exec_id)
            .await
            .map_err(|err| not_found_or(err, &self.handle, "inspect exec"))?;
        // Only a process that ended has nothing to signal. One that was just
        // started may not be "running" yet in the engine's eyes (no exit code
        // either): `lattice-init signal` waits for its pidfile instead.
        if !exec.running.unwrap_or(false) && exec.exit_code.is_some() {
            return Ok(());
        }
        let name = match signal {
            Signal::Terminate => "TERM",
            Signal::Kill => "KILL",
        };
        let cmd = vec![
            INIT_PATH.to_string(),
            "signal".to_string(),
            self.pidfile.clone(),
            name.to_string(),
        ];
        // As root, whatever user the process runs as.
        let (exec_id, output) = self
            .garden
            .start_exec(&self.handle, cmd, &[], Some("0".to_string()))
            .await?;
        let messages: Vec<u8> = output
            .try_fold(Vec::new(), |mut all, chunk| async move {
                all.extend_from_slice(&chunk.into_bytes());
                Ok(all)
            })
            .await
            .map_err(|err| backend("read signal output", err))?;
        let status = exec_exit_status(&self.garden.docker, &exec_id, &self.handle).await?;
        if status != 0 {
            return Err(GardenError::Backend(format!(
                "signal {name} to process in {} failed ({status}): {}",
                self.handle,
                String::from_utf8_lossy(&messages).trim()
            )));
        }
        tracing::debug!(handle = %self.handle, exec_id = %self.exec_id, signal = name, "process signalled");
        Ok(())
    }
}

/// Forwards an exec's output to `sender` until the stream ends. Once the
/// receiver is gone it keeps reading (and drops the chunks), so the process
/// never blocks on a full pipe.
async fn pump_output(
    mut output: BoxStream<'static, Result<LogOutput, bollard::errors::Error>>,
    sender: mpsc::Sender<OutputChunk>,
    exec_id: String,
) {
    let mut sender = Some(sender);
    while let Some(item) = output.next().await {
        let chunk = match item {
            Ok(LogOutput::StdErr { message }) => OutputChunk {
                stream: OutputStream::Stderr,
                bytes: message,
            },
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => OutputChunk {
                stream: OutputStream::Stdout,
                bytes: message,
            },
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(err) => {
                tracing::warn!(exec_id, error = %err, "reading process output failed");
                return;
            }
        };
        if let Some(tx) = &sender {
            if tx.send(chunk).await.is_err() {
                sender = None;
            }
        }
    }
}

/// The exit status of a finished exec. The engine may record the exit a
/// moment after the output stream ends, so this polls while it says running.
async fn exec_exit_status(docker: &Docker, exec_id: &str, handle: &str) -> GardenResult<i64> {
    let mut pause = Duration::from_millis(5);
    loop {
        let inspect = docker
            .inspect_exec(exec_id)
            .await
            .map_err(|err| not_found_or(err, handle, "inspect exec"))?;
        if !inspect.running.unwrap_or(false) {
            return inspect.exit_code.ok_or_else(|| {
                GardenError::Backend(format!("exec {exec_id} ended without an exit code"))
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_EXEC_POLL);
    }
}

fn validate(spec: &ContainerSpec) -> GardenResult<()> {
    // Docker's rule for container names.
    let mut chars = spec.handle.chars();
    let valid_handle = spec.handle.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !valid_handle {
        return Err(GardenError::InvalidSpec(format!(
            "handle {:?} must be 2+ characters of [a-zA-Z0-9_.-], starting alphanumeric",
            spec.handle
        )));
    }
    if !spec.properties.contains_key(OWNER_PROPERTY) {
        return Err(GardenError::InvalidSpec(format!(
            "properties lack {OWNER_PROPERTY}"
        )));
    }
    if spec.ports.contains(&0) {
        return Err(GardenError::InvalidSpec(
            "port 0 cannot be published".to_string(),
        ));
    }
    if let Some(mount) = spec
        .bind_mounts
        .iter()
        .find(|m| !m.host_path.starts_with('/') || !m.container_path.starts_with('/'))
    {
        return Err(GardenError::InvalidSpec(format!(
            "bind mount {}:{} needs absolute paths",
            mount.host_path, mount.container_path
        )));
    }
    validate_env(&spec.env)
}

fn validate_env(env: &[(String, String)]) -> GardenResult<()> {
    match env
        .iter()
        .find(|(key, _)| key.is_empty() || key.contains('='))
    {
        Some((key, _)) => Err(GardenError::InvalidSpec(format!(
            "bad environment variable name {key:?}"
        ))),
        None => Ok(()),
    }
}

fn env_strings(env: &[(String, String)]) -> Vec<String> {
    env.iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect()
}

/// How many processes the kernel killed for memory in the memory cgroup of
/// `pid`, from cgroup v1's `memory.oom_control` or v2's `memory.events`.
/// `None` when it cannot be read (the cell does not see the engine's host,
/// or an old kernel without the counter).
fn cgroup_oom_kills(pid: i64) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mut files = Vec::new();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        if controllers.split(',').any(|c| c == "memory") {
            files.push(format!("/sys/fs/cgroup/memory{path}/memory.oom_control"));
        } else if controllers.is_empty() {
            files.push(format!("/sys/fs/cgroup{path}/memory.events"));
        }
    }
    files.iter().find_map(|file| {
        let contents = std::fs::read_to_string(file).ok()?;
        contents
            .lines()
            .find_map(|line| line.strip_prefix("oom_kill ")?.trim().parse().ok())
    })
}

/// Label of a program image naming the SHA-256 of the program it holds.
const PROGRAM_DIGEST_LABEL: &str = "io.lattice.program-sha256";

/// A root filesystem of one program at `/bin/NAME` and an empty `/tmp`.
fn program_rootfs(name: &str, program: &[u8]) -> std::io::Result<Bytes> {
    let mut tar = tar::Builder::new(Vec::new());
    append_dir(&mut tar, "bin", 0o755)?;
    append_dir(&mut tar, "tmp", 0o1777)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(program.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, format!("bin/{name}"), program)?;
    Ok(Bytes::from(tar.into_inner()?))
}

/// A tar for [`DockerGarden::put_archive`]: whole, or read from a file as it
/// is sent.
enum TarBody {
    Whole(Bytes),
    File(tokio::fs::File),
}

/// `file` in chunks of 64 KiB: memory stays at a chunk or two whatever the
/// size of the file.
fn file_chunks(
    file: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut chunk = vec![0u8; 64 * 1024];
        match file.read(&mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok(Bytes::from(chunk)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

impl DockerGarden {
    /// Puts a tar (in any body form) into the container at `destination`.
    async fn put_archive(&self, handle: &str, destination: &str, tar: TarBody) -> GardenResult<()> {
        if !destination.starts_with('/') {
            return Err(GardenError::InvalidSpec(format!(
                "destination {destination:?} is not absolute"
            )));
        }
        self.ensure_directory(handle, destination).await?;
        let options = UploadToContainerOptionsBuilder::default()
            .path(destination)
            .build();
        let uploaded = match tar {
            TarBody::Whole(tar) => {
                self.docker
                    .upload_to_container(handle, Some(options), bollard::body_full(tar))
                    .await
            }
            TarBody::File(file) => {
                let body = bollard::body_try_stream(file_chunks(file));
                self.docker
                    .upload_to_container(handle, Some(options), body)
                    .await
            }
        };
        match uploaded {
            Ok(()) => Ok(()),
            Err(err) if status(&err) == Some(404) => {
                Err(self.path_not_found(handle, destination).await)
            }
            Err(err) if status(&err) == Some(400) => Err(GardenError::InvalidSpec(message(&err))),
            Err(err) => Err(backend("stream in", err)),
        }
    }
}

fn mb_to_bytes(mb: u64) -> i64 {
    i64::try_from(mb.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX)
}

fn disk_size_mb(path: &Path) -> GardenResult<u64> {
    let stat = rustix::fs::statvfs(path)
        .map_err(|errno| GardenError::Backend(format!("statvfs {}: {errno}", path.display())))?;
    Ok(stat.f_blocks.saturating_mul(stat.f_frsize) / (1024 * 1024))
}

/// The lifecycle's view of an image's config; empty fields where the image
/// sets none.
fn image_config(inspect: &ImageInspect) -> ImageConfig {
    let Some(config) = &inspect.config else {
        return ImageConfig::default();
    };
    ImageConfig {
        entrypoint: config.entrypoint.clone().unwrap_or_default(),
        cmd: config.cmd.clone().unwrap_or_default(),
        env: config.env.clone().unwrap_or_default(),
        working_dir: config.working_dir.clone().unwrap_or_default(),
        user: config.user.clone().unwrap_or_default(),
        exposed_ports: parse_exposed_ports(
            config.exposed_ports.iter().flatten().map(String::as_str),
        ),
    }
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(mode);
    header.set_size(data.len() as u64);
    tar.append_data(&mut header, path, data)
}

/// A tar holding only the directory `path` (relative to `/`); the engine
/// creates its missing parents.
fn directory_archive(path: &str) -> std::io::Result<Bytes> {
    let mut tar = tar::Builder::new(Vec::new());
    let relative = path.trim_matches('/');
    if !relative.is_empty() {
        append_dir(&mut tar, &format!("{relative}/"), 0o755)?;
    }
    Ok(tar.into_inner()?.into())
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(mode);
    header.set_size(0);
    tar.append_data(&mut header, path, std::io::empty())
}

fn status(err: &bollard::errors::Error) -> Option<u16> {
    match err {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn message(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn backend(context: &str, err: bollard::errors::Error) -> GardenError {
    GardenError::Backend(format!("{context}: {err}"))
}

/// 404 means the container (or exec) is gone; anything else is the backend's.
fn not_found_or(err: bollard::errors::Error, handle: &str, context: &str) -> GardenError {
    if status(&err) == Some(404) {
        GardenError::ContainerNotFound(handle.to_string())
    } else if status(&err) == Some(409) {
        // "container is not running" (or paused): its processes are gone.
        GardenError::Backend(format!(
            "{context}: container {handle} is not running: {}",
            message(&err)
        ))
    } else {
        backend(context, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BindMount, Limits};

    fn spec(handle: &str) -> ContainerSpec {
        ContainerSpec {
            handle: handle.to_string(),
            rootfs: "docker:///busybox".to_string(),
            properties: BTreeMap::from([(OWNER_PROPERTY.to_string(), "test".to_string())]),
            ..Default::default()
        }
    }

    #[test]
    fn validates_handles_like_docker() {
        assert!(validate(&spec("cell-1_guid.0")).is_ok());
        for bad in ["", "a", "-ab", "a/b", "a b", "é1"] {
            assert!(validate(&spec(bad)).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn refuses_specs_docker_would_misread() {
        let mut s = spec("ok");
        s.properties.clear();
        assert!(validate(&s).is_err(), "owner property is required");
        let mut s = spec("ok");
        s.ports = vec![0];
        assert!(validate(&s).is_err());
        let mut s = spec("ok");
        s.env = vec![("A=B".to_string(), "c".to_string())];
        assert!(validate(&s).is_err());
        let mut s = spec("ok");
        s.bind_mounts = vec![BindMount {
            host_path: "relative".to_string(),
            container_path: "/x".to_string(),
            read_only: true,
        }];
        assert!(validate(&s).is_err());
    }

    #[test]
    fn maps_limits_ports_and_mounts() {
        let garden = DockerGarden {
            docker: Docker::connect_with_local_defaults()
                .expect("building a client opens no socket"),
            lifecycles: Lifecycles::Upload(std::sync::Arc::from(Vec::new())),
            host_ip: "127.0.0.1".to_string(),
            network: None,
        };
        let mut s = spec("ok");
        s.limits = Limits {
            memory_mb: 64,
            cpu_weight: 50,
            disk_mb: 0,
            pids: 64,
        };
        s.ports = vec![8080];
        s.bind_mounts = vec![BindMount {
            host_path: "/h".to_string(),
            container_path: "/c".to_string(),
            read_only: true,
        }];
        let image = ImageRef::from_rootfs(&s.rootfs).expect("valid rootfs");
        let body = garden.create_body(&s, &image, Default::default());
        let host = body.host_config.expect("always set");
        assert_eq!(host.memory, Some(64 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.cpu_shares, Some(512));
        assert_eq!(host.pids_limit, Some(64));
        assert_eq!(host.binds, Some(vec!["/h:/c:ro".to_string()]));
        let bindings = host.port_bindings.expect("always set");
        let binding = &bindings["8080/tcp"].as_ref().expect("one binding")[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(
            body.entrypoint,
            Some(vec![INIT_PATH.to_string(), "pause".to_string()])
        );

        s.limits = Limits {
            memory_mb: 0,
            cpu_weight: 1,
            disk_mb: 0,
            pids: 0,
        };
        let host = garden
            .create_body(&s, &image, Default::default())
            .host_config
            .expect("always set");
        assert_eq!(host.memory, None, "0 means no limit");
        assert_eq!(host.cpu_shares, Some(10));
        assert_eq!(
            host.pids_limit,
            Some(crate::DEFAULT_PIDS_LIMIT as i64),
            "every container has a PID limit"
        );
    }

    #[test]
    fn image_config_from_inspection() {
        let inspect = ImageInspect {
            config: Some(bollard::models::ImageConfig {
                entrypoint: Some(vec!["httpd".to_string()]),
                cmd: Some(vec!["-f".to_string()]),
                env: Some(vec!["A=1".to_string()]),
                working_dir: Some("/www".to_string()),
                user: None,
                exposed_ports: Some(vec![
                    "9090/tcp".to_string(),
                    "53/udp".to_string(),
                    "8080/tcp".to_string(),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            image_config(&inspect),
            ImageConfig {
                entrypoint: vec!["httpd".to_string()],
                cmd: vec!["-f".to_string()],
                env: vec!["A=1".to_string()],
                working_dir: "/www".to_string(),
                user: String::new(),
                exposed_ports: vec![8080, 9090],
            }
        );
        assert_eq!(
            image_config(&ImageInspect::default()),
            ImageConfig::default()
        );
    }

    #[test]
    fn directory_archive_holds_only_the_directory() {
        let archive = directory_archive("/tmp/a/b/").expect("in memory");
        let mut tar = tar::Archive::new(archive.as_ref());
        let names: Vec<String> = tar
            .entries()
            .expect("valid tar")
            .map(|e| {
                e.expect("valid entry")
                    .path()
                    .expect("utf-8")
                    .display()
                    .to_string()
            })
            .collect();
        assert_eq!(names, vec!["tmp/a/b/"]);
    }
}
