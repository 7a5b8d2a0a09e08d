//! Connections: server memory per lingering and per live session, then round trips across
//! many connections vs a minimal tokio echo server.
//!
//! The server runs in this process (its VmRSS is what is measured); the clients run in child
//! processes (`steadfast bench-clients`, up to [`PER_CHILD`] connections each), so the
//! per-process file limit bounds only the server's side. The server listens on several ports
//! so that the client connections do not exhaust the ephemeral ports of one destination.

use std::process::Stdio;
use std::time::Duration;

use steadfast::{Peer, Server, ServerEvent};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{mpsc, oneshot};

use super::{Ctx, Figures};

/// Most connections one client process opens.
const PER_CHILD: usize = 9_000;
/// Most connections doing request/response in the load phase.
const LOAD_CONNECTIONS: usize = 1_000;
/// Open files the server process needs besides its connections (listeners, runtime, pipes).
const FD_SLACK: usize = 256;

pub(super) async fn run(ctx: &Ctx) -> Result<Figures, String> {
    let (live, lingering) = (ctx.connections, ctx.lingering);
    if live == 0 {
        return Err("--connections must be at least 1".into());
    }
    let load = live.min(LOAD_CONNECTIONS);
    let limit = open_file_limit();
    if let Some(limit) = limit
        && live + FD_SLACK > limit
    {
        return Err(format!(
            "--connections {live} needs about {} open files in the server process, and the \
             limit here is {limit} (ulimit -n); use at most {}",
            live + FD_SLACK,
            limit.saturating_sub(FD_SLACK)
        ));
    }
    // Each destination port takes at most ~70 % of the ephemeral range, so that connections
    // closed moments ago (TIME_WAIT) leave room.
    let range = ephemeral_ports().unwrap_or(28_232);
    let per_port = (range * 7 / 10).max(1);
    let ports = (lingering + live).div_ceil(per_port) + 1;
    // The baseline first, on a quiet machine.
    ctx.ui.note(&format!(
        "tokio echo server: {load} connections for {} s",
        ctx.duration.as_secs()
    ));
    let (echo_round_trips, echo_lost, _) = echo_baseline(ctx, load).await?;
    if echo_lost != 0 {
        return Err("the echo baseline lost replies (a bug in the bench)".into());
    }
    settle_cpu().await;

    let config = ctx
        .setup
        .server
        .clone()
        .linger(Duration::from_secs(3_600))
        .max_sessions(lingering + live + 1_000)
        .max_connections(live + 1_000)
        .max_handshakes(4_096)
        // Every client process connects from 127.0.0.1: the per-address limits (there
        // against one attacker's many sockets) would turn the bench's own clients away.
        .max_handshakes_per_addr(4_096)
        .max_sessions_per_addr(lingering + live + 1_000);
    let server = Server::bind(vec!["127.0.0.1:0"; ports], config)
        .await
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let addrs: Vec<String> = server.local_addrs().iter().map(|a| a.to_string()).collect();
    let (query_tx, queries) = mpsc::channel(4);
    let server_task = tokio::spawn(serve(server, queries));
    let counts = || async {
        let (tx, rx) = oneshot::channel();
        query_tx.send(tx).await.ok()?;
        rx.await.ok()
    };

    let rss0 = settle_rss().await;
    if lingering > 0 {
        ctx.ui.note(&format!(
            "creating {lingering} sessions and disconnecting them (they linger on the server)"
        ));
        let mut child = Clients::spawn(ctx, &addrs, lingering, false, true)?;
        let ready = child
            .expect("ready", Duration::from_secs(60 + lingering as u64 / 200))
            .await?;
        if ready.first().and_then(|n| n.parse::<usize>().ok()) != Some(lingering) {
            return Err("the lingering client process did not open every session".into());
        }
        child.quit().await;
        wait_for(&counts, "every lingering session to disconnect", |c, s| {
            c == 0 && s >= lingering
        })
        .await?;
    }
    let rss1 = settle_rss().await;

    let children = live.div_ceil(PER_CHILD);
    ctx.ui.note(&format!(
        "opening {live} live sessions from {children} client process(es)"
    ));
    let mut procs = Vec::new();
    let mut left = live;
    for i in 0..children {
        let n = left.div_ceil(children - i);
        left -= n;
        procs.push((Clients::spawn(ctx, &addrs, n, false, false)?, n));
    }
    for (p, n) in &mut procs {
        let ready = p
            .expect("ready", Duration::from_secs(60 + *n as u64 / 200))
            .await?;
        if ready.first().and_then(|v| v.parse::<usize>().ok()) != Some(*n) {
            return Err("a client process did not open every connection".into());
        }
    }
    wait_for(&counts, "every live session to be established", |c, s| {
        c >= live && s >= live + lingering
    })
    .await?;
    let rss2 = settle_rss().await;

    settle_cpu().await;
    ctx.ui.note(&format!(
        "{load} connections doing request/response for {} s, the other sessions idle",
        ctx.duration.as_secs()
    ));
    let (round_trips, lost, duplicated) = run_load(&mut procs, load, ctx.duration).await?;
    for (p, _) in &mut procs {
        p.quit().await;
    }
    server_task.abort();
    let _ = server_task.await;

    let secs = ctx.duration.as_secs_f64();
    let mut f = Figures::default();
    f.set("connections", live as f64);
    f.set("lingering_sessions", lingering as f64);
    f.set("load_connections", load as f64);
    f.set("duration_secs", secs);
    f.set(
        "rss_bytes_per_session",
        rss2.saturating_sub(rss1) as f64 / live as f64,
    );
    if lingering > 0 {
        f.set(
            "rss_bytes_per_lingering_session",
            rss1.saturating_sub(rss0) as f64 / lingering as f64,
        );
    }
    f.set("server_rss_bytes", rss2 as f64);
    let (ours, echo) = (round_trips as f64 / secs, echo_round_trips as f64 / secs);
    f.set("round_trips_per_sec", ours);
    f.set("echo_round_trips_per_sec", echo);
    f.set("ratio_vs_raw", ours / echo);
    f.lost = lost;
    f.duplicated = duplicated;
    Ok(f)
}

/// The server's application: echoes every message to its sender (through the notification
/// queue, no task per session) and answers "connections, sessions" queries.
async fn serve(server: Server, mut queries: mpsc::Receiver<oneshot::Sender<(usize, usize)>>) {
    loop {
        tokio::select! {
            ev = server.next_event() => match ev {
                Some(ServerEvent::MessagesWaiting { peer }) => echo(&peer),
                Some(_) => {}
                None => return,
            },
            q = queries.recv() => match q {
                Some(tx) => {
                    let _ = tx.send((server.connections(), server.peers().len()));
                }
                None => return,
            },
        }
    }
}

/// Sends every waiting message back to its sender.
fn echo(peer: &Peer) {
    loop {
        // A body that does not decode is dropped: its sender sees no reply and counts it.
        let Ok(batch) = peer.recv_up_to(256) else {
            continue;
        };
        if batch.is_empty() {
            return;
        }
        let mut rest = batch.into_iter();
        while let Some(m) = rest.next() {
            if peer.try_send(m.body.clone()).is_err() {
                // The outbox is full (not in ping-pong): send the rest in order, waiting.
                let peer = peer.clone();
                let rest: Vec<_> = std::iter::once(m).chain(rest).collect();
                tokio::spawn(async move {
                    for m in rest {
                        if peer.send(m.body).await.is_err() {
                            return;
                        }
                    }
                });
                return;
            }
        }
    }
}

/// Polls the server's (connections, sessions) until `done` holds, for up to 60 s.
async fn wait_for<F, Fut>(
    counts: &F,
    what: &str,
    done: impl Fn(usize, usize) -> bool,
) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<(usize, usize)>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = (0, 0);
    while tokio::time::Instant::now() < deadline {
        let Some((c, s)) = counts().await else {
            return Err("the server stopped".into());
        };
        if done(c, s) {
            return Ok(());
        }
        last = (c, s);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "timed out waiting for {what} (server: {} connections, {} sessions)",
        last.0, last.1
    ))
}

/// Request/response on `load` connections spread over the client processes.
async fn run_load(
    procs: &mut [(Clients, usize)],
    load: usize,
    d: Duration,
) -> Result<(u64, u64, u64), String> {
    let total: usize = procs.iter().map(|(_, n)| n).sum();
    let mut left = load;
    let mut shares = Vec::new();
    for (i, (_, n)) in procs.iter().enumerate() {
        let share = if i + 1 == procs.len() {
            left
        } else {
            (load * n / total.max(1)).min(left)
        };
        left -= share;
        shares.push(share);
    }
    for ((p, _), share) in procs.iter_mut().zip(&shares) {
        p.send(&format!("load {share} {}", d.as_secs())).await?;
    }
    let (mut rt, mut lost, mut dup) = (0, 0, 0);
    for (p, _) in procs.iter_mut() {
        let done = p.expect("done", d + Duration::from_secs(30)).await?;
        let num = |i: usize| done.get(i).and_then(|v| v.parse::<u64>().ok());
        let (Some(a), Some(b), Some(c)) = (num(0), num(1), num(2)) else {
            return Err("a client process reported nonsense".into());
        };
        rt += a;
        lost += b;
        dup += c;
    }
    Ok((rt, lost, dup))
}

/// The same load against a minimal tokio echo server: length-prefixed frames read and
/// written back, one task per connection.
async fn echo_baseline(ctx: &Ctx, load: usize) -> Result<(u64, u64, u64), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("echo server: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("echo server: {e}"))?;
    let server = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            conns.spawn(async move {
                let mut s = BufReader::new(s);
                let mut frame = Vec::new();
                loop {
                    let Ok(len) = s.read_u32().await else { return };
                    if len > 1 << 20 {
                        return;
                    }
                    frame.clear();
                    frame.extend_from_slice(&len.to_be_bytes());
                    frame.resize(4 + len as usize, 0);
                    if s.read_exact(&mut frame[4..]).await.is_err()
                        || s.write_all(&frame).await.is_err()
                    {
                        return;
                    }
                }
            });
            while conns.try_join_next().is_some() {}
        }
    });
    let addrs = [addr.to_string()];
    let mut p = Clients::spawn(ctx, &addrs, load, true, false)?;
    let r = async {
        p.expect("ready", Duration::from_secs(60)).await?;
        let mut procs = [(p, load)];
        let r = run_load(&mut procs, load, ctx.duration).await;
        procs[0].0.quit().await;
        r
    }
    .await;
    server.abort();
    r
}

/// A client process and its pipes.
struct Clients {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Clients {
    fn spawn(
        ctx: &Ctx,
        addrs: &[String],
        n: usize,
        raw: bool,
        linger: bool,
    ) -> Result<Clients, String> {
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find this program to start client processes: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.arg("bench-clients");
        for a in addrs {
            cmd.arg("--addr").arg(a);
        }
        cmd.arg("--connections")
            .arg(n.to_string())
            .arg("--size")
            .arg(ctx.size.to_string());
        if raw {
            cmd.arg("--raw");
        } else {
            cmd.args(&ctx.setup.child_args);
            cmd.envs(ctx.setup.child_env.iter().map(|(k, v)| (k, v)));
        }
        if linger {
            cmd.arg("--linger");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start a client process: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("a client process has no pipes".into());
        };
        Ok(Clients {
            child,
            stdin: Some(stdin),
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn send(&mut self, line: &str) -> Result<(), String> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err("a client process was told to quit already".into());
        };
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .map_err(|e| format!("a client process went away: {e}"))
    }

    /// The next line, which must start with `word`: the rest of its words.
    async fn expect(&mut self, word: &str, timeout: Duration) -> Result<Vec<String>, String> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .map_err(|_| format!("a client process did not say {word:?} within {timeout:?}"))?
            .map_err(|e| format!("reading a client process: {e}"))?
            .ok_or_else(|| format!("a client process ended before saying {word:?}"))?;
        let mut words = line.split_whitespace().map(str::to_owned);
        match words.next().as_deref() {
            Some(w) if w == word => Ok(words.collect()),
            Some("error") => Err(format!(
                "a client process failed: {}",
                words.collect::<Vec<_>>().join(" ")
            )),
            _ => Err(format!("a client process said {line:?}")),
        }
    }

    /// Ends the process: end of input, then (after 10 s) a kill.
    async fn quit(&mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// This process's resident set size in bytes (VmRSS), 0 if unknown.
fn rss() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1_024)
}

/// The RSS once it has stopped moving (two readings 250 ms apart within 0.5 %, at most 3 s):
/// idle connections release their buffers on their next timer.
async fn settle_rss() -> u64 {
    let mut last = rss();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss();
        if now.abs_diff(last) * 200 <= last {
            return now;
        }
        last = now;
    }
    last
}

/// Waits (at most 10 s) until this process is nearly idle: under 10 % of a core over
/// 250 ms, so that one phase's teardown does not run into the next one's measurement.
async fn settle_cpu() {
    for _ in 0..40 {
        let before = cpu_ticks();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (Some(a), Some(b)) = (before, cpu_ticks()) else {
            return;
        };
        // Clock ticks are 10 ms: 2 ticks in 250 ms is 8 %.
        if b.saturating_sub(a) <= 2 {
            return;
        }
    }
}

/// User and system CPU time of this process, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; the fields after it do not.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The soft limit on open files of this process.
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The size of the ephemeral port range.
fn ephemeral_ports() -> Option<usize> {
    let r = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = r.split_whitespace().map(|v| v.parse::<usize>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}
