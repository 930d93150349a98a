//! The hub's HTTP API, merged into the receptor's (which adds basic auth and
//! request logging around it).
//!
//! - `POST /v1/log_messages`: ingest, newline-delimited JSON `LogMessage`s
//!   (cells on other machines). Answers 204 once every line is published; a
//!   line that is not a valid `LogMessage` stops the request with a 400
//!   naming its line number, after the lines before it were published.
//! - `GET /v1/logs/{log_guid}`: an app's lines. Query: `follow` (default
//!   `false`), `recent` (default `true`), `source`, `instance` (an empty value
//!   filters nothing). Not following: a JSON array of the recent lines.
//!   Following: Server-Sent Events, `event: log` with a `LogMessage` as data,
//!   until the server shuts down.
//! - `GET /v1/debug_logs`: the same for the server's own logs, plus `raw`
//!   (default `false`): `true` keeps each message as its JSON object,
//!   `false` renders it `LEVEL message key=value ...`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use lattice_models::log::LogMessage;
use lattice_models::parse::from_json_slice;
use lattice_models::{ApiErrorBody, ApiErrorName};
use tokio_util::sync::CancellationToken;

use crate::debug;
use crate::hub::{FollowOptions, LogFilter, LogHub, DEBUG_LOG_GUID};
use lattice_models::log::LOG_EVENT;

/// Longest ingested line. A `LogMessage` carries at most 64 KiB of text
/// (the executor cuts longer lines), which JSON escaping can grow up to six
/// times; anything longer is not a line a cell wrote.
pub const MAX_INGEST_LINE_BYTES: usize = 512 * 1024;

/// How often an idle follow stream sends a comment, so that proxies and
/// clients with read timeouts keep it open.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Clone)]
struct HttpState {
    hub: Arc<LogHub>,
    /// Ends follow streams, so that shutdown is not held up by clients that
    /// never disconnect.
    shutdown: CancellationToken,
}

/// The hub's routes (see the module doc), with no state left to provide.
pub fn router(hub: Arc<LogHub>, shutdown: CancellationToken) -> Router<()> {
    Router::new()
        .route("/v1/log_messages", post(ingest))
        .route("/v1/logs/{log_guid}", get(app_logs))
        .route("/v1/debug_logs", get(debug_logs))
        .with_state(HttpState { hub, shutdown })
}

/// A client error in the receptor's JSON shape.
#[derive(Debug)]
struct HttpError(ApiErrorBody);

impl HttpError {
    fn new(name: ApiErrorName, message: String, field: Option<String>) -> HttpError {
        HttpError(ApiErrorBody {
            name,
            message,
            field,
        })
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.name.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

// --- ingest ----------------------------------------------------------------

async fn ingest(State(state): State<HttpState>, body: Body) -> Result<StatusCode, HttpError> {
    let mut chunks = body.into_data_stream();
    let mut lines = LineBuffer::new(MAX_INGEST_LINE_BYTES);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|err| {
            HttpError::new(
                ApiErrorName::InvalidJson,
                format!(
                    "could not read the request body after line {}: {err}",
                    lines.number
                ),
                None,
            )
        })?;
        lines.push(&chunk, |number, line| {
            publish_line(&state.hub, number, line)
        })?;
    }
    lines.finish(|number, line| publish_line(&state.hub, number, line))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Parses and publishes line `number`; blank lines are skipped.
fn publish_line(hub: &LogHub, number: usize, line: &[u8]) -> Result<(), HttpError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let message: LogMessage = from_json_slice(line).map_err(|err| {
        let field = (!err.path.is_empty()).then(|| err.path.clone());
        HttpError::new(
            ApiErrorName::InvalidJson,
            format!("line {number}: {err}"),
            field,
        )
    })?;
    if message.log_guid.is_empty() {
        return Err(HttpError::new(
            ApiErrorName::InvalidRequest,
            format!("line {number}: log_guid must not be empty"),
            Some("log_guid".to_string()),
        ));
    }
    hub.publish(message);
    Ok(())
}

/// Splits a streamed body into lines of at most `max` bytes, numbered from 1.
struct LineBuffer {
    pending: Vec<u8>,
    max: usize,
    /// The number of the last line handed out.
    number: usize,
}

impl LineBuffer {
    fn new(max: usize) -> LineBuffer {
        LineBuffer {
            pending: Vec::new(),
            max,
            number: 0,
        }
    }

    fn push(
        &mut self,
        mut bytes: &[u8],
        mut each: impl FnMut(usize, &[u8]) -> Result<(), HttpError>,
    ) -> Result<(), HttpError> {
        while let Some(newline) = bytes.iter().position(|&b| b == b'\n') {
            self.number += 1;
            let (head, rest) = (&bytes[..newline], &bytes[newline + 1..]);
            bytes = rest;
            if self.pending.is_empty() {
                // The whole line is in this chunk: no copy.
                self.check_length(head.len())?;
                each(self.number, head)?;
            } else {
                self.check_length(self.pending.len() + head.len())?;
                self.pending.extend_from_slice(head);
                each(self.number, &self.pending)?;
                self.pending.clear();
            }
        }
        if self.pending.len() + bytes.len() > self.max {
            // Refused before its newline arrived: it is the next line.
            self.number += 1;
            return Err(self.too_long());
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// Handles a last line without a newline.
    fn finish(
        &mut self,
        mut each: impl FnMut(usize, &[u8]) -> Result<(), HttpError>,
    ) -> Result<(), HttpError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.number += 1;
        let line = std::mem::take(&mut self.pending);
        each(self.number, &line)
    }

    fn check_length(&self, length: usize) -> Result<(), HttpError> {
        if length > self.max {
            Err(self.too_long())
        } else {
            Ok(())
        }
    }

    fn too_long(&self) -> HttpError {
        HttpError::new(
            ApiErrorName::RequestEntityTooLarge,
            format!(
                "line {} is longer than the limit of {} bytes",
                self.number, self.max
            ),
            None,
        )
    }
}

// --- reading ---------------------------------------------------------------

/// The query of both reading endpoints, parsed by hand so that a bad value
/// or a misspelt parameter gets a JSON error naming it.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReadQuery {
    follow: bool,
    recent: bool,
    filter: LogFilter,
    raw: bool,
}

impl ReadQuery {
    fn parse(pairs: &[(String, String)], allow_raw: bool) -> Result<ReadQuery, HttpError> {
        let mut query = ReadQuery {
            recent: true,
            ..ReadQuery::default()
        };
        for (name, value) in pairs {
            match name.as_str() {
                "follow" => query.follow = parse_bool(name, value)?,
                "recent" => query.recent = parse_bool(name, value)?,
                "raw" if allow_raw => query.raw = parse_bool(name, value)?,
                "source" => query.filter.source = non_empty(value),
                "instance" => query.filter.instance = non_empty(value),
                _ => {
                    let known = if allow_raw {
                        "follow, recent, source, instance, raw"
                    } else {
                        "follow, recent, source, instance"
                    };
                    return Err(HttpError::new(
                        ApiErrorName::InvalidRequest,
                        format!("{name}: unknown query parameter; expected one of {known}"),
                        Some(name.clone()),
                    ));
                }
            }
        }
        Ok(query)
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, HttpError> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(HttpError::new(
            ApiErrorName::InvalidRequest,
            format!("{name}: expected true or false, got {value:?}"),
            Some(name.to_string()),
        )),
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

async fn app_logs(
    State(state): State<HttpState>,
    Path(log_guid): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    let query = ReadQuery::parse(&pairs, false)?;
    Ok(read(&state, &log_guid, query, |m| m))
}

async fn debug_logs(
    State(state): State<HttpState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Response, HttpError> {
    let query = ReadQuery::parse(&pairs, true)?;
    if query.raw {
        Ok(read(&state, DEBUG_LOG_GUID, query, |m| m))
    } else {
        Ok(read(&state, DEBUG_LOG_GUID, query, |mut m| {
            m.message = debug::render(&m.message);
            m
        }))
    }
}

/// The recent lines as JSON, or the follow stream as SSE, each line passed
/// through `shape`.
fn read(
    state: &HttpState,
    log_guid: &str,
    query: ReadQuery,
    shape: fn(LogMessage) -> LogMessage,
) -> Response {
    if !query.follow {
        let lines: Vec<LogMessage> = if query.recent {
            state.hub.recent(log_guid, &query.filter)
        } else {
            Vec::new()
        };
        return Json(lines.into_iter().map(shape).collect::<Vec<_>>()).into_response();
    }
    let options = FollowOptions {
        recent: query.recent,
        source: query.filter.source,
        instance: query.filter.instance,
    };
    let follower = state.hub.follow(log_guid, options);
    let shutdown = state.shutdown.clone().cancelled_owned();
    let events = follower
        .map(move |message| {
            let event = Event::default()
                .event(LOG_EVENT)
                .json_data(shape(message))
                // Strings and integers always serialise to JSON.
                .expect("a log line is always serialisable");
            Ok::<_, Infallible>(event)
        })
        .take_until(shutdown);
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]], max: usize) -> (Vec<(usize, String)>, Option<String>) {
        let mut lines = Vec::new();
        let mut buffer = LineBuffer::new(max);
        let mut each = |n: usize, l: &[u8]| {
            lines.push((n, String::from_utf8_lossy(l).into_owned()));
            Ok(())
        };
        for chunk in chunks {
            if let Err(e) = buffer.push(chunk, &mut each) {
                return (lines, Some(e.0.message));
            }
        }
        let end = buffer.finish(&mut each).err().map(|e| e.0.message);
        (lines, end)
    }

    #[test]
    fn lines_are_split_across_chunks_and_numbered() {
        let (lines, error) = split(&[b"ab", b"c\nd\n\n", b"ef"], 10);
        assert_eq!(error, None);
        assert_eq!(
            lines,
            [
                (1, "abc".into()),
                (2, "d".into()),
                (3, "".into()),
                (4, "ef".into())
            ]
        );
    }

    #[test]
    fn long_lines_are_refused_with_their_number() {
        let (lines, error) = split(&[b"ok\n0123", b"456789", b"x\n"], 10);
        assert_eq!(lines, [(1, "ok".into())]);
        assert_eq!(
            error.as_deref(),
            Some("line 2 is longer than the limit of 10 bytes")
        );
        let (_, error) = split(&[b"short\n01234567890\n"], 10);
        assert_eq!(
            error.as_deref(),
            Some("line 2 is longer than the limit of 10 bytes")
        );
        let (lines, error) = split(&[b"0123456789\n"], 10);
        assert_eq!((lines.len(), error), (1, None), "exactly the limit is fine");
    }

    fn pairs(raw: &[(&str, &str)]) -> Vec<(String, String)> {
        raw.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn queries_are_checked_and_name_the_parameter() {
        let query = ReadQuery::parse(&[], false).expect("no parameters is fine");
        assert_eq!(
            query,
            ReadQuery {
                follow: false,
                recent: true,
                filter: LogFilter::default(),
                raw: false
            }
        );
        let query = ReadQuery::parse(
            &pairs(&[
                ("follow", "true"),
                ("recent", "false"),
                ("source", "APP"),
                ("instance", ""),
            ]),
            false,
        )
        .expect("valid parameters");
        assert!(query.follow && !query.recent);
        assert_eq!(query.filter.source.as_deref(), Some("APP"));
        assert_eq!(query.filter.instance, None);

        let err = ReadQuery::parse(&pairs(&[("follow", "yes")]), false).unwrap_err();
        assert_eq!(err.0.field.as_deref(), Some("follow"));
        let err = ReadQuery::parse(&pairs(&[("raw", "true")]), false).unwrap_err();
        assert_eq!(err.0.field.as_deref(), Some("raw"));
        assert!(
            ReadQuery::parse(&pairs(&[("raw", "true")]), true)
                .expect("raw is a debug-logs parameter")
                .raw
        );
    }
}
