//! A fault proxy for loopback tests: it forwards TCP between a client and a server and, on a
//! seeded schedule, cuts connections after a random number of bytes (mid-frame) with RST or
//! FIN, or stalls them (bytes stop, nothing closes).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to a connection once its byte budget is spent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Close both sides with RST (linger 0).
    Reset,
    /// Close both sides with FIN.
    Fin,
    /// Stop forwarding, keep both sockets open until the proxy is told to let go.
    Stall,
}

/// Counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub resets: AtomicU64,
    pub fins: AtomicU64,
    pub stalls: AtomicU64,
    pub bytes: AtomicU64,
}

impl Stats {
    pub fn cuts(&self) -> u64 {
        self.resets.load(Ordering::Relaxed) + self.fins.load(Ordering::Relaxed)
    }
}

/// The running proxy.
pub struct Proxy {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    pub enabled: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a proxy to `upstream`. Each connection gets a budget of `min..=max` bytes (both
/// directions together), then a fault: a stall with chance `stall_per_mille`/1000 (at most
/// `max_stalls` in all), otherwise RST or FIN at even odds.
pub async fn start(
    upstream: SocketAddr,
    seed: u64,
    min: u64,
    max: u64,
    stall_per_mille: u32,
    max_stalls: u64,
    stall_for: Duration,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(Stats::default());
    let enabled = Arc::new(AtomicBool::new(true));
    let (s2, e2) = (stats.clone(), enabled.clone());
    let task = tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut conns = Vec::new();
        loop {
            let Ok((down, _)) = listener.accept().await else {
                return;
            };
            let Ok(up) = TcpStream::connect(upstream).await else {
                continue;
            };
            s2.connections.fetch_add(1, Ordering::Relaxed);
            let budget = rng.u64(min..=max);
            let fault = if s2.stalls.load(Ordering::Relaxed) < max_stalls
                && rng.u32(0..1000) < stall_per_mille
            {
                Fault::Stall
            } else if rng.bool() {
                Fault::Reset
            } else {
                Fault::Fin
            };
            conns.retain(|h: &JoinHandle<()>| !h.is_finished());
            conns.push(tokio::spawn(pipe(
                down,
                up,
                budget,
                fault,
                stall_for,
                s2.clone(),
                e2.clone(),
            )));
        }
    });
    Proxy {
        addr,
        stats,
        enabled,
        task,
    }
}

async fn pipe(
    down: TcpStream,
    up: TcpStream,
    budget: u64,
    fault: Fault,
    stall_for: Duration,
    stats: Arc<Stats>,
    enabled: Arc<AtomicBool>,
) {
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let mut left = budget;
    let mut a = vec![0u8; 16 << 10];
    let mut b = vec![0u8; 16 << 10];
    loop {
        let faults_on = enabled.load(Ordering::Relaxed);
        let cap = if faults_on {
            left.min(a.len() as u64) as usize
        } else {
            a.len()
        };
        if cap == 0 {
            break;
        }
        tokio::select! {
            r = dr.read(&mut a[..cap]) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if uw.write_all(&a[..n]).await.is_err() { return; }
                    left -= n as u64;
                    stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            r = ur.read(&mut b[..cap]) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if dw.write_all(&b[..n]).await.is_err() { return; }
                    left -= n as u64;
                    stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
        }
        if faults_on && left == 0 {
            break;
        }
    }
    match fault {
        Fault::Stall => {
            stats.stalls.fetch_add(1, Ordering::Relaxed);
            // Hold both sockets open and silent; the peers must notice by themselves.
            tokio::time::sleep(stall_for).await;
        }
        Fault::Fin => {
            stats.fins.fetch_add(1, Ordering::Relaxed);
            let _ = dw.shutdown().await;
            let _ = uw.shutdown().await;
        }
        Fault::Reset => {
            stats.resets.fetch_add(1, Ordering::Relaxed);
            let down = dr.reunite(dw).ok();
            let up = ur.reunite(uw).ok();
            for s in [down, up].into_iter().flatten() {
                // Linger 0 makes the close an RST; it does not block.
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
                drop(s);
            }
        }
    }
}
