//! Routes and request/response over loopback: correlation, errors, deadlines, cuts, loss.

#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::proto::Config;
use steadfast::rpc::{RequestError, Router, Rpc, UNKNOWN_ROUTE};
use steadfast::{Client, ClientConfig, Peer, Server, ServerConfig, ServerEvent};

async fn pair(server: &mut Server, addr: String, config: ClientConfig) -> (Client, Peer) {
    let client = Client::connect(addr, config).await.unwrap();
    let peer = loop {
        if let Some(ServerEvent::Connected { peer }) = server.next_event().await {
            break peer;
        }
    };
    (client, peer)
}

fn router() -> Router {
    Router::new()
        .route("add", |_ctx, (a, b): (i64, i64)| async move {
            Ok::<_, String>(a + b)
        })
        .route("whoami", |ctx, (): ()| async move {
            Ok::<_, String>(ctx.peer.name().unwrap_or("?").to_owned())
        })
        .route(
            "fail",
            |_ctx, (): ()| async move { Err::<(), _>("it broke") },
        )
        .route("slow", |_ctx, ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, String>(ms)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_correlated_and_errors_come_back() {
    let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let (client, peer) = pair(&mut server, addr, ClientConfig::default().name("bob")).await;
    let _server_rpc = Rpc::new(peer, router());
    let rpc = std::sync::Arc::new(Rpc::new(client.peer().clone(), Router::new()));
    let d = Duration::from_secs(10);
    // Many in flight at once, each with its own answer.
    let mut tasks = Vec::new();
    for i in 0..500i64 {
        let rpc = rpc.clone();
        tasks.push(tokio::spawn(async move {
            let sum: i64 = rpc.request("add", &(i, 1000), d).await.unwrap();
            assert_eq!(sum, i + 1000);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let me: String = rpc.request("whoami", &(), d).await.unwrap();
    assert_eq!(me, "bob", "handlers see the peer");
    match rpc.request::<_, ()>("fail", &(), d).await {
        Err(RequestError::Handler(e)) => assert_eq!(e, "it broke"),
        other => panic!("{other:?}"),
    }
    match rpc.request::<_, ()>("nope", &(), d).await {
        Err(RequestError::Handler(e)) => assert_eq!(e, UNKNOWN_ROUTE),
        other => panic!("{other:?}"),
    }
    match rpc.request::<_, String>("add", &(1, 2), d).await {
        Err(RequestError::Decode(_)) => {}
        other => panic!("a number decoded as a string: {other:?}"),
    }
    // A deadline shorter than the handler: timeout; the late reply is dropped quietly and the
    // next request still gets its own answer.
    match rpc
        .request::<_, u64>("slow", &300u64, Duration::from_millis(50))
        .await
    {
        Err(RequestError::Timeout(_)) => {}
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let sum: i64 = rpc.request("add", &(40, 2), d).await.unwrap();
    assert_eq!(sum, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_survive_cuts_and_fail_as_unknown_when_the_session_is_lost() {
    let quick = Config::default()
        .idle_timeout(Duration::from_millis(1_000))
        .keepalive_interval(Duration::from_millis(300));
    let mut server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().protocol(quick.clone()),
    )
    .await
    .unwrap();
    let chaos = Chaos::start(
        "127.0.0.1:0",
        server.local_addrs()[0],
        ChaosConfig {
            seed: 3,
            bytes: (2_000, 20_000),
            ..ChaosConfig::default()
        },
    )
    .await
    .unwrap();
    let (client, peer) = pair(
        &mut server,
        chaos.local_addr().to_string(),
        ClientConfig::default()
            .protocol(quick)
            .backoff(Duration::from_millis(5), Duration::from_millis(50)),
    )
    .await;
    let server_rpc = Rpc::new(peer.clone(), router());
    let rpc = Rpc::new(client.peer().clone(), Router::new());
    for i in 0..2_000i64 {
        let sum: i64 = rpc
            .request("add", &(i, i), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(sum, 2 * i);
    }
    println!("2,000 requests through {} cuts", chaos.stats().cuts());
    assert!(chaos.stats().cuts() > 5);
    // The server kills the session while a request is pending: outcome unknown.
    let pending = tokio::spawn(async move {
        rpc.request::<_, u64>("slow", &5_000u64, Duration::from_secs(30))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.kick(peer.id().unwrap(), "bye");
    drop(server_rpc);
    match tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .unwrap()
        .unwrap()
    {
        Err(RequestError::OutcomeUnknown) => {}
        other => panic!("{other:?}"),
    }
}
