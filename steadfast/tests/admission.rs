//! Admission per source address: an attacker on 127.0.0.2 fills the server's handshake and
//! session slots, and an honest client on 127.0.0.1 (a normal `Client`) must still get in,
//! unless the application chose `AdmissionPolicy::Refuse`.
//!
//! Handshakes: silent sockets (they never send a byte) count against
//! `max_handshakes_per_addr` and `max_handshakes`; at a limit the oldest pending handshake of
//! the address over its share is closed. Sessions: raw sessions completed with the protocol
//! core count against `max_sessions_per_addr` and `max_sessions`; at a limit the oldest
//! *lingering* session of the address over its share is evicted and reported as
//! `ServerEvent::Expired` with its unacknowledged messages.

#![cfg(all(feature = "runtime", feature = "zstd"))]
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use steadfast::error::ConnectError;
use steadfast::proto::RejectCode;
use steadfast::{
    AdmissionPolicy, ClientConfig, Peer, Server, ServerConfig, ServerEvent, SessionId,
};
use support::{
    ATTACKER, HONEST, PROMPTLY, RawConn, Sampler, bind_on_loopback, bounded, closed_by_server,
    honest_client, next_event, patient, sessions_from, tcp_from, texts, wait_for, waiting_events,
};
use tokio::net::TcpStream;

/// Silent sockets stay pending for the whole test (no handshake timeout within it).
const HANDSHAKE: Duration = Duration::from_secs(60);

/// How long a socket that should stay open is watched for a close.
const STAYS_OPEN: Duration = Duration::from_millis(50);

/// A third loopback address, for a second party holding a slot.
const BYSTANDER: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

fn config() -> ServerConfig {
    ServerConfig::default().protocol(patient(HANDSHAKE))
}

/// Opens `n` silent sockets from `source`, one at a time, each counted as a pending handshake
/// before the next opens (so that their order on the server is the order here).
async fn silent_sockets(
    server: &Server,
    addr: std::net::SocketAddr,
    source: std::net::IpAddr,
    n: usize,
) -> Vec<TcpStream> {
    let mut sockets = Vec::new();
    for _ in 0..n {
        let before = server.handshakes();
        sockets.push(tcp_from(source, addr).await);
        wait_for(
            "the silent socket to count as a handshake",
            PROMPTLY,
            || server.handshakes() == before + 1,
        )
        .await;
    }
    sockets
}

/// Indices of the sockets the server has closed (each watched for [`STAYS_OPEN`]).
async fn closed(sockets: &mut [TcpStream]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, s) in sockets.iter_mut().enumerate() {
        if closed_by_server(s, STAYS_OPEN).await {
            out.push(i);
        }
    }
    out
}

/// `n` attacker sessions, each still connected.
async fn attacker_sessions(addr: std::net::SocketAddr, n: usize) -> Vec<RawConn> {
    let mut raws = Vec::new();
    for i in 0..n {
        let raw = RawConn::connect_from(ATTACKER, addr, &format!("attacker-{i}"))
            .await
            .unwrap_or_else(|e| panic!("attacker session {i} refused: {e:?}"));
        raws.push(raw);
    }
    raws
}

/// Closes each raw session's socket, oldest first, waiting until the server sees each one
/// lingering before the next (so that their linger order is the order here); then sends each
/// lingering session one message it will never acknowledge. Returns their server-side handles.
async fn linger_with_unacknowledged(server: &Server, raws: Vec<RawConn>) -> Vec<(SessionId, Peer)> {
    let mut out = Vec::new();
    for raw in raws {
        let id = raw.session_id();
        let peer = server
            .peer(id)
            .expect("the server knows the attacker's session");
        drop(raw);
        wait_for("the attacker's session to linger", PROMPTLY, || {
            !peer.is_connected()
        })
        .await;
        assert!(!peer.is_ended(), "a lingering session must not end yet");
        out.push((id, peer));
    }
    for (i, (_, peer)) in out.iter().enumerate() {
        peer.try_send(format!("to-attacker-{i}"))
            .expect("a lingering session queues what is sent to it");
    }
    out
}

/// The next `Expired` event (other events are skipped).
async fn next_expired(server: &Server) -> (Peer, Vec<String>) {
    loop {
        if let ServerEvent::Expired {
            peer,
            unacknowledged,
        } = next_event(server).await
        {
            return (peer, texts(&unacknowledged));
        }
    }
}

fn assert_server_full(refused: Result<steadfast::Client, ConnectError>, what: &str) {
    match refused {
        Err(ConnectError::Rejected {
            code: RejectCode::ServerFull,
            ..
        }) => {}
        Err(e) => panic!("{what}: refused, but not with ServerFull: {e}"),
        Ok(_) => panic!("{what}: admitted, but should have been refused"),
    }
}

/// Connects the honest client, checks the server sees it from 127.0.0.1, closes it.
async fn honest_gets_in(server: &Server, addr: std::net::SocketAddr) {
    let client = honest_client(addr, ClientConfig::default().name("honest"))
        .await
        .expect("the honest client must get in");
    let peer = server.peer_by_name("honest").expect("the honest session");
    assert_eq!(peer.addr().map(|a| a.ip()), Some(HONEST));
    client.close("done").await;
}

// ---------------------------------------------------------------------------- handshakes

#[tokio::test]
async fn silent_sockets_past_the_per_address_limit_evict_that_addresses_oldest() {
    bounded(async {
        const PER_ADDR: usize = 8;
        const EXTRA: usize = 4;
        let (server, addr) = bind_on_loopback(config().max_handshakes_per_addr(PER_ADDR)).await;
        let sampler = Sampler::start({
            let s = server.clone();
            move || s.handshakes()
        });
        let mut sockets = silent_sockets(&server, addr, ATTACKER, PER_ADDR).await;
        for i in PER_ADDR..PER_ADDR + EXTRA {
            sockets.push(tcp_from(ATTACKER, addr).await);
            // The newcomer takes the place of the address's oldest pending handshake.
            let oldest = i - PER_ADDR;
            assert!(
                closed_by_server(&mut sockets[oldest], PROMPTLY).await,
                "attacker socket {oldest} (the oldest) was not closed when socket {i} arrived"
            );
            assert_eq!(server.handshakes(), PER_ADDR);
        }
        assert_eq!(
            closed(&mut sockets[EXTRA..]).await,
            Vec::<usize>::new(),
            "the {PER_ADDR} newest attacker sockets must stay open"
        );
        wait_for(
            "connections to count the open sockets only",
            PROMPTLY,
            || server.connections() == PER_ADDR,
        )
        .await;
        honest_gets_in(&server, addr).await;
        assert_eq!(server.handshakes(), PER_ADDR);
        let max = sampler.stop(server.handshakes()).await;
        // The honest client's own handshake may be counted beside the attacker's.
        assert!(
            (PER_ADDR as u64..=PER_ADDR as u64 + 1).contains(&max),
            "pending handshakes peaked at {max}"
        );
        drop(sockets);
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn per_address_handshake_limit_with_refuse_closes_the_newcomer_instead() {
    bounded(async {
        const PER_ADDR: usize = 8;
        let (server, addr) = bind_on_loopback(
            config()
                .max_handshakes_per_addr(PER_ADDR)
                .admission(AdmissionPolicy::Refuse),
        )
        .await;
        let mut sockets = silent_sockets(&server, addr, ATTACKER, PER_ADDR).await;
        let mut newcomer = tcp_from(ATTACKER, addr).await;
        assert!(
            closed_by_server(&mut newcomer, PROMPTLY).await,
            "the attacker's socket over the limit was not refused"
        );
        assert_eq!(closed(&mut sockets).await, Vec::<usize>::new());
        assert_eq!(server.handshakes(), PER_ADDR);
        honest_gets_in(&server, addr).await;
        drop(sockets);
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn total_handshake_limit_filled_by_one_address_lets_another_address_in() {
    bounded(async {
        const TOTAL: usize = 16;
        let (server, addr) = bind_on_loopback(
            config()
                .max_handshakes(TOTAL)
                .max_handshakes_per_addr(1_000),
        )
        .await;
        let mut sockets = silent_sockets(&server, addr, ATTACKER, TOTAL).await;
        let client = honest_client(addr, ClientConfig::default().name("honest"))
            .await
            .expect("the honest client must get in: the attacker holds more than its share");
        assert!(
            closed_by_server(&mut sockets[0], PROMPTLY).await,
            "the attacker's oldest pending handshake was not evicted"
        );
        assert_eq!(closed(&mut sockets[1..]).await, Vec::<usize>::new());
        assert!(server.handshakes() <= TOTAL);
        client.close("done").await;
        drop(sockets);
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn total_handshake_limit_evicts_the_biggest_address_when_two_addresses_hold_slots() {
    // The working side of the bug above: with a second address holding one slot the share is
    // 16 / 2 = 8, the attacker's 15 are over it, and its oldest makes room.
    bounded(async {
        const TOTAL: usize = 16;
        let (server, addr) = bind_on_loopback(
            config()
                .max_handshakes(TOTAL)
                .max_handshakes_per_addr(1_000),
        )
        .await;
        let mut bystander = silent_sockets(&server, addr, BYSTANDER, 1).await;
        let mut sockets = silent_sockets(&server, addr, ATTACKER, TOTAL - 1).await;
        assert_eq!(server.handshakes(), TOTAL);
        honest_gets_in(&server, addr).await;
        assert!(
            closed_by_server(&mut sockets[0], PROMPTLY).await,
            "the attacker's oldest pending handshake was not evicted"
        );
        assert_eq!(closed(&mut sockets[1..]).await, Vec::<usize>::new());
        assert_eq!(closed(&mut bystander).await, Vec::<usize>::new());
        drop((sockets, bystander));
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn total_handshake_limit_with_refuse_refuses_the_honest_client() {
    bounded(async {
        const TOTAL: usize = 16;
        let (server, addr) = bind_on_loopback(
            config()
                .max_handshakes(TOTAL)
                .max_handshakes_per_addr(1_000)
                .admission(AdmissionPolicy::Refuse),
        )
        .await;
        let mut sockets = silent_sockets(&server, addr, ATTACKER, TOTAL).await;
        assert_server_full(
            honest_client(addr, ClientConfig::default()).await,
            "the honest client under Refuse",
        );
        assert_eq!(closed(&mut sockets).await, Vec::<usize>::new());
        assert_eq!(server.handshakes(), TOTAL);
        assert!(server.peers().is_empty());
        drop(sockets);
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

// ------------------------------------------------------------------------------ sessions

#[tokio::test]
async fn per_address_session_limit_evicts_the_oldest_lingering_session_as_expired() {
    bounded(async {
        const PER_ADDR: usize = 4;
        let (server, addr) = bind_on_loopback(config().max_sessions_per_addr(PER_ADDR)).await;
        let sampler = Sampler::start({
            let s = server.clone();
            move || sessions_from(&s, ATTACKER)
        });
        let raws = attacker_sessions(addr, PER_ADDR).await;
        let lingering = linger_with_unacknowledged(&server, raws).await;
        assert_eq!(sessions_from(&server, ATTACKER), PER_ADDR);

        // One more: the oldest lingering one goes, with its message.
        let fifth = attacker_sessions(addr, 1).await;
        let (peer, unacknowledged) = next_expired(&server).await;
        assert_eq!(
            peer.id(),
            Some(lingering[0].0),
            "not the oldest lingering session"
        );
        assert_eq!(unacknowledged, ["to-attacker-0"]);
        assert!(lingering[0].1.is_ended());
        assert!(server.peer(lingering[0].0).is_none());
        for (id, p) in &lingering[1..] {
            assert!(server.peer(*id).is_some() && !p.is_ended());
        }
        assert_eq!(sessions_from(&server, ATTACKER), PER_ADDR);

        // And one more: the next oldest.
        let sixth = attacker_sessions(addr, 1).await;
        let (peer, unacknowledged) = next_expired(&server).await;
        assert_eq!(
            peer.id(),
            Some(lingering[1].0),
            "not the oldest lingering session"
        );
        assert_eq!(unacknowledged, ["to-attacker-1"]);
        assert_eq!(sessions_from(&server, ATTACKER), PER_ADDR);

        honest_gets_in(&server, addr).await;
        let max = sampler.stop(sessions_from(&server, ATTACKER)).await;
        assert_eq!(
            max, PER_ADDR as u64,
            "sessions from the attacker peaked at {max}"
        );
        drop((fifth, sixth));
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn per_address_session_limit_with_every_session_connected_refuses_the_next() {
    bounded(async {
        const PER_ADDR: usize = 4;
        let (server, addr) = bind_on_loopback(config().max_sessions_per_addr(PER_ADDR)).await;
        let raws = attacker_sessions(addr, PER_ADDR).await;
        let refused = RawConn::connect_from(ATTACKER, addr, "attacker-extra").await;
        match refused {
            Err(e) => assert_eq!(e.reject_code(), Some(RejectCode::ServerFull), "{e:?}"),
            Ok(_) => panic!("a fifth session from the attacker was admitted"),
        }
        // Nothing was evicted: every attacker session is still there and connected.
        for raw in &raws {
            let peer = server
                .peer(raw.session_id())
                .expect("an attacker session went");
            assert!(peer.is_connected() && !peer.is_ended());
        }
        assert_eq!(sessions_from(&server, ATTACKER), PER_ADDR);
        honest_gets_in(&server, addr).await;
        drop(raws);
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn total_session_limit_filled_by_one_address_lets_another_address_in() {
    bounded(async {
        const TOTAL: usize = 6;
        let (server, addr) =
            bind_on_loopback(config().max_sessions(TOTAL).max_sessions_per_addr(100)).await;
        let raws = attacker_sessions(addr, TOTAL).await;
        let lingering = linger_with_unacknowledged(&server, raws).await;
        let client = honest_client(addr, ClientConfig::default().name("honest"))
            .await
            .expect("the honest client must get in: the attacker holds more than its share");
        let (peer, unacknowledged) = next_expired(&server).await;
        assert_eq!(
            peer.id(),
            Some(lingering[0].0),
            "not the oldest lingering session"
        );
        assert_eq!(unacknowledged, ["to-attacker-0"]);
        assert_eq!(sessions_from(&server, ATTACKER), TOTAL - 1);
        client.close("done").await;
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn total_session_limit_evicts_the_biggest_address_when_two_addresses_hold_sessions() {
    // The working side of the bug above: the honest address holds one session, so the share
    // is 6 / 2 = 3, the attacker's 5 lingering sessions are over it, and its oldest goes.
    bounded(async {
        const TOTAL: usize = 6;
        let (server, addr) =
            bind_on_loopback(config().max_sessions(TOTAL).max_sessions_per_addr(100)).await;
        let first = honest_client(addr, ClientConfig::default().name("honest-1"))
            .await
            .unwrap();
        let raws = attacker_sessions(addr, TOTAL - 1).await;
        let lingering = linger_with_unacknowledged(&server, raws).await;
        let second = honest_client(addr, ClientConfig::default().name("honest-2"))
            .await
            .expect("the honest client's second session must get in");
        let (peer, unacknowledged) = next_expired(&server).await;
        assert_eq!(
            peer.id(),
            Some(lingering[0].0),
            "not the oldest lingering session"
        );
        assert_eq!(unacknowledged, ["to-attacker-0"]);
        assert_eq!(sessions_from(&server, ATTACKER), TOTAL - 2);
        assert_eq!(server.peers().len(), TOTAL);
        second.close("done").await;
        first.close("done").await;
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn total_session_limit_with_refuse_refuses_the_honest_client() {
    bounded(async {
        const TOTAL: usize = 6;
        let (server, addr) = bind_on_loopback(
            config()
                .max_sessions(TOTAL)
                .max_sessions_per_addr(100)
                .admission(AdmissionPolicy::Refuse),
        )
        .await;
        let raws = attacker_sessions(addr, TOTAL).await;
        let lingering = linger_with_unacknowledged(&server, raws).await;
        assert_server_full(
            honest_client(addr, ClientConfig::default()).await,
            "the honest client under Refuse",
        );
        for (id, peer) in &lingering {
            assert!(server.peer(*id).is_some() && !peer.is_ended());
        }
        assert!(
            !std::iter::from_fn(|| server.try_next_event())
                .any(|e| matches!(e, ServerEvent::Expired { .. })),
            "a session was evicted under Refuse"
        );
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}

#[tokio::test]
async fn evictions_at_the_per_address_limit_stay_within_max_sessions_while_events_are_unread() {
    bounded(async {
        const MAX: usize = 4;
        const PER_ADDR: usize = 2;
        const CYCLES: usize = 12;
        let (server, addr) = bind_on_loopback(
            config()
                .max_sessions(MAX)
                .max_sessions_per_addr(PER_ADDR),
        )
        .await;
        // Session after session, each left lingering with a message it never acknowledges;
        // from the third on, each evicts the oldest. Nobody reads the events.
        let mut admitted = 0;
        for i in 0..CYCLES {
            let Ok(raw) = RawConn::connect_from(ATTACKER, addr, &format!("churn-{i}")).await else {
                break;
            };
            admitted += 1;
            linger_with_unacknowledged(&server, vec![raw]).await;
        }
        let live = server.peers().len();
        let unread_ends = waiting_events(&server)
            .iter()
            .filter(|e| matches!(e, ServerEvent::Expired { .. } | ServerEvent::Ended { .. }))
            .count();
        // At most max_sessions in the registry, and at most max_sessions more ended ones
        // whose events are unread (beyond that, new sessions wait for the application).
        assert!(
            live <= MAX && unread_ends <= MAX,
            "{admitted} attacker sessions admitted; the server holds {live} sessions and {unread_ends} \
             ended ones with unread events (max_sessions {MAX})"
        );
        assert!(
            admitted < CYCLES,
            "{admitted} of {CYCLES} sessions admitted although nobody reads the events"
        );
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}
