//! Hostile peers against the server's memory bounds (`cargo test --release -p steadfast
//! --all-features --test bounds -- --nocapture --test-threads=1`).
//!
//! Server under test: in this process, memory budget 128 MiB, zstd supported. For every attack
//! the peak resident memory of the process during the attack must stay within the RSS before
//! it + the 128 MiB budget + 64 MiB. Each attack watches the RSS while it runs and stops by
//! itself as soon as the bound is passed (the test then fails with the figure), and each is
//! bounded in time. Each test runs its attack in a fresh process of this binary (so that memory
//! an earlier test freed, and the allocator kept, cannot hide growth) and one at a time (a
//! static mutex: RSS is per process, and the witness's rate needs the CPU). Where a witness runs (a normal client sending 100,000 small messages),
//! it must complete, exactly once and in order; its rate during the attack is printed next to
//! its rate in a clean run of the same test (printed, never asserted).

#![cfg(all(feature = "runtime", feature = "zstd"))]
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use steadfast::proto::frame::Data;
use steadfast::proto::{Config, Frame, Seq};
use steadfast::{Client, ClientConfig};
use support::{
    App, Meter, RawConn, Witness, WitnessRun, bomb, flag, isolated, mib, raised, repeated, serial,
    write_once, write_until,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

/// How long a flood runs when nothing stops it first.
const FLOOD: Duration = Duration::from_secs(5);
/// Bombs sent by the plain bomb attack.
const BOMBS: u64 = 128;
/// How long bombs fall before the witness starts, at most.
const BOMBS_FIRST: Duration = Duration::from_secs(3);
/// Connections holding a partial message.
const PARTIALS: usize = 72;
/// Body bytes per chunk of a partial message (a DATA frame under the 64 KiB `max_frame`).
const CHUNK: usize = 65_000;
/// Chunks sent per partial message: 16,770,000 bytes, just under the 16 MiB `max_message`.
const CHUNKS: usize = 258;

/// Lets allocations of the setup settle before the baseline is taken.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// 4,681 PINGs: 65,534 bytes.
fn pings() -> Vec<u8> {
    repeated(&Frame::Ping(0x0123_4567_89ab_cdef), 4_681)
}

fn rates(clean: &WitnessRun, attacked: &WitnessRun) -> String {
    format!(
        "witness: {:.0} msgs/s during the attack vs {:.0} msgs/s clean ({} of {} messages in {:?}; clean {:?})",
        attacked.rate(),
        clean.rate(),
        attacked.received,
        support::WITNESS_MESSAGES,
        attacked.elapsed,
        clean.elapsed,
    )
}

/// Attack 1, server side: a client completes the handshake, then writes PINGs as fast as it
/// can and never reads its socket, while the witness runs. Asserts: peak RSS ≤ before +
/// budget + 64 MiB, and the witness completes (exactly once, in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pong_flood_against_the_server_stays_within_the_bound() {
    let _serial = serial().await;
    if !isolated("pong_flood_against_the_server_stays_within_the_bound") {
        return;
    }
    let abort = flag();
    let mut app = App::start(&abort).await;
    let clean = Witness::connect(&mut app, "witness-clean")
        .await
        .run()
        .await;
    clean.assert_complete("clean run");
    let witness = Witness::connect(&mut app, "witness-attack").await;
    let raw = RawConn::connect(&app.addr, Config::default(), "ping-flooder").await;
    // From here on the socket is never read.
    let mut stream = raw.stream;
    let pings = pings();
    settle().await;
    let meter = Meter::start(&abort);
    let start = Instant::now();
    let done = flag();
    let mut pos = 0;
    // The flood goes on until the witness is done, for at least 2 s (at most FLOOD).
    let (attacked, written) = tokio::join!(
        async {
            let r = witness.run().await;
            done.store(true, Ordering::Relaxed);
            r
        },
        write_until(&mut stream, &pings, &mut pos, start + FLOOD, || {
            raised(&abort) || (raised(&done) && start.elapsed() >= Duration::from_secs(2))
        })
    );
    let took = start.elapsed();
    let m = meter.finish();
    drop(stream);
    app.stop().await;
    println!(
        "PONG flood (server side): {} of PINGs written in {took:?}; {}",
        match written {
            Some(b) => format!("{:.1} MiB", mib(b)),
            None => "(the server closed the connection)".into(),
        },
        m.describe()
    );
    println!("{}", rates(&clean, &attacked));
    m.assert_within("PONG flood against the server");
    attacked.assert_complete("PONG flood against the server");
}

/// Attack 1, client side: a hostile server welcomes a real `Client`, then writes PINGs as fast
/// as it can and never reads. Asserts: peak RSS ≤ before + 128 MiB + 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pong_flood_against_a_client_stays_within_the_bound() {
    let _serial = serial().await;
    if !isolated("pong_flood_against_a_client_stays_within_the_bound") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (client, raw) = tokio::join!(
        Client::connect(&addr, ClientConfig::default()),
        RawConn::accept(&listener)
    );
    let client = client.unwrap();
    let mut stream = raw.stream;
    let pings = pings();
    settle().await;
    let abort = flag();
    let meter = Meter::start(&abort);
    let start = Instant::now();
    let mut pos = 0;
    let written = write_until(&mut stream, &pings, &mut pos, start + FLOOD, || {
        raised(&abort)
    })
    .await;
    let took = start.elapsed();
    let m = meter.finish();
    drop(stream);
    drop(listener);
    drop(client);
    println!(
        "PONG flood (client side): {} of PINGs written in {took:?}; {}",
        match written {
            Some(b) => format!("{:.1} MiB", mib(b)),
            None => "(the client closed the connection)".into(),
        },
        m.describe()
    );
    m.assert_within("PONG flood against a client");
}

/// Attack 2: a client negotiating zstd sends 128 messages of ~500 bytes that each inflate to
/// just under 16 MiB; the server application drains it with `recv_up_to(64)`. Asserts: peak
/// RSS ≤ before + 128 MiB + 64 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_stay_within_the_bound() {
    let _serial = serial().await;
    if !isolated("decompression_bombs_stay_within_the_bound") {
        return;
    }
    let (body, inflated) = bomb();
    let abort = flag();
    let app = App::start(&abort).await;
    let mut raw =
        RawConn::connect(&app.addr, Config::default().transforms(["zstd"]), "bomber").await;
    settle().await;
    let meter = Meter::start(&abort);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(15);
    let mut queued = 0u64;
    let mut closed = false;
    while !raised(&abort)
        && Instant::now() < deadline
        && app.drained.messages() + app.drained.errors() < BOMBS
    {
        while queued < BOMBS && raw.conn.send(body.clone(), 0).is_ok() {
            queued += 1;
        }
        if !raw.turn(Duration::from_millis(5)).await {
            closed = true;
            break;
        }
    }
    let took = start.elapsed();
    let m = meter.finish();
    let drained = (
        app.drained.messages(),
        app.drained.bytes(),
        app.drained.errors(),
    );
    drop(raw);
    app.stop().await;
    println!(
        "decompression bombs: {} B each, inflating to {inflated} B; {queued} queued, {} taken by the application ({:.0} MiB inflated), {} refused by the decoder, in {took:?}{}; {}",
        body.len(),
        drained.0,
        mib(drained.1),
        drained.2,
        if closed {
            " (the server closed the connection)"
        } else {
            ""
        },
        m.describe()
    );
    m.assert_within("decompression bombs");
}

/// Keeps bombs flowing on `raw` (at most 1,024 waiting in its outbox) until `stop()` says so.
/// Returns how many it queued and whether the server closed the connection.
async fn bomb_until(raw: &mut RawConn, body: &Bytes, stop: impl Fn() -> bool) -> (u64, bool) {
    let mut queued = 0u64;
    while !stop() {
        while raw.conn.session().is_some_and(|s| s.outbox_len() < 1_024)
            && raw.conn.send(body.clone(), 0).is_ok()
        {
            queued += 1;
        }
        if !raw.turn(Duration::from_millis(5)).await {
            return (queued, true);
        }
    }
    (queued, false)
}

/// Attack 3: the bombs of attack 2, sent continuously while the witness runs. Asserts: peak RSS
/// ≤ before + 128 MiB + 64 MiB, and the witness completes (exactly once, in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decompression_bombs_leave_the_witness_alone() {
    let _serial = serial().await;
    if !isolated("decompression_bombs_leave_the_witness_alone") {
        return;
    }
    let (body, _) = bomb();
    let abort = flag();
    let mut app = App::start(&abort).await;
    let clean = Witness::connect(&mut app, "witness-clean")
        .await
        .run()
        .await;
    clean.assert_complete("clean run");
    let witness = Witness::connect(&mut app, "witness-attack").await;
    let mut raw =
        RawConn::connect(&app.addr, Config::default().transforms(["zstd"]), "bomber").await;
    settle().await;
    let meter = Meter::start(&abort);
    let done = flag();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(20);
    let drained = app.drained.clone();
    let (attacked, (queued, closed)) = tokio::join!(
        async {
            // The witness starts once the bombs are being decoded (or at most 3 s in).
            while drained.messages() < 64 && !raised(&abort) && start.elapsed() < BOMBS_FIRST {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let r = witness.run().await;
            done.store(true, Ordering::Relaxed);
            r
        },
        // The bombs go on until the witness is done, for at least 2 s.
        bomb_until(&mut raw, &body, || raised(&abort)
            || (raised(&done) && start.elapsed() >= Duration::from_secs(2))
            || Instant::now() >= deadline)
    );
    let m = meter.finish();
    let drained = (app.drained.messages(), app.drained.bytes());
    drop(raw);
    app.stop().await;
    println!(
        "bombs during the witness: {queued} queued, {} taken by the application ({:.0} MiB inflated){}; {}",
        drained.0,
        mib(drained.1),
        if closed {
            " (the server closed the connection)"
        } else {
            ""
        },
        m.describe()
    );
    println!("{}", rates(&clean, &attacked));
    m.assert_within("decompression bombs during the witness");
    attacked.assert_complete("decompression bombs during the witness");
}

/// How one partial-message attacker fared.
#[derive(Default)]
struct Partial {
    chunks: usize,
    failed: bool,
}

/// Attack 4: 72 clients each send all but the last chunk of a message of almost 16 MiB, then
/// keep their connection alive with PINGs (reading and discarding what the server sends),
/// while the witness runs. Asserts: peak RSS ≤ before + 128 MiB + 64 MiB, and the witness
/// completes (exactly once, in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_messages_on_many_connections_stay_within_the_bound() {
    let _serial = serial().await;
    if !isolated("partial_messages_on_many_connections_stay_within_the_bound") {
        return;
    }
    let abort = flag();
    let mut app = App::start(&abort).await;
    let clean = Witness::connect(&mut app, "witness-clean")
        .await
        .run()
        .await;
    clean.assert_complete("clean run");
    let witness = Witness::connect(&mut app, "witness-attack").await;
    let mut attackers = Vec::new();
    for i in 0..PARTIALS {
        attackers
            .push(RawConn::connect(&app.addr, Config::default(), &format!("partial-{i}")).await);
    }
    let mut chunk = Vec::new();
    Frame::Data(Data {
        offset: None,
        seq: Seq(1),
        timestamp_us: 0,
        more: true,
        body: Bytes::from(vec![0x5a; CHUNK]),
    })
    .encode(&mut chunk);
    let chunk = Arc::new(chunk);
    let ping = Arc::new(repeated(&Frame::Ping(7), 1));
    settle().await;
    let meter = Meter::start(&abort);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(12);
    let witness_done = flag();
    let mut tasks = tokio::task::JoinSet::new();
    for raw in attackers {
        let (chunk, ping, abort, witness_done) = (
            chunk.clone(),
            ping.clone(),
            abort.clone(),
            witness_done.clone(),
        );
        tasks.spawn(async move {
            let (mut rd, mut wr) = raw.stream.into_split();
            let reader = tokio::spawn(async move {
                let mut b = vec![0u8; 16 << 10];
                while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
            });
            let mut p = Partial::default();
            let stop = || raised(&abort);
            for _ in 0..CHUNKS {
                match write_once(&mut wr, &chunk, deadline, stop).await {
                    Some(true) => p.chunks += 1,
                    Some(false) => break,
                    None => {
                        p.failed = true;
                        break;
                    }
                }
            }
            // Hold the partial message: PINGs keep the connection alive, the last chunk never
            // comes. At least 1 s, until the witness is done.
            let held = Instant::now();
            let over = || {
                let witnessed = raised(&witness_done) && held.elapsed() >= Duration::from_secs(1);
                stop() || Instant::now() >= deadline || witnessed
            };
            while !p.failed && !over() {
                if write_once(&mut wr, &ping, deadline, stop).await.is_none() {
                    p.failed = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            reader.abort();
            p
        });
    }
    let attacked = witness.run().await;
    witness_done.store(true, Ordering::Relaxed);
    let mut complete = 0;
    let mut chunks = 0;
    let mut failed = 0;
    while let Some(p) = tasks.join_next().await {
        let p = p.unwrap();
        chunks += p.chunks;
        complete += usize::from(p.chunks == CHUNKS);
        failed += usize::from(p.failed);
    }
    let took = start.elapsed();
    let m = meter.finish();
    app.stop().await;
    println!(
        "partial messages: {PARTIALS} connections, {:.0} MiB of chunks sent, {complete} sent all {CHUNKS} chunks ({} B), {failed} cut off by the server, in {took:?}; {}",
        mib((chunks * CHUNK) as u64),
        CHUNKS * CHUNK,
        m.describe()
    );
    println!("{}", rates(&clean, &attacked));
    m.assert_within("partial messages on many connections");
    attacked.assert_complete("partial messages on many connections");
}
