//! Message transforms: a server that supports LZ4 compression and *requires* an application
//! signature, and a client with the chain `[signature, lz4]` (sign, then compress the signed
//! body). It shows a large repetitive text arriving intact and much smaller on the wire, a
//! client without the signature refused in the handshake (`Incompatible`), a client with the
//! wrong key whose messages fail one by one on the server, and a body the signature refuses to
//! encode failing alone (`SendError::Transform`) while the session goes on. Exits non-zero if
//! anything is wrong.
//!
//! `cargo run -p steadfast --features lz4 --example transforms`

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::error::{ConnectError, RecvError, SendError};
use steadfast::proto::RejectCode;
use steadfast::transform::{Lz4, Transform, TransformError};
use steadfast::{Client, ClientConfig, Peer, Server, ServerConfig, ServerEvent};

const WAIT: Duration = Duration::from_secs(10);
const KEY: &[u8] = b"shared secret of the example";
const SIGN: &str = "toy-sign-v1";

/// A keyed checksum appended to every body: 8 bytes of FNV-1a over key, body, key.
///
/// A TOY, NOT SECURITY: FNV is not a MAC, and anyone who sees a few signed bodies can forge
/// more. A real deployment would use HMAC-SHA256 (for example the `hmac` and `sha2` crates)
/// with a properly random key, compare tags in constant time, and rather run over TLS. The
/// example only shows where such a step sits in the chain and how its errors surface.
///
/// Its policy: it signs text only; a body that is not UTF-8 is refused (a per-message error).
#[derive(Debug)]
struct Signature {
    key: Vec<u8>,
}

impl Signature {
    fn new(key: &[u8]) -> Self {
        Signature { key: key.to_vec() }
    }

    fn tag(&self, body: &[u8]) -> [u8; 8] {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.key.iter().chain(body).chain(&self.key) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h.to_be_bytes()
    }
}

impl Transform for Signature {
    fn name(&self) -> &str {
        SIGN
    }

    fn encode(&self, body: Bytes) -> Result<Bytes, TransformError> {
        if std::str::from_utf8(&body).is_err() {
            return Err(TransformError::new(
                SIGN,
                "signs text only: body is not UTF-8",
            ));
        }
        let mut out = Vec::with_capacity(body.len() + 8);
        out.extend_from_slice(&body);
        out.extend_from_slice(&self.tag(&body));
        Ok(out.into())
    }

    fn decode(&self, mut body: Bytes, max_len: usize) -> Result<Bytes, TransformError> {
        if body.len() < 8 {
            return Err(TransformError::new(SIGN, "too short to carry a signature"));
        }
        let tag = body.split_off(body.len() - 8);
        if body.len() > max_len {
            return Err(TransformError::new(SIGN, "body too large"));
        }
        if tag[..] != self.tag(&body) {
            return Err(TransformError::new(SIGN, "bad signature"));
        }
        Ok(body)
    }
}

async fn connected(server: &mut Server) -> Result<Peer, Box<dyn std::error::Error>> {
    loop {
        match tokio::time::timeout(WAIT, server.next_event()).await? {
            Some(ServerEvent::Connected { peer }) => return Ok(peer),
            Some(_) => continue,
            None => return Err("server stopped".into()),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = ServerConfig::default()
        .transform(Lz4)
        .require_transform(Signature::new(KEY));
    let mut server = Server::bind(["127.0.0.1:0"], config).await?;
    let addr = server.local_addrs()[0].to_string();
    // A pass-through proxy (faults off) that counts the bytes on the wire.
    let proxy = Chaos::start(
        "127.0.0.1:0",
        server.local_addrs()[0],
        ChaosConfig::default(),
    )
    .await?;
    proxy.set_enabled(false);

    // 1. The chain [signature, lz4]: a large repetitive text arrives intact, compressed.
    let client = Client::connect(
        proxy.local_addr().to_string(),
        ClientConfig::default()
            .name("signer")
            .transform(Signature::new(KEY))
            .transform(Lz4),
    )
    .await?;
    let peer = connected(&mut server).await?;
    let text = "all work and no play makes jack a dull boy. ".repeat(20_000);
    let before = proxy.stats().bytes.load(Ordering::Relaxed);
    let receipt = client.send(text.clone()).await?;
    let got = tokio::time::timeout(WAIT, peer.recv()).await??;
    if got.body != text {
        return Err("the text arrived altered".into());
    }
    tokio::time::timeout(WAIT, receipt).await??;
    let wire = proxy.stats().bytes.load(Ordering::Relaxed) - before;
    println!(
        "transforms: {} bytes of text arrived intact; about {wire} bytes crossed the wire",
        text.len()
    );
    if wire * 10 > text.len() as u64 {
        return Err(format!("lz4 did not shrink the text: {wire} bytes on the wire").into());
    }

    // 2. A client without the required signature is refused in the handshake.
    match Client::connect(&addr, ClientConfig::default().transform(Lz4)).await {
        Err(ConnectError::Rejected {
            code: RejectCode::Incompatible,
            reason,
        }) if reason.contains(SIGN) => println!("transforms: unsigned client refused: {reason}"),
        Err(e) => return Err(format!("expected Incompatible naming {SIGN}, got {e}").into()),
        Ok(_) => return Err("an unsigned client was accepted".into()),
    }

    // 3. A client with the wrong key names the same chain, so it connects; each of its
    //    messages is a per-message error on the server (taken and acknowledged, not delivered).
    let forger = Client::connect(
        &addr,
        ClientConfig::default()
            .transform(Signature::new(b"a guessed key"))
            .transform(Lz4),
    )
    .await?;
    let forged_peer = connected(&mut server).await?;
    let forged = forger.send("transfer everything to mallory").await?;
    match tokio::time::timeout(WAIT, forged_peer.recv()).await? {
        Err(RecvError::Transform { seq, error }) if seq == forged.seq() => {
            println!("transforms: forged message {seq} refused by the server: {error}");
        }
        other => return Err(format!("a forged message was not refused: {other:?}").into()),
    }
    forger.close("caught").await;

    // 4. A body the signature refuses to encode: an error for that message alone.
    match client.send(vec![0xff, 0xfe, 0x00]).await {
        Err(SendError::Transform(e)) if e.transform == SIGN => {
            println!("transforms: binary body refused on send: {e}");
        }
        other => return Err(format!("expected SendError::Transform, got {other:?}").into()),
    }
    // The session goes on, both ways, through the whole chain.
    client.send("still here").await?;
    let next = tokio::time::timeout(WAIT, peer.recv()).await??;
    if next.body != "still here" {
        return Err(format!("unexpected message {:?}", next.body).into());
    }
    peer.send(format!("got {} bytes, then {:?}", text.len(), "still here"))
        .await?;
    let reply = tokio::time::timeout(WAIT, client.recv()).await??;
    println!(
        "transforms: the session goes on; server says {:?}",
        String::from_utf8_lossy(&reply.body)
    );

    client.close("done").await;
    let _ = server.shutdown(Duration::from_millis(100)).await;
    Ok(())
}
