//! The read side of one connection: its transport's reading half and read buffer, shared by
//! the connection's driver and a `recv` waiting on the session, and the routing of the
//! transport's readiness between them.
//!
//! The driver reads whatever arrives, so that acknowledgements and heartbeats flow whatever
//! the application does. But when a `recv` is waiting, the bytes it waits for would cost a
//! hand-off: the driver's task woken to read and decode them, then the waiting task woken to
//! take the message. Instead the transport's readiness is registered with a waker that looks
//! at the session first ([`PeerShared`]'s [`Wake`]): with a `recv` waiting on a plain TCP
//! connection it hands the readiness to the waiting tasks, one of which reads, decodes and
//! takes the message in its own task, and the driver sleeps on; otherwise it wakes the driver.
//! Whoever reads holds the reader's lock from the read until the bytes are fed to the core,
//! so bytes reach the core in the order they arrived, whichever task read them.
//!
//! A readiness handed over is never lost: the waiting calls check for it after arming their
//! wake-up, and the last of them to stop waiting gives back one it did not take (the driver
//! is woken for it).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::{AsyncRead, ReadBuf};

use crate::driver::Progress;
use crate::driver::take_input;
use crate::proto::Event;
use crate::session::{Link, PeerShared};

/// Readiness goes to the driver.
pub(crate) const DRIVER: u8 = 0;
/// A `recv` waits and may read: readiness goes to the waiting calls.
pub(crate) const RECEIVER: u8 = 1;
/// Readiness was handed to the waiting calls and none has taken it yet.
pub(crate) const HANDED: u8 = 2;

/// Reads a waiting `recv` makes in a row before it leaves the rest to the driver (a peer
/// streaming faster than the application takes would otherwise keep it reading).
const DIRECT_READS: usize = 4;

/// The reading half of a connection's stream.
pub(crate) type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;

/// A connection's reading half and its read buffer.
pub(crate) struct Reader {
    half: ReadHalf,
    /// Read into here, then fed to the core.
    pub(crate) buf: Vec<u8>,
    /// A read happened since the driver's last timer: the connection is not quiet.
    pub(crate) read_since_timer: bool,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("buf", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(half: ReadHalf, buf_len: usize) -> Reader {
        Reader {
            half,
            buf: vec![0u8; buf_len],
            read_since_timer: false,
        }
    }

    /// Reads once into the buffer (`cx`'s waker is registered for readiness when nothing is
    /// there).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        let mut rb = ReadBuf::new(&mut self.buf);
        match std::pin::Pin::new(&mut self.half).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(rb.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads once and feeds what came (bytes, the end of the stream, an error) to the session
    /// `peer` carries on connection `generation`. `waker` is registered for the transport's
    /// readiness when nothing is there: the session's routing waker, whoever calls, where a
    /// `recv` may read; the driver's own elsewhere.
    pub(crate) fn poll_feed(
        &mut self,
        waker: &Waker,
        peer: &PeerShared,
        generation: u64,
    ) -> Poll<FedInput> {
        let r = std::task::ready!(self.poll_read(&mut Context::from_waker(waker)));
        self.read_since_timer = true;
        let bytes = *r.as_ref().unwrap_or(&0);
        let waiting = take_input(peer, generation, r, &mut self.buf);
        Poll::Ready(FedInput {
            open: bytes > 0,
            bytes,
            waiting,
        })
    }
}

/// What one read fed to the core.
pub(crate) struct FedInput {
    /// Bytes came (not the end of the stream, not an error).
    pub(crate) open: bool,
    /// How many.
    pub(crate) bytes: usize,
    /// Messages are waiting for the application.
    pub(crate) waiting: bool,
}

/// The routing waker registered for a connection's readiness (see the module's description).
impl Wake for PeerShared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self
            .read_route
            .compare_exchange(RECEIVER, HANDED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.readable.notify_waiters();
        } else {
            self.driver.notify_one();
        }
    }
}

/// The waker to register for a connection's readiness.
pub(crate) fn route(peer: &Arc<PeerShared>) -> Waker {
    Waker::from(peer.clone())
}

/// Takes readiness handed to the waiting calls, if there is some: the caller reads.
pub(crate) fn take_handed(peer: &PeerShared) -> bool {
    peer.read_route
        .compare_exchange(HANDED, RECEIVER, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// A waiting `recv` that took the connection's readiness reads from its own task: it reads
/// until the transport has nothing more (which registers the routing waker again), a read
/// fills the buffer (data streams in: the driver reads on) or [`DIRECT_READS`] reads, feeds
/// the core, handles what the input caused (wakes senders on
/// acknowledgements, writes a PONG or an ACK due) and wakes the driver only for what only
/// the driver can do (the connection ended, more to read, a timer to move).
pub(crate) fn read_handed(peer: &Arc<PeerShared>) {
    // Only once the handshake is over: what the driver reports of it (the session
    // established, resumed) is for the driver to report.
    let found = {
        let st = peer.lock();
        st.direct_output()
            .filter(|_| st.is_open())
            .map(|o| (o.clone(), st.generation))
    };
    let Some((output, generation)) = found else {
        peer.driver.notify_one();
        return;
    };
    // The driver reads now: it reads again before it sleeps.
    let Some(mut reader) = output.reader.try_lock().ok() else {
        return;
    };
    let Some(reader) = reader.as_mut() else {
        return;
    };
    let route = route(peer);
    for _ in 0..DIRECT_READS {
        let room = reader.buf.len();
        let fed = match reader.poll_feed(&route, peer, generation) {
            Poll::Pending => return,
            Poll::Ready(fed) => fed,
        };
        #[cfg(test)]
        output.direct_reads.fetch_add(1, Ordering::Relaxed);
        let mut st = peer.lock();
        if !fed.open || st.generation != generation || !st.is_open() {
            // The connection ends (or another took the session over): its driver's turn.
            drop(st);
            peer.driver.notify_one();
            return;
        }
        // What the input caused for receivers and senders is handled here; anything else
        // (the handshake's report, if the driver's turn after the WELCOME has not taken it
        // yet) is the driver's, and stays queued for it, in order.
        let mut progress = Vec::new();
        let ended = crate::driver::handle_events_while(&mut st, &mut progress, |e| {
            matches!(
                e,
                Event::MessagesAvailable | Event::Acknowledged { .. } | Event::Pong { .. }
            )
        });
        debug_assert!(
            ended.is_none(),
            "only events of an open connection were taken"
        );
        let driver_owed = matches!(&st.link, Link::Attached(c) if c.has_events());
        st.account();
        peer.transmit(st, true);
        // Receivers and senders are woken as the driver wakes them. Nothing else comes: the
        // handshake's report is not taken above, and no "messages waiting" report is made
        // while a `recv` waits (this call counts as one).
        crate::driver::report(peer, &mut progress, &mut |p: Progress| {
            debug_assert!(
                false,
                "a report for the driver taken by a reading call: {p:?}"
            );
        });
        if driver_owed {
            peer.driver.notify_one();
        }
        if fed.bytes == room {
            // The buffer filled: data streams in. The driver reads on, in parallel with the
            // application taking what came.
            break;
        }
        // A short read: the transport is drained and its readiness cleared, so the next poll
        // costs no system call; it registers the routing waker (or finds what came since).
    }
    // More may be waiting and nothing is registered for it.
    peer.driver.notify_one();
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Waker};
    use std::time::Duration;

    use std::sync::Arc;

    use super::{DRIVER, HANDED, RECEIVER};
    use crate::session::Link;
    use crate::{Client, ClientConfig, ClientEvent, Peer, Server, ServerConfig};

    /// A server and a client on loopback whose timers stay quiet for minutes (no PING, no
    /// idle timeout): whatever a driver reads here, it reads because it was woken to.
    async fn quiet_pair() -> (Server, Client, Peer) {
        let proto = crate::proto::Config::default()
            .keepalive_interval(Duration::from_secs(600))
            .idle_timeout(Duration::from_secs(1_800));
        let server = Server::bind(
            ["127.0.0.1:0"],
            ServerConfig::default().protocol(proto.clone()),
        )
        .await
        .unwrap();
        let client = Client::connect(
            server.local_addrs()[0].to_string(),
            ClientConfig::default().protocol(proto),
        )
        .await
        .unwrap();
        let peer = server.accept().await.unwrap();
        (server, client, peer)
    }

    /// The body a spawned `recv` took, within 20 s.
    async fn taken(
        call: tokio::task::JoinHandle<Result<crate::Message, crate::error::RecvError>>,
    ) -> bytes::Bytes {
        tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("the message came")
            .unwrap()
            .unwrap()
            .body
    }

    fn direct_reads(peer: &Peer) -> u64 {
        let st = peer.shared.lock();
        st.output
            .as_ref()
            .map_or(0, |o| o.direct_reads.load(Ordering::Relaxed))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_waiting_recv_reads_its_reply_itself() {
        let (_server, client, server_peer) = quiet_pair().await;
        let echo = tokio::spawn(async move {
            while let Ok(m) = server_peer.recv().await {
                if server_peer.send(m.body).await.is_err() {
                    break;
                }
            }
        });
        let peer = client.peer();
        for i in 0..200u32 {
            peer.send(i.to_string()).await.unwrap();
            assert_eq!(peer.recv().await.unwrap().body, i.to_string());
        }
        let n = direct_reads(peer);
        assert!(
            n >= 100,
            "the waiting recv read {n} of the 200 replies itself"
        );
        echo.abort();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_readiness_handed_to_a_call_that_gives_up_goes_to_the_driver() {
        let (_server, client, server_peer) = quiet_pair().await;
        let peer = client.peer();
        // Established, and the client's ACK of this one is out (its timer done).
        server_peer.send("first").await.unwrap();
        assert_eq!(peer.recv().await.unwrap().body, "first");
        server_peer.flush().await.unwrap();
        let read_by_calls = direct_reads(peer);

        // A call waits: the connection's readiness goes to it.
        let mut waiting = Box::pin(peer.readable());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(peer.shared.read_route.load(Ordering::Acquire), RECEIVER);
        server_peer.send("second").await.unwrap();
        let mut turns = 0;
        while peer.shared.read_route.load(Ordering::Acquire) != HANDED {
            turns += 1;
            assert!(turns < 1_000_000, "the reply's readiness never came");
            tokio::task::yield_now().await;
        }
        // It gives up without reading: the driver must read what came, or nothing would
        // (its timers are minutes away and the socket signals readiness once).
        drop(waiting);
        let m = tokio::time::timeout(Duration::from_secs(20), peer.recv())
            .await
            .expect("nobody read the message")
            .unwrap();
        assert_eq!(m.body, "second");
        assert_eq!(direct_reads(peer), read_by_calls, "the driver read it");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_recv_waiting_through_a_reconnect_leaves_the_handshake_to_the_driver() {
        let (_server, client, server_peer) = quiet_pair().await;
        let peer = client.peer();
        assert!(matches!(
            client.next_event().await,
            Some(ClientEvent::Connected { resumed: false })
        ));
        let waiting = tokio::spawn({
            let peer = peer.clone();
            async move { peer.recv().await }
        });
        let mut turns = 0;
        while peer.shared.read_route.load(Ordering::Acquire) != RECEIVER {
            turns += 1;
            assert!(turns < 1_000_000, "the recv never waited");
            tokio::task::yield_now().await;
        }
        // A write from a handle failed: the driver ends the connection, the client
        // reconnects while the recv still waits.
        {
            let output = peer.shared.lock().output.clone().unwrap();
            output.lock().failed = true;
        }
        peer.shared.driver.notify_one();
        let resumed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match client.next_event().await {
                    Some(ClientEvent::Connected { resumed }) => return resumed,
                    Some(_) => {}
                    None => panic!("the client stopped"),
                }
            }
        })
        .await
        .expect("the reconnect was reported");
        assert!(resumed);
        server_peer.send("after").await.unwrap();
        assert_eq!(taken(waiting).await, "after");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_recv_waiting_during_a_handshake_leaves_it_to_the_driver() {
        // The server holds every resume in its authentication hook until the test opens it.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let config = ServerConfig::default().authenticate_async({
            let gate = gate.clone();
            move |req| {
                let gate = gate.clone();
                let resuming = req.resuming;
                async move {
                    if resuming {
                        let _ = gate.acquire().await;
                    }
                    crate::AuthDecision::Accept
                }
            }
        });
        let server = Server::bind(["127.0.0.1:0"], config).await.unwrap();
        let client = Client::connect(
            server.local_addrs()[0].to_string(),
            ClientConfig::default().backoff(Duration::from_millis(1), Duration::from_millis(10)),
        )
        .await
        .unwrap();
        let server_peer = server.accept().await.unwrap();
        let peer = client.peer();
        // A write from a handle failed: the driver ends the connection, the client
        // reconnects, and its resume waits for the gate.
        {
            let output = peer.shared.lock().output.clone().unwrap();
            output.lock().failed = true;
        }
        peer.shared.driver.notify_one();
        let mut turns = 0;
        loop {
            {
                let st = peer.shared.lock();
                let handshaking = st
                    .output
                    .as_ref()
                    .is_some_and(|o| o.generation == st.generation)
                    && matches!(&st.link, Link::Attached(c) if !c.is_established());
                if handshaking {
                    break;
                }
            }
            turns += 1;
            assert!(turns < 1_000_000, "the client never reconnected");
            tokio::task::yield_now().await;
        }
        // A recv waits now: the handshake's answer is the driver's to read and report.
        let waiting = tokio::spawn({
            let peer = peer.clone();
            async move { peer.recv().await }
        });
        while peer.shared.lock().receivers == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(peer.shared.read_route.load(Ordering::Acquire), DRIVER);
        gate.add_permits(1);
        let resumed = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match client.next_event().await {
                    Some(ClientEvent::Connected { resumed: true }) => return,
                    Some(_) => {}
                    None => panic!("the client stopped"),
                }
            }
        })
        .await;
        assert!(resumed.is_ok(), "the resume was not reported");
        server_peer.send("after").await.unwrap();
        assert_eq!(taken(waiting).await, "after");
    }
}
