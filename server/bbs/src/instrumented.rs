//! [`InstrumentedStore`]: any [`Store`] with the latency of every operation
//! recorded for `/metrics`.
//!
//! A decorator rather than code in each backend: the backends stay about
//! storage, every one of them (SQLite, PostgreSQL, the remote store of a
//! cell) is measured the same way, and only the processes that serve
//! `/metrics` wrap their store.
//!
//! Each call records `lattice_store_operation_duration_seconds` (a
//! histogram) with the labels `operation` (the trait method's name) and
//! `outcome`: `ok`, or the kind of error (`not_found`, `already_exists`,
//! `conflict`, `corrupt`, `backend`). Conflicts and misses are normal
//! outcomes of compare-and-swap and lookups, so they are told apart from
//! backend failures.

use std::time::Duration;

use async_trait::async_trait;
use lattice_models::{ActualLrp, CellPresence, DesiredLrp, ModificationTag, Task};
use tokio::time::Instant;

use crate::{
    ActualLrpFilter, ActualLrpSummary, DesiredLrpFilter, DesiredLrpSummary, EventReceiver,
    SharedStore, Store, StoreError, StoreResult, TaskFilter,
};

/// The name of the histogram of store operation latencies.
pub const STORE_OPERATION_DURATION: &str = "lattice_store_operation_duration_seconds";

/// A [`Store`] that times every call of the store it wraps.
pub struct InstrumentedStore {
    inner: SharedStore,
}

impl InstrumentedStore {
    pub fn new(inner: SharedStore) -> InstrumentedStore {
        InstrumentedStore { inner }
    }

    /// `store`, instrumented, shared.
    pub fn wrap(store: SharedStore) -> SharedStore {
        std::sync::Arc::new(InstrumentedStore::new(store))
    }
}

/// The `outcome` label of a result.
fn outcome<T>(result: &StoreResult<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(StoreError::NotFound { .. }) => "not_found",
        Err(StoreError::AlreadyExists { .. }) => "already_exists",
        Err(StoreError::Conflict { .. }) => "conflict",
        Err(StoreError::Corrupt { .. }) => "corrupt",
        Err(StoreError::Backend(_)) => "backend",
    }
}

/// Runs `call`, recording its duration as `operation`.
async fn timed<T>(
    operation: &'static str,
    call: impl std::future::Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    let started = Instant::now();
    let result = call.await;
    record(operation, outcome(&result), started.elapsed());
    result
}

fn record(operation: &'static str, outcome: &'static str, elapsed: Duration) {
    metrics::histogram!(STORE_OPERATION_DURATION, "operation" => operation, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn upsert_domain(&self, domain: &str, ttl: Option<Duration>) -> StoreResult<()> {
        timed("upsert_domain", self.inner.upsert_domain(domain, ttl)).await
    }
    async fn domains(&self) -> StoreResult<Vec<String>> {
        timed("domains", self.inner.domains()).await
    }

    async fn create_task(&self, task: Task) -> StoreResult<Task> {
        timed("create_task", self.inner.create_task(task)).await
    }
    async fn get_task(&self, task_guid: &str) -> StoreResult<Task> {
        timed("get_task", self.inner.get_task(task_guid)).await
    }
    async fn list_tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<Task>> {
        timed("list_tasks", self.inner.list_tasks(filter)).await
    }
    async fn update_task(&self, task: Task) -> StoreResult<Task> {
        timed("update_task", self.inner.update_task(task)).await
    }
    async fn delete_task(&self, task_guid: &str, expected: &ModificationTag) -> StoreResult<()> {
        timed("delete_task", self.inner.delete_task(task_guid, expected)).await
    }

    async fn create_desired_lrp(&self, lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        timed("create_desired_lrp", self.inner.create_desired_lrp(lrp)).await
    }
    async fn get_desired_lrp(&self, process_guid: &str) -> StoreResult<DesiredLrp> {
        timed("get_desired_lrp", self.inner.get_desired_lrp(process_guid)).await
    }
    async fn list_desired_lrps(&self, filter: &DesiredLrpFilter) -> StoreResult<Vec<DesiredLrp>> {
        timed("list_desired_lrps", self.inner.list_desired_lrps(filter)).await
    }
    async fn update_desired_lrp(&self, lrp: DesiredLrp) -> StoreResult<DesiredLrp> {
        timed("update_desired_lrp", self.inner.update_desired_lrp(lrp)).await
    }
    async fn delete_desired_lrp(
        &self,
        process_guid: &str,
        expected: &ModificationTag,
    ) -> StoreResult<()> {
        timed(
            "delete_desired_lrp",
            self.inner.delete_desired_lrp(process_guid, expected),
        )
        .await
    }

    async fn create_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp> {
        timed("create_actual_lrp", self.inner.create_actual_lrp(lrp)).await
    }
    /// Forwarded as one call, so that the backend's batch (one commit) is
    /// kept and timed as one operation.
    async fn create_actual_lrps(
        &self,
        lrps: Vec<ActualLrp>,
    ) -> StoreResult<Vec<Option<ActualLrp>>> {
        timed("create_actual_lrps", self.inner.create_actual_lrps(lrps)).await
    }
    async fn get_actual_lrp(&self, process_guid: &str, index: i64) -> StoreResult<ActualLrp> {
        timed(
            "get_actual_lrp",
            self.inner.get_actual_lrp(process_guid, index),
        )
        .await
    }
    async fn list_actual_lrps(&self, filter: &ActualLrpFilter) -> StoreResult<Vec<ActualLrp>> {
        timed("list_actual_lrps", self.inner.list_actual_lrps(filter)).await
    }

    async fn list_desired_lrp_summaries(&self) -> StoreResult<Vec<DesiredLrpSummary>> {
        timed(
            "list_desired_lrp_summaries",
            self.inner.list_desired_lrp_summaries(),
        )
        .await
    }

    async fn list_actual_lrp_summaries(&self) -> StoreResult<Vec<ActualLrpSummary>> {
        timed(
            "list_actual_lrp_summaries",
            self.inner.list_actual_lrp_summaries(),
        )
        .await
    }
    async fn update_actual_lrp(&self, lrp: ActualLrp) -> StoreResult<ActualLrp> {
        timed("update_actual_lrp", self.inner.update_actual_lrp(lrp)).await
    }
    async fn delete_actual_lrp(
        &self,
        process_guid: &str,
        index: i64,
        expected: &ModificationTag,
    ) -> StoreResult<()> {
        timed(
            "delete_actual_lrp",
            self.inner.delete_actual_lrp(process_guid, index, expected),
        )
        .await
    }

    async fn upsert_cell(&self, presence: CellPresence, ttl: Duration) -> StoreResult<()> {
        timed("upsert_cell", self.inner.upsert_cell(presence, ttl)).await
    }
    async fn list_cells(&self) -> StoreResult<Vec<CellPresence>> {
        timed("list_cells", self.inner.list_cells()).await
    }
    async fn remove_cell(&self, cell_id: &str) -> StoreResult<()> {
        timed("remove_cell", self.inner.remove_cell(cell_id)).await
    }

    async fn acquire_lock(&self, name: &str, owner: &str, ttl: Duration) -> StoreResult<bool> {
        timed("acquire_lock", self.inner.acquire_lock(name, owner, ttl)).await
    }
    async fn release_lock(&self, name: &str, owner: &str) -> StoreResult<()> {
        timed("release_lock", self.inner.release_lock(name, owner)).await
    }
    async fn lock_owner(&self, name: &str) -> StoreResult<Option<String>> {
        timed("lock_owner", self.inner.lock_owner(name)).await
    }

    fn subscribe(&self) -> EventReceiver {
        self.inner.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_told_apart_by_kind() {
        let kind = crate::RecordKind::Task;
        let key = || "t".to_string();
        assert_eq!(outcome(&StoreResult::Ok(())), "ok");
        assert_eq!(
            outcome::<()>(&Err(StoreError::NotFound { kind, key: key() })),
            "not_found"
        );
        assert_eq!(
            outcome::<()>(&Err(StoreError::Conflict { kind, key: key() })),
            "conflict"
        );
        assert_eq!(
            outcome::<()>(&Err(StoreError::Backend("down".into()))),
            "backend"
        );
    }

    async fn instrumented_sqlite() -> SharedStore {
        let inner: SharedStore = std::sync::Arc::new(
            crate::SqliteStore::open_in_memory()
                .await
                .expect("an in-memory store"),
        );
        InstrumentedStore::wrap(inner)
    }

    /// The decorator passes every call through: the contract suite holds
    /// for an instrumented SQLite store as for the bare one.
    #[tokio::test]
    async fn an_instrumented_store_keeps_the_contract() {
        use crate::suite;
        suite::task_crud(instrumented_sqlite().await).await;
        suite::actual_lrp_crud(instrumented_sqlite().await).await;
        suite::missing_records_are_not_found(instrumented_sqlite().await).await;
        suite::stale_tags_conflict(instrumented_sqlite().await).await;
        suite::batch_create_skips_existing_and_publishes_in_order(instrumented_sqlite().await)
            .await;
        suite::events_in_order_with_before_and_after(instrumented_sqlite().await).await;
        suite::locks_are_leases(instrumented_sqlite().await).await;
    }
}
