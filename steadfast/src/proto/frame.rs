//! Frames of protocol versions 1 and 2: types, byte layout, encoding and parsing (PROTOCOL.md
//! §3). Version 2 changes three layouts (a resume HELLO offering only versions ≥ 2, a WELCOME
//! choosing version 2, and DATA with the CONTINUED flag); every other frame is the same in both.
//!
//! Every frame starts with a six-byte header:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    payload length (u32, BE)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   frame type  |     flags     |  payload ...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The length counts the payload only. It is checked against the receiver's maximum frame size
//! before a single payload byte is buffered (§3.1).

use std::fmt;

use bytes::{Buf, BufMut, Bytes};
use subtle::ConstantTimeEq;

/// Size of the frame header: length (4), type (1), flags (1). §3.1
pub const HEADER_LEN: usize = 6;
/// The magic bytes that open every HELLO payload, so that foreign traffic is recognised. §4.1
pub const MAGIC: [u8; 4] = *b"STFD";
/// Fixed part of a DATA payload: sequence number (8) and sender timestamp (8). §5.1
pub const DATA_PREFIX_LEN: usize = 16;
/// Longest peer name a HELLO may carry, in bytes. §4.1
pub const MAX_NAME_LEN: usize = 255;
/// Longest credentials a HELLO may carry, in bytes. §4.1
pub const MAX_CREDENTIALS_LEN: usize = 4_096;
/// Longest human-readable reason in REJECT, GOAWAY and CLOSE, in bytes. §3.3
pub const MAX_REASON_LEN: usize = 1_024;
/// Most message transforms a HELLO or WELCOME may list. §4.7
pub const MAX_TRANSFORMS: usize = 8;
/// Longest transform name, in bytes (visible ASCII). §4.7
pub const MAX_TRANSFORM_NAME_LEN: usize = 32;
/// The smallest maximum frame size a peer may announce or configure: a HELLO with the longest
/// name, credentials and transform list fits. §3.1
pub const MIN_MAX_FRAME: u32 = 8_192;
/// Fixed part of a continuing DATA payload (version 2, CONTINUED set): sequence number (8),
/// timestamp (8) and the offset of the chunk within the message (8). §5.5
pub const DATA_CONTINUED_PREFIX_LEN: usize = 24;
/// The smallest idle timeout a version-2 WELCOME may announce, in milliseconds. §8
pub const MIN_IDLE_TIMEOUT_MS: u32 = 100;

/// Frame type codes. §3.2
pub mod kind {
    /// HELLO, client to server, opens the handshake.
    pub const HELLO: u8 = 0x01;
    /// WELCOME, server to client, accepts the handshake.
    pub const WELCOME: u8 = 0x02;
    /// REJECT, server to client, refuses the handshake.
    pub const REJECT: u8 = 0x03;
    /// DATA, a message or a chunk of one.
    pub const DATA: u8 = 0x10;
    /// ACK, cumulative acknowledgement and flow-control window.
    pub const ACK: u8 = 0x11;
    /// PING, asks for a PONG.
    pub const PING: u8 = 0x20;
    /// PONG, answers a PING with its payload.
    pub const PONG: u8 = 0x21;
    /// GOAWAY, this connection ends, the session stays resumable.
    pub const GOAWAY: u8 = 0x30;
    /// CLOSE, the session ends.
    pub const CLOSE: u8 = 0x31;
}

/// Flag bits. A bit not defined for a frame type must be zero. §3.2
pub mod flag {
    /// HELLO: the client resumes an existing session.
    pub const RESUME: u8 = 0x01;
    /// WELCOME: the session was resumed.
    pub const RESUMED: u8 = 0x01;
    /// DATA: more chunks of this message follow.
    pub const MORE: u8 = 0x01;
    /// DATA, version 2 only: this chunk continues a message the receiver holds part of from an
    /// earlier connection; the payload carries the chunk's offset in the message. §5.5
    pub const CONTINUED: u8 = 0x02;
}

/// A sequence number of a message in one direction of a session. §5.1
///
/// Positions exchanged on the wire ("received", "delivered") are *exclusive* bounds: a
/// `delivered` of 7 means every message with a sequence number below 7 has been delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

impl Seq {
    /// The next sequence number, or `None` at the end of the space (never in practice).
    pub fn next(self) -> Option<Seq> {
        self.0.checked_add(1).map(Seq)
    }

    /// Number of sequence numbers from `earlier` up to (excluding) `self`; zero if `earlier`
    /// is not earlier.
    pub fn distance_from(self, earlier: Seq) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A session identifier, chosen by the server (128 bits). §4.3
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub [u8; 16]);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({self})")
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The secret that proves a client owns a session (128 bits from the OS random source). §4.4
///
/// Its `Debug` output is redacted and it has no `Display`, so it cannot end up in a log by
/// accident; equality is constant-time.
#[derive(Clone)]
pub struct ResumeToken(pub [u8; 16]);

impl ResumeToken {
    /// Compares two tokens in constant time.
    pub fn ct_eq(&self, other: &ResumeToken) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl PartialEq for ResumeToken {
    fn eq(&self, other: &Self) -> bool {
        self.ct_eq(other)
    }
}

impl Eq for ResumeToken {}

impl fmt::Debug for ResumeToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResumeToken(<redacted>)")
    }
}

/// Flow-control credit a receiver grants: how much may be unacknowledged at once. §6
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Messages the sender may have beyond the receiver's delivered position.
    pub messages: u32,
    /// Body bytes the sender may have beyond the receiver's delivered position (a single
    /// message larger than this may still be sent when nothing else is outstanding).
    pub bytes: u32,
}

/// Limits a peer announces in its handshake frame: what it accepts. §4.1
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame payload the peer accepts.
    pub max_frame: u32,
    /// Largest message body the peer accepts.
    pub max_message: u32,
    /// The peer's receive window.
    pub window: Window,
}

/// Resume fields of a HELLO. §4.4
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResumeRequest {
    /// The session to resume.
    pub session_id: SessionId,
    /// The client's resume token.
    pub token: ResumeToken,
    /// The client's receive position: every server message below it has been received.
    pub received: Seq,
    /// Version 2: body bytes the client holds of server message `received`, which it
    /// received in part before the cut (0: none). A HELLO offering version 1 cannot carry it
    /// (the version-1 layout), so it is 0 there. §5.5
    pub partial: u64,
}

/// HELLO: the client's opening frame. §4.1
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Lowest protocol version the client speaks.
    pub min_version: u16,
    /// Highest protocol version the client speaks.
    pub max_version: u16,
    /// What the client accepts.
    pub limits: Limits,
    /// Present when resuming a session.
    pub resume: Option<ResumeRequest>,
    /// For a new session: the sequence number of the client's first message.
    pub first_seq: Seq,
    /// Optional peer name (UTF-8, at most 255 bytes).
    pub name: Option<String>,
    /// Optional credentials (opaque, at most 4,096 bytes).
    pub credentials: Option<Bytes>,
    /// The message transforms the client applies, in order (§4.7). Empty: none.
    pub transforms: Vec<String>,
}

/// How a WELCOME positions the session. §4.2
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WelcomeKind {
    /// A new session; the server's first message will carry this sequence number.
    New {
        /// Sequence number of the server's first message.
        first_seq: Seq,
    },
    /// The session was resumed.
    Resumed {
        /// Every client message below this has been received by the server.
        received: Seq,
        /// Every client message below this has been delivered by the server (an ACK).
        delivered: Seq,
        /// Version 2: body bytes the server holds of client message `received` (0: none); the
        /// client continues that message from this offset. Always 0 in version 1. §5.5
        partial: u64,
    },
}

/// Keepalive interval and idle timeout a version-2 WELCOME announces: the server's, which
/// govern the connection (§8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// The server sends a PING at least this often, in milliseconds (≥ 1, below the idle
    /// timeout).
    pub keepalive_ms: u32,
    /// The server ends a connection on which nothing arrived for this long, in milliseconds
    /// (≥ 100).
    pub idle_timeout_ms: u32,
}

/// WELCOME: the server accepts the handshake. §4.2
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    /// The chosen protocol version.
    pub version: u16,
    /// The session's id.
    pub session_id: SessionId,
    /// A fresh resume token for the next resume.
    pub token: ResumeToken,
    /// What the server accepts.
    pub limits: Limits,
    /// New or resumed, with positions.
    pub kind: WelcomeKind,
    /// The session's message transforms, in order: the client's list, echoed (§4.7).
    pub transforms: Vec<String>,
    /// Version 2: the server's timings (`None` in version 1, which has no such field).
    pub timings: Option<Timings>,
}

/// REJECT: the server refuses the handshake. §4.5
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// Why.
    pub code: RejectCode,
    /// When the client may try again, in milliseconds (0: no advice).
    pub retry_after_ms: u32,
    /// Lowest protocol version the server speaks.
    pub min_version: u16,
    /// Highest protocol version the server speaks.
    pub max_version: u16,
    /// Human-readable detail.
    pub reason: String,
}

/// DATA: a message, or one chunk of it. §5.1
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Data {
    /// The message's sequence number (the same in every chunk).
    pub seq: Seq,
    /// Sender's wall-clock time at `send`, in microseconds since the Unix epoch (0: unknown).
    pub timestamp_us: u64,
    /// More chunks of this message follow.
    pub more: bool,
    /// Version 2, CONTINUED: where this chunk starts in the message (the receiver holds the
    /// bytes before it from an earlier connection). `None`: a plain DATA frame.
    pub offset: Option<u64>,
    /// This chunk's bytes.
    pub body: Bytes,
}

/// GOAWAY or CLOSE details. §7
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    /// Why.
    pub code: CloseCode,
    /// When the client should reconnect, in milliseconds (0: at once, with its usual backoff).
    pub retry_after_ms: u32,
    /// Human-readable detail.
    pub reason: String,
}

/// CLOSE: the session ends. §7.2
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// Why.
    pub code: CloseCode,
    /// The sender's final delivered position (a last ACK).
    pub delivered: Seq,
    /// Human-readable detail.
    pub reason: String,
}

/// One frame. §3
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// §4.1
    Hello(Hello),
    /// §4.2
    Welcome(Welcome),
    /// §4.5
    Reject(Reject),
    /// §5.1
    Data(Data),
    /// §5.2
    Ack {
        /// Every message below this has been delivered to the application.
        delivered: Seq,
        /// The receive window from `delivered` on.
        window: Window,
    },
    /// §8
    Ping(u64),
    /// §8
    Pong(u64),
    /// §7.1
    GoAway(GoAway),
    /// §7.2
    Close(Close),
}

macro_rules! wire_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $val:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vm])* $var,)*
            /// A code this implementation does not know (kept, not refused).
            Other(u16),
        }
        impl $name {
            /// The code on the wire.
            pub fn to_u16(self) -> u16 {
                match self { $($name::$var => $val,)* $name::Other(v) => v }
            }
            /// The code from the wire.
            pub fn from_u16(v: u16) -> Self {
                match v { $($val => $name::$var,)* v => $name::Other(v) }
            }
        }
    };
}

wire_enum! {
    /// Reason codes of REJECT. §4.5
    RejectCode {
        /// No protocol version in common. Final.
        VersionMismatch = 0x0001,
        /// Credentials missing or refused. Final.
        Unauthenticated = 0x0002,
        /// The session id or token is not known (or the token does not match). Final.
        UnknownSession = 0x0003,
        /// The session existed but has expired. Final.
        SessionExpired = 0x0004,
        /// The server is at a connection or session limit. Retry after `retry_after_ms`.
        ServerFull = 0x0005,
        /// The HELLO broke the protocol (bad limits, bad fields). Final.
        ProtocolError = 0x0006,
        /// The server is shutting down. Retry after `retry_after_ms`.
        ShuttingDown = 0x0007,
        /// The client's message transforms are not what the server supports or requires
        /// (§4.7). Final.
        Incompatible = 0x0008,
    }
}

impl RejectCode {
    /// Whether a client should try the same handshake again later. §4.5
    pub fn is_retryable(self) -> bool {
        matches!(self, RejectCode::ServerFull | RejectCode::ShuttingDown)
    }
}

wire_enum! {
    /// Reason codes of GOAWAY and CLOSE. §7.3
    CloseCode {
        /// Normal end requested by the application.
        Normal = 0x0000,
        /// The peer broke the protocol (malformed frame, bad sequence number, ...).
        ProtocolError = 0x0001,
        /// A frame longer than the announced maximum.
        FrameTooLarge = 0x0002,
        /// A message longer than the announced maximum.
        MessageTooLarge = 0x0003,
        /// The peer sent beyond the granted window.
        FlowControl = 0x0004,
        /// No frame arrived within the idle timeout.
        IdleTimeout = 0x0005,
        /// The server's operator removed the peer.
        Kicked = 0x0006,
        /// The process is shutting down.
        Shutdown = 0x0007,
        /// Another connection resumed this session.
        SessionTakenOver = 0x0008,
        /// The handshake did not finish in time.
        HandshakeTimeout = 0x0009,
        /// A local resource limit was reached.
        ResourceLimit = 0x000A,
    }
}

/// A frame that could not be parsed. Plain value: no I/O error inside. §3.4
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix exceeds the receiver's maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced payload length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// An unknown frame type.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// Flag bits that are not defined for this frame type.
    #[error("reserved flags 0x{flags:02x} set on frame type 0x{kind:02x}")]
    ReservedFlags {
        /// Frame type.
        kind: u8,
        /// The flags byte.
        flags: u8,
    },
    /// The payload does not match the frame type's layout.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    /// A HELLO without the protocol's magic: not a steadfast peer.
    #[error("not a steadfast peer (bad magic)")]
    BadMagic,
}

impl Frame {
    /// The frame's type code.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => kind::HELLO,
            Frame::Welcome(_) => kind::WELCOME,
            Frame::Reject(_) => kind::REJECT,
            Frame::Data(_) => kind::DATA,
            Frame::Ack { .. } => kind::ACK,
            Frame::Ping(_) => kind::PING,
            Frame::Pong(_) => kind::PONG,
            Frame::GoAway(_) => kind::GOAWAY,
            Frame::Close(_) => kind::CLOSE,
        }
    }

    /// Appends the encoded frame (header and payload) to `buf`.
    ///
    /// Field lengths are the caller's responsibility: names, credentials and reasons longer than
    /// their maxima are truncated (reasons at a character boundary) rather than encoded.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            Frame::Hello(h) => {
                let name = truncate_str(h.name.as_deref().unwrap_or(""), MAX_NAME_LEN).as_bytes();
                let cred = h.credentials.as_deref().unwrap_or(&[]);
                let cred = &cred[..cred.len().min(MAX_CREDENTIALS_LEN)];
                let v2 = h.resume.is_some() && h.min_version >= 2;
                let tail = match (&h.resume, v2) {
                    (None, _) => 8,
                    (Some(_), false) => 40,
                    (Some(_), true) => 48,
                };
                let len = 4
                    + 4
                    + 16
                    + tail
                    + 1
                    + name.len()
                    + 2
                    + cred.len()
                    + transforms_len(&h.transforms);
                let flags = if h.resume.is_some() { flag::RESUME } else { 0 };
                put_header(buf, len, kind::HELLO, flags);
                buf.put_slice(&MAGIC);
                buf.put_u16(h.min_version);
                buf.put_u16(h.max_version);
                put_limits(buf, &h.limits);
                match &h.resume {
                    Some(r) => {
                        buf.put_slice(&r.session_id.0);
                        buf.put_slice(&r.token.0);
                        buf.put_u64(r.received.0);
                        if v2 {
                            buf.put_u64(r.partial);
                        }
                    }
                    None => buf.put_u64(h.first_seq.0),
                }
                buf.put_u8(name.len() as u8);
                buf.put_slice(name);
                buf.put_u16(cred.len() as u16);
                buf.put_slice(cred);
                put_transforms(buf, &h.transforms);
            }
            Frame::Welcome(w) => {
                let v2 = w.version >= 2;
                let (flags, tail) = match (w.kind, v2) {
                    (WelcomeKind::New { .. }, false) => (0, 8),
                    (WelcomeKind::New { .. }, true) => (0, 16),
                    (WelcomeKind::Resumed { .. }, false) => (flag::RESUMED, 16),
                    (WelcomeKind::Resumed { .. }, true) => (flag::RESUMED, 32),
                };
                let len = 2 + 32 + 16 + tail + transforms_len(&w.transforms);
                put_header(buf, len, kind::WELCOME, flags);
                buf.put_u16(w.version);
                buf.put_slice(&w.session_id.0);
                buf.put_slice(&w.token.0);
                put_limits(buf, &w.limits);
                if v2 {
                    let t = w.timings.unwrap_or(Timings {
                        keepalive_ms: 0,
                        idle_timeout_ms: 0,
                    });
                    buf.put_u32(t.keepalive_ms);
                    buf.put_u32(t.idle_timeout_ms);
                }
                match w.kind {
                    WelcomeKind::New { first_seq } => buf.put_u64(first_seq.0),
                    WelcomeKind::Resumed {
                        received,
                        delivered,
                        partial,
                    } => {
                        buf.put_u64(received.0);
                        buf.put_u64(delivered.0);
                        if v2 {
                            buf.put_u64(partial);
                        }
                    }
                }
                put_transforms(buf, &w.transforms);
            }
            Frame::Reject(r) => {
                let reason = truncate_str(&r.reason, MAX_REASON_LEN);
                put_header(buf, 12 + reason.len(), kind::REJECT, 0);
                buf.put_u16(r.code.to_u16());
                buf.put_u32(r.retry_after_ms);
                buf.put_u16(r.min_version);
                buf.put_u16(r.max_version);
                put_reason(buf, reason);
            }
            Frame::Data(d) => {
                match d.offset {
                    None => encode_data_header(buf, d.seq, d.timestamp_us, d.more, d.body.len()),
                    Some(offset) => encode_continued_header(
                        buf,
                        d.seq,
                        d.timestamp_us,
                        d.more,
                        offset,
                        d.body.len(),
                    ),
                }
                buf.put_slice(&d.body);
            }
            Frame::Ack { delivered, window } => {
                put_header(buf, 16, kind::ACK, 0);
                buf.put_u64(delivered.0);
                buf.put_u32(window.messages);
                buf.put_u32(window.bytes);
            }
            Frame::Ping(v) | Frame::Pong(v) => {
                put_header(buf, 8, self.kind(), 0);
                buf.put_u64(*v);
            }
            Frame::GoAway(g) => {
                let reason = truncate_str(&g.reason, MAX_REASON_LEN);
                put_header(buf, 8 + reason.len(), kind::GOAWAY, 0);
                buf.put_u16(g.code.to_u16());
                buf.put_u32(g.retry_after_ms);
                put_reason(buf, reason);
            }
            Frame::Close(c) => {
                let reason = truncate_str(&c.reason, MAX_REASON_LEN);
                put_header(buf, 12 + reason.len(), kind::CLOSE, 0);
                buf.put_u16(c.code.to_u16());
                buf.put_u64(c.delivered.0);
                put_reason(buf, reason);
            }
        }
    }

    /// Parses a frame of a version-1 connection (or of a handshake) from its type, flags and
    /// complete payload: [`Frame::parse_in`] with version 1.
    ///
    /// # Errors
    /// As [`Frame::parse_in`].
    pub fn parse(kind: u8, flags: u8, p: Bytes) -> Result<Frame, FrameError> {
        Frame::parse_in(1, kind, flags, p)
    }

    /// Parses a frame from its type, flags and complete payload, on a connection that speaks
    /// `version` (before the handshake has chosen one: 1). HELLO and WELCOME say their layout
    /// themselves (a resume HELLO whose `min_version` is 2 or more, a WELCOME whose `version`
    /// is 2 or more have the version-2 layout); `version` decides only whether DATA may carry
    /// the CONTINUED flag (2 and above).
    ///
    /// # Errors
    /// [`FrameError`] when the type is unknown, reserved flags are set, or the payload does not
    /// have the type's layout (including trailing bytes).
    pub fn parse_in(version: u16, kind: u8, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
        let allowed = match kind {
            kind::DATA if version >= 2 => flag::MORE | flag::CONTINUED,
            kind::HELLO | kind::WELCOME | kind::DATA => 0x01,
            kind::REJECT | kind::ACK | kind::PING | kind::PONG | kind::GOAWAY | kind::CLOSE => 0,
            other => return Err(FrameError::UnknownType(other)),
        };
        if flags & !allowed != 0 {
            return Err(FrameError::ReservedFlags { kind, flags });
        }
        let frame = match kind {
            kind::HELLO => {
                let name = "HELLO";
                need(&p, 4, name)?;
                if p[..4] != MAGIC {
                    return Err(FrameError::BadMagic);
                }
                p.advance(4);
                need(&p, 4 + 16, name)?;
                let min_version = p.get_u16();
                let max_version = p.get_u16();
                let limits = get_limits(&mut p);
                let (resume, first_seq) = if flags & flag::RESUME != 0 {
                    let v2 = min_version >= 2;
                    need(&p, if v2 { 48 } else { 40 }, name)?;
                    let session_id = SessionId(get_array(&mut p));
                    let token = ResumeToken(get_array(&mut p));
                    let received = Seq(p.get_u64());
                    let partial = if v2 { p.get_u64() } else { 0 };
                    (
                        Some(ResumeRequest {
                            session_id,
                            token,
                            received,
                            partial,
                        }),
                        Seq(0),
                    )
                } else {
                    need(&p, 8, name)?;
                    (None, Seq(p.get_u64()))
                };
                need(&p, 1, name)?;
                let name_len = p.get_u8() as usize;
                need(&p, name_len, name)?;
                let peer_name = p.split_to(name_len);
                let peer_name = std::str::from_utf8(&peer_name)
                    .map_err(|_| FrameError::Malformed(name))?
                    .to_owned();
                need(&p, 2, name)?;
                let cred_len = p.get_u16() as usize;
                if cred_len > MAX_CREDENTIALS_LEN {
                    return Err(FrameError::Malformed(name));
                }
                need(&p, cred_len, name)?;
                let credentials = p.split_to(cred_len);
                let transforms = get_transforms(&mut p, name)?;
                Frame::Hello(Hello {
                    min_version,
                    max_version,
                    limits,
                    resume,
                    first_seq,
                    name: (!peer_name.is_empty()).then_some(peer_name),
                    credentials: (!credentials.is_empty()).then_some(credentials),
                    transforms,
                })
            }
            kind::WELCOME => {
                let name = "WELCOME";
                need(&p, 2 + 32 + 16, name)?;
                let version = p.get_u16();
                let session_id = SessionId(get_array(&mut p));
                let token = ResumeToken(get_array(&mut p));
                let limits = get_limits(&mut p);
                let v2 = version >= 2;
                let timings = if v2 {
                    need(&p, 8, name)?;
                    Some(Timings {
                        keepalive_ms: p.get_u32(),
                        idle_timeout_ms: p.get_u32(),
                    })
                } else {
                    None
                };
                let kind = if flags & flag::RESUMED != 0 {
                    need(&p, if v2 { 24 } else { 16 }, name)?;
                    WelcomeKind::Resumed {
                        received: Seq(p.get_u64()),
                        delivered: Seq(p.get_u64()),
                        partial: if v2 { p.get_u64() } else { 0 },
                    }
                } else {
                    need(&p, 8, name)?;
                    WelcomeKind::New {
                        first_seq: Seq(p.get_u64()),
                    }
                };
                let transforms = get_transforms(&mut p, name)?;
                Frame::Welcome(Welcome {
                    version,
                    session_id,
                    token,
                    limits,
                    kind,
                    transforms,
                    timings,
                })
            }
            kind::REJECT => {
                let name = "REJECT";
                need(&p, 10, name)?;
                let code = RejectCode::from_u16(p.get_u16());
                let retry_after_ms = p.get_u32();
                let min_version = p.get_u16();
                let max_version = p.get_u16();
                let reason = get_reason(&mut p, name)?;
                Frame::Reject(Reject {
                    code,
                    retry_after_ms,
                    min_version,
                    max_version,
                    reason,
                })
            }
            kind::DATA => {
                let continued = flags & flag::CONTINUED != 0;
                let prefix = if continued {
                    DATA_CONTINUED_PREFIX_LEN
                } else {
                    DATA_PREFIX_LEN
                };
                need(&p, prefix, "DATA")?;
                let seq = Seq(p.get_u64());
                let timestamp_us = p.get_u64();
                let offset = continued.then(|| p.get_u64());
                // The body is the rest: a zero-copy slice of the input buffer.
                let body = std::mem::take(&mut p);
                Frame::Data(Data {
                    seq,
                    timestamp_us,
                    more: flags & flag::MORE != 0,
                    offset,
                    body,
                })
            }
            kind::ACK => {
                need(&p, 16, "ACK")?;
                Frame::Ack {
                    delivered: Seq(p.get_u64()),
                    window: Window {
                        messages: p.get_u32(),
                        bytes: p.get_u32(),
                    },
                }
            }
            kind::PING | kind::PONG => {
                need(&p, 8, frame_name(kind))?;
                let v = p.get_u64();
                if kind == kind::PING {
                    Frame::Ping(v)
                } else {
                    Frame::Pong(v)
                }
            }
            kind::GOAWAY => {
                let name = "GOAWAY";
                need(&p, 6, name)?;
                let code = CloseCode::from_u16(p.get_u16());
                let retry_after_ms = p.get_u32();
                let reason = get_reason(&mut p, name)?;
                Frame::GoAway(GoAway {
                    code,
                    retry_after_ms,
                    reason,
                })
            }
            kind::CLOSE => {
                let name = "CLOSE";
                need(&p, 10, name)?;
                let code = CloseCode::from_u16(p.get_u16());
                let delivered = Seq(p.get_u64());
                let reason = get_reason(&mut p, name)?;
                Frame::Close(Close {
                    code,
                    delivered,
                    reason,
                })
            }
            _ => unreachable!("checked above"),
        };
        if !p.is_empty() {
            return Err(FrameError::Malformed(frame_name(kind)));
        }
        Ok(frame)
    }
}

/// Writes the header and fixed prefix of a DATA frame whose body of `body_len` bytes follows.
/// The hot path of the sender uses this to copy the body straight from the outbox. §5.1
pub fn encode_data_header<B: BufMut>(buf: &mut B, seq: Seq, ts: u64, more: bool, body_len: usize) {
    let flags = if more { flag::MORE } else { 0 };
    put_header(buf, DATA_PREFIX_LEN + body_len, kind::DATA, flags);
    buf.put_u64(seq.0);
    buf.put_u64(ts);
}

/// Writes the header and fixed prefix of a continuing DATA frame (version 2, CONTINUED) whose
/// chunk of `body_len` bytes, starting at `offset` in the message, follows. §5.5
pub fn encode_continued_header<B: BufMut>(
    buf: &mut B,
    seq: Seq,
    ts: u64,
    more: bool,
    offset: u64,
    body_len: usize,
) {
    let flags = flag::CONTINUED | if more { flag::MORE } else { 0 };
    put_header(buf, DATA_CONTINUED_PREFIX_LEN + body_len, kind::DATA, flags);
    buf.put_u64(seq.0);
    buf.put_u64(ts);
    buf.put_u64(offset);
}

fn frame_name(kind: u8) -> &'static str {
    match kind {
        kind::HELLO => "HELLO",
        kind::WELCOME => "WELCOME",
        kind::REJECT => "REJECT",
        kind::DATA => "DATA",
        kind::ACK => "ACK",
        kind::PING => "PING",
        kind::PONG => "PONG",
        kind::GOAWAY => "GOAWAY",
        kind::CLOSE => "CLOSE",
        _ => "unknown",
    }
}

fn put_header<B: BufMut>(buf: &mut B, len: usize, kind: u8, flags: u8) {
    debug_assert!(len <= u32::MAX as usize);
    buf.put_u32(len as u32);
    buf.put_u8(kind);
    buf.put_u8(flags);
}

fn put_limits<B: BufMut>(buf: &mut B, l: &Limits) {
    buf.put_u32(l.max_frame);
    buf.put_u32(l.max_message);
    buf.put_u32(l.window.messages);
    buf.put_u32(l.window.bytes);
}

fn get_limits(p: &mut Bytes) -> Limits {
    Limits {
        max_frame: p.get_u32(),
        max_message: p.get_u32(),
        window: Window {
            messages: p.get_u32(),
            bytes: p.get_u32(),
        },
    }
}

fn put_reason<B: BufMut>(buf: &mut B, reason: &str) {
    buf.put_u16(reason.len() as u16);
    buf.put_slice(reason.as_bytes());
}

fn get_reason(p: &mut Bytes, name: &'static str) -> Result<String, FrameError> {
    need(p, 2, name)?;
    let len = p.get_u16() as usize;
    if len > MAX_REASON_LEN {
        return Err(FrameError::Malformed(name));
    }
    need(p, len, name)?;
    let raw = p.split_to(len);
    std::str::from_utf8(&raw)
        .map(str::to_owned)
        .map_err(|_| FrameError::Malformed(name))
}

/// Whether `name` may name a message transform: 1 to 32 bytes of visible ASCII. §4.7
pub fn is_valid_transform_name(name: &str) -> bool {
    (1..=MAX_TRANSFORM_NAME_LEN).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_graphic())
}

/// The encoded size of a transform list: a count byte, then each name with its length byte.
/// Invalid names and names beyond the maximum count are left out (configuration validation
/// refuses them earlier).
fn transforms_len(list: &[String]) -> usize {
    let valid = list.iter().filter(|n| is_valid_transform_name(n));
    1 + valid
        .take(MAX_TRANSFORMS)
        .map(|n| 1 + n.len())
        .sum::<usize>()
}

fn put_transforms<B: BufMut>(buf: &mut B, list: &[String]) {
    let valid: Vec<&String> = list
        .iter()
        .filter(|n| is_valid_transform_name(n))
        .take(MAX_TRANSFORMS)
        .collect();
    buf.put_u8(valid.len() as u8);
    for n in valid {
        buf.put_u8(n.len() as u8);
        buf.put_slice(n.as_bytes());
    }
}

/// Reads the transform list that ends a HELLO or WELCOME. §4.7
fn get_transforms(p: &mut Bytes, name: &'static str) -> Result<Vec<String>, FrameError> {
    need(p, 1, name)?;
    let count = p.get_u8() as usize;
    if count > MAX_TRANSFORMS {
        return Err(FrameError::Malformed(name));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        need(p, 1, name)?;
        let len = p.get_u8() as usize;
        need(p, len, name)?;
        let raw = p.split_to(len);
        let t = std::str::from_utf8(&raw).map_err(|_| FrameError::Malformed(name))?;
        if !is_valid_transform_name(t) {
            return Err(FrameError::Malformed(name));
        }
        out.push(t.to_owned());
    }
    Ok(out)
}

fn get_array(p: &mut Bytes) -> [u8; 16] {
    let mut a = [0u8; 16];
    p.copy_to_slice(&mut a);
    a
}

fn need(p: &Bytes, n: usize, name: &'static str) -> Result<(), FrameError> {
    if p.len() < n {
        Err(FrameError::Malformed(name))
    } else {
        Ok(())
    }
}

fn truncate_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
