//! The clocks the runtime reads: tokio's monotonic clock for the protocol core (so that paused
//! test time works) and the wall clock for message timestamps and store records.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The monotonic clock the runtime gives the core (tokio's, so paused test time works).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Microseconds since the Unix epoch, for the sender timestamp of a message.
pub(crate) fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
