//! Server behaviour over loopback TCP: restart, linger expiry, registry, broadcast, shutdown,
//! caps, several listen addresses, a slow reader.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use steadfast::error::ConnectError;
use steadfast::proto::{Config, RejectCode, Window};
use steadfast::{
    Client, ClientConfig, ClientEvent, EndReason, Peer, Server, ServerConfig, ServerEvent,
};

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

fn quick() -> Config {
    Config::default()
        .idle_timeout(Duration::from_millis(1_000))
        .keepalive_interval(Duration::from_millis(300))
}

#[tokio::test]
async fn a_restarted_server_refuses_the_resume_and_the_client_gets_everything_back() {
    let (mut server, addr) = bind(ServerConfig::default().protocol(quick())).await;
    let client = Client::connect(
        &addr,
        ClientConfig::default()
            .protocol(quick())
            .backoff(Duration::from_millis(5), Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let peer = next_connected(&mut server).await;
    for i in 0..100u32 {
        client.send(i.to_be_bytes().to_vec()).await.unwrap();
    }
    // The server application takes 30 and acknowledges them.
    for _ in 0..30 {
        peer.recv().await.unwrap();
    }
    while client.stats().acknowledged < 30 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The server dies without state; a new one takes the same port.
    drop(peer);
    drop(server);
    let _server2 = loop {
        match Server::bind([addr.as_str()], ServerConfig::default()).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let lost = loop {
        match tokio::time::timeout(Duration::from_secs(20), client.next_event())
            .await
            .expect("client never learned")
            .unwrap()
        {
            ClientEvent::SessionLost {
                reason,
                unacknowledged,
            } => break (reason, unacknowledged),
            _ => continue,
        }
    };
    assert!(
        matches!(
            &lost.0,
            EndReason::Protocol(steadfast::proto::SessionEnd::Rejected {
                code: RejectCode::UnknownSession,
                ..
            })
        ),
        "{:?}",
        lost.0
    );
    let back: Vec<u32> = lost
        .1
        .iter()
        .map(|m| u32::from_be_bytes(m.body[..].try_into().unwrap()))
        .collect();
    // Exactly what the first server's application did not take, in order.
    assert_eq!(back, (30..100).collect::<Vec<_>>());
    assert!(client.is_ended());
    assert!(client.send(vec![1]).await.is_err(), "no silent new session");
}

#[tokio::test]
async fn a_lingering_session_expires_and_hands_back_what_it_held() {
    let (mut server, addr) = bind(
        ServerConfig::default()
            .protocol(quick())
            .linger(Duration::from_millis(300)),
    )
    .await;
    let client = Client::connect(&addr, ClientConfig::default().protocol(quick()))
        .await
        .unwrap();
    let peer = next_connected(&mut server).await;
    drop(client);
    // Sends to a lingering session queue up...
    loop {
        match server.next_event().await.unwrap() {
            ServerEvent::Disconnected { .. } => break,
            _ => continue,
        }
    }
    for i in 0..5u8 {
        peer.send(vec![i]).await.unwrap();
    }
    // ... and come back when it expires.
    let (expired, unacked) = loop {
        match server.next_event().await.unwrap() {
            ServerEvent::Expired {
                peer,
                unacknowledged,
            } => break (peer, unacknowledged),
            _ => continue,
        }
    };
    assert_eq!(expired.id(), peer.id());
    assert_eq!(
        unacked.iter().map(|m| m.body[0]).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(server.peer(peer.id().unwrap()).is_none());
    assert!(matches!(peer.end_reason(), Some(EndReason::Expired(_))));
}

#[tokio::test]
async fn registry_by_id_and_name_broadcast_and_kick() {
    let (mut server, addr) = bind(ServerConfig::default()).await;
    let a = Client::connect(&addr, ClientConfig::default().name("a"))
        .await
        .unwrap();
    let pa = next_connected(&mut server).await;
    let b = Client::connect(&addr, ClientConfig::default().name("b"))
        .await
        .unwrap();
    let pb = next_connected(&mut server).await;
    assert_eq!(server.peers().len(), 2);
    assert_eq!(server.peer_by_name("a").unwrap().id(), pa.id());
    assert_eq!(server.peer(pb.id().unwrap()).unwrap().name(), Some("b"));
    // A second client claiming "a": the newest owns the name, the older keeps working.
    let a2 = Client::connect(&addr, ClientConfig::default().name("a"))
        .await
        .unwrap();
    let pa2 = next_connected(&mut server).await;
    assert_eq!(server.peer_by_name("a").unwrap().id(), pa2.id());
    assert!(pa.is_connected());

    let results = server.broadcast(&b"hello all"[..]);
    assert_eq!(results.len(), 3);
    for c in [&a, &b, &a2] {
        assert_eq!(&c.recv().await.unwrap().body[..], b"hello all");
    }
    // Each receipt resolves once that client's application has taken the message.
    for (_, r) in results {
        r.unwrap().await.unwrap();
    }
    assert!(server.kick(pb.id().unwrap(), "bye"));
    let reason = tokio::time::timeout(Duration::from_secs(5), b.ended())
        .await
        .unwrap();
    assert!(
        matches!(
            reason,
            EndReason::Protocol(steadfast::proto::SessionEnd::Closed { by_peer: true, .. })
        ),
        "{reason:?}"
    );
    let rtt = server.peer(pa.id().unwrap()).unwrap().ping().await.unwrap();
    assert!(rtt < Duration::from_secs(1));
}

#[tokio::test]
async fn graceful_shutdown_drains_then_closes() {
    let (mut server, addr) = bind(ServerConfig::default()).await;
    let client = Client::connect(&addr, ClientConfig::default())
        .await
        .unwrap();
    let peer = next_connected(&mut server).await;
    for i in 0..1_000u32 {
        peer.send(i.to_be_bytes().to_vec()).await.unwrap();
    }
    let reader = tokio::spawn(async move {
        let mut n = 0u32;
        while let Ok(m) = client.recv().await {
            assert_eq!(&m.body[..], &n.to_be_bytes());
            n += 1;
        }
        (n, client.end_reason())
    });
    server.shutdown(Duration::from_secs(10)).await;
    let (n, reason) = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 1_000, "shutdown did not drain");
    assert!(
        matches!(
            reason,
            Some(EndReason::Protocol(steadfast::proto::SessionEnd::Closed {
                code: steadfast::proto::CloseCode::Shutdown,
                ..
            }))
        ),
        "{reason:?}"
    );
}

#[tokio::test]
async fn the_connection_cap_refuses_with_server_full() {
    let (mut server, addr) = bind(ServerConfig::default().max_connections(1)).await;
    let _first = Client::connect(&addr, ClientConfig::default())
        .await
        .unwrap();
    next_connected(&mut server).await;
    match Client::connect(&addr, ClientConfig::default()).await {
        Err(ConnectError::Rejected { code, .. }) => assert_eq!(code, RejectCode::ServerFull),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn several_listen_addresses() {
    let server = Server::bind(["127.0.0.1:0", "127.0.0.1:0"], ServerConfig::default())
        .await
        .unwrap();
    let addrs: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);
    let mut server = server;
    for a in &addrs {
        let c = Client::connect(a, ClientConfig::default()).await.unwrap();
        let receipt = c.send(&b"x"[..]).await.unwrap();
        let peer = next_connected(&mut server).await;
        assert_eq!(&peer.recv().await.unwrap().body[..], b"x");
        receipt.await.unwrap();
    }
    assert_eq!(server.peers().len(), 2);
}

#[tokio::test]
async fn unreachable_and_refused_connects_are_clear_errors() {
    // A port nobody listens on.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    assert!(matches!(
        Client::connect(&addr, ClientConfig::default()).await,
        Err(ConnectError::Io(_))
    ));
    let (_server, addr) = bind(ServerConfig::default()).await;
    let bad = ClientConfig::default().protocol(Config::default().versions(7, 9));
    match Client::connect(&addr, bad).await {
        Err(ConnectError::Rejected { code, .. }) => assert_eq!(code, RejectCode::VersionMismatch),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_slows_the_sender_without_growing_memory() {
    let window = Window {
        messages: 512,
        bytes: 64 << 10,
    };
    let proto = Config::default()
        .window(window)
        .max_message(1 << 10)
        .outbox(1_024, 256 << 10);
    let (mut server, addr) = bind(ServerConfig::default().protocol(proto.clone())).await;
    let client = Client::connect(&addr, ClientConfig::default().protocol(proto))
        .await
        .unwrap();
    let peer = next_connected(&mut server).await;
    let n = 1_000_000u64;
    let sender = {
        let c = client.peer().clone();
        tokio::spawn(async move {
            let mut max_in_flight = 0;
            for i in 0..n {
                c.send(i.to_be_bytes().to_vec()).await.unwrap();
                if i % 1_000 == 0 {
                    max_in_flight = max_in_flight.max(c.stats().in_flight);
                }
            }
            c.flush().await.unwrap();
            max_in_flight
        })
    };
    let mut max_waiting = 0;
    let mut i = 0u64;
    if std::env::var("SLOW_DEBUG").is_ok() {
        let (c, p) = (client.peer().clone(), peer.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                eprintln!("client {:?}\nserver {:?}", c.stats(), p.stats());
            }
        });
    }
    while i < n {
        // Read in bursts, pausing in between: the sender must wait, not buffer.
        if i % 100_000 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        max_waiting = max_waiting.max(peer.waiting());
        for m in peer.recv_up_to(64).unwrap() {
            assert_eq!(u64::from_be_bytes(m.body[..].try_into().unwrap()), i);
            i += 1;
        }
        if i < n && peer.waiting() == 0 {
            let m = peer.recv().await.unwrap();
            assert_eq!(u64::from_be_bytes(m.body[..].try_into().unwrap()), i);
            i += 1;
        }
    }
    let max_in_flight = sender.await.unwrap();
    println!(
        "slow reader: sender's outbox ≤ {max_in_flight} (bound 1,024), receiver's inbox ≤ {max_waiting} (window 512)"
    );
    assert!(max_in_flight <= 1_024);
    assert!(max_waiting <= 512);
}

#[tokio::test]
async fn contradictory_limits_are_refused_when_built() {
    let too_small_budget = ServerConfig::default()
        .protocol(Config::default().max_message(1 << 20))
        .memory_budget(1 << 10);
    let e = Server::bind(["127.0.0.1:0"], too_small_budget)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("memory budget"), "{e}");
    let too_small_outbox = ClientConfig::default().protocol(Config::default().outbox(10, 1 << 10));
    let e = Client::connect("127.0.0.1:1", too_small_outbox)
        .await
        .unwrap_err();
    assert!(matches!(e, ConnectError::Config(_)), "{e}");
}
