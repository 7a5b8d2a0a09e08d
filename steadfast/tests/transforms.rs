//! Message transforms over real loopback TCP: negotiation, compression on the wire, per-message
//! errors on both sides, bounded decompression, and resumes through a fault proxy.

#![cfg(feature = "runtime")]
// Some imports serve only the compression tests (features `lz4`, `zstd`).
#![cfg_attr(not(all(feature = "lz4", feature = "zstd")), allow(unused_imports))]
#![allow(clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::error::{ConnectError, RecvError, SendError};
use steadfast::proto::{Config, RejectCode};
use steadfast::transform::{Transform, TransformError};
use steadfast::{Client, ClientConfig, Peer, Server, ServerConfig, ServerEvent};

const WAIT: Duration = Duration::from_secs(20);

/// Appends a one-byte sum and checks it. The sender's copy can be told to corrupt bodies that
/// start with `corrupt:`, and every copy refuses to encode bodies starting with `forbidden`.
#[derive(Debug, Default)]
struct Checksum {
    corrupt: bool,
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

impl Transform for Checksum {
    fn name(&self) -> &str {
        "checksum"
    }
    fn encode(&self, body: Bytes) -> Result<Bytes, TransformError> {
        if body.starts_with(b"forbidden") {
            return Err(TransformError::new("checksum", "this body is not allowed"));
        }
        let mut v = body.to_vec();
        let s = sum(&body);
        v.push(if self.corrupt && body.starts_with(b"corrupt:") {
            s.wrapping_add(1)
        } else {
            s
        });
        Ok(v.into())
    }
    fn decode(&self, mut body: Bytes, _max: usize) -> Result<Bytes, TransformError> {
        let Some(&s) = body.last() else {
            return Err(TransformError::new("checksum", "empty body"));
        };
        let body = body.split_to(body.len() - 1);
        if sum(&body) != s {
            return Err(TransformError::new("checksum", "checksum mismatch"));
        }
        Ok(body)
    }
}

async fn bind(config: ServerConfig) -> (Server, String) {
    let server = Server::bind(["127.0.0.1:0"], config).await.unwrap();
    let addr = server.local_addrs()[0].to_string();
    (server, addr)
}

async fn connected(server: &mut Server) -> Peer {
    loop {
        match tokio::time::timeout(WAIT, server.next_event())
            .await
            .unwrap()
        {
            Some(ServerEvent::Connected { peer }) => return peer,
            Some(_) => continue,
            None => panic!("server stopped"),
        }
    }
}

async fn recv(peer: &Peer) -> Result<steadfast::Message, RecvError> {
    tokio::time::timeout(WAIT, peer.recv()).await.unwrap()
}

#[tokio::test]
async fn a_client_whose_chain_the_server_lacks_is_refused_naming_the_transform() {
    let (_server, addr) = bind(ServerConfig::default().transform(Checksum::default())).await;
    #[derive(Debug)]
    struct Rot13;
    impl Transform for Rot13 {
        fn name(&self) -> &str {
            "rot13"
        }
        fn encode(&self, body: Bytes) -> Result<Bytes, TransformError> {
            Ok(body)
        }
        fn decode(&self, body: Bytes, _: usize) -> Result<Bytes, TransformError> {
            Ok(body)
        }
    }
    let err = Client::connect(&addr, ClientConfig::default().transform(Rot13))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Rejected { code: RejectCode::Incompatible, reason }
            if reason.contains("rot13")),
        "{err}"
    );
    // A required transform the client does not apply.
    let (_server, addr) =
        bind(ServerConfig::default().require_transform(Checksum::default())).await;
    let err = Client::connect(&addr, ClientConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Rejected { code: RejectCode::Incompatible, reason }
            if reason.contains("checksum")),
        "{err}"
    );
    // And with it, the session is made.
    let client = Client::connect(
        &addr,
        ClientConfig::default().transform(Checksum::default()),
    )
    .await
    .unwrap();
    client.close("done").await;
}

#[tokio::test]
async fn per_message_errors_on_both_sides_leave_the_session_working() {
    let (mut server, addr) = bind(ServerConfig::default().transform(Checksum::default())).await;
    let client = Client::connect(
        &addr,
        ClientConfig::default().transform(Checksum { corrupt: true }),
    )
    .await
    .unwrap();
    let peer = connected(&mut server).await;

    // Sending: refused by the chain, nothing queued, the next send goes through.
    let err = client.send("forbidden body").await.unwrap_err();
    assert!(
        matches!(&err, SendError::Transform(e) if e.transform == "checksum"),
        "{err}"
    );
    let err = peer.try_send("forbidden too").unwrap_err();
    assert!(matches!(err, SendError::Transform(_)), "{err}");

    // Receiving: the corrupted body is an error for that message only.
    client.send("one").await.unwrap();
    let bad = client.send("corrupt: two").await.unwrap();
    let last = client.send("three").await.unwrap();
    assert_eq!(recv(&peer).await.unwrap().body, "one");
    let err = recv(&peer).await.unwrap_err();
    assert!(
        matches!(&err, RecvError::Transform { seq, error }
            if *seq == bad.seq() && error.reason == "checksum mismatch"),
        "{err}"
    );
    assert_eq!(recv(&peer).await.unwrap().body, "three");
    // The bad message counts as taken: every receipt resolves.
    tokio::time::timeout(WAIT, last).await.unwrap().unwrap();
    assert!(bad.is_acknowledged());

    // A batch read stops before a bad body; the next read reports it, then the rest follow.
    for body in ["a", "b", "corrupt: c", "d"] {
        client.send(body).await.unwrap();
    }
    let flushed = tokio::time::timeout(WAIT, async {
        // A condition with a deadline: all four have arrived.
        while peer.waiting() < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    assert!(flushed.is_ok(), "messages did not arrive");
    let first = peer.recv_up_to(10).unwrap();
    assert_eq!(
        first.iter().map(|m| &m.body[..]).collect::<Vec<_>>(),
        [&b"a"[..], b"b"]
    );
    assert_eq!(peer.waiting(), 2);
    assert!(matches!(
        peer.recv_up_to(10),
        Err(RecvError::Transform { .. })
    ));
    let rest = peer.recv_up_to(10).unwrap();
    assert_eq!(
        rest.iter().map(|m| &m.body[..]).collect::<Vec<_>>(),
        [&b"d"[..]]
    );

    // The other direction still works.
    peer.send("reply").await.unwrap();
    assert_eq!(recv(client.peer()).await.unwrap().body, "reply");
    client.close("done").await;
}

/// Server side: a transform named like the client's but whose encoding is a fixed, highly
/// compressible payload of `len` bytes, whatever the body (a hostile sender).
#[cfg(feature = "lz4")]
#[derive(Debug)]
struct Lz4Bomb(usize);

#[cfg(feature = "lz4")]
impl Transform for Lz4Bomb {
    fn name(&self) -> &str {
        "lz4"
    }
    fn encode(&self, _body: Bytes) -> Result<Bytes, TransformError> {
        steadfast::transform::Lz4.encode(Bytes::from(vec![0u8; self.0]))
    }
    fn decode(&self, body: Bytes, max: usize) -> Result<Bytes, TransformError> {
        steadfast::transform::Lz4.decode(body, max)
    }
}

#[cfg(feature = "lz4")]
#[tokio::test]
async fn a_decompression_bomb_is_a_per_message_error_bounded_by_max_message() {
    use steadfast::transform::Lz4;
    let limit = 64 << 10;
    // A sender whose "lz4" inflates every body to 8 MiB, from about 32 KiB on the wire.
    let (mut evil, evil_addr) = bind(ServerConfig::default().transform(Lz4Bomb(8 << 20))).await;
    // The receiving client accepts messages of at most 64 KiB.
    let victim = Client::connect(
        &evil_addr,
        ClientConfig::default()
            .protocol(Config::default().max_message(limit))
            .transform(Lz4),
    )
    .await
    .unwrap();
    let bomber = connected(&mut evil).await;
    let wire = Lz4Bomb(8 << 20).encode(Bytes::new()).unwrap();
    assert!(wire.len() < limit as usize, "the bomb fits: {}", wire.len());
    bomber.send("small").await.unwrap();
    let err = recv(victim.peer()).await.unwrap_err();
    assert!(
        matches!(&err, RecvError::Transform { error, .. } if error.reason.contains("more than 65536")),
        "{err}"
    );
    // The victim's session goes on, both ways.
    victim.send("still here").await.unwrap();
    assert_eq!(recv(&bomber).await.unwrap().body, "still here");
    victim.close("done").await;
}

#[cfg(feature = "lz4")]
#[tokio::test]
async fn lz4_shrinks_what_goes_on_the_wire() {
    use steadfast::transform::{Lz4, Zstd};
    async fn wire_bytes(client_config: ClientConfig) -> u64 {
        let (mut server, _) = bind(
            ServerConfig::default()
                .transform(Lz4)
                .transform(Zstd::default()),
        )
        .await;
        let proxy = Chaos::start(
            "127.0.0.1:0",
            server.local_addrs()[0],
            ChaosConfig::default(),
        )
        .await
        .unwrap();
        proxy.set_enabled(false);
        let client = Client::connect(proxy.local_addr().to_string(), client_config)
            .await
            .unwrap();
        let peer = connected(&mut server).await;
        let text = "the quick brown fox jumps over the lazy dog. ".repeat(100);
        for _ in 0..50 {
            client.send(text.clone()).await.unwrap();
            peer.send(text.clone()).await.unwrap();
        }
        for _ in 0..50 {
            assert_eq!(recv(&peer).await.unwrap().body, text);
            assert_eq!(recv(client.peer()).await.unwrap().body, text);
        }
        tokio::time::timeout(WAIT, client.flush())
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(WAIT, peer.flush())
            .await
            .unwrap()
            .unwrap();
        proxy.stats().bytes.load(Ordering::Relaxed)
    }
    let plain = wire_bytes(ClientConfig::default()).await;
    let lz4 = wire_bytes(ClientConfig::default().transform(Lz4)).await;
    let zstd = wire_bytes(ClientConfig::default().transform(Zstd::default())).await;
    println!("wire bytes: plain {plain}, lz4 {lz4}, zstd {zstd}");
    assert!(plain > 450_000, "plain {plain}");
    assert!(lz4 * 10 < plain, "lz4 {lz4} vs plain {plain}");
    assert!(zstd * 10 < plain, "zstd {zstd} vs plain {plain}");
}

#[cfg(feature = "zstd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_messages_cross_cuts_exactly_once_and_come_back_decoded_when_lost() {
    use steadfast::transform::Zstd;
    let fast = Config::default()
        .idle_timeout(Duration::from_millis(1_500))
        .keepalive_interval(Duration::from_millis(400));
    let (mut server, _) = bind(
        ServerConfig::default()
            .protocol(fast.clone())
            .transform(Zstd::default()),
    )
    .await;
    let mut proxy = Chaos::start(
        "127.0.0.1:0",
        server.local_addrs()[0],
        ChaosConfig {
            seed: 7,
            bytes: (2 << 10, 64 << 10),
            ..ChaosConfig::default()
        },
    )
    .await
    .unwrap();
    let _faults = proxy.faults();
    let client = Client::connect(
        proxy.local_addr().to_string(),
        ClientConfig::default()
            .protocol(fast)
            .backoff(Duration::from_millis(5), Duration::from_millis(50))
            .transform(Zstd::level(1)),
    )
    .await
    .unwrap();
    let peer = connected(&mut server).await;
    let n = 5_000u64;
    let sender = {
        let client = client.peer().clone();
        tokio::spawn(async move {
            let mut last = None;
            for i in 0..n {
                let body = format!("{i:08} {}", "payload ".repeat(20));
                last = Some(client.send(body).await.unwrap());
            }
            tokio::time::timeout(Duration::from_secs(60), last.unwrap())
                .await
                .unwrap()
                .unwrap();
        })
    };
    for i in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(60), peer.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            &m.body[..8],
            format!("{i:08}").as_bytes(),
            "lost or reordered"
        );
    }
    sender.await.unwrap();
    let cuts = proxy.stats().cuts();
    println!("{n} compressed messages through {cuts} cuts");
    assert!(cuts >= 3, "only {cuts} cuts");

    // Messages the peer never takes come back to the sender as they were given to `send`.
    proxy.set_enabled(false);
    peer.send("never read 1").await.unwrap();
    peer.send("never read 2").await.unwrap();
    peer.close("bye").await;
    let lost = peer.take_unacknowledged();
    let bodies: Vec<&[u8]> = lost.iter().map(|m| &m.body[..]).collect();
    assert_eq!(bodies, [&b"never read 1"[..], b"never read 2"]);
}
