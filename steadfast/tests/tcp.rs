//! The runtime over real loopback TCP (port 0), bounded and self-stopping.

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
    let (mut server, addr) = server().await;
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
