//! The client: connects, and after any loss reconnects with jittered exponential backoff and
//! resumes its session, resending exactly what the server lacks.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span};

use crate::config::ClientConfig;
use crate::decode::Receiving;
use crate::driver::{self, BoxStream, Outcome, Progress};
use crate::error::{ConnectError, EndReason};
use crate::peer::Peer;
use crate::proto::{
    Connection, ConnectionError, Message, Role, Session, SessionEnd, SessionRecord,
};
use crate::session::{Durable, Link, PeerShared};
use crate::store::{CLIENT_KEY, StoreError};

/// Something that happened to a client's session.
#[derive(Debug)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A connection carries the session: a new one (`resumed == false`, only the first time)
    /// or the same one resumed after a loss.
    Connected {
        /// The session was resumed.
        resumed: bool,
    },
    /// The connection was lost; the session lives on and a reconnect follows.
    Disconnected {
        /// Why.
        error: ConnectionError,
    },
    /// A reconnect attempt will start after `delay`.
    Reconnecting {
        /// Attempts in a row since the last success (1 for the first).
        attempt: u32,
        /// The jittered backoff delay.
        delay: Duration,
    },
    /// The session is over and will not come back; the client does not start a new one by
    /// itself. Messages the server never acknowledged are handed back.
    SessionLost {
        /// Why.
        reason: EndReason,
        /// Unacknowledged messages, in order.
        unacknowledged: Vec<Message>,
    },
}

/// A connected client. It dereferences to its [`Peer`] handle (`send`, `recv`, `stats`, …).
///
/// A cheap handle: clones share the session. The session ends with [`Peer::close`] (on any
/// clone), or when the last `Client` handle is dropped: that stops the connection task
/// (call [`Peer::flush`] or [`Peer::close`] first to be sure everything arrived), and [`Peer`]
/// handles taken from it then report the session ended ([`EndReason::ClientDropped`]).
#[derive(Clone, Debug)]
pub struct Client {
    peer: Peer,
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    peer: Peer,
    events: Arc<ClientEvents>,
    task: JoinHandle<()>,
}

impl Drop for ClientInner {
    fn drop(&mut self) {
        self.task.abort();
        // Handles the application kept must learn that nothing carries the session any more.
        self.peer.shared.abandon(EndReason::ClientDropped);
        self.events.close();
    }
}

/// A client's events: never dropped. At most one of each kind waits to be read; a repeated
/// one of a kind already waiting is folded into it and reads as the latest (the newest
/// error, the newest attempt), so the queue holds at most four events.
#[derive(Debug, Default)]
struct ClientEvents {
    state: Mutex<Waiting>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct Waiting {
    order: VecDeque<Kind>,
    resumed: bool,
    error: Option<ConnectionError>,
    attempt: u32,
    delay: Duration,
    lost: Option<(EndReason, Vec<Message>)>,
    closed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Connected,
    Disconnected,
    Reconnecting,
    Lost,
}

impl ClientEvents {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, event: ClientEvent) {
        {
            let mut w = self.lock();
            if w.closed {
                return;
            }
            let kind = match event {
                ClientEvent::Connected { resumed } => {
                    w.resumed = resumed;
                    Kind::Connected
                }
                ClientEvent::Disconnected { error } => {
                    w.error = Some(error);
                    Kind::Disconnected
                }
                ClientEvent::Reconnecting { attempt, delay } => {
                    w.attempt = attempt;
                    w.delay = delay;
                    Kind::Reconnecting
                }
                ClientEvent::SessionLost {
                    reason,
                    unacknowledged,
                } => {
                    w.lost = Some((reason, unacknowledged));
                    Kind::Lost
                }
            };
            if !w.order.contains(&kind) {
                w.order.push_back(kind);
            }
        }
        self.ready.notify_waiters();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_waiters();
    }

    fn try_next(&self) -> Option<ClientEvent> {
        let mut w = self.lock();
        let kind = w.order.pop_front()?;
        Some(match kind {
            Kind::Connected => ClientEvent::Connected { resumed: w.resumed },
            Kind::Disconnected => ClientEvent::Disconnected {
                error: w.error.take().unwrap_or(ConnectionError::Reset),
            },
            Kind::Reconnecting => ClientEvent::Reconnecting {
                attempt: w.attempt,
                delay: w.delay,
            },
            Kind::Lost => {
                let (reason, unacknowledged) = w.lost.take()?;
                ClientEvent::SessionLost {
                    reason,
                    unacknowledged,
                }
            }
        })
    }

    async fn next(&self) -> Option<ClientEvent> {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(e) = self.try_next() {
                return Some(e);
            }
            if self.lock().closed {
                return None;
            }
            notified.await;
        }
    }
}

/// Closes the event queue when the connection task ends, however it ends.
struct CloseOnExit(Arc<ClientEvents>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The session to start with: the stored one (to resume), a new one continuing a stored
/// ended session's sequence numbers, or a new one. Also what the store holds of it.
fn stored_session(config: &ClientConfig) -> Result<(Session, Option<SessionRecord>), ConnectError> {
    let fresh = |proto: &crate::proto::Config| Session::client(proto, config.name.clone());
    let Some(store) = &config.store else {
        return Ok((fresh(&config.proto), None));
    };
    let mut stored = store.load()?;
    if stored
        .iter()
        .any(|s| s.key != CLIENT_KEY || s.record.role != Role::Client)
    {
        return Err(StoreError::Foreign("the store holds sessions of a server".into()).into());
    }
    match stored.pop() {
        None => Ok((fresh(&config.proto), None)),
        Some(s) if s.ended => {
            // Sequence numbers go on where the ended session stopped.
            let proto = config.proto.clone().initial_seq(s.record.next_seq);
            Ok((fresh(&proto), None))
        }
        Some(s) => {
            let committed = s.record.clone();
            let session = Session::restore(&config.proto, s.record, s.outbox)?;
            debug!(
                resumable = session.id().is_some(),
                unacknowledged = session.outbox_len(),
                "restored the stored session"
            );
            Ok((session, Some(committed)))
        }
    }
}

impl Client {
    /// Connects to `addr` (host:port; resolved again on every reconnect) and establishes a new
    /// session. Reconnection after later losses is automatic.
    ///
    /// Several addresses — servers of a fleet sharing a store (PROTOCOL.md §13) — are given
    /// as a list or comma-separated (`"a:7000,b:7000"`): they are tried in turn. The first
    /// connection tries each once; after a loss (or a GOAWAY, as during a deploy) the client
    /// reconnects to the next one, with its backoff, and resumes its session there.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), steadfast::error::ConnectError> {
    /// let config = steadfast::ClientConfig::default();
    /// let client = steadfast::Client::connect("10.0.0.1:7000,10.0.0.2:7000", config).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConnectError`] if the configuration is invalid, no address is given, none can be
    /// reached, or the server refuses the session. The first connection is not retried beyond
    /// one try of each address.
    pub async fn connect(
        addr: impl IntoAddrs,
        config: ClientConfig,
    ) -> Result<Client, ConnectError> {
        config.validate()?;
        let addrs: Arc<[String]> = addr.into_addrs().into();
        if addrs.is_empty() {
            return Err(ConnectError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no address given",
            )));
        }
        let addr = addrs.join(",");
        let (session, committed) = stored_session(&config)?;
        let shared = PeerShared::new(
            Role::Client,
            config.name.clone(),
            Link::Detached(Box::new(session)),
            config.transforms.clone(),
            &Receiving::new(&config.proto, 1, config.recv_spin),
        );
        if let Some(store) = &config.store {
            shared.lock().durable =
                Some(Box::new(Durable::new(store.clone(), CLIENT_KEY, committed)));
        }
        let events = Arc::new(ClientEvents::default());
        let (first_tx, first_rx) = oneshot::channel();
        let span = info_span!("client", %addr);
        let mut guard = AbortOnDrop(Some(tokio::spawn(
            run(shared.clone(), config, addrs, events.clone(), first_tx).instrument(span),
        )));
        match first_rx.await {
            Ok(Ok(())) => {
                let task = guard
                    .0
                    .take()
                    .ok_or_else(|| ConnectError::Handshake("no task".into()))?;
                let peer = Peer { shared };
                Ok(Client {
                    inner: Arc::new(ClientInner {
                        peer: peer.clone(),
                        events,
                        task,
                    }),
                    peer,
                })
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Handshake("connection task ended".into())),
        }
    }

    /// The session handle (also reachable through `Deref`).
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The next event, or `None` once the session is over and every event was read. Events
    /// are never dropped (see [`ClientEvent`]); clones share them (each is read once).
    pub async fn next_event(&self) -> Option<ClientEvent> {
        self.inner.events.next().await
    }

    /// The next event if one is ready.
    pub fn try_next_event(&self) -> Option<ClientEvent> {
        self.inner.events.try_next()
    }

    /// The events as a [`Stream`](futures_core::Stream) (see [`Client::next_event`]).
    pub fn events(&self) -> impl futures_core::Stream<Item = ClientEvent> + Send + 'static {
        futures_util::stream::unfold(self.clone(), |client| async move {
            let event = client.next_event().await?;
            Some((event, client))
        })
    }
}

impl Deref for Client {
    type Target = Peer;

    fn deref(&self) -> &Peer {
        &self.peer
    }
}

/// Aborts the connection task if `connect` is cancelled before it returns.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            t.abort();
        }
    }
}

/// A full-jitter exponential backoff delay: uniform in `0..=min(max, initial × 2^attempt)`.
pub(crate) fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    let cap = initial.saturating_mul(factor).min(max);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

async fn run(
    shared: Arc<PeerShared>,
    config: ClientConfig,
    addrs: Arc<[String]>,
    events: Arc<ClientEvents>,
    first: oneshot::Sender<Result<(), ConnectError>>,
) {
    let _close = CloseOnExit(events.clone());
    let mut first = Some(first);
    let mut attempt = 0u32;
    // A session from a store that a server accepted before: its first connection resumes.
    let restored = shared.lock().session().and_then(Session::id).is_some();
    // Which address is next: after a failure or a loss, the one after it.
    let mut at = 0usize;
    loop {
        let addr = &addrs[at % addrs.len()];
        at = at.wrapping_add(1);
        let connected =
            match tokio::time::timeout(config.connect_timeout, open(addr, &config)).await {
                Ok(Ok(s)) => Ok(s),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )),
            };
        let mut retry_after = Duration::ZERO;
        match connected {
            Err(e) if first.is_some() && at < addrs.len() => {
                // The first connection tries every address once.
                debug!(error = %e, %addr, "connect failed; trying the next address");
                continue;
            }
            Err(e) => {
                if let Some(tx) = first.take() {
                    // Not reached: a stored session stays as it is for the next attempt.
                    shared.lock().durable = None;
                    end(&shared, EndReason::GaveUp(1), None);
                    let _ = tx.send(Err(ConnectError::Io(e)));
                    return;
                }
                debug!(error = %e, "connect failed");
            }
            Ok((stream, peer_addr)) => {
                let Some(generation) = attach(&shared, &config, peer_addr) else {
                    return;
                };
                let mut established = false;
                let outcome = driver::drive(&shared, generation, stream, |p| {
                    if let Progress::Established { resumed } = p {
                        established = true;
                        if let Some(tx) = first.take() {
                            let _ = tx.send(Ok(()));
                        }
                        events.push(ClientEvent::Connected { resumed });
                    }
                })
                .await;
                if established {
                    attempt = 0;
                }
                match outcome {
                    Outcome::Ended(reason) => {
                        let unacknowledged = Peer {
                            shared: shared.clone(),
                        }
                        .unacknowledged();
                        if let Some(tx) = first.take() {
                            if restored {
                                let _ = tx.send(Err(ConnectError::SessionLost {
                                    reason: EndReason::Protocol(reason),
                                    unacknowledged,
                                }));
                                return;
                            }
                            let err = match &reason {
                                SessionEnd::Rejected { code, reason } => ConnectError::Rejected {
                                    code: *code,
                                    reason: reason.clone(),
                                },
                                other => ConnectError::Handshake(other.to_string()),
                            };
                            let _ = tx.send(Err(err));
                            return;
                        }
                        events.push(ClientEvent::SessionLost {
                            reason: EndReason::Protocol(reason),
                            unacknowledged,
                        });
                        return;
                    }
                    Outcome::Replaced => return,
                    Outcome::Disconnected(error) => {
                        if let Some(tx) = first.take() {
                            // The session itself was not refused: a stored one stays as it is.
                            shared.lock().durable = None;
                            end(&shared, EndReason::GaveUp(1), None);
                            let err = match error {
                                ConnectionError::Rejected { code, reason, .. } => {
                                    ConnectError::Rejected { code, reason }
                                }
                                other => ConnectError::Handshake(other.to_string()),
                            };
                            let _ = tx.send(Err(err));
                            return;
                        }
                        retry_after = match &error {
                            ConnectionError::Rejected { retry_after_ms, .. }
                            | ConnectionError::GoAway { retry_after_ms, .. } => {
                                Duration::from_millis(u64::from(*retry_after_ms))
                            }
                            _ => Duration::ZERO,
                        };
                        events.push(ClientEvent::Disconnected { error });
                    }
                }
            }
        }
        attempt += 1;
        if config.max_attempts.is_some_and(|max| attempt > max) {
            let unacknowledged = end(&shared, EndReason::GaveUp(attempt - 1), Some(()));
            events.push(ClientEvent::SessionLost {
                reason: EndReason::GaveUp(attempt - 1),
                unacknowledged,
            });
            return;
        }
        let delay = retry_after + backoff(attempt - 1, config.backoff_initial, config.backoff_max);
        events.push(ClientEvent::Reconnecting { attempt, delay });
        tokio::time::sleep(delay).await;
    }
}

/// Addresses [`Client::connect`] accepts: one `host:port`, several separated by commas, or a
/// list of them.
pub trait IntoAddrs {
    /// The addresses, in the order they are tried.
    fn into_addrs(self) -> Vec<String>;
}

fn split_addrs(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect()
}

impl IntoAddrs for &str {
    fn into_addrs(self) -> Vec<String> {
        split_addrs(self)
    }
}

impl IntoAddrs for String {
    fn into_addrs(self) -> Vec<String> {
        split_addrs(&self)
    }
}

impl IntoAddrs for &String {
    fn into_addrs(self) -> Vec<String> {
        split_addrs(self)
    }
}

impl IntoAddrs for std::net::SocketAddr {
    fn into_addrs(self) -> Vec<String> {
        vec![self.to_string()]
    }
}

impl<T: IntoAddrs> IntoAddrs for Vec<T> {
    fn into_addrs(self) -> Vec<String> {
        self.into_iter().flat_map(IntoAddrs::into_addrs).collect()
    }
}

impl<T: IntoAddrs + Clone> IntoAddrs for &[T] {
    fn into_addrs(self) -> Vec<String> {
        self.iter()
            .cloned()
            .flat_map(IntoAddrs::into_addrs)
            .collect()
    }
}

impl<T: IntoAddrs, const N: usize> IntoAddrs for [T; N] {
    fn into_addrs(self) -> Vec<String> {
        self.into_iter().flat_map(IntoAddrs::into_addrs).collect()
    }
}

/// Opens the transport: TCP, and TLS on top when configured.
async fn open(
    addr: &str,
    config: &ClientConfig,
) -> std::io::Result<(BoxStream, Option<std::net::SocketAddr>)> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let peer_addr = tcp.peer_addr().ok();
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.tls {
        let name = tls
            .name_for(addr)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let stream = connector.connect(name, tcp).await?;
        return Ok((Box::new(stream), peer_addr));
    }
    let _ = config;
    Ok((Box::new(tcp), peer_addr))
}

/// Puts the detached session on a new connection; returns its generation.
fn attach(
    shared: &PeerShared,
    config: &ClientConfig,
    addr: Option<std::net::SocketAddr>,
) -> Option<u64> {
    let mut st = shared.lock();
    let Link::Detached(_) = &st.link else {
        return None;
    };
    let Link::Detached(session) = std::mem::replace(&mut st.link, Link::Ended) else {
        return None;
    };
    match Connection::connect(
        config.proto.clone(),
        driver::now(),
        *session,
        config.credentials.clone(),
    ) {
        Ok(conn) => Some(st.attach(conn, addr)),
        Err(_) => None,
    }
}

/// Ends the session from the client side (no connection); returns the unacknowledged
/// messages if `take` is set (otherwise they stay on the handle).
fn end(shared: &Arc<PeerShared>, reason: EndReason, take: Option<()>) -> Vec<Message> {
    let unacked = {
        let mut st = shared.lock();
        if !st.end_here(reason) {
            return Vec::new();
        }
        if take.is_some() {
            st.unacknowledged()
        } else {
            Vec::new()
        }
    };
    shared.settle();
    unacked
}
