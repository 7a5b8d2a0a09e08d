//! Target `frames_v2`: protocol version 2's frames and its chunk-level resume.
//!
//! The first input byte chooses one of three parts (its low two bits):
//!
//! * 0, [`parse_in`]: `Frame::parse_in(version, kind, flags, payload)` on arbitrary bytes with
//!   versions 0–3: never panics; a frame that parses encodes back to exactly its header and
//!   payload and parses again equal; every type but DATA parses the same in versions 1 and 2,
//!   and DATA too unless CONTINUED is set (then version 1 refuses it as a reserved flag); no
//!   frame but DATA has a payload above [`MAX_CONTROL_PAYLOAD`];
//! * 1, [`decode`]: a [`Decoder`] that switches from one version to another after a chosen
//!   number of frames (as a connection does after its handshake), fed arbitrary bytes in
//!   arbitrary splits: the same frames and error as fed at once, each frame re-encodes to its
//!   bytes and parses again equal;
//! * 2–3, [`scenario`]: a client and a server `Connection` (version ranges within 1..=2, chosen
//!   per connection) with messages of up to 70,000 bytes in flight both ways; the input chooses
//!   the chunk size, frame size and transmit batch of every connection, how many bytes move
//!   before the link is cut, when the client takes its session to a new connection (the server
//!   application then takes it from wherever it is: `take_session` → `accept_resume`), and
//!   hostile bytes injected into either side. Nothing panics. Until bytes are injected (per
//!   session), additionally:
//!   - every message is delivered exactly once, in order, with its body intact, and at the end
//!     (link healed, time running) every message sent was delivered and acknowledged;
//!   - every DATA chunk that reaches the receiver carries the bytes of its message at its
//!     offset, and **no body byte reaches the receiver twice** while the receiver keeps its
//!     part: the duplicate body bytes a receiver gets over the whole session are at most the
//!     parts it held of its next message when a connection of version 1 began or ended (a
//!     version-1 connection drops the part; the sender starts that message again). So between
//!     version-2 peers a cut costs no byte the receiver already had: the sender resends only
//!     what was in transit (what the receiver did not get), never a whole message the receiver
//!     got part of, nor a message it got whole;
//!   - the frames each side writes are whole, parse by the rules of the connection's version
//!     and fit the peer's maximum frame size (24-byte prefix for CONTINUED);
//!   - the sessions stay within their configured bounds, and a connection ends with exactly
//!     one `Disconnected`/`SessionEnded`, never for a protocol violation.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use steadfast::proto::frame::{DATA_CONTINUED_PREFIX_LEN, DATA_PREFIX_LEN, HEADER_LEN};
use steadfast::proto::{
    Config, Connection, Decoder, Event, Frame, HelloRequest, RejectCode, SendError, Seq, Session,
    SessionId,
};

use super::{
    Clock, Flow, Monitor, PRESETS, Peer, Preset, Reader, Splits, check_honest_end, decode_stream,
    read_size, session_id, token,
};

/// The largest payload of any frame but DATA: a version-2 resume HELLO with a 255-byte name,
/// 4,096 bytes of credentials and 8 transform names of 32 bytes.
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 4 + 4 + 16 + 48 + 1 + 255 + 2 + 4_096 + 1 + 8 * 33;

/// Frame types the parser part picks from (an input byte below 0x80), else the byte itself.
const KINDS: [u8; 9] = [0x01, 0x02, 0x03, 0x10, 0x11, 0x20, 0x21, 0x30, 0x31];

/// Target `frames_v2`: see the module documentation.
pub(crate) fn frames_v2(data: &[u8]) {
    let mut r = Reader::new(data);
    match r.u8() & 3 {
        0 => parse_in(&mut r),
        1 => decode(&mut r),
        _ => scenario(&mut r),
    }
}

// ------------------------------------------------------------------------------ part 1: parse

/// Input: version byte (0–3), kind byte (below 0x80: one of [`KINDS`]), flags byte, payload.
fn parse_in(r: &mut Reader<'_>) {
    let version = u16::from(r.u8() & 3);
    let kind = match r.u8() {
        b @ 0..0x80 => KINDS[usize::from(b) % KINDS.len()],
        b => b,
    };
    let flags = r.u8();
    let payload = Bytes::copy_from_slice(r.rest());
    let parsed = Frame::parse_in(version, kind, flags, payload.clone());
    // Deterministic.
    assert_eq!(
        parsed,
        Frame::parse_in(version, kind, flags, payload.clone())
    );
    match &parsed {
        Ok(frame) => check_roundtrip(version, frame, kind, flags, &payload),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // The version decides only DATA's CONTINUED flag.
    let v1 = Frame::parse_in(1, kind, flags, payload.clone());
    let v2 = Frame::parse_in(2, kind, flags, payload);
    if kind != 0x10 || flags & 0x02 == 0 {
        assert_eq!(
            v1, v2,
            "type 0x{kind:02x} parses differently in versions 1 and 2"
        );
    } else {
        assert!(v1.is_err(), "version 1 took a CONTINUED DATA frame");
        if let Ok(Frame::Data(d)) = &v2 {
            assert!(d.offset.is_some());
        }
    }
}

/// `frame` came from (`kind`, `flags`, `payload`) in `version`: it encodes back to exactly
/// that and parses again equal.
fn check_roundtrip(version: u16, frame: &Frame, kind: u8, flags: u8, payload: &[u8]) {
    let mut encoded = Vec::new();
    frame.encode(&mut encoded);
    assert!(encoded.len() >= HEADER_LEN);
    let (head, body) = encoded.split_at(HEADER_LEN);
    assert_eq!(
        head[..4],
        (payload.len() as u32).to_be_bytes(),
        "{frame:?}: length"
    );
    assert_eq!(head[4], kind, "{frame:?}: type");
    assert_eq!(head[5], flags, "{frame:?}: flags");
    assert_eq!(body, payload, "{frame:?} does not re-encode to its payload");
    assert_eq!(frame.kind(), kind);
    let again = Frame::parse_in(version, kind, flags, Bytes::copy_from_slice(body));
    assert_eq!(
        again.as_ref(),
        Ok(frame),
        "re-encoded frame parses differently"
    );
    match frame {
        Frame::Data(d) => {
            let prefix = if d.offset.is_some() {
                DATA_CONTINUED_PREFIX_LEN
            } else {
                DATA_PREFIX_LEN
            };
            assert_eq!(prefix + d.body.len(), payload.len());
            assert!(d.offset.is_none() || version >= 2);
        }
        _ => assert!(
            payload.len() <= MAX_CONTROL_PAYLOAD,
            "{} bytes of payload: above the documented maximum",
            payload.len()
        ),
    }
}

// ---------------------------------------------------------------------------- part 2: decode

const DECODE_MAX_FRAMES: [u32; 4] = [65_536, 8_192, 16, u32::MAX];

/// Input: max-frame byte, version byte (bits 0–1 before the switch, 2–3 after), switch byte
/// (frames decoded before the switch), [`Splits`], the stream.
fn decode(r: &mut Reader<'_>) {
    let max_frame = DECODE_MAX_FRAMES[usize::from(r.u8() & 3)];
    let v = r.u8();
    let before = u16::from(v & 3);
    let after = u16::from((v >> 2) & 3);
    let switch = usize::from(r.u8() % 8);
    let splits = Splits::read(r);
    let stream = r.rest();
    let plan = (before, after, switch);
    let whole = decode_stream(max_frame, plan, &[stream]);
    let split = decode_stream(max_frame, plan, &splits.chunks(stream));
    assert_eq!(whole, split, "the split changed what was decoded");
    // What was decoded parses again equal from its own encoding, in the version in force.
    for (i, f) in whole.iter().enumerate() {
        let Ok(frame) = f else { continue };
        let version = if i < switch { before } else { after };
        let mut encoded = Vec::new();
        frame.encode(&mut encoded);
        let payload = &encoded[HEADER_LEN..];
        check_roundtrip(version, frame, encoded[4], encoded[5], payload);
    }
}

// -------------------------------------------------------------------------- part 3: scenario

/// Version ranges a connection's configuration chooses from.
const VERSIONS: [(u16, u16); 4] = [(1, 2), (2, 2), (1, 1), (1, 2)];
/// Chunk sizes (0: the preset's).
const CHUNKS: [u32; 16] = [
    0, 1, 7, 100, 999, 3_000, 4_096, 8_168, 8_176, 8_184, 8_192, 16_384, 65_512, 65_520, 65_536,
    100_000,
];
/// Maximum frame sizes (0: the preset's).
const FRAME_SIZES: [u32; 4] = [0, 8_192, 8_200, 65_536];
/// Transmit batches (0: the preset's).
const BATCHES: [usize; 4] = [0, 1, 5_000, 1 << 20];
/// Virtual time an ADVANCE moves on.
const STEPS: [Duration; 8] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(30),
    Duration::from_millis(500),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(9),
    Duration::from_secs(11),
];

/// At most this many operations and message body bytes per input.
const MAX_OPS: usize = 400;
const MAX_BODY_BYTES: usize = 256 << 10;

/// The operations of the scenario (the low four bits of an op byte).
pub(crate) mod op {
    /// Size (as `read_size`): the client sends a message.
    pub(crate) const SEND_CLIENT: u8 = 0;
    /// Size: the server sends a message.
    pub(crate) const SEND_SERVER: u8 = 1;
    /// Count (0: all): the client application takes messages.
    pub(crate) const RECV_CLIENT: u8 = 2;
    /// Count (0: all): the server application takes messages.
    pub(crate) const RECV_SERVER: u8 = 3;
    /// Moves bytes until both sides are quiet (the clock stands still).
    pub(crate) const PUMP: u8 = 4;
    /// Two `u16`: writes what both sides have, then delivers at most that many bytes to the
    /// server and to the client (where the link will be cut, in bytes).
    pub(crate) const STEP: u8 = 5;
    /// The link breaks: bytes in transit are lost, both sides see the transport end.
    pub(crate) const CUT: u8 = 6;
    /// Version byte, client parameters byte, server parameters byte: the client takes its
    /// session to a new connection (the old link is gone), the server accepts it anew.
    pub(crate) const RESUME: u8 = 7;
    /// Length byte and bytes: hostile bytes into the client.
    pub(crate) const INJECT_CLIENT: u8 = 8;
    /// Length byte and bytes: hostile bytes into the server.
    pub(crate) const INJECT_SERVER: u8 = 9;
    /// Step byte: the virtual clock moves on, timers fire.
    pub(crate) const ADVANCE: u8 = 10;
    /// Side byte (bit 0: the server): that side sends GOAWAY.
    pub(crate) const GO_AWAY: u8 = 11;
    /// Both sides send a PING.
    pub(crate) const PING: u8 = 12;
    /// CUT, then RESUME (with its three bytes).
    pub(crate) const CUT_RESUME: u8 = 13;
}

/// The configuration of one connection: the preset's, with a version range and the
/// connection's chunk size, maximum frame and transmit batch from a parameter byte (0: the
/// preset's).
fn conn_config(preset: &Preset, versions: (u16, u16), params: u8) -> Config {
    let mut config = preset.config().versions(versions.0, versions.1);
    let chunk = CHUNKS[usize::from(params & 0x0f)];
    if chunk != 0 {
        config = config.max_chunk(chunk);
    }
    let frame = FRAME_SIZES[usize::from((params >> 4) & 3)];
    if frame != 0 {
        config = config.max_frame(frame);
    }
    let batch = BATCHES[usize::from(params >> 6)];
    if batch != 0 {
        config = config.transmit_batch(batch);
    }
    config
}

fn max_frame_of(preset: &Preset, params: u8) -> u32 {
    match FRAME_SIZES[usize::from((params >> 4) & 3)] {
        0 => preset.max_frame,
        f => f,
    }
}

/// Byte `i` of the body of the `index`-th message of a direction (as `make_body`).
fn body_byte(index: usize, i: usize) -> u8 {
    if i < 8 {
        (index as u64).to_le_bytes()[i]
    } else {
        (index as u8) ^ (i as u8)
    }
}

/// What reached one direction's receiver: DATA body bytes, by message and offset, read from
/// the bytes handed to the receiving connection while it was live.
struct Wire {
    /// Whose messages: "client" or "server".
    name: &'static str,
    /// The stream of the receiver's current connection.
    dec: Decoder,
    /// The message whose chunks this connection is carrying, and the offset of the next.
    cursor: Option<(Seq, u64)>,
    /// Body byte ranges received of each message (sorted, disjoint).
    got: BTreeMap<u64, Vec<(u64, u64)>>,
    /// Body bytes received more than once, over the session.
    dup: u64,
    /// How many duplicate bytes the session may have had (see [`Wire::on_established`]).
    budget: u64,
    /// What the receiver held of its next message when its current connection began.
    held_at_start: u64,
    /// Version of the receiver's last established connection (0: none yet).
    last_version: u16,
}

impl Wire {
    fn new(name: &'static str) -> Self {
        Wire {
            name,
            dec: Decoder::new(u32::MAX),
            cursor: None,
            got: BTreeMap::new(),
            dup: 0,
            budget: 0,
            held_at_start: 0,
            last_version: 0,
        }
    }

    /// Body bytes received of message `seq`.
    fn covered(&self, seq: Seq) -> u64 {
        self.got
            .get(&seq.0)
            .map_or(0, |v| v.iter().map(|(a, b)| b - a).sum())
    }

    /// The receiver starts a new connection; its session's received position is `received`.
    /// `keeps`: whether the connection keeps a part held (a client whose configuration
    /// stops at version 1 drops it when it connects: the sender then starts that message
    /// again).
    fn new_connection(&mut self, received: Seq, keeps: bool) {
        self.dec = Decoder::new(u32::MAX);
        self.dec.set_version(2);
        self.cursor = None;
        self.held_at_start = self.covered(received);
        if !keeps {
            self.budget += self.held_at_start;
        }
    }

    /// The receiver's new connection is established in `version`. A version-1 connection
    /// drops the part of the next message held when it begins (it was held from version 2) or
    /// ends (received on it): the sender then starts that message again, so those bytes may
    /// come twice.
    fn on_established(&mut self, version: u16) {
        if version == 1 || self.last_version == 1 {
            self.budget += self.held_at_start;
        }
        self.last_version = version;
    }

    /// Bytes handed to the live receiving connection. `sent`: the messages of the direction.
    fn feed(&mut self, bytes: &[u8], flow: &Flow, trusted: bool) {
        self.dec.feed(bytes);
        loop {
            let frame = match self.dec.decode() {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(e) => {
                    assert!(!trusted, "the receiver was handed a bad frame: {e}");
                    self.dec.reset();
                    return;
                }
            };
            let Frame::Data(d) = frame else { continue };
            let offset = match (d.offset, self.cursor) {
                (Some(o), _) => o,
                (None, Some((seq, o))) if seq == d.seq => o,
                (None, _) => 0,
            };
            let len = d.body.len() as u64;
            let end = offset.saturating_add(len);
            self.cursor = d.more.then_some((d.seq, end));
            if trusted {
                let index = d.seq.distance_from(flow.first) as usize;
                let Some(&(seq, msg_len)) = flow.sent.get(index) else {
                    panic!("DATA for {} which was never sent", d.seq);
                };
                assert_eq!(seq, d.seq, "DATA for {} which was never sent", d.seq);
                assert!(
                    end <= msg_len as u64,
                    "chunk {offset}..{end} of {seq} beyond its {msg_len} bytes"
                );
                assert_eq!(
                    d.more,
                    end < msg_len as u64,
                    "MORE flag wrong on chunk {offset}..{end} of {seq} ({msg_len} bytes)"
                );
                for (i, b) in d.body.iter().enumerate() {
                    assert_eq!(
                        *b,
                        body_byte(index, offset as usize + i),
                        "byte {} of {seq} changed on the way",
                        offset as usize + i
                    );
                }
            }
            if len == 0 {
                continue;
            }
            let ranges = self.got.entry(d.seq.0).or_default();
            for &(a, b) in ranges.iter() {
                let (lo, hi) = (a.max(offset), b.min(end));
                if lo < hi {
                    self.dup += hi - lo;
                }
            }
            ranges.push((offset, end));
            ranges.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
            for &(a, b) in ranges.iter() {
                match merged.last_mut() {
                    Some(last) if a <= last.1 => last.1 = last.1.max(b),
                    _ => merged.push((a, b)),
                }
            }
            *ranges = merged;
        }
    }
}

/// The server application's session: on its current connection, on an earlier one, or in
/// its table.
fn server_session<'a>(
    server: &'a mut Peer,
    old: &'a mut [Peer],
    table: &'a mut Option<Session>,
) -> Option<&'a mut Session> {
    if server.conn.session().is_some() {
        return server.conn.session_mut();
    }
    if let Some(o) = old.iter_mut().find(|o| o.conn.session().is_some()) {
        return o.conn.session_mut();
    }
    table.as_mut()
}

/// The scenario's client, server, link and bookkeeping.
struct Scenario {
    clock: Clock,
    cp: Preset,
    sp: Preset,
    /// The version ranges of the first connection (a new session starts with them).
    first_versions: ((u16, u16), (u16, u16)),
    /// Version range of the client's current connection.
    client_versions: (u16, u16),
    /// The current connections' maximum frame sizes (client, server).
    max_frames: (u32, u32),
    client: Peer,
    server: Peer,
    /// The server's earlier connections that still hold the session (its transport gone).
    server_old: Vec<Peer>,
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
    /// What reached the server of the client's messages.
    wire_up: Wire,
    /// What reached the client of the server's messages.
    wire_down: Wire,
    /// Bytes were injected into this session: only the checks that need no trust hold.
    tainted: bool,
    /// The server application accepts new sessions (only while a session is being set up).
    accepting_new: bool,
    sid: SessionId,
    counter: u64,
    body_bytes: usize,
    /// Largest message both sides accept.
    max_message: usize,
}

impl Scenario {
    fn new(
        cp: Preset,
        sp: Preset,
        versions: ((u16, u16), (u16, u16)),
        params: (u8, u8),
        clock: Clock,
        counter: u64,
    ) -> Self {
        let now = clock.now();
        let cconfig = conn_config(&cp, versions.0, params.0);
        let session = Session::client(&cconfig, Some("fuzz".into()));
        let mut s = Scenario {
            client: Peer::new(Connection::connect(cconfig, now, session, None).unwrap()),
            server: Peer::new(
                Connection::accept(conn_config(&sp, versions.1, params.1), now).unwrap(),
            ),
            clock,
            cp,
            sp,
            first_versions: versions,
            client_versions: versions.0,
            max_frames: (max_frame_of(&cp, params.0), max_frame_of(&sp, params.1)),
            server_old: Vec::new(),
            table: None,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            link_up: true,
            mon_up: Monitor::new(),
            mon_down: Monitor::new(),
            up: Flow::new(cp.initial),
            down: Flow::new(sp.initial),
            wire_up: Wire::new("client"),
            wire_down: Wire::new("server"),
            tainted: false,
            accepting_new: true,
            sid: session_id(0),
            counter,
            body_bytes: 0,
            max_message: cp.max_message.min(sp.max_message) as usize,
        };
        s.wire_up.new_connection(Seq(0), true);
        s.wire_down.new_connection(Seq(0), true);
        // The session is set up before the input takes over: every later connection resumes.
        s.pump();
        assert!(
            s.client.conn.is_established() && s.server.conn.is_established(),
            "the first handshake did not finish"
        );
        s.accepting_new = false;
        s
    }

    /// The session ended: a new one on new connections, as the first.
    fn new_session(&mut self) {
        let clock = Clock {
            base: self.clock.base,
            elapsed: self.clock.elapsed,
        };
        let body_bytes = self.body_bytes;
        *self = Scenario::new(
            self.cp,
            self.sp,
            self.first_versions,
            (0, 0),
            clock,
            self.counter,
        );
        self.body_bytes = body_bytes;
    }

    fn apply(&mut self, op: u8, r: &mut Reader<'_>) {
        let now = self.clock.now();
        match op & 0x0f {
            op::SEND_CLIENT | op::SEND_SERVER => {
                let mut size = read_size(r);
                if size > self.max_message {
                    size %= self.max_message + 1;
                }
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
                let up = usize::from(r.u16());
                let down = usize::from(r.u16());
                self.step(up, down);
            }
            op::CUT => self.cut(),
            op::RESUME => self.resume(r),
            op::CUT_RESUME => {
                self.cut();
                self.resume(r);
            }
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
            op::ADVANCE => {
                self.clock.elapsed += STEPS[usize::from(r.u8() % 8)];
                self.timeouts();
            }
            op::GO_AWAY => {
                if r.u8() & 1 == 0 {
                    self.client
                        .conn
                        .go_away(steadfast::proto::CloseCode::Normal, 0, "later");
                } else {
                    self.server
                        .conn
                        .go_away(steadfast::proto::CloseCode::Shutdown, 0, "later");
                }
            }
            _ => {
                self.client.conn.ping();
                self.server.conn.ping();
            }
        }
        self.events();
    }

    fn timeouts(&mut self) {
        let now = self.clock.now();
        self.client.timeout(now);
        self.server.timeout(now);
        for old in &mut self.server_old {
            old.timeout(now);
        }
    }

    /// The server application's session, wherever it is.
    fn server_session_mut(&mut self) -> Option<&mut Session> {
        server_session(&mut self.server, &mut self.server_old, &mut self.table)
    }

    fn send(&mut self, client: bool, size: usize) {
        let (flow, session) = if client {
            (&mut self.up, self.client.conn.session_mut())
        } else {
            let s = server_session(&mut self.server, &mut self.server_old, &mut self.table);
            (&mut self.down, s)
        };
        let Some(session) = session else { return };
        let index = flow.sent.len();
        match session.send(super::make_body(index, size), 0) {
            Ok(seq) => flow.on_send(seq, size),
            Err(SendError::Full) => assert!(!session.has_room_for(size)),
            Err(_) => {}
        }
    }

    fn recv(&mut self, client: bool, n: usize) {
        let trusted = !self.tainted;
        if client {
            let Some(session) = self.client.conn.session_mut() else {
                return;
            };
            for _ in 0..n {
                let Some(msg) = session.recv() else { break };
                self.down.on_taken(&msg, trusted);
            }
        } else {
            let mut taken = Vec::new();
            if let Some(session) = self.server_session_mut() {
                for _ in 0..n {
                    let Some(msg) = session.recv() else { break };
                    taken.push(msg);
                }
            }
            for msg in &taken {
                self.up.on_taken(msg, trusted);
            }
        }
    }

    fn cut(&mut self) {
        self.to_client.clear();
        self.to_server.clear();
        self.link_up = false;
        self.client.conn.handle_disconnect();
        self.server.conn.handle_disconnect();
    }

    /// The client takes its session to a new connection with the version range and
    /// parameters the next three input bytes choose; the old link is gone.
    fn resume(&mut self, r: &mut Reader<'_>) {
        let v = r.u8();
        let (cparams, sparams) = (r.u8(), r.u8());
        self.resume_with(v, cparams, sparams);
    }

    fn resume_with(&mut self, v: u8, cparams: u8, sparams: u8) {
        let now = self.clock.now();
        self.to_client.clear();
        self.to_server.clear();
        let Some(session) = self.client.conn.take_session() else {
            assert!(self.tainted, "the session ended between honest peers");
            self.new_session();
            return;
        };
        let cv = VERSIONS[usize::from(v & 3)];
        let mut sv = VERSIONS[usize::from((v >> 2) & 3)];
        // A client holding part of a message offers versions 2 and up only (§5.5): a
        // version-1-only server would end the session. Servers are not downgraded under it.
        let offers_min = if session.held_partial_bytes() > 0 && cv.1 >= 2 {
            cv.0.max(2)
        } else {
            cv.0
        };
        if sv.1 < offers_min || cv.1 < sv.0 {
            sv = (1, 2);
        }
        self.wire_down.new_connection(session.received(), cv.1 >= 2);
        self.client_versions = cv;
        self.client = Peer::new(
            Connection::connect(conn_config(&self.cp, cv, cparams), now, session, None).unwrap(),
        );
        let new = Peer::new(Connection::accept(conn_config(&self.sp, sv, sparams), now).unwrap());
        let prev = std::mem::replace(&mut self.server, new);
        self.server_old.retain(|o| o.conn.session().is_some());
        if prev.conn.session().is_some() {
            self.server_old.push(prev);
        }
        let received = self.server_session_mut().map_or(Seq(0), |s| s.received());
        self.wire_up.new_connection(received, true);
        self.max_frames = (
            max_frame_of(&self.cp, cparams),
            max_frame_of(&self.sp, sparams),
        );
        self.link_up = true;
    }

    fn pump(&mut self) {
        for _ in 0..100_000 {
            if !self.step(usize::MAX, usize::MAX) {
                return;
            }
        }
        panic!("the link never went quiet");
    }

    /// Writes what both sides have to send, then delivers up to `up` bytes to the server and
    /// `down` bytes to the client. Whether anything moved.
    fn step(&mut self, up: usize, down: usize) -> bool {
        let now = self.clock.now();
        let trusted = !self.tainted;
        let mut out = Vec::new();
        self.client.transmit(now, &mut out);
        let mut moved = !out.is_empty();
        self.mon_up.check(
            &out,
            trusted.then_some(self.max_frames.1),
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
            trusted.then_some(self.max_frames.0),
            self.server.conn.version().unwrap_or(1),
        );
        if self.link_up {
            self.to_client.extend(&out);
        }
        for old in &mut self.server_old {
            // Its transport is gone: what it writes is lost.
            out.clear();
            old.transmit(now, &mut out);
        }
        let n = self.to_server.len().min(up);
        if n > 0 {
            let chunk: Vec<u8> = self.to_server.drain(..n).collect();
            if !self.server.conn.is_closed() {
                self.wire_up.feed(&chunk, &self.up, trusted);
            }
            self.server.conn.handle_input(now, &chunk);
            moved = true;
            self.events();
        }
        let n = self.to_client.len().min(down);
        if n > 0 {
            let chunk: Vec<u8> = self.to_client.drain(..n).collect();
            if !self.client.conn.is_closed() {
                self.wire_down.feed(&chunk, &self.down, trusted);
            }
            self.client.conn.handle_input(now, &chunk);
            moved = true;
        }
        self.events();
        moved
    }

    /// The server application's answer to a HELLO: a new session only while one is set up;
    /// a resume takes the session from wherever it is once the token checks out there.
    fn answer_hello(&mut self, req: HelloRequest) {
        let now = self.clock.now();
        self.counter += 1;
        let fresh = token(self.counter);
        let Some(r) = req.resume else {
            if self.accepting_new && self.server_session_mut().is_none() {
                self.sid = session_id(self.counter);
                self.server.conn.accept_new(now, self.sid, fresh);
            } else {
                assert!(self.tainted, "an honest client started a second session");
                self.server
                    .conn
                    .reject(RejectCode::UnknownSession, 0, "unknown session");
            }
            return;
        };
        let found = r.session_id == self.sid
            && self
                .server_session_mut()
                .is_some_and(|s| s.verify_token(&r.token));
        if !found {
            assert!(self.tainted, "the server refused the resume of its session");
            self.server
                .conn
                .reject(RejectCode::UnknownSession, 0, "unknown session");
            return;
        }
        let session = match self
            .server_old
            .iter_mut()
            .find(|o| o.conn.session().is_some())
        {
            Some(old) => old.conn.take_session(),
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
                Event::Established { .. } => {
                    let v = self.client.conn.version().unwrap_or(0);
                    assert!(
                        (self.client_versions.0..=self.client_versions.1).contains(&v),
                        "version {v} outside the client's range"
                    );
                    self.wire_down.on_established(v);
                }
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
                Event::Established { .. } => {
                    let v = self.server.conn.version().unwrap_or(0);
                    self.wire_up.on_established(v);
                }
                _ => {}
            }
        }
        for old in &mut self.server_old {
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
        for old in &self.server_old {
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
        let down_delivered = self.down.delivered();
        let sp = self.sp;
        if let Some(s) = self.server_session_mut() {
            sp.check_bounds(s);
            if trusted {
                assert!(s.acked() <= down_delivered, "acknowledged, not delivered");
            }
        }
        if trusted {
            for wire in [&self.wire_up, &self.wire_down] {
                assert!(
                    wire.dup <= wire.budget,
                    "{} body bytes of the {}'s messages reached the receiver twice (version-1 \
                     connections allow {})",
                    wire.dup,
                    wire.name,
                    wire.budget
                );
            }
        }
    }

    /// The end: the link heals (a new connection where one ended), time runs, both
    /// applications take everything. Between honest peers every message sent is then
    /// delivered and acknowledged.
    fn finish(&mut self) {
        for round in 0..20_000 {
            self.recv(true, usize::MAX);
            self.recv(false, usize::MAX);
            let moved = self.step(usize::MAX, usize::MAX);
            self.check();
            if moved {
                continue;
            }
            let established =
                self.client.conn.is_established() && self.server.conn.is_established();
            if !established
                && (self.client.conn.is_closed()
                    || self.server.conn.is_closed()
                    || round % 64 == 63)
            {
                self.cut();
                self.resume_with(0, 0, 0);
                continue;
            }
            let done = self.up.taken == self.up.sent.len()
                && self.down.taken == self.down.sent.len()
                && self
                    .client
                    .conn
                    .session()
                    .is_some_and(|s| s.outbox_len() == 0)
                && self
                    .server
                    .conn
                    .session()
                    .is_some_and(|s| s.outbox_len() == 0);
            if done {
                return;
            }
            self.clock.elapsed += Duration::from_millis(5);
            self.timeouts();
            self.events();
        }
        assert!(
            self.tainted,
            "stalled: client sent {} (server took {}), server sent {} (client took {})",
            self.up.sent.len(),
            self.up.taken,
            self.down.sent.len(),
            self.down.taken
        );
    }
}

/// Input: setup byte (client preset bits 0–1, server preset 2–3, client versions 4–5, server
/// versions 6–7), the first connections' parameter bytes (client, server), then operations
/// (see [`op`]), each an op byte and its arguments.
fn scenario(r: &mut Reader<'_>) {
    let b = r.u8();
    let cp = PRESETS[usize::from(b & 3)];
    let sp = PRESETS[usize::from((b >> 2) & 3)];
    let cv = VERSIONS[usize::from((b >> 4) & 3)];
    let mut sv = VERSIONS[usize::from(b >> 6)];
    if sv.1 < cv.0 || cv.1 < sv.0 {
        sv = (1, 2);
    }
    let params = (r.u8(), r.u8());
    let mut s = Scenario::new(cp, sp, (cv, sv), params, Clock::new(), 0);
    let mut ops = 0;
    while !r.is_empty() && ops < MAX_OPS {
        let op = r.u8();
        s.apply(op, r);
        s.check();
        ops += 1;
    }
    s.finish();
    s.check();
}

// ------------------------------------------------------------------------------------- seeds

/// Seed inputs of the `frames_v2` target.
pub(crate) fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    // Part 1: every frame, and the version-2 layouts, parsed in versions 1 and 2.
    for frame in super::every_frame().into_iter().chain(v2_frames()) {
        let mut encoded = Vec::new();
        frame.encode(&mut encoded);
        let kind = KINDS.iter().position(|&k| k == encoded[4]).unwrap() as u8;
        for version in [1, 2] {
            seeds.push([&[0, version, kind, encoded[5]][..], &encoded[HEADER_LEN..]].concat());
        }
    }
    // Part 2: all of them as one stream, version 1 for the two handshake frames, then 2.
    let mut stream = Vec::new();
    for frame in v2_frames() {
        frame.encode(&mut stream);
    }
    seeds.push(
        [
            &[1, 0, 1 | 2 << 2, 2][..],
            &Splits::encode(&[1, 7, 0, 300]),
            &stream,
        ]
        .concat(),
    );
    // Part 3: large messages cut mid-way and resumed, in versions 2, 1 and mixed.
    use op::*;
    for (setup, params) in [
        (0b0000_0101u8, 0x03u8), // tight presets, versions 1..2, 100-byte chunks
        (0b0101_0101, 0x05),     // versions 2..2, 3,000-byte chunks
        (0b1010_0101, 0x04),     // versions 1..1
        (0b0000_0000, 0x1b),     // default presets, 16 KiB chunks, 8,192-byte frames
        (0b0000_1111, 0x08),     // sequence numbers at the end of the space
    ] {
        seeds.push(vec![
            2,
            setup,
            params,
            params, // setup
            SEND_CLIENT,
            0xc0,
            0x11,
            0x70, // ~70,000 bytes
            SEND_SERVER,
            0x80,
            0xea,
            0x60, // 60,000 bytes
            SEND_CLIENT,
            9, //
            STEP,
            0x05,
            0x00,
            0x05,
            0x00, // 1,280 bytes each way
            STEP,
            0x00,
            0x10,
            0x00,
            0x33, //
            CUT,
            RESUME,
            0,
            params,
            params, // same versions
            STEP,
            0x10,
            0x00,
            0x08,
            0x00, //
            RECV_SERVER,
            0,
            RECV_CLIENT,
            0, //
            CUT_RESUME,
            0b1000,
            0x02,
            0x0c, // the server switches to 1..1
            STEP,
            0x20,
            0x00,
            0x20,
            0x00, //
            CUT_RESUME,
            0,
            0x01,
            0x09, // chunks of 1 byte and of 8,184 bytes
            PUMP,
            RECV_SERVER,
            0,
            RECV_CLIENT,
            0,
            PUMP,
        ]);
        // A resume without a cut (the old connections still live), GOAWAY, an idle timeout.
        seeds.push(vec![
            3,
            setup,
            params,
            0, //
            SEND_SERVER,
            0xc0,
            0x11,
            0x70, //
            STEP,
            0x00,
            0x40,
            0x0a,
            0x00, //
            RESUME,
            0,
            0x0d,
            0x0e, //
            STEP,
            0x00,
            0x40,
            0x08,
            0x00, //
            GO_AWAY,
            1,
            PUMP,
            PING,
            RESUME,
            0,
            0,
            0, //
            STEP,
            0x00,
            0x40,
            0x04,
            0x00, //
            ADVANCE,
            7,
            PUMP,
            CUT_RESUME,
            0,
            0,
            0,
            PUMP,
            RECV_CLIENT,
            0,
        ]);
    }
    // Hostile bytes: a CONTINUED DATA with nothing held, a forged offset after a cut.
    let mut continued = Vec::new();
    Frame::Data(steadfast::proto::frame::Data {
        seq: Seq(1),
        timestamp_us: 0,
        more: false,
        offset: Some(5),
        body: Bytes::from_static(b"forged"),
    })
    .encode(&mut continued);
    let mut s = vec![2, 0b0101_0101, 0x03, 0x03, SEND_CLIENT, 0x41, 0x00, STEP];
    s.extend([0x00, 0x80, 0x00, 0x00, CUT_RESUME, 0, 3, 3, INJECT_SERVER]);
    s.push(continued.len() as u8);
    s.extend(&continued);
    s.extend([PUMP, INJECT_CLIENT, continued.len() as u8]);
    s.extend(&continued);
    s.extend([PUMP, RECV_SERVER, 0]);
    seeds.push(s);
    seeds
}

/// Frames of the version-2 layouts: a resume HELLO with `partial`, WELCOMEs with timings, a
/// CONTINUED DATA.
fn v2_frames() -> Vec<Frame> {
    use steadfast::proto::frame::{Data, Hello, Welcome, WelcomeKind};
    use steadfast::proto::{Limits, ResumeRequest, Timings, Window};
    let limits = Limits {
        max_frame: 65_536,
        max_message: 1 << 20,
        window: Window {
            messages: 64,
            bytes: 1 << 20,
        },
    };
    let timings = Some(Timings {
        keepalive_ms: 3_000,
        idle_timeout_ms: 10_000,
    });
    vec![
        Frame::Hello(Hello {
            min_version: 2,
            max_version: 2,
            limits,
            resume: Some(ResumeRequest {
                session_id: session_id(7),
                token: token(7),
                received: Seq(3),
                partial: 4_000,
            }),
            first_seq: Seq(0),
            name: Some("bob".into()),
            credentials: None,
            transforms: vec!["lz4".into()],
        }),
        Frame::Welcome(Welcome {
            version: 2,
            session_id: session_id(7),
            token: token(8),
            limits,
            kind: WelcomeKind::Resumed {
                received: Seq(5),
                delivered: Seq(4),
                partial: 17,
            },
            transforms: vec!["lz4".into()],
            timings,
        }),
        Frame::Welcome(Welcome {
            version: 2,
            session_id: session_id(9),
            token: token(9),
            limits,
            kind: WelcomeKind::New { first_seq: Seq(1) },
            transforms: Vec::new(),
            timings,
        }),
        Frame::Data(Data {
            seq: Seq(3),
            timestamp_us: 1,
            more: true,
            offset: Some(4_000),
            body: Bytes::from(vec![7; 500]),
        }),
        Frame::Data(Data {
            seq: Seq(3),
            timestamp_us: 1,
            more: false,
            offset: None,
            body: Bytes::from(vec![8; 50]),
        }),
    ]
}
