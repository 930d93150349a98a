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
//! | a git repository (`https://host/org/bp.git#REF`, `file:///path#REF`, a local repository's path) | cloned by ltc with `git` (shallow, at REF: a branch or tag; else HEAD), packed and uploaded as a blob |
//!
//! A local directory that is a git repository with `bin/detect` in its
//! working tree is packed as it is (uncommitted edits included), unless a
//! `#REF` is given. An archive holding one folder (as GitHub serves them)
//! is unwrapped by the builder on the cell.
//!
//! The short names need ltc to reach the internet (GitHub); the archives
//! they name are built for the `cflinuxfs4` stack.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

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
    /// A git repository, which ltc clones at `reference` (else HEAD).
    Git {
        url: String,
        reference: Option<String>,
    },
}

/// The buildpack `value` names, looked for in this order: an http(s) URL,
/// an existing directory or archive file, a [`KNOWN`] short name.
///
/// # Errors
/// A directory without `bin/detect`, a file that is no archive, or a value
/// that is none of the kinds (the message lists them and the short names).
pub fn resolve(value: &str) -> anyhow::Result<Buildpack> {
    if let Some(git) = git_repository(value)? {
        return Ok(git);
    }
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
    // A local repository's path only with a #REF: without, an app's own
    // directory under git would read as a buildpack.
    let git_form = value.contains("://") || value.contains('#');
    (git_form && matches!(git_repository(value), Ok(Some(_))))
        || is_url(value)
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
            Buildpack::Git { url, .. } => {
                let last = url.trim_end_matches('/').rsplit(['/', ':']).next();
                let last = last.unwrap_or_default();
                last.strip_suffix(".git").unwrap_or(last).to_string()
            }
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

/// The git repository `value` names, if it names one: a URL with a
/// `file://`, `git://` or `ssh://` scheme, an http(s) URL whose path ends
/// in `.git`, or the path of a local repository (a working tree without
/// `bin/detect`, a bare repository, or any with a `#REF`). `#REF` picks a
/// branch or tag.
///
/// # Errors
/// An empty `#REF`.
fn git_repository(value: &str) -> anyhow::Result<Option<Buildpack>> {
    let (base, reference) = match value.split_once('#') {
        Some((base, reference)) => (base, Some(reference.to_string())),
        None => (value, None),
    };
    let lower = base.to_ascii_lowercase();
    let url = if ["file://", "git://", "ssh://"]
        .iter()
        .any(|scheme| lower.starts_with(scheme))
        || (is_url(base) && lower.trim_end_matches('/').ends_with(".git"))
    {
        base.to_string()
    } else {
        let path = Path::new(base);
        let repository = path.join(".git").exists()
            || (path.join("HEAD").is_file() && path.join("objects").is_dir());
        let working_tree = path.join("bin/detect").is_file() && reference.is_none();
        if !path.is_dir() || !repository || working_tree {
            return Ok(None);
        }
        let absolute = path
            .canonicalize()
            .with_context(|| format!("cannot read {base}"))?;
        // file:// so that the clone can be shallow (git ignores --depth for
        // a plain path).
        format!("file://{}", absolute.display())
    };
    if reference.as_deref() == Some("") {
        bail!("{value}: the git reference after # is empty; name a branch or tag, or drop the #");
    }
    Ok(Some(Buildpack::Git { url, reference }))
}

/// Clones the git repository `url` into the empty or missing directory
/// `into`: only the commit of `reference` (a branch or tag; else HEAD), and
/// its submodules likewise. No prompt for credentials: a private repository
/// fails with git's message.
///
/// # Errors
/// `git` is missing, or a git command failed (its message is included).
pub fn clone_git(url: &str, reference: Option<&str>, into: &Path) -> anyhow::Result<()> {
    let dir = into.to_string_lossy().into_owned();
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let output = Command::new("git")
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .output()
            .context("cannot run git; install it to use a buildpack from a git repository")?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!("git {} failed: {}", args.join(" "), stderr.trim());
        }
        Ok(())
    };
    git(&["init", "-q", &dir])?;
    git(&[
        "-C",
        &dir,
        "fetch",
        "-q",
        "--depth",
        "1",
        url,
        reference.unwrap_or("HEAD"),
    ])?;
    git(&["-C", &dir, "checkout", "-q", "FETCH_HEAD"])?;
    if into.join(".gitmodules").is_file() {
        git(&[
            "-C",
            &dir,
            "submodule",
            "update",
            "-q",
            "--init",
            "--recursive",
            "--depth",
            "1",
        ])?;
    }
    Ok(())
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

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn git_repositories_are_recognised_and_cloned_at_their_ref() {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("null-buildpack");
        std::fs::create_dir_all(repo.join("bin")).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("bin/compile"), "v1").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "v1"]);
        git(&repo, &["tag", "v1"]);
        std::fs::write(repo.join("bin/compile"), "v2").unwrap();
        git(&repo, &["commit", "-q", "-am", "v2"]);
        let path = repo.display().to_string();
        let file_url = format!("file://{}", repo.canonicalize().unwrap().display());

        for (value, url, reference) in [
            (path.clone(), file_url.clone(), None),
            (format!("{path}#v1"), file_url.clone(), Some("v1")),
            (format!("{file_url}#main"), file_url.clone(), Some("main")),
            (
                "https://github.com/org/bp.git#v2".to_string(),
                "https://github.com/org/bp.git".to_string(),
                Some("v2"),
            ),
        ] {
            let expected = Buildpack::Git {
                url,
                reference: reference.map(String::from),
            };
            assert_eq!(resolve(&value).unwrap(), expected, "{value}");
            let git_form = value.contains("://") || value.contains('#');
            assert_eq!(looks_like_buildpack(&value), git_form, "{value}");
        }
        assert_eq!(resolve(&path).unwrap().name(&path), "null-buildpack");
        let err = resolve(&format!("{path}#")).unwrap_err().to_string();
        assert!(err.contains("the git reference after # is empty"), "{err}");

        let clone = root.path().join("clone");
        clone_git(&file_url, Some("v1"), &clone).expect("cloned at the tag");
        assert_eq!(
            std::fs::read_to_string(clone.join("bin/compile")).unwrap(),
            "v1"
        );
        let head = root.path().join("head");
        clone_git(&file_url, None, &head).expect("cloned at HEAD");
        assert_eq!(
            std::fs::read_to_string(head.join("bin/compile")).unwrap(),
            "v2"
        );
        let err = clone_git(&file_url, Some("no-such-ref"), &root.path().join("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("git -C"), "{err}");

        // A working tree with bin/detect is a directory buildpack as it is.
        std::fs::write(repo.join("bin/detect"), "#!/bin/sh\n").unwrap();
        assert_eq!(resolve(&path).unwrap(), Buildpack::Dir(repo.clone()));
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
