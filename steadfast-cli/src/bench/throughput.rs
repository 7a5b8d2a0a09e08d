//! Throughput: acknowledged messages on one connection vs raw length-prefixed framing over one
//! tokio TCP connection with batched writes (the approach of `benches/throughput.rs`).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Ctx, Figures, Tally, bind, pair, rate, transfer};

pub(super) async fn run(ctx: &Ctx) -> Result<Figures, String> {
    let n = ctx.count;
    let bar = ctx.ui.bar("raw tokio framing", n);
    let (raw_took, raw_tally) = raw_framing(n, ctx.size, &bar).await?;
    bar.finish_and_clear();
    if raw_tally.lost(n) != 0 || raw_tally.duplicated != 0 {
        return Err("the raw baseline lost messages (a bug in the bench)".into());
    }
    let server = bind(ctx.setup.server.clone()).await?;
    let pair = pair(server, None, ctx.setup.client.clone()).await?;
    let bar = ctx.ui.bar("steadfast acknowledged", n);
    let (took, tally) = transfer(&pair, n, ctx.size, bar.clone()).await?;
    bar.finish_and_clear();
    drop(pair);
    let mut f = Figures::default();
    let (ours, raw) = (rate(n, took), rate(n, raw_took));
    f.set("msgs_per_sec", ours);
    f.set("raw_msgs_per_sec", raw);
    f.set("ratio_vs_raw", ours / raw);
    f.lost = tally.lost(n);
    f.duplicated = tally.duplicated;
    Ok(f)
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
