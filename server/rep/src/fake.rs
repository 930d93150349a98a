//! A real rep and executor on the recording fake Garden
//! (`lattice_executor::fake`): the cell of the rep's own tests and of the
//! test kit's in-process cluster, built in one place.
//!
//! Only the containers are fake: claims, capacity, crashes, presence and
//! the rep's HTTP interface are the production code. Behind the `fake`
//! feature, which only tests and the test kit turn on.

use std::sync::Arc;

use lattice_bbs::SharedStore;
use lattice_executor::fake::FakeGarden;
use lattice_executor::{Executor, ExecutorConfig, LogSink};
use lattice_models::CellCapacity;

use crate::{Rep, RepConfig};

/// Room for a handful of small instances: what the rep's tests give a cell
/// when capacity is not what they test.
pub const SMALL_CELL: CellCapacity = CellCapacity {
    memory_mb: 1024,
    disk_mb: 1024,
    containers: 8,
};

/// A rep address nothing listens at, for a rep whose HTTP interface is
/// not served (tests that call the rep directly).
pub const UNSERVED_ADDRESS: &str = "http://127.0.0.1:1";

/// A rep on its own fake Garden, with the executor's cache in a temporary
/// directory that lives as long as this value.
pub struct FakeRep {
    pub rep: Arc<Rep>,
    /// The cell's containers and processes: script what they do, read
    /// what was started, report engine events.
    pub garden: FakeGarden,
    _cache: tempfile::TempDir,
}

impl FakeRep {
    /// A rep configured by `config` on `store`, its cell's own lines about
    /// its work going to `logs`. Neither registered nor running: call
    /// [`Rep::reconcile`] and [`Rep::run`] (or
    /// [`crate::http::serve_and_run`]) as a cell does.
    ///
    /// # Panics
    /// When no temporary directory can be made for the executor's cache.
    pub fn new(config: RepConfig, store: SharedStore, logs: Arc<dyn LogSink>) -> FakeRep {
        let garden = FakeGarden::new();
        let cache = tempfile::tempdir().expect("a temporary directory can be made");
        let executor = Executor::new(
            Arc::new(garden.clone()),
            logs.clone(),
            ExecutorConfig::new(config.cell_id.clone(), cache.path()),
        );
        let rep = Rep::new(config, store, executor, logs);
        FakeRep {
            rep,
            garden,
            _cache: cache,
        }
    }
}

/// The rep's own unit tests' cell: a rep on a fresh in-memory store, its
/// lines collected.
#[cfg(test)]
pub(crate) struct TestRep {
    pub cell: FakeRep,
    pub store: SharedStore,
    pub logs: Arc<lattice_executor::CollectingSink>,
}

#[cfg(test)]
impl TestRep {
    pub async fn new(config: RepConfig) -> TestRep {
        let store: SharedStore = Arc::new(
            lattice_bbs::SqliteStore::open_in_memory()
                .await
                .expect("an in-memory store opens"),
        );
        let logs = lattice_executor::CollectingSink::new();
        let cell = FakeRep::new(config, store.clone(), logs.clone());
        TestRep { cell, store, logs }
    }

    /// A rep with the defaults and a [`SMALL_CELL`] called `cell_id`.
    pub async fn small(cell_id: &str) -> TestRep {
        TestRep::new(RepConfig::new(cell_id, SMALL_CELL, UNSERVED_ADDRESS)).await
    }

    pub fn rep(&self) -> &Arc<Rep> {
        &self.cell.rep
    }

    pub fn garden(&self) -> &FakeGarden {
        &self.cell.garden
    }
}
