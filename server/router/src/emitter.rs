//! The route-emitter: keeps a [`TableHandle`] equal to
//! [`routing_table`] of the receptor's current desired and actual LRPs.
//!
//! # How
//! 1. Subscribe to `GET /v1/events` first, then read the desired and actual
//!    LRPs (the client's advice: events are not replayed, so reading after
//!    subscribing misses nothing).
//! 2. On every event that can change a route (see [`affects_routes`]),
//!    schedule a full re-read: [`EmitterConfig::settle`] later after a quiet
//!    spell, but never sooner than [`EmitterConfig::debounce`] after the
//!    last one began; events that arrive meanwhile ride along with it. The
//!    deadline does not slide, so a steady flow of events still refreshes
//!    the table at that pace.
//! 3. Re-read every [`EmitterConfig::resync_interval`] anyway, to heal
//!    anything the stream may have lost.
//! 4. When the stream ends or fails, wait (exponential back-off) and start
//!    again at 1, on the next receptor when it was given several (the
//!    brains of one cluster serve the same state). While no receptor can be
//!    reached the last table stays in force: instances that were running
//!    most likely still are.
//!
//! Why re-read instead of applying each event: the table is then always a
//! pure function of one consistent snapshot, with no ordering cases (an
//! actual LRP event before its desired LRP's, a route change while an
//! instance moves) to get wrong. A re-read costs two list calls (a few ms
//! for a thousand instances, see `docs/performance.md`), and the debounce
//! turns a burst (a deploy of 100 instances is hundreds of events) into a
//! handful of them. A cluster of tens of thousands of instances would want
//! incremental updates keyed by process guid; the table function would stay.

use std::time::Duration;

use futures::StreamExt;
use lattice_client::{Client, ClientError, EventStream};
use lattice_models::pacing::settle_then_space;
use lattice_models::{ActualLrpState, Event};
use tokio::time::{sleep, sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::table::{routing_table, TableHandle};

/// How the emitter paces itself.
#[derive(Debug, Clone)]
pub struct EmitterConfig {
    /// Full re-read even without events (heals missed events).
    pub resync_interval: Duration,
    /// Delay between a route-changing event after a quiet spell and the
    /// re-read it triggers (an instance just became RUNNING: its route
    /// should be there at once); the rest of its burst shares the re-read.
    pub settle: Duration,
    /// Re-reads driven by events start at most this often; later events
    /// share the next one.
    pub debounce: Duration,
    /// First wait before reconnecting after a failure; doubles each time.
    pub min_backoff: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl EmitterConfig {
    /// When a re-read for a change seen at `now` starts: once its burst
    /// settled, and not sooner than `debounce` after the last re-read.
    fn sync_at(&self, now: Instant, last_sync: Option<Instant>) -> Instant {
        settle_then_space(now, last_sync, self.settle, self.debounce)
    }
}

impl Default for EmitterConfig {
    fn default() -> Self {
        Self {
            resync_interval: Duration::from_secs(30),
            settle: Duration::from_millis(2),
            debounce: Duration::from_millis(20),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

/// Why one subscription ended.
#[derive(Debug, thiserror::Error)]
pub enum EmitterError {
    /// The receptor refused or could not take the event subscription.
    #[error("could not subscribe to the receptor's events")]
    Subscribe(#[source] ClientError),
    /// Reading the desired or actual LRPs failed.
    #[error("could not read the LRPs from the receptor")]
    Fetch(#[source] ClientError),
    /// The event stream failed on the wire; events may have been lost.
    #[error("the event stream failed")]
    Stream(#[source] ClientError),
    /// The receptor closed the event stream (it shut down, or dropped a
    /// subscriber that fell behind).
    #[error("the receptor closed the event stream")]
    StreamEnded,
}

/// Follows the receptor and keeps a routing table current.
#[derive(Debug)]
pub struct RouteEmitter {
    /// Never empty; the first is followed first.
    receptors: Vec<Client>,
    config: EmitterConfig,
}

impl RouteEmitter {
    pub fn new(client: Client, config: EmitterConfig) -> Self {
        Self {
            receptors: vec![client],
            config,
        }
    }

    /// Other receptors of the same cluster to follow when the current one
    /// fails: after every failure the emitter moves to the next, round
    /// robin, and stays with one as long as it works.
    pub fn with_fallbacks(mut self, others: impl IntoIterator<Item = Client>) -> Self {
        self.receptors.extend(others);
        self
    }

    /// Runs until `shutdown` fires, writing every new table into `table`.
    ///
    /// # Guarantees
    /// - No error ends the loop: each is logged and followed by a back-off
    ///   and a fresh subscription and re-read.
    /// - The table is only replaced by one built from a complete snapshot; a
    ///   failed read leaves the previous table in force.
    ///
    /// # Assumptions
    /// Safe to cancel at any `.await` (dropping the future or firing
    /// `shutdown`): nothing is half-written, the table is swapped whole.
    pub async fn run(self, table: TableHandle, shutdown: CancellationToken) {
        let mut backoff = self.config.min_backoff;
        let mut current = 0;
        loop {
            let receptor = &self.receptors[current];
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.follow_once(receptor, &table) => outcome,
            };
            let Err(error) = outcome;
            current = (current + 1) % self.receptors.len();
            let next = self.receptors[current].target();
            match error {
                // The stream only ends after a successful sync: the receptor
                // was fine a moment ago, so start the back-off afresh.
                EmitterError::StreamEnded | EmitterError::Stream(_) => {
                    backoff = self.config.min_backoff;
                    tracing::warn!(receptor = receptor.target(), next, error = %error_chain(&error), "route-emitter lost the event stream; reconnecting");
                }
                EmitterError::Subscribe(_) | EmitterError::Fetch(_) => {
                    tracing::warn!(
                        receptor = receptor.target(),
                        next,
                        error = %error_chain(&error),
                        retry_in_ms = backoff.as_millis() as u64,
                        "route-emitter cannot reach the receptor; keeping the last routing table"
                    );
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }

    /// One subscription: subscribe, sync, then follow events until the
    /// stream ends. Returns only with the reason it ended.
    async fn follow_once(
        &self,
        receptor: &Client,
        table: &TableHandle,
    ) -> Result<std::convert::Infallible, EmitterError> {
        let mut events: EventStream = receptor.events().await.map_err(EmitterError::Subscribe)?;
        self.sync(receptor, table).await?;
        tracing::debug!(
            receptor = receptor.target(),
            "route-emitter following the receptor's events"
        );

        let mut resync_at = Instant::now() + self.config.resync_interval;
        let mut pending: Option<Instant> = None;
        let mut last_sync: Option<Instant> = None;
        loop {
            let due = pending.unwrap_or(resync_at).min(resync_at);
            tokio::select! {
                _ = sleep_until(due) => {
                    pending = None;
                    let now = Instant::now();
                    last_sync = Some(now);
                    resync_at = now + self.config.resync_interval;
                    if let Err(e) = self.sync(receptor, table).await {
                        // Keep following: the next event or resync retries,
                        // and the stream tells us if the receptor is gone.
                        tracing::warn!(error = %error_chain(&e), "route-emitter re-read failed");
                    }
                }
                item = events.next() => match item {
                    None => return Err(EmitterError::StreamEnded),
                    Some(Ok(event)) => {
                        if pending.is_none() && affects_routes(&event) {
                            pending = Some(self.config.sync_at(Instant::now(), last_sync));
                        }
                    }
                    // One event we cannot read (a kind newer than this
                    // build): we may have missed a change, so re-read soon,
                    // but the stream itself is fine.
                    Some(Err(e @ ClientError::Decode { .. })) => {
                        tracing::warn!(error = %error_chain(&e), "route-emitter skipped an event");
                        pending.get_or_insert(self.config.sync_at(Instant::now(), last_sync));
                    }
                    Some(Err(e)) => return Err(EmitterError::Stream(e)),
                },
            }
        }
    }

    /// Reads desired and actual LRPs and publishes the table they give.
    async fn sync(&self, receptor: &Client, table: &TableHandle) -> Result<(), EmitterError> {
        let (desired, actual) = tokio::try_join!(receptor.desired_lrps(), receptor.actual_lrps())
            .map_err(EmitterError::Fetch)?;
        let next = routing_table(&desired, &actual);
        let (hosts, ports) = (next.http.len(), next.tcp.len());
        if table.set(next) {
            tracing::info!(hosts, tcp_ports = ports, "routing table changed");
        }
        Ok(())
    }
}

/// Whether `event` can change the routing table. Task events cannot; an
/// actual LRP change matters only if it enters or leaves RUNNING or moves a
/// running instance; a desired LRP change only if its routes changed (an
/// instance count change shows up as actual LRP events).
pub fn affects_routes(event: &Event) -> bool {
    let running = |state: ActualLrpState| state == ActualLrpState::Running;
    match event {
        Event::DesiredLrpCreated { desired_lrp } | Event::DesiredLrpRemoved { desired_lrp } => {
            !desired_lrp.routes.is_empty()
        }
        Event::DesiredLrpChanged {
            desired_lrp_before,
            desired_lrp_after,
        } => {
            desired_lrp_before.routes != desired_lrp_after.routes
                || desired_lrp_before.log_guid != desired_lrp_after.log_guid
        }
        Event::ActualLrpCreated { actual_lrp } | Event::ActualLrpRemoved { actual_lrp } => {
            running(actual_lrp.state) || actual_lrp.evacuating_instance.is_some()
        }
        Event::ActualLrpChanged {
            actual_lrp_before: before,
            actual_lrp_after: after,
        } => {
            before.evacuating_instance != after.evacuating_instance
                || (running(before.state) || running(after.state))
                    && (before.state != after.state
                        || before.address != after.address
                        || before.ports != after.ports
                        || before.instance_address != after.instance_address
                        || before.preferred_address != after.preferred_address
                        || before.instance_guid != after.instance_guid)
        }
        Event::TaskCreated { .. } | Event::TaskChanged { .. } | Event::TaskRemoved { .. } => false,
    }
}

/// `error: cause: cause`, for one-line logs.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_models::{ActualLrp, HttpRoute, Routes};

    fn running(index: i64) -> ActualLrp {
        let mut lrp = ActualLrp::unclaimed("web", "apps", index, 1);
        lrp.state = ActualLrpState::Running;
        lrp.address = "10.0.0.1".into();
        lrp
    }

    fn changed(before: ActualLrp, after: ActualLrp) -> Event {
        Event::ActualLrpChanged {
            actual_lrp_before: before,
            actual_lrp_after: after,
        }
    }

    #[test]
    fn actual_lrp_events_matter_around_running() {
        let unclaimed = ActualLrp::unclaimed("web", "apps", 0, 1);
        let mut claimed = unclaimed.clone();
        claimed.state = ActualLrpState::Claimed;
        assert!(!affects(changed(unclaimed.clone(), claimed.clone())));
        assert!(affects(changed(claimed.clone(), running(0))));
        let mut crashed = running(0);
        crashed.state = ActualLrpState::Crashed;
        assert!(affects(changed(running(0), crashed)));
        let mut moved = running(0);
        moved.address = "10.0.0.2".into();
        assert!(affects(changed(running(0), moved)));
        let mut evacuated = ActualLrp::unclaimed("web", "apps", 0, 2);
        evacuated.evacuating_instance = Some(running(0).as_evacuating());
        assert!(affects(changed(running(0), evacuated.clone())));
        assert!(affects(changed(evacuated, unclaimed.clone())));
        let mut crash_counted = running(0);
        crash_counted.crash_count = 3;
        assert!(!affects(changed(running(0), crash_counted)));
        assert!(affects_routes(&Event::ActualLrpRemoved {
            actual_lrp: running(0)
        }));
        assert!(!affects_routes(&Event::ActualLrpCreated {
            actual_lrp: unclaimed
        }));
    }

    #[test]
    fn desired_lrp_events_matter_when_routes_do() {
        let base = lattice_models::DesiredLrpCreateRequest {
            process_guid: "web".into(),
            domain: "apps".into(),
            rootfs: "docker:///busybox".into(),
            instances: 1,
            setup: None,
            action: lattice_models::Action::run("/bin/true", &[]),
            monitor: None,
            start_timeout: 0,
            env: vec![],
            cpu_weight: 0,
            disk_mb: 0,
            memory_mb: 0,
            privileged: false,
            ports: vec![8080],
            routes: None,
            log_guid: String::new(),
            log_source: String::new(),
            annotation: String::new(),
            metrics_guid: String::new(),
            egress_rules: Vec::new(),
            disable_ssh: false,
        }
        .into_desired_lrp();
        assert!(!affects_routes(&Event::DesiredLrpCreated {
            desired_lrp: base.clone()
        }));
        let mut routed = base.clone();
        routed.routes = Routes {
            http: vec![HttpRoute {
                hostnames: vec!["web.example".into()],
                port: 8080,
            }],
            tcp: vec![],
            other: Default::default(),
        };
        assert!(affects_routes(&Event::DesiredLrpRemoved {
            desired_lrp: routed.clone()
        }));
        let mut scaled = routed.clone();
        scaled.instances = 5;
        assert!(!affects_routes(&Event::DesiredLrpChanged {
            desired_lrp_before: routed.clone(),
            desired_lrp_after: scaled,
        }));
        assert!(affects_routes(&Event::DesiredLrpChanged {
            desired_lrp_before: base,
            desired_lrp_after: routed,
        }));
    }

    fn affects(event: Event) -> bool {
        affects_routes(&event)
    }
}
