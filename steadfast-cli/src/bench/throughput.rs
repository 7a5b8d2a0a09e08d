//! Throughput: acknowledged messages on one connection, sent with `Peer::send` (one call per
//! message) and with `Peer::send_all` (runs of 1,024), vs raw length-prefixed framing over one
//! tokio TCP connection with batched writes (the approach of `benches/throughput.rs`), all in
//! the same run. With `--durable`, the same transfer again with `DurableStore`s on both sides.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use steadfast::store::{DurableStore, PgOptions, PgStore, StoreRole};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{
    Api, Ctx, Figures, Tally, bind, pair, peak_rss_bytes, percentile, rate, transfer_to_client,
    transfer_with,
};

pub(super) async fn run(ctx: &Ctx) -> Result<Figures, String> {
    let n = ctx.count;
    let bar = ctx.ui.bar("raw tokio framing", n);
    let (raw_took, raw_tally) = raw_framing(n, ctx.size, &bar).await?;
    bar.finish_and_clear();
    if raw_tally.lost(n) != 0 || raw_tally.duplicated != 0 {
        return Err("the raw baseline lost messages (a bug in the bench)".into());
    }
    let mut f = Figures::default();
    let raw = rate(n, raw_took);
    let mut best = 0.0f64;
    for (api, label, key) in [
        (Api::Send, "steadfast send", "send_msgs_per_sec"),
        (Api::SendAll, "steadfast send_all", "send_all_msgs_per_sec"),
    ] {
        let server = bind(ctx.setup.server.clone()).await?;
        let pair = pair(server, None, ctx.setup.client.clone()).await?;
        let bar = ctx.ui.bar(label, n);
        let (took, tally) = transfer_with(&pair, n, ctx.size, bar.clone(), api).await?;
        bar.finish_and_clear();
        drop(pair);
        let r = rate(n, took);
        f.set(key, r);
        best = best.max(r);
        f.lost += tally.lost(n);
        f.duplicated += tally.duplicated;
    }
    f.set("msgs_per_sec", best);
    f.set("raw_msgs_per_sec", raw);
    f.set("ratio_vs_raw", best / raw);
    if ctx.durable {
        let dirs = StateDirs::new()?;
        let server_store = DurableStore::open(&dirs.server, StoreRole::Server)
            .map_err(|e| format!("cannot open the server's state directory: {e}"))?;
        let client_store = DurableStore::open(&dirs.client, StoreRole::Client)
            .map_err(|e| format!("cannot open the client's state directory: {e}"))?;
        let (server_store, client_store) = (Arc::new(server_store), Arc::new(client_store));
        let server = bind(ctx.setup.server.clone().store(server_store.clone())).await?;
        let pair = pair(
            server,
            None,
            ctx.setup.client.clone().store(client_store.clone()),
        )
        .await?;
        let bar = ctx.ui.bar("steadfast durable", n);
        let result = transfer_with(&pair, n, ctx.size, bar.clone(), Api::SendAll).await;
        bar.finish_and_clear();
        drop(pair);
        // Commit latency: the slower of the two stores at each percentile.
        let (a, b) = (server_store.commit_latency(), client_store.commit_latency());
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        f.set("commit_p50_us", us(a.p50.max(b.p50)));
        f.set("commit_p99_us", us(a.p99.max(b.p99)));
        drop((server_store, client_store));
        // Let the stores' writer threads finish with the files before they are removed.
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(dirs);
        let (took, tally) = result?;
        let (durable, memory) = (rate(n, took), f.get("send_all_msgs_per_sec").unwrap_or(0.0));
        f.set("durable_msgs_per_sec", durable);
        f.set("memory_msgs_per_sec", memory);
        f.set("ratio_durable_vs_memory", durable / memory);
        f.lost += tally.lost(n);
        f.duplicated += tally.duplicated;
    }
    if let Some(url) = &ctx.postgres {
        let memory = f.get("send_all_msgs_per_sec").unwrap_or(0.0);
        for (key, ratio, label, to_client) in [
            (
                "postgres_in_msgs_per_sec",
                "ratio_postgres_in_vs_memory",
                "steadfast postgres, to the server",
                false,
            ),
            (
                "postgres_out_msgs_per_sec",
                "ratio_postgres_out_vs_memory",
                "steadfast postgres, to the client",
                true,
            ),
        ] {
            let options = PgOptions::node(format!("bench-{}", std::process::id()));
            let store = PgStore::connect(url, options)
                .await
                .map_err(|e| format!("--state {url}: {e}"))?;
            let server = bind(ctx.setup.server.clone().store(Arc::new(store))).await?;
            let pair = pair(server, None, ctx.setup.client.clone()).await?;
            let bar = ctx.ui.bar(label, n);
            let result = if to_client {
                transfer_to_client(&pair, n, ctx.size, bar.clone()).await
            } else {
                transfer_with(&pair, n, ctx.size, bar.clone(), Api::SendAll).await
            };
            bar.finish_and_clear();
            drop(pair);
            let (took, tally) = result?;
            let r = rate(n, took);
            f.set(key, r);
            f.set(ratio, r / memory);
            f.lost += tally.lost(n);
            f.duplicated += tally.duplicated;
        }
    }
    if let Some(url) = &ctx.postgres {
        let (took, sent, lost, duplicated) = many_sessions(ctx, url, 100).await?;
        f.set("postgres_100_sessions_msgs_per_sec", rate(sent, took));
        f.lost += lost;
        f.duplicated += duplicated;
        for (cross, rate_key, p50_key, p99_key) in [
            (
                false,
                "fleet_local_send_msgs_per_sec",
                "fleet_local_send_p50_us",
                "fleet_local_send_p99_us",
            ),
            (
                true,
                "fleet_send_to_msgs_per_sec",
                "fleet_send_to_p50_us",
                "fleet_send_to_p99_us",
            ),
        ] {
            let mode = if cross { Mode::SendTo } else { Mode::Local };
            let (took, sent, lost) = fleet_messages(ctx, url, mode).await?;
            let mut latencies = fleet_latency(ctx, url, cross).await?;
            latencies.sort_unstable();
            f.set(rate_key, rate(sent, took));
            f.set(p50_key, percentile(&latencies, 0.5) as f64);
            f.set(p99_key, percentile(&latencies, 0.99) as f64);
            f.lost += lost;
        }
        let (took, sent, lost) = fleet_messages(ctx, url, Mode::SendAllTo).await?;
        f.set("fleet_send_all_to_msgs_per_sec", rate(sent, took));
        f.lost += lost;
    }
    if let Some(peak) = peak_rss_bytes() {
        f.set("peak_rss_bytes", peak);
    }
    Ok(f)
}

/// Two fresh state directories under the system's temporary directory, removed (with what
/// the stores wrote) when dropped.
struct StateDirs {
    root: PathBuf,
    server: PathBuf,
    client: PathBuf,
}

impl StateDirs {
    fn new() -> Result<StateDirs, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "steadfast-bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of a killed run with the same process id is not ours to resume.
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)
            .map_err(|e| format!("cannot create {}: {e}", root.display()))?;
        Ok(StateDirs {
            server: root.join("server"),
            client: root.join("client"),
            root,
        })
    }
}

impl Drop for StateDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
/// One-way length-prefixed frames (4-byte big-endian length, then the body), writes batched
/// in 64 KiB, the reader parsing frames out of a 256 KiB buffer. No acknowledgement.
pub(super) async fn raw_framing(
    n: u64,
    size: usize,
    bar: &indicatif::ProgressBar,
) -> Result<(Duration, Tally), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("raw baseline: bind: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("raw baseline: {e}"))?;
    let bar2 = bar.clone();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 << 10];
        let (mut have, mut tally) = (0usize, Tally::default());
        let mut got = 0u64;
        while got < n {
            let r = s.read(&mut buf[have..]).await?;
            if r == 0 {
                break;
            }
            have += r;
            let mut off = 0;
            let before = got;
            while have - off >= 4 {
                let mut len = [0u8; 4];
                len.copy_from_slice(&buf[off..off + 4]);
                let len = u32::from_be_bytes(len) as usize;
                if len > buf.len() - 4 {
                    return Err(std::io::Error::other("frame too large"));
                }
                if have - off < 4 + len {
                    break;
                }
                tally.take(&buf[off + 4..off + 4 + len]);
                off += 4 + len;
                got += 1;
            }
            buf.copy_within(off..have, 0);
            have -= off;
            bar2.inc(got - before);
        }
        Ok::<_, std::io::Error>(tally)
    });
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("raw baseline: connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let start = Instant::now();
    let filler = vec![0x2au8; size - 8];
    let mut batch = Vec::with_capacity(64 << 10);
    let io = |e: std::io::Error| format!("raw baseline: {e}");
    for i in 0..n {
        batch.extend_from_slice(&(size as u32).to_be_bytes());
        batch.extend_from_slice(&i.to_be_bytes());
        batch.extend_from_slice(&filler);
        if batch.len() >= 64 << 10 {
            s.write_all(&batch).await.map_err(io)?;
            batch.clear();
        }
    }
    s.write_all(&batch).await.map_err(io)?;
    let tally = reader
        .await
        .map_err(|e| format!("raw baseline: {e}"))?
        .map_err(io)?;
    Ok((start.elapsed(), tally))
}

/// `sessions` clients at once, each sending its share of `ctx.count` messages with
/// `send_all` to one server whose sessions are in PostgreSQL at `url`: the time until every
/// client's last receipt, how many were sent, and what the server's side lost and saw twice.
async fn many_sessions(
    ctx: &Ctx,
    url: &str,
    sessions: u64,
) -> Result<(Duration, u64, u64, u64), String> {
    let options = PgOptions::node(format!("bench-many-{}", std::process::id()));
    let store = PgStore::connect(url, options)
        .await
        .map_err(|e| format!("--state {url}: {e}"))?;
    let server = bind(ctx.setup.server.clone().store(Arc::new(store))).await?;
    let addr = server.local_addrs()[0];
    let share = (ctx.count / sessions).max(1);
    let mut clients = Vec::new();
    for _ in 0..sessions {
        let c = steadfast::Client::connect(addr, ctx.setup.client.clone())
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        clients.push(c);
    }
    let mut receivers = tokio::task::JoinSet::new();
    for _ in 0..sessions {
        let peer = tokio::time::timeout(Duration::from_secs(10), server.accept())
            .await
            .map_err(|_| "the server saw too few clients".to_string())?
            .ok_or("the server stopped")?;
        receivers.spawn(async move {
            let mut tally = Tally::default();
            // Until its share arrived (each session's messages are numbered from 0).
            while tally.next < share {
                let Ok(batch) = peer.recv_many(4_096).await else {
                    break;
                };
                for m in &batch {
                    tally.take(&m.body);
                }
            }
            tally
        });
    }
    let start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for c in &clients {
        let peer = c.peer().clone();
        let size = ctx.size;
        senders.spawn(async move { super::send_all_acknowledged(&peer, share, size).await });
    }
    while let Some(r) = senders.join_next().await {
        r.map_err(|e| format!("a sender failed: {e}"))??;
    }
    let took = start.elapsed();
    let (mut lost, mut duplicated) = (0, 0);
    while let Some(t) = receivers.join_next().await {
        let t = t.map_err(|e| format!("a receiver failed: {e}"))?;
        lost += t.lost(share);
        duplicated += t.duplicated;
    }
    drop(clients);
    Ok((took, share * sessions, lost, duplicated))
}

/// Two servers, `a` and `b`, on the database at `url` (node names unique to this run).
async fn fleet_servers(ctx: &Ctx, url: &str, tag: &str) -> Result<Vec<steadfast::Server>, String> {
    let mut servers = Vec::new();
    for node in ["a", "b"] {
        let name = format!("bench-{node}-{}-{tag}", std::process::id());
        let store = PgStore::connect(url, PgOptions::node(name))
            .await
            .map_err(|e| format!("--state {url}: {e}"))?;
        servers.push(bind(ctx.setup.server.clone().store(Arc::new(store))).await?);
    }
    Ok(servers)
}

/// How the fleet benchmark sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `Peer::send` on the server that holds the session.
    Local,
    /// `Server::send_to` on another server, one message per call.
    SendTo,
    /// `Server::send_all_to` on another server, 256 messages per call.
    SendAllTo,
}

/// Sessions the fleet benchmark sends to, each from a task of its own.
const FLEET_SESSIONS: u64 = 10;

/// Messages to ten clients of server `b` of a two-server fleet on PostgreSQL, each send
/// waiting for the previous one to be stored (that is what orders them): with `cross`, from
/// server `a` with `Server::send_to` (stored as mail, queued by `b`); else from `b` itself
/// with `Peer::send`. Each body carries its send time; the clients note when they took it.
/// Returns the time until every receipt resolved, the count and the messages lost.
async fn fleet_messages(ctx: &Ctx, url: &str, mode: Mode) -> Result<(Duration, u64, u64), String> {
    let servers = fleet_servers(ctx, url, &format!("{}", mode as u8)).await?;
    let addr = servers[1].local_addrs()[0];
    let each = (ctx.count / 50 / FLEET_SESSIONS).max(100);
    let epoch = Instant::now();
    let mut readers = tokio::task::JoinSet::new();
    let mut ids = Vec::new();
    for _ in 0..FLEET_SESSIONS {
        let c = steadfast::Client::connect(addr, ctx.setup.client.clone())
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        ids.push(c.id().ok_or("no session id")?);
        readers.spawn(async move {
            let mut latencies = Vec::with_capacity(each as usize);
            for _ in 0..each {
                let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(60), c.recv()).await
                else {
                    break;
                };
                let sent = m
                    .body
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map_or(0, u64::from_le_bytes);
                let now = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                latencies.push(now.saturating_sub(sent));
            }
            (latencies, c)
        });
    }
    let start = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for id in ids {
        let (a, b) = (servers[0].clone(), servers[1].clone());
        let size = ctx.size.max(8);
        senders.spawn(async move {
            let mut receipts = Vec::with_capacity(each as usize);
            let stamped = || {
                let mut body = vec![0u8; size];
                let now = u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
                body[..8].copy_from_slice(&now.to_le_bytes());
                body
            };
            let mut left = if mode == Mode::SendAllTo { each } else { 0 };
            while left > 0 {
                let n = left.min(256);
                let batch: Vec<Vec<u8>> = (0..n).map(|_| stamped()).collect();
                let r = a.send_all_to(id, batch).await.map_err(|e| e.to_string())?;
                receipts.extend(r);
                left -= n;
            }
            let one_by_one = if mode == Mode::SendAllTo { 0 } else { each };
            for _ in 0..one_by_one {
                let body = stamped();
                if mode == Mode::SendTo {
                    let r = a.send_to(id, body).await.map_err(|e| e.to_string())?;
                    receipts.push(r);
                } else {
                    let peer = b.peer(id).ok_or("the session is gone")?;
                    let r = peer.send(body).await.map_err(|e| e.to_string())?;
                    receipts.push(steadfast::FleetReceipt::from(r));
                }
            }
            for r in receipts {
                r.await.map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        });
    }
    while let Some(r) = senders.join_next().await {
        r.map_err(|e| format!("a sender failed: {e}"))??;
    }
    let took = start.elapsed();
    let mut latencies = Vec::new();
    let mut clients = Vec::new();
    while let Some(r) = readers.join_next().await {
        let (l, c) = r.map_err(|e| format!("a reader failed: {e}"))?;
        latencies.extend(l);
        clients.push(c);
    }
    let sent = each * FLEET_SESSIONS;
    let lost = sent.saturating_sub(latencies.len() as u64);
    drop(clients);
    Ok((took, sent, lost))
}

/// One message at a time to one client of server `b` (after 20 of warm-up, 300 measured):
/// the time from the send (`a`'s `Server::send_to` with `cross`, else `b`'s `Peer::send`) to
/// the client's `recv`, in µs.
async fn fleet_latency(ctx: &Ctx, url: &str, cross: bool) -> Result<Vec<u64>, String> {
    let servers = fleet_servers(ctx, url, &format!("lat-{}", u8::from(cross))).await?;
    let addr = servers[1].local_addrs()[0];
    let client = steadfast::Client::connect(addr, ctx.setup.client.clone())
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let id = client.id().ok_or("no session id")?;
    let mut latencies = Vec::with_capacity(300);
    for i in 0..320 {
        let start = Instant::now();
        if cross {
            servers[0]
                .send_to(id, vec![0u8; ctx.size])
                .await
                .map_err(|e| e.to_string())?;
        } else {
            let peer = servers[1].peer(id).ok_or("the session is gone")?;
            peer.send(vec![0u8; ctx.size])
                .await
                .map_err(|e| e.to_string())?;
        }
        tokio::time::timeout(Duration::from_secs(30), client.recv())
            .await
            .map_err(|_| "a message never came".to_string())?
            .map_err(|e| e.to_string())?;
        if i >= 20 {
            latencies.push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        }
    }
    Ok(latencies)
}
