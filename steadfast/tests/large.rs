//! A message larger than what a connection carries between two cuts, through the fault proxy
//! on loopback: with protocol version 2 it continues from the last chunk the receiver holds
//! (PROTOCOL.md §5.5), so it arrives intact and exactly once, and what the receiver reads per
//! cut beyond the message is bounded by a chunk (plus a handshake), not by the message.

#![cfg(all(feature = "runtime", feature = "zstd"))]
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::proto::Config;
use steadfast::{ClientConfig, ServerConfig};
use support::{bind_on_loopback, bounded_for, honest_client};

const CHUNK: u64 = 16 << 10;

async fn one_message_through_cuts(size: usize, cut_between: (u64, u64), seed: u64) {
    let proto = Config::default()
        .max_message(size as u32)
        .outbox(16, size as u64);
    let (server, addr) = bind_on_loopback(
        ServerConfig::default()
            .protocol(proto.clone())
            .memory_budget(4 * size as u64),
    )
    .await;
    let chaos = Chaos::start(
        "127.0.0.1:0",
        addr,
        ChaosConfig {
            seed,
            bytes: cut_between,
            ..ChaosConfig::default()
        },
    )
    .await
    .unwrap();
    let client = honest_client(chaos.local_addr(), ClientConfig::default().protocol(proto))
        .await
        .unwrap();
    let on_server = server.accept().await.unwrap();
    let body: Bytes = (0..size)
        .map(|i| (i * 7 % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let started = Instant::now();
    let receipt = client.send(body.clone()).await.unwrap();
    let got = on_server.recv().await.unwrap();
    receipt.await.unwrap();
    let took = started.elapsed();
    assert!(got.body == body, "the message arrived altered");
    assert!(
        on_server.try_recv().unwrap().is_none(),
        "more than one message arrived"
    );
    let cuts = chaos.stats().cuts();
    let read = on_server.stats().bytes_received;
    let sent = client.peer().stats().body_bytes_sent;
    let extra_read = read.saturating_sub(size as u64);
    let connections = on_server.stats().connections;
    println!(
        "{size} bytes through {cuts} cuts ({connections} connections) in {took:?}: the receiver \
         read {extra_read} bytes beyond the message ({} per cut); the sender transmitted {} \
         body bytes beyond it (lost in socket buffers at the cuts, {} per cut)",
        extra_read / cuts.max(1),
        sent - size as u64,
        (sent - size as u64) / cuts.max(1),
    );
    assert!(
        cuts as usize >= size / cut_between.1 as usize,
        "fewer cuts than planned: {cuts}"
    );
    // Per connection: one chunk cut off mid-frame at most, plus the handshake, ACKs and
    // frame headers; never the message from its start.
    let bound = connections * (CHUNK + 4_096) + size as u64 / 500;
    assert!(
        extra_read <= bound,
        "read {extra_read} beyond the message, bound {bound}"
    );
    drop(client);
    server.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_32_mib_message_through_a_cut_every_quarter_to_one_mib_arrives_once() {
    bounded_for(
        Duration::from_secs(120),
        one_message_through_cuts(32 << 20, (256 << 10, 1 << 20), 11),
    )
    .await;
}

/// The figure of record: `cargo test --release -p steadfast --all-features --test large --
/// --ignored --nocapture`.
#[tokio::test]
#[ignore = "256 MiB: run in release"]
async fn a_256_mib_message_through_a_cut_every_one_to_four_mib_arrives_once() {
    bounded_for(
        Duration::from_secs(600),
        one_message_through_cuts(256 << 20, (1 << 20, 4 << 20), 3),
    )
    .await;
}
