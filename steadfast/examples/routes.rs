//! Named routes and request/response: a chat-like server with two routes, a client that sends
//! a one-way message and makes requests, and a route nobody handles. Exits non-zero if wrong.
//!
//! `cargo run -p steadfast --features serde --example routes`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steadfast::rpc::{RequestError, Router, Rpc};
use steadfast::{Client, ClientConfig, Server, ServerConfig};

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Post {
    text: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).await?;
    let client = Client::connect(
        server.local_addrs()[0].to_string(),
        ClientConfig::default().name("ada"),
    )
    .await?;
    let Some(peer) = server.accept().await else {
        return Err("no client".into());
    };

    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let (l1, l2) = (log.clone(), log.clone());
    let router = Router::new()
        .route("chat.send", move |ctx, post: Post| {
            let log = l1.clone();
            async move {
                let who = ctx.peer.name().unwrap_or("?").to_owned();
                log.lock()
                    .map_err(|e| e.to_string())?
                    .push(format!("{who}: {}", post.text));
                Ok::<_, String>(())
            }
        })
        .route("chat.history", move |_ctx, (): ()| {
            let log = l2.clone();
            async move { Ok::<_, String>(log.lock().map_err(|e| e.to_string())?.clone()) }
        });
    let _server = Rpc::new(peer, router);
    let rpc = Rpc::new(client.peer().clone(), Router::new());

    rpc.notify(
        "chat.send",
        &Post {
            text: "hello".into(),
        },
    )
    .await?;
    let d = Duration::from_secs(5);
    let _: () = rpc
        .request(
            "chat.send",
            &Post {
                text: "anyone?".into(),
            },
            d,
        )
        .await?;
    let history: Vec<String> = rpc.request("chat.history", &(), d).await?;
    assert_eq!(history, vec!["ada: hello", "ada: anyone?"]);
    match rpc.request::<_, ()>("chat.delete", &(), d).await {
        Err(RequestError::Handler(e)) => println!("unknown route answered: {e}"),
        other => return Err(format!("expected an error reply, got {other:?}").into()),
    }
    println!("routes: history {history:?}");
    Ok(())
}
