//! Cells: the machines (or processes) that run containers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validation::{self, ValidationError};

/// What a cell can hold in total.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellCapacity {
    pub memory_mb: i64,
    pub disk_mb: i64,
    pub containers: i64,
}

/// A cell's registration, renewed by its rep while it lives. A cell whose
/// presence expired is gone: its work is placed elsewhere.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellPresence {
    pub cell_id: String,
    #[serde(default)]
    pub zone: String,
    /// Where the auctioneer reaches this cell's rep (`http://host:port`).
    pub rep_address: String,
    pub capacity: CellCapacity,
    /// Diego's `rootfs_providers`: scheme -> the root filesystems it offers
    /// (empty for "any", as `docker` is). Cells that registered before this
    /// field existed are read as docker-only, which is all a cell runs.
    #[serde(default = "docker_rootfs_providers")]
    pub rootfs_providers: BTreeMap<String, Vec<String>>,
}

/// What every one of our cells runs: any Docker image, no preloaded stacks.
pub fn docker_rootfs_providers() -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([("docker".to_string(), Vec::new())])
}

impl CellPresence {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validation::validate_guid("cell_id", &self.cell_id)?;
        if !self.zone.is_empty() {
            validation::validate_guid("zone", &self.zone)?;
        }
        validation::validate_non_negative("capacity.memory_mb", self.capacity.memory_mb)?;
        validation::validate_non_negative("capacity.disk_mb", self.capacity.disk_mb)?;
        validation::validate_non_negative("capacity.containers", self.capacity.containers)?;
        Ok(())
    }
}

/// `GET /v1/cells`: a live cell and what it holds now.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResponse {
    #[serde(flatten)]
    pub presence: CellPresence,
    /// Memory, disk and containers held by the tasks and instances the BBS
    /// places on this cell (claimed or running).
    #[serde(default)]
    pub allocated: CellCapacity,
    /// LRP instances claimed or running on the cell.
    #[serde(default)]
    pub instances: i64,
    /// Tasks claimed or running on the cell.
    #[serde(default)]
    pub tasks: i64,
    /// What the cell's containers use now, from the cell's latest samples
    /// (ours); absent when the cell's rep could not be asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<crate::metrics::CellUsage>,
    /// Whether the cell drains (`ltc cells drain`, or `lattice cell` told
    /// to stop): it takes no new work and its instances move to other
    /// cells (ours, asked of the cell's rep; absent when it could not be
    /// asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evacuating: Option<bool>,
}
