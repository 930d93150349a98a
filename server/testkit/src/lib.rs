//! Shared test support for Lattice: what every layer's tests need to reach
//! the real Docker engine of this machine, where no image can be pulled.
//!
//! It must never be a dependency of production code: it builds binaries,
//! imports images and removes containers as a test needs.
//!
//! # Layout
//! - [`lifecycles`]: builds the static lifecycle binaries (`lattice-init`)
//!   once per process, under a file lock shared by parallel test binaries.
//! - [`images`]: test images built locally from a static busybox.
//! - [`docker`]: a negotiated engine connection, and removal of containers by
//!   their owner label (also on drop, through [`docker::OwnerGuard`]).
//! - [`postgres`]: a real PostgreSQL server, one database per test.

pub mod docker;
pub mod garden;
pub mod images;
pub mod lifecycles;
pub mod postgres;
