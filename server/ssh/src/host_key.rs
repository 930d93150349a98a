//! The proxy's host key: made once, kept in the data dir, so that clients
//! (`ltc`'s known-hosts, OpenSSH's) recognise the cluster across restarts.

use std::io::Write;
use std::path::{Path, PathBuf};

use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey};

/// The file of the host key in a data dir (OpenSSH's format).
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";

/// What can go wrong with the host key file.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// The file exists but cannot be read.
    #[error("cannot read the SSH host key {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file holds no OpenSSH private key; remove it to get a new one
    /// (clients will then see a new host key).
    #[error("{path} holds no valid SSH host key ({reason}); remove it to make a new one (clients will see a changed host key)")]
    Invalid { path: PathBuf, reason: String },
    /// A new key cannot be made or written.
    #[error("cannot write a new SSH host key to {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// The host key kept in `data_dir`, made (Ed25519) and written there with
/// mode 0600 when there is none yet.
///
/// # Errors
/// See [`HostKeyError`].
pub fn load_or_create(data_dir: &Path) -> Result<PrivateKey, HostKeyError> {
    let path = data_dir.join(HOST_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            return PrivateKey::from_openssh(text.as_bytes()).map_err(|err| HostKeyError::Invalid {
                path,
                reason: err.to_string(),
            })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(HostKeyError::Read { path, source }),
    }
    let write_error = |reason: String| HostKeyError::Write {
        path: path.clone(),
        reason,
    };
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
        .map_err(|err| write_error(err.to_string()))?;
    let text = key
        .to_openssh(LineEnding::LF)
        .map_err(|err| write_error(err.to_string()))?;
    std::fs::create_dir_all(data_dir).map_err(|err| write_error(err.to_string()))?;
    // Written whole then renamed, with its mode from the start: a crash
    // never leaves half a key, and no one else can read it meanwhile.
    let partial = data_dir.join(format!("{HOST_KEY_FILE}.partial"));
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|err| write_error(err.to_string()))?
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&partial, &path))
        .map_err(|err| write_error(err.to_string()))?;
    tracing::info!(path = %path.display(), fingerprint = %fingerprint(&key), "made a new SSH host key");
    Ok(key)
}

/// The key's SHA-256 fingerprint as OpenSSH shows it (`SHA256:...`).
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key().fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let first = load_or_create(dir.path()).expect("made");
        let again = load_or_create(dir.path()).expect("read");
        assert_eq!(fingerprint(&first), fingerprint(&again));
        assert!(fingerprint(&first).starts_with("SHA256:"));
        let mode = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(dir.path().join(HOST_KEY_FILE))
                .expect("written")
                .permissions()
                .mode()
        };
        assert_eq!(mode & 0o777, 0o600);

        std::fs::write(dir.path().join(HOST_KEY_FILE), "garbage").expect("writable");
        let err = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("remove it"), "{err}");
    }
}
