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

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lattice_models::{ActualLrp, CellPresence, DesiredLrp, Event, ModificationTag, Task};
use serde::de::DeserializeOwned;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};
use tokio::sync::{broadcast, Mutex};

use crate::records::{
    actual_key, backend, check_tag, decode, decode_readable, encode, ensure_one_row, fresh_tag,
    next_tag, not_found,
};
use crate::{
    ActualLrpFilter, DesiredLrpFilter, EventReceiver, RecordKind, Store, StoreError, StoreResult,
    TaskFilter,
};

/// How many events a subscriber may fall behind before it gets `Lagged`.
const EVENT_CAPACITY: usize = 4096;
/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections of a file-backed store; readers run in parallel under WAL.
const MAX_CONNECTIONS: u32 = 8;

/// The embedded SQLite store. Cheap to share behind an `Arc<dyn Store>`.
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    /// Held across every event-publishing write's transaction and its send,
    /// so that events are published in commit order.
    writer: Mutex<()>,
    events: broadcast::Sender<Event>,
}

impl SqliteStore {
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
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                pool,
                writer: Mutex::new(()),
                events,
            }),
        })
    }

    /// Waits for running writes, then closes every connection, which
    /// checkpoints the WAL into the main file. Calls after this fail.
    pub async fn close(&self) {
        // Running writes hold the writer mutex; waiting for it lets them end.
        let _writer = self.inner.writer.lock().await;
        self.inner.pool.close().await;
    }

    /// Runs an event-publishing write on its own task so that dropping the
    /// caller's future cannot separate a commit from its event.
    async fn write<T, F, Fut>(&self, write: F) -> StoreResult<T>
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = StoreResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        match tokio::spawn(write(Arc::clone(&self.inner))).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StoreError::Backend(format!(
                "store write was cancelled: {e}"
            ))),
        }
    }
}

// --- helpers -----------------------------------------------------------

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Wall-clock unix milliseconds, the unit of every `expires_at`.
fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// When a lease of `ttl` taken at `now` (unix milliseconds) runs out.
fn expires_at(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

// --- writes that publish events ------------------------------------------

impl Inner {
    /// Starts a write transaction that takes SQLite's write lock at once, so
    /// that the reads inside it see the state the write replaces.
    async fn begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| backend("cannot begin a write", e))
    }

    fn publish(&self, event: Event) {
        // No subscriber is not an error: the event is simply not wanted.
        let _ = self.events.send(event);
    }

    async fn create_task(&self, mut task: Task) -> StoreResult<Task> {
        let _writer = self.writer.lock().await;
        task.modification_tag = fresh_tag();
        let key = task.task_guid.as_str();
        let record = encode(RecordKind::Task, key, &task)?;
        sqlx::query(
            "INSERT INTO tasks (task_guid, domain, state, cell_id, created_at, mod_epoch, mod_index, record)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(key)
        .bind(&task.domain)
        .bind(task.state.as_str())
        .bind(&task.cell_id)
        .bind(task.created_at)
        .bind(&task.modification_tag.epoch)
        .bind(i64::from(task.modification_tag.index))
        .bind(record)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::AlreadyExists {
                    kind: RecordKind::Task,
                    key: key.to_string(),
                }
            } else {
                backend("cannot create task", e)
            }
        })?;
        self.publish(Event::TaskCreated { task: task.clone() });
        Ok(task)
    }

    async fn update_task(&self, mut task: Task) -> StoreResult<Task> {
        let kind = RecordKind::Task;
        let _writer = self.writer.lock().await;
        let mut tx = self.begin().await?;
        let before: Task = read_record(
            &mut tx,
            kind,
            &task.task_guid,
            sqlx::query("SELECT record FROM tasks WHERE task_guid = ?").bind(&task.task_guid),
        )
        .await?;
        check_tag(
            kind,
            &task.task_guid,
            &before.modification_tag,
            &task.modification_tag,
        )?;
        task.modification_tag = next_tag(&before.modification_tag);
        let record = encode(kind, &task.task_guid, &task)?;
        let result = sqlx::query(
            "UPDATE tasks SET domain = ?, state = ?, cell_id = ?, created_at = ?, mod_index = ?, record = ?
             WHERE task_guid = ? AND mod_epoch = ? AND mod_index = ?",
        )
        .bind(&task.domain)
        .bind(task.state.as_str())
        .bind(&task.cell_id)
        .bind(task.created_at)
        .bind(i64::from(task.modification_tag.index))
        .bind(record)
        .bind(&task.task_guid)
        .bind(&before.modification_tag.epoch)
        .bind(i64::from(before.modification_tag.index))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot update task", e))?;
        ensure_one_row(kind, &task.task_guid, result.rows_affected())?;
        tx.commit()
            .await
            .map_err(|e| backend("cannot commit task update", e))?;
        self.publish(Event::TaskChanged {
            task_before: before,
            task_after: task.clone(),
        });
        Ok(task)
    }

    async fn delete_task(&self, task_guid: String, expected: ModificationTag) -> StoreResult<()> {
        let kind = RecordKind::Task;
        let _writer = self.writer.lock().await;
        let mut tx = self.begin().await?;
        let task: Task = read_record(
            &mut tx,
            kind,
            &task_guid,
            sqlx::query("SELECT record FROM tasks WHERE task_guid = ?").bind(&task_guid),
        )
        .await?;
        check_tag(kind, &task_guid, &task.modification_tag, &expected)?;
        let result = sqlx::query(
            "DELETE FROM tasks WHERE task_guid = ? AND mod_epoch = ? AND mod_index = ?",
        )
        .bind(&task_guid)
        .bind(&expected.epoch)
        .bind(i64::from(expected.index))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot delete task", e))?;
        ensure_one_row(kind, &task_guid, result.rows_affected())?;
        tx.commit()
            .await
            .map_err(|e| backend("cannot commit task delete", e))?;
        self.publish(Event::TaskRemoved { task });
        Ok(())
    }

    async fn create_desired_lrp(&self, mut lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        let _writer = self.writer.lock().await;
        lrp.modification_tag = fresh_tag();
        let key = lrp.process_guid.as_str();
        let record = encode(RecordKind::DesiredLrp, key, &lrp)?;
        sqlx::query(
            "INSERT INTO desired_lrps (process_guid, domain, mod_epoch, mod_index, record)
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(key)
        .bind(&lrp.domain)
        .bind(&lrp.modification_tag.epoch)
        .bind(i64::from(lrp.modification_tag.index))
        .bind(record)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::AlreadyExists {
                    kind: RecordKind::DesiredLrp,
                    key: key.to_string(),
                }
            } else {
                backend("cannot create desired LRP", e)
            }
        })?;
        self.publish(Event::DesiredLrpCreated {
            desired_lrp: lrp.clone(),
        });
        Ok(lrp)
    }

    async fn update_desired_lrp(&self, mut lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        let kind = RecordKind::DesiredLrp;
        let _writer = self.writer.lock().await;
        let mut tx = self.begin().await?;
        let before: DesiredLrp = read_record(
            &mut tx,
            kind,
            &lrp.process_guid,
            sqlx::query("SELECT record FROM desired_lrps WHERE process_guid = ?")
                .bind(&lrp.process_guid),
        )
        .await?;
        check_tag(
            kind,
            &lrp.process_guid,
            &before.modification_tag,
            &lrp.modification_tag,
        )?;
        lrp.modification_tag = next_tag(&before.modification_tag);
        let record = encode(kind, &lrp.process_guid, &lrp)?;
        let result = sqlx::query(
            "UPDATE desired_lrps SET domain = ?, mod_index = ?, record = ?
             WHERE process_guid = ? AND mod_epoch = ? AND mod_index = ?",
        )
        .bind(&lrp.domain)
        .bind(i64::from(lrp.modification_tag.index))
        .bind(record)
        .bind(&lrp.process_guid)
        .bind(&before.modification_tag.epoch)
        .bind(i64::from(before.modification_tag.index))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot update desired LRP", e))?;
        ensure_one_row(kind, &lrp.process_guid, result.rows_affected())?;
        tx.commit()
            .await
            .map_err(|e| backend("cannot commit desired LRP update", e))?;
        self.publish(Event::DesiredLrpChanged {
            desired_lrp_before: before,
            desired_lrp_after: lrp.clone(),
        });
        Ok(lrp)
    }

    async fn delete_desired_lrp(
        &self,
        process_guid: String,
        expected: ModificationTag,
    ) -> StoreResult<()> {
        let kind = RecordKind::DesiredLrp;
        let _writer = self.writer.lock().await;
        let mut tx = self.begin().await?;
        let lrp: DesiredLrp = read_record(
            &mut tx,
            kind,
            &process_guid,
            sqlx::query("SELECT record FROM desired_lrps WHERE process_guid = ?")
                .bind(&process_guid),
        )
        .await?;
        check_tag(kind, &process_guid, &lrp.modification_tag, &expected)?;
        let result = sqlx::query(
            "DELETE FROM desired_lrps WHERE process_guid = ? AND mod_epoch = ? AND mod_index = ?",
        )
        .bind(&process_guid)
        .bind(&expected.epoch)
        .bind(i64::from(expected.index))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot delete desired LRP", e))?;
        ensure_one_row(kind, &process_guid, result.rows_affected())?;
        tx.commit()
            .await
            .map_err(|e| backend("cannot commit desired LRP delete", e))?;
        self.publish(Event::DesiredLrpRemoved { desired_lrp: lrp });
        Ok(())
    }

    async fn create_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp> {
        let key = actual_key(&lrp.process_guid, lrp.index);
        match self.create_actual_lrps(vec![lrp]).await?.pop().flatten() {
            Some(created) => Ok(created),
            None => Err(StoreError::AlreadyExists {
                kind: RecordKind::ActualLrp,
                key,
            }),
        }
    }

    async fn create_actual_lrps(
        &self,
        lrps: Vec<ActualLrp>,
    ) -> StoreResult<Vec<Option<ActualLrp>>> {
        let _writer = self.writer.lock().await;
        let mut tx = self.begin().await?;
        let mut created = Vec::with_capacity(lrps.len());
        for mut lrp in lrps {
            lrp.modification_tag = fresh_tag();
            let key = actual_key(&lrp.process_guid, lrp.index);
            let record = encode(RecordKind::ActualLrp, &key, &lrp)?;
            let inserted = sqlx::query(
                "INSERT INTO actual_lrps
                   (process_guid, instance_index, domain, cell_id, state, mod_epoch, mod_index, record)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&lrp.process_guid)
            .bind(lrp.index)
            .bind(&lrp.domain)
            .bind(&lrp.cell_id)
            .bind(lrp.state.as_str())
            .bind(&lrp.modification_tag.epoch)
            .bind(i64::from(lrp.modification_tag.index))
            .bind(record)
            .execute(&mut *tx)
            .await
            .map_err(|e| backend("cannot create actual LRPs", e))?;
            created.push((inserted.rows_affected() > 0).then_some(lrp));
        }
        tx.commit()
            .await
            .map_err(|e| backend("cannot commit the write", e))?;
        for lrp in created.iter().flatten() {
            self.publish(Event::ActualLrpCreated {
                actual_lrp: lrp.clone(),
            });
        }
        Ok(created)
    }

    async fn update_actual_lrp(&self, mut lrp: ActualLrp) -> StoreResult<ActualLrp> {
        let kind = RecordKind::ActualLrp;
        let key = actual_key(&lrp.process_guid, lrp.index);
        let _writer = self.writer.lock().await;
        let mut tx = self.begin().await?;
        let before: ActualLrp = read_record(
            &mut tx,
            kind,
            &key,
            sqlx::query(
                "SELECT record FROM actual_lrps WHERE process_guid = ? AND instance_index = ?",
            )
            .bind(&lrp.process_guid)
            .bind(lrp.index),
        )
        .await?;
        check_tag(kind, &key, &before.modification_tag, &lrp.modification_tag)?;
        lrp.modification_tag = next_tag(&before.modification_tag);
        let record = encode(kind, &key, &lrp)?;
        let result = sqlx::query(
            "UPDATE actual_lrps SET domain = ?, cell_id = ?, state = ?, mod_index = ?, record = ?
             WHERE process_guid = ? AND instance_index = ? AND mod_epoch = ? AND mod_index = ?",
        )
        .bind(&lrp.domain)
        .bind(&lrp.cell_id)
        .bind(lrp.state.as_str())
        .bind(i64::from(lrp.modification_tag.index))
        .bind(record)
        .bind(&lrp.process_guid)
        .bind(lrp.index)
        .bind(&before.modification_tag.epoch)
        .bind(i64::from(before.modification_tag.index))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot update actual LRP", e))?;
        ensure_one_row(kind, &key, result.rows_affected())?;
        tx.commit()
            .await
            .map_err(|e| backend("cannot commit actual LRP update", e))?;
        self.publish(Event::ActualLrpChanged {
            actual_lrp_before: before,
            actual_lrp_after: lrp.clone(),
        });
        Ok(lrp)
    }

    async fn delete_actual_lrp(
        &self,
        process_guid: String,
        index: i64,
        expected: ModificationTag,
    ) -> StoreResult<()> {
        let kind = RecordKind::ActualLrp;
        let key = actual_key(&process_guid, index);
        let _writer = self.writer.lock().await;
        let mut tx = self.begin().await?;
        let lrp: ActualLrp = read_record(
            &mut tx,
            kind,
            &key,
            sqlx::query(
                "SELECT record FROM actual_lrps WHERE process_guid = ? AND instance_index = ?",
            )
            .bind(&process_guid)
            .bind(index),
        )
        .await?;
        check_tag(kind, &key, &lrp.modification_tag, &expected)?;
        let result = sqlx::query(
            "DELETE FROM actual_lrps
             WHERE process_guid = ? AND instance_index = ? AND mod_epoch = ? AND mod_index = ?",
        )
        .bind(&process_guid)
        .bind(index)
        .bind(&expected.epoch)
        .bind(i64::from(expected.index))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot delete actual LRP", e))?;
        ensure_one_row(kind, &key, result.rows_affected())?;
        tx.commit()
            .await
            .map_err(|e| backend("cannot commit actual LRP delete", e))?;
        self.publish(Event::ActualLrpRemoved { actual_lrp: lrp });
        Ok(())
    }
}

type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// Reads and decodes the one record `query` selects (its first column)
/// inside a write; `NotFound` if there is none.
async fn read_record<T: DeserializeOwned>(
    tx: &mut Transaction<'static, Sqlite>,
    kind: RecordKind,
    key: &str,
    query: SqliteQuery<'_>,
) -> StoreResult<T> {
    let row = query
        .fetch_optional(&mut **tx)
        .await
        .map_err(|e| backend(&format!("cannot read {kind} {key:?}"), e))?
        .ok_or_else(|| not_found(kind, key))?;
    let json: String = row
        .try_get(0)
        .map_err(|e| backend(&format!("cannot read {kind} {key:?}"), e))?;
    decode(kind, key, &json)
}

// --- reads ---------------------------------------------------------------

impl Inner {
    async fn get_one<T: DeserializeOwned>(
        &self,
        kind: RecordKind,
        key: &str,
        query: SqliteQuery<'_>,
    ) -> StoreResult<T> {
        let row = query
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| backend(&format!("cannot read {kind} {key:?}"), e))?
            .ok_or_else(|| not_found(kind, key))?;
        let json: String = row
            .try_get(0)
            .map_err(|e| backend(&format!("cannot read {kind} {key:?}"), e))?;
        decode(kind, key, &json)
    }

    /// Runs a list query whose rows are `(key, record)` and decodes them.
    async fn list<T: DeserializeOwned>(
        &self,
        kind: RecordKind,
        mut query: QueryBuilder<'_, Sqlite>,
    ) -> StoreResult<Vec<T>> {
        let rows: Vec<(String, String)> = query
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(|e| backend(&format!("cannot list {kind}s"), e))?;
        Ok(decode_readable(kind, &rows))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn upsert_domain(&self, domain: &str, ttl: Option<Duration>) -> StoreResult<()> {
        let expires = ttl.map(|ttl| expires_at(now_millis(), ttl));
        sqlx::query(
            "INSERT INTO domains (domain, expires_at) VALUES (?, ?)
             ON CONFLICT (domain) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(domain)
        .bind(expires)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| backend("cannot upsert domain", e))?;
        Ok(())
    }

    async fn domains(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT domain FROM domains WHERE expires_at IS NULL OR expires_at > ? ORDER BY domain",
        )
        .bind(now_millis())
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| backend("cannot list domains", e))
    }

    async fn create_task(&self, task: Task) -> StoreResult<Task> {
        self.write(move |inner| async move { inner.create_task(task).await })
            .await
    }

    async fn get_task(&self, task_guid: &str) -> StoreResult<Task> {
        let query = sqlx::query("SELECT record FROM tasks WHERE task_guid = ?").bind(task_guid);
        self.inner.get_one(RecordKind::Task, task_guid, query).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        let mut query = QueryBuilder::new("SELECT task_guid, record FROM tasks WHERE 1 = 1");
        if let Some(domain) = &filter.domain {
            query.push(" AND domain = ").push_bind(domain.as_str());
        }
        if let Some(cell_id) = &filter.cell_id {
            query.push(" AND cell_id = ").push_bind(cell_id.as_str());
        }
        if let Some(state) = filter.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        query.push(" ORDER BY created_at, task_guid");
        self.inner.list(RecordKind::Task, query).await
    }

    async fn update_task(&self, task: Task) -> StoreResult<Task> {
        self.write(move |inner| async move { inner.update_task(task).await })
            .await
    }

    async fn delete_task(&self, task_guid: &str, expected: &ModificationTag) -> StoreResult<()> {
        let (task_guid, expected) = (task_guid.to_string(), expected.clone());
        self.write(move |inner| async move { inner.delete_task(task_guid, expected).await })
            .await
    }

    async fn create_desired_lrp(&self, lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        self.write(move |inner| async move { inner.create_desired_lrp(lrp).await })
            .await
    }

    async fn get_desired_lrp(&self, process_guid: &str) -> StoreResult<DesiredLrp> {
        let query = sqlx::query("SELECT record FROM desired_lrps WHERE process_guid = ?")
            .bind(process_guid);
        self.inner
            .get_one(RecordKind::DesiredLrp, process_guid, query)
            .await
    }

    async fn list_desired_lrps(&self, filter: &DesiredLrpFilter) -> StoreResult<Vec<DesiredLrp>> {
        let mut query =
            QueryBuilder::new("SELECT process_guid, record FROM desired_lrps WHERE 1 = 1");
        if let Some(domain) = &filter.domain {
            query.push(" AND domain = ").push_bind(domain.as_str());
        }
        query.push(" ORDER BY process_guid");
        self.inner.list(RecordKind::DesiredLrp, query).await
    }

    async fn update_desired_lrp(&self, lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        self.write(move |inner| async move { inner.update_desired_lrp(lrp).await })
            .await
    }

    async fn delete_desired_lrp(
        &self,
        process_guid: &str,
        expected: &ModificationTag,
    ) -> StoreResult<()> {
        let (process_guid, expected) = (process_guid.to_string(), expected.clone());
        self.write(
            move |inner| async move { inner.delete_desired_lrp(process_guid, expected).await },
        )
        .await
    }

    async fn create_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp> {
        self.write(move |inner| async move { inner.create_actual_lrp(lrp).await })
            .await
    }

    async fn create_actual_lrps(
        &self,
        lrps: Vec<ActualLrp>,
    ) -> StoreResult<Vec<Option<ActualLrp>>> {
        self.write(move |inner| async move { inner.create_actual_lrps(lrps).await })
            .await
    }

    async fn get_actual_lrp(&self, process_guid: &str, index: i64) -> StoreResult<ActualLrp> {
        let query = sqlx::query(
            "SELECT record FROM actual_lrps WHERE process_guid = ? AND instance_index = ?",
        )
        .bind(process_guid)
        .bind(index);
        self.inner
            .get_one(
                RecordKind::ActualLrp,
                &actual_key(process_guid, index),
                query,
            )
            .await
    }

    async fn list_actual_lrps(&self, filter: &ActualLrpFilter) -> StoreResult<Vec<ActualLrp>> {
        let mut query = QueryBuilder::new(
            "SELECT process_guid || '/' || instance_index, record FROM actual_lrps WHERE 1 = 1",
        );
        if let Some(process_guid) = &filter.process_guid {
            query
                .push(" AND process_guid = ")
                .push_bind(process_guid.as_str());
        }
        if let Some(domain) = &filter.domain {
            query.push(" AND domain = ").push_bind(domain.as_str());
        }
        if let Some(cell_id) = &filter.cell_id {
            query.push(" AND cell_id = ").push_bind(cell_id.as_str());
        }
        query.push(" ORDER BY process_guid, instance_index");
        self.inner.list(RecordKind::ActualLrp, query).await
    }

    async fn update_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp> {
        self.write(move |inner| async move { inner.update_actual_lrp(lrp).await })
            .await
    }

    async fn delete_actual_lrp(
        &self,
        process_guid: &str,
        index: i64,
        expected: &ModificationTag,
    ) -> StoreResult<()> {
        let (process_guid, expected) = (process_guid.to_string(), expected.clone());
        self.write(move |inner| async move {
            inner.delete_actual_lrp(process_guid, index, expected).await
        })
        .await
    }

    async fn upsert_cell(&self, presence: CellPresence, ttl: Duration) -> StoreResult<()> {
        let record = encode(RecordKind::Cell, &presence.cell_id, &presence)?;
        sqlx::query(
            "INSERT INTO cells (cell_id, expires_at, record) VALUES (?, ?, ?)
             ON CONFLICT (cell_id) DO UPDATE SET
               expires_at = excluded.expires_at, record = excluded.record",
        )
        .bind(&presence.cell_id)
        .bind(expires_at(now_millis(), ttl))
        .bind(record)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| backend("cannot upsert cell", e))?;
        Ok(())
    }

    async fn list_cells(&self) -> StoreResult<Vec<CellPresence>> {
        let mut query = QueryBuilder::new("SELECT cell_id, record FROM cells WHERE expires_at > ");
        query.push_bind(now_millis()).push(" ORDER BY cell_id");
        self.inner.list(RecordKind::Cell, query).await
    }

    async fn remove_cell(&self, cell_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM cells WHERE cell_id = ?")
            .bind(cell_id)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| backend("cannot remove cell", e))?;
        Ok(())
    }

    async fn acquire_lock(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        let now = now_millis();
        // One statement, so atomic: insert if absent; otherwise take over
        // only if the lease is ours or has run out. A refused update changes
        // no row.
        let result = sqlx::query(
            "INSERT INTO locks (name, owner, expires_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE locks.owner = excluded.owner OR locks.expires_at <= ?4",
        )
        .bind(name)
        .bind(owner)
        .bind(expires_at(now, ttl))
        .bind(now)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| backend("cannot acquire lock", e))?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_lock(&self, name: &str, owner: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM locks WHERE name = ? AND owner = ?")
            .bind(name)
            .bind(owner)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| backend("cannot release lock", e))?;
        Ok(())
    }

    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT owner FROM locks WHERE name = ? AND expires_at > ?")
            .bind(name)
            .bind(now_millis())
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| backend("cannot read lock", e))
    }

    fn subscribe(&self) -> EventReceiver {
        self.inner.events.subscribe()
    }
}
