//! Deterministic simulations of the protocol core over a faulty link on a virtual clock.
//!
//! Each test prints its seed; set `STEADFAST_SEED` to replay one.

#![allow(clippy::unwrap_used)]

mod harness;

use std::time::{Duration, Instant};

use harness::{Plan, Sim};
use steadfast::proto::{Config, Seq, Window};

fn seed() -> u64 {
    std::env::var("STEADFAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn small_chunks() -> Config {
    // Small chunks make "several frames" cheap to reach.
    Config::default().max_chunk(4_096)
}

#[test]
fn hundred_thousand_each_way_through_a_thousand_faults() {
    let seed = seed();
    println!("seed {seed} (STEADFAST_SEED={seed} to replay)");
    let started = Instant::now();
    let plan = Plan {
        messages: 100_000,
        max_len: 20_000,
        fault_rate: 2_000,
        cut_max: 40_000,
        link_step: 16 << 10,
        link_capacity: 128 << 10,
        restarts: 3,
        ..Plan::default()
    };
    let mut sim = Sim::new(seed, small_chunks(), plan);
    let r = sim.run();
    let took = started.elapsed();
    println!(
        "messages 100000 each way; faults {} (cuts {}, of which in handshakes {}, resets {}, \
         stalls {}); connections {}; resumes {}; takeovers {}; idle timeouts {}; \
         retransmitted {}; duplicates dropped {}; longest detection {:?}; virtual {:?}; \
         steps {}; server restarts {} (handed back {}, of which taken twice {}); wall {:?}",
        r.faults(),
        r.cuts,
        r.handshake_cuts,
        r.resets,
        r.stalls,
        r.connections,
        r.resumes,
        r.takeovers,
        r.idle_timeouts,
        r.retransmitted,
        r.duplicates_dropped,
        r.max_detection,
        r.virtual_time,
        r.steps,
        r.restarts,
        r.handed_back,
        r.delivered_twice,
        took
    );
    assert!(r.restarts > 0, "no server restart happened");
    assert!(r.faults() >= 1_000, "only {} faults", r.faults());
    assert!(
        r.handshake_cuts > 0 && r.takeovers > 0 && r.idle_timeouts > 0,
        "{r:?}"
    );
    assert!(r.retransmitted > 0, "faults never forced a resend: {r:?}");
    // Positions are exact: nothing is ever sent twice to a peer that has it.
    assert_eq!(r.duplicates_dropped, 0);
    // Half-open detection within the idle timeout of the silence's start (virtual clock).
    // (The harness steps time by at most 1 ms on a live link.)
    assert!(
        r.max_detection <= Duration::from_millis(10_001),
        "{:?}",
        r.max_detection
    );
    for f in &sim.flows {
        // Every receipt exactly once (record_ack checks contiguity; a restart starts a new
        // session whose receipts begin where the restarted flow resumed).
        assert_eq!(f.receipts, 100_000, "every receipt exactly once");
        assert!(
            f.max_inbox <= 8_192,
            "inbox beyond the window: {}",
            f.max_inbox
        );
        assert!(
            f.max_outbox <= 16_384,
            "outbox beyond its bound: {}",
            f.max_outbox
        );
    }
}

#[test]
fn sequence_numbers_near_2_pow_32_and_2_pow_63() {
    for start in [
        (1u64 << 32) - 5_000,
        (1u64 << 63) - 5_000,
        u64::MAX - 20_000,
    ] {
        let seed = seed();
        println!("seed {seed}, initial sequence number {start}");
        let plan = Plan {
            messages: 10_000,
            max_len: 5_000,
            fault_rate: 400,
            ..Plan::default()
        };
        let mut sim = Sim::new(seed, small_chunks().initial_seq(Seq(start)), plan);
        let r = sim.run();
        assert!(r.faults() > 0);
        assert_eq!(sim.flows[0].acked_to, Some(Seq(start + 10_000)));
        assert_eq!(sim.flows[1].acked_to, Some(Seq(start + 10_000)));
    }
}

#[test]
fn progress_with_a_cut_every_one_to_four_kilobytes() {
    // A large send window and a cut every 1-4 KB: each connection must carry the handshake
    // and some new messages, never re-send what the peer already has.
    let seed = seed();
    println!("seed {seed}");
    let config = Config::default().window(Window {
        messages: 65_536,
        bytes: 64 << 20,
    });
    let config = config.outbox(65_536, 64 << 20);
    let plan = Plan {
        messages: 20_000,
        max_len: 200,
        cut_every: Some((1_024, 4_096)),
        send_burst: 2_000,
        recv_burst: 2_000,
        ..Plan::default()
    };
    let mut sim = Sim::new(seed, config, plan);
    let r = sim.run();
    println!(
        "20000 messages each way through {} cuts, {} connections, {} retransmitted, {} steps",
        r.cuts, r.connections, r.retransmitted, r.steps
    );
    assert!(r.cuts > 100, "{r:?}");
    assert_eq!(r.duplicates_dropped, 0);
}

#[test]
#[ignore = "diagnostic"]
fn no_faults_baseline() {
    let plan = Plan {
        messages: 100_000,
        max_len: 20_000,
        fault_rate: 0,
        ..Plan::default()
    };
    let mut sim = Sim::new(1, small_chunks(), plan);
    let r = sim.run();
    println!("{r:?}");
}

/// Messages larger than what a connection carries between two cuts (a cut after 2 to 8 KB in
/// both directions together,
/// messages up to 48 KB in 512-byte chunks): version 2 continues a message from the last
/// chunk the receiver holds, so every one arrives exactly once. (Version 1 resends a message
/// whole after each cut and never completes one larger than the bytes between two cuts.)
#[test]
fn messages_larger_than_the_bytes_between_two_cuts_complete() {
    let seed = seed();
    println!("seed {seed}");
    let config = Config::default().max_chunk(512);
    let plan = Plan {
        messages: 400,
        max_len: 48_000,
        cut_every: Some((2_048, 8_192)),
        cut_both: true,
        ..Plan::default()
    };
    let mut sim = Sim::new(seed, config, plan);
    let r = sim.run();
    println!(
        "400 messages of up to 48 KB each way through {} cuts, {} connections, {} retransmitted",
        r.cuts, r.connections, r.retransmitted
    );
    assert_eq!(r.versions, [2].into());
    assert!(r.cuts > 100, "{r:?}");
    assert_eq!(r.duplicates_dropped, 0);
    for f in &sim.flows {
        assert_eq!(f.receipts, 400, "every receipt exactly once");
    }
}

/// A version-2 peer speaks version 1 with a peer configured to offer or accept only version
/// 1, in both roles, through random faults.
#[test]
fn version_1_and_version_2_peers_interoperate_through_faults() {
    for (client, server) in [((1, 1), (1, 2)), ((1, 2), (1, 1))] {
        let seed = seed();
        println!("seed {seed}, client {client:?}, server {server:?}");
        // A fault in 10 % of the steps: a run takes ~150 steps, and at 3 % about one seed in
        // a hundred saw none (seed 1796299183838673898), which the test rightly refuses.
        let plan = Plan {
            messages: 5_000,
            max_len: 20_000,
            fault_rate: 1_000,
            ..Plan::default()
        };
        let mut sim = Sim::new(seed, small_chunks().versions(client.0, client.1), plan);
        sim.server_config = small_chunks().versions(server.0, server.1);
        let r = sim.run();
        assert!(r.faults() > 0, "{r:?}");
        assert_eq!(r.versions, [1].into());
        assert_eq!(r.duplicates_dropped, 0);
        for f in &sim.flows {
            assert_eq!(f.receipts, 5_000);
        }
    }
}
