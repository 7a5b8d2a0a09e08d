//! Session stores: where sessions live so that they survive the death of their process
//! (PROTOCOL.md §13).
//!
//! Without a store (the default) sessions live in memory only: they survive any number of link
//! faults, not a crash. With a store, every driver turn that changed a session commits the
//! change *before* the bytes of that turn are written to the socket ("durable before
//! visible"):
//!
//! - a new message is stored before its DATA goes out, so a restarted sender never reuses a
//!   sequence number the receiver has seen;
//! - a receive position (`delivered`) is stored before the ACK that reports it, so a restarted
//!   receiver never asks for less than it acknowledged — and a message whose receipt resolved
//!   is never lost by a crash of either side;
//! - a rotated resume token is stored before the WELCOME (server) or the proof that follows it
//!   (client) goes out, so a crash at any instant leaves a token the other side accepts.
//!
//! Commits from all sessions are grouped: the durable store's writer takes every change
//! waiting and commits them in one transaction with one disk sync. While a turn's commit is in
//! flight its connection goes on reading, so the next commit covers all that arrived
//! meanwhile. An acknowledgement alone is not a reason to wait for the disk: while messages
//! are still unacknowledged, the acknowledged position is stored with the next commit that has
//! something to store (or the one that finds everything acknowledged); nothing written depends
//! on it (PROTOCOL.md §13.4).
//!
//! After a crash the receiver may see again only messages it had received but not yet
//! acknowledged (at-least-once across crashes, exactly-once across link faults); with manual
//! acknowledgement (`proto::Config::manual_ack`) "acknowledged" means "processed".
//!
//! Two implementations: [`MemoryStore`] (a map in memory: sessions survive a restart of the
//! `Server` or `Client` value inside one process, which is what tests need) and, with the
//! `durable` feature, [`DurableStore`] (an embedded redb database in a state directory).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::proto::{Message, ResumeToken, SessionRecord};

/// The key of a stored session: the session id on a server; a fixed key on a client (whose
/// session has no id before its first WELCOME).
pub type StoreKey = [u8; 16];

/// The key a client stores its one session under.
pub const CLIENT_KEY: StoreKey = [0; 16];

/// A session as a store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSession {
    /// Its key.
    pub key: StoreKey,
    /// Identity, tokens, positions.
    pub record: SessionRecord,
    /// The unacknowledged messages, `record.acked .. record.next_seq`.
    pub outbox: Vec<Message>,
    /// Wall-clock time of the last commit, milliseconds since the Unix epoch (a server's
    /// lingering sessions expire `linger` after it).
    pub last_seen_ms: u64,
    /// Client: the session ended; only its counters are kept (the next session continues its
    /// sequence numbers, so "how many messages were ever queued" survives).
    pub ended: bool,
    /// The session had lost its connection at `last_seen_ms`: its linger counts from then.
    /// Otherwise it was connected when its process stopped, and lingers in full from the
    /// restart (the crash was its disconnect).
    pub lingering: bool,
}

/// One change to a store.
#[derive(Clone, Debug)]
pub enum Change {
    /// Write a session's record, add `new_messages` to its outbox and drop the stored
    /// messages below `record.acked`.
    Put {
        /// The session.
        key: StoreKey,
        /// Its record now.
        record: SessionRecord,
        /// Outbox messages not stored yet, in order.
        new_messages: Vec<Message>,
        /// Wall-clock milliseconds now.
        last_seen_ms: u64,
        /// Client: the session ended (see [`StoredSession::ended`]).
        ended: bool,
        /// The session has no connection since `last_seen_ms` (see
        /// [`StoredSession::lingering`]).
        lingering: bool,
    },
    /// Forget a session and its outbox.
    Delete {
        /// The session.
        key: StoreKey,
    },
    /// The session is new: the `Put` that follows is its first write anywhere. A shared store
    /// creates a session's row only then, so that a server that lost the session to another
    /// never creates it again (after its new owner ended it); other stores ignore it.
    Created {
        /// The session.
        key: StoreKey,
    },
    /// A shared store: messages of the session's outbox that carry fleet mail
    /// ([`SessionStore::post`]), by mail id and the sequence number each got. Comes with the
    /// `Put` that stores those messages, and is committed with it: the mail is then queued,
    /// never again handed out. Other stores ignore it.
    MailQueued {
        /// The session.
        key: StoreKey,
        /// (mail id, sequence number), in order.
        mail: Vec<(i64, crate::proto::Seq)>,
    },
}

/// A message for a session, posted by any server of a fleet ([`SessionStore::post`]) and
/// handed to the server that owns the session ([`SessionStore::take_mail`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    /// The mail's id in the store (increasing in the order of posting).
    pub id: i64,
    /// The session it is for.
    pub key: StoreKey,
    /// The body, as the application gave it.
    pub body: bytes::Bytes,
}

/// A session of the whole fleet, as a shared store lists it ([`SessionStore::sessions`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetSession {
    /// The session's id.
    pub id: crate::proto::SessionId,
    /// The peer's name, if it gave one.
    pub name: Option<String>,
    /// The server (node) that holds it.
    pub node: String,
    /// It has no connection now (resumable until it expires).
    pub lingering: bool,
    /// Messages queued to it and not yet acknowledged.
    pub unacknowledged: u64,
}

/// The answer of [`SessionStore::post`]: once posted, a future that resolves when the
/// session's peer has acknowledged the message (`Ok(true)`), or when the session ended
/// without doing so (`Ok(false)`).
pub type PostFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<ReceiptFuture, StoreError>> + Send>>;

/// The answer of [`SessionStore::post_many`]: a receipt per message, in order.
pub type PostManyFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<ReceiptFuture>, StoreError>> + Send>,
>;

/// The answer of [`SessionStore::post_all`]: each session's key with its receipt.
pub type PostAllFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<Vec<(StoreKey, ReceiptFuture)>, StoreError>> + Send,
    >,
>;

/// Resolves when a posted message is acknowledged (`true`) or its session ended first.
pub type ReceiptFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, StoreError>> + Send>>;

/// The answer of [`SessionStore::take_mail`].
pub type MailFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<Mail>, StoreError>> + Send>>;

/// The answer of [`SessionStore::sessions`].
pub type SessionsFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<FleetSession>, StoreError>> + Send>,
>;

/// Why a store could not be opened, read or written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state directory or its file could not be used.
    #[error("state directory: {0}")]
    Io(String),
    /// The directory holds something else (another program's data, another role's state).
    #[error("not a steadfast state directory of this kind: {0}")]
    Foreign(String),
    /// The stored data is damaged.
    #[error("the state is corrupt: {0}")]
    Corrupt(String),
    /// The database failed.
    #[error("state database: {0}")]
    Database(String),
    /// The store's writer is gone (the store was dropped).
    #[error("the store is closed")]
    Closed,
    /// Another server sharing the store has taken the session over (its epoch moved on): the
    /// write was refused by the store, and this server must stop carrying the session.
    #[error("the session was taken over by another server")]
    Fenced,
    /// No such session in the store (never created, ended, or expired), or the store is not
    /// shared.
    #[error("no such session in the fleet")]
    NoSuchSession,
}

/// What [`SessionStore::claim`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Claim {
    /// This server held the session and nobody took it over since: the copy in memory is
    /// current, and the session's epoch moved on (every other holder is fenced).
    Kept,
    /// The session as the store holds it, now owned by this server. Its record carries the
    /// presented token as the proven one (the store keeps only hashes).
    Loaded(StoredSession),
    /// No such session, the wrong token, or expired.
    Unknown,
}

/// The answer of [`SessionStore::claim`].
pub type ClaimFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Claim, StoreError>> + Send>>;

/// The answer of [`SessionStore::check_owner`].
pub type OwnerFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), StoreError>> + Send>>;

/// Somewhere sessions are kept across the life of a process.
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// Every stored session.
    ///
    /// # Errors
    /// [`StoreError`] when the stored data cannot be read or is corrupt.
    fn load(&self) -> Result<Vec<StoredSession>, StoreError>;

    /// Applies `changes` atomically and durably; the answer arrives once they are (the
    /// receiver may be dropped for a change nobody waits for).
    fn submit(&self, changes: Vec<Change>) -> oneshot::Receiver<Result<(), StoreError>>;

    /// Whether several servers share this store (a fleet, PROTOCOL.md §13). A shared store
    /// loads nothing at start ([`SessionStore::load`] is not called): a resume
    /// [claims](SessionStore::claim) its session, and every write is fenced by the session's
    /// epoch ([`StoreError::Fenced`]).
    fn shared(&self) -> bool {
        false
    }

    /// A shared store: makes this server the owner of session `key` if `token` is its resume
    /// token (the last proven or the last issued one), moving its epoch on in the same step
    /// that checks the token, so that every other holder's writes are refused from then on.
    /// `local`: this server holds a copy in memory ([`Claim::Kept`] if nobody took it over
    /// since). Unshared stores answer [`Claim::Unknown`].
    fn claim(&self, key: StoreKey, token: ResumeToken, local: bool) -> ClaimFuture {
        let _ = (key, token, local);
        Box::pin(async { Ok(Claim::Unknown) })
    }

    /// A shared store: whether this server still owns session `key` as the store says now
    /// (nobody claimed it since this server's last claim or commit), answered
    /// [`StoreError::Fenced`] when it does not. For an application about to do something
    /// irrevocable with messages it took ([`Peer::confirm_owner`](crate::Peer::confirm_owner)).
    /// Unshared stores answer `Ok(())`.
    fn check_owner(&self, key: StoreKey) -> OwnerFuture {
        let _ = key;
        Box::pin(async { Ok(()) })
    }

    /// A shared store: stores `body` for session `key`, whichever server owns it, and tells
    /// that server; the answer comes once it is stored (then the receipt follows).
    /// [`StoreError::NoSuchSession`] if there is no such session. Unshared stores refuse with
    /// that error too.
    fn post(&self, key: StoreKey, body: bytes::Bytes) -> PostFuture {
        let _ = (key, body);
        Box::pin(async { Err(StoreError::NoSuchSession) })
    }

    /// A shared store: several messages for session `key`, stored in one step and in this
    /// order (the owner queues them in it), each with its receipt. As [`SessionStore::post`].
    fn post_many(&self, key: StoreKey, bodies: Vec<bytes::Bytes>) -> PostManyFuture {
        let _ = (key, bodies);
        Box::pin(async { Err(StoreError::NoSuchSession) })
    }

    /// A shared store: the same for every session of the fleet, each with its own receipt.
    fn post_all(&self, body: bytes::Bytes) -> PostAllFuture {
        let _ = body;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// A shared store: waits for mail posted to sessions this server owns, and hands out each
    /// at most once until it is [returned](SessionStore::return_mail) or its
    /// [`Change::MailQueued`] fails. Unshared stores never answer.
    fn take_mail(&self) -> MailFuture {
        Box::pin(std::future::pending())
    }

    /// A shared store: mail taken but not queued. `back`: its session is not here or its
    /// outbox is full: it is handed out again later, in order. `refused`: it can never be
    /// queued (too large for the session): its sender's receipt reports it undelivered.
    fn return_mail(&self, back: Vec<i64>, refused: Vec<i64>) {
        let _ = (back, refused);
    }

    /// A shared store: every session of the fleet. Unshared stores answer none.
    fn sessions(&self) -> SessionsFuture {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// Sessions kept in memory: they survive dropping and re-creating a `Server` or `Client` with
/// the same store inside one process, not the death of the process. For tests and for
/// restarts within a program.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    sessions: Arc<Mutex<HashMap<StoreKey, StoredSession>>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore::default()
    }
}

/// Applies one change to a map of sessions.
fn apply(map: &mut HashMap<StoreKey, StoredSession>, change: Change) {
    match change {
        Change::Put {
            key,
            record,
            new_messages,
            last_seen_ms,
            ended,
            lingering,
        } => {
            let entry = map.entry(key).or_insert_with(|| StoredSession {
                key,
                record: record.clone(),
                outbox: Vec::new(),
                last_seen_ms,
                ended,
                lingering,
            });
            entry.outbox.retain(|m| m.seq >= record.acked);
            entry.outbox.extend(new_messages);
            // A group stored again after a failed commit overlaps what is there.
            entry.outbox.sort_by_key(|m| m.seq);
            entry.outbox.dedup_by_key(|m| m.seq);
            entry.outbox.retain(|m| m.seq < record.next_seq);
            entry.record = record;
            entry.last_seen_ms = last_seen_ms;
            entry.ended = ended;
            entry.lingering = lingering;
        }
        Change::Delete { key } => {
            map.remove(&key);
        }
        Change::Created { .. } => {}
        Change::MailQueued { .. } => {}
    }
}

impl SessionStore for MemoryStore {
    fn load(&self) -> Result<Vec<StoredSession>, StoreError> {
        let map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        Ok(map.values().cloned().collect())
    }

    fn submit(&self, changes: Vec<Change>) -> oneshot::Receiver<Result<(), StoreError>> {
        let mut map = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for c in changes {
            apply(&mut map, c);
        }
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        rx
    }
}

// ------------------------------------------------------------------------ encoding

/// The on-disk layout of records and messages (used by the durable store; the fleet's store
/// keeps outbox segments in it).
#[cfg(any(feature = "durable", feature = "postgres"))]
#[cfg_attr(not(feature = "durable"), allow(dead_code))]
mod encoding {
    use std::collections::BTreeMap;

    use bytes::{Buf, BufMut, Bytes};

    use super::{Message, SessionRecord, StoreError, StoreKey, StoredSession};
    use crate::proto::{ResumeToken, Role, Seq, SessionId};

    /// Version byte of the record encoding.
    const RECORD_V1: u8 = 1;

    /// Encodes a record with its bookkeeping (a versioned, length-checked layout).
    pub(crate) fn encode_record(
        record: &SessionRecord,
        last_seen_ms: u64,
        ended: bool,
        lingering: bool,
    ) -> Vec<u8> {
        let mut b = Vec::with_capacity(128);
        b.put_u8(RECORD_V1);
        b.put_u8(match record.role {
            Role::Client => 0,
            Role::Server => 1,
        });
        let flags = u8::from(record.id.is_some())
            | u8::from(record.token.is_some()) << 1
            | u8::from(record.issued.is_some()) << 2
            | u8::from(ended) << 3
            | u8::from(lingering) << 4;
        b.put_u8(flags);
        if let Some(id) = record.id {
            b.put_slice(&id.0);
        }
        if let Some(t) = &record.token {
            b.put_slice(&t.0);
        }
        if let Some(t) = &record.issued {
            b.put_slice(&t.0);
        }
        b.put_u64(record.next_seq.0);
        b.put_u64(record.acked.0);
        b.put_u64(record.delivered.0);
        b.put_u64(last_seen_ms);
        let name = record.name.as_deref().unwrap_or("").as_bytes();
        b.put_u8(name.len().min(255) as u8);
        b.put_slice(&name[..name.len().min(255)]);
        b.put_u8(record.transforms.len().min(255) as u8);
        for t in record.transforms.iter().take(255) {
            b.put_u8(t.len().min(255) as u8);
            b.put_slice(&t.as_bytes()[..t.len().min(255)]);
        }
        b
    }

    /// Decodes what [`encode_record`] wrote.
    pub(crate) fn decode_record(
        mut b: &[u8],
    ) -> Result<(SessionRecord, u64, bool, bool), StoreError> {
        fn need(b: &[u8], n: usize) -> Result<(), StoreError> {
            if b.len() < n {
                Err(StoreError::Corrupt("truncated session record".into()))
            } else {
                Ok(())
            }
        }
        fn take16(b: &mut &[u8]) -> Result<[u8; 16], StoreError> {
            need(b, 16)?;
            let mut a = [0u8; 16];
            b.copy_to_slice(&mut a);
            Ok(a)
        }
        fn text(b: &mut &[u8]) -> Result<String, StoreError> {
            need(b, 1)?;
            let n = b.get_u8() as usize;
            need(b, n)?;
            let s = std::str::from_utf8(&b[..n])
                .map_err(|_| StoreError::Corrupt("a stored name is not UTF-8".into()))?
                .to_owned();
            b.advance(n);
            Ok(s)
        }
        need(b, 3)?;
        if b.get_u8() != RECORD_V1 {
            return Err(StoreError::Corrupt("unknown session record version".into()));
        }
        let role = match b.get_u8() {
            0 => Role::Client,
            1 => Role::Server,
            _ => {
                return Err(StoreError::Corrupt(
                    "unknown role in a session record".into(),
                ));
            }
        };
        let flags = b.get_u8();
        if flags & !0x1f != 0 {
            return Err(StoreError::Corrupt(
                "unknown flags in a session record".into(),
            ));
        }
        let id = if flags & 1 != 0 {
            Some(SessionId(take16(&mut b)?))
        } else {
            None
        };
        let token = if flags & 2 != 0 {
            Some(ResumeToken(take16(&mut b)?))
        } else {
            None
        };
        let issued = if flags & 4 != 0 {
            Some(ResumeToken(take16(&mut b)?))
        } else {
            None
        };
        need(b, 32)?;
        let next_seq = Seq(b.get_u64());
        let acked = Seq(b.get_u64());
        let delivered = Seq(b.get_u64());
        let last_seen_ms = b.get_u64();
        let name = text(&mut b)?;
        need(b, 1)?;
        let count = b.get_u8();
        let mut transforms = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            transforms.push(text(&mut b)?);
        }
        if !b.is_empty() {
            return Err(StoreError::Corrupt(
                "trailing bytes in a session record".into(),
            ));
        }
        let record = SessionRecord {
            role,
            id,
            token,
            issued,
            name: (!name.is_empty()).then_some(name),
            transforms,
            next_seq,
            acked,
            delivered,
        };
        Ok((record, last_seen_ms, flags & 8 != 0, flags & 16 != 0))
    }

    /// The key of an outbox segment: the session's key, then the sequence number of its first
    /// message (big-endian, so the database's order is the outbox's order).
    pub(crate) fn segment_key(key: &StoreKey, first: Seq) -> [u8; 24] {
        let mut k = [0u8; 24];
        k[..16].copy_from_slice(key);
        k[16..].copy_from_slice(&first.0.to_be_bytes());
        k
    }

    /// A segment: the consecutive messages one commit added (one database entry for all of
    /// them: the store's cost is per commit, not per message). Layout: count (u32), then per
    /// message its timestamp (u64), body length (u32) and body.
    pub(crate) fn encode_segment(messages: &[Message]) -> Vec<u8> {
        let bytes: usize = messages.iter().map(|m| 12 + m.body.len()).sum();
        let mut v = Vec::with_capacity(4 + bytes);
        v.put_u32(u32::try_from(messages.len()).unwrap_or(u32::MAX));
        for m in messages {
            v.put_u64(m.timestamp_us);
            v.put_u32(u32::try_from(m.body.len()).unwrap_or(u32::MAX));
            v.put_slice(&m.body);
        }
        v
    }

    /// The sequence number one past a segment's last message.
    pub(crate) fn segment_end(key: &[u8], value: &[u8]) -> Option<u64> {
        let first = u64::from_be_bytes(key.get(16..24)?.try_into().ok()?);
        let count = u32::from_be_bytes(value.get(..4)?.try_into().ok()?);
        first.checked_add(u64::from(count))
    }

    pub(crate) fn decode_segment(key: &[u8], value: &[u8]) -> Result<Vec<Message>, StoreError> {
        let bad = || StoreError::Corrupt("malformed stored message segment".into());
        if key.len() != 24 || value.len() < 4 {
            return Err(bad());
        }
        let mut first = [0u8; 8];
        first.copy_from_slice(&key[16..]);
        let first = u64::from_be_bytes(first);
        let mut v = value;
        let count = v.get_u32();
        // Each message takes at least 12 bytes: the count cannot promise more than is there.
        if u64::from(count) * 12 > v.len() as u64 {
            return Err(bad());
        }
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..u64::from(count) {
            if v.len() < 12 {
                return Err(bad());
            }
            let timestamp_us = v.get_u64();
            let len = v.get_u32() as usize;
            if v.len() < len {
                return Err(bad());
            }
            out.push(Message {
                seq: Seq(first.checked_add(i).ok_or_else(bad)?),
                timestamp_us,
                body: Bytes::copy_from_slice(&v[..len]),
            });
            v.advance(len);
        }
        if !v.is_empty() {
            return Err(bad());
        }
        Ok(out)
    }

    /// Groups stored messages by session key, checking each is complete.
    pub(crate) fn assemble(
        records: Vec<(StoreKey, SessionRecord, u64, bool, bool)>,
        mut messages: BTreeMap<StoreKey, Vec<Message>>,
    ) -> Result<Vec<StoredSession>, StoreError> {
        let mut out = Vec::with_capacity(records.len());
        for (key, record, last_seen_ms, ended, lingering) in records {
            // Segments may overlap (a group re-stored after a failed commit) and reach below
            // the acknowledged position (partly acknowledged): keep each needed message once.
            let mut outbox = messages.remove(&key).unwrap_or_default();
            outbox.sort_by_key(|m| m.seq);
            outbox.dedup_by_key(|m| m.seq);
            outbox.retain(|m| m.seq >= record.acked && m.seq < record.next_seq);
            let expected = record.next_seq.0.saturating_sub(record.acked.0);
            if outbox.len() as u64 != expected
                || outbox
                    .iter()
                    .enumerate()
                    .any(|(i, m)| m.seq.0 != record.acked.0 + i as u64)
            {
                return Err(StoreError::Corrupt(format!(
                    "a session's stored outbox does not hold its {expected} unacknowledged messages"
                )));
            }
            out.push(StoredSession {
                key,
                record,
                outbox,
                last_seen_ms,
                ended,
                lingering,
            });
        }
        if !messages.is_empty() {
            return Err(StoreError::Corrupt(
                "stored messages of an unknown session".into(),
            ));
        }
        Ok(out)
    }
}

#[cfg(feature = "durable")]
use encoding::{assemble, decode_segment, encode_segment, segment_end, segment_key};
#[cfg(feature = "durable")]
pub(crate) use encoding::{decode_record, encode_record};

// ------------------------------------------------------------------------ a fleet's store

#[cfg(feature = "postgres")]
#[path = "pgstore.rs"]
mod pg;
#[cfg(feature = "postgres")]
pub use pg::{PgOptions, PgStore};

// ------------------------------------------------------------------------ durable store

#[cfg(feature = "durable")]
pub use durable::{CommitLatency, DurableStore};

#[cfg(feature = "durable")]
mod durable {
    use std::path::{Path, PathBuf};
    use std::sync::mpsc;
    use std::time::Duration;

    use std::collections::BTreeMap;

    use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

    use super::*;
    use crate::proto::Seq;

    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
    const SESSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sessions");
    const OUTBOX: TableDefinition<&[u8], &[u8]> = TableDefinition::new("outbox");
    /// What the `format` entry of the meta table must say.
    const FORMAT: &[u8] = b"steadfast-state/1";
    /// The database file inside the state directory.
    const FILE: &str = "steadfast.redb";
    /// Most jobs folded into one transaction.
    const GROUP: usize = 4_096;

    type Job = (Vec<Change>, oneshot::Sender<Result<(), StoreError>>);

    fn db_err(e: impl fmt::Display) -> StoreError {
        StoreError::Database(e.to_string())
    }

    /// Sessions in an embedded database ([redb](https://docs.rs/redb)) in a state directory
    /// (feature `durable`).
    ///
    /// - **Durability**: every commit is synced to disk before it is reported (redb's
    ///   `Durability::Immediate`, a copy-on-write B-tree with checksums: a crash leaves the
    ///   last committed state). Commits are grouped: one transaction and one sync carry every
    ///   change waiting, from every session.
    /// - **Safety**: the directory is marked with the format and the role (server or client)
    ///   on first use; another program's file, the other role's state or damaged data is a
    ///   clear [`StoreError`] and is never overwritten. Only one process may open a directory
    ///   at a time (the database file is locked).
    /// - **Disk use**: acknowledged messages and ended sessions are deleted as they go; the
    ///   file is compacted when opened.
    /// - **Secrets at rest**: the file holds resume tokens and message bodies; on Unix the
    ///   directory is created with mode 0700 and the file set to 0600.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use steadfast::store::{DurableStore, StoreRole};
    ///
    /// let store = Arc::new(DurableStore::open("state/server", StoreRole::Server)?);
    /// let config = steadfast::ServerConfig::default().store(store);
    /// let server = steadfast::Server::bind(["127.0.0.1:7000"], config).await?;
    /// # Ok(()) }
    /// ```
    pub struct DurableStore {
        db: Arc<Database>,
        path: PathBuf,
        jobs: Mutex<Option<mpsc::Sender<Job>>>,
        writer: Mutex<Option<std::thread::JoinHandle<()>>>,
        timings: Arc<Mutex<Timings>>,
    }

    /// How long the store's commits took (each a transaction and its sync to disk), over the
    /// most recent ones.
    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    #[non_exhaustive]
    pub struct CommitLatency {
        /// Commits since the store was opened.
        pub commits: u64,
        /// Median of the most recent commits (up to 4,096).
        pub p50: Duration,
        /// 99th percentile of the most recent commits (up to 4,096).
        pub p99: Duration,
    }

    /// Commits made and the durations of the most recent ones, in microseconds (a ring).
    #[derive(Default)]
    struct Timings {
        commits: u64,
        recent: Vec<u32>,
    }

    /// Commit durations kept for the percentiles.
    const TIMINGS_KEPT: usize = 4_096;

    impl Timings {
        fn record(&mut self, d: Duration) {
            let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
            let at = (self.commits % TIMINGS_KEPT as u64) as usize;
            if at < self.recent.len() {
                self.recent[at] = us;
            } else {
                self.recent.push(us);
            }
            self.commits += 1;
        }
    }

    impl fmt::Debug for DurableStore {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("DurableStore")
                .field("path", &self.path)
                .finish()
        }
    }

    /// Which side's sessions a state directory holds.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum StoreRole {
        /// A server's sessions.
        Server,
        /// A client's session.
        Client,
    }

    impl StoreRole {
        fn tag(self) -> &'static [u8] {
            match self {
                StoreRole::Server => b"server",
                StoreRole::Client => b"client",
            }
        }
    }

    impl DurableStore {
        /// Opens (or creates) the state directory `dir` for `role`.
        ///
        /// # Errors
        /// [`StoreError::Io`] if the directory cannot be created or the file is locked by
        /// another process, [`StoreError::Foreign`] if it holds something else,
        /// [`StoreError::Corrupt`] or [`StoreError::Database`] if the data is damaged.
        pub fn open(dir: impl AsRef<Path>, role: StoreRole) -> Result<Self, StoreError> {
            let dir = dir.as_ref();
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            // Resume tokens are secrets: the directory and the file are the owner's only.
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
            let path = dir.join(FILE);
            let existed = path.exists();
            // A damaged file can trip an assertion inside the database: that is a corrupt
            // state, reported, not a crash of the program.
            let created = std::panic::catch_unwind(|| Database::create(&path)).map_err(|_| {
                StoreError::Corrupt(format!(
                    "{} is damaged (truncated or overwritten)",
                    path.display()
                ))
            })?;
            let mut db = created.map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::Io(format!("{} is in use by another process", path.display()))
                }
                // An existing file the database cannot make sense of: not (intact) state.
                redb::DatabaseError::Storage(redb::StorageError::Io(io))
                    if existed && io.kind() == std::io::ErrorKind::InvalidData =>
                {
                    StoreError::Foreign(format!(
                        "{} is not a steadfast state file ({io})",
                        path.display()
                    ))
                }
                redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
                    StoreError::Io(format!("{}: {io}", path.display()))
                }
                other if existed => StoreError::Foreign(format!("{}: {other}", path.display())),
                other => db_err(other),
            })?;
            Self::check_or_mark(&db, role, existed, &path)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
            }
            // Reclaim the space of deleted messages and sessions.
            db.compact().map_err(db_err)?;
            let db = Arc::new(db);
            let (tx, rx) = mpsc::channel::<Job>();
            let writer_db = db.clone();
            let timings = Arc::new(Mutex::new(Timings::default()));
            let writer_timings = timings.clone();
            let handle = std::thread::Builder::new()
                .name("steadfast-store".into())
                .spawn(move || writer(&writer_db, &rx, &writer_timings))
                .map_err(|e| StoreError::Io(e.to_string()))?;
            Ok(DurableStore {
                db,
                path,
                jobs: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                timings,
            })
        }

        fn check_or_mark(
            db: &Database,
            role: StoreRole,
            existed: bool,
            path: &Path,
        ) -> Result<(), StoreError> {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut meta = txn.open_table(META).map_err(db_err)?;
                let format = meta
                    .get("format")
                    .map_err(db_err)?
                    .map(|v| v.value().to_vec());
                let stored_role = meta
                    .get("role")
                    .map_err(db_err)?
                    .map(|v| v.value().to_vec());
                match (format, stored_role) {
                    (None, None) if !existed || Self::is_empty(&txn)? => {
                        meta.insert("format", FORMAT).map_err(db_err)?;
                        meta.insert("role", role.tag()).map_err(db_err)?;
                    }
                    (Some(f), Some(r)) if f == FORMAT && r == role.tag() => {}
                    (Some(f), Some(r)) if f == FORMAT => {
                        return Err(StoreError::Foreign(format!(
                            "{} holds {} state, not {} state",
                            path.display(),
                            String::from_utf8_lossy(&r),
                            String::from_utf8_lossy(role.tag())
                        )));
                    }
                    _ => {
                        return Err(StoreError::Foreign(format!(
                            "{} is not steadfast state (format {:?})",
                            path.display(),
                            FORMAT
                        )));
                    }
                }
            }
            // Both tables exist from the first use on.
            txn.open_table(SESSIONS).map_err(db_err)?;
            txn.open_table(OUTBOX).map_err(db_err)?;
            txn.commit().map_err(db_err)
        }

        fn is_empty(txn: &redb::WriteTransaction) -> Result<bool, StoreError> {
            let sessions = txn.open_table(SESSIONS).map_err(db_err)?;
            sessions.is_empty().map_err(db_err)
        }

        /// The database file.
        pub fn path(&self) -> &Path {
            &self.path
        }

        /// How long commits take: every message is in one before its DATA (or its ACK) goes
        /// out, so this is what durability adds to a driver turn.
        pub fn commit_latency(&self) -> CommitLatency {
            let t = self.timings.lock().unwrap_or_else(|e| e.into_inner());
            let mut v = t.recent.clone();
            v.sort_unstable();
            let at = |q: f64| {
                let i = ((v.len() as f64 - 1.0) * q).round() as usize;
                Duration::from_micros(v.get(i).copied().map_or(0, u64::from))
            };
            CommitLatency {
                commits: t.commits,
                p50: at(0.5),
                p99: at(0.99),
            }
        }
    }

    impl Drop for DurableStore {
        fn drop(&mut self) {
            // The writer finishes what is queued and stops; then the file is closed, so the
            // directory can be opened again as soon as this returns.
            self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = h.join();
            }
        }
    }

    /// The writer thread: folds every waiting job into one transaction and one sync.
    fn writer(db: &Database, rx: &mpsc::Receiver<Job>, timings: &Mutex<Timings>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < GROUP {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let started = std::time::Instant::now();
            let result = commit(db, batch.iter().flat_map(|(c, _)| c.iter()));
            timings
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(started.elapsed());
            for (_, reply) in batch {
                let _ = reply.send(result.clone());
            }
        }
    }

    fn commit<'a>(
        db: &Database,
        changes: impl Iterator<Item = &'a Change>,
    ) -> Result<(), StoreError> {
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut sessions = txn.open_table(SESSIONS).map_err(db_err)?;
            let mut outbox = txn.open_table(OUTBOX).map_err(db_err)?;
            for change in changes {
                match change {
                    Change::Put {
                        key,
                        record,
                        new_messages,
                        last_seen_ms,
                        ended,
                        lingering,
                    } => {
                        // Segments wholly acknowledged go; a partly acknowledged one stays
                        // until its last message is.
                        let from = segment_key(key, Seq(0));
                        let below = segment_key(key, record.acked);
                        let acked = record.acked.0;
                        outbox
                            .retain_in(&from[..]..&below[..], |k, v| {
                                segment_end(k, v).is_none_or(|end| end > acked)
                            })
                            .map_err(db_err)?;
                        // Nothing is stored from `next_seq` on: after a session ended with
                        // unacknowledged messages its record moves `next_seq` back to the
                        // first of them (the next session reuses those numbers).
                        let next = segment_key(key, record.next_seq);
                        let top = segment_key(key, Seq(u64::MAX));
                        outbox
                            .retain_in(&next[..]..=&top[..], |_, _| false)
                            .map_err(db_err)?;
                        if *ended {
                            outbox
                                .retain_in(&from[..]..=&top[..], |_, _| false)
                                .map_err(db_err)?;
                        }
                        if let Some(first) = new_messages.first() {
                            let k = segment_key(key, first.seq);
                            outbox
                                .insert(&k[..], &encode_segment(new_messages)[..])
                                .map_err(db_err)?;
                        }
                        let value = encode_record(record, *last_seen_ms, *ended, *lingering);
                        sessions.insert(&key[..], &value[..]).map_err(db_err)?;
                    }
                    Change::Delete { key } => {
                        let from = segment_key(key, Seq(0));
                        let to = segment_key(key, Seq(u64::MAX));
                        outbox
                            .retain_in(&from[..]..=&to[..], |_, _| false)
                            .map_err(db_err)?;
                        sessions.remove(&key[..]).map_err(db_err)?;
                    }
                    Change::Created { .. } => {}
                    Change::MailQueued { .. } => {}
                }
            }
        }
        txn.commit().map_err(db_err)
    }

    impl SessionStore for DurableStore {
        fn load(&self) -> Result<Vec<StoredSession>, StoreError> {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.load_checked()))
                .unwrap_or_else(|_| {
                    Err(StoreError::Corrupt(
                        "damaged pages in the state file".into(),
                    ))
                })
        }

        fn submit(&self, changes: Vec<Change>) -> oneshot::Receiver<Result<(), StoreError>> {
            let (tx, rx) = oneshot::channel();
            let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            match jobs.as_ref() {
                Some(j) => {
                    if let Err(mpsc::SendError((_, reply))) = j.send((changes, tx)) {
                        let _ = reply.send(Err(StoreError::Closed));
                    }
                }
                None => {
                    let _ = tx.send(Err(StoreError::Closed));
                }
            }
            rx
        }
    }

    impl DurableStore {
        fn load_checked(&self) -> Result<Vec<StoredSession>, StoreError> {
            let txn = self.db.begin_read().map_err(db_err)?;
            let sessions = txn.open_table(SESSIONS).map_err(db_err)?;
            let outbox = txn.open_table(OUTBOX).map_err(db_err)?;
            let mut records = Vec::new();
            for entry in sessions.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                let key: StoreKey = k
                    .value()
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("malformed session key".into()))?;
                let (record, last_seen, ended, lingering) = decode_record(v.value())?;
                records.push((key, record, last_seen, ended, lingering));
            }
            let mut messages: BTreeMap<StoreKey, Vec<Message>> = BTreeMap::new();
            for entry in outbox.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                let segment = decode_segment(k.value(), v.value())?;
                let mut key = [0u8; 16];
                key.copy_from_slice(&k.value()[..16]);
                messages.entry(key).or_default().extend(segment);
            }
            assemble(records, messages)
        }
    }
}

#[cfg(feature = "durable")]
pub use durable::StoreRole;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::proto::{ResumeToken, Role, Seq, SessionId};

    fn record() -> SessionRecord {
        SessionRecord {
            role: Role::Server,
            id: Some(SessionId([3; 16])),
            token: Some(ResumeToken([4; 16])),
            issued: None,
            name: Some("zoë".into()),
            transforms: vec!["lz4".into(), "sign".into()],
            next_seq: Seq(10),
            acked: Seq(7),
            delivered: Seq(5),
        }
    }

    #[cfg(feature = "durable")]
    #[test]
    fn records_round_trip_and_damage_is_detected() {
        let r = record();
        let bytes = encode_record(&r, 1_234, false, true);
        assert_eq!(decode_record(&bytes).unwrap(), (r, 1_234, false, true));
        for cut in 0..bytes.len() {
            assert!(decode_record(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_record(&longer).is_err());
        let mut other_version = bytes;
        other_version[0] = 9;
        assert!(decode_record(&other_version).is_err());
    }

    #[cfg(feature = "durable")]
    #[test]
    fn segments_round_trip_and_damage_is_detected() {
        let msgs: Vec<Message> = (5..9u64)
            .map(|s| Message {
                seq: Seq(s),
                timestamp_us: s * 10,
                body: Bytes::from(vec![s as u8; s as usize]),
            })
            .collect();
        let key = encoding::segment_key(&[7; 16], Seq(5));
        let value = encode_segment(&msgs);
        assert_eq!(decode_segment(&key, &value).unwrap(), msgs);
        assert_eq!(segment_end(&key, &value), Some(9));
        for cut in 0..value.len() {
            assert!(decode_segment(&key, &value[..cut]).is_err(), "cut at {cut}");
        }
        let mut huge = value.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_segment(&key, &huge).is_err());
    }

    #[test]
    fn memory_store_keeps_exactly_the_unacknowledged_run() {
        let store = MemoryStore::new();
        let msg = |s: u64| Message {
            seq: Seq(s),
            timestamp_us: s,
            body: Bytes::from(vec![s as u8]),
        };
        let mut r = record();
        r.acked = Seq(7);
        r.next_seq = Seq(9);
        drop(store.submit(vec![Change::Put {
            key: [1; 16],
            record: r.clone(),
            new_messages: vec![msg(7), msg(8)],
            last_seen_ms: 1,
            ended: false,
            lingering: false,
        }]));
        r.acked = Seq(8);
        r.next_seq = Seq(10);
        drop(store.submit(vec![Change::Put {
            key: [1; 16],
            record: r.clone(),
            new_messages: vec![msg(9)],
            last_seen_ms: 2,
            ended: false,
            lingering: false,
        }]));
        let loaded = store.load().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(
            loaded[0].outbox.iter().map(|m| m.seq.0).collect::<Vec<_>>(),
            [8, 9]
        );
        assert_eq!(loaded[0].last_seen_ms, 2);
        drop(store.submit(vec![Change::Delete { key: [1; 16] }]));
        assert!(store.load().unwrap().is_empty());
    }
}
