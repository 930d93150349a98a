//! Shared test support for Lattice: what every layer's tests need to reach
//! the real Docker engine of this machine, where no image can be pulled,
//! and a whole cluster in process for the tests that need no engine.
//!
//! It must never be a dependency of production code: it builds binaries,
//! imports images and removes containers as a test needs.
//!
//! # Layout
//! - [`cluster`] (feature `cluster`): a brain and N cells on the fake
//!   Garden in one process, for cluster behaviour without Docker.
//! - [`lifecycles`]: builds the static lifecycle binaries (`lattice-init`)
//!   once per process, under a file lock shared by parallel test binaries.
//! - [`images`]: test images built locally from a static busybox.
//! - [`docker`]: a negotiated engine connection, and removal of containers by
//!   their owner label (also on drop, through [`docker::OwnerGuard`]).
//! - [`postgres`]: a real PostgreSQL server, one database per test.
//! - [`wait`]: polling for a state, with a limit against hanging.

#[cfg(feature = "cluster")]
pub mod cluster;
pub mod docker;
pub mod garden;
pub mod images;
pub mod lifecycles;
pub mod postgres;
pub mod wait;
