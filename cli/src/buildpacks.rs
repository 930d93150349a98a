//! What `ltc build-droplet --buildpack B` may name, and how each kind gets
//! to the staging cell (which unpacks only tar and gzip'd tar archives, and
//! fetches only what its URL says):
//!
//! | B | how it gets there |
//! |---|---|
//! | a directory with `bin/detect` | packed by ltc (as the app is), uploaded as a blob |
//! | a `.tgz`, `.tar.gz` or `.tar` file | uploaded as a blob as it is |
//! | a `.zip` file | rewritten as a `.tgz` by ltc, uploaded as a blob |
//! | an http(s) URL of a tarball | downloaded by the cell itself |
//! | an http(s) URL of a zip | downloaded and rewritten by ltc, uploaded as a blob |
//! | a short name ([`KNOWN`]) | the Cloud Foundry release zip of that name, as a zip URL |
//!
//! The short names need ltc to reach the internet (GitHub); the archives
//! they name are built for the `cflinuxfs4` stack.

use std::path::{Path, PathBuf};

use anyhow::bail;

use crate::bits;

/// The well-known buildpacks: short name and the Cloud Foundry release
/// archive it stands for (pinned versions, for the `cflinuxfs4` stack; the
/// Java buildpack's archive is the same for every stack).
pub const KNOWN: &[(&str, &str)] = &[
    (
        "binary",
        "https://github.com/cloudfoundry/binary-buildpack/releases/download/v1.1.3/binary-buildpack-cflinuxfs4-v1.1.3.zip",
    ),
    (
        "go",
        "https://github.com/cloudfoundry/go-buildpack/releases/download/v1.10.26/go-buildpack-cflinuxfs4-v1.10.26.zip",
    ),
    (
        "java",
        "https://github.com/cloudfoundry/java-buildpack/releases/download/v4.77.0/java-buildpack-v4.77.0.zip",
    ),
    (
        "nodejs",
        "https://github.com/cloudfoundry/nodejs-buildpack/releases/download/v1.8.22/nodejs-buildpack-cflinuxfs4-v1.8.22.zip",
    ),
    (
        "php",
        "https://github.com/cloudfoundry/php-buildpack/releases/download/v4.6.24/php-buildpack-cflinuxfs4-v4.6.24.zip",
    ),
    (
        "python",
        "https://github.com/cloudfoundry/python-buildpack/releases/download/v1.8.43/python-buildpack-cflinuxfs4-v1.8.43.zip",
    ),
    (
        "ruby",
        "https://github.com/cloudfoundry/ruby-buildpack/releases/download/v1.10.6/ruby-buildpack-cflinuxfs4-v1.10.6.zip",
    ),
    (
        "staticfile",
        "https://github.com/cloudfoundry/staticfile-buildpack/releases/download/v1.6.10/staticfile-buildpack-cflinuxfs4-v1.6.10.zip",
    ),
];

/// A buildpack as given on the command line, resolved to its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buildpack {
    /// A local directory holding `bin/detect`.
    Dir(PathBuf),
    /// A local tar or gzip'd tar.
    Tarball(PathBuf),
    /// A local zip.
    Zip(PathBuf),
    /// A tarball the cell downloads from this URL.
    TarballUrl(String),
    /// A zip at this URL, which ltc fetches (a known name is one too).
    ZipUrl(String),
}

/// The buildpack `value` names, looked for in this order: an http(s) URL,
/// an existing directory or archive file, a [`KNOWN`] short name.
///
/// # Errors
/// A directory without `bin/detect`, a file that is no archive, or a value
/// that is none of the kinds (the message lists them and the short names).
pub fn resolve(value: &str) -> anyhow::Result<Buildpack> {
    if is_url(value) {
        return Ok(if bits::is_zip(url_path(value)) {
            Buildpack::ZipUrl(value.to_string())
        } else {
            Buildpack::TarballUrl(value.to_string())
        });
    }
    let path = Path::new(value);
    if path.is_dir() {
        if !path.join("bin/detect").is_file() {
            bail!(
                "{value} is not a buildpack: it has no bin/detect (a buildpack has bin/detect, \
                 bin/compile or bin/finalize, and bin/release)"
            );
        }
        return Ok(Buildpack::Dir(path.to_path_buf()));
    }
    if path.is_file() {
        if bits::is_zip(value) {
            return Ok(Buildpack::Zip(path.to_path_buf()));
        }
        if bits::is_tarball(value) {
            return Ok(Buildpack::Tarball(path.to_path_buf()));
        }
        bail!("{value} is not a buildpack archive: expected a .zip, .tgz, .tar.gz or .tar file");
    }
    if let Some((_, url)) = KNOWN.iter().find(|(name, _)| *name == value) {
        return Ok(Buildpack::ZipUrl(url.to_string()));
    }
    bail!(
        "unknown buildpack {value:?}: give a directory with bin/detect, a .zip/.tgz/.tar.gz/.tar \
         file, an http(s) URL of one, or one of: {}",
        known_names()
    )
}

/// Whether `value` reads as a buildpack (for Lattice's form `ltc
/// build-droplet DROPLET BUILDPACK -p PATH`): a URL, an archive file, a
/// directory with `bin/detect`, or a known short name.
pub fn looks_like_buildpack(value: &str) -> bool {
    let path = Path::new(value);
    is_url(value)
        || (path.is_file() && (bits::is_zip(value) || bits::is_tarball(value)))
        || path.join("bin/detect").is_file()
        || KNOWN.iter().any(|(name, _)| *name == value)
}

/// `go, java, ...`: the short names, for messages.
pub fn known_names() -> String {
    KNOWN
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Buildpack {
    /// The buildpack's directory name on the staging cell (under
    /// `/tmp/buildpacks/`), which the builder reports as the buildpack that
    /// staged the app: a short name as it is, else the directory's or the
    /// archive's name without its extension, reduced to letters, digits,
    /// `.`, `_` and `-`.
    pub fn name(&self, given: &str) -> String {
        if KNOWN.iter().any(|(name, _)| *name == given) {
            return given.to_string();
        }
        let last = match self {
            Buildpack::Dir(path) | Buildpack::Tarball(path) | Buildpack::Zip(path) => path
                .canonicalize()
                .unwrap_or_else(|_| path.clone())
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Buildpack::TarballUrl(url) | Buildpack::ZipUrl(url) => url_path(url)
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
        };
        let stem = strip_archive_extension(&last);
        let name: String = stem
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let name = name.trim_matches('.').to_string();
        if name.is_empty() {
            "buildpack".to_string()
        } else {
            name
        }
    }
}

fn is_url(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// A URL without its query or fragment, whose end says what it serves.
fn url_path(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

fn strip_archive_extension(name: &str) -> &str {
    let lower = name.to_ascii_lowercase();
    for ext in [".tar.gz", ".tgz", ".tar", ".zip"] {
        if lower.ends_with(ext) {
            return &name[..name.len() - ext.len()];
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buildpack_dir(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/detect"), "#!/bin/sh\n").unwrap();
        dir
    }

    #[test]
    fn every_kind_is_recognised() {
        let root = tempfile::tempdir().unwrap();
        let dir = buildpack_dir(root.path(), "static-sh");
        let tgz = root.path().join("my bp.tar.gz");
        let zip = root.path().join("go-buildpack-v1.zip");
        let text = root.path().join("notes.txt");
        for file in [&tgz, &zip, &text] {
            std::fs::write(file, "x").unwrap();
        }
        let s = |p: &Path| p.display().to_string();

        assert_eq!(resolve(&s(&dir)).unwrap(), Buildpack::Dir(dir.clone()));
        assert_eq!(resolve(&s(&tgz)).unwrap(), Buildpack::Tarball(tgz.clone()));
        assert_eq!(resolve(&s(&zip)).unwrap(), Buildpack::Zip(zip.clone()));
        let url = "https://example.com/bp/node.tgz?token=1";
        assert_eq!(resolve(url).unwrap(), Buildpack::TarballUrl(url.into()));
        let url = "HTTP://example.com/bp/node.zip#x";
        assert_eq!(resolve(url).unwrap(), Buildpack::ZipUrl(url.into()));
        let go = resolve("go").unwrap();
        assert_eq!(go, Buildpack::ZipUrl(KNOWN[1].1.into()));

        let err = resolve(&s(root.path())).unwrap_err().to_string();
        assert!(err.ends_with("is not a buildpack: it has no bin/detect (a buildpack has bin/detect, bin/compile or bin/finalize, and bin/release)"), "{err}");
        let err = resolve(&s(&text)).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "is not a buildpack archive: expected a .zip, .tgz, .tar.gz or .tar file"
            ),
            "{err}"
        );
        let err = resolve("cobol").unwrap_err().to_string();
        assert!(err.starts_with("unknown buildpack \"cobol\""), "{err}");
        assert!(
            err.ends_with("one of: binary, go, java, nodejs, php, python, ruby, staticfile"),
            "{err}"
        );

        assert_eq!(Buildpack::Dir(dir.clone()).name(&s(&dir)), "static-sh");
        assert_eq!(Buildpack::Tarball(tgz.clone()).name(&s(&tgz)), "my-bp");
        assert_eq!(Buildpack::Zip(zip).name(""), "go-buildpack-v1");
        assert_eq!(go.name("go"), "go");
        let url = "https://example.com/dl/node.tgz?token=1";
        assert_eq!(resolve(url).unwrap().name(url), "node");
        assert_eq!(
            Buildpack::TarballUrl("http://h/".into()).name(""),
            "buildpack"
        );
    }

    #[test]
    fn what_looks_like_a_buildpack() {
        let root = tempfile::tempdir().unwrap();
        let dir = buildpack_dir(root.path(), "bp");
        let app = root.path().join("app");
        std::fs::create_dir_all(&app).unwrap();
        let tgz = root.path().join("bp.tgz");
        std::fs::write(&tgz, "x").unwrap();
        for yes in [
            dir.display().to_string(),
            tgz.display().to_string(),
            "https://x/bp.tgz".into(),
            "ruby".into(),
        ] {
            assert!(looks_like_buildpack(&yes), "{yes}");
        }
        for no in [app.display().to_string(), ".".into(), "rubyist".into()] {
            assert!(!looks_like_buildpack(&no), "{no}");
        }
    }

    #[test]
    fn known_urls_are_release_zips() {
        for (name, url) in KNOWN {
            assert!(
                url.starts_with("https://github.com/cloudfoundry/"),
                "{name}"
            );
            assert!(url.ends_with(".zip"), "{name}");
            assert!(
                url.contains(&format!("/{name}-buildpack/")),
                "{name}: {url}"
            );
        }
    }
}
