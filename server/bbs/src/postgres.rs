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
//! Every statement of a record, cell, domain or lock is [`crate::sql`]'s;
//! this module connects, and supplies the transaction and the change feed.
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

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use lattice_models::Event;
use sqlx::postgres::{PgConnectOptions, PgListener, PgNotification, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::{broadcast, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::sql::{backend_error as backend, ttl_millis, Backend, Dialect, SqlStore};
use crate::{EventReceiver, StoreError, StoreResult};

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
/// The PostgreSQL store. Cheap to share behind an `Arc<dyn Store>`.
pub type PostgresStore = SqlStore<PostgresBackend>;

/// The PostgreSQL side of [`PostgresStore`].
pub struct PostgresBackend {
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

impl SqlStore<PostgresBackend> {
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
        Ok(SqlStore::new(PostgresBackend {
            pool,
            feed,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            feed_task: std::sync::Mutex::new(Some(feed_task)),
        }))
    }

    /// Stops following the change feed, waits for running writes and closes
    /// every connection. Calls after this fail. (Dropping the store, which
    /// also ends the feed, is enough when nothing needs to wait for it.)
    pub async fn close(&self) {
        self.backend.stop.cancel();
        let task = self
            .backend
            .feed_task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "the change feed task failed");
            }
        }
        self.backend.pool.close().await;
    }

    /// Deletes the events older than `retention` and returns how many. Every
    /// store already does this with [`EVENT_RETENTION`] every
    /// [`PRUNE_INTERVAL`]; call it to reclaim space at once.
    ///
    /// # Errors
    /// [`StoreError::Backend`] if the delete fails.
    pub async fn prune_events(&self, retention: Duration) -> StoreResult<u64> {
        prune(&self.backend.pool, retention).await
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

#[async_trait]
impl Backend for PostgresBackend {
    const DIALECT: Dialect = Dialect::Postgres;
    type Tx = Transaction<'static, Postgres>;
    type Pool = PgPool;

    fn pool(&self) -> PgPool {
        self.pool.clone()
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Postgres>> {
        self.pool
            .begin()
            .await
            .map_err(|e| backend("cannot begin a write", e))
    }

    /// Appends `events` to the feed inside `tx`, each following the one
    /// before it, commits, and publishes them on this store's broadcast
    /// (see the module doc for why in that order).
    async fn commit(
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

    fn subscribe(&self) -> EventReceiver {
        self.feed.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_never_hold_the_password() {
        let options = PgConnectOptions::from_str("postgres://bbs:s3cret@db.local:5433/lattice")
            .expect("a valid url");
        let description = describe(&options);
        assert_eq!(description, "postgres db.local:5433 database lattice");
        assert!(!description.contains("s3cret"));
    }
}
