//! The routing table: which instance addresses serve which hostname (HTTP)
//! and which external port (TCP). A pure function of a snapshot of desired
//! and actual LRPs, so the emitter can rebuild it whole from any snapshot and
//! the tests need no I/O.
//!
//! [`TableHandle`] is how the emitter publishes a new table and how the
//! proxies read the current one.

use std::collections::HashMap;
use std::sync::Arc;

use lattice_models::{ActualLrp, ActualLrpState, DesiredLrp, PreferredAddress};
use tokio::sync::watch;

/// One running instance that serves a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `host:port` to connect to first (IPv6 hosts in brackets): the
    /// container's own address and port when its cell says routers reach
    /// its container network, else the host address and port.
    pub address: String,
    /// The host address and port to use when connecting to `address`
    /// fails, for an endpoint whose `address` is the container's own.
    pub fallback: Option<String>,
    pub process_guid: String,
    /// The desired LRP's `log_guid` (its process guid when empty): the app
    /// log stream the router's access lines belong to, the same stream the
    /// rep writes the instance's own output to.
    pub log_guid: String,
    pub index: i64,
    pub instance_guid: String,
}

/// Where each route leads.
///
/// # Guarantees
/// - Only RUNNING instances with an address and a mapping of the route's
///   container port appear, and the instance a draining cell still runs
///   for an index (its evacuating instance) beside that index's
///   replacement, so that traffic never waits for the replacement.
/// - Every list is sorted by process guid, then index, then address, and has
///   no duplicates, so equal snapshots give equal tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingTable {
    /// Lower-case hostname (possibly a `*.domain` wildcard) -> endpoints.
    pub http: HashMap<String, Vec<Endpoint>>,
    /// External port of the TCP router -> endpoints.
    pub tcp: HashMap<u16, Vec<Endpoint>>,
}

impl RoutingTable {
    /// The route serving `host` (already lower-case, without port) as its
    /// key in [`RoutingTable::http`] and endpoints: an exact route first,
    /// else the most specific wildcard (`*.b.c` before `*.c`), as Cloud
    /// Foundry's router matches.
    pub fn http_route(&self, host: &str) -> Option<(&str, &[Endpoint])> {
        let found = |key: &str| {
            self.http
                .get_key_value(key)
                .map(|(key, endpoints)| (key.as_str(), endpoints.as_slice()))
        };
        if let Some(route) = found(host) {
            return Some(route);
        }
        let mut rest = host;
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(route) = found(&format!("*.{parent}")) {
                return Some(route);
            }
            rest = parent;
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.http.is_empty() && self.tcp.is_empty()
    }
}

/// Builds the routing table from a snapshot of desired and actual LRPs.
pub fn routing_table(desired: &[DesiredLrp], actual: &[ActualLrp]) -> RoutingTable {
    // Evacuating instances as records of their own (Diego's shape), so
    // they route like any running instance.
    let evacuating: Vec<ActualLrp> = actual
        .iter()
        .filter_map(ActualLrp::evacuating_lrp)
        .collect();
    let mut running: HashMap<&str, Vec<&ActualLrp>> = HashMap::new();
    for lrp in actual.iter().chain(&evacuating) {
        if lrp.state == ActualLrpState::Running && !lrp.address.is_empty() {
            running.entry(&lrp.process_guid).or_default().push(lrp);
        }
    }

    let mut table = RoutingTable::default();
    for lrp in desired {
        let Some(instances) = running.get(lrp.process_guid.as_str()) else {
            continue;
        };
        let log_guid = if lrp.log_guid.is_empty() {
            &lrp.process_guid
        } else {
            &lrp.log_guid
        };
        for route in &lrp.routes.http {
            let endpoints: Vec<Endpoint> = endpoints_for(instances, route.port, log_guid);
            for host in &route.hostnames {
                table
                    .http
                    .entry(host.to_ascii_lowercase())
                    .or_default()
                    .extend(endpoints.iter().cloned());
            }
        }
        for route in &lrp.routes.tcp {
            // Validation keeps ports in 1-65535; a record that slipped past
            // it is skipped rather than bound to a wrapped-around port.
            let Ok(external) = u16::try_from(route.external_port) else {
                continue;
            };
            if external == 0 {
                continue;
            }
            table.tcp.entry(external).or_default().extend(endpoints_for(
                instances,
                route.container_port,
                log_guid,
            ));
        }
    }

    for endpoints in table.http.values_mut().chain(table.tcp.values_mut()) {
        sort_and_dedup(endpoints);
    }
    // A route whose instances are all down (or unmapped) is no route at all,
    // so the router answers 404 rather than 502 for it, and the TCP router
    // does not hold its port open.
    table.http.retain(|_, endpoints| !endpoints.is_empty());
    table.tcp.retain(|_, endpoints| !endpoints.is_empty());
    table
}

fn endpoints_for(instances: &[&ActualLrp], container_port: u32, log_guid: &str) -> Vec<Endpoint> {
    instances
        .iter()
        .filter_map(|lrp| {
            let mapping = lrp
                .ports
                .iter()
                .find(|m| m.container_port == container_port)?;
            let host_port = u16::try_from(mapping.host_port).ok().filter(|p| *p != 0)?;
            let host = join_host_port(&lrp.address, host_port);
            let direct = u16::try_from(mapping.container_port)
                .ok()
                .filter(|p| *p != 0)
                .filter(|_| {
                    lrp.preferred_address == PreferredAddress::Instance
                        && !lrp.instance_address.is_empty()
                })
                .map(|port| join_host_port(&lrp.instance_address, port));
            let (address, fallback) = match direct {
                Some(direct) => (direct, Some(host)),
                None => (host, None),
            };
            Some(Endpoint {
                address,
                fallback,
                process_guid: lrp.process_guid.clone(),
                log_guid: log_guid.to_string(),
                index: lrp.index,
                instance_guid: lrp.instance_guid.clone(),
            })
        })
        .collect()
}

fn sort_and_dedup(endpoints: &mut Vec<Endpoint>) {
    endpoints.sort_by(|a, b| {
        (&a.process_guid, a.index, &a.address, &a.instance_guid).cmp(&(
            &b.process_guid,
            b.index,
            &b.address,
            &b.instance_guid,
        ))
    });
    endpoints.dedup();
}

/// `host:port`, bracketing an IPv6 literal so the result parses as a socket
/// address and as a URI authority.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The shared, current routing table: one writer (the emitter), many
/// readers (every proxied request, the TCP supervisor). Cheap to clone.
///
/// A `watch` channel is the lock here: readers take a snapshot (`Arc`) under
/// a short read lock and never hold it across I/O, and the TCP supervisor
/// can wait for the next change instead of polling.
#[derive(Debug, Clone)]
pub struct TableHandle {
    sender: Arc<watch::Sender<Arc<RoutingTable>>>,
}

impl Default for TableHandle {
    fn default() -> Self {
        Self::new(RoutingTable::default())
    }
}

impl TableHandle {
    pub fn new(table: RoutingTable) -> Self {
        let (sender, _) = watch::channel(Arc::new(table));
        Self {
            sender: Arc::new(sender),
        }
    }

    /// The current table, as a snapshot that later changes do not touch.
    pub fn current(&self) -> Arc<RoutingTable> {
        self.sender.borrow().clone()
    }

    /// Publishes `table`; returns whether it differed from the current one
    /// (an equal table wakes no watcher).
    pub fn set(&self, table: RoutingTable) -> bool {
        self.sender.send_if_modified(|current| {
            if **current == table {
                false
            } else {
                *current = Arc::new(table);
                true
            }
        })
    }

    /// A receiver that is notified of every later change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RoutingTable>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_models::{
        Action, DesiredLrpCreateRequest, HttpRoute, PortMapping, Routes, TcpRoute,
    };

    fn desired(guid: &str, routes: Routes) -> DesiredLrp {
        DesiredLrpCreateRequest {
            process_guid: guid.into(),
            domain: "apps".into(),
            rootfs: "docker:///busybox".into(),
            instances: 3,
            setup: None,
            action: Action::run("/bin/httpd", &[]),
            monitor: None,
            start_timeout: 0,
            env: vec![],
            cpu_weight: 0,
            disk_mb: 0,
            memory_mb: 0,
            privileged: false,
            ports: vec![8080, 5222],
            routes: Some(routes),
            log_guid: String::new(),
            log_source: String::new(),
            annotation: String::new(),
            metrics_guid: String::new(),
            egress_rules: Vec::new(),
            disable_ssh: false,
        }
        .into_desired_lrp()
    }

    fn http(hosts: &[&str], port: u32) -> Routes {
        Routes {
            http: vec![HttpRoute {
                hostnames: hosts.iter().map(|h| h.to_string()).collect(),
                port,
            }],
            tcp: vec![],
            other: Default::default(),
        }
    }

    fn actual(guid: &str, index: i64, state: ActualLrpState, host_port: u32) -> ActualLrp {
        let mut lrp = ActualLrp::unclaimed(guid, "apps", index, 1);
        lrp.state = state;
        lrp.instance_guid = format!("{guid}-i{index}");
        lrp.cell_id = "cell-1".into();
        lrp.address = "10.0.0.1".into();
        lrp.ports = vec![
            PortMapping {
                container_port: 8080,
                host_port,
            },
            PortMapping {
                container_port: 5222,
                host_port: host_port + 1,
            },
        ];
        lrp
    }

    fn addresses(endpoints: &[Endpoint]) -> Vec<&str> {
        endpoints.iter().map(|e| e.address.as_str()).collect()
    }

    #[test]
    fn running_instances_of_a_route_in_index_order() {
        let table = routing_table(
            &[desired("web", http(&["Web.Example", "www.example"], 8080))],
            &[
                actual("web", 2, ActualLrpState::Running, 60020),
                actual("web", 0, ActualLrpState::Running, 60000),
                actual("web", 1, ActualLrpState::Running, 60010),
            ],
        );
        assert_eq!(table.http.len(), 2);
        let web = &table.http["web.example"];
        assert_eq!(
            addresses(web),
            ["10.0.0.1:60000", "10.0.0.1:60010", "10.0.0.1:60020"]
        );
        assert_eq!(web[1].index, 1);
        assert_eq!(web[1].instance_guid, "web-i1");
        assert_eq!(web[1].log_guid, "web", "empty log_guid falls back");
        assert_eq!(table.http["www.example"], *web);
        assert!(table.tcp.is_empty());
    }

    #[test]
    fn only_running_instances_with_an_address() {
        let mut no_address = actual("web", 3, ActualLrpState::Running, 60030);
        no_address.address.clear();
        let table = routing_table(
            &[desired("web", http(&["web.example"], 8080))],
            &[
                actual("web", 0, ActualLrpState::Unclaimed, 60000),
                actual("web", 1, ActualLrpState::Claimed, 60010),
                actual("web", 2, ActualLrpState::Crashed, 60020),
                no_address,
                actual("web", 4, ActualLrpState::Running, 60040),
            ],
        );
        assert_eq!(addresses(&table.http["web.example"]), ["10.0.0.1:60040"]);
    }

    #[test]
    fn a_route_without_running_instances_is_absent() {
        let table = routing_table(
            &[desired("web", http(&["web.example"], 8080))],
            &[actual("web", 0, ActualLrpState::Crashed, 60000)],
        );
        assert!(table.is_empty(), "{table:?}");
    }

    #[test]
    fn unmapped_container_ports_and_other_processes_are_ignored() {
        let table = routing_table(
            &[
                desired("web", http(&["web.example"], 9999)),
                desired("api", http(&["api.example"], 8080)),
            ],
            &[
                actual("web", 0, ActualLrpState::Running, 60000),
                actual("orphan", 0, ActualLrpState::Running, 60100),
            ],
        );
        assert!(table.is_empty(), "{table:?}");
    }

    #[test]
    fn tcp_routes_map_external_ports() {
        let mut lrp = desired("db", Routes::default());
        lrp.log_guid = "db-logs".into();
        lrp.routes.tcp = vec![TcpRoute {
            external_port: 61000,
            container_port: 5222,
            router_group_guid: None,
        }];
        let table = routing_table(
            &[lrp],
            &[
                actual("db", 1, ActualLrpState::Running, 60010),
                actual("db", 0, ActualLrpState::Running, 60000),
            ],
        );
        assert!(table.http.is_empty());
        let db = &table.tcp[&61000];
        assert_eq!(addresses(db), ["10.0.0.1:60001", "10.0.0.1:60011"]);
        assert_eq!(db[0].log_guid, "db-logs");
    }

    #[test]
    fn two_processes_may_share_a_hostname() {
        let table = routing_table(
            &[
                desired("web-b", http(&["shared.example"], 8080)),
                desired("web-a", http(&["shared.example", "shared.example"], 8080)),
            ],
            &[
                actual("web-b", 0, ActualLrpState::Running, 60100),
                actual("web-a", 0, ActualLrpState::Running, 60000),
            ],
        );
        let shared = &table.http["shared.example"];
        let guids: Vec<&str> = shared.iter().map(|e| e.process_guid.as_str()).collect();
        assert_eq!(guids, ["web-a", "web-b"], "sorted, duplicates dropped");
    }

    #[test]
    fn the_table_does_not_depend_on_input_order() {
        let desired_lrps = [
            desired("a", http(&["a.example", "both.example"], 8080)),
            desired("b", http(&["both.example"], 8080)),
        ];
        let mut actual_lrps = vec![
            actual("a", 0, ActualLrpState::Running, 60000),
            actual("a", 1, ActualLrpState::Running, 60010),
            actual("b", 0, ActualLrpState::Running, 60100),
        ];
        let first = routing_table(&desired_lrps, &actual_lrps);
        actual_lrps.reverse();
        let mut reversed_desired = desired_lrps.to_vec();
        reversed_desired.reverse();
        assert_eq!(routing_table(&reversed_desired, &actual_lrps), first);
    }

    #[test]
    fn instances_on_a_reachable_container_network_are_routed_directly() {
        let mut direct = actual("web", 0, ActualLrpState::Running, 60000);
        direct.instance_address = "172.17.0.5".into();
        direct.preferred_address = PreferredAddress::Instance;
        let mut host_only = actual("web", 1, ActualLrpState::Running, 60010);
        host_only.instance_address = "172.17.0.6".into();
        host_only.preferred_address = PreferredAddress::Host;
        let table = routing_table(
            &[desired("web", http(&["web.example"], 8080))],
            &[direct, host_only],
        );
        let web = &table.http["web.example"];
        assert_eq!(addresses(web), ["172.17.0.5:8080", "10.0.0.1:60010"]);
        assert_eq!(web[0].fallback.as_deref(), Some("10.0.0.1:60000"));
        assert_eq!(web[1].fallback, None);
    }

    #[test]
    fn an_evacuating_instance_serves_beside_its_replacement() {
        let old = actual("web", 0, ActualLrpState::Running, 60000);
        let mut record = ActualLrp::unclaimed("web", "apps", 0, 2);
        record.evacuating_instance = Some(old.as_evacuating());
        let route = desired("web", http(&["web.example"], 8080));
        let table = routing_table(std::slice::from_ref(&route), std::slice::from_ref(&record));
        assert_eq!(addresses(&table.http["web.example"]), ["10.0.0.1:60000"]);
        assert_eq!(table.http["web.example"][0].instance_guid, "web-i0");

        // The replacement runs: both serve until the old one is cleared.
        let mut replaced = actual("web", 0, ActualLrpState::Running, 61000);
        replaced.instance_guid = "web-new".into();
        replaced.evacuating_instance = record.evacuating_instance.clone();
        let table = routing_table(
            std::slice::from_ref(&route),
            std::slice::from_ref(&replaced),
        );
        assert_eq!(
            addresses(&table.http["web.example"]),
            ["10.0.0.1:60000", "10.0.0.1:61000"]
        );
        replaced.evacuating_instance = None;
        let table = routing_table(&[route], &[replaced]);
        assert_eq!(addresses(&table.http["web.example"]), ["10.0.0.1:61000"]);
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        let mut lrp = actual("web", 0, ActualLrpState::Running, 60000);
        lrp.address = "::1".into();
        let table = routing_table(&[desired("web", http(&["web.example"], 8080))], &[lrp]);
        assert_eq!(addresses(&table.http["web.example"]), ["[::1]:60000"]);
    }

    #[test]
    fn wildcard_lookup_prefers_exact_then_most_specific() {
        let table = routing_table(
            &[
                desired("exact", http(&["a.b.example"], 8080)),
                desired("near", http(&["*.b.example"], 8080)),
                desired("far", http(&["*.example"], 8080)),
            ],
            &[
                actual("exact", 0, ActualLrpState::Running, 60000),
                actual("near", 0, ActualLrpState::Running, 60100),
                actual("far", 0, ActualLrpState::Running, 60200),
            ],
        );
        let guid = |host: &str| {
            table
                .http_route(host)
                .map(|(_, e)| e[0].process_guid.clone())
        };
        assert_eq!(guid("a.b.example").as_deref(), Some("exact"));
        assert_eq!(guid("c.b.example").as_deref(), Some("near"));
        assert_eq!(guid("x.y.example").as_deref(), Some("far"));
        assert_eq!(guid("example"), None);
        assert_eq!(guid("other.test"), None);
    }

    #[test]
    fn the_handle_wakes_watchers_only_on_change() {
        let handle = TableHandle::default();
        let watcher = handle.subscribe();
        assert!(!handle.set(RoutingTable::default()));
        assert!(!watcher.has_changed().expect("the handle keeps the sender"));
        let table = routing_table(
            &[desired("web", http(&["web.example"], 8080))],
            &[actual("web", 0, ActualLrpState::Running, 60000)],
        );
        assert!(handle.set(table.clone()));
        assert!(watcher.has_changed().expect("the handle keeps the sender"));
        assert_eq!(*handle.current(), table);
    }
}
