//! `steadfast demo`: server, client and fault proxy in one process; a million messages through
//! a link cut again and again; proof that each arrived exactly once, in order.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::proto::Config;
use steadfast::{Client, ClientConfig, Server, ServerConfig, ServerEvent};

use crate::{DemoArgs, fail};

/// What the receiving side saw.
#[derive(Default)]
struct Tally {
    in_order: AtomicU64,
    duplicated: AtomicU64,
    skipped: AtomicU64,
}

pub(crate) async fn run(a: DemoArgs) -> ExitCode {
    if a.size < 8 {
        return fail("--size must be at least 8 (each message carries its number)");
    }
    let seed = a.seed.unwrap_or_else(clock_seed);
    // Quick failure detection, so the demo also shows stalls being survived.
    let proto = Config::default()
        .idle_timeout(Duration::from_secs(2))
        .keepalive_interval(Duration::from_millis(500));
    let server = match Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().protocol(proto.clone()),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let upstream = server.local_addrs()[0];
    let chaos = match Chaos::start(
        "127.0.0.1:0",
        upstream,
        ChaosConfig {
            seed,
            bytes: (16 << 10, a.max_bytes.max(16 << 10)),
            ..ChaosConfig::default()
        },
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let client = match Client::connect(
        chaos.local_addr().to_string(),
        ClientConfig::default()
            .protocol(proto)
            .backoff(Duration::from_millis(2), Duration::from_millis(100)),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let Some(ServerEvent::Connected { peer }) = server.next_event().await else {
        return fail("the embedded server saw no client");
    };
    eprintln!(
        "steadfast demo: {} messages of {} bytes, client -> fault proxy (seed {seed}) -> server on loopback",
        crate::human::count(a.messages),
        a.size
    );
    let tally = Arc::new(Tally::default());
    let n = a.messages;
    let reader = {
        let tally = tally.clone();
        tokio::spawn(async move {
            let mut expected = 0u64;
            while expected < n {
                let Ok(m) = peer.recv().await else { break };
                let mut batch = vec![m];
                batch.extend(peer.recv_up_to(4_096).unwrap_or_default());
                for m in batch {
                    let i = u64::from_be_bytes(m.body[..8].try_into().unwrap_or([0xff; 8]));
                    if i == expected {
                        expected += 1;
                        tally.in_order.fetch_add(1, Ordering::Relaxed);
                    } else if i < expected {
                        tally.duplicated.fetch_add(1, Ordering::Relaxed);
                    } else {
                        tally.skipped.fetch_add(i - expected, Ordering::Relaxed);
                        expected = i + 1;
                        tally.in_order.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            peer
        })
    };
    let bar = ProgressBar::new(n);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} delivered  {per_sec}  cuts survived: {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let sender = {
        let peer = client.peer().clone();
        let size = a.size;
        tokio::spawn(async move {
            let mut body = vec![0x2au8; size];
            let mut last = None;
            for i in 0..n {
                body[..8].copy_from_slice(&i.to_be_bytes());
                match peer.send(body.clone()).await {
                    Ok(r) => last = Some(r),
                    Err(e) => return Err(e.to_string()),
                }
            }
            match last {
                Some(r) => r.await.map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })
    };
    let ticker = {
        let (bar, tally) = (bar.clone(), tally.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bar.set_position(tally.in_order.load(Ordering::Relaxed));
            }
        })
    };
    let mut last_cuts = 0;
    while !sender.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let cuts = chaos.stats().faults();
        if cuts != last_cuts {
            bar.set_message(cuts.to_string());
            last_cuts = cuts;
        }
    }
    let result = sender.await;
    let took = started.elapsed();
    ticker.abort();
    let send_result = match result {
        Ok(r) => r,
        Err(e) => Err(e.to_string()),
    };
    let server_peer = match tokio::time::timeout(Duration::from_secs(30), reader).await {
        Ok(Ok(p)) => Some(p),
        _ => None,
    };
    bar.set_position(tally.in_order.load(Ordering::Relaxed));
    bar.finish_and_clear();
    let cs = client.stats();
    let st = chaos.stats();
    let in_order = tally.in_order.load(Ordering::Relaxed);
    let duplicated = tally.duplicated.load(Ordering::Relaxed);
    let skipped = tally.skipped.load(Ordering::Relaxed);
    let lost = n.saturating_sub(in_order) + skipped;
    println!("{:<34}{}", "sent", crate::human::count(n));
    println!(
        "{:<34}{}",
        "delivered exactly once, in order",
        crate::human::count(in_order - skipped.min(in_order))
    );
    println!("{:<34}{}", "lost", crate::human::count(lost));
    println!("{:<34}{}", "duplicated", crate::human::count(duplicated));
    println!(
        "{:<34}{} ({} RST, {} FIN) over {} connections",
        "link cuts survived",
        crate::human::count(st.cuts()),
        st.resets.load(Ordering::Relaxed),
        st.fins.load(Ordering::Relaxed),
        st.connections.load(Ordering::Relaxed)
    );
    println!(
        "{:<34}{} (messages in flight when a link died)",
        "resent after cuts",
        crate::human::count(cs.retransmitted)
    );
    println!(
        "{:<34}{} msgs/s over {:.2} s, every message acknowledged",
        "rate",
        crate::human::count((n as f64 / took.as_secs_f64()) as u64),
        took.as_secs_f64()
    );
    if let Err(e) = send_result {
        eprintln!("error: the sender failed: {e}");
        return ExitCode::FAILURE;
    }
    if server_peer.is_none() || lost != 0 || duplicated != 0 || skipped != 0 {
        eprintln!("FAILED: messages were lost, duplicated or reordered");
        return ExitCode::FAILURE;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), client.close("demo done")).await;
    ExitCode::SUCCESS
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
