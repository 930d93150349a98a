//! Long-running processes: the desired LRP (what the user asked for: N
//! instances of a recipe) and actual LRPs (one record per instance index).
//!
//! ```text
//! UNCLAIMED --claim--> CLAIMED --start--> RUNNING
//!     ^                   |                  |
//!     |                 crash              crash
//!     +----restart---- CRASHED <-------------+
//!     +----unclaim---- (CLAIMED or RUNNING whose cell vanished)
//! ```

use serde::{Deserialize, Serialize};

use crate::action::Action;
use crate::egress::SecurityGroupRule;
use crate::routes::{validate_port, Routes};
use crate::validation::{self, ModificationTag, ValidationError};
use crate::EnvironmentVariable;

/// Upper bound on instances of one LRP; a typo of 1e9 should not melt a cluster.
pub const MAX_INSTANCES: i64 = 100_000;

/// `POST /v1/desired_lrps`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredLrpCreateRequest {
    pub process_guid: String,
    pub domain: String,
    pub rootfs: String,
    #[serde(default)]
    pub instances: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<Action>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Action>,
    /// Seconds an instance may take to pass its monitor; 0 means no limit.
    #[serde(default)]
    pub start_timeout: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvironmentVariable>,
    #[serde(default)]
    pub cpu_weight: i64,
    #[serde(default)]
    pub disk_mb: i64,
    #[serde(default)]
    pub memory_mb: i64,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Routes>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub log_source: String,
    /// Diego's metrics id; stored and returned, we emit no container metrics.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metrics_guid: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub annotation: String,
    /// Stored and returned; not enforced by our cells (see `egress`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_rules: Vec<SecurityGroupRule>,
    /// Ours: refuse `ltc ssh` and the SSH proxy for this LRP's instances
    /// (`ltc create --no-ssh`). A Diego client never sends it: ssh is on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_ssh: bool,
}

impl DesiredLrpCreateRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        validation::validate_guid("process_guid", &self.process_guid)?;
        validation::validate_domain("domain", &self.domain)?;
        validation::validate_rootfs("rootfs", &self.rootfs)?;
        validate_instances(self.instances)?;
        if let Some(setup) = &self.setup {
            setup.validate().map_err(|e| e.within("setup"))?;
        }
        self.action.validate().map_err(|e| e.within("action"))?;
        if let Some(monitor) = &self.monitor {
            monitor.validate().map_err(|e| e.within("monitor"))?;
        }
        validation::validate_non_negative("start_timeout", self.start_timeout)?;
        validation::validate_env("env", &self.env)?;
        validation::validate_cpu_weight("cpu_weight", self.cpu_weight)?;
        validation::validate_non_negative("disk_mb", self.disk_mb)?;
        validation::validate_non_negative("memory_mb", self.memory_mb)?;
        for (i, port) in self.ports.iter().enumerate() {
            validate_port(&format!("ports[{i}]"), *port)?;
        }
        if let Some(routes) = &self.routes {
            routes.validate().map_err(|e| e.within("routes"))?;
        }
        validate_annotation(&self.annotation)?;
        crate::egress::validate_rules("egress_rules", &self.egress_rules)?;
        Ok(())
    }

    pub fn into_desired_lrp(self) -> DesiredLrp {
        DesiredLrp {
            process_guid: self.process_guid,
            domain: self.domain,
            rootfs: self.rootfs,
            instances: self.instances,
            setup: self.setup,
            action: self.action,
            monitor: self.monitor,
            start_timeout: self.start_timeout,
            env: self.env,
            cpu_weight: self.cpu_weight,
            disk_mb: self.disk_mb,
            memory_mb: self.memory_mb,
            privileged: self.privileged,
            ports: self.ports,
            routes: self.routes.unwrap_or_default(),
            log_guid: self.log_guid,
            log_source: self.log_source,
            metrics_guid: self.metrics_guid,
            annotation: self.annotation,
            egress_rules: self.egress_rules,
            disable_ssh: self.disable_ssh,
            modification_tag: ModificationTag::default(),
        }
    }
}

fn validate_instances(instances: i64) -> Result<(), ValidationError> {
    validation::validate_non_negative("instances", instances)?;
    if instances > MAX_INSTANCES {
        return Err(ValidationError::new(
            "instances",
            format!("must be at most {MAX_INSTANCES}, got {instances}"),
        ));
    }
    Ok(())
}

fn validate_annotation(annotation: &str) -> Result<(), ValidationError> {
    if annotation.len() > 10 * 1024 {
        return Err(ValidationError::new(
            "annotation",
            "must be at most 10240 bytes",
        ));
    }
    Ok(())
}

/// `PUT /v1/desired_lrps/:process_guid`: every field optional; absent fields
/// stay as they are. With `modification_tag` the update only applies if the
/// stored record still carries that tag (409 otherwise).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredLrpUpdateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Routes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modification_tag: Option<ModificationTag>,
}

impl DesiredLrpUpdateRequest {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(instances) = self.instances {
            validate_instances(instances)?;
        }
        if let Some(routes) = &self.routes {
            routes.validate().map_err(|e| e.within("routes"))?;
        }
        if let Some(annotation) = &self.annotation {
            validate_annotation(annotation)?;
        }
        Ok(())
    }

    /// Applies the present fields to `lrp`; returns whether anything changed.
    pub fn apply_to(&self, lrp: &mut DesiredLrp) -> bool {
        let before = lrp.clone();
        if let Some(instances) = self.instances {
            lrp.instances = instances;
        }
        if let Some(routes) = &self.routes {
            lrp.routes = routes.clone();
        }
        if let Some(annotation) = &self.annotation {
            lrp.annotation = annotation.clone();
        }
        *lrp != before
    }
}

/// A desired LRP as stored and answered by `GET /v1/desired_lrps/:guid`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredLrp {
    pub process_guid: String,
    pub domain: String,
    pub rootfs: String,
    pub instances: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setup: Option<Action>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Action>,
    pub start_timeout: i64,
    #[serde(default)]
    pub env: Vec<EnvironmentVariable>,
    pub cpu_weight: i64,
    pub disk_mb: i64,
    pub memory_mb: i64,
    pub privileged: bool,
    #[serde(default)]
    pub ports: Vec<u32>,
    #[serde(default)]
    pub routes: Routes,
    pub log_guid: String,
    pub log_source: String,
    #[serde(default)]
    pub metrics_guid: String,
    pub annotation: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_rules: Vec<SecurityGroupRule>,
    /// Ours: no `ltc ssh` into this LRP's instances (see the create request).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_ssh: bool,
    #[serde(default)]
    pub modification_tag: ModificationTag,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActualLrpState {
    Unclaimed,
    Claimed,
    Running,
    Crashed,
}

impl ActualLrpState {
    pub const ALL: [ActualLrpState; 4] = [
        ActualLrpState::Unclaimed,
        ActualLrpState::Claimed,
        ActualLrpState::Running,
        ActualLrpState::Crashed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActualLrpState::Unclaimed => "UNCLAIMED",
            ActualLrpState::Claimed => "CLAIMED",
            ActualLrpState::Running => "RUNNING",
            ActualLrpState::Crashed => "CRASHED",
        }
    }

    pub fn transition(
        self,
        event: ActualLrpEvent,
    ) -> Result<ActualLrpState, InvalidActualLrpTransition> {
        use ActualLrpEvent::*;
        use ActualLrpState::*;
        let next = match (self, event) {
            (Unclaimed, Claim) => Claimed,
            (Claimed, Start) => Running,
            (Claimed | Running, Crash) => Crashed,
            (Claimed | Running, Unclaim) => Unclaimed,
            (Crashed, Restart) => Unclaimed,
            (from, event) => return Err(InvalidActualLrpTransition { from, event }),
        };
        Ok(next)
    }
}

impl std::fmt::Display for ActualLrpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActualLrpEvent {
    /// A cell won the auction for this instance.
    Claim,
    /// The instance passed its monitor (or has none) and serves.
    Start,
    /// The process exited or its monitor failed after it was running.
    Crash,
    /// The cell vanished or gave the instance back; it must be placed again.
    Unclaim,
    /// The converger's crash policy allows another start.
    Restart,
}

impl ActualLrpEvent {
    pub const ALL: [ActualLrpEvent; 5] = [
        ActualLrpEvent::Claim,
        ActualLrpEvent::Start,
        ActualLrpEvent::Crash,
        ActualLrpEvent::Unclaim,
        ActualLrpEvent::Restart,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an actual LRP in state {from} cannot {event:?}")]
pub struct InvalidActualLrpTransition {
    pub from: ActualLrpState,
    pub event: ActualLrpEvent,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    pub container_port: u32,
    pub host_port: u32,
}

/// Diego's `preferred_address` of an actual LRP's net info.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PreferredAddress {
    /// Diego's default: routers use `address` and the host ports.
    #[default]
    Unknown,
    /// Routers use `address` and the host ports (the engine's port proxy).
    Host,
    /// Routers use `instance_address` and the container ports, and fall
    /// back to the host address when that fails.
    Instance,
}

/// Where a draining cell's instance of an index still serves; see
/// [`ActualLrp::evacuating_instance`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvacuatingInstance {
    pub cell_id: String,
    pub instance_guid: String,
    pub address: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_address: String,
    #[serde(default)]
    pub preferred_address: PreferredAddress,
    /// Nanoseconds since the Unix epoch when it became RUNNING.
    pub since: i64,
}

/// One instance of a desired LRP, keyed by `(process_guid, index)`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActualLrp {
    pub process_guid: String,
    /// Changes every time the instance is placed anew.
    pub instance_guid: String,
    pub cell_id: String,
    pub domain: String,
    pub index: i64,
    /// Host address at which the instance's `ports` are reachable
    /// (their `host_port`s).
    pub address: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Diego's `instance_address`: the container's own address on its
    /// network, where its `container_port`s answer without the engine's
    /// port proxy. Empty when the cell does not know it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_address: String,
    /// Diego's `preferred_address`: which address routers should use.
    /// `INSTANCE` only when the cell says routers reach its container
    /// network (one machine, or `lattice cell --advertise-container-network`).
    #[serde(default)]
    pub preferred_address: PreferredAddress,
    pub state: ActualLrpState,
    pub crash_count: i64,
    pub crash_reason: String,
    /// Nanoseconds since the Unix epoch of the last state change.
    pub since: i64,
    /// Why the auction could not place this instance; empty once placed.
    #[serde(default)]
    pub placement_error: String,
    /// Diego's flag for an evacuating actual LRP. A stored record is the
    /// instance itself, so it is false there; the instance a draining cell
    /// still runs for this index is [`ActualLrp::evacuating_instance`].
    #[serde(default)]
    pub evacuating: bool,
    /// The running instance of this index on a cell that is being drained
    /// (Diego's evacuating actual LRP), kept in the same record: it serves
    /// (routers keep it) until this record's replacement is RUNNING and
    /// routed, or the drain times out; then its cell clears it and stops it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evacuating_instance: Option<EvacuatingInstance>,
    #[serde(default)]
    pub modification_tag: ModificationTag,
}

impl ActualLrp {
    /// A fresh UNCLAIMED instance waiting for the auction.
    pub fn unclaimed(process_guid: &str, domain: &str, index: i64, now_nanos: i64) -> ActualLrp {
        ActualLrp {
            process_guid: process_guid.to_string(),
            instance_guid: String::new(),
            cell_id: String::new(),
            domain: domain.to_string(),
            index,
            address: String::new(),
            ports: Vec::new(),
            state: ActualLrpState::Unclaimed,
            crash_count: 0,
            crash_reason: String::new(),
            since: now_nanos,
            placement_error: String::new(),
            instance_address: String::new(),
            preferred_address: PreferredAddress::default(),
            evacuating: false,
            evacuating_instance: None,
            modification_tag: ModificationTag::default(),
        }
    }

    /// This (RUNNING) instance as an evacuating one: where it serves, so
    /// that routers keep it while its replacement starts.
    pub fn as_evacuating(&self) -> EvacuatingInstance {
        EvacuatingInstance {
            cell_id: self.cell_id.clone(),
            instance_guid: self.instance_guid.clone(),
            address: self.address.clone(),
            ports: self.ports.clone(),
            instance_address: self.instance_address.clone(),
            preferred_address: self.preferred_address,
            since: self.since,
        }
    }

    /// Diego's evacuating actual LRP of this index, as its own record
    /// (`evacuating: true`, RUNNING on the draining cell), if there is one.
    pub fn evacuating_lrp(&self) -> Option<ActualLrp> {
        let evacuee = self.evacuating_instance.as_ref()?;
        Some(ActualLrp {
            process_guid: self.process_guid.clone(),
            instance_guid: evacuee.instance_guid.clone(),
            cell_id: evacuee.cell_id.clone(),
            domain: self.domain.clone(),
            index: self.index,
            address: evacuee.address.clone(),
            ports: evacuee.ports.clone(),
            instance_address: evacuee.instance_address.clone(),
            preferred_address: evacuee.preferred_address,
            state: ActualLrpState::Running,
            crash_count: 0,
            crash_reason: String::new(),
            since: evacuee.since,
            placement_error: String::new(),
            evacuating: true,
            evacuating_instance: None,
            modification_tag: self.modification_tag.clone(),
        })
    }

    /// Applies `event` and stamps `since`; the caller persists with CAS.
    pub fn apply(
        &mut self,
        event: ActualLrpEvent,
        now_nanos: i64,
    ) -> Result<(), InvalidActualLrpTransition> {
        self.state = self.state.transition(event)?;
        self.since = now_nanos;
        if matches!(event, ActualLrpEvent::Unclaim | ActualLrpEvent::Restart) {
            self.cell_id.clear();
            self.instance_guid.clear();
            self.address.clear();
            self.ports.clear();
            self.instance_address.clear();
            self.preferred_address = PreferredAddress::default();
        }
        if event == ActualLrpEvent::Claim {
            self.placement_error.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actual_transition_table() {
        use ActualLrpEvent::*;
        use ActualLrpState::*;
        let legal = [
            (Unclaimed, Claim, Claimed),
            (Claimed, Start, Running),
            (Claimed, Crash, Crashed),
            (Running, Crash, Crashed),
            (Claimed, Unclaim, Unclaimed),
            (Running, Unclaim, Unclaimed),
            (Crashed, Restart, Unclaimed),
        ];
        for from in ActualLrpState::ALL {
            for event in ActualLrpEvent::ALL {
                let expected = legal
                    .iter()
                    .find(|(f, e, _)| *f == from && *e == event)
                    .map(|(_, _, to)| *to);
                assert_eq!(
                    from.transition(event).ok(),
                    expected,
                    "{from:?} --{event:?}-->"
                );
            }
        }
    }

    #[test]
    fn unclaim_forgets_the_cell() {
        let mut lrp = ActualLrp::unclaimed("web", "apps", 0, 1);
        lrp.apply(ActualLrpEvent::Claim, 2).unwrap();
        lrp.cell_id = "cell-1".into();
        lrp.apply(ActualLrpEvent::Unclaim, 3).unwrap();
        assert_eq!(lrp.cell_id, "");
        assert_eq!(lrp.since, 3);
    }

    #[test]
    fn update_applies_present_fields_only() {
        let req = DesiredLrpCreateRequest {
            process_guid: "web".into(),
            domain: "apps".into(),
            rootfs: "docker:///busybox".into(),
            instances: 2,
            setup: None,
            action: Action::run("/bin/true", &[]),
            monitor: None,
            start_timeout: 0,
            env: vec![],
            cpu_weight: 0,
            disk_mb: 0,
            memory_mb: 0,
            privileged: false,
            ports: vec![],
            routes: None,
            log_guid: String::new(),
            log_source: String::new(),
            metrics_guid: String::new(),
            annotation: "a".into(),
            egress_rules: vec![],
            disable_ssh: false,
        };
        let mut lrp = req.into_desired_lrp();
        let update = DesiredLrpUpdateRequest {
            instances: Some(5),
            ..Default::default()
        };
        assert!(update.apply_to(&mut lrp));
        assert_eq!(lrp.instances, 5);
        assert_eq!(lrp.annotation, "a");
        assert!(!update.apply_to(&mut lrp));
    }
}
