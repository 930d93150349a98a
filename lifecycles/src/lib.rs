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
//! - [`buildpack_builder`]: `buildpack-builder`, the buildpack app
//!   lifecycle's staging: detect, compile and release with buildpacks, then
//!   write the droplet and the staging result.
//! - [`droplet_launcher`]: `droplet-launcher [-- CMD ARGS...]`: runs an
//!   unpacked droplet's start command (or the given one).
//! - [`yaml`]: the YAML subset buildpacks' `bin/release` prints.
//!
//! Sample buildpacks and a sample app (POSIX sh, for busybox) live in
//! `lifecycles/samples/`; the tests stage and run them.
//!
//! `lattice-init` (the container's PID 1 and process spawner) keeps its logic
//! in its own binary, as it depends on nothing here.

pub mod args;
pub mod builder;
pub mod buildpack_builder;
pub mod droplet_launcher;
pub mod healthcheck;
pub mod image_config;
pub mod launcher;
pub mod yaml;
