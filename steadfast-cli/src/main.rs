//! `steadfast`: serve, send, connect, chaos, demo and bench from the command line.

mod bench;
mod cert;
mod chaos;
mod client;
mod consumed;
mod demo;
mod editor;
mod exec;
mod human;
mod log;
mod monitor;
mod pem;
mod records;
mod request;
mod serve;
mod size;
mod value;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Exactly-once, in-order, acknowledged messaging over TCP that survives connection loss.
#[derive(Parser, Debug)]
#[command(name = "steadfast", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines on stderr are written (RUST_LOG, or STEADFAST_LOG, filters them;
    /// info by default).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: log::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a server: every received message is written to stdout, one per line, in delivery
    /// order (everything else goes to stderr). Ctrl-C stops it gracefully.
    #[command(after_help = EXIT_STATUS)]
    Serve(ServeArgs),
    /// Send each line of stdin as one message; exit 0 only when every one is acknowledged.
    #[command(after_help = EXIT_STATUS)]
    Send(SendArgs),
    /// An interactive console: type a line to send it; see arrivals and receipts (in
    /// order); /status, /help, /quit (//TEXT sends /TEXT). At the end of input it waits for
    /// every receipt, as send does. With -0 or --length-prefixed every record is a message.
    #[command(after_help = EXIT_STATUS)]
    Connect(ConnectArgs),
    /// Receive only: connect and write every message the server sends to stdout (framed as
    /// --lines, -0 or --length-prefixed say), until the session ends or Ctrl-C. A message is
    /// acknowledged once written and flushed.
    #[command(after_help = EXIT_STATUS)]
    Listen(ConnectArgs),
    /// Ask a route for an answer, as `serve --exec` or a program on the library's rpc gives
    /// it: one request, its reply to stdout (bytes or a string unaltered, any other value as
    /// a JSON line); an error reply is an error. The request survives cuts like any message.
    #[command(after_help = EXIT_STATUS)]
    Request(RequestArgs),
    /// A fault proxy: forwards to --upstream and cuts (RST or FIN) or stalls connections on a
    /// seeded schedule, printing each fault.
    #[command(after_help = EXIT_STATUS)]
    Chaos(ChaosArgs),
    /// The first thing to run: a server, a client and a fault proxy in one process; a million
    /// messages through a link that is cut again and again; a summary of what arrived.
    Demo(DemoArgs),
    /// Write development TLS certificates: DIR/ca.pem, ca.key, server.pem, server.key,
    /// client.pem, client.key (keys readable by their owner only), the server's valid for
    /// every --name (DNS names or IP addresses); --ca DIR issues from an existing CA.
    Cert(CertArgs),
    /// Measure on loopback, each figure next to a baseline from the same run: throughput,
    /// latency, connections or cuts.
    #[command(long_about = BENCH_HELP)]
    Bench(bench::BenchArgs),
    /// Client processes of `bench connections` (internal).
    #[command(hide = true)]
    BenchClients(bench::BenchClientsArgs),
}

/// The exit statuses of every command, shown by each `--help` and, identical, in README.md
/// (a test compares them).
const EXIT_STATUS: &str = "\
Exit status (serve, send, connect, listen, request, chaos):
  0    done: every line acknowledged (send); stopped by Ctrl-C or SIGTERM (serve, chaos),
       by /quit or the end of input (serve --console, connect); the server ended the
       session (listen); the reply written (request)
  1    error: a bad address, TLS options without TLS, a server not reachable (without
       --retry), refused, a line above --max-message, an unusable --state, stdout
       failing, an error reply (request)
  2    usage: an unknown or conflicting option, a missing or malformed argument
  3    --timeout reached first (send, connect, listen, request)
  4    the session was lost: the server forgot it; the lines not acknowledged are counted
       and nothing is resent silently (send, connect); a request's outcome is unknown
  130  interrupted by Ctrl-C or SIGTERM (send, connect, listen, request): the session was
       closed and how many lines were acknowledged is printed; a second Ctrl-C stops at once
  141  stdout closed by its reader, as in `serve | head`: stopped quietly, and no line it
       did not write was acknowledged";

const BENCH_HELP: &str = "\
Measure on loopback (127.0.0.1, port 0), each figure next to a baseline measured in the same run. \
Every message carries an incrementing counter that the receiving side checks: the run fails \
(exit status 1) if steadfast lost or duplicated anything. Build with --release.

Modes:
  throughput   one connection, every message acknowledged and its receipt resolved, vs raw
               length-prefixed framing over one tokio TCP connection with batched writes
  latency      request/response round trips on one connection (p50/p90/p99/p99.9/max and a
               histogram) vs raw tokio ping-pong with TCP_NODELAY
  connections  server memory (VmRSS) per lingering session (--lingering, created first, then
               disconnected) and per live session (--connections, held by client processes of
               up to 9,000 connections each), then round trips per second on min(C, 1,000)
               connections for --duration seconds vs a minimal tokio echo server
  cuts         acknowledged throughput with the link cut every 100 ms through the fault proxy
               vs the same through the proxy without faults; outages of 100 ms and the time
               from the proxy listening again to the first delivery after it (recovery_ms),
               next to the client's reconnect delay + 2 RTT

ratio_vs_raw (also `ratio`) is steadfast's figure divided by the baseline's: throughput and
cuts msgs/s (higher is better), latency p50 round trip (lower is better), connections round
trips/s.

The figures of record:
  steadfast bench throughput --runs 5
  steadfast bench latency --runs 5
  steadfast bench cuts --runs 5
  steadfast bench connections --connections 19000 --lingering 100000 --duration 10

--json prints one JSON object as the last line of stdout (null where a mode does not measure a
field). bench/run in the repository runs every mode 5 times and prints the medians.";

#[derive(clap::Args, Debug)]
struct CertArgs {
    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: std::path::PathBuf,
    /// A DNS name or IP address the server certificate is valid for (repeat).
    #[arg(long = "name", required = true, value_name = "NAME")]
    names: Vec<String>,
    /// Issue from the CA in this directory (its ca.pem and ca.key) instead of making a new
    /// one: every client that trusts it trusts the new server. DIR/ca.pem is copied to --out.
    #[arg(long, value_name = "DIR")]
    ca: Option<std::path::PathBuf>,
    /// Replace files that exist in --out. Without it nothing is overwritten: a new CA
    /// would leave every client that trusts the old one refusing the server.
    #[arg(long)]
    force: bool,
}

/// TLS and authentication options of the client commands.
#[derive(clap::Args, Debug, Clone, Default)]
struct ClientSecurity {
    /// Use TLS, trusting the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Use TLS, trusting the system's root certificates.
    #[arg(long, conflicts_with = "tls_ca")]
    tls: bool,
    /// Present this client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_client_key")]
    tls_client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_client_cert")]
    tls_client_key: Option<std::path::PathBuf>,
    /// Check the server certificate against this name instead of the address's host.
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Send the token in this file (trailing newline removed) as credentials.
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// Compress every message body (a transform negotiated in the handshake; `serve`
    /// accepts both).
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    compress: Option<Compression>,
}

/// A compression transform for message bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Compression {
    /// LZ4: fast, a modest ratio.
    Lz4,
    /// Zstandard (level 3): a better ratio for more CPU.
    Zstd,
}

/// TLS and authentication options of `serve`.
#[derive(clap::Args, Debug, Clone, Default)]
struct ServerSecurity {
    /// Serve TLS 1.3 with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
    /// Let in only clients presenting the token in this file.
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
}

/// How `serve` writes messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The body as it came, framed as --lines (the default), -0 or --length-prefixed say.
    Line,
    /// A JSON object per line: peer, name, session, seq, timestamp_us, body (null, and the
    /// bytes in body_base64, when the body is no UTF-8).
    Json,
    /// The body in hexadecimal, one per line.
    Hex,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on (repeat for several).
    #[arg(short, long = "listen", required = true, value_name = "ADDR")]
    listen: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "line")]
    format: Format,
    /// Send every message back to its sender.
    #[arg(long)]
    echo: bool,
    /// Seconds a disconnected session is kept for its client to resume.
    #[arg(long, default_value = "60", value_name = "SECS")]
    linger: u64,
    /// An operator console on this terminal (/help lists the commands).
    #[arg(long)]
    console: bool,
    /// Keep sessions in this state directory (created if missing) so that they survive a
    /// crash or restart of this process: restarted with the same DIR, the server restores them
    /// and clients resume. A message is acknowledged only once its line is written and stdout
    /// flushed; after a crash, lines written but not yet acknowledged come again (the last one
    /// written may have been cut short by a kill). On
    /// Ctrl-C or SIGTERM clients are told to reconnect to the next server (GOAWAY). A damaged
    /// or foreign directory is refused and left untouched.
    /// With postgres://USER[:PASSWORD]@HOST:PORT/DB, sessions live in PostgreSQL, shared by
    /// every server given the same URL (a fleet behind a load balancer): a client resumes on
    /// whichever server it reaches, and the server that carried it before stops at once.
    #[arg(long, value_name = "DIR|URL")]
    state: Option<std::path::PathBuf>,
    /// This server's name in a fleet (--state postgres://…): in every log line and as the
    /// label node="NAME" on every metric; stored as the owner of its sessions. Unique per
    /// server; restarted under the same name, a server lets its former sessions linger from
    /// then. Default: the host name and the process id.
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Largest message accepted and sent: bytes, or with a KiB, MiB or GiB suffix, up to
    /// 4 GiB − 1 (the outbox and the memory budget grows to fit).
    #[arg(long, value_name = "SIZE", value_parser = size::parse_size, default_value = "16MiB")]
    max_message: u32,
    /// Answer requests instead of writing messages: every request (from `steadfast request`
    /// or a program on the library's rpc), whatever its route, runs CMD with `sh -c`, its
    /// body on stdin (bytes as they are; a structured value as a line of JSON) and
    /// STEADFAST_ROUTE, STEADFAST_BODY (bytes or json), STEADFAST_SESSION, STEADFAST_PEER
    /// and STEADFAST_NAME set. Status 0: its stdout is the reply. Otherwise, or past
    /// --exec-timeout, the requester gets an error reply with the reason and the start of
    /// its stderr.
    /// A one-way message (the library's `Rpc::notify`) runs CMD too, its stdout unused.
    /// A run's processes end with it. Not with --state: a request taken before a crash
    /// would not run again.
    #[arg(
        long,
        value_name = "CMD",
        conflicts_with_all = ["format", "echo", "lines", "null", "length_prefixed", "state"]
    )]
    exec: Option<String>,
    /// With --exec: runs at once per session; further requests wait, unacknowledged, so the
    /// requester is held back rather than this server piling up processes.
    #[arg(long, value_name = "N", default_value = "4", requires = "exec",
          value_parser = clap::value_parser!(u32).range(1..))]
    exec_jobs: u32,
    /// With --exec: runs at once on the whole server; a run waits for a slot (in turn)
    /// before it starts.
    #[arg(long, value_name = "N", default_value = "64", requires = "exec",
          value_parser = clap::value_parser!(u32).range(1..))]
    exec_max: u32,
    /// With --exec: seconds one run may take before it is killed (its whole process group).
    #[arg(long, value_name = "SECS", default_value = "60", requires = "exec",
          value_parser = clap::value_parser!(u64).range(1..))]
    exec_timeout: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics and the session list (JSON) at
    /// /sessions, over plain HTTP: 127.0.0.1:PORT keeps them on this machine.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Every connection begins with a PROXY protocol header (v1 or v2, HAProxy's send-proxy
    /// or send-proxy-v2) giving the client's real address; a connection without one is
    /// closed. Only for a listener that nothing but the load balancer can reach.
    #[arg(long)]
    proxy_protocol: bool,
    #[command(flatten)]
    records: records::Records,
    #[command(flatten)]
    security: ServerSecurity,
}

#[derive(clap::Args, Debug)]
struct SendArgs {
    /// Server address, host:port; several servers of a fleet (serve --state postgres://…)
    /// comma-separated, host:port,host:port: tried in turn, the next after a loss or GOAWAY.
    addr: String,
    /// Give up after this many seconds, whatever is being waited for (the server, room in
    /// the outbox, acknowledgements): exit 3, saying how many were acknowledged.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// If the server cannot be reached at first, keep trying (with a growing delay, until
    /// --timeout) instead of exiting 1 at once.
    #[arg(long)]
    retry: bool,
    /// A peer name shown to the server.
    #[arg(long)]
    name: Option<String>,
    /// Keep the session in this state directory (created if missing) so that it survives a
    /// crash or restart of this process. Run again with the same DIR and the same input: the
    /// stored session resumes (its unacknowledged lines go out again by themselves) and the
    /// input lines already sent in earlier runs are skipped (their count is printed on
    /// stderr), so no line is sent twice. The skipped lines are checked against checkpoints
    /// of what earlier runs read: a different input is refused. A damaged or foreign
    /// directory is refused and left untouched.
    #[arg(long, value_name = "DIR")]
    state: Option<std::path::PathBuf>,
    /// Largest message accepted and sent: bytes, or with a KiB, MiB or GiB suffix, up to
    /// 4 GiB − 1 (the outbox grows to fit).
    #[arg(long, value_name = "SIZE", value_parser = size::parse_size, default_value = "16MiB")]
    max_message: u32,
    #[command(flatten)]
    records: records::Records,
    #[command(flatten)]
    security: ClientSecurity,
}

/// The options of `connect` and `listen`.
#[derive(clap::Args, Debug)]
struct ConnectArgs {
    /// Server address, host:port; several servers of a fleet comma-separated (tried in turn,
    /// the next after a loss or GOAWAY).
    addr: String,
    /// Give up after this many seconds connecting, and (connect) waiting at the end of
    /// input for the last acknowledgements: exit 3.
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// If the server cannot be reached at first, keep trying (with a growing delay, until
    /// --timeout) instead of exiting 1 at once.
    #[arg(long)]
    retry: bool,
    /// A peer name shown to the server.
    #[arg(long)]
    name: Option<String>,
    /// Largest message accepted and sent: bytes, or with a KiB, MiB or GiB suffix, up to
    /// 4 GiB − 1 (the outbox grows to fit).
    #[arg(long, value_name = "SIZE", value_parser = size::parse_size, default_value = "16MiB")]
    max_message: u32,
    #[command(flatten)]
    records: records::Records,
    #[command(flatten)]
    security: ClientSecurity,
}

#[derive(clap::Args, Debug)]
struct RequestArgs {
    /// Server address, host:port.
    addr: String,
    /// The route to ask (with `serve --exec`, any route: the command sees it in
    /// $STEADFAST_ROUTE).
    route: String,
    /// The request's body, as bytes; without it, or with `-`, stdin to its end.
    body: Option<std::ffi::OsString>,
    /// The body is JSON, sent as the MessagePack value it stands for (for routes that take
    /// typed values, such as `[2, 3]` for a pair of numbers).
    #[arg(long)]
    json: bool,
    /// Give up after this many seconds, whatever is being waited for (the server, room to
    /// send, the reply): exit 3. The request may still be handled after that.
    #[arg(long, value_name = "SECS", default_value = "30")]
    timeout: u64,
    /// If the server cannot be reached at first, keep trying (with a growing delay, until
    /// --timeout) instead of exiting 1 at once.
    #[arg(long)]
    retry: bool,
    /// A peer name shown to the server.
    #[arg(long)]
    name: Option<String>,
    /// Largest message accepted and sent (the request with its route, the reply): bytes,
    /// or with a KiB, MiB or GiB suffix, up to 4 GiB − 1.
    #[arg(long, value_name = "SIZE", value_parser = size::parse_size, default_value = "16MiB")]
    max_message: u32,
    #[command(flatten)]
    security: ClientSecurity,
}

#[derive(clap::Args, Debug)]
struct ChaosArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: String,
    /// Address to forward to.
    #[arg(long, value_name = "ADDR")]
    upstream: String,
    /// Seed of the fault schedule.
    #[arg(long, default_value = "1")]
    seed: u64,
    /// Fewest bytes a connection forwards before its fault.
    #[arg(long, default_value = "4096")]
    min_bytes: u64,
    /// Most bytes a connection forwards before its fault.
    #[arg(long, default_value = "1048576")]
    max_bytes: u64,
    /// Also fault each connection after this many milliseconds.
    #[arg(long, value_name = "MS")]
    interval_ms: Option<u64>,
    /// Chance of a stall instead of a cut, per mille.
    #[arg(long, default_value = "0")]
    stall_per_mille: u32,
    /// How long a stall lasts, in seconds.
    #[arg(long, default_value = "15")]
    stall_secs: u64,
    /// Chance of RST rather than FIN for a cut, per mille.
    #[arg(long, default_value = "500")]
    reset_per_mille: u32,
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Messages to push through.
    #[arg(long, default_value = "1000000")]
    messages: u64,
    /// Bytes per message (at least 8: each carries its number).
    #[arg(long, default_value = "64")]
    size: usize,
    /// Seed of the cut schedule.
    #[arg(long)]
    seed: Option<u64>,
    /// Cut each connection after a random number of bytes up to this many.
    #[arg(long, default_value = "2097152")]
    max_bytes: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    log::init(cli.log_format);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Bench(_) | Command::BenchClients(_)) {
        // Measurements use two workers, whatever the machine.
        builder.worker_threads(2);
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(async {
        match cli.command {
            Command::Serve(a) => {
                // `--node`: every log line of this server names it.
                let span = a.node.as_deref().map_or_else(tracing::Span::none, |n| {
                    tracing::info_span!("node", name = n)
                });
                tracing::Instrument::instrument(serve::run(a), span).await
            }
            Command::Send(a) => client::send(a).await,
            Command::Connect(a) => client::connect(a).await,
            Command::Listen(a) => client::listen(a).await,
            Command::Request(a) => request::run(a).await,
            Command::Chaos(a) => chaos::run(a).await,
            Command::Demo(a) => demo::run(a).await,
            Command::Cert(a) => cert::run(&a),
            Command::Bench(a) => bench::run(a).await,
            Command::BenchClients(a) => bench::clients::run(a).await,
        }
    });
    // Do not wait for lingering connection tasks: the command's work is done.
    rt.shutdown_timeout(Duration::from_millis(200));
    code
}

/// Waits for Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The exit status of a command whose output's reader went away (a broken pipe, as in
/// `steadfast serve | head -3`): that of a process ended by SIGPIPE, as shells report it.
pub(crate) const EXIT_BROKEN_PIPE: u8 = 141;

/// The exit status of `send` and `connect` stopped by Ctrl-C or SIGTERM (after closing the
/// session and saying how far they got), as shells report an interrupted process.
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// Reads a token file, without its trailing newline.
fn read_token(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let mut t = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    while t.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        t.pop();
    }
    if t.is_empty() {
        return Err(format!("{} holds an empty token", path.display()));
    }
    Ok(t)
}

/// A one-line error and exit status 1.
fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::FAILURE
}
