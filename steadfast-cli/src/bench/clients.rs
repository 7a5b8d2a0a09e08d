//! The hidden `bench-clients` command: a client process of `bench connections`.
//!
//! It opens `--connections` sessions (or raw TCP connections with `--raw`) to the given
//! addresses in turn, at most 200 handshakes at a time, and talks to its parent through
//! stdin and stdout, one line each:
//!
//! ```text
//! child:  ready N                       every connection is open (with --linger: every
//!                                       session was established and then dropped)
//! parent: load K SECS                   K connections do request/response for SECS seconds
//! child:  done ROUND_TRIPS LOST DUPLICATED
//! parent: quit (or end of input)        the child closes everything and exits
//! child:  error MESSAGE                 and exit status 1, at any point
//! ```

use std::process::ExitCode;
use std::time::Duration;

use steadfast::tls::TlsClient;
use steadfast::{Client, ClientConfig, Peer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Bodies, DEV_CA_ENV, counter};
use crate::ClientSecurity;

/// Connections being established at once.
const CONCURRENCY: usize = 200;

/// Options of the hidden `bench-clients` command.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchClientsArgs {
    /// Server addresses, used in turn.
    #[arg(long = "addr", required = true, value_name = "ADDR")]
    addrs: Vec<String>,
    /// Connections to open.
    #[arg(long)]
    connections: usize,
    /// Bytes per request (at least 8).
    #[arg(long, default_value = "64")]
    size: usize,
    /// Plain length-prefixed TCP (for the echo baseline) instead of steadfast.
    #[arg(long)]
    raw: bool,
    /// Drop each session as soon as it is established, so it lingers on the server.
    #[arg(long)]
    linger: bool,
    /// Each client's `recv` polls this many microseconds before it waits.
    #[arg(long, default_value = "0", value_name = "US")]
    recv_spin: u64,
    #[command(flatten)]
    security: ClientSecurity,
}

/// One open connection.
enum Conn {
    Steadfast(Client),
    Raw(TcpStream),
}

/// `steadfast bench-clients`.
pub(crate) async fn run(a: BenchClientsArgs) -> ExitCode {
    match work(a).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("error {e}");
            ExitCode::FAILURE
        }
    }
}

async fn work(a: BenchClientsArgs) -> Result<(), String> {
    if a.size < 8 {
        return Err("--size must be at least 8".into());
    }
    let config = config(&a.security)?.recv_spin(std::time::Duration::from_micros(a.recv_spin));
    let mut commands = commands();
    let mut conns = Vec::with_capacity(if a.linger { 0 } else { a.connections });
    let mut pending = JoinSet::new();
    let mut next = 0usize;
    while next < a.connections || !pending.is_empty() {
        while next < a.connections && pending.len() < CONCURRENCY {
            let addr = a.addrs[next % a.addrs.len()].clone();
            let (config, raw, linger) = (config.clone(), a.raw, a.linger);
            pending.spawn(async move { open(addr, config, raw, linger).await });
            next += 1;
        }
        tokio::select! {
            r = pending.join_next() => match r {
                Some(Ok(Ok(Some(c)))) => conns.push(c),
                Some(Ok(Ok(None))) | None => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(format!("a connection task failed: {e}")),
            },
            c = commands.recv() => if c.is_none_or(|c| c == "quit") {
                return Ok(());
            },
        }
    }
    println!(
        "ready {}",
        if a.linger { a.connections } else { conns.len() }
    );
    if a.linger {
        return Ok(());
    }
    while let Some(c) = commands.recv().await {
        let mut words = c.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("load"), Some(k), Some(secs)) => {
                let k: usize = k.parse().map_err(|_| format!("bad command {c:?}"))?;
                let secs: u64 = secs.parse().map_err(|_| format!("bad command {c:?}"))?;
                let (rt, lost, dup) =
                    load(&mut conns, k, a.size, Duration::from_secs(secs)).await?;
                println!("done {rt} {lost} {dup}");
            }
            (Some("quit"), _, _) => break,
            _ => return Err(format!("bad command {c:?}")),
        }
    }
    Ok(())
}

/// The client settings from the options, with the parent's in-memory development CA.
fn config(sec: &ClientSecurity) -> Result<ClientConfig, String> {
    let mut config =
        crate::client::client_config(None, sec, crate::size::DEFAULT_MAX_MESSAGE, false)?;
    if let Ok(ca) = std::env::var(DEV_CA_ENV) {
        let mut tls = TlsClient::from_ca_pem(ca.as_bytes()).map_err(|e| e.to_string())?;
        if let Some(n) = &sec.tls_server_name {
            tls = tls.server_name(n).map_err(|e| e.to_string())?;
        }
        config = config.tls(tls);
    }
    Ok(config)
}

/// The parent's commands, one per line; `quit` at the end of input.
fn commands() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if tx.send(l.trim().to_owned()).await.is_err() {
                return;
            }
        }
        let _ = tx.send("quit".into()).await;
    });
    rx
}

async fn open(
    addr: String,
    config: ClientConfig,
    raw: bool,
    linger: bool,
) -> Result<Option<Conn>, String> {
    let timeout = Duration::from_secs(30);
    if raw {
        let s = tokio::time::timeout(timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| format!("connecting to {addr} timed out"))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        return Ok(Some(Conn::Raw(s)));
    }
    let c = tokio::time::timeout(timeout, Client::connect(addr.clone(), config))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    if linger {
        // Dropped without CLOSE: the connection ends and the session lingers on the server.
        drop(c);
        return Ok(None);
    }
    Ok(Some(Conn::Steadfast(c)))
}

/// `k` connections doing request/response for `d`: round trips, replies lost (or wrong),
/// replies duplicated.
async fn load(
    conns: &mut Vec<Conn>,
    k: usize,
    size: usize,
    d: Duration,
) -> Result<(u64, u64, u64), String> {
    let k = k.min(conns.len());
    let until = Instant::now() + d;
    let mut tasks = JoinSet::new();
    // Each connection moves into its task and comes back.
    for c in conns.drain(..k) {
        tasks.spawn(async move {
            match c {
                Conn::Steadfast(client) => {
                    let r = steadfast_loop(client.peer().clone(), size, until).await;
                    (r, Conn::Steadfast(client))
                }
                Conn::Raw(s) => {
                    let (r, s) = raw_loop(s, size, until).await;
                    (r, Conn::Raw(s))
                }
            }
        });
    }
    let (mut rt, mut lost, mut dup) = (0, 0, 0);
    while let Some(r) = tasks.join_next().await {
        let ((a, b, c), conn) = r.map_err(|e| format!("a load task failed: {e}"))?;
        rt += a;
        lost += b;
        dup += c;
        conns.push(conn);
    }
    Ok((rt, lost, dup))
}

/// Request/response until `until`, checking each reply's counter.
async fn steadfast_loop(peer: Peer, size: usize, until: Instant) -> (u64, u64, u64) {
    let mut bodies = Bodies::new(size);
    let (mut i, mut lost, mut dup) = (0u64, 0u64, 0u64);
    while Instant::now() < until {
        if peer.send(bodies.next(i)).await.is_err() {
            lost += 1;
            break;
        }
        let Ok(reply) = peer.recv().await else {
            lost += 1;
            break;
        };
        match counter(&reply.body) {
            Some(c) if c == i => {}
            Some(c) if c < i => dup += 1,
            _ => lost += 1,
        }
        i += 1;
    }
    (i, lost, dup)
}

/// Raw ping-pong until `until`: a length-prefixed frame out, the same back.
async fn raw_loop(mut s: TcpStream, size: usize, until: Instant) -> ((u64, u64, u64), TcpStream) {
    let mut frame = vec![0x2au8; 4 + size];
    frame[..4].copy_from_slice(&(size as u32).to_be_bytes());
    let mut reply = vec![0u8; 4 + size];
    let (mut i, mut lost, mut dup) = (0u64, 0u64, 0u64);
    while Instant::now() < until {
        frame[4..12].copy_from_slice(&i.to_be_bytes());
        if s.write_all(&frame).await.is_err() || s.read_exact(&mut reply).await.is_err() {
            lost += 1;
            break;
        }
        if reply[..4] != frame[..4] {
            lost += 1;
            break;
        }
        match counter(&reply[4..]) {
            Some(c) if c == i => {}
            Some(c) if c < i => dup += 1,
            _ => lost += 1,
        }
        i += 1;
    }
    ((i, lost, dup), s)
}
