//! How the brain's event-driven loops (auctioneer rounds, convergence
//! passes, the route-emitter's re-reads) pace themselves: a change after a
//! quiet spell is acted on after a short settle, so the rest of its burst
//! rides along; under a stream of changes, runs start at most every
//! `spacing`, each taking whatever gathered meanwhile.

use std::ops::Add;
use std::time::Duration;

/// When to act on a change seen at `now`, given when the last run began.
/// Generic over the clock (`std` or tokio's `Instant`).
pub fn settle_then_space<I>(now: I, last_run: Option<I>, settle: Duration, spacing: Duration) -> I
where
    I: Add<Duration, Output = I> + Ord + Copy,
{
    let settled = now + settle;
    match last_run {
        Some(last) => settled.max(last + spacing),
        None => settled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Times as durations since an origin: any `Add<Duration> + Ord` clock.
    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_change_after_a_quiet_spell_waits_only_to_settle() {
        assert_eq!(
            settle_then_space(at(1000), None, 10 * MS, 50 * MS),
            at(1010)
        );
        assert_eq!(
            settle_then_space(at(1000), Some(at(0)), 10 * MS, 50 * MS),
            at(1010)
        );
    }

    #[test]
    fn a_stream_of_changes_is_acted_on_at_most_every_spacing() {
        assert_eq!(
            settle_then_space(at(1005), Some(at(1000)), 10 * MS, 50 * MS),
            at(1050)
        );
    }
}
