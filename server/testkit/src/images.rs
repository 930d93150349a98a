//! Test images, built locally: this machine reaches no registry, so every
//! image a test runs is imported from a root filesystem made here.
//!
//! The busybox image holds a static busybox with a link per applet (`sh`,
//! `echo`, `cat`, `sleep`, `nc`, `httpd`, ...), `/tmp`, and an `/etc/passwd`
//! naming `root` and `nobody`. Callers can add files to [`busybox_rootfs`]
//! (the project's static binaries, say) and import the result under their
//! own tag with [`import_rootfs`]; [`scratch_rootfs`] starts an image with
//! no libc and no shell.
//!
//! The Docker app image ([`docker_app_image`]) is busybox with an image
//! config the Docker app lifecycle reads: entrypoint, cmd, env, working
//! directory and an exposed port; its start command serves `/www` over HTTP
//! on port 8080.
//!
//! The memory image ([`memory_image`]) is busybox with a script that holds
//! a given amount of memory and disk, for tests of usage metrics.
//!
//! The stack image ([`stack_image`]) is the buildpack lifecycle's rootfs:
//! busybox plus a `lattice` user whose home, `/home/lattice`, is where
//! droplets are unpacked.

use std::path::Path;
use std::process::Command;

use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::TryStreamExt;
use tokio::sync::OnceCell;

/// The busybox binary to put in images: Debian's `busybox-static` package.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Docker reference of the busybox test image.
pub const BUSYBOX_IMAGE: &str = "lattice-test/busybox:latest";

/// Diego rootfs URL of the busybox test image.
pub const BUSYBOX_ROOTFS: &str = "docker:///lattice-test/busybox#latest";

/// Docker reference of the Docker app test image. The version is part of
/// the tag: an existing tag is reused, so a changed definition needs a new
/// one.
pub const DOCKER_APP_IMAGE: &str = "lattice-test/docker-app:v1";

/// Diego rootfs URL of the Docker app test image.
pub const DOCKER_APP_ROOTFS: &str = "docker:///lattice-test/docker-app#v1";

/// The port the Docker app image exposes and serves on.
pub const DOCKER_APP_PORT: u16 = 8080;

/// The body the Docker app serves at `/` (and `/index.html`).
pub const DOCKER_APP_INDEX: &str = "hello from lattice-test/docker-app\n";

/// The image config of [`DOCKER_APP_IMAGE`], as `docker import --change`
/// takes it. Start command: `httpd -f -p 8080 -h /www`.
pub const DOCKER_APP_CHANGES: &[&str] = &[
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV GREETING=hello",
    "WORKDIR /www",
    "EXPOSE 8080/tcp 9999/udp",
    r#"ENTRYPOINT ["httpd", "-f"]"#,
    r#"CMD ["-p", "8080", "-h", "/www"]"#,
];

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a test image could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The host's busybox is missing, dynamically linked, or would not list
    /// its applets.
    #[error("{HOST_BUSYBOX} is unusable ({0}); install Debian's busybox-static")]
    Busybox(String),
    /// Writing the root filesystem archive failed.
    #[error("build the root filesystem: {0}")]
    Archive(#[from] std::io::Error),
    /// The engine refused the import.
    #[error("import image {tag}: {source}")]
    Import {
        tag: String,
        source: bollard::errors::Error,
    },
}

/// The rootfs URL of the busybox test image, importing the image first when
/// the engine lacks it.
///
/// # Guarantees
/// - Idempotent: an existing tag is reused; several processes importing at
///   once make identical images, the last tag wins.
///
/// # Panics
/// When the image can neither be found nor imported: no container test can
/// run then, and the message says what to install.
pub async fn busybox_image() -> String {
    static IMPORTED: OnceCell<()> = OnceCell::const_new();
    IMPORTED
        .get_or_init(|| async {
            let docker = crate::docker::connect().await;
            ensure_busybox_image(&docker)
                .await
                .unwrap_or_else(|err| panic!("cannot make the busybox test image: {err}"));
        })
        .await;
    BUSYBOX_ROOTFS.to_string()
}

/// Imports the busybox image under [`BUSYBOX_IMAGE`] unless it exists.
///
/// # Errors
/// See [`ImageError`].
pub async fn ensure_busybox_image(docker: &Docker) -> Result<(), ImageError> {
    if image_exists(docker, BUSYBOX_IMAGE).await {
        return Ok(());
    }
    let rootfs = busybox_rootfs()?.into_inner()?;
    import_rootfs(
        docker,
        BUSYBOX_IMAGE,
        rootfs,
        &[&format!("ENV PATH={PATH}"), r#"CMD ["sh"]"#],
    )
    .await
}

/// The rootfs URL of the Docker app test image (see [`DOCKER_APP_CHANGES`]),
/// importing it first when the engine lacks it.
///
/// # Guarantees
/// As [`busybox_image`].
///
/// # Panics
/// When the image can neither be found nor imported.
pub async fn docker_app_image() -> String {
    static IMPORTED: OnceCell<()> = OnceCell::const_new();
    IMPORTED
        .get_or_init(|| async {
            let docker = crate::docker::connect().await;
            ensure_image(&docker, DOCKER_APP_IMAGE, DOCKER_APP_CHANGES, || {
                let mut tar = busybox_rootfs()?;
                add_dir(&mut tar, "www", 0o755)?;
                add_file(
                    &mut tar,
                    "www/index.html",
                    0o644,
                    DOCKER_APP_INDEX.as_bytes(),
                )?;
                Ok(tar.into_inner()?)
            })
            .await
            .unwrap_or_else(|err| panic!("cannot make the docker app test image: {err}"));
        })
        .await;
    DOCKER_APP_ROOTFS.to_string()
}

/// Docker reference of the memory test image: busybox with
/// `/bin/hold-memory` (see [`memory_image`]).
pub const MEMORY_IMAGE: &str = "lattice-test/memory:v1";

/// Diego rootfs URL of the memory test image.
pub const MEMORY_ROOTFS: &str = "docker:///lattice-test/memory#v1";

/// `hold-memory [MEMORY_MB] [DISK_MB]`: holds MEMORY_MB MiB of memory (a
/// file on `/dev/shm`: a tmpfs, whose pages are charged to the container's
/// memory and cannot be reclaimed while the file exists), writes DISK_MB
/// MiB to the container's writable layer, prints `holding`, then sleeps.
/// Docker's `/dev/shm` holds 64 MiB, so MEMORY_MB must stay below that.
const HOLD_MEMORY_SCRIPT: &str = r#"#!/bin/sh
set -e
head -c $((${1:-48} * 1048576)) /dev/zero > /dev/shm/held
head -c $((${2:-0} * 1048576)) /dev/zero > /tmp/written
echo holding
exec sleep 2147483647
"#;

/// The rootfs URL of the memory test image, importing it first when the
/// engine lacks it: busybox with `/bin/hold-memory` (see
/// `HOLD_MEMORY_SCRIPT`), for tests that need an instance using a known
/// amount of memory and disk.
///
/// # Guarantees
/// As [`busybox_image`].
///
/// # Panics
/// When the image can neither be found nor imported.
pub async fn memory_image() -> String {
    static IMPORTED: OnceCell<()> = OnceCell::const_new();
    IMPORTED
        .get_or_init(|| async {
            let docker = crate::docker::connect().await;
            let path = format!("ENV PATH={PATH}");
            ensure_image(&docker, MEMORY_IMAGE, &[&path], || {
                let mut tar = busybox_rootfs()?;
                add_file(
                    &mut tar,
                    "bin/hold-memory",
                    0o755,
                    HOLD_MEMORY_SCRIPT.as_bytes(),
                )?;
                Ok(tar.into_inner()?)
            })
            .await
            .unwrap_or_else(|err| panic!("cannot make the memory test image: {err}"));
        })
        .await;
    MEMORY_ROOTFS.to_string()
}

/// Docker reference of the buildpack stack test image.
pub const STACK_IMAGE: &str = "lattice-test/stack:v1";

/// Diego rootfs URL of the buildpack stack test image.
pub const STACK_ROOTFS: &str = "docker:///lattice-test/stack#v1";

/// The unprivileged user of the stack image, whose home is the droplet
/// directory (`/home/lattice`, where droplets are unpacked).
pub const STACK_USER: &str = "lattice";

/// [`STACK_USER`]'s uid and gid.
pub const STACK_UID: u64 = 2000;

/// The image config of [`STACK_IMAGE`]: a shell, no start command of its
/// own (the buildpack lifecycle brings one).
pub const STACK_CHANGES: &[&str] = &[
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    r#"CMD ["sh"]"#,
];

/// The rootfs URL of the buildpack stack test image, importing it first
/// when the engine lacks it: the busybox root filesystem (so `/bin/sh` for
/// buildpack scripts and busybox `httpd`, `tar`, `wget` for apps and
/// tests), plus the [`STACK_USER`] user and group and its home
/// `/home/lattice` (owned by it), where droplets are unpacked.
///
/// # Guarantees
/// As [`busybox_image`].
///
/// # Panics
/// When the image can neither be found nor imported.
pub async fn stack_image() -> String {
    static IMPORTED: OnceCell<()> = OnceCell::const_new();
    IMPORTED
        .get_or_init(|| async {
            let docker = crate::docker::connect().await;
            ensure_image(&docker, STACK_IMAGE, STACK_CHANGES, stack_rootfs)
                .await
                .unwrap_or_else(|err| panic!("cannot make the stack test image: {err}"));
        })
        .await;
    STACK_ROOTFS.to_string()
}

/// The finished root filesystem tar of [`STACK_IMAGE`].
///
/// # Errors
/// When the host's busybox is unusable.
pub fn stack_rootfs() -> Result<Vec<u8>, ImageError> {
    let passwd = format!(
        "{BUSYBOX_PASSWD}{STACK_USER}:x:{STACK_UID}:{STACK_UID}:{STACK_USER}:/home/lattice:/bin/sh\n"
    );
    let group = format!("{BUSYBOX_GROUP}{STACK_USER}:x:{STACK_UID}:\n");
    let mut tar = busybox_rootfs_with_users(&passwd, &group)?;
    let mut home = header(tar::EntryType::Directory, 0o755, 0);
    home.set_uid(STACK_UID);
    home.set_gid(STACK_UID);
    tar.append_data(&mut home, "home/lattice/", std::io::empty())?;
    Ok(tar.into_inner()?)
}

/// Imports the root filesystem `rootfs()` makes as `tag` with `changes`,
/// unless the engine holds `tag` already (then `rootfs` is not called).
///
/// # Errors
/// What `rootfs` returns, or the engine's refusal of the import.
pub async fn ensure_image(
    docker: &Docker,
    tag: &str,
    changes: &[&str],
    rootfs: impl FnOnce() -> Result<Vec<u8>, ImageError>,
) -> Result<(), ImageError> {
    if image_exists(docker, tag).await {
        return Ok(());
    }
    import_rootfs(docker, tag, rootfs()?, changes).await
}

/// Removes the image `reference` (a tag or an id) a test made, even while
/// other tags name it.
///
/// # Panics
/// When the engine refuses: the test would leave its image behind.
pub async fn remove_image(docker: &Docker, reference: &str) {
    let options = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    docker
        .remove_image(reference, Some(options), None)
        .await
        .unwrap_or_else(|err| panic!("cannot remove the test's image {reference}: {err}"));
}

/// Whether the engine holds an image of that reference. Any failure to
/// inspect counts as absent, so the caller tries to make it.
pub async fn image_exists(docker: &Docker, reference: &str) -> bool {
    docker.inspect_image(reference).await.is_ok()
}

/// An unfinished tar of the busybox root filesystem; append more entries,
/// then call `into_inner` and pass the bytes to [`import_rootfs`].
///
/// # Errors
/// When the host's busybox is unusable or cannot be read.
pub fn busybox_rootfs() -> Result<tar::Builder<Vec<u8>>, ImageError> {
    busybox_rootfs_with_users(BUSYBOX_PASSWD, BUSYBOX_GROUP)
}

/// [`busybox_rootfs`] with an empty `/etc/passwd` and `/etc/group`: no
/// user has a name, as in many minimal images.
///
/// # Errors
/// As [`busybox_rootfs`].
pub fn busybox_rootfs_without_users() -> Result<tar::Builder<Vec<u8>>, ImageError> {
    busybox_rootfs_with_users("", "")
}

const BUSYBOX_PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const BUSYBOX_GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";

/// [`busybox_rootfs`] with the given `/etc/passwd` and `/etc/group`: a tar
/// entry cannot be replaced once written.
fn busybox_rootfs_with_users(
    passwd: &str,
    group: &str,
) -> Result<tar::Builder<Vec<u8>>, ImageError> {
    let busybox =
        std::fs::read(HOST_BUSYBOX).map_err(|err| ImageError::Busybox(err.to_string()))?;
    if has_interpreter(&busybox) {
        return Err(ImageError::Busybox("it is dynamically linked".to_string()));
    }
    let applets = list_applets(Path::new(HOST_BUSYBOX))?;

    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("root", 0o700),
        ("home", 0o755),
        ("tmp", 0o1777),
        ("var", 0o755),
        ("var/tmp", 0o1777),
    ] {
        append_dir(&mut tar, dir, mode)?;
    }
    append_file(&mut tar, "bin/busybox", 0o755, &busybox)?;
    for applet in applets.iter().filter(|a| a.as_str() != "busybox") {
        append_symlink(&mut tar, &format!("bin/{applet}"), "busybox")?;
    }
    // Scripts name `#!/usr/bin/env`.
    append_symlink(&mut tar, "usr/bin/env", "../../bin/busybox")?;
    append_file(&mut tar, "etc/passwd", 0o644, passwd.as_bytes())?;
    append_file(&mut tar, "etc/group", 0o644, group.as_bytes())?;
    Ok(tar)
}

/// An unfinished tar of a root filesystem holding only `/tmp` and
/// `/etc/passwd` (root, nobody): no libc, no shell, no program at all. Add
/// static binaries to it to prove they need nothing else.
///
/// # Errors
/// Only if writing to memory fails.
pub fn scratch_rootfs() -> Result<tar::Builder<Vec<u8>>, ImageError> {
    let mut tar = tar::Builder::new(Vec::new());
    append_dir(&mut tar, "tmp", 0o1777)?;
    append_dir(&mut tar, "etc", 0o755)?;
    let passwd = "root:x:0:0:root:/:/nonexistent\nnobody:x:65534:65534:nobody:/:/nonexistent\n";
    append_file(&mut tar, "etc/passwd", 0o644, passwd.as_bytes())?;
    Ok(tar)
}

/// Adds a regular file (owned by root) to a root filesystem tar; `path` is
/// relative to `/`. Its directory must have been added before.
///
/// # Errors
/// Only if writing to memory fails.
pub fn add_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    append_file(tar, path, mode, data)
}

/// Adds a directory (owned by root) to a root filesystem tar; `path` is
/// relative to `/`, without a trailing `/`.
///
/// # Errors
/// Only if writing to memory fails.
pub fn add_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> std::io::Result<()> {
    append_dir(tar, path, mode)
}

/// Imports a root filesystem tar as image `tag` (`repo:tag`), applying
/// Dockerfile-style `changes` (`ENV ...`, `CMD [...]`).
///
/// # Errors
/// When the engine refuses the import.
pub async fn import_rootfs(
    docker: &Docker,
    tag: &str,
    rootfs: Vec<u8>,
    changes: &[&str],
) -> Result<(), ImageError> {
    let (repo, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(version)
        .changes(changes.iter().map(|c| c.to_string()).collect())
        .build();
    docker
        .create_image(Some(options), Some(bollard::body_full(rootfs.into())), None)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|source| ImageError::Import {
            tag: tag.to_string(),
            source,
        })?;
    Ok(())
}

fn list_applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|err| ImageError::Busybox(err.to_string()))?;
    if !output.status.success() {
        return Err(ImageError::Busybox(format!(
            "--list exited with {}",
            output.status
        )));
    }
    let list = String::from_utf8_lossy(&output.stdout);
    Ok(list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// Whether an ELF file names a program interpreter (the dynamic loader),
/// that is, whether it needs libraries an image from scratch does not hold.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // Only 64-bit little-endian ELF is read; anything else is taken as
    // dynamic, so the caller refuses it rather than build a broken image.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return true;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    (0..usize::from(phnum)).any(|i| {
        let at = usize::try_from(phoff)
            .unwrap_or(usize::MAX)
            .saturating_add(i.saturating_mul(usize::from(phentsize)));
        u32_at(at).is_none_or(|p_type| p_type == PT_INTERP)
    })
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> std::io::Result<()> {
    let mut header = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut header, format!("{path}/"), std::io::empty())
}

fn append_file(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = header(tar::EntryType::Regular, mode, data.len() as u64);
    tar.append_data(&mut header, path, data)
}

fn append_symlink(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    target: &str,
) -> std::io::Result<()> {
    let mut header = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut header, path, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_busybox_is_static_and_lists_applets() {
        let busybox =
            std::fs::read(HOST_BUSYBOX).expect("busybox-static is installed on test machines");
        assert!(!has_interpreter(&busybox));
        let applets = list_applets(Path::new(HOST_BUSYBOX)).expect("busybox runs");
        for needed in [
            "sh", "echo", "cat", "sleep", "nc", "httpd", "head", "tr", "wc",
        ] {
            assert!(
                applets.iter().any(|a| a == needed),
                "busybox lacks {needed}"
            );
        }
    }

    #[test]
    fn stack_rootfs_has_the_lattice_user_and_its_home() {
        let rootfs = stack_rootfs().expect("busybox-static is installed on test machines");
        let mut archive = tar::Archive::new(rootfs.as_slice());
        let mut passwd = String::new();
        let mut home = None;
        for entry in archive.entries().expect("a tar") {
            let mut entry = entry.expect("readable");
            let path = entry.path().expect("a path").display().to_string();
            if path == "etc/passwd" {
                std::io::Read::read_to_string(&mut entry, &mut passwd).expect("text");
            }
            if path == "home/lattice/" || path == "home/lattice" {
                let header = entry.header();
                home = Some((
                    header.uid().expect("uid"),
                    header.mode().expect("mode") & 0o777,
                ));
            }
        }
        assert!(passwd.starts_with("root:"), "{passwd}");
        assert!(
            passwd.contains("lattice:x:2000:2000:lattice:/home/lattice:/bin/sh\n"),
            "{passwd}"
        );
        assert_eq!(home, Some((STACK_UID, 0o755)));
    }

    #[test]
    fn dynamic_executables_are_recognised() {
        let exe = std::env::current_exe().expect("a test knows its own path");
        let exe = std::fs::read(exe).expect("a test can read its own binary");
        assert!(
            has_interpreter(&exe),
            "test binaries are dynamically linked"
        );
        assert!(
            has_interpreter(b"#!/bin/sh\n"),
            "not ELF counts as unusable"
        );
    }
}
