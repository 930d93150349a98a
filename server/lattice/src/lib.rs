//! The lattice server bundle: one binary whose roles run the whole cluster
//! (`lattice up`) or parts of it on different machines (`lattice brain`,
//! `lattice cell`, `lattice router`).
//!
//! Roles talk through the same interfaces whether they share a process or not,
//! so the one-machine default runs the same code paths as a real cluster.
//!
//! # Layout
//! - [`up`]: the all-in-one role: store, receptor, auctioneer, and a cell.
//! - [`cell`]: the cell role (Docker garden, executor, rep).
//! - [`router`]: the router role (route emitter, HTTP and TCP routers).
//! - [`roles`]: the roles apart: brain, cell and router processes for a
//!   cluster of several machines.
//! - [`ssh`]: the SSH proxy (`ltc ssh`) in `up` and the brain.
//! - [`shutdown`]: signal handling and draining.
//! - [`metrics`]: `GET /metrics` (Prometheus text) and the API request
//!   counters.

pub mod cell;
pub mod metrics;
pub mod roles;
pub mod router;
pub mod shutdown;
pub mod ssh;
pub mod up;
