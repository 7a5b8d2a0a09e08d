//! Protocol versions 1 and 2 over TCP, through the fault proxy: a version-2 peer speaks
//! version 1 with a peer configured to offer (client) or accept (server) only version 1, in both
//! roles, and every message arrives once, in order, both ways; a client offering only version 2
//! is refused by a version-1-only server with VersionMismatch (PROTOCOL.md §4.6).

#![cfg(all(feature = "runtime", feature = "zstd"))]
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::error::ConnectError;
use steadfast::proto::{Config, RejectCode};
use steadfast::{ClientConfig, ServerConfig};
use support::{bind_on_loopback, bounded_for, honest_client};

const N: usize = 600;

fn body(dir: u8, i: usize) -> Bytes {
    // Up to 40 KB: several chunks, often cut in the middle.
    let len = (i * 7_919) % 40_000;
    let mut v = vec![dir; len.max(8)];
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    v.into()
}

async fn both_ways_through_cuts(client_versions: (u16, u16), server_versions: (u16, u16)) {
    let proto = |v: (u16, u16)| Config::default().max_chunk(4_096).versions(v.0, v.1);
    let (server, addr) =
        bind_on_loopback(ServerConfig::default().protocol(proto(server_versions))).await;
    let chaos = Chaos::start(
        "127.0.0.1:0",
        addr,
        ChaosConfig {
            seed: u64::from(client_versions.0 * 10 + server_versions.0),
            bytes: (16 << 10, 256 << 10),
            ..ChaosConfig::default()
        },
    )
    .await
    .unwrap();
    let client = honest_client(
        chaos.local_addr(),
        ClientConfig::default().protocol(proto(client_versions)),
    )
    .await
    .unwrap();
    let on_server = server.accept().await.unwrap();
    let up = {
        let client = client.clone();
        tokio::spawn(async move {
            for i in 0..N {
                client.send(body(1, i)).await.unwrap();
            }
            client.flush().await.unwrap();
        })
    };
    let down = {
        let on_server = on_server.clone();
        tokio::spawn(async move {
            for i in 0..N {
                on_server.send(body(2, i)).await.unwrap();
            }
            on_server.flush().await.unwrap();
        })
    };
    for i in 0..N {
        assert_eq!(
            on_server.recv().await.unwrap().body,
            body(1, i),
            "to the server, {i}"
        );
        assert_eq!(
            client.recv().await.unwrap().body,
            body(2, i),
            "to the client, {i}"
        );
    }
    up.await.unwrap();
    down.await.unwrap();
    assert!(on_server.try_recv().unwrap().is_none());
    assert!(client.try_recv().unwrap().is_none());
    let cuts = chaos.stats().cuts();
    println!(
        "client {client_versions:?}, server {server_versions:?}: {N} messages each way through {cuts} cuts"
    );
    assert!(cuts > 10, "only {cuts} cuts");
    drop(client);
    server.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_version_1_client_and_a_version_2_server() {
    bounded_for(
        Duration::from_secs(120),
        both_ways_through_cuts((1, 1), (1, 2)),
    )
    .await;
}

#[tokio::test]
async fn a_version_2_client_and_a_version_1_server() {
    bounded_for(
        Duration::from_secs(120),
        both_ways_through_cuts((1, 2), (1, 1)),
    )
    .await;
}

#[tokio::test]
async fn two_version_2_peers() {
    bounded_for(
        Duration::from_secs(120),
        both_ways_through_cuts((1, 2), (1, 2)),
    )
    .await;
}

#[tokio::test]
async fn a_client_offering_only_version_2_is_refused_by_a_version_1_server() {
    bounded_for(Duration::from_secs(30), async {
        let (server, addr) =
            bind_on_loopback(ServerConfig::default().protocol(Config::default().versions(1, 1)))
                .await;
        let refused = honest_client(
            addr,
            ClientConfig::default().protocol(Config::default().versions(2, 2)),
        )
        .await;
        assert!(
            matches!(
                &refused,
                Err(ConnectError::Rejected {
                    code: RejectCode::VersionMismatch,
                    ..
                })
            ),
            "{refused:?}"
        );
        server.shutdown(Duration::ZERO).await;
    })
    .await;
}
