//! The server's event queue: lifecycle events that are never dropped, bounded by construction.
//!
//! Each session has at most one entry of each kind waiting (new peer for `accept`, connected,
//! link change, messages waiting, end): a repeated change of a kind already waiting is folded
//! into it, and the event is built from the session's state when the application reads it (a
//! link change reads as `Resumed` if a connection carries the session then, `Disconnected`
//! with the latest error otherwise). So the queues hold at most five entries per session. The
//! sessions they refer to are the registry's (at most `max_sessions`) and ended ones whose
//! entries are unread: once there are `max_sessions` of those, new sessions are refused until
//! the application reads, so the queues refer to at most twice `max_sessions` sessions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::error::EndReason;
use crate::peer::Peer;
use crate::proto::{ConnectionError, Message};
use crate::session::PeerShared;

/// Something that happened on a server.
///
/// Events are never dropped. Each session has at most one event of each kind waiting to be
/// read (new, link change, messages waiting, end); a change of a kind already waiting is
/// folded into it, and the event says how things stand when it is read: a session that
/// disconnected and resumed while its `Disconnected` was unread reads as `Resumed` (with the
/// latest error on the peer handle's side, [`Peer::is_connected`]). Ended sessions whose events
/// are unread are kept for the application, up to `max_sessions` of them; beyond that new
/// sessions are refused (REJECT `ServerFull`) until it reads, rather than let the queue grow.
/// Turn them off with [`ServerConfig::lifecycle_events`](crate::ServerConfig::lifecycle_events) if you serve peers from
/// [`Server::accept`](crate::Server::accept) and follow each through its handle ([`Peer::ended`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client established a new session (also handed out by
    /// [`Server::accept`](crate::Server::accept), which reads a queue of its own).
    Connected {
        /// Its handle.
        peer: Peer,
    },
    /// A client resumed its session on a new connection.
    Resumed {
        /// Its handle.
        peer: Peer,
    },
    /// A session's connection ended; the session lingers, resumable, for the linger time.
    Disconnected {
        /// Its handle.
        peer: Peer,
        /// Why the connection ended (the latest reason, if several were folded together).
        error: ConnectionError,
    },
    /// A lingering session was not resumed in time, or was evicted to admit a newer one from
    /// the same address (see [`ServerConfig::max_sessions_per_addr`](crate::ServerConfig::max_sessions_per_addr)), and is gone.
    Expired {
        /// Its handle.
        peer: Peer,
        /// Messages sent to it and never acknowledged, in order.
        unacknowledged: Vec<Message>,
    },
    /// A session ended (CLOSE, kick, protocol violation, shutdown).
    Ended {
        /// Its handle.
        peer: Peer,
        /// Why.
        reason: EndReason,
        /// Messages sent to it and never acknowledged, in order.
        unacknowledged: Vec<Message>,
    },
    /// A peer has messages waiting (once until the application reads from that peer): the
    /// notification queue. Not sent for messages that a [`Peer::recv`] waiting on that peer
    /// takes (the application reads that peer already); a waiting `recv` dropped before it
    /// took them leaves this event in its place.
    MessagesWaiting {
        /// Its handle.
        peer: Peer,
    },
}

/// A new session, for `accept` (queued once something has called it).
pub(crate) const NEW: u8 = 1;
/// A connection ended or a new one resumed the session.
pub(crate) const LINK: u8 = 2;
/// Messages arrived and the application has not read since.
pub(crate) const WAITING: u8 = 4;
/// The session ended.
pub(crate) const END: u8 = 8;
/// A new session, for the events.
pub(crate) const CONNECTED: u8 = 16;

#[derive(Default)]
struct Entries {
    /// New sessions for `accept`, in order.
    new: VecDeque<Arc<PeerShared>>,
    /// Events, in order.
    events: VecDeque<(Arc<PeerShared>, u8)>,
}

/// The queues behind `Server::accept` and `Server::next_event`: two readers that do not take
/// from each other (an accept loop and an event logger can run side by side).
pub(crate) struct EventQueue {
    entries: Mutex<Entries>,
    ready: Notify,
    closed: AtomicBool,
    /// Whether `accept` was ever called: until then no new-session entries are kept (the
    /// first call hands out the sessions that exist then).
    accepting: AtomicBool,
    /// Ended sessions with entries still waiting.
    held: AtomicUsize,
    /// Whether events are recorded.
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
            accepting: AtomicBool::new(false),
            held: AtomicUsize::new(0),
            lifecycle,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ended sessions whose entries the application has not read yet.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether `accept` has been called.
    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// The first `accept`: from now on new sessions are kept for it. Returns true for the
    /// call that turned it on; that caller then hands in the sessions that exist with
    /// [`EventQueue::push_existing`] (a session created meanwhile may come both ways: it is
    /// queued once).
    pub(crate) fn begin_accepting(&self) -> bool {
        !self.accepting.swap(true, Ordering::SeqCst)
    }

    /// Queues sessions that existed when `accept` was first called, oldest first.
    pub(crate) fn push_existing(&self, existing: &[Arc<PeerShared>]) {
        for s in existing {
            self.push(s, NEW);
        }
    }

    /// Records a new session: for `accept` (once it is in use) and as an event.
    pub(crate) fn push_new(&self, shared: &Arc<PeerShared>) {
        if self.is_accepting() {
            self.push(shared, NEW);
        }
        self.push(shared, CONNECTED);
    }

    /// Records an entry of `kind` for a session, unless one of that kind is waiting already.
    pub(crate) fn push(&self, shared: &Arc<PeerShared>, kind: u8) {
        if self.closed.load(Ordering::Relaxed) || (kind != NEW && !self.lifecycle) {
            if kind == END {
                // Nothing to report, but a new session still waiting for `accept` keeps the
                // session counted until it is taken.
                let mut st = shared.lock();
                if st.queued != 0 && !st.held {
                    st.held = true;
                    self.held.fetch_add(1, Ordering::Relaxed);
                    st.account();
                }
            }
            return;
        }
        {
            let mut st = shared.lock();
            if st.queued & kind != 0 || (kind == NEW && st.offered) {
                return;
            }
            // `accept` hands a session out once, however it was queued.
            st.offered |= kind == NEW;
            st.queued |= kind;
            if (kind == END || st.ending.is_some()) && !st.held {
                st.held = true;
                self.held.fetch_add(1, Ordering::Relaxed);
                st.account();
            }
        }
        {
            let mut q = self.lock();
            if kind == NEW {
                q.new.push_back(shared.clone());
            } else {
                q.events.push_back((shared.clone(), kind));
            }
        }
        self.ready.notify_waiters();
    }

    /// No more events: readers get `None` once the queue is empty.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.ready.notify_waiters();
    }

    /// The next new session (`new`) or the next event, waiting for one; `None` once closed
    /// and empty.
    pub(crate) async fn next(&self, new: bool) -> Option<ServerEvent> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self.try_next(new) {
                return Some(e);
            }
            if self.closed.load(Ordering::Relaxed) {
                return None;
            }
            notified.await;
        }
    }

    /// The next new session (`new`) or the next event, if one is waiting.
    pub(crate) fn try_next(&self, new: bool) -> Option<ServerEvent> {
        let (shared, kind) = {
            let mut q = self.lock();
            if new {
                (q.new.pop_front()?, NEW)
            } else {
                q.events.pop_front()?
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
        // What an ended session hands back counts in the budget while it is held here.
        st.account();
        let connected = st.connected;
        // The error is reported once, by the link event that stands for it: a session
        // lingering after that holds no copy.
        let error = if kind == LINK {
            st.last_error.take()
        } else {
            None
        }
        .map_or(ConnectionError::Reset, |e| *e);
        let ending = st.ending.as_ref().map(|e| {
            (
                e.reason.clone(),
                e.unacknowledged.clone().unwrap_or_default(),
            )
        });
        drop(st);
        let peer = Peer { shared };
        match kind {
            NEW | CONNECTED => ServerEvent::Connected { peer },
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
