//! The auctioneer's one reading of the monotonic clock.
//!
//! Decisions take `now` as an argument; the I/O shell reads it here, from
//! tokio's clock, so that tests with paused time see virtual time.
//! `clippy.toml` bans every other `Instant::now`.

use tokio::time::Instant;

/// Now, on tokio's clock (virtual under paused time).
#[allow(clippy::disallowed_methods)] // The one sanctioned read; see the module doc.
pub(crate) fn now() -> Instant {
    Instant::now()
}
