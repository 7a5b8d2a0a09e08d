//! The blocking API: a server and a client without async code, with receipts and a graceful
//! close. Exits non-zero if anything is wrong.
//!
//! `cargo run -p steadfast --example blocking`

use std::time::Duration;

use steadfast::blocking::{Client, Server};
use steadfast::{ClientConfig, ServerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind(["127.0.0.1:0"], ServerConfig::default())?;
    let client = Client::connect(server.local_addrs()[0].to_string(), ClientConfig::default())?;
    let mut receipts = Vec::new();
    for i in 0..1_000u32 {
        receipts.push(client.peer().send(i.to_be_bytes().to_vec())?);
    }
    let Some(peer) = server.accept_timeout(Duration::from_secs(5)) else {
        return Err("no client".into());
    };
    for i in 0..1_000u32 {
        let m = peer.recv()?;
        assert_eq!(&m.body[..], &i.to_be_bytes());
    }
    for r in receipts {
        r.wait()?;
    }
    let rtt = client.peer().ping()?;
    client.peer().close("done");
    assert!(client.peer().end_reason().is_some());
    println!("blocking: 1,000 messages acknowledged, rtt {rtt:?}, session closed");
    let _ = server.shutdown(Duration::from_millis(100));
    Ok(())
}
