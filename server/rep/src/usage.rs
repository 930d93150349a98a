//! Sampling what the cell's containers use, every few seconds.
//!
//! The rep asks the garden for each running container's usage (CPU time,
//! memory, disk), turns the cumulative CPU time into a percentage against
//! the previous sample, and keeps the latest samples for its HTTP interface
//! (`GET /v1/containers/metrics`, which the receptor gathers). It also sets
//! the cell's gauges of used and allocated resources for `/metrics`.
//!
//! # Caveats
//! The first sample of a container has a CPU percentage of 0: a rate needs
//! two readings.

use std::collections::{BTreeMap, HashMap};

use lattice_garden::{ContainerInfo, ContainerUsage};
use lattice_models::auction::{LrpKey, Resource};
use lattice_models::ContainerMetrics;
use tokio::time::Instant;

use crate::{
    WorkKey, INDEX_PROPERTY, INSTANCE_GUID_PROPERTY, PROCESS_GUID_PROPERTY, TASK_GUID_PROPERTY,
};

const MIB: u64 = 1024 * 1024;

/// One reading of a container's cumulative CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuReading {
    pub cpu_nanos: u64,
    pub at: Instant,
}

/// The latest samples, and the CPU readings the next ones are compared to.
#[derive(Debug, Default)]
pub(crate) struct Samples {
    pub latest: Vec<ContainerMetrics>,
    /// By container handle; only containers of the latest round are kept.
    pub readings: HashMap<String, CpuReading>,
}

/// CPU time used between two readings as a percentage of one core; 0 when
/// there is no earlier reading, no time passed, or the counter went back (a
/// container of the same handle made anew).
pub(crate) fn cpu_percentage(previous: Option<CpuReading>, now: CpuReading) -> f64 {
    let Some(previous) = previous else {
        return 0.0;
    };
    let elapsed = now.at.saturating_duration_since(previous.at).as_nanos();
    if elapsed == 0 || now.cpu_nanos < previous.cpu_nanos {
        return 0.0;
    }
    (now.cpu_nanos - previous.cpu_nanos) as f64 * 100.0 / elapsed as f64
}

/// The work a container runs, from its labels.
pub(crate) fn work_key(properties: &BTreeMap<String, String>) -> Option<WorkKey> {
    if let Some(task_guid) = properties.get(TASK_GUID_PROPERTY) {
        return Some(WorkKey::Task(task_guid.clone()));
    }
    let process_guid = properties.get(PROCESS_GUID_PROPERTY)?;
    let index = properties.get(INDEX_PROPERTY)?.parse().ok()?;
    Some(WorkKey::Lrp(LrpKey::new(process_guid.clone(), index)))
}

/// One container's sample. `allocated` is what the cell holds for its work
/// (its quotas); without it the engine's memory limit is the memory quota.
pub(crate) fn sample(
    cell_id: &str,
    container: &ContainerInfo,
    usage: ContainerUsage,
    cpu_percentage: f64,
    allocated: Option<Resource>,
    timestamp: i64,
) -> ContainerMetrics {
    let property = |key: &str| container.properties.get(key).cloned().unwrap_or_default();
    let quota_bytes = |mb: i64| u64::try_from(mb).unwrap_or(0).saturating_mul(MIB);
    let (memory_quota, disk_quota) = match allocated {
        Some(resource) => (
            quota_bytes(resource.memory_mb),
            quota_bytes(resource.disk_mb),
        ),
        None => (usage.memory_limit_bytes, 0),
    };
    ContainerMetrics {
        process_guid: property(PROCESS_GUID_PROPERTY),
        index: property(INDEX_PROPERTY).parse().unwrap_or(0),
        instance_guid: property(INSTANCE_GUID_PROPERTY),
        task_guid: property(TASK_GUID_PROPERTY),
        cell_id: cell_id.to_string(),
        cpu_percentage,
        memory_bytes: usage.memory_bytes,
        memory_bytes_quota: memory_quota,
        disk_bytes: usage.disk_bytes,
        disk_bytes_quota: disk_quota,
        timestamp,
    }
}

/// Sets the cell's gauges: what its containers use, what its work holds,
/// and what it offers.
pub(crate) fn record_cell_gauges(
    cell_id: &str,
    samples: &[ContainerMetrics],
    allocated: Resource,
    total: Resource,
) {
    let usage = lattice_models::CellUsage::sum(samples);
    let cell = cell_id.to_string();
    let bytes = |mb: i64| (u64::try_from(mb).unwrap_or(0).saturating_mul(MIB)) as f64;
    metrics::gauge!("lattice_cell_containers", "cell_id" => cell.clone())
        .set(usage.containers as f64);
    metrics::gauge!("lattice_cell_cpu_percentage", "cell_id" => cell.clone())
        .set(usage.cpu_percentage);
    metrics::gauge!("lattice_cell_memory_used_bytes", "cell_id" => cell.clone())
        .set(usage.memory_bytes as f64);
    metrics::gauge!("lattice_cell_disk_used_bytes", "cell_id" => cell.clone())
        .set(usage.disk_bytes as f64);
    metrics::gauge!("lattice_cell_memory_allocated_bytes", "cell_id" => cell.clone())
        .set(bytes(allocated.memory_mb));
    metrics::gauge!("lattice_cell_disk_allocated_bytes", "cell_id" => cell.clone())
        .set(bytes(allocated.disk_mb));
    metrics::gauge!("lattice_cell_memory_capacity_bytes", "cell_id" => cell.clone())
        .set(bytes(total.memory_mb));
    metrics::gauge!("lattice_cell_disk_capacity_bytes", "cell_id" => cell)
        .set(bytes(total.disk_mb));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn reading(cpu_nanos: u64, at: Instant) -> CpuReading {
        CpuReading { cpu_nanos, at }
    }

    #[test]
    fn cpu_is_a_rate_between_two_readings() {
        let start = crate::clock::now();
        let later = start + Duration::from_secs(5);
        // 2.5 s of CPU in 5 s: half a core.
        let half = cpu_percentage(Some(reading(1_000, start)), reading(2_500_001_000, later));
        assert!((half - 50.0).abs() < 1e-9, "{half}");
        // Two cores busy for the whole interval.
        let two = cpu_percentage(Some(reading(0, start)), reading(10_000_000_000, later));
        assert!((two - 200.0).abs() < 1e-9, "{two}");
        assert_eq!(cpu_percentage(None, reading(5, later)), 0.0);
        assert_eq!(
            cpu_percentage(Some(reading(9, later)), reading(5, later)),
            0.0
        );
        assert_eq!(
            cpu_percentage(Some(reading(9, start)), reading(5, later)),
            0.0,
            "a counter that went back is a new container"
        );
    }

    fn container(properties: &[(&str, &str)]) -> ContainerInfo {
        ContainerInfo {
            handle: "h".into(),
            host_ip: String::new(),
            container_ip: String::new(),
            ports: Vec::new(),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            running: true,
            oom_killed: false,
            image: String::new(),
            processes: Vec::new(),
        }
    }

    #[test]
    fn an_instance_sample_carries_its_key_and_quotas() {
        let web = container(&[
            (PROCESS_GUID_PROPERTY, "web"),
            (INDEX_PROPERTY, "2"),
            (INSTANCE_GUID_PROPERTY, "abc"),
        ]);
        let usage = ContainerUsage {
            cpu_nanos: 1,
            memory_bytes: 64 * MIB,
            memory_limit_bytes: 128 * MIB,
            disk_bytes: 4096,
        };
        let sampled = sample(
            "cell-1",
            &web,
            usage,
            12.5,
            Some(Resource::new(256, 1024, 1)),
            7,
        );
        assert_eq!(sampled.process_guid, "web");
        assert_eq!(sampled.index, 2);
        assert_eq!(sampled.instance_guid, "abc");
        assert_eq!(sampled.task_guid, "");
        assert_eq!(sampled.memory_bytes, 64 * MIB);
        assert_eq!(sampled.memory_bytes_quota, 256 * MIB, "the allocation wins");
        assert_eq!(sampled.disk_bytes_quota, 1024 * MIB);
        assert_eq!(sampled.cpu_percentage, 12.5);
        assert_eq!(
            work_key(&web.properties),
            Some(WorkKey::Lrp(LrpKey::new("web", 2)))
        );

        let unallocated = sample("cell-1", &web, usage, 0.0, None, 7);
        assert_eq!(
            unallocated.memory_bytes_quota,
            128 * MIB,
            "the engine's limit"
        );
        assert_eq!(unallocated.disk_bytes_quota, 0);

        let task = container(&[(TASK_GUID_PROPERTY, "t1")]);
        assert_eq!(work_key(&task.properties), Some(WorkKey::Task("t1".into())));
        assert_eq!(work_key(&container(&[]).properties), None);
    }
}
