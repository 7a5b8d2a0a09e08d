//! Hostile peers against a real server on loopback, while a well-behaved client keeps sending
//! and receiving alongside. For each attack: the offender gets its error or is closed within
//! the configured bound, memory stays bounded, and the good client loses nothing.

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use steadfast::proto::frame::{Hello, ResumeRequest};
use steadfast::proto::{
    Config, Decoder, Frame, Limits, RejectCode, ResumeToken, Seq, SessionId, Window,
};
use steadfast::{Client, ClientConfig, Peer, Server, ServerConfig, ServerEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HANDSHAKE: Duration = Duration::from_millis(800);

/// Peak resident memory of this process (server and clients together), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// A good client that keeps a steady exchange going; `finish` checks nothing was lost.
struct Witness {
    sent: tokio::task::JoinHandle<u64>,
    stop: tokio::sync::watch::Sender<bool>,
    server_peer: Peer,
    _client: Client,
}

impl Witness {
    async fn start(server: &mut Server) -> Witness {
        let addr = server.local_addrs()[0].to_string();
        let client = Client::connect(&addr, ClientConfig::default().name("witness"))
            .await
            .unwrap();
        let server_peer = loop {
            if let Some(ServerEvent::Connected { peer }) = server.next_event().await {
                break peer;
            }
        };
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let c = client.peer().clone();
        let sent = tokio::spawn(async move {
            let mut i = 0u64;
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = tokio::time::sleep(Duration::from_millis(2)) => {
                        c.send(i.to_be_bytes().to_vec()).await.unwrap();
                        i += 1;
                    }
                }
            }
            i
        });
        Witness {
            sent,
            stop,
            server_peer,
            _client: client,
        }
    }

    /// Stops sending and checks that every message arrived once, in order.
    async fn finish(self) -> u64 {
        self.stop.send(true).unwrap();
        let n = tokio::time::timeout(Duration::from_secs(30), self.sent)
            .await
            .expect("the witness got stuck")
            .unwrap();
        for i in 0..n {
            let m = tokio::time::timeout(Duration::from_secs(30), self.server_peer.recv())
                .await
                .expect("a witness message never arrived")
                .unwrap();
            assert_eq!(u64::from_be_bytes(m.body[..].try_into().unwrap()), i);
        }
        // And every receipt resolved.
        tokio::time::timeout(Duration::from_secs(30), self._client.flush())
            .await
            .unwrap()
            .unwrap();
        n
    }
}

/// Sends `bytes`, then reads until the server closes; returns the frames it sent back and how
/// long it took to be dropped.
async fn attack(addr: &str, bytes: &[u8]) -> (Vec<Frame>, Duration) {
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got)).await;
    let took = start.elapsed();
    let mut d = Decoder::new(1 << 20);
    d.feed(&got);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = d.decode() {
        frames.push(f);
    }
    (frames, took)
}

fn hello(min: u16, max: u16, resume: Option<ResumeRequest>) -> Vec<u8> {
    let mut b = Vec::new();
    Frame::Hello(Hello {
        min_version: min,
        max_version: max,
        limits: Limits {
            max_frame: 65_536,
            max_message: 1 << 20,
            window: Window {
                messages: 1_024,
                bytes: 1 << 20,
            },
        },
        first_seq: if resume.is_some() { Seq(0) } else { Seq(1) },
        resume,
        name: None,
        credentials: None,
        transforms: Vec::new(),
    })
    .encode(&mut b);
    b
}

fn rejected(frames: &[Frame]) -> Option<RejectCode> {
    frames.iter().find_map(|f| match f {
        Frame::Reject(r) => Some(r.code),
        _ => None,
    })
}

async fn server() -> (Server, String) {
    let proto = Config::default().handshake_timeout(HANDSHAKE);
    let s = Server::bind(["127.0.0.1:0"], ServerConfig::default().protocol(proto))
        .await
        .unwrap();
    let a = s.local_addrs()[0].to_string();
    (s, a)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_openings_are_refused_and_the_good_client_loses_nothing() {
    let (mut server, addr) = server().await;
    let witness = Witness::start(&mut server).await;
    let mut data_first = Vec::new();
    Frame::Data(steadfast::proto::frame::Data {
        offset: None,
        seq: Seq(1),
        timestamp_us: 0,
        more: false,
        body: bytes::Bytes::from_static(b"x"),
    })
    .encode(&mut data_first);
    let cases: Vec<(&str, Vec<u8>, Option<RejectCode>)> = vec![
        (
            "garbage (an HTTP request)",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Some(RejectCode::ProtocolError),
        ),
        (
            "4 GiB length prefix",
            vec![0xff, 0xff, 0xff, 0xff, 0x01, 0x00],
            Some(RejectCode::ProtocolError),
        ),
        (
            "impossible version range",
            hello(9, 12, None),
            Some(RejectCode::VersionMismatch),
        ),
        (
            "DATA before the handshake",
            data_first,
            Some(RejectCode::ProtocolError),
        ),
        (
            "truncated HELLO, then silence",
            hello(1, 1, None)[..10].to_vec(),
            None,
        ),
    ];
    for (name, bytes, expect) in cases {
        let (frames, took) = attack(&addr, &bytes).await;
        println!(
            "{name}: dropped after {took:?}, answer {:?}",
            rejected(&frames)
        );
        assert_eq!(rejected(&frames), expect, "{name}");
        assert!(
            took < HANDSHAKE + Duration::from_secs(2),
            "{name}: {took:?}"
        );
    }
    let n = witness.finish().await;
    println!(
        "witness: {n} messages, none lost; peak RSS {} KiB",
        peak_rss_kib()
    );
    assert!(n > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_silent_connections_are_dropped_at_the_handshake_timeout() {
    let (mut server, addr) = server().await;
    let witness = Witness::start(&mut server).await;
    let before = peak_rss_kib();
    let start = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..1_000 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    // Every one of them is closed by the server, within the handshake timeout and a margin.
    let mut reads = tokio::task::JoinSet::new();
    for mut s in silent {
        reads.spawn(async move {
            let mut b = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(20), s.read(&mut b)).await;
            Instant::now()
        });
    }
    let mut last = start;
    while let Some(t) = reads.join_next().await {
        last = last.max(t.unwrap());
    }
    let took = last - start;
    let after = peak_rss_kib();
    println!(
        "1,000 silent connections all dropped {took:?} after the first opened; peak RSS {before} → {after} KiB"
    );
    assert!(took < HANDSHAKE + Duration::from_secs(5), "{took:?}");
    let n = witness.finish().await;
    assert!(n > 0);
    // Only the witness is left.
    assert!(server.connections() <= 2, "{}", server.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_resumes_with_random_tokens_disturbs_nothing() {
    let (mut server, addr) = server().await;
    let witness = Witness::start(&mut server).await;
    let real = witness.server_peer.id().unwrap();
    let mut rng = fastrand::Rng::with_seed(5);
    let start = Instant::now();
    for i in 0..500 {
        // Half aim at the witness's real session id, half at random ids.
        let id = if i % 2 == 0 {
            real
        } else {
            SessionId(rng.u128(..).to_le_bytes())
        };
        let bytes = hello(
            1,
            1,
            Some(ResumeRequest {
                partial: 0,
                session_id: id,
                token: ResumeToken(rng.u128(..).to_le_bytes()),
                received: Seq(1),
            }),
        );
        let (frames, _) = attack(&addr, &bytes).await;
        assert_eq!(rejected(&frames), Some(RejectCode::UnknownSession));
    }
    println!("500 forged resumes refused in {:?}", start.elapsed());
    assert!(
        witness.server_peer.is_connected(),
        "the real session was disturbed"
    );
    let n = witness.finish().await;
    assert!(n > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_fills_only_its_own_outbox() {
    let proto = Config::default()
        .max_message(1 << 20)
        .outbox(4_096, 4 << 20);
    let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default().protocol(proto))
        .await
        .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let witness = Witness::start(&mut server).await;
    // A client that completes the handshake, then never reads again.
    let mut lazy = TcpStream::connect(&addr).await.unwrap();
    lazy.write_all(&hello(1, 1, None)).await.unwrap();
    let lazy_peer = loop {
        if let Some(ServerEvent::Connected { peer }) = server.next_event().await {
            break peer;
        }
    };
    let before = peak_rss_kib();
    let body = vec![0u8; 1_024];
    let mut queued = 0u64;
    let mut full = 0u64;
    for _ in 0..100_000 {
        match lazy_peer.try_send(body.clone()) {
            Ok(_) => queued += 1,
            Err(_) => {
                full += 1;
                tokio::task::yield_now().await;
            }
        }
    }
    let stats = lazy_peer.stats();
    let after = peak_rss_kib();
    println!(
        "never-reading peer: {queued} queued, {full} refused as full, outbox {} messages; peak RSS {before} → {after} KiB",
        stats.in_flight
    );
    assert!(full > 0, "backpressure never applied");
    assert!(stats.in_flight <= 4_096);
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "memory grew by {} KiB",
        after - before
    );
    let n = witness.finish().await;
    assert!(n > 0);
    drop(lazy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_bounds_every_session_together() {
    let budget = 256 << 10;
    let proto = Config::default()
        .max_message(16 << 10)
        .outbox(100_000, 8 << 20);
    let server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default()
            .protocol(proto)
            .memory_budget(budget)
            .linger(Duration::from_millis(200)),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0].to_string();
    // Two clients that complete the handshake and never read.
    let mut lazy = Vec::new();
    let mut peers = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(&hello(1, 1, None)).await.unwrap();
        lazy.push(s);
        peers.push(loop {
            if let Some(ServerEvent::Connected { peer }) = server.next_event().await {
                break peer;
            }
        });
    }
    let body = vec![0u8; 1_024];
    let mut queued = 0u64;
    while peers[0].try_send(body.clone()).is_ok() {
        queued += 1;
        assert!(server.queued_bytes() <= budget, "{}", server.queued_bytes());
    }
    println!(
        "budget {budget} B: {queued} messages of 1 KiB queued for the first peer, {} B in use",
        server.queued_bytes()
    );
    assert!(queued > 100 && queued <= 256);
    // The budget is shared: the second peer is full too, and new sessions are refused.
    assert!(peers[1].try_send(body.clone()).is_err());
    match Client::connect(&addr, ClientConfig::default()).await {
        Err(steadfast::error::ConnectError::Rejected { code, .. }) => {
            assert_eq!(code, RejectCode::ServerFull)
        }
        other => panic!("{other:?}"),
    }
    // A waiting send on the second peer...
    let waiting = {
        let p = peers[1].clone();
        let body = body.clone();
        tokio::spawn(async move { p.send(body).await.is_ok() })
    };
    // ... completes when the first peer goes away and expires, giving its bytes back.
    drop(lazy.remove(0));
    loop {
        if let Some(ServerEvent::Expired { unacknowledged, .. }) = server.next_event().await {
            assert_eq!(unacknowledged.len() as u64, queued);
            break;
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting send was never woken")
            .unwrap()
    );
    assert_eq!(server.queued_bytes(), 1_024);
    assert!(peers[1].try_send(body).is_ok());
}
