//! The log hub: collects the log lines of every task and LRP instance (and
//! the server's own logs), keeps the recent ones per app, and streams them
//! live to `ltc logs` and `ltc debug-logs`.
//!
//! It must never slow down what produces lines: publishing never blocks and
//! never awaits, and a reader that cannot keep up loses lines (and is told
//! how many) instead of holding anyone back.
//!
//! # Layout
//! - [`hub`]: [`LogHub`] (recent buffers, followers, drop markers).
//! - [`disk`]: the recent lines kept on disk across restarts
//!   ([`LogHub::keep_on_disk`]), bounded per app and in apps.
//! - [`debug`]: [`TracingLayer`], the server's tracing events as log lines
//!   under [`DEBUG_LOG_GUID`], and their human rendering.
//! - [`sink`]: [`HubSink`] (in process) and [`RemoteSink`] + [`Forwarder`]
//!   (a cell on another machine), the executor's `LogSink`s.
//! - [`http`]: the HTTP API (ingest, recent, follow as Server-Sent Events).
//! - The API's client, [`LogsClient`], lives in `lattice_client` (so `ltc`
//!   does not link the hub); it is re-exported here.
//!
//! ```text
//! executor ─emit─▶ HubSink ───────────────────────publish─▶ LogHub ─▶ Follower ─SSE─▶ LogsClient (ltc logs)
//! executor ─emit─▶ RemoteSink ─▶ Forwarder ─POST NDJSON─▶ http ─┘  └─▶ recent ─JSON─▶ LogsClient
//! tracing ─▶ TracingLayer ─▶ (either sink), log guid `lattice-debug`
//! ```

pub mod debug;
pub mod disk;
pub mod http;
pub mod hub;
pub mod sink;

pub use disk::DiskConfig;
pub use hub::{
    FollowOptions, Follower, HubConfig, LogFilter, LogHub, TracingLayer, DEBUG_LOG_GUID,
    SOURCE_LOGGREGATOR,
};
pub use lattice_client::{ClientError, LogStream, LogsClient};
pub use sink::{Forwarder, HubSink, RemoteSink, RemoteSinkConfig};
