//! The lifecycle binaries Garden puts into every container (at
//! `/.lattice/bin/`), and the logic behind them, kept here so it can be unit
//! tested; the binaries under `src/bin/` only parse arguments, call in, and
//! map the outcome to an exit code.
//!
//! Every binary must link statically (`+crt-static`, see
//! `installers/build-lifecycles.sh`): it runs in any user image, even one
//! without a libc or a shell. So this crate depends on pure Rust crates and
//! libc only, and must never grow a native dependency (OpenSSL, ...).
//!
//! # Layout
//! - [`args`]: flag parsing shared by the binaries, and their exit codes.
//! - [`image_config`]: reading the image config Garden writes.
//! - [`builder`]: `builder --output PATH`, the Docker app lifecycle's
//!   staging: writes the image's execution metadata.
//! - [`launcher`]: `launcher [-- CMD ARGS...]`: runs the image's (or the
//!   given) command with the image's environment and working directory.
//! - [`healthcheck`]: `healthcheck --port N [--uri /path]`: a TCP or HTTP
//!   probe.
//!
//! `lattice-init` (the container's PID 1 and process spawner) keeps its logic
//! in its own binary, as it depends on nothing here.

pub mod args;
pub mod builder;
pub mod healthcheck;
pub mod image_config;
pub mod launcher;
