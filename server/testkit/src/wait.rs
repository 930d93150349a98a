//! Waiting for a state in tests: poll a check until it holds, with a
//! limit that only keeps a broken test from hanging.

use std::time::Duration;

/// Longest any wait here lasts: every wait is meant to end in a fraction
/// of it.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// Polls `check` every 10 ms (of `tokio::time`, so paused time advances
/// through it) until it returns `Some`.
///
/// # Panics
/// Naming `what`, after [`HANG_GUARD`].
pub async fn until<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let waited = tokio::time::timeout(HANG_GUARD, async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match waited {
        Ok(value) => value,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}
