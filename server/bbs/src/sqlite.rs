//! The embedded SQLite backend of the store (to be written).
pub struct SqliteStore;
