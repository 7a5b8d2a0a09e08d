//! The runtime over real loopback TCP (port 0), bounded and self-stopping.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use steadfast::{Client, ClientConfig, ClientEvent, Server, ServerConfig, ServerEvent};

async fn server() -> (Server, String) {
    let server = Server::bind(["127.0.0.1:0"], ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addrs()[0].to_string();
    (server, addr)
}

#[tokio::test]
async fn messages_cross_both_ways_in_order_with_receipts() {
    let (server, addr) = server().await;
    let client = Client::connect(&addr, ClientConfig::default().name("alice"))
        .await
        .unwrap();
    let Some(ServerEvent::Connected { peer }) = server.next_event().await else {
        panic!("no Connected event")
    };
    assert_eq!(peer.name(), Some("alice"));
    let mut last = None;
    for i in 0..1_000u32 {
        last = Some(client.send(i.to_be_bytes().to_vec()).await.unwrap());
    }
    for i in 0..1_000u32 {
        let m = peer.recv().await.unwrap();
        assert_eq!(&m.body[..], &i.to_be_bytes());
        peer.send(m.body).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), last.unwrap())
        .await
        .unwrap()
        .unwrap();
    for i in 0..1_000u32 {
        let m = client.recv().await.unwrap();
        assert_eq!(&m.body[..], &i.to_be_bytes());
    }
    let rtt = client.ping().await.unwrap();
    assert!(rtt < Duration::from_secs(5));
    client.close("done").await;
    assert!(client.is_ended());
    loop {
        match server.next_event().await.unwrap() {
            ServerEvent::Ended { unacknowledged, .. } => {
                assert!(unacknowledged.is_empty());
                break;
            }
            _ => continue,
        }
    }
    let _ = ClientEvent::Connected { resumed: false };
}

use std::sync::atomic::Ordering;
use std::time::Instant;

use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::proto::Config;
use steadfast::{Peer, Receipt};

fn seed() -> u64 {
    std::env::var("STEADFAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

/// Sends `n` numbered messages and checks `n` numbered messages arrive, in order, once.
async fn exchange(peer: Peer, n: u64) -> Peer {
    let sender = {
        let peer = peer.clone();
        tokio::spawn(async move {
            let mut receipts: Vec<Receipt> = Vec::new();
            for i in 0..n {
                let r = peer.send(i.to_be_bytes().to_vec()).await.unwrap();
                if i % 997 == 0 || i == n - 1 {
                    receipts.push(r);
                }
            }
            for r in receipts {
                r.await.unwrap();
            }
        })
    };
    for i in 0..n {
        let m = peer.recv().await.unwrap();
        assert_eq!(
            u64::from_be_bytes(m.body[..].try_into().unwrap()),
            i,
            "lost, duplicated or reordered"
        );
    }
    sender.await.unwrap();
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_each_way_through_a_fault_proxy() {
    let seed = seed();
    println!("seed {seed}");
    let fast = Config::default()
        .idle_timeout(Duration::from_millis(1_500))
        .keepalive_interval(Duration::from_millis(400));
    let (server, _) = {
        let s = Server::bind(
            ["127.0.0.1:0"],
            ServerConfig::default().protocol(fast.clone()),
        )
        .await
        .unwrap();
        let a = s.local_addrs()[0].to_string();
        (s, a)
    };
    let upstream = server.local_addrs()[0];
    let proxy = Chaos::start(
        "127.0.0.1:0",
        upstream,
        ChaosConfig {
            seed,
            bytes: (2_000, 60_000),
            stall_per_mille: 30,
            max_stalls: Some(3),
            stall_for: Duration::from_secs(4),
            ..ChaosConfig::default()
        },
    )
    .await
    .unwrap();
    let started = Instant::now();
    let client = Client::connect(
        proxy.local_addr().to_string(),
        ClientConfig::default()
            .protocol(fast)
            .backoff(Duration::from_millis(5), Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let Some(ServerEvent::Connected { peer }) = server.next_event().await else {
        panic!()
    };
    let n = 100_000;
    let server_side = tokio::spawn(exchange(peer, n));
    let client_peer = client.peer().clone();
    let client_side = tokio::spawn(exchange(client_peer, n));
    let deadline = Duration::from_secs(240);
    let client_peer = tokio::time::timeout(deadline, client_side)
        .await
        .expect("stuck")
        .unwrap();
    let server_peer = tokio::time::timeout(deadline, server_side)
        .await
        .expect("stuck")
        .unwrap();
    let took = started.elapsed();
    let cs = client_peer.stats();
    let ss = server_peer.stats();
    let st = proxy.stats();
    println!(
        "{n} messages each way in {took:?} through {} cuts ({} RST, {} FIN) and {} stalls over {} \
         connections; retransmitted {} + {}",
        st.cuts(),
        st.resets.load(Ordering::Relaxed),
        st.fins.load(Ordering::Relaxed),
        st.stalls.load(Ordering::Relaxed),
        st.connections.load(Ordering::Relaxed),
        cs.retransmitted,
        ss.retransmitted,
    );
    assert!(st.cuts() >= 100, "only {} cuts", st.cuts());
    assert_eq!(cs.acknowledged, n);
    assert_eq!(ss.acknowledged, n);
    assert_eq!(cs.received, n);
    assert_eq!(ss.received, n);
    proxy.set_enabled(false);
    drop(client);
    server.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_all_keeps_order_waits_for_room_and_stops_at_the_first_bad_body() {
    // A small outbox: the batch must wait for acknowledgements many times over.
    let small = Config::default().outbox(64, 1 << 20).max_message(64 << 10);
    let (server, addr) = {
        let s = Server::bind(["127.0.0.1:0"], ServerConfig::default())
            .await
            .unwrap();
        let a = s.local_addrs()[0].to_string();
        (s, a)
    };
    let client = Client::connect(&addr, ClientConfig::default().protocol(small))
        .await
        .unwrap();
    let Some(ServerEvent::Connected { peer }) = server.next_event().await else {
        panic!("no Connected event")
    };
    let n = 10_000u64;
    let reader = tokio::spawn(async move {
        for i in 0..n {
            let m = peer.recv().await.unwrap();
            assert_eq!(u64::from_be_bytes(m.body[..].try_into().unwrap()), i);
        }
        peer
    });
    let last = client
        .send_all((0..n).map(|i| i.to_be_bytes().to_vec()))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), last)
        .await
        .unwrap()
        .unwrap();
    let peer = reader.await.unwrap();
    assert_eq!(client.stats().acknowledged, n);
    assert!(
        client
            .send_all(Vec::<Vec<u8>>::new())
            .await
            .unwrap()
            .is_none()
    );

    // A body above the limit: the ones before it are queued, it and the rest are not.
    let too_big = vec![0u8; 65 << 10];
    let err = client
        .send_all([b"before".to_vec(), too_big, b"after".to_vec()])
        .await
        .unwrap_err();
    assert!(
        matches!(err, steadfast::error::SendError::TooLarge { .. }),
        "{err}"
    );
    assert_eq!(peer.recv().await.unwrap().body, "before");
    client.send("next").await.unwrap();
    assert_eq!(peer.recv().await.unwrap().body, "next");
    client.close("done").await;
}
