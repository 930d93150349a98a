//! Egress rules (Diego's `SecurityGroupRule`): which outbound connections a
//! container may open.
//!
//! Diego's clients send them on every task and desired LRP (`ltc` sends the
//! default "everything but private ranges" list). Our cells do not enforce
//! them yet (containers get Docker's default outbound access); the receptor
//! checks their shape, stores them and returns them on read, so that a
//! client reading a record back sees what it wrote. See `docs/api.md`.

use serde::{Deserialize, Serialize};

use crate::validation::ValidationError;

/// Upper bound on rules per record; Diego's own lists hold about ten.
pub const MAX_EGRESS_RULES: usize = 1024;

/// One outbound rule, as Diego writes it:
/// `{"protocol": "tcp", "destinations": ["0.0.0.0/0"], "ports": [53], "log": false}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRule {
    /// `tcp`, `udp`, `icmp` or `all`.
    pub protocol: String,
    /// CIDRs (`10.0.0.0/8`), single addresses or ranges (`10.0.0.1-10.0.0.9`).
    pub destinations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_info: Option<IcmpInfo>,
    #[serde(default)]
    pub log: bool,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpInfo {
    #[serde(rename = "type")]
    pub icmp_type: i32,
    pub code: i32,
}

const PROTOCOLS: &[&str] = &["tcp", "udp", "icmp", "all"];

impl SecurityGroupRule {
    /// Diego's rules: a known protocol, at least one destination, ports only
    /// for tcp/udp (a list or a range, not both), icmp_info only for icmp.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if !PROTOCOLS.contains(&self.protocol.as_str()) {
            return Err(ValidationError::new(
                "protocol",
                format!("{:?} is not one of {}", self.protocol, PROTOCOLS.join(", ")),
            ));
        }
        if self.destinations.is_empty() {
            return Err(ValidationError::new(
                "destinations",
                "must hold at least one destination",
            ));
        }
        for (i, destination) in self.destinations.iter().enumerate() {
            validate_destination(destination)
                .map_err(|message| ValidationError::new(format!("destinations[{i}]"), message))?;
        }
        let has_ports = !self.ports.is_empty() || self.port_range.is_some();
        let tcp_or_udp = matches!(self.protocol.as_str(), "tcp" | "udp");
        if has_ports && !tcp_or_udp {
            return Err(ValidationError::new(
                "ports",
                format!("ports apply to tcp and udp only, not {}", self.protocol),
            ));
        }
        if !self.ports.is_empty() && self.port_range.is_some() {
            return Err(ValidationError::new(
                "port_range",
                "give either ports or port_range, not both",
            ));
        }
        if let Some(range) = self.port_range {
            if range.start == 0 || range.start > range.end {
                return Err(ValidationError::new(
                    "port_range",
                    format!(
                        "{}-{} is not a range of ports 1-65535 with start <= end",
                        range.start, range.end
                    ),
                ));
            }
        }
        if let Some(i) = self.ports.iter().position(|p| *p == 0) {
            return Err(ValidationError::new(
                format!("ports[{i}]"),
                "port 0 is out of range 1-65535",
            ));
        }
        if self.icmp_info.is_some() && self.protocol != "icmp" {
            return Err(ValidationError::new(
                "icmp_info",
                format!("icmp_info applies to icmp only, not {}", self.protocol),
            ));
        }
        if self.protocol == "icmp" && self.icmp_info.is_none() {
            return Err(ValidationError::new(
                "icmp_info",
                "an icmp rule needs icmp_info {\"type\": T, \"code\": C}",
            ));
        }
        Ok(())
    }
}

/// An address, a CIDR or an `a-b` range of IPv4 addresses.
fn validate_destination(destination: &str) -> Result<(), String> {
    let ok = if let Some((start, end)) = destination.split_once('-') {
        match (
            start.parse::<std::net::Ipv4Addr>(),
            end.parse::<std::net::Ipv4Addr>(),
        ) {
            (Ok(start), Ok(end)) => start <= end,
            _ => false,
        }
    } else if let Some((address, prefix)) = destination.split_once('/') {
        address.parse::<std::net::IpAddr>().is_ok() && prefix.parse::<u8>().is_ok_and(|p| p <= 128)
    } else {
        destination.parse::<std::net::IpAddr>().is_ok()
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{destination:?} is not an address, a CIDR or an address range"
        ))
    }
}

/// Validates every rule of a record's `egress_rules`.
pub fn validate_rules(field: &str, rules: &[SecurityGroupRule]) -> Result<(), ValidationError> {
    if rules.len() > MAX_EGRESS_RULES {
        return Err(ValidationError::new(
            field,
            format!("must hold at most {MAX_EGRESS_RULES} rules"),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        rule.validate()
            .map_err(|e| e.within(&format!("[{i}]")).within(field))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(v: serde_json::Value) -> SecurityGroupRule {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn diego_examples_round_trip() {
        for v in [
            json!({"protocol": "tcp", "destinations": ["0.0.0.0/0"], "port_range": {"start": 1, "end": 1024}, "log": true}),
            json!({"protocol": "udp", "destinations": ["8.8.0.0/16"], "ports": [53], "log": false}),
            json!({"protocol": "all", "destinations": ["0.0.0.0-9.255.255.255"], "log": false}),
            json!({"protocol": "icmp", "destinations": ["10.0.0.1"], "icmp_info": {"type": 0, "code": 1}, "log": false}),
        ] {
            let r = rule(v.clone());
            r.validate().unwrap();
            assert_eq!(serde_json::to_value(&r).unwrap(), v);
        }
    }

    #[test]
    fn bad_rules_name_the_field() {
        let rules = vec![
            rule(json!({"protocol": "tcp", "destinations": ["0.0.0.0/0"]})),
            rule(json!({"protocol": "tcpp", "destinations": ["0.0.0.0/0"]})),
        ];
        assert_eq!(
            validate_rules("egress_rules", &rules).unwrap_err().field,
            "egress_rules[1].protocol"
        );
        let bad = rule(json!({"protocol": "all", "destinations": ["10.0.0.300"]}));
        assert_eq!(bad.validate().unwrap_err().field, "destinations[0]");
        let bad = rule(json!({"protocol": "all", "destinations": ["0.0.0.0/0"], "ports": [80]}));
        assert_eq!(bad.validate().unwrap_err().field, "ports");
        let bad = rule(json!({"protocol": "tcp", "destinations": ["0.0.0.0/0"],
            "port_range": {"start": 9, "end": 1}}));
        assert_eq!(bad.validate().unwrap_err().field, "port_range");
        let bad = rule(json!({"protocol": "icmp", "destinations": ["0.0.0.0/0"]}));
        assert_eq!(bad.validate().unwrap_err().field, "icmp_info");
    }
}
