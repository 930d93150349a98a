//! Every store operation, written once over a small SQL dialect; the SQLite
//! and PostgreSQL backends supply only a connection, a transaction and
//! how a commit publishes its events.
//!
//! # Layout
//! - [`Record`]: what the store needs to know of a task, desired LRP or
//!   actual LRP: its table, key, indexed columns and events.
//! - [`Dialect`] and [`Statement`]: a statement built once, with the
//!   dialect's placeholders (`?` or `$1`), row locks and clock.
//! - [`Backend`]: the one trait a backend implements.
//! - [`SqlStore`]: the [`Store`] over any backend; `SqliteStore` and
//!   `PostgresStore` are this type with their backend.
//!
//! # Guarantees
//! - A write of a record is one transaction: read the row (locked where the
//!   dialect can), check the tag, write guarded by the tag, commit with its
//!   events. A create that finds the key taken changes nothing.
//! - A write runs on its own tokio task: once started it commits and
//!   publishes even if the caller's future is dropped.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use lattice_models::{
    ActualLrp, ActualLrpState, CellPresence, DesiredLrp, Event, ModificationTag, Task,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::records::{
    already_exists, check_tag, decode, decode_readable, encode, ensure_one_row, fresh_tag,
    next_tag, not_found,
};
use crate::{
    ActualLrpFilter, ActualLrpSummary, DesiredLrpFilter, DesiredLrpSummary, EventReceiver,
    RecordKind, Store, StoreError, StoreResult, TaskFilter,
};

pub(crate) fn backend_error(context: &str, e: sqlx::Error) -> StoreError {
    StoreError::Backend(format!("{context}: {e}"))
}

// --- statements ----------------------------------------------------------------

/// The SQL spoken by a backend, where the two differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `?` placeholders; no row locks (a write holds the database's one
    /// write lock from its start); TTLs in unix milliseconds of the
    /// writer's clock.
    Sqlite,
    /// `$1` placeholders; `FOR UPDATE`; TTLs as `TIMESTAMPTZ` of the
    /// database's clock, so that machines agree whatever their own clocks.
    Postgres,
}

/// The longest TTL a lease or presence may have (about 100 years); longer
/// ones are clamped so that `now + ttl` stays a valid time in both dialects.
const MAX_TTL_MILLIS: i64 = 100 * 365 * 24 * 3_600 * 1_000;

/// Milliseconds of a TTL, clamped to [`MAX_TTL_MILLIS`].
pub(crate) fn ttl_millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis())
        .unwrap_or(MAX_TTL_MILLIS)
        .min(MAX_TTL_MILLIS)
}

/// Wall-clock unix milliseconds, SQLite's unit of every `expires_at`.
fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A value bound to a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    Int(i64),
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Text(text.to_string())
    }
}

impl From<&String> for Value {
    fn from(text: &String) -> Value {
        Value::Text(text.clone())
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

/// A statement and its arguments, placeholders in the dialect's style.
#[derive(Debug)]
pub struct Statement {
    dialect: Dialect,
    pub(crate) sql: String,
    pub(crate) args: Vec<Value>,
}

impl Statement {
    fn new(dialect: Dialect, sql: &str) -> Statement {
        Statement {
            dialect,
            sql: sql.to_string(),
            args: Vec::new(),
        }
    }

    fn push(&mut self, sql: &str) -> &mut Statement {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder bound to `value`.
    fn bind(&mut self, value: impl Into<Value>) -> &mut Statement {
        self.args.push(value.into());
        match self.dialect {
            Dialect::Sqlite => self.sql.push('?'),
            Dialect::Postgres => {
                self.sql.push('$');
                self.sql.push_str(&self.args.len().to_string());
            }
        }
        self
    }

    /// Appends ` AND column = value` for each condition.
    fn and_equal(&mut self, conditions: Vec<(&str, Value)>) -> &mut Statement {
        for (column, value) in conditions {
            self.push(" AND ").push(column).push(" = ").bind(value);
        }
        self
    }

    /// Appends the time `ttl` from now, in the dialect's clock.
    fn expires_in(&mut self, ttl: Duration) -> &mut Statement {
        match self.dialect {
            Dialect::Sqlite => self.bind(now_millis().saturating_add(ttl_millis(ttl))),
            Dialect::Postgres => self
                .push("now() + ")
                .bind(ttl_millis(ttl))
                .push(" * interval '1 millisecond'"),
        }
    }

    /// Appends the present, in the dialect's clock.
    fn now(&mut self) -> &mut Statement {
        match self.dialect {
            Dialect::Sqlite => self.bind(now_millis()),
            Dialect::Postgres => self.push("now()"),
        }
    }

    /// Appends the row lock a read inside a write takes.
    fn for_update(&mut self) -> &mut Statement {
        match self.dialect {
            Dialect::Sqlite => self,
            Dialect::Postgres => self.push(" FOR UPDATE"),
        }
    }
}

// --- records -----------------------------------------------------------------------

/// A record's key: its column values, and the text that names it in errors.
pub struct RecordKey {
    values: Vec<Value>,
    text: String,
}

impl RecordKey {
    fn single(key: &str) -> RecordKey {
        RecordKey {
            values: vec![key.into()],
            text: key.to_string(),
        }
    }

    fn actual(process_guid: &str, index: i64) -> RecordKey {
        RecordKey {
            values: vec![process_guid.into(), index.into()],
            text: crate::records::actual_key(process_guid, index),
        }
    }
}

/// A kind of record the store keeps with a modification tag and events.
/// Its row: the key columns, the [`Record::COLUMNS`] lists filter and
/// sort on, `mod_epoch`, `mod_index` and the record as JSON (`record`).
pub trait Record: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const KIND: RecordKind;
    const TABLE: &'static str;
    /// The key columns, in the order of [`RecordKey`]'s values.
    const KEY: &'static [&'static str];
    /// The key as one text column, for the rows of a list.
    const KEY_TEXT: &'static str;
    /// The other columns of the row, in the order of [`Record::columns`].
    const COLUMNS: &'static [&'static str];
    /// The order of a list.
    const ORDER_BY: &'static str;
    type Filter: Send + Sync;

    fn key(&self) -> RecordKey;
    fn columns(&self) -> Vec<Value>;
    fn tag(&self) -> &ModificationTag;
    fn set_tag(&mut self, tag: ModificationTag);
    /// The conditions a filter puts on [`Record::COLUMNS`] and the key.
    fn conditions(filter: &Self::Filter) -> Vec<(&'static str, Value)>;
    fn created(&self) -> Event;
    fn changed(before: Self, after: Self) -> Event;
    fn removed(self) -> Event;
}

/// The condition of a filter's optional text field, if it is set.
fn equal(column: &'static str, value: &Option<String>) -> Option<(&'static str, Value)> {
    value.as_ref().map(|v| (column, Value::from(v)))
}

/// The conditions of a filter's fields that are set.
fn set<const N: usize>(
    conditions: [Option<(&'static str, Value)>; N],
) -> Vec<(&'static str, Value)> {
    conditions.into_iter().flatten().collect()
}

impl Record for Task {
    const KIND: RecordKind = RecordKind::Task;
    const TABLE: &'static str = "tasks";
    const KEY: &'static [&'static str] = &["task_guid"];
    const KEY_TEXT: &'static str = "task_guid";
    const COLUMNS: &'static [&'static str] = &["domain", "state", "cell_id", "created_at"];
    const ORDER_BY: &'static str = "created_at, task_guid";
    type Filter = TaskFilter;

    fn key(&self) -> RecordKey {
        RecordKey::single(&self.task_guid)
    }
    fn columns(&self) -> Vec<Value> {
        vec![
            (&self.domain).into(),
            self.state.as_str().into(),
            (&self.cell_id).into(),
            self.created_at.into(),
        ]
    }
    fn tag(&self) -> &ModificationTag {
        &self.modification_tag
    }
    fn set_tag(&mut self, tag: ModificationTag) {
        self.modification_tag = tag;
    }
    fn conditions(filter: &TaskFilter) -> Vec<(&'static str, Value)> {
        set([
            equal("domain", &filter.domain),
            equal("cell_id", &filter.cell_id),
            filter.state.map(|s| ("state", s.as_str().into())),
        ])
    }
    fn created(&self) -> Event {
        Event::TaskCreated { task: self.clone() }
    }
    fn changed(before: Self, after: Self) -> Event {
        Event::TaskChanged {
            task_before: before,
            task_after: after,
        }
    }
    fn removed(self) -> Event {
        Event::TaskRemoved { task: self }
    }
}

impl Record for DesiredLrp {
    const KIND: RecordKind = RecordKind::DesiredLrp;
    const TABLE: &'static str = "desired_lrps";
    const KEY: &'static [&'static str] = &["process_guid"];
    const KEY_TEXT: &'static str = "process_guid";
    const COLUMNS: &'static [&'static str] = &["domain", "instances"];
    const ORDER_BY: &'static str = "process_guid";
    type Filter = DesiredLrpFilter;

    fn key(&self) -> RecordKey {
        RecordKey::single(&self.process_guid)
    }
    fn columns(&self) -> Vec<Value> {
        vec![(&self.domain).into(), self.instances.into()]
    }
    fn tag(&self) -> &ModificationTag {
        &self.modification_tag
    }
    fn set_tag(&mut self, tag: ModificationTag) {
        self.modification_tag = tag;
    }
    fn conditions(filter: &DesiredLrpFilter) -> Vec<(&'static str, Value)> {
        set([equal("domain", &filter.domain)])
    }
    fn created(&self) -> Event {
        Event::DesiredLrpCreated {
            desired_lrp: self.clone(),
        }
    }
    fn changed(before: Self, after: Self) -> Event {
        Event::DesiredLrpChanged {
            desired_lrp_before: before,
            desired_lrp_after: after,
        }
    }
    fn removed(self) -> Event {
        Event::DesiredLrpRemoved { desired_lrp: self }
    }
}

impl Record for ActualLrp {
    const KIND: RecordKind = RecordKind::ActualLrp;
    const TABLE: &'static str = "actual_lrps";
    const KEY: &'static [&'static str] = &["process_guid", "instance_index"];
    const KEY_TEXT: &'static str = "process_guid || '/' || CAST(instance_index AS TEXT)";
    const COLUMNS: &'static [&'static str] = &[
        "domain",
        "cell_id",
        "state",
        "since",
        "crash_count",
        "evacuating_cell_id",
    ];
    const ORDER_BY: &'static str = "process_guid, instance_index";
    type Filter = ActualLrpFilter;

    fn key(&self) -> RecordKey {
        RecordKey::actual(&self.process_guid, self.index)
    }
    fn columns(&self) -> Vec<Value> {
        vec![
            (&self.domain).into(),
            (&self.cell_id).into(),
            self.state.as_str().into(),
            self.since.into(),
            self.crash_count.into(),
            self.evacuating_instance
                .as_ref()
                .map_or("", |e| e.cell_id.as_str())
                .into(),
        ]
    }
    fn tag(&self) -> &ModificationTag {
        &self.modification_tag
    }
    fn set_tag(&mut self, tag: ModificationTag) {
        self.modification_tag = tag;
    }
    fn conditions(filter: &ActualLrpFilter) -> Vec<(&'static str, Value)> {
        set([
            equal("process_guid", &filter.process_guid),
            equal("domain", &filter.domain),
            equal("cell_id", &filter.cell_id),
            filter.state.map(|s| ("state", s.as_str().into())),
        ])
    }
    fn created(&self) -> Event {
        Event::ActualLrpCreated {
            actual_lrp: self.clone(),
        }
    }
    fn changed(before: Self, after: Self) -> Event {
        Event::ActualLrpChanged {
            actual_lrp_before: before,
            actual_lrp_after: after,
        }
    }
    fn removed(self) -> Event {
        Event::ActualLrpRemoved { actual_lrp: self }
    }
}

/// The statements of a record kind.
impl Dialect {
    fn where_key<R: Record>(self, statement: &mut Statement, key: &RecordKey) {
        for (i, (column, value)) in R::KEY.iter().zip(&key.values).enumerate() {
            statement
                .push(if i == 0 { " WHERE " } else { " AND " })
                .push(column)
                .push(" = ")
                .bind(value.clone());
        }
    }

    fn and_tag(statement: &mut Statement, tag: &ModificationTag) {
        statement
            .push(" AND mod_epoch = ")
            .bind(tag.epoch.as_str())
            .push(" AND mod_index = ")
            .bind(i64::from(tag.index));
    }

    /// Inserts `record` unless its key is taken (then no row changes).
    fn insert<R: Record>(self, record: &R, json: String) -> Statement {
        let columns: Vec<&str> = R::KEY.iter().chain(R::COLUMNS).copied().collect();
        let mut statement = Statement::new(self, "INSERT INTO ");
        statement
            .push(R::TABLE)
            .push(" (")
            .push(&columns.join(", "))
            .push(", mod_epoch, mod_index, record) VALUES (");
        let tag = record.tag();
        let values = record
            .key()
            .values
            .into_iter()
            .chain(record.columns())
            .chain([
                Value::from(tag.epoch.as_str()),
                Value::from(i64::from(tag.index)),
                Value::Text(json),
            ]);
        for (i, value) in values.enumerate() {
            if i > 0 {
                statement.push(", ");
            }
            statement.bind(value);
        }
        statement.push(") ON CONFLICT DO NOTHING");
        statement
    }

    /// The record under `key`; inside a write, with the row locked.
    fn select<R: Record>(self, key: &RecordKey, in_write: bool) -> Statement {
        let mut statement = Statement::new(self, "SELECT record FROM ");
        statement.push(R::TABLE);
        self.where_key::<R>(&mut statement, key);
        if in_write {
            statement.for_update();
        }
        statement
    }

    /// Writes `record` over the row whose tag is `before`.
    fn update<R: Record>(self, record: &R, json: String, before: &ModificationTag) -> Statement {
        let mut statement = Statement::new(self, "UPDATE ");
        statement.push(R::TABLE).push(" SET ");
        for (column, value) in R::COLUMNS.iter().zip(record.columns()) {
            statement.push(column).push(" = ").bind(value).push(", ");
        }
        statement
            .push("mod_index = ")
            .bind(i64::from(record.tag().index))
            .push(", record = ")
            .bind(Value::Text(json));
        self.where_key::<R>(&mut statement, &record.key());
        Dialect::and_tag(&mut statement, before);
        statement
    }

    /// Deletes the row under `key` whose tag is `expected`.
    fn delete<R: Record>(self, key: &RecordKey, expected: &ModificationTag) -> Statement {
        let mut statement = Statement::new(self, "DELETE FROM ");
        statement.push(R::TABLE);
        self.where_key::<R>(&mut statement, key);
        Dialect::and_tag(&mut statement, expected);
        statement
    }

    /// The `(key, record)` rows a filter selects, in list order.
    fn list<R: Record>(self, filter: &R::Filter) -> Statement {
        let mut statement = Statement::new(self, "SELECT ");
        statement
            .push(R::KEY_TEXT)
            .push(", record FROM ")
            .push(R::TABLE)
            .push(" WHERE 1 = 1")
            .and_equal(R::conditions(filter))
            .push(" ORDER BY ")
            .push(R::ORDER_BY);
        statement
    }

    /// Every desired LRP's [`DesiredLrpSummary`] columns, in list order.
    fn desired_summaries(self) -> Statement {
        Statement::new(
            self,
            "SELECT process_guid, domain, instances FROM desired_lrps ORDER BY process_guid",
        )
    }

    /// Every actual LRP's [`ActualLrpSummary`] columns, packed into one
    /// row per process guid (see [`unpack_actual_summaries`]): a row costs
    /// the driver far more than its bytes (about 4 µs through sqlx's
    /// SQLite worker), so 200,000 rows of five instances read several
    /// times faster than 1,000,000 rows of one.
    fn actual_summaries(self) -> Statement {
        let (separator, aggregate, order) = match self {
            // SQLite reads a group in its primary key's order; the unpack
            // sorts anyway, as group_concat does not promise it.
            Dialect::Sqlite => ("char(31)", "group_concat", ""),
            Dialect::Postgres => ("chr(31)", "string_agg", " ORDER BY instance_index"),
        };
        let row_separator = separator.replace("31", "30");
        let fields = [
            "instance_index",
            "state",
            "cell_id",
            "since",
            "crash_count",
            "evacuating_cell_id",
        ]
        .join(&format!(" || {separator} || "));
        Statement::new(
            self,
            &format!(
                "SELECT process_guid, {aggregate}({fields}, {row_separator}{order}) \
                 FROM actual_lrps GROUP BY process_guid ORDER BY process_guid"
            ),
        )
    }
}

/// Separates the fields of one instance in a packed summary row.
const FIELD_SEPARATOR: char = '\u{1f}';
/// Separates the instances of one process in a packed summary row.
const INSTANCE_SEPARATOR: char = '\u{1e}';

/// The instances of the rows of [`Dialect::actual_summaries`]
/// (`(process_guid, packed)`), sorted by process guid, then index. An
/// instance that does not unpack (a state this version does not know, or
/// a cell id with a separator in it, which no cell uses) is skipped and
/// logged, as a list skips a record it cannot decode.
fn unpack_actual_summaries(rows: Vec<(String, String)>) -> Vec<ActualLrpSummary> {
    let mut summaries = Vec::with_capacity(rows.len() * 4);
    for (process_guid, packed) in rows {
        let first = summaries.len();
        for instance in packed.split(INSTANCE_SEPARATOR) {
            match unpack_instance(&process_guid, instance) {
                Some(summary) => summaries.push(summary),
                None => tracing::error!(
                    %process_guid,
                    instance = %instance.replace([FIELD_SEPARATOR, INSTANCE_SEPARATOR], " "),
                    "skipping an unreadable actual LRP in its summaries"
                ),
            }
        }
        let group = &mut summaries[first..];
        if !group.is_sorted_by_key(|s| s.index) {
            group.sort_unstable_by_key(|s| s.index);
        }
    }
    summaries
}

fn unpack_instance(process_guid: &str, instance: &str) -> Option<ActualLrpSummary> {
    let mut fields = instance.split(FIELD_SEPARATOR);
    let mut next = || fields.next();
    let index = next()?.parse().ok()?;
    let state = next()?;
    let state = ActualLrpState::ALL
        .into_iter()
        .find(|s| s.as_str() == state)?;
    let cell_id = next()?.to_string();
    let since = next()?.parse().ok()?;
    let crash_count = next()?.parse().ok()?;
    let evacuating_cell_id = next()?;
    if next().is_some() {
        return None;
    }
    Some(ActualLrpSummary {
        process_guid: process_guid.to_string(),
        index,
        state,
        cell_id,
        since,
        crash_count,
        evacuating_cell_id: (!evacuating_cell_id.is_empty())
            .then(|| evacuating_cell_id.to_string()),
    })
}

// --- backends ------------------------------------------------------------------------

/// Where statements run: a backend's pool or one of its transactions.
#[async_trait]
pub trait Connection: Send {
    /// Runs `statement`; how many rows it changed.
    async fn execute(&mut self, statement: Statement) -> Result<u64, sqlx::Error>;
    /// The first column of every row, as text.
    async fn fetch_texts(&mut self, statement: Statement) -> Result<Vec<String>, sqlx::Error>;
    /// The first two columns of every row, as text.
    async fn fetch_pairs(
        &mut self,
        statement: Statement,
    ) -> Result<Vec<(String, String)>, sqlx::Error>;
    /// The rows of [`Dialect::desired_summaries`].
    async fn fetch_desired_summaries(
        &mut self,
        statement: Statement,
    ) -> Result<Vec<(String, String, i64)>, sqlx::Error>;
}

/// What a pool or a transaction (`$connection`, as `self`) runs queries on.
macro_rules! executor {
    (pool, $connection:tt) => {
        &*$connection
    };
    (tx, $connection:tt) => {
        &mut **$connection
    };
}

/// [`Connection`] for a database's pool and transactions: the statement's
/// arguments bound in order, rows read as text.
macro_rules! impl_connection {
    ($db:ty) => {
        impl_connection!(@for $db, sqlx::Pool<$db>, pool);
        impl_connection!(@for $db, sqlx::Transaction<'static, $db>, tx);
    };
    (@for $db:ty, $connection:ty, $kind:ident) => {
        #[async_trait]
        impl Connection for $connection {
            async fn execute(&mut self, statement: Statement) -> Result<u64, sqlx::Error> {
                let query =
                    sqlx::query_with::<$db, _>(&statement.sql, arguments::<$db>(&statement)?);
                Ok(query.execute(executor!($kind, self)).await?.rows_affected())
            }

            async fn fetch_texts(
                &mut self,
                statement: Statement,
            ) -> Result<Vec<String>, sqlx::Error> {
                let query = sqlx::query_scalar_with::<$db, String, _>(
                    &statement.sql,
                    arguments::<$db>(&statement)?,
                );
                query.fetch_all(executor!($kind, self)).await
            }

            async fn fetch_pairs(
                &mut self,
                statement: Statement,
            ) -> Result<Vec<(String, String)>, sqlx::Error> {
                let query = sqlx::query_as_with::<$db, (String, String), _>(
                    &statement.sql,
                    arguments::<$db>(&statement)?,
                );
                query.fetch_all(executor!($kind, self)).await
            }

            async fn fetch_desired_summaries(
                &mut self,
                statement: Statement,
            ) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
                let query = sqlx::query_as_with::<$db, (String, String, i64), _>(
                    &statement.sql,
                    arguments::<$db>(&statement)?,
                );
                query.fetch_all(executor!($kind, self)).await
            }
        }
    };
}

/// The arguments of `statement` for database `DB`.
fn arguments<'q, DB>(statement: &'q Statement) -> Result<DB::Arguments<'q>, sqlx::Error>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    use sqlx::Arguments;
    let mut arguments = DB::Arguments::default();
    for value in &statement.args {
        match value {
            Value::Text(text) => arguments.add(text.as_str()),
            Value::Int(n) => arguments.add(*n),
        }
        .map_err(sqlx::Error::Encode)?;
    }
    Ok(arguments)
}

#[cfg(feature = "sqlite")]
impl_connection!(sqlx::Sqlite);
#[cfg(feature = "postgres")]
impl_connection!(sqlx::Postgres);

/// What a backend supplies; everything else is [`SqlStore`]'s.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    const DIALECT: Dialect;
    /// A write transaction.
    type Tx: Connection + 'static;
    /// A connection for reads and single-statement writes.
    type Pool: Connection + 'static;

    fn pool(&self) -> Self::Pool;
    /// Starts a write of records; writes of records wait for each other
    /// where the backend needs that to publish events in commit order.
    async fn begin(&self) -> StoreResult<Self::Tx>;
    /// Commits `tx` and publishes `events`, in order, after the commit.
    async fn commit(&self, tx: Self::Tx, events: Vec<Event>) -> StoreResult<()>;
    fn subscribe(&self) -> EventReceiver;
}

/// The [`Store`] over a SQL backend (see the module doc).
pub struct SqlStore<B> {
    pub(crate) backend: Arc<B>,
}

impl<B: Backend> SqlStore<B> {
    pub(crate) fn new(backend: B) -> SqlStore<B> {
        SqlStore {
            backend: Arc::new(backend),
        }
    }

    /// Runs a write of records on its own task so that dropping the
    /// caller's future cannot separate a commit from its event.
    async fn write<T, F, Fut>(&self, write: F) -> StoreResult<T>
    where
        F: FnOnce(Arc<B>) -> Fut,
        Fut: std::future::Future<Output = StoreResult<T>> + Send + 'static,
        T: Send + 'static,
    {
        match tokio::spawn(write(Arc::clone(&self.backend))).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StoreError::Backend(format!(
                "store write was cancelled: {e}"
            ))),
        }
    }

    async fn get<R: Record>(&self, key: RecordKey) -> StoreResult<R> {
        let statement = B::DIALECT.select::<R>(&key, false);
        let json = fetch_one(&mut self.backend.pool(), R::KIND, &key, statement).await?;
        decode(R::KIND, &key.text, &json)
    }

    async fn list<R: Record>(&self, filter: &R::Filter) -> StoreResult<Vec<R>> {
        let rows = self
            .backend
            .pool()
            .fetch_pairs(B::DIALECT.list::<R>(filter))
            .await
            .map_err(|e| backend_error(&format!("cannot list {}s", R::KIND), e))?;
        Ok(decode_readable(R::KIND, &rows))
    }

    async fn execute(&self, context: &str, statement: Statement) -> StoreResult<u64> {
        self.backend
            .pool()
            .execute(statement)
            .await
            .map_err(|e| backend_error(context, e))
    }
}

/// The one record `statement` selects; `NotFound` if there is none.
async fn fetch_one(
    connection: &mut impl Connection,
    kind: RecordKind,
    key: &RecordKey,
    statement: Statement,
) -> StoreResult<String> {
    connection
        .fetch_texts(statement)
        .await
        .map_err(|e| backend_error(&format!("cannot read {kind} {:?}", key.text), e))?
        .into_iter()
        .next()
        .ok_or_else(|| not_found(kind, &key.text))
}

/// Creates those of `records` whose key is free, in one commit; each one's
/// stored record, or `None` where the key was taken.
async fn create_many<B: Backend, R: Record>(
    backend: &B,
    records: Vec<R>,
) -> StoreResult<Vec<Option<R>>> {
    let mut tx = backend.begin().await?;
    let mut created = Vec::with_capacity(records.len());
    for mut record in records {
        record.set_tag(fresh_tag());
        let json = encode(R::KIND, &record.key().text, &record)?;
        let inserted = tx
            .execute(B::DIALECT.insert(&record, json))
            .await
            .map_err(|e| backend_error(&format!("cannot create {}", R::KIND), e))?;
        created.push((inserted > 0).then_some(record));
    }
    let events = created.iter().flatten().map(R::created).collect();
    backend.commit(tx, events).await?;
    Ok(created)
}

async fn create<B: Backend, R: Record>(backend: &B, record: R) -> StoreResult<R> {
    let key = record.key().text;
    match create_many(backend, vec![record]).await?.pop().flatten() {
        Some(created) => Ok(created),
        None => Err(already_exists(R::KIND, &key)),
    }
}

/// Reads the row under `key` inside `tx` and checks its tag.
async fn read_checked<B: Backend, R: Record>(
    tx: &mut B::Tx,
    key: &RecordKey,
    expected: &ModificationTag,
) -> StoreResult<R> {
    let json = fetch_one(tx, R::KIND, key, B::DIALECT.select::<R>(key, true)).await?;
    let stored: R = decode(R::KIND, &key.text, &json)?;
    check_tag(R::KIND, &key.text, stored.tag(), expected)?;
    Ok(stored)
}

async fn update<B: Backend, R: Record>(backend: &B, mut record: R) -> StoreResult<R> {
    let key = record.key();
    let mut tx = backend.begin().await?;
    let before: R = read_checked::<B, R>(&mut tx, &key, record.tag()).await?;
    record.set_tag(next_tag(before.tag()));
    let json = encode(R::KIND, &key.text, &record)?;
    let statement = B::DIALECT.update(&record, json, before.tag());
    let rows = tx
        .execute(statement)
        .await
        .map_err(|e| backend_error(&format!("cannot update {}", R::KIND), e))?;
    ensure_one_row(R::KIND, &key.text, rows)?;
    backend
        .commit(tx, vec![R::changed(before, record.clone())])
        .await?;
    Ok(record)
}

async fn delete<B: Backend, R: Record>(
    backend: &B,
    key: RecordKey,
    expected: ModificationTag,
) -> StoreResult<()> {
    let mut tx = backend.begin().await?;
    let stored: R = read_checked::<B, R>(&mut tx, &key, &expected).await?;
    let rows = tx
        .execute(B::DIALECT.delete::<R>(&key, &expected))
        .await
        .map_err(|e| backend_error(&format!("cannot delete {}", R::KIND), e))?;
    ensure_one_row(R::KIND, &key.text, rows)?;
    backend.commit(tx, vec![stored.removed()]).await
}

#[async_trait]
impl<B: Backend> Store for SqlStore<B> {
    async fn upsert_domain(&self, domain: &str, ttl: Option<Duration>) -> StoreResult<()> {
        let mut statement = Statement::new(
            B::DIALECT,
            "INSERT INTO domains (domain, expires_at) VALUES (",
        );
        statement.bind(domain).push(", ");
        match ttl {
            Some(ttl) => statement.expires_in(ttl),
            // Never expires.
            None => statement.push("NULL"),
        };
        statement.push(") ON CONFLICT (domain) DO UPDATE SET expires_at = excluded.expires_at");
        self.execute("cannot upsert domain", statement).await?;
        Ok(())
    }

    async fn domains(&self) -> StoreResult<Vec<String>> {
        let mut statement = Statement::new(
            B::DIALECT,
            "SELECT domain FROM domains WHERE expires_at IS NULL OR expires_at > ",
        );
        statement.now().push(" ORDER BY domain");
        self.backend
            .pool()
            .fetch_texts(statement)
            .await
            .map_err(|e| backend_error("cannot list domains", e))
    }

    async fn create_task(&self, task: Task) -> StoreResult<Task> {
        self.write(move |b| async move { create(&*b, task).await })
            .await
    }

    async fn get_task(&self, task_guid: &str) -> StoreResult<Task> {
        self.get(RecordKey::single(task_guid)).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        self.list(filter).await
    }

    async fn update_task(&self, task: Task) -> StoreResult<Task> {
        self.write(move |b| async move { update(&*b, task).await })
            .await
    }

    async fn delete_task(&self, task_guid: &str, expected: &ModificationTag) -> StoreResult<()> {
        let (key, expected) = (RecordKey::single(task_guid), expected.clone());
        self.write(move |b| async move { delete::<B, Task>(&b, key, expected).await })
            .await
    }

    async fn create_desired_lrp(&self, lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        self.write(move |b| async move { create(&*b, lrp).await })
            .await
    }

    async fn get_desired_lrp(&self, process_guid: &str) -> StoreResult<DesiredLrp> {
        self.get(RecordKey::single(process_guid)).await
    }

    async fn list_desired_lrps(&self, filter: &DesiredLrpFilter) -> StoreResult<Vec<DesiredLrp>> {
        self.list(filter).await
    }

    async fn update_desired_lrp(&self, lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        self.write(move |b| async move { update(&*b, lrp).await })
            .await
    }

    async fn delete_desired_lrp(
        &self,
        process_guid: &str,
        expected: &ModificationTag,
    ) -> StoreResult<()> {
        let (key, expected) = (RecordKey::single(process_guid), expected.clone());
        self.write(move |b| async move { delete::<B, DesiredLrp>(&b, key, expected).await })
            .await
    }

    async fn create_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp> {
        self.write(move |b| async move { create(&*b, lrp).await })
            .await
    }

    async fn create_actual_lrps(
        &self,
        lrps: Vec<ActualLrp>,
    ) -> StoreResult<Vec<Option<ActualLrp>>> {
        self.write(move |b| async move { create_many(&*b, lrps).await })
            .await
    }

    async fn get_actual_lrp(&self, process_guid: &str, index: i64) -> StoreResult<ActualLrp> {
        self.get(RecordKey::actual(process_guid, index)).await
    }

    async fn list_actual_lrps(&self, filter: &ActualLrpFilter) -> StoreResult<Vec<ActualLrp>> {
        self.list(filter).await
    }

    async fn update_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp> {
        self.write(move |b| async move { update(&*b, lrp).await })
            .await
    }

    async fn list_desired_lrp_summaries(&self) -> StoreResult<Vec<DesiredLrpSummary>> {
        let rows = self
            .backend
            .pool()
            .fetch_desired_summaries(B::DIALECT.desired_summaries())
            .await
            .map_err(|e| backend_error("cannot list desired LRP summaries", e))?;
        Ok(rows
            .into_iter()
            .map(|(process_guid, domain, instances)| DesiredLrpSummary {
                process_guid,
                domain,
                instances,
            })
            .collect())
    }

    async fn list_actual_lrp_summaries(&self) -> StoreResult<Vec<ActualLrpSummary>> {
        let rows = self
            .backend
            .pool()
            .fetch_pairs(B::DIALECT.actual_summaries())
            .await
            .map_err(|e| backend_error("cannot list actual LRP summaries", e))?;
        Ok(unpack_actual_summaries(rows))
    }

    async fn delete_actual_lrp(
        &self,
        process_guid: &str,
        index: i64,
        expected: &ModificationTag,
    ) -> StoreResult<()> {
        let (key, expected) = (RecordKey::actual(process_guid, index), expected.clone());
        self.write(move |b| async move { delete::<B, ActualLrp>(&b, key, expected).await })
            .await
    }

    async fn upsert_cell(&self, presence: CellPresence, ttl: Duration) -> StoreResult<()> {
        let record = encode(RecordKind::Cell, &presence.cell_id, &presence)?;
        let mut statement = Statement::new(
            B::DIALECT,
            "INSERT INTO cells (cell_id, expires_at, record) VALUES (",
        );
        statement
            .bind(presence.cell_id.as_str())
            .push(", ")
            .expires_in(ttl)
            .push(", ")
            .bind(Value::Text(record))
            .push(
                ") ON CONFLICT (cell_id) DO UPDATE SET \
                 expires_at = excluded.expires_at, record = excluded.record",
            );
        self.execute("cannot upsert cell", statement).await?;
        Ok(())
    }

    async fn list_cells(&self) -> StoreResult<Vec<CellPresence>> {
        let mut statement = Statement::new(
            B::DIALECT,
            "SELECT cell_id, record FROM cells WHERE expires_at > ",
        );
        statement.now().push(" ORDER BY cell_id");
        let rows = self
            .backend
            .pool()
            .fetch_pairs(statement)
            .await
            .map_err(|e| backend_error("cannot list cells", e))?;
        Ok(decode_readable(RecordKind::Cell, &rows))
    }

    async fn remove_cell(&self, cell_id: &str) -> StoreResult<()> {
        let mut statement = Statement::new(B::DIALECT, "DELETE FROM cells WHERE cell_id = ");
        statement.bind(cell_id);
        self.execute("cannot remove cell", statement).await?;
        Ok(())
    }

    async fn acquire_lock(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        // One statement, so atomic: insert if absent; otherwise take over
        // only if the lease is ours or has run out. A refused update changes
        // no row. Racing inserts of a free lock: the later one waits for the
        // earlier to commit, then sees its row and is refused.
        let mut statement = Statement::new(
            B::DIALECT,
            "INSERT INTO locks (name, owner, expires_at) VALUES (",
        );
        statement
            .bind(name)
            .push(", ")
            .bind(owner)
            .push(", ")
            .expires_in(ttl)
            .push(
                ") ON CONFLICT (name) DO UPDATE SET \
                 owner = excluded.owner, expires_at = excluded.expires_at \
                 WHERE locks.owner = excluded.owner OR locks.expires_at <= ",
            )
            .now();
        Ok(self.execute("cannot acquire lock", statement).await? == 1)
    }

    async fn release_lock(&self, name: &str, owner: &str) -> StoreResult<()> {
        let mut statement = Statement::new(B::DIALECT, "DELETE FROM locks WHERE name = ");
        statement.bind(name).push(" AND owner = ").bind(owner);
        self.execute("cannot release lock", statement).await?;
        Ok(())
    }

    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>> {
        let mut statement = Statement::new(B::DIALECT, "SELECT owner FROM locks WHERE name = ");
        statement.bind(name).push(" AND expires_at > ").now();
        let owners = self
            .backend
            .pool()
            .fetch_texts(statement)
            .await
            .map_err(|e| backend_error("cannot read lock", e))?;
        Ok(owners.into_iter().next())
    }

    fn subscribe(&self) -> EventReceiver {
        self.backend.subscribe()
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
    fn one_statement_in_both_dialects() {
        let lrp = crate::suite::actual_lrp("web", "d", 2);
        let key = lrp.key();
        let sqlite = Dialect::Sqlite.delete::<ActualLrp>(&key, &lrp.modification_tag);
        assert_eq!(
            sqlite.sql,
            "DELETE FROM actual_lrps WHERE process_guid = ? AND instance_index = ? \
             AND mod_epoch = ? AND mod_index = ?"
        );
        let postgres = Dialect::Postgres.delete::<ActualLrp>(&key, &lrp.modification_tag);
        assert_eq!(
            postgres.sql,
            "DELETE FROM actual_lrps WHERE process_guid = $1 AND instance_index = $2 \
             AND mod_epoch = $3 AND mod_index = $4"
        );
        assert_eq!(postgres.args, sqlite.args);
        assert_eq!(postgres.args[1], Value::Int(2));
    }

    #[test]
    fn an_update_sets_every_column_and_guards_on_the_tag() {
        let task = crate::suite::task("t1", "d", 7);
        let before = ModificationTag {
            epoch: "e".into(),
            index: 3,
        };
        let statement = Dialect::Postgres.update(&task, "{}".into(), &before);
        assert_eq!(
            statement.sql,
            "UPDATE tasks SET domain = $1, state = $2, cell_id = $3, created_at = $4, \
             mod_index = $5, record = $6 WHERE task_guid = $7 AND mod_epoch = $8 AND mod_index = $9"
        );
        assert_eq!(statement.args[7], Value::Text("e".into()));
        assert_eq!(statement.args[8], Value::Int(3));
    }

    #[test]
    fn packed_summaries_unpack_sorted_and_skip_what_is_unreadable() {
        let packed = |fields: &[&str]| fields.join("\u{1f}");
        let rows = vec![(
            "web".to_string(),
            [
                packed(&["2", "RUNNING", "cell-1", "7", "0", ""]),
                packed(&["0", "CRASHED", "cell-2", "9", "3", "cell-old"]),
                packed(&["1", "ASLEEP", "cell-1", "7", "0", ""]),
                packed(&["3", "RUNNING", "cell-1", "7", "0", "", "extra"]),
            ]
            .join("\u{1e}"),
        )];
        let summaries = unpack_actual_summaries(rows);
        let indices: Vec<i64> = summaries.iter().map(|s| s.index).collect();
        assert_eq!(indices, [0, 2]);
        assert_eq!(summaries[0].state, ActualLrpState::Crashed);
        assert_eq!((summaries[0].since, summaries[0].crash_count), (9, 3));
        assert_eq!(summaries[0].evacuating_cell_id.as_deref(), Some("cell-old"));
        assert_eq!(summaries[1].evacuating_cell_id, None);
        assert_eq!(summaries[1].cell_id, "cell-1");
    }

    #[test]
    fn a_filter_becomes_conditions_in_list_order() {
        let filter = ActualLrpFilter {
            cell_id: Some("c1".into()),
            state: Some(lattice_models::ActualLrpState::Unclaimed),
            ..Default::default()
        };
        let statement = Dialect::Sqlite.list::<ActualLrp>(&filter);
        assert_eq!(
            statement.sql,
            "SELECT process_guid || '/' || CAST(instance_index AS TEXT), record FROM actual_lrps \
             WHERE 1 = 1 AND cell_id = ? AND state = ? ORDER BY process_guid, instance_index"
        );
        assert_eq!(
            statement.args,
            vec![Value::Text("c1".into()), Value::Text("UNCLAIMED".into())]
        );
    }
}
