//! Waiting for an app's instances to be RUNNING (`ltc create`, `ltc scale`),
//! and the error that says why they are not when the time is up.
//!
//! The wait follows the receptor's event stream (`GET /v1/events`), so it
//! learns that an instance is RUNNING the moment the store records it: it
//! subscribes, then reads `GET /v1/actual_lrps/APP` once, then applies each
//! event about the app's instances to what it read. It reads again every
//! [`RESYNC_INTERVAL`] anyway, and whenever the stream fails (subscribing
//! again first), so a lost event or a receptor without events only costs
//! time. When the time is up, the last log lines of the instances that are
//! not running are part of the explanation: a crash's cause is usually
//! there.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use lattice_client::LogsClient;
use lattice_client::{Client, ClientError, EventStream};
use lattice_models::{ActualLrp, ActualLrpState, Event};
use tokio::time::Instant;

use crate::log_stream::recent_lines_of_instances;
use crate::progress::Spinner;

/// How often waits that poll (a task's state) look.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How often the wait for instances reads them all again, even while it
/// follows their events: heals a missed event, and is the pace when the
/// event stream is not available.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How many log lines a failure shows at most: enough for a crash's last
/// words, few enough to keep the explanation readable.
pub const MAX_LOG_LINES: usize = 10;

/// Where the lines of the app waited for are read, for the explanation.
#[derive(Debug, Clone, Copy)]
pub struct AppLogs<'a> {
    pub client: &'a LogsClient,
    /// The app's `log_guid` (its name, for the apps ltc creates).
    pub log_guid: &'a str,
}

/// What ltc waited for did not happen in time, or could not be placed;
/// `ltc` exits with [`crate::EXIT_PLACEMENT`] for it, as Lattice's `ltc
/// create` had a distinct code for "placement failed".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{summary}{}", render_details(.details))]
pub struct PlacementFailed {
    /// One line: what did not happen, and how far it got.
    pub summary: String,
    /// One line per instance (or task) that is not where it should be.
    pub details: Vec<String>,
}

fn render_details(details: &[String]) -> String {
    details.iter().map(|line| format!("\n  {line}")).collect()
}

/// How far an app is from `desired` RUNNING instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub desired: i64,
    /// RUNNING instances with an index below `desired`.
    pub running: i64,
    /// Instances at or above `desired` that are still to be stopped.
    pub extra: i64,
}

impl Progress {
    pub fn of(actuals: &[ActualLrp], desired: i64) -> Progress {
        let running = actuals
            .iter()
            .filter(|a| a.index < desired && a.state == ActualLrpState::Running)
            .count();
        let extra = actuals.iter().filter(|a| a.index >= desired).count();
        Progress {
            desired,
            running: i64::try_from(running).unwrap_or(i64::MAX),
            extra: i64::try_from(extra).unwrap_or(i64::MAX),
        }
    }

    /// Every wanted index RUNNING and none beyond them left.
    pub fn is_done(&self) -> bool {
        self.running >= self.desired && self.extra == 0
    }

    fn message(&self, app: &str) -> String {
        let mut message = format!(
            "Waiting for {app}: {}/{} instances running",
            self.running, self.desired
        );
        if self.extra > 0 {
            message.push_str(&format!(", {} to stop", self.extra));
        }
        message
    }
}

/// Follows the instances of `app` until `desired` of them are RUNNING and
/// no instance beyond them is left, or `timeout` has passed.
///
/// # Errors
/// [`PlacementFailed`] when the time is up, explaining each instance that is
/// not RUNNING (placement error, crashes and their reason, state, its last
/// log lines); a client error other than a lost connection (which is retried
/// until the time is up, so that a restarting receptor does not fail a long
/// wait).
pub async fn wait_for_instances(
    client: &Client,
    logs: AppLogs<'_>,
    app: &str,
    desired: i64,
    timeout: Duration,
    spinner: &Spinner,
) -> anyhow::Result<Vec<ActualLrp>> {
    let deadline = Instant::now() + timeout;
    let mut last = Vec::new();
    let mut events: Option<EventStream> = None;
    loop {
        // Subscribed before reading: events are not replayed, so whatever
        // happens after the read is on the stream.
        if events.is_none() {
            events = client.events().await.ok();
        }
        match client.actual_lrps_by_process_guid(app).await {
            Ok(actuals) => {
                let progress = Progress::of(&actuals, desired);
                spinner.set_message(progress.message(app));
                if progress.is_done() {
                    return Ok(actuals);
                }
                last = actuals;
            }
            Err(err) if is_transient(&err) => {
                spinner.set_message(format!("Waiting for {app}: {err}; retrying"));
            }
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read the instances of {app:?}"))
            }
        }
        if Instant::now() >= deadline {
            let failing = failing_indexes(&last, desired);
            let lines = if failing.is_empty() {
                Ok(Vec::new())
            } else {
                recent_lines_of_instances(logs.client, logs.log_guid, &failing, MAX_LOG_LINES).await
            };
            let log_details = log_details(&failing, lines);
            return Err(not_running(app, desired, timeout, &last, log_details).into());
        }
        let resync_at = (Instant::now() + RESYNC_INTERVAL).min(deadline);
        let Some(stream) = events.as_mut() else {
            tokio::time::sleep_until(resync_at).await;
            continue;
        };
        loop {
            match tokio::time::timeout_at(resync_at, stream.next()).await {
                // Time to read everything again.
                Err(_) => break,
                Ok(Some(Ok(event))) => {
                    if apply_event(&mut last, app, &event) {
                        let progress = Progress::of(&last, desired);
                        spinner.set_message(progress.message(app));
                        if progress.is_done() {
                            return Ok(last);
                        }
                    }
                }
                // The stream failed or ended: events may be lost, so read
                // again after subscribing again.
                Ok(Some(Err(_)) | None) => {
                    events = None;
                    break;
                }
            }
        }
    }
}

/// Applies a change-feed event to `actuals`, the instances of `app`;
/// whether it was about them.
pub fn apply_event(actuals: &mut Vec<ActualLrp>, app: &str, event: &Event) -> bool {
    let (index, after) = match event {
        Event::ActualLrpCreated { actual_lrp } if actual_lrp.process_guid == app => {
            (actual_lrp.index, Some(actual_lrp))
        }
        Event::ActualLrpChanged {
            actual_lrp_after, ..
        } if actual_lrp_after.process_guid == app => {
            (actual_lrp_after.index, Some(actual_lrp_after))
        }
        Event::ActualLrpRemoved { actual_lrp } if actual_lrp.process_guid == app => {
            (actual_lrp.index, None)
        }
        _ => return false,
    };
    actuals.retain(|a| a.index != index);
    if let Some(after) = after {
        actuals.push(after.clone());
        actuals.sort_by_key(|a| a.index);
    }
    true
}

/// A lost connection or a timed-out request, which may heal by itself.
pub fn is_transient(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::Unreachable { .. } | ClientError::Transport { .. }
    )
}

/// The wanted instances that exist but are not RUNNING: those whose logs
/// may say why.
pub fn failing_indexes(actuals: &[ActualLrp], desired: i64) -> Vec<i64> {
    let mut indexes: Vec<i64> = actuals
        .iter()
        .filter(|a| a.index < desired && a.state != ActualLrpState::Running)
        .map(|a| a.index)
        .collect();
    indexes.sort_unstable();
    indexes
}

/// The detail lines that show `lines` (the last log lines of the instances
/// `failing`), or why they could not be read.
pub fn log_details(
    failing: &[i64],
    lines: Result<Vec<String>, lattice_client::ClientError>,
) -> Vec<String> {
    match lines {
        Ok(lines) if lines.is_empty() => Vec::new(),
        Ok(lines) => {
            let which = failing
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let plural = if failing.len() == 1 { "" } else { "s" };
            std::iter::once(format!("last log lines of instance{plural} {which}:"))
                .chain(lines.into_iter().map(|line| format!("  {line}")))
                .collect()
        }
        Err(err) => vec![format!(
            "the instances' log lines cannot be read: {:#}",
            anyhow::Error::from(err)
        )],
    }
}

/// Why `app` does not have `desired` RUNNING instances after `waited`;
/// `log_details` (see [`log_details`]) go after the instances.
pub fn not_running(
    app: &str,
    desired: i64,
    waited: Duration,
    actuals: &[ActualLrp],
    log_details: Vec<String>,
) -> PlacementFailed {
    let progress = Progress::of(actuals, desired);
    let mut summary = format!(
        "{app} is not running after {}: {} of {desired} instances RUNNING",
        humantime::format_duration(waited),
        progress.running
    );
    if progress.extra > 0 {
        summary.push_str(&format!(", {} more still to stop", progress.extra));
    }
    let states = state_counts(actuals);
    if !states.is_empty() {
        summary.push_str(&format!(" (states: {states})"));
    }
    let mut details = Vec::new();
    for index in 0..desired {
        match actuals.iter().find(|a| a.index == index) {
            None => details.push(format!(
                "instance {index}: not created yet (is the brain of the cluster running?)"
            )),
            Some(actual) if actual.state == ActualLrpState::Running => {}
            Some(actual) => details.push(format!("instance {index}: {}", describe(actual))),
        }
    }
    for actual in actuals.iter().filter(|a| a.index >= desired) {
        details.push(format!(
            "instance {}: {}, waiting to be stopped",
            actual.index,
            describe(actual)
        ));
    }
    details.extend(log_details);
    details.push(format!(
        "{app} stays desired: see `ltc status {app}`, or remove it with `ltc remove {app}`"
    ));
    PlacementFailed { summary, details }
}

/// `2 RUNNING, 1 UNCLAIMED`, in the order of the state machine.
fn state_counts(actuals: &[ActualLrp]) -> String {
    let mut counts: BTreeMap<usize, (ActualLrpState, usize)> = BTreeMap::new();
    for actual in actuals {
        let order = ActualLrpState::ALL
            .iter()
            .position(|s| *s == actual.state)
            .unwrap_or(usize::MAX);
        counts.entry(order).or_insert((actual.state, 0)).1 += 1;
    }
    counts
        .values()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One instance's state and what went wrong with it, for a person.
pub fn describe(actual: &ActualLrp) -> String {
    let mut line = match actual.state {
        ActualLrpState::Unclaimed if !actual.placement_error.is_empty() => {
            format!("UNCLAIMED, placement failed: {}", actual.placement_error)
        }
        ActualLrpState::Unclaimed => "UNCLAIMED, waiting for a cell".to_string(),
        ActualLrpState::Claimed => format!("CLAIMED by cell {}, starting", actual.cell_id),
        ActualLrpState::Running => format!("RUNNING on cell {}", actual.cell_id),
        ActualLrpState::Crashed => "CRASHED".to_string(),
    };
    if actual.crash_count > 0 {
        let plural = if actual.crash_count == 1 { "" } else { "es" };
        line.push_str(&format!(" ({} crash{plural}", actual.crash_count));
        if !actual.crash_reason.is_empty() {
            line.push_str(&format!(", last: {}", actual.crash_reason));
        }
        line.push(')');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actual(index: i64, state: ActualLrpState) -> ActualLrp {
        let mut a = ActualLrp::unclaimed("web", "lattice", index, 1);
        a.state = state;
        if state != ActualLrpState::Unclaimed {
            a.cell_id = "cell-1".into();
        }
        a
    }

    #[test]
    fn events_about_the_app_update_its_instances() {
        let mut actuals = vec![actual(0, ActualLrpState::Claimed)];
        let running = actual(0, ActualLrpState::Running);
        let changed = Event::ActualLrpChanged {
            actual_lrp_before: actuals[0].clone(),
            actual_lrp_after: running.clone(),
        };
        assert!(apply_event(&mut actuals, "web", &changed));
        assert_eq!(actuals, std::slice::from_ref(&running));
        let created = Event::ActualLrpCreated {
            actual_lrp: actual(1, ActualLrpState::Unclaimed),
        };
        assert!(apply_event(&mut actuals, "web", &created));
        assert_eq!(Progress::of(&actuals, 2).running, 1);
        let removed = Event::ActualLrpRemoved {
            actual_lrp: running,
        };
        assert!(apply_event(&mut actuals, "web", &removed));
        assert_eq!(actuals.iter().map(|a| a.index).collect::<Vec<_>>(), [1]);
        let mut other = actual(5, ActualLrpState::Running);
        other.process_guid = "other".into();
        let elsewhere = Event::ActualLrpCreated { actual_lrp: other };
        assert!(!apply_event(&mut actuals, "web", &elsewhere));
        assert_eq!(actuals.len(), 1);
    }

    #[test]
    fn progress_counts_wanted_running_and_extra() {
        let actuals = [
            actual(0, ActualLrpState::Running),
            actual(1, ActualLrpState::Claimed),
            actual(2, ActualLrpState::Running),
        ];
        let p = Progress::of(&actuals, 2);
        assert_eq!((p.running, p.extra, p.is_done()), (1, 1, false));
        let p = Progress::of(&actuals[..1], 1);
        assert!(p.is_done());
        assert!(Progress::of(&[], 0).is_done());
        assert!(!Progress::of(&actuals, 0).is_done(), "extras must stop");
    }

    #[test]
    fn the_failure_explains_every_instance() {
        let mut unplaced = actual(1, ActualLrpState::Unclaimed);
        unplaced.placement_error = "insufficient resources: memory".into();
        let mut crashed = actual(2, ActualLrpState::Crashed);
        crashed.crash_count = 3;
        crashed.crash_reason = "exited with status 1".into();
        let actuals = [actual(0, ActualLrpState::Running), unplaced, crashed];
        let err = not_running("web", 4, Duration::from_secs(120), &actuals, Vec::new());
        assert_eq!(
            err.to_string(),
            "web is not running after 2m: 1 of 4 instances RUNNING \
             (states: 1 UNCLAIMED, 1 RUNNING, 1 CRASHED)\n  \
             instance 1: UNCLAIMED, placement failed: insufficient resources: memory\n  \
             instance 2: CRASHED (3 crashes, last: exited with status 1)\n  \
             instance 3: not created yet (is the brain of the cluster running?)\n  \
             web stays desired: see `ltc status web`, or remove it with `ltc remove web`"
        );
    }

    #[test]
    fn extras_are_named() {
        let mut claimed = actual(0, ActualLrpState::Claimed);
        claimed.crash_count = 1;
        let err = not_running(
            "web",
            1,
            Duration::from_secs(1),
            &[claimed, actual(1, ActualLrpState::Running)],
            Vec::new(),
        );
        assert!(
            err.summary
                .contains("0 of 1 instances RUNNING, 1 more still to stop"),
            "{err}"
        );
        assert_eq!(
            err.details[0],
            "instance 0: CLAIMED by cell cell-1, starting (1 crash)"
        );
        assert_eq!(
            err.details[1],
            "instance 1: RUNNING on cell cell-1, waiting to be stopped"
        );
    }

    #[test]
    fn the_failure_ends_with_the_failing_instances_last_lines() {
        let actuals = [
            actual(2, ActualLrpState::Crashed),
            actual(0, ActualLrpState::Claimed),
            actual(1, ActualLrpState::Running),
            actual(3, ActualLrpState::Crashed),
        ];
        let failing = failing_indexes(&actuals, 3);
        assert_eq!(failing, [0, 2], "wanted, existing and not running");
        let lines = vec![
            "12:00:00.000 [CELL/2] Creating container".to_string(),
            "12:00:01.000 [APP/2] ERR boom".to_string(),
        ];
        let err = not_running(
            "web",
            3,
            Duration::from_secs(1),
            &actuals,
            log_details(&failing, Ok(lines)),
        );
        let shown = err.to_string();
        assert!(
            shown.ends_with(
                "\n  last log lines of instances 0, 2:\
                 \n    12:00:00.000 [CELL/2] Creating container\
                 \n    12:00:01.000 [APP/2] ERR boom\
                 \n  web stays desired: see `ltc status web`, or remove it with `ltc remove web`"
            ),
            "{shown}"
        );
        assert!(
            log_details(&[0], Ok(Vec::new())).is_empty(),
            "no lines, no header"
        );
        let unreadable = log_details(
            &[0],
            Err(lattice_client::ClientError::InvalidArgument {
                what: "log guid",
                value: String::new(),
            }),
        );
        assert_eq!(
            unreadable,
            ["the instances' log lines cannot be read: invalid log guid \"\": must not be empty, \".\" or \"..\""]
        );
    }
}
