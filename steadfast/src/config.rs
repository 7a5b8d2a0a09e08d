//! Configuration of clients and servers, with documented, safe defaults.
//!
//! | setting | default | why |
//! |---|---|---|
//! | keepalive interval | 3 s | three PINGs fit in one idle timeout |
//! | idle timeout (dead-peer bound) | 10 s | a dead or half-open connection is noticed within 10 s |
//! | handshake timeout | 10 s | slow or silent clients are dropped |
//! | reconnect backoff | 50 ms doubling to 5 s, full jitter | the first retry is near-immediate; a thousand clients do not return in the same millisecond |
//! | linger | 60 s | longer than the idle timeout plus the backoff cap, so a client that noticed the loss late still resumes |
//! | max connections | 10,000 | room for real traffic, below the per-process file limit of 20,000 |
//! | max sessions (live and lingering) | 100,000 | lingering sessions are small |
//! | max concurrent handshakes | 1,024 | a flood of silent connections cannot starve real ones |
//! | max handshakes per address | 64 | one address cannot take every handshake slot |
//! | max sessions per address | 1,024 | one address cannot take every session slot |
//! | admission at a limit | evict the oldest pending handshake / lingering session of the address over its share | an idle attacker cannot lock others out |

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::ConnectError;
use crate::proto::{self, ConfigError};
use crate::transform::{Chain, Transform};

/// Settings of a [`Client`](crate::Client).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub(crate) proto: proto::Config,
    pub(crate) name: Option<String>,
    pub(crate) credentials: Option<Bytes>,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) connect_timeout: Duration,
    pub(crate) recv_spin: Duration,
    pub(crate) transforms: Chain,
    pub(crate) store: Option<Arc<dyn crate::store::SessionStore>>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsClient>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            proto: proto::Config::default(),
            name: None,
            credentials: None,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            max_attempts: None,
            connect_timeout: Duration::from_secs(10),
            recv_spin: Duration::ZERO,
            transforms: Chain::new(),
            store: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ClientConfig {
    /// Protocol settings (limits, windows, timers). Default: [`proto::Config::default`].
    pub fn protocol(mut self, proto: proto::Config) -> Self {
        self.proto = proto.transforms(self.transforms.names());
        self
    }

    /// Appends a message [`transform`](crate::transform) to the chain applied to every body
    /// this client sends (in the order added) and, reversed, to every body it receives. The
    /// server must support every transform of the chain, or it refuses the session with
    /// `Incompatible`. Default: none.
    ///
    /// ```
    /// # #[cfg(feature = "lz4")] {
    /// let config = steadfast::ClientConfig::default().transform(steadfast::transform::Lz4);
    /// # let _ = config;
    /// # }
    /// ```
    pub fn transform(mut self, t: impl Transform + 'static) -> Self {
        self.transforms.push(Arc::new(t));
        self.proto = self.proto.transforms(self.transforms.names());
        self
    }

    /// Keeps the session in `store` so that it survives a restart of the client process
    /// ([`store`](crate::store)): `connect` resumes the stored session (its unacknowledged
    /// messages go out again) or, if it had ended, starts a new one whose sequence numbers
    /// continue the old one's. Default: none (the session lives in memory).
    pub fn store(mut self, store: Arc<dyn crate::store::SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// A name for this client, shown to the server's application. Default: none.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Credentials sent in every HELLO (e.g. a token). Default: none.
    pub fn credentials(mut self, credentials: impl Into<Bytes>) -> Self {
        self.credentials = Some(credentials.into());
        self
    }

    /// Reconnect backoff: the first delay's upper bound and the cap. Each attempt waits a
    /// random time between zero and `min(max, initial × 2^attempt)` (full jitter); the count
    /// restarts after a successful resume. Default 50 ms and 5 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Give up (and end the session, handing back unacknowledged messages) after this many
    /// failed reconnect attempts in a row. Default: never give up.
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Connects with TLS 1.3 (feature `tls`). Default: plain TCP.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::TlsClient) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Bound on one TCP connect (and TLS handshake). Default 10 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long a `recv` that finds nothing keeps polling for its wake-up, yielding between
    /// polls, before it waits to be woken (at most 2³² µs, about 71 minutes). Default zero:
    /// it waits at once.
    ///
    /// Polling saves the cost of a thread going to sleep and being woken, which on an idle
    /// virtual machine is tens of microseconds. Measured with 50 µs (`steadfast bench latency
    /// --recv-spin 50`, BENCHMARKS.md): request/response p50 −20 to −35 %, for about 20 µs
    /// more CPU per round trip; but the p99 grows, up to twice as long when the CPUs are busy
    /// with other work (the polling task takes CPU from the one that would produce the
    /// reply). Worth it for a latency-bound exchange on CPUs of its own.
    ///
    /// ```
    /// let config = steadfast::ClientConfig::default()
    ///     .recv_spin(std::time::Duration::from_micros(50));
    /// ```
    pub fn recv_spin(mut self, d: Duration) -> Self {
        self.recv_spin = d;
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConnectError> {
        self.proto.validate()?;
        if self
            .name
            .as_ref()
            .is_some_and(|n| n.len() > crate::proto::frame::MAX_NAME_LEN)
        {
            return Err(ConfigError("name longer than 255 bytes".into()).into());
        }
        if self
            .credentials
            .as_ref()
            .is_some_and(|c| c.len() > crate::proto::frame::MAX_CREDENTIALS_LEN)
        {
            return Err(ConfigError("credentials longer than 4,096 bytes".into()).into());
        }
        if self.backoff_initial.is_zero() || self.backoff_max < self.backoff_initial {
            return Err(ConfigError("backoff needs 0 < initial <= max".into()).into());
        }
        Ok(())
    }
}

/// Settings of a [`Server`](crate::Server).
///
/// | setting | default | why |
/// |---|---|---|
/// | keepalive interval | 3 s | three PINGs fit in one idle timeout |
/// | idle timeout (dead-peer bound) | 10 s | a dead or half-open connection is noticed within 10 s |
/// | handshake timeout | 10 s | slow or silent clients are dropped |
/// | linger | 60 s | longer than the idle timeout plus the client's backoff cap |
/// | max connections | 10,000 | room for real traffic, below the per-process file limit |
/// | max sessions (live and lingering) | 100,000 | lingering sessions are small |
/// | max concurrent handshakes | 1,024 | a flood of silent connections cannot starve real ones |
/// | max handshakes per address | 64 | one address cannot take every handshake slot |
/// | max sessions per address | 1,024 | one address cannot take every session slot |
/// | admission at a limit | [`AdmissionPolicy::EvictOldest`] | an idle attacker cannot lock others out |
/// | memory budget | 1 GiB | queued, reassembled and decoding bytes of all sessions |
/// | lifecycle events | on | never dropped; read them or turn them off |
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub(crate) proto: proto::Config,
    pub(crate) linger: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_sessions: usize,
    pub(crate) max_handshakes: usize,
    pub(crate) max_handshakes_per_addr: usize,
    pub(crate) max_sessions_per_addr: usize,
    pub(crate) admission: AdmissionPolicy,
    pub(crate) lifecycle_events: bool,
    pub(crate) full_retry_after: Duration,
    pub(crate) memory_budget: u64,
    pub(crate) store: Option<Arc<dyn crate::store::SessionStore>>,
    pub(crate) auth: Option<Authenticator>,
    pub(crate) transforms: Chain,
    pub(crate) proxy_protocol: bool,
    pub(crate) recv_spin: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::TlsServer>,
}

/// What an authenticator sees of a client's handshake.
#[derive(Debug)]
#[non_exhaustive]
pub struct AuthRequest<'a> {
    /// The name the client gave, if any.
    pub name: Option<&'a str>,
    /// The credentials the client sent, if any.
    pub credentials: Option<&'a [u8]>,
    /// The client's address.
    pub addr: SocketAddr,
    /// The client's verified TLS certificate (DER), with mutual TLS.
    pub certificate: Option<&'a [u8]>,
    /// Whether the client resumes an existing session. The hook runs before the session's
    /// token is checked (both must pass); on a resume the session keeps its name, so
    /// [`AuthDecision::AcceptAs`] only names new sessions.
    pub resuming: bool,
}

/// What a server does when a new connection or session meets a limit (see
/// [`ServerConfig::max_handshakes_per_addr`] and [`ServerConfig::max_sessions_per_addr`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdmissionPolicy {
    /// Make room: the oldest pending handshake (a connection that has not sent its HELLO) or
    /// the oldest *lingering* session of the address that is over its share is evicted (the
    /// session ends as `Expired`, its unacknowledged messages in the event) and the newcomer
    /// is let in. When no address is over its share, the newcomer is refused.
    #[default]
    EvictOldest,
    /// Refuse the newcomer with REJECT `ServerFull` (a connection over a handshake limit gets
    /// it in plain text, or a closed socket with TLS).
    Refuse,
}

/// An authenticator's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthDecision {
    /// Let the client in under the name it gave.
    Accept,
    /// Let the client in under this name (the authenticated identity).
    AcceptAs(String),
    /// Refuse with REJECT `Unauthenticated` and this reason.
    Refuse(String),
}

/// The answer of an asynchronous authenticator.
pub type AuthFuture = Pin<Box<dyn Future<Output = AuthDecision> + Send + 'static>>;

/// The application's check of a client's credentials.
#[derive(Clone)]
pub(crate) struct Authenticator(
    pub(crate) Arc<dyn Fn(&AuthRequest<'_>) -> AuthFuture + Send + Sync>,
);

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authenticator")
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            proto: proto::Config::default(),
            linger: Duration::from_secs(60),
            max_connections: 10_000,
            max_sessions: 100_000,
            max_handshakes: 1_024,
            max_handshakes_per_addr: 64,
            max_sessions_per_addr: 1_024,
            admission: AdmissionPolicy::EvictOldest,
            lifecycle_events: true,
            full_retry_after: Duration::from_secs(1),
            memory_budget: 1 << 30,
            store: None,
            auth: None,
            transforms: Chain::new(),
            proxy_protocol: false,
            recv_spin: Duration::ZERO,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl ServerConfig {
    /// Protocol settings (limits, windows, timers). Default: [`proto::Config::default`].
    pub fn protocol(mut self, proto: proto::Config) -> Self {
        let required = self.proto.required_transforms.clone();
        self.proto = proto
            .transforms(self.transforms.names())
            .required_transforms(required);
        self
    }

    /// Keeps sessions in `store` so that they survive a restart of the server process
    /// ([`store`](crate::store)): `bind` restores the stored sessions as lingering ones (their
    /// linger time counted from when they were last seen), and [`Server::shutdown`] then sends
    /// GOAWAY instead of CLOSE so that clients resume on the next server.
    /// Default: none (sessions live in memory).
    ///
    /// [`Server::shutdown`]: crate::Server::shutdown
    pub fn store(mut self, store: Arc<dyn crate::store::SessionStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Supports a message [`transform`](crate::transform): a client may list it in its chain.
    /// A client whose chain names a transform the server does not support is refused with
    /// `Incompatible`. Default: none.
    pub fn transform(mut self, t: impl Transform + 'static) -> Self {
        self.transforms.push(Arc::new(t));
        self.proto = self.proto.transforms(self.transforms.names());
        self
    }

    /// Supports a message transform and requires it: a client whose chain lacks it is refused
    /// with `Incompatible` (for example an application's signature).
    pub fn require_transform(mut self, t: impl Transform + 'static) -> Self {
        let name = t.name().to_owned();
        let mut required = self.proto.required_transforms.clone();
        required.push(name);
        self = self.transform(t);
        self.proto = self.proto.required_transforms(required);
        self
    }

    /// How long a disconnected session is kept for its client to resume. Sends to it queue up
    /// (within the outbox bounds) meanwhile. Default 60 s.
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// Every connection begins with a PROXY protocol header (version 1 or 2, as HAProxy's
    /// `send-proxy` / `send-proxy-v2` write it) naming the client's real address: per-address
    /// limits, logs, metrics and [`Peer::addr`](crate::Peer::addr) then see the client, not
    /// the load balancer. A connection without a well-formed header within the handshake
    /// timeout is closed (and counted as refused). Off by default: enable it only on a
    /// listener that nothing but the load balancer can reach, since the header is believed.
    /// See [`proxy`](crate::proxy).
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// How long a `recv` on one of this server's peers that finds nothing keeps polling for
    /// its wake-up before it waits to be woken, as [`ClientConfig::recv_spin`] (what it gains
    /// and costs is there). Default zero: it waits at once.
    pub fn recv_spin(mut self, d: Duration) -> Self {
        self.recv_spin = d;
        self
    }

    /// Most connections at once; more are refused with REJECT `ServerFull`. Default 10,000.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Most sessions, live and lingering; a new session beyond it is refused with REJECT
    /// `ServerFull`. Default 100,000.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = n;
        self
    }

    /// Most handshakes in progress at once (connections that have not sent their HELLO,
    /// TLS handshakes included); at the limit see [`ServerConfig::admission`]. Default 1,024.
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n;
        self
    }

    /// Most handshakes in progress at once from one IP address; at the limit the address's
    /// oldest pending handshake is evicted (its socket closed) or, with
    /// [`AdmissionPolicy::Refuse`], the new connection is refused (REJECT `ServerFull` in
    /// plain text; with TLS, or when 256 refusals are in progress, its socket is just closed).
    /// Default 64.
    pub fn max_handshakes_per_addr(mut self, n: usize) -> Self {
        self.max_handshakes_per_addr = n;
        self
    }

    /// Most sessions, live and lingering, created from one IP address; at the limit the
    /// address's oldest lingering session is evicted (reported as `Expired`) or, when none
    /// lingers or with [`AdmissionPolicy::Refuse`], the new session is refused with REJECT
    /// `ServerFull`. Resumes are never refused for it. Behind a load balancer or a NAT every
    /// client shares one address: raise it there. Default 1,024.
    pub fn max_sessions_per_addr(mut self, n: usize) -> Self {
        self.max_sessions_per_addr = n;
        self
    }

    /// What happens when a new connection or session meets a limit. Default
    /// [`AdmissionPolicy::EvictOldest`].
    pub fn admission(mut self, policy: AdmissionPolicy) -> Self {
        self.admission = policy;
        self
    }

    /// Whether lifecycle events (resumed, disconnected, messages waiting, expired, ended) are
    /// recorded for [`Server::next_event`](crate::Server::next_event). They are never dropped:
    /// ended sessions whose events are unread are kept, up to `max_sessions` of them, and new
    /// sessions are refused beyond that until the application reads. An application that serves peers from
    /// [`Server::accept`](crate::Server::accept) and follows each through its handle can turn
    /// them off; new sessions are always recorded for `accept`. Default: on.
    pub fn lifecycle_events(mut self, on: bool) -> Self {
        self.lifecycle_events = on;
        self
    }

    /// The retry-after a REJECT `ServerFull` advises. Default 1 s.
    pub fn full_retry_after(mut self, d: Duration) -> Self {
        self.full_retry_after = d;
        self
    }

    /// Bytes of messages the server holds across all sessions: received and not yet taken,
    /// being reassembled from chunks, sent and not yet acknowledged, and large bodies being
    /// decoded by a transform. When it is spent, sends to any peer report `Full`, new
    /// sessions are refused with REJECT `ServerFull`, and a connection whose next DATA would
    /// take the total past it gets GOAWAY `ResourceLimit` (its session stays, the client
    /// resumes after a second and sends the message again). Large decodes run at most
    /// `budget / max_message / 4` at once (at least 1, at most 1,024), so they fit in a
    /// quarter of it.
    /// Default 1 GiB; at least the maximum message size.
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Checks every client's credentials (on new sessions and on resumes) with `check`.
    /// Default: everyone is let in.
    pub fn authenticate(
        mut self,
        check: impl Fn(&AuthRequest<'_>) -> AuthDecision + Send + Sync + 'static,
    ) -> Self {
        self.auth = Some(Authenticator(Arc::new(move |req| {
            let decision = check(req);
            Box::pin(std::future::ready(decision))
        })));
        self
    }

    /// Checks every client's credentials with an asynchronous `check` (a database or a
    /// remote service): it copies what it needs from the request and returns a future. It
    /// runs in the connection's own task, within the handshake timeout (a check that does
    /// not answer in time refuses the client with `Unauthenticated`).
    ///
    /// ```
    /// use steadfast::{AuthDecision, ServerConfig};
    ///
    /// let config = ServerConfig::default().authenticate_async(|req| {
    ///     let given = req.credentials.map(<[u8]>::to_vec);
    ///     async move {
    ///         // e.g. look the token up in a database here
    ///         match given.as_deref() {
    ///             Some(b"secret") => AuthDecision::Accept,
    ///             _ => AuthDecision::Refuse("unknown token".into()),
    ///         }
    ///     }
    /// });
    /// # let _ = config;
    /// ```
    pub fn authenticate_async<F>(
        mut self,
        check: impl Fn(&AuthRequest<'_>) -> F + Send + Sync + 'static,
    ) -> Self
    where
        F: Future<Output = AuthDecision> + Send + 'static,
    {
        self.auth = Some(Authenticator(Arc::new(move |req| Box::pin(check(req)))));
        self
    }

    /// Lets in only clients whose credentials equal `token` (compared in constant time).
    pub fn shared_token(self, token: impl Into<Bytes>) -> Self {
        let token: Bytes = token.into();
        self.authenticate(move |req| {
            let given = req.credentials.unwrap_or(&[]);
            let same_len = given.len() == token.len();
            // Constant-time in the content; the length of a shared token is not a secret.
            let equal = same_len && bool::from(subtle::ConstantTimeEq::ct_eq(given, &token[..]));
            if equal {
                AuthDecision::Accept
            } else {
                AuthDecision::Refuse("bad or missing token".into())
            }
        })
    }

    /// Accepts TLS 1.3 connections only (feature `tls`). Default: plain TCP.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::TlsServer) -> Self {
        self.tls = Some(tls);
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.proto.validate()?;
        if self.max_connections == 0 || self.max_sessions == 0 || self.max_handshakes == 0 {
            return Err(ConfigError(
                "connection, session and handshake caps must be non-zero".into(),
            ));
        }
        if u64::from(self.proto.max_message) > self.memory_budget {
            return Err(ConfigError(format!(
                "max_message ({}) exceeds the memory budget ({})",
                self.proto.max_message, self.memory_budget
            )));
        }
        if self.max_handshakes_per_addr == 0 || self.max_sessions_per_addr == 0 {
            return Err(ConfigError("per-address limits must be non-zero".into()));
        }
        Ok(())
    }

    /// Large decodes in progress at once: they fit in a quarter of the memory budget.
    pub(crate) fn decode_slots(&self) -> usize {
        let per = u64::from(self.proto.max_message).max(1);
        usize::try_from(self.memory_budget / per / 4)
            .unwrap_or(usize::MAX)
            .clamp(1, 1_024)
    }
}
