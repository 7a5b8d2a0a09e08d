//! Ping/pong, after KoriNet's ping client and server: the server answers every `ping N` with
//! `pong N`; the client sends 1,000 pings one after the other, checks that each pong arrives
//! exactly once and in order, and prints the application-level round-trip times (min, median,
//! max, measured with `std::time::Instant`) next to the protocol-level one (`Peer::ping`, a
//! PING/PONG frame pair that never reaches the application). Exits non-zero if anything is
//! wrong.
//!
//! `cargo run -p steadfast --example ping`

use std::time::{Duration, Instant};

use steadfast::{Client, ClientConfig, Peer, Server, ServerConfig};

const PINGS: u32 = 1_000;
const WAIT: Duration = Duration::from_secs(10);

/// Answers `ping N` with `pong N` until the session ends.
async fn answer(peer: Peer) -> Result<u32, String> {
    let mut answered = 0;
    while let Ok(m) = peer.recv().await {
        let text = std::str::from_utf8(&m.body).map_err(|e| e.to_string())?;
        let n = text
            .strip_prefix("ping ")
            .ok_or_else(|| format!("not a ping: {text:?}"))?;
        peer.send(format!("pong {n}"))
            .await
            .map_err(|e| e.to_string())?;
        answered += 1;
    }
    Ok(answered)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).await?;
    let addr = server.local_addrs()[0].to_string();
    // The server: each new session is served by a task of its own (`answer` returns when
    // the session ends); this example has one client, so one session.
    let server_task = tokio::spawn(async move {
        let peer = server.accept().await.ok_or("server stopped")?;
        tokio::spawn(answer(peer))
            .await
            .map_err(|e| e.to_string())?
    });

    let client = Client::connect(addr, ClientConfig::default().name("pinger")).await?;
    let mut rtts = Vec::with_capacity(PINGS as usize);
    for n in 0..PINGS {
        let start = Instant::now();
        client.send(format!("ping {n}")).await?;
        let reply = tokio::time::timeout(WAIT, client.recv()).await??;
        rtts.push(start.elapsed());
        // The next message must be this ping's pong: none lost, repeated or out of order.
        if reply.body != format!("pong {n}") {
            return Err(format!("expected pong {n}, got {:?}", reply.body).into());
        }
    }
    // Everything was acknowledged, and nothing more arrives: each pong came exactly once.
    tokio::time::timeout(WAIT, client.flush()).await??;
    let protocol_rtt = client.ping().await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    if let Some(extra) = client.try_recv()? {
        return Err(format!("an extra message arrived: {:?}", extra.body).into());
    }

    rtts.sort();
    let (min, median, max) = (rtts[0], rtts[rtts.len() / 2], rtts[rtts.len() - 1]);
    println!(
        "ping: {PINGS} pongs, each once and in order; round trip min {min:?}, median {median:?}, max {max:?}"
    );
    println!("ping: protocol-level round trip (Peer::ping) {protocol_rtt:?}");

    client.close("done").await;
    let answered = tokio::time::timeout(WAIT, server_task).await???;
    if answered != PINGS {
        return Err(format!("the server answered {answered} pings, not {PINGS}").into());
    }
    Ok(())
}
