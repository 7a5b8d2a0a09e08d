//! The server's event queue: lifecycle events that are never dropped, bounded by construction.
//!
//! Each session has at most one entry of each kind waiting (new peer, link change, messages
//! waiting, end): a repeated change of a kind already waiting is coalesced into it, and the
//! event is built from the session's state when the application reads it (a link change
//! reads as `Resumed` if a connection carries the session then, `Disconnected` with the latest
//! error otherwise). So the queue holds at most four entries per session. The sessions it
//! refers to are the registry's (at most `max_sessions`) and ended ones whose events are
//! unread: once there are `max_sessions` of those, new sessions are refused until the
//! application reads, so the queue refers to at most twice `max_sessions` sessions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::error::EndReason;
use crate::peer::Peer;
use crate::proto::ConnectionError;
use crate::server::ServerEvent;
use crate::session::PeerShared;

/// A new session (what `accept` hands out).
pub(crate) const NEW: u8 = 1;
/// A connection ended or a new one resumed the session.
pub(crate) const LINK: u8 = 2;
/// Messages arrived and the application has not read since.
pub(crate) const WAITING: u8 = 4;
/// The session ended.
pub(crate) const END: u8 = 8;

#[derive(Default)]
struct Entries {
    /// New sessions, in order, with their place in the common order.
    new: VecDeque<(u64, Arc<PeerShared>)>,
    /// Every other kind, in order.
    other: VecDeque<(u64, Arc<PeerShared>, u8)>,
    next: u64,
}

/// The queue behind `Server::next_event` and `Server::accept`.
pub(crate) struct EventQueue {
    entries: Mutex<Entries>,
    ready: Notify,
    closed: AtomicBool,
    /// Ended sessions with events still waiting.
    held: AtomicUsize,
    /// Whether events other than new sessions are recorded.
    lifecycle: bool,
}

impl std::fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventQueue")
            .field("held", &self.held)
            .field("lifecycle", &self.lifecycle)
            .finish_non_exhaustive()
    }
}

impl EventQueue {
    pub(crate) fn new(lifecycle: bool) -> Self {
        EventQueue {
            entries: Mutex::new(Entries::default()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            lifecycle,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ended sessions whose events the application has not read yet: they still count among
    /// the server's sessions.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Records an event of `kind` for a session, unless one of that kind is waiting already.
    pub(crate) fn push(&self, shared: &Arc<PeerShared>, kind: u8) {
        if self.closed.load(Ordering::Relaxed) || (kind != NEW && !self.lifecycle) {
            return;
        }
        {
            let mut st = shared.lock();
            if st.queued & kind != 0 {
                return;
            }
            st.queued |= kind;
            if kind == END && !st.held {
                st.held = true;
                self.held.fetch_add(1, Ordering::Relaxed);
            }
        }
        {
            let mut q = self.lock();
            let n = q.next;
            q.next += 1;
            if kind == NEW {
                q.new.push_back((n, shared.clone()));
            } else {
                q.other.push_back((n, shared.clone(), kind));
            }
        }
        self.ready.notify_waiters();
    }

    /// No more events: readers get `None` once the queue is empty.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.ready.notify_waiters();
    }

    /// The next event (of any kind, or only new sessions), waiting for one; `None` once
    /// closed and empty.
    pub(crate) async fn next(&self, only_new: bool) -> Option<ServerEvent> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self.try_next(only_new) {
                return Some(e);
            }
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            notified.await;
        }
    }

    /// The next event if one is waiting.
    pub(crate) fn try_next(&self, only_new: bool) -> Option<ServerEvent> {
        let (shared, kind) = {
            let mut q = self.lock();
            let new_first = match (q.new.front(), q.other.front()) {
                (Some(_), _) if only_new => true,
                (_, _) if only_new => return None,
                (Some((a, _)), Some((b, _, _))) => a < b,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return None,
            };
            if new_first {
                let (_, s) = q.new.pop_front()?;
                (s, NEW)
            } else {
                let (_, s, k) = q.other.pop_front()?;
                (s, k)
            }
        };
        Some(self.build(shared, kind))
    }

    /// The event a waiting entry stands for, from the session's state now.
    fn build(&self, shared: Arc<PeerShared>, kind: u8) -> ServerEvent {
        let mut st = shared.lock();
        st.queued &= !kind;
        if st.held && st.queued == 0 {
            st.held = false;
            self.held.fetch_sub(1, Ordering::Relaxed);
        }
        let connected = st.connected;
        let error = st.last_error.clone().unwrap_or(ConnectionError::Reset);
        let ending = st.ending.as_ref().map(|e| {
            (
                e.reason.clone(),
                e.unacknowledged.clone().unwrap_or_default(),
            )
        });
        drop(st);
        let peer = Peer { shared };
        match kind {
            NEW => ServerEvent::Connected { peer },
            LINK if connected => ServerEvent::Resumed { peer },
            LINK => ServerEvent::Disconnected { peer, error },
            WAITING => ServerEvent::MessagesWaiting { peer },
            _ => match ending {
                Some((EndReason::Expired(_), unacknowledged)) => ServerEvent::Expired {
                    peer,
                    unacknowledged,
                },
                Some((reason, unacknowledged)) => ServerEvent::Ended {
                    peer,
                    reason,
                    unacknowledged,
                },
                None => ServerEvent::Ended {
                    peer,
                    reason: EndReason::Shutdown,
                    unacknowledged: Vec::new(),
                },
            },
        }
    }
}
