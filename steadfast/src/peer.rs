//! The handle to one session, on either side: send with receipts, receive, stats.
//!
//! A [`Peer`] is a cheap clone of an `Arc` around the session's state. The state holds the
//! protocol core's [`Connection`] while a connection carries the session, or the bare
//! [`Session`] between connections (sends queue up, within the bounds, and go out after the
//! resume). The connection's driver task and every handle share it under one short-held lock.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};

use crate::error::{ReceiptError, RecvError, SendError};
use crate::proto::{
    self, Connection, Message, Role, Seq, Session, SessionEnd, SessionId, SessionRecord,
};
use crate::store::{Change, SessionStore, StoreKey};
use crate::transform::Chain;

/// How a session ended, as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndReason {
    /// The protocol ended it (CLOSE, a final REJECT, a protocol violation).
    #[error(transparent)]
    Protocol(#[from] SessionEnd),
    /// The server kept the disconnected session for its linger time; nobody resumed it.
    #[error("session expired after lingering {0:?} without a connection")]
    Expired(Duration),
    /// The client gave up reconnecting (attempt limit reached).
    #[error("gave up reconnecting after {0} attempts")]
    GaveUp(u32),
    /// The server shut down (or was dropped).
    #[error("server shut down")]
    Shutdown,
    /// The client was dropped; nothing carries the session any more.
    #[error("client dropped")]
    ClientDropped,
}

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
    pub(crate) ending: Option<Ending>,
    pub(crate) ping_waiters: Vec<oneshot::Sender<Duration>>,
    pub(crate) connected: bool,
    /// A "messages waiting" notification is out and not yet answered by a read.
    pub(crate) notified: bool,
    /// Bytes a replaced connection still owes its socket (a GOAWAY), for the driver of that
    /// generation.
    pub(crate) farewell: Option<(u64, Vec<u8>)>,
    /// The client's verified TLS certificate (DER), with mutual TLS (server side).
    pub(crate) certificate: Option<Vec<u8>>,
    /// The server-wide budget this session's queued bytes count against (server side).
    pub(crate) budget: Option<Arc<Budget>>,
    /// What this session last added to the budget.
    pub(crate) accounted: u64,
    pub(crate) id: Option<SessionId>,
    /// Messages taken from the session (so acknowledged) but not yet given to the application:
    /// the rest of a batch cut short by a body that did not decode. They come first.
    pub(crate) parked: VecDeque<Message>,
    /// The session's transforms, to give unacknowledged messages back as they were sent.
    pub(crate) codec: Option<Codec>,
    /// The store that keeps this session across crashes, with what it holds already.
    pub(crate) durable: Option<Durable>,
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
}

impl Durable {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        key: StoreKey,
        committed: Option<SessionRecord>,
    ) -> Self {
        Durable {
            store,
            key,
            committed,
        }
    }
}

/// A session's message transform chain and the receiver's bound on decoded bodies.
#[derive(Clone, Debug)]
pub(crate) struct Codec {
    pub(crate) chain: Chain,
    pub(crate) max_recv: usize,
}

impl Codec {
    /// The codec of a session with `chain`, `None` when there is nothing to apply.
    pub(crate) fn new(chain: Chain, max_recv: usize) -> Option<Codec> {
        (!chain.is_empty()).then_some(Codec { chain, max_recv })
    }

    fn decode(&self, mut m: Message) -> Result<Message, RecvError> {
        match self.chain.decode(m.body, self.max_recv) {
            Ok(body) => {
                m.body = body;
                Ok(m)
            }
            Err(error) => Err(RecvError::Transform { seq: m.seq, error }),
        }
    }
}

impl PeerState {
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

    fn acked(&self) -> Option<Seq> {
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
            (Link::Ended, _) | (_, None) => 0,
            (_, Some(s)) => s.inbox_bytes() + s.outbox_bytes(),
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
        let durable = self.durable.as_ref()?;
        let stored_next = durable
            .committed
            .as_ref()
            .map_or(record.acked, |c| c.next_seq.max(record.acked));
        if !lingering && durable.committed.as_ref() == Some(&record) {
            return None;
        }
        let new_messages: Vec<Message> =
            self.session()?.outbox_from(stored_next).cloned().collect();
        let durable = self.durable.as_mut()?;
        durable.committed = Some(record.clone());
        Some(durable.store.submit(vec![Change::Put {
            key: durable.key,
            record,
            new_messages,
            last_seen_ms: wall_clock_us() / 1_000,
            ended: false,
            lingering,
        }]))
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
        self.end_written = Some(durable.store.submit(vec![change]));
        // A barrier behind it (the store commits in order): the driver waits for it before
        // writing the turn's last frames (a CLOSE reply must not outrun the recorded end).
        self.unsettled = Some(durable.store.submit(Vec::new()));
    }

    /// Ends the session: everything unacknowledged is kept for the application.
    pub(crate) fn end(&mut self, reason: EndReason, mut unacknowledged: Vec<Message>, acked: Seq) {
        if matches!(reason, EndReason::ClientDropped | EndReason::Shutdown) {
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
        self.ping_waiters.clear();
        self.account();
        if self.ending.is_none() {
            self.ending = Some(Ending {
                reason,
                acked,
                all_acknowledged: unacknowledged.is_empty(),
                unacknowledged: Some(unacknowledged),
            });
        }
    }
}

#[derive(Debug)]
pub(crate) struct PeerShared {
    pub(crate) state: Mutex<PeerState>,
    pub(crate) role: Role,
    pub(crate) name: Option<String>,
    /// Wakes the driver: something to transmit.
    pub(crate) driver: Notify,
    /// Wakes receivers: messages arrived, or the session ended.
    pub(crate) readable: Notify,
    /// Wakes senders and receipts: acknowledgements, room in the outbox, state changes.
    pub(crate) progress: Notify,
    /// Server side: removes the session from the server's registry (set by the server).
    pub(crate) forget: std::sync::OnceLock<ForgetHook>,
    /// The message transforms, if any (read without the lock on the hot path).
    pub(crate) codec: Option<Codec>,
}

/// What a [`ForgetHook`] runs.
type ForgetFn = dyn Fn(&Arc<PeerShared>) + Send + Sync;

/// A server's way to drop a session from its registry when the application ends it.
pub(crate) struct ForgetHook(pub(crate) Box<ForgetFn>);

impl std::fmt::Debug for ForgetHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForgetHook")
    }
}

impl PeerShared {
    pub(crate) fn new(role: Role, name: Option<String>, link: Link, chain: Chain) -> Arc<Self> {
        let session = match &link {
            Link::Attached(c) => c.session(),
            Link::Detached(s) => Some(&**s),
            Link::Ended => None,
        };
        let id = session.and_then(Session::id);
        let max_recv = session.map_or(0, Session::max_recv_len);
        let codec = Codec::new(chain, max_recv);
        Arc::new(PeerShared {
            state: Mutex::new(PeerState {
                link,
                generation: 0,
                addr: None,
                ending: None,
                ping_waiters: Vec::new(),
                connected: false,
                notified: false,
                farewell: None,
                certificate: None,
                budget: None,
                accounted: 0,
                id,
                parked: VecDeque::new(),
                codec: codec.clone(),
                durable: None,
                end_written: None,
                unsettled: None,
            }),
            role,
            name,
            driver: Notify::new(),
            readable: Notify::new(),
            progress: Notify::new(),
            forget: std::sync::OnceLock::new(),
            codec,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, PeerState> {
        // A panic while holding the lock would be a bug in this crate; the state stays usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
}

/// A server's budget for queued message bytes across all its sessions.
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) used: AtomicU64,
    pub(crate) limit: u64,
    /// Wakes senders waiting for budget when any session frees some.
    pub(crate) freed: Notify,
}

/// A handle to one session: the client's view of the server, or the server's view of one
/// client. Cheap to clone; dropping a handle does not lose queued messages.
#[derive(Clone, Debug)]
pub struct Peer {
    pub(crate) shared: Arc<PeerShared>,
}

/// Counters and gauges of one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Messages queued by this side.
    pub queued: u64,
    /// Messages transmitted for the first time.
    pub sent: u64,
    /// Messages acknowledged by the peer.
    pub acknowledged: u64,
    /// Messages transmitted again after a reconnect.
    pub retransmitted: u64,
    /// Messages received from the peer.
    pub received: u64,
    /// Messages not yet acknowledged (queued or in flight).
    pub in_flight: usize,
    /// Messages received and waiting for `recv`.
    pub waiting: usize,
    /// Connections that carried the session.
    pub connections: u64,
    /// Latest round-trip time.
    pub rtt: Option<Duration>,
}

impl Peer {
    /// The session id (assigned by the server; `None` on a client before its first WELCOME).
    pub fn id(&self) -> Option<SessionId> {
        self.shared.lock().id
    }

    /// The name the client gave in its HELLO.
    pub fn name(&self) -> Option<&str> {
        self.shared.name.as_deref()
    }

    /// The remote address of the current or last connection.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.shared.lock().addr
    }

    /// The client's verified TLS certificate (DER) on a server with mutual TLS: the
    /// authenticated identity.
    pub fn certificate(&self) -> Option<Vec<u8>> {
        self.shared.lock().certificate.clone()
    }

    /// Whether a connection carries the session right now.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.shared.lock().ending.is_some()
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.shared.lock().ending.as_ref().map(|e| e.reason.clone())
    }

    /// Once the session has ended: a copy of the messages this side sent that the peer never
    /// acknowledged, in order (cheap: bodies are shared). The events that report a session's
    /// end carry the same list; it stays here until taken, so a dropped event loses nothing.
    pub fn unacknowledged(&self) -> Vec<Message> {
        self.shared
            .lock()
            .ending
            .as_ref()
            .and_then(|e| e.unacknowledged.clone())
            .unwrap_or_default()
    }

    /// Once the session has ended: the messages this side sent that the peer never
    /// acknowledged, in order (given out once; later calls return an empty list).
    pub fn take_unacknowledged(&self) -> Vec<Message> {
        self.shared
            .lock()
            .ending
            .as_mut()
            .and_then(|e| e.unacknowledged.take())
            .unwrap_or_default()
    }

    /// Sends a message, waiting for room in the outbox if it is full (backpressure).
    ///
    /// The returned [`Receipt`] resolves when the peer's application has taken the message.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes queues nothing: the message is queued exactly
    /// when the future returns `Ok`.
    ///
    /// # Errors
    /// [`SendError::TooLarge`], or [`SendError::Closed`] once the session is closing or over.
    pub async fn send(&self, body: impl Into<Bytes>) -> Result<Receipt, SendError> {
        let (len, body) = self.encode(body.into())?;
        // Room now (the common case): one lock, no waiting machinery.
        let mut body = match self.queue(len, body) {
            Ok(receipt) => return Ok(receipt),
            Err(Refused::Full(body)) => Some(body),
            Err(Refused::Error(e)) => return Err(e),
        };
        self.when_room(|| {
            let b = body.take()?;
            match self.queue(len, b) {
                Ok(receipt) => Some(Ok(receipt)),
                Err(Refused::Full(b)) => {
                    body = Some(b);
                    None
                }
                Err(Refused::Error(e)) => Some(Err(e)),
            }
        })
        .await
    }

    /// Sends every body in order, waiting for room as [`Peer::send`] does, and returns the
    /// receipt of the last one (receipts are cumulative: it resolves once the peer's
    /// application has taken them all). `None` for an empty input.
    ///
    /// Faster than a `send` per message: the session's lock, the clock and the driver's
    /// wake-up are taken once per run of messages that fit, not once per message.
    ///
    /// # Cancel safety
    /// Dropping the future may leave a prefix of the bodies queued (they are sent and
    /// acknowledged as usual); [`Peer::stats`] counts them in `queued`.
    ///
    /// # Errors
    /// As [`Peer::send`], for the first body that cannot be queued; the ones before it are.
    pub async fn send_all<I, B>(&self, bodies: I) -> Result<Option<Receipt>, SendError>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let mut bodies = bodies.into_iter();
        if self.shared.codec.is_some() {
            // Transforms run outside the lock, one message at a time.
            let mut last = None;
            for b in bodies {
                last = Some(self.send(b).await?);
            }
            return Ok(last);
        }
        let mut last: Option<Seq> = None;
        let mut held: Option<Bytes> = None;
        let mut run = || {
            let mut queued = 0usize;
            let mut outcome = None;
            {
                let mut st = self.shared.lock();
                let ts = wall_clock_us();
                while let Some(body) = held.take().or_else(|| bodies.next().map(Into::into)) {
                    match queue_locked(&mut st, body.len(), body, ts) {
                        Ok(seq) => {
                            queued += 1;
                            last = Some(seq);
                        }
                        Err(Refused::Full(body)) => {
                            held = Some(body);
                            break;
                        }
                        Err(Refused::Error(e)) => {
                            outcome = Some(Err(e));
                            break;
                        }
                    }
                }
                st.account();
            }
            if queued > 0 {
                self.shared.driver.notify_one();
            }
            if outcome.is_none() && held.is_none() {
                outcome = Some(Ok(last.map(|seq| Receipt {
                    shared: self.shared.clone(),
                    seq,
                })));
            }
            outcome
        };
        match run() {
            Some(done) => done,
            None => self.when_room(run).await,
        }
    }

    /// Calls `attempt` until it returns `Some`, waiting between calls until room may have
    /// appeared: an acknowledgement or state change on this session, or (on a server) budget
    /// freed by any session. The wake-ups are armed before each attempt, so none is missed.
    async fn when_room<T>(&self, mut attempt: impl FnMut() -> Option<T>) -> T {
        let budget = self.shared.lock().budget.clone();
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Room may also come from another session freeing server-wide budget.
            let mut freed = budget.as_ref().map(|b| Box::pin(b.freed.notified()));
            if let Some(f) = freed.as_mut() {
                f.as_mut().enable();
            }
            if let Some(done) = attempt() {
                return done;
            }
            let freed = async {
                match freed.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut notified => {}
                () = freed => {}
            }
        }
    }

    /// Sends a message if the outbox has room now.
    ///
    /// # Errors
    /// [`SendError::Full`] when the outbox is at its bound (nothing was queued), otherwise as
    /// [`Peer::send`].
    pub fn try_send(&self, body: impl Into<Bytes>) -> Result<Receipt, SendError> {
        let (len, body) = self.encode(body.into())?;
        self.try_send_encoded(len, body)
    }

    /// Applies the session's transforms: the body's own length and what goes out.
    fn encode(&self, body: Bytes) -> Result<(usize, Bytes), SendError> {
        let len = body.len();
        match &self.shared.codec {
            None => Ok((len, body)),
            Some(codec) => Ok((len, codec.chain.encode(body)?)),
        }
    }

    /// Sends a message if the outbox has room now (see [`Peer::try_send`]).
    fn try_send_encoded(&self, len: usize, body: Bytes) -> Result<Receipt, SendError> {
        self.queue(len, body).map_err(|r| match r {
            Refused::Full(_) => SendError::Full,
            Refused::Error(e) => e,
        })
    }

    /// Queues an encoded body whose unencoded length was `len`; gives it back when full.
    fn queue(&self, len: usize, body: Bytes) -> Result<Receipt, Refused> {
        let seq = {
            let mut st = self.shared.lock();
            let seq = queue_locked(&mut st, len, body, wall_clock_us())?;
            st.account();
            seq
        };
        self.shared.driver.notify_one();
        Ok(Receipt {
            shared: self.shared.clone(),
            seq,
        })
    }

    /// Receives the next message, waiting for one. Taking it acknowledges it to the sender.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken only when the future returns it.
    ///
    /// # Errors
    /// [`RecvError::Ended`] once the session is over and nothing is left to read.
    pub async fn recv(&self) -> Result<Message, RecvError> {
        loop {
            let notified = self.shared.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(m) = self.try_recv()? {
                return Ok(m);
            }
            if self.is_ended() {
                return Err(RecvError::Ended);
            }
            notified.await;
        }
    }

    /// Takes the next waiting message, if any (`Ok(None)`: nothing waiting).
    ///
    /// # Errors
    /// [`RecvError::Transform`] when the next message's body does not decode through the
    /// session's transforms: that message is taken (and acknowledged); the next call goes on
    /// with the message after it.
    pub fn try_recv(&self) -> Result<Option<Message>, RecvError> {
        let m = {
            let mut st = self.shared.lock();
            st.notified = false;
            match st.parked.pop_front() {
                Some(m) => m,
                None => {
                    let Some(m) = st.session_mut().and_then(Session::recv) else {
                        return Ok(None);
                    };
                    st.account();
                    m
                }
            }
        };
        self.shared.driver.notify_one();
        match &self.shared.codec {
            None => Ok(Some(m)),
            Some(codec) => codec.decode(m).map(Some),
        }
    }

    /// Takes up to `n` waiting messages (partial read: the rest stay queued). An empty list:
    /// nothing waiting.
    ///
    /// # Errors
    /// [`RecvError::Transform`] when the first message's body does not decode (it is taken;
    /// call again for the rest). A body that fails later in the batch cuts it short: the
    /// messages before it are returned and the next call reports it.
    pub fn recv_up_to(&self, n: usize) -> Result<Vec<Message>, RecvError> {
        let mut taken = Vec::new();
        {
            let mut st = self.shared.lock();
            st.notified = false;
            while taken.len() < n {
                match st.parked.pop_front() {
                    Some(m) => taken.push(m),
                    None => break,
                }
            }
            if let Some(s) = st.session_mut() {
                while taken.len() < n {
                    match s.recv() {
                        Some(m) => taken.push(m),
                        None => break,
                    }
                }
            }
            st.account();
        }
        if !taken.is_empty() {
            self.shared.driver.notify_one();
        }
        let Some(codec) = &self.shared.codec else {
            return Ok(taken);
        };
        let mut out = Vec::with_capacity(taken.len());
        let mut rest = taken.into_iter();
        while let Some(m) = rest.next() {
            let copy = m.clone();
            match codec.decode(m) {
                Ok(m) => out.push(m),
                Err(e) => {
                    let mut st = self.shared.lock();
                    for m in rest.rev() {
                        st.parked.push_front(m);
                    }
                    if out.is_empty() {
                        return Err(e);
                    }
                    // Reported by the next call, after the good messages before it.
                    st.parked.push_front(copy);
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// With manual acknowledgement (`proto::Config::manual_ack`): acknowledges the taken
    /// message `seq` and every message taken before it, telling the sender they are
    /// processed (their receipts resolve). Returns how many were newly acknowledged (0 when
    /// `seq` was acknowledged already, has not been taken, or the mode is off).
    ///
    /// ```no_run
    /// # async fn f(peer: steadfast::Peer) -> Result<(), Box<dyn std::error::Error>> {
    /// // ClientConfig::default().protocol(steadfast::proto::Config::default().manual_ack(true))
    /// let m = peer.recv().await?;
    /// // ... process m, store it ...
    /// peer.acknowledge(m.seq);
    /// # Ok(())
    /// # }
    /// ```
    pub fn acknowledge(&self, seq: Seq) -> usize {
        let n = self
            .shared
            .lock()
            .session_mut()
            .map_or(0, |s| s.acknowledge(seq));
        if n > 0 {
            self.shared.driver.notify_one();
        }
        n
    }

    /// The sequence number the next message sent will get (`None` once the session ended).
    /// With a store, numbers continue across runs of the program: a client whose stored
    /// session starts at the default initial number 1 has queued `next_seq - 1` messages in
    /// all its runs.
    pub fn next_seq(&self) -> Option<Seq> {
        self.shared.lock().session().map(Session::next_seq)
    }

    /// Messages received and waiting.
    pub fn waiting(&self) -> usize {
        let st = self.shared.lock();
        st.parked.len() + st.session().map_or(0, Session::inbox_len)
    }

    /// Measures the round-trip time with a PING now.
    ///
    /// # Errors
    /// [`SendError::Closed`] if no connection carries the session (or it drops before the
    /// PONG).
    pub async fn ping(&self) -> Result<Duration, SendError> {
        let rx = {
            let mut st = self.shared.lock();
            let Link::Attached(conn) = &mut st.link else {
                return Err(SendError::Closed);
            };
            if !conn.is_established() {
                return Err(SendError::Closed);
            }
            conn.ping();
            let (tx, rx) = oneshot::channel();
            // Waiters whose caller gave up are dropped, so the list stays small.
            st.ping_waiters.retain(|w| !w.is_closed());
            st.ping_waiters.push(tx);
            rx
        };
        self.shared.driver.notify_one();
        rx.await.map_err(|_| SendError::Closed)
    }

    /// Counters of the session.
    pub fn stats(&self) -> PeerStats {
        let st = self.shared.lock();
        let Some(s) = st.session() else {
            return PeerStats::default();
        };
        let x = s.stats();
        PeerStats {
            queued: x.queued,
            sent: x.sent,
            acknowledged: x.acknowledged,
            retransmitted: x.retransmitted,
            received: x.received,
            in_flight: s.outbox_len(),
            waiting: s.inbox_len(),
            connections: x.connections,
            rtt: x.rtt,
        }
    }

    /// Waits until every message sent so far is acknowledged, or the session ends.
    ///
    /// # Errors
    /// [`ReceiptError::SessionLost`] if the session ended first.
    pub async fn flush(&self) -> Result<(), ReceiptError> {
        let last = {
            let st = self.shared.lock();
            match (st.session(), &st.ending) {
                (_, Some(e)) => {
                    return if e.all_acknowledged {
                        Ok(())
                    } else {
                        Err(ReceiptError::SessionLost(e.reason.clone()))
                    };
                }
                // Nothing unacknowledged (restored sessions count: their outbox came from a
                // store, not from `send`).
                (Some(s), None) if s.outbox_len() == 0 => return Ok(()),
                (Some(s), None) => Seq(s.next_seq().0 - 1),
                (None, None) => return Ok(()),
            }
        };
        Receipt {
            shared: self.shared.clone(),
            seq: last,
        }
        .await
    }

    /// Closes the session gracefully (PROTOCOL.md §7.2): a CLOSE carrying the final positions,
    /// then both sides end the session. Messages not acknowledged by then are handed back
    /// ([`Peer::take_unacknowledged`]); wait for them with [`Peer::flush`] first to lose
    /// nothing. Returns when the session has ended.
    pub async fn close(&self, reason: &str) {
        {
            let mut st = self.shared.lock();
            let now = crate::driver::now();
            match &mut st.link {
                Link::Attached(conn) => conn.close(now, proto::CloseCode::Normal, reason),
                Link::Detached(s) => {
                    // Not connected: the CLOSE goes out after the next resume; a server has no
                    // way to reach a detached client, so its session ends here.
                    if self.shared.role == Role::Server {
                        let acked = s.acked();
                        let unacked = s.take_unacknowledged();
                        st.end(
                            EndReason::Protocol(SessionEnd::Closed {
                                by_peer: false,
                                code: proto::CloseCode::Normal,
                                reason: reason.to_owned(),
                                confirmed: false,
                            }),
                            unacked,
                            acked,
                        );
                    } else if !s.is_closing() {
                        // The CLOSE goes out right after the next resume (§7.2).
                        s.closing = Some((proto::CloseCode::Normal, reason.to_owned()));
                    }
                }
                Link::Ended => {}
            }
        }
        self.shared.wake_all();
        if self.is_ended()
            && let Some(hook) = self.shared.forget.get()
        {
            (hook.0)(&self.shared);
        }
        self.ended().await;
        // With a store: return once the end is on disk (a process that exits right after
        // `close` must not leave the ended session stored as live).
        let written = self.shared.lock().end_written.take();
        if let Some(w) = written {
            let _ = w.await;
        }
    }

    /// Waits until the session has ended and returns why.
    pub async fn ended(&self) -> EndReason {
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.end_reason() {
                return r;
            }
            notified.await;
        }
    }
}

/// Resolves when the peer's application has taken the message (PROTOCOL.md §5.2).
///
/// Awaiting it is optional and costs nothing until then: receipts are derived from the
/// cumulative acknowledgement position, not stored per message.
#[derive(Debug)]
pub struct Receipt {
    shared: Arc<PeerShared>,
    seq: Seq,
}

impl Receipt {
    /// The message's sequence number.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// Whether the peer has acknowledged the message already.
    pub fn is_acknowledged(&self) -> bool {
        self.shared.lock().acked().is_some_and(|a| a > self.seq)
    }

    async fn wait(self) -> Result<(), ReceiptError> {
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.shared.lock();
                if st.acked().is_some_and(|a| a > self.seq) {
                    return Ok(());
                }
                if let Some(e) = &st.ending {
                    return Err(ReceiptError::SessionLost(e.reason.clone()));
                }
            }
            notified.await;
        }
    }
}

impl IntoFuture for Receipt {
    type Output = Result<(), ReceiptError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

/// Why a body was not queued.
enum Refused {
    /// No room now: the body, to try again.
    Full(Bytes),
    /// Any other reason.
    Error(SendError),
}

/// Queues an encoded body (of unencoded length `len`) under the session's lock.
fn queue_locked(st: &mut PeerState, len: usize, body: Bytes, ts: u64) -> Result<Seq, Refused> {
    let budget_full = st
        .budget
        .as_ref()
        .is_some_and(|b| b.used.load(Ordering::Relaxed) + body.len() as u64 > b.limit);
    let Some(session) = st.session_mut() else {
        return Err(Refused::Error(SendError::Closed));
    };
    // The peer decodes into at most its maximum message size.
    let max = session.max_send_len();
    if len > max {
        return Err(Refused::Error(SendError::TooLarge {
            len,
            max: u32::try_from(max).unwrap_or(u32::MAX),
        }));
    }
    // The server's memory budget is checked, then charged by `account` under this session's
    // lock: concurrent sends on several sessions may overshoot it by a message each.
    if session.is_closing() {
        return Err(Refused::Error(SendError::Closed));
    }
    if budget_full || !session.has_room_for(body.len()) {
        return Err(Refused::Full(body));
    }
    session.send(body, ts).map_err(Refused::Error)
}

/// Microseconds since the Unix epoch, for the sender timestamp of a message.
pub(crate) fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
