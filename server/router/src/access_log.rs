//! Access logging: one line per proxied request, in the shape of Cloud
//! Foundry's router (`RTR`) lines, handed to an [`AccessLog`] sink keyed by
//! the app's log guid so that `ltc logs APP` can show it.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Where access lines go. The server bundle connects this to the app log
/// stream with source `RTR`.
///
/// # Assumptions
/// Called on the request's task when its response ends: it must not block
/// (queue or drop, never wait).
pub trait AccessLog: Send + Sync + 'static {
    /// `log_guid` is the routed app's log guid; `line` is the whole line.
    fn log(&self, log_guid: &str, line: String);
}

/// Writes access lines as `tracing` events at INFO, target
/// `lattice_router::access`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAccessLog;

impl AccessLog for TracingAccessLog {
    fn log(&self, log_guid: &str, line: String) {
        tracing::info!(target: "lattice_router::access", log_guid, "{line}");
    }
}

/// What the access line says about one request.
#[derive(Debug, Clone)]
pub(crate) struct AccessRecord {
    pub started: SystemTime,
    pub client: SocketAddr,
    pub method: String,
    pub host: String,
    /// Path and query, as requested.
    pub path: String,
    pub version: &'static str,
    pub referer: String,
    pub user_agent: String,
    pub forwarded_for: String,
    pub request_id: String,
    /// `host:port` of the backend that answered (or was last tried), `-`
    /// when none was.
    pub backend: String,
    /// The app the request was routed to; `None` for unknown routes.
    pub log_guid: Option<String>,
    pub index: Option<i64>,
    pub status: u16,
}

impl AccessRecord {
    /// The line, after Cloud Foundry's router format:
    /// `HOST - [TIME] "METHOD PATH VERSION" STATUS BYTES_SENT "REFERER"
    /// "USER_AGENT" "CLIENT" "BACKEND" x_forwarded_for:"..."
    /// x_forwarded_proto:"http" vcap_request_id:"..." response_time:SECS
    /// app_index:"N"`.
    pub fn line(&self, bytes_sent: u64, duration: Duration) -> String {
        format!(
            "{host} - [{time}] \"{method} {path} {version}\" {status} {bytes_sent} \"{referer}\" \"{agent}\" \"{client}\" \"{backend}\" x_forwarded_for:\"{xff}\" x_forwarded_proto:\"http\" vcap_request_id:\"{id}\" response_time:{secs:.6} app_index:\"{index}\"",
            host = self.host,
            time = humantime::format_rfc3339_millis(self.started),
            method = self.method,
            path = escape(&self.path),
            version = self.version,
            status = self.status,
            referer = dash_if_empty(&escape(&self.referer)),
            agent = dash_if_empty(&escape(&self.user_agent)),
            client = self.client,
            backend = self.backend,
            xff = escape(&self.forwarded_for),
            id = escape(&self.request_id),
            secs = duration.as_secs_f64(),
            index = self.index.map_or_else(|| "-".to_string(), |i| i.to_string()),
        )
    }
}

/// Escapes what would break the quoting of a field: a client controls these.
/// Most fields need nothing, and are not copied.
fn escape(text: &str) -> Cow<'_, str> {
    if text.contains(['\\', '"']) {
        Cow::Owned(text.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        Cow::Borrowed(text)
    }
}

fn dash_if_empty(text: &str) -> &str {
    if text.is_empty() {
        "-"
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_names_request_answer_and_backend() {
        let record = AccessRecord {
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            client: "127.0.0.1:50000".parse().expect("a socket address literal"),
            method: "GET".into(),
            host: "web.example".into(),
            path: "/a?b=c".into(),
            version: "HTTP/1.1",
            referer: String::new(),
            user_agent: "curl/8 \"quoted\"".into(),
            forwarded_for: "127.0.0.1".into(),
            request_id: "id-1".into(),
            backend: "10.0.0.1:60000".into(),
            log_guid: Some("web".into()),
            index: Some(2),
            status: 200,
        };
        assert_eq!(
            record.line(1234, Duration::from_millis(5)),
            "web.example - [2023-11-14T22:13:20.000Z] \"GET /a?b=c HTTP/1.1\" 200 1234 \"-\" \
             \"curl/8 \\\"quoted\\\"\" \"127.0.0.1:50000\" \"10.0.0.1:60000\" \
             x_forwarded_for:\"127.0.0.1\" x_forwarded_proto:\"http\" vcap_request_id:\"id-1\" \
             response_time:0.005000 app_index:\"2\""
        );
    }
}
