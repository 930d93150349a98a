//! Evacuation (Diego's): a cell that is told to stop hands its running
//! instances over instead of dropping them.
//!
//! ```text
//!  RUNNING here ──hand_over──▶ record UNCLAIMED, evacuating_instance = this one
//!                                  │  (routers keep routing to this one;
//!                                  │   the auctioneer places the index elsewhere)
//!                                  ▼
//!               replacement RUNNING for `route_delay` (routers have it)
//!               or the evacuation timeout ──release──▶ evacuating_instance cleared,
//!                                                        then this one stops
//! ```
//!
//! The decisions are pure ([`hand_over`], [`release`], [`Evacuee::step`],
//! time passed in); [`crate::Rep::evacuate`] only reads records and
//! performs them.
//!
//! # Guarantees
//! - An instance is handed over only while it is RUNNING on this cell under
//!   the instance guid the cell runs: a CAS on the record, so a concurrent
//!   change wins and the cell decides again.
//! - A handed-over instance keeps serving until its replacement has been
//!   RUNNING for the route delay, the drain times out, or its index is gone
//!   (scaled down, deleted); never past the timeout.

use std::time::Duration;

use lattice_models::auction::LrpKey;
use lattice_models::{ActualLrp, ActualLrpEvent, ActualLrpState};
use tokio::time::Instant;

/// The record that hands `record`'s instance over: this cell's RUNNING
/// instance becomes the index's evacuating instance and the index is
/// unclaimed, for the auction to place a replacement elsewhere. `None` when
/// the record is not this cell's running instance `instance_guid`.
pub fn hand_over(
    record: &ActualLrp,
    cell_id: &str,
    instance_guid: &str,
    now_nanos: i64,
) -> Option<ActualLrp> {
    let ours = record.cell_id == cell_id && record.instance_guid == instance_guid;
    if !ours || record.state != ActualLrpState::Running {
        return None;
    }
    let mut next = record.clone();
    let evacuee = record.as_evacuating();
    next.apply(ActualLrpEvent::Unclaim, now_nanos).ok()?;
    next.evacuating_instance = Some(evacuee);
    Some(next)
}

/// The record without the evacuating instance `instance_guid`; `None` when
/// it does not hold that one (already released, or another's).
pub fn release(record: &ActualLrp, instance_guid: &str) -> Option<ActualLrp> {
    let evacuee = record.evacuating_instance.as_ref()?;
    if evacuee.instance_guid != instance_guid {
        return None;
    }
    let mut next = record.clone();
    next.evacuating_instance = None;
    Some(next)
}

/// Why an evacuating instance stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Its replacement is RUNNING and has been for the route delay.
    Replaced,
    /// No replacement ran within the evacuation timeout.
    TimedOut,
    /// The index is gone (scaled down, or its desired LRP deleted).
    Removed,
    /// The record no longer holds this instance as evacuating (cleared by
    /// someone else): nothing routes to it any more.
    Released,
    /// Its process ended on this cell while it evacuated.
    Ended,
}

impl StopReason {
    /// Whether the cell must still clear the record's evacuating instance.
    pub fn needs_release(self) -> bool {
        matches!(
            self,
            StopReason::Replaced | StopReason::TimedOut | StopReason::Ended
        )
    }
}

/// What to do next with one evacuating instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Keep serving; look again at the next change or tick.
    Wait,
    /// Stop serving (after releasing the record when the reason says so).
    Stop(StopReason),
}

/// One instance this cell handed over, followed until it may stop.
#[derive(Debug, Clone)]
pub struct Evacuee {
    pub key: LrpKey,
    pub instance_guid: String,
    /// When the replacement was first seen RUNNING.
    replacement_running_since: Option<Instant>,
}

impl Evacuee {
    pub fn new(key: LrpKey, instance_guid: impl Into<String>) -> Evacuee {
        Evacuee {
            key,
            instance_guid: instance_guid.into(),
            replacement_running_since: None,
        }
    }

    /// Decides on the index's current record (`None`: it is gone) at `now`,
    /// with the evacuation ending at `deadline`.
    pub fn step(
        &mut self,
        record: Option<&ActualLrp>,
        now: Instant,
        deadline: Instant,
        route_delay: Duration,
    ) -> Next {
        let Some(record) = record else {
            return Next::Stop(StopReason::Removed);
        };
        let still_ours = record
            .evacuating_instance
            .as_ref()
            .is_some_and(|e| e.instance_guid == self.instance_guid);
        if !still_ours {
            return Next::Stop(StopReason::Released);
        }
        if record.state == ActualLrpState::Running {
            let since = *self.replacement_running_since.get_or_insert(now);
            if now >= since + route_delay {
                return Next::Stop(StopReason::Replaced);
            }
        } else {
            // It crashed or moved again: wait for the next one to run.
            self.replacement_running_since = None;
        }
        if now >= deadline {
            return Next::Stop(StopReason::TimedOut);
        }
        Next::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CELL: &str = "cell-draining";
    const ROUTE_DELAY: Duration = Duration::from_millis(500);
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn running_here() -> ActualLrp {
        let mut lrp = ActualLrp::unclaimed("web", "apps", 0, 1);
        lrp.state = ActualLrpState::Running;
        lrp.cell_id = CELL.into();
        lrp.instance_guid = "old".into();
        lrp.address = "10.0.0.1".into();
        lrp
    }

    /// The handed-over record after another cell claimed and, when
    /// `running`, started the replacement.
    fn replaced(handed: &ActualLrp, running: bool) -> ActualLrp {
        let mut lrp = handed.clone();
        lrp.apply(ActualLrpEvent::Claim, 3).expect("unclaimed");
        lrp.cell_id = "cell-other".into();
        lrp.instance_guid = "new".into();
        if running {
            lrp.apply(ActualLrpEvent::Start, 4).expect("claimed");
        }
        lrp
    }

    #[test]
    fn only_our_running_instance_is_handed_over() {
        let handed = hand_over(&running_here(), CELL, "old", 2).expect("ours, running");
        assert_eq!(handed.state, ActualLrpState::Unclaimed);
        assert_eq!(handed.cell_id, "");
        let evacuee = handed.evacuating_instance.as_ref().expect("kept");
        assert_eq!(
            (evacuee.cell_id.as_str(), evacuee.instance_guid.as_str()),
            (CELL, "old")
        );
        assert_eq!(evacuee.address, "10.0.0.1");

        assert!(hand_over(&running_here(), CELL, "other-guid", 2).is_none());
        assert!(hand_over(&running_here(), "cell-other", "old", 2).is_none());
        let mut claimed = running_here();
        claimed.state = ActualLrpState::Claimed;
        assert!(hand_over(&claimed, CELL, "old", 2).is_none());
    }

    #[test]
    fn release_clears_only_our_evacuee() {
        let handed = hand_over(&running_here(), CELL, "old", 2).expect("handed");
        assert!(release(&handed, "someone-else").is_none());
        let released = release(&handed, "old").expect("ours");
        assert_eq!(released.evacuating_instance, None);
        assert!(release(&released, "old").is_none(), "only once");
    }

    #[tokio::test(start_paused = true)]
    async fn it_serves_until_the_replacement_has_run_for_the_route_delay() {
        let start = crate::clock::now();
        let deadline = start + TIMEOUT;
        let handed = hand_over(&running_here(), CELL, "old", 2).expect("handed");
        let mut evacuee = Evacuee::new(LrpKey::new("web", 0), "old");
        let step = |e: &mut Evacuee, record: &ActualLrp| {
            e.step(Some(record), crate::clock::now(), deadline, ROUTE_DELAY)
        };

        assert_eq!(step(&mut evacuee, &handed), Next::Wait, "unplaced");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            step(&mut evacuee, &replaced(&handed, false)),
            Next::Wait,
            "claimed"
        );
        let running = replaced(&handed, true);
        assert_eq!(step(&mut evacuee, &running), Next::Wait, "just running");
        tokio::time::advance(ROUTE_DELAY - Duration::from_millis(1)).await;
        assert_eq!(step(&mut evacuee, &running), Next::Wait);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(
            step(&mut evacuee, &running),
            Next::Stop(StopReason::Replaced)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_replacement_that_crashes_restarts_the_route_delay() {
        let deadline = crate::clock::now() + TIMEOUT;
        let handed = hand_over(&running_here(), CELL, "old", 2).expect("handed");
        let mut evacuee = Evacuee::new(LrpKey::new("web", 0), "old");
        let running = replaced(&handed, true);
        let mut crashed = running.clone();
        crashed.apply(ActualLrpEvent::Crash, 5).expect("running");
        let now = crate::clock::now;
        assert_eq!(
            evacuee.step(Some(&running), now(), deadline, ROUTE_DELAY),
            Next::Wait
        );
        tokio::time::advance(ROUTE_DELAY / 2).await;
        assert_eq!(
            evacuee.step(Some(&crashed), now(), deadline, ROUTE_DELAY),
            Next::Wait
        );
        tokio::time::advance(ROUTE_DELAY / 2).await;
        assert_eq!(
            evacuee.step(Some(&running), now(), deadline, ROUTE_DELAY),
            Next::Wait,
            "running again: the delay starts anew"
        );
        tokio::time::advance(ROUTE_DELAY).await;
        assert_eq!(
            evacuee.step(Some(&running), now(), deadline, ROUTE_DELAY),
            Next::Stop(StopReason::Replaced)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_replacement_it_stops_at_the_timeout() {
        let deadline = crate::clock::now() + TIMEOUT;
        let handed = hand_over(&running_here(), CELL, "old", 2).expect("handed");
        let mut evacuee = Evacuee::new(LrpKey::new("web", 0), "old");
        tokio::time::advance(TIMEOUT - Duration::from_millis(1)).await;
        assert_eq!(
            evacuee.step(Some(&handed), crate::clock::now(), deadline, ROUTE_DELAY),
            Next::Wait
        );
        tokio::time::advance(Duration::from_millis(1)).await;
        let next = evacuee.step(Some(&handed), crate::clock::now(), deadline, ROUTE_DELAY);
        assert_eq!(next, Next::Stop(StopReason::TimedOut));
        assert!(StopReason::TimedOut.needs_release());
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_or_released_index_stops_at_once_without_release() {
        let deadline = crate::clock::now() + TIMEOUT;
        let handed = hand_over(&running_here(), CELL, "old", 2).expect("handed");
        let mut evacuee = Evacuee::new(LrpKey::new("web", 0), "old");
        let removed = evacuee.step(None, crate::clock::now(), deadline, ROUTE_DELAY);
        assert_eq!(removed, Next::Stop(StopReason::Removed));
        let released = release(&handed, "old").expect("ours");
        let next = evacuee.step(Some(&released), crate::clock::now(), deadline, ROUTE_DELAY);
        assert_eq!(next, Next::Stop(StopReason::Released));
        assert!(!StopReason::Removed.needs_release());
        assert!(!StopReason::Released.needs_release());
    }
}
