//! Route and monitor flags as users type them, and the routes' URLs.
//!
//! Parsing (these functions are clap value parsers, so a bad flag is a usage
//! error naming the flag) is kept apart from resolution, which needs what
//! only the cluster knows: its domain and the app's first port.

use lattice_models::routes::validate_hostname;
use lattice_models::{HttpRoute, Routes, TcpRoute};

/// `--http-route HOST[:PORT]`; the port defaults to the app's first port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRouteFlag {
    pub host: String,
    pub port: Option<u32>,
}

/// `--tcp-route EXTERNAL[:CONTAINER]`; the container port defaults to the
/// app's first port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRouteFlag {
    pub external_port: u32,
    pub container_port: Option<u32>,
}

/// `--monitor-url PORT:/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorUrl {
    pub port: u32,
    pub path: String,
}

pub fn parse_http_route(value: &str) -> Result<HttpRouteFlag, String> {
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) => (host, Some(parse_port(port)?)),
        None => (value, None),
    };
    check_host(host)?;
    Ok(HttpRouteFlag {
        host: host.to_ascii_lowercase(),
        port,
    })
}

pub fn parse_tcp_route(value: &str) -> Result<TcpRouteFlag, String> {
    let (external, container) = match value.split_once(':') {
        Some((external, container)) => (external, Some(parse_port(container)?)),
        None => (value, None),
    };
    Ok(TcpRouteFlag {
        external_port: parse_port(external)?,
        container_port: container,
    })
}

pub fn parse_monitor_url(value: &str) -> Result<MonitorUrl, String> {
    let Some((port, path)) = value.split_once(':') else {
        return Err(format!("{value:?} is not PORT:/PATH, e.g. 8080:/healthz"));
    };
    if !path.starts_with('/') || path.chars().any(char::is_whitespace) {
        return Err(format!(
            "{path:?} is not a URL path; it starts with '/' and has no spaces"
        ));
    }
    Ok(MonitorUrl {
        port: parse_port(port)?,
        path: path.to_string(),
    })
}

/// `ltc update-routes`' `PORT:HOST[,PORT:HOST...]` (Lattice's older form):
/// `(port, host)` pairs in the order given.
pub fn parse_route_spec(value: &str) -> Result<Vec<(u32, String)>, String> {
    value
        .split(',')
        .map(|pair| {
            let Some((port, host)) = pair.split_once(':') else {
                return Err(format!(
                    "{pair:?} is not PORT:HOST, e.g. 8080:web,9090:web-admin"
                ));
            };
            let port = parse_port(port)?;
            check_host(host)?;
            Ok((port, host.to_ascii_lowercase()))
        })
        .collect()
}

fn parse_port(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(port) if (1..=65535).contains(&port) => Ok(port),
        _ => Err(format!("{value:?} is not a port (1-65535)")),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    validate_hostname("route", host).map_err(|e| e.message)
}

/// `host` as routed: a name without a dot lives under the system domain.
pub fn qualify(host: &str, domain: &str) -> String {
    if host.contains('.') || domain.is_empty() {
        host.to_string()
    } else {
        format!("{host}.{domain}")
    }
}

/// The hostname an app gets by default: its name, made a DNS label
/// (lower case, `_` as `-`, since app names may hold `_`), under `domain`.
pub fn default_hostname(app: &str, domain: &str) -> String {
    qualify(&app.to_ascii_lowercase().replace('_', "-"), domain)
}

/// Groups `(port, hostname)` pairs into one route per port, in the order
/// the ports first appear, without repeating a hostname.
pub fn group_http_routes(pairs: impl IntoIterator<Item = (u32, String)>) -> Vec<HttpRoute> {
    let mut routes: Vec<HttpRoute> = Vec::new();
    for (port, host) in pairs {
        match routes.iter_mut().find(|r| r.port == port) {
            Some(route) if route.hostnames.contains(&host) => {}
            Some(route) => route.hostnames.push(host),
            None => routes.push(HttpRoute {
                hostnames: vec![host],
                port,
            }),
        }
    }
    routes
}

/// The HTTP routes of `-R` flags.
pub fn http_routes(flags: &[HttpRouteFlag], domain: &str, first_port: u32) -> Vec<HttpRoute> {
    group_http_routes(
        flags
            .iter()
            .map(|f| (f.port.unwrap_or(first_port), qualify(&f.host, domain))),
    )
}

/// The TCP routes of `-T` flags, without duplicates.
pub fn tcp_routes(flags: &[TcpRouteFlag], first_port: u32) -> Vec<TcpRoute> {
    let mut routes: Vec<TcpRoute> = Vec::new();
    for flag in flags {
        let route = TcpRoute {
            external_port: flag.external_port,
            container_port: flag.container_port.unwrap_or(first_port),
            router_group_guid: None,
        };
        if !routes.contains(&route) {
            routes.push(route);
        }
    }
    routes
}

/// The port of the router's `host:port` address, if it has one.
fn router_port(router_address: &str) -> Option<&str> {
    router_address
        .rsplit_once(':')
        .map(|(_, port)| port)
        .filter(|port| !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()))
}

/// `http://HOST[:PORT]` for every hostname of `routes`, with the router's
/// port (left out when it is 80) since that is where the router listens.
pub fn http_urls(routes: &Routes, router_address: Option<&str>) -> Vec<String> {
    let port = router_address
        .and_then(router_port)
        .filter(|port| *port != "80")
        .map(|port| format!(":{port}"))
        .unwrap_or_default();
    routes
        .http
        .iter()
        .flat_map(|route| route.hostnames.iter())
        .map(|host| format!("http://{host}{port}"))
        .collect()
}

/// One line per TCP route: `EXTERNAL -> CONTAINER`.
pub fn tcp_lines(routes: &Routes) -> Vec<String> {
    routes
        .tcp
        .iter()
        .map(|r| format!("tcp {} -> {}", r.external_port, r.container_port))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_route_flags() {
        assert_eq!(
            parse_http_route("web"),
            Ok(HttpRouteFlag {
                host: "web".into(),
                port: None
            })
        );
        assert_eq!(
            parse_http_route("Web.Example.com:9090"),
            Ok(HttpRouteFlag {
                host: "web.example.com".into(),
                port: Some(9090)
            })
        );
        for (bad, why) in [
            ("web:0", "not a port"),
            ("web:x", "not a port"),
            ("web:", "not a port"),
            ("bad host", "not a valid hostname"),
            (":8080", "not a valid hostname"),
            ("a..b", "not a valid hostname"),
        ] {
            let err = parse_http_route(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn tcp_route_flags() {
        assert_eq!(
            parse_tcp_route("61000"),
            Ok(TcpRouteFlag {
                external_port: 61000,
                container_port: None
            })
        );
        assert_eq!(
            parse_tcp_route("61000:5222"),
            Ok(TcpRouteFlag {
                external_port: 61000,
                container_port: Some(5222)
            })
        );
        for bad in ["", "x", "70000", "1:0", "1:2:3"] {
            assert!(parse_tcp_route(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn monitor_urls() {
        assert_eq!(
            parse_monitor_url("8080:/healthz"),
            Ok(MonitorUrl {
                port: 8080,
                path: "/healthz".into()
            })
        );
        assert!(parse_monitor_url("8080")
            .unwrap_err()
            .contains("PORT:/PATH"));
        assert!(parse_monitor_url("8080:healthz")
            .unwrap_err()
            .contains("starts with '/'"));
        assert!(parse_monitor_url("8080:/a b").is_err());
        assert!(parse_monitor_url("0:/x")
            .unwrap_err()
            .contains("not a port"));
    }

    #[test]
    fn route_specs() {
        assert_eq!(
            parse_route_spec("8080:web,9090:Admin.example.com,8080:www"),
            Ok(vec![
                (8080, "web".to_string()),
                (9090, "admin.example.com".to_string()),
                (8080, "www".to_string()),
            ])
        );
        assert!(parse_route_spec("web:8080")
            .unwrap_err()
            .contains("not a port"));
        assert!(parse_route_spec("8080").unwrap_err().contains("PORT:HOST"));
        assert!(parse_route_spec("8080:web,")
            .unwrap_err()
            .contains("PORT:HOST"));
        assert!(parse_route_spec("8080:bad_host").is_err());
    }

    #[test]
    fn resolution() {
        let flags = [
            parse_http_route("web").unwrap(),
            parse_http_route("www.example.com").unwrap(),
            parse_http_route("admin:9090").unwrap(),
            parse_http_route("web").unwrap(),
        ];
        assert_eq!(
            http_routes(&flags, "localhost", 8080),
            vec![
                HttpRoute {
                    hostnames: vec!["web.localhost".into(), "www.example.com".into()],
                    port: 8080
                },
                HttpRoute {
                    hostnames: vec!["admin.localhost".into()],
                    port: 9090
                },
            ]
        );
        let tcp = [
            parse_tcp_route("61000").unwrap(),
            parse_tcp_route("61001:22").unwrap(),
            parse_tcp_route("61000").unwrap(),
        ];
        assert_eq!(
            tcp_routes(&tcp, 8080),
            vec![
                TcpRoute {
                    external_port: 61000,
                    container_port: 8080,
                    router_group_guid: None,
                },
                TcpRoute {
                    external_port: 61001,
                    container_port: 22,
                    router_group_guid: None,
                },
            ]
        );
        assert_eq!(
            default_hostname("My_App", "lattice.dev"),
            "my-app.lattice.dev"
        );
        assert_eq!(qualify("web", ""), "web");
    }

    #[test]
    fn urls_carry_the_router_port() {
        let routes = Routes {
            http: group_http_routes([(8080, "a.localhost".into()), (8080, "b.localhost".into())]),
            tcp: vec![TcpRoute {
                external_port: 61000,
                container_port: 22,
                router_group_guid: None,
            }],
            other: Default::default(),
        };
        assert_eq!(
            http_urls(&routes, Some("127.0.0.1:8080")),
            ["http://a.localhost:8080", "http://b.localhost:8080"]
        );
        assert_eq!(
            http_urls(&routes, Some("10.0.0.1:80")),
            ["http://a.localhost", "http://b.localhost"]
        );
        assert_eq!(
            http_urls(&routes, None),
            ["http://a.localhost", "http://b.localhost"]
        );
        assert_eq!(tcp_lines(&routes), ["tcp 61000 -> 22"]);
    }
}
