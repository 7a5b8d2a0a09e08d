//! The server: listens on one or more addresses, runs the handshake of every connection,
//! keeps a registry of sessions (live and lingering), resumes them, expires them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info_span, warn};

use crate::config::{AuthDecision, AuthRequest, ServerConfig};
use crate::driver::{self, BoxStream, Outcome, Progress};
use crate::error::{BindError, SendError};
use crate::peer::{Budget, Durable, EndReason, Link, Peer, PeerShared, Receipt};
use crate::proto::{
    CloseCode, ConfigError, Connection, ConnectionError, Event, HelloRequest, Message, RejectCode,
    ResumeToken, Role, Session, SessionId,
};
use crate::store::{SessionStore, StoreError};

/// Something that happened on a server.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client established a new session.
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
        /// Why the connection ended.
        error: ConnectionError,
    },
    /// A lingering session was not resumed in time and is gone.
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
    /// A peer has messages waiting (sent once until the application reads from that peer):
    /// the notification queue.
    MessagesWaiting {
        /// Its handle.
        peer: Peer,
    },
    /// The application did not keep up: this many events were dropped. Session ends are never
    /// lost with them: the unacknowledged messages stay on the peer handle.
    Lagged(u64),
}

#[derive(Default)]
struct Registry {
    sessions: HashMap<SessionId, Arc<PeerShared>>,
    /// Name → session. The newest session to claim a name owns it; an older session with the
    /// same name keeps working but is reachable only by id.
    names: HashMap<String, SessionId>,
}

struct Inner {
    config: ServerConfig,
    registry: Mutex<Registry>,
    events: mpsc::Sender<ServerEvent>,
    lagged: AtomicU64,
    /// Stops the accept loops.
    stop_accepting: CancellationToken,
    /// Stops everything.
    stop_all: CancellationToken,
    tracker: TaskTracker,
    connections: AtomicUsize,
    handshakes: AtomicUsize,
    /// Connections being refused (REJECT written, waiting for the client to close).
    refusing: AtomicUsize,
    shutting_down: AtomicBool,
    budget: Arc<Budget>,
}

impl Inner {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends an event to the application; false if it was dropped (the application lags).
    fn emit(&self, event: ServerEvent) -> bool {
        if self.events.try_send(event).is_err() {
            self.lagged.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn forget(&self, id: Option<SessionId>, shared: &Arc<PeerShared>) {
        let Some(id) = id else { return };
        let mut reg = self.registry();
        if reg
            .sessions
            .get(&id)
            .is_some_and(|s| Arc::ptr_eq(s, shared))
        {
            reg.sessions.remove(&id);
        }
        if let Some(name) = &shared.name
            && reg.names.get(name) == Some(&id)
        {
            reg.names.remove(name);
        }
    }
}

/// A running server. Dropping it stops everything at once; [`Server::shutdown`] is graceful.
pub struct Server {
    inner: Arc<Inner>,
    events: mpsc::Receiver<ServerEvent>,
    addrs: Vec<SocketAddr>,
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
        let (tx, events) = mpsc::channel(config.event_capacity);
        let inner = Arc::new(Inner {
            registry: Mutex::new(Registry::default()),
            events: tx,
            lagged: AtomicU64::new(0),
            stop_accepting: CancellationToken::new(),
            stop_all: CancellationToken::new(),
            tracker: TaskTracker::new(),
            connections: AtomicUsize::new(0),
            handshakes: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            budget: Arc::new(Budget {
                used: AtomicU64::new(0),
                limit: config.memory_budget,
                freed: tokio::sync::Notify::new(),
            }),
            config,
        });
        if let Some(store) = &inner.config.store {
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
        Ok(Server {
            inner,
            events,
            addrs: bound,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The next event; `None` after shutdown.
    pub async fn next_event(&mut self) -> Option<ServerEvent> {
        let lagged = self.inner.lagged.swap(0, Ordering::Relaxed);
        if lagged > 0 {
            return Some(ServerEvent::Lagged(lagged));
        }
        self.events.recv().await
    }

    /// The next event if one is ready.
    pub fn try_next_event(&mut self) -> Option<ServerEvent> {
        let lagged = self.inner.lagged.swap(0, Ordering::Relaxed);
        if lagged > 0 {
            return Some(ServerEvent::Lagged(lagged));
        }
        self.events.try_recv().ok()
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

    /// Bytes of queued messages across all sessions, counted against the memory budget.
    pub fn queued_bytes(&self) -> u64 {
        self.inner.budget.used.load(Ordering::Relaxed)
    }

    /// Connections open right now (including handshakes).
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::Relaxed)
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
            &self.inner,
            &peer.shared,
            CloseCode::Kicked,
            reason,
            EndReason::Protocol(crate::proto::SessionEnd::Closed {
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
    /// acknowledged (they also stay on the peer handles).
    ///
    /// With a [store](ServerConfig::store) the sessions do not end: each connection gets
    /// GOAWAY `Shutdown` (its client reconnects, with its backoff, until a server with the same
    /// store is back) and the store keeps every session with its unacknowledged messages, so
    /// nothing is returned.
    pub async fn shutdown(mut self, drain: Duration) -> Vec<(Peer, Vec<Message>)> {
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
                    &self.inner,
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
        self.events.close();
        let mut lost = Vec::new();
        for p in peers {
            abandon(&p.shared, EndReason::Shutdown);
            let unacked = p.unacknowledged();
            if !unacked.is_empty() && !keep {
                lost.push((p, unacked));
            }
        }
        lost
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.inner.stop_accepting.cancel();
        self.inner.stop_all.cancel();
        // Nothing will carry these sessions any more: end them, so that receipts, `recv` and
        // `ended` on handles the application kept return instead of waiting forever.
        for p in self.peers() {
            abandon(&p.shared, EndReason::Shutdown);
        }
    }
}

/// Ends a session that no task will carry any more (its owner was dropped).
pub(crate) fn abandon(shared: &PeerShared, reason: EndReason) {
    {
        let mut st = shared.lock();
        if st.ending.is_some() {
            return;
        }
        let (acked, unacked) = match st.session_mut() {
            Some(s) => (s.acked(), s.take_unacknowledged()),
            None => (crate::proto::Seq(u64::MAX), Vec::new()),
        };
        st.end(reason, unacked, acked);
        st.generation += 1;
    }
    shared.wake_all();
}

/// Ends a session: CLOSE over its connection, or at once when it is not connected.
fn end_peer(
    inner: &Arc<Inner>,
    shared: &Arc<PeerShared>,
    code: CloseCode,
    reason: &str,
    why: EndReason,
) {
    let unacked = {
        let mut st = shared.lock();
        match &mut st.link {
            Link::Attached(conn) if conn.is_established() => {
                conn.close(driver::now(), code, reason);
                None
            }
            Link::Ended => None,
            _ => {
                let (acked, unacked) = match st.session_mut() {
                    Some(s) => (s.acked(), s.take_unacknowledged()),
                    None => return,
                };
                st.end(why.clone(), unacked, acked);
                st.generation += 1;
                Some(())
            }
        }
    };
    shared.wake_all();
    if unacked.is_some() {
        let id = shared.lock().id;
        inner.forget(id, shared);
        let peer = Peer {
            shared: shared.clone(),
        };
        let unacknowledged = peer.unacknowledged();
        inner.emit(ServerEvent::Ended {
            peer,
            reason: why,
            unacknowledged,
        });
    }
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
                // Counted before the check, so a burst on several listeners cannot overshoot.
                let conns = inner.connections.fetch_add(1, Ordering::Relaxed);
                let hs = inner.handshakes.fetch_add(1, Ordering::Relaxed);
                if conns >= inner.config.max_connections || hs >= inner.config.max_handshakes {
                    inner.connections.fetch_sub(1, Ordering::Relaxed);
                    inner.handshakes.fetch_sub(1, Ordering::Relaxed);
                    debug!(%addr, conns, handshakes = hs, "refusing: full");
                    // A REJECT in clear text means nothing to a TLS client, and refusals in
                    // progress are themselves capped: otherwise the socket is just closed.
                    let plain = !tls_enabled(&inner.config);
                    let refusing = inner.refusing.fetch_add(1, Ordering::Relaxed);
                    if plain && refusing < MAX_REFUSING {
                        let retry = inner.config.full_retry_after;
                        let proto = inner.config.proto.clone();
                        let inner2 = inner.clone();
                        inner.tracker.spawn(async move {
                            refuse(stream, proto, retry).await;
                            inner2.refusing.fetch_sub(1, Ordering::Relaxed);
                        });
                    } else {
                        inner.refusing.fetch_sub(1, Ordering::Relaxed);
                        drop(stream);
                    }
                    continue;
                }
                let span = info_span!("conn", %addr);
                inner
                    .tracker
                    .spawn(serve(inner.clone(), stream, addr).instrument(span));
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

/// Answers a connection over the cap with REJECT `ServerFull` and closes it.
async fn refuse(mut stream: TcpStream, proto: crate::proto::Config, retry: Duration) {
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

async fn serve(inner: Arc<Inner>, tcp: TcpStream, addr: SocketAddr) {
    let _conn_guard = CountGuard(&inner.connections);
    let hs_guard = CountGuard(&inner.handshakes);
    let Some((mut stream, certificate)) = secure(&inner, tcp).await else {
        return;
    };
    let Ok(mut conn) = Connection::accept(inner.config.proto.clone(), driver::now()) else {
        return;
    };
    // Handshake: wait for HELLO within the handshake timeout.
    let hello = {
        let _hs_guard = hs_guard;
        let mut buf = vec![0u8; 16 << 10];
        loop {
            if let Some(Event::Hello(req)) = conn.poll_event() {
                // A HELLO followed by more frames (pipelined before WELCOME) has already been
                // refused by the core: the event is stale, nothing may be created for it.
                if conn.is_closed() {
                    flush_and_close(&mut conn, &mut stream).await;
                    return;
                }
                break req;
            }
            if conn.is_closed() {
                flush_and_close(&mut conn, &mut stream).await;
                return;
            }
            let deadline = conn.poll_timeout().unwrap_or_else(driver::now);
            tokio::select! {
                () = inner.stop_all.cancelled() => return,
                r = stream.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => conn.handle_input(driver::now(), &buf[..n]),
                },
                () = tokio::time::sleep_until(deadline.into()) => conn.handle_timeout(driver::now()),
            }
        }
    };
    let decided = decide(&inner, &mut conn, hello, addr, certificate.as_deref());
    let Some((shared, generation, resumed)) = decided else {
        flush_and_close(&mut conn, &mut stream).await;
        return;
    };
    let peer = Peer {
        shared: shared.clone(),
    };
    inner.emit(if resumed {
        ServerEvent::Resumed { peer: peer.clone() }
    } else {
        ServerEvent::Connected { peer: peer.clone() }
    });
    let outcome = tokio::select! {
        () = inner.stop_all.cancelled() => return,
        o = driver::drive(&shared, generation, stream, |p| {
            if let Progress::MessagesWaiting = p
                && !inner.emit(ServerEvent::MessagesWaiting { peer: peer.clone() })
            {
                // Dropped: announce this peer again on its next arrival.
                peer.shared.lock().notified = false;
            }
        }) => o,
    };
    match outcome {
        Outcome::Replaced => {}
        Outcome::Disconnected(error) => {
            // A store notes when the session was last seen: its linger counts from here, also
            // across a restart.
            {
                let mut st = peer.shared.lock();
                // Only while this connection's session is still detached: a resume may have
                // taken it over meanwhile, and its driver commits for it.
                if st.generation == generation && matches!(st.link, Link::Detached(_)) {
                    drop(st.durable_commit(true));
                }
            }
            inner.emit(ServerEvent::Disconnected {
                peer: peer.clone(),
                error,
            });
            let linger = inner.config.linger;
            let inner2 = inner.clone();
            inner.tracker.spawn(async move {
                tokio::select! {
                    () = inner2.stop_all.cancelled() => {}
                    () = tokio::time::sleep(linger) => expire(&inner2, &peer, generation, linger),
                }
            });
        }
        Outcome::Ended(reason) => {
            let id = shared.lock().id;
            inner.forget(id, &shared);
            let unacknowledged = peer.unacknowledged();
            inner.emit(ServerEvent::Ended {
                peer,
                reason: EndReason::Protocol(reason),
                unacknowledged,
            });
        }
    }
}

/// The application's side of the handshake: new session, resume (taking the session over
/// from a half-open connection, PROTOCOL.md §4.4 rule B), or REJECT.
/// The TLS handshake, when the server has TLS, within the handshake timeout. Returns the
/// stream and the client's verified certificate (mutual TLS).
async fn secure(inner: &Inner, tcp: TcpStream) -> Option<(BoxStream, Option<Vec<u8>>)> {
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
                debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                None
            }
        };
    }
    let _ = inner;
    Some((Box::new(tcp), None))
}

fn decide(
    inner: &Arc<Inner>,
    conn: &mut Connection,
    hello: HelloRequest,
    addr: SocketAddr,
    certificate: Option<&[u8]>,
) -> Option<(Arc<PeerShared>, u64, bool)> {
    let now = driver::now();
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
        match (auth.0)(&req) {
            AuthDecision::Accept => {}
            AuthDecision::AcceptAs(n) => name = Some(n),
            AuthDecision::Refuse(reason) => {
                debug!(%addr, "refused: {reason}");
                conn.reject(RejectCode::Unauthenticated, 0, &reason);
                return None;
            }
        }
    }
    let (Some(token), Some(id_bytes)) = (random16(), random16()) else {
        conn.reject(RejectCode::ServerFull, 1_000, "no randomness available");
        return None;
    };
    let token = ResumeToken(token);
    let Some(resume) = hello.resume else {
        let mut reg = inner.registry();
        let over_budget = inner.budget.used.load(Ordering::Relaxed) >= inner.budget.limit;
        if reg.sessions.len() >= inner.config.max_sessions || over_budget {
            let ms = u32::try_from(inner.config.full_retry_after.as_millis()).unwrap_or(u32::MAX);
            let why = if over_budget {
                "memory budget spent"
            } else {
                "session limit reached"
            };
            conn.reject(RejectCode::ServerFull, ms, why);
            return None;
        }
        let id = SessionId(id_bytes);
        conn.accept_new(now, id, token);
        // The handshake checked that every transform the client named is supported here.
        let chain = conn
            .session()
            .and_then(|s| inner.config.transforms.select(s.transforms()))
            .unwrap_or_default();
        let placeholder = Connection::accept(inner.config.proto.clone(), now).ok()?;
        let attached = std::mem::replace(conn, placeholder);
        let shared = PeerShared::new(
            Role::Server,
            name.clone(),
            Link::Attached(Box::new(attached)),
            chain,
        );
        {
            let mut st = shared.lock();
            st.generation = 1;
            st.addr = Some(addr);
            st.certificate = certificate.map(<[u8]>::to_vec);
            st.id = Some(id);
            st.connected = true;
            st.budget = Some(inner.budget.clone());
            st.account();
        }
        if let Some(store) = &inner.config.store {
            shared.lock().durable = Some(Durable::new(store.clone(), id.0, None));
        }
        install_forget(inner, &shared);
        reg.sessions.insert(id, shared.clone());
        if let Some(name) = name {
            reg.names.insert(name, id);
        }
        debug!(session = %id, "new session");
        return Some((shared, 1, false));
    };
    let shared = inner.registry().sessions.get(&resume.session_id).cloned();
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
        .is_some_and(|s| s.can_resume_from(resume.received))
    {
        drop(st);
        conn.reject(RejectCode::ProtocolError, 0, "impossible resume position");
        return None;
    }
    // With mutual TLS, a session resumes only under the certificate that created it.
    if st.certificate.is_some() && st.certificate.as_deref() != certificate {
        drop(st);
        conn.reject(
            RejectCode::Unauthenticated,
            0,
            "not the certificate of this session",
        );
        return None;
    }
    let old_generation = st.generation;
    let session = match std::mem::replace(&mut st.link, Link::Ended) {
        Link::Attached(mut old) => match old.take_session() {
            Some(s) => {
                // The old connection's last words (GOAWAY SessionTakenOver) go to its driver.
                let mut bytes = Vec::new();
                old.poll_transmit(now, &mut bytes);
                st.farewell = Some((old_generation, bytes));
                s
            }
            None => {
                // Its session ended on that connection a moment ago; its driver reports it.
                st.link = Link::Attached(old);
                drop(st);
                conn.reject(RejectCode::UnknownSession, 0, "unknown or expired session");
                return None;
            }
        },
        Link::Detached(s) => *s,
        Link::Ended => {
            drop(st);
            conn.reject(RejectCode::UnknownSession, 0, "unknown or expired session");
            return None;
        }
    };
    match conn.accept_resume(now, session, token) {
        Ok(()) => {
            let placeholder = Connection::accept(inner.config.proto.clone(), now).ok()?;
            let attached = std::mem::replace(conn, placeholder);
            st.link = Link::Attached(Box::new(attached));
            st.generation += 1;
            st.addr = Some(addr);
            st.certificate = certificate.map(<[u8]>::to_vec);
            st.connected = true;
            let generation = st.generation;
            drop(st);
            // A driver of the old connection sees the new generation and stops.
            shared.wake_all();
            debug!(session = %resume.session_id, "resumed");
            Some((shared, generation, true))
        }
        Err(session) => {
            st.link = Link::Detached(session);
            None
        }
    }
}

/// Lets the application's `close` on a peer remove it from the registry.
fn install_forget(inner: &Arc<Inner>, shared: &Arc<PeerShared>) {
    let weak = Arc::downgrade(inner);
    let _ = shared
        .forget
        .set(crate::peer::ForgetHook(Box::new(move |peer| {
            if let Some(inner) = weak.upgrade() {
                let id = peer.lock().id;
                inner.forget(id, peer);
            }
        })));
}

/// Brings back the sessions a store kept: each lingers, resumable, for what is left of its
/// linger time counted from when it was last seen (expired ones end at once, handing their
/// unacknowledged messages to the application as usual).
fn restore_sessions(inner: &Arc<Inner>, store: &Arc<dyn SessionStore>) -> Result<usize, BindError> {
    let stored = store.load()?;
    let now_ms = crate::peer::wall_clock_us() / 1_000;
    let linger = inner.config.linger;
    let linger_ms = u64::try_from(linger.as_millis()).unwrap_or(u64::MAX);
    let mut reg = inner.registry();
    let count = stored.len();
    for s in stored {
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
            name.clone(),
            Link::Detached(Box::new(session)),
            chain,
        );
        let generation = {
            let mut st = shared.lock();
            st.id = Some(id);
            st.budget = Some(inner.budget.clone());
            st.durable = Some(Durable::new(store.clone(), id.0, Some(committed)));
            st.account();
            st.generation
        };
        install_forget(inner, &shared);
        reg.sessions.insert(id, shared.clone());
        if let Some(name) = name {
            reg.names.insert(name, id);
        }
        // A session that was lingering when last seen lingers for what is left; one that was
        // connected lost its connection with the process: a full linger from now.
        let left = if s.lingering {
            Duration::from_millis((s.last_seen_ms.saturating_add(linger_ms)).saturating_sub(now_ms))
        } else {
            linger
        };
        let peer = Peer { shared };
        let inner2 = inner.clone();
        inner.tracker.spawn(async move {
            tokio::select! {
                () = inner2.stop_all.cancelled() => {}
                () = tokio::time::sleep(left) => expire(&inner2, &peer, generation, linger),
            }
        });
    }
    Ok(count)
}

fn expire(inner: &Arc<Inner>, peer: &Peer, generation: u64, linger: Duration) {
    let unacknowledged = {
        let mut st = peer.shared.lock();
        if st.generation != generation {
            return;
        }
        if matches!(st.link, Link::Ended) {
            // The application closed it while it lingered: only the registry entry is left.
            let id = st.id;
            drop(st);
            inner.forget(id, &peer.shared);
            return;
        }
        if !matches!(st.link, Link::Detached(_)) {
            return;
        }
        let (acked, unacked) = match st.session_mut() {
            Some(s) => (s.acked(), s.take_unacknowledged()),
            None => return,
        };
        st.end(EndReason::Expired(linger), unacked, acked);
        st.ending
            .as_ref()
            .and_then(|e| e.unacknowledged.clone())
            .unwrap_or_default()
    };
    peer.shared.wake_all();
    let id = peer.shared.lock().id;
    inner.forget(id, &peer.shared);
    debug!(unacknowledged = unacknowledged.len(), "session expired");
    inner.emit(ServerEvent::Expired {
        peer: peer.clone(),
        unacknowledged,
    });
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
