//! The embedded SQLite backend of the store: one file in the data dir,
//! nothing to install.
//!
//! # Layout of the file
//! One table per record kind (`tasks`, `desired_lrps`, `actual_lrps`,
//! `cells`, `domains`, `locks`), created by the versioned migrations in
//! `migrations/sqlite/`. A record row holds the columns that lists filter and
//! sort on, the modification tag (`mod_epoch`, `mod_index`) and the record
//! itself as JSON (`record`). TTLs are `expires_at`, wall-clock unix
//! milliseconds; expired rows are ignored by reads and replaced by the next
//! write of the same key.
//!
//! Every statement is [`crate::sql`]'s; this module opens the file and
//! supplies the pool, the write transaction and the local change feed.
//!
//! # Writers
//! Every write that publishes an event (tasks, desired and actual LRPs) holds
//! one async mutex across its transaction and the send of its event, so
//! events leave in commit order. SQLite admits one writer at a time anyway,
//! so the mutex costs no parallelism. Presence, domain and lock writes are
//! single statements that publish nothing; they skip the mutex and wait on
//! SQLite's busy timeout instead.
//!
//! # Guarantees
//! - A write that publishes an event runs on its own tokio task: once started
//!   it commits and publishes even if the caller's future is dropped, so a
//!   committed write never misses its event.
//!
//! # Caveats
//! - WAL with `synchronous=NORMAL`: a committed write survives a crash of the
//!   process, but the last commits may be lost if the machine loses power.
//! - Only one process should open the file: the event feed lives in process.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lattice_models::Event;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tokio::sync::{broadcast, Mutex, OwnedMutexGuard};

use crate::sql::{backend_error, Backend, Connection, Dialect, SqlStore, Statement};
use crate::{EventReceiver, StoreError, StoreResult};

/// How many events a subscriber may fall behind before it gets `Lagged`.
const EVENT_CAPACITY: usize = 4096;
/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of a file-backed store; readers run in parallel under WAL.
const MAX_CONNECTIONS: u32 = 8;

/// The embedded SQLite store. Cheap to share behind an `Arc<dyn Store>`.
pub type SqliteStore = SqlStore<SqliteBackend>;

/// The SQLite side of [`SqliteStore`].
pub struct SqliteBackend {
    pool: SqlitePool,
    /// Held across every event-publishing write's transaction and its send,
    /// so that events are published in commit order.
    writer: Arc<Mutex<()>>,
    events: broadcast::Sender<Event>,
}

impl SqlStore<SqliteBackend> {
    /// Opens the store in the file at `path`, creating the file and its
    /// parent directory if missing, and migrates it to the current schema.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the directory cannot be created, the file
    /// cannot be opened, or a migration fails.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent).await.map_err(|e| {
                StoreError::Backend(format!("cannot create directory {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "opened sqlite store");
        SqliteStore::migrated(pool).await
    }

    /// A store that lives in memory and vanishes when dropped; for tests.
    pub async fn open_in_memory() -> StoreResult<SqliteStore> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(|e| {
            StoreError::Backend(format!("cannot configure in-memory database: {e}"))
        })?;
        // Every connection to `:memory:` is a database of its own: keep
        // exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot open in-memory database: {e}")))?;
        SqliteStore::migrated(pool).await
    }

    async fn migrated(pool: SqlitePool) -> StoreResult<SqliteStore> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot migrate the store: {e}")))?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Ok(SqlStore::new(SqliteBackend {
            pool,
            writer: Arc::new(Mutex::new(())),
            events,
        }))
    }

    /// Waits for running writes, then closes every connection, which
    /// checkpoints the WAL into the main file. Calls after this fail.
    pub async fn close(&self) {
        // Running writes hold the writer mutex; waiting for it lets them end.
        let _writer = self.backend.writer.lock().await;
        self.backend.pool.close().await;
    }
}

/// A write transaction, holding the writer mutex until its events are out.
pub struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
    _writer: OwnedMutexGuard<()>,
}

#[async_trait]
impl Connection for SqliteTx {
    async fn execute(&mut self, statement: Statement) -> Result<u64, sqlx::Error> {
        self.tx.execute(statement).await
    }

    async fn fetch_texts(&mut self, statement: Statement) -> Result<Vec<String>, sqlx::Error> {
        self.tx.fetch_texts(statement).await
    }

    async fn fetch_pairs(
        &mut self,
        statement: Statement,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        self.tx.fetch_pairs(statement).await
    }

    async fn fetch_desired_summaries(
        &mut self,
        statement: Statement,
    ) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
        self.tx.fetch_desired_summaries(statement).await
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    const DIALECT: Dialect = Dialect::Sqlite;
    type Tx = SqliteTx;
    type Pool = SqlitePool;

    fn pool(&self) -> SqlitePool {
        self.pool.clone()
    }

    /// Takes the writer mutex, then starts a transaction that takes
    /// SQLite's write lock at once, so that the reads inside it see the
    /// state the write replaces.
    async fn begin(&self) -> StoreResult<SqliteTx> {
        let writer = Arc::clone(&self.writer).lock_owned().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| backend_error("cannot begin a write", e))?;
        Ok(SqliteTx {
            tx,
            _writer: writer,
        })
    }

    async fn commit(&self, tx: SqliteTx, events: Vec<Event>) -> StoreResult<()> {
        let SqliteTx { tx, _writer } = tx;
        tx.commit()
            .await
            .map_err(|e| backend_error("cannot commit the write", e))?;
        for event in events {
            // No subscriber is not an error: the event is simply not wanted.
            let _ = self.events.send(event);
        }
        Ok(())
    }

    fn subscribe(&self) -> EventReceiver {
        self.events.subscribe()
    }
}
