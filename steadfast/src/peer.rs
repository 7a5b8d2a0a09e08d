//! The handle to one session, on either side: send with receipts, receive, stats.
//!
//! A [`Peer`] is a cheap clone of an `Arc` around the session's shared state
//! ([`crate::session`]). The state holds the protocol core's [`Connection`] while a connection
//! carries the session, or the bare [`Session`] between connections (sends queue up, within
//! the bounds, and go out after the resume). The connection's driver task and every handle
//! share it under one short-held lock.
//!
//! [`Connection`]: crate::proto::Connection

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::clock::wall_clock_us;
use crate::decode::{Codec, INLINE_DECODE};
use crate::error::{EndReason, ReceiptError, RecvError, SendError};
use crate::proto::{self, Message, Role, Seq, Session, SessionEnd, SessionId};
use crate::session::{Link, PeerShared, PeerState};

/// A handle to one session: the client's view of the server, or the server's view of one
/// client. Cheap to clone; dropping a handle does not lose queued messages.
#[derive(Clone, Debug)]
pub struct Peer {
    pub(crate) shared: Arc<PeerShared>,
}

/// Counters and gauges of one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// Messages queued by this side.
    pub queued: u64,
    /// Messages transmitted for the first time.
    pub sent: u64,
    /// Messages acknowledged by the peer.
    pub acknowledged: u64,
    /// Messages transmitted again after a reconnect.
    pub retransmitted: u64,
    /// Body bytes transmitted, every transmission counted: beyond the total of the bodies
    /// sent, what faults made this side send again (after a cut a version-2 session resends
    /// the rest of a message, not all of it).
    pub body_bytes_sent: u64,
    /// Bytes read from the network while a connection carried the session (every frame,
    /// complete or cut off by a fault).
    pub bytes_received: u64,
    /// Messages received from the peer.
    pub received: u64,
    /// Messages not yet acknowledged (queued or in flight).
    pub in_flight: usize,
    /// Messages received and waiting for `recv`.
    pub waiting: usize,
    /// Connections that carried the session.
    pub connections: u64,
    /// Latest round-trip time.
    pub rtt: Option<Duration>,
}

impl Peer {
    /// The session id (assigned by the server; `None` on a client before its first WELCOME).
    pub fn id(&self) -> Option<SessionId> {
        self.shared.lock().id
    }

    /// The name the client gave in its HELLO.
    pub fn name(&self) -> Option<&str> {
        self.shared.name.as_deref()
    }

    /// The remote address of the current or last connection.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.shared.lock().addr
    }

    /// The client's verified TLS certificate (DER) on a server with mutual TLS: the
    /// authenticated identity.
    pub fn certificate(&self) -> Option<Vec<u8>> {
        self.shared.lock().certificate().map(<[u8]>::to_vec)
    }

    /// Whether a connection carries the session right now.
    pub fn is_connected(&self) -> bool {
        self.shared.lock().connected
    }

    /// Whether the session has ended.
    pub fn is_ended(&self) -> bool {
        self.shared.lock().ending.is_some()
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.shared.lock().ending.as_ref().map(|e| e.reason.clone())
    }

    /// Once the session has ended: a copy of the messages this side sent that the peer never
    /// acknowledged, in order (cheap: bodies are shared). The events that report a session's
    /// end carry the same list; it stays here until taken, so a dropped event loses nothing.
    pub fn unacknowledged(&self) -> Vec<Message> {
        self.shared
            .lock()
            .ending
            .as_ref()
            .and_then(|e| e.unacknowledged.clone())
            .unwrap_or_default()
    }

    /// Once the session has ended: the messages this side sent that the peer never
    /// acknowledged, in order (given out once; later calls return an empty list).
    pub fn take_unacknowledged(&self) -> Vec<Message> {
        self.shared
            .lock()
            .ending
            .as_mut()
            .and_then(|e| e.unacknowledged.take())
            .unwrap_or_default()
    }

    /// Sends a message, waiting for room in the outbox if it is full (backpressure).
    ///
    /// The returned [`Receipt`] resolves when the peer's application has taken the message.
    ///
    /// # Cancel safety
    /// Dropping the future before it completes queues nothing: the message is queued exactly
    /// when the future returns `Ok`.
    ///
    /// # Errors
    /// [`SendError::TooLarge`], or [`SendError::Closed`] once the session is closing or over.
    pub async fn send(&self, body: impl Into<Bytes>) -> Result<Receipt, SendError> {
        let (len, body) = self.encode(body.into())?;
        // Room now (the common case): one lock, no waiting machinery.
        let mut body = match self.queue(len, body, None) {
            Ok(receipt) => return Ok(receipt),
            Err(Refused::Full(body)) => Some(body),
            Err(Refused::Error(e)) => return Err(e),
        };
        self.when_room(|| {
            let b = body.take()?;
            match self.queue(len, b, None) {
                Ok(receipt) => Some(Ok(receipt)),
                Err(Refused::Full(b)) => {
                    body = Some(b);
                    None
                }
                Err(Refused::Error(e)) => Some(Err(e)),
            }
        })
        .await
    }

    /// Sends every body in order, waiting for room as [`Peer::send`] does, and returns the
    /// receipt of the last one (receipts are cumulative: it resolves once the peer's
    /// application has taken them all). `None` for an empty input.
    ///
    /// Faster than a `send` per message: the session's lock, the clock and the driver's
    /// wake-up are taken once per run of messages that fit, not once per message.
    ///
    /// # Cancel safety
    /// Dropping the future may leave a prefix of the bodies queued (they are sent and
    /// acknowledged as usual); [`Peer::stats`] counts them in `queued`.
    ///
    /// # Errors
    /// As [`Peer::send`], for the first body that cannot be queued; the ones before it are.
    pub async fn send_all<I, B>(&self, bodies: I) -> Result<Option<Receipt>, SendError>
    where
        I: IntoIterator<Item = B>,
        B: Into<Bytes>,
    {
        let mut bodies = bodies.into_iter();
        if self.shared.codec.is_some() {
            // Transforms run outside the lock, one message at a time.
            let mut last = None;
            for b in bodies {
                last = Some(self.send(b).await?);
            }
            return Ok(last);
        }
        let mut last: Option<Seq> = None;
        let mut held: Option<Bytes> = None;
        let mut run = || {
            let mut queued = 0usize;
            let mut outcome = None;
            {
                let mut st = self.shared.lock();
                let ts = wall_clock_us();
                while let Some(body) = held.take().or_else(|| bodies.next().map(Into::into)) {
                    match queue_locked(&mut st, body.len(), body, ts) {
                        Ok(seq) => {
                            queued += 1;
                            last = Some(seq);
                        }
                        Err(Refused::Full(body)) => {
                            held = Some(body);
                            break;
                        }
                        Err(Refused::Error(e)) => {
                            outcome = Some(Err(e));
                            break;
                        }
                    }
                }
                st.account();
            }
            if queued > 0 {
                self.shared.driver.notify_one();
            }
            if outcome.is_none() && held.is_none() {
                outcome = Some(Ok(last.map(|seq| Receipt {
                    shared: self.shared.clone(),
                    seq,
                })));
            }
            outcome
        };
        match run() {
            Some(done) => done,
            None => self.when_room(run).await,
        }
    }

    /// Calls `attempt` until it returns `Some`, waiting between calls until room may have
    /// appeared: an acknowledgement or state change on this session, or (on a server) budget
    /// freed by any session. The wake-ups are armed before each attempt, so none is missed.
    async fn when_room<T>(&self, mut attempt: impl FnMut() -> Option<T>) -> T {
        let budget = self.shared.lock().budget.clone();
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Room may also come from another session freeing server-wide budget.
            let mut freed = budget.as_ref().map(|b| Box::pin(b.freed.notified()));
            if let Some(f) = freed.as_mut() {
                f.as_mut().enable();
            }
            if let Some(done) = attempt() {
                return done;
            }
            let freed = async {
                match freed.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut notified => {}
                () = freed => {}
            }
        }
    }

    /// Sends a message if the outbox has room now.
    ///
    /// # Errors
    /// [`SendError::Full`] when the outbox is at its bound (nothing was queued), otherwise as
    /// [`Peer::send`].
    pub fn try_send(&self, body: impl Into<Bytes>) -> Result<Receipt, SendError> {
        let (len, body) = self.encode(body.into())?;
        self.try_send_encoded(len, body)
    }

    /// Applies the session's transforms: the body's own length and what goes out.
    fn encode(&self, body: Bytes) -> Result<(usize, Bytes), SendError> {
        let len = body.len();
        match &self.shared.codec {
            None => Ok((len, body)),
            Some(codec) => Ok((len, codec.chain.encode(body)?)),
        }
    }

    /// Sends a message if the outbox has room now (see [`Peer::try_send`]).
    fn try_send_encoded(&self, len: usize, body: Bytes) -> Result<Receipt, SendError> {
        self.queue(len, body, None).map_err(|r| match r {
            Refused::Full(_) => SendError::Full,
            Refused::Error(e) => e,
        })
    }

    /// Queues fleet mail ([`SessionStore::take_mail`](crate::store::SessionStore::take_mail))
    /// if the outbox has room now: the commit that stores the message also records the mail
    /// as queued, in the same step, so that it is never handed out again.
    pub(crate) fn try_send_mail(&self, body: Bytes, mail: i64) -> Result<Receipt, SendError> {
        let (len, body) = self.encode(body)?;
        self.queue(len, body, Some(mail)).map_err(|r| match r {
            Refused::Full(_) => SendError::Full,
            Refused::Error(e) => e,
        })
    }

    /// Queues an encoded body whose unencoded length was `len` (fleet mail: `mail`, its id);
    /// gives it back when full.
    fn queue(&self, len: usize, body: Bytes, mail: Option<i64>) -> Result<Receipt, Refused> {
        let mut st = self.shared.lock();
        // Nothing unacknowledged before it: the connection is idle (a request, a reply) and
        // the message may go out from this task; behind others, the driver batches it.
        let idle = st.session().is_some_and(|s| s.outbox_len() == 0);
        // Behind others, on a connection whose driver runs (and is woken by each message),
        // the timestamp of the driver's latest turn is the time closely enough.
        let turn = self.shared.turn_clock_us.load(Ordering::Relaxed);
        let ts = if !idle && turn != 0 && st.output.is_some() {
            turn
        } else {
            wall_clock_us()
        };
        let seq = queue_locked(&mut st, len, body, ts)?;
        if let (Some(id), Some(d)) = (mail, st.durable.as_mut()) {
            d.mail.push_back((id, seq));
        }
        st.account();
        self.shared.transmit(st, idle);
        Ok(Receipt {
            shared: self.shared.clone(),
            seq,
        })
    }

    /// Receives the next message, waiting for one. Taking it acknowledges it to the sender.
    ///
    /// On plain TCP (no TLS, no [store](crate::ClientConfig::store)) a waiting call reads and
    /// decodes the connection's input in the caller's task, when it arrives, rather than have
    /// the connection's own task do it and wake the caller: a request/response exchange
    /// then costs one task wake-up per message, as a raw socket does. At most a few reads
    /// per call; the connection's task reads the rest, and everything else (timers, writes,
    /// input while nobody waits) as before.
    ///
    /// A body that must be decoded by the session's [transforms](crate::transform) and turns
    /// out large (past 64 KiB decoded) is decoded on tokio's blocking pool, a few at a time
    /// server-wide, so that one peer's decompression never holds up the tasks of others.
    ///
    /// # Cancel safety
    /// Cancel safe: a message is taken only when the future returns it (a message whose
    /// decoding was under way when the future was dropped is kept for the next call).
    ///
    /// # Errors
    /// [`RecvError::Ended`] once the session is over and nothing is left to read;
    /// [`RecvError::Transform`] as for [`Peer::try_recv`].
    pub async fn recv(&self) -> Result<Message, RecvError> {
        loop {
            let notified = self.shared.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let waiting = match self.take_or_wait() {
                Ok(m) => {
                    return match &self.shared.codec {
                        None => Ok(m),
                        Some(codec) => self.decode_off_thread(codec, m).await,
                    };
                }
                Err(None) => return Err(RecvError::Ended),
                Err(Some(waiting)) => waiting,
            };
            // The connection's readiness may have been handed to the waiting calls already.
            if waiting.read_handed() {
                waiting.done();
                continue;
            }
            // Poll again for a moment (`recv_spin`), yielding between polls, before waiting
            // to be woken.
            let spin = self.shared.recv_spin_us;
            let spin_end = (spin > 0).then(|| {
                std::time::Instant::now() + std::time::Duration::from_micros(u64::from(spin))
            });
            let mut woken = false;
            while spin_end.is_some_and(|end| std::time::Instant::now() < end) {
                woken = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(notified.as_mut().poll(cx).is_ready())
                })
                .await;
                if woken {
                    break;
                }
                tokio::task::yield_now().await;
            }
            if !woken {
                notified.await;
            }
            // Woken with the connection's readiness: read here (see `crate::input`).
            waiting.read_handed();
            waiting.done();
        }
    }

    /// Waits until a message can be taken (`true`) or the session is over with nothing left
    /// to read (`false`). Takes nothing: follow it with [`Peer::try_recv`] or
    /// [`Peer::recv_up_to`]. For callers that must take messages somewhere a future cannot
    /// be dropped halfway (a binding to another language's event loop, for one).
    ///
    /// ```
    /// # async fn f(peer: steadfast::Peer) -> Result<(), steadfast::error::RecvError> {
    /// while peer.readable().await {
    ///     for m in peer.recv_up_to(64)? {
    ///         println!("{}", m.seq);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancel safety
    /// Cancel safe: it takes nothing.
    pub async fn readable(&self) -> bool {
        loop {
            let notified = self.shared.readable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let waiting = {
                let st = self.shared.lock();
                if st.waiting_messages() > 0 {
                    return true;
                }
                if st.ending.is_some() {
                    return false;
                }
                // Counted as a receiver, as a waiting `recv` is: the messages it waits for
                // raise no `MessagesWaiting` event while it waits (if it is dropped first,
                // the event comes then).
                Waiting::register(&self.shared, st)
            };
            if !waiting.read_handed() {
                notified.await;
                waiting.read_handed();
            }
            waiting.done();
        }
    }

    /// Waits until a body of `len` bytes fits the outbox and the server's memory budget, or
    /// the session is closing or over (the next send says so). Queues nothing: follow it
    /// with [`Peer::try_send`], which can still find the outbox full if other tasks send on
    /// this session too (call this again then). With transforms, `len` is the body's size
    /// before them.
    ///
    /// # Cancel safety
    /// Cancel safe: it queues nothing.
    pub async fn writable(&self, len: usize) {
        let fits = || {
            let st = self.shared.lock();
            let budget_full = st
                .budget
                .as_ref()
                .is_some_and(|b| b.used.load(Ordering::Relaxed) + len as u64 > b.limit);
            match st.session() {
                Some(s) => s.is_closing() || (!budget_full && s.has_room_for(len)),
                None => true,
            }
        };
        self.when_room(|| fits().then_some(())).await;
    }

    /// Takes the next message, or registers this call as waiting for one (`Err(None)`: the
    /// session is over and nothing is left).
    fn take_or_wait(&self) -> Result<Message, Option<Waiting<'_>>> {
        let st = self.shared.lock();
        if st.waiting_messages() > 0 {
            return self.take_locked(st).ok_or(None);
        }
        if st.ending.is_some() {
            return Err(None);
        }
        Err(Some(Waiting::register(&self.shared, st)))
    }

    /// Receives at least one message, waiting for it, and up to `n` (partial read: the rest
    /// stay queued). With transforms, the decoded bodies of one call add up to at most the
    /// receive window's bytes (or one message), and large ones decode off the async workers
    /// as in [`Peer::recv`].
    ///
    /// # Cancel safety
    /// As [`Peer::recv`]: messages are taken only when the future returns them.
    ///
    /// # Errors
    /// As [`Peer::recv`]; a body that fails to decode after others cuts the batch short and
    /// the next call reports it.
    pub async fn recv_many(&self, n: usize) -> Result<Vec<Message>, RecvError> {
        let first = self.recv().await?;
        let mut out = vec![first];
        let Some(codec) = &self.shared.codec else {
            out.extend(self.recv_up_to(n.saturating_sub(1))?);
            return Ok(out);
        };
        let mut decoded = out[0].body.len();
        while out.len() < n && decoded < codec.batch_bytes {
            let Some(m) = self.take_raw() else { break };
            let copy = m.clone();
            match self.decode_off_thread(codec, m).await {
                Ok(m) => {
                    decoded += m.body.len();
                    out.push(m);
                }
                Err(_) => {
                    // Reported by the next call, after the good messages before it.
                    self.shared.lock().park_front(copy);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The received messages as a [`Stream`](futures_core::Stream) (each item as from
    /// [`Peer::recv`]); it ends once the session is over and everything was read.
    ///
    /// ```no_run
    /// use futures_util::StreamExt;
    /// # async fn f(peer: steadfast::Peer) {
    /// let mut messages = std::pin::pin!(peer.messages());
    /// while let Some(m) = messages.next().await {
    ///     println!("{:?}", m.map(|m| m.body));
    /// }
    /// # }
    /// ```
    pub fn messages(&self) -> impl futures_core::Stream<Item = Result<Message, RecvError>> + Send {
        futures_util::stream::unfold(self.clone(), |peer| async move {
            match peer.recv().await {
                Err(RecvError::Ended) => None,
                r => Some((r, peer)),
            }
        })
    }

    /// Takes the next message as it arrived (undecoded), if any.
    fn take_raw(&self) -> Option<Message> {
        self.take_locked(self.shared.lock())
    }

    /// [`Peer::take_raw`] under a lock the caller holds already.
    fn take_locked(&self, mut st: std::sync::MutexGuard<'_, PeerState>) -> Option<Message> {
        st.notified = false;
        let m = if let Some(m) = st.pop_parked() {
            m
        } else {
            let limit = st.visible_limit();
            let m = st.session_mut().and_then(|s| s.recv_below(limit))?;
            st.account();
            if self.shared.role == Role::Server {
                crate::metered::delivered(1);
            }
            m
        };
        // An ACK may be due (or its timer to arm): sent from here when the connection is idle.
        self.shared.transmit(st, true);
        Some(m)
    }

    /// Decodes a taken message: small results inline, large ones on the blocking pool within
    /// the server's decode slots (their output counted in its memory budget meanwhile).
    async fn decode_off_thread(&self, codec: &Codec, m: Message) -> Result<Message, RecvError> {
        let inline_max = codec.max_recv.min(INLINE_DECODE);
        if let Ok(body) = codec.chain.decode(m.body.clone(), inline_max) {
            return Ok(Message { body, ..m });
        }
        // Kept for the next call if this future is dropped while the decode runs.
        let guard = ParkOnDrop {
            shared: &self.shared,
            message: Some(m.clone()),
        };
        // The slot and the reservation last as long as the decode itself, even if this
        // future is dropped meanwhile (a blocking task runs to its end).
        let Ok(slot) = codec.slots.clone().acquire_owned().await else {
            return Err(RecvError::Ended);
        };
        let reserve = codec.max_recv as u64;
        let budget = self.shared.lock().budget.clone();
        if let Some(b) = &budget {
            b.used.fetch_add(reserve, Ordering::Relaxed);
        }
        let chain = codec.chain.clone();
        let max = codec.max_recv;
        let body = m.body.clone();
        let result = tokio::task::spawn_blocking(move || {
            let decoded = chain.decode(body, max);
            if let Some(b) = &budget {
                b.used.fetch_sub(reserve, Ordering::Relaxed);
                b.freed.notify_waiters();
            }
            drop(slot);
            decoded
        })
        .await;
        guard.disarm();
        match result {
            Ok(Ok(body)) => Ok(Message { body, ..m }),
            Ok(Err(error)) => Err(RecvError::Transform { seq: m.seq, error }),
            Err(_) => Err(RecvError::Transform {
                seq: m.seq,
                error: crate::transform::TransformError::new("decode", "decoder task failed"),
            }),
        }
    }

    /// Takes the next waiting message, if any (`Ok(None)`: nothing waiting). A body to decode
    /// through the session's transforms is decoded here, on the caller's thread (up to the
    /// maximum message size); [`Peer::recv`] moves large decodes off the async workers.
    ///
    /// # Errors
    /// [`RecvError::Transform`] when the next message's body does not decode through the
    /// session's transforms: that message is taken (and acknowledged); the next call goes on
    /// with the message after it.
    pub fn try_recv(&self) -> Result<Option<Message>, RecvError> {
        let Some(m) = self.take_raw() else {
            return Ok(None);
        };
        match &self.shared.codec {
            None => Ok(Some(m)),
            Some(codec) => codec.decode(m).map(Some),
        }
    }

    /// Takes up to `n` waiting messages (partial read: the rest stay queued). An empty list:
    /// nothing waiting. With transforms, bodies are decoded here, one at a time, on the
    /// caller's thread, and the batch stops once its decoded bytes reach the receive window's
    /// bytes; [`Peer::recv_many`] moves large decodes off the async workers.
    ///
    /// # Errors
    /// [`RecvError::Transform`] when the first message's body does not decode (it is taken;
    /// call again for the rest). A body that fails later in the batch cuts it short: the
    /// messages before it are returned and the next call reports it.
    pub fn recv_up_to(&self, n: usize) -> Result<Vec<Message>, RecvError> {
        let Some(codec) = &self.shared.codec else {
            let mut taken = Vec::new();
            {
                let mut st = self.shared.lock();
                st.notified = false;
                while taken.len() < n {
                    let Some(m) = st.pop_parked() else {
                        break;
                    };
                    taken.push(m);
                }
                let parked = taken.len();
                let limit = st.visible_limit();
                if let Some(s) = st.session_mut() {
                    while taken.len() < n {
                        let Some(m) = s.recv_below(limit) else { break };
                        taken.push(m);
                    }
                }
                // Parked messages were counted when first taken.
                if self.shared.role == Role::Server {
                    crate::metered::delivered((taken.len() - parked) as u64);
                }
                st.account();
                if !taken.is_empty() {
                    self.shared.transmit(st, true);
                }
            }
            return Ok(taken);
        };
        // One message at a time: decoded bytes stay within the batch bound.
        let mut out: Vec<Message> = Vec::new();
        let mut decoded = 0usize;
        while out.len() < n && (out.is_empty() || decoded < codec.batch_bytes) {
            let Some(m) = self.take_raw() else { break };
            let copy = m.clone();
            match codec.decode(m) {
                Ok(m) => {
                    decoded += m.body.len();
                    out.push(m);
                }
                Err(e) if out.is_empty() => return Err(e),
                Err(_) => {
                    // Reported by the next call, after the good messages before it.
                    self.shared.lock().park_front(copy);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// With manual acknowledgement (`proto::Config::manual_ack`): acknowledges the taken
    /// message `seq` and every message taken before it, telling the sender they are
    /// processed (their receipts resolve). Returns how many were newly acknowledged (0 when
    /// `seq` was acknowledged already, has not been taken, or the mode is off).
    ///
    /// ```no_run
    /// # async fn f(peer: steadfast::Peer) -> Result<(), Box<dyn std::error::Error>> {
    /// // ClientConfig::default().protocol(steadfast::proto::Config::default().manual_ack(true))
    /// let m = peer.recv().await?;
    /// // ... process m, store it ...
    /// peer.acknowledge(m.seq);
    /// # Ok(())
    /// # }
    /// ```
    pub fn acknowledge(&self, seq: Seq) -> usize {
        let mut st = self.shared.lock();
        let n = st.session_mut().map_or(0, |s| s.acknowledge(seq));
        if n > 0 {
            self.shared.transmit(st, true);
        }
        n
    }

    /// A fleet (a [shared store](crate::store::SessionStore::shared), PROTOCOL.md §13): asks
    /// the store whether this server still owns the session, before the application does
    /// something irrevocable with messages it took and has not acknowledged (writes them out,
    /// say). Another server may have resumed the session meanwhile — this one was paused, or
    /// its connection was cut — and will deliver those messages itself.
    ///
    /// The answer holds for the moment the store gave it: a long stall right after it (a
    /// paused process) can outlast it, so check again when much time has passed since.
    /// Without a shared store it answers at once, `Ok(())`.
    ///
    /// # Errors
    /// [`StoreError::Fenced`](crate::store::StoreError::Fenced): the session moved; it has
    /// ended here with [`EndReason::Moved`] and the messages taken must not be used. Other
    /// [`StoreError`](crate::store::StoreError)s: the store could not answer (it retries lost
    /// connections itself, so these are lasting failures).
    ///
    /// ```no_run
    /// # async fn f(peer: steadfast::Peer) -> Result<(), Box<dyn std::error::Error>> {
    /// let batch = peer.recv_many(1_024).await?;
    /// peer.confirm_owner().await?; // still ours: write the batch, then acknowledge it
    /// if let Some(last) = batch.last() {
    ///     peer.acknowledge(last.seq);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn confirm_owner(&self) -> Result<(), crate::store::StoreError> {
        let check = {
            let st = self.shared.lock();
            if st.ending.as_ref().map(|e| &e.reason) == Some(&EndReason::Moved) {
                return Err(crate::store::StoreError::Fenced);
            }
            match st.durable.as_ref() {
                Some(d) if d.store.shared() => d.store.check_owner(d.key),
                _ => return Ok(()),
            }
        };
        let answer = check.await;
        if answer == Err(crate::store::StoreError::Fenced) {
            self.shared.abandon(EndReason::Moved);
        }
        answer
    }

    /// The sequence number the next message sent will get (`None` once the session ended).
    /// With a store, numbers continue across runs of the program: a client whose stored
    /// session starts at the default initial number 1 has queued `next_seq - 1` messages in
    /// all its runs.
    pub fn next_seq(&self) -> Option<Seq> {
        self.shared.lock().session().map(Session::next_seq)
    }

    /// Messages received and waiting.
    pub fn waiting(&self) -> usize {
        let st = self.shared.lock();
        st.waiting_messages()
    }

    /// Measures the round-trip time with a PING now.
    ///
    /// # Errors
    /// [`SendError::Closed`] if no connection carries the session (or it drops before the
    /// PONG).
    pub async fn ping(&self) -> Result<Duration, SendError> {
        let rx = {
            let mut st = self.shared.lock();
            let Link::Attached(conn) = &mut st.link else {
                return Err(SendError::Closed);
            };
            if !conn.is_established() {
                return Err(SendError::Closed);
            }
            conn.ping();
            let (tx, rx) = oneshot::channel();
            // Waiters whose caller gave up are dropped, so the list stays small.
            let waiters = &mut st.rare().ping_waiters;
            waiters.retain(|w| !w.is_closed());
            waiters.push(tx);
            rx
        };
        self.shared.driver.notify_one();
        rx.await.map_err(|_| SendError::Closed)
    }

    /// How long the session's current connection has been up (from its TCP accept or
    /// connect), or `None` while it has none.
    pub fn connected_for(&self) -> Option<Duration> {
        let st = self.shared.lock();
        match &st.link {
            Link::Attached(conn) => {
                Some(crate::clock::now().saturating_duration_since(conn.started()))
            }
            _ => None,
        }
    }

    /// How long the session has been without a connection (lingering), or `None` while it
    /// has one (or has ended).
    pub fn lingering_for(&self) -> Option<Duration> {
        let st = self.shared.lock();
        st.lingering_since
            .map(|t| crate::clock::now().saturating_duration_since(t))
    }

    /// Counters of the session.
    pub fn stats(&self) -> PeerStats {
        let st = self.shared.lock();
        let Some(s) = st.session() else {
            return PeerStats::default();
        };
        let x = s.stats();
        PeerStats {
            queued: x.queued,
            sent: x.sent,
            acknowledged: x.acknowledged,
            retransmitted: x.retransmitted,
            body_bytes_sent: x.body_bytes_sent,
            bytes_received: x.bytes_received,
            received: x.received,
            in_flight: s.outbox_len(),
            waiting: s.inbox_len(),
            connections: x.connections,
            rtt: x.rtt,
        }
    }

    /// [`Peer::flush`] with a deadline: a peer that never comes back cannot hold the caller
    /// for ever.
    ///
    /// # Errors
    /// [`ReceiptError::TimedOut`] when `limit` passed first (the messages stay queued), or
    /// [`ReceiptError::SessionLost`].
    pub async fn flush_within(&self, limit: Duration) -> Result<(), ReceiptError> {
        tokio::time::timeout(limit, self.flush())
            .await
            .unwrap_or(Err(ReceiptError::TimedOut))
    }

    /// Waits until every message sent so far is acknowledged, or the session ends.
    ///
    /// # Errors
    /// [`ReceiptError::SessionLost`] if the session ended first.
    pub async fn flush(&self) -> Result<(), ReceiptError> {
        let last = {
            let st = self.shared.lock();
            match (st.session(), &st.ending) {
                (_, Some(e)) => {
                    return if e.all_acknowledged {
                        Ok(())
                    } else {
                        Err(ReceiptError::SessionLost(e.reason.clone()))
                    };
                }
                // Nothing unacknowledged (restored sessions count: their outbox came from a
                // store, not from `send`).
                (Some(s), None) if s.outbox_len() == 0 => return Ok(()),
                (Some(s), None) => Seq(s.next_seq().0 - 1),
                (None, None) => return Ok(()),
            }
        };
        Receipt {
            shared: self.shared.clone(),
            seq: last,
        }
        .await
    }

    /// Closes the session gracefully (PROTOCOL.md §7.2): first waits for the messages sent so
    /// far to be acknowledged (a CLOSE makes the peer discard what it has not delivered yet),
    /// for at most half the bound, then sends a CLOSE carrying the final positions, and both
    /// sides end the session. Messages not acknowledged by then are handed back
    /// ([`Peer::take_unacknowledged`]). Returns when the session has ended.
    ///
    /// Bounded: when the whole has not finished within the session's idle timeout (default
    /// 10 s; a client that is reconnecting sends its CLOSE after the resume), the session ends
    /// here without the peer's confirmation. [`Peer::close_within`] takes another bound. A
    /// server session whose client is away ends at once.
    pub async fn close(&self, reason: &str) {
        self.close_within(reason, self.shared.close_timeout).await;
    }

    /// [`Peer::close`] with its own bound: after `limit` the session ends here (the peer's
    /// CLOSE unconfirmed), whatever the connection does. Returns why the session ended.
    pub async fn close_within(&self, reason: &str, limit: Duration) -> EndReason {
        self.close_inner(reason, limit, true).await
    }

    /// [`Peer::close`] without waiting for acknowledgements: the CLOSE goes out at once, and
    /// messages the peer has not delivered by then come back ([`Peer::take_unacknowledged`]),
    /// also those it received and holds unread (it discards them on the CLOSE). For a peer
    /// known not to read. Bounded like `close`.
    pub async fn close_at_once(&self, reason: &str) -> EndReason {
        self.close_inner(reason, self.shared.close_timeout, false)
            .await
    }

    async fn close_inner(&self, reason: &str, limit: Duration, wait_for_acks: bool) -> EndReason {
        let now = tokio::time::Instant::now();
        // A bound too far to represent is no bound at all.
        let deadline = now
            .checked_add(limit)
            .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400));
        let away = {
            let st = self.shared.lock();
            self.shared.role == Role::Server && matches!(st.link, Link::Detached(_))
        };
        if wait_for_acks && !away {
            // A graceful close waits for the last ACK (§7.2): the peer would discard messages
            // it has received but not delivered when the CLOSE arrives.
            let _ = self.flush_within(limit / 2).await;
        }
        let closed = |confirmed| {
            EndReason::Protocol(SessionEnd::Closed {
                by_peer: false,
                code: proto::CloseCode::Normal,
                reason: reason.to_owned(),
                confirmed,
            })
        };
        {
            let mut st = self.shared.lock();
            let now = crate::clock::now();
            match &mut st.link {
                Link::Attached(conn) => conn.close(now, proto::CloseCode::Normal, reason),
                // A server has no way to reach a detached client: its session ends here.
                Link::Detached(_) if self.shared.role == Role::Server => {
                    st.end_here(closed(false));
                }
                // The CLOSE goes out right after the next resume (§7.2).
                Link::Detached(s) => {
                    s.close(proto::CloseCode::Normal, reason);
                }
                Link::Ended => {}
            }
        }
        self.shared.settle();
        if tokio::time::timeout_at(deadline, self.ended())
            .await
            .is_err()
        {
            self.shared.lock().end_here(closed(false));
            self.shared.settle();
        }
        // With a store: return once the end is on disk (a process that exits right after
        // `close` must not leave the ended session stored as live), within the same bound.
        let written = self
            .shared
            .lock()
            .rare
            .as_mut()
            .and_then(|r| r.end_written.take());
        if let Some(w) = written {
            let _ = tokio::time::timeout_at(deadline, w).await;
        }
        self.end_reason().unwrap_or_else(|| closed(false))
    }

    /// Waits until the session has ended and returns why.
    pub async fn ended(&self) -> EndReason {
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.end_reason() {
                return r;
            }
            notified.await;
        }
    }
}

/// Resolves when the peer's application has taken the message (PROTOCOL.md §5.2).
///
/// Awaiting it is optional and costs nothing until then: receipts are derived from the
/// cumulative acknowledgement position, not stored per message.
#[derive(Clone, Debug)]
pub struct Receipt {
    shared: Arc<PeerShared>,
    seq: Seq,
}

impl Receipt {
    /// The message's sequence number.
    pub fn seq(&self) -> Seq {
        self.seq
    }

    /// Whether the peer has acknowledged the message already.
    pub fn is_acknowledged(&self) -> bool {
        self.shared.lock().acked().is_some_and(|a| a > self.seq)
    }

    async fn wait(self) -> Result<(), ReceiptError> {
        loop {
            let notified = self.shared.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.shared.lock();
                if st.acked().is_some_and(|a| a > self.seq) {
                    return Ok(());
                }
                if let Some(e) = &st.ending {
                    return Err(ReceiptError::SessionLost(e.reason.clone()));
                }
            }
            notified.await;
        }
    }
}

impl IntoFuture for Receipt {
    type Output = Result<(), ReceiptError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

/// A `recv` waiting for a message. Dropped before its wake-up (the caller gave up), it reports
/// messages that arrived meanwhile as waiting, since their arrival was not reported.
struct Waiting<'a> {
    shared: &'a Arc<PeerShared>,
    armed: bool,
}

impl<'a> Waiting<'a> {
    /// Counts a call as waiting for messages; on a connection a handle may read from (see
    /// `crate::input`), the connection's readiness goes to the waiting calls from now on.
    fn register(shared: &'a Arc<PeerShared>, mut st: MutexGuard<'_, PeerState>) -> Self {
        st.receivers += 1;
        if st.is_open() && st.direct_output().is_some() {
            let _ = shared.read_route.compare_exchange(
                crate::input::DRIVER,
                crate::input::RECEIVER,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        Waiting {
            shared,
            armed: true,
        }
    }

    /// Reads the connection from this task if its readiness was handed to the waiting calls
    /// and this one took it; true if it did.
    fn read_handed(&self) -> bool {
        let taken = crate::input::take_handed(self.shared);
        if taken {
            crate::input::read_handed(self.shared);
        }
        taken
    }

    /// Woken: the call goes on to take what arrived.
    fn done(mut self) {
        self.armed = false;
        let mut st = self.shared.lock();
        stop_waiting(self.shared, &mut st);
    }
}

/// One call stops waiting for messages (under the session's lock). The last one gives the
/// connection's readiness back to the driver, and a readiness handed to the waiting calls
/// and taken by none of them wakes the driver to read.
fn stop_waiting(shared: &PeerShared, st: &mut PeerState) {
    st.receivers -= 1;
    if st.receivers == 0
        && shared
            .read_route
            .swap(crate::input::DRIVER, Ordering::AcqRel)
            == crate::input::HANDED
    {
        shared.driver.notify_one();
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let report = {
            let mut st = self.shared.lock();
            stop_waiting(self.shared, &mut st);
            let waiting = st.waiting_messages() > 0;
            let report = waiting && st.receivers == 0 && !st.notified;
            st.notified |= report;
            report
        };
        if report && let Some(owner) = self.shared.owner.get().and_then(std::sync::Weak::upgrade) {
            owner.messages_waiting(self.shared);
        }
    }
}

/// Puts a taken message back in front if the `recv` decoding it is dropped before it returns.
struct ParkOnDrop<'a> {
    shared: &'a PeerShared,
    message: Option<Message>,
}

impl ParkOnDrop<'_> {
    fn disarm(mut self) {
        self.message = None;
    }
}

impl Drop for ParkOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.message.take() {
            self.shared.lock().park_front(m);
        }
    }
}

/// Why a body was not queued.
enum Refused {
    /// No room now: the body, to try again.
    Full(Bytes),
    /// Any other reason.
    Error(SendError),
}

/// Queues an encoded body (of unencoded length `len`) under the session's lock.
fn queue_locked(st: &mut PeerState, len: usize, body: Bytes, ts: u64) -> Result<Seq, Refused> {
    let budget_full = st
        .budget
        .as_ref()
        .is_some_and(|b| b.used.load(Ordering::Relaxed) + body.len() as u64 > b.limit);
    let Some(session) = st.session_mut() else {
        return Err(Refused::Error(SendError::Closed));
    };
    // The peer decodes into at most its maximum message size.
    let max = session.max_send_len();
    if len > max {
        return Err(Refused::Error(SendError::TooLarge {
            len,
            max: u32::try_from(max).unwrap_or(u32::MAX),
        }));
    }
    // The server's memory budget is checked, then charged by `account` under this session's
    // lock: concurrent sends on several sessions may overshoot it by a message each.
    if session.is_closing() {
        return Err(Refused::Error(SendError::Closed));
    }
    if budget_full || !session.has_room_for(body.len()) {
        return Err(Refused::Full(body));
    }
    session.send(body, ts).map_err(Refused::Error)
}
