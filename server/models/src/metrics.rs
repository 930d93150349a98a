//! Resource usage of containers and cells, as their cells sample it.
//!
//! A cell's rep samples every container it runs every few seconds from the
//! container engine; the receptor gathers the samples from the reps
//! (`GET /v1/actual_lrps/{process_guid}/metrics`, and `usage` in
//! `GET /v1/cells`). The shape is Diego's `ContainerMetric` envelope
//! (`cpu_percentage`, `memory_bytes`, `disk_bytes`) with the quotas that
//! later Diego versions added (`memory_bytes_quota`, `disk_bytes_quota`),
//! keyed by the instance rather than by an application id.

use serde::{Deserialize, Serialize};

/// One container's usage at one moment: an LRP instance (`process_guid`,
/// `index`, `instance_guid`) or a task (`task_guid`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetrics {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub process_guid: String,
    #[serde(default)]
    pub index: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task_guid: String,
    pub cell_id: String,
    /// CPU time used since the previous sample, as a percentage of one core
    /// (Diego's unit: 200 is two cores busy); 0 on the first sample.
    pub cpu_percentage: f64,
    /// Memory in use, without the page cache the kernel can reclaim (what
    /// `docker stats` shows).
    pub memory_bytes: u64,
    /// The container's memory limit; 0: none.
    pub memory_bytes_quota: u64,
    /// Bytes written to the container's own writable layer (the image's
    /// files are not counted).
    pub disk_bytes: u64,
    /// The disk the work asked for (`disk_mb`); 0: none. Not enforced by the
    /// Docker backend, so `disk_bytes` may exceed it.
    pub disk_bytes_quota: u64,
    /// When the sample was taken, in nanoseconds since the Unix epoch.
    pub timestamp: i64,
}

/// What a cell's containers use, summed over its latest samples.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CellUsage {
    /// Containers sampled.
    pub containers: u64,
    /// Percentage of one core, summed (see [`ContainerMetrics::cpu_percentage`]).
    pub cpu_percentage: f64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

impl CellUsage {
    /// The sum of `samples`.
    pub fn sum<'a>(samples: impl IntoIterator<Item = &'a ContainerMetrics>) -> CellUsage {
        samples
            .into_iter()
            .fold(CellUsage::default(), |acc, sample| CellUsage {
                containers: acc.containers + 1,
                cpu_percentage: acc.cpu_percentage + sample.cpu_percentage,
                memory_bytes: acc.memory_bytes.saturating_add(sample.memory_bytes),
                disk_bytes: acc.disk_bytes.saturating_add(sample.disk_bytes),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu: f64, memory: u64, disk: u64) -> ContainerMetrics {
        ContainerMetrics {
            process_guid: "web".into(),
            index: 0,
            instance_guid: "i".into(),
            task_guid: String::new(),
            cell_id: "cell-1".into(),
            cpu_percentage: cpu,
            memory_bytes: memory,
            memory_bytes_quota: 0,
            disk_bytes: disk,
            disk_bytes_quota: 0,
            timestamp: 1,
        }
    }

    #[test]
    fn a_cell_sums_its_containers() {
        let usage = CellUsage::sum(&[sample(12.5, 100, 10), sample(50.0, 200, 20)]);
        assert_eq!(
            usage,
            CellUsage {
                containers: 2,
                cpu_percentage: 62.5,
                memory_bytes: 300,
                disk_bytes: 30,
            }
        );
        assert_eq!(CellUsage::sum(&[]), CellUsage::default());
    }

    #[test]
    fn an_instance_sample_omits_the_task_guid_on_the_wire() {
        let json = serde_json::to_value(sample(1.0, 2, 3)).expect("serializes");
        assert!(json.get("task_guid").is_none(), "{json}");
        assert_eq!(json["memory_bytes"], 2);
        let back: ContainerMetrics = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, sample(1.0, 2, 3));
    }
}
