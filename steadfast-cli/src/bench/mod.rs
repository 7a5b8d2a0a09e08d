//! `steadfast bench MODE`: throughput, latency, connections and cuts on loopback, each next to
//! a baseline measured in the same run (raw tokio TCP, a minimal echo server, or the same
//! transfer without cuts), with the loss and duplicate counts the receiver verified.
//!
//! Every message carries an incrementing u64 counter in its first 8 bytes; the receiving side
//! checks order and counts, so a benchmark figure is never reported for a run that lost or
//! duplicated anything (exit status 1 then).

pub(crate) mod clients;
mod connections;
mod cuts;
mod latency;
mod throughput;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use steadfast::error::RecvError;
use steadfast::tls::{DevCertificates, TlsClient, TlsServer};
use steadfast::{Client, ClientConfig, Peer, Server, ServerConfig, ServerEvent};
use tokio::sync::watch;

pub(crate) use clients::BenchClientsArgs;

use crate::{ClientSecurity, ServerSecurity, fail};

/// Environment variable through which `bench` hands the in-memory development CA (`--tls-dev`)
/// to its client processes.
const DEV_CA_ENV: &str = "STEADFAST_BENCH_DEV_CA";

/// What `steadfast bench` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Acknowledged messages on one connection vs raw length-prefixed framing.
    Throughput,
    /// Request/response round trips on one connection vs raw tokio ping-pong.
    Latency,
    /// Memory per live and per lingering session, and round trips across many connections
    /// vs a minimal tokio echo server.
    Connections,
    /// Acknowledged throughput with the link cut every 100 ms vs the same without cuts, and
    /// the recovery time after an outage.
    Cuts,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Throughput => "throughput",
            Mode::Latency => "latency",
            Mode::Connections => "connections",
            Mode::Cuts => "cuts",
        }
    }

    fn default_count(self) -> u64 {
        match self {
            Mode::Throughput => 1_000_000,
            Mode::Latency => 20_000,
            Mode::Connections => 0,
            Mode::Cuts => 3_000_000,
        }
    }
}

/// Options of `steadfast bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// What to measure.
    #[arg(value_enum)]
    mode: Mode,
    /// Bytes per message (at least 8: each carries its number).
    #[arg(long, default_value = "64", value_name = "BYTES")]
    size: usize,
    /// Messages (throughput, cuts) or measured round trips (latency). Defaults: throughput
    /// 1,000,000; latency 20,000; cuts 3,000,000.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Connections mode: live sessions held open (by client processes, up to 9,000 each).
    #[arg(long, default_value = "2000", value_name = "C")]
    connections: usize,
    /// Connections mode: sessions created and disconnected first, left lingering on the server.
    #[arg(long, default_value = "10000", value_name = "L")]
    lingering: usize,
    /// Connections mode: seconds of request/response load (on min(C, 1,000) connections, and
    /// again on the echo server).
    #[arg(long, default_value = "3", value_name = "SECS")]
    duration: u64,
    /// Run the measurement this many times and report the median of each figure.
    #[arg(long, default_value = "1", value_name = "R")]
    runs: usize,
    /// Print one JSON object on the last stdout line (and no progress bar).
    #[arg(long)]
    json: bool,
    /// Throughput mode: also run the steadfast side with durable session stores
    /// (`DurableStore`, synced to disk, in temporary state directories) on both server and
    /// client, next to the in-memory figure of the same run.
    #[arg(long)]
    durable: bool,
    /// Throughput mode: also run the steadfast side with the server's sessions in
    /// PostgreSQL at this URL (postgres://USER@HOST:PORT/DB, as `serve --state` takes it),
    /// in both directions: client to server (each receipt confirmed by a commit before it
    /// is delivered, each receive position committed before it is acknowledged) and server
    /// to client (each message committed before it goes out).
    #[arg(long, value_name = "URL")]
    state: Option<String>,
    /// Every steadfast `recv` (server and clients) polls this many microseconds before it
    /// waits (`ServerConfig::recv_spin`, `ClientConfig::recv_spin`). Default 0, as in the
    /// library.
    #[arg(long, default_value = "0", value_name = "US")]
    recv_spin: u64,
    #[command(flatten)]
    security: BenchSecurity,
}

/// TLS and token options of `bench`: the server's (as `serve` has them) and the clients' (as
/// `send` has them), or `--tls-dev`.
#[derive(clap::Args, Debug, Clone, Default)]
struct BenchSecurity {
    /// The server serves TLS 1.3 with this certificate chain (PEM); needs --tls-ca.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<std::path::PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The server requires client certificates signed by this CA (mutual TLS).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_client_cert"])]
    tls_client_ca: Option<std::path::PathBuf>,
    /// The clients trust the CA certificates in this PEM file.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<std::path::PathBuf>,
    /// The clients present this certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_client_key")]
    tls_client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_client_cert")]
    tls_client_key: Option<std::path::PathBuf>,
    /// The clients check the server certificate against this name (default 127.0.0.1).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// The server lets in only clients presenting the token in this file, and they do.
    #[arg(long, value_name = "FILE")]
    token_file: Option<std::path::PathBuf>,
    /// TLS with development certificates generated in memory (no files needed).
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_ca"])]
    tls_dev: bool,
}

/// Server and client settings shared by every mode, with TLS and token options applied.
#[derive(Clone)]
struct Setup {
    server: ServerConfig,
    client: ClientConfig,
    /// Arguments and environment that give a client process the same client settings.
    child_args: Vec<std::ffi::OsString>,
    child_env: Vec<(String, String)>,
    tls: bool,
}

impl Setup {
    fn new(sec: &BenchSecurity) -> Result<Setup, String> {
        let server_sec = ServerSecurity {
            tls_cert: sec.tls_cert.clone(),
            tls_key: sec.tls_key.clone(),
            tls_client_ca: sec.tls_client_ca.clone(),
            token_file: sec.token_file.clone(),
        };
        let client_sec = ClientSecurity {
            tls_ca: sec.tls_ca.clone(),
            tls: false,
            tls_client_cert: sec.tls_client_cert.clone(),
            tls_client_key: sec.tls_client_key.clone(),
            tls_server_name: sec.tls_server_name.clone(),
            token_file: sec.token_file.clone(),
            compress: None,
        };
        let mut server = crate::serve::security(ServerConfig::default(), &server_sec)?;
        let mut client = crate::client::client_config(
            None,
            &client_sec,
            crate::size::DEFAULT_MAX_MESSAGE,
            false,
        )?;
        let mut child_args = client_sec.to_args();
        let mut child_env = Vec::new();
        let mut tls = sec.tls_cert.is_some();
        if sec.tls_dev {
            let certs = DevCertificates::generate(&["127.0.0.1", "localhost"])
                .map_err(|e| e.to_string())?;
            let tls_server = TlsServer::from_pem(
                certs.server_cert_pem.as_bytes(),
                certs.server_key_pem.as_bytes(),
                None,
            )
            .map_err(|e| e.to_string())?;
            server = server.tls(tls_server);
            let mut tls_client =
                TlsClient::from_ca_pem(certs.ca_pem.as_bytes()).map_err(|e| e.to_string())?;
            if let Some(n) = &sec.tls_server_name {
                tls_client = tls_client.server_name(n).map_err(|e| e.to_string())?;
            }
            client = client.tls(tls_client);
            child_env.push((DEV_CA_ENV.to_owned(), certs.ca_pem));
            child_args.retain(|a| a != "--tls-ca");
            tls = true;
        }
        Ok(Setup {
            server,
            client,
            child_args,
            child_env,
            tls,
        })
    }
}

impl ClientSecurity {
    /// The command-line arguments that give these options (for client processes).
    fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut out: Vec<std::ffi::OsString> = Vec::new();
        let mut pair = |flag: &str, v: Option<&std::path::Path>| {
            if let Some(v) = v {
                out.push(flag.into());
                out.push(v.into());
            }
        };
        pair("--tls-ca", self.tls_ca.as_deref());
        pair("--tls-client-cert", self.tls_client_cert.as_deref());
        pair("--tls-client-key", self.tls_client_key.as_deref());
        pair("--token-file", self.token_file.as_deref());
        if let Some(n) = &self.tls_server_name {
            out.push("--tls-server-name".into());
            out.push(n.into());
        }
        out
    }
}

/// The figures of one run: named values, and what the receivers verified.
#[derive(Clone, Debug, Default)]
struct Figures {
    values: BTreeMap<&'static str, f64>,
    lost: u64,
    duplicated: u64,
    /// Extra text for the human-readable report (the latency histograms).
    notes: Vec<String>,
}

impl Figures {
    fn set(&mut self, key: &'static str, v: f64) {
        self.values.insert(key, v);
    }

    fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }

    /// The median of every value over the runs; losses and duplicates add up.
    fn median(runs: &[Figures]) -> Figures {
        let mut out = Figures::default();
        let keys: Vec<&'static str> = runs.iter().flat_map(|r| r.values.keys().copied()).collect();
        for k in keys {
            let mut v: Vec<f64> = runs.iter().filter_map(|r| r.get(k)).collect();
            out.set(k, median(&mut v));
        }
        out.lost = runs.iter().map(|r| r.lost).sum();
        out.duplicated = runs.iter().map(|r| r.duplicated).sum();
        out.notes = runs.last().map(|r| r.notes.clone()).unwrap_or_default();
        out
    }
}

/// The fields every JSON report has (null where the mode does not measure it), in order.
const JSON_FIELDS: &[&str] = &[
    "msgs_per_sec",
    "raw_msgs_per_sec",
    "ratio_vs_raw",
    "rtt_p50_us",
    "rtt_p90_us",
    "rtt_p99_us",
    "rtt_p999_us",
    "rtt_max_us",
    "raw_rtt_p50_us",
    "raw_rtt_p99_us",
    "ctx_switches_per_round_trip",
    "raw_ctx_switches_per_round_trip",
    "connections",
    "rss_bytes_per_session",
    "lingering_sessions",
    "rss_bytes_per_lingering_session",
    "round_trips_per_sec",
    "echo_round_trips_per_sec",
    "clean_msgs_per_sec",
    "cuts",
    "recovery_ms",
    "recovery_bound_ms",
    "send_msgs_per_sec",
    "send_all_msgs_per_sec",
    "memory_msgs_per_sec",
    "durable_msgs_per_sec",
    "ratio_durable_vs_memory",
    "postgres_in_msgs_per_sec",
    "postgres_out_msgs_per_sec",
    "postgres_100_sessions_msgs_per_sec",
    "ratio_postgres_in_vs_memory",
    "ratio_postgres_out_vs_memory",
    "peak_rss_bytes",
];

/// How the progress bars show (hidden with `--json` or when stderr is not a terminal).
#[derive(Clone, Copy)]
struct Ui {
    hidden: bool,
}

impl Ui {
    fn bar(self, prefix: &str, len: u64) -> ProgressBar {
        if self.hidden {
            return ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden());
        }
        let b = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template("{prefix:>24} {bar:40} {pos}/{len} {per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_prefix(prefix.to_owned());
        b
    }

    /// A status line (kept out of stdout, which carries the results).
    fn note(self, msg: &str) {
        if !self.hidden {
            eprintln!("{msg}");
        }
    }
}

/// Shared by every mode's run.
struct Ctx {
    mode: Mode,
    size: usize,
    count: u64,
    connections: usize,
    lingering: usize,
    duration: Duration,
    durable: bool,
    postgres: Option<String>,
    /// `--recv-spin`, in microseconds.
    recv_spin_us: u64,
    setup: Setup,
    ui: Ui,
}

/// `steadfast bench MODE`.
pub(crate) async fn run(a: BenchArgs) -> ExitCode {
    if a.size < 8 {
        return fail("--size must be at least 8 (each message carries its number)");
    }
    if a.runs == 0 {
        return fail("--runs must be at least 1");
    }
    let mut setup = match Setup::new(&a.security) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let spin = Duration::from_micros(a.recv_spin);
    setup.server = setup.server.recv_spin(spin);
    setup.client = setup.client.recv_spin(spin);
    setup
        .child_args
        .extend(["--recv-spin".into(), a.recv_spin.to_string().into()]);
    let ctx = Ctx {
        mode: a.mode,
        size: a.size,
        count: a.count.unwrap_or(a.mode.default_count()),
        connections: a.connections,
        lingering: a.lingering,
        duration: Duration::from_secs(a.duration.max(1)),
        durable: a.durable,
        postgres: a.state.clone(),
        recv_spin_us: a.recv_spin,
        setup,
        ui: Ui {
            hidden: a.json || !std::io::stderr().is_terminal(),
        },
    };
    if ctx.count == 0 && ctx.mode != Mode::Connections {
        return fail("--count must be at least 1");
    }
    if ctx.durable && ctx.mode != Mode::Throughput {
        return fail("--durable applies to the throughput mode only");
    }
    let mut runs = Vec::new();
    for run in 0..a.runs {
        if a.runs > 1 {
            ctx.ui.note(&format!("run {} of {}", run + 1, a.runs));
        }
        let r = match ctx.mode {
            Mode::Throughput => throughput::run(&ctx).await,
            Mode::Latency => latency::run(&ctx).await,
            // Memory is measured in a fresh process each run: memory freed by one run and
            // reused by the next would hide the next one's growth.
            Mode::Connections if a.runs > 1 => run_in_child().await,
            Mode::Connections => connections::run(&ctx).await,
            Mode::Cuts => cuts::run(&ctx).await,
        };
        match r {
            Ok(f) => {
                if a.runs > 1 && !a.json {
                    eprintln!("  {}", summary_line(ctx.mode, &f));
                }
                runs.push(f);
            }
            Err(e) => return fail(e),
        }
    }
    let f = Figures::median(&runs);
    if a.json {
        println!("{}", json_line(&ctx, a.runs, &f));
    } else {
        print_human(&ctx, a.runs, &f);
    }
    if f.lost != 0 || f.duplicated != 0 {
        eprintln!(
            "FAILED: steadfast lost {} and duplicated {} messages",
            f.lost, f.duplicated
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// One run in a child process (`bench` again with `--runs 1 --json`), its figures read back.
async fn run_in_child() -> Result<Figures, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut args: Vec<std::ffi::OsString> = Vec::new();
    let mut skip = false;
    for a in std::env::args_os().skip(1) {
        if std::mem::take(&mut skip) {
            continue;
        }
        let s = a.to_string_lossy();
        if s == "--runs" {
            skip = true;
            continue;
        }
        if s.starts_with("--runs=") || s == "--json" {
            continue;
        }
        args.push(a);
    }
    let out = tokio::process::Command::new(exe)
        .args(args)
        .args(["--runs", "1", "--json"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot start a bench process: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last)
        .map_err(|_| format!("a bench process failed ({})", out.status))?;
    let serde_json::Value::Object(o) = v else {
        return Err("a bench process printed no JSON object".into());
    };
    let mut f = Figures::default();
    for (k, v) in &o {
        let Some(x) = v.as_f64() else { continue };
        match k.as_str() {
            "lost" => f.lost = x as u64,
            "duplicated" => f.duplicated = x as u64,
            "size" | "count" | "runs" | "ratio" => {}
            _ => {
                // Field names are static in this program: find ours.
                if let Some(key) = JSON_FIELDS.iter().chain(EXTRA_FIELDS).find(|f| **f == k) {
                    f.set(key, x);
                }
            }
        }
    }
    Ok(f)
}

/// Fields some modes add besides [`JSON_FIELDS`].
const EXTRA_FIELDS: &[&str] = &[
    "load_connections",
    "duration_secs",
    "server_rss_bytes",
    "raw_rtt_p90_us",
    "raw_rtt_p999_us",
    "raw_rtt_max_us",
    "recovery_resent",
    "commit_p50_us",
    "commit_p99_us",
];

fn json_line(ctx: &Ctx, runs: usize, f: &Figures) -> String {
    let mut o = serde_json::Map::new();
    o.insert("mode".into(), ctx.mode.name().into());
    o.insert("size".into(), ctx.size.into());
    let count = match ctx.mode {
        Mode::Connections => serde_json::Value::Null,
        _ => ctx.count.into(),
    };
    o.insert("count".into(), count);
    o.insert("runs".into(), runs.into());
    o.insert("tls".into(), ctx.setup.tls.into());
    o.insert("recv_spin_us".into(), ctx.recv_spin_us.into());
    if ctx.mode == Mode::Throughput {
        // Which API gave `msgs_per_sec`: the one with the higher median.
        let api = match (f.get("send_msgs_per_sec"), f.get("send_all_msgs_per_sec")) {
            (Some(s), Some(b)) if b > s => "send_all",
            _ => "send",
        };
        o.insert("api".into(), api.into());
        o.insert("durable".into(), ctx.durable.into());
    }
    for k in JSON_FIELDS {
        o.insert((*k).into(), json_number(k, f.get(k)));
    }
    for (k, v) in &f.values {
        if !o.contains_key(*k) {
            o.insert((*k).into(), json_number(k, Some(*v)));
        }
    }
    o.insert("ratio".into(), json_number("ratio", f.get("ratio_vs_raw")));
    o.insert("lost".into(), f.lost.into());
    o.insert("duplicated".into(), f.duplicated.into());
    serde_json::Value::Object(o).to_string()
}

/// Ratios with 3 decimals, counts per round trip with 2, times with 1, everything else whole.
fn json_number(key: &str, v: Option<f64>) -> serde_json::Value {
    let Some(v) = v.filter(|v| v.is_finite()) else {
        return serde_json::Value::Null;
    };
    if key.starts_with("ratio") {
        serde_json::json!((v * 1_000.0).round() / 1_000.0)
    } else if key.ends_with("_per_round_trip") {
        serde_json::json!((v * 100.0).round() / 100.0)
    } else if key.ends_with("_us") || key.ends_with("_ms") {
        serde_json::json!((v * 10.0).round() / 10.0)
    } else {
        serde_json::json!(v.round() as u64)
    }
}

fn summary_line(mode: Mode, f: &Figures) -> String {
    let g = |k: &str| f.get(k).unwrap_or(f64::NAN);
    match mode {
        Mode::Throughput => {
            let mut s = format!(
                "steadfast send {} msgs/s, send_all {} msgs/s, raw {} msgs/s, ratio {:.2}, \
                 peak RSS {} KiB",
                group(g("send_msgs_per_sec")),
                group(g("send_all_msgs_per_sec")),
                group(g("raw_msgs_per_sec")),
                g("ratio_vs_raw"),
                group(g("peak_rss_bytes") / 1024.0)
            );
            if f.get("durable_msgs_per_sec").is_some() {
                s.push_str(&format!(
                    ", durable {} msgs/s",
                    group(g("durable_msgs_per_sec"))
                ));
            }
            s
        }
        Mode::Latency => format!(
            "rtt p50 {:.1} us p99 {:.1} us, {:.2} switches/rt; raw p50 {:.1} us p99 {:.1} us, \
             {:.2} switches/rt",
            g("rtt_p50_us"),
            g("rtt_p99_us"),
            g("ctx_switches_per_round_trip"),
            g("raw_rtt_p50_us"),
            g("raw_rtt_p99_us"),
            g("raw_ctx_switches_per_round_trip")
        ),
        Mode::Connections => format!(
            "{} B/session, {} B/lingering session, {} round trips/s vs echo {}",
            group(g("rss_bytes_per_session")),
            group(g("rss_bytes_per_lingering_session")),
            group(g("round_trips_per_sec")),
            group(g("echo_round_trips_per_sec"))
        ),
        Mode::Cuts => format!(
            "with cuts {} msgs/s, clean {} msgs/s, ratio {:.2}, recovery {:.1} ms",
            group(g("msgs_per_sec")),
            group(g("clean_msgs_per_sec")),
            g("ratio_vs_raw"),
            g("recovery_ms")
        ),
    }
}

fn print_human(ctx: &Ctx, runs: usize, f: &Figures) {
    let g = |k: &str| f.get(k).unwrap_or(f64::NAN);
    let of = if runs > 1 {
        format!(" (median of {runs} runs)")
    } else {
        String::new()
    };
    let tls = if ctx.setup.tls { ", TLS" } else { "" };
    let row = |name: &str, value: String| println!("{name:<34}{value}");
    match ctx.mode {
        Mode::Throughput => {
            println!(
                "throughput: {} messages of {} bytes on one connection{tls}{of}",
                group(ctx.count as f64),
                ctx.size
            );
            row(
                "steadfast, acknowledged: send",
                format!("{} msgs/s", group(g("send_msgs_per_sec"))),
            );
            row(
                "steadfast, acknowledged: send_all",
                format!("{} msgs/s", group(g("send_all_msgs_per_sec"))),
            );
            row(
                "raw length-prefixed tokio TCP",
                format!("{} msgs/s", group(g("raw_msgs_per_sec"))),
            );
            row(
                "ratio (the better API / raw)",
                format!("{:.2}", g("ratio_vs_raw")),
            );
            if f.get("durable_msgs_per_sec").is_some() {
                row(
                    "durable stores (send_all)",
                    format!("{} msgs/s", group(g("durable_msgs_per_sec"))),
                );
                row(
                    "in memory (send_all)",
                    format!("{} msgs/s", group(g("memory_msgs_per_sec"))),
                );
                row(
                    "ratio (durable / in memory)",
                    format!("{:.2}", g("ratio_durable_vs_memory")),
                );
                row(
                    "store commit p50 / p99",
                    format!("{:.0} / {:.0} us", g("commit_p50_us"), g("commit_p99_us")),
                );
            }
            row(
                "peak RSS of this process",
                format!("{} KiB", group(g("peak_rss_bytes") / 1024.0)),
            );
        }
        Mode::Latency => {
            println!(
                "latency: {} round trips of {} bytes each way on one connection{tls}{of}",
                group(ctx.count as f64),
                ctx.size
            );
            println!(
                "{:<34}{:>10}{:>10}{:>10}{:>10}{:>10}",
                "round trip (us)", "p50", "p90", "p99", "p99.9", "max"
            );
            println!(
                "{:<34}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}",
                "steadfast",
                g("rtt_p50_us"),
                g("rtt_p90_us"),
                g("rtt_p99_us"),
                g("rtt_p999_us"),
                g("rtt_max_us")
            );
            println!(
                "{:<34}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}",
                "raw tokio TCP (TCP_NODELAY)",
                g("raw_rtt_p50_us"),
                g("raw_rtt_p90_us"),
                g("raw_rtt_p99_us"),
                g("raw_rtt_p999_us"),
                g("raw_rtt_max_us")
            );
            row(
                "ratio (p50, steadfast / raw)",
                format!("{:.2}", g("ratio_vs_raw")),
            );
            row(
                "context switches per round trip",
                format!(
                    "{:.2} (raw {:.2})",
                    g("ctx_switches_per_round_trip"),
                    g("raw_ctx_switches_per_round_trip")
                ),
            );
        }
        Mode::Connections => {
            println!(
                "connections: {} live sessions, {} lingering, {} s of load{tls}{of}",
                group(ctx.connections as f64),
                group(ctx.lingering as f64),
                ctx.duration.as_secs()
            );
            row(
                "server RSS per live session",
                format!("{} bytes", group(g("rss_bytes_per_session"))),
            );
            row(
                "server RSS per lingering session",
                format!("{} bytes", group(g("rss_bytes_per_lingering_session"))),
            );
            row(
                "round trips",
                format!(
                    "{}/s over {} connections",
                    group(g("round_trips_per_sec")),
                    group(g("load_connections"))
                ),
            );
            row(
                "tokio echo server",
                format!(
                    "{}/s over {} connections",
                    group(g("echo_round_trips_per_sec")),
                    group(g("load_connections"))
                ),
            );
            row("ratio", format!("{:.2}", g("ratio_vs_raw")));
        }
        Mode::Cuts => {
            println!(
                "cuts: {} messages of {} bytes, the link cut every 100 ms{tls}{of}",
                group(ctx.count as f64),
                ctx.size
            );
            row(
                "acknowledged, with cuts",
                format!(
                    "{} msgs/s ({} cuts survived)",
                    group(g("msgs_per_sec")),
                    group(g("cuts"))
                ),
            );
            row(
                "acknowledged, clean (same proxy)",
                format!("{} msgs/s", group(g("clean_msgs_per_sec"))),
            );
            row("ratio", format!("{:.2}", g("ratio_vs_raw")));
            row(
                "recovery after an outage",
                format!(
                    "{:.1} ms to the first resent message (reconnect delay + 2 RTT: {:.1} ms)",
                    g("recovery_ms"),
                    g("recovery_bound_ms")
                ),
            );
        }
    }
    row("lost", f.lost.to_string());
    row("duplicated", f.duplicated.to_string());
    for n in &f.notes {
        print!("\n{n}");
    }
}

/// What a receiver saw of the counters `0, 1, 2, …` in its messages.
#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    /// The next counter expected (one past the highest seen).
    next: u64,
    /// Counters seen again or out of order (below `next`).
    duplicated: u64,
    /// Counters jumped over.
    skipped: u64,
    /// Messages too short to carry a counter.
    malformed: u64,
}

impl Tally {
    fn take(&mut self, body: &[u8]) {
        let Some(i) = counter(body) else {
            self.malformed += 1;
            return;
        };
        if i < self.next {
            self.duplicated += 1;
        } else {
            self.skipped += i - self.next;
            self.next = i + 1;
        }
    }

    /// Messages lost, given how many were sent.
    fn lost(&self, sent: u64) -> u64 {
        self.skipped + sent.saturating_sub(self.next) + self.malformed
    }
}

/// The counter in a message's first 8 bytes.
fn counter(body: &[u8]) -> Option<u64> {
    let b: [u8; 8] = body.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Message bodies carrying their counter, cut from a shared buffer (one allocation per
/// thousand messages, not per message).
struct Bodies {
    arena: BytesMut,
    size: usize,
}

impl Bodies {
    fn new(size: usize) -> Bodies {
        Bodies {
            arena: BytesMut::new(),
            size,
        }
    }

    fn next(&mut self, i: u64) -> Bytes {
        if self.arena.capacity() < self.size {
            self.arena.reserve(self.size * 1_024);
        }
        self.arena.put_u64(i);
        self.arena.put_bytes(0x2a, self.size - 8);
        self.arena.split().freeze()
    }
}

/// A steadfast server (events drained in the background; dropping the handle stops it), a
/// client connected to `target` (the server itself unless a proxy sits between), and the
/// server's handle of the session.
struct Pair {
    client: Client,
    server_peer: Peer,
    _server: tokio::task::JoinHandle<()>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self._server.abort();
    }
}

/// Binds a server with `config` on 127.0.0.1, port 0.
async fn bind(config: ServerConfig) -> Result<Server, String> {
    Server::bind(["127.0.0.1:0"], config)
        .await
        .map_err(|e| format!("cannot start the server: {e}"))
}

/// Connects a client (to `target`, or to the server directly) and waits for the server's
/// side of the session; the server's events are then drained in the background.
async fn pair(
    server: Server,
    target: Option<std::net::SocketAddr>,
    config: ClientConfig,
) -> Result<Pair, String> {
    let addr = target.unwrap_or(server.local_addrs()[0]);
    let client = Client::connect(addr.to_string(), config)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let server_peer = loop {
        match tokio::time::timeout(Duration::from_secs(10), server.next_event()).await {
            Ok(Some(ServerEvent::Connected { peer })) => break peer,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return Err("the server saw no client".into()),
        }
    };
    let drain = tokio::spawn(async move { while server.next_event().await.is_some() {} });
    Ok(Pair {
        client,
        server_peer,
        _server: drain,
    })
}

/// Takes messages from `peer` into a tally (advancing `bar`, calling `on_arrival` when a
/// message arrives after a wait) until `done` turns true and nothing is waiting.
async fn receive(
    peer: Peer,
    bar: ProgressBar,
    mut done: watch::Receiver<bool>,
    mut on_arrival: impl FnMut(),
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let first = tokio::select! {
            biased;
            m = peer.recv() => match m {
                Ok(m) => Some(m),
                Err(RecvError::Ended) => break,
                Err(_) => None,
            },
            _ = done.wait_for(|d| *d) => break,
        };
        on_arrival();
        match first {
            Some(m) => tally.take(&m.body),
            None => tally.malformed += 1,
        }
        let more = take_waiting(&peer, &mut tally);
        bar.inc(1 + more);
    }
    while take_waiting(&peer, &mut tally) > 0 {}
    tally
}

/// Takes what is waiting (up to 4,096 messages) into the tally; how many were taken.
fn take_waiting(peer: &Peer, tally: &mut Tally) -> u64 {
    match peer.recv_up_to(4_096) {
        Ok(batch) => {
            for m in &batch {
                tally.take(&m.body);
            }
            batch.len() as u64
        }
        // A body that did not decode through the session's transforms: not what was sent.
        Err(_) => {
            tally.malformed += 1;
            1
        }
    }
}

/// Sends `n` counted messages through `peer` and waits for the last receipt (receipts are
/// cumulative: then every message was taken by the receiving application). Returns the time
/// from the first send to that receipt.
async fn send_acknowledged(peer: &Peer, n: u64, size: usize) -> Result<Duration, String> {
    let mut bodies = Bodies::new(size);
    let start = std::time::Instant::now();
    let mut last = None;
    for i in 0..n {
        let r = peer
            .send(bodies.next(i))
            .await
            .map_err(|e| format!("send failed: {e}"))?;
        last = Some(r);
    }
    if let Some(r) = last {
        r.await.map_err(|e| format!("receipt failed: {e}"))?;
    }
    Ok(start.elapsed())
}

/// Messages per `Peer::send_all` call (as in the library's throughput bench).
const SEND_ALL_RUN: u64 = 1_024;

/// Sends `n` counted messages through `peer` with `Peer::send_all`, in runs of
/// [`SEND_ALL_RUN`] bodies made before the call, and waits for the last receipt. Returns the
/// time from the first send to that receipt.
async fn send_all_acknowledged(peer: &Peer, n: u64, size: usize) -> Result<Duration, String> {
    let mut bodies = Bodies::new(size);
    let mut run: Vec<Bytes> = Vec::with_capacity(SEND_ALL_RUN as usize);
    let start = std::time::Instant::now();
    let mut last = None;
    let mut i = 0;
    while i < n {
        let end = n.min(i + SEND_ALL_RUN);
        run.extend((i..end).map(|j| bodies.next(j)));
        let r = peer
            .send_all(run.drain(..))
            .await
            .map_err(|e| format!("send_all failed: {e}"))?;
        last = r.or(last);
        i = end;
    }
    if let Some(r) = last {
        r.await.map_err(|e| format!("receipt failed: {e}"))?;
    }
    Ok(start.elapsed())
}

/// How the sending side hands messages to steadfast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Api {
    /// `Peer::send`, one message per call.
    Send,
    /// `Peer::send_all`, runs of [`SEND_ALL_RUN`] messages per call.
    SendAll,
}

/// A one-way acknowledged transfer of `n` messages, one `send` each: the time, and what the
/// receiver saw.
async fn transfer(
    pair: &Pair,
    n: u64,
    size: usize,
    bar: ProgressBar,
) -> Result<(Duration, Tally), String> {
    transfer_with(pair, n, size, bar, Api::Send).await
}

/// A one-way acknowledged transfer of `n` messages sent through `api`.
async fn transfer_with(
    pair: &Pair,
    n: u64,
    size: usize,
    bar: ProgressBar,
    api: Api,
) -> Result<(Duration, Tally), String> {
    let (done_tx, done_rx) = watch::channel(false);
    let receiver = tokio::spawn(receive(pair.server_peer.clone(), bar, done_rx, || {}));
    let sent = match api {
        Api::Send => send_acknowledged(pair.client.peer(), n, size).await,
        Api::SendAll => send_all_acknowledged(pair.client.peer(), n, size).await,
    };
    let _ = done_tx.send(true);
    let tally = tokio::time::timeout(Duration::from_secs(10), receiver)
        .await
        .map_err(|_| "the receiver did not finish".to_string())?
        .map_err(|e| format!("the receiver failed: {e}"))?;
    Ok((sent?, tally))
}

/// A one-way acknowledged transfer of `n` messages from the server's side of the session to
/// the client, sent with `send_all`.
async fn transfer_to_client(
    pair: &Pair,
    n: u64,
    size: usize,
    bar: ProgressBar,
) -> Result<(Duration, Tally), String> {
    let (done_tx, done_rx) = watch::channel(false);
    let receiver = tokio::spawn(receive(pair.client.peer().clone(), bar, done_rx, || {}));
    let sent = send_all_acknowledged(&pair.server_peer, n, size).await;
    let _ = done_tx.send(true);
    let tally = tokio::time::timeout(Duration::from_secs(10), receiver)
        .await
        .map_err(|_| "the receiver did not finish".to_string())?
        .map_err(|e| format!("the receiver failed: {e}"))?;
    Ok((sent?, tally))
}

/// Percentile `q` (0..=1) of sorted samples.
pub(super) fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Context switches of this process so far, voluntary and involuntary, summed over its
/// threads (`/proc/self/task/*/status`; `None` where that is not readable).
fn context_switches() -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let Ok(status) = std::fs::read_to_string(task.ok()?.path().join("status")) else {
            continue; // the thread exited meanwhile
        };
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().ok()?;
            }
        }
    }
    Some(total)
}

/// This process's peak resident set size (`VmHWM` in `/proc/self/status`), in bytes; `None`
/// where there is no such file. Per process: compare runs of separate processes.
fn peak_rss_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// 1234567.8 → "1,234,568".
fn group(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let s = (v.round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
