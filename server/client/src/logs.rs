//! [`LogsClient`]: the client of the log hub's HTTP API (`ltc logs`,
//! `ltc debug-logs`), which the receptor serves.
//!
//! It never retries and never reconnects: a follow stream that ends is the
//! caller's to reopen (without `recent`, or it would repeat lines).
//!
//! # Guarantees
//! A follow stream tells a clean end from a broken one: it ends (`None`)
//! without an error only when the server closed it properly (it shut down);
//! a connection lost midway is an `Err` item first.

use eventsource_stream::{EventStreamError, Eventsource};
use futures::stream::{BoxStream, StreamExt};
use lattice_models::log::{FollowOptions, LogFilter, LogMessage, LOG_EVENT};
use reqwest::header::ACCEPT;
use reqwest::{Method, RequestBuilder, Response, Url};

use crate::{
    check_segment, error_from_body, parse_target, transport_error, ClientError, Credentials,
    REQUEST_TIMEOUT,
};

/// Lines as the hub streams them; see the module's guarantees.
pub type LogStream = BoxStream<'static, Result<LogMessage, ClientError>>;

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
    /// [`ClientError::InvalidTarget`] if `target` is not an `http` URL
    /// with a host, or carries credentials, a query or a fragment.
    pub fn new(target: &str, credentials: Option<Credentials>) -> Result<LogsClient, ClientError> {
        let base = parse_target(target)?;
        let http = crate::http_client()?;
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
    ) -> Result<Vec<LogMessage>, ClientError> {
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
    ) -> Result<LogStream, ClientError> {
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
    ) -> Result<Vec<LogMessage>, ClientError> {
        let query = query(false, true, filter, Some(raw));
        self.get_recent(&["v1", "debug_logs"], &query).await
    }

    /// `GET /v1/debug_logs?follow=true`; see [`LogsClient::follow`] and
    /// [`LogsClient::debug_recent`].
    pub async fn debug_follow(
        &self,
        options: &FollowOptions,
        raw: bool,
    ) -> Result<LogStream, ClientError> {
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
    ) -> Result<Vec<LogMessage>, ClientError> {
        let request = self.request(segments, query).timeout(REQUEST_TIMEOUT);
        let response = self.execute(request).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(self.target(), e))?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
            what: format!("the answer to GET /{}", segments.join("/")),
            source: source.into(),
        })
    }

    async fn get_stream(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<LogStream, ClientError> {
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
                        ClientError::Decode {
                            what: "a log event".to_string(),
                            source: source.into(),
                        }
                    })),
                    Err(EventStreamError::Transport(source)) => {
                        Some(Err(transport_error(&target, source)))
                    }
                    Err(other) => Some(Err(ClientError::Decode {
                        what: "the event stream".to_string(),
                        source: Box::new(other),
                    })),
                };
                futures::future::ready(item)
            });
        Ok(stream.boxed())
    }

    /// Sends `request`; a non-2xx answer becomes an error.
    async fn execute(&self, request: RequestBuilder) -> Result<Response, ClientError> {
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
        Err(error_from_body(self.target(), status, &body))
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

/// Refuses guids that `Url::path_segments_mut` would drop or that would
/// collapse the path.
fn check_guid(log_guid: &str) -> Result<(), ClientError> {
    check_segment("log guid", log_guid)
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
                    Err(ClientError::InvalidTarget { .. })
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
        let err = error_from_body(
            "http://x",
            400,
            br#"{"name":"InvalidJSON","message":"line 2: expected value"}"#,
        );
        assert!(matches!(err, ClientError::Api { status: 400, .. }));
        assert_eq!(err.to_string(), "line 2: expected value");
        let err = error_from_body("http://x", 502, b"<html>bad gateway</html>\n");
        assert_eq!(
            err.to_string(),
            "http://x answered HTTP 502: <html>bad gateway</html>"
        );
    }
}
