//! Review of the tokio runtime (driver, Peer, Client, Server): focused tests over loopback TCP
//! (127.0.0.1, port 0). Each test in the regressions section failed before its fix (line
//! references are to commit 38c25ea, where they were found); the others guard behaviour that
//! was correct and must stay so. Every test is bounded by a timeout.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use steadfast::proto::frame::{Close, Hello, Welcome, WelcomeKind};
use steadfast::proto::{
    CloseCode, Config, Decoder, Frame, Limits, RejectCode, ResumeRequest, ResumeToken, Seq,
    SessionId, Window,
};
use steadfast::{Client, ClientConfig, ClientEvent, Peer, Server, ServerConfig, ServerEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ------------------------------------------------------------------------------- helpers

/// Every test body runs under this bound, so nothing can hang the suite.
async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test hung")
}

/// Polls a future exactly once.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

/// Waits (bounded, polling) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

async fn bind(config: ServerConfig) -> (Server, String) {
    let server = Server::bind(["127.0.0.1:0"], config).await.unwrap();
    let addr = server.local_addrs()[0].to_string();
    (server, addr)
}

async fn next_connected(server: &mut Server) -> Peer {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), server.next_event())
            .await
            .expect("no event")
            .expect("server gone")
        {
            ServerEvent::Connected { peer } | ServerEvent::Resumed { peer } => return peer,
            _ => continue,
        }
    }
}

fn limits() -> Limits {
    Limits {
        max_frame: 65_536,
        max_message: 16 << 20,
        window: Window {
            messages: 100_000,
            bytes: 1 << 30,
        },
    }
}

fn hello_new() -> Frame {
    Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        limits: limits(),
        resume: None,
        first_seq: Seq(1),
        name: Some("raw".into()),
        credentials: None,
        transforms: Vec::new(),
    })
}

fn hello_resume(session_id: SessionId, token: ResumeToken, received: Seq) -> Frame {
    Frame::Hello(Hello {
        min_version: 1,
        max_version: 1,
        limits: limits(),
        resume: Some(ResumeRequest {
            partial: 0,
            session_id,
            token,
            received,
        }),
        first_seq: Seq(0),
        name: None,
        credentials: None,
        transforms: Vec::new(),
    })
}

/// A hand-driven peer speaking frames over a socket.
struct Raw {
    stream: TcpStream,
    dec: Decoder,
    buf: Vec<u8>,
}

impl Raw {
    fn new(stream: TcpStream) -> Raw {
        Raw {
            stream,
            dec: Decoder::new(1 << 20),
            buf: vec![0; 64 << 10],
        }
    }

    async fn connect(addr: &str) -> Raw {
        Raw::new(TcpStream::connect(addr).await.unwrap())
    }

    /// Writes all `frames` in one write.
    async fn send(&mut self, frames: &[Frame]) {
        let mut out = Vec::new();
        for f in frames {
            f.encode(&mut out);
        }
        let _ = self.stream.write_all(&out).await;
    }

    /// The next frame, `None` at EOF or on a transport error.
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.dec.decode().expect("malformed frame from the runtime") {
                return Some(f);
            }
            match self.stream.read(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.dec.feed(&self.buf[..n]),
            }
        }
    }
}

// ------------------------------------------- regressions (each failed before its fix)

/// Guard (a bug at 0601a3a, fixed in 3fa6680): a flush that is waiting when the session ends
/// with a message unacknowledged must fail, never say Ok. The CLI's `send` trusts it.
#[tokio::test]
async fn flush_fails_when_the_session_is_lost_with_unacknowledged_messages() {
    bounded(async {
        let (mut server, addr) = bind(ServerConfig::default()).await;
        let client = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        let peer = next_connected(&mut server).await;
        let receipt = client.send(&b"never taken"[..]).await.unwrap();
        let flushed = {
            let flush = client.flush();
            tokio::pin!(flush);
            assert!(poll_once(&mut flush).await.is_pending());
            // The server application never reads; it kicks the client instead.
            assert!(server.kick(peer.id().unwrap(), "bye"));
            flush.await
        };
        assert!(receipt.await.is_err(), "the receipt fails, as it should");
        let mut handed_back = Vec::new();
        while let Some(ev) = client.next_event().await {
            if let ClientEvent::SessionLost { unacknowledged, .. } = ev {
                handed_back.extend(unacknowledged);
                break;
            }
        }
        assert_eq!(handed_back.len(), 1, "the message was not acknowledged");
        // The event carries a copy; the handle keeps the list until it is taken.
        assert_eq!(client.take_unacknowledged(), handed_back);
        assert!(client.take_unacknowledged().is_empty());
        assert!(
            flushed.is_err(),
            "flush() said every message was acknowledged, yet {} came back unacknowledged",
            handed_back.len()
        );
    })
    .await;
}

/// A HELLO followed by another frame in the same write (a client must wait for WELCOME, but
/// may not): the frame waits, unparsed, until WELCOME is out and is then handled as a frame
/// of the established connection, so the outcome does not depend on how TCP split the
/// bytes (PROTOCOL.md §2). (It used to refuse the connection while leaving a stale HELLO
/// event behind, which registered an empty session.)
#[tokio::test]
async fn a_pipelined_hello_is_answered_and_its_frames_handled_after_welcome() {
    bounded(async {
        let (server, addr) = bind(ServerConfig::default().max_sessions(1)).await;
        let mut raw = Raw::connect(&addr).await;
        raw.send(&[hello_new(), Frame::Ping(1)]).await;
        let first = raw.next_frame().await;
        assert!(matches!(first, Some(Frame::Welcome(_))), "{first:?}");
        let second = raw.next_frame().await;
        assert!(matches!(second, Some(Frame::Pong(1))), "{second:?}");
        assert_eq!(server.peers().len(), 1);
        assert!(server.peers()[0].is_connected());
    })
    .await;
}

/// `Peer::close` on a server session that is lingering (detached) ends it in place but does
/// not remove it from the registry (no `forget`), emits no `Ended`, and the linger task skips
/// it (`expire` wants `Link::Detached`): the entry stays forever. `Server::kick` does it right.
#[tokio::test]
async fn closing_a_lingering_server_session_removes_it() {
    bounded(async {
        let (mut server, addr) = bind(ServerConfig::default()).await;
        let client = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        let peer = next_connected(&mut server).await;
        let id = peer.id().unwrap();
        drop(client);
        loop {
            if let Some(ServerEvent::Disconnected { .. }) = server.next_event().await {
                break;
            }
        }
        peer.close("bye").await;
        assert!(peer.is_ended());
        assert!(
            server.peer(id).is_none(),
            "the closed session is still registered (and counts against max_sessions)"
        );
    })
    .await;
}

/// `Server::shutdown(self)` documents that unacknowledged messages are reported in
/// `ServerEvent::Ended`, but it consumes the server and drops the event receiver, and `serve`
/// / `end_peer` took the messages off the handle before emitting: they are lost, silently.
#[tokio::test]
async fn shutdown_hands_back_unacknowledged_messages() {
    bounded(async {
        let (mut server, addr) = bind(ServerConfig::default()).await;
        let client = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        let peer = next_connected(&mut server).await;
        let receipt = peer
            .send(&b"the client never reads this"[..])
            .await
            .unwrap();
        server.shutdown(Duration::ZERO).await;
        let r = tokio::time::timeout(Duration::from_secs(5), receipt).await;
        assert!(matches!(r, Ok(Err(_))), "{r:?}");
        let back = peer.take_unacknowledged();
        assert_eq!(
            back.len(),
            1,
            "the unacknowledged message is neither on the handle nor in a readable event"
        );
        drop(client);
    })
    .await;
}

/// A session that ends while its earlier events are still unread is reported in full once
/// the application reads: `Connected`, then `Ended` carrying the unacknowledged message (and
/// the handle keeps a copy until it is taken).
#[tokio::test]
async fn a_session_end_read_late_carries_the_messages() {
    bounded(async {
        let (server, addr) = bind(ServerConfig::default()).await;
        let client = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        until("the session", || server.peers().len() == 1).await;
        let peer = server.peers().pop().unwrap();
        let id = peer.id().unwrap();
        // The client never reads it: it stays unacknowledged.
        peer.send(&b"unread"[..]).await.unwrap();
        assert!(server.kick(id, "bye"));
        until("the session's end", || server.peer(id).is_none()).await;
        assert!(matches!(
            server.next_event().await,
            Some(ServerEvent::Connected { .. })
        ));
        let mut ended = None;
        while let Some(ev) = server.try_next_event() {
            if let ServerEvent::Ended { unacknowledged, .. } = ev {
                ended = Some(unacknowledged.len());
            }
        }
        assert_eq!(
            ended,
            Some(1),
            "the Ended event with its message was not reported"
        );
        assert_eq!(peer.take_unacknowledged().len(), 1);
        drop(client);
    })
    .await;
}

/// Dropping the `Client` aborts its task; handles cloned from it (`client.peer().clone()`,
/// receipts) are never told: the session is not ended, receipts and `ended()` hang forever.
#[tokio::test]
async fn receipts_resolve_when_the_client_is_dropped() {
    bounded(async {
        let (mut server, addr) = bind(ServerConfig::default()).await;
        let client = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        let _server_side = next_connected(&mut server).await;
        let handle = client.peer().clone();
        let receipt = client.send(&b"x"[..]).await.unwrap();
        drop(client);
        let r = tokio::time::timeout(Duration::from_secs(2), receipt).await;
        assert!(
            matches!(r, Ok(Err(_))),
            "receipt still pending 2 s after the Client was dropped: {r:?}"
        );
        assert!(handle.is_ended());
    })
    .await;
}

/// The same on the server side: dropping the `Server` cancels every `serve` task, which
/// returns without ending its session, so handles the application kept hang forever.
#[tokio::test]
async fn receipts_resolve_when_the_server_is_dropped() {
    bounded(async {
        let (mut server, addr) = bind(ServerConfig::default()).await;
        let client = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        let peer = next_connected(&mut server).await;
        let receipt = peer.send(&b"x"[..]).await.unwrap();
        drop(server);
        let r = tokio::time::timeout(Duration::from_secs(2), receipt).await;
        assert!(
            matches!(r, Ok(Err(_))),
            "receipt still pending 2 s after the Server was dropped: {r:?}"
        );
        drop(client);
    })
    .await;
}

/// The client's event queue used to hold 256 events and drop the rest: after a long outage
/// (one `Reconnecting` per attempt) the terminal `SessionLost` was dropped with the messages it
/// carried. Now repeated events fold together and `SessionLost` is always read.
#[tokio::test]
async fn session_lost_is_never_dropped() {
    bounded(async {
        let (mut server, addr) = bind(ServerConfig::default()).await;
        let client = Client::connect(
            &addr,
            ClientConfig::default()
                .backoff(Duration::from_millis(1), Duration::from_millis(1))
                .max_attempts(Some(300)),
        )
        .await
        .unwrap();
        let _server_side = next_connected(&mut server).await;
        client.send(&b"x"[..]).await.unwrap();
        drop(server);
        let reason = tokio::time::timeout(Duration::from_secs(30), client.ended())
            .await
            .unwrap();
        let mut events = 0;
        let mut lost = Vec::new();
        while let Some(ev) = client.next_event().await {
            events += 1;
            if let ClientEvent::SessionLost { unacknowledged, .. } = ev {
                lost.push(unacknowledged.len());
            }
        }
        assert_eq!(
            lost,
            vec![1],
            "session ended ({reason}) after {events} events; SessionLost with its message was not read once"
        );
        assert!(events <= 4, "{events} events: repeated ones were not folded together");
    })
    .await;
}

/// When the session ends while the driver still has part of a batch to write
/// (`wpos < wbuf.len()`), `poll_transmit` is skipped, `handle_events` drops the connection
/// with its queued CLOSE reply, and only the stale batch is flushed. The peer that closed
/// gracefully never sees the confirming CLOSE (it sees EOF, reconnects, and is refused as an
/// unknown session, losing the final positions).
#[tokio::test]
async fn the_close_reply_is_sent_even_when_writes_are_pending() {
    bounded(async {
        let (mut server, addr) = bind(ServerConfig::default()).await;
        let mut raw = Raw::connect(&addr).await;
        raw.send(&[hello_new()]).await;
        let Some(Frame::Welcome(_)) = raw.next_frame().await else {
            panic!("no WELCOME")
        };
        let peer = next_connected(&mut server).await;
        let body = Bytes::from(vec![7u8; 1 << 20]);
        for _ in 0..24 {
            peer.send(body.clone()).await.unwrap();
        }
        // The raw client reads nothing: wait until the server's writer is stuck.
        let mut last = u64::MAX;
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let s = peer.stats().sent;
            if s == last {
                break;
            }
            last = s;
        }
        assert!(last < 24, "the writer never blocked ({last} sent)");
        raw.send(&[Frame::Close(Close {
            code: CloseCode::Normal,
            delivered: Seq(1),
            reason: "bye".into(),
        })])
        .await;
        let mut close_seen = false;
        while let Some(f) = raw.next_frame().await {
            if matches!(f, Frame::Close(_)) {
                close_seen = true;
            }
        }
        assert!(close_seen, "EOF without the confirming CLOSE");
    })
    .await;
}

/// A resume HELLO pipelined with another frame (valid token, valid position) takes the
/// session over like any resume: the frame is handled after the WELCOME, the old connection
/// gets GOAWAY SessionTakenOver, and the session's messages flow on the new one. (It used to be
/// refused after the session had been taken off the live connection, orphaning it.)
#[tokio::test]
async fn a_pipelined_resume_takes_the_session_over_cleanly() {
    bounded(async {
        let (mut server, addr) = bind(ServerConfig::default()).await;
        let mut a = Raw::connect(&addr).await;
        a.send(&[hello_new()]).await;
        let Some(Frame::Welcome(w)) = a.next_frame().await else {
            panic!("no WELCOME")
        };
        let peer = next_connected(&mut server).await;
        let mut b = Raw::connect(&addr).await;
        b.send(&[hello_resume(w.session_id, w.token, Seq(1)), Frame::Ping(1)])
            .await;
        let resumed = b.next_frame().await;
        assert!(
            matches!(&resumed, Some(Frame::Welcome(w)) if matches!(w.kind, WelcomeKind::Resumed { .. })),
            "{resumed:?}"
        );
        loop {
            match a.next_frame().await {
                Some(Frame::GoAway(g)) => {
                    assert_eq!(g.code, CloseCode::SessionTakenOver);
                    break;
                }
                Some(_) => continue,
                None => panic!("the old connection ended without GOAWAY"),
            }
        }
        peer.send(&b"still there?"[..]).await.unwrap();
        let mut pong = false;
        loop {
            match b.next_frame().await {
                Some(Frame::Pong(1)) => pong = true,
                Some(Frame::Data(d)) => {
                    assert_eq!(d.body, "still there?");
                    break;
                }
                Some(_) => continue,
                None => panic!("the resumed connection ended"),
            }
        }
        assert!(pong, "the pipelined PING was not answered");
    })
    .await;
}

/// Cancelling `Client::connect` (a caller's own timeout, a `select!`) leaves the spawned
/// connection task running with nobody holding the client: if the handshake then succeeds
/// it keeps a live session and reconnects forever.
#[tokio::test]
async fn a_cancelled_connect_leaves_no_task_behind() {
    bounded(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let connect = tokio::spawn(Client::connect(addr, ClientConfig::default()));
        let (stream, _) = listener.accept().await.unwrap();
        let mut raw = Raw::new(stream);
        let Some(Frame::Hello(_)) = raw.next_frame().await else {
            panic!("no HELLO")
        };
        // The caller gives up on connect.
        connect.abort();
        assert!(connect.await.unwrap_err().is_cancelled());
        // A (slow) server accepts after all.
        raw.send(&[Frame::Welcome(Welcome {
            timings: None,
            version: 1,
            session_id: SessionId([1; 16]),
            token: ResumeToken([2; 16]),
            limits: limits(),
            kind: WelcomeKind::New { first_seq: Seq(1) },
            transforms: Vec::new(),
        })])
        .await;
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            while raw.next_frame().await.is_some() {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "the connection of a cancelled connect() is still open, owned by nobody"
        );
    })
    .await;
}

/// Guard (a bug at 0601a3a, fixed in 8f119cf): the handshake cap holds for a burst of
/// connections accepted back to back, before any `serve` task has run (with the policy that
/// refuses; the evicting one is tested in `tests/admission.rs`).
#[tokio::test]
async fn the_handshake_cap_holds_for_a_burst() {
    bounded(async {
        let (_server, addr) = bind(
            ServerConfig::default()
                .max_handshakes(1)
                .admission(steadfast::AdmissionPolicy::Refuse),
        )
        .await;
        // Three silent connections, completed by the kernel before the accept loop runs.
        let socks: Vec<std::net::TcpStream> = (0..3)
            .map(|_| std::net::TcpStream::connect(&addr).unwrap())
            .collect();
        let mut refused = 0;
        for s in socks {
            s.set_nonblocking(true).unwrap();
            let mut raw = Raw::new(TcpStream::from_std(s).unwrap());
            if let Ok(Some(Frame::Reject(r))) =
                tokio::time::timeout(Duration::from_millis(500), raw.next_frame()).await
            {
                assert_eq!(r.code, RejectCode::ServerFull);
                refused += 1;
            }
        }
        assert_eq!(refused, 2, "max_handshakes(1) let {} in", 3 - refused);
    })
    .await;
}

// ---------------------------------------------------------------- guards (must pass)

/// `recv` is cancel safe: cancelling it over and over loses and duplicates nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_cancelled_repeatedly_loses_nothing() {
    recv_cancelled_repeatedly(Duration::ZERO).await;
}

/// ... also while it polls before waiting (`recv_spin`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_cancelled_repeatedly_while_polling_loses_nothing() {
    recv_cancelled_repeatedly(Duration::from_micros(200)).await;
}

async fn recv_cancelled_repeatedly(spin: Duration) {
    bounded(async {
        let (mut server, addr) = bind(ServerConfig::default().recv_spin(spin)).await;
        let client = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        let peer = next_connected(&mut server).await;
        let n = 2_000u32;
        let sender = {
            let c = client.peer().clone();
            tokio::spawn(async move {
                for i in 0..n {
                    c.send(i.to_be_bytes().to_vec()).await.unwrap();
                }
                c.flush().await.unwrap();
            })
        };
        let mut next = 0u32;
        while next < n {
            tokio::select! {
                m = peer.recv() => {
                    let m = m.unwrap();
                    assert_eq!(&m.body[..], &next.to_be_bytes());
                    next += 1;
                }
                () = tokio::task::yield_now() => {}
            }
        }
        sender.await.unwrap();
        assert_eq!(peer.waiting(), 0);
    })
    .await;
}

/// A sender blocked on a full outbox is woken by the acknowledgement (no lost wakeup), and
/// a receipt fails (never hangs) when the session is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_wakes_the_sender_and_receipts_fail_on_loss() {
    bounded(async {
        let proto = Config::default().max_message(1 << 10).outbox(1, 1 << 20);
        let (mut server, addr) = bind(ServerConfig::default()).await;
        let client = Client::connect(&addr, ClientConfig::default().protocol(proto))
            .await
            .unwrap();
        let peer = next_connected(&mut server).await;
        for i in 0..200u32 {
            let r = client.send(i.to_be_bytes().to_vec()).await.unwrap();
            assert!(client.try_send(&b"over"[..]).is_err());
            let m = peer.recv().await.unwrap();
            assert_eq!(&m.body[..], &i.to_be_bytes());
            r.await.unwrap();
        }
        let lost = client.send(&b"never taken"[..]).await.unwrap();
        assert!(server.kick(peer.id().unwrap(), "bye"));
        assert!(lost.await.is_err());
    })
    .await;
}

/// The connection gauge returns to zero after clients leave and after refused handshakes.
#[tokio::test]
async fn the_connection_count_does_not_drift() {
    bounded(async {
        let (mut server, addr) = bind(ServerConfig::default().max_connections(2)).await;
        let a = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        let b = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        next_connected(&mut server).await;
        next_connected(&mut server).await;
        assert!(
            Client::connect(&addr, ClientConfig::default())
                .await
                .is_err()
        );
        let mut bad = Raw::connect(&addr).await;
        bad.send(&[Frame::Ping(1)]).await;
        drop(bad);
        assert_eq!(server.connections(), 2);
        drop(a);
        drop(b);
        until("no connections", || server.connections() == 0).await;
    })
    .await;
}
