//! The handle API: `Client` clones share one session that ends when the last clone goes or
//! when any clone closes it; `close_within` and `flush_within` are bounded even when the
//! server never answers; `Peer::messages`, `Server::incoming` and `Server::events` are
//! streams that end with what they follow; `authenticate_async` lets a future decide and
//! refuses a client whose future never answers within the handshake timeout.

#![cfg(all(feature = "runtime", feature = "zstd"))]
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::pin::pin;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use steadfast::error::{ConnectError, ReceiptError, RecvError, SendError};
use steadfast::proto::{CloseCode, Config, RejectCode, SessionEnd};
use steadfast::{AuthDecision, ClientConfig, EndReason, Peer, Server, ServerConfig, ServerEvent};
use support::{PROMPTLY, bind_on_loopback, bounded, honest_client, texts, wait_for, within};

async fn accept(server: &Server) -> Peer {
    within("accept", PROMPTLY, server.accept())
        .await
        .expect("the server stopped")
}

fn closed_by_peer_with(reason: &EndReason, words: &str) -> bool {
    matches!(
        reason,
        EndReason::Protocol(SessionEnd::Closed {
            by_peer: true,
            code: CloseCode::Normal,
            reason,
            ..
        }) if reason == words
    )
}

#[tokio::test]
async fn a_client_session_ends_only_when_its_last_clone_drops() {
    bounded(async {
        let (server, addr) =
            bind_on_loopback(ServerConfig::default().linger(Duration::from_millis(300))).await;
        let first = honest_client(addr, ClientConfig::default()).await.unwrap();
        let on_server = accept(&server).await;
        let second = first.clone();
        let handle = first.peer().clone();
        assert_eq!(second.id(), first.id());

        drop(first);
        // The session lives on in the other clone.
        second.send("after the first drop").await.unwrap();
        let m = within("recv", PROMPTLY, on_server.recv()).await.unwrap();
        assert_eq!(m.body, "after the first drop");
        within("flush", PROMPTLY, second.flush()).await.unwrap();
        assert!(!handle.is_ended() && handle.is_connected());
        assert!(on_server.is_connected() && !on_server.is_ended());

        drop(second);
        let reason = within("the client-side end", PROMPTLY, handle.ended()).await;
        assert_eq!(reason, EndReason::ClientDropped);
        assert!(matches!(handle.send("late").await, Err(SendError::Closed)));
        // The server sees the connection go, then the unresumed session expire.
        let reason = within("the server-side end", PROMPTLY, on_server.ended()).await;
        assert!(matches!(reason, EndReason::Expired(_)), "{reason:?}");
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn close_on_one_clone_ends_the_session_for_every_clone() {
    bounded(async {
        let (server, addr) = bind_on_loopback(ServerConfig::default()).await;
        let first = honest_client(addr, ClientConfig::default()).await.unwrap();
        let on_server = accept(&server).await;
        let second = first.clone();

        first.close("bye").await;
        assert!(second.is_ended());
        assert!(matches!(second.send("late").await, Err(SendError::Closed)));
        assert_eq!(second.recv().await.unwrap_err(), RecvError::Ended);
        let reason = within("the server-side end", PROMPTLY, on_server.ended()).await;
        assert!(closed_by_peer_with(&reason, "bye"), "{reason:?}");
        drop((first, second));
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn close_within_bounds_a_client_whose_server_is_gone_and_hands_back_its_messages() {
    bounded(async {
        const LIMIT: Duration = Duration::from_millis(200);
        let (server, addr) = bind_on_loopback(ServerConfig::default()).await;
        let client = honest_client(addr, ClientConfig::default()).await.unwrap();
        let on_server = accept(&server).await;
        // Two messages the server's application never takes, so never acknowledges.
        client.send("one").await.unwrap();
        client.send("two").await.unwrap();
        wait_for("both messages on the server", PROMPTLY, || {
            on_server.waiting() == 2
        })
        .await;
        drop((on_server, server));
        wait_for("the client to lose its connection", PROMPTLY, || {
            !client.is_connected()
        })
        .await;
        // Queued while it reconnects (in vain).
        client.send("three").await.unwrap();

        let started = Instant::now();
        let reason = client.close_within("bye", LIMIT).await;
        let took = started.elapsed();
        assert!(
            took >= LIMIT - Duration::from_millis(5),
            "returned after {took:?}: something else ended the session"
        );
        assert!(
            took < LIMIT + Duration::from_millis(300),
            "close_within({LIMIT:?}) took {took:?}"
        );
        assert!(
            matches!(
                &reason,
                EndReason::Protocol(SessionEnd::Closed {
                    by_peer: false,
                    confirmed: false,
                    ..
                })
            ),
            "{reason:?}"
        );
        assert!(client.is_ended());
        assert_eq!(
            texts(&client.take_unacknowledged()),
            ["one", "two", "three"]
        );
        assert!(matches!(client.send("late").await, Err(SendError::Closed)));
    })
    .await;
}

#[tokio::test]
async fn flush_within_times_out_while_the_server_application_does_not_read() {
    bounded(async {
        let (server, addr) = bind_on_loopback(ServerConfig::default()).await;
        let client = honest_client(addr, ClientConfig::default()).await.unwrap();
        let on_server = accept(&server).await;
        client.send("a").await.unwrap();
        client.send("b").await.unwrap();

        let r = client.flush_within(Duration::from_millis(300)).await;
        assert_eq!(r, Err(ReceiptError::TimedOut));
        assert_eq!(client.stats().in_flight, 2, "the messages must stay queued");
        assert!(!client.is_ended());

        // Still queued: once the application reads, they arrive and flush resolves.
        let got = [
            on_server.recv().await.unwrap(),
            on_server.recv().await.unwrap(),
        ];
        assert_eq!(texts(&got), ["a", "b"]);
        within("flush", PROMPTLY, client.flush()).await.unwrap();
        assert_eq!(client.stats().in_flight, 0);
        client.close("done").await;
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn flush_within_times_out_until_a_manual_ack_acknowledges() {
    bounded(async {
        let (server, addr) =
            bind_on_loopback(ServerConfig::default().protocol(Config::default().manual_ack(true)))
                .await;
        let client = honest_client(addr, ClientConfig::default()).await.unwrap();
        let on_server = accept(&server).await;
        client.send("a").await.unwrap();
        let m = within("recv", PROMPTLY, on_server.recv()).await.unwrap();

        // Taken, not acknowledged.
        let r = client.flush_within(Duration::from_millis(300)).await;
        assert_eq!(r, Err(ReceiptError::TimedOut));
        assert_eq!(client.stats().in_flight, 1);

        assert_eq!(on_server.acknowledge(m.seq), 1);
        within("flush", PROMPTLY, client.flush()).await.unwrap();
        client.close("done").await;
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn the_messages_stream_yields_in_order_and_ends_with_the_session() {
    bounded(async {
        const N: usize = 500;
        let (server, addr) = bind_on_loopback(ServerConfig::default()).await;
        let client = honest_client(addr, ClientConfig::default()).await.unwrap();
        let on_server = accept(&server).await;
        let mut messages = pin!(on_server.messages());
        let sender = {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..N {
                    client.send(format!("m{i}")).await.unwrap();
                }
            })
        };
        for i in 0..N {
            let m = within("the next message", PROMPTLY, messages.next())
                .await
                .expect("the stream ended early")
                .unwrap();
            assert_eq!(m.body, format!("m{i}"));
        }
        sender.await.unwrap();
        within("flush", PROMPTLY, client.flush()).await.unwrap();
        client.close("done").await;
        let end = within("the stream's end", PROMPTLY, messages.next()).await;
        assert!(end.is_none(), "after the session ended: {end:?}");
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn incoming_and_events_streams_follow_the_server_and_end_with_it() {
    bounded(async {
        let (server, addr) = bind_on_loopback(ServerConfig::default()).await;
        let mut incoming = pin!(server.incoming());
        let mut events = pin!(server.events());
        let mut clients = Vec::new();
        for i in 0..3 {
            let name = format!("s{i}");
            clients.push(
                honest_client(addr, ClientConfig::default().name(&name))
                    .await
                    .unwrap(),
            );
            let peer = within("incoming", PROMPTLY, incoming.next())
                .await
                .expect("the incoming stream ended");
            assert_eq!(peer.name(), Some(name.as_str()));
        }
        for c in &clients {
            c.close("done").await;
        }
        // The events see the same sessions (accept reads a queue of its own).
        let mut connected = Vec::new();
        let mut ended = HashSet::new();
        while ended.len() < 3 {
            match within("the next event", PROMPTLY, events.next())
                .await
                .expect("the events stream ended")
            {
                ServerEvent::Connected { peer } => {
                    assert!(ended.is_empty(), "Connected after an end");
                    connected.push(peer.name().unwrap().to_owned());
                }
                ServerEvent::Ended { peer, reason, .. } => {
                    assert!(closed_by_peer_with(&reason, "done"), "{reason:?}");
                    assert!(ended.insert(peer.name().unwrap().to_owned()));
                }
                _ => {}
            }
        }
        assert_eq!(connected, ["s0", "s1", "s2"]);
        server.shutdown(Duration::ZERO).await;
        // Both streams end with the server (whatever was left is read first).
        while within("the events stream's end", PROMPTLY, events.next())
            .await
            .is_some()
        {}
        assert!(
            within("the incoming stream's end", PROMPTLY, incoming.next())
                .await
                .is_none()
        );
    })
    .await;
}

/// A server whose asynchronous authenticator decides by the credentials: `good` gets in,
/// `rename` gets in as "renamed", `hang` is never answered, anything else is refused.
async fn authenticating_server(handshake: Duration) -> (Server, std::net::SocketAddr) {
    let config = ServerConfig::default()
        .protocol(Config::default().handshake_timeout(handshake))
        .authenticate_async(|req| {
            let given = req.credentials.map(<[u8]>::to_vec);
            async move {
                // Truly asynchronous: the answer comes after a trip through the scheduler.
                tokio::task::yield_now().await;
                match given.as_deref() {
                    Some(b"good") => AuthDecision::Accept,
                    Some(b"rename") => AuthDecision::AcceptAs("renamed".into()),
                    Some(b"hang") => std::future::pending().await,
                    _ => AuthDecision::Refuse("unknown token".into()),
                }
            }
        });
    bind_on_loopback(config).await
}

fn with(credentials: &'static str) -> ClientConfig {
    ClientConfig::default()
        .name("given")
        .credentials(credentials)
}

#[tokio::test]
async fn authenticate_async_accepts_and_refuses_per_the_futures_answer() {
    bounded(async {
        let (server, addr) = authenticating_server(Duration::from_secs(10)).await;
        let good = honest_client(addr, with("good")).await.unwrap();
        assert_eq!(accept(&server).await.name(), Some("given"));
        let renamed = honest_client(addr, with("rename")).await.unwrap();
        assert_eq!(accept(&server).await.name(), Some("renamed"));
        match honest_client(addr, with("bad")).await {
            Err(ConnectError::Rejected {
                code: RejectCode::Unauthenticated,
                reason,
            }) => assert_eq!(reason, "unknown token"),
            Err(e) => panic!("refused, but not as Unauthenticated: {e}"),
            Ok(_) => panic!("bad credentials were accepted"),
        }
        assert_eq!(server.peers().len(), 2);
        good.close("done").await;
        renamed.close("done").await;
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn an_authenticator_that_never_answers_refuses_within_the_handshake_timeout() {
    bounded(async {
        const HANDSHAKE: Duration = Duration::from_millis(500);
        let (server, addr) = authenticating_server(HANDSHAKE).await;
        let started = Instant::now();
        let hung = tokio::spawn(honest_client(addr, with("hang")));
        // The hung check holds up nobody else.
        let good = honest_client(addr, with("good")).await.unwrap();
        assert!(!hung.is_finished(), "the hung check answered");
        let refused = within("the hung client's refusal", PROMPTLY, hung)
            .await
            .unwrap();
        let took = started.elapsed();
        match refused {
            Err(ConnectError::Rejected {
                code: RejectCode::Unauthenticated,
                ..
            }) => {}
            Err(e) => panic!("refused, but not as Unauthenticated: {e}"),
            Ok(_) => panic!("a check that never answered let the client in"),
        }
        assert!(
            took >= HANDSHAKE,
            "refused after {took:?}, before the timeout"
        );
        assert!(
            took < HANDSHAKE + Duration::from_secs(2),
            "refused only after {took:?}"
        );
        assert_eq!(server.peers().len(), 1);
        good.close("done").await;
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

/// `close` right after sends waits for their acknowledgement before the CLOSE goes out
/// (PROTOCOL.md §7.2): a CLOSE makes the peer discard what it received and has not delivered,
/// so closing at once used to hand those messages back to the sender.
#[tokio::test]
async fn close_right_after_sending_delivers_everything_first() {
    bounded(async {
        let (server, addr) = bind_on_loopback(ServerConfig::default()).await;
        let client = honest_client(addr, ClientConfig::default()).await.unwrap();
        let on_server = accept(&server).await;
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Ok(m) = on_server.recv().await {
                got.push(m);
            }
            got
        });
        for i in 0..200u32 {
            client.send(i.to_string()).await.unwrap();
        }
        let reason = client
            .peer()
            .close_within("done", Duration::from_secs(5))
            .await;
        assert!(
            matches!(
                reason,
                EndReason::Protocol(SessionEnd::Closed {
                    confirmed: true,
                    ..
                })
            ),
            "{reason:?}"
        );
        assert!(
            client.peer().take_unacknowledged().is_empty(),
            "messages were handed back after a graceful close"
        );
        let got = within("the reader", PROMPTLY, reader).await.unwrap();
        assert_eq!(
            texts(&got),
            (0..200).map(|i| i.to_string()).collect::<Vec<_>>()
        );
    })
    .await;
}

#[tokio::test]
async fn readable_and_writable_wait_without_taking_or_queuing() {
    bounded(async {
        let (server, addr) = bind_on_loopback(ServerConfig::default()).await;
        let proto = Config::default().outbox(4, 16 << 20);
        let client = honest_client(addr, ClientConfig::default().protocol(proto))
            .await
            .unwrap();
        let peer = accept(&server).await;

        // readable: waits for a message, takes nothing; dropped while waiting, nothing lost.
        {
            let mut waiting = pin!(peer.readable());
            assert!(futures_util::poll!(waiting.as_mut()).is_pending());
        }
        client.send("one").await.unwrap();
        assert!(within("readable", PROMPTLY, peer.readable()).await);
        assert!(within("readable again", PROMPTLY, peer.readable()).await);
        assert_eq!(peer.try_recv().unwrap().unwrap().body, "one");
        within("flush", PROMPTLY, client.flush()).await.unwrap();

        // writable: the outbox holds 4 messages; the server does not take them.
        for i in 0..4 {
            client.try_send(format!("fill {i}")).unwrap();
        }
        assert!(matches!(client.try_send("over"), Err(SendError::Full)));
        let mut room = pin!(client.writable(4));
        assert!(futures_util::poll!(room.as_mut()).is_pending());
        assert_eq!(peer.recv().await.unwrap().body, "fill 0");
        within("writable", PROMPTLY, room).await;
        client.try_send("fits now").unwrap();
        assert_eq!(client.stats().queued, 6);

        // Everything arrives, in order; with the session over, readable says false once
        // nothing is left, and writable returns.
        let mut rest = Vec::new();
        while rest.len() < 4 {
            within("readable", PROMPTLY, peer.readable()).await;
            rest.extend(texts(&peer.recv_up_to(10).unwrap()));
        }
        assert_eq!(rest, ["fill 1", "fill 2", "fill 3", "fits now"]);
        client.close("done").await;
        assert!(!within("readable at the end", PROMPTLY, peer.readable()).await);
        within("writable after the end", PROMPTLY, client.writable(1)).await;
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}
