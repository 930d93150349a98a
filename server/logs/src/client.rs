//! The client of the hub's HTTP API (`ltc logs`, `ltc debug-logs`).
//!
//! It never retries and never reconnects: a follow stream that ends is the
//! caller's to reopen (without `recent`, or it would repeat lines).
//!
//! # Guarantees
//! A follow stream tells a clean end from a broken one: it ends (`None`)
//! without an error only when the server closed it properly (it shut down);
//! a connection lost midway is an `Err` item first.

use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource};
use futures::stream::{BoxStream, StreamExt};
use lattice_client::Credentials;
use lattice_models::log::LogMessage;
use lattice_models::ApiErrorBody;
use reqwest::header::ACCEPT;
use reqwest::{Method, RequestBuilder, Response, Url};

use crate::hub::{FollowOptions, LogFilter};

/// How long to wait for a TCP connection to the hub.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a read of recent lines may take in total (a follow stream has no
/// overall timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The SSE event name of a log line.
pub const LOG_EVENT: &str = "log";

/// How much of a non-JSON error body is kept for the error message.
const MAX_ERROR_BODY: usize = 512;

/// Lines as the hub streams them; see the module's guarantees.
pub type LogStream = BoxStream<'static, Result<LogMessage, LogsClientError>>;

/// Anything a call to the hub can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LogsClientError {
    /// The hub answered with a non-2xx status and a JSON error body.
    #[error("{}", .error.message)]
    Api { status: u16, error: ApiErrorBody },

    /// A non-2xx answer whose body is not our JSON error (a proxy, or not a
    /// lattice server at all).
    #[error("{target} answered HTTP {status}: {body}")]
    UnexpectedStatus {
        target: String,
        status: u16,
        /// The start of the body, for the user to recognise what answered.
        body: String,
    },

    /// No connection could be made (nothing listens, unknown host, connect
    /// timeout).
    #[error("the log server at {target} is not reachable")]
    Unreachable {
        target: String,
        #[source]
        source: reqwest::Error,
    },

    /// The connection was made but the exchange failed: a timeout, a reset,
    /// or a follow stream cut before the server ended it.
    #[error("the connection to the log server at {target} failed")]
    Transport {
        target: String,
        #[source]
        source: reqwest::Error,
    },

    /// A 2xx answer (or one streamed line) that is not what the API
    /// promises.
    #[error("could not decode {what} from the log server")]
    Decode {
        /// What was being read, e.g. `a log event`.
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The target is not an `http://host:port` URL this client can use.
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget { target: String, reason: String },

    /// A log guid that cannot be a path segment (empty, `.`, `..`): it would
    /// address another resource.
    #[error("invalid log guid {0:?}: must not be empty, \".\" or \"..\"")]
    InvalidLogGuid(String),

    /// The HTTP client could not be set up (the TLS-less builder fails only
    /// if the system's resolver or sockets cannot be initialised).
    #[error("could not set up the HTTP client")]
    Setup(#[source] reqwest::Error),
}

/// A client of the hub at one target. Cheap to clone (the connection pool
/// is shared).
#[derive(Debug, Clone)]
pub struct LogsClient {
    http: reqwest::Client,
    base: Url,
    credentials: Option<Credentials>,
}

impl LogsClient {
    /// A client of the server at `target` (`http://host:port`, optionally
    /// with a path prefix): the receptor, which serves the hub's API. No
    /// request is made.
    ///
    /// # Errors
    /// [`LogsClientError::InvalidTarget`] if `target` is not an `http` URL
    /// with a host, or carries credentials, a query or a fragment.
    pub fn new(
        target: &str,
        credentials: Option<Credentials>,
    ) -> Result<LogsClient, LogsClientError> {
        let base = parse_target(target)?;
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(LogsClientError::Setup)?;
        Ok(LogsClient {
            http,
            base,
            credentials,
        })
    }

    /// The target, as given to [`LogsClient::new`] (normalised).
    pub fn target(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `GET /v1/logs/:log_guid?follow=false`: the recent lines the hub holds.
    pub async fn recent(
        &self,
        log_guid: &str,
        filter: &LogFilter,
    ) -> Result<Vec<LogMessage>, LogsClientError> {
        check_guid(log_guid)?;
        let query = query(false, true, filter, None);
        self.get_recent(&["v1", "logs", log_guid], &query).await
    }

    /// `GET /v1/logs/:log_guid?follow=true`: recent lines (if asked for),
    /// then live ones. Returns once the server accepted, so that a refusal
    /// (401, down) is an error here rather than the stream's first item.
    pub async fn follow(
        &self,
        log_guid: &str,
        options: &FollowOptions,
    ) -> Result<LogStream, LogsClientError> {
        check_guid(log_guid)?;
        let query = query(true, options.recent, &options.filter(), None);
        self.get_stream(&["v1", "logs", log_guid], &query).await
    }

    /// `GET /v1/debug_logs?follow=false`: the server's own recent lines;
    /// `raw` keeps each as its JSON object instead of `LEVEL message k=v`.
    pub async fn debug_recent(
        &self,
        filter: &LogFilter,
        raw: bool,
    ) -> Result<Vec<LogMessage>, LogsClientError> {
        let query = query(false, true, filter, Some(raw));
        self.get_recent(&["v1", "debug_logs"], &query).await
    }

    /// `GET /v1/debug_logs?follow=true`; see [`LogsClient::follow`] and
    /// [`LogsClient::debug_recent`].
    pub async fn debug_follow(
        &self,
        options: &FollowOptions,
        raw: bool,
    ) -> Result<LogStream, LogsClientError> {
        let query = query(true, options.recent, &options.filter(), Some(raw));
        self.get_stream(&["v1", "debug_logs"], &query).await
    }

    // --- plumbing ----------------------------------------------------------

    fn request(&self, segments: &[&str], query: &[(&str, String)]) -> RequestBuilder {
        let mut url = self.base.clone();
        url.path_segments_mut()
            // parse_target only accepts http URLs with a host, which always
            // have a path.
            .expect("an http URL can be a base")
            .pop_if_empty()
            .extend(segments);
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (k, v)));
        let request = self.http.request(Method::GET, url);
        match &self.credentials {
            Some(c) => request.basic_auth(&c.username, Some(&c.password)),
            None => request,
        }
    }

    async fn get_recent(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Vec<LogMessage>, LogsClientError> {
        let request = self.request(segments, query).timeout(REQUEST_TIMEOUT);
        let response = self.execute(request).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(self.target(), e))?;
        serde_json::from_slice(&body).map_err(|source| LogsClientError::Decode {
            what: format!("the answer to GET /{}", segments.join("/")),
            source: source.into(),
        })
    }

    async fn get_stream(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<LogStream, LogsClientError> {
        let request = self
            .request(segments, query)
            .header(ACCEPT, "text/event-stream");
        let response = self.execute(request).await?;
        let target = self.target().to_string();
        let stream = response
            .bytes_stream()
            .eventsource()
            .filter_map(move |item| {
                let item = match item {
                    // Other event names are for clients newer than this one.
                    Ok(event) if event.event != LOG_EVENT => None,
                    Ok(event) => Some(serde_json::from_str(&event.data).map_err(|source| {
                        LogsClientError::Decode {
                            what: "a log event".to_string(),
                            source: source.into(),
                        }
                    })),
                    Err(EventStreamError::Transport(source)) => {
                        Some(Err(transport_error(&target, source)))
                    }
                    Err(other) => Some(Err(LogsClientError::Decode {
                        what: "the event stream".to_string(),
                        source: Box::new(other),
                    })),
                };
                futures::future::ready(item)
            });
        Ok(stream.boxed())
    }

    /// Sends `request`; a non-2xx answer becomes an error.
    async fn execute(&self, request: RequestBuilder) -> Result<Response, LogsClientError> {
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(self.target(), e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(self.target(), e))?;
        Err(error_from(self.target(), status, &body))
    }
}

/// The error for a non-2xx answer with `body`.
pub(crate) fn error_from(target: &str, status: u16, body: &[u8]) -> LogsClientError {
    match serde_json::from_slice::<ApiErrorBody>(body) {
        Ok(error) => LogsClientError::Api { status, error },
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let end = text
                .char_indices()
                .nth(MAX_ERROR_BODY)
                .map_or(text.len(), |(i, _)| i);
            LogsClientError::UnexpectedStatus {
                target: target.to_string(),
                status,
                body: text[..end].trim().to_string(),
            }
        }
    }
}

fn query(
    follow: bool,
    recent: bool,
    filter: &LogFilter,
    raw: Option<bool>,
) -> Vec<(&'static str, String)> {
    let mut query = vec![
        ("follow", follow.to_string()),
        ("recent", recent.to_string()),
    ];
    if let Some(source) = &filter.source {
        query.push(("source", source.clone()));
    }
    if let Some(instance) = &filter.instance {
        query.push(("instance", instance.clone()));
    }
    if let Some(raw) = raw {
        query.push(("raw", raw.to_string()));
    }
    query
}

/// Checks a target URL: plain `http` with a host, no credentials, query or
/// fragment (they would be silently dropped or leak into logs).
pub(crate) fn parse_target(target: &str) -> Result<Url, LogsClientError> {
    let invalid = |reason: &str| LogsClientError::InvalidTarget {
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

/// Refuses guids that `Url::path_segments_mut` would drop or that would
/// collapse the path: `.` and `..` are resolved away, `""` makes `//`.
fn check_guid(log_guid: &str) -> Result<(), LogsClientError> {
    if matches!(log_guid, "" | "." | "..") {
        return Err(LogsClientError::InvalidLogGuid(log_guid.to_string()));
    }
    Ok(())
}

pub(crate) fn transport_error(target: &str, source: reqwest::Error) -> LogsClientError {
    let target = target.to_string();
    if source.is_connect() {
        LogsClientError::Unreachable { target, source }
    } else {
        LogsClientError::Transport { target, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_guids_and_filters() {
        let client = LogsClient::new("http://127.0.0.1:1/prefix/", None).expect("a valid target");
        let filter = LogFilter {
            source: Some("APP".into()),
            instance: Some("0".into()),
        };
        let request = client
            .request(&["v1", "logs", "a/b c"], &query(true, false, &filter, None))
            .build()
            .expect("a valid request");
        assert_eq!(
            request.url().as_str(),
            "http://127.0.0.1:1/prefix/v1/logs/a%2Fb%20c?follow=true&recent=false&source=APP&instance=0"
        );
    }

    #[test]
    fn targets_and_guids_are_checked() {
        for target in [
            "127.0.0.1:1",
            "https://x:1",
            "http://u:p@x:1",
            "http://x:1/?a=b",
        ] {
            assert!(
                matches!(
                    LogsClient::new(target, None),
                    Err(LogsClientError::InvalidTarget { .. })
                ),
                "{target}"
            );
        }
        for guid in ["", ".", ".."] {
            assert!(check_guid(guid).is_err(), "{guid:?}");
        }
        check_guid("...").expect("an ordinary name");
    }

    #[test]
    fn error_bodies_are_kept() {
        let err = error_from(
            "http://x",
            400,
            br#"{"name":"InvalidJSON","message":"line 2: expected value"}"#,
        );
        assert!(matches!(err, LogsClientError::Api { status: 400, .. }));
        assert_eq!(err.to_string(), "line 2: expected value");
        let err = error_from("http://x", 502, b"<html>bad gateway</html>\n");
        assert_eq!(
            err.to_string(),
            "http://x answered HTTP 502: <html>bad gateway</html>"
        );
    }
}
