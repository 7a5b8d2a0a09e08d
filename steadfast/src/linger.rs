//! The linger timers of a server's detached sessions: one queue of deadlines and one task for
//! all of them, instead of a task per session (a lingering session then costs a queue entry,
//! tens of bytes, not a task of hundreds).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tokio::sync::Notify;

use crate::session::PeerShared;

/// When to look at a session again.
struct Entry {
    at: Instant,
    session: Weak<PeerShared>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at.cmp(&other.at)
    }
}

/// The deadlines, earliest first, and a wake-up for the task that serves them.
#[derive(Default)]
pub(crate) struct Timers {
    queue: Mutex<BinaryHeap<Reverse<Entry>>>,
    /// A deadline earlier than all others was added.
    pub(crate) earlier: Notify,
}

impl std::fmt::Debug for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("pending", &self.lock().len())
            .finish()
    }
}

impl Timers {
    fn lock(&self) -> MutexGuard<'_, BinaryHeap<Reverse<Entry>>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks at `session` again at `at` (it holds no reference that keeps the session).
    pub(crate) fn add(&self, at: Instant, session: &Arc<PeerShared>) {
        let earliest = {
            let mut q = self.lock();
            let earliest = q.peek().is_none_or(|e| at < e.0.at);
            q.push(Reverse(Entry {
                at,
                session: Arc::downgrade(session),
            }));
            earliest
        };
        if earliest {
            self.earlier.notify_one();
        }
    }

    /// Takes the sessions whose time has come by `now` (those still alive) and tells the
    /// next deadline.
    pub(crate) fn due(&self, now: Instant) -> (Vec<Arc<PeerShared>>, Option<Instant>) {
        let mut q = self.lock();
        let mut due = Vec::new();
        while let Some(e) = q.peek() {
            if e.0.at > now {
                return (due, Some(e.0.at));
            }
            if let Some(Reverse(e)) = q.pop()
                && let Some(s) = e.session.upgrade()
            {
                due.push(s);
            }
        }
        (due, None)
    }
}
