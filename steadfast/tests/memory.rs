//! Memory per idle session, measured (`cargo test --release -p steadfast --test memory --
//! --ignored --nocapture`). Server and clients share this process, so the figure covers both
//! ends of each session. Ignored by default: it opens 2,000 connections.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use steadfast::{Client, ClientConfig, Server, ServerConfig};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "opens 2,000 connections; run by hand or by the bench script"]
async fn memory_per_idle_session() {
    let n = 2_000;
    let server = Server::bind(["127.0.0.1:0"], ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addrs()[0].to_string();
    // Warm up allocator and runtime with a few sessions first.
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(
            Client::connect(&addr, ClientConfig::default())
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib();
    for _ in 0..n {
        let c = Client::connect(&addr, ClientConfig::default())
            .await
            .unwrap();
        c.send(&b"hello"[..]).await.unwrap();
        clients.push(c);
    }
    // Let every connection go idle (past one keepalive, when idle buffers are released).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = rss_kib();
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    println!(
        "{n} idle sessions (both ends in this process): RSS {before} → {after} KiB, {per:.1} KiB per session pair"
    );
    assert_eq!(server.peers().len(), n + 50);
}
