//! Wire types of the auction: what the auctioneer knows of each cell, what it
//! is asked to place, and what it decided.
//!
//! These travel between the auctioneer and each cell's rep over HTTP (a rep
//! answers with its [`CellState`] and is sent its [`Work`]), so they are plain
//! serde types. Unlike the receptor's request types they do not deny unknown
//! fields: auctioneer and reps may run different versions during an upgrade,
//! and a field added on one side must not break the other.
//!
//! # Shape
//! A start request for an LRP names several indices at once
//! ([`LrpStartRequest`], as Diego's auctioneer API does); the auction places
//! each index on its own, so everything after the request — [`Work`],
//! placements and failures — speaks of single [`LrpInstance`]s.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::cell::CellCapacity;

/// An amount of the three resources the auction places by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resource {
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub containers: i64,
}

impl Resource {
    pub const ZERO: Resource = Resource::new(0, 0, 0);

    pub const fn new(memory_mb: i64, disk_mb: i64, containers: i64) -> Self {
        Self {
            memory_mb,
            disk_mb,
            containers,
        }
    }

    /// What one instance or task needs: its memory and disk and one container.
    pub const fn for_container(memory_mb: i64, disk_mb: i64) -> Self {
        Self::new(memory_mb, disk_mb, 1)
    }

    /// `self + other`, or `None` if a dimension overflows `i64`.
    pub fn checked_add(&self, other: &Resource) -> Option<Resource> {
        Some(Resource {
            memory_mb: self.memory_mb.checked_add(other.memory_mb)?,
            disk_mb: self.disk_mb.checked_add(other.disk_mb)?,
            containers: self.containers.checked_add(other.containers)?,
        })
    }

    /// `self - other`, or `None` if a dimension would go below zero (the
    /// amount does not fit) or overflow.
    pub fn checked_sub(&self, other: &Resource) -> Option<Resource> {
        let non_negative = |v: i64| (v >= 0).then_some(v);
        Some(Resource {
            memory_mb: non_negative(self.memory_mb.checked_sub(other.memory_mb)?)?,
            disk_mb: non_negative(self.disk_mb.checked_sub(other.disk_mb)?)?,
            containers: non_negative(self.containers.checked_sub(other.containers)?)?,
        })
    }

    /// True if `need` fits in `self` in every dimension.
    pub fn contains(&self, need: &Resource) -> bool {
        need.memory_mb <= self.memory_mb
            && need.disk_mb <= self.disk_mb
            && need.containers <= self.containers
    }
}

impl From<CellCapacity> for Resource {
    fn from(c: CellCapacity) -> Self {
        Resource::new(c.memory_mb, c.disk_mb, c.containers)
    }
}

/// `512 MB memory, 1024 MB disk, 1 container`: the form error messages use.
impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.containers == 1 { "" } else { "s" };
        write!(
            f,
            "{} MB memory, {} MB disk, {} container{plural}",
            self.memory_mb, self.disk_mb, self.containers
        )
    }
}

/// Names one instance of an LRP: the process and the instance index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LrpKey {
    pub process_guid: String,
    pub index: i64,
}

impl LrpKey {
    pub fn new(process_guid: impl Into<String>, index: i64) -> Self {
        Self {
            process_guid: process_guid.into(),
            index,
        }
    }
}

/// What a rep tells the auctioneer about its cell, as of one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellState {
    pub cell_id: String,
    /// Availability zone; cells with an empty zone form one zone together.
    #[serde(default)]
    pub zone: String,
    /// What the cell holds when empty. A dimension of 0 means the cell does
    /// not limit it (see the auctioneer's scoring rules).
    pub total: Resource,
    /// What is still free now.
    pub available: Resource,
    /// LRP instances the cell runs or is starting.
    #[serde(default)]
    pub lrps: Vec<LrpKey>,
    /// Guids of the tasks the cell runs.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// An evacuating cell is being drained and accepts no new work.
    #[serde(default)]
    pub evacuating: bool,
}

impl CellState {
    /// An empty cell that accepts work: everything of `total` is available.
    pub fn new(cell_id: impl Into<String>, zone: impl Into<String>, total: Resource) -> Self {
        Self {
            cell_id: cell_id.into(),
            zone: zone.into(),
            total,
            available: total,
            lrps: Vec::new(),
            tasks: Vec::new(),
            evacuating: false,
        }
    }
}

/// Start some instances of one LRP (Diego's `LRPStartRequest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpStartRequest {
    pub process_guid: String,
    pub domain: String,
    /// Instance indices to start; each is placed on its own.
    pub indices: Vec<i64>,
    /// What one instance needs; `containers` is 1.
    pub resource: Resource,
    pub rootfs: String,
}

impl LrpStartRequest {
    /// The single instances this request asks for, in `indices` order.
    pub fn instances(&self) -> impl Iterator<Item = LrpInstance> + '_ {
        self.indices.iter().map(|&index| LrpInstance {
            process_guid: self.process_guid.clone(),
            index,
            domain: self.domain.clone(),
            resource: self.resource,
            rootfs: self.rootfs.clone(),
        })
    }
}

/// One instance of an LRP to start (Diego's `rep.LRP`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpInstance {
    pub process_guid: String,
    pub index: i64,
    pub domain: String,
    /// What this instance needs; `containers` is 1.
    pub resource: Resource,
    pub rootfs: String,
}

impl LrpInstance {
    pub fn key(&self) -> LrpKey {
        LrpKey::new(self.process_guid.clone(), self.index)
    }
}

/// One task to start (Diego's `rep.Task`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStart {
    pub task_guid: String,
    pub domain: String,
    /// What the task needs; `containers` is 1.
    pub resource: Resource,
    pub rootfs: String,
}

/// One batch of work for the auction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionRequest {
    #[serde(default)]
    pub lrps: Vec<LrpStartRequest>,
    #[serde(default)]
    pub tasks: Vec<TaskStart>,
}

/// What one cell is asked to perform (sent to its rep).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    #[serde(default)]
    pub lrps: Vec<LrpInstance>,
    #[serde(default)]
    pub tasks: Vec<TaskStart>,
}

impl Work {
    pub fn is_empty(&self) -> bool {
        self.lrps.is_empty() && self.tasks.is_empty()
    }
}

/// An LRP instance and the cell that won it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpPlacement {
    pub instance: LrpInstance,
    pub cell_id: String,
}

/// A task and the cell that won it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlacement {
    pub task: TaskStart,
    pub cell_id: String,
}

/// An LRP instance no cell could take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LrpFailure {
    pub instance: LrpInstance,
    pub error: PlacementError,
}

/// A task no cell could take, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub task: TaskStart,
    pub error: PlacementError,
}

/// The decisions of one auction: every item of the request appears exactly
/// once, either placed or failed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionResults {
    pub lrps_placed: Vec<LrpPlacement>,
    pub tasks_placed: Vec<TaskPlacement>,
    pub lrps_failed: Vec<LrpFailure>,
    pub tasks_failed: Vec<TaskFailure>,
}

impl AuctionResults {
    /// The placements grouped into one [`Work`] per winning cell, ordered by
    /// cell id: what the auctioneer sends to each rep.
    pub fn work_by_cell(&self) -> BTreeMap<String, Work> {
        let mut works: BTreeMap<String, Work> = BTreeMap::new();
        for p in &self.lrps_placed {
            let work = works.entry(p.cell_id.clone()).or_default();
            work.lrps.push(p.instance.clone());
        }
        for p in &self.tasks_placed {
            let work = works.entry(p.cell_id.clone()).or_default();
            work.tasks.push(p.task.clone());
        }
        works
    }
}

/// Why an item could not be placed. The message is shown to users (by
/// `ltc status`, and as a failed task's reason), so it says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PlacementError {
    /// Cells exist and accept work, but none has this much free right now.
    #[error(
        "insufficient resources: no cell has {needed} free; \
         lower the memory or disk asked for, stop other work or add cells"
    )]
    InsufficientResources { needed: Resource },
    /// No cell has registered at all.
    #[error("no cells registered: start a cell")]
    NoCells,
    /// Cells are registered but every one is being drained.
    #[error("no cell accepts work: all {cells} registered cells are evacuating")]
    AllCellsEvacuating { cells: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_sub_refuses_to_go_below_zero() {
        let free = Resource::new(100, 100, 2);
        assert_eq!(
            free.checked_sub(&Resource::new(60, 10, 1)),
            Some(Resource::new(40, 90, 1))
        );
        assert_eq!(free.checked_sub(&Resource::new(101, 0, 0)), None);
        assert_eq!(free.checked_sub(&Resource::new(0, 0, 3)), None);
        assert_eq!(
            Resource::new(i64::MIN, 0, 0).checked_sub(&Resource::new(1, 0, 0)),
            None
        );
    }

    #[test]
    fn checked_add_refuses_overflow() {
        let a = Resource::new(1, 2, 3);
        assert_eq!(a.checked_add(&a), Some(Resource::new(2, 4, 6)));
        assert_eq!(Resource::new(i64::MAX, 0, 0).checked_add(&a), None);
    }

    #[test]
    fn contains_checks_every_dimension() {
        let free = Resource::new(100, 100, 1);
        assert!(free.contains(&Resource::new(100, 100, 1)));
        assert!(!free.contains(&Resource::new(100, 101, 1)));
        assert!(!free.contains(&Resource::new(100, 100, 2)));
    }

    #[test]
    fn placement_errors_read_as_advice() {
        let e = PlacementError::InsufficientResources {
            needed: Resource::for_container(512, 1024),
        };
        assert_eq!(
            e.to_string(),
            "insufficient resources: no cell has 512 MB memory, 1024 MB disk, 1 container free; \
             lower the memory or disk asked for, stop other work or add cells"
        );
        assert_eq!(
            PlacementError::NoCells.to_string(),
            "no cells registered: start a cell"
        );
        assert_eq!(
            PlacementError::AllCellsEvacuating { cells: 2 }.to_string(),
            "no cell accepts work: all 2 registered cells are evacuating"
        );
    }

    #[test]
    fn placement_error_json_is_tagged() {
        let e = PlacementError::InsufficientResources {
            needed: Resource::for_container(1, 2),
        };
        let json = serde_json::to_value(&e).expect("plain data serializes");
        assert_eq!(json["kind"], "insufficient_resources");
        assert_eq!(json["needed"]["memory_mb"], 1);
        let back: PlacementError = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, e);
    }

    #[test]
    fn cell_state_defaults_optional_fields() {
        let cell: CellState = serde_json::from_str(
            r#"{"cell_id":"c1","total":{"memory_mb":1,"disk_mb":2,"containers":3},
                "available":{"memory_mb":1,"disk_mb":2,"containers":3}}"#,
        )
        .expect("minimal cell state parses");
        assert_eq!(cell, CellState::new("c1", "", Resource::new(1, 2, 3)));
    }

    #[test]
    fn start_request_expands_to_instances_and_work_groups_by_cell() {
        let req = LrpStartRequest {
            process_guid: "web".into(),
            domain: "d".into(),
            indices: vec![0, 2],
            resource: Resource::for_container(64, 64),
            rootfs: "docker:///busybox".into(),
        };
        let instances: Vec<_> = req.instances().collect();
        assert_eq!(
            instances.iter().map(|i| i.index).collect::<Vec<_>>(),
            vec![0, 2]
        );
        assert_eq!(instances[1].key(), LrpKey::new("web", 2));

        let results = AuctionResults {
            lrps_placed: vec![
                LrpPlacement {
                    instance: instances[0].clone(),
                    cell_id: "b".into(),
                },
                LrpPlacement {
                    instance: instances[1].clone(),
                    cell_id: "a".into(),
                },
            ],
            ..Default::default()
        };
        let works = results.work_by_cell();
        assert_eq!(works.keys().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(works["a"].lrps, vec![instances[1].clone()]);
        assert!(!works["b"].is_empty());
    }
}
