//! Named routes and request/response on top of a session (feature `serde`).
//!
//! An [`Rpc`] takes over a [`Peer`]'s receiving side: every message is an envelope (a
//! MessagePack array `[kind, route, id, payload]`, language-neutral) that is either a one-way
//! message to a route, a request to a route, or a reply to a request. Requests and one-way
//! messages go to the handlers of a [`Router`]; replies go to the [`Rpc::request`] waiting for
//! them (replies carry an empty route: they find their request by its id). Both sides of a
//! session can do both.
//!
//! Delivery is the session's: requests and replies arrive exactly once, in order, across
//! connection cuts. Edge cases, by design:
//! - a reply arriving after its request's deadline is dropped quietly;
//! - requests pending when the session is lost fail with [`RequestError::OutcomeUnknown`]: the
//!   handler may or may not have run;
//! - a request or message to a route nobody handles gets an error reply (never a silent drop);
//! - a handler's error comes back as [`RequestError::Handler`];
//! - a reply too large to send (above the session's largest message) comes back as an error
//!   reply saying so, never as a silence until the deadline;
//! - one-way messages are handled in order, one at a time; requests run concurrently, at
//!   most [`Router::max_in_flight`] handlers at once per session (default
//!   [`DEFAULT_MAX_IN_FLIGHT`]). At the limit the next message is left in the session
//!   unacknowledged, so the requester's `send` ends up waiting (backpressure) instead of this
//!   side piling up tasks;
//! - handlers still running when the [`Rpc`] is dropped are cancelled with it.
//!
//! ```
//! use std::time::Duration;
//! use steadfast::rpc::{Router, Rpc};
//! use steadfast::{Client, ClientConfig, Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).await?;
//! let client = Client::connect(server.local_addrs()[0].to_string(), ClientConfig::default()).await?;
//! let Some(peer) = server.accept().await else { panic!() };
//!
//! let router = Router::new().route("add", |_ctx, (a, b): (i64, i64)| async move { Ok::<_, String>(a + b) });
//! let _server_side = Rpc::new(peer, router);
//! let client_side = Rpc::new(client.peer().clone(), Router::new());
//! let sum: i64 = client_side.request("add", &(2, 3), Duration::from_secs(5)).await?;
//! assert_eq!(sum, 5);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::{JoinHandle, JoinSet};

use crate::error::{RecvError, SendError};
use crate::peer::Peer;

/// Envelope kinds on the wire.
const MESSAGE: u8 = 0;
const REQUEST: u8 = 1;
const REPLY: u8 = 2;
const ERROR_REPLY: u8 = 3;

/// Error text of a reply to a route nobody handles.
pub const UNKNOWN_ROUTE: &str = "unknown route";

/// Handlers an [`Rpc`] runs at once on its session unless [`Router::max_in_flight`] says
/// otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

#[derive(Serialize, Deserialize)]
struct Envelope {
    kind: u8,
    route: String,
    id: u64,
    #[serde(with = "serde_bytes_compat")]
    payload: Vec<u8>,
}

/// Encodes `Vec<u8>` as MessagePack binary (not an array of integers).
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Why a request got no value back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply within the deadline (a late reply is dropped quietly).
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The session ended while the request was pending: the handler may or may not have run.
    #[error("session lost: outcome unknown")]
    OutcomeUnknown,
    /// The request could not be sent.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The value could not be encoded.
    #[error("cannot encode the request: {0}")]
    Encode(String),
    /// The reply could not be decoded as the expected type.
    #[error("cannot decode the reply: {0}")]
    Decode(String),
    /// The handler failed, or no handler exists for the route ([`UNKNOWN_ROUTE`]).
    #[error("handler error: {0}")]
    Handler(String),
}

/// What a handler sees of the request besides its value.
#[derive(Clone, Debug)]
pub struct Context {
    /// The session it came from (id, name, address, authenticated certificate).
    pub peer: Peer,
    /// The route name.
    pub route: String,
}

type Handler = Arc<
    dyn Fn(Context, Vec<u8>) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>>
        + Send
        + Sync,
>;

/// Route names mapped to async handlers, and how many handlers may run at once.
#[derive(Clone)]
pub struct Router {
    routes: HashMap<String, Handler>,
    fallback: Option<Handler>,
    max_in_flight: usize,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            routes: HashMap::new(),
            fallback: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback.is_some())
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl Router {
    /// An empty router (every route unknown).
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds a handler for `name`: it gets the decoded value and returns the reply value or an
    /// error text (sent back as an error reply).
    pub fn route<T, R, E, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: Fn(Context, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.routes.insert(name.to_owned(), erase(handler));
        self
    }

    /// Adds a handler for every route that has none of its own (instead of the error reply
    /// [`UNKNOWN_ROUTE`]); [`Context::route`] names the route asked for. A fallback that
    /// takes any value, such as `rmpv::Value`, serves requests it knows nothing about, as
    /// `steadfast serve --exec` does.
    ///
    /// ```
    /// use steadfast::rpc::Router;
    ///
    /// let router = Router::new()
    ///     .route("add", |_ctx, (a, b): (i64, i64)| async move { Ok::<_, String>(a + b) })
    ///     .fallback(|ctx, _value: ()| async move {
    ///         Err::<(), _>(format!("{} is retired: ask `add`", ctx.route))
    ///     });
    /// # let _ = router;
    /// ```
    pub fn fallback<T, R, E, F, Fut>(mut self, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: std::fmt::Display + Send + 'static,
        F: Fn(Context, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
    {
        self.fallback = Some(erase(handler));
        self
    }

    /// How many handlers an [`Rpc`] built from this router runs at once on its session:
    /// requests and one-way messages together (the one-way ones one at a time among
    /// themselves). Default [`DEFAULT_MAX_IN_FLIGHT`] (64); 0 counts as 1. Each `Rpc` has its
    /// own slots, so a router shared by many sessions allows this many per session.
    ///
    /// The `Rpc` takes the next message from the session only once a slot is free, and taking
    /// a message is what acknowledges it. So while every slot is busy, further requests stay
    /// unacknowledged in the session's receive window; once that is full they wait in the
    /// requester's outbox, and once that is full the requester's `send` (and so
    /// [`Rpc::request`]) waits. The load is pushed back to the requester instead of piling up
    /// tasks here; a requester that gives up meanwhile gets [`RequestError::Timeout`] and its
    /// request may still run later.
    ///
    /// Replies to this side's own requests come in through the same session, behind the
    /// requests waiting for a slot. A handler that makes a request to its own peer and waits
    /// for the reply holds its slot meanwhile: if every slot does so, those replies cannot be
    /// read and the requests run into their deadlines. Keep such call-backs below the limit.
    ///
    /// ```
    /// use steadfast::rpc::Router;
    ///
    /// let router = Router::new()
    ///     .route("echo", |_ctx, s: String| async move { Ok::<_, String>(s) })
    ///     .max_in_flight(8);
    /// # let _ = router;
    /// ```
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.clamp(1, Semaphore::MAX_PERMITS);
        self
    }
}

/// A typed handler as one that takes and gives encoded values.
fn erase<T, R, E, F, Fut>(handler: F) -> Handler
where
    T: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    E: std::fmt::Display + Send + 'static,
    F: Fn(Context, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |ctx, payload| {
        let handler = handler.clone();
        Box::pin(async move {
            let value: T = rmp_serde::from_slice(&payload)
                .map_err(|e| format!("cannot decode the request: {e}"))?;
            let reply = handler(ctx, value).await.map_err(|e| e.to_string())?;
            rmp_serde::to_vec_named(&reply).map_err(|e| format!("cannot encode the reply: {e}"))
        })
    })
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Vec<u8>, RequestError>>>>>;

/// Requests, one-way messages and a router over one session.
#[derive(Debug)]
pub struct Rpc {
    peer: Peer,
    pending: Pending,
    next_id: AtomicU64,
    reader: JoinHandle<()>,
}

impl Drop for Rpc {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Rpc {
    /// Takes over `peer`'s receiving side: incoming requests and messages go to `router`,
    /// replies to the requests made here. (Do not `recv` on the peer elsewhere meanwhile.)
    ///
    /// At most [`Router::max_in_flight`] handlers run at once; dropping the `Rpc` cancels the
    /// reader and every handler still running.
    pub fn new(peer: Peer, router: Router) -> Rpc {
        let pending: Pending = Arc::default();
        let reader = tokio::spawn(read(peer.clone(), Arc::new(router), pending.clone()));
        Rpc {
            peer,
            pending,
            next_id: AtomicU64::new(1),
            reader,
        }
    }

    /// The session.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// Sends a request to `route` and waits for its reply, at most `deadline`.
    ///
    /// # Errors
    /// [`RequestError`]: timeout, session lost (outcome unknown), handler error (including an
    /// unknown route), encoding or decoding failures.
    pub async fn request<T, R>(
        &self,
        route: &str,
        value: &T,
        deadline: Duration,
    ) -> Result<R, RequestError>
    where
        T: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let payload =
            rmp_serde::to_vec_named(value).map_err(|e| RequestError::Encode(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let sent = send_envelope(&self.peer, REQUEST, route, id, payload).await;
        if let Err(e) = sent {
            lock(&self.pending).remove(&id);
            return Err(e.into());
        }
        let reply = match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(r)) => r?,
            Ok(Err(_)) => return Err(RequestError::OutcomeUnknown),
            Err(_) => {
                lock(&self.pending).remove(&id);
                return Err(RequestError::Timeout(deadline));
            }
        };
        rmp_serde::from_slice(&reply).map_err(|e| RequestError::Decode(e.to_string()))
    }

    /// Sends a one-way message to `route` (no reply, except an error reply if the route is
    /// unknown or its handler fails — which arrives as nothing here but is logged by tracing).
    ///
    /// # Errors
    /// If the value cannot be encoded or the message cannot be sent.
    pub async fn notify<T: Serialize + ?Sized>(
        &self,
        route: &str,
        value: &T,
    ) -> Result<(), RequestError> {
        let payload =
            rmp_serde::to_vec_named(value).map_err(|e| RequestError::Encode(e.to_string()))?;
        send_envelope(&self.peer, MESSAGE, route, 0, payload).await?;
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn send_envelope(
    peer: &Peer,
    kind: u8,
    route: &str,
    id: u64,
    payload: Vec<u8>,
) -> Result<(), SendError> {
    let env = Envelope {
        kind,
        route: route.to_owned(),
        id,
        payload,
    };
    // An envelope of plain types always encodes.
    let bytes = rmp_serde::to_vec(&env).unwrap_or_default();
    peer.send(Bytes::from(bytes)).await.map(|_| ())
}

/// Sends a reply or an error reply. Replies find their request by id, so they carry no route:
/// a request whose route fills its message leaves room for its reply. One too large to send
/// becomes an error reply saying so, so that the requester learns why instead of waiting for
/// its deadline.
async fn answer(peer: &Peer, kind: u8, id: u64, payload: Vec<u8>) {
    if let Err(SendError::TooLarge { len, max }) = send_envelope(peer, kind, "", id, payload).await
    {
        let what = if kind == REPLY {
            "reply"
        } else {
            "error reply"
        };
        let why = format!("the {what} of {len} bytes is above the largest message of {max} bytes");
        let _ = send_envelope(peer, ERROR_REPLY, "", id, why.into_bytes()).await;
    }
}

async fn read(peer: Peer, router: Arc<Router>, pending: Pending) {
    let slots = Arc::new(Semaphore::new(router.max_in_flight));
    // Owned by the reader, so aborting the reader (dropping the Rpc) aborts every handler.
    let mut handlers = JoinSet::new();
    loop {
        // A slot first, then a message: taking a message acknowledges it, so a request is
        // acknowledged only once a handler slot has taken it. Until then it stays in the
        // session and the sender's window and outbox fill up (backpressure).
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break; // never closed
        };
        reap(&mut handlers);
        let m = match peer.recv().await {
            Ok(m) => m,
            Err(RecvError::Transform { seq, error }) => {
                // Taken and acknowledged by the session; its envelope is unreadable.
                tracing::debug!(%seq, %error, "message did not decode; dropped");
                continue;
            }
            Err(_) => break,
        };
        let Ok(env) = rmp_serde::from_slice::<Envelope>(&m.body) else {
            // Seen by whoever runs this side (a peer speaking plain messages to an rpc is a
            // mistake to fix), and answered, so the sender can know too.
            tracing::warn!(seq = %m.seq, session = ?peer.id(), "not an rpc envelope: answered with an error reply and dropped");
            let _ = send_envelope(&peer, ERROR_REPLY, "", 0, b"not an rpc envelope".to_vec()).await;
            continue;
        };
        match env.kind {
            REPLY | ERROR_REPLY => {
                let waiter = lock(&pending).remove(&env.id);
                if let Some(w) = waiter {
                    let r = if env.kind == REPLY {
                        Ok(env.payload)
                    } else {
                        Err(RequestError::Handler(
                            String::from_utf8_lossy(&env.payload).into_owned(),
                        ))
                    };
                    let _ = w.send(r);
                } else if env.kind == ERROR_REPLY {
                    tracing::debug!(
                        id = env.id,
                        "error reply: {}",
                        String::from_utf8_lossy(&env.payload)
                    );
                }
                // A reply whose request timed out: dropped quietly.
            }
            kind @ (REQUEST | MESSAGE) => {
                let ctx = Context {
                    peer: peer.clone(),
                    route: env.route.clone(),
                };
                let handler = router
                    .routes
                    .get(&env.route)
                    .or(router.fallback.as_ref())
                    .cloned();
                let peer = peer.clone();
                let job = async move {
                    let result = match handler {
                        Some(h) => h(ctx, env.payload).await,
                        None => Err(UNKNOWN_ROUTE.to_owned()),
                    };
                    match (kind, result) {
                        (REQUEST, Ok(reply)) => {
                            answer(&peer, REPLY, env.id, reply).await;
                        }
                        (_, Err(e)) => {
                            answer(&peer, ERROR_REPLY, env.id, e.into_bytes()).await;
                        }
                        _ => {}
                    }
                    // The slot is free once the reply is queued (or the handler is cancelled).
                    drop(slot);
                };
                if kind == MESSAGE {
                    // One-way messages are handled in order, one after the other, in a slot.
                    job.await;
                } else {
                    // Requests run concurrently; replies find their request by id.
                    handlers.spawn(job);
                }
            }
            other => tracing::debug!(kind = other, "unknown envelope kind; dropped"),
        }
    }
    // The session is over: every pending request's outcome is unknown.
    lock(&pending).clear();
    // Handlers still running finish (their replies can no longer be sent) unless the Rpc is
    // dropped, which aborts this task and with it the set.
    while let Some(done) = handlers.join_next().await {
        report(done);
    }
}

/// Collects the handlers that have finished, so the set holds only running ones.
fn reap(handlers: &mut JoinSet<()>) {
    while let Some(done) = handlers.try_join_next() {
        report(done);
    }
}

fn report(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::warn!("an rpc handler panicked");
        }
    }
}
