//! The route-emitter and the router: how outside traffic reaches running
//! LRP instances.
//!
//! ```text
//!  receptor ──/v1/events + lists──▶ RouteEmitter ──▶ TableHandle
//!                                                        │ current()
//!                     client ──HTTP (Host)──▶ HttpRouter ┤──▶ instance host:port
//!                     client ──TCP (port)───▶ TcpRouter ─┘
//! ```
//!
//! The emitter follows the receptor's public API (its event stream and list
//! endpoints) through [`lattice_client::Client`], not the store: the router
//! can then run in another process or on another machine (Diego's router
//! tier) with nothing but the receptor's URL, and `lattice up` runs the very
//! same code in one process. The table is rebuilt whole from a snapshot (see
//! [`emitter`] for why), so it is always what [`routing_table`] says for
//! some consistent state of the store.
//!
//! It must never: route to an instance that is not RUNNING in the last
//! snapshot; retry a request whose body the backend may have seen; buffer a
//! whole body; let an error of the receptor empty the table.
//!
//! # Layout
//! - [`table`]: [`routing_table`] (pure) and the shared [`TableHandle`].
//! - [`emitter`]: [`RouteEmitter`], keeping the table current.
//! - [`http`]: [`HttpRouter`], the reverse proxy by `Host` header.
//! - [`tcp`]: [`TcpRouter`], raw TCP by external port.
//! - [`access_log`]: the [`AccessLog`] sink of per-request lines (`RTR`).
//! - `backend`: the proxy's backend connections, driven in the client's task.
//! - `body`: the streaming request and response bodies of the proxy.

pub mod access_log;
mod backend;
mod body;
pub mod emitter;
pub mod http;
pub mod table;
pub mod tcp;

pub use access_log::{AccessLog, TracingAccessLog};
pub use emitter::{EmitterConfig, EmitterError, RouteEmitter};
pub use http::{bind_shared, HttpRouter, HttpRouterConfig};
pub use table::{routing_table, Endpoint, RoutingTable, TableHandle};
pub use tcp::{TcpRouter, TcpRouterConfig};
