//! `steadfast send` and `steadfast connect`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use steadfast::error::ConnectError;
use steadfast::proto::SendError;
use steadfast::store::{SessionStore, StoreRole};
use steadfast::tls::TlsClient;
use steadfast::{Client, ClientConfig, ClientEvent};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::editor::say;
use crate::{ClientSecurity, ConnectArgs, SendArgs, fail};

/// Exit status when `--timeout` passed before every message was acknowledged.
pub(crate) const EXIT_TIMEOUT: u8 = 3;
/// Exit status when the session was lost.
pub(crate) const EXIT_SESSION_LOST: u8 = 4;

/// The client configuration from the command line's name, TLS and token options (with
/// `manual_ack`, a message is acknowledged by `Peer::acknowledge`, not by taking it).
pub(crate) fn client_config(
    name: Option<String>,
    sec: &ClientSecurity,
    max_message: u32,
    manual_ack: bool,
) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::default().protocol(crate::size::protocol(
        steadfast::proto::Config::default().manual_ack(manual_ack),
        max_message,
    ));
    if let Some(n) = name {
        config = config.name(n);
    }
    use crate::pem::{Holds, read};
    let tls = match (&sec.tls_ca, sec.tls) {
        (Some(ca), _) => Some(
            TlsClient::from_ca_pem(&read("--tls-ca", ca, Holds::Certificate)?)
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?,
        ),
        (None, true) => Some(TlsClient::with_system_roots().map_err(|e| e.to_string())?),
        (None, false) => None,
    };
    if let Some(mut tls) = tls {
        if let (Some(cert), Some(key)) = (&sec.tls_client_cert, &sec.tls_client_key) {
            let cert_pem = read("--tls-client-cert", cert, Holds::Certificate)?;
            let key_pem = read("--tls-client-key", key, Holds::PrivateKey)?;
            tls = tls.client_certificate(&cert_pem, &key_pem).map_err(|e| {
                format!(
                    "--tls-client-cert {} with --tls-client-key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
        }
        if let Some(n) = &sec.tls_server_name {
            tls = tls.server_name(n).map_err(|e| e.to_string())?;
        }
        config = config.tls(tls);
    }
    if let Some(f) = &sec.token_file {
        config = config.credentials(crate::read_token(f)?);
    }
    config = match sec.compress {
        Some(crate::Compression::Lz4) => config.transform(steadfast::transform::Lz4),
        Some(crate::Compression::Zstd) => config.transform(steadfast::transform::Zstd::default()),
        None => config,
    };
    Ok(config)
}

/// Refuses what `send` and `connect` would otherwise do silently wrong, before anything goes
/// out: an address that is not HOST:PORT (a URL, no port), TLS options given without TLS
/// (they would be ignored and the messages sent in plaintext); warns when a token would cross
/// the network in plaintext.
pub(crate) fn check_client_options(addr: &str, sec: &ClientSecurity) -> Result<(), String> {
    // Several servers of a fleet: HOST:PORT,HOST:PORT, tried in turn.
    for one in addr.split(',') {
        check_addr(one.trim())?;
    }
    if sec.tls_ca.is_none() && !sec.tls {
        let given = [
            (sec.tls_client_cert.is_some(), "--tls-client-cert"),
            (sec.tls_client_key.is_some(), "--tls-client-key"),
            (sec.tls_server_name.is_some(), "--tls-server-name"),
        ];
        if let Some((_, option)) = given.iter().find(|(set, _)| *set) {
            return Err(format!(
                "{option} needs TLS: add --tls-ca FILE (or --tls to trust the system's root \
                 certificates)"
            ));
        }
        if sec.token_file.is_some() {
            eprintln!(
                "warning: --token-file without TLS: the token crosses the network in \
                 plaintext (add --tls-ca FILE or --tls)"
            );
        }
    }
    Ok(())
}

/// Checks that `addr` has the HOST:PORT form (an IPv6 host in brackets).
pub(crate) fn check_addr(addr: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "invalid address {addr:?}: {why}; expected HOST:PORT"
        ))
    };
    if let Some((scheme, _)) = addr.split_once("://") {
        return bad(&format!("a URL ({scheme}://) is not an address"));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("no port");
    };
    if host.is_empty() {
        return bad("no host");
    }
    if host.contains(['/', ' ', '\t']) || (host.contains(':') && !host.starts_with('[')) {
        return bad("not a host name or IP address");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad(&format!("{port:?} is not a port (1-65535)")),
    }
}

/// Why the first connection was not made.
pub(crate) enum Unconnected {
    /// An error: exit 1.
    Failed(String),
    /// `--timeout` passed first: exit 3.
    TimedOut(String),
}

impl Unconnected {
    /// Says why on stderr and gives the exit status.
    pub(crate) fn exit(self) -> ExitCode {
        match self {
            Unconnected::Failed(e) => fail(e),
            Unconnected::TimedOut(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_TIMEOUT)
            }
        }
    }
}

/// Makes the first connection. An unreachable server ends the run at once (exit 1), unless
/// `retry`: then it is tried again with a growing delay (with a visible status). `deadline`
/// (`--timeout`) bounds it all, the handshake included. A refusal is final.
pub(crate) async fn connect_first(
    addr: &str,
    config: ClientConfig,
    deadline: Option<Instant>,
    retry: bool,
) -> Result<Client, Unconnected> {
    let mut delay = Duration::from_millis(100);
    let timed_out = || Unconnected::TimedOut(format!("timed out connecting to {addr} (--timeout)"));
    loop {
        let attempt = Client::connect(addr, config.clone());
        let result = match deadline {
            Some(d) => tokio::time::timeout_at(d, attempt)
                .await
                .map_err(|_| timed_out())?,
            None => attempt.await,
        };
        let failed = |e: String| Err(Unconnected::Failed(e));
        match result {
            Ok(c) => return Ok(c),
            Err(ConnectError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return failed(format!(
                    "invalid address {addr:?} ({e}); expected HOST:PORT"
                ));
            }
            Err(ConnectError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                let hint = if e.to_string().contains("InvalidContentType") {
                    " (the server does not speak TLS: drop --tls-ca / --tls, or check the port)"
                } else {
                    ""
                };
                return failed(format!("{addr}: TLS handshake failed: {e}{hint}"));
            }
            Err(ConnectError::Io(e)) if !retry => {
                return failed(format!(
                    "cannot reach {addr}: {e} (is the server running? --retry waits for it)"
                ));
            }
            Err(ConnectError::Io(e)) => {
                if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                    return Err(Unconnected::TimedOut(format!(
                        "cannot reach {addr}: {e}; giving up (--timeout)"
                    )));
                }
                eprintln!(
                    "cannot reach {addr}: {e}; retrying in {}",
                    crate::human::duration(delay)
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(ConnectError::Store(e)) => return failed(format!("--state: {e}")),
            Err(e) => {
                let e = e.to_string();
                // The core names what a first answer that is no frame looks like.
                return failed(if e.contains("the peer speaks TLS") {
                    format!("{addr}: the server speaks TLS: add --tls-ca FILE (or --tls)")
                } else if let Some(i) = e.find("the peer answered with text") {
                    let what = &e[i + "the peer answered with ".len()..];
                    format!(
                        "{addr} answered with {}",
                        what.replace("not a steadfast peer", "not a steadfast server")
                    )
                } else {
                    format!("{addr}: {e}")
                });
            }
        }
    }
}

pub(crate) async fn send(a: SendArgs) -> ExitCode {
    let store = match &a.state {
        Some(dir) => match open_state(dir) {
            Ok(s) => Some(s),
            Err(e) => return fail(e),
        },
        None => None,
    };
    // What earlier runs read of the input, to check the records this run skips.
    let mut consumed = match &a.state {
        Some(dir) => match crate::consumed::Consumed::open(dir) {
            Ok(c) => Some(c),
            Err(e) => return fail(format!("--state: {e}")),
        },
        None => None,
    };
    let mut code = send_lines(a, store.clone(), consumed.as_mut()).await;
    if let Some(c) = &consumed
        && let Err(e) = c.save()
    {
        eprintln!("error: --state: {e}");
        if code == ExitCode::SUCCESS {
            code = ExitCode::FAILURE;
        }
    }
    if let Some(store) = store {
        // The end of a session (closed, or lost with its messages handed back) is recorded
        // in the store without being waited for. The store's writer takes changes in order,
        // so once an empty change set is answered everything before it is on disk and the
        // next run starts from there.
        let _ = tokio::time::timeout(Duration::from_secs(5), store.submit(Vec::new())).await;
    }
    code
}

async fn send_lines(
    a: SendArgs,
    store: Option<Arc<dyn SessionStore>>,
    mut consumed: Option<&mut crate::consumed::Consumed>,
) -> ExitCode {
    let deadline = a.timeout.map(|s| Instant::now() + Duration::from_secs(s));
    if let Err(e) = check_client_options(&a.addr, &a.security) {
        return fail(e);
    }
    let mut config = match client_config(a.name.clone(), &a.security, a.max_message, false) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Some(store) = store {
        config = config.store(store);
    }
    let client = match connect_first(&a.addr, config, deadline, a.retry).await {
        Ok(c) => c,
        Err(e) => return e.exit(),
    };
    let peer = client.peer().clone();
    // With a state directory, sequence numbers continue across runs from 1, one message per
    // input line: the lines of earlier runs are exactly the first `next_seq - 1` (those not
    // acknowledged yet are in the restored session and go out again by themselves).
    let skip = match (&a.state, peer.next_seq()) {
        (Some(_), Some(next)) => next.0.saturating_sub(1),
        _ => 0,
    };
    let framing = a.records.framing();
    let unit = if framing == crate::records::Framing::Delimited(b'\n') {
        "line"
    } else {
        "record"
    };
    if a.state.is_some() {
        let unacked = peer.stats().in_flight;
        eprintln!(
            "skipping the first {}: already sent in earlier runs (--state){}",
            crate::human::plural(skip, &format!("input {unit}")),
            if unacked > 0 {
                format!("; {unacked} of them not acknowledged yet, sent again")
            } else {
                String::new()
            }
        );
    }
    let mut skipped = 0u64;
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.enable_steady_tick(Duration::from_millis(200));
        b
    } else {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
    };
    let mut records = crate::records::RecordReader::new(tokio::io::stdin(), framing, a.max_message);
    let mut sent = 0u64;
    let mut sent_bytes = 0u64;
    let mut eof = false;
    // What ends the run early, whatever it waits for: --timeout, or Ctrl-C / SIGTERM.
    let early = async {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => Early::TimedOut,
            () = crate::stop_signal() => Early::Interrupted,
        }
    };
    tokio::pin!(early);
    loop {
        bar.set_message(format!(
            "sent {sent}, acknowledged {}",
            peer.stats().acknowledged
        ));
        tokio::select! {
            biased;
            ev = client.next_event() => match ev {
                Some(ClientEvent::SessionLost { reason, unacknowledged }) => {
                    bar.finish_and_clear();
                    eprintln!(
                        "error: session lost ({reason}): {} of {} were not acknowledged and were not resent",
                        crate::human::count(unacknowledged.len() as u64),
                        crate::human::plural(sent, "message")
                    );
                    if let (Some(_), Some(first), Some(last)) =
                        (&a.state, unacknowledged.first(), unacknowledged.last())
                    {
                        // Sequence numbers are input line numbers; the next session reuses
                        // the numbers of the messages handed back, so a new run skips only
                        // the lines before them.
                        eprintln!(
                            "error: input lines {}..={} were not acknowledged; a new run with this --state sends them again",
                            first.seq.0, last.seq.0
                        );
                    }
                    return ExitCode::from(EXIT_SESSION_LOST);
                }
                Some(ClientEvent::Reconnecting { attempt, delay }) => {
                    note(&bar, &format!("connection lost; reconnecting (attempt {attempt}, in {})", crate::human::duration(delay)));
                }
                Some(ClientEvent::Connected { resumed: true }) => note(&bar, "resumed"),
                Some(_) => {}
                None => {}
            },
            why = &mut early => {
                bar.finish_and_clear();
                return why.end(&client, sent).await;
            }
            record = records.next(), if !eof => match record.transpose() {
                Some(Ok(r)) if skipped < skip => {
                    // Sent by an earlier run: checked against what that run read.
                    if let Some(Err(e)) = consumed.as_deref_mut().map(|c| c.add(&r, true)) {
                        bar.finish_and_clear();
                        return fail(e);
                    }
                    skipped += 1;
                }
                // Bytes are sent as they came: a `\r` before a newline is part of the line.
                Some(Ok(l)) => {
                    if let Some(c) = consumed.as_deref_mut() {
                        let _ = c.add(&l, false);
                    }
                    let len = l.len();
                    // --timeout covers the wait for room too (a server that stopped reading
                    // fills the window and the outbox).
                    let r = tokio::select! {
                        biased;
                        why = &mut early => {
                            bar.finish_and_clear();
                            return why.end(&client, sent).await;
                        }
                        r = peer.send(l) => r,
                    };
                    match r {
                        Ok(_) => {
                            sent += 1;
                            sent_bytes += len as u64;
                        }
                        // Never skip a line: one that cannot be sent ends the run.
                        Err(SendError::TooLarge { max, .. }) => {
                            bar.finish_and_clear();
                            return fail(format!(
                                "input {unit} {} is {len} bytes, above the largest message of {max} bytes (--max-message, and the server's own limit); {sent} {unit}s before it were sent",
                                skipped + sent + 1
                            ));
                        }
                        Err(_) => continue, // the SessionLost event says why
                    }
                }
                None => {
                    eof = true;
                    if skipped < skip {
                        note(&bar, &format!(
                            "warning: the input has {skipped} lines but {skip} were sent in earlier runs with this --state: is it the same input?"
                        ));
                    }
                }
                Some(Err(e)) => {
                    bar.finish_and_clear();
                    // Never skip a record: one that cannot be read or sent ends the run.
                    return fail(if e.kind() == std::io::ErrorKind::InvalidData {
                        format!("input {unit} {} {e}; {sent} {unit}s before it were sent", skipped + sent + 1)
                    } else {
                        format!("reading stdin: {e}; {sent} {unit}s before it were sent")
                    });
                }
            },
            r = peer.flush(), if eof => {
                if r.is_ok() {
                    // `Peer::flush` waits only for messages queued by this process: messages
                    // restored from --state that are still unacknowledged (a run that sends
                    // no new line) are waited for here, until the outbox is empty.
                    if peer.stats().in_flight == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
    bar.finish_and_clear();
    let transmitted = peer.stats().body_bytes_sent;
    // End the session with CLOSE; everything is acknowledged already.
    let _ = tokio::time::timeout(Duration::from_secs(5), client.close("done")).await;
    if skip > 0 {
        eprintln!(
            "{} sent, {} acknowledged ({} skipped as already sent)",
            crate::human::plural(sent, "message"),
            crate::human::count(sent),
            crate::human::plural(skipped, &format!("input {unit}"))
        );
    } else {
        eprintln!(
            "{} sent, {} acknowledged",
            crate::human::plural(sent, "message"),
            crate::human::count(sent)
        );
    }
    if transmitted > sent_bytes && skip == 0 && a.security.compress.is_none() {
        eprintln!(
            "{transmitted} body bytes transmitted for {sent_bytes} bytes of messages: {} sent again after cuts",
            transmitted - sent_bytes
        );
    }
    ExitCode::SUCCESS
}

/// Opens a client state directory and reads it once, so that damage is reported before
/// connecting.
fn open_state(dir: &std::path::Path) -> Result<Arc<dyn SessionStore>, String> {
    Ok(Arc::new(crate::serve::open_state(dir, StoreRole::Client)?))
}

/// Why a run of `send` ended before its input did.
enum Early {
    TimedOut,
    Interrupted,
}

impl Early {
    async fn end(self, client: &Client, sent: u64) -> ExitCode {
        match self {
            Early::TimedOut => timed_out(client.peer(), sent),
            Early::Interrupted => interrupted(client, sent).await,
        }
    }
}

/// `--timeout` passed: says how far the run got (the line waiting for room, if any, was not
/// sent).
fn timed_out(peer: &steadfast::Peer, sent: u64) -> ExitCode {
    eprintln!(
        "error: timed out: {} of {} acknowledged",
        crate::human::count(peer.stats().acknowledged),
        crate::human::plural(sent, "message")
    );
    ExitCode::from(EXIT_TIMEOUT)
}

/// Ctrl-C or SIGTERM: closes the session gracefully (waiting a moment for the last
/// acknowledgements, so that the server does not keep it lingering) and says how far the run
/// got; a second signal stops at once.
async fn interrupted(client: &Client, sent: u64) -> ExitCode {
    eprintln!("interrupted: closing the session (Ctrl-C again to stop at once)");
    tokio::spawn(async {
        crate::stop_signal().await;
        std::process::exit(i32::from(crate::EXIT_INTERRUPTED));
    });
    let _ = tokio::time::timeout(Duration::from_secs(5), client.close("interrupted")).await;
    // The ended session hands back what the server never acknowledged (its CLOSE discarded
    // it); restored lines of an earlier run count too.
    let lost = client.peer().unacknowledged().len() as u64;
    let acked = sent.saturating_sub(lost);
    eprintln!(
        "interrupted: {} of {} acknowledged{}; the session is closed",
        crate::human::count(acked),
        crate::human::plural(sent, "message"),
        if lost > 0 {
            format!(", {} not delivered", crate::human::count(lost))
        } else {
            String::new()
        }
    );
    ExitCode::from(crate::EXIT_INTERRUPTED)
}

/// A status line: above the progress bar on a terminal, a plain stderr line otherwise.
fn note(bar: &ProgressBar, msg: &str) {
    if bar.is_hidden() {
        eprintln!("{msg}");
    } else {
        bar.println(msg);
    }
}

/// The session of `connect` and `listen` (acknowledged by hand: a message once written), or
/// the exit status when it cannot be opened.
async fn open_session(a: &ConnectArgs) -> Result<Client, ExitCode> {
    check_client_options(&a.addr, &a.security).map_err(fail)?;
    let config = client_config(a.name.clone(), &a.security, a.max_message, true).map_err(fail)?;
    let deadline = a.timeout.map(|s| Instant::now() + Duration::from_secs(s));
    connect_first(&a.addr, config, deadline, a.retry)
        .await
        .map_err(Unconnected::exit)
}

/// The console's commands, as `/help` shows them.
const CONSOLE_HELP: &str = "\
/status   the session: connected or not, counters, round-trip time
/help     this list
/quit     wait for every receipt, close the session and exit (as the end of input does)
//TEXT    send the line /TEXT (a line starting with / is a command otherwise)";

/// What a line typed into `connect` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Typed {
    /// Send these bytes.
    Send(Vec<u8>),
    Status,
    Help,
    Quit,
    /// A command that does not exist: refused here, never sent.
    Unknown(String),
}

/// Reads a line: `/word` is a command, `//…` sends `/…`, anything else is sent as it is.
fn typed(line: Vec<u8>) -> Typed {
    if line.starts_with(b"//") {
        return Typed::Send(line[1..].to_vec());
    }
    if !line.starts_with(b"/") {
        return Typed::Send(line);
    }
    match line.trim_ascii_end() {
        b"/status" => Typed::Status,
        b"/help" => Typed::Help,
        b"/quit" => Typed::Quit,
        other => Typed::Unknown(String::from_utf8_lossy(other).into_owned()),
    }
}

pub(crate) async fn connect(a: ConnectArgs) -> ExitCode {
    let client = match open_session(&a).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    eprintln!(
        "connected to {} (session {}); type to send; /help lists the commands",
        a.addr,
        client.id().map_or_else(|| "?".into(), |i| i.to_string())
    );
    let framing = a.records.framing();
    // With the default framing a received message is shown as "< " and its line; -0 and
    // --length-prefixed write the framed bodies alone, for programs.
    let console = framing == crate::records::Framing::Delimited(b'\n');
    // A person at a terminal gets a line editor with history; a pipe is read as records.
    let mut input = if console && std::io::stdin().is_terminal() {
        match crate::editor::start() {
            Ok(keys) => Input::Editor(keys),
            Err(e) => return fail(format!("the terminal cannot be used: {e}")),
        }
    } else {
        Input::Records(crate::records::RecordReader::new(
            tokio::io::stdin(),
            framing,
            a.max_message,
        ))
    };
    let mut stdout = tokio::io::stdout();
    let peer = client.peer().clone();
    // Receipts are printed in the order the lines were sent, by one task: a bounded queue
    // (the outbox's size) between the two holds typing back rather than growing.
    let (receipts_tx, mut receipts_rx) = tokio::sync::mpsc::channel::<steadfast::Receipt>(16_384);
    let receipts = tokio::spawn(async move {
        while let Some(r) = receipts_rx.recv().await {
            let seq = r.seq();
            if r.await.is_ok() {
                say!("[#{seq} acknowledged]");
            }
        }
    });
    let stop = crate::stop_signal();
    tokio::pin!(stop);
    let mut code = ExitCode::SUCCESS;
    loop {
        tokio::select! {
            () = &mut stop => return interrupted(&client, peer.stats().queued).await,
            ev = client.next_event() => match ev {
                Some(ClientEvent::SessionLost { reason, unacknowledged }) => {
                    say!("session lost ({reason}); {} not acknowledged", crate::human::plural(unacknowledged.len() as u64, "message"));
                    return ExitCode::from(EXIT_SESSION_LOST);
                }
                Some(ClientEvent::Disconnected { error }) => say!("disconnected: {error}"),
                Some(ClientEvent::Reconnecting { attempt, delay }) => {
                    say!("reconnecting (attempt {attempt}, in {})", crate::human::duration(delay));
                }
                Some(ClientEvent::Connected { resumed }) => {
                    say!("{}", if resumed { "resumed" } else { "connected" });
                }
                Some(_) | None => {}
            },
            m = peer.recv() => match m {
                Ok(m) => {
                    if let Err(code) = show(&client, &mut stdout, framing, console, &m).await {
                        return code;
                    }
                }
                Err(_) => {
                    say!("session ended: {}", peer.end_reason().map_or_else(|| "?".into(), |r| r.to_string()));
                    return ExitCode::SUCCESS;
                }
            },
            // In the console a line starting with / is a command; with -0 or
            // --length-prefixed every record is a message.
            record = input.next() => match record.map(|r| r.map(|l| if console { typed(l) } else { Typed::Send(l) })) {
                Ok(Some(Typed::Quit)) | Ok(None) => break,
                Ok(Some(Typed::Help)) => say!("{CONSOLE_HELP}"),
                Ok(Some(Typed::Unknown(c))) => {
                    say!("unknown command {c}: not sent (/help lists the commands; //… sends a line starting with /)");
                }
                Ok(Some(Typed::Status)) => {
                    let s = peer.stats();
                    say!(
                        "{} session {} | sent {} acknowledged {} in flight {} retransmitted {} | received {} | rtt {}",
                        if peer.is_connected() { "connected" } else { "reconnecting" },
                        peer.id().map_or_else(|| "?".into(), |i| i.to_string()),
                        s.queued, s.acknowledged, s.in_flight, s.retransmitted, s.received,
                        s.rtt.map_or_else(|| "-".into(), crate::human::duration)
                    );
                }
                Ok(Some(Typed::Send(l))) => match peer.send(l).await {
                    Ok(receipt) => {
                        if receipts_tx.send(receipt).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => say!("not sent: {e}"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    // Ctrl-C at the line editor (the terminal is raw while editing).
                    return interrupted(&client, peer.stats().queued).await;
                }
                Err(e) => {
                    // What was typed before still goes out; the run then fails.
                    say!("error: input: {e}");
                    code = ExitCode::FAILURE;
                    break;
                }
            },
        }
    }
    // The end of input (or /quit): every line sent is acknowledged first, as with `send`,
    // and what arrives meanwhile is still shown; --timeout bounds the wait.
    drop(receipts_tx);
    let deadline = a.timeout.map(|s| Instant::now() + Duration::from_secs(s));
    let flushed = async {
        match deadline {
            Some(d) => tokio::time::timeout_at(d, client.flush())
                .await
                .unwrap_or(Err(steadfast::error::ReceiptError::TimedOut)),
            None => client.flush().await,
        }
    };
    tokio::pin!(flushed);
    let flushed = loop {
        tokio::select! {
            r = &mut flushed => break r,
            () = &mut stop => return interrupted(&client, peer.stats().queued).await,
            m = peer.recv() => match m {
                Ok(m) => {
                    if let Err(code) = show(&client, &mut stdout, framing, console, &m).await {
                        return code;
                    }
                }
                Err(_) => break client.flush().await,
            },
        }
    };
    let _ = receipts.await;
    match flushed {
        Ok(()) => {}
        Err(steadfast::error::ReceiptError::TimedOut) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.close("timed out")).await;
            return timed_out(&peer, peer.stats().queued);
        }
        Err(e) => {
            say!(
                "error: {e}; {} not acknowledged",
                crate::human::plural(peer.unacknowledged().len() as u64, "message")
            );
            return ExitCode::from(EXIT_SESSION_LOST);
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), client.close("bye")).await;
    code
}

/// Where the console's lines come from.
enum Input {
    /// A pipe or file, cut into records by the framing.
    Records(crate::records::RecordReader<tokio::io::Stdin>),
    /// The line editor on a terminal.
    Editor(tokio::sync::mpsc::Receiver<crate::editor::Key>),
}

impl Input {
    /// The next line; `None` at the end; an `Interrupted` error for Ctrl-C at the editor.
    async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        match self {
            Input::Records(r) => r.next().await,
            Input::Editor(keys) => match keys.recv().await {
                Some(crate::editor::Key::Line(l)) => Ok(Some(l)),
                Some(crate::editor::Key::Interrupt) => Err(std::io::ErrorKind::Interrupted.into()),
                None => Ok(None),
            },
        }
    }
}

/// Writes a received message to stdout (in the console as "< " and its line) and
/// acknowledges it once written; the exit status when that cannot be done.
async fn show(
    client: &Client,
    stdout: &mut tokio::io::Stdout,
    framing: crate::records::Framing,
    console: bool,
    m: &steadfast::Message,
) -> Result<(), ExitCode> {
    let mut line = if console { b"< ".to_vec() } else { Vec::new() };
    if let Err(why) = framing.encode(&m.body, &mut line) {
        // Never altered: the message stays with its sender.
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            client.close("cannot write a message"),
        )
        .await;
        return Err(fail(format!(
            "message {} cannot be written to stdout: {why}; it was not acknowledged",
            m.seq.0
        )));
    }
    // Acknowledged once written: a message stdout did not take stays with its sender.
    match stdout.write_all(&line).await.and(stdout.flush().await) {
        Ok(()) => {
            client.peer().acknowledge(m.seq);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Err(ExitCode::from(crate::EXIT_BROKEN_PIPE))
        }
        Err(e) => Err(fail(format!("writing to stdout: {e}"))),
    }
}

/// `steadfast listen`: receive only, every message to stdout, acknowledged once written.
pub(crate) async fn listen(a: ConnectArgs) -> ExitCode {
    let client = match open_session(&a).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    eprintln!("listening to {}", a.addr);
    let framing = a.records.framing();
    let mut stdout = tokio::io::stdout();
    let peer = client.peer().clone();
    let stop = crate::stop_signal();
    tokio::pin!(stop);
    let mut out = Vec::new();
    let mut written = 0u64;
    loop {
        let batch = tokio::select! {
            () = &mut stop => {
                eprintln!("interrupted: closing the session (Ctrl-C again to stop at once)");
                tokio::spawn(async {
                    crate::stop_signal().await;
                    std::process::exit(i32::from(crate::EXIT_INTERRUPTED));
                });
                let _ = tokio::time::timeout(Duration::from_secs(5), client.close("interrupted")).await;
                eprintln!(
                    "interrupted: {} received and written; the session is closed",
                    crate::human::plural(written, "message")
                );
                return ExitCode::from(crate::EXIT_INTERRUPTED);
            }
            b = peer.recv_many(1_024) => match b {
                Ok(b) => b,
                Err(steadfast::error::RecvError::Ended) => {
                    eprintln!("the session ended: {}", peer.end_reason().map_or_else(|| "?".into(), |r| r.to_string()));
                    return ExitCode::SUCCESS;
                }
                Err(e) => return fail(e),
            },
        };
        out.clear();
        let mut last = None;
        let mut refused = None;
        for m in &batch {
            if let Err(why) = framing.encode(&m.body, &mut out) {
                refused = Some(format!(
                    "message {} cannot be written to stdout: {why}; it was not acknowledged",
                    m.seq.0
                ));
                break;
            }
            last = Some(m.seq);
        }
        // Acknowledged once written: what stdout did not take stays with the server.
        match stdout.write_all(&out).await.and(stdout.flush().await) {
            Ok(()) => {
                if let Some(seq) = last {
                    written += peer.acknowledge(seq) as u64;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return ExitCode::from(crate::EXIT_BROKEN_PIPE);
            }
            Err(e) => return fail(format!("writing to stdout: {e}")),
        }
        if let Some(e) = refused {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                client.close("cannot write a message"),
            )
            .await;
            return fail(e);
        }
    }
}
