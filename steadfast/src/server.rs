//! The server: listens on one or more addresses, runs the handshake of every connection,
//! keeps a registry of sessions (live and lingering), resumes them, expires them.
//!
//! [`Server`] is a cheap handle (`Clone`): kick, broadcast and look up peers from any task.
//! New sessions come out of [`Server::accept`] (or [`Server::incoming`]), so that each peer
//! can be served by a task of its own; lifecycle events come out of [`Server::next_event`]
//! (or [`Server::events`]) and are never dropped (see [`ServerEvent`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use crate::admission::{Admission, Refusal, Ticket};
use crate::config::{AdmissionPolicy, AuthDecision, AuthRequest, ServerConfig};
use crate::decode::Receiving;
use crate::driver::{self, BoxStream, Outcome, Progress};
use crate::error::{BindError, EndReason, SendError};
pub use crate::events::ServerEvent;
use crate::events::{self, EventQueue};
use crate::metered::{self, Refused};
use crate::peer::{Peer, Receipt};
use crate::proto::{
    CloseCode, ConfigError, Connection, Event, HelloRequest, Message, RejectCode, ResumeToken,
    Role, Session, SessionEnd, SessionId,
};
use crate::refusals::RefusalLog;
use crate::session::{Budget, Durable, Link, Owner, PeerShared};
use crate::store::{Claim, SessionStore, StoreError, StoredSession};

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) sessions: HashMap<SessionId, Arc<PeerShared>>,
    /// Name → session. The newest session to claim a name owns it; an older session with the
    /// same name keeps working but is reachable only by id.
    names: HashMap<String, SessionId>,
    /// Sessions per address that created them.
    by_addr: HashMap<IpAddr, usize>,
}

impl Registry {
    fn insert(&mut self, id: SessionId, shared: &Arc<PeerShared>, origin: Option<IpAddr>) {
        self.sessions.insert(id, shared.clone());
        if let Some(name) = &shared.name {
            self.names.insert(name.to_string(), id);
        }
        if let Some(ip) = origin {
            *self.by_addr.entry(ip).or_default() += 1;
        }
    }

    fn remove(&mut self, id: SessionId, shared: &Arc<PeerShared>, origin: Option<IpAddr>) {
        if !self
            .sessions
            .get(&id)
            .is_some_and(|s| Arc::ptr_eq(s, shared))
        {
            return;
        }
        self.sessions.remove(&id);
        if let Some(name) = &shared.name
            && self.names.get(&**name) == Some(&id)
        {
            self.names.remove(&**name);
        }
        if let Some(ip) = origin
            && let Some(n) = self.by_addr.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.by_addr.remove(&ip);
            }
        }
    }

    /// The oldest lingering session created from `ip`.
    fn oldest_lingering(&self, ip: IpAddr) -> Option<Arc<PeerShared>> {
        self.sessions
            .values()
            .filter_map(|s| {
                let st = s.lock();
                let since = st.lingering_since?;
                (st.origin == Some(ip) && matches!(st.link, Link::Detached(_)))
                    .then(|| (since, s.clone()))
            })
            .min_by_key(|(since, _)| *since)
            .map(|(_, s)| s)
    }
}

pub(crate) struct Inner {
    pub(crate) config: ServerConfig,
    registry: Mutex<Registry>,
    queue: EventQueue,
    /// Stops the accept loops.
    stop_accepting: CancellationToken,
    /// Stops everything.
    pub(crate) stop_all: CancellationToken,
    tracker: TaskTracker,
    connections: AtomicUsize,
    admission: Arc<Admission>,
    /// Connections being refused (REJECT written, waiting for the client to close).
    refusing: AtomicUsize,
    /// Refused handshakes in the log, at a bounded rate.
    refusals: RefusalLog,
    shutting_down: AtomicBool,
    budget: Arc<Budget>,
    receiving: Receiving,
    /// Numbers the sessions in the order they were created.
    created: AtomicU64,
    /// The linger timers of detached sessions.
    linger: crate::linger::Timers,
    /// The protocol settings, shared by every connection (not a copy each).
    pub(crate) proto: Arc<crate::proto::Config>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").finish_non_exhaustive()
    }
}

impl Inner {
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, shared: &Arc<PeerShared>) {
        let (id, origin) = {
            let st = shared.lock();
            (st.id, st.origin)
        };
        if let Some(id) = id {
            self.registry().remove(id, shared, origin);
        }
    }
}

impl Owner for Inner {
    fn session_ended(&self, shared: &Arc<PeerShared>) {
        // Queued (and so counted as held) before it leaves the registry: never counted out.
        self.queue.push(shared, events::END);
        self.forget(shared);
    }

    fn messages_waiting(&self, shared: &Arc<PeerShared>) {
        self.queue.push(shared, events::WAITING);
    }
}

/// Stops the server when the last [`Server`] handle is dropped.
struct LastHandle(Arc<Inner>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        let inner = &self.0;
        inner.stop_accepting.cancel();
        inner.stop_all.cancel();
        inner.queue.close();
        // Nothing will carry these sessions any more: end them, so that receipts, `recv` and
        // `ended` on handles the application kept return instead of waiting forever.
        let peers: Vec<_> = inner.registry().sessions.values().cloned().collect();
        for p in peers {
            p.abandon(EndReason::Shutdown);
        }
    }
}

/// A running server: a cheap handle, `Clone` and usable from any task. Dropping the last
/// handle stops everything at once; [`Server::shutdown`] is graceful.
#[derive(Clone)]
pub struct Server {
    pub(crate) inner: Arc<Inner>,
    _last: Arc<LastHandle>,
    addrs: Arc<[SocketAddr]>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds every address and starts accepting.
    ///
    /// # Errors
    /// [`BindError`] if the configuration is invalid, no address is given, or one cannot be
    /// bound (nothing is left listening then).
    pub async fn bind<A: ToSocketAddrs + std::fmt::Display>(
        addrs: impl IntoIterator<Item = A>,
        config: ServerConfig,
    ) -> Result<Server, BindError> {
        config.validate()?;
        let mut listeners = Vec::new();
        for a in addrs {
            let l = TcpListener::bind(&a)
                .await
                .map_err(|source| BindError::Io {
                    addr: a.to_string(),
                    source,
                })?;
            listeners.push(l);
        }
        if listeners.is_empty() {
            return Err(BindError::NoAddress);
        }
        let evict = config.admission == AdmissionPolicy::EvictOldest;
        let inner = Arc::new(Inner {
            registry: Mutex::new(Registry::default()),
            queue: EventQueue::new(config.lifecycle_events),
            stop_accepting: CancellationToken::new(),
            stop_all: CancellationToken::new(),
            tracker: TaskTracker::new(),
            connections: AtomicUsize::new(0),
            admission: Admission::new(config.max_handshakes_per_addr, config.max_handshakes, evict),
            refusing: AtomicUsize::new(0),
            refusals: RefusalLog::default(),
            shutting_down: AtomicBool::new(false),
            budget: Arc::new(Budget {
                used: AtomicU64::new(0),
                limit: config.memory_budget,
                freed: tokio::sync::Notify::new(),
            }),
            receiving: Receiving::new(&config.proto, config.decode_slots(), config.recv_spin),
            created: AtomicU64::new(0),
            linger: crate::linger::Timers::default(),
            proto: Arc::new(config.proto.clone()),
            config,
        });
        if let Some(store) = inner.config.store.as_ref().filter(|s| !s.shared()) {
            let n = restore_sessions(&inner, store)?;
            debug!(sessions = n, "restored stored sessions");
        }
        let mut bound = Vec::new();
        for l in listeners {
            let local = l.local_addr().map_err(|source| BindError::Io {
                addr: "listener".into(),
                source,
            })?;
            bound.push(local);
            let span = info_span!("listen", addr = %local);
            inner
                .tracker
                .spawn(accept_loop(inner.clone(), l).instrument(span));
        }
        inner.tracker.spawn(expire_lingering(inner.clone()));
        if let Some(store) = inner.config.store.as_ref().filter(|s| s.shared()) {
            inner
                .tracker
                .spawn(crate::fleet::deliver_mail(inner.clone(), store.clone()));
        }
        Ok(Server {
            _last: Arc::new(LastHandle(inner.clone())),
            inner,
            addrs: bound.into(),
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The next new session, waiting for one; `None` after shutdown. Serve each in a task of
    /// its own (`tokio::spawn`), so that no peer waits for another:
    ///
    /// ```no_run
    /// # async fn f(server: steadfast::Server) {
    /// while let Some(peer) = server.accept().await {
    ///     tokio::spawn(async move {
    ///         while let Ok(m) = peer.recv().await {
    ///             let _ = peer.send(m.body).await; // echo
    ///         }
    ///     });
    /// }
    /// # }
    /// ```
    ///
    /// Each new session is handed out once. The first call also hands out the sessions that
    /// exist already (those restored from a [store](ServerConfig::store) included), oldest
    /// first. `accept` and [`Server::next_event`] read separate queues: an accept loop and an
    /// event logger can run side by side, and the events still report
    /// [`ServerEvent::Connected`].
    pub async fn accept(&self) -> Option<Peer> {
        if !self.inner.queue.is_accepting() && self.inner.queue.begin_accepting() {
            // The first call: every session there is now (restored ones included) is new to
            // the application, oldest first; later ones are queued as they come. The switch
            // comes first, so a session created meanwhile is queued one way or the other.
            let mut existing: Vec<_> = self.inner.registry().sessions.values().cloned().collect();
            existing.sort_by_key(|s| s.lock().created);
            self.inner.queue.push_existing(&existing);
        }
        match self.inner.queue.next(true).await? {
            ServerEvent::Connected { peer } => Some(peer),
            _ => None,
        }
    }

    /// New sessions as a [`Stream`](futures_core::Stream) (see [`Server::accept`]).
    pub fn incoming(&self) -> impl futures_core::Stream<Item = Peer> + Send + 'static {
        futures_util::stream::unfold(self.clone(), |server| async move {
            let peer = server.accept().await?;
            Some((peer, server))
        })
    }

    /// The next event, waiting for one; `None` after shutdown, once every event was read.
    pub async fn next_event(&self) -> Option<ServerEvent> {
        self.inner.queue.next(false).await
    }

    /// The next event if one is ready.
    pub fn try_next_event(&self) -> Option<ServerEvent> {
        self.inner.queue.try_next(false)
    }

    /// The events as a [`Stream`](futures_core::Stream) (see [`Server::next_event`]).
    pub fn events(&self) -> impl futures_core::Stream<Item = ServerEvent> + Send + 'static {
        futures_util::stream::unfold(self.clone(), |server| async move {
            let event = server.next_event().await?;
            Some((event, server))
        })
    }

    /// The session with this id, live or lingering.
    pub fn peer(&self, id: SessionId) -> Option<Peer> {
        let reg = self.inner.registry();
        reg.sessions.get(&id).map(|s| Peer { shared: s.clone() })
    }

    /// The newest session that claimed this name.
    pub fn peer_by_name(&self, name: &str) -> Option<Peer> {
        let reg = self.inner.registry();
        let id = reg.names.get(name)?;
        reg.sessions.get(id).map(|s| Peer { shared: s.clone() })
    }

    /// Every session, live and lingering.
    pub fn peers(&self) -> Vec<Peer> {
        let reg = self.inner.registry();
        reg.sessions
            .values()
            .map(|s| Peer { shared: s.clone() })
            .collect()
    }

    /// Sets the server's gauges in the `metrics` facade (feature `metrics`, on by default):
    /// `steadfast_sessions` by `state` (`live`, `lingering`), `steadfast_outbox_messages` and
    /// `steadfast_memory_budget_used_bytes`. Counters are recorded as things happen; these are
    /// states, read when asked for: call this before each export (a Prometheus scrape) or on a
    /// timer. It visits every session (a lock each).
    ///
    /// ```no_run
    /// # async fn f(server: steadfast::Server) {
    /// // With a recorder installed (metrics-exporter-prometheus, say), before rendering:
    /// server.record_gauges();
    /// # }
    /// ```
    pub fn record_gauges(&self) {
        let (mut live, mut lingering, mut outbox) = (0, 0, 0);
        for p in self.peers() {
            if p.is_ended() {
                continue;
            }
            if p.is_connected() {
                live += 1;
            } else {
                lingering += 1;
            }
            outbox += p.stats().in_flight;
        }
        metered::gauges(live, lingering, outbox, self.queued_bytes());
    }

    /// Bytes of queued messages across all sessions (inboxes, outboxes, messages being
    /// reassembled, large bodies being decoded), counted against the memory budget.
    pub fn queued_bytes(&self) -> u64 {
        self.inner.budget.used.load(Ordering::Relaxed)
    }

    /// Connections open right now (including handshakes).
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
    }

    /// Handshakes in progress right now (connections that have not sent their HELLO).
    pub fn handshakes(&self) -> usize {
        self.inner.admission.pending()
    }

    /// Sends one message to every session (live or lingering) without waiting: sessions whose
    /// outbox is full report [`SendError::Full`]. Order holds per session, not across them.
    pub fn broadcast(&self, body: impl Into<Bytes>) -> Vec<(Peer, Result<Receipt, SendError>)> {
        let body = body.into();
        self.peers()
            .into_iter()
            .map(|p| {
                let r = p.try_send(body.clone());
                (p, r)
            })
            .collect()
    }

    /// Removes a peer: its session ends with CLOSE `Kicked` (or at once if it is not
    /// connected). Returns false if no such session exists.
    pub fn kick(&self, id: SessionId, reason: &str) -> bool {
        let Some(peer) = self.peer(id) else {
            return false;
        };
        end_peer(
            &peer.shared,
            CloseCode::Kicked,
            reason,
            EndReason::Protocol(SessionEnd::Closed {
                by_peer: false,
                code: CloseCode::Kicked,
                reason: reason.to_owned(),
                confirmed: false,
            }),
        );
        true
    }

    /// Graceful shutdown: stops accepting, waits up to `drain` for every outbox to be
    /// acknowledged, then ends every session with CLOSE `Shutdown` and waits (briefly) for
    /// the exchanges to finish. Returns, per session, the messages it sent that were never
    /// acknowledged (they also stay on the peer handles, and the `Ended` events carry them).
    ///
    /// With a [store](ServerConfig::store) the sessions do not end: each connection gets
    /// GOAWAY `Shutdown` (its client reconnects, with its backoff, until a server with the same
    /// store is back) and the store keeps every session with its unacknowledged messages, so
    /// nothing is returned.
    pub async fn shutdown(&self, drain: Duration) -> Vec<(Peer, Vec<Message>)> {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        self.inner.stop_accepting.cancel();
        let deadline = tokio::time::Instant::now() + drain;
        for p in self.peers() {
            let _ = tokio::time::timeout_at(deadline, p.flush()).await;
        }
        let keep = self.inner.config.store.is_some();
        for p in self.peers() {
            if keep {
                let mut st = p.shared.lock();
                if let Link::Attached(conn) = &mut st.link {
                    conn.go_away(CloseCode::Shutdown, 0, "server restarting");
                }
                drop(st);
                p.shared.wake_all();
            } else {
                end_peer(
                    &p.shared,
                    CloseCode::Shutdown,
                    "server shutting down",
                    EndReason::Shutdown,
                );
            }
        }
        let peers = self.peers();
        // Wait for the CLOSE exchanges; a session whose connection dropped meanwhile cannot
        // be resumed any more (nothing is accepted): no need to wait for it.
        let grace = tokio::time::Instant::now() + Duration::from_secs(2);
        for p in &peers {
            let _ = tokio::time::timeout_at(grace, async {
                loop {
                    let changed = p.shared.progress.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if p.is_ended() || !p.is_connected() {
                        break;
                    }
                    changed.await;
                }
            })
            .await;
        }
        self.inner.stop_all.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
        let mut lost = Vec::new();
        for p in peers {
            p.shared.abandon(EndReason::Shutdown);
            let unacked = p.unacknowledged();
            if !unacked.is_empty() && !keep {
                lost.push((p, unacked));
            }
        }
        self.inner.queue.close();
        lost
    }
}

/// Ends a session: CLOSE over its connection, or at once when it is not connected.
fn end_peer(shared: &Arc<PeerShared>, code: CloseCode, reason: &str, why: EndReason) {
    {
        let mut st = shared.lock();
        match &mut st.link {
            Link::Attached(conn) if conn.is_established() => {
                conn.close(driver::now(), code, reason);
            }
            Link::Ended => {}
            _ => {
                st.end_here(why);
            }
        }
    }
    shared.settle();
}

/// Refusals with a REJECT in progress at most; beyond, excess connections are just closed.
const MAX_REFUSING: usize = 256;

fn tls_enabled(config: &ServerConfig) -> bool {
    #[cfg(feature = "tls")]
    return config.tls.is_some();
    #[cfg(not(feature = "tls"))]
    {
        let _ = config;
        false
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = inner.stop_accepting.cancelled() => return,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                if inner.config.proxy_protocol {
                    // The client's address is in the header: admission waits for it.
                    let conns = inner.connections.fetch_add(1, Ordering::Relaxed);
                    if conns >= inner.config.max_connections {
                        inner.connections.fetch_sub(1, Ordering::Relaxed);
                        inner
                            .refusals
                            .refused(addr, Refused::ConnectionLimit, &"connection limit");
                        spawn_refusal(&inner, stream);
                        continue;
                    }
                    let span = info_span!("conn", %addr);
                    inner
                        .tracker
                        .spawn(proxied(inner.clone(), stream, addr).instrument(span));
                    continue;
                }
                // Counted before the check, so a burst on several listeners cannot overshoot.
                let conns = inner.connections.fetch_add(1, Ordering::Relaxed);
                if let Some(ticket) = admit(&inner, addr, conns) {
                    let span = info_span!("conn", %addr);
                    inner
                        .tracker
                        .spawn(serve(inner.clone(), stream, addr, ticket).instrument(span));
                } else {
                    spawn_refusal(&inner, stream);
                }
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::select! {
                    () = inner.stop_accepting.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// Admits a connection from `addr` (counted in `connections` already, `conns` before it), or
/// undoes the count and records the refusal (the caller then refuses the stream).
fn admit(inner: &Arc<Inner>, addr: SocketAddr, conns: usize) -> Option<Ticket> {
    let admitted = if conns >= inner.config.max_connections {
        Err("connection limit")
    } else {
        inner.admission.admit(addr.ip()).map_err(|r| match r {
            Refusal::Address => "handshake limit of the address",
            Refusal::Total => "handshake limit",
        })
    };
    match admitted {
        Ok(t) => Some(t),
        Err(why) => {
            inner.connections.fetch_sub(1, Ordering::Relaxed);
            debug!(%addr, conns, "refusing: {why}");
            let kind = if conns >= inner.config.max_connections {
                Refused::ConnectionLimit
            } else {
                Refused::HandshakeLimit
            };
            inner.refusals.refused(addr, kind, &why);
            None
        }
    }
}

/// A connection on a PROXY protocol listener: reads the header within the handshake timeout,
/// then admits and serves the connection under the client's address from it.
async fn proxied(inner: Arc<Inner>, mut stream: TcpStream, balancer: SocketAddr) {
    let limit = inner.config.proto.handshake_timeout;
    let read = tokio::select! {
        () = inner.stop_all.cancelled() => {
            inner.connections.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        r = tokio::time::timeout(limit, crate::proxy::read_header(&mut stream)) => r,
    };
    let header = match read {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => {
            inner.connections.fetch_sub(1, Ordering::Relaxed);
            inner.refusals.refused(balancer, Refused::ProxyHeader, &e);
            return;
        }
        Err(_) => {
            inner.connections.fetch_sub(1, Ordering::Relaxed);
            inner.refusals.refused(
                balancer,
                Refused::ProxyHeader,
                &"no PROXY protocol header within the handshake timeout",
            );
            return;
        }
    };
    let addr = header.source().unwrap_or(balancer);
    // The count taken at accept stands for this connection (`conns` 0: the connection limit
    // was checked there).
    let Some(ticket) = admit(&inner, addr, 0) else {
        spawn_refusal(&inner, stream);
        return;
    };
    debug!(client = %addr, "PROXY header");
    serve(inner, stream, addr, ticket)
        .instrument(info_span!("proxied", client = %addr))
        .await;
}

/// Refuses a connection over a cap: REJECT ServerFull in plain text, within the cap on
/// refusals in progress; otherwise (or with TLS, where a clear-text REJECT means nothing)
/// the socket is just closed.
fn spawn_refusal(inner: &Arc<Inner>, stream: TcpStream) {
    let plain = !tls_enabled(&inner.config);
    let refusing = inner.refusing.fetch_add(1, Ordering::Relaxed);
    if plain && refusing < MAX_REFUSING {
        let retry = inner.config.full_retry_after;
        let proto = inner.proto.clone();
        let inner2 = inner.clone();
        inner.tracker.spawn(async move {
            refuse(stream, proto, retry).await;
            inner2.refusing.fetch_sub(1, Ordering::Relaxed);
        });
    } else {
        inner.refusing.fetch_sub(1, Ordering::Relaxed);
        drop(stream);
    }
}

struct CountGuard<'a>(&'a AtomicUsize);

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn random16() -> Option<[u8; 16]> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).ok()?;
    Some(b)
}

/// What the handshake phase produced: the stream, the client's certificate, the core
/// connection and the client's HELLO.
type Greeted = (BoxStream, Option<Vec<u8>>, Connection, HelloRequest);

/// Runs the TLS handshake and waits for the HELLO; `None` if the connection ended first (a
/// refusal is written before).
async fn greet(inner: &Inner, tcp: TcpStream, addr: SocketAddr) -> Option<Greeted> {
    let (mut stream, certificate) = secure(inner, tcp, addr).await?;
    let mut conn = Connection::accept(inner.proto.clone(), driver::now()).ok()?;
    let mut buf = vec![0u8; 16 << 10];
    loop {
        while let Some(event) = conn.poll_event() {
            match event {
                Event::Hello(req) => {
                    // Frames pipelined after the HELLO wait in the core until the answer is
                    // out (PROTOCOL.md §2); more than a frame's worth has already been
                    // refused by it: the event is then stale, nothing may be created for it.
                    if conn.is_closed() {
                        note_refusal(inner, addr, &mut conn);
                        flush_and_close(&mut conn, &mut stream).await;
                        return None;
                    }
                    return Some((stream, certificate, conn, req));
                }
                Event::Disconnected(error) => {
                    inner.refusals.refused(addr, refusal_kind(&error), &error);
                    flush_and_close(&mut conn, &mut stream).await;
                    return None;
                }
                _ => {}
            }
        }
        if conn.is_closed() {
            note_refusal(inner, addr, &mut conn);
            flush_and_close(&mut conn, &mut stream).await;
            return None;
        }
        let deadline = conn.poll_timeout().unwrap_or_else(driver::now);
        tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) | Err(_) => return None,
                Ok(n) => conn.handle_input(driver::now(), &buf[..n]),
            },
            () = tokio::time::sleep_until(deadline.into()) => conn.handle_timeout(driver::now()),
        }
    }
}

/// Logs (at a bounded rate) why a connection's handshake ended: a REJECT, a protocol
/// violation, a handshake timeout.
fn note_refusal(inner: &Inner, addr: SocketAddr, conn: &mut Connection) {
    while let Some(ev) = conn.poll_event() {
        if let Event::Disconnected(error) = ev {
            inner.refusals.refused(addr, refusal_kind(&error), &error);
            return;
        }
    }
}

/// The kind of a handshake's end, for `steadfast_handshakes_refused_total`.
fn refusal_kind(error: &crate::proto::ConnectionError) -> Refused {
    use crate::proto::ConnectionError as E;
    match error {
        E::Rejected {
            code: RejectCode::ProtocolError,
            ..
        }
        | E::ProtocolViolation(_) => Refused::ProtocolViolation,
        E::HandshakeTimeout => Refused::Timeout,
        _ => Refused::Rejected,
    }
}

async fn serve(inner: Arc<Inner>, tcp: TcpStream, addr: SocketAddr, ticket: Ticket) {
    let _conn_guard = CountGuard(&inner.connections);
    // The handshake's state (the connection before it joins a session, the HELLO, the
    // stream's set-up) lives in a box freed once the session runs: a live connection's task
    // then holds only what its driver needs (PROTOCOL.md §12: memory per idle session).
    let Some((stream, shared, generation, resumed)) =
        Box::pin(handshake(&inner, tcp, addr, ticket)).await
    else {
        return;
    };
    metered::connection(resumed);
    if resumed {
        inner.queue.push(&shared, events::LINK);
    } else {
        inner.queue.push_new(&shared);
    }
    let outcome = tokio::select! {
        () = inner.stop_all.cancelled() => return,
        o = driver::drive(&shared, generation, stream, |p| {
            if let Progress::MessagesWaiting = p {
                inner.queue.push(&shared, events::WAITING);
            }
        }) => o,
    };
    match outcome {
        // Reported by the connection that took over, or by the end.
        Outcome::Replaced | Outcome::Ended(_) => {}
        Outcome::Disconnected(_) => {
            // A store notes when the session was last seen: its linger counts from here, also
            // across a restart.
            {
                let mut st = shared.lock();
                // Only while this connection's session is still detached: a resume may have
                // taken it over meanwhile, and its driver commits for it.
                if st.generation == generation && matches!(st.link, Link::Detached(_)) {
                    drop(st.durable_commit(true));
                }
            }
            inner.queue.push(&shared, events::LINK);
            start_linger(&inner, &shared, inner.config.linger);
        }
    }
}

/// The connection's handshake: the HELLO, then the application's (or the registry's)
/// decision. `None`: the connection ends here (refused, evicted, timed out, server stopping).
async fn handshake(
    inner: &Arc<Inner>,
    tcp: TcpStream,
    addr: SocketAddr,
    ticket: Ticket,
) -> Option<(BoxStream, Arc<PeerShared>, u64, bool)> {
    let evicted = ticket.evicted.clone();
    let greeted = tokio::select! {
        () = inner.stop_all.cancelled() => return None,
        () = evicted.cancelled() => {
            inner.refusals.refused(
                addr,
                Refused::HandshakeLimit,
                &"closed for a newer handshake (the handshake limits)",
            );
            return None;
        }
        g = greet(inner, tcp, addr) => g,
    };
    // The HELLO is in: no longer a pending handshake.
    drop(ticket);
    let (mut stream, certificate, mut conn, hello) = greeted?;
    let decided = tokio::select! {
        () = inner.stop_all.cancelled() => return None,
        d = decide(inner, &mut conn, hello, addr, certificate.as_deref()) => d,
    };
    let Some((shared, generation, resumed)) = decided else {
        note_refusal(inner, addr, &mut conn);
        flush_and_close(&mut conn, &mut stream).await;
        return None;
    };
    Some((stream, shared, generation, resumed))
}

/// Starts the session's linger timer unless one runs already (one per session, however
/// often it reconnects): when it fires, a session still detached for `linger` expires; one
/// detached more recently waits for what is left of its linger.
fn start_linger(inner: &Arc<Inner>, shared: &Arc<PeerShared>, first: Duration) {
    {
        let mut st = shared.lock();
        if st.linger_timer {
            return;
        }
        st.linger_timer = true;
    }
    inner.linger.add(driver::now() + first, shared);
}

/// Serves every linger timer of the server: a session still detached when its time comes
/// expires; one detached more recently waits for what is left of its linger; one resumed
/// or ended has no timer any more.
async fn expire_lingering(inner: Arc<Inner>) {
    let linger = inner.config.linger;
    loop {
        let earlier = inner.linger.earlier.notified();
        tokio::pin!(earlier);
        earlier.as_mut().enable();
        let now = driver::now();
        let (due, next) = inner.linger.due(now);
        for shared in due {
            let (expired, left) = {
                let mut st = shared.lock();
                match (&st.link, st.lingering_since) {
                    (Link::Detached(_), Some(since)) => {
                        let left = (since + linger).saturating_duration_since(now);
                        if left.is_zero() {
                            st.linger_timer = false;
                            st.end_here(EndReason::Expired(linger));
                        }
                        (left.is_zero(), left)
                    }
                    _ => {
                        // Resumed (its next loss starts a new timer) or ended.
                        st.linger_timer = false;
                        (false, Duration::ZERO)
                    }
                }
            };
            if expired {
                debug!("session expired");
                shared.settle();
            } else if !left.is_zero() {
                inner.linger.add(now + left, &shared);
            }
        }
        let sleep = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = inner.stop_all.cancelled() => return,
            () = sleep => {}
            () = &mut earlier => {}
        }
    }
}

/// The application's side of the handshake: new session, resume (taking the session over
/// from a half-open connection, PROTOCOL.md §4.4 rule B), or REJECT.
async fn decide(
    inner: &Arc<Inner>,
    conn: &mut Connection,
    hello: HelloRequest,
    addr: SocketAddr,
    certificate: Option<&[u8]>,
) -> Option<(Arc<PeerShared>, u64, bool)> {
    if inner.shutting_down.load(Ordering::SeqCst) {
        conn.reject(RejectCode::ShuttingDown, 1_000, "server shutting down");
        return None;
    }
    let mut name = hello.name.clone();
    if let Some(auth) = &inner.config.auth {
        let req = AuthRequest {
            name: hello.name.as_deref(),
            credentials: hello.credentials.as_deref(),
            addr,
            certificate,
            resuming: hello.resume.is_some(),
        };
        // Within what is left of the handshake timeout: a hook that never answers refuses
        // nobody else.
        let now = driver::now();
        let limit = conn
            .poll_timeout()
            .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
        let decision = tokio::time::timeout(limit, (auth.0)(&req)).await;
        match decision {
            Ok(AuthDecision::Accept) => {}
            Ok(AuthDecision::AcceptAs(n)) => name = Some(n),
            Ok(AuthDecision::Refuse(reason)) => {
                debug!(%addr, "refused: {reason}");
                conn.reject(RejectCode::Unauthenticated, 0, &reason);
                return None;
            }
            Err(_) => {
                conn.reject(RejectCode::Unauthenticated, 0, "authentication timed out");
                return None;
            }
        }
    }
    let now = driver::now();
    let (Some(token), Some(id_bytes)) = (random16(), random16()) else {
        conn.reject(RejectCode::ServerFull, 1_000, "no randomness available");
        return None;
    };
    let token = ResumeToken(token);
    let Some(resume) = hello.resume else {
        return new_session(
            inner,
            conn,
            name,
            addr,
            certificate,
            SessionId(id_bytes),
            token,
        );
    };
    let mut shared = inner.registry().sessions.get(&resume.session_id).cloned();
    if let Some(store) = inner.config.store.as_ref().filter(|s| s.shared()) {
        // A fleet: the store decides who carries the session, and fences everyone else.
        let limit = conn.poll_timeout().map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(driver::now())
        });
        let claim = store.claim(resume.session_id.0, resume.token.clone(), shared.is_some());
        match tokio::time::timeout(limit, claim).await {
            Ok(Ok(Claim::Kept)) => {}
            Ok(Ok(Claim::Loaded(stored))) => {
                if let Some(stale) = shared.take() {
                    // Carried here before, moved elsewhere since: this copy is out of date.
                    stale.abandon(EndReason::Moved);
                }
                match adopt(inner, store, stored, false) {
                    Ok(s) => shared = Some(s),
                    Err(e) => {
                        warn!(session = %resume.session_id, error = %e, "a claimed session cannot be restored");
                        conn.reject(RejectCode::ServerFull, 1_000, "session store unavailable");
                        return None;
                    }
                }
            }
            Ok(Ok(_)) => shared = None,
            Ok(Err(e)) => {
                warn!(session = %resume.session_id, error = %e, "session store: claim failed");
                conn.reject(RejectCode::ServerFull, 1_000, "session store unavailable");
                return None;
            }
            Err(_) => {
                conn.reject(RejectCode::ServerFull, 1_000, "session store unavailable");
                return None;
            }
        }
    }
    let Some(shared) = shared else {
        conn.reject(RejectCode::UnknownSession, 0, "unknown or expired session");
        return None;
    };
    let mut st = shared.lock();
    // The token and the stated position are checked where the session is, before anything
    // is disturbed (§4.4 rule B).
    if !st.session().is_some_and(|s| s.verify_token(&resume.token)) {
        drop(st);
        conn.reject(RejectCode::UnknownSession, 0, "unknown or expired session");
        return None;
    }
    if !st
        .session()
        .is_some_and(|s| s.can_resume_at(resume.received, resume.partial))
    {
        drop(st);
        conn.reject(RejectCode::ProtocolError, 0, "impossible resume position");
        return None;
    }
    // With mutual TLS, a session resumes only under the certificate that created it.
    if st.certificate().is_some() && st.certificate() != certificate {
        drop(st);
        conn.reject(
            RejectCode::Unauthenticated,
            0,
            "not the certificate of this session",
        );
        return None;
    }
    let Some(session) = st.take_for_resume(now) else {
        drop(st);
        conn.reject(RejectCode::UnknownSession, 0, "unknown or expired session");
        return None;
    };
    match conn.accept_resume(now, session, token) {
        Ok(()) => {
            let placeholder = Connection::accept(inner.proto.clone(), now).ok()?;
            let attached = std::mem::replace(conn, placeholder);
            let generation = st.attach(attached, Some(addr));
            st.established(resume.session_id, certificate);
            drop(st);
            // A driver of the old connection sees the new generation and stops.
            shared.wake_all();
            debug!(session = %resume.session_id, "resumed");
            Some((shared, generation, true))
        }
        Err(session) => {
            st.put_back(session);
            None
        }
    }
}

/// Creates a session for a client's first HELLO, within the session limits: per address,
/// then in total; at a limit the oldest lingering session of the address over its share is
/// evicted (reported as `Expired`) when the policy allows it, otherwise REJECT ServerFull.
fn new_session(
    inner: &Arc<Inner>,
    conn: &mut Connection,
    name: Option<String>,
    addr: SocketAddr,
    certificate: Option<&[u8]>,
    id: SessionId,
    token: ResumeToken,
) -> Option<(Arc<PeerShared>, u64, bool)> {
    let now = driver::now();
    let ip = addr.ip();
    let evict = inner.config.admission == AdmissionPolicy::EvictOldest;
    let retry_ms = u32::try_from(inner.config.full_retry_after.as_millis()).unwrap_or(u32::MAX);
    let mut reg = inner.registry();
    let over_budget = inner.budget.used.load(Ordering::Relaxed) >= inner.budget.limit;
    if over_budget {
        drop(reg);
        conn.reject(RejectCode::ServerFull, retry_ms, "memory budget spent");
        return None;
    }
    // Ended sessions whose events are unread: at most `max_sessions` of them; beyond, new
    // sessions wait until the application reads (evicting would only add to them).
    if inner.queue.held() >= inner.config.max_sessions {
        drop(reg);
        conn.reject(
            RejectCode::ServerFull,
            retry_ms,
            "session limit reached: events unread",
        );
        return None;
    }
    let mut victims = Vec::new();
    let own = reg.by_addr.get(&ip).copied().unwrap_or(0);
    if own >= inner.config.max_sessions_per_addr {
        match reg.oldest_lingering(ip).filter(|_| evict) {
            Some(v) => victims.push(v),
            None => {
                drop(reg);
                conn.reject(
                    RejectCode::ServerFull,
                    retry_ms,
                    "session limit of the address reached",
                );
                return None;
            }
        }
    } else if reg.sessions.len() >= inner.config.max_sessions {
        // The address holding the most sessions, if it holds more than an equal share (the
        // newcomer's address counts among those sharing).
        let sharing = reg.by_addr.len() + usize::from(own == 0);
        let share = inner.config.max_sessions / sharing.max(1);
        let biggest = reg
            .by_addr
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(a, n)| (*a, *n));
        let victim = match biggest {
            Some((a, n)) if evict && (n > share || a == ip) => reg.oldest_lingering(a),
            _ => None,
        };
        match victim {
            Some(v) => victims.push(v),
            None => {
                drop(reg);
                conn.reject(RejectCode::ServerFull, retry_ms, "session limit reached");
                return None;
            }
        }
    }
    for v in &victims {
        let mut st = v.lock();
        let lingered = st
            .lingering_since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        let (vid, origin) = (st.id, st.origin);
        st.end_here(EndReason::Expired(lingered));
        drop(st);
        if let Some(vid) = vid {
            reg.remove(vid, v, origin);
        }
        debug!(%ip, "evicted the oldest lingering session of the address");
    }
    conn.accept_new(now, id, token);
    // The handshake checked that every transform the client named is supported here.
    let chain = conn
        .session()
        .and_then(|s| inner.config.transforms.select(s.transforms()))
        .unwrap_or_default();
    let placeholder = Connection::accept(inner.proto.clone(), now).ok()?;
    let attached = std::mem::replace(conn, placeholder);
    let shared = PeerShared::new(
        Role::Server,
        name,
        Link::Attached(Box::new(attached)),
        chain,
        &inner.receiving,
    );
    let generation = {
        let mut st = shared.lock();
        let generation = st.generation;
        st.addr = Some(addr);
        st.established(id, certificate);
        st.origin = Some(ip);
        st.created = inner.created.fetch_add(1, Ordering::Relaxed);
        st.budget = Some(inner.budget.clone());
        if let Some(store) = &inner.config.store {
            st.durable = Some(Box::new(Durable::new(store.clone(), id.0, None)));
        }
        st.account();
        generation
    };
    own_session(inner, &shared);
    reg.insert(id, &shared, Some(ip));
    drop(reg);
    for v in victims {
        v.settle();
    }
    debug!(session = %id, "new session");
    Some((shared, generation, false))
}

/// Makes the server the owner of a session: told when it ends, by whatever path.
fn own_session(inner: &Arc<Inner>, shared: &Arc<PeerShared>) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let weak: Weak<dyn Owner> = weak;
    let _ = shared.owner.set(weak);
}

/// The TLS handshake, when the server has TLS, within the handshake timeout. Returns the
/// stream and the client's verified certificate (mutual TLS).
async fn secure(
    inner: &Inner,
    tcp: TcpStream,
    addr: SocketAddr,
) -> Option<(BoxStream, Option<Vec<u8>>)> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &inner.config.tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        let limit = inner.config.proto.handshake_timeout;
        let accepted = tokio::select! {
            () = inner.stop_all.cancelled() => return None,
            r = tokio::time::timeout(limit, acceptor.accept(tcp)) => r,
        };
        return match accepted {
            Ok(Ok(s)) => {
                let cert = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                Some((Box::new(s), cert))
            }
            Ok(Err(e)) => {
                inner.refusals.refused(
                    addr,
                    Refused::Tls,
                    &format_args!("TLS handshake failed: {e}"),
                );
                None
            }
            Err(_) => {
                inner
                    .refusals
                    .refused(addr, Refused::Tls, &"TLS handshake timed out");
                None
            }
        };
    }
    let _ = (inner, addr);
    Some((Box::new(tcp), None))
}

/// Answers a connection over the cap with REJECT `ServerFull` and closes it.
async fn refuse(mut stream: TcpStream, proto: Arc<crate::proto::Config>, retry: Duration) {
    let Ok(mut conn) = Connection::accept(proto, driver::now()) else {
        return;
    };
    let ms = u32::try_from(retry.as_millis()).unwrap_or(u32::MAX);
    conn.reject(RejectCode::ServerFull, ms, "server full");
    let mut buf = Vec::new();
    conn.poll_transmit(driver::now(), &mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&buf).await?;
        stream.shutdown().await?;
        // Read what the client sent (its HELLO) until it closes: closing a socket with unread
        // input would turn our close into an RST that could overtake the REJECT.
        let mut sink = [0u8; 4_096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

/// Brings back the sessions a store kept: each lingers, resumable, for what is left of its
/// linger time counted from when it was last seen (expired ones end at once, handing their
/// unacknowledged messages to the application as usual).
fn restore_sessions(inner: &Arc<Inner>, store: &Arc<dyn SessionStore>) -> Result<usize, BindError> {
    let stored = store.load()?;
    let now_ms = crate::clock::wall_clock_us() / 1_000;
    let linger = inner.config.linger;
    let linger_ms = u64::try_from(linger.as_millis()).unwrap_or(u64::MAX);
    let count = stored.len();
    for s in stored {
        let left = if s.lingering {
            Duration::from_millis((s.last_seen_ms.saturating_add(linger_ms)).saturating_sub(now_ms))
        } else {
            linger
        };
        let shared = adopt(inner, store, s, true)?;
        // A session that was lingering when last seen lingers for what is left; one that was
        // connected lost its connection with the process: a full linger from now. Its linger
        // counts from when it was last seen, in this process's clock.
        shared.lock().lingering_since = Some(
            (driver::now() + left)
                .checked_sub(linger)
                .unwrap_or_else(driver::now),
        );
        start_linger(inner, &shared, left);
    }
    Ok(count)
}

/// Makes a session a store kept one of this server's, detached and resumable (in the
/// registry, counted in the budget). `restoring`: at start, before any connection.
fn adopt(
    inner: &Arc<Inner>,
    store: &Arc<dyn SessionStore>,
    s: StoredSession,
    restoring: bool,
) -> Result<Arc<PeerShared>, BindError> {
    let (Role::Server, Some(id), false) = (s.record.role, s.record.id, s.ended) else {
        return Err(StoreError::Foreign("the store holds a client's session".into()).into());
    };
    let committed = s.record.clone();
    let session = Session::restore(&inner.config.proto, s.record, s.outbox)
        .map_err(|e| StoreError::Corrupt(e.0))?;
    let Some(chain) = inner.config.transforms.select(session.transforms()) else {
        return Err(ConfigError(format!(
            "a stored session uses the transforms {:?}; configure them",
            session.transforms()
        ))
        .into());
    };
    let name = session.name().map(str::to_owned);
    let shared = PeerShared::new(
        Role::Server,
        name,
        Link::Detached(Box::new(session)),
        chain,
        &inner.receiving,
    );
    own_session(inner, &shared);
    {
        let mut st = shared.lock();
        st.id = Some(id);
        st.created = inner.created.fetch_add(1, Ordering::Relaxed);
        st.budget = Some(inner.budget.clone());
        st.durable = Some(Box::new(Durable::new(store.clone(), id.0, Some(committed))));
        st.account();
    }
    inner.registry().insert(id, &shared, None);
    if !restoring {
        // Claimed for a resume: it lingers like any detached session until the resume takes
        // it (or does not), and it is new to this server's application: `accept` returns it.
        shared.lock().lingering_since = Some(driver::now());
        start_linger(inner, &shared, inner.config.linger);
        if inner.queue.is_accepting() {
            inner.queue.push(&shared, events::NEW);
        }
    }
    Ok(shared)
}

async fn flush_and_close(conn: &mut Connection, stream: &mut BoxStream) {
    let mut buf = Vec::new();
    conn.poll_transmit(driver::now(), &mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&buf).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    /// The size of the future an async fn returns.
    fn future_size<F, A, B, C, D, Fut>(_: &F) -> usize
    where
        F: FnOnce(A, B, C, D) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// A live connection's task holds its driver's state, not the handshake's (a boxed phase
    /// of its own): the task is the largest item of an idle session's memory.
    #[test]
    fn a_connection_task_holds_no_handshake_state() {
        let serve = future_size(&super::serve);
        eprintln!("serve future: {serve} bytes");
        assert!(
            serve < 2048,
            "the connection task's future takes {serve} bytes"
        );
    }
}
