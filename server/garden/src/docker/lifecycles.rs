//! How `/.lattice` gets into a container: the lifecycle binaries at
//! `/.lattice/bin/` (`lattice-init` is the container's PID 1), a writable,
//! sticky `/.lattice/run/` for pidfiles, and the image's config at
//! `/.lattice/image-config.json`.
//!
//! Two ways, chosen once at connect ([`LifecycleDelivery`]):
//! - **Mount**: each binary is bind-mounted read-only from the lifecycle
//!   directory, the image's config from a file written once per distinct
//!   config, and `/.lattice/run` is a small tmpfs. Nothing is copied into
//!   the container, so its start costs what `docker run`'s does. Only when
//!   the engine reads this machine's paths.
//! - **Upload**: `/.lattice` as one tar put into the container before it
//!   starts. Works wherever the engine runs, but every put-archive mounts
//!   the container's root file system in the engine, and the tar carries
//!   ~9 MB of binaries: 100-200 ms more per start on fuse-overlayfs.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bollard::models::{Mount, MountType};
use bollard::Docker;
use bytes::Bytes;
use lattice_models::lifecycle::{ImageConfig, IMAGE_CONFIG_PATH, LIFECYCLE_BIN_DIR};

use super::{append_dir, append_file, INIT_BINARY, RUN_DIR};
use crate::{GardenError, GardenResult};

/// Where the lifecycle binaries live inside every container, relative to
/// `/` as the upload archive names them.
const BIN_DIR: &str = ".lattice/bin";
/// Where the image's config goes, relative to `/`.
const IMAGE_CONFIG_FILE: &str = ".lattice/image-config.json";
/// The tmpfs of `/.lattice/run` when mounted: pidfiles only.
const RUN_TMPFS_OPTIONS: &str = "mode=1777,size=1m";

/// How the lifecycle binaries and the image's config reach containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LifecycleDelivery {
    /// Mount when the engine runs on this machine (its host name is this
    /// machine's, which a cell in a container, a remote `DOCKER_HOST` or
    /// Docker Desktop's VM does not share) and every binary is readable
    /// and executable by anyone; upload otherwise.
    #[default]
    Auto,
    /// Bind-mount them: the engine must read this machine's paths.
    Mount,
    /// Upload them into every container before it starts.
    Upload,
}

/// The lifecycle binaries, as the chosen delivery needs them; cheap to
/// clone.
#[derive(Debug, Clone)]
pub(super) enum Lifecycles {
    Mount(Arc<Mounted>),
    Upload(Arc<[LifecycleFile]>),
}

#[derive(Debug)]
pub(super) struct Mounted {
    /// Every binary's name and absolute, link-free path on this machine.
    binaries: Vec<(String, PathBuf)>,
    /// Where image configs are written, one file per distinct config.
    config_dir: PathBuf,
}

/// A file of the lifecycle directory, read for upload.
#[derive(Debug)]
pub(super) struct LifecycleFile {
    pub(super) name: String,
    pub(super) data: Bytes,
}

/// What one container gets: mounts at create, an archive before start.
#[derive(Debug, Default)]
pub(super) struct Delivery {
    pub(super) mounts: Vec<Mount>,
    pub(super) tmpfs: HashMap<String, String>,
    pub(super) archive: Option<Bytes>,
}

impl Lifecycles {
    /// Lists (to mount) or reads (to upload) the binaries of `dir`;
    /// `config_dir` is where mounted image configs are written.
    ///
    /// # Errors
    /// [`GardenError::Backend`] when `dir` cannot be read or lacks
    /// `lattice-init`.
    pub(super) async fn prepare(
        docker: &Docker,
        dir: &Path,
        delivery: LifecycleDelivery,
        config_dir: &Path,
    ) -> GardenResult<Lifecycles> {
        let binaries = list_binaries(dir)?;
        let mount = match delivery {
            LifecycleDelivery::Mount => true,
            LifecycleDelivery::Upload => false,
            LifecycleDelivery::Auto => {
                engine_on_this_machine(docker).await
                    && binaries.iter().all(|(_, path)| runnable_by_anyone(path))
            }
        };
        tracing::info!(
            lifecycle_dir = %dir.display(),
            "lifecycle binaries are {} every container",
            if mount { "bind-mounted into" } else { "uploaded into" }
        );
        if mount {
            return Ok(Lifecycles::Mount(Arc::new(Mounted {
                binaries,
                config_dir: config_dir.to_path_buf(),
            })));
        }
        let files = binaries
            .into_iter()
            .map(|(name, path)| {
                let data = std::fs::read(&path).map_err(|err| read_error(&path, err))?;
                Ok(LifecycleFile {
                    name,
                    data: data.into(),
                })
            })
            .collect::<GardenResult<Vec<_>>>()?;
        Ok(Lifecycles::Upload(files.into()))
    }

    /// What a container of an image with `config` gets.
    ///
    /// # Errors
    /// [`GardenError::Backend`] when the config file cannot be written or
    /// the archive made.
    pub(super) fn for_container(&self, config: &ImageConfig) -> GardenResult<Delivery> {
        match self {
            Lifecycles::Upload(files) => {
                // Made per create: a memory copy of a few MB, far below the
                // upload's cost, and nothing to keep in step with images.
                let archive = lattice_archive(files, config)
                    .map_err(|err| GardenError::Backend(format!("archive lifecycles: {err}")))?;
                Ok(Delivery {
                    archive: Some(archive),
                    ..Delivery::default()
                })
            }
            Lifecycles::Mount(mounted) => {
                let config_file = write_image_config(&mounted.config_dir, config)?;
                let mut mounts: Vec<Mount> = mounted
                    .binaries
                    .iter()
                    .map(|(name, path)| {
                        read_only_bind(path, &format!("{LIFECYCLE_BIN_DIR}/{name}"))
                    })
                    .collect();
                mounts.push(read_only_bind(&config_file, IMAGE_CONFIG_PATH));
                Ok(Delivery {
                    mounts,
                    tmpfs: HashMap::from([(RUN_DIR.to_string(), RUN_TMPFS_OPTIONS.to_string())]),
                    archive: None,
                })
            }
        }
    }
}

fn read_only_bind(source: &Path, target: &str) -> Mount {
    Mount {
        target: Some(target.to_string()),
        // A `mounts` bind (unlike a `binds` one) fails when its source is
        // missing instead of creating an empty directory there.
        source: Some(source.display().to_string()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Default::default()
    }
}

/// Whether the engine reads this machine's paths: its host name is ours.
/// A cell in a container (its own host name), a remote `DOCKER_HOST` and
/// Docker Desktop's VM all differ.
async fn engine_on_this_machine(docker: &Docker) -> bool {
    let ours = match std::fs::read_to_string("/proc/sys/kernel/hostname") {
        Ok(name) => name.trim().to_string(),
        Err(err) => {
            tracing::debug!(error = %err, "cannot read this machine's host name");
            return false;
        }
    };
    match docker.info().await {
        Ok(info) => info.name.is_some_and(|engine| engine == ours),
        Err(err) => {
            tracing::debug!(error = %err, "cannot read the engine's info");
            false
        }
    }
}

/// A container's processes may run as any user, and a mount keeps the
/// file's own mode (an upload sets 0755).
fn runnable_by_anyone(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o005 == 0o005)
}

fn read_error(path: &Path, err: std::io::Error) -> GardenError {
    GardenError::Backend(format!("read {}: {err}", path.display()))
}

/// Every regular file of `dir` (following links) by name, with its
/// absolute, link-free path, sorted by name.
fn list_binaries(dir: &Path) -> GardenResult<Vec<(String, PathBuf)>> {
    let entries = std::fs::read_dir(dir).map_err(|err| read_error(dir, err))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|err| read_error(dir, err))?.path();
        // `metadata` follows links, so a directory of links to the
        // binaries serves as well.
        if !std::fs::metadata(&path).is_ok_and(|meta| meta.is_file()) {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(String::from) else {
            tracing::warn!(path = %path.display(), "skipping a lifecycle file whose name is not UTF-8");
            continue;
        };
        // A link's target, since the engine resolves links in its own
        // file system, and a relative path means nothing to it.
        let path = std::fs::canonicalize(&path).map_err(|err| read_error(&path, err))?;
        files.push((name, path));
    }
    if !files.iter().any(|(name, _)| name == INIT_BINARY) {
        return Err(GardenError::Backend(format!(
            "lifecycle directory {} holds no {INIT_BINARY}",
            dir.display()
        )));
    }
    files.sort();
    Ok(files)
}

/// `config` as JSON in `dir`, named by its digest so that containers of one
/// image share a file and a written file never changes; written (whole,
/// through a rename) only when missing.
fn write_image_config(dir: &Path, config: &ImageConfig) -> GardenResult<PathBuf> {
    let write_error = |path: &Path, err: std::io::Error| {
        GardenError::Backend(format!("write {}: {err}", path.display()))
    };
    let json = serde_json::to_vec(config)
        .map_err(|err| GardenError::Backend(format!("encode image config: {err}")))?;
    let digest = format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(&json));
    let path = dir.join(format!("{digest}.json"));
    if path.is_file() {
        return Ok(path);
    }
    std::fs::create_dir_all(dir).map_err(|err| write_error(dir, err))?;
    let mut temp = tempfile_in(dir).map_err(|err| write_error(dir, err))?;
    temp.1
        .write_all(&json)
        .map_err(|err| write_error(&temp.0, err))?;
    {
        use std::os::unix::fs::PermissionsExt;
        temp.1
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|err| write_error(&temp.0, err))?;
    }
    std::fs::rename(&temp.0, &path).map_err(|err| write_error(&path, err))?;
    Ok(path)
}

/// A new file in `dir` under a name no other writer picks.
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let path = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    Ok((path, file))
}

/// `/.lattice/{bin/*, run/, image-config.json}`, to unpack at `/`.
fn lattice_archive(lifecycles: &[LifecycleFile], config: &ImageConfig) -> std::io::Result<Bytes> {
    let config = serde_json::to_vec(config)?;
    let size: usize = lifecycles.iter().map(|f| f.data.len() + 1024).sum();
    let mut tar = tar::Builder::new(Vec::with_capacity(size + config.len() + 8 * 1024));
    append_dir(&mut tar, ".lattice/", 0o755)?;
    append_dir(&mut tar, &format!("{BIN_DIR}/"), 0o755)?;
    append_dir(&mut tar, ".lattice/run/", 0o1777)?;
    for file in lifecycles {
        append_file(
            &mut tar,
            &format!("{BIN_DIR}/{}", file.name),
            0o755,
            &file.data,
        )?;
    }
    append_file(&mut tar, IMAGE_CONFIG_FILE, 0o644, &config)?;
    Ok(tar.into_inner()?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lattice_archive_holds_lifecycles_and_config() {
        let lifecycles = [
            LifecycleFile {
                name: "builder".to_string(),
                data: Bytes::from_static(b"b"),
            },
            LifecycleFile {
                name: "lattice-init".to_string(),
                data: Bytes::from_static(b"init"),
            },
        ];
        let config = ImageConfig {
            cmd: vec!["sh".to_string()],
            ..Default::default()
        };
        let archive = lattice_archive(&lifecycles, &config).expect("in memory");
        let mut tar = tar::Archive::new(archive.as_ref());
        let mut entries = Vec::new();
        for entry in tar.entries().expect("valid tar") {
            let mut entry = entry.expect("valid entry");
            let path = entry.path().expect("utf-8").display().to_string();
            let mode = entry.header().mode().expect("set");
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut data).expect("in memory");
            entries.push((path, mode, data));
        }
        let names: Vec<(&str, u32)> = entries.iter().map(|(p, m, _)| (p.as_str(), *m)).collect();
        assert_eq!(
            names,
            vec![
                (".lattice/", 0o755),
                (".lattice/bin/", 0o755),
                (".lattice/run/", 0o1777),
                (".lattice/bin/builder", 0o755),
                (".lattice/bin/lattice-init", 0o755),
                (".lattice/image-config.json", 0o644),
            ]
        );
        assert_eq!(entries[4].2, b"init");
        let written: ImageConfig = serde_json::from_slice(&entries[5].2).expect("json");
        assert_eq!(written, config);
    }

    #[test]
    fn lists_every_regular_file_resolving_links_and_requires_lattice_init() {
        let dir = tempfile::tempdir().expect("temp dir is writable");
        std::fs::write(dir.path().join("builder"), "b").expect("writable");
        std::fs::create_dir(dir.path().join("deps")).expect("writable");
        let err = list_binaries(dir.path()).expect_err("no lattice-init");
        assert!(err.to_string().contains("holds no lattice-init"), "{err}");

        let elsewhere = tempfile::tempdir().expect("temp dir is writable");
        let init = elsewhere.path().join("init-binary");
        std::fs::write(&init, "init").expect("writable");
        std::os::unix::fs::symlink(&init, dir.path().join("lattice-init")).expect("writable");
        let files = list_binaries(dir.path()).expect("complete");
        let canonical = |path: &Path| std::fs::canonicalize(path).expect("exists");
        assert_eq!(
            files,
            vec![
                (
                    "builder".to_string(),
                    canonical(&dir.path().join("builder"))
                ),
                ("lattice-init".to_string(), canonical(&init)),
            ],
            "links resolved, dirs skipped"
        );
    }

    #[test]
    fn one_image_config_file_per_distinct_config() {
        let dir = tempfile::tempdir().expect("temp dir is writable");
        let configs = dir.path().join("configs");
        let a = ImageConfig {
            cmd: vec!["a".to_string()],
            ..Default::default()
        };
        let b = ImageConfig::default();
        let first = write_image_config(&configs, &a).expect("writable");
        let again = write_image_config(&configs, &a).expect("writable");
        let other = write_image_config(&configs, &b).expect("writable");
        assert_eq!(first, again);
        assert_ne!(first, other);
        let read: ImageConfig =
            serde_json::from_slice(&std::fs::read(&first).expect("written")).expect("json");
        assert_eq!(read, a);
        let names = std::fs::read_dir(&configs).expect("made").count();
        assert_eq!(names, 2, "no temporary file is left");
    }

    #[test]
    fn mounting_binds_each_binary_and_the_config_read_only() {
        let dir = tempfile::tempdir().expect("temp dir is writable");
        let lifecycles = Lifecycles::Mount(Arc::new(Mounted {
            binaries: vec![(
                "lattice-init".to_string(),
                PathBuf::from("/opt/l/lattice-init"),
            )],
            config_dir: dir.path().to_path_buf(),
        }));
        let delivery = lifecycles
            .for_container(&ImageConfig::default())
            .expect("writable");
        assert!(delivery.archive.is_none(), "nothing to upload");
        let mounts: Vec<(&str, &str, bool)> = delivery
            .mounts
            .iter()
            .map(|m| {
                (
                    m.source.as_deref().expect("set"),
                    m.target.as_deref().expect("set"),
                    m.read_only == Some(true),
                )
            })
            .collect();
        assert_eq!(
            mounts[0],
            ("/opt/l/lattice-init", "/.lattice/bin/lattice-init", true)
        );
        assert_eq!(mounts[1].1, IMAGE_CONFIG_PATH);
        assert!(mounts[1].2);
        assert_eq!(
            delivery.tmpfs.get(RUN_DIR).map(String::as_str),
            Some(RUN_TMPFS_OPTIONS)
        );
    }
}
