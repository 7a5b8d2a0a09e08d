//! Cuts: acknowledged throughput through the fault proxy with every connection cut 100 ms
//! after it starts, vs the same transfer through the same kind of proxy without faults; then
//! outages (the proxy gone, connections refused) and the time from the proxy being reachable
//! again to the first message delivered after it, next to the client's reconnect delay plus
//! two round trips.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use steadfast::chaos::{Chaos, ChaosConfig};
use steadfast::{Client, ClientConfig, ClientEvent, Peer, ServerEvent};
use tokio::sync::{Notify, mpsc, watch};

use super::{Bodies, Ctx, Figures, Tally, bind, median, pair, rate, receive, transfer};

/// How often the link is cut.
const CUT_EVERY: Duration = Duration::from_millis(100);
/// Outages per run for the recovery figure.
const OUTAGES: usize = 5;
/// How long the proxy is gone in an outage.
const OUTAGE: Duration = Duration::from_millis(100);

/// A fault schedule that never faults: byte budgets out of reach, no timer.
fn no_faults() -> ChaosConfig {
    ChaosConfig {
        bytes: (u64::MAX / 4, u64::MAX / 4),
        interval: None,
        ..ChaosConfig::default()
    }
}

pub(super) async fn run(ctx: &Ctx) -> Result<Figures, String> {
    let n = ctx.count;
    // A quick first retry, capped low: what an application on a flaky link would choose.
    let client = ctx
        .setup
        .client
        .clone()
        .backoff(Duration::from_millis(5), Duration::from_millis(100));
    let proxy_err = |e: std::io::Error| format!("cannot start the fault proxy: {e}");

    let server = bind(ctx.setup.server.clone()).await?;
    let upstream = server.local_addrs()[0];
    let clean_proxy = Chaos::start("127.0.0.1:0", upstream, no_faults())
        .await
        .map_err(proxy_err)?;
    let p = pair(server, Some(clean_proxy.local_addr()), client.clone()).await?;
    let bar = ctx.ui.bar("clean, through the proxy", n);
    let (clean_took, clean) = transfer(&p, n, ctx.size, bar.clone()).await?;
    bar.finish_and_clear();
    drop(p);
    drop(clean_proxy);

    let server = bind(ctx.setup.server.clone()).await?;
    let upstream = server.local_addrs()[0];
    let cutter = Chaos::start(
        "127.0.0.1:0",
        upstream,
        ChaosConfig {
            seed: 7,
            interval: Some(CUT_EVERY),
            ..no_faults()
        },
    )
    .await
    .map_err(proxy_err)?;
    let p = pair(server, Some(cutter.local_addr()), client.clone()).await?;
    let bar = ctx.ui.bar("cut every 100 ms", n);
    let (took, cut) = transfer(&p, n, ctx.size, bar.clone()).await?;
    bar.finish_and_clear();
    let cuts = cutter.stats().cuts();
    drop(p);
    drop(cutter);

    let rec = recovery(ctx, client).await?;

    let mut f = Figures::default();
    let (ours, clean_rate) = (rate(n, took), rate(n, clean_took));
    f.set("msgs_per_sec", ours);
    f.set("clean_msgs_per_sec", clean_rate);
    f.set("ratio_vs_raw", ours / clean_rate);
    f.set("cuts", cuts as f64);
    f.set("recovery_ms", median(&mut rec.recovery_ms.clone()));
    f.set("recovery_bound_ms", median(&mut rec.bound_ms.clone()));
    f.set("recovery_resent", rec.resent as f64);
    f.lost = clean.lost(n) + cut.lost(n) + rec.tally.lost(rec.sent);
    f.duplicated = clean.duplicated + cut.duplicated + rec.tally.duplicated;
    Ok(f)
}

/// What the outages showed.
struct Recovery {
    recovery_ms: Vec<f64>,
    bound_ms: Vec<f64>,
    /// Messages the client sent again after the outages.
    resent: u64,
    tally: Tally,
    sent: u64,
}

/// The first delivery after the proxy came back.
#[derive(Default)]
struct Mark {
    armed: AtomicBool,
    first: std::sync::Mutex<Option<Instant>>,
    seen: Notify,
}

/// Traffic flows without pause; `OUTAGES` times the proxy goes away (every connection through
/// it ends, new ones are refused) for `OUTAGE`, then listens again on the same address.
async fn recovery(ctx: &Ctx, client_config: ClientConfig) -> Result<Recovery, String> {
    let server = bind(ctx.setup.server.clone()).await?;
    let upstream = server.local_addrs()[0];
    let mut proxy = Some(
        Chaos::start("127.0.0.1:0", upstream, no_faults())
            .await
            .map_err(|e| format!("cannot start the fault proxy: {e}"))?,
    );
    let proxy_addr = proxy.as_ref().map_or(upstream, Chaos::local_addr);
    let client = Client::connect(proxy_addr.to_string(), client_config)
        .await
        .map_err(|e| format!("cannot connect to {proxy_addr}: {e}"))?;
    let server_peer = loop {
        match tokio::time::timeout(Duration::from_secs(10), server.next_event()).await {
            Ok(Some(ServerEvent::Connected { peer })) => break peer,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Err("the server saw no client".into()),
        }
    };
    let server_task = tokio::spawn(async move { while server.next_event().await.is_some() {} });
    let peer = client.peer().clone();
    // The client's events, stamped: which reconnect delay preceded each resume.
    let (ev_tx, mut events) = mpsc::unbounded_channel();
    let events_task = tokio::spawn(async move {
        while let Some(ev) = client.next_event().await {
            let _ = ev_tx.send(ev);
        }
    });

    let mark = Arc::new(Mark::default());
    let (done_tx, done_rx) = watch::channel(false);
    let receiver = tokio::spawn(receive_marked(server_peer, mark.clone(), done_rx));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = tokio::spawn(send_until(
        peer.clone(),
        ctx.size,
        stop.clone(),
        sent.clone(),
    ));

    let bar = ctx.ui.bar("outages", OUTAGES as u64);
    let retransmitted_before = peer.stats().retransmitted;
    let mut recovery_ms = Vec::new();
    let mut bound_ms = Vec::new();
    let mut failure = None;
    for _ in 0..OUTAGES {
        // Traffic flows for a while, then the proxy disappears.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rtt = match tokio::time::timeout(Duration::from_secs(2), peer.ping()).await {
            Ok(Ok(rtt)) => rtt,
            _ => peer.stats().rtt.unwrap_or_default(),
        };
        while events.try_recv().is_ok() {}
        drop(proxy.take());
        tokio::time::sleep(OUTAGE).await;
        proxy = Some(restart(proxy_addr, upstream).await?);
        let up_at = Instant::now();
        *mark.first.lock().unwrap_or_else(|e| e.into_inner()) = None;
        mark.armed.store(true, Ordering::SeqCst);
        let seen = mark.seen.notified();
        tokio::pin!(seen);
        seen.as_mut().enable();
        let first = *mark.first.lock().unwrap_or_else(|e| e.into_inner());
        let first = match first {
            Some(t) => t,
            None => {
                if tokio::time::timeout(Duration::from_secs(10), seen)
                    .await
                    .is_err()
                {
                    failure = Some("no message was delivered within 10 s of an outage");
                    break;
                }
                let t = *mark.first.lock().unwrap_or_else(|e| e.into_inner());
                t.unwrap_or_else(Instant::now)
            }
        };
        recovery_ms.push(first.saturating_duration_since(up_at).as_secs_f64() * 1e3);
        // The reconnect delay of the attempt that succeeded: the last one before the resume.
        let mut delay = Duration::ZERO;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(ClientEvent::Reconnecting { delay: d, .. })) => delay = d,
                Ok(Some(ClientEvent::Connected { .. })) => break,
                Ok(Some(ClientEvent::SessionLost { reason, .. })) => {
                    return Err(format!("the session was lost in an outage: {reason}"));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        bound_ms.push((delay + 2 * rtt).as_secs_f64() * 1e3);
        bar.inc(1);
    }
    bar.finish_and_clear();
    stop.store(true, Ordering::SeqCst);
    let sent_result = tokio::time::timeout(Duration::from_secs(30), sender).await;
    let _ = done_tx.send(true);
    let tally = tokio::time::timeout(Duration::from_secs(10), receiver).await;
    let resent = peer.stats().retransmitted - retransmitted_before;
    events_task.abort();
    server_task.abort();
    drop(proxy);
    if let Some(f) = failure {
        return Err(f.into());
    }
    match sent_result {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e),
        _ => return Err("the sender did not finish after the outages".into()),
    }
    let Ok(Ok(tally)) = tally else {
        return Err("the receiver did not finish after the outages".into());
    };
    Ok(Recovery {
        recovery_ms,
        bound_ms,
        resent,
        tally,
        sent: sent.load(Ordering::SeqCst),
    })
}

/// Listens again on the proxy's address (the old listener may take a moment to close).
async fn restart(addr: SocketAddr, upstream: SocketAddr) -> Result<Chaos, String> {
    let mut tries = 0;
    loop {
        match Chaos::start(&addr.to_string(), upstream, no_faults()).await {
            Ok(c) => return Ok(c),
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(format!("cannot listen again on {addr}: {e}")),
        }
    }
}

/// Sends counted messages until `stop`, then waits until all are acknowledged.
async fn send_until(
    peer: Peer,
    size: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Result<(), String> {
    let mut bodies = Bodies::new(size);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        peer.send(bodies.next(i))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        i += 1;
        sent.store(i, Ordering::Relaxed);
    }
    peer.flush()
        .await
        .map_err(|e| format!("not every message was acknowledged: {e}"))
}

/// As [`receive`], also noting the time of the first delivery after the mark is armed.
async fn receive_marked(peer: Peer, mark: Arc<Mark>, done: watch::Receiver<bool>) -> Tally {
    let bar = indicatif::ProgressBar::hidden();
    receive(peer, bar, done, move || {
        if mark.armed.swap(false, Ordering::SeqCst) {
            *mark.first.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            mark.seen.notify_waiters();
        }
    })
    .await
}
