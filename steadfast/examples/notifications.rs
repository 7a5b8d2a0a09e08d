//! The notification queue and partial reads: one server-wide stream says which peer has
//! messages waiting; the application reads one, some or all of them when it chooses.
//! Exits non-zero if anything is wrong.
//!
//! `cargo run -p steadfast --example notifications`

use std::collections::HashMap;

use steadfast::{Client, ClientConfig, Server, ServerConfig, ServerEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).await?;
    let addr = server.local_addrs()[0].to_string();
    let mut clients = Vec::new();
    for name in ["north", "south", "east"] {
        let c = Client::connect(addr.clone(), ClientConfig::default().name(name)).await?;
        for i in 0..5 {
            c.send(format!("{name} {i}")).await?;
        }
        clients.push(c);
    }
    let mut got: HashMap<String, Vec<String>> = HashMap::new();
    while got.values().map(Vec::len).sum::<usize>() < 15 {
        match server.next_event().await.ok_or("server stopped")? {
            ServerEvent::MessagesWaiting { peer } => {
                // A partial read: two at most; the rest stay queued and the peer is announced
                // again when more arrive, or read later.
                for m in peer.recv_up_to(2)? {
                    let name = peer.name().unwrap_or("?").to_owned();
                    got.entry(name)
                        .or_default()
                        .push(String::from_utf8(m.body.to_vec())?);
                }
                if peer.waiting() > 0 {
                    for m in peer.recv_up_to(usize::MAX)? {
                        let name = peer.name().unwrap_or("?").to_owned();
                        got.entry(name)
                            .or_default()
                            .push(String::from_utf8(m.body.to_vec())?);
                    }
                }
            }
            _ => continue,
        }
    }
    for (name, texts) in &got {
        let expected: Vec<String> = (0..5).map(|i| format!("{name} {i}")).collect();
        assert_eq!(texts, &expected, "per-peer order");
    }
    println!("notifications: 3 peers, 15 messages, each peer's in order");
    Ok(())
}
