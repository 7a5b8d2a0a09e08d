//! A fault proxy for testing one's own application: it forwards TCP between clients and an
//! upstream server and, on a seeded schedule, cuts connections after a random number of bytes
//! (mid-frame) with RST or FIN, or stalls them (bytes stop, nothing closes).
//!
//! ```no_run
//! use steadfast::chaos::{Chaos, ChaosConfig};
//!
//! # async fn f() -> std::io::Result<()> {
//! let chaos = Chaos::start("127.0.0.1:0", "127.0.0.1:7000".parse().unwrap(), ChaosConfig::default()).await?;
//! println!("point clients at {}", chaos.local_addr());
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

/// What the proxy does to a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Both sides closed with RST (linger 0).
    Reset,
    /// Both sides closed with FIN.
    Fin,
    /// Forwarding stops; both sockets stay open (a half-open link) for the stall time, then
    /// close.
    Stall,
}

/// One injected fault.
#[derive(Clone, Debug)]
pub struct Fault {
    /// The proxied connection's number (from 1).
    pub connection: u64,
    /// What was done.
    pub kind: FaultKind,
    /// Bytes forwarded on that connection before the fault (both directions).
    pub after_bytes: u64,
}

/// The fault schedule.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    /// Seed of the schedule (the same seed gives the same byte budgets and fault kinds).
    pub seed: u64,
    /// Each connection is faulted after a random number of bytes in this range (both
    /// directions together). Default 4 KiB to 1 MiB.
    pub bytes: (u64, u64),
    /// If set, a connection is also faulted after this much time, whatever its bytes.
    pub interval: Option<Duration>,
    /// Chance of a stall instead of a cut, in per mille. Default 0.
    pub stall_per_mille: u32,
    /// How long a stall holds the sockets open. Default 15 s.
    pub stall_for: Duration,
    /// At most this many stalls in all (then cuts only). Default: no limit.
    pub max_stalls: Option<u64>,
    /// Chance of RST (rather than FIN) for a cut, in per mille. Default 500.
    pub reset_per_mille: u32,
}

impl Default for ChaosConfig {
    fn default() -> Self {
        ChaosConfig {
            seed: 1,
            bytes: (4 << 10, 1 << 20),
            interval: None,
            stall_per_mille: 0,
            stall_for: Duration::from_secs(15),
            max_stalls: None,
            reset_per_mille: 500,
        }
    }
}

/// Counters of a running proxy.
#[derive(Debug, Default)]
pub struct ChaosStats {
    /// Connections proxied.
    pub connections: AtomicU64,
    /// Cuts by RST.
    pub resets: AtomicU64,
    /// Cuts by FIN.
    pub fins: AtomicU64,
    /// Stalls.
    pub stalls: AtomicU64,
    /// Bytes forwarded.
    pub bytes: AtomicU64,
}

impl ChaosStats {
    /// Cuts (RST and FIN).
    pub fn cuts(&self) -> u64 {
        self.resets.load(Ordering::Relaxed) + self.fins.load(Ordering::Relaxed)
    }

    /// All faults.
    pub fn faults(&self) -> u64 {
        self.cuts() + self.stalls.load(Ordering::Relaxed)
    }
}

/// A running fault proxy. Dropping it stops accepting and ends every proxied connection.
#[derive(Debug)]
pub struct Chaos {
    addr: SocketAddr,
    stats: Arc<ChaosStats>,
    enabled: Arc<AtomicBool>,
    faults: Option<mpsc::UnboundedReceiver<Fault>>,
    task: JoinHandle<()>,
}

impl Drop for Chaos {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Chaos {
    /// Listens on `listen` and forwards each connection to `upstream`.
    ///
    /// # Errors
    /// If `listen` cannot be bound.
    pub async fn start(
        listen: &str,
        upstream: SocketAddr,
        config: ChaosConfig,
    ) -> std::io::Result<Chaos> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ChaosStats::default());
        let enabled = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(accept(
            listener,
            upstream,
            config,
            stats.clone(),
            enabled.clone(),
            tx,
        ));
        Ok(Chaos {
            addr,
            stats,
            enabled,
            faults: Some(rx),
            task,
        })
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counters.
    pub fn stats(&self) -> &ChaosStats {
        &self.stats
    }

    /// Turns faults on or off (connections in progress then forward without limit).
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// The stream of injected faults (once; later calls return `None`).
    pub fn faults(&mut self) -> Option<mpsc::UnboundedReceiver<Fault>> {
        self.faults.take()
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    config: ChaosConfig,
    stats: Arc<ChaosStats>,
    enabled: Arc<AtomicBool>,
    faults: mpsc::UnboundedSender<Fault>,
) {
    let mut rng = fastrand::Rng::with_seed(config.seed);
    // Owned here: when the proxy stops, every proxied connection stops with it.
    let mut tasks = JoinSet::new();
    let mut number = 0u64;
    let mut stalls_planned = 0u64;
    loop {
        let Ok((down, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(up) = TcpStream::connect(upstream).await else {
            continue;
        };
        number += 1;
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let (lo, hi) = config.bytes;
        let budget = rng.u64(lo.min(hi)..=hi.max(lo));
        let stalls_left = config.max_stalls.is_none_or(|m| stalls_planned < m);
        let kind = if rng.u32(0..1_000) < config.stall_per_mille && stalls_left {
            stalls_planned += 1;
            FaultKind::Stall
        } else if rng.u32(0..1_000) < config.reset_per_mille {
            FaultKind::Reset
        } else {
            FaultKind::Fin
        };
        while tasks.try_join_next().is_some() {}
        tasks.spawn(pipe(
            down,
            up,
            Plan {
                number,
                budget,
                kind,
                interval: config.interval,
                stall_for: config.stall_for,
            },
            stats.clone(),
            enabled.clone(),
            faults.clone(),
        ));
    }
}

struct Plan {
    number: u64,
    budget: u64,
    kind: FaultKind,
    interval: Option<Duration>,
    stall_for: Duration,
}

async fn pipe(
    down: TcpStream,
    up: TcpStream,
    plan: Plan,
    stats: Arc<ChaosStats>,
    enabled: Arc<AtomicBool>,
    faults: mpsc::UnboundedSender<Fault>,
) {
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (mut dr, mut dw) = down.into_split();
    let (mut ur, mut uw) = up.into_split();
    let mut left = plan.budget;
    let mut forwarded = 0u64;
    let mut a = vec![0u8; 16 << 10];
    let mut b = vec![0u8; 16 << 10];
    let timer = async {
        match plan.interval {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(timer);
    loop {
        let on = enabled.load(Ordering::Relaxed);
        let cap = if on {
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
                    forwarded += n as u64;
                    stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            r = ur.read(&mut b[..cap]) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if dw.write_all(&b[..n]).await.is_err() { return; }
                    left -= n as u64;
                    forwarded += n as u64;
                    stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            },
            () = &mut timer, if on => break,
        }
        if on && left == 0 {
            break;
        }
    }
    let _ = faults.send(Fault {
        connection: plan.number,
        kind: plan.kind,
        after_bytes: forwarded,
    });
    match plan.kind {
        FaultKind::Stall => {
            stats.stalls.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(plan.stall_for).await;
        }
        FaultKind::Fin => {
            stats.fins.fetch_add(1, Ordering::Relaxed);
            let _ = dw.shutdown().await;
            let _ = uw.shutdown().await;
        }
        FaultKind::Reset => {
            stats.resets.fetch_add(1, Ordering::Relaxed);
            for s in [dr.reunite(dw).ok(), ur.reunite(uw).ok()]
                .into_iter()
                .flatten()
            {
                // Linger 0 turns the close into an RST; it does not block.
                #[allow(deprecated)]
                let _ = s.set_linger(Some(Duration::ZERO));
            }
        }
    }
}
