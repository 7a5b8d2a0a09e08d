//! Latency: request/response round trips on one connection (the client sends `size` bytes,
//! the server replies with `size` bytes, the client awaits the reply) vs raw tokio ping-pong
//! over TCP with TCP_NODELAY.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{Bodies, Ctx, Figures, Tally, bind, context_switches, counter, pair, percentile};

/// Round trips before measuring (connection warm-up).
fn warmup(n: u64) -> u64 {
    (n / 10).min(1_000)
}

pub(super) async fn run(ctx: &Ctx) -> Result<Figures, String> {
    let n = ctx.count;
    let total = n + warmup(n);
    let bar = ctx.ui.bar("raw tokio ping-pong", total);
    let (mut raw, raw_switches) = raw_ping_pong(n, ctx.size, &bar).await?;
    bar.finish_and_clear();

    let server = bind(ctx.setup.server.clone()).await?;
    let pair = pair(server, None, ctx.setup.client.clone()).await?;
    let echo = {
        let peer = pair.server_peer.clone();
        tokio::spawn(async move {
            while let Ok(m) = peer.recv().await {
                if peer.send(m.body).await.is_err() {
                    break;
                }
            }
        })
    };
    let bar = ctx.ui.bar("steadfast request/reply", total);
    let peer = pair.client.peer();
    let mut bodies = Bodies::new(ctx.size);
    let mut samples = Vec::with_capacity(n as usize);
    let mut tally = Tally::default();
    let mut switches_at_start = None;
    for i in 0..total {
        if i == total - n {
            switches_at_start = context_switches();
        }
        let t0 = Instant::now();
        peer.send(bodies.next(i))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        let reply = peer.recv().await.map_err(|e| format!("no reply: {e}"))?;
        let rtt = t0.elapsed();
        if counter(&reply.body) != Some(i) {
            return Err(format!("reply {i} carried the wrong counter"));
        }
        tally.take(&reply.body);
        if i >= total - n {
            samples.push(rtt.as_nanos() as u64);
        }
        if i % 256 == 0 {
            bar.set_position(i);
        }
    }
    let switches = switches_at_start
        .zip(context_switches())
        .map(|(a, b)| b - a);
    bar.finish_and_clear();
    echo.abort();
    drop(pair);

    samples.sort_unstable();
    raw.sort_unstable();
    let us = |s: &[u64], q: f64| percentile(s, q) as f64 / 1_000.0;
    let mut f = Figures::default();
    for (prefix, s) in [("rtt", &samples), ("raw_rtt", &raw)] {
        f.values.insert(pick(prefix, "p50"), us(s, 0.50));
        f.values.insert(pick(prefix, "p90"), us(s, 0.90));
        f.values.insert(pick(prefix, "p99"), us(s, 0.99));
        f.values.insert(pick(prefix, "p999"), us(s, 0.999));
        f.values.insert(pick(prefix, "max"), us(s, 1.0));
    }
    f.set("ratio_vs_raw", us(&samples, 0.5) / us(&raw, 0.5));
    // Context switches per round trip, over the whole process (both ends run in it): the
    // figure that does not depend on what a wake-up costs on this machine.
    let per_round_trip = |s: Option<u64>| s.map(|s| s as f64 / n.max(1) as f64);
    if let Some(v) = per_round_trip(switches) {
        f.set("ctx_switches_per_round_trip", v);
    }
    if let Some(v) = per_round_trip(raw_switches) {
        f.set("raw_ctx_switches_per_round_trip", v);
    }
    f.notes.push(histogram("steadfast round trips", &samples));
    f.notes.push(histogram("raw tokio round trips", &raw));
    f.lost = tally.lost(total);
    f.duplicated = tally.duplicated;
    Ok(f)
}

/// The static field name of a percentile.
fn pick(prefix: &str, p: &str) -> &'static str {
    match (prefix, p) {
        ("rtt", "p50") => "rtt_p50_us",
        ("rtt", "p90") => "rtt_p90_us",
        ("rtt", "p99") => "rtt_p99_us",
        ("rtt", "p999") => "rtt_p999_us",
        ("rtt", _) => "rtt_max_us",
        (_, "p50") => "raw_rtt_p50_us",
        (_, "p90") => "raw_rtt_p90_us",
        (_, "p99") => "raw_rtt_p99_us",
        (_, "p999") => "raw_rtt_p999_us",
        _ => "raw_rtt_max_us",
    }
}

/// Round-trip times (ns) of raw length-prefixed ping-pong: the server reads a frame and
/// writes it back; both sides TCP_NODELAY, reads buffered, each frame one write. With the
/// process's context switches during the measured round trips.
async fn raw_ping_pong(
    n: u64,
    size: usize,
    bar: &indicatif::ProgressBar,
) -> Result<(Vec<u64>, Option<u64>), String> {
    let io = |e: std::io::Error| format!("raw baseline: {e}");
    let listener = TcpListener::bind("127.0.0.1:0").await.map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut frame = Vec::new();
        loop {
            let len = match r.read_u32().await {
                Ok(l) => l as usize,
                Err(_) => return Ok::<_, std::io::Error>(()),
            };
            if len > 16 << 20 {
                return Err(std::io::Error::other("frame too large"));
            }
            frame.clear();
            frame.extend_from_slice(&(len as u32).to_be_bytes());
            frame.resize(4 + len, 0);
            r.read_exact(&mut frame[4..]).await?;
            w.write_all(&frame).await?;
        }
    });
    let s = TcpStream::connect(addr).await.map_err(io)?;
    s.set_nodelay(true).map_err(io)?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let total = n + warmup(n);
    let mut frame = vec![0x2au8; 4 + size];
    frame[..4].copy_from_slice(&(size as u32).to_be_bytes());
    let mut reply = vec![0u8; size];
    let mut samples = Vec::with_capacity(n as usize);
    let mut switches_at_start = None;
    for i in 0..total {
        if i == total - n {
            switches_at_start = context_switches();
        }
        frame[4..12].copy_from_slice(&i.to_be_bytes());
        let t0 = Instant::now();
        w.write_all(&frame).await.map_err(io)?;
        let len = r.read_u32().await.map_err(io)? as usize;
        if len != size {
            return Err("raw baseline: reply of the wrong size".into());
        }
        r.read_exact(&mut reply).await.map_err(io)?;
        let rtt = t0.elapsed();
        if counter(&reply) != Some(i) {
            return Err("raw baseline: reply carried the wrong counter".into());
        }
        if i >= total - n {
            samples.push(rtt.as_nanos() as u64);
        }
        if i % 256 == 0 {
            bar.set_position(i);
        }
    }
    let switches = switches_at_start
        .zip(context_switches())
        .map(|(a, b)| b - a);
    drop(w);
    let _ = server.await;
    Ok((samples, switches))
}

/// A log-scale histogram of sorted samples (ns) with the usual percentiles.
fn histogram(title: &str, sorted: &[u64]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if sorted.is_empty() {
        return out;
    }
    let us = |q: f64| percentile(sorted, q) as f64 / 1_000.0;
    let _ = writeln!(
        out,
        "{title}: p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        us(1.0)
    );
    // Buckets [2^k, 2^(k+1)) microseconds.
    let mut buckets = [0u64; 64];
    for s in sorted {
        let micros = (s / 1_000).max(1);
        buckets[(63 - micros.leading_zeros()) as usize] += 1;
    }
    let first = buckets.iter().position(|b| *b > 0).unwrap_or(0);
    let last = buckets.iter().rposition(|b| *b > 0).unwrap_or(0);
    let most = buckets.iter().copied().max().unwrap_or(1).max(1);
    for (k, b) in buckets.iter().enumerate().take(last + 1).skip(first) {
        let lo = 1u64 << k;
        let width = (b * 50).div_ceil(most) as usize;
        let _ = writeln!(
            out,
            "  {:>8} .. {:>8} us {:>9}  {}",
            lo,
            lo * 2,
            b,
            "#".repeat(width)
        );
    }
    out
}
