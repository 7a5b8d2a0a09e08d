//! Manual acknowledgement: a message's receipt resolves when the receiving application says it
//! has processed it, not when it took it; through link cuts, taken messages are not resent.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::proto::Config;
use steadfast::{Client, ClientConfig, Server, ServerConfig, ServerEvent};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn receipts_resolve_only_when_the_receiver_acknowledges() {
    let manual = Config::default().manual_ack(true);
    let server = Server::bind(["127.0.0.1:0"], ServerConfig::default().protocol(manual))
        .await
        .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let client = Client::connect(&addr, ClientConfig::default())
        .await
        .unwrap();
    let Some(ServerEvent::Connected { peer }) = server.next_event().await else {
        panic!("no peer")
    };
    let r1 = client.send("one").await.unwrap();
    let r2 = client.send("two").await.unwrap();
    let r3 = client.send("three").await.unwrap();
    let m1 = peer.recv().await.unwrap();
    let m2 = peer.recv().await.unwrap();
    let m3 = peer.recv().await.unwrap();
    assert_eq!(
        (m1.body.as_ref(), m3.body.as_ref()),
        (&b"one"[..], &b"three"[..])
    );
    // The server's reply follows any ACK it would have sent on the same stream: none was.
    peer.send("reply").await.unwrap();
    assert_eq!(client.recv().await.unwrap().body, "reply");
    assert!(!r1.is_acknowledged() && !r2.is_acknowledged() && !r3.is_acknowledged());

    // Acknowledging the second covers the first.
    assert_eq!(peer.acknowledge(m2.seq), 2);
    assert_eq!(peer.acknowledge(m1.seq), 0, "already acknowledged");
    tokio::time::timeout(WAIT, r2).await.unwrap().unwrap();
    assert!(r1.is_acknowledged());
    peer.send("reply 2").await.unwrap();
    assert_eq!(client.recv().await.unwrap().body, "reply 2");
    assert!(!r3.is_acknowledged());
    assert_eq!(peer.acknowledge(m3.seq), 1);
    tokio::time::timeout(WAIT, r3).await.unwrap().unwrap();
    // A message not yet taken cannot be acknowledged.
    client.send("four").await.unwrap();
    assert_eq!(peer.acknowledge(steadfast::Seq(m3.seq.0 + 1)), 0);
    client.close("done").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_but_unacknowledged_messages_cross_cuts_exactly_once() {
    let fast = Config::default()
        .idle_timeout(Duration::from_millis(1_500))
        .keepalive_interval(Duration::from_millis(400));
    let server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().protocol(fast.clone().manual_ack(true)),
    )
    .await
    .unwrap();
    let proxy = Chaos::start(
        "127.0.0.1:0",
        server.local_addrs()[0],
        ChaosConfig {
            seed: 11,
            bytes: (1 << 10, 16 << 10),
            ..ChaosConfig::default()
        },
    )
    .await
    .unwrap();
    let client = Client::connect(
        proxy.local_addr().to_string(),
        ClientConfig::default()
            .protocol(fast)
            .backoff(Duration::from_millis(5), Duration::from_millis(50)),
    )
    .await
    .unwrap();
    let Some(ServerEvent::Connected { peer }) = server.next_event().await else {
        panic!("no peer")
    };
    let n = 3_000u64;
    let sender = {
        let client = client.peer().clone();
        tokio::spawn(async move {
            let last = client
                .send_all((0..n).map(|i| i.to_be_bytes().to_vec()))
                .await
                .unwrap()
                .unwrap();
            tokio::time::timeout(WAIT, last).await.unwrap().unwrap();
        })
    };
    // Acknowledge in groups of 10, after "processing" them: taken messages must never come
    // again, even when the link is cut between taking and acknowledging.
    let mut pending = Vec::new();
    for i in 0..n {
        let m = tokio::time::timeout(WAIT, peer.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            u64::from_be_bytes(m.body[..].try_into().unwrap()),
            i,
            "lost, duplicated or reordered"
        );
        pending.push(m.seq);
        if pending.len() == 10 || i == n - 1 {
            assert_eq!(peer.acknowledge(*pending.last().unwrap()), pending.len());
            pending.clear();
        }
    }
    sender.await.unwrap();
    let cuts = proxy.stats().cuts();
    assert!(cuts >= 3, "only {cuts} cuts");
    println!("{n} messages, acknowledged by tens, through {cuts} cuts");
}
