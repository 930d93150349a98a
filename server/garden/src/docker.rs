//! The Docker backend of Garden (bollard).
