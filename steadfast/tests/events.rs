//! Server lifecycle events are never lost: a burst of more than 10,000 events with nobody
//! reading comes out whole and in order; an application that does not read them is refused
//! new sessions (ended sessions keep their places) instead of letting the queue grow, unless
//! it turned lifecycle events off; `accept` and `next_event` share one queue; `Server` is a
//! handle usable from any task.

#![cfg(all(feature = "runtime", feature = "zstd"))]
#![allow(clippy::unwrap_used)]

mod support;

use futures_util::FutureExt;
use std::collections::{HashMap, HashSet};
use std::future::IntoFuture;
use std::time::Duration;

use steadfast::error::ConnectError;
use steadfast::proto::{CloseCode, RejectCode, SessionEnd};
use steadfast::{Client, ClientConfig, EndReason, Server, ServerConfig, ServerEvent, SessionId};
use support::{
    PROMPTLY, bind_on_loopback, bounded, honest_client, next_event, texts, wait_for,
    waiting_events, within,
};
use tokio::task::JoinSet;

/// Sessions in the burst: each makes a Connected, a MessagesWaiting and an Ended event.
const BURST: usize = 3_400;
/// Sessions of the burst in progress at once.
const IN_FLIGHT: usize = 32;

/// What an event was, for comparing sequences.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Connected,
    Resumed,
    Disconnected,
    MessagesWaiting,
    Expired(usize),
    Ended(usize),
}

/// The session's name and what the event was.
fn describe(e: &ServerEvent) -> (String, Kind) {
    let (peer, kind) = match e {
        ServerEvent::Connected { peer } => (peer, Kind::Connected),
        ServerEvent::Resumed { peer } => (peer, Kind::Resumed),
        ServerEvent::Disconnected { peer, .. } => (peer, Kind::Disconnected),
        ServerEvent::MessagesWaiting { peer } => (peer, Kind::MessagesWaiting),
        ServerEvent::Expired {
            peer,
            unacknowledged,
        } => (peer, Kind::Expired(unacknowledged.len())),
        ServerEvent::Ended {
            peer,
            unacknowledged,
            ..
        } => (peer, Kind::Ended(unacknowledged.len())),
        other => panic!("an event this test does not know: {other:?}"),
    };
    (peer.name().unwrap_or("").to_owned(), kind)
}

/// One session of churn: connects as `name`, gets `from_server` messages from the server
/// (which it never reads, so they stay unacknowledged), sends one, waits until the server
/// holds it unread, and closes.
async fn churn_one(server: Server, addr: std::net::SocketAddr, name: String, from_server: usize) {
    let client = Client::connect(addr.to_string(), ClientConfig::default().name(&name))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let peer = server.peer_by_name(&name).expect("the server-side session");
    for j in 0..from_server {
        peer.try_send(format!("{name}/{j}")).unwrap();
    }
    client.send(format!("from {name}")).await.unwrap();
    wait_for(
        "the client's message to wait on the server",
        PROMPTLY,
        || peer.waiting() == 1,
    )
    .await;
    // The server holds the message unread on purpose: no use waiting for its receipt.
    client.peer().close_at_once("done").await;
}

/// `n` sessions of churn, one after another, none of them getting anything from the server.
async fn churn(server: &Server, addr: std::net::SocketAddr, prefix: &str, n: usize) {
    for i in 0..n {
        churn_one(server.clone(), addr, format!("{prefix}{i}"), 0).await;
    }
}

fn assert_server_full(refused: Result<Client, ConnectError>, what: &str) {
    match refused {
        Err(ConnectError::Rejected {
            code: RejectCode::ServerFull,
            ..
        }) => {}
        Err(e) => panic!("{what}: refused, but not with ServerFull: {e}"),
        Ok(_) => panic!("{what}: admitted, but should have been refused"),
    }
}

/// Reads events until `n` sessions have ended; returns every event read, described.
async fn read_until_ended(server: &Server, n: usize) -> Vec<(String, Kind)> {
    let mut out = Vec::new();
    let mut ended = 0;
    while ended < n {
        let e = describe(&next_event(server).await);
        if matches!(e.1, Kind::Ended(_) | Kind::Expired(_)) {
            ended += 1;
        }
        out.push(e);
    }
    out
}

#[tokio::test]
async fn a_burst_of_ten_thousand_unread_events_comes_out_whole_and_in_order() {
    bounded(async {
        let (server, addr) = bind_on_loopback(ServerConfig::default()).await;
        let mut sessions = JoinSet::new();
        for i in 0..BURST {
            if sessions.len() == IN_FLIGHT {
                sessions.join_next().await.unwrap().unwrap();
            }
            sessions.spawn(churn_one(server.clone(), addr, format!("c{i}"), i % 3));
        }
        while let Some(r) = sessions.join_next().await {
            r.unwrap();
        }

        // Only now does the application read: nothing may be missing.
        let mut by_session: HashMap<String, Vec<Kind>> = HashMap::new();
        let mut unacknowledged: HashMap<String, Vec<String>> = HashMap::new();
        let mut total = 0usize;
        let mut ended = 0usize;
        while ended < BURST {
            let event = next_event(&server).await;
            if let ServerEvent::Ended {
                peer,
                reason,
                unacknowledged: u,
            } = &event
            {
                ended += 1;
                assert!(
                    matches!(
                        reason,
                        EndReason::Protocol(SessionEnd::Closed {
                            by_peer: true,
                            code: CloseCode::Normal,
                            ..
                        })
                    ),
                    "{:?} ended with {reason:?}",
                    peer.name()
                );
                unacknowledged.insert(peer.name().unwrap().to_owned(), texts(u));
            }
            let (name, kind) = describe(&event);
            by_session.entry(name).or_default().push(kind);
            total += 1;
        }
        assert!(
            server.try_next_event().is_none(),
            "an event after every session ended"
        );
        assert!(total >= 10_000, "only {total} events");
        assert_eq!(by_session.len(), BURST);
        for i in 0..BURST {
            let name = format!("c{i}");
            let k = i % 3;
            assert_eq!(
                by_session[&name],
                [Kind::Connected, Kind::MessagesWaiting, Kind::Ended(k)],
                "the events of {name}"
            );
            let expected: Vec<String> = (0..k).map(|j| format!("{name}/{j}")).collect();
            assert_eq!(unacknowledged[&name], expected, "unacknowledged of {name}");
        }
        assert!(server.peers().is_empty());
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn ended_sessions_with_unread_events_keep_their_places_until_read() {
    bounded(async {
        const MAX: usize = 10;
        let (server, addr) = bind_on_loopback(ServerConfig::default().max_sessions(MAX)).await;
        churn(&server, addr, "first-", MAX).await;
        wait_for(
            "every churned session to leave the registry",
            PROMPTLY,
            || server.peers().is_empty(),
        )
        .await;
        // Nothing is live, yet the ten ended sessions hold their places.
        assert_server_full(
            honest_client(addr, ClientConfig::default()).await,
            "the 11th session with the events of 10 ended ones unread",
        );
        assert_server_full(
            honest_client(addr, ClientConfig::default()).await,
            "the 11th session, tried again",
        );

        let events = read_until_ended(&server, MAX).await;
        assert_eq!(
            events.iter().filter(|(_, k)| *k == Kind::Connected).count(),
            MAX
        );
        assert!(waiting_events(&server).is_empty());

        // Read: the places are free again, all ten of them.
        churn(&server, addr, "second-", MAX).await;
        wait_for("the second churn to leave the registry", PROMPTLY, || {
            server.peers().is_empty()
        })
        .await;
        assert_server_full(
            honest_client(addr, ClientConfig::default()).await,
            "the 11th session after the second churn",
        );
        read_until_ended(&server, MAX).await;
        let client = honest_client(addr, ClientConfig::default())
            .await
            .expect("admitted once the events are read");
        client.close("done").await;
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn without_lifecycle_events_churn_never_blocks_and_only_accept_is_fed() {
    bounded(async {
        const MAX: usize = 10;
        const CHURN: usize = 40;
        let (server, addr) = bind_on_loopback(
            ServerConfig::default()
                .max_sessions(MAX)
                .lifecycle_events(false),
        )
        .await;
        // Nothing accepts yet: churn leaves nothing behind and never blocks.
        churn(&server, addr, "a", CHURN).await;
        assert!(
            waiting_events(&server).is_empty(),
            "events recorded while off"
        );
        assert!(
            server.accept().now_or_never().is_none(),
            "accept handed out a session that ended before anything accepted"
        );
        // That first call made accept a reader: from now on every new session is kept for it
        // (an ended one counts among the unread until accept takes it).
        churn(&server, addr, "c", MAX).await;
        let mut names = Vec::new();
        while let Some(Some(peer)) = server.accept().now_or_never() {
            names.push(peer.name().unwrap_or_default().to_owned());
        }
        let expected: Vec<String> = (0..MAX).map(|i| format!("c{i}")).collect();
        assert_eq!(
            names, expected,
            "accept hands out each new session once, in order"
        );
        assert!(
            waiting_events(&server).is_empty(),
            "events recorded while off"
        );
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn accept_and_next_event_read_separate_queues() {
    bounded(async {
        let (server, addr) = bind_on_loopback(ServerConfig::default()).await;
        let mut clients = Vec::new();
        for i in 0..3 {
            clients.push(
                honest_client(addr, ClientConfig::default().name(format!("a{i}")))
                    .await
                    .unwrap(),
            );
        }
        let mut accepted = Vec::new();
        for _ in 0..3 {
            let peer = within("accept", PROMPTLY, server.accept())
                .await
                .expect("the server stopped");
            accepted.push((peer.name().unwrap().to_owned(), peer.id().unwrap()));
        }
        let names: Vec<&str> = accepted.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a0", "a1", "a2"], "accepted in order, each once");
        let ids: HashSet<SessionId> = accepted.iter().map(|(_, id)| *id).collect();
        assert_eq!(ids.len(), 3);

        // One more, while accept is in use: it is kept for accept.
        clients.push(
            honest_client(addr, ClientConfig::default().name("late"))
                .await
                .unwrap(),
        );
        for c in &clients {
            c.close("done").await;
        }
        // The events see every session, accepted or not.
        let events = read_until_ended(&server, 4).await;
        let connected: Vec<&str> = events
            .iter()
            .filter(|(_, k)| *k == Kind::Connected)
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(connected, ["a0", "a1", "a2", "late"]);
        let ended: HashSet<&str> = events
            .iter()
            .filter(|(_, k)| matches!(k, Kind::Ended(_)))
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(ended, HashSet::from(["a0", "a1", "a2", "late"]));
        // Reading the events took nothing from accept: "late" is still there, once.
        let late = within("accept", PROMPTLY, server.accept())
            .await
            .expect("the server stopped");
        assert_eq!(late.name(), Some("late"));
        assert!(
            server.accept().now_or_never().is_none(),
            "accept handed out a session twice"
        );
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn server_clones_kick_broadcast_and_list_peers_from_another_task() {
    bounded(async {
        let (server, addr) = bind_on_loopback(ServerConfig::default()).await;
        let a = honest_client(addr, ClientConfig::default().name("a"))
            .await
            .unwrap();
        let b = honest_client(addr, ClientConfig::default().name("b"))
            .await
            .unwrap();
        let a_id = a.id().unwrap();
        let clone = server.clone();
        // The original handle goes: a clone keeps the server running.
        drop(server);
        let (server, receipts) = tokio::spawn(async move {
            let names: HashSet<String> = clone
                .peers()
                .iter()
                .map(|p| p.name().unwrap().to_owned())
                .collect();
            assert_eq!(names, HashSet::from(["a".to_owned(), "b".to_owned()]));
            let sent = clone.broadcast("to everyone");
            let receipts: Vec<_> = sent
                .into_iter()
                .map(|(peer, r)| {
                    r.unwrap_or_else(|e| panic!("broadcast to {:?}: {e}", peer.name()))
                })
                .collect();
            (clone, receipts)
        })
        .await
        .unwrap();
        assert_eq!(receipts.len(), 2);
        assert_eq!(b.recv().await.unwrap().body, "to everyone");
        assert_eq!(a.recv().await.unwrap().body, "to everyone");
        for r in receipts {
            within("the broadcast's receipt", PROMPTLY, r.into_future())
                .await
                .unwrap();
        }

        let kicker = server.clone();
        let kicked = tokio::spawn(async move {
            (
                kicker.kick(a_id, "go away"),
                kicker.kick(SessionId([0; 16]), "nobody"),
            )
        })
        .await
        .unwrap();
        assert_eq!(kicked, (true, false));
        let reason = within("the kicked client's end", PROMPTLY, a.ended()).await;
        assert!(
            matches!(
                &reason,
                EndReason::Protocol(SessionEnd::Closed {
                    code: CloseCode::Kicked,
                    by_peer: true,
                    ..
                })
            ),
            "{reason:?}"
        );
        wait_for("the kicked session to leave", PROMPTLY, || {
            server.peer(a_id).is_none()
        })
        .await;
        assert_eq!(server.peers().len(), 1);
        assert!(!b.is_ended());
        b.close("done").await;
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

/// A `recv` waiting on a session takes what arrives without a `MessagesWaiting` event as well
/// (the application is reading that session already); a waiting `recv` dropped before it took
/// what arrived leaves the event behind, so the messages are still reported.
#[tokio::test]
async fn a_waiting_recv_takes_arrivals_and_a_dropped_one_leaves_the_event() {
    waiting_recv_and_dropped_recv(Duration::ZERO).await;
}

/// The same with a `recv` that polls before it waits (`recv_spin`): dropped while polling, it
/// leaves the event behind too.
#[tokio::test]
async fn a_polling_recv_takes_arrivals_and_a_dropped_one_leaves_the_event() {
    waiting_recv_and_dropped_recv(Duration::from_millis(5)).await;
}

async fn waiting_recv_and_dropped_recv(spin: Duration) {
    bounded(async {
        let (server, addr) = bind_on_loopback(ServerConfig::default().recv_spin(spin)).await;
        let client = honest_client(addr, ClientConfig::default().name("reader"))
            .await
            .unwrap();
        let peer = match next_event(&server).await {
            ServerEvent::Connected { peer } => peer,
            other => panic!("expected Connected, got {other:?}"),
        };

        // Request/response with the server reading by `recv`: no events for the arrivals.
        for i in 0..20 {
            let (m, sent) = tokio::join!(peer.recv(), client.send(format!("request {i}")));
            sent.unwrap();
            assert_eq!(m.unwrap().body, format!("request {i}"));
        }
        let events: Vec<_> = waiting_events(&server).iter().map(describe).collect();
        assert!(events.is_empty(), "{events:?}");

        // A `recv` that starts waiting, then is dropped before it takes the message.
        let mut waiting = Box::pin(peer.recv());
        assert!((&mut waiting).now_or_never().is_none());
        client.send("left behind").await.unwrap();
        wait_for("the message to arrive", PROMPTLY, || peer.waiting() == 1).await;
        assert!(waiting_events(&server).is_empty());
        drop(waiting);
        let event = describe(&next_event(&server).await);
        assert_eq!(event, ("reader".to_owned(), Kind::MessagesWaiting));
        assert_eq!(texts(&peer.recv_up_to(10).unwrap()), ["left behind"]);

        // Nobody waiting: an arrival is reported as before.
        client.send("reported").await.unwrap();
        let event = describe(&next_event(&server).await);
        assert_eq!(event, ("reader".to_owned(), Kind::MessagesWaiting));
        drop(client);
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}
