//! Typed clients of everything the receptor serves, shared by `ltc`, the
//! server's own remote parts and the tests: the receptor API, the log hub
//! and the file server; and of the reps' auction API. A client crate holds wire calls only: it must never
//! depend on a server crate (the CI check `installers/check-deps.sh` fails if
//! `ltc` links one), so wire types live in `lattice_models`.
//!
//! One method per endpoint; bodies are the `lattice_models` types. The client
//! never retries and never interprets answers beyond decoding them: deciding
//! what an error means to a user is the caller's job.
//!
//! # Layout
//! - [`Client`]: the receptor's endpoints, one method each.
//! - [`LogsClient`] (in `logs`): the log hub's recent and follow streams.
//! - [`FileServerClient`] (in `files`): blobs and droplets, streamed.
//! - [`RepClient`] (in `rep`): a cell's auction API, for the auctioneer,
//!   and its sessions ([`session`]), for the SSH proxy.
//! - [`ClientError`] (in `error`): what a call to any of them can fail with.
//! - [`Info`], [`Credentials`]: the small types only the client needs.
//!
//! # Guarantees
//! - Every caller-supplied path segment (guid, domain) is percent-encoded, and
//!   segments that would change the path (`""`, `.`, `..`) are refused, so an
//!   argument can never address another resource.
//! - Ordinary calls give up after [`REQUEST_TIMEOUT`]; the event stream has no
//!   overall timeout, only the [`CONNECT_TIMEOUT`] every call has.

use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource};
use futures::stream::{BoxStream, StreamExt};
use lattice_models::lifecycle::ImageConfig;
use lattice_models::parse::{readable_items, Readable};
use lattice_models::{
    ActualLrp, CellResponse, ContainerMetrics, DesiredLrp, DesiredLrpCreateRequest,
    DesiredLrpUpdateRequest, Event, Task, TaskCreateRequest, VersionResponse,
};
use reqwest::header::{ACCEPT, CACHE_CONTROL};
use reqwest::{Method, RequestBuilder, Response, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod error;
mod files;
mod logs;
mod rep;
pub mod session;

use error::check_segment;
pub use error::{error_from_body, parse_target, transport_error, ClientError};
pub use files::FileServerClient;
pub use logs::{LogStream, LogsClient};
pub use rep::{RepClient, RepClientError};

/// How long to wait for a TCP connection to the receptor.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client every receptor-facing client (API, logs) shares the
/// settings of: a connect timeout and no overall one (streams stay open).
pub(crate) fn http_client() -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(ClientError::Setup)
}

/// How long an ordinary call (not the event stream) may take in total.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// HTTP basic-auth credentials of the receptor.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }
}

// Hand-written so that a password never ends up in a log or a panic message.
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// `GET /v1/info`: what the receptor says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The server's version, e.g. `0.1.0`.
    pub version: String,
    /// The system domain under which apps get their routes.
    pub domain: String,
    /// Where the router listens (`host:port`), if the cluster runs one.
    #[serde(default)]
    pub router_address: Option<String>,
    /// The SSH proxy's port (on the receptor's host), if the cluster runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// The SSH proxy's host key fingerprint (`SHA256:...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host_key_fingerprint: Option<String>,
}

/// A file the receptor sends (`GET /v1/sync/:arch/ltc`).
pub struct Download {
    /// Its size in bytes, when the receptor said it.
    pub length: Option<u64>,
    pub chunks: BoxStream<'static, Result<bytes::Bytes, ClientError>>,
}

/// The change events of `GET /v1/events`, in the order the store committed
/// them. An item that fails to decode is an `Err` and the stream goes on; the
/// stream ends when the receptor closes the connection.
pub type EventStream = BoxStream<'static, Result<Event, ClientError>>;

/// A client of one receptor. Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    credentials: Option<Credentials>,
}

impl Client {
    /// A client of the receptor at `target` (`http://host:port`, optionally
    /// with a path prefix). No request is made.
    ///
    /// # Errors
    /// [`ClientError::InvalidTarget`] if `target` is not an `http` URL with a
    /// host, or carries credentials, a query or a fragment.
    pub fn new(target: &str, credentials: Option<Credentials>) -> Result<Client, ClientError> {
        let base = parse_target(target)?;
        let http = http_client()?;
        Ok(Client {
            http,
            base,
            credentials,
        })
    }

    /// The receptor's URL, as given to [`Client::new`] (normalised).
    pub fn target(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    // --- info --------------------------------------------------------------

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<Info, ClientError> {
        self.get_json(&["v1", "info"]).await
    }

    /// `GET /v1/version`: the versions of what the cluster runs.
    pub async fn version(&self) -> Result<VersionResponse, ClientError> {
        self.get_json(&["v1", "version"]).await
    }

    /// `GET /v1/sync/:arch/ltc`: the cluster's `ltc` for `arch` (`linux`,
    /// `osx`): its length when the receptor said it, and its bytes as a
    /// stream of chunks. No overall timeout (the binary is tens of
    /// megabytes); the receptor's 404 names what it has instead.
    pub async fn sync_ltc(&self, arch: &str) -> Result<Download, ClientError> {
        check_segment("architecture", arch)?;
        let response = self
            .execute(self.request(Method::GET, &["v1", "sync", arch, "ltc"]))
            .await?;
        let target = self.target().to_string();
        Ok(Download {
            length: response.content_length(),
            chunks: response
                .bytes_stream()
                .map(move |chunk| chunk.map_err(|e| transport_error(&target, e)))
                .boxed(),
        })
    }

    // --- tasks -------------------------------------------------------------

    /// `POST /v1/tasks`.
    pub async fn create_task(&self, request: &TaskCreateRequest) -> Result<(), ClientError> {
        self.send_json(Method::POST, &["v1", "tasks"], request)
            .await
    }

    /// `GET /v1/tasks`.
    pub async fn tasks(&self) -> Result<Vec<Task>, ClientError> {
        self.get_list(&["v1", "tasks"]).await
    }

    /// `GET /v1/domains/:domain/tasks`.
    pub async fn tasks_by_domain(&self, domain: &str) -> Result<Vec<Task>, ClientError> {
        check_segment("domain", domain)?;
        self.get_list(&["v1", "domains", domain, "tasks"]).await
    }

    /// `GET /v1/tasks/:task_guid`.
    pub async fn task(&self, task_guid: &str) -> Result<Task, ClientError> {
        check_segment("task guid", task_guid)?;
        self.get_json(&["v1", "tasks", task_guid]).await
    }

    /// `POST /v1/tasks/:task_guid/cancel`.
    pub async fn cancel_task(&self, task_guid: &str) -> Result<(), ClientError> {
        check_segment("task guid", task_guid)?;
        self.send_empty(Method::POST, &["v1", "tasks", task_guid, "cancel"])
            .await
    }

    /// `DELETE /v1/tasks/:task_guid`; the receptor refuses (409
    /// `TaskNotDeletable`) unless the task is COMPLETED.
    pub async fn delete_task(&self, task_guid: &str) -> Result<(), ClientError> {
        check_segment("task guid", task_guid)?;
        self.send_empty(Method::DELETE, &["v1", "tasks", task_guid])
            .await
    }

    // --- desired LRPs ------------------------------------------------------

    /// `POST /v1/desired_lrps`.
    pub async fn create_desired_lrp(
        &self,
        request: &DesiredLrpCreateRequest,
    ) -> Result<(), ClientError> {
        self.send_json(Method::POST, &["v1", "desired_lrps"], request)
            .await
    }

    /// `GET /v1/desired_lrps`.
    pub async fn desired_lrps(&self) -> Result<Vec<DesiredLrp>, ClientError> {
        self.get_list(&["v1", "desired_lrps"]).await
    }

    /// `GET /v1/domains/:domain/desired_lrps`.
    pub async fn desired_lrps_by_domain(
        &self,
        domain: &str,
    ) -> Result<Vec<DesiredLrp>, ClientError> {
        check_segment("domain", domain)?;
        self.get_list(&["v1", "domains", domain, "desired_lrps"])
            .await
    }

    /// `GET /v1/desired_lrps/:process_guid`.
    pub async fn desired_lrp(&self, process_guid: &str) -> Result<DesiredLrp, ClientError> {
        check_segment("process guid", process_guid)?;
        self.get_json(&["v1", "desired_lrps", process_guid]).await
    }

    /// `PUT /v1/desired_lrps/:process_guid`.
    pub async fn update_desired_lrp(
        &self,
        process_guid: &str,
        update: &DesiredLrpUpdateRequest,
    ) -> Result<(), ClientError> {
        check_segment("process guid", process_guid)?;
        self.send_json(Method::PUT, &["v1", "desired_lrps", process_guid], update)
            .await
    }

    /// `DELETE /v1/desired_lrps/:process_guid`.
    pub async fn delete_desired_lrp(&self, process_guid: &str) -> Result<(), ClientError> {
        check_segment("process guid", process_guid)?;
        self.send_empty(Method::DELETE, &["v1", "desired_lrps", process_guid])
            .await
    }

    // --- actual LRPs -------------------------------------------------------

    /// `GET /v1/actual_lrps`.
    pub async fn actual_lrps(&self) -> Result<Vec<ActualLrp>, ClientError> {
        self.get_list(&["v1", "actual_lrps"]).await
    }

    /// `GET /v1/domains/:domain/actual_lrps`.
    pub async fn actual_lrps_by_domain(&self, domain: &str) -> Result<Vec<ActualLrp>, ClientError> {
        check_segment("domain", domain)?;
        self.get_list(&["v1", "domains", domain, "actual_lrps"])
            .await
    }

    /// `GET /v1/actual_lrps/:process_guid`.
    pub async fn actual_lrps_by_process_guid(
        &self,
        process_guid: &str,
    ) -> Result<Vec<ActualLrp>, ClientError> {
        check_segment("process guid", process_guid)?;
        self.get_list(&["v1", "actual_lrps", process_guid]).await
    }

    /// `GET /v1/actual_lrps/:process_guid/index/:index`.
    pub async fn actual_lrp(
        &self,
        process_guid: &str,
        index: i64,
    ) -> Result<ActualLrp, ClientError> {
        check_segment("process guid", process_guid)?;
        let index = index.to_string();
        self.get_json(&["v1", "actual_lrps", process_guid, "index", &index])
            .await
    }

    /// `GET /v1/actual_lrps/:process_guid/metrics` (ours): the latest usage
    /// sample of each running instance, by index, as its cell took it.
    pub async fn actual_lrp_metrics(
        &self,
        process_guid: &str,
    ) -> Result<Vec<ContainerMetrics>, ClientError> {
        check_segment("process guid", process_guid)?;
        self.get_list(&["v1", "actual_lrps", process_guid, "metrics"])
            .await
    }

    /// `DELETE /v1/actual_lrps/:process_guid/index/:index`: stops that
    /// instance so that it is started again.
    pub async fn restart_actual_lrp(
        &self,
        process_guid: &str,
        index: i64,
    ) -> Result<(), ClientError> {
        check_segment("process guid", process_guid)?;
        let index = index.to_string();
        self.send_empty(
            Method::DELETE,
            &["v1", "actual_lrps", process_guid, "index", &index],
        )
        .await
    }

    // --- cells and domains -------------------------------------------------

    /// `GET /v1/cells`.
    pub async fn cells(&self) -> Result<Vec<CellResponse>, ClientError> {
        self.get_list(&["v1", "cells"]).await
    }

    /// `POST /v1/cells/:cell_id/drain` (ours): the cell stops taking work
    /// and moves its running instances to other cells (Diego's
    /// evacuation); returns once the cell accepted, while it drains.
    pub async fn drain_cell(&self, cell_id: &str) -> Result<(), ClientError> {
        check_segment("cell id", cell_id)?;
        self.send_empty(Method::POST, &["v1", "cells", cell_id, "drain"])
            .await
    }

    /// `GET /v1/image_config?rootfs=URL` (ours): the config of the Docker
    /// image of `rootfs`, read by a cell from its engine (which pulls it
    /// first when absent, so there is no request timeout).
    ///
    /// # Errors
    /// A 404 when the image cannot be had, 400 for a rootfs that is no
    /// `docker://` URL, 503 when no cell could be asked.
    pub async fn image_config(&self, rootfs: &str) -> Result<ImageConfig, ClientError> {
        let request = self
            .request(Method::GET, &["v1", "image_config"])
            .query(&[("rootfs", rootfs)]);
        let response = self.execute(request).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(self.target(), e))?;
        serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
            what: "the answer to GET /v1/image_config".to_string(),
            source: source.into(),
        })
    }

    /// `PUT /v1/domains/:domain`; the domain expires after `ttl`, or never.
    pub async fn upsert_domain(
        &self,
        domain: &str,
        ttl: Option<Duration>,
    ) -> Result<(), ClientError> {
        check_segment("domain", domain)?;
        let mut request = self.request(Method::PUT, &["v1", "domains", domain]);
        if let Some(ttl) = ttl {
            request = request.header(CACHE_CONTROL, format!("max-age={}", ttl.as_secs()));
        }
        self.execute(request.timeout(REQUEST_TIMEOUT)).await?;
        Ok(())
    }

    /// `GET /v1/domains`.
    pub async fn domains(&self) -> Result<Vec<String>, ClientError> {
        self.get_json(&["v1", "domains"]).await
    }

    // --- events ------------------------------------------------------------

    /// `GET /v1/events`: subscribes to the change feed. Returns once the
    /// receptor accepted the subscription, so that a refused one (401, down)
    /// is an error here rather than the stream's first item.
    ///
    /// # Caveats
    /// Events committed before the subscription are not replayed; read the
    /// current state after subscribing to miss nothing.
    pub async fn events(&self) -> Result<EventStream, ClientError> {
        let request = self
            .request(Method::GET, &["v1", "events"])
            .header(ACCEPT, "text/event-stream");
        let response = self.execute(request).await?;
        let target = self.target().to_string();
        let stream = response
            .bytes_stream()
            .eventsource()
            .map(move |item| match item {
                Ok(sse) => {
                    Event::from_parts(&sse.event, &sse.data).map_err(|source| ClientError::Decode {
                        what: format!("event {:?}", sse.event),
                        source: source.into(),
                    })
                }
                Err(EventStreamError::Transport(source)) => Err(transport_error(&target, source)),
                Err(other) => Err(ClientError::Decode {
                    what: "the event stream".to_string(),
                    source: Box::new(other),
                }),
            });
        Ok(stream.boxed())
    }

    // --- plumbing ----------------------------------------------------------

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            // parse_target only accepts http URLs with a host, which always have a path.
            .expect("an http URL can be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        let request = self.http.request(method, self.url(segments));
        match &self.credentials {
            Some(c) => request.basic_auth(&c.username, Some(&c.password)),
            None => request,
        }
    }

    /// Sends `request`; a non-2xx answer becomes an error.
    async fn execute(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(self.target(), e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(self.error_from(response).await)
        }
    }

    async fn error_from(&self, response: Response) -> ClientError {
        let status = response.status().as_u16();
        match response.bytes().await {
            Ok(body) => error_from_body(self.target(), status, &body),
            Err(e) => transport_error(self.target(), e),
        }
    }

    /// A list whose items are decoded one by one: an item this client
    /// cannot decode (a newer server's, or one nested past the decoder's
    /// limit) is logged and skipped rather than failing the whole list, so
    /// that one bad record cannot hide the others from `ltc list` or empty
    /// the router's table.
    async fn get_list<T: DeserializeOwned>(
        &self,
        segments: &[&str],
    ) -> Result<Vec<T>, ClientError> {
        let items: Vec<Readable<T>> = self.get_json(segments).await?;
        let (items, unreadable) = readable_items(items);
        for reason in unreadable {
            tracing::warn!(target = %self.target(), path = %segments.join("/"), error = %reason, "skipping an unreadable item of a list");
        }
        Ok(items)
    }

    async fn get_json<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, ClientError> {
        let request = self.request(Method::GET, segments).timeout(REQUEST_TIMEOUT);
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

    /// Sends `body` as JSON; the answer's body, if any, is not read.
    async fn send_json<B: Serialize>(
        &self,
        method: Method,
        segments: &[&str],
        body: &B,
    ) -> Result<(), ClientError> {
        let request = self
            .request(method, segments)
            .json(body)
            .timeout(REQUEST_TIMEOUT);
        self.execute(request).await?;
        Ok(())
    }

    async fn send_empty(&self, method: Method, segments: &[&str]) -> Result<(), ClientError> {
        let request = self.request(method, segments).timeout(REQUEST_TIMEOUT);
        self.execute(request).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        let client = Client::new("http://127.0.0.1:8888", None).unwrap();
        assert_eq!(
            client.url(&["v1", "tasks", "a/b?c#d %"]).as_str(),
            "http://127.0.0.1:8888/v1/tasks/a%2Fb%3Fc%23d%20%25"
        );
    }

    #[test]
    fn a_path_prefix_is_kept() {
        let client = Client::new("http://example.test:80/receptor/", None).unwrap();
        assert_eq!(client.target(), "http://example.test/receptor");
        assert_eq!(
            client.url(&["v1", "info"]).as_str(),
            "http://example.test/receptor/v1/info"
        );
    }

    #[test]
    fn dot_segments_are_refused() {
        for bad in ["", ".", ".."] {
            let err = check_segment("task guid", bad).unwrap_err();
            assert!(
                matches!(err, ClientError::InvalidArgument { .. }),
                "{bad:?}: {err}"
            );
        }
        check_segment("task guid", "...").unwrap();
    }

    #[test]
    fn targets_are_checked() {
        for (target, reason) in [
            ("127.0.0.1:8888", "relative URL"),
            ("https://x:1", "https is not supported"),
            ("ftp://x", "expected http"),
            ("http://u:p@x:1", "credentials"),
            ("http://x:1/?a=b", "query"),
        ] {
            let err = Client::new(target, None).unwrap_err();
            assert!(err.to_string().contains(reason), "{target}: {err}");
        }
        assert_eq!(
            Client::new("http://127.0.0.1:8888", None).unwrap().target(),
            "http://127.0.0.1:8888"
        );
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let debug = format!("{:?}", Credentials::new("admin", "s3cret"));
        assert!(debug.contains("admin"));
        assert!(!debug.contains("s3cret"));
    }

    #[test]
    fn info_without_router() {
        let info: Info = serde_json::from_str(
            r#"{"version":"0.1.0","domain":"localhost","router_address":null}"#,
        )
        .unwrap();
        assert_eq!(info.router_address, None);
    }
}
