//! Lifecycle helpers shared by the static binaries.
