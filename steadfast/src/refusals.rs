//! Refused handshakes in the log: each one once, at info, with its reason and source address,
//! at most [`PER_SECOND`] lines a second, so that a flood of refusals cannot flood the log
//! (the ones left out are counted, and the count is logged with the next line).

use std::fmt::Display;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::info;

use crate::metered::{self, Refused};

/// The most refusals logged in one second.
pub(crate) const PER_SECOND: u32 = 20;

/// The log's rate limit: one window a second.
#[derive(Debug)]
pub(crate) struct RefusalLog {
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    left_out: u64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            window: Mutex::new(Window {
                start: Instant::now(),
                logged: 0,
                left_out: 0,
            }),
        }
    }
}

impl RefusalLog {
    /// Logs a refused handshake from `addr` (or counts it, past the rate), and counts it in
    /// `steadfast_handshakes_refused_total` by its kind.
    pub(crate) fn refused(&self, addr: SocketAddr, kind: Refused, why: &dyn Display) {
        metered::refused(kind);
        let (log, left_out) = {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let mut left_out = 0;
            if now.duration_since(w.start) >= Duration::from_secs(1) {
                left_out = std::mem::take(&mut w.left_out);
                w.start = now;
                w.logged = 0;
            }
            let log = w.logged < PER_SECOND;
            if log {
                w.logged += 1;
            } else {
                w.left_out += 1;
            }
            (log, left_out)
        };
        if left_out > 0 {
            info!(
                "{left_out} more refused handshakes were not logged (at most {PER_SECOND} a second)"
            );
        }
        if log {
            info!("refused handshake from {addr}: {why}");
        }
    }
}
