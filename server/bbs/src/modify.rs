//! Read, decide, compare-and-swap, and again on a conflict: the one loop
//! every writer of a task or LRP runs, written once.
//!
//! A caller gives the record (or its key) and a closure that looks at the
//! current version and says what to do with it ([`Change`]). On a
//! [`StoreError::Conflict`] the record is read again and the closure asked
//! again, up to [`CAS_ATTEMPTS`] times in all.
//!
//! # Guarantees
//! - The closure always sees the version the write will replace: a write
//!   lands only if nobody wrote in between.
//! - A record that is gone (`NotFound`, also after a conflict) ends the
//!   loop with that error; nothing is written.

use async_trait::async_trait;
use lattice_models::{ActualLrp, DesiredLrp, Task};

use crate::{RecordKind, Store, StoreError, StoreResult};

/// How many times a read-decide-write is tried before it gives up on a
/// record that keeps changing under it.
pub const CAS_ATTEMPTS: usize = 8;

/// What the closure of [`modify`] decided for the current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Write the record as the closure left it.
    Update,
    /// Delete the record (the version it saw).
    Delete,
    /// Leave the stored record alone.
    Keep,
}

/// What [`modify`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Modified<R> {
    /// Written; the stored version (with its new tag).
    Updated(R),
    /// Deleted; the version that was deleted.
    Deleted(R),
    /// Left alone; the current version as the closure saw it.
    Kept(R),
}

/// Why [`modify`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ModifyError<E> {
    /// The store failed, or the record is not there (`NotFound`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The closure refused the current version.
    #[error("{0}")]
    Refused(E),
    /// Every attempt met a concurrent write.
    #[error("{kind} {key:?} kept changing; gave up after {CAS_ATTEMPTS} attempts")]
    KeptChanging { kind: RecordKind, key: String },
}

impl<E> ModifyError<E> {
    /// Whether the record was not there (at the first read or later).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ModifyError::Store(StoreError::NotFound { .. }))
    }
}

/// A record [`modify`] works on: how to read it again and write it.
#[async_trait]
pub trait Modifiable: Clone + Send + Sync + Sized + 'static {
    const KIND: RecordKind;
    /// The key, as errors name it.
    fn key_text(&self) -> String;
    /// The stored version under this record's key.
    async fn reread(&self, store: &dyn Store) -> StoreResult<Self>;
    /// Compare-and-swap on this record's tag.
    async fn write(self, store: &dyn Store) -> StoreResult<Self>;
    /// Deletes the version this record is.
    async fn delete(&self, store: &dyn Store) -> StoreResult<()>;
}

#[async_trait]
impl Modifiable for Task {
    const KIND: RecordKind = RecordKind::Task;
    fn key_text(&self) -> String {
        self.task_guid.clone()
    }
    async fn reread(&self, store: &dyn Store) -> StoreResult<Task> {
        store.get_task(&self.task_guid).await
    }
    async fn write(self, store: &dyn Store) -> StoreResult<Task> {
        store.update_task(self).await
    }
    async fn delete(&self, store: &dyn Store) -> StoreResult<()> {
        store
            .delete_task(&self.task_guid, &self.modification_tag)
            .await
    }
}

#[async_trait]
impl Modifiable for DesiredLrp {
    const KIND: RecordKind = RecordKind::DesiredLrp;
    fn key_text(&self) -> String {
        self.process_guid.clone()
    }
    async fn reread(&self, store: &dyn Store) -> StoreResult<DesiredLrp> {
        store.get_desired_lrp(&self.process_guid).await
    }
    async fn write(self, store: &dyn Store) -> StoreResult<DesiredLrp> {
        store.update_desired_lrp(self).await
    }
    async fn delete(&self, store: &dyn Store) -> StoreResult<()> {
        store
            .delete_desired_lrp(&self.process_guid, &self.modification_tag)
            .await
    }
}

#[async_trait]
impl Modifiable for ActualLrp {
    const KIND: RecordKind = RecordKind::ActualLrp;
    fn key_text(&self) -> String {
        format!("{}/{}", self.process_guid, self.index)
    }
    async fn reread(&self, store: &dyn Store) -> StoreResult<ActualLrp> {
        store.get_actual_lrp(&self.process_guid, self.index).await
    }
    async fn write(self, store: &dyn Store) -> StoreResult<ActualLrp> {
        store.update_actual_lrp(self).await
    }
    async fn delete(&self, store: &dyn Store) -> StoreResult<()> {
        store
            .delete_actual_lrp(&self.process_guid, self.index, &self.modification_tag)
            .await
    }
}

/// Starting from `current` (a version read earlier, e.g. a snapshot's),
/// asks `decide` what to do with it and does it; on a conflict, reads the
/// record again and asks again (see the module doc).
///
/// # Errors
/// [`ModifyError::Store`] when the store fails or the record is gone,
/// [`ModifyError::Refused`] with `decide`'s error, and
/// [`ModifyError::KeptChanging`] after [`CAS_ATTEMPTS`] conflicts.
pub async fn modify<R, E>(
    store: &dyn Store,
    mut current: R,
    mut decide: impl FnMut(&mut R) -> Result<Change, E> + Send,
) -> Result<Modified<R>, ModifyError<E>>
where
    R: Modifiable,
{
    for attempt in 0..CAS_ATTEMPTS {
        if attempt > 0 {
            current = current.reread(store).await?;
        }
        let mut next = current.clone();
        let result = match decide(&mut next).map_err(ModifyError::Refused)? {
            Change::Keep => return Ok(Modified::Kept(next)),
            Change::Update => next.write(store).await.map(Modified::Updated),
            Change::Delete => next.delete(store).await.map(|()| Modified::Deleted(next)),
        };
        match result {
            Err(StoreError::Conflict { .. }) => continue,
            other => return Ok(other?),
        }
    }
    Err(ModifyError::KeptChanging {
        kind: R::KIND,
        key: current.key_text(),
    })
}

/// [`modify`] of the task `task_guid` as it is stored now.
///
/// # Errors
/// As [`modify`].
pub async fn modify_task<E>(
    store: &dyn Store,
    task_guid: &str,
    decide: impl FnMut(&mut Task) -> Result<Change, E> + Send,
) -> Result<Modified<Task>, ModifyError<E>> {
    let current = store.get_task(task_guid).await?;
    modify(store, current, decide).await
}

/// [`modify`] of the desired LRP `process_guid` as it is stored now.
///
/// # Errors
/// As [`modify`].
pub async fn modify_desired_lrp<E>(
    store: &dyn Store,
    process_guid: &str,
    decide: impl FnMut(&mut DesiredLrp) -> Result<Change, E> + Send,
) -> Result<Modified<DesiredLrp>, ModifyError<E>> {
    let current = store.get_desired_lrp(process_guid).await?;
    modify(store, current, decide).await
}

/// [`modify`] of instance `index` of `process_guid` as it is stored now.
///
/// # Errors
/// As [`modify`].
pub async fn modify_actual_lrp<E>(
    store: &dyn Store,
    process_guid: &str,
    index: i64,
    decide: impl FnMut(&mut ActualLrp) -> Result<Change, E> + Send,
) -> Result<Modified<ActualLrp>, ModifyError<E>> {
    let current = store.get_actual_lrp(process_guid, index).await?;
    modify(store, current, decide).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{suite, SharedStore, SqliteStore};

    async fn store() -> SharedStore {
        Arc::new(
            SqliteStore::open_in_memory()
                .await
                .expect("an in-memory store"),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_modifications_each_land_once() {
        let store = store().await;
        store
            .create_desired_lrp(suite::desired_lrp("web", "d", 0))
            .await
            .expect("created");
        let writers: Vec<_> = (0..CAS_ATTEMPTS)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    modify_desired_lrp(store.as_ref(), "web", |lrp| {
                        lrp.instances += 1;
                        Ok::<_, std::convert::Infallible>(Change::Update)
                    })
                    .await
                })
            })
            .collect();
        let mut landed = 0;
        for writer in writers {
            match writer.await.expect("no panic") {
                Ok(Modified::Updated(_)) => landed += 1,
                Err(ModifyError::KeptChanging { .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        let stored = store.get_desired_lrp("web").await.expect("stored");
        assert_eq!(stored.instances, landed, "every landed write counted once");
        assert!(landed >= 1);
    }

    #[tokio::test]
    async fn keep_refuse_delete_and_gone() {
        let store = store().await;
        store
            .create_task(suite::task("t1", "d", 1))
            .await
            .expect("created");
        let kept = modify_task(store.as_ref(), "t1", |_| Ok::<_, &str>(Change::Keep)).await;
        assert!(matches!(kept, Ok(Modified::Kept(_))));
        let refused = modify_task(store.as_ref(), "t1", |_| Err("no")).await;
        assert!(matches!(refused, Err(ModifyError::Refused("no"))));
        let deleted = modify_task(store.as_ref(), "t1", |_| Ok::<_, &str>(Change::Delete)).await;
        assert!(matches!(deleted, Ok(Modified::Deleted(_))));
        let gone = modify_task(store.as_ref(), "t1", |_| Ok::<_, &str>(Change::Keep)).await;
        assert!(gone.expect_err("gone").is_not_found());
    }

    #[tokio::test]
    async fn a_stale_snapshot_is_read_again_before_deciding() {
        let store = store().await;
        let created = store
            .create_actual_lrp(suite::actual_lrp("web", "d", 0))
            .await
            .expect("created");
        let mut newer = created.clone();
        newer.cell_id = "cell-1".into();
        store.update_actual_lrp(newer).await.expect("updated");
        let mut seen = Vec::new();
        let result = modify(store.as_ref(), created, |lrp| {
            seen.push(lrp.cell_id.clone());
            Ok::<_, std::convert::Infallible>(Change::Delete)
        })
        .await;
        assert!(matches!(result, Ok(Modified::Deleted(_))), "{result:?}");
        assert_eq!(seen, vec![String::new(), "cell-1".to_string()]);
    }
}
