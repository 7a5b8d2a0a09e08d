//! Throughput of acknowledged 64-byte messages on one connection, next to raw
//! length-prefixed framing over tokio TCP measured in the same process and run.
//!
//! `cargo bench -p steadfast --bench throughput` (release). Prints the median of 5 runs of
//! each and the ratio. Loopback only; stops by itself.

use std::time::{Duration, Instant};

use bytes::Bytes;
use steadfast::{Client, ClientConfig, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SIZE: usize = 64;
const RUNS: usize = 5;

fn main() {
    let n: u64 = std::env::var("MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut raw = Vec::new();
    let mut ours = Vec::new();
    let mut batched = Vec::new();
    for run in 0..RUNS {
        let r = rt.block_on(raw_framing(n));
        let s = rt.block_on(steadfast_acked(n, false));
        let b = rt.block_on(steadfast_acked(n, true));
        println!(
            "run {}: raw framing {:>6.2} M msgs/s   steadfast acknowledged: send {:>6.2} M msgs/s, \
             send_all {:>6.2} M msgs/s",
            run + 1,
            rate(n, r),
            rate(n, s),
            rate(n, b)
        );
        raw.push(rate(n, r));
        ours.push(rate(n, s));
        batched.push(rate(n, b));
    }
    let (mr, mo, mb) = (median(&mut raw), median(&mut ours), median(&mut batched));
    println!(
        "median of {RUNS}: raw length-prefixed framing {mr:.2} M msgs/s; steadfast, every \
         message acknowledged and its receipt resolved: send {mo:.2} M msgs/s ({:.0} %), \
         send_all {mb:.2} M msgs/s ({:.0} %)",
        100.0 * mo / mr,
        100.0 * mb / mr
    );
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64() / 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// One-way length-prefixed frames, writes batched in 64 KiB, no acknowledgement.
async fn raw_framing(n: u64) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = vec![0u8; 256 << 10];
        let (mut have, mut got) = (0usize, 0u64);
        while got < n {
            let r = s.read(&mut buf[have..]).await.expect("read");
            assert!(r > 0, "eof");
            have += r;
            let mut off = 0;
            while have - off >= 4 {
                let len = u32::from_be_bytes(buf[off..off + 4].try_into().expect("4")) as usize;
                if have - off < 4 + len {
                    break;
                }
                off += 4 + len;
                got += 1;
            }
            buf.copy_within(off..have, 0);
            have -= off;
        }
    });
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let start = Instant::now();
    let body = [7u8; SIZE];
    let mut batch = Vec::with_capacity(64 << 10);
    for _ in 0..n {
        batch.extend_from_slice(&(SIZE as u32).to_be_bytes());
        batch.extend_from_slice(&body);
        if batch.len() >= 64 << 10 {
            s.write_all(&batch).await.expect("write");
            batch.clear();
        }
    }
    s.write_all(&batch).await.expect("write");
    reader.await.expect("reader");
    start.elapsed()
}

/// One-way steadfast messages, sent one `send` at a time or with `send_all` in runs of 1,024;
/// the clock stops when the last receipt resolves (every message taken by the receiving
/// application and acknowledged).
async fn steadfast_acked(n: u64, batched: bool) -> Duration {
    let server = Server::bind(["127.0.0.1:0"], ServerConfig::default())
        .await
        .expect("bind");
    let addr = server.local_addrs()[0].to_string();
    let client = Client::connect(addr, ClientConfig::default())
        .await
        .expect("connect");
    let Some(peer) = server.accept().await else {
        panic!("no peer")
    };
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        while got < n {
            let batch = peer.recv_up_to(4_096).expect("no transforms");
            if batch.is_empty() {
                peer.recv().await.expect("recv");
                got += 1;
            } else {
                got += batch.len() as u64;
            }
        }
    });
    let body = Bytes::from(vec![7u8; SIZE]);
    let start = Instant::now();
    let mut last = None;
    if batched {
        let mut left = n;
        while left > 0 {
            let k = left.min(1_024);
            let bodies = (0..k).map(|_| body.clone());
            last = client.send_all(bodies).await.expect("send_all");
            left -= k;
        }
    } else {
        for _ in 0..n {
            last = Some(client.send(body.clone()).await.expect("send"));
        }
    }
    last.expect("one message").await.expect("receipt");
    let took = start.elapsed();
    reader.await.expect("reader");
    drop(client);
    server.shutdown(Duration::from_millis(10)).await;
    took
}
