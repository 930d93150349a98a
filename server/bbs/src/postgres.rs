//! The PostgreSQL backend of the store: one database shared by the brains
//! and cells of a cluster of several machines.
//!
//! # Layout of the database
//! The tables of the SQLite backend (`tasks`, `desired_lrps`,
//! `actual_lrps`, `cells`, `domains`, `locks`), created by the versioned
//! migrations in `migrations/postgres/`, plus `events`, the change feed.
//! Keys sort with the "C" collation, byte by byte as in SQLite. TTLs are
//! `TIMESTAMPTZ` computed and compared with the database's `now()`, so that
//! every machine agrees on what has expired whatever its own clock says.
//! Migrations run on connect; sqlx holds an advisory lock while it migrates,
//! so brains starting at once take turns.
//!
//! # Writers
//! A write of a task or LRP is one transaction:
//! 1. its record statement: `INSERT ... ON CONFLICT DO NOTHING` for a create
//!    (no row inserted: `AlreadyExists`); otherwise `SELECT ... FOR UPDATE`,
//!    the tag check, and the `UPDATE`/`DELETE` guarded by the tag. The row
//!    lock queues concurrent writers of one record; the later one then reads
//!    the earlier one's version and gets `Conflict`.
//! 2. `pg_advisory_xact_lock(FEED_LOCK)`, taken last so that writers of
//!    different records overlap up to here and serialize only across the
//!    event insert and the commit;
//! 3. the insert of its event into `events`, which takes the next id and
//!    reads the id of the event before it, and `pg_notify` on
//!    [`CHANNEL`] with the new id;
//! 4. the commit, which releases the advisory lock.
//!
//! An id is taken and committed under the lock, so ids grow in commit order
//! and once id N is visible no event below N can still appear.
//!
//! # The change feed
//! Every store instance keeps `last_seen`, the id of the last event it has
//! published on its local broadcast, behind a mutex. Events reach the
//! broadcast only through that mutex, by reading `events WHERE id >
//! last_seen ORDER BY id`, so each one is published once and in order; two
//! paths do so:
//! - the writer, after its commit: if the event before its own is
//!   `last_seen`, it publishes its own event without reading it back (the
//!   common case of one busy process); otherwise it reads what it has not
//!   seen. A write that returned has therefore been published by its own
//!   store, as with SQLite.
//! - one feed task per store, which `LISTEN`s on [`CHANNEL`] and reads on
//!   each notification of an id it has not seen, and every
//!   [`POLL_INTERVAL`] regardless: a notification sent while the listening
//!   connection was down is lost, the poll heals that. It starts at the
//!   highest id at connect time, prunes events older than
//!   [`EVENT_RETENTION`] every [`PRUNE_INTERVAL`], and ends when the store is
//!   dropped or closed.
//!
//! # Guarantees
//! - Every subscriber of every store connected to the database receives
//!   every task and LRP write committed after it subscribed, by any process,
//!   once, in commit order (unless it lags: `RecvError::Lagged`).
//! - A write runs on its own tokio task: once started it commits and
//!   publishes even if the caller's future is dropped.
//!
//! # Caveats
//! - A store that cannot read `events` for longer than [`EVENT_RETENTION`]
//!   misses the events pruned meanwhile, and nothing tells its subscribers;
//!   they should re-read the state they care about after a long outage of
//!   the database, as after `Lagged`.
//! - If the read-back after a commit fails, the write still returns `Ok`
//!   (it is committed) and its event arrives with the next poll.
//! - Each store holds up to [`MAX_CONNECTIONS`] connections plus one for
//!   `LISTEN`; size the server's `max_connections` for every brain and cell.

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use lattice_models::{ActualLrp, CellPresence, DesiredLrp, Event, ModificationTag, Task};
use serde::de::DeserializeOwned;
use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use tokio::sync::{broadcast, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::records::{
    actual_key, already_exists, backend, check_tag, decode, decode_readable, encode,
    ensure_one_row, fresh_tag, next_tag, not_found,
};
use crate::{
    ActualLrpFilter, DesiredLrpFilter, EventReceiver, RecordKind, Store, StoreError, StoreResult,
    TaskFilter,
};

/// How many events a subscriber may fall behind before it gets `Lagged`.
const EVENT_CAPACITY: usize = 4096;
/// Connections of one store's pool (the `LISTEN` connection comes on top).
pub const MAX_CONNECTIONS: u32 = 10;
/// The advisory lock that orders event ids by commit; any constant no other
/// user of the database takes ("lattice" in ASCII, then 1).
const FEED_LOCK: i64 = 0x6c61_7474_6963_6501;
/// The channel a committed event is announced on, with its id as payload.
pub const CHANNEL: &str = "lattice_events";
/// How often the feed task reads new events without a notification.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often each store prunes old events.
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// How long an event stays readable: the longest outage a store's feed
/// recovers from.
pub const EVENT_RETENTION: Duration = Duration::from_secs(600);
/// Events read per query when catching up.
const CATCH_UP_BATCH: i64 = 1_000;
/// The longest TTL a lease or presence may have (about 100 years); longer
/// ones are clamped so that `now() + ttl` stays a valid timestamp.
const MAX_TTL_MILLIS: i64 = 100 * 365 * 24 * 3_600 * 1_000;

/// The PostgreSQL store. Cheap to share behind an `Arc<dyn Store>`.
pub struct PostgresStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    feed: Arc<Feed>,
    /// Stops the feed task; cancelled by [`PostgresStore::close`] or when the
    /// last handle (the store, or a write still running) goes.
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
    /// The feed task, awaited by [`PostgresStore::close`].
    feed_task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// The local end of the change feed.
struct Feed {
    pool: PgPool,
    /// The id of the last event published on `events`. Held across every
    /// read and publish of events, so that the writers and the feed task
    /// never publish one twice or out of order.
    last_seen: Mutex<i64>,
    events: broadcast::Sender<Event>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/db`),
    /// migrates it to the current schema and starts following its change feed.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the URL is invalid, the server cannot be
    /// reached, a migration fails, or `LISTEN` fails.
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid postgres url: {e}")))?;
        if options.get_application_name().is_none() {
            // So that an operator can tell our connections in pg_stat_activity.
            options = options.application_name("lattice-bbs");
        }
        let target = describe(&options);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await
            .map_err(|e| backend(&format!("cannot connect to {target}"), e))?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot migrate the store: {e}")))?;
        // Listen before reading where to start: an event committed in
        // between is then both announced and above the start.
        let notifications = listen(&options)
            .await
            .map_err(|e| backend(&format!("cannot listen on {target}"), e))?;
        let start: i64 = sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM events")
            .fetch_one(&pool)
            .await
            .map_err(|e| backend("cannot read the change feed", e))?;
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let feed = Arc::new(Feed {
            pool: pool.clone(),
            last_seen: Mutex::new(start),
            events,
        });
        let stop = CancellationToken::new();
        let feed_task = tokio::spawn(follow(
            Arc::clone(&feed),
            options,
            notifications,
            stop.clone(),
        ));
        tracing::info!(database = %target, first_event = start + 1, "connected to postgres store");
        Ok(PostgresStore {
            inner: Arc::new(Inner {
                pool,
                feed,
                _stop_on_drop: stop.clone().drop_guard(),
                stop,
                feed_task: std::sync::Mutex::new(Some(feed_task)),
            }),
        })
    }

    /// Stops following the change feed, waits for running writes and closes
    /// every connection. Calls after this fail. (Dropping the store, which
    /// also ends the feed, is enough when nothing needs to wait for it.)
    pub async fn close(&self) {
        self.inner.stop.cancel();
        let task = self
            .inner
            .feed_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the change feed task failed");
            }
        }
        self.inner.pool.close().await;
    }

    /// Deletes the events older than `retention` and returns how many. Every
    /// store already does this with [`EVENT_RETENTION`] every
    /// [`PRUNE_INTERVAL`]; call it to reclaim space at once.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the delete fails.
    pub async fn prune_events(&self, retention: Duration) -> StoreResult<u64> {
        prune(&self.inner.pool, retention).await
    }

    /// Runs a write on its own task so that dropping the caller's future
    /// cannot separate a commit from its event.
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

/// Where a store connects, for logs and errors; never the password.
fn describe(options: &PgConnectOptions) -> String {
    let database = options.get_database().unwrap_or("(default database)");
    match options.get_socket() {
        Some(socket) => format!("postgres {} database {database}", socket.display()),
        None => format!(
            "postgres {}:{} database {database}",
            options.get_host(),
            options.get_port()
        ),
    }
}

/// Milliseconds of a TTL, clamped to [`MAX_TTL_MILLIS`].
fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis())
        .unwrap_or(MAX_TTL_MILLIS)
        .min(MAX_TTL_MILLIS)
}

async fn prune(pool: &PgPool, retention: Duration) -> StoreResult<u64> {
    let result = sqlx::query(
        "DELETE FROM events WHERE created_at < clock_timestamp() - $1 * interval '1 millisecond'",
    )
    .bind(ttl_millis(retention))
    .execute(pool)
    .await
    .map_err(|e| backend("cannot prune events", e))?;
    Ok(result.rows_affected())
}

// --- the change feed -------------------------------------------------------

type Notifications = BoxStream<'static, Result<PgNotification, sqlx::Error>>;

/// A connection of its own that `LISTEN`s on [`CHANNEL`]. sqlx reconnects
/// it (and listens again) when the connection drops; notifications sent in
/// between are lost, which the poll heals.
async fn listen(options: &PgConnectOptions) -> Result<Notifications, sqlx::Error> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options.clone())
        .await?;
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener.into_stream().boxed())
}

/// The next notification, or never while there is no listening connection.
async fn next_notification(
    notifications: &mut Option<Notifications>,
) -> Option<Result<PgNotification, sqlx::Error>> {
    match notifications {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

/// The feed task: publishes the events of other processes (and any of this
/// one's that a writer could not read back), and prunes old events.
async fn follow(
    feed: Arc<Feed>,
    options: PgConnectOptions,
    notifications: Notifications,
    stop: CancellationToken,
) {
    let mut notifications = Some(notifications);
    let mut poll = tokio::time::interval(POLL_INTERVAL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune_timer = tokio::time::interval(PRUNE_INTERVAL);
    prune_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Report a failing database once, not every second.
    let mut failing = false;
    loop {
        let step = async {
            tokio::select! {
                notification = next_notification(&mut notifications) => match notification {
                    Some(Ok(notification)) => {
                        // Any other payload is not ours to trust: read all.
                        let id = notification.payload().parse::<i64>().unwrap_or(i64::MAX);
                        feed.notified(id).await
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "lost the change feed's listening connection");
                        notifications = None;
                        Ok(())
                    }
                    None => {
                        notifications = None;
                        Ok(())
                    }
                },
                _ = poll.tick() => {
                    if notifications.is_none() {
                        match listen(&options).await {
                            Ok(stream) => notifications = Some(stream),
                            Err(e) => tracing::debug!(error = %e, "cannot listen for events yet"),
                        }
                    }
                    feed.poll().await
                }
                _ = prune_timer.tick() => prune(&feed.pool, EVENT_RETENTION).await.map(|pruned| {
                    tracing::debug!(pruned, "pruned old events");
                }),
            }
        };
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            result = step => result,
        };
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the change feed reads events again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "the change feed cannot read events; retrying");
            }
            Err(e) => tracing::debug!(error = %e, "the change feed still cannot read events"),
        }
    }
}

impl Feed {
    fn send(&self, event: Event) {
        // No subscriber is not an error: the event is simply not wanted.
        let _ = self.events.send(event);
    }

    /// Publishes every committed event after `last`, in id order, advancing
    /// `last` as it goes.
    async fn catch_up(&self, last: &mut i64) -> StoreResult<()> {
        loop {
            let rows: Vec<(i64, String)> =
                sqlx::query_as("SELECT id, event FROM events WHERE id > $1 ORDER BY id LIMIT $2")
                    .bind(*last)
                    .bind(CATCH_UP_BATCH)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| backend("cannot read events", e))?;
            let complete = rows.len() < CATCH_UP_BATCH as usize;
            for (id, json) in rows {
                match serde_json::from_str::<Event>(&json) {
                    Ok(event) => self.send(event),
                    // Written by a newer version, or damaged: one unreadable
                    // event must not stop the feed.
                    Err(e) => {
                        tracing::error!(event_id = id, error = %e, "skipping an unreadable event")
                    }
                }
                *last = id;
            }
            if complete {
                return Ok(());
            }
        }
    }

    /// Reads whatever this store has not published yet.
    async fn poll(&self) -> StoreResult<()> {
        let mut last = self.last_seen.lock().await;
        self.catch_up(&mut last).await
    }

    /// A notification announced event `id`.
    async fn notified(&self, id: i64) -> StoreResult<()> {
        let mut last = self.last_seen.lock().await;
        if *last >= id {
            // Published already, typically by the writer in this process.
            return Ok(());
        }
        self.catch_up(&mut last).await
    }

    /// After a writer's commit: makes sure its event `id` (which follows
    /// event `previous`) and every event before it have been published.
    async fn committed(&self, previous: i64, id: i64, event: Event) -> StoreResult<()> {
        let mut last = self.last_seen.lock().await;
        if *last >= id {
            // The feed task got there first.
            return Ok(());
        }
        if *last == previous {
            self.send(event);
            *last = id;
            return Ok(());
        }
        self.catch_up(&mut last).await
    }
}

// --- writes that publish events ------------------------------------------

impl Inner {
    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool
            .begin()
            .await
            .map_err(|e| backend("cannot begin a write", e))
    }

    /// Appends `event` to the feed inside `tx`, commits, and publishes it on
    /// this store's broadcast (see the module doc for why in that order).
    async fn commit_with_event(
        &self,
        tx: Transaction<'static, Postgres>,
        event: Event,
    ) -> StoreResult<()> {
        self.commit_with_events(tx, vec![event]).await
    }

    /// [`Inner::commit_with_event`] for several events of one commit, in
    /// order: each follows the one before it in the feed.
    async fn commit_with_events(
        &self,
        mut tx: Transaction<'static, Postgres>,
        events: Vec<Event>,
    ) -> StoreResult<()> {
        if events.is_empty() {
            return tx
                .commit()
                .await
                .map_err(|e| backend("cannot commit the write", e));
        }
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(FEED_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(|e| backend("cannot lock the change feed", e))?;
        let mut appended = Vec::with_capacity(events.len());
        for event in events {
            let json = serde_json::to_string(&event)
                .map_err(|e| StoreError::Backend(format!("cannot encode event: {e}")))?;
            // One statement, one snapshot: `previous` cannot see the new
            // row. The snapshot is taken after the lock, so it sees every
            // event committed before this one, and this transaction's own
            // earlier ones.
            let row = sqlx::query(
                "WITH previous AS (SELECT coalesce(max(id), 0) AS id FROM events),
                      inserted AS (INSERT INTO events (event) VALUES ($1) RETURNING id)
                 SELECT inserted.id, previous.id, pg_notify($2, inserted.id::text)
                 FROM inserted, previous",
            )
            .bind(json)
            .bind(CHANNEL)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| backend("cannot append to the change feed", e))?;
            let id: i64 = row
                .try_get(0)
                .map_err(|e| backend("cannot append to the change feed", e))?;
            let previous: i64 = row
                .try_get(1)
                .map_err(|e| backend("cannot append to the change feed", e))?;
            appended.push((previous, id, event));
        }
        tx.commit()
            .await
            .map_err(|e| backend("cannot commit the write", e))?;
        for (previous, id, event) in appended {
            if let Err(e) = self.feed.committed(previous, id, event).await {
                // Committed is committed: the feed task publishes it later.
                tracing::warn!(event_id = id, error = %e, "cannot read back a committed event");
            }
        }
        Ok(())
    }

    async fn create_actual_lrps(
        &self,
        lrps: Vec<ActualLrp>,
    ) -> StoreResult<Vec<Option<ActualLrp>>> {
        let mut tx = self.begin().await?;
        let mut created = Vec::with_capacity(lrps.len());
        for mut lrp in lrps {
            lrp.modification_tag = fresh_tag();
            let key = actual_key(&lrp.process_guid, lrp.index);
            let record = encode(RecordKind::ActualLrp, &key, &lrp)?;
            let inserted = sqlx::query(
                "INSERT INTO actual_lrps
                   (process_guid, instance_index, domain, cell_id, state, mod_epoch, mod_index, record)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
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
        let events = created
            .iter()
            .flatten()
            .map(|lrp| Event::ActualLrpCreated {
                actual_lrp: lrp.clone(),
            })
            .collect();
        self.commit_with_events(tx, events).await?;
        Ok(created)
    }

    async fn create_task(&self, mut task: Task) -> StoreResult<Task> {
        let kind = RecordKind::Task;
        task.modification_tag = fresh_tag();
        let record = encode(kind, &task.task_guid, &task)?;
        let mut tx = self.begin().await?;
        let result = sqlx::query(
            "INSERT INTO tasks (task_guid, domain, state, cell_id, created_at, mod_epoch, mod_index, record)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT DO NOTHING",
        )
        .bind(&task.task_guid)
        .bind(&task.domain)
        .bind(task.state.as_str())
        .bind(&task.cell_id)
        .bind(task.created_at)
        .bind(&task.modification_tag.epoch)
        .bind(i64::from(task.modification_tag.index))
        .bind(record)
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot create task", e))?;
        if result.rows_affected() == 0 {
            return Err(already_exists(kind, &task.task_guid));
        }
        self.commit_with_event(tx, Event::TaskCreated { task: task.clone() })
            .await?;
        Ok(task)
    }

    async fn update_task(&self, mut task: Task) -> StoreResult<Task> {
        let kind = RecordKind::Task;
        let mut tx = self.begin().await?;
        let before: Task = read_record(
            &mut tx,
            kind,
            &task.task_guid,
            sqlx::query("SELECT record FROM tasks WHERE task_guid = $1 FOR UPDATE")
                .bind(&task.task_guid),
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
            "UPDATE tasks SET domain = $1, state = $2, cell_id = $3, created_at = $4, mod_index = $5, record = $6
             WHERE task_guid = $7 AND mod_epoch = $8 AND mod_index = $9",
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
        let event = Event::TaskChanged {
            task_before: before,
            task_after: task.clone(),
        };
        self.commit_with_event(tx, event).await?;
        Ok(task)
    }

    async fn delete_task(&self, task_guid: String, expected: ModificationTag) -> StoreResult<()> {
        let kind = RecordKind::Task;
        let mut tx = self.begin().await?;
        let task: Task = read_record(
            &mut tx,
            kind,
            &task_guid,
            sqlx::query("SELECT record FROM tasks WHERE task_guid = $1 FOR UPDATE")
                .bind(&task_guid),
        )
        .await?;
        check_tag(kind, &task_guid, &task.modification_tag, &expected)?;
        let result = sqlx::query(
            "DELETE FROM tasks WHERE task_guid = $1 AND mod_epoch = $2 AND mod_index = $3",
        )
        .bind(&task_guid)
        .bind(&expected.epoch)
        .bind(i64::from(expected.index))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot delete task", e))?;
        ensure_one_row(kind, &task_guid, result.rows_affected())?;
        self.commit_with_event(tx, Event::TaskRemoved { task })
            .await
    }

    async fn create_desired_lrp(&self, mut lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        let kind = RecordKind::DesiredLrp;
        lrp.modification_tag = fresh_tag();
        let record = encode(kind, &lrp.process_guid, &lrp)?;
        let mut tx = self.begin().await?;
        let result = sqlx::query(
            "INSERT INTO desired_lrps (process_guid, domain, mod_epoch, mod_index, record)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
        )
        .bind(&lrp.process_guid)
        .bind(&lrp.domain)
        .bind(&lrp.modification_tag.epoch)
        .bind(i64::from(lrp.modification_tag.index))
        .bind(record)
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot create desired LRP", e))?;
        if result.rows_affected() == 0 {
            return Err(already_exists(kind, &lrp.process_guid));
        }
        let event = Event::DesiredLrpCreated {
            desired_lrp: lrp.clone(),
        };
        self.commit_with_event(tx, event).await?;
        Ok(lrp)
    }

    async fn update_desired_lrp(&self, mut lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        let kind = RecordKind::DesiredLrp;
        let mut tx = self.begin().await?;
        let before: DesiredLrp = read_record(
            &mut tx,
            kind,
            &lrp.process_guid,
            sqlx::query("SELECT record FROM desired_lrps WHERE process_guid = $1 FOR UPDATE")
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
            "UPDATE desired_lrps SET domain = $1, mod_index = $2, record = $3
             WHERE process_guid = $4 AND mod_epoch = $5 AND mod_index = $6",
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
        let event = Event::DesiredLrpChanged {
            desired_lrp_before: before,
            desired_lrp_after: lrp.clone(),
        };
        self.commit_with_event(tx, event).await?;
        Ok(lrp)
    }

    async fn delete_desired_lrp(
        &self,
        process_guid: String,
        expected: ModificationTag,
    ) -> StoreResult<()> {
        let kind = RecordKind::DesiredLrp;
        let mut tx = self.begin().await?;
        let lrp: DesiredLrp = read_record(
            &mut tx,
            kind,
            &process_guid,
            sqlx::query("SELECT record FROM desired_lrps WHERE process_guid = $1 FOR UPDATE")
                .bind(&process_guid),
        )
        .await?;
        check_tag(kind, &process_guid, &lrp.modification_tag, &expected)?;
        let result = sqlx::query(
            "DELETE FROM desired_lrps WHERE process_guid = $1 AND mod_epoch = $2 AND mod_index = $3",
        )
        .bind(&process_guid)
        .bind(&expected.epoch)
        .bind(i64::from(expected.index))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot delete desired LRP", e))?;
        ensure_one_row(kind, &process_guid, result.rows_affected())?;
        self.commit_with_event(tx, Event::DesiredLrpRemoved { desired_lrp: lrp })
            .await
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

    async fn update_actual_lrp(&self, mut lrp: ActualLrp) -> StoreResult<ActualLrp> {
        let kind = RecordKind::ActualLrp;
        let key = actual_key(&lrp.process_guid, lrp.index);
        let mut tx = self.begin().await?;
        let before: ActualLrp = read_record(
            &mut tx,
            kind,
            &key,
            sqlx::query(
                "SELECT record FROM actual_lrps
                 WHERE process_guid = $1 AND instance_index = $2 FOR UPDATE",
            )
            .bind(&lrp.process_guid)
            .bind(lrp.index),
        )
        .await?;
        check_tag(kind, &key, &before.modification_tag, &lrp.modification_tag)?;
        lrp.modification_tag = next_tag(&before.modification_tag);
        let record = encode(kind, &key, &lrp)?;
        let result = sqlx::query(
            "UPDATE actual_lrps SET domain = $1, cell_id = $2, state = $3, mod_index = $4, record = $5
             WHERE process_guid = $6 AND instance_index = $7 AND mod_epoch = $8 AND mod_index = $9",
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
        let event = Event::ActualLrpChanged {
            actual_lrp_before: before,
            actual_lrp_after: lrp.clone(),
        };
        self.commit_with_event(tx, event).await?;
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
        let mut tx = self.begin().await?;
        let lrp: ActualLrp = read_record(
            &mut tx,
            kind,
            &key,
            sqlx::query(
                "SELECT record FROM actual_lrps
                 WHERE process_guid = $1 AND instance_index = $2 FOR UPDATE",
            )
            .bind(&process_guid)
            .bind(index),
        )
        .await?;
        check_tag(kind, &key, &lrp.modification_tag, &expected)?;
        let result = sqlx::query(
            "DELETE FROM actual_lrps
             WHERE process_guid = $1 AND instance_index = $2 AND mod_epoch = $3 AND mod_index = $4",
        )
        .bind(&process_guid)
        .bind(index)
        .bind(&expected.epoch)
        .bind(i64::from(expected.index))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend("cannot delete actual LRP", e))?;
        ensure_one_row(kind, &key, result.rows_affected())?;
        self.commit_with_event(tx, Event::ActualLrpRemoved { actual_lrp: lrp })
            .await
    }
}

type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Reads and decodes the one record `query` selects (its first column)
/// inside a write; `NotFound` if there is none.
async fn read_record<T: DeserializeOwned>(
    tx: &mut Transaction<'static, Postgres>,
    kind: RecordKind,
    key: &str,
    query: PgQuery<'_>,
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
        query: PgQuery<'_>,
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
        mut query: QueryBuilder<'_, Postgres>,
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
impl Store for PostgresStore {
    async fn upsert_domain(&self, domain: &str, ttl: Option<Duration>) -> StoreResult<()> {
        // A NULL ttl makes a NULL `expires_at`: never expires.
        sqlx::query(
            "INSERT INTO domains (domain, expires_at) VALUES ($1, now() + $2 * interval '1 millisecond')
             ON CONFLICT (domain) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(domain)
        .bind(ttl.map(ttl_millis))
        .execute(&self.inner.pool)
        .await
        .map_err(|e| backend("cannot upsert domain", e))?;
        Ok(())
    }

    async fn domains(&self) -> StoreResult<Vec<String>> {
        sqlx::query_scalar(
            "SELECT domain FROM domains WHERE expires_at IS NULL OR expires_at > now() ORDER BY domain",
        )
        .fetch_all(&self.inner.pool)
        .await
        .map_err(|e| backend("cannot list domains", e))
    }

    async fn create_task(&self, task: Task) -> StoreResult<Task> {
        self.write(move |inner| async move { inner.create_task(task).await })
            .await
    }

    async fn get_task(&self, task_guid: &str) -> StoreResult<Task> {
        let query = sqlx::query("SELECT record FROM tasks WHERE task_guid = $1").bind(task_guid);
        self.inner.get_one(RecordKind::Task, task_guid, query).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        let mut query = QueryBuilder::new("SELECT task_guid, record FROM tasks WHERE TRUE");
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
        let query = sqlx::query("SELECT record FROM desired_lrps WHERE process_guid = $1")
            .bind(process_guid);
        self.inner
            .get_one(RecordKind::DesiredLrp, process_guid, query)
            .await
    }

    async fn list_desired_lrps(&self, filter: &DesiredLrpFilter) -> StoreResult<Vec<DesiredLrp>> {
        let mut query =
            QueryBuilder::new("SELECT process_guid, record FROM desired_lrps WHERE TRUE");
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
            "SELECT record FROM actual_lrps WHERE process_guid = $1 AND instance_index = $2",
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
            "SELECT process_guid || '/' || instance_index::text, record FROM actual_lrps WHERE TRUE",
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
            "INSERT INTO cells (cell_id, expires_at, record)
             VALUES ($1, now() + $2 * interval '1 millisecond', $3)
             ON CONFLICT (cell_id) DO UPDATE SET
               expires_at = excluded.expires_at, record = excluded.record",
        )
        .bind(&presence.cell_id)
        .bind(ttl_millis(ttl))
        .bind(record)
        .execute(&self.inner.pool)
        .await
        .map_err(|e| backend("cannot upsert cell", e))?;
        Ok(())
    }

    async fn list_cells(&self) -> StoreResult<Vec<CellPresence>> {
        let query = QueryBuilder::new(
            "SELECT cell_id, record FROM cells WHERE expires_at > now() ORDER BY cell_id",
        );
        self.inner.list(RecordKind::Cell, query).await
    }

    async fn remove_cell(&self, cell_id: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM cells WHERE cell_id = $1")
            .bind(cell_id)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| backend("cannot remove cell", e))?;
        Ok(())
    }

    async fn acquire_lock(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        // One statement, so atomic: insert if absent; otherwise take over
        // only if the lease is ours or has run out. A refused update changes
        // no row. Racing inserts of a free lock: the later one waits for the
        // earlier to commit, then sees its row and is refused.
        let result = sqlx::query(
            "INSERT INTO locks (name, owner, expires_at)
             VALUES ($1, $2, now() + $3 * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE locks.owner = excluded.owner OR locks.expires_at <= now()",
        )
        .bind(name)
        .bind(owner)
        .bind(ttl_millis(ttl))
        .execute(&self.inner.pool)
        .await
        .map_err(|e| backend("cannot acquire lock", e))?;
        Ok(result.rows_affected() == 1)
    }

    async fn release_lock(&self, name: &str, owner: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM locks WHERE name = $1 AND owner = $2")
            .bind(name)
            .bind(owner)
            .execute(&self.inner.pool)
            .await
            .map_err(|e| backend("cannot release lock", e))?;
        Ok(())
    }

    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>> {
        sqlx::query_scalar("SELECT owner FROM locks WHERE name = $1 AND expires_at > now()")
            .bind(name)
            .fetch_optional(&self.inner.pool)
            .await
            .map_err(|e| backend("cannot read lock", e))
    }

    fn subscribe(&self) -> EventReceiver {
        self.inner.feed.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_clamped_to_a_valid_interval() {
        assert_eq!(ttl_millis(Duration::from_millis(50)), 50);
        assert_eq!(ttl_millis(Duration::ZERO), 0);
        assert_eq!(ttl_millis(Duration::MAX), MAX_TTL_MILLIS);
    }

    #[test]
    fn descriptions_never_hold_the_password() {
        let options = PgConnectOptions::from_str("postgres://bbs:s3cret@db.local:5433/lattice")
            .expect("a valid url");
        let description = describe(&options);
        assert_eq!(description, "postgres db.local:5433 database lattice");
        assert!(!description.contains("s3cret"));
    }
}
