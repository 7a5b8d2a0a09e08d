//! Routes and request/response over loopback: correlation, errors, deadlines, cuts, loss.

#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::proto::{Config, Window};
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

/// Counts the handlers running now and the most ever running at once; counts down on drop, so
/// a cancelled handler counts as finished.
struct Running {
    now: Arc<AtomicUsize>,
}

impl Running {
    fn enter(now: &Arc<AtomicUsize>, high: &AtomicUsize) -> Running {
        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
        high.fetch_max(n, Ordering::SeqCst);
        Running { now: now.clone() }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Handlers that wait at a gate the test opens; `started` gets a permit per handler started.
#[derive(Clone)]
struct Gated {
    gate: Arc<tokio::sync::Semaphore>,
    started: Arc<tokio::sync::Semaphore>,
    running: Arc<AtomicUsize>,
    high: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Gated {
    fn new() -> Gated {
        Gated {
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            started: Arc::new(tokio::sync::Semaphore::new(0)),
            running: Arc::default(),
            high: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn router(&self, limit: usize) -> Router {
        let g = self.clone();
        Router::new()
            .route("gated", move |_ctx, i: u64| {
                let g = g.clone();
                async move {
                    g.calls.fetch_add(1, Ordering::SeqCst);
                    let _running = Running::enter(&g.running, &g.high);
                    g.started.add_permits(1);
                    // Each handler passes the gate with one permit and gives it back.
                    let _pass = g.gate.acquire().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(i)
                }
            })
            .max_in_flight(limit)
    }
}

/// Waits (polling, bounded) until `cond` holds; panics with `what` otherwise.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < give_up, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_are_bounded_and_requests_beyond_the_bound_stay_unacknowledged() {
    const LIMIT: usize = 8;
    const REQUESTS: u64 = 1_000;
    const WINDOW: u32 = 32;
    const OUTBOX: usize = 64;
    // A small receive window on the server and a small outbox on the client, so the whole
    // chain of backpressure shows: slots, then window, then outbox, then `send` waits.
    let mut server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().protocol(Config::default().window(Window {
            messages: WINDOW,
            bytes: 1 << 20,
        })),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let (client, peer) = pair(
        &mut server,
        addr,
        ClientConfig::default().protocol(Config::default().outbox(OUTBOX, 32 << 20)),
    )
    .await;
    let gated = Gated::new();
    let _server_rpc = Rpc::new(peer.clone(), gated.router(LIMIT));
    let rpc = Arc::new(Rpc::new(client.peer().clone(), Router::new()));

    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let rpc = rpc.clone();
        tasks.push(tokio::spawn(async move {
            let r: u64 = rpc
                .request("gated", &i, Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(r, i, "each request gets its own reply");
        }));
    }

    // The gate is shut: LIMIT handlers start, the rest of the requests are held back.
    let started = gated.started.acquire_many(LIMIT as u32).await.unwrap();
    started.forget();
    let server_peer = peer.clone();
    eventually(
        "the server's receive window full of unread requests",
        || server_peer.stats().waiting == WINDOW as usize,
    )
    .await;
    let client_peer = client.peer().clone();
    eventually("the client's outbox full", || {
        client_peer.stats().in_flight == OUTBOX
    })
    .await;
    let c = client.peer().stats();
    println!(
        "gate shut: client {c:?}, server waiting {}",
        peer.stats().waiting
    );
    assert_eq!(
        gated.high.load(Ordering::SeqCst),
        LIMIT,
        "at most LIMIT handlers ran"
    );
    assert_eq!(gated.running.load(Ordering::SeqCst), LIMIT);
    assert!(
        c.acknowledged <= LIMIT as u64,
        "only the requests a handler took are acknowledged: {c:?}"
    );
    assert!(
        c.queued <= (LIMIT + OUTBOX) as u64,
        "the other requests wait in `send`: {c:?}"
    );

    // Open the gate: every request runs once and gets its reply.
    gated.gate.add_permits(REQUESTS as usize);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(gated.calls.load(Ordering::SeqCst), REQUESTS as usize);
    assert_eq!(
        gated.high.load(Ordering::SeqCst),
        LIMIT,
        "never more than LIMIT at once"
    );
    let c = client.peer().stats();
    assert_eq!(c.queued, REQUESTS);
    client.peer().flush().await.unwrap();
    assert_eq!(client.peer().stats().acknowledged, REQUESTS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_rpc_cancels_its_handlers() {
    let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let (client, peer) = pair(&mut server, addr, ClientConfig::default()).await;
    let gated = Gated::new();
    let server_rpc = Rpc::new(peer, gated.router(4));
    let rpc = Arc::new(Rpc::new(client.peer().clone(), Router::new()));
    for i in 0..10u64 {
        let rpc = rpc.clone();
        tokio::spawn(async move {
            let _ = rpc
                .request::<_, u64>("gated", &i, Duration::from_secs(60))
                .await;
        });
    }
    gated.started.acquire_many(4).await.unwrap().forget();
    assert_eq!(gated.running.load(Ordering::SeqCst), 4);
    drop(server_rpc);
    // The gate never opens: only cancellation ends the handlers.
    let running = gated.running.clone();
    eventually("the handlers cancelled", || {
        running.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(
        gated.calls.load(Ordering::SeqCst),
        4,
        "no handler started after the drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_serves_the_routes_nobody_else_handles() {
    let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default())
        .await
        .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let (client, peer) = pair(&mut server, addr, ClientConfig::default()).await;
    let fallback = router().fallback(|ctx, n: u64| async move {
        if n == 0 {
            Err(format!("{} refused zero", ctx.route))
        } else {
            Ok(format!("{} got {n}", ctx.route))
        }
    });
    let _server_rpc = Rpc::new(peer, fallback);
    let rpc = Rpc::new(client.peer().clone(), Router::new());
    let d = Duration::from_secs(10);
    let sum: i64 = rpc.request("add", &(1, 2), d).await.unwrap();
    assert_eq!(sum, 3, "a route of its own still wins");
    let got: String = rpc.request("anything/else", &7u64, d).await.unwrap();
    assert_eq!(
        got, "anything/else got 7",
        "the fallback sees the route asked for"
    );
    match rpc.request::<_, String>("other", &0u64, d).await {
        Err(RequestError::Handler(e)) => assert_eq!(e, "other refused zero"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_too_large_to_send_comes_back_as_an_error_reply() {
    let small = Config::default().max_message(4_096);
    let mut server = Server::bind(
        ["127.0.0.1:0"],
        ServerConfig::default().protocol(small.clone()),
    )
    .await
    .unwrap();
    let addr = server.local_addrs()[0].to_string();
    let (addr2, small2) = (addr.clone(), small.clone());
    let (client, peer) = pair(&mut server, addr, ClientConfig::default().protocol(small)).await;
    let big = Router::new().route("big", |_ctx, n: usize| async move {
        Ok::<_, String>(vec![7u8; n])
    });
    let _server_rpc = Rpc::new(peer, big);
    let rpc = Rpc::new(client.peer().clone(), Router::new());
    let d = Duration::from_secs(10);
    let fits: Vec<u8> = rpc.request("big", &1_000usize, d).await.unwrap();
    assert_eq!(fits.len(), 1_000);
    // A route that fills most of the request leaves room for the reply all the same.
    let long = "x".repeat(4_086); // the request is 4,095 bytes, a reply naming the route 4,097
    let fallback =
        Router::new().fallback(|ctx, (): ()| async move { Ok::<_, String>(ctx.route.len()) });
    let (client2, peer2) = pair(
        &mut server,
        addr2.clone(),
        ClientConfig::default().protocol(small2),
    )
    .await;
    let _server_rpc2 = Rpc::new(peer2, fallback);
    let rpc2 = Rpc::new(client2.peer().clone(), Router::new());
    let n: usize = rpc2.request(&long, &(), d).await.unwrap();
    assert_eq!(n, 4_086);
    match rpc.request::<_, Vec<u8>>("big", &10_000usize, d).await {
        Err(RequestError::Handler(e)) => {
            assert!(e.contains("above the largest message of 4096 bytes"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
