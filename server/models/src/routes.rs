//! Routes of an LRP, keyed by router as in Diego:
//! `{"cf-router": [{"hostnames": ["web.example"], "port": 8080}],
//!   "tcp-router": [{"external_port": 61000, "container_port": 5222}]}`.

use serde::{Deserialize, Serialize};

use crate::validation::ValidationError;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routes {
    #[serde(rename = "cf-router", default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(rename = "tcp-router", default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    pub hostnames: Vec<String>,
    /// The container port the router forwards to.
    pub port: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpRoute {
    /// The port the router listens on for this route.
    pub external_port: u32,
    pub container_port: u32,
}

impl Routes {
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.tcp.is_empty()
    }

    pub fn validate(&self) -> Result<(), ValidationError> {
        for (i, route) in self.http.iter().enumerate() {
            let at = format!("cf-router[{i}]");
            validate_port(&format!("{at}.port"), route.port)?;
            if route.hostnames.is_empty() {
                return Err(ValidationError::new(
                    format!("{at}.hostnames"),
                    "must hold at least one hostname",
                ));
            }
            for (j, host) in route.hostnames.iter().enumerate() {
                validate_hostname(&format!("{at}.hostnames[{j}]"), host)?;
            }
        }
        for (i, route) in self.tcp.iter().enumerate() {
            let at = format!("tcp-router[{i}]");
            validate_port(&format!("{at}.external_port"), route.external_port)?;
            validate_port(&format!("{at}.container_port"), route.container_port)?;
        }
        Ok(())
    }
}

pub fn validate_port(field: &str, port: u32) -> Result<(), ValidationError> {
    if port == 0 || port > 65535 {
        return Err(ValidationError::new(
            field,
            format!("port {port} is out of range 1-65535"),
        ));
    }
    Ok(())
}

/// A DNS name, optionally with a `:port`-free form only: letters, digits,
/// '-', '.', and a leading `*.` wildcard.
pub fn validate_hostname(field: &str, host: &str) -> Result<(), ValidationError> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !ok {
        return Err(ValidationError::new(
            field,
            format!("{host:?} is not a valid hostname"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let json = serde_json::json!({
            "cf-router": [{"hostnames": ["web.localhost"], "port": 8080}],
            "tcp-router": [{"external_port": 61000, "container_port": 5222}]
        });
        let routes: Routes = serde_json::from_value(json.clone()).unwrap();
        routes.validate().unwrap();
        assert_eq!(serde_json::to_value(&routes).unwrap(), json);
    }

    #[test]
    fn bad_routes() {
        let r = Routes {
            http: vec![HttpRoute {
                hostnames: vec!["ok.host".into(), "bad host".into()],
                port: 80,
            }],
            tcp: vec![],
        };
        assert_eq!(r.validate().unwrap_err().field, "cf-router[0].hostnames[1]");
        let r = Routes {
            http: vec![],
            tcp: vec![TcpRoute {
                external_port: 70000,
                container_port: 1,
            }],
        };
        assert_eq!(
            r.validate().unwrap_err().field,
            "tcp-router[0].external_port"
        );
    }
}
