//! `steadfast serve`: messages to stdout, everything else to stderr, an optional console.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use steadfast::store::{DurableStore, PgOptions, PgStore, SessionStore, StoreRole};
use steadfast::tls::TlsServer;
use steadfast::{Message, Peer, Server, ServerConfig, ServerEvent};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter, Stdout};
use tokio::sync::{Mutex, mpsc};
use tracing::{debug, info, warn};

use crate::editor::say;
use crate::{Format, ServeArgs, ServerSecurity, fail, stop_signal};

pub(crate) async fn run(a: ServeArgs) -> ExitCode {
    warn_about(&a.security);
    let mut config = match security(
        ServerConfig::default()
            .linger(Duration::from_secs(a.linger))
            .proxy_protocol(a.proxy_protocol)
            .memory_budget(crate::size::memory_budget(a.max_message))
            // A message is acknowledged once its line is written and flushed (see
            // `serve_peer`): one that stdout did not take goes back to its sender as
            // unacknowledged, never lost between the two.
            .protocol(crate::size::protocol(
                // (With --exec, the rpc acknowledges a request when a run takes it.)
                steadfast::proto::Config::default().manual_ack(a.exec.is_none()),
                a.max_message,
            ))
            // Clients may compress their messages with either.
            .transform(steadfast::transform::Lz4)
            .transform(steadfast::transform::Zstd::default()),
        &a.security,
    ) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let node = a.node.clone().unwrap_or_else(default_node);
    if let Some(url) = a.state.as_deref().and_then(postgres_url) {
        let options = PgOptions::node(node.clone()).linger(Duration::from_secs(a.linger));
        let store = match PgStore::connect(url, options).await {
            Ok(s) => s,
            Err(e) => return fail(format!("--state {}: {e}", redact(url))),
        };
        info!("state in {} as node {node}", redact(url));
        config = config.store(Arc::new(store));
    } else if let Some(dir) = &a.state {
        let store = match open_state(dir, StoreRole::Server) {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        info!("state in {}", store.path().display());
        // A message is acknowledged once its line is written and flushed, so a crash after
        // the acknowledgement loses nothing and a crash before it brings the message again.
        config = config.store(Arc::new(store));
    }
    let server = match Server::bind(a.listen.iter().map(String::as_str), config).await {
        Ok(s) => s,
        Err(steadfast::error::BindError::Store(e)) => {
            let dir = a.state.as_deref().unwrap_or(std::path::Path::new("?"));
            return fail(state_error(dir, &e));
        }
        Err(e) => return fail(e),
    };
    if a.state
        .as_deref()
        .is_some_and(|s| postgres_url(s).is_none())
    {
        info!("restored {} sessions", server.peers().len());
    }
    if let Some(m) = &a.metrics {
        match crate::monitor::start(m, server.clone(), a.node.as_deref()).await {
            Ok(at) => info!(
                target: crate::log::LISTENING,
                "metrics on http://{at}/metrics, sessions on http://{at}/sessions"
            ),
            Err(e) => return fail(e),
        }
    }
    for addr in server.local_addrs() {
        info!(target: crate::log::LISTENING, "listening on {addr}");
    }
    let exec = a.exec.as_ref().map(|command| {
        info!("answering requests with: {command}");
        crate::exec::router(
            Arc::new(crate::exec::Exec {
                command: command.clone(),
                timeout: Duration::from_secs(a.exec_timeout),
                max_reply: a.max_message,
                slots: tokio::sync::Semaphore::new(a.exec_max as usize),
            }),
            a.exec_jobs as usize,
        )
    });
    let out = Arc::new(Mutex::new(BufWriter::new(tokio::io::stdout())));
    // The console runs in a task of its own (a `/ping` waits for its answer without holding
    // up new sessions); `/quit` or the end of its input stops the server like a signal.
    let (quit_tx, mut quit) = mpsc::channel::<()>(1);
    let console_task = a.console.then(|| {
        eprintln!("console ready: /help for commands");
        let (cmd_tx, mut commands) = mpsc::channel::<String>(16);
        tokio::spawn(read_lines(cmd_tx));
        let server = server.clone();
        let fleet = a.state.as_deref().and_then(postgres_url).is_some();
        tokio::spawn(async move {
            while let Some(line) = commands.recv().await {
                if !console(&server, fleet, line.trim()).await {
                    break;
                }
            }
            let _ = quit_tx.send(()).await;
        })
    });
    // Lifecycle events go to stderr from a task of their own; every peer is served by a task
    // of its own, so that no peer (a slow reader, a large decode) holds up another, and the
    // signal below is always heard.
    let log = tokio::spawn(log_events(server.clone()));
    let opts = Arc::new(PeerOptions {
        format: a.format,
        framing: a.records.framing(),
        echo: a.echo,
    });
    let mut peers = tokio::task::JoinSet::new();
    let mut code = ExitCode::SUCCESS;
    // Tells the peer tasks to stop taking messages (each finishes the batch it took).
    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
    let (failed_tx, mut failed) = mpsc::channel::<std::io::Error>(1);
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            peer = server.accept() => {
                let Some(peer) = peer else { break };
                info!("connected: {}", describe(&peer));
                if let Some(router) = &exec {
                    peers.spawn(crate::exec::serve_peer(peer, router.clone()));
                    continue;
                }
                let (server, out, opts, failed, stop) =
                    (server.clone(), out.clone(), opts.clone(), failed_tx.clone(), stop_rx.clone());
                peers.spawn(async move {
                    if let Err(e) = serve_peer(&server, &peer, &out, &opts, stop).await {
                        let _ = failed.try_send(e);
                    }
                });
            }
            Some(e) = failed.recv() => {
                // The reader of stdout went away (`serve | head`): stop quietly with the
                // status of a process ended by SIGPIPE. The lines it did not take were not
                // acknowledged: their senders keep them.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    code = ExitCode::from(crate::EXIT_BROKEN_PIPE);
                } else if e.kind() == std::io::ErrorKind::InvalidData {
                    // A message the output cannot show as it is.
                    eprintln!("error: {e}");
                    code = ExitCode::FAILURE;
                } else {
                    eprintln!("error: writing to stdout: {e}");
                    code = ExitCode::FAILURE;
                }
                break;
            }
            Some(()) = quit.recv() => break,
            // Reap finished peer tasks so the set does not grow with churn.
            Some(_) = peers.join_next(), if !peers.is_empty() => {}
        }
    }
    info!("shutting down");
    // First every peer task writes, flushes and acknowledges the batch it took (so that what
    // was written is acknowledged, and with --state committed, before the sessions stop), then
    // the server stops accepting, gives outboxes a moment to drain and ends every session.
    let _ = stopping.send(true);
    // (With --exec nothing is written here: runs go on while the sessions drain, and those
    // still going when the server stops are killed.)
    let finished = tokio::time::timeout(Duration::from_secs(5), async {
        while exec.is_none() && peers.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        eprintln!(
            "error: {} peers could not finish writing to stdout; lines they took may be missing",
            peers.len()
        );
        code = ExitCode::FAILURE;
    }
    let _ = tokio::time::timeout(
        Duration::from_secs(4),
        server.shutdown(Duration::from_secs(2)),
    )
    .await;
    peers.abort_all();
    if let Some(c) = console_task {
        c.abort();
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), log).await;
    let _ = out.lock().await.flush().await;
    code
}

/// How each peer is served.
struct PeerOptions {
    format: Format,
    framing: crate::records::Framing,
    echo: bool,
}

/// Logs every lifecycle event on stderr (new sessions are logged by the accept loop).
async fn log_events(server: Server) {
    while let Some(ev) = server.next_event().await {
        match ev {
            ServerEvent::Resumed { peer } => info!("resumed: {}", describe(&peer)),
            ServerEvent::Disconnected { peer, error } => {
                info!("disconnected: {} ({error}); lingering", describe(&peer));
            }
            ServerEvent::Expired {
                peer,
                unacknowledged,
            } => info!(
                "expired: {} ({} to it never acknowledged)",
                describe(&peer),
                crate::human::plural(unacknowledged.len() as u64, "message")
            ),
            ServerEvent::Ended {
                peer,
                reason,
                unacknowledged,
            } => info!(
                "ended: {} ({reason}; {} to it never acknowledged)",
                describe(&peer),
                crate::human::plural(unacknowledged.len() as u64, "message")
            ),
            _ => {}
        }
    }
}

/// The server configuration with the command line's TLS and token options applied.
pub(crate) fn security(
    mut config: ServerConfig,
    sec: &ServerSecurity,
) -> Result<ServerConfig, String> {
    if let (Some(cert), Some(key)) = (&sec.tls_cert, &sec.tls_key) {
        use crate::pem::{Holds, read};
        let cert_pem = read("--tls-cert", cert, Holds::Certificate)?;
        let key_pem = read("--tls-key", key, Holds::PrivateKey)?;
        let ca_pem = match &sec.tls_client_ca {
            Some(ca) => Some(read("--tls-client-ca", ca, Holds::Certificate)?),
            None => None,
        };
        let tls = TlsServer::from_pem(&cert_pem, &key_pem, ca_pem.as_deref()).map_err(|e| {
            format!(
                "--tls-cert {} with --tls-key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
        config = config.tls(tls);
    }
    if let Some(f) = &sec.token_file {
        config = config.shared_token(crate::read_token(f)?);
    }
    Ok(config)
}

/// Warns about options that leave a secret exposed.
pub(crate) fn warn_about(sec: &ServerSecurity) {
    if sec.token_file.is_some() && sec.tls_cert.is_none() {
        eprintln!(
            "warning: --token-file without TLS: clients' tokens cross the network in plaintext \
             (add --tls-cert FILE --tls-key FILE)"
        );
    }
}

/// The console's lines: from the line editor (history, editing keys) on a terminal, else
/// from stdin line by line; its end, or Ctrl-C at the editor, is `/quit`.
async fn read_lines(tx: mpsc::Sender<String>) {
    if std::io::IsTerminal::is_terminal(&std::io::stdin())
        && let Ok(mut keys) = crate::editor::start()
    {
        while let Some(crate::editor::Key::Line(l)) = keys.recv().await {
            if tx
                .send(String::from_utf8_lossy(&l).into_owned())
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = tx.send("/quit".into()).await;
        return;
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send(line).await.is_err() {
            return;
        }
    }
    let _ = tx.send("/quit".into()).await;
}

/// The PostgreSQL URL a `--state` names (`postgres://…` or `postgresql://…`), if it does.
pub(crate) fn postgres_url(state: &std::path::Path) -> Option<&str> {
    state
        .to_str()
        .filter(|s| s.starts_with("postgres://") || s.starts_with("postgresql://"))
}

/// A URL as it may be logged: without its password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let user = user.split_once(':').map_or(user, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}/{path}")
        }
        _ => url.to_owned(),
    }
}

/// A node name when `--node` is not given: the host's name and this process's id.
fn default_node() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    format!("{host}-{}", std::process::id())
}

/// Opens a state directory and reads it once, so that damage is one clear error line before
/// anything else happens.
pub(crate) fn open_state(dir: &std::path::Path, role: StoreRole) -> Result<DurableStore, String> {
    // A damaged file can trip an assertion inside the database; the store catches that and
    // reports the damage, so the default hook's panic message and backtrace on stderr would
    // only bury the one line that says what is wrong. Nothing else runs yet at this point.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = DurableStore::open(dir, role).and_then(|s| s.load().map(|_| s));
    std::panic::set_hook(hook);
    opened.map_err(|e| state_error(dir, &e))
}

/// One line for a state directory that cannot be used (never a multi-line message).
pub(crate) fn state_error(dir: &std::path::Path, e: &steadfast::store::StoreError) -> String {
    format!("--state {}: {e}", dir.display()).replace(['\n', '\r'], " ")
}

/// Serves one peer until its session ends: takes what arrives, writes it, flushes, then
/// acknowledges what was written (acknowledgement is manual: "acknowledged" means "written
/// and flushed"). With `--echo` each message goes back to its sender; a peer that does not
/// read its echoes fills its outbox (the bounded echo queue) and is kicked: its session ends,
/// and the log says how many echoes it never acknowledged. Errors are stdout's.
async fn serve_peer(
    server: &Server,
    peer: &Peer,
    out: &Mutex<BufWriter<Stdout>>,
    opts: &PeerOptions,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        // `recv_many` takes nothing unless it returns: stopping here loses no message.
        let received = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Ok(()),
            r = peer.recv_many(1_024) => r,
        };
        let batch = match received {
            Ok(batch) => batch,
            Err(steadfast::error::RecvError::Ended) => return Ok(()),
            Err(e) => {
                warn!("{}: {e}", describe(peer));
                if let steadfast::error::RecvError::Transform { seq, .. } = e {
                    // Reported (taken, undecodable): done with, like a written line.
                    out.lock().await.flush().await?;
                    peer.acknowledge(seq);
                }
                continue;
            }
        };
        let Some(last) = batch.last().map(|m| m.seq) else {
            continue;
        };
        // The whole batch rendered first, so that it is written in one go right after the
        // ownership check; a message that cannot be written unaltered ends the batch there.
        let mut lines = Vec::new();
        let mut unwritable = None;
        for (i, m) in batch.iter().enumerate() {
            let mut line = Vec::new();
            if let Err(why) = render(&mut line, opts, peer, m) {
                unwritable = Some((i, why));
                break;
            }
            lines.extend_from_slice(&line);
        }
        if !write_if_owner(peer, out, lines).await? {
            return Ok(());
        }
        if let Some((i, why)) = unwritable {
            // Never altered: what came before is written and acknowledged, this message and
            // the rest are not (their sender keeps them), and serve stops.
            if let Some(prev) = i.checked_sub(1) {
                peer.acknowledge(batch[prev].seq);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "message {} from {} cannot be written to stdout: {why}; it was not \
                     acknowledged",
                    batch[i].seq.0,
                    describe(peer)
                ),
            ));
        }
        peer.acknowledge(last);
        if opts.echo {
            for m in batch {
                match peer.try_send(m.body) {
                    Ok(_) => {}
                    Err(steadfast::error::SendError::Full) => {
                        warn!(
                            "kicking {}: it does not read its echoes (echo queue full)",
                            describe(peer)
                        );
                        if let Some(id) = peer.id() {
                            server.kick(id, "echo queue full: not reading");
                        }
                        return Ok(());
                    }
                    Err(_) => return Ok(()),
                }
            }
        }
    }
}

/// How long an ownership check is trusted before the write it allows: the shortest idle
/// timeout there is, so no client can have noticed a stall (a paused process, a long wait
/// for stdout) this short and moved to another server.
const OWNER_CHECK_VALID: Duration = steadfast::proto::MIN_IDLE_TIMEOUT;

/// Writes and flushes `lines` (the rendered batch) if this server still owns the peer's
/// session (a fleet, PROTOCOL.md §13 rule 10): false if another server has resumed it, which
/// then delivers the batch itself (it was not acknowledged). The write follows the check at
/// once; when more than [`OWNER_CHECK_VALID`] passed since it was asked, it is asked again,
/// holding stdout. Without a shared store the check is free.
async fn write_if_owner(
    peer: &Peer,
    out: &Mutex<BufWriter<Stdout>>,
    mut lines: Vec<u8>,
) -> std::io::Result<bool> {
    let mut asked = Instant::now();
    let mut answer = peer.confirm_owner().await;
    let mut out = out.lock().await;
    // Whatever went through the asynchronous handle is out first (nothing, normally).
    out.flush().await?;
    loop {
        if let Err(e) = answer {
            info!("{}: batch not written: {e}", describe(peer));
            return Ok(false);
        }
        // The clock is read on the thread that writes, right before the write system call:
        // a stall anywhere before it (the hand-off to that thread included) counts.
        let (written, back) = tokio::task::spawn_blocking(move || {
            let mut stdout = std::io::stdout().lock();
            if asked.elapsed() >= OWNER_CHECK_VALID {
                return (Ok(false), lines);
            }
            let written = std::io::Write::write_all(&mut stdout, &lines)
                .and_then(|()| std::io::Write::flush(&mut stdout))
                .map(|()| true);
            (written, lines)
        })
        .await
        .map_err(std::io::Error::other)?;
        lines = back;
        if written? {
            return Ok(true);
        }
        debug!("{}: ownership check too old, asking again", describe(peer));
        asked = Instant::now();
        answer = peer.confirm_owner().await;
    }
}

/// One message as `serve` writes it, or why it cannot be written unaltered.
fn render(line: &mut Vec<u8>, opts: &PeerOptions, peer: &Peer, m: &Message) -> Result<(), String> {
    match opts.format {
        Format::Line => opts.framing.encode(&m.body, line)?,
        Format::Hex => {
            for b in &m.body {
                line.extend_from_slice(format!("{b:02x}").as_bytes());
            }
            line.push(b'\n');
        }
        Format::Json => {
            let mut v = serde_json::json!({
                "session": peer.id().map(|i| i.to_string()),
                "peer": peer.addr().map(|a| a.to_string()),
                "name": peer.name(),
                "seq": m.seq.0,
                "timestamp_us": m.timestamp_us,
            });
            // A body that is no UTF-8 goes as base64, marked by its key: never replaced.
            v["body"] = match std::str::from_utf8(&m.body) {
                Ok(s) => serde_json::Value::from(s),
                Err(_) => {
                    use base64::Engine;
                    v["body_base64"] = base64::engine::general_purpose::STANDARD
                        .encode(&m.body)
                        .into();
                    serde_json::Value::Null
                }
            };
            line.extend_from_slice(v.to_string().as_bytes());
            line.push(b'\n');
        }
    }
    Ok(())
}

pub(crate) fn describe(peer: &Peer) -> String {
    let id = peer.id().map_or_else(|| "?".into(), |i| i.to_string());
    let addr = peer.addr().map_or_else(|| "?".into(), |a| a.to_string());
    match peer.name() {
        Some(n) => format!("{id} \"{n}\" from {addr}"),
        None => format!("{id} from {addr}"),
    }
}

/// The fleet's own `/list`, `/send` (to a session held by another server) and `/broadcast`;
/// false if `cmd` is not one of them (or `/send` names a session held here).
async fn fleet_console(server: &Server, cmd: &str, rest: &str) -> bool {
    match cmd {
        "/list" => match server.fleet_sessions().await {
            Ok(sessions) => {
                say!("{} sessions in the fleet", sessions.len());
                for s in sessions {
                    say!(
                        "  {}{} on {} [{}], {} unacknowledged",
                        s.id,
                        s.name.map_or_else(String::new, |n| format!(" ({n})")),
                        s.node,
                        if s.lingering { "lingering" } else { "live" },
                        s.unacknowledged
                    );
                }
            }
            Err(e) => say!("the fleet's sessions cannot be listed: {e}"),
        },
        "/send" => {
            let (key, text) = rest.split_once(' ').unwrap_or((rest, ""));
            if find(server, key).is_some() {
                return false;
            }
            let sessions = match server.fleet_sessions().await {
                Ok(s) => s,
                Err(e) => {
                    say!("not sent: {e}");
                    return true;
                }
            };
            let Some(s) = sessions.iter().find(|s| {
                s.name.as_deref() == Some(key)
                    || (!key.is_empty() && s.id.to_string().starts_with(key))
            }) else {
                say!("no session {key:?} in the fleet");
                return true;
            };
            let (id, node) = (s.id, s.node.clone());
            match server.send_to(id, text.as_bytes().to_vec()).await {
                Ok(receipt) => {
                    say!("stored for {id} (on {node})");
                    tokio::spawn(async move {
                        match receipt.await {
                            Ok(()) => say!("[{id} acknowledged it]"),
                            Err(e) => say!("[{id}: not delivered: {e}]"),
                        }
                    });
                }
                Err(e) => say!("not sent: {e}"),
            }
        }
        "/broadcast" => match server.broadcast_fleet(rest.as_bytes().to_vec()).await {
            Ok(posted) => say!("stored for {} sessions in the fleet", posted.len()),
            Err(e) => say!("not sent: {e}"),
        },
        _ => return false,
    }
    true
}

fn find(server: &Server, key: &str) -> Option<Peer> {
    if let Some(p) = server.peer_by_name(key) {
        return Some(p);
    }
    server
        .peers()
        .into_iter()
        .find(|p| p.id().is_some_and(|i| i.to_string().starts_with(key)))
}

const HELP: &str = "\
/list               live and lingering sessions
/info ID            address, name, state, queues, RTT, counters
/ping ID            measure the round trip
/pingall            ping every connected session
/send ID TEXT       send TEXT to one session
/broadcast TEXT     send TEXT to every session
/kick ID            end a session
/kickall            end every session
/stats              server totals
/quit               shut down gracefully
(ID: a session id, a prefix of it, or a peer name; with --state postgres://… /list, /send and
/broadcast reach every session of the fleet, whichever server holds it)";

/// Runs one console command; false means quit. `fleet`: the server shares its sessions in
/// PostgreSQL, and `/list`, `/send` and `/broadcast` reach every session of the fleet.
async fn console(server: &Server, fleet: bool, line: &str) -> bool {
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    if fleet && fleet_console(server, cmd, rest).await {
        return true;
    }
    match cmd {
        "" => {}
        "/help" => say!("{HELP}"),
        "/quit" => return false,
        "/list" => {
            let peers = server.peers();
            say!("{} sessions", peers.len());
            for p in peers {
                let state = if p.is_connected() {
                    "live"
                } else {
                    "lingering"
                };
                say!("  {} [{state}]", describe(&p));
            }
        }
        "/stats" => {
            let peers = server.peers();
            let live = peers.iter().filter(|p| p.is_connected()).count();
            let (mut rx, mut tx, mut acked) = (0, 0, 0);
            for p in &peers {
                let s = p.stats();
                rx += s.received;
                tx += s.queued;
                acked += s.acknowledged;
            }
            say!(
                "sessions {} (live {live}, lingering {}); connections {}; received {rx}; sent {tx}; acknowledged {acked}",
                peers.len(),
                peers.len() - live,
                server.connections()
            );
        }
        "/info" | "/ping" | "/kick" | "/send" => {
            let (key, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let Some(p) = find(server, key) else {
                say!("no session {key:?}");
                return true;
            };
            match cmd {
                "/info" => {
                    let s = p.stats();
                    say!(
                        "{}\n  state {}\n  queued {} sent {} acknowledged {} retransmitted {} in flight {}\n  received {} waiting {}\n  connections {} rtt {}",
                        describe(&p),
                        if p.is_connected() {
                            "live"
                        } else {
                            "lingering"
                        },
                        s.queued,
                        s.sent,
                        s.acknowledged,
                        s.retransmitted,
                        s.in_flight,
                        s.received,
                        s.waiting,
                        s.connections,
                        s.rtt.map_or_else(|| "-".into(), crate::human::duration)
                    );
                }
                "/ping" => match tokio::time::timeout(Duration::from_secs(5), p.ping()).await {
                    Ok(Ok(rtt)) => say!("{}: {}", describe(&p), crate::human::duration(rtt)),
                    _ => say!("{}: no answer", describe(&p)),
                },
                "/kick" => {
                    if let Some(id) = p.id() {
                        server.kick(id, "kicked by the operator");
                        say!("kicked {}", describe(&p));
                    }
                }
                _ => match p.try_send(text.as_bytes().to_vec()) {
                    Ok(r) => say!("queued as #{}", r.seq()),
                    Err(e) => say!("not sent: {e}"),
                },
            }
        }
        "/pingall" => {
            for p in server.peers().into_iter().filter(Peer::is_connected) {
                match tokio::time::timeout(Duration::from_secs(5), p.ping()).await {
                    Ok(Ok(rtt)) => say!("{}: {}", describe(&p), crate::human::duration(rtt)),
                    _ => say!("{}: no answer", describe(&p)),
                }
            }
        }
        "/broadcast" => {
            let results = server.broadcast(rest.as_bytes().to_vec());
            let ok = results.iter().filter(|(_, r)| r.is_ok()).count();
            say!("queued for {ok} of {} sessions", results.len());
        }
        "/kickall" => {
            for p in server.peers() {
                if let Some(id) = p.id() {
                    server.kick(id, "kicked by the operator");
                }
            }
            say!("kicked every session");
        }
        other => say!("unknown command {other:?}; /help lists them"),
    }
    true
}
