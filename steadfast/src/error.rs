//! Errors of the runtime, one per operation.

use std::io;
use std::time::Duration;

use crate::proto::{ConfigError, RejectCode, SessionEnd};

pub use crate::proto::SendError;

/// How a session ended, as the runtime reports it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndReason {
    /// The protocol ended it (CLOSE, a final REJECT, a protocol violation).
    #[error(transparent)]
    Protocol(#[from] SessionEnd),
    /// The server kept the disconnected session for its linger time; nobody resumed it.
    #[error("session expired after lingering {0:?} without a connection")]
    Expired(Duration),
    /// The client gave up reconnecting (attempt limit reached).
    #[error("gave up reconnecting after {0} attempts")]
    GaveUp(u32),
    /// The server shut down (or was dropped).
    #[error("server shut down")]
    Shutdown,
    /// The client was dropped; nothing carries the session any more.
    #[error("client dropped")]
    ClientDropped,
    /// Another server sharing the [store](crate::store::SessionStore) resumed the session (a
    /// fleet, PROTOCOL.md §13): this one stopped carrying it at once. Its unacknowledged
    /// messages stay in the store, and the new owner delivers them; none are handed back here.
    #[error("session moved to another server")]
    Moved,
}

/// Why a receipt will never resolve successfully.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The session ended before the peer acknowledged the message. The message is among the
    /// session's unacknowledged ones ([`Peer::take_unacknowledged`](crate::Peer::take_unacknowledged)).
    #[error("session lost before the message was acknowledged: {0}")]
    SessionLost(EndReason),
    /// The deadline passed first ([`Peer::flush_within`](crate::Peer::flush_within)); the
    /// messages stay queued and may still be acknowledged later.
    #[error("not acknowledged within the deadline")]
    TimedOut,
    /// A message sent through the fleet ([`Server::send_to`](crate::Server::send_to)): its
    /// session ended (on whichever server held it) before the peer acknowledged it, or the
    /// server holding it could never queue it.
    #[error("the session ended before the message was acknowledged")]
    Undelivered,
    /// A message sent through the fleet: the shared store failed, so its fate is unknown.
    #[error("the session store failed: {0}")]
    Store(String),
}

/// Why `recv` returned no message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The session is over and nothing is left to read.
    #[error("session ended")]
    Ended,
    /// The message `seq` did not decode through the session's
    /// [transforms](crate::transform). It was taken (and acknowledged to its sender); the
    /// session goes on and the next read returns the message after it.
    #[error("message {seq} could not be decoded: {error}")]
    Transform {
        /// The message's sequence number.
        seq: crate::proto::Seq,
        /// What the transform said.
        error: crate::transform::TransformError,
    },
}

/// Why a client could not establish its session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The address could not be resolved or reached.
    #[error("could not connect: {0}")]
    Io(#[from] io::Error),
    /// The session store could not be read, or holds something else.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A session restored from the store was refused or ended on its first connection (the
    /// server no longer knows it, for example): like [`ClientEvent::SessionLost`], it hands
    /// back every message it had not delivered; the store records the end.
    ///
    /// [`ClientEvent::SessionLost`]: crate::ClientEvent::SessionLost
    #[error("the stored session is lost: {reason}")]
    SessionLost {
        /// Why.
        reason: EndReason,
        /// The messages sent in this or earlier runs and never acknowledged, in order.
        unacknowledged: Vec<crate::proto::Message>,
    },
    /// The server refused the session.
    #[error("server refused the session ({code:?}): {reason}")]
    Rejected {
        /// The REJECT code.
        code: RejectCode,
        /// The server's words.
        reason: String,
    },
    /// The connection ended before the handshake finished.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// No address given, or none worked within the attempts allowed.
    #[error("no address could be reached")]
    Unreachable,
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An address could not be bound.
    #[error("could not listen on {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// No listen address given.
    #[error("no listen address given")]
    NoAddress,
    /// The session store could not be read, or holds something else.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}
