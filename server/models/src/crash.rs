//! The crash policy: one rule for both sides of a crash. The cell counts a
//! crash ([`crash_count_after_crash`]), the converger decides when a
//! CRASHED instance starts again ([`CrashPolicy::decision`]). Pure: the
//! time is passed in.

use std::time::Duration;

/// An instance that ran at least this long before crashing has recovered:
/// its crash count starts afresh (Diego's five minutes).
pub const CRASH_COUNT_RESET_AFTER: Duration = Duration::from_secs(5 * 60);

/// The crash count a cell records when an instance that had crashed
/// `previous_count` times crashes again after running for `ran_for`.
pub fn crash_count_after_crash(previous_count: i64, ran_for: Duration) -> i64 {
    let base = if ran_for >= CRASH_COUNT_RESET_AFTER {
        0
    } else {
        previous_count.max(0)
    };
    base.saturating_add(1)
}

/// When a CRASHED instance starts again, with Diego's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashPolicy {
    /// Crashes (counted from 1) that are restarted at once.
    pub immediate_restarts: i64,
    /// Wait before the first delayed restart; doubles with each crash.
    pub backoff_min: Duration,
    /// Cap of the doubling wait.
    pub backoff_max: Duration,
    /// An instance that crashed this many times stays CRASHED for good.
    pub max_restart_attempts: i64,
}

impl Default for CrashPolicy {
    fn default() -> Self {
        CrashPolicy {
            immediate_restarts: 3,
            backoff_min: Duration::from_secs(30),
            backoff_max: Duration::from_secs(16 * 60),
            max_restart_attempts: 200,
        }
    }
}

/// What the crash policy says about a CRASHED instance at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashDecision {
    RestartNow,
    /// Not before this time (nanoseconds since the Unix epoch).
    WaitUntil(i64),
    /// Crashed too often: it stays CRASHED.
    GiveUp,
}

impl CrashPolicy {
    /// How long an instance that crashed `crash_count` times waits, from
    /// the crash, before it is restarted: nothing for the first
    /// `immediate_restarts` crashes, then `backoff_min` doubling up to
    /// `backoff_max` (30 s, 1 m, 2 m, ... 16 m, 16 m, ...).
    pub fn backoff(&self, crash_count: i64) -> Duration {
        if crash_count <= self.immediate_restarts {
            return Duration::ZERO;
        }
        // The exponent is capped well below overflow; the cap applies anyway.
        let exponent = u32::try_from(crash_count - self.immediate_restarts - 1)
            .unwrap_or(u32::MAX)
            .min(32);
        self.backoff_min
            .checked_mul(1u32.checked_shl(exponent).unwrap_or(u32::MAX))
            .unwrap_or(self.backoff_max)
            .min(self.backoff_max)
    }

    /// The decision for an instance that crashed `crash_count` times, the
    /// last time at `since` (nanoseconds since the Unix epoch).
    pub fn decision(&self, crash_count: i64, since: i64, now_nanos: i64) -> CrashDecision {
        if crash_count >= self.max_restart_attempts {
            return CrashDecision::GiveUp;
        }
        let wait = i64::try_from(self.backoff(crash_count).as_nanos()).unwrap_or(i64::MAX);
        let due = since.saturating_add(wait);
        if now_nanos >= due {
            CrashDecision::RestartNow
        } else {
            CrashDecision::WaitUntil(due)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_resets_after_five_minutes() {
        assert_eq!(crash_count_after_crash(0, Duration::ZERO), 1);
        assert_eq!(crash_count_after_crash(3, Duration::from_secs(299)), 4);
        assert_eq!(crash_count_after_crash(7, Duration::from_secs(300)), 1);
        assert_eq!(crash_count_after_crash(-2, Duration::ZERO), 1);
        assert_eq!(crash_count_after_crash(i64::MAX, Duration::ZERO), i64::MAX);
    }

    #[test]
    fn diegos_backoff() {
        let policy = CrashPolicy::default();
        let secs = |s| Duration::from_secs(s);
        let table = [
            (1, secs(0)),
            (3, secs(0)),
            (4, secs(30)),
            (5, secs(60)),
            (6, secs(120)),
            (9, secs(960)),
            (10, secs(960)),
            (199, secs(960)),
        ];
        for (count, wait) in table {
            assert_eq!(policy.backoff(count), wait, "crash {count}");
        }
    }

    #[test]
    fn decisions_restart_wait_or_give_up() {
        let policy = CrashPolicy::default();
        let second = 1_000_000_000;
        assert_eq!(policy.decision(2, 0, 0), CrashDecision::RestartNow);
        assert_eq!(
            policy.decision(4, 0, second),
            CrashDecision::WaitUntil(30 * second)
        );
        assert_eq!(
            policy.decision(4, 0, 30 * second),
            CrashDecision::RestartNow
        );
        assert_eq!(policy.decision(200, 0, i64::MAX), CrashDecision::GiveUp);
        assert_eq!(
            policy.decision(4, i64::MAX, 0),
            CrashDecision::WaitUntil(i64::MAX)
        );
    }
}
