//! Routes of an LRP, keyed by router as in Diego:
//! `{"cf-router": [{"hostnames": ["web.example"], "port": 8080}],
//!   "tcp-router": [{"external_port": 61000, "container_port": 5222}]}`.
//!
//! In Diego `routes` is an open map from a router's name to that router's
//! opaque JSON: each router reads its own key. We act on `cf-router` and
//! `tcp-router`; any other key (Lattice's `diego-ssh`, a custom router's) is
//! kept as it came and returned on read, so a client that set it finds it.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::validation::ValidationError;

/// The key of HTTP routes, read by our router.
pub const CF_ROUTER: &str = "cf-router";
/// The key of TCP routes, read by our router.
pub const TCP_ROUTER: &str = "tcp-router";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Routes {
    #[serde(rename = "cf-router", skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    #[serde(rename = "tcp-router", skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// Routes for routers we do not run, by router name, exactly as sent.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

// Hand-written: the known keys are parsed strictly (a typo inside a
// `cf-router` entry is an error naming it), every other key is kept as raw
// JSON. serde's `flatten` would lose the path of errors in the known keys.
impl<'de> Deserialize<'de> for Routes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
        let mut routes = Routes::default();
        for (key, value) in map {
            match key.as_str() {
                CF_ROUTER => routes.http = parse_entry(CF_ROUTER, value)?,
                TCP_ROUTER => routes.tcp = parse_entry(TCP_ROUTER, value)?,
                _ => {
                    routes.other.insert(key, value);
                }
            }
        }
        Ok(routes)
    }
}

// Hand-written: an open map whose two known keys have a shape.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Routes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder};
        use utoipa::openapi::Ref;
        ObjectBuilder::new()
            .description(Some(
                "Routes by router name. `cf-router` and `tcp-router` are read by the \
                 cluster's router; any other key is stored and returned as sent.",
            ))
            .property(
                CF_ROUTER,
                ArrayBuilder::new().items(Ref::from_schema_name("HttpRoute")),
            )
            .property(
                TCP_ROUTER,
                ArrayBuilder::new().items(Ref::from_schema_name("TcpRoute")),
            )
            .additional_properties(Some(AdditionalProperties::FreeForm(true)))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Routes {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        use utoipa::PartialSchema;
        schemas.push(("HttpRoute".to_string(), HttpRoute::schema()));
        schemas.push(("TcpRoute".to_string(), TcpRoute::schema()));
    }
}

/// A known router's entry; `null` (Go's nil slice) means none.
fn parse_entry<T: serde::de::DeserializeOwned, E: de::Error>(
    key: &str,
    value: serde_json::Value,
) -> Result<Vec<T>, E> {
    if value.is_null() {
        return Ok(Vec::new());
    }
    crate::parse::from_json_value(value).map_err(|e| {
        let at = if e.path.is_empty() || e.path.starts_with('[') {
            format!("{key}{}", e.path)
        } else {
            format!("{key}.{}", e.path)
        };
        E::custom(format!("{at}: {}", e.message))
    })
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    pub hostnames: Vec<String>,
    /// The container port the router forwards to.
    pub port: u32,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpRoute {
    /// Diego's router group; stored and returned, our router has one group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_group_guid: Option<String>,
    /// The port the router listens on for this route.
    pub external_port: u32,
    pub container_port: u32,
}

/// Bytes of JSON the routes of other routers may take, all keys together:
/// they are stored with the LRP and sent on every event about it.
pub const MAX_OTHER_ROUTES_BYTES: usize = 64 * 1024;

impl Routes {
    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.tcp.is_empty() && self.other.is_empty()
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
            if let Some(guid) = &route.router_group_guid {
                crate::validation::validate_guid(&format!("{at}.router_group_guid"), guid)?;
            }
        }
        let other_bytes: usize = self
            .other
            .iter()
            .map(|(k, v)| k.len() + v.to_string().len())
            .sum();
        if other_bytes > MAX_OTHER_ROUTES_BYTES {
            return Err(ValidationError::new(
                "",
                format!(
                    "routes of other routers take {other_bytes} bytes; at most {MAX_OTHER_ROUTES_BYTES} are kept"
                ),
            ));
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

    /// Lattice's `ltc create` adds a `diego-ssh` entry; Diego's tcp routes
    /// carry a router group.
    #[test]
    fn unknown_routers_round_trip() {
        let json = serde_json::json!({
            "cf-router": [{"hostnames": ["web.localhost"], "port": 8080}],
            "tcp-router": [{"router_group_guid": "default-tcp", "external_port": 61000, "container_port": 5222}],
            "diego-ssh": {"container_port": 2222, "private_key": "-----BEGIN RSA PRIVATE KEY-----\n..."},
            "my-router": [1, null, {"x": true}]
        });
        let routes: Routes = serde_json::from_value(json.clone()).unwrap();
        routes.validate().unwrap();
        assert_eq!(routes.other.len(), 2);
        assert_eq!(
            routes.tcp[0].router_group_guid.as_deref(),
            Some("default-tcp")
        );
        assert_eq!(serde_json::to_value(&routes).unwrap(), json);
    }

    #[test]
    fn known_routers_stay_strict() {
        let err = crate::parse::from_json_value::<Routes>(serde_json::json!({
            "cf-router": [{"hostnames": ["a.b"], "port": 80}, {"hostname": ["a.b"], "port": 80}]
        }))
        .unwrap_err();
        assert!(err.to_string().contains("cf-router[1]"), "{err}");
        assert!(err.to_string().contains("hostname"), "{err}");
        let none: Routes = serde_json::from_value(serde_json::json!({"cf-router": null})).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn other_routes_are_bounded() {
        let mut routes = Routes::default();
        routes.other.insert(
            "big".into(),
            serde_json::Value::String("x".repeat(MAX_OTHER_ROUTES_BYTES)),
        );
        assert!(routes.validate().is_err());
    }

    #[test]
    fn bad_routes() {
        let r = Routes {
            http: vec![HttpRoute {
                hostnames: vec!["ok.host".into(), "bad host".into()],
                port: 80,
            }],
            tcp: vec![],
            other: BTreeMap::new(),
        };
        assert_eq!(r.validate().unwrap_err().field, "cf-router[0].hostnames[1]");
        let r = Routes {
            http: vec![],
            tcp: vec![TcpRoute {
                router_group_guid: None,
                external_port: 70000,
                container_port: 1,
            }],
            other: BTreeMap::new(),
        };
        assert_eq!(
            r.validate().unwrap_err().field,
            "tcp-router[0].external_port"
        );
    }
}
