//! The one error type of every client (receptor, log hub, file server: all
//! served by the receptor, behind its basic auth).
//!
//! Policy: an answer of the receptor is kept whole (status and its JSON
//! body) so that callers can branch on [`ApiErrorName`]; transport failures
//! keep the reqwest error as their source so that the cause chain says what
//! happened on the wire.

use std::path::PathBuf;

use lattice_models::droplet::{InvalidDropletName, Sha256Hex};
use lattice_models::{ApiErrorBody, ApiErrorName};
use reqwest::Url;

/// How much of a non-JSON error body is kept for the error message.
const MAX_ERROR_BODY: usize = 512;

/// Anything a call to the receptor can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The receptor answered with a non-2xx status and a JSON error body.
    /// Displays the server's message, prefixed by the offending field when
    /// the message does not already name it.
    #[error("{}", render_api_error(.error))]
    Api { status: u16, error: ApiErrorBody },

    /// The receptor answered with a non-2xx status and a body that is not the
    /// receptor's JSON error (a proxy in between, or not a receptor at all).
    #[error("{target} answered HTTP {status}{}", render_body(.body))]
    UnexpectedStatus {
        target: String,
        status: u16,
        /// The start of the body, for the user to recognise what answered.
        body: String,
    },

    /// No connection could be made: nothing listens there, or the host is
    /// unknown or does not answer within the connect timeout.
    #[error(
        "the receptor at {target} is not reachable; start it with `lattice up`, \
         or point ltc at a running one with `ltc target URL`"
    )]
    Unreachable {
        target: String,
        #[source]
        source: reqwest::Error,
    },

    /// The connection was made but the exchange failed (timeout, reset,
    /// truncated body).
    #[error("request to the receptor at {target} failed")]
    Transport {
        target: String,
        #[source]
        source: reqwest::Error,
    },

    /// A 2xx answer (or an event) whose body is not what the API promises.
    #[error("could not decode {what} from the receptor")]
    Decode {
        /// What was being read, e.g. `GET /v1/tasks` or `event "task_created"`.
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The target is not an `http://host:port` URL this client can use.
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget { target: String, reason: String },

    /// An argument that cannot be a path segment of the API (empty, `.`,
    /// `..`); sending it would address another resource.
    #[error("invalid {what} {value:?}: must not be empty, \".\" or \"..\"")]
    InvalidArgument { what: &'static str, value: String },

    /// The name is not a valid droplet name; nothing was sent.
    #[error(transparent)]
    InvalidDropletName(#[from] InvalidDropletName),

    /// The downloaded bytes do not have the digest the server sent; the
    /// partial file was deleted.
    #[error(
        "the download's sha256 is {actual}, but the server sent {expected}; the file was deleted"
    )]
    ChecksumMismatch {
        expected: Sha256Hex,
        actual: Sha256Hex,
    },

    /// A local file could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The HTTP client could not be set up (the TLS-less builder only fails
    /// if the system's resolver or sockets cannot be initialised).
    #[error("could not set up the HTTP client")]
    Setup(#[source] reqwest::Error),
}

impl ClientError {
    /// The HTTP status of the receptor's answer, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } | ClientError::UnexpectedStatus { status, .. } => {
                Some(*status)
            }
            _ => None,
        }
    }

    /// The kind of API error, if the receptor answered with one.
    pub fn api_error_name(&self) -> Option<ApiErrorName> {
        match self {
            ClientError::Api { error, .. } => Some(error.name),
            _ => None,
        }
    }

    /// Whether the receptor said the record does not exist (any of Diego's
    /// not-found names: `TaskNotFound`, `DesiredLRPNotFound`, ...).
    pub fn is_not_found(&self) -> bool {
        self.api_error_name()
            .is_some_and(ApiErrorName::is_not_found)
    }
}

/// The error for a non-2xx answer of `target` with `body`: the receptor's
/// JSON error if it is one, else the start of the body.
pub fn error_from_body(target: &str, status: u16, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ApiErrorBody>(body) {
        Ok(error) => ClientError::Api { status, error },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let end = text
                .char_indices()
                .nth(MAX_ERROR_BODY)
                .map_or(text.len(), |(i, _)| i);
            ClientError::UnexpectedStatus {
                target: target.to_string(),
                status,
                body: text[..end].trim().to_string(),
            }
        }
    }
}

/// A failed exchange with `target`: unreachable when no connection was made.
pub fn transport_error(target: &str, source: reqwest::Error) -> ClientError {
    let target = target.to_string();
    if source.is_connect() {
        ClientError::Unreachable { target, source }
    } else {
        ClientError::Transport { target, source }
    }
}

/// Checks a target URL: plain `http` with a host, no credentials, query or
/// fragment (they would be silently dropped or leak into logs).
pub fn parse_target(target: &str) -> Result<Url, ClientError> {
    let invalid = |reason: &str| ClientError::InvalidTarget {
        target: target.to_string(),
        reason: reason.to_string(),
    };
    let url = Url::parse(target).map_err(|e| invalid(&e.to_string()))?;
    match url.scheme() {
        "http" => {}
        "https" => return Err(invalid("https is not supported; use http://host:port")),
        _ => return Err(invalid("expected http://host:port")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("expected http://host:port"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("pass credentials separately, not in the URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or a fragment"));
    }
    Ok(url)
}

/// Refuses arguments that `Url::path_segments_mut` would drop or that would
/// collapse the path: `.` and `..` are skipped by it, `""` makes `//`.
pub(crate) fn check_segment(what: &'static str, value: &str) -> Result<(), ClientError> {
    if matches!(value, "" | "." | "..") {
        return Err(ClientError::InvalidArgument {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

fn render_api_error(error: &ApiErrorBody) -> String {
    match &error.field {
        // The receptor usually writes "field: message" already; do not say it twice.
        Some(field) if !field.is_empty() && !error.message.contains(field.as_str()) => {
            format!("{field}: {}", error.message)
        }
        _ => error.message.clone(),
    }
}

fn render_body(body: &str) -> String {
    if body.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", body.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(message: &str, field: Option<&str>) -> ClientError {
        ClientError::Api {
            status: 400,
            error: ApiErrorBody {
                name: ApiErrorName::InvalidRequest,
                message: message.to_string(),
                field: field.map(str::to_string),
            },
        }
    }

    #[test]
    fn api_error_names_the_field_once() {
        assert_eq!(
            api("must be >= 0, got -1", Some("memory_mb")).to_string(),
            "memory_mb: must be >= 0, got -1"
        );
        assert_eq!(
            api("memory_mb: must be >= 0, got -1", Some("memory_mb")).to_string(),
            "memory_mb: must be >= 0, got -1"
        );
        assert_eq!(
            api("task \"x\" not found", None).to_string(),
            "task \"x\" not found"
        );
    }

    #[test]
    fn status_and_name() {
        let err = api("bad", Some("f"));
        assert_eq!(err.status(), Some(400));
        assert_eq!(err.api_error_name(), Some(ApiErrorName::InvalidRequest));
        let err = ClientError::UnexpectedStatus {
            target: "http://x".into(),
            status: 502,
            body: "<html>bad gateway</html>".into(),
        };
        assert_eq!(err.status(), Some(502));
        assert_eq!(err.api_error_name(), None);
        assert_eq!(
            err.to_string(),
            "http://x answered HTTP 502: <html>bad gateway</html>"
        );
    }
}
