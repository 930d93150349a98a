//! Builds the static lifecycle binaries that go into containers.
//!
//! The binaries run inside images that may hold no libc at all, so they are
//! linked statically (`+crt-static` on the gnu target) into a target
//! directory of their own: the workspace's usual flags stay untouched, and
//! the static build is reused across test runs. The binaries are then
//! copied into a directory holding nothing else, since Garden uploads every
//! file of its lifecycle directory into each container.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Why the static build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The lock file or the target directory could not be made or locked.
    #[error("prepare {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `cargo` could not be started.
    #[error("run {cargo}: {source}")]
    Spawn {
        cargo: String,
        source: std::io::Error,
    },
    /// `cargo build` failed; its stderr is kept.
    #[error("cargo build of lattice-lifecycles failed ({status}):\n{stderr}")]
    Cargo {
        status: std::process::ExitStatus,
        stderr: String,
    },
    /// The build succeeded but did not leave the expected binary.
    #[error("the build left no {0}")]
    Missing(PathBuf),
    /// Copying a binary into the lifecycle directory failed.
    #[error("install {path}: {source}")]
    Install {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The binaries of `lattice-lifecycles`, every one of which goes into
/// containers at `/.lattice/bin/`.
pub const BINARIES: &[&str] = &[
    "lattice-init",
    "builder",
    "launcher",
    "healthcheck",
    "buildpack-builder",
    "droplet-launcher",
];

/// The Rust target the static binaries are built for: this machine's
/// architecture, gnu libc linked in.
pub fn target_triple() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The directory holding the static lifecycle binaries ([`BINARIES`]) and
/// nothing else, built on first use: the `lifecycle_dir` for a
/// `DockerGarden`.
///
/// # Guarantees
/// - Builds at most once per process; parallel test processes serialise on a
///   file lock in the target directory, so none reads a half-written binary.
///
/// # Panics
/// When the build fails: a test cannot run without its binaries, and the
/// panic message carries cargo's stderr.
pub fn build_static() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_static_into(&static_target_dir())
            .unwrap_or_else(|err| panic!("building the static lifecycle binaries failed: {err}"))
    })
    .clone()
}

/// Where the static build goes: `$LATTICE_LIFECYCLES_TARGET_DIR`, else
/// `lifecycles-static` inside `$CARGO_TARGET_DIR` (so each developer's
/// target directory keeps its own warm copy), else inside the workspace's
/// `target/`.
pub fn static_target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LATTICE_LIFECYCLES_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("lifecycles-static"),
        None => workspace_root().join("target").join("lifecycles-static"),
    }
}

fn workspace_root() -> PathBuf {
    // This crate lives at <workspace>/server/testkit.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `lattice-lifecycles` statically into `target_dir` and returns
/// `target_dir/lifecycles`, which holds its binaries and nothing else.
///
/// # Guarantees
/// - A binary is replaced only when it changed, by a rename, so a reader in
///   another process sees the old file or the new one, never a partial one.
///
/// # Errors
/// When the lock cannot be taken, cargo fails, a binary of [`BINARIES`] is
/// missing after the build, or cannot be copied.
pub fn build_static_into(target_dir: &Path) -> Result<PathBuf, BuildError> {
    let prepare = |source| BuildError::Prepare {
        path: target_dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(target_dir).map_err(prepare)?;
    let lock = File::create(target_dir.join("lattice-build.lock")).map_err(prepare)?;
    // Held until `lock` is dropped at the end of this function.
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|errno| prepare(errno.into()))?;

    let triple = target_triple();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let output = Command::new(&cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "lattice-lifecycles",
            "--release",
            "--target",
            &triple,
        ])
        .arg("--target-dir")
        .arg(target_dir)
        // With an explicit --target these flags reach only the target crates,
        // not build scripts, which could not link statically.
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        // Would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .map_err(|source| BuildError::Spawn {
            cargo: cargo.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(BuildError::Cargo {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let release = target_dir.join(triple).join("release");
    let dir = target_dir.join("lifecycles");
    std::fs::create_dir_all(&dir).map_err(|source| BuildError::Install {
        path: dir.clone(),
        source,
    })?;
    for name in BINARIES {
        let built = release.join(name);
        if !built.is_file() {
            return Err(BuildError::Missing(built));
        }
        // The temporary file lives beside, not in, the directory Garden
        // reads whole.
        install(
            &built,
            &dir.join(name),
            &target_dir.join(format!(".{name}.tmp")),
        )?;
    }
    // Sample apps live in a subdirectory: Garden uploads only the top level
    // into containers, and the cell turns these into local images.
    let samples = dir.join(SAMPLES_DIR);
    std::fs::create_dir_all(&samples).map_err(|source| BuildError::Install {
        path: samples.clone(),
        source,
    })?;
    for name in SAMPLES {
        let built = release.join(name);
        if !built.is_file() {
            return Err(BuildError::Missing(built));
        }
        install(
            &built,
            &samples.join(name),
            &target_dir.join(format!(".{name}.tmp")),
        )?;
    }
    Ok(dir)
}

/// Sample app binaries, installed in [`SAMPLES_DIR`] of the lifecycle dir.
pub const SAMPLES: &[&str] = &["lattice-app"];

/// Subdirectory of the lifecycle dir holding [`SAMPLES`].
pub const SAMPLES_DIR: &str = "samples";

/// Copies `from` to `to` through `tmp` and a rename, unless `to` holds the
/// same bytes already.
fn install(from: &Path, to: &Path, tmp: &Path) -> Result<(), BuildError> {
    let failed = |source| BuildError::Install {
        path: to.to_path_buf(),
        source,
    };
    let data = std::fs::read(from).map_err(failed)?;
    if std::fs::read(to).is_ok_and(|existing| existing == data) {
        return Ok(());
    }
    std::fs::write(tmp, &data).map_err(failed)?;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).map_err(failed)?;
    std::fs::rename(tmp, to).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_replaces_only_changed_binaries() {
        let dir =
            std::env::temp_dir().join(format!("lattice-install-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(dir.join("out")).expect("temp dir is writable");
        let (from, to, tmp) = (dir.join("built"), dir.join("out/bin"), dir.join(".bin.tmp"));
        std::fs::write(&from, "v1").expect("writable");
        install(&from, &to, &tmp).expect("installs");
        assert_eq!(std::fs::read(&to).expect("installed"), b"v1");
        let mode = std::fs::metadata(&to)
            .expect("installed")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert!(!tmp.exists(), "renamed away");

        // Unchanged: the file is kept (same inode), so readers are not disturbed.
        let inode = |path: &Path| {
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).expect("exists"))
        };
        let before = inode(&to);
        install(&from, &to, &tmp).expect("installs");
        assert_eq!(inode(&to), before);

        std::fs::write(&from, "v2").expect("writable");
        install(&from, &to, &tmp).expect("installs");
        assert_eq!(std::fs::read(&to).expect("installed"), b"v2");
        let entries: Vec<_> = std::fs::read_dir(dir.join("out"))
            .expect("exists")
            .collect();
        assert_eq!(entries.len(), 1, "nothing but the binary in the directory");
        std::fs::remove_dir_all(&dir).expect("created above");
    }
}
