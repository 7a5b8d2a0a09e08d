//! Decoding received bodies through a session's transforms, within bounds: what sessions of
//! one side share for it (decode slots, the batch bound) and the per-session codec.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::RecvError;
use crate::proto::{self, Message};
use crate::transform::Chain;

/// Decoded bodies up to this size are decoded on the caller's task; a larger one goes to the
/// blocking pool (its decoding starts over there, so at most this much work is repeated).
pub(crate) const INLINE_DECODE: usize = 64 << 10;

/// What sessions of one server (or one client) share for receiving: the decode slots and the
/// bound on one batch.
#[derive(Clone, Debug)]
pub(crate) struct Receiving {
    /// Large decodes in progress at once (each up to `max_message` of output).
    pub(crate) slots: Arc<Semaphore>,
    /// Decoded bytes one `recv_many` / `recv_up_to` call returns at most (beyond one
    /// message): the receive window's bytes.
    pub(crate) batch_bytes: usize,
    /// How long `close` waits for the peer's CLOSE before ending the session here.
    pub(crate) close_timeout: Duration,
    /// How long a `recv` that finds nothing polls before it waits.
    pub(crate) recv_spin: Duration,
}

impl Receiving {
    /// The receiving limits of a side with protocol settings `proto`, sharing `slots`; its
    /// `recv` polls for `recv_spin` before it waits.
    pub(crate) fn new(proto: &proto::Config, slots: usize, recv_spin: Duration) -> Self {
        Receiving {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            batch_bytes: proto.window.bytes as usize,
            close_timeout: proto.idle_timeout,
            recv_spin,
        }
    }
}

/// A session's message transform chain and the receiver's bound on decoded bodies.
#[derive(Clone, Debug)]
pub(crate) struct Codec {
    pub(crate) chain: Chain,
    pub(crate) max_recv: usize,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) batch_bytes: usize,
}

impl Codec {
    /// The codec of a session with `chain`, `None` when there is nothing to apply.
    pub(crate) fn new(chain: Chain, max_recv: usize, receiving: &Receiving) -> Option<Codec> {
        (!chain.is_empty()).then(|| Codec {
            chain,
            max_recv,
            slots: receiving.slots.clone(),
            batch_bytes: receiving.batch_bytes,
        })
    }

    pub(crate) fn decode(&self, mut m: Message) -> Result<Message, RecvError> {
        match self.chain.decode(m.body, self.max_recv) {
            Ok(body) => {
                m.body = body;
                Ok(m)
            }
            Err(error) => Err(RecvError::Transform { seq: m.seq, error }),
        }
    }
}
