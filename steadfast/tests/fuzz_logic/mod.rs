//! The logic of the fuzz targets in `fuzz/` (cargo-fuzz), shared with `tests/fuzz_corpus.rs`,
//! which replays the stored corpus through it as ordinary tests so that CI needs no fuzzer.
//!
//! Each entry point takes the raw fuzz input and panics when an invariant breaks:
//!
//! * [`frame_decoder`]: a [`Decoder`] fed arbitrary bytes in arbitrary splits (its buffer
//!   shrunk between reads) returns the same frames and the same error as when fed everything
//!   at once, and every frame it returns encodes back to exactly the bytes it was decoded from;
//! * [`handshake`]: a server `Connection` fed arbitrary client bytes (its application answers
//!   HELLO with `accept_new`, or `accept_resume` of the session it holds when the id matches,
//!   else `reject`), or a client `Connection` fed arbitrary server bytes;
//! * [`connection_ops`]: a client and a server driven by a sequence of operations (send,
//!   receive, move bytes, advance the virtual clock, cut the link, resume, inject bytes, close,
//!   go away) decoded from the input; the receiver delivers in order without duplicates, what
//!   is acknowledged was delivered, and the outbox and inbox stay within their bounds.
//!
//! * [`frames_v2`]: protocol version 2's frames (parser and decoder, roundtrip) and a client
//!   and a server with large messages in flight across cuts and resumes (see its module).
//!
//! [`seeds`] makes the seed corpus of each target.

mod frames_v2;

#[allow(unused_imports)] // used by the test and the `frames_v2` target, not by the others
pub(crate) use frames_v2::frames_v2;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use steadfast::proto::frame::{
    DATA_CONTINUED_PREFIX_LEN, DATA_PREFIX_LEN, Data, GoAway, HEADER_LEN, Hello, Reject, Welcome,
    WelcomeKind,
};
use steadfast::proto::{
    CloseCode, Config, Connection, ConnectionError, Decoder, Event, Frame, FrameError,
    HelloRequest, Limits, Message, RejectCode, ResumeRequest, ResumeToken, SendError, Seq, Session,
    SessionEnd, SessionId, Window,
};

// ----------------------------------------------------------------------------- input reading

/// Reads the fuzz input front to back; past its end every number reads as zero.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.data.split_at(n.min(self.data.len()));
        self.data = b;
        a
    }

    fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}

/// How a byte stream is cut into `feed`/`handle_input` calls: a count byte (0–7) and that many
/// big-endian `u16` lengths, used in turn (0: an empty call, then one byte; 0xffff: everything
/// left). No lengths: everything in one call.
struct Splits(Vec<u16>);

impl Splits {
    fn read(r: &mut Reader<'_>) -> Splits {
        let n = r.u8() % 8;
        Splits((0..n).map(|_| r.u16()).collect())
    }

    /// The encoding `read` reads (at most seven lengths).
    fn encode(lengths: &[u16]) -> Vec<u8> {
        let lengths = &lengths[..lengths.len().min(7)];
        let mut out = vec![lengths.len() as u8];
        for l in lengths {
            out.extend(l.to_be_bytes());
        }
        out
    }

    fn chunks<'a>(&self, mut s: &'a [u8]) -> Vec<&'a [u8]> {
        if self.0.is_empty() {
            return vec![s];
        }
        let mut out = Vec::new();
        for &b in self.0.iter().cycle() {
            if s.is_empty() {
                break;
            }
            let n = match b {
                0 => {
                    out.push(&s[..0]);
                    1
                }
                u16::MAX => s.len(),
                b => usize::from(b),
            };
            let (a, rest) = s.split_at(n.min(s.len()));
            out.push(a);
            s = rest;
        }
        out
    }
}

// ------------------------------------------------------------------------- target 1: decoder

/// Maximum frame sizes the decoder target chooses from (the first input byte).
const DECODER_MAX_FRAMES: [u32; 6] = [8_192, 65_536, 16, 0, 1 << 20, u32::MAX];

/// Target `frame_decoder`: input = max-frame choice, [`Splits`], then the byte stream.
pub(crate) fn frame_decoder(data: &[u8]) {
    let mut r = Reader::new(data);
    let max_frame = DECODER_MAX_FRAMES[usize::from(r.u8()) % DECODER_MAX_FRAMES.len()];
    let splits = Splits::read(&mut r);
    let stream = r.rest();
    let whole = decode_stream(max_frame, (1, 1, 0), &[stream]);
    let split = decode_stream(max_frame, (1, 1, 0), &splits.chunks(stream));
    assert_eq!(whole, split, "the split changed what was decoded");
}

/// Decodes `chunks` as one stream until the first error; checks every frame re-encodes to the
/// bytes it came from and the buffered bytes stay within one header plus one frame. `plan`:
/// the decoder's version for the first `plan.2` frames, then its version after them (as a
/// connection switches after its handshake).
fn decode_stream(
    max_frame: u32,
    plan: (u16, u16, usize),
    chunks: &[&[u8]],
) -> Vec<Result<Frame, FrameError>> {
    let stream: Vec<u8> = chunks.concat();
    let mut dec = Decoder::new(max_frame);
    let switch_version = |dec: &mut Decoder, decoded: usize| {
        dec.set_version(if decoded < plan.2 { plan.0 } else { plan.1 });
    };
    switch_version(&mut dec, 0);
    let mut out = Vec::new();
    let mut fed = 0;
    let mut consumed = 0;
    for chunk in chunks {
        dec.feed(chunk);
        fed += chunk.len();
        loop {
            match dec.decode() {
                Ok(Some(frame)) => {
                    let end = fed - dec.buffered();
                    let mut encoded = Vec::new();
                    frame.encode(&mut encoded);
                    assert_eq!(
                        encoded,
                        &stream[consumed..end],
                        "{frame:?} does not re-encode to its bytes"
                    );
                    assert!(encoded.len() - HEADER_LEN <= max_frame as usize);
                    consumed = end;
                    out.push(Ok(frame));
                    switch_version(&mut dec, out.len());
                }
                Ok(None) => {
                    assert!(dec.buffered() <= HEADER_LEN + max_frame as usize);
                    // What an idle connection does between reads: must lose nothing.
                    dec.shrink();
                    break;
                }
                Err(e) => {
                    // Its message must not panic either (the connection sends it as a reason).
                    let _ = e.to_string();
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }
    out
}

// ------------------------------------------------------------------------------ shared parts

/// A virtual clock: one real `Instant` plus a duration.
struct Clock {
    base: Instant,
    elapsed: Duration,
}

impl Clock {
    // One real instant is the base of the virtual clock; the core is handed `now()` below.
    #[allow(clippy::disallowed_methods)]
    fn new() -> Self {
        Clock {
            base: Instant::now(),
            elapsed: Duration::ZERO,
        }
    }

    fn now(&self) -> Instant {
        self.base + self.elapsed
    }
}

/// A configuration and the values of it the checks need (its fields are private).
#[derive(Clone, Copy)]
struct Preset {
    initial: Seq,
    max_message: u32,
    window: Window,
    outbox: (usize, u64),
    max_frame: u32,
    max_chunk: u32,
    transmit_batch: usize,
}

/// The configurations the targets choose from: the defaults, a tight one with many chunks, a
/// tiny window with one-frame transmit batches, and sequence numbers at the end of the space.
const PRESETS: [Preset; 4] = [
    Preset {
        initial: Seq(1),
        max_message: 16 << 20,
        window: Window {
            messages: 8_192,
            bytes: 8 << 20,
        },
        outbox: (16_384, 32 << 20),
        max_frame: 65_536,
        max_chunk: 16_384,
        transmit_batch: 128 << 10,
    },
    Preset {
        initial: Seq(1),
        max_message: 70_000,
        window: Window {
            messages: 4,
            bytes: 50_000,
        },
        outbox: (8, 200_000),
        max_frame: 8_192,
        max_chunk: 1_000,
        transmit_batch: 10_000,
    },
    Preset {
        initial: Seq(1 << 32),
        max_message: 20_000,
        window: Window {
            messages: 2,
            bytes: 30_000,
        },
        outbox: (3, 60_000),
        max_frame: 16_384,
        max_chunk: 100_000,
        transmit_batch: 1,
    },
    Preset {
        initial: Seq(u64::MAX - 6),
        max_message: 70_000,
        window: Window {
            messages: 16,
            bytes: 100_000,
        },
        outbox: (6, 300_000),
        max_frame: 65_536,
        max_chunk: 3_000,
        transmit_batch: 128 << 10,
    },
];

impl Preset {
    fn config(&self) -> Config {
        Config::default()
            .initial_seq(self.initial)
            .max_message(self.max_message)
            .window(self.window)
            .outbox(self.outbox.0, self.outbox.1)
            .max_frame(self.max_frame)
            .max_chunk(self.max_chunk)
            .transmit_batch(self.transmit_batch)
    }

    /// The session stays within its configured bounds.
    fn check_bounds(&self, s: &Session) {
        assert!(s.outbox_len() <= self.outbox.0, "outbox {}", s.outbox_len());
        assert!(
            s.outbox_bytes() <= self.outbox.1,
            "outbox {}",
            s.outbox_bytes()
        );
        assert!(
            s.inbox_len() <= self.window.messages as usize,
            "inbox {}",
            s.inbox_len()
        );
        assert!(
            s.inbox_bytes() <= u64::from(self.window.bytes) + u64::from(self.max_message),
            "inbox {} bytes",
            s.inbox_bytes()
        );
    }
}

/// A connection and what was seen of it.
struct Peer {
    conn: Connection,
    /// `Disconnected` and `SessionEnded` events seen: exactly one ends a connection.
    ends: u32,
    /// Closed and written out: nothing more may come out.
    drained: bool,
}

impl Peer {
    fn new(conn: Connection) -> Self {
        Peer {
            conn,
            ends: 0,
            drained: false,
        }
    }

    /// Appends everything the connection has to send now.
    fn transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        let start = out.len();
        let mut calls = 0;
        while self.conn.poll_transmit(now, out) > 0 {
            calls += 1;
            assert!(calls < 1_000_000, "poll_transmit never runs dry");
        }
        if self.drained {
            assert_eq!(out.len(), start, "output after the connection ended");
        }
        if self.conn.is_closed() {
            self.drained = true;
        }
    }

    fn count_end(&mut self, ev: &Event) {
        if matches!(ev, Event::Disconnected(_) | Event::SessionEnded { .. }) {
            self.ends += 1;
        }
    }

    fn check_ends(&self) {
        assert!(self.ends <= 1, "{} ends of one connection", self.ends);
        assert_eq!(
            self.conn.is_closed(),
            self.ends == 1,
            "closed without its one Disconnected or SessionEnded event, or the reverse"
        );
    }

    /// Fires timers at `now` (due or not) and checks the next deadline is later; then releases
    /// idle buffers, as the runtime's driver does after every timer.
    fn timeout(&mut self, now: Instant) {
        self.conn.handle_timeout(now);
        self.conn.release_buffers();
        if let Some(t) = self.conn.poll_timeout() {
            assert!(
                t > now,
                "poll_timeout not later than now after handle_timeout"
            );
        }
    }
}

/// Watches the bytes one connection writes: whole frames only, well-formed by the rules of the
/// connection's version, and DATA frames within the peer's maximum frame size.
struct Monitor {
    dec: Decoder,
}

impl Monitor {
    fn new() -> Self {
        Monitor {
            dec: Decoder::new(u32::MAX),
        }
    }

    /// `version`: the writer's negotiated version (1 before its handshake finished).
    fn check(&mut self, bytes: &[u8], peer_max_frame: Option<u32>, version: u16) {
        self.dec.set_version(version);
        self.dec.feed(bytes);
        loop {
            match self.dec.decode() {
                Ok(Some(Frame::Data(d))) => {
                    if let Some(max) = peer_max_frame {
                        let prefix = if d.offset.is_some() {
                            DATA_CONTINUED_PREFIX_LEN
                        } else {
                            DATA_PREFIX_LEN
                        };
                        assert!(
                            prefix + d.body.len() <= max as usize,
                            "DATA frame above the peer's maximum of {max}"
                        );
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => panic!("a connection wrote a bad frame: {e}"),
            }
        }
        assert_eq!(self.dec.buffered(), 0, "a connection wrote part of a frame");
    }
}

fn token(n: u64) -> ResumeToken {
    let mut t = [0x3c; 16];
    t[..8].copy_from_slice(&n.to_be_bytes());
    ResumeToken(t)
}

fn session_id(n: u64) -> SessionId {
    let mut t = [0x5e; 16];
    t[..8].copy_from_slice(&n.to_be_bytes());
    SessionId(t)
}

/// Moves bytes between two connections until both are quiet (the clock stands still).
fn exchange(now: Instant, a: &mut Connection, b: &mut Connection) {
    for _ in 0..1_000 {
        let mut ab = Vec::new();
        while a.poll_transmit(now, &mut ab) > 0 {}
        b.handle_input(now, &ab);
        let mut ba = Vec::new();
        while b.poll_transmit(now, &mut ba) > 0 {}
        a.handle_input(now, &ba);
        if ab.is_empty() && ba.is_empty() {
            return;
        }
    }
    panic!("the setup pair never went quiet");
}

/// Session id and token of the session the handshake target's server holds.
const HELD_SID: u64 = 0xfeed;
const HELD_TOKEN: u64 = 0x70;

/// A client and a server session that lived on one connection and can be resumed: the client
/// sent one message and the server two; each application took one. Deterministic.
fn resumable_sessions(config: &Config, now: Instant) -> (Session, Session) {
    let session = Session::client(config, Some("fuzz".into()));
    let mut client = Connection::connect(config.clone(), now, session, None).unwrap();
    let mut server = Connection::accept(config.clone(), now).unwrap();
    client.send(Bytes::from_static(b"c1"), 0).unwrap();
    let mut hello = Vec::new();
    client.poll_transmit(now, &mut hello);
    server.handle_input(now, &hello);
    server.accept_new(now, session_id(HELD_SID), token(HELD_TOKEN));
    server.send(Bytes::from_static(b"s1"), 0).unwrap();
    server.send(Bytes::from_static(b"s2"), 0).unwrap();
    exchange(now, &mut client, &mut server);
    client.recv().unwrap();
    server.recv().unwrap();
    exchange(now, &mut client, &mut server);
    (
        client.take_session().unwrap(),
        server.take_session().unwrap(),
    )
}

// ---------------------------------------------------------------------- target 2: handshake

/// The handshake target's mode byte.
mod mode {
    /// Client side (else server side).
    pub(super) const CLIENT: u8 = 0x01;
    /// The application takes every received message.
    pub(super) const RECV: u8 = 0x02;
    /// Two bits: the virtual time that passes after each chunk (none, 1 ms, 2 s, 11 s).
    pub(super) const STEP_SHIFT: u8 = 2;
    /// Client side: resume the held session (else a new one with two queued messages).
    pub(super) const RESUME: u8 = 0x10;
    /// Two bits: the configuration preset.
    pub(super) const PRESET_SHIFT: u8 = 5;
}

const HANDSHAKE_STEPS: [Duration; 4] = [
    Duration::ZERO,
    Duration::from_millis(1),
    Duration::from_secs(2),
    Duration::from_secs(11),
];

/// The two ends as the handshake target sets them up, before any byte moves.
struct HandshakeSetup {
    preset: Preset,
    client: Connection,
    server: Connection,
    /// The session the server application holds (id `HELD_SID`, token `HELD_TOKEN`).
    held: Option<Session>,
}

impl HandshakeSetup {
    fn new(mode: u8, now: Instant) -> Self {
        let preset = PRESETS[usize::from(mode >> mode::PRESET_SHIFT) % PRESETS.len()];
        let config = preset.config();
        let (resumable, held) = resumable_sessions(&config, now);
        let session = if mode & mode::RESUME != 0 {
            resumable
        } else {
            let mut s = Session::client(&config, Some("carol".into()));
            s.send(Bytes::from_static(b"q1"), 1).unwrap();
            s.send(Bytes::from(vec![b'q'; 20_000]), 2).unwrap();
            s
        };
        let client = Connection::connect(
            config.clone(),
            now,
            session,
            Some(Bytes::from_static(b"pw")),
        )
        .unwrap();
        let server = Connection::accept(config, now).unwrap();
        HandshakeSetup {
            preset,
            client,
            server,
            held: Some(held),
        }
    }
}

/// The handshake target's server application: a new session for a new HELLO, a resume of the
/// held session when the id matches, a REJECT otherwise; one message once established.
fn server_app(conn: &mut Connection, now: Instant, ev: Event, held: &mut Option<Session>) {
    match ev {
        Event::Hello(req) => match req.resume {
            None => conn.accept_new(now, session_id(1), token(1)),
            Some(r) if r.session_id == session_id(HELD_SID) => match held.take() {
                Some(session) => {
                    if let Err(session) = conn.accept_resume(now, session, token(2)) {
                        *held = Some(*session);
                    }
                }
                None => conn.reject(RejectCode::UnknownSession, 0, "unknown session"),
            },
            Some(_) => conn.reject(RejectCode::UnknownSession, 0, "unknown session"),
        },
        Event::Established { .. } => {
            // Fails when the client announced a smaller maximum message: then it is not sent.
            let _ = conn.send(Bytes::from_static(b"from the server"), 3);
        }
        _ => {}
    }
}

/// Target `handshake`: input = mode byte, [`Splits`], then the bytes the peer sends.
pub(crate) fn handshake(data: &[u8]) {
    let mut r = Reader::new(data);
    let mode = r.u8();
    let splits = Splits::read(&mut r);
    let stream = r.rest();
    let mut clock = Clock::new();
    let step = HANDSHAKE_STEPS[usize::from(mode >> mode::STEP_SHIFT) % 4];
    let setup = HandshakeSetup::new(mode, clock.now());
    let preset = setup.preset;
    let mut held = setup.held;
    let mut peer = Peer::new(if mode & mode::CLIENT != 0 {
        setup.client
    } else {
        setup.server
    });
    let mut monitor = Monitor::new();
    let mut out = Vec::new();
    peer.transmit(clock.now(), &mut out);
    monitor.check(&out, None, 1);
    for chunk in splits.chunks(stream) {
        let now = clock.now();
        peer.conn.handle_input(now, chunk);
        handshake_round(&mut peer, &mut monitor, now, mode, &mut held);
        if !step.is_zero() {
            clock.elapsed += step;
            let now = clock.now();
            peer.timeout(now);
            handshake_round(&mut peer, &mut monitor, now, mode, &mut held);
        }
        if let Some(s) = peer.conn.session() {
            preset.check_bounds(s);
        }
        if let Some(s) = &held {
            preset.check_bounds(s);
        }
    }
}

fn handshake_round(
    peer: &mut Peer,
    monitor: &mut Monitor,
    now: Instant,
    mode: u8,
    held: &mut Option<Session>,
) {
    while let Some(ev) = peer.conn.poll_event() {
        peer.count_end(&ev);
        if mode & mode::CLIENT == 0 {
            server_app(&mut peer.conn, now, ev, held);
        }
    }
    if mode & mode::RECV != 0 {
        while peer.conn.recv().is_some() {}
    }
    let mut out = Vec::new();
    peer.transmit(now, &mut out);
    monitor.check(
        &out,
        peer.conn.peer_limits().map(|l| l.max_frame),
        peer.conn.version().unwrap_or(1),
    );
    // Answering a HELLO may have ended the connection (a REJECT).
    while let Some(ev) = peer.conn.poll_event() {
        peer.count_end(&ev);
    }
    peer.check_ends();
}

// ------------------------------------------------------------------ target 3: connection ops

/// The operations of the `connection_ops` target (the low four bits of an op byte).
mod op {
    pub(super) const SEND_CLIENT: u8 = 0;
    pub(super) const SEND_SERVER: u8 = 1;
    pub(super) const RECV_CLIENT: u8 = 2;
    pub(super) const RECV_SERVER: u8 = 3;
    pub(super) const PUMP: u8 = 4;
    pub(super) const STEP: u8 = 5;
    pub(super) const ADVANCE: u8 = 6;
    pub(super) const CUT: u8 = 7;
    pub(super) const RESUME: u8 = 8;
    pub(super) const INJECT_CLIENT: u8 = 9;
    pub(super) const INJECT_SERVER: u8 = 10;
    pub(super) const CLOSE_CLIENT: u8 = 11;
    pub(super) const CLOSE_SERVER: u8 = 12;
    pub(super) const GO_AWAY_CLIENT: u8 = 13;
    pub(super) const GO_AWAY_SERVER: u8 = 14;
    pub(super) const PING: u8 = 15;
}

const ADVANCES: [Duration; 8] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(10),
    Duration::from_millis(100),
    Duration::from_secs(1),
    Duration::from_secs(3),
    Duration::from_secs(5),
    Duration::from_secs(11),
];

/// At most this many operations and body bytes per input, to keep executions fast.
const MAX_OPS: usize = 1_000;
const MAX_BODY_BYTES: usize = 4 << 20;

/// A message size of 0..=70,000 bytes: small sizes are cheap to express.
fn read_size(r: &mut Reader<'_>) -> usize {
    let b = r.u8();
    match b >> 6 {
        0 => usize::from(b & 63),
        1 => (usize::from(b & 63) << 8) | usize::from(r.u8()),
        2 => usize::from(r.u16()),
        _ => 65_536 + usize::from(r.u16()) % 4_465,
    }
}

/// The body of the `index`-th message of a direction: its index, then a pattern.
fn make_body(index: usize, len: usize) -> Bytes {
    let tag = (index as u64).to_le_bytes();
    Bytes::from(
        (0..len)
            .map(|i| {
                if i < 8 {
                    tag[i]
                } else {
                    (index as u8) ^ (i as u8)
                }
            })
            .collect::<Vec<u8>>(),
    )
}

/// One direction of the session: what the sender queued, what the receiving application took.
struct Flow {
    /// Sequence number of the sender's first message.
    first: Seq,
    /// Sequence number and length of every message the sender's `send` accepted, in order.
    sent: Vec<(Seq, usize)>,
    /// Messages the receiving application took.
    taken: usize,
    /// Sequence number of the last message taken.
    last: Option<Seq>,
    /// End of the last `Acknowledged` range the sender reported.
    ack_end: Seq,
}

impl Flow {
    fn new(first: Seq) -> Self {
        Flow {
            first,
            sent: Vec::new(),
            taken: 0,
            last: None,
            ack_end: first,
        }
    }

    /// The receiver's delivered position: everything below was taken by its application.
    fn delivered(&self) -> Seq {
        self.last.map_or(self.first, |s| Seq(s.0 + 1))
    }

    fn on_send(&mut self, seq: Seq, len: usize) {
        let expected = self.sent.last().map_or(self.first, |&(s, _)| Seq(s.0 + 1));
        assert_eq!(
            seq, expected,
            "send returned a sequence number out of order"
        );
        self.sent.push((seq, len));
    }

    /// The receiving application took `msg`: in order, no duplicates, the body as sent.
    fn on_taken(&mut self, msg: &Message, trusted: bool) {
        if let Some(last) = self.last {
            assert_eq!(msg.seq, Seq(last.0 + 1), "delivered out of order or twice");
        }
        if trusted {
            let Some(&(seq, len)) = self.sent.get(self.taken) else {
                panic!("delivered {} which was never sent", msg.seq);
            };
            assert_eq!(msg.seq, seq, "delivered the wrong message");
            assert!(
                msg.body == make_body(self.taken, len),
                "the body of message {seq} changed on the way"
            );
        }
        self.last = Some(msg.seq);
        self.taken += 1;
    }

    /// The sender's `Acknowledged` ranges follow each other; what they cover was delivered.
    fn on_acknowledged(&mut self, first: Seq, end: Seq, trusted: bool) {
        assert_eq!(first, self.ack_end, "acknowledged ranges not contiguous");
        assert!(end > first, "empty acknowledged range");
        self.ack_end = end;
        if trusted {
            assert!(
                end <= self.delivered(),
                "{end} acknowledged, only {} delivered",
                self.delivered()
            );
        }
    }

    /// The sender's session ended: what it hands back is the tail of what it sent and covers
    /// everything not delivered; after a confirmed close, exactly that.
    fn on_ended(&self, reason: &SessionEnd, unacknowledged: &[Message], trusted: bool) {
        if !trusted {
            return;
        }
        assert!(unacknowledged.len() <= self.sent.len());
        let from = self.sent.len() - unacknowledged.len();
        for (i, m) in unacknowledged.iter().enumerate() {
            let (seq, len) = self.sent[from + i];
            assert_eq!(
                m.seq, seq,
                "unacknowledged messages are not the tail of the sent"
            );
            assert!(m.body == make_body(from + i, len));
        }
        assert!(
            from <= self.taken,
            "message {from} neither delivered nor handed back"
        );
        if matches!(
            reason,
            SessionEnd::Closed {
                confirmed: true,
                ..
            }
        ) {
            assert_eq!(
                from, self.taken,
                "a confirmed close handed back a delivered message"
            );
        }
    }
}

/// Between honest peers nobody breaks the protocol: a connection or session ends only by
/// time, the link, the applications' own decisions, or a peer's smaller message limit.
fn check_honest_end(ev: &Event) {
    match ev {
        Event::Disconnected(e) => match e {
            ConnectionError::ProtocolViolation(_) => panic!("honest peers: {e}"),
            ConnectionError::Rejected { code, .. } => assert!(
                matches!(code, RejectCode::UnknownSession | RejectCode::ServerFull),
                "honest peers: {e}"
            ),
            _ => {}
        },
        Event::SessionEnded { reason, .. } => match reason {
            SessionEnd::ProtocolViolation { .. } => panic!("honest peers: {reason}"),
            SessionEnd::Closed { code, .. } => assert!(
                matches!(
                    code,
                    CloseCode::Normal | CloseCode::Kicked | CloseCode::MessageTooLarge
                ),
                "honest peers: {reason}"
            ),
            SessionEnd::Rejected { code, .. } => {
                assert_eq!(*code, RejectCode::UnknownSession, "honest peers: {reason}");
            }
            _ => {}
        },
        _ => {}
    }
}

/// A client and a server application on a simulated link and a virtual clock.
struct Harness {
    clock: Clock,
    cp: Preset,
    sp: Preset,
    client: Peer,
    server: Peer,
    /// The server's previous connection, while it may still hold the session.
    server_old: Option<Peer>,
    /// A session the server application holds outside any connection.
    table: Option<Session>,
    to_server: VecDeque<u8>,
    to_client: VecDeque<u8>,
    link_up: bool,
    mon_up: Monitor,
    mon_down: Monitor,
    /// Client to server.
    up: Flow,
    /// Server to client.
    down: Flow,
    /// Bytes were injected: the peers may have seen forged frames, so only the checks that do
    /// not trust the stream hold until the next session.
    tainted: bool,
    sid: SessionId,
    counter: u64,
    body_bytes: usize,
}

impl Harness {
    fn new(cp: Preset, sp: Preset, clock: Clock, counter: u64) -> Self {
        let now = clock.now();
        let config = cp.config();
        let session = Session::client(&config, Some("fuzz".into()));
        Harness {
            client: Peer::new(Connection::connect(config, now, session, None).unwrap()),
            server: Peer::new(Connection::accept(sp.config(), now).unwrap()),
            clock,
            cp,
            sp,
            server_old: None,
            table: None,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            link_up: true,
            mon_up: Monitor::new(),
            mon_down: Monitor::new(),
            up: Flow::new(cp.initial),
            down: Flow::new(sp.initial),
            tainted: false,
            sid: session_id(0),
            counter,
            body_bytes: 0,
        }
    }

    /// The client's session ended: a new client session on new connections, the server
    /// application forgets everything of the old one.
    fn new_session(&mut self) {
        let clock = Clock {
            base: self.clock.base,
            elapsed: self.clock.elapsed,
        };
        let body_bytes = self.body_bytes;
        *self = Harness::new(self.cp, self.sp, clock, self.counter);
        self.body_bytes = body_bytes;
    }

    fn apply(&mut self, op: u8, r: &mut Reader<'_>) {
        let now = self.clock.now();
        match op & 0x0f {
            op::SEND_CLIENT | op::SEND_SERVER => {
                let mut size = read_size(r);
                if self.body_bytes + size > MAX_BODY_BYTES {
                    size %= 64;
                }
                self.body_bytes += size;
                self.send(op & 0x0f == op::SEND_CLIENT, size);
            }
            op::RECV_CLIENT | op::RECV_SERVER => {
                let n = match r.u8() {
                    0 => usize::MAX,
                    n => usize::from(n % 16),
                };
                self.recv(op & 0x0f == op::RECV_CLIENT, n);
            }
            op::PUMP => self.pump(),
            op::STEP => {
                // 1..=128 bytes exactly (to end a read inside a frame), or coarse steps.
                let limit = match r.u8() {
                    b @ 0..128 => usize::from(b) + 1,
                    b => usize::from(b - 127) * 600,
                };
                self.step(limit);
            }
            op::ADVANCE => {
                self.clock.elapsed += ADVANCES[usize::from(r.u8() % 8)];
                let now = self.clock.now();
                self.client.timeout(now);
                self.server.timeout(now);
                if let Some(old) = self.server_old.as_mut() {
                    old.timeout(now);
                }
            }
            op::CUT => {
                self.to_client.clear();
                self.to_server.clear();
                self.link_up = false;
                self.client.conn.handle_disconnect();
                self.server.conn.handle_disconnect();
            }
            op::RESUME => self.resume(),
            op::INJECT_CLIENT | op::INJECT_SERVER => {
                let len = usize::from(r.u8());
                let bytes = r.take(len);
                if !bytes.is_empty() {
                    self.tainted = true;
                }
                if op & 0x0f == op::INJECT_CLIENT {
                    self.client.conn.handle_input(now, bytes);
                } else {
                    self.server.conn.handle_input(now, bytes);
                }
            }
            op::CLOSE_CLIENT => self.client.conn.close(now, CloseCode::Normal, "bye"),
            op::CLOSE_SERVER => self.server.conn.close(now, CloseCode::Kicked, "bye"),
            op::GO_AWAY_CLIENT => self.client.conn.go_away(CloseCode::Normal, 0, "later"),
            op::GO_AWAY_SERVER => self.server.conn.go_away(CloseCode::Shutdown, 100, "later"),
            _ => {
                self.client.conn.ping();
                self.server.conn.ping();
            }
        }
        self.events();
    }

    fn send(&mut self, client: bool, size: usize) {
        let (flow, session) = if client {
            (&mut self.up, self.client.conn.session_mut())
        } else {
            let s = match (self.server.conn.session_mut(), self.server_old.as_mut()) {
                (Some(s), _) => Some(s),
                (None, Some(old)) if old.conn.session().is_some() => old.conn.session_mut(),
                _ => self.table.as_mut(),
            };
            (&mut self.down, s)
        };
        let Some(session) = session else {
            return;
        };
        let index = flow.sent.len();
        match session.send(make_body(index, size), index as u64) {
            Ok(seq) => flow.on_send(seq, size),
            Err(SendError::Full) => assert!(!session.has_room_for(size)),
            Err(_) => {}
        }
    }

    fn recv(&mut self, client: bool, n: usize) {
        let trusted = !self.tainted;
        let (flow, session) = if client {
            (&mut self.down, self.client.conn.session_mut())
        } else {
            let s = match (self.server.conn.session_mut(), self.server_old.as_mut()) {
                (Some(s), _) => Some(s),
                (None, Some(old)) if old.conn.session().is_some() => old.conn.session_mut(),
                _ => self.table.as_mut(),
            };
            (&mut self.up, s)
        };
        let Some(session) = session else {
            return;
        };
        for _ in 0..n {
            let Some(msg) = session.recv() else {
                break;
            };
            flow.on_taken(&msg, trusted);
        }
    }

    /// Moves bytes until both sides are quiet.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            if !self.step(usize::MAX) {
                return;
            }
        }
        panic!("the link never went quiet");
    }

    /// Writes what both sides have to send, then delivers up to `limit` bytes each way.
    fn step(&mut self, limit: usize) -> bool {
        let now = self.clock.now();
        let trusted = !self.tainted;
        let mut out = Vec::new();
        self.client.transmit(now, &mut out);
        let mut moved = !out.is_empty();
        self.mon_up.check(
            &out,
            trusted.then_some(self.sp.max_frame),
            self.client.conn.version().unwrap_or(1),
        );
        if self.link_up {
            self.to_server.extend(&out);
        }
        out.clear();
        self.server.transmit(now, &mut out);
        moved |= !out.is_empty();
        self.mon_down.check(
            &out,
            trusted.then_some(self.cp.max_frame),
            self.server.conn.version().unwrap_or(1),
        );
        if self.link_up {
            self.to_client.extend(&out);
        }
        if let Some(old) = self.server_old.as_mut() {
            // Its transport is gone: what it writes is lost.
            out.clear();
            old.transmit(now, &mut out);
        }
        let n = self.to_server.len().min(limit);
        if n > 0 {
            let chunk: Vec<u8> = self.to_server.drain(..n).collect();
            self.server.conn.handle_input(now, &chunk);
            moved = true;
            self.events();
        }
        let n = self.to_client.len().min(limit);
        if n > 0 {
            let chunk: Vec<u8> = self.to_client.drain(..n).collect();
            self.client.conn.handle_input(now, &chunk);
            moved = true;
        }
        self.events();
        moved
    }

    /// The client resumes on a new connection (a new session if its session ended); the
    /// server's current connection becomes the old one if it carries the session.
    fn resume(&mut self) {
        let now = self.clock.now();
        let Some(session) = self.client.conn.take_session() else {
            self.new_session();
            return;
        };
        self.client = Peer::new(Connection::connect(self.cp.config(), now, session, None).unwrap());
        let new = Peer::new(Connection::accept(self.sp.config(), now).unwrap());
        let prev = std::mem::replace(&mut self.server, new);
        if prev.conn.session().is_some() {
            self.server_old = Some(prev);
        }
        self.to_client.clear();
        self.to_server.clear();
        self.link_up = true;
    }

    /// Whether the server application holds a session, wherever it is.
    fn server_session(&self) -> Option<&Session> {
        self.server
            .conn
            .session()
            .or_else(|| self.server_old.as_ref().and_then(|o| o.conn.session()))
            .or(self.table.as_ref())
    }

    /// The server application's answer to a HELLO.
    fn answer_hello(&mut self, req: HelloRequest) {
        let now = self.clock.now();
        self.counter += 1;
        let fresh = token(self.counter);
        let Some(r) = req.resume else {
            // A new server session: the client never saw a WELCOME of this client session, so
            // it sent no DATA yet. A session the server made for it before is dropped, with
            // what the server queued on it.
            assert!(self.tainted || self.up.taken == 0);
            self.server_old = None;
            self.table = None;
            self.down = Flow::new(self.sp.initial);
            self.up.last = None;
            self.sid = session_id(self.counter);
            self.server.conn.accept_new(now, self.sid, fresh);
            return;
        };
        // Check the token where the session is, and only then take it (§4.4 rule B).
        let old = self
            .server_old
            .as_mut()
            .filter(|o| o.conn.session().is_some());
        let found = r.session_id == self.sid
            && match &old {
                Some(o) => o.conn.session().is_some_and(|s| s.verify_token(&r.token)),
                None => self
                    .table
                    .as_ref()
                    .is_some_and(|s| s.verify_token(&r.token)),
            };
        if !found {
            assert!(
                self.tainted || r.session_id != self.sid || self.server_session().is_none(),
                "the server refused the resume of a session it holds"
            );
            self.server
                .conn
                .reject(RejectCode::UnknownSession, 0, "unknown session");
            return;
        }
        let session = match old {
            Some(o) => o.conn.take_session(),
            None => self.table.take(),
        };
        let Some(session) = session else {
            return;
        };
        if let Err(session) = self.server.conn.accept_resume(now, session, fresh) {
            assert!(self.tainted, "accept_resume refused an honest client");
            self.table = Some(*session);
        }
    }

    fn events(&mut self) {
        let trusted = !self.tainted;
        while let Some(ev) = self.client.conn.poll_event() {
            self.client.count_end(&ev);
            if trusted {
                check_honest_end(&ev);
            }
            match ev {
                Event::Acknowledged { first, end } => self.up.on_acknowledged(first, end, trusted),
                Event::SessionEnded {
                    reason,
                    unacknowledged,
                    ..
                } => self.up.on_ended(&reason, &unacknowledged, trusted),
                _ => {}
            }
        }
        while let Some(ev) = self.server.conn.poll_event() {
            self.server.count_end(&ev);
            if trusted {
                check_honest_end(&ev);
            }
            match ev {
                Event::Hello(req) => self.answer_hello(req),
                Event::Acknowledged { first, end } => {
                    self.down.on_acknowledged(first, end, trusted);
                }
                Event::SessionEnded {
                    reason,
                    unacknowledged,
                    ..
                } => self.down.on_ended(&reason, &unacknowledged, trusted),
                _ => {}
            }
        }
        if let Some(old) = self.server_old.as_mut() {
            while let Some(ev) = old.conn.poll_event() {
                old.count_end(&ev);
                if trusted {
                    check_honest_end(&ev);
                }
                match ev {
                    Event::Acknowledged { first, end } => {
                        self.down.on_acknowledged(first, end, trusted);
                    }
                    Event::SessionEnded {
                        reason,
                        unacknowledged,
                        ..
                    } => self.down.on_ended(&reason, &unacknowledged, trusted),
                    _ => {}
                }
            }
        }
    }

    fn check(&mut self) {
        self.events();
        self.client.check_ends();
        self.server.check_ends();
        if let Some(old) = &self.server_old {
            old.check_ends();
        }
        let trusted = !self.tainted;
        if let Some(s) = self.client.conn.session() {
            self.cp.check_bounds(s);
            if trusted {
                assert!(
                    s.acked() <= self.up.delivered(),
                    "acknowledged, not delivered"
                );
            }
        }
        for s in [
            self.server.conn.session(),
            self.server_old.as_ref().and_then(|o| o.conn.session()),
            self.table.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            self.sp.check_bounds(s);
            if trusted {
                assert!(
                    s.acked() <= self.down.delivered(),
                    "acknowledged, not delivered"
                );
            }
        }
    }
}

/// Target `connection_ops`: input = presets byte (client: bits 0–1, server: bits 2–3), then
/// operations (see [`op`]), each an op byte and its arguments.
pub(crate) fn connection_ops(data: &[u8]) {
    let mut r = Reader::new(data);
    let b = r.u8();
    let mut h = Harness::new(
        PRESETS[usize::from(b & 3)],
        PRESETS[usize::from((b >> 2) & 3)],
        Clock::new(),
        0,
    );
    let mut ops = 0;
    while !r.is_empty() && ops < MAX_OPS {
        let op = r.u8();
        h.apply(op, &mut r);
        h.check();
        ops += 1;
    }
    h.pump();
    h.check();
}

// ------------------------------------------------------------------------------------- seeds

/// Seed inputs of each target: `(target, name, input)`.
pub(crate) fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, s) in decoder_seeds().into_iter().enumerate() {
        out.push(("frame_decoder", format!("seed-{i:02}"), s));
    }
    for (i, s) in handshake_seeds().into_iter().enumerate() {
        out.push(("handshake", format!("seed-{i:02}"), s));
    }
    for (i, s) in connection_ops_seeds().into_iter().enumerate() {
        out.push(("connection_ops", format!("seed-{i:02}"), s));
    }
    for (i, s) in frames_v2::seeds().into_iter().enumerate() {
        out.push(("frames_v2", format!("seed-{i:02}"), s));
    }
    out
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in frames {
        f.encode(&mut buf);
    }
    buf
}

/// One frame of every type.
fn every_frame() -> Vec<Frame> {
    let limits = Limits {
        max_frame: 65_536,
        max_message: 1 << 20,
        window: Window {
            messages: 64,
            bytes: 1 << 20,
        },
    };
    let hello = Hello {
        min_version: 1,
        max_version: 1,
        limits,
        resume: None,
        first_seq: Seq(1),
        name: Some("alice".into()),
        credentials: Some(Bytes::from_static(b"secret")),
        transforms: Vec::new(),
    };
    vec![
        Frame::Hello(hello.clone()),
        Frame::Hello(Hello {
            resume: Some(ResumeRequest {
                partial: 0,
                session_id: session_id(HELD_SID),
                token: token(HELD_TOKEN),
                received: Seq(2),
            }),
            first_seq: Seq(0),
            name: None,
            credentials: None,
            transforms: Vec::new(),
            ..hello
        }),
        Frame::Welcome(Welcome {
            timings: None,
            version: 1,
            session_id: session_id(1),
            token: token(1),
            limits,
            kind: WelcomeKind::New { first_seq: Seq(1) },
            transforms: Vec::new(),
        }),
        Frame::Welcome(Welcome {
            timings: None,
            version: 1,
            session_id: session_id(HELD_SID),
            token: token(2),
            limits,
            kind: WelcomeKind::Resumed {
                partial: 0,
                received: Seq(2),
                delivered: Seq(2),
            },
            transforms: Vec::new(),
        }),
        Frame::Reject(Reject {
            code: RejectCode::ServerFull,
            retry_after_ms: 500,
            min_version: 1,
            max_version: 1,
            reason: "full".into(),
        }),
        Frame::Data(Data {
            offset: None,
            seq: Seq(1),
            timestamp_us: 7,
            more: false,
            body: Bytes::from_static(b"hello"),
        }),
        Frame::Data(Data {
            offset: None,
            seq: Seq(2),
            timestamp_us: 7,
            more: true,
            body: Bytes::from(vec![0xab; 300]),
        }),
        Frame::Ack {
            delivered: Seq(2),
            window: limits.window,
        },
        Frame::Ping(1_000),
        Frame::Pong(1_000),
        Frame::GoAway(GoAway {
            code: CloseCode::Shutdown,
            retry_after_ms: 100,
            reason: "restart".into(),
        }),
        Frame::Close(steadfast::proto::frame::Close {
            code: CloseCode::Normal,
            delivered: Seq(2),
            reason: "bye".into(),
        }),
    ]
}

fn decoder_seeds() -> Vec<Vec<u8>> {
    let frames = every_frame();
    let mut seeds = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        // Max frame 65,536; each frame alone, split differently.
        let lengths: Vec<u16> = (0..i % 3).map(|j| 1 + (i * 3 + j) as u16).collect();
        seeds.push(
            [
                vec![1],
                Splits::encode(&lengths),
                encode(std::slice::from_ref(f)),
            ]
            .concat(),
        );
    }
    // All of them in one stream, fed in 1, 7, 0 (empty) and 300 byte calls.
    seeds.push([vec![1], Splits::encode(&[1, 7, 0, 300]), encode(&frames)].concat());
    // A frame above the maximum of 8,192.
    let big = encode(&[Frame::Data(Data {
        offset: None,
        seq: Seq(1),
        timestamp_us: 0,
        more: false,
        body: Bytes::from(vec![1; 9_000]),
    })]);
    seeds.push([vec![0, 0], big].concat());
    // Not a frame at all.
    seeds.push([&[1, 0][..], b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"].concat());
    seeds
}

/// What the handshake target's peer would send: the other end set up the same way, talking to
/// it until quiet: (client to server, server to client), each as a [`Splits`] by round
/// followed by the bytes.
fn transcript(mode: u8) -> (Vec<u8>, Vec<u8>) {
    let now = Clock::new().now();
    let setup = HandshakeSetup::new(mode, now);
    let (mut client, mut server, mut held) = (setup.client, setup.server, setup.held);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    let (mut up_rounds, mut down_rounds) = (Vec::new(), Vec::new());
    for round in 0..100 {
        let mut ab = Vec::new();
        while client.poll_transmit(now, &mut ab) > 0 {}
        server.handle_input(now, &ab);
        while let Some(ev) = server.poll_event() {
            server_app(&mut server, now, ev, &mut held);
        }
        let mut ba = Vec::new();
        while server.poll_transmit(now, &mut ba) > 0 {}
        client.handle_input(now, &ba);
        if ab.is_empty() && ba.is_empty() {
            break;
        }
        for (bytes, rounds, all) in [
            (ab, &mut up_rounds, &mut up),
            (ba, &mut down_rounds, &mut down),
        ] {
            if !bytes.is_empty() {
                rounds.push(u16::try_from(bytes.len()).unwrap_or(u16::MAX - 1));
                all.extend(bytes);
            }
        }
        while client.recv().is_some() {}
        while server.recv().is_some() {}
        if round == 2 {
            server.ping();
            client.ping();
        }
    }
    let by_rounds = |mut rounds: Vec<u16>, bytes: Vec<u8>| {
        rounds.truncate(6);
        rounds.push(u16::MAX);
        [Splits::encode(&rounds), bytes].concat()
    };
    (by_rounds(up_rounds, up), by_rounds(down_rounds, down))
}

fn handshake_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for preset in 0..2u8 {
        for resume in [0, mode::RESUME] {
            let base = resume | preset << mode::PRESET_SHIFT;
            let (up, down) = transcript(base);
            // The server fed what a real client sends, round by round and in small pieces.
            seeds.push([&[base][..], &up].concat());
            let up_bytes = &up[1 + 2 * usize::from(up[0])..];
            let mode_byte = base | mode::RECV | 1 << mode::STEP_SHIFT;
            seeds.push([&[mode_byte][..], &Splits::encode(&[5, 0, 200]), up_bytes].concat());
            // The client fed what a real server sends, round by round and in small pieces.
            seeds.push([&[base | mode::CLIENT][..], &down].concat());
            let down_bytes = &down[1 + 2 * usize::from(down[0])..];
            let mode_byte = base | mode::CLIENT | mode::RECV;
            seeds.push([&[mode_byte][..], &Splits::encode(&[3]), down_bytes].concat());
        }
    }
    // A resume with the wrong token, then a PING once the REJECT is out.
    let hello = encode(&[Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        limits: Limits {
            max_frame: 8_192,
            max_message: 100,
            window: Window {
                messages: 1,
                bytes: 1,
            },
        },
        resume: Some(ResumeRequest {
            partial: 0,
            session_id: session_id(HELD_SID),
            token: token(HELD_TOKEN + 1),
            received: Seq(3),
        }),
        first_seq: Seq(0),
        name: None,
        credentials: None,
        transforms: Vec::new(),
    })]);
    let split = Splits::encode(&[hello.len() as u16, u16::MAX]);
    seeds.push([&[0][..], &split, &hello, &encode(&[Frame::Ping(1)])].concat());
    // Every frame type at a server and at a client that waits for the handshake.
    let all = encode(&every_frame());
    seeds.push([&[0, 0][..], &all].concat());
    seeds.push([&[mode::CLIENT | mode::RESUME, 0][..], &all].concat());
    // A silent peer until the handshake times out.
    seeds.push(vec![3 << mode::STEP_SHIFT, 0]);
    seeds
}

fn connection_ops_seeds() -> Vec<Vec<u8>> {
    use op::*;
    let mut seeds = Vec::new();
    for presets in [0u8, 0b0101, 0b1010, 0b1111, 0b0001] {
        // Messages both ways, read, acknowledged, closed.
        seeds.push(vec![
            presets,
            SEND_CLIENT,
            5,
            SEND_CLIENT,
            0,
            SEND_CLIENT,
            0xc0,
            0x11,
            0x70,
            SEND_SERVER,
            0x41,
            0x00,
            PUMP,
            RECV_SERVER,
            0,
            RECV_CLIENT,
            0,
            ADVANCE,
            0,
            PUMP,
            CLOSE_CLIENT,
            PUMP,
        ]);
        // A cut with messages in flight, a resume, more messages, a cut before the WELCOME.
        seeds.push(vec![
            presets,
            PUMP,
            SEND_CLIENT,
            0x80,
            0x30,
            0x00,
            SEND_CLIENT,
            9,
            STEP,
            3,
            CUT,
            SEND_CLIENT,
            1,
            RESUME,
            PUMP,
            RECV_SERVER,
            2,
            SEND_SERVER,
            8,
            STEP,
            0,
            RESUME,
            STEP,
            1,
            CUT,
            RESUME,
            PUMP,
            RECV_SERVER,
            0,
            RECV_CLIENT,
            0,
            ADVANCE,
            1,
            PUMP,
        ]);
        // Idle timeouts, pings, a go-away and a close from the server.
        seeds.push(vec![
            presets,
            PUMP,
            PING,
            PUMP,
            ADVANCE,
            5,
            PUMP,
            ADVANCE,
            7,
            RESUME,
            PUMP,
            SEND_SERVER,
            3,
            GO_AWAY_SERVER,
            PUMP,
            RESUME,
            PUMP,
            SEND_CLIENT,
            4,
            PUMP,
            CLOSE_SERVER,
            PUMP,
            RESUME,
            PUMP,
            SEND_CLIENT,
            2,
            PUMP,
            RECV_SERVER,
            0,
        ]);
    }
    // Bytes injected into both sides: an ACK for nothing, a duplicate DATA.
    let mut s = vec![0, PUMP, SEND_CLIENT, 3, PUMP, INJECT_CLIENT];
    let ack = encode(&[Frame::Ack {
        delivered: Seq(9),
        window: Window {
            messages: 1,
            bytes: 1,
        },
    }]);
    s.push(ack.len() as u8);
    s.extend(ack);
    s.push(INJECT_SERVER);
    let data = encode(&[Frame::Data(Data {
        offset: None,
        seq: Seq(1),
        timestamp_us: 0,
        more: false,
        body: Bytes::from_static(b"again"),
    })]);
    s.push(data.len() as u8);
    s.extend(data);
    s.extend([PUMP, RECV_SERVER, 0, PUMP]);
    seeds.push(s);
    seeds
}
