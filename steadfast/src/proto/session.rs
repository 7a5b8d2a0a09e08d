//! Session state that outlives connections: sequence numbers, the outbox of unacknowledged
//! messages, the inbox, duplicate suppression and resume tokens (PROTOCOL.md §4.4, §5, §6).
//!
//! A [`Session`] is owned by the [`Connection`](super::Connection) that carries it while one
//! does, and by the application (a server's table of lingering sessions, a client between two
//! connections) otherwise. Everything that must survive a cut lives here; everything that dies
//! with a connection (a half-received chunked message, the send cursor) lives in the
//! connection.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;

use super::config::Config;
use super::frame::{ResumeToken, Seq, SessionId};

/// A message: its sequence number, the sender's timestamp and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sequence number in its direction of the session.
    pub seq: Seq,
    /// Sender's wall-clock time at `send`, microseconds since the Unix epoch (0: not given).
    /// The runtime stamps a message queued behind others on a streaming connection with the
    /// time of its driver's latest turn (within that turn's work, typically microseconds, at
    /// most a store commit), which saves a clock read per message.
    pub timestamp_us: u64,
    /// The body. A received body has memory of its own, except that one of 512 B to 8 KiB
    /// may share an allocation with the bodies received just before and after it, of at
    /// most 16 times its size and 32 KiB: keeping such a body alone for long keeps that much
    /// alive (`Bytes::copy_from_slice` makes it an allocation of its own).
    pub body: Bytes,
}

/// A message this side received in part on an earlier connection (version 2): kept with the
/// session so that the sender continues it from the next byte after a resume (§5.5).
#[derive(Debug)]
pub(crate) struct HeldPartial {
    pub(crate) seq: Seq,
    pub(crate) timestamp_us: u64,
    pub(crate) buf: bytes::BytesMut,
}

/// What a store keeps of a session so that it survives the death of its process (PROTOCOL.md
/// §13): identity, tokens and positions. The outbox is kept beside it, message by message.
///
/// Restoring gives a session whose inbox is empty and whose `received` position is its
/// `delivered` one: messages received but not delivered before a crash are received again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    /// Which end.
    pub role: Role,
    /// The session id (`None` for a client session no server has accepted yet).
    pub id: Option<SessionId>,
    /// Client: the token to present. Server: the token the client is proven to hold.
    pub token: Option<ResumeToken>,
    /// Server: the token of the last WELCOME, not yet proven held.
    pub issued: Option<ResumeToken>,
    /// The client's name.
    pub name: Option<String>,
    /// The session's message transforms.
    pub transforms: Vec<String>,
    /// The sequence number the next message sent will get.
    pub next_seq: Seq,
    /// Every own message below this was acknowledged.
    pub acked: Seq,
    /// Every peer message below this was delivered (and acknowledged, or about to be).
    pub delivered: Seq,
}

/// Which end of the session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The end that connects and resumes.
    Client,
    /// The end that accepts.
    Server,
}

/// Why a message could not be queued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The outbox is at its message or byte bound. Wait for acknowledgements and try again.
    #[error("outbox full")]
    Full,
    /// The message exceeds the maximum message size (ours or the peer's).
    #[error("message of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The message's size.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// The session is closing or has ended.
    #[error("session closed")]
    Closed,
    /// The sequence space is used up (after 2⁶⁴ messages: never in practice).
    #[error("sequence numbers exhausted")]
    SequenceExhausted,
    /// The session's message transform chain refused the body (§4.7); nothing was queued.
    #[error(transparent)]
    Transform(#[from] crate::transform::TransformError),
}

/// Counters of one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages queued by the application.
    pub queued: u64,
    /// Messages transmitted for the first time.
    pub sent: u64,
    /// Messages transmitted again on a new connection.
    pub retransmitted: u64,
    /// Body bytes transmitted in DATA frames, counting every transmission (so beyond the
    /// bodies' total: what faults made this side send again).
    pub body_bytes_sent: u64,
    /// Bytes read from the transport while a connection carried the session, frames of every
    /// kind and incomplete ones included.
    pub bytes_received: u64,
    /// Messages acknowledged by the peer.
    pub acknowledged: u64,
    /// Messages received from the peer (each counted once).
    pub received: u64,
    /// Messages taken by the application.
    pub delivered: u64,
    /// Messages received again and dropped as duplicates.
    pub duplicates_dropped: u64,
    /// Connections that carried the session.
    pub connections: u64,
    /// Latest measured round-trip time.
    pub rtt: Option<Duration>,
}

/// One end of a session.
#[derive(Debug)]
pub struct Session {
    pub(crate) role: Role,
    pub(crate) id: Option<SessionId>,
    /// Client: the token to present. Server: the token the client is proven to hold. §4.4
    pub(crate) token: Option<ResumeToken>,
    /// Server: the token sent in the last WELCOME and not yet proven held by the client.
    pub(crate) issued: Option<ResumeToken>,
    pub(crate) name: Option<String>,
    // Send side.
    pub(crate) next_seq: Seq,
    /// Every message below this was delivered by the peer (cumulative ACK).
    pub(crate) acked: Seq,
    /// Exclusive upper bound of sequence numbers ever transmitted (at least one chunk).
    pub(crate) sent_high: Seq,
    /// Messages from `acked` to `next_seq`, contiguous.
    pub(crate) outbox: VecDeque<Message>,
    pub(crate) outbox_bytes: u64,
    pub(crate) outbox_max_messages: usize,
    pub(crate) outbox_max_bytes: u64,
    pub(crate) max_message: u32,
    /// The peer's maximum message size, once known.
    pub(crate) peer_max_message: Option<u32>,
    // Receive side.
    /// Every peer message below this has been received.
    pub(crate) received: Seq,
    /// Every peer message below this has been taken by the application.
    pub(crate) delivered: Seq,
    /// Bytes delivered since the session began (for ACK pacing).
    pub(crate) delivered_bytes: u64,
    pub(crate) inbox: VecDeque<Message>,
    pub(crate) inbox_bytes: u64,
    /// Manual acknowledgement: messages taken by the application and not yet acknowledged
    /// (sequence number, body length), in order.
    pub(crate) manual_ack: bool,
    /// Boxed when first used, as few sessions acknowledge by hand.
    #[allow(
        clippy::box_collection,
        reason = "8 bytes instead of 32 in every session, most of which never use it"
    )]
    pub(crate) taken: Option<Box<VecDeque<(Seq, u64)>>>,
    /// A CLOSE this side sent (code and reason), kept so a resume can repeat it. §7.2
    pub(crate) closing: Option<Box<(super::frame::CloseCode, String)>>,
    /// Messages dropped from the inbox when this side's CLOSE went out (§7.2).
    pub(crate) discarded: usize,
    /// The message transforms both ends apply, in order (§4.7): fixed for the session's life.
    pub(crate) transforms: Vec<String>,
    /// Version 2: the peer message `received`, received in part before the last cut (§5.5).
    pub(crate) held: Option<Box<HeldPartial>>,
    /// The protocol version of the last connection established (0: none yet).
    pub(crate) version: u16,
    pub(crate) stats: Stats,
}

impl Session {
    /// A new client session, not yet known to any server. Messages sent now wait for the first
    /// connection.
    pub fn client(config: &Config, name: Option<String>) -> Self {
        let mut s = Session::blank(Role::Client, config);
        s.name = name;
        s.transforms = config.transforms.clone();
        s
    }

    /// A new server session created for a HELLO (see
    /// [`Connection::accept_new`](super::Connection::accept_new)).
    pub(crate) fn server(
        config: &Config,
        id: SessionId,
        token: ResumeToken,
        peer_first_seq: Seq,
        name: Option<String>,
        transforms: Vec<String>,
    ) -> Self {
        let mut s = Session::blank(Role::Server, config);
        s.id = Some(id);
        // A new session's client holds no token yet: the issued one becomes proven on the
        // client's first frame after WELCOME.
        s.issued = Some(token);
        s.name = name;
        s.transforms = transforms;
        s.received = peer_first_seq;
        s.delivered = peer_first_seq;
        s
    }

    fn blank(role: Role, config: &Config) -> Self {
        Session {
            role,
            id: None,
            token: None,
            issued: None,
            name: None,
            next_seq: config.initial_seq,
            acked: config.initial_seq,
            sent_high: config.initial_seq,
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            outbox_max_messages: config.outbox_messages,
            outbox_max_bytes: config.outbox_bytes,
            max_message: config.max_message,
            peer_max_message: None,
            received: Seq(0),
            delivered: Seq(0),
            delivered_bytes: 0,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            manual_ack: config.manual_ack,
            taken: None,
            closing: None,
            discarded: 0,
            transforms: Vec::new(),
            held: None,
            version: 0,
            stats: Stats::default(),
        }
    }

    /// Bytes held of a peer message received in part before the last cut, by the capacity of
    /// their buffer (0: none). Version 2 keeps them with the session so that the message
    /// continues after the resume (§5.5); they count in a server's memory budget.
    pub fn held_partial_bytes(&self) -> u64 {
        self.held.as_ref().map_or(0, |h| h.buf.capacity() as u64)
    }

    /// The message transforms both ends apply to every body, in order (§4.7).
    pub fn transforms(&self) -> &[String] {
        &self.transforms
    }

    /// The durable part of the session (see [`SessionRecord`]).
    pub fn record(&self) -> SessionRecord {
        SessionRecord {
            role: self.role,
            id: self.id,
            token: self.token.clone(),
            issued: self.issued.clone(),
            name: self.name.clone(),
            transforms: self.transforms.clone(),
            next_seq: self.next_seq,
            acked: self.acked,
            delivered: self.delivered,
        }
    }

    /// The messages of the outbox from `seq` on (the ones a store has not kept yet).
    pub fn outbox_from(&self, seq: Seq) -> impl Iterator<Item = &Message> {
        let skip = seq.0.saturating_sub(self.acked.0);
        self.outbox
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
    }

    /// A session restored from a store: `record` and its unacknowledged messages, which must
    /// be the contiguous run from `record.acked` to `record.next_seq`.
    ///
    /// # Errors
    /// [`super::ConfigError`] naming the inconsistency (a gap, a message out of range,
    /// positions in the wrong order): the store is corrupt.
    pub fn restore(
        config: &Config,
        record: SessionRecord,
        outbox: Vec<Message>,
    ) -> Result<Session, super::ConfigError> {
        let bad = |why: String| Err(super::ConfigError(format!("stored session: {why}")));
        if record.acked > record.next_seq {
            return bad(format!(
                "acknowledged position {} beyond the next sequence number {}",
                record.acked, record.next_seq
            ));
        }
        if record.acked.0.saturating_add(outbox.len() as u64) != record.next_seq.0 {
            return bad(format!(
                "{} stored messages do not fill {}..{}",
                outbox.len(),
                record.acked,
                record.next_seq
            ));
        }
        for (i, m) in outbox.iter().enumerate() {
            if m.seq.0 != record.acked.0 + i as u64 {
                return bad(format!(
                    "message {} stored where {} belongs",
                    m.seq,
                    record.acked.0 + i as u64
                ));
            }
        }
        let mut s = Session::blank(record.role, config);
        s.id = record.id;
        s.token = record.token;
        s.issued = record.issued;
        s.name = record.name;
        s.transforms = record.transforms;
        s.next_seq = record.next_seq;
        s.acked = record.acked;
        // Anything up to next_seq may have been transmitted before the crash.
        s.sent_high = record.next_seq;
        s.received = record.delivered;
        s.delivered = record.delivered;
        s.outbox_bytes = outbox.iter().map(|m| m.body.len() as u64).sum();
        s.outbox = outbox.into();
        Ok(s)
    }

    /// The session's id, once a server has assigned one.
    pub fn id(&self) -> Option<SessionId> {
        self.id
    }

    /// The protocol version of the last connection that carried the session (§4.6), once one
    /// was established.
    pub fn version(&self) -> Option<u16> {
        (self.version != 0).then_some(self.version)
    }

    /// Client or server end.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer name given in the HELLO.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Queues a message for sending and returns its sequence number.
    ///
    /// `timestamp_us` is the sender's wall-clock time (the core never reads a clock).
    ///
    /// # Errors
    /// [`SendError::Full`] when the outbox is at its bound (nothing is queued; retry after an
    /// acknowledgement), [`SendError::TooLarge`], [`SendError::Closed`] once a CLOSE was sent
    /// or received.
    pub fn send(&mut self, body: Bytes, timestamp_us: u64) -> Result<Seq, SendError> {
        if self.closing.is_some() {
            return Err(SendError::Closed);
        }
        let max = self
            .peer_max_message
            .map_or(self.max_message, |p| p.min(self.max_message));
        if body.len() > max as usize {
            return Err(SendError::TooLarge {
                len: body.len(),
                max,
            });
        }
        if !self.has_room_for(body.len()) {
            return Err(SendError::Full);
        }
        let seq = self.next_seq;
        self.next_seq = seq.next().ok_or(SendError::SequenceExhausted)?;
        self.outbox_bytes += body.len() as u64;
        self.outbox.push_back(Message {
            seq,
            timestamp_us,
            body,
        });
        self.stats.queued += 1;
        Ok(seq)
    }

    /// The largest message this side may send now: its own maximum, and the peer's once known.
    pub fn max_send_len(&self) -> usize {
        self.peer_max_message
            .map_or(self.max_message, |p| p.min(self.max_message)) as usize
    }

    /// The largest message this side accepts (its configured maximum).
    pub fn max_recv_len(&self) -> usize {
        self.max_message as usize
    }

    /// Whether a message of `len` bytes fits in the outbox now.
    pub fn has_room_for(&self, len: usize) -> bool {
        self.outbox.len() < self.outbox_max_messages
            && self.outbox_bytes + len as u64 <= self.outbox_max_bytes
    }

    /// Takes the next received message, which acknowledges it to the peer (§5.2) — unless
    /// manual acknowledgement is on ([`Session::acknowledge`]).
    pub fn recv(&mut self) -> Option<Message> {
        let msg = self.inbox.pop_front()?;
        let len = msg.body.len() as u64;
        self.inbox_bytes -= len;
        if self.manual_ack {
            self.taken.get_or_insert_default().push_back((msg.seq, len));
        } else {
            self.delivered = Seq(msg.seq.0 + 1);
            self.delivered_bytes += len;
            self.stats.delivered += 1;
        }
        Some(msg)
    }

    /// Takes the next received message as [`Session::recv`] does, if its sequence number is
    /// below `limit`: a runtime holds back messages whose receipt is not yet confirmed where
    /// the session is stored (a fleet's store, PROTOCOL.md §13).
    pub fn recv_below(&mut self, limit: Seq) -> Option<Message> {
        if self.inbox.front()?.seq >= limit {
            return None;
        }
        self.recv()
    }

    /// Messages received and waiting whose sequence numbers are below `limit`.
    pub fn inbox_len_below(&self, limit: Seq) -> usize {
        self.inbox.partition_point(|m| m.seq < limit)
    }

    /// Manual acknowledgement ([`Config::manual_ack`]): acknowledges the taken message `seq`
    /// and every taken message before it (the ACK goes out from the connection, coalesced).
    /// Returns how many messages this newly acknowledged: 0 if `seq` was already acknowledged
    /// or has not been taken (or manual acknowledgement is off, or a CLOSE was sent or
    /// received: the delivered position is then final, §7.2).
    pub fn acknowledge(&mut self, seq: Seq) -> usize {
        // After a CLOSE this side's delivered position is final (§7.2): messages taken and not
        // acknowledged by then go back to their sender as unacknowledged.
        let Some(taken) = self.taken.as_deref_mut() else {
            return 0;
        };
        if self.closing.is_some() || taken.back().is_none_or(|(last, _)| *last < seq) {
            return 0;
        }
        let mut n = 0;
        while let Some(&(s, len)) = taken.front() {
            if s > seq {
                break;
            }
            taken.pop_front();
            self.delivered = Seq(s.0 + 1);
            self.delivered_bytes += len;
            self.stats.delivered += 1;
            n += 1;
        }
        n
    }

    /// Manual acknowledgement: messages taken and not yet acknowledged.
    pub fn taken_unacknowledged(&self) -> usize {
        self.taken.as_ref().map_or(0, |t| t.len())
    }

    /// Frees the message queues that are empty (a session no connection carries needs
    /// none). Used by the runtime only.
    #[cfg_attr(not(feature = "runtime"), allow(dead_code))]
    pub(crate) fn release_buffers(&mut self) {
        if self.inbox.is_empty() {
            self.inbox = VecDeque::new();
        }
        if self.outbox.is_empty() {
            self.outbox = VecDeque::new();
        }
    }

    /// Messages received and waiting for the application.
    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    /// Body bytes received and waiting for the application.
    pub fn inbox_bytes(&self) -> u64 {
        self.inbox_bytes
    }

    /// Messages queued or in flight and not yet acknowledged.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Body bytes queued or in flight and not yet acknowledged.
    pub fn outbox_bytes(&self) -> u64 {
        self.outbox_bytes
    }

    /// Sequence number the next `send` will get.
    pub fn next_seq(&self) -> Seq {
        self.next_seq
    }

    /// Every message this side sent below this position has been acknowledged.
    pub fn acked(&self) -> Seq {
        self.acked
    }

    /// Every peer message below this position has been received.
    pub fn received(&self) -> Seq {
        self.received
    }

    /// Every peer message below this position has been taken by the application.
    pub fn delivered(&self) -> Seq {
        self.delivered
    }

    /// Asks for a graceful close (§7.2) of a session that no connection carries right now: a
    /// client's CLOSE goes out right after its next resume, before any data. Returns false
    /// (and changes nothing) when the session is closing already. A connection's own
    /// [`Connection::close`](super::Connection::close) does this and sends the CLOSE at once.
    pub fn close(&mut self, code: super::frame::CloseCode, reason: &str) -> bool {
        if self.closing.is_some() {
            return false;
        }
        self.closing = Some(Box::new((code, reason.to_owned())));
        // Nothing more is delivered after a CLOSE: a message held in part is of no use.
        self.held = None;
        true
    }

    /// Whether a CLOSE was sent or received: the session is ending.
    pub fn is_closing(&self) -> bool {
        self.closing.is_some()
    }

    /// Server side: whether `presented` is a token this session accepts for a resume: the one
    /// the client is proven to hold, or the one issued in the last WELCOME (§4.4 rule A).
    /// Constant-time in the token bytes.
    pub fn verify_token(&self, presented: &ResumeToken) -> bool {
        let a = self.token.as_ref().is_some_and(|t| t.ct_eq(presented));
        let b = self.issued.as_ref().is_some_and(|t| t.ct_eq(presented));
        a | b
    }

    /// Server side: whether a client stating `received` as its position is possible: at least
    /// what it acknowledged, at most what was ever sent (§4.4). Checked before a takeover.
    pub fn can_resume_from(&self, received: Seq) -> bool {
        self.can_resume_at(received, 0)
    }

    /// Server side: whether a client stating `received` and, of message `received`, `partial`
    /// bytes (version 2, §5.5) is possible: the position as for [`Session::can_resume_from`],
    /// and a partial only of a message that was sent (at least its first chunk) and shorter
    /// than it. Checked before a takeover.
    pub fn can_resume_at(&self, received: Seq, partial: u64) -> bool {
        if received < self.acked || received > self.sent_high {
            return false;
        }
        partial == 0
            || (received < self.sent_high
                && self
                    .outbox_get(received)
                    .is_some_and(|m| partial < m.body.len() as u64))
    }

    /// Ends the session's life as a sender: hands back every message not acknowledged, in
    /// order (the peer may or may not have taken them, unless a CLOSE exchange said otherwise).
    pub fn take_unacknowledged(&mut self) -> Vec<Message> {
        self.outbox_bytes = 0;
        self.outbox.drain(..).collect()
    }

    /// Applies a cumulative acknowledgement. Returns the newly acknowledged range.
    pub(crate) fn apply_ack(&mut self, delivered: Seq) -> Option<(Seq, Seq)> {
        if delivered <= self.acked {
            return None;
        }
        let first = self.acked;
        while let Some(front) = self.outbox.front() {
            if front.seq >= delivered {
                break;
            }
            self.outbox_bytes -= front.body.len() as u64;
            self.outbox.pop_front();
        }
        self.stats.acknowledged += delivered.distance_from(first);
        self.acked = delivered;
        Some((first, delivered))
    }

    /// Rotates the resume token on an accepted resume (server side, §4.4 rule A). The caller has
    /// checked `presented` with [`Session::verify_token`].
    pub(crate) fn rotate_token(&mut self, presented: &ResumeToken, fresh: ResumeToken) {
        if self.issued.as_ref().is_some_and(|t| t.ct_eq(presented)) {
            // The client holds the last issued token: it is now the proven one.
            self.token = self.issued.take();
        }
        // Otherwise the client never got the last WELCOME: the issued token is forgotten and
        // the proven one stays valid until the client proves it holds `fresh`.
        self.issued = Some(fresh);
    }

    /// The client proved it holds the issued token (its first frame after WELCOME arrived).
    pub(crate) fn token_proven(&mut self) {
        if let Some(t) = self.issued.take() {
            self.token = Some(t);
        }
    }

    /// The message with sequence number `seq` in the outbox.
    pub(crate) fn outbox_get(&self, seq: Seq) -> Option<&Message> {
        let idx = seq.0.checked_sub(self.acked.0)?;
        self.outbox.get(usize::try_from(idx).ok()?)
    }

    /// Discards messages received but not taken (on CLOSE: they are not delivered, §7.2).
    pub(crate) fn discard_inbox(&mut self) -> usize {
        self.held = None;
        let n = self.inbox.len();
        self.inbox.clear();
        self.inbox_bytes = 0;
        n
    }
}
