//! The BBS: the one store of the cluster's state.
//!
//! It holds tasks, desired LRPs, actual LRPs, cell presences, domains and
//! locks. Every write of a record is a compare-and-swap on its
//! [`ModificationTag`]: the writer names the tag it read, and the write fails
//! with [`StoreError::Conflict`] if someone else wrote in between. Every
//! successful write of a task or LRP is published, in commit order, on the
//! change feed ([`Store::subscribe`]), which drives the receptor's event
//! stream and the brain's reactions.
//!
//! The store never decides anything: state transitions are the callers' (see
//! `lattice_models`), the store only makes them atomic and durable.
//!
//! # Layout
//! - [`Store`]: the trait every backend implements; callers hold `Arc<dyn Store>`.
//! - [`modify`]: [`modify::modify_task`] and its kin, the one read, change
//!   and compare-and-swap loop every caller uses.
//! - `sql` (features `sqlite`, `postgres`): every operation written once
//!   over a SQL dialect, as [`SqlStore`]; the backends supply a connection:
//!   - `sqlite`: the default, embedded backend (one file in the data dir).
//!   - `postgres`: the backend of a cluster of several machines; its change
//!     feed crosses processes.
//! - [`open_store`]: picks the backend from a `--store` value.
//! - `rpc` (features `http`, `remote`): the store's wire surface, derived
//!   from one list of operations; `http`: the store served over HTTP by a
//!   brain, behind the cluster secret; `remote`: `RemoteStore`, its
//!   client, for cells and routers on other machines.
//! - [`suite`]: the contract test suite every backend runs, with sample records.
//! - [`instrumented`]: [`InstrumentedStore`], a decorator of any store that
//!   records each operation's latency for `/metrics`.
//!
//! # Features
//! Nothing beyond the trait is compiled unless asked for: `sqlite`,
//! `postgres`, `remote` and `http` each turn on one part (and its
//! dependencies: sqlx, reqwest, axum), so that a crate that only uses the
//! trait (the converger, the auctioneer) compiles none of them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lattice_models::{
    ActualLrp, ActualLrpState, CellPresence, DesiredLrp, Event, ModificationTag, Task, TaskState,
};
use serde::{Deserialize, Serialize};

#[cfg(feature = "http")]
pub mod http;
pub mod instrumented;
pub mod modify;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod records;
#[cfg(feature = "remote")]
pub mod remote;
#[cfg(any(feature = "http", feature = "remote"))]
mod rpc;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;
pub mod suite;

pub use instrumented::InstrumentedStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "remote")]
pub use remote::RemoteStore;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use sql::SqlStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// Which kind of record an error is about; used in messages and, snake
/// case, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Task,
    DesiredLrp,
    ActualLrp,
    Cell,
    Domain,
    Lock,
}

impl std::fmt::Display for RecordKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RecordKind::Task => "task",
            RecordKind::DesiredLrp => "desired LRP",
            RecordKind::ActualLrp => "actual LRP",
            RecordKind::Cell => "cell",
            RecordKind::Domain => "domain",
            RecordKind::Lock => "lock",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No record with that key.
    #[error("{kind} {key:?} not found")]
    NotFound { kind: RecordKind, key: String },
    /// A create found a record with that key already there.
    #[error("{kind} {key:?} already exists")]
    AlreadyExists { kind: RecordKind, key: String },
    /// The record's modification tag is not the one the writer read: someone
    /// else wrote it in between. Re-read and decide again.
    #[error("{kind} {key:?} was modified concurrently; re-read it and retry")]
    Conflict { kind: RecordKind, key: String },
    /// A stored record could not be decoded (written by an incompatible
    /// version, or damaged).
    #[error("stored {kind} {key:?} is unreadable: {reason}")]
    Corrupt {
        kind: RecordKind,
        key: String,
        reason: String,
    },
    /// The backend failed (I/O, connection, migration).
    #[error("store backend failed: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Which tasks to list; `None` fields match everything. Filters travel to a
/// brain as they are; a field an older peer does not send is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskFilter {
    pub domain: Option<String>,
    pub cell_id: Option<String>,
    pub state: Option<TaskState>,
}

/// Which desired LRPs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DesiredLrpFilter {
    pub domain: Option<String>,
}

/// Which actual LRPs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActualLrpFilter {
    pub process_guid: Option<String>,
    pub domain: Option<String>,
    pub cell_id: Option<String>,
    /// Only instances in this state (the auctioneer asks for `UNCLAIMED`).
    pub state: Option<ActualLrpState>,
}

/// What convergence reads of a desired LRP: its key, domain and instance
/// count, from columns of their own (no record JSON decoded), so that a
/// pass over 200,000 of them costs a small row each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredLrpSummary {
    pub process_guid: String,
    pub domain: String,
    pub instances: i64,
}

impl From<&DesiredLrp> for DesiredLrpSummary {
    fn from(lrp: &DesiredLrp) -> Self {
        DesiredLrpSummary {
            process_guid: lrp.process_guid.clone(),
            domain: lrp.domain.clone(),
            instances: lrp.instances,
        }
    }
}

/// What convergence reads of an actual LRP, from columns of their own. The
/// whole record (to write it) is read again only for the instances a pass
/// acts on, and every such write re-checks what was decided here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualLrpSummary {
    pub process_guid: String,
    pub index: i64,
    pub state: ActualLrpState,
    /// Empty while the instance is UNCLAIMED.
    pub cell_id: String,
    pub since: i64,
    pub crash_count: i64,
    /// The cell of the record's evacuating instance, if it has one.
    pub evacuating_cell_id: Option<String>,
}

impl From<&ActualLrp> for ActualLrpSummary {
    fn from(lrp: &ActualLrp) -> Self {
        ActualLrpSummary {
            process_guid: lrp.process_guid.clone(),
            index: lrp.index,
            state: lrp.state,
            cell_id: lrp.cell_id.clone(),
            since: lrp.since,
            crash_count: lrp.crash_count,
            evacuating_cell_id: lrp.evacuating_instance.as_ref().map(|e| e.cell_id.clone()),
        }
    }
}

/// A live subscription to the change feed. A subscriber that falls too far
/// behind gets `RecvError::Lagged` and must re-read the state it cares about.
pub type EventReceiver = tokio::sync::broadcast::Receiver<Event>;

/// The store of the cluster's state. Implementations: [`SqliteStore`]
/// (embedded, default); [`PostgresStore`] for clusters of several machines.
///
/// # Guarantees
/// - A call that returned `Ok` is durable: it survives a restart of the process.
/// - `update_*`/`delete_*` apply only if the given modification tag equals the
///   stored one; on success the stored tag's `index` is one higher and the
///   returned record carries it. `create_*` sets a fresh `epoch` and index 0.
/// - Events are published after commit, in commit order, one per write of a
///   task, desired LRP or actual LRP; a write that changes nothing (same
///   record) still bumps the tag but publishes a `*_changed` event.
///
/// # Assumptions
/// Callers validate records before writing them; the store checks keys only.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- domains ---------------------------------------------------------
    /// Creates or refreshes a domain; `ttl` of `None` never expires.
    async fn upsert_domain(&self, domain: &str, ttl: Option<Duration>) -> StoreResult<()>;
    /// Unexpired domains, sorted.
    async fn domains(&self) -> StoreResult<Vec<String>>;

    // --- tasks -----------------------------------------------------------
    async fn create_task(&self, task: Task) -> StoreResult<Task>;
    async fn get_task(&self, task_guid: &str) -> StoreResult<Task>;
    /// Sorted by `created_at`, then guid.
    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>>;
    /// Compare-and-swap on `task.modification_tag`.
    async fn update_task(&self, task: Task) -> StoreResult<Task>;
    async fn delete_task(&self, task_guid: &str, expected: &ModificationTag) -> StoreResult<()>;

    // --- desired LRPs ----------------------------------------------------
    async fn create_desired_lrp(&self, lrp: DesiredLrp) -> StoreResult<DesiredLrp>;
    async fn get_desired_lrp(&self, process_guid: &str) -> StoreResult<DesiredLrp>;
    /// Sorted by process guid.
    async fn list_desired_lrps(&self, filter: &DesiredLrpFilter) -> StoreResult<Vec<DesiredLrp>>;
    /// Compare-and-swap on `lrp.modification_tag`.
    async fn update_desired_lrp(&self, lrp: DesiredLrp) -> StoreResult<DesiredLrp>;
    async fn delete_desired_lrp(
        &self,
        process_guid: &str,
        expected: &ModificationTag,
    ) -> StoreResult<()>;

    // --- actual LRPs (key: process guid + index) ------------------------
    async fn create_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp>;
    /// Creates those of `lrps` that do not exist yet, in one commit where
    /// the backend can (their events published in order, as for one
    /// create each). In order: each one's stored record, or `None` when it
    /// already existed. The default creates them one at a time.
    async fn create_actual_lrps(
        &self,
        lrps: Vec<ActualLrp>,
    ) -> StoreResult<Vec<Option<ActualLrp>>> {
        let mut created = Vec::with_capacity(lrps.len());
        for lrp in lrps {
            match self.create_actual_lrp(lrp).await {
                Ok(lrp) => created.push(Some(lrp)),
                Err(StoreError::AlreadyExists { .. }) => created.push(None),
                Err(err) => return Err(err),
            }
        }
        Ok(created)
    }
    async fn get_actual_lrp(&self, process_guid: &str, index: i64) -> StoreResult<ActualLrp>;
    /// Sorted by process guid, then index.
    async fn list_actual_lrps(&self, filter: &ActualLrpFilter) -> StoreResult<Vec<ActualLrp>>;
    /// Compare-and-swap on `lrp.modification_tag`.
    async fn update_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp>;
    async fn delete_actual_lrp(
        &self,
        process_guid: &str,
        index: i64,
        expected: &ModificationTag,
    ) -> StoreResult<()>;

    // --- convergence ------------------------------------------------------
    /// Every desired LRP, summarised, sorted by process guid. The default
    /// reads whole records; the SQL backends read three columns.
    async fn list_desired_lrp_summaries(&self) -> StoreResult<Vec<DesiredLrpSummary>> {
        let lrps = self.list_desired_lrps(&DesiredLrpFilter::default()).await?;
        Ok(lrps.iter().map(DesiredLrpSummary::from).collect())
    }
    /// Every actual LRP, summarised, sorted by process guid, then index.
    /// The default reads whole records; the SQL backends read the columns.
    async fn list_actual_lrp_summaries(&self) -> StoreResult<Vec<ActualLrpSummary>> {
        let lrps = self.list_actual_lrps(&ActualLrpFilter::default()).await?;
        Ok(lrps.iter().map(ActualLrpSummary::from).collect())
    }

    // --- cells -----------------------------------------------------------
    /// Registers or renews a cell's presence for `ttl`.
    async fn upsert_cell(&self, presence: CellPresence, ttl: Duration) -> StoreResult<()>;
    /// Cells whose presence has not expired, sorted by id.
    async fn list_cells(&self) -> StoreResult<Vec<CellPresence>>;
    /// Forgets a cell's presence at once; removing an absent cell is not an
    /// error.
    async fn remove_cell(&self, cell_id: &str) -> StoreResult<()>;

    // --- locks (leases) --------------------------------------------------
    /// Takes the lock `name` for `owner` for `ttl`, or renews it if `owner`
    /// holds it. Returns whether `owner` holds it now.
    async fn acquire_lock(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool>;
    /// Gives the lock up if `owner` holds it; otherwise does nothing.
    async fn release_lock(&self, name: &str, owner: &str) -> StoreResult<()>;
    /// The current, unexpired holder of the lock.
    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>>;

    // --- change feed -----------------------------------------------------
    /// Events of writes committed after this call.
    fn subscribe(&self) -> EventReceiver;
}

/// How callers share a store.
pub type SharedStore = Arc<dyn Store>;

/// Which backend a `--store` value names.
#[derive(PartialEq, Eq)]
enum StoreSpec {
    Sqlite(PathBuf),
    /// The URL as given; never printed, it may hold a password.
    Postgres(String),
}

impl StoreSpec {
    fn parse(spec: &str, default_sqlite_path: &Path) -> StoreResult<StoreSpec> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Ok(StoreSpec::Sqlite(default_sqlite_path.to_path_buf()));
        }
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            return Ok(StoreSpec::Postgres(spec.to_string()));
        }
        if let Some(path) = spec.strip_prefix("sqlite://") {
            return Ok(StoreSpec::Sqlite(if path.is_empty() {
                default_sqlite_path.to_path_buf()
            } else {
                PathBuf::from(path)
            }));
        }
        // Only the scheme: the rest may be a URL with a password.
        let scheme = spec.split_once("://").map_or(spec, |(scheme, _)| scheme);
        Err(StoreError::Backend(format!(
            "unknown store {scheme:?}: expected postgres://..., postgresql://... or sqlite://PATH"
        )))
    }
}

/// Opens the store a `--store` value names: `postgres://...` or
/// `postgresql://...` connects to PostgreSQL ([`PostgresStore::connect`]);
/// `sqlite://PATH` opens that file, and an empty value (or `sqlite://`
/// alone) the file at `default_sqlite_path` ([`SqliteStore::open`]).
///
/// # Errors
/// [`StoreError::Backend`] if the value names no known backend (the message
/// repeats only its scheme, never a password), or the backend fails to open.
/// [`StoreError::Backend`] also when this build leaves the backend out (its
/// cargo feature is off).
pub async fn open_store(spec: &str, default_sqlite_path: &Path) -> StoreResult<SharedStore> {
    match StoreSpec::parse(spec, default_sqlite_path)? {
        #[cfg(feature = "sqlite")]
        StoreSpec::Sqlite(path) => Ok(Arc::new(SqliteStore::open(&path).await?)),
        #[cfg(feature = "postgres")]
        StoreSpec::Postgres(url) => Ok(Arc::new(PostgresStore::connect(&url).await?)),
        #[allow(unreachable_patterns)]
        _ => Err(StoreError::Backend(
            "this build has no such store backend (built without its cargo feature)".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str) -> StoreResult<StoreSpec> {
        StoreSpec::parse(spec, Path::new("/data/bbs.db"))
    }

    fn parsed(spec: &str) -> StoreSpec {
        parse(spec).unwrap_or_else(|e| panic!("{spec:?} should parse: {e}"))
    }

    fn sqlite(path: &str) -> StoreSpec {
        StoreSpec::Sqlite(PathBuf::from(path))
    }

    #[test]
    fn empty_or_bare_sqlite_is_the_default_file() {
        assert!(parsed("") == sqlite("/data/bbs.db"));
        assert!(parsed("  ") == sqlite("/data/bbs.db"));
        assert!(parsed("sqlite://") == sqlite("/data/bbs.db"));
    }

    #[test]
    fn sqlite_urls_name_a_file() {
        assert!(parsed("sqlite:///var/lib/lattice/bbs.db") == sqlite("/var/lib/lattice/bbs.db"));
        assert!(parsed("sqlite://state/bbs.db") == sqlite("state/bbs.db"));
    }

    #[test]
    fn both_postgres_schemes_pick_postgres() {
        for url in ["postgres://u:p@db/lattice", "postgresql://db:5432/lattice"] {
            assert!(parsed(url) == StoreSpec::Postgres(url.to_string()), "{url}");
        }
    }

    #[test]
    fn unknown_schemes_are_refused_without_echoing_the_url() {
        for spec in [
            "mysql://root:hunter2@db/lattice",
            "/var/lib/bbs.db",
            "etcd://x",
        ] {
            match parse(spec) {
                Err(StoreError::Backend(message)) => {
                    assert!(message.starts_with("unknown store"), "{message}");
                    assert!(!message.contains("hunter2"), "{message}");
                }
                Err(e) => panic!("{spec}: expected a backend error, got {e}"),
                Ok(_) => panic!("{spec}: expected an error"),
            }
        }
    }
}
