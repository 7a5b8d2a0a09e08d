//! One connection's state machine, client or server side, with no I/O (PROTOCOL.md §4–§9).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::codec::Decoder;
use super::config::Config;
use super::frame::{
    Close, CloseCode, DATA_CONTINUED_PREFIX_LEN, DATA_PREFIX_LEN, Data, Frame, FrameError, GoAway,
    HEADER_LEN, Hello, Limits, MIN_IDLE_TIMEOUT_MS, MIN_MAX_FRAME, Reject, RejectCode,
    ResumeRequest, ResumeToken, Seq, SessionId, Timings, Welcome, WelcomeKind,
    encode_continued_header, encode_data_header,
};
use super::session::{HeldPartial, Message, Role, SendError, Session};

/// The smallest DATA body [`Connection::poll_transmit_vectored`] leaves in place instead of
/// copying: below it, copying the body next to its header costs less than a vector entry.
pub const SPLICE_MIN: usize = 512;

/// Where DATA bodies go as frames are encoded.
trait Bodies {
    /// Puts `body[from..end]` next in the stream, after `buf`; returns how many of its bytes
    /// went elsewhere than `buf`.
    fn put(&mut self, buf: &mut Vec<u8>, body: &Bytes, from: usize, end: usize) -> usize;
}

/// Every body copied into the buffer.
struct Copied;

impl Bodies for Copied {
    fn put(&mut self, buf: &mut Vec<u8>, body: &Bytes, from: usize, end: usize) -> usize {
        buf.extend_from_slice(&body[from..end]);
        0
    }
}

/// Bodies of [`SPLICE_MIN`] bytes or more referenced with their place, smaller ones copied.
impl Bodies for VecDeque<(usize, Bytes)> {
    fn put(&mut self, buf: &mut Vec<u8>, body: &Bytes, from: usize, end: usize) -> usize {
        if end - from >= SPLICE_MIN {
            self.push_back((buf.len(), body.slice(from..end)));
            end - from
        } else {
            buf.extend_from_slice(&body[from..end]);
            0
        }
    }
}

/// Something the application should know or decide.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// Server side: a valid HELLO arrived. Answer with [`Connection::accept_new`],
    /// [`Connection::accept_resume`] or [`Connection::reject`].
    Hello(HelloRequest),
    /// The handshake finished; messages flow.
    Established {
        /// The session's id.
        session_id: SessionId,
        /// Whether an existing session was resumed.
        resumed: bool,
    },
    /// Messages arrived and wait in the inbox (once per input that added some).
    MessagesAvailable,
    /// The peer acknowledged every message with a sequence number in `first..end`. Each
    /// sequence number is reported exactly once over the life of the session.
    Acknowledged {
        /// First newly acknowledged sequence number.
        first: Seq,
        /// One past the last.
        end: Seq,
    },
    /// A PONG answered our PING.
    Pong {
        /// The measured round-trip time.
        rtt: Duration,
    },
    /// This connection is over; the session (if any) survives: take it with
    /// [`Connection::take_session`] to resume it on a new connection.
    Disconnected(ConnectionError),
    /// The session is over. Exactly one of `Disconnected` or `SessionEnded` ends a connection.
    SessionEnded {
        /// Why.
        reason: SessionEnd,
        /// Every message this side sent and the peer did not acknowledge, in order.
        unacknowledged: Vec<Message>,
        /// Messages received but not taken by the application, now dropped (the peer gets
        /// them back as unacknowledged).
        discarded: usize,
    },
}

/// The parts of a HELLO the server's application decides on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelloRequest {
    /// The negotiated version.
    pub version: u16,
    /// The peer's name, if it gave one.
    pub name: Option<String>,
    /// The peer's credentials, if it gave any.
    pub credentials: Option<Bytes>,
    /// Present when the client resumes a session.
    pub resume: Option<ResumeRequest>,
}

/// Why a connection ended while its session survives. Plain value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The transport closed or failed (reported by the caller).
    #[error("connection reset")]
    Reset,
    /// Nothing arrived within the idle timeout: the peer is dead or the link half-open.
    #[error("idle timeout: nothing received from the peer")]
    IdleTimeout,
    /// The handshake did not finish in time.
    #[error("handshake timeout")]
    HandshakeTimeout,
    /// The peer sent GOAWAY: reconnect (after `retry_after_ms`) and resume.
    #[error("peer went away ({code:?}): {reason}")]
    GoAway {
        /// The peer's code.
        code: CloseCode,
        /// Advice on when to reconnect, in milliseconds.
        retry_after_ms: u32,
        /// The peer's words.
        reason: String,
    },
    /// This side sent GOAWAY.
    #[error("went away")]
    LocalGoAway,
    /// Another connection resumed the session (server side).
    #[error("session taken over by a newer connection")]
    TakenOver,
    /// The handshake was refused with a reason the client may retry (`ServerFull`,
    /// `ShuttingDown`), or (server side) this side refused it.
    #[error("handshake rejected ({code:?}): {reason}")]
    Rejected {
        /// The reason code.
        code: RejectCode,
        /// When to retry, in milliseconds.
        retry_after_ms: u32,
        /// Human-readable detail.
        reason: String,
    },
    /// The peer broke the protocol before any session existed.
    #[error("protocol violation: {0}")]
    ProtocolViolation(String),
}

/// Why a session ended. Plain value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionEnd {
    /// A CLOSE exchange. When `confirmed`, both sides exchanged final positions, so the
    /// unacknowledged messages were certainly not delivered.
    #[error("session closed ({code:?}{}): {reason}", if *.by_peer { " by peer" } else { "" })]
    Closed {
        /// The peer sent the first CLOSE.
        by_peer: bool,
        /// The code of the first CLOSE.
        code: CloseCode,
        /// Its reason.
        reason: String,
        /// Both CLOSE frames were seen.
        confirmed: bool,
    },
    /// The server refused to resume or create the session, finally.
    #[error("session rejected ({code:?}): {reason}")]
    Rejected {
        /// The reason code.
        code: RejectCode,
        /// Human-readable detail.
        reason: String,
    },
    /// A message queued before the handshake exceeds the peer's maximum message size; this
    /// side sent CLOSE `MessageTooLarge`.
    #[error("{detail}")]
    PeerLimit {
        /// Which message and which limit.
        detail: String,
    },
    /// The peer broke the protocol; this side sent CLOSE with `code`.
    #[error("protocol violation ({code:?}): {detail}")]
    ProtocolViolation {
        /// The code sent.
        code: CloseCode,
        /// What was wrong.
        detail: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Client: HELLO sent, waiting for WELCOME or REJECT.
    AwaitingWelcome,
    /// Server: waiting for HELLO.
    AwaitingHello,
    /// Server: HELLO received, waiting for the application's decision.
    AwaitingDecision,
    /// Messages flow.
    Established,
    /// Over; only queued control frames remain to be written.
    Closed,
}

/// A message being reassembled from chunks (§5.3). In version 1 it dies with the connection;
/// in version 2 the session keeps it across a cut and the sender continues it (§5.5).
#[derive(Debug)]
struct Partial {
    seq: Seq,
    timestamp_us: u64,
    buf: BytesMut,
    /// A chunked message already received earlier: its chunks are dropped.
    duplicate: bool,
    /// Version 2: held from an earlier connection; the next chunk must be CONTINUED at
    /// `buf.len()`.
    awaiting_continuation: bool,
}

/// One connection, client or server side.
///
/// # Call order
///
/// The caller owns the socket, the clock and the buffers:
///
/// 1. create with [`Connection::connect`] (client) or [`Connection::accept`] (server);
/// 2. whenever bytes arrive: [`Connection::handle_input`]; when the transport ends:
///    [`Connection::handle_disconnect`];
/// 3. drain [`Connection::poll_event`] (a server answers [`Event::Hello`] with
///    [`Connection::accept_new`], [`Connection::accept_resume`] or [`Connection::reject`]);
/// 4. after input, after application calls (`send`, `recv`, `close`, …) and after timeouts:
///    call [`Connection::poll_transmit`] until it appends nothing, and write what it appended;
/// 5. sleep until [`Connection::poll_timeout`] and then call [`Connection::handle_timeout`];
/// 6. once [`Connection::is_closed`] and `poll_transmit` appends nothing, close the transport.
///    [`Connection::take_session`] hands a surviving session over to the next connection.
#[derive(Debug)]
pub struct Connection {
    config: Arc<Config>,
    role: Role,
    state: State,
    epoch: Instant,
    decoder: Decoder,
    session: Option<Session>,
    /// Server: the HELLO awaiting the application's decision (boxed: a live connection has
    /// none, and idle connections are many).
    hello: Option<Box<Hello>>,
    /// Control frames waiting to be written, in order.
    control: VecDeque<Frame>,
    events: VecDeque<Event>,
    peer: Option<Limits>,
    version: u16,
    /// Client: the version range its HELLO offered. §4.6
    offered: (u16, u16),
    /// The keepalive interval this connection applies: the configured one; on a client's
    /// version-2 connection, how long nothing may arrive before it pings (§8).
    keepalive: Duration,
    /// Client, version 2: a PING goes out only after `keepalive` with nothing received (the
    /// server's own PINGs, and any other traffic, keep the client quiet). §8
    ping_when_quiet: bool,
    /// Sender: the next chunk continues a message the peer holds part of (version 2, §5.5).
    send_continued: bool,
    /// The partial message may not move to the session when the connection ends (it went over
    /// the receive allowance).
    drop_partial: bool,
    /// Server: the client has not yet proven it holds the token of our WELCOME. §4.4
    awaiting_proof: bool,
    /// Server: the next frame to complete began before our answer (pipelined): it is no proof.
    proof_skip: bool,
    // Send cursor (§5.4).
    next_to_send: Seq,
    chunk_offset: usize,
    in_flight_bytes: u64,
    // Acknowledgement scheduling (§5.2).
    last_ack_sent: Seq,
    last_ack_bytes: u64,
    ack_due: Option<Instant>,
    ack_now: bool,
    partial: Option<Partial>,
    /// The most body bytes the inbox and the message being reassembled may hold together
    /// (set by the runtime from its memory budget); `None`: only the window bounds them.
    allowance: Option<u64>,
    // Timers (§8).
    handshake_deadline: Instant,
    last_recv: Instant,
    next_ping: Instant,
    ping_requested: bool,
    close_deadline: Option<Instant>,
}

impl Connection {
    /// Client side: starts the handshake for `session` (new if it has no id yet, resumed
    /// otherwise). The HELLO is ready in [`Connection::poll_transmit`].
    ///
    /// # Errors
    /// [`ConfigError`](super::ConfigError) if `config` is inconsistent.
    pub fn connect(
        config: impl Into<Arc<Config>>,
        now: Instant,
        mut session: Session,
        credentials: Option<Bytes>,
    ) -> Result<Self, super::ConfigError> {
        let config = config.into();
        config.validate()?;
        session.stats.connections += 1;
        // A server message received in part can be stated only in the version-2 layout of a
        // resume HELLO, which offers versions 2 and up (§5.5); otherwise it is dropped and the
        // server sends that message whole.
        let (lo, hi) = config.versions;
        let partial = match &session.held {
            Some(h) if session.id.is_some() && hi >= 2 && !h.buf.is_empty() => h.buf.len() as u64,
            _ => {
                session.held = None;
                0
            }
        };
        let offered = if partial > 0 {
            (lo.max(2), hi)
        } else {
            (lo, hi)
        };
        let hello = Hello {
            min_version: offered.0,
            max_version: offered.1,
            limits: local_limits(&config),
            resume: session.id.map(|session_id| ResumeRequest {
                session_id,
                token: session.token.clone().unwrap_or(ResumeToken([0; 16])),
                received: session.received,
                partial,
            }),
            // The first message of a new session is the oldest one queued (§4.1).
            first_seq: if session.id.is_some() {
                Seq(0)
            } else {
                session.acked
            },
            name: session.name.clone(),
            credentials,
            transforms: session.transforms.clone(),
        };
        let mut conn = Connection::new(config, Role::Client, now, State::AwaitingWelcome);
        conn.offered = offered;
        conn.control.push_back(Frame::Hello(hello));
        conn.session = Some(session);
        Ok(conn)
    }

    /// Server side: a freshly accepted transport, waiting for HELLO.
    ///
    /// # Errors
    /// [`ConfigError`](super::ConfigError) if `config` is inconsistent.
    /// `config` may be shared (an `Arc<Config>`) by the connections of one server.
    pub fn accept(
        config: impl Into<Arc<Config>>,
        now: Instant,
    ) -> Result<Self, super::ConfigError> {
        let config = config.into();
        config.validate()?;
        Ok(Connection::new(
            config,
            Role::Server,
            now,
            State::AwaitingHello,
        ))
    }

    fn new(config: Arc<Config>, role: Role, now: Instant, state: State) -> Self {
        Connection {
            decoder: Decoder::new(config.max_frame),
            handshake_deadline: now + config.handshake_timeout,
            next_ping: now + config.keepalive_interval,
            offered: config.versions,
            keepalive: config.keepalive_interval,
            ping_when_quiet: false,
            send_continued: false,
            drop_partial: false,
            config,
            role,
            state,
            epoch: now,
            session: None,
            hello: None,
            control: VecDeque::new(),
            events: VecDeque::new(),
            peer: None,
            version: 0,
            awaiting_proof: false,
            proof_skip: false,
            next_to_send: Seq(0),
            chunk_offset: 0,
            in_flight_bytes: 0,
            last_ack_sent: Seq(0),
            last_ack_bytes: 0,
            ack_due: None,
            ack_now: false,
            partial: None,
            allowance: None,
            last_recv: now,
            ping_requested: false,
            close_deadline: None,
        }
    }

    // ---------------------------------------------------------------- application side

    /// The session this connection carries, if any.
    pub fn session(&self) -> Option<&Session> {
        self.session.as_ref()
    }

    /// Mutable access to the session (its `send`/`recv` work as the methods here do).
    pub fn session_mut(&mut self) -> Option<&mut Session> {
        self.session.as_mut()
    }

    /// Queues a message; see [`Session::send`].
    ///
    /// # Errors
    /// As [`Session::send`]; [`SendError::Closed`] when the connection carries no session.
    pub fn send(&mut self, body: Bytes, timestamp_us: u64) -> Result<Seq, SendError> {
        self.session
            .as_mut()
            .ok_or(SendError::Closed)?
            .send(body, timestamp_us)
    }

    /// Takes the next received message, acknowledging it (the ACK goes out from
    /// `poll_transmit`, coalesced with others, §5.2).
    pub fn recv(&mut self) -> Option<Message> {
        self.session.as_mut()?.recv()
    }

    /// Sends a PING now (the RTT arrives as [`Event::Pong`]).
    pub fn ping(&mut self) {
        self.ping_requested = true;
    }

    /// Starts a graceful close of the session (§7.2): a CLOSE with our final delivered position
    /// goes out, nothing more is delivered or sent, and [`Event::SessionEnded`] follows when the
    /// peer's CLOSE arrives (or after the idle timeout without it).
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str) {
        let Some(session) = self.session.as_mut() else {
            self.end_connection(ConnectionError::LocalGoAway);
            return;
        };
        if session.closing.is_some() {
            return;
        }
        session.closing = Some(Box::new((code, reason.to_owned())));
        if self.state == State::Established {
            self.queue_close(code, reason);
            self.close_deadline = Some(now + self.config.idle_timeout);
        }
    }

    /// Ends this connection but keeps the session resumable (§7.1): a GOAWAY goes out, then
    /// [`Event::Disconnected`] with [`ConnectionError::LocalGoAway`].
    pub fn go_away(&mut self, code: CloseCode, retry_after_ms: u32, reason: &str) {
        if self.state == State::Established {
            self.control.push_back(Frame::GoAway(GoAway {
                code,
                retry_after_ms,
                reason: reason.to_owned(),
            }));
        }
        self.end_connection(ConnectionError::LocalGoAway);
    }

    /// Server side: answers [`Event::Hello`] by creating a new session with `id` and the
    /// resume `token` (both fresh from the OS random source).
    pub fn accept_new(&mut self, now: Instant, id: SessionId, token: ResumeToken) {
        let Some(hello) = self.take_hello() else {
            return;
        };
        if hello.resume.is_some() {
            self.reject(
                RejectCode::ProtocolError,
                0,
                "a resume cannot start a new session",
            );
            return;
        }
        let mut session = Session::server(
            &self.config,
            id,
            token.clone(),
            hello.first_seq,
            hello.name.clone(),
            hello.transforms.clone(),
        );
        session.stats.connections += 1;
        self.control.push_back(Frame::Welcome(Welcome {
            version: self.version,
            session_id: id,
            token,
            limits: local_limits(&self.config),
            kind: WelcomeKind::New {
                first_seq: session.acked,
            },
            transforms: session.transforms.clone(),
            timings: self.own_timings(),
        }));
        self.session = Some(session);
        self.establish(now, &hello.limits, false);
        self.process_held_input(now);
    }

    /// Server side: answers [`Event::Hello`] by resuming `session`, which the caller found by
    /// the HELLO's session id. The caller checks the presented token with
    /// [`Session::verify_token`] *where the session is* first, and only then takes it from a
    /// previous connection that still looks alive ([`Connection::take_session`], §4.4 rule B):
    /// a wrong token must not disturb the session. `fresh` is the rotated token.
    ///
    /// # Errors
    /// Gives the session back, untouched, when the token does not match or the client's
    /// stated position is impossible; a REJECT has then been queued.
    pub fn accept_resume(
        &mut self,
        now: Instant,
        mut session: Session,
        fresh: ResumeToken,
    ) -> Result<(), Box<Session>> {
        let Some(hello) = self.take_hello() else {
            return Err(Box::new(session));
        };
        let Some(req) = hello.resume.as_ref() else {
            self.reject(RejectCode::ProtocolError, 0, "not a resume");
            return Err(Box::new(session));
        };
        if session.id != Some(req.session_id) || !session.verify_token(&req.token) {
            self.reject(RejectCode::UnknownSession, 0, "unknown session");
            return Err(Box::new(session));
        }
        if !session.can_resume_at(req.received, req.partial) {
            self.reject(RejectCode::ProtocolError, 0, "impossible resume position");
            return Err(Box::new(session));
        }
        if hello.transforms != session.transforms {
            let reason = format!(
                "the resume lists transforms {:?}, the session uses {:?}",
                hello.transforms, session.transforms
            );
            self.reject(RejectCode::Incompatible, 0, &reason);
            return Err(Box::new(session));
        }
        session.rotate_token(&req.token, fresh.clone());
        session.stats.connections += 1;
        // A client message held in part continues only on a version-2 connection (§5.5).
        if self.version < 2 {
            session.held = None;
        }
        let held = session.held.as_ref().map_or(0, |h| h.buf.len() as u64);
        self.control.push_back(Frame::Welcome(Welcome {
            version: self.version,
            session_id: req.session_id,
            token: fresh,
            limits: local_limits(&self.config),
            kind: WelcomeKind::Resumed {
                received: session.received,
                delivered: session.delivered,
                partial: held,
            },
            transforms: session.transforms.clone(),
            timings: self.own_timings(),
        }));
        let (resend_from, partial) = (req.received, req.partial);
        self.session = Some(session);
        self.establish(now, &hello.limits, true);
        self.set_send_cursor(resend_from, partial);
        self.process_held_input(now);
        Ok(())
    }

    /// Server side: refuses the handshake (§4.5). The connection ends after the REJECT.
    pub fn reject(&mut self, code: RejectCode, retry_after_ms: u32, reason: &str) {
        self.control.push_back(Frame::Reject(Reject {
            code,
            retry_after_ms,
            min_version: self.config.versions.0,
            max_version: self.config.versions.1,
            reason: reason.to_owned(),
        }));
        self.hello = None;
        self.end_connection(ConnectionError::Rejected {
            code,
            retry_after_ms,
            reason: reason.to_owned(),
        });
    }

    /// Detaches the session to carry it to another connection. A connection that was still
    /// live ends (a GOAWAY says why, its unprocessed input is discarded) with
    /// [`ConnectionError::TakenOver`]. `None` if there is no session or it has ended.
    pub fn take_session(&mut self) -> Option<Session> {
        if self.state != State::Closed {
            if self.state == State::Established {
                self.control.push_back(Frame::GoAway(GoAway {
                    code: CloseCode::SessionTakenOver,
                    retry_after_ms: 0,
                    reason: "session resumed on another connection".into(),
                }));
            }
            self.end_connection(ConnectionError::TakenOver);
        }
        self.session.take()
    }

    // ---------------------------------------------------------------- I/O side

    /// Feeds bytes received from the transport.
    pub fn handle_input(&mut self, now: Instant, data: &[u8]) {
        if self.state == State::Closed || data.is_empty() {
            return;
        }
        // Any byte is proof of life (§8).
        self.last_recv = now;
        if let Some(s) = self.session.as_mut() {
            s.stats.bytes_received += data.len() as u64;
        }
        let mut rest = data;
        if self.state != State::AwaitingDecision {
            self.process_input(now, &mut rest);
        }
        if self.state != State::Closed {
            // A partial frame at the end, or bytes held until the server's decision.
            self.decoder.feed(rest);
        }
        if self.state == State::AwaitingDecision {
            // Bytes after the HELLO wait, unparsed, until the answer is out: they are then
            // frames of the established connection, however TCP split them (§2). A client
            // that sends more than a frame's worth before the answer breaks the protocol,
            // whether those bytes came with the HELLO or after it.
            let limit = self.config.max_frame as usize + HEADER_LEN;
            if self.decoder.buffered() > limit {
                self.violation(
                    CloseCode::ProtocolError,
                    format!("more than {limit} bytes sent before WELCOME"),
                );
            }
        }
    }

    /// Server: handles the bytes that arrived after the HELLO, before the answer, now that
    /// WELCOME is queued. They were sent before the client could hold the new token, so they
    /// do not count as its proof (§4.4 rule A).
    fn process_held_input(&mut self, now: Instant) {
        let awaiting_proof = std::mem::take(&mut self.awaiting_proof);
        self.process_input(now, &mut &[][..]);
        self.awaiting_proof = awaiting_proof && self.state == State::Established;
        // A frame begun before the answer and completed by later bytes is no proof either,
        // however the transport split it.
        self.proof_skip = self.awaiting_proof && self.decoder.is_mid_frame();
    }

    /// Parses and handles the buffered input, then `input` (frames complete in it are parsed
    /// in place; what is left of it stays there), up to the HELLO while a server waits for
    /// its application's decision.
    fn process_input(&mut self, now: Instant, input: &mut &[u8]) {
        let inbox_before = self.session.as_ref().map_or(0, |s| s.stats.received);
        // The peer's very first bytes, kept to say what they are if they are no frame (a TLS
        // record, an HTTP answer): the usual mistakes of pointing a client at the wrong port.
        let mut first: Option<&[u8]> =
            (matches!(self.state, State::AwaitingHello | State::AwaitingWelcome)
                && self.decoder.buffered() == 0)
                .then_some(&input[..input.len().min(24)]);
        while self.state != State::Closed && self.state != State::AwaitingDecision {
            match self.decoder.decode_from(input) {
                Ok(Some(frame)) => {
                    first = None;
                    self.handle_frame(now, frame);
                }
                Ok(None) => break,
                Err(e) => {
                    let code = match e {
                        FrameError::TooLarge { .. } => CloseCode::FrameTooLarge,
                        _ => CloseCode::ProtocolError,
                    };
                    let mut reason = e.to_string();
                    if let Some(what) = first.and_then(foreign_protocol) {
                        reason = format!("{reason}: {what}");
                    }
                    self.violation(code, reason);
                }
            }
        }
        let inbox_after = self.session.as_ref().map_or(0, |s| s.stats.received);
        if inbox_after > inbox_before && self.session.as_ref().is_some_and(|s| s.inbox_len() > 0) {
            self.events.push_back(Event::MessagesAvailable);
        }
    }

    /// The transport ended (EOF, reset, write error). The session survives.
    pub fn handle_disconnect(&mut self) {
        if self.state != State::Closed {
            self.end_connection(ConnectionError::Reset);
        }
        self.control.clear();
    }

    /// Call when the time from [`Connection::poll_timeout`] has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::AwaitingHello | State::AwaitingDecision | State::AwaitingWelcome => {
                if now >= self.handshake_deadline {
                    self.hello = None;
                    self.end_connection(ConnectionError::HandshakeTimeout);
                }
            }
            State::Established => {
                // Timers only mark work; `poll_transmit` does it when the transport has room,
                // so a blocked writer never sees a deadline in the past (§8).
                if now >= self.next_ping {
                    if self.ping_when_quiet && now < self.last_recv + self.keepalive {
                        // Heard from the server since: no PING needed yet (§8).
                        self.next_ping = self.last_recv + self.keepalive;
                    } else {
                        self.ping_requested = true;
                        self.next_ping = now + self.keepalive;
                    }
                }
                if self.ack_due.is_some_and(|d| now >= d) {
                    self.ack_due = None;
                    // The timer outlives an ACK that went out with data before it fired
                    // (so that a runtime need not re-arm it on every message): it sends one
                    // only if deliveries are still unacknowledged.
                    self.ack_now |= self
                        .session
                        .as_ref()
                        .is_some_and(|s| s.delivered > self.last_ack_sent);
                }
                if now >= self.last_recv + self.config.idle_timeout {
                    self.end_connection(ConnectionError::IdleTimeout);
                } else if self.close_deadline.is_some_and(|d| now >= d) {
                    let (code, reason) = self
                        .session
                        .as_ref()
                        .and_then(|s| s.closing.as_deref().cloned())
                        .unwrap_or((CloseCode::Normal, String::new()));
                    self.end_session(SessionEnd::Closed {
                        by_peer: false,
                        code,
                        reason,
                        confirmed: false,
                    });
                }
            }
            State::Closed => {}
        }
    }

    /// The next time [`Connection::handle_timeout`] has work (idle and handshake deadlines,
    /// the next PING, a delayed ACK); `None` when closed. After `handle_timeout(now)` it is
    /// always later than `now`.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Closed => None,
            State::Established => {
                let mut t = (self.last_recv + self.config.idle_timeout).min(self.next_ping);
                if let Some(d) = self.ack_due {
                    t = t.min(d);
                }
                if let Some(d) = self.close_deadline {
                    t = t.min(d);
                }
                Some(t)
            }
            _ => Some(self.handshake_deadline),
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next event if `take` accepts it; otherwise it stays first, with those after it.
    pub fn poll_event_if(&mut self, take: impl FnOnce(&Event) -> bool) -> Option<Event> {
        if take(self.events.front()?) {
            self.events.pop_front()
        } else {
            None
        }
    }

    /// Whether an event waits for [`Connection::poll_event`].
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Appends frames to send to `buf` (at most about the configured transmit batch) and
    /// returns how many bytes it appended. Control frames (handshake, ACK, PING, PONG, GOAWAY,
    /// CLOSE) always go before data, so they are never stuck behind a large message (§5.3).
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> usize {
        self.poll_transmit_into(now, buf, &mut Copied)
    }

    /// As [`Connection::poll_transmit`], except that a DATA frame's body of at least
    /// [`SPLICE_MIN`] bytes is not copied into `buf`: it is pushed to `bodies` with the
    /// length `buf` had at that point, the place in the stream where it goes (a body goes
    /// before `buf[at..]`, and bodies at the same place in the order pushed). Meant for
    /// vectored writes, which then send the body from the memory the application gave it in.
    /// Returns how many bytes it appended to the stream, bodies included.
    pub fn poll_transmit_vectored(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        bodies: &mut VecDeque<(usize, Bytes)>,
    ) -> usize {
        self.poll_transmit_into(now, buf, bodies)
    }

    fn poll_transmit_into(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        bodies: &mut impl Bodies,
    ) -> usize {
        let start = buf.len();
        while let Some(f) = self.control.pop_front() {
            f.encode(buf);
        }
        if self.state != State::Established {
            return buf.len() - start;
        }
        if self.ping_requested {
            self.ping_requested = false;
            self.next_ping = now + self.keepalive;
            Frame::Ping(self.micros_since_epoch(now)).encode(buf);
        }
        let Some(session) = self.session.as_ref() else {
            return buf.len() - start;
        };
        let closing = session.closing.is_some();
        if self.ack_now {
            self.encode_ack(buf);
        } else if !closing && session.delivered > self.last_ack_sent {
            let window = self.config.window;
            let due = self.ack_due.is_some_and(|d| now >= d)
                || session.delivered.distance_from(self.last_ack_sent)
                    >= u64::from(window.messages / 4).max(1)
                || session.delivered_bytes - self.last_ack_bytes
                    >= u64::from(window.bytes / 4).max(1)
                || self.can_send_data();
            if due {
                self.encode_ack(buf);
            } else if self.ack_due.is_none() {
                self.ack_due = Some(now + self.config.ack_delay);
            }
        }
        let mut spliced = 0;
        if !closing {
            spliced = self.transmit_data(buf, start, bodies);
        }
        buf.len() - start + spliced
    }

    // ---------------------------------------------------------------- state queries

    /// When this connection began (the `now` given to [`Connection::accept`] or
    /// [`Connection::connect`]).
    pub fn started(&self) -> Instant {
        self.epoch
    }

    /// Whether [`Connection::poll_transmit`] would give more data now (a message the window
    /// admits): a caller that wrote one batch itself leaves the rest to its driver.
    pub fn has_data_to_send(&self) -> bool {
        !self.control.is_empty()
            || (self.state == State::Established
                && self.session.as_ref().is_some_and(|s| s.closing.is_none())
                && self.can_send_data())
    }

    /// Whether the handshake finished and the connection is live.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the connection is over (write out what `poll_transmit` still gives, then close
    /// the transport).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Which side this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The limits the peer announced, after the handshake.
    pub fn peer_limits(&self) -> Option<Limits> {
        self.peer
    }

    /// The negotiated protocol version, after the handshake.
    pub fn version(&self) -> Option<u16> {
        (self.version != 0).then_some(self.version)
    }

    /// Body bytes of messages sent on this connection and not yet acknowledged.
    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes
    }

    /// Frees the input buffer if it holds no partial frame, not even a lone header, and the
    /// control and event queues if they are empty (call when the connection is idle: the
    /// handshake and a busy period grow them, and an idle connection needs none). The
    /// session's message queues keep their room while the connection lives: a busy
    /// connection would grow them again, copying what they hold each time.
    pub fn release_buffers(&mut self) {
        self.decoder.shrink();
        if self.control.is_empty() {
            self.control = VecDeque::new();
        }
        if self.events.is_empty() {
            self.events = VecDeque::new();
        }
    }

    /// Bytes the buffer of the message being reassembled from chunks takes (its capacity,
    /// which grows ahead of its length; 0 when no message is being reassembled).
    pub fn reassembly_bytes(&self) -> u64 {
        self.partial.as_ref().map_or(0, |p| p.buf.capacity() as u64)
    }

    /// Sets the most body bytes the inbox and the message being reassembled may hold together
    /// (`None`: only the window bounds them, the default). A server derives it from its memory
    /// budget before feeding input. A DATA frame that would take them past it ends this
    /// connection with GOAWAY `ResourceLimit` (retry after 1 s, §7.1): what it held of the
    /// message being reassembled is dropped, the session stays resumable, and the peer sends
    /// the message again after its resume.
    pub fn set_receive_allowance(&mut self, bytes: Option<u64>) {
        self.allowance = bytes;
    }

    /// Bytes received and not yet parsed into frames.
    pub fn buffered_input(&self) -> usize {
        self.decoder.buffered()
    }

    // ---------------------------------------------------------------- internals

    fn take_hello(&mut self) -> Option<Hello> {
        if self.state != State::AwaitingDecision {
            return None;
        }
        self.hello.take().map(|h| *h)
    }

    fn establish(&mut self, now: Instant, peer: &Limits, resumed: bool) {
        self.state = State::Established;
        self.peer = Some(*peer);
        self.last_recv = now;
        self.next_ping = now + self.keepalive;
        self.decoder.set_version(self.version);
        let Some(session) = self.session.as_mut() else {
            return;
        };
        session.version = self.version;
        // A peer message held in part continues where it stopped (version 2, §5.5).
        if let Some(h) = session.held.take().map(|h| *h) {
            self.partial = Some(Partial {
                seq: h.seq,
                timestamp_us: h.timestamp_us,
                buf: h.buf,
                duplicate: false,
                awaiting_continuation: true,
            });
        }
        session.peer_max_message = Some(peer.max_message);
        // Server: the WELCOME told the client our delivered position. Client: the ACK sent
        // right after WELCOME (`ack_now`) does.
        self.last_ack_sent = session.delivered;
        self.last_ack_bytes = session.delivered_bytes;
        self.next_to_send = session.acked;
        self.chunk_offset = 0;
        self.in_flight_bytes = 0;
        if self.role == Role::Server {
            self.awaiting_proof = true;
        }
        let session_id = session.id.unwrap_or(SessionId([0; 16]));
        // Messages queued before the peer's limit was known must fit it: sending them would
        // only make the peer close the session (§5.3). Say so here, with our own CLOSE.
        let max = peer.max_message as usize;
        if let Some(m) = session.outbox.iter().find(|m| m.body.len() > max) {
            let detail = format!(
                "queued message {} of {} bytes exceeds the peer's maximum of {max}",
                m.seq,
                m.body.len()
            );
            self.control.push_back(Frame::Close(Close {
                code: CloseCode::MessageTooLarge,
                delivered: session.delivered,
                reason: detail.clone(),
            }));
            self.end_session(SessionEnd::PeerLimit { detail });
            return;
        }
        if let Some((code, reason)) = session.closing.as_deref().cloned() {
            // A CLOSE that a cut interrupted is repeated on the new connection (§7.2).
            self.queue_close(code, &reason);
            self.close_deadline = Some(now + self.config.idle_timeout);
        }
        self.events.push_back(Event::Established {
            session_id,
            resumed,
        });
    }

    /// Positions the send cursor at `from` (the peer's received position, §4.4), `partial`
    /// bytes into that message (what the peer holds of it, version 2, §5.5), and counts what
    /// is already in the peer's hands as in flight.
    fn set_send_cursor(&mut self, from: Seq, partial: u64) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        self.next_to_send = from;
        self.chunk_offset = 0;
        self.send_continued = false;
        let n = from.distance_from(session.acked) as usize;
        self.in_flight_bytes = session
            .outbox
            .iter()
            .take(n)
            .map(|m| m.body.len() as u64)
            .sum();
        if partial > 0
            && let Some(m) = session.outbox_get(from)
            && (partial as usize) < m.body.len()
        {
            // Started: it counts as in flight from its first chunk (§6).
            self.in_flight_bytes += m.body.len() as u64;
            self.chunk_offset = partial as usize;
            self.send_continued = true;
            session.stats.retransmitted += 1;
        }
    }

    fn queue_close(&mut self, code: CloseCode, reason: &str) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        // After our CLOSE nothing more is delivered: our stated position is final (§7.2).
        session.discarded += session.discard_inbox();
        self.control.push_back(Frame::Close(Close {
            code,
            delivered: session.delivered,
            reason: reason.to_owned(),
        }));
        self.last_ack_sent = session.delivered;
    }

    fn encode_ack(&mut self, buf: &mut Vec<u8>) {
        let Some(session) = self.session.as_ref() else {
            return;
        };
        Frame::Ack {
            delivered: session.delivered,
            window: self.config.window,
        }
        .encode(buf);
        self.last_ack_sent = session.delivered;
        self.last_ack_bytes = session.delivered_bytes;
        // `ack_due` stays: a delivery before it passes is acknowledged by then (earlier than
        // `ack_delay` after it, never later), and the timer is not moved on every ACK.
        self.ack_now = false;
    }

    /// Whether the message at the send cursor may go out now (window permitting, §6).
    fn can_send_data(&self) -> bool {
        let (Some(session), Some(peer)) = (self.session.as_ref(), self.peer.as_ref()) else {
            return false;
        };
        let Some(msg) = session.outbox_get(self.next_to_send) else {
            return false;
        };
        if self.chunk_offset > 0 {
            return true;
        }
        let outstanding = self.next_to_send.distance_from(session.acked);
        outstanding < u64::from(peer.window.messages)
            && (self.in_flight_bytes == 0
                || self.in_flight_bytes + msg.body.len() as u64 <= u64::from(peer.window.bytes))
    }

    /// Encodes DATA frames while the batch has room; returns the bytes of the bodies pushed
    /// to `bodies` instead of `buf`.
    fn transmit_data(
        &mut self,
        buf: &mut Vec<u8>,
        start: usize,
        bodies: &mut impl Bodies,
    ) -> usize {
        let mut spliced = 0;
        let Some(peer) = self.peer else {
            return spliced;
        };
        let chunk_max = (peer.max_frame as usize)
            .saturating_sub(DATA_PREFIX_LEN)
            .min(self.config.max_chunk as usize)
            .max(1);
        while buf.len() - start + spliced < self.config.transmit_batch && self.can_send_data() {
            let Some(session) = self.session.as_mut() else {
                return spliced;
            };
            let seq = self.next_to_send;
            let idx = seq.distance_from(session.acked) as usize;
            let Some(msg) = session.outbox.get(idx) else {
                return spliced;
            };
            let len = msg.body.len();
            if self.chunk_offset == 0 {
                self.in_flight_bytes += len as u64;
                if seq < session.sent_high {
                    session.stats.retransmitted += 1;
                } else {
                    session.stats.sent += 1;
                    session.sent_high = Seq(seq.0 + 1);
                }
            }
            // The first chunk after a resume continues what the peer holds (§5.5): its frame
            // carries the offset, so its body is 8 bytes shorter.
            let continued = std::mem::take(&mut self.send_continued);
            let (prefix, max) = if continued {
                let max = (peer.max_frame as usize)
                    .saturating_sub(DATA_CONTINUED_PREFIX_LEN)
                    .min(chunk_max)
                    .max(1);
                (DATA_CONTINUED_PREFIX_LEN, max)
            } else {
                (DATA_PREFIX_LEN, chunk_max)
            };
            let from = self.chunk_offset;
            let end = (from + max).min(len);
            let more = end < len;
            buf.reserve(HEADER_LEN + prefix);
            if continued {
                encode_continued_header(buf, seq, msg.timestamp_us, more, from as u64, end - from);
            } else {
                encode_data_header(buf, seq, msg.timestamp_us, more, end - from);
            }
            spliced += bodies.put(buf, &msg.body, from, end);
            session.stats.body_bytes_sent += (end - from) as u64;
            if more {
                self.chunk_offset = end;
            } else {
                self.chunk_offset = 0;
                self.next_to_send = Seq(seq.0 + 1);
            }
        }
        spliced
    }

    fn handle_frame(&mut self, now: Instant, frame: Frame) {
        match self.state {
            State::AwaitingHello => match frame {
                Frame::Hello(h) => self.on_hello(h),
                other => self.violation(
                    CloseCode::ProtocolError,
                    format!("expected HELLO, got frame type 0x{:02x}", other.kind()),
                ),
            },
            State::AwaitingWelcome => match frame {
                Frame::Welcome(w) => self.on_welcome(now, w),
                Frame::Reject(r) => self.on_reject(r),
                // A server going away during the handshake: try again later (§7.1).
                Frame::GoAway(g) => self.end_connection(ConnectionError::GoAway {
                    code: g.code,
                    retry_after_ms: g.retry_after_ms,
                    reason: g.reason,
                }),
                other => self.violation(
                    CloseCode::ProtocolError,
                    format!("expected WELCOME, got frame type 0x{:02x}", other.kind()),
                ),
            },
            State::AwaitingDecision => self.violation(
                CloseCode::ProtocolError,
                "frame sent before WELCOME".to_owned(),
            ),
            State::Established => {
                if std::mem::take(&mut self.proof_skip) {
                    // Begun before our WELCOME (pipelined): the client may not hold the token.
                } else if self.awaiting_proof {
                    // The client only speaks after our WELCOME: it holds the new token. §4.4
                    self.awaiting_proof = false;
                    if let Some(s) = self.session.as_mut() {
                        s.token_proven();
                    }
                }
                match frame {
                    Frame::Data(d) => self.on_data(d),
                    Frame::Ack { delivered, window } => {
                        if window.messages == 0 || window.bytes == 0 {
                            self.violation(
                                CloseCode::FlowControl,
                                "ACK grants a zero window".into(),
                            );
                        } else if self.on_ack(delivered)
                            && let Some(peer) = self.peer.as_mut()
                        {
                            peer.window = window;
                        }
                    }
                    Frame::Ping(v) => self.queue_pong(v),
                    Frame::Pong(v) => self.on_pong(now, v),
                    Frame::GoAway(g) => self.end_connection(ConnectionError::GoAway {
                        code: g.code,
                        retry_after_ms: g.retry_after_ms,
                        reason: g.reason,
                    }),
                    Frame::Close(c) => self.on_close(c),
                    other => self.violation(
                        CloseCode::ProtocolError,
                        format!("unexpected frame type 0x{:02x}", other.kind()),
                    ),
                }
            }
            State::Closed => {}
        }
    }

    fn on_hello(&mut self, h: Hello) {
        let (lo, hi) = self.config.versions;
        let common_lo = lo.max(h.min_version);
        let common_hi = hi.min(h.max_version);
        if common_lo > common_hi {
            let reason = format!(
                "no common protocol version: client speaks {}..={}, server {lo}..={hi}",
                h.min_version, h.max_version
            );
            self.reject(RejectCode::VersionMismatch, 0, &reason);
            return;
        }
        if let Err(why) = check_limits(&h.limits) {
            self.reject(RejectCode::ProtocolError, 0, why);
            return;
        }
        if let Err(why) = check_transforms(&self.config, &h.transforms) {
            self.reject(RejectCode::Incompatible, 0, &why);
            return;
        }
        self.version = common_hi;
        self.events.push_back(Event::Hello(HelloRequest {
            version: common_hi,
            name: h.name.clone(),
            credentials: h.credentials.clone(),
            resume: h.resume.clone(),
        }));
        self.hello = Some(Box::new(h));
        self.state = State::AwaitingDecision;
    }

    fn on_welcome(&mut self, now: Instant, w: Welcome) {
        let (lo, hi) = self.offered;
        if w.version < lo || w.version > hi {
            self.violation(
                CloseCode::ProtocolError,
                format!("server chose version {} outside {lo}..={hi}", w.version),
            );
            return;
        }
        if let Err(why) = check_limits(&w.limits) {
            self.violation(CloseCode::ProtocolError, why.to_owned());
            return;
        }
        let timings = match (w.version >= 2, w.timings) {
            (false, _) => None,
            (true, Some(t)) => match check_timings(&t) {
                Ok(()) => Some(t),
                Err(why) => {
                    self.violation(CloseCode::ProtocolError, why.to_owned());
                    return;
                }
            },
            (true, None) => {
                self.violation(CloseCode::ProtocolError, "WELCOME without timings".into());
                return;
            }
        };
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if w.transforms != session.transforms {
            let detail = format!(
                "WELCOME lists transforms {:?}, the session uses {:?}",
                w.transforms, session.transforms
            );
            self.violation(CloseCode::ProtocolError, detail);
            return;
        }
        let (resend_from, partial) = match (session.id, w.kind) {
            (None, WelcomeKind::New { first_seq }) => {
                session.id = Some(w.session_id);
                session.received = first_seq;
                session.delivered = first_seq;
                (session.acked, 0)
            }
            (
                Some(id),
                WelcomeKind::Resumed {
                    received,
                    delivered,
                    partial,
                },
            ) if id == w.session_id => {
                if !session.can_resume_at(received, partial)
                    || delivered > received
                    || delivered < session.acked
                {
                    self.violation(
                        CloseCode::ProtocolError,
                        "impossible resume position in WELCOME".to_owned(),
                    );
                    return;
                }
                if let Some((first, end)) = session.apply_ack(delivered) {
                    self.events.push_back(Event::Acknowledged { first, end });
                }
                (received, partial)
            }
            _ => {
                self.violation(
                    CloseCode::ProtocolError,
                    "WELCOME does not match the HELLO".to_owned(),
                );
                return;
            }
        };
        session.token = Some(w.token);
        self.version = w.version;
        if let Some(t) = timings {
            // Version 2 (§8): the client pings only once nothing arrived for its quiet
            // interval Q = max(min(keepalive, server idle / 3), min(both idle timeouts) / 2).
            // It hears a live server within Q plus a round trip (each PING is owed a PONG);
            // the server hears it through its own PINGs' PONGs, or this PING when it sends
            // nothing. A live server's PINGs, one per its keepalive interval, keep an idle
            // client quiet: one PING and one PONG per interval instead of two of each.
            let server_idle = Duration::from_millis(u64::from(t.idle_timeout_ms));
            let keepalive = self.config.keepalive_interval.min(server_idle / 3);
            self.keepalive = keepalive.max(self.config.idle_timeout.min(server_idle) / 2);
            self.ping_when_quiet = true;
        }
        let resumed = matches!(w.kind, WelcomeKind::Resumed { .. });
        self.establish(now, &w.limits, resumed);
        self.set_send_cursor(resend_from, partial);
        // Our first frame after WELCOME proves we hold the new token (§4.4): send it at once.
        self.ack_now = true;
    }

    fn on_reject(&mut self, r: Reject) {
        let offered_v2_only = self.offered.0 >= 2 && self.config.versions.0 < 2;
        if offered_v2_only
            && matches!(
                r.code,
                RejectCode::VersionMismatch | RejectCode::ProtocolError
            )
        {
            // Only the part held made this HELLO offer versions 2 and up (§5.5); a server
            // that does not speak them leaves the session untouched. Drop the part and try
            // again with the configured range (the message comes again whole).
            if let Some(s) = self.session.as_mut() {
                s.held = None;
            }
            self.end_connection(ConnectionError::Rejected {
                code: r.code,
                retry_after_ms: r.retry_after_ms,
                reason: r.reason,
            });
            return;
        }
        if r.code.is_retryable() {
            self.end_connection(ConnectionError::Rejected {
                code: r.code,
                retry_after_ms: r.retry_after_ms,
                reason: r.reason,
            });
        } else {
            self.end_session(SessionEnd::Rejected {
                code: r.code,
                reason: r.reason,
            });
        }
    }

    fn on_data(&mut self, d: Data) {
        let Some(session) = self.session.as_mut() else {
            return;
        };
        if session.closing.is_some() {
            // We sent CLOSE: our delivered position is final, later data is not delivered.
            return;
        }
        let window = self.config.window;
        let max_message = self.config.max_message as usize;
        // Continue or start a message.
        let (seq, timestamp_us, body) = match self.partial.as_mut() {
            Some(p) => {
                if p.awaiting_continuation {
                    // Held from an earlier connection: it continues exactly where it stopped.
                    let at = p.buf.len() as u64;
                    if p.seq != d.seq || d.offset != Some(at) {
                        let detail = format!(
                            "message {} continues at byte {at}: expected CONTINUED DATA there",
                            p.seq
                        );
                        self.violation(CloseCode::ProtocolError, detail);
                        return;
                    }
                    p.awaiting_continuation = false;
                } else if d.offset.is_some() {
                    let detail = format!("CONTINUED DATA for {} inside message {}", d.seq, p.seq);
                    self.violation(CloseCode::ProtocolError, detail);
                    return;
                }
                if p.seq != d.seq {
                    let detail = format!("chunk of {} inside message {}", d.seq, p.seq);
                    self.violation(CloseCode::ProtocolError, detail);
                    return;
                }
                if !p.duplicate {
                    // The buffer grows ahead of its length (doubling): what it would take after
                    // this chunk is checked against the allowance before it grows.
                    let len = p.buf.len();
                    let after = if p.buf.capacity() - len >= d.body.len() {
                        p.buf.capacity()
                    } else {
                        (len + d.body.len()).max(2 * p.buf.capacity())
                    };
                    if self
                        .allowance
                        .is_some_and(|a| session.inbox_bytes + after as u64 > a)
                    {
                        self.over_allowance();
                        return;
                    }
                    p.buf.extend_from_slice(&d.body);
                    if p.buf.len() > max_message {
                        self.violation(
                            CloseCode::MessageTooLarge,
                            format!("message exceeds {max_message} bytes"),
                        );
                        return;
                    }
                    if session.inbox_bytes > 0
                        && session.inbox_bytes + p.buf.len() as u64 > u64::from(window.bytes)
                    {
                        self.violation(CloseCode::FlowControl, "byte window exceeded".into());
                        return;
                    }
                }
                if d.more {
                    return;
                }
                let Some(p) = self.partial.take() else {
                    return;
                };
                if p.duplicate {
                    session.stats.duplicates_dropped += 1;
                    return;
                }
                (p.seq, p.timestamp_us, p.buf.freeze())
            }
            None => {
                if d.offset.is_some() {
                    let detail = format!("CONTINUED DATA for {} with no message held", d.seq);
                    self.violation(CloseCode::ProtocolError, detail);
                    return;
                }
                if d.seq < session.received {
                    // Duplicate suppression (§5.1): already received, drop it.
                    if d.more {
                        self.partial = Some(Partial {
                            seq: d.seq,
                            timestamp_us: d.timestamp_us,
                            buf: BytesMut::new(),
                            duplicate: true,
                            awaiting_continuation: false,
                        });
                    } else {
                        session.stats.duplicates_dropped += 1;
                    }
                    return;
                }
                if d.seq > session.received || d.seq.next().is_none() {
                    let detail = if d.seq.next().is_none() {
                        format!("sequence number {} is past the end of the space", d.seq)
                    } else {
                        format!("gap: expected {}, got {}", session.received, d.seq)
                    };
                    self.violation(CloseCode::ProtocolError, detail);
                    return;
                }
                if session.inbox.len() >= window.messages as usize {
                    self.violation(CloseCode::FlowControl, "message window exceeded".into());
                    return;
                }
                if d.body.len() > max_message {
                    self.violation(
                        CloseCode::MessageTooLarge,
                        format!("message exceeds {max_message} bytes"),
                    );
                    return;
                }
                if session.inbox_bytes > 0
                    && session.inbox_bytes + d.body.len() as u64 > u64::from(window.bytes)
                {
                    self.violation(CloseCode::FlowControl, "byte window exceeded".into());
                    return;
                }
                if self
                    .allowance
                    .is_some_and(|a| session.inbox_bytes + d.body.len() as u64 > a)
                {
                    self.over_allowance();
                    return;
                }
                if d.more {
                    // Grows with the bytes that arrive, never from an announced size.
                    let mut buf = BytesMut::new();
                    buf.extend_from_slice(&d.body);
                    self.partial = Some(Partial {
                        seq: d.seq,
                        timestamp_us: d.timestamp_us,
                        buf,
                        duplicate: false,
                        awaiting_continuation: false,
                    });
                    return;
                }
                (d.seq, d.timestamp_us, d.body)
            }
        };
        session.inbox_bytes += body.len() as u64;
        session.inbox.push_back(Message {
            seq,
            timestamp_us,
            body,
        });
        session.received = Seq(seq.0 + 1);
        session.stats.received += 1;
    }

    /// Applies an ACK; false (and the connection closed) if it is impossible.
    fn on_ack(&mut self, delivered: Seq) -> bool {
        let Some(session) = self.session.as_mut() else {
            return false;
        };
        if delivered < session.acked || delivered > self.next_to_send {
            let detail = format!(
                "ACK {delivered} outside {}..={}",
                session.acked, self.next_to_send
            );
            self.violation(CloseCode::ProtocolError, detail);
            return false;
        }
        let before = session.outbox_bytes;
        if let Some((first, end)) = session.apply_ack(delivered) {
            self.in_flight_bytes = self
                .in_flight_bytes
                .saturating_sub(before - session.outbox_bytes);
            self.events.push_back(Event::Acknowledged { first, end });
        }
        true
    }

    /// Answers a PING. A PONG still waiting to be written takes the newer value instead of a
    /// second PONG being queued (§8): a peer that sends PINGs and never reads cannot grow the
    /// control queue.
    fn queue_pong(&mut self, v: u64) {
        for f in &mut self.control {
            if let Frame::Pong(old) = f {
                *old = v;
                return;
            }
        }
        self.control.push_back(Frame::Pong(v));
    }

    fn on_pong(&mut self, now: Instant, v: u64) {
        // The value is the peer's echo of ours; a bogus one is ignored, never trusted.
        let Some(sent) = self.epoch.checked_add(Duration::from_micros(v)) else {
            return;
        };
        if sent > now {
            return;
        }
        let rtt = now - sent;
        if let Some(s) = self.session.as_mut() {
            s.stats.rtt = Some(rtt);
        }
        self.events.push_back(Event::Pong { rtt });
    }

    fn on_close(&mut self, c: Close) {
        if !self.on_ack(c.delivered) {
            return;
        }
        let Some(session) = self.session.as_mut() else {
            return;
        };
        let (by_peer, code, reason) = match session.closing.as_deref().cloned() {
            Some((code, reason)) => (false, code, reason),
            None => {
                session.closing = Some(Box::new((c.code, c.reason.clone())));
                self.queue_close(CloseCode::Normal, "");
                (true, c.code, c.reason)
            }
        };
        self.end_session(SessionEnd::Closed {
            by_peer,
            code,
            reason,
            confirmed: true,
        });
    }

    /// The receive allowance is spent: this connection ends with GOAWAY, the session stays.
    fn over_allowance(&mut self) {
        // Memory is what ran out: the part received is not kept for the resume.
        self.drop_partial = true;
        self.go_away(CloseCode::ResourceLimit, 1_000, "memory budget spent");
    }

    /// The peer broke the protocol: say so and end (§9).
    fn violation(&mut self, code: CloseCode, detail: String) {
        match self.state {
            State::AwaitingHello | State::AwaitingDecision => {
                self.reject(RejectCode::ProtocolError, 0, &detail);
            }
            State::AwaitingWelcome => {
                self.end_session(SessionEnd::ProtocolViolation { code, detail });
            }
            State::Established => {
                self.control.push_back(Frame::Close(Close {
                    code,
                    delivered: self.session.as_ref().map_or(Seq(0), |s| s.delivered),
                    reason: detail.clone(),
                }));
                self.end_session(SessionEnd::ProtocolViolation { code, detail });
            }
            State::Closed => {}
        }
    }

    fn end_connection(&mut self, err: ConnectionError) {
        if self.state == State::Closed {
            return;
        }
        self.state = State::Closed;
        // Version 2: a message received in part stays with the session, to be continued after
        // the resume (§5.5); version 1 drops it and the sender starts it again.
        if let Some(p) = self.partial.take()
            && self.version >= 2
            && !p.duplicate
            && !p.buf.is_empty()
            && !self.drop_partial
            && let Some(session) = self.session.as_mut()
            && session.closing.is_none()
        {
            session.held = Some(Box::new(HeldPartial {
                seq: p.seq,
                timestamp_us: p.timestamp_us,
                buf: p.buf,
            }));
        }
        self.decoder.reset();
        self.events.push_back(Event::Disconnected(err));
    }

    fn end_session(&mut self, reason: SessionEnd) {
        if self.state == State::Closed && self.session.is_none() {
            return;
        }
        self.state = State::Closed;
        self.partial = None;
        self.decoder.reset();
        let (unacknowledged, discarded) = match self.session.take() {
            Some(mut s) => (s.take_unacknowledged(), s.discarded + s.discard_inbox()),
            None => (Vec::new(), 0),
        };
        self.events.push_back(Event::SessionEnded {
            reason,
            unacknowledged,
            discarded,
        });
    }

    /// The timings a version-2 WELCOME announces: this server's (§8).
    fn own_timings(&self) -> Option<Timings> {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        // Whole milliseconds, saturated: still a valid pair whatever the durations were
        // (at least 100 ms of idle timeout, a keepalive below it).
        let idle_timeout_ms = ms(self.config.idle_timeout).max(MIN_IDLE_TIMEOUT_MS);
        (self.version >= 2).then(|| Timings {
            keepalive_ms: ms(self.config.keepalive_interval).clamp(1, idle_timeout_ms - 1),
            idle_timeout_ms,
        })
    }

    fn micros_since_epoch(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }
}

/// What a peer's first bytes are when they are no steadfast frame, if recognisable: a TLS
/// record, or text (an HTTP server's answer, say).
fn foreign_protocol(first: &[u8]) -> Option<String> {
    if let [0x14..=0x17, 0x03, ..] = first {
        return Some("the peer speaks TLS (its first bytes are a TLS record)".into());
    }
    let text = |b: &u8| matches!(b, 0x20..=0x7e | b'\r' | b'\n' | b'\t');
    if first.len() >= 4 && first.iter().all(text) {
        let shown: String = String::from_utf8_lossy(first)
            .chars()
            .take_while(|c| *c != '\r' && *c != '\n')
            .collect();
        return Some(format!(
            "the peer answered with text ({shown:?}…): not a steadfast peer"
        ));
    }
    None
}

fn local_limits(config: &Config) -> Limits {
    Limits {
        max_frame: config.max_frame,
        max_message: config.max_message,
        window: config.window,
    }
}

/// Server side: a client's transform chain is accepted whole or not at all (§4.7): every
/// transform in it must be supported here, and every required one must be in it.
fn check_transforms(config: &Config, offered: &[String]) -> Result<(), String> {
    if let Some(t) = offered.iter().find(|t| !config.transforms.contains(t)) {
        return Err(format!(
            "message transform {t:?} is not supported here (supported: {:?})",
            config.transforms
        ));
    }
    if let Some(t) = config
        .required_transforms
        .iter()
        .find(|t| !offered.contains(t))
    {
        return Err(format!("message transform {t:?} is required here"));
    }
    for (i, t) in offered.iter().enumerate() {
        if offered[..i].contains(t) {
            return Err(format!("message transform {t:?} is listed twice"));
        }
    }
    Ok(())
}

/// The timings of a version-2 WELCOME (§8).
fn check_timings(t: &Timings) -> Result<(), &'static str> {
    if t.keepalive_ms == 0 || t.idle_timeout_ms < MIN_IDLE_TIMEOUT_MS {
        return Err("announced timings below the minimum");
    }
    if t.keepalive_ms >= t.idle_timeout_ms {
        return Err("announced keepalive interval not below the idle timeout");
    }
    Ok(())
}

fn check_limits(l: &Limits) -> Result<(), &'static str> {
    if l.max_frame < MIN_MAX_FRAME {
        return Err("announced max_frame below the minimum");
    }
    if l.max_message == 0 || l.window.messages == 0 || l.window.bytes == 0 {
        return Err("announced limits must be non-zero");
    }
    Ok(())
}
