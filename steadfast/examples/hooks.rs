//! Lifecycle hooks: a server whose behaviour is a handler trait (connected, message, tick,
//! session ended) and a client driven the same way. Exits non-zero if anything is wrong.
//!
//! `cargo run -p steadfast --example hooks`

use std::time::Duration;

use steadfast::hooks::{ClientHooks, ServerHooks, run_client, run_server};
use steadfast::{Client, ClientConfig, EndReason, Message, Peer, Server, ServerConfig};

/// Upper-cases every message back to its sender; stops after the session ends.
#[derive(Default)]
struct Shouter {
    connected: Vec<String>,
    ticks: u32,
    ended: bool,
}

impl ServerHooks for Shouter {
    async fn on_connected(&mut self, peer: &Peer) {
        self.connected.push(peer.name().unwrap_or("?").to_owned());
    }
    async fn on_message(&mut self, peer: &Peer, message: Message) -> bool {
        let loud = message.body.to_ascii_uppercase();
        peer.send(loud).await.is_ok()
    }
    async fn on_tick(&mut self, _server: &Server) -> bool {
        self.ticks += 1;
        !self.ended
    }
    async fn on_session_ended(&mut self, _peer: &Peer, _reason: &EndReason, _u: &[Message]) {
        self.ended = true;
    }
}

/// Collects replies until it has three.
#[derive(Default)]
struct Listener {
    replies: Vec<String>,
}

impl ClientHooks for Listener {
    async fn on_message(&mut self, _peer: &Peer, message: Message) -> bool {
        self.replies
            .push(String::from_utf8_lossy(&message.body).into_owned());
        self.replies.len() < 3
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).await?;
    let addr = server.local_addrs()[0].to_string();
    let server_side = tokio::spawn(async move {
        let mut shouter = Shouter::default();
        run_server(&mut server, &mut shouter, Duration::from_millis(10)).await;
        shouter
    });
    let mut client = Client::connect(addr, ClientConfig::default().name("quiet")).await?;
    for word in ["hello", "out", "there"] {
        client.send(word).await?;
    }
    let mut listener = Listener::default();
    run_client(&mut client, &mut listener, Duration::from_millis(100)).await;
    assert_eq!(listener.replies, ["HELLO", "OUT", "THERE"]);
    client.close("thanks").await;
    let shouter = tokio::time::timeout(Duration::from_secs(5), server_side).await??;
    assert_eq!(shouter.connected, ["quiet"]);
    assert!(shouter.ended && shouter.ticks > 0);
    println!(
        "hooks: {:?} shouted back; the server saw the session end",
        listener.replies
    );
    Ok(())
}
