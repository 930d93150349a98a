//! The file server's wire types: droplet names and records, blob digests,
//! shared by the file server and its client so each is written once.
//!
//! Pure types with their validation; the digest type computes SHA-256 (a
//! pure function) so both sides name blobs the same way.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The header that carries a body's SHA-256: sent with uploads (the server
/// refuses a body that does not match) and with downloads (the client checks
/// what it received).
pub const CHECKSUM_HEADER: &str = "x-content-sha256";

/// Longest droplet name; names end up in URLs and log lines.
pub const MAX_NAME_LEN: usize = 128;

/// A droplet name: `[A-Za-z0-9_-]+`, at most [`MAX_NAME_LEN`] bytes, so it is
/// safe in a URL path and a file name without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DropletName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("droplet name {value:?} must be 1 to {MAX_NAME_LEN} letters, digits, '_' or '-'")]
pub struct InvalidDropletName {
    /// The refused value, cut to 80 characters.
    pub value: String,
}

impl DropletName {
    pub fn parse(value: &str) -> Result<DropletName, InvalidDropletName> {
        let valid = !value.is_empty()
            && value.len() <= MAX_NAME_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if valid {
            Ok(DropletName(value.to_string()))
        } else {
            Err(InvalidDropletName {
                value: value.chars().take(80).collect(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DropletName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for DropletName {
    type Error = InvalidDropletName;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        DropletName::parse(&value)
    }
}

impl From<DropletName> for String {
    fn from(value: DropletName) -> String {
        value.0
    }
}

/// What the builder said about a droplet; every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropletMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildpack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// A stored droplet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Droplet {
    pub name: DropletName,
    pub sha256: Sha256Hex,
    pub size: u64,
    /// When it was uploaded, in nanoseconds since the Unix epoch (Diego's
    /// unit).
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildpack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

impl Droplet {
    pub fn metadata(&self) -> DropletMetadata {
        DropletMetadata {
            buildpack: self.buildpack.clone(),
            start_command: self.start_command.clone(),
            stack: self.stack.clone(),
        }
    }

    pub fn set_metadata(&mut self, metadata: DropletMetadata) {
        self.buildpack = metadata.buildpack;
        self.start_command = metadata.start_command;
        self.stack = metadata.stack;
    }
}

/// A SHA-256 digest as 64 lower-case hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

/// A string that is not a SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a sha256 digest (64 hexadecimal digits)")]
pub struct InvalidSha256 {
    /// The refused value, cut to 80 characters.
    pub value: String,
}

impl Sha256Hex {
    /// Parses 64 hexadecimal digits, in either case.
    pub fn parse(value: &str) -> Result<Sha256Hex, InvalidSha256> {
        if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha256Hex(value.to_ascii_lowercase()))
        } else {
            Err(InvalidSha256 {
                value: value.chars().take(80).collect(),
            })
        }
    }

    /// The digest of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Sha256Hex {
        Sha256Hex::from_hasher(Sha256::new_with_prefix(bytes))
    }

    /// The digest a finished hasher holds.
    pub fn from_hasher(hasher: Sha256) -> Sha256Hex {
        let digest = hasher.finalize();
        let mut hex = String::with_capacity(64);
        for byte in digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        Sha256Hex(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Sha256Hex {
    type Err = InvalidSha256;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Sha256Hex::parse(value)
    }
}

impl TryFrom<String> for Sha256Hex {
    type Error = InvalidSha256;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Sha256Hex::parse(&value)
    }
}

impl From<Sha256Hex> for String {
    fn from(value: Sha256Hex) -> String {
        value.0
    }
}

/// What the store holds under a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobInfo {
    pub sha256: Sha256Hex,
    pub size: u64,
}
