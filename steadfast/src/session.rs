//! The runtime's view of one session: where it lives (on a connection, between connections,
//! ended), which connection carries it (its generation), what the server's budget and a store
//! hold of it, and the transitions between those states. Every change of state goes through
//! the methods here, under the session's one lock; the driver, the server, the client and the
//! [`Peer`](crate::Peer) handles only call them.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use crate::clock::wall_clock_us;
use crate::decode::{Codec, Receiving};
use crate::error::EndReason;
use crate::output::{Attempt, Output};
use crate::proto::{
    Connection, ConnectionError, Message, Role, Seq, Session, SessionId, SessionRecord,
};
use crate::store::{Change, SessionStore, StoreKey};
use crate::transform::Chain;

/// Where the session lives now.
#[derive(Debug)]
pub(crate) enum Link {
    /// Carried by a connection (its driver is running).
    Attached(Box<Connection>),
    /// Between connections.
    Detached(Box<Session>),
    /// Over.
    Ended,
}

/// The final state of an ended session.
#[derive(Debug)]
pub(crate) struct Ending {
    pub(crate) reason: EndReason,
    /// Every own message below this was acknowledged.
    pub(crate) acked: Seq,
    /// Handed back to the application once.
    pub(crate) unacknowledged: Option<Vec<Message>>,
    /// Every message ever sent was acknowledged before the end.
    pub(crate) all_acknowledged: bool,
}

#[derive(Debug)]
pub(crate) struct PeerState {
    pub(crate) link: Link,
    /// Bumped on every attach; a driver whose generation is stale stops.
    pub(crate) generation: u64,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) ending: Option<Box<Ending>>,
    pub(crate) connected: bool,
    /// A "messages waiting" notification is out and not yet answered by a read.
    pub(crate) notified: bool,
    /// `recv` calls waiting for a message now: while one waits, arrivals are not reported
    /// as "messages waiting" too (the waiting call takes them).
    pub(crate) receivers: u32,
    /// What few sessions hold (pings waited for, a client certificate, parked messages, a
    /// replaced connection's last words, store writes of an ending session):
    /// boxed, so that the many idle and lingering sessions do not carry it.
    pub(crate) rare: Option<Box<Rare>>,
    /// The server-wide budget this session's queued bytes count against (server side).
    pub(crate) budget: Option<Arc<Budget>>,
    /// What this session last added to the budget.
    pub(crate) accounted: u64,
    pub(crate) id: Option<SessionId>,
    /// The session's transforms, to give unacknowledged messages back as they were sent.
    pub(crate) codec: Option<Arc<Codec>>,
    /// The store that keeps this session across crashes, with what it holds already.
    pub(crate) durable: Option<Box<Durable>>,
    /// Why the last connection ended (reported by a coalesced `Disconnected` event).
    pub(crate) last_error: Option<Box<ConnectionError>>,
    /// Since when no connection carries the session (server side; `None` while connected).
    pub(crate) lingering_since: Option<Instant>,
    /// The address that created the session (server side: per-address limits).
    pub(crate) origin: Option<IpAddr>,
    /// Server events of this session waiting in the server's queue (one bit per kind).
    pub(crate) queued: u8,
    /// The session ended with events still queued: it holds its place among the sessions
    /// until the application has read them.
    pub(crate) held: bool,
    /// The end was reported to the owner (once).
    pub(crate) end_reported: bool,
    /// A linger timer runs for the session (server side; one at most).
    pub(crate) linger_timer: bool,
    /// The order in which the server created (or restored) the session.
    pub(crate) created: u64,
    /// Queued for `accept` once already (server side).
    pub(crate) offered: bool,
    /// The write side of the connection carrying the session (while its driver runs).
    pub(crate) output: Option<Arc<Output>>,
    /// When the driver wakes by itself next (`None`: not before something wakes it).
    pub(crate) driver_wake: Option<Instant>,
}

/// The parts of a session's state that few sessions use.
#[derive(Debug, Default)]
pub(crate) struct Rare {
    /// `ping` calls waiting for the next PONG.
    pub(crate) ping_waiters: Vec<oneshot::Sender<Duration>>,
    /// The client's verified TLS certificate (DER), with mutual TLS (server side).
    pub(crate) certificate: Option<Vec<u8>>,
    /// Messages taken from the session (so acknowledged) but not yet given to the application:
    /// the rest of a batch cut short by a body that did not decode. They come first.
    pub(crate) parked: VecDeque<Message>,
    /// Bytes a replaced connection still owes its socket (a GOAWAY), for the driver of that
    /// generation.
    pub(crate) farewell: Option<(u64, Vec<u8>)>,
    /// The store's answer to the write that recorded the session's end (`close` waits for it).
    pub(crate) end_written: Option<StoreAnswer>,
    /// A store write made during a driver turn, outside the driver's own commit: the driver
    /// waits for it too before writing.
    pub(crate) unsettled: Option<StoreAnswer>,
}

/// When a store write is on disk.
pub(crate) type StoreAnswer = oneshot::Receiver<Result<(), crate::store::StoreError>>;

/// A session's place in a [`SessionStore`] and what was committed there last.
#[derive(Debug)]
pub(crate) struct Durable {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) key: StoreKey,
    /// The record as last committed (`None`: nothing committed yet).
    pub(crate) committed: Option<SessionRecord>,
    /// A shared store (a fleet): received messages below this are visible to the
    /// application; the ones above wait for a commit, which checks that no other server has
    /// taken the session over. `None`: an unshared store, nothing held back.
    pub(crate) visible: Option<Seq>,
    /// The receive position the commit in flight confirms.
    pub(crate) confirming: Option<Seq>,
    /// Some write of the session was submitted (or it came from the store): later ones are
    /// not its creation ([`Change::Created`]).
    pub(crate) written: bool,
    /// Fleet mail in the outbox (a shared store): (mail id, sequence number), in order, while
    /// unacknowledged; each commit that stores one of these messages says so
    /// ([`Change::MailQueued`]).
    pub(crate) mail: std::collections::VecDeque<(i64, Seq)>,
}

impl Durable {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        key: StoreKey,
        committed: Option<SessionRecord>,
    ) -> Self {
        let visible = store.shared().then_some(Seq(0));
        let written = committed.is_some();
        Durable {
            store,
            key,
            committed,
            visible,
            confirming: None,
            written,
            mail: std::collections::VecDeque::new(),
        }
    }
}

impl PeerState {
    /// A connection carries the session, past its handshake and not closing.
    pub(crate) fn is_open(&self) -> bool {
        matches!(&self.link, Link::Attached(c) if c.is_established() && !c.is_closed())
    }

    /// The current connection's output, if handles may write to it and read from it from
    /// their own tasks: plain TCP, no store (whose commits come first) and no store write
    /// outstanding.
    pub(crate) fn direct_output(&self) -> Option<&Arc<Output>> {
        self.output.as_ref().filter(|o| {
            o.direct
                && o.generation == self.generation
                && self.durable.is_none()
                && self.rare.as_ref().is_none_or(|r| r.unsettled.is_none())
        })
    }

    pub(crate) fn session(&self) -> Option<&Session> {
        match &self.link {
            Link::Attached(c) => c.session(),
            Link::Detached(s) => Some(s),
            Link::Ended => None,
        }
    }

    pub(crate) fn session_mut(&mut self) -> Option<&mut Session> {
        match &mut self.link {
            Link::Attached(c) => c.session_mut(),
            Link::Detached(s) => Some(s),
            Link::Ended => None,
        }
    }

    /// Puts a new connection in charge of the session and returns its generation: a driver
    /// whose generation is no longer current stops.
    pub(crate) fn attach(&mut self, conn: Connection, addr: Option<SocketAddr>) -> u64 {
        self.link = Link::Attached(Box::new(conn));
        self.generation += 1;
        self.addr = addr;
        self.lingering_since = None;
        self.generation
    }

    /// The handshake finished: a connection carries the session and messages flow (the
    /// server's sessions are established when they are attached; a client's when the
    /// WELCOME arrives).
    pub(crate) fn established(&mut self, id: SessionId, certificate: Option<&[u8]>) {
        self.id = Some(id);
        self.connected = true;
        if let Some(c) = certificate {
            self.rare().certificate = Some(c.to_vec());
        }
    }

    /// The rarely used part of the state, created on first use.
    pub(crate) fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// The client certificate the session was created under (mutual TLS).
    pub(crate) fn certificate(&self) -> Option<&[u8]> {
        self.rare.as_ref()?.certificate.as_deref()
    }

    /// Messages parked ahead of the inbox.
    pub(crate) fn parked_len(&self) -> usize {
        self.rare.as_ref().map_or(0, |r| r.parked.len())
    }

    /// The first parked message, if any.
    pub(crate) fn pop_parked(&mut self) -> Option<Message> {
        self.rare.as_mut()?.parked.pop_front()
    }

    /// Parks a message taken from the session ahead of the rest.
    pub(crate) fn park_front(&mut self, m: Message) {
        self.rare().parked.push_front(m);
    }

    /// Messages the application can take now: parked ones and the inbox's.
    pub(crate) fn waiting_messages(&self) -> usize {
        let limit = self.visible_limit();
        self.parked_len() + self.session().map_or(0, |s| s.inbox_len_below(limit))
    }

    /// Received messages at or above this are held back from the application until a commit
    /// confirms this server still owns the session (a shared store, PROTOCOL.md §13).
    pub(crate) fn visible_limit(&self) -> Seq {
        self.durable
            .as_ref()
            .and_then(|d| d.visible)
            .unwrap_or(Seq(u64::MAX))
    }

    /// After a successful commit: what it confirmed becomes visible to the application.
    pub(crate) fn confirm_visible(&mut self) {
        if let Some(d) = self.durable.as_mut()
            && let (Some(visible), Some(to)) = (d.visible, d.confirming.take())
        {
            d.visible = Some(visible.max(to));
        }
    }

    fn clear_ping_waiters(&mut self) {
        if let Some(r) = &mut self.rare {
            r.ping_waiters.clear();
        }
    }

    /// The carrying connection ended and the session survives it: it waits, detached, for
    /// the next connection.
    pub(crate) fn detach(&mut self, error: ConnectionError, now: Instant) {
        if let Link::Attached(conn) = &mut self.link
            && let Some(mut s) = conn.take_session()
        {
            // A lingering session keeps no empty queues.
            s.release_buffers();
            self.link = Link::Detached(Box::new(s));
        }
        self.connected = false;
        self.clear_ping_waiters();
        self.last_error = Some(Box::new(error));
        self.lingering_since = Some(now);
    }

    /// Takes the session for a resume on a new connection (server side, §4.4 rule B): from
    /// between connections, or from the connection carrying it, whose last words (GOAWAY
    /// SessionTakenOver) its driver writes. `None`: the session has ended (or is ending on
    /// its connection right now; that driver reports it).
    pub(crate) fn take_for_resume(&mut self, now: Instant) -> Option<Session> {
        let old_generation = self.generation;
        match std::mem::replace(&mut self.link, Link::Ended) {
            Link::Attached(mut old) => match old.take_session() {
                Some(s) => {
                    let mut bytes = Vec::new();
                    old.poll_transmit(now, &mut bytes);
                    self.rare().farewell = Some((old_generation, bytes));
                    Some(s)
                }
                None => {
                    self.link = Link::Attached(old);
                    None
                }
            },
            Link::Detached(s) => Some(*s),
            Link::Ended => None,
        }
    }

    /// Gives a session back after a resume that did not go through.
    pub(crate) fn put_back(&mut self, session: Box<Session>) {
        self.link = Link::Detached(session);
    }

    /// Ends the session here, without a connection's help (expired, kicked or closed while
    /// detached, given up, abandoned): its unacknowledged messages are kept for the
    /// application, and a driver still running for it stops. False if it had ended already.
    pub(crate) fn end_here(&mut self, reason: EndReason) -> bool {
        if self.ending.is_some() {
            return false;
        }
        let (acked, unacked) = match self.session_mut() {
            Some(s) => (s.acked(), s.take_unacknowledged()),
            None => (Seq(u64::MAX), Vec::new()),
        };
        self.end(reason, unacked, acked);
        self.generation += 1;
        true
    }

    /// The messages an ended session handed back (a copy; they stay until taken).
    pub(crate) fn unacknowledged(&self) -> Vec<Message> {
        self.ending
            .as_ref()
            .and_then(|e| e.unacknowledged.clone())
            .unwrap_or_default()
    }

    pub(crate) fn acked(&self) -> Option<Seq> {
        match (&self.ending, self.session()) {
            (Some(e), _) => Some(e.acked),
            (None, Some(s)) => Some(s.acked()),
            (None, None) => None,
        }
    }

    /// Brings the server-wide budget up to date with this session's queued bytes (inbox and
    /// outbox). Called after every change made under the lock.
    pub(crate) fn account(&mut self) {
        let Some(budget) = self.budget.clone() else {
            return;
        };
        let now = match (&self.link, self.session()) {
            // An ended session's messages handed back, while its events wait to be read.
            (Link::Ended, _) | (_, None) if self.held => self
                .ending
                .as_ref()
                .and_then(|e| e.unacknowledged.as_ref())
                .map_or(0, |u| u.iter().map(|m| m.body.len() as u64).sum()),
            (Link::Ended, _) | (_, None) => 0,
            (Link::Attached(c), Some(s)) => {
                s.inbox_bytes() + s.outbox_bytes() + c.reassembly_bytes() + s.held_partial_bytes()
            }
            // A detached version-2 session keeps a message received in part (§5.5).
            (_, Some(s)) => s.inbox_bytes() + s.outbox_bytes() + s.held_partial_bytes(),
        };
        if now >= self.accounted {
            budget
                .used
                .fetch_add(now - self.accounted, Ordering::Relaxed);
        } else {
            budget
                .used
                .fetch_sub(self.accounted - now, Ordering::Relaxed);
            budget.freed.notify_waiters();
        }
        self.accounted = now;
    }

    /// Submits what the store lacks of this session now, under the session's lock (so that
    /// commits reach the store in the order of the changes); the answer says when it is on
    /// disk. `None`: nothing changed, or no store. `lingering`: the session has just lost its
    /// connection (the record is written even if unchanged, noting the time its linger counts
    /// from, also across a restart).
    pub(crate) fn durable_commit(&mut self, lingering: bool) -> Option<StoreAnswer> {
        // No store: nothing to build (the common, in-memory case).
        self.durable.as_ref()?;
        let record = self.session()?.record();
        let received = self.session()?.received();
        let durable = self.durable.as_mut()?;
        let stored_next = durable
            .committed
            .as_ref()
            .map_or(record.acked, |c| c.next_seq.max(record.acked));
        // A shared store: messages received since the last commit wait for one (even with
        // nothing else to write) that proves the session is still this server's.
        let confirm = durable.visible.is_some_and(|v| received > v);
        if confirm {
            durable.confirming = Some(received);
        }
        if !lingering && !confirm && durable.committed.as_ref() == Some(&record) {
            return None;
        }
        // Only the acknowledged position moved, with messages still unacknowledged: nothing
        // this turn writes depends on it (a restarted sender's outbox starts at the stored
        // `acked`, and the resume handshake acknowledges again what the receiver's stored
        // position covers), so an unshared store learns it with the next commit that has
        // something to store, or the one that finds everything acknowledged. The sender's
        // turns then wait for no commit of their own while ACKs stream in.
        if !lingering
            && !confirm
            && !durable.store.shared()
            && record.acked < record.next_seq
            && durable
                .committed
                .as_ref()
                .is_some_and(|c| only_acked_moved(c, &record))
        {
            return None;
        }
        let new_messages: Vec<Message> =
            self.session()?.outbox_from(stored_next).cloned().collect();
        let durable = self.durable.as_mut()?;
        durable.committed = Some(record.clone());
        while durable.mail.front().is_some_and(|(_, s)| *s < record.acked) {
            durable.mail.pop_front();
        }
        let mail: Vec<(i64, Seq)> = durable
            .mail
            .iter()
            .filter(|(_, s)| *s >= stored_next)
            .copied()
            .collect();
        let key = durable.key;
        let mut changes = Vec::with_capacity(3);
        if !std::mem::replace(&mut durable.written, true) {
            changes.push(Change::Created { key });
        }
        changes.push(Change::Put {
            key,
            record,
            new_messages,
            last_seen_ms: wall_clock_us() / 1_000,
            ended: false,
            lingering,
        });
        if !mail.is_empty() {
            changes.push(Change::MailQueued { key, mail });
        }
        Some(durable.store.submit(changes))
    }

    /// Tells the store the session ended: a server forgets it; a client keeps only where its
    /// next session's sequence numbers start (`resume_at`), so that what was ever queued is
    /// still known. Not waited for.
    fn durable_end(&mut self, resume_at: Option<Seq>) {
        let Some(durable) = self.durable.take() else {
            return;
        };
        let change = match (&durable.committed, resume_at) {
            (Some(c), resume_at) if c.role == Role::Client => {
                let next = resume_at.unwrap_or(c.next_seq);
                Change::Put {
                    key: durable.key,
                    record: SessionRecord {
                        id: None,
                        token: None,
                        issued: None,
                        next_seq: next,
                        acked: next,
                        delivered: Seq(0),
                        ..c.clone()
                    },
                    new_messages: Vec::new(),
                    last_seen_ms: wall_clock_us() / 1_000,
                    ended: true,
                    lingering: false,
                }
            }
            _ => Change::Delete { key: durable.key },
        };
        let mut changes = vec![change];
        // A shared store: the final acknowledged position goes with the end, so that fleet
        // mail acknowledged at the last moment is reported delivered, not lost.
        if let (Some(c), true) = (&durable.committed, durable.store.shared())
            && c.role == Role::Server
        {
            let acked = resume_at.map_or(c.next_seq, |r| r.min(c.next_seq));
            changes.insert(
                0,
                Change::Put {
                    key: durable.key,
                    record: SessionRecord { acked, ..c.clone() },
                    new_messages: Vec::new(),
                    last_seen_ms: wall_clock_us() / 1_000,
                    ended: false,
                    lingering: false,
                },
            );
        }
        let rare = self.rare();
        rare.end_written = Some(durable.store.submit(changes));
        // A barrier behind it (the store commits in order): the driver waits for it before
        // writing the turn's last frames (a CLOSE reply must not outrun the recorded end).
        rare.unsettled = Some(durable.store.submit(Vec::new()));
    }

    /// Ends the session: everything unacknowledged is kept for the application.
    pub(crate) fn end(&mut self, reason: EndReason, mut unacknowledged: Vec<Message>, acked: Seq) {
        if matches!(reason, EndReason::Moved) {
            // Another server owns the session now and the store holds its messages: the new
            // owner delivers them. Handing them back here would invite sending them twice.
            unacknowledged.clear();
            self.durable = None;
        } else if matches!(reason, EndReason::ClientDropped | EndReason::Shutdown) {
            // The process stops carrying the session, the session itself goes on: a store
            // keeps it for the next run to resume.
            self.durable = None;
        } else {
            self.durable_end(unacknowledged.first().map(|m| m.seq));
        }
        if let Some(codec) = &self.codec {
            // Our own encodings: they decode (a failure keeps the body as it went out).
            for m in &mut unacknowledged {
                if let Ok(body) = codec.chain.decode(m.body.clone(), usize::MAX) {
                    m.body = body;
                }
            }
        }
        self.link = Link::Ended;
        self.connected = false;
        self.clear_ping_waiters();
        self.account();
        if self.ending.is_none() {
            self.ending = Some(Box::new(Ending {
                reason,
                acked,
                all_acknowledged: unacknowledged.is_empty(),
                unacknowledged: Some(unacknowledged),
            }));
        }
    }
}

#[derive(Debug)]
pub(crate) struct PeerShared {
    pub(crate) state: Mutex<PeerState>,
    pub(crate) role: Role,
    pub(crate) name: Option<Box<str>>,
    /// Wakes the driver: something to transmit.
    pub(crate) driver: Notify,
    /// Wakes receivers: messages arrived, or the session ended.
    pub(crate) readable: Notify,
    /// Wakes senders and receipts: acknowledgements, room in the outbox, state changes.
    pub(crate) progress: Notify,
    /// The server that keeps the session (server side): told when it ends.
    pub(crate) owner: OnceLock<Weak<dyn Owner>>,
    /// The message transforms, if any (read without the lock on the hot path).
    pub(crate) codec: Option<Arc<Codec>>,
    /// How long `close` waits for the peer's CLOSE.
    pub(crate) close_timeout: Duration,
    /// How long a `recv` that finds nothing polls before it waits (`recv_spin`), in
    /// microseconds (four bytes: the struct is per session).
    pub(crate) recv_spin_us: u32,
    /// The wall clock (µs since the Unix epoch) at the driver's latest turn: the timestamp
    /// of a message queued behind others, which saves a clock read per message of a
    /// streaming sender (0: no driver has run).
    pub(crate) turn_clock_us: AtomicU64,
    /// Who the connection's readiness wakes: the driver, or a waiting `recv`
    /// ([`crate::input`]).
    pub(crate) read_route: AtomicU8,
}

/// What keeps a session (a server): it forgets the session and reports its end, once, by
/// whatever path the session ended.
pub(crate) trait Owner: Send + Sync + std::fmt::Debug {
    fn session_ended(&self, shared: &Arc<PeerShared>);
    /// Messages wait and the application was not told (a `recv` that was waiting for them
    /// was dropped): report it as the driver would have.
    fn messages_waiting(&self, shared: &Arc<PeerShared>);
}

impl PeerShared {
    pub(crate) fn new(
        role: Role,
        name: Option<String>,
        link: Link,
        chain: Chain,
        receiving: &Receiving,
    ) -> Arc<Self> {
        let session = match &link {
            Link::Attached(c) => c.session(),
            Link::Detached(s) => Some(&**s),
            Link::Ended => None,
        };
        let id = session.and_then(Session::id);
        let max_recv = session.map_or(0, Session::max_recv_len);
        let codec = Codec::new(chain, max_recv, receiving).map(Arc::new);
        // A session created on its first connection starts at generation 1.
        let generation = u64::from(matches!(link, Link::Attached(_)));
        Arc::new(PeerShared {
            state: Mutex::new(PeerState {
                link,
                generation,
                addr: None,
                ending: None,
                connected: false,
                notified: false,
                receivers: 0,
                rare: None,
                budget: None,
                accounted: 0,
                id,
                codec: codec.clone(),
                durable: None,
                last_error: None,
                lingering_since: None,
                origin: None,
                queued: 0,
                held: false,
                end_reported: false,
                linger_timer: false,
                created: 0,
                offered: false,
                output: None,
                driver_wake: None,
            }),
            role,
            name: name.map(String::into_boxed_str),
            driver: Notify::new(),
            readable: Notify::new(),
            progress: Notify::new(),
            owner: OnceLock::new(),
            codec,
            close_timeout: receiving.close_timeout,
            recv_spin_us: u32::try_from(receiving.recv_spin.as_micros()).unwrap_or(u32::MAX),
            turn_clock_us: AtomicU64::new(0),
            read_route: AtomicU8::new(crate::input::DRIVER),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, PeerState> {
        // A panic while holding the lock would be a bug in this crate; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a handle changed the session: puts what the connection now has to send on the
    /// wire from this task when the connection is idle, and wakes the driver only if it must
    /// act (see [`crate::output`]).
    ///
    /// `direct` false: the change is for the driver to send (a message queued behind others:
    /// the driver batches them), and it is woken. Otherwise (a message queued on an idle
    /// connection, messages taken) this task encodes and writes what is due, if the
    /// connection's output is free and idle, its transport plain and the session without a
    /// store; the driver is woken when it cannot finish here or must act sooner than it
    /// planned (an ACK timer armed).
    pub(crate) fn transmit(&self, mut st: MutexGuard<'_, PeerState>, direct: bool) {
        let Some(output) = st.direct_output().filter(|_| direct).cloned() else {
            drop(st);
            self.driver.notify_one();
            return;
        };
        // Busy: the driver (or another handle) is writing and sends this after.
        let mut out = match output.try_lock() {
            Some(out) if out.is_idle() && !out.failed => out,
            _ => {
                drop(st);
                self.driver.notify_one();
                return;
            }
        };
        let wake_at = st.driver_wake;
        let Link::Attached(conn) = &mut st.link else {
            drop(out);
            drop(st);
            self.driver.notify_one();
            return;
        };
        if !conn.is_established() {
            drop(out);
            drop(st);
            self.driver.notify_one();
            return;
        }
        let before = crate::metered::before(conn);
        let produced = out.transmit(conn, crate::clock::now());
        crate::metered::after_output(conn, before, produced as u64);
        let driver_needed = conn.has_data_to_send()
            || conn
                .poll_timeout()
                .is_some_and(|d| wake_at.is_none_or(|w| d < w));
        drop(st);
        let blocked = !out.is_idle() && matches!(out.write_now(), Attempt::Blocked);
        drop(out);
        if driver_needed || blocked {
            self.driver.notify_one();
        }
    }

    /// Wakes everything waiting on this session.
    pub(crate) fn wake_all(&self) {
        self.readable.notify_waiters();
        self.progress.notify_waiters();
        // Every driver waiting (an old one of a replaced connection too) looks again; the
        // stored permit covers a driver that is busy right now.
        self.driver.notify_waiters();
        self.driver.notify_one();
    }

    /// After a change that may have ended the session: wakes every waiter and, once the
    /// session has ended, tells its owner (once).
    pub(crate) fn settle(self: &Arc<Self>) {
        self.wake_all();
        let report = {
            let mut st = self.lock();
            let report = st.ending.is_some() && !st.end_reported;
            st.end_reported |= report;
            report
        };
        if report && let Some(owner) = self.owner.get().and_then(Weak::upgrade) {
            owner.session_ended(self);
        }
    }

    /// Ends a session that nothing will carry any more (its client or server was dropped).
    pub(crate) fn abandon(self: &Arc<Self>, reason: EndReason) {
        self.lock().end_here(reason);
        self.settle();
    }
}

/// A server's budget for queued message bytes across all its sessions.
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) used: AtomicU64,
    pub(crate) limit: u64,
    /// Wakes senders waiting for budget when any session frees some.
    pub(crate) freed: Notify,
}

/// `now` differs from `committed` in the acknowledged position at most.
fn only_acked_moved(committed: &SessionRecord, now: &SessionRecord) -> bool {
    // Every field named: a new one must be decided on here.
    let SessionRecord {
        role,
        id,
        token,
        issued,
        name,
        transforms,
        next_seq,
        acked: _,
        delivered,
    } = now;
    committed.role == *role
        && committed.id == *id
        && committed.token == *token
        && committed.issued == *issued
        && committed.name == *name
        && committed.transforms == *transforms
        && committed.next_seq == *next_seq
        && committed.delivered == *delivered
}

#[cfg(test)]
mod size_tests {
    /// A lingering session is its shared state and its boxed core session: both stay small, so
    /// that 100,000 lingering sessions take under 1 KiB each (rare parts are boxed).
    #[test]
    fn a_lingering_session_holds_little() {
        use std::mem::size_of;
        let shared = size_of::<super::PeerShared>();
        let session = size_of::<crate::proto::Session>();
        assert!(shared <= 400, "PeerShared is {shared} bytes");
        assert!(session <= 400, "Session is {session} bytes");
    }
}
