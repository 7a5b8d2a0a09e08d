//! A fleet that messages as one (PROTOCOL.md §13, rules 14–18): any server sends to any
//! session of the fleet, and broadcasts to all of them, through the shared store.
//!
//! [`Server::send_to`] posts the message in the store for its session, whichever server owns
//! it, and tells that server (a notification, with the heartbeat's sweep behind it). The owner
//! takes the mail ([`SessionStore::take_mail`]), queues it in the session's outbox like any
//! message of its own — one sequence per session, whoever appends — and its next commit stores
//! the message and marks the mail queued in the same statement: exactly once, even across a
//! crash or a move. When the client acknowledges it, the commit that records the acknowledgement
//! marks the mail delivered and tells the sender, whose [`FleetReceipt`] resolves.

use std::collections::HashSet;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, warn};

use crate::error::{ReceiptError, SendError};
use crate::peer::{Peer, Receipt};
use crate::proto::SessionId;
use crate::server::{Inner, Server};
use crate::session::Link;
use crate::store::{FleetSession, ReceiptFuture, SessionStore, StoreError};

/// Why [`Server::send_to`] or [`Server::broadcast_fleet`] queued nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendToError {
    /// No such session in the fleet (never created, ended or expired) — or, without a shared
    /// store, on this server.
    #[error("no such session")]
    NoSuchSession,
    /// The message could not be queued (too large, the session closing, …).
    #[error(transparent)]
    Send(#[from] SendError),
    /// The shared store failed.
    #[error(transparent)]
    Store(StoreError),
    /// A typed value ([`Server::send_value_to`]) could not be encoded.
    #[error("cannot encode the value: {0}")]
    Encode(String),
}

impl From<StoreError> for SendToError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchSession => SendToError::NoSuchSession,
            e => SendToError::Store(e),
        }
    }
}

/// Resolves when the session's peer has acknowledged a message sent with
/// [`Server::send_to`], whichever server of the fleet delivered it. Await it (or call
/// [`FleetReceipt::delivered`]); dropping it loses nothing.
pub struct FleetReceipt(Kind);

enum Kind {
    Local(Receipt),
    Posted(ReceiptFuture),
}

impl std::fmt::Debug for FleetReceipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Kind::Local(r) => f.debug_tuple("FleetReceipt").field(r).finish(),
            Kind::Posted(_) => f.write_str("FleetReceipt(posted)"),
        }
    }
}

impl FleetReceipt {
    /// Waits until the peer acknowledged the message.
    ///
    /// # Errors
    /// [`ReceiptError::SessionLost`] if this server carried the session and it ended first;
    /// [`ReceiptError::Undelivered`] if the session ended elsewhere in the fleet first (or the
    /// owner could never queue it); [`ReceiptError::Store`] if the store failed.
    pub async fn delivered(self) -> Result<(), ReceiptError> {
        match self.0 {
            Kind::Local(r) => r.await,
            Kind::Posted(f) => match f.await {
                Ok(true) => Ok(()),
                Ok(false) => Err(ReceiptError::Undelivered),
                Err(e) => Err(ReceiptError::Store(e.to_string())),
            },
        }
    }
}

impl From<Receipt> for FleetReceipt {
    /// A receipt of a message this server sent itself ([`Peer::send`]).
    fn from(r: Receipt) -> Self {
        FleetReceipt(Kind::Local(r))
    }
}

impl IntoFuture for FleetReceipt {
    type Output = Result<(), ReceiptError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.delivered())
    }
}

impl Server {
    /// The shared store, if the server has one.
    fn shared_store(&self) -> Option<&Arc<dyn SessionStore>> {
        self.inner.config.store.as_ref().filter(|s| s.shared())
    }

    /// Sends `body` to session `id` wherever it is in the fleet (a shared store, PROTOCOL.md
    /// §13 rules 14–18): it is stored first, then the server that owns the session queues it
    /// in that session's one sequence, in the order posted, and the receipt resolves once the
    /// session's peer acknowledged it. A lingering session gets it when it resumes. Without a
    /// shared store it is this server's session or none.
    ///
    /// ```no_run
    /// # async fn f(server: steadfast::Server, id: steadfast::proto::SessionId) -> Result<(), Box<dyn std::error::Error>> {
    /// let receipt = server.send_to(id, "hello from anywhere").await?;
    /// receipt.await?; // the client's application took it
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`SendToError::NoSuchSession`] at once if the fleet has no such session (never a
    /// silent drop); [`SendToError::Send`] if the message is larger than the maximum message
    /// size; [`SendToError::Store`] if the store failed.
    pub async fn send_to(
        &self,
        id: SessionId,
        body: impl Into<Bytes>,
    ) -> Result<FleetReceipt, SendToError> {
        let body = body.into();
        self.check_size(&body)?;
        let Some(store) = self.shared_store() else {
            let peer = self.peer(id).ok_or(SendToError::NoSuchSession)?;
            return Ok(FleetReceipt(Kind::Local(peer.send(body).await?)));
        };
        let receipt = store.post(id.0, body).await?;
        Ok(FleetReceipt(Kind::Posted(receipt)))
    }

    /// [`Server::send_to`] for a typed value (feature `serde`): MessagePack, as
    /// [`Peer::send_value`](crate::Peer::send_value) writes it, read with `recv_value`.
    ///
    /// # Errors
    /// [`SendToError::Encode`] if the value cannot be encoded; otherwise as
    /// [`Server::send_to`].
    #[cfg(feature = "serde")]
    pub async fn send_value_to<T: serde::Serialize + ?Sized>(
        &self,
        id: SessionId,
        value: &T,
    ) -> Result<FleetReceipt, SendToError> {
        let body = crate::typed::encode(value).map_err(|e| SendToError::Encode(e.to_string()))?;
        self.send_to(id, body).await
    }

    /// Sends several messages to session `id` wherever it is in the fleet, stored in one step
    /// and delivered in this order, each with its receipt: as [`Server::send_to`] for each,
    /// for a fraction of the cost (one statement for them all).
    ///
    /// # Errors
    /// As [`Server::send_to`]; nothing is sent if one is refused.
    pub async fn send_all_to<I, B>(
        &self,
        id: SessionId,
        bodies: I,
    ) -> Result<Vec<FleetReceipt>, SendToError>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let bodies: Vec<Bytes> = bodies.into_iter().map(Into::into).collect();
        for b in &bodies {
            self.check_size(b)?;
        }
        let Some(store) = self.shared_store() else {
            let peer = self.peer(id).ok_or(SendToError::NoSuchSession)?;
            let mut out = Vec::with_capacity(bodies.len());
            for b in bodies {
                out.push(FleetReceipt(Kind::Local(peer.send(b).await?)));
            }
            return Ok(out);
        };
        let receipts = store.post_many(id.0, bodies).await?;
        Ok(receipts
            .into_iter()
            .map(|r| FleetReceipt(Kind::Posted(r)))
            .collect())
    }

    /// Sends `body` to every session of the fleet, live or lingering, each copy with its own
    /// receipt (a shared store: one stored row per session; without one, this server's
    /// sessions, waiting for room in each outbox).
    ///
    /// # Errors
    /// As [`Server::send_to`].
    pub async fn broadcast_fleet(
        &self,
        body: impl Into<Bytes>,
    ) -> Result<Vec<(SessionId, FleetReceipt)>, SendToError> {
        let body = body.into();
        self.check_size(&body)?;
        let Some(store) = self.shared_store() else {
            let mut out = Vec::new();
            for p in self.peers() {
                if let (Some(id), Ok(r)) = (p.id(), p.send(body.clone()).await) {
                    out.push((id, FleetReceipt(Kind::Local(r))));
                }
            }
            return Ok(out);
        };
        let posted = store.post_all(body).await?;
        Ok(posted
            .into_iter()
            .map(|(key, r)| (SessionId(key), FleetReceipt(Kind::Posted(r))))
            .collect())
    }

    /// Every session of the fleet, whichever server holds it (a shared store), else this
    /// server's.
    ///
    /// # Errors
    /// [`StoreError`] if the store failed.
    pub async fn fleet_sessions(&self) -> Result<Vec<FleetSession>, StoreError> {
        if let Some(store) = self.shared_store() {
            return store.sessions().await;
        }
        Ok(self
            .peers()
            .into_iter()
            .filter_map(|p| {
                let id = p.id()?;
                let stats = p.stats();
                Some(FleetSession {
                    id,
                    name: p.name().map(str::to_owned),
                    node: String::new(),
                    lingering: !p.is_connected(),
                    unacknowledged: stats.queued.saturating_sub(stats.acknowledged),
                })
            })
            .collect())
    }

    fn check_size(&self, body: &Bytes) -> Result<(), SendToError> {
        let max = self.inner.proto.max_message;
        if body.len() > max as usize {
            return Err(SendToError::Send(SendError::TooLarge {
                len: body.len(),
                max,
            }));
        }
        Ok(())
    }
}

/// How long the loop rests when none of the mail it took could be queued.
const FULL_RETRY: Duration = Duration::from_millis(20);

/// Takes the mail for sessions this server owns and queues each in its session, until the
/// server stops. Mail for a session whose outbox is full goes back, with the rest of that
/// session's in the batch (its order holds), and is taken again shortly: one full session
/// never holds up the others.
pub(crate) async fn deliver_mail(inner: Arc<Inner>, store: Arc<dyn SessionStore>) {
    loop {
        let batch = tokio::select! {
            () = inner.stop_all.cancelled() => return,
            b = store.take_mail() => b,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "fleet mail: the store failed; trying again");
                tokio::select! {
                    () = inner.stop_all.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        let mut back = Vec::new();
        let mut refused = Vec::new();
        let mut blocked = HashSet::new();
        let mut queued = 0usize;
        for mail in batch {
            if blocked.contains(&mail.key) {
                back.push(mail.id);
                continue;
            }
            let shared = inner.registry().sessions.get(&SessionId(mail.key)).cloned();
            let Some(shared) = shared else {
                // Not here (ending): the end settles it, or its next holder takes it.
                back.push(mail.id);
                blocked.insert(mail.key);
                continue;
            };
            if matches!(shared.lock().link, Link::Ended) {
                back.push(mail.id);
                blocked.insert(mail.key);
                continue;
            }
            let peer = Peer { shared };
            match peer.try_send_mail(mail.body, mail.id) {
                Ok(_) => queued += 1,
                Err(SendError::TooLarge { .. } | SendError::Transform(_)) => {
                    refused.push(mail.id);
                }
                Err(e) => {
                    debug!(error = %e, "fleet mail: not queued now");
                    back.push(mail.id);
                    blocked.insert(mail.key);
                }
            }
        }
        // Nothing could be queued: wait a little before taking the same mail again (the
        // store leaves those sessions out of its next fetches meanwhile).
        let wait = queued == 0 && !back.is_empty();
        if !back.is_empty() || !refused.is_empty() {
            store.return_mail(back, refused);
        }
        if wait {
            tokio::select! {
                () = inner.stop_all.cancelled() => return,
                () = tokio::time::sleep(FULL_RETRY) => {}
            }
        }
    }
}
