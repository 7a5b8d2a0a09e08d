//! Typed messages: a serde struct sent as MessagePack; a wrong type is a clear per-message
//! error and the session carries on. Runs on loopback, exits non-zero if anything is wrong.
//!
//! `cargo run -p steadfast --features serde --example typed`

use serde::{Deserialize, Serialize};
use steadfast::typed::TypedRecvError;
use steadfast::{Client, ClientConfig, Server, ServerConfig};

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Order {
    id: u32,
    item: String,
    quantity: u16,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).await?;
    let client =
        Client::connect(server.local_addrs()[0].to_string(), ClientConfig::default()).await?;
    let Some(peer) = server.accept().await else {
        return Err("no client".into());
    };
    let order = Order {
        id: 7,
        item: "tea".into(),
        quantity: 2,
    };
    client.send_value(&order).await?;
    client.send_value(&"not an order").await?;
    let last = client.send_value(&Order { id: 8, ..order }).await?;

    let first: Order = peer.recv_value().await?;
    assert_eq!(first.id, 7);
    match peer.recv_value::<Order>().await {
        Err(TypedRecvError::Decode(e)) => println!("as expected: {e}"),
        other => return Err(format!("a string decoded as an Order: {other:?}").into()),
    }
    let third: Order = peer.recv_value().await?;
    assert_eq!(
        (third.id, third.item.as_str(), third.quantity),
        (8, "tea", 2)
    );
    last.await?; // the receipt: the server's application took it
    println!("typed: {first:?} and {third:?} arrived; the bad one was reported, not fatal");
    Ok(())
}
