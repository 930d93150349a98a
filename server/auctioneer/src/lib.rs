//! The auctioneer's decision logic: which cell runs which LRP instance and
//! which task.
//!
//! [`auction`] is a pure function of a snapshot of the cells and a batch of
//! work. It must never do I/O, read a clock or draw a random number: the
//! caller gathers the cells' states from their reps, calls it, and sends each
//! winning cell its [`Work`](lattice_models::auction::Work). That keeps the
//! algorithm testable on its own and lets [`simulation`] run the very same
//! code on thousands of in-process cells. The scoring rules, a data-flow
//! sketch and a glossary are in this crate's README.
//!
//! # Layout
//! - [`scheduler`]: [`auction`], the scoring and the working copy of cells.
//! - [`simulation`]: a seeded cluster and load run through [`auction`] in
//!   batches, reporting placement failures, balance and spread.
//! - [`pending`]: [`pending::select`], which work the next auction gets
//!   (pure, like [`auction`]).
//! - [`runner`]: the only part with I/O: the loop that holds the auctioneer
//!   lock, gathers pending work and cell states, calls [`auction`] and sends
//!   each cell its work.
//! - `clock`: the runner's one reading of the clock.
//!
//! The wire types (cell state, requests, results) live in
//! [`lattice_models::auction`], because the reps speak them too.

mod clock;
pub mod pending;
pub mod runner;
pub mod scheduler;
pub mod simulation;

pub use scheduler::{auction, SAME_PROCESS_PENALTY};
