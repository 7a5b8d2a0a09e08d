//! `steadfast bench`: every mode with tiny parameters exits 0 and ends its stdout with one
//! JSON object holding the mode's figures and zero losses and duplicates; bad parameters fail
//! with a message, not a panic. No timing is asserted.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");

/// Runs `steadfast bench ARGS`, killing it after 60 s: exit status, stdout, stderr.
fn bench(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(BIN)
        .arg("bench")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        let _ = tx.send((true, s));
    });
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        let _ = tx2.send((false, s));
    });
    let (mut stdout, mut stderr) = (None, None);
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((true, s)) => stdout = Some(s),
            Ok((false, s)) => stderr = Some(s),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("steadfast bench {args:?} did not finish within 60 s");
            }
        }
    }
    let status = child.wait().unwrap();
    (status, stdout.unwrap(), stderr.unwrap())
}

/// Runs a bench with `--json`, checks exit 0 and the common fields, returns the object.
fn bench_json(mode: &str, args: &[&str]) -> Value {
    let mut all = vec![mode, "--json"];
    all.extend_from_slice(args);
    let (status, out, err) = bench(&all);
    assert!(
        status.success(),
        "exit {status}; stderr:\n{err}\nstdout:\n{out}"
    );
    let last = out.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last:?}"));
    assert_eq!(v["mode"], mode);
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicated"], 0, "{v}");
    for field in [
        "size",
        "count",
        "msgs_per_sec",
        "raw_msgs_per_sec",
        "ratio_vs_raw",
        "rtt_p50_us",
        "rtt_p99_us",
        "raw_rtt_p50_us",
        "connections",
        "rss_bytes_per_session",
        "lingering_sessions",
        "rss_bytes_per_lingering_session",
        "round_trips_per_sec",
    ] {
        assert!(v.get(field).is_some(), "field {field} missing: {v}");
    }
    v
}

fn number(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number: {v}"))
}

#[test]
fn throughput_reports_both_rates_and_no_loss() {
    let v = bench_json("throughput", &["--count", "2000", "--size", "32"]);
    assert_eq!(v["count"], 2000);
    assert_eq!(v["size"], 32);
    let send = number(&v, "send_msgs_per_sec");
    let send_all = number(&v, "send_all_msgs_per_sec");
    assert!(send > 0.0 && send_all > 0.0, "{v}");
    // msgs_per_sec is the better of the two APIs, and `api` names it.
    assert_eq!(number(&v, "msgs_per_sec"), send.max(send_all), "{v}");
    let api = if send_all > send { "send_all" } else { "send" };
    assert_eq!(v["api"], api, "{v}");
    assert!(number(&v, "raw_msgs_per_sec") > 0.0);
    assert!(number(&v, "ratio_vs_raw") > 0.0);
    assert!(number(&v, "peak_rss_bytes") > 0.0, "{v}");
    assert_eq!(v["durable"], false);
    assert!(v["durable_msgs_per_sec"].is_null(), "{v}");
    assert!(
        v["rtt_p50_us"].is_null(),
        "throughput measures no round trips: {v}"
    );
    assert!(v["connections"].is_null());
}

#[test]
fn throughput_at_one_kib() {
    let v = bench_json("throughput", &["--count", "1000", "--size", "1024"]);
    assert_eq!(v["size"], 1024);
    assert!(number(&v, "send_msgs_per_sec") > 0.0, "{v}");
    assert!(number(&v, "send_all_msgs_per_sec") > 0.0, "{v}");
}

#[test]
fn durable_throughput_next_to_in_memory() {
    let before = state_dirs();
    let v = bench_json("throughput", &["--count", "1000", "--durable"]);
    assert_eq!(v["durable"], true);
    assert!(number(&v, "durable_msgs_per_sec") > 0.0, "{v}");
    assert_eq!(
        number(&v, "memory_msgs_per_sec"),
        number(&v, "send_all_msgs_per_sec"),
        "{v}"
    );
    assert!(number(&v, "ratio_durable_vs_memory") > 0.0, "{v}");
    assert!(number(&v, "msgs_per_sec") > 0.0, "{v}");
    // The temporary state directories are gone.
    let after = state_dirs();
    assert!(
        after.iter().all(|d| before.contains(d)),
        "left behind: {after:?}"
    );

    let (status, _, err) = bench(&["latency", "--durable", "--count", "10"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("--durable"), "{err}");
}

/// The bench's state directories in the temporary directory now.
fn state_dirs() -> Vec<std::path::PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("steadfast-bench-"))
        })
        .collect()
}

#[test]
fn latency_reports_ordered_percentiles() {
    let v = bench_json("latency", &["--count", "500"]);
    let p50 = number(&v, "rtt_p50_us");
    let p90 = number(&v, "rtt_p90_us");
    let p99 = number(&v, "rtt_p99_us");
    let p999 = number(&v, "rtt_p999_us");
    let max = number(&v, "rtt_max_us");
    assert!(
        0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{v}"
    );
    assert!(number(&v, "raw_rtt_p50_us") > 0.0);
    assert!(number(&v, "raw_rtt_p99_us") >= number(&v, "raw_rtt_p50_us"));
    assert!(v["msgs_per_sec"].is_null());
}

#[test]
fn latency_prints_a_histogram() {
    let (status, out, err) = bench(&["latency", "--count", "300"]);
    assert!(status.success(), "{err}");
    assert!(out.contains("p99.9"), "{out}");
    assert!(out.contains(" us "), "no histogram rows: {out}");
    assert!(out.contains("lost                              0"), "{out}");
}

#[test]
fn cuts_survive_and_recover() {
    let v = bench_json("cuts", &["--count", "2000"]);
    assert!(number(&v, "msgs_per_sec") > 0.0);
    assert!(number(&v, "clean_msgs_per_sec") > 0.0);
    assert!(number(&v, "ratio_vs_raw") > 0.0);
    assert!(number(&v, "recovery_ms") >= 0.0);
    assert!(number(&v, "recovery_bound_ms") > 0.0);
    assert!(v["cuts"].is_u64(), "{v}");
}

#[test]
fn connections_measure_memory_and_round_trips() {
    let v = bench_json(
        "connections",
        &[
            "--connections",
            "50",
            "--lingering",
            "50",
            "--duration",
            "1",
        ],
    );
    assert_eq!(v["connections"], 50);
    assert_eq!(v["lingering_sessions"], 50);
    assert!(v["count"].is_null());
    assert!(number(&v, "rss_bytes_per_session") >= 0.0);
    assert!(number(&v, "rss_bytes_per_lingering_session") >= 0.0);
    assert!(number(&v, "round_trips_per_sec") > 0.0);
    assert!(number(&v, "echo_round_trips_per_sec") > 0.0);
    assert!(number(&v, "ratio") > 0.0);
}

#[test]
fn connections_runs_each_in_a_fresh_process() {
    let v = bench_json(
        "connections",
        &[
            "--connections",
            "20",
            "--lingering",
            "20",
            "--duration",
            "1",
            "--runs",
            "2",
        ],
    );
    assert_eq!(v["runs"], 2);
    assert_eq!(v["connections"], 20);
    assert!(number(&v, "round_trips_per_sec") > 0.0);
    assert!(number(&v, "rss_bytes_per_lingering_session") >= 0.0);
}

#[test]
fn tls_dev_runs_over_tls() {
    let v = bench_json("throughput", &["--count", "1000", "--tls-dev"]);
    assert_eq!(v["tls"], true);
    assert!(number(&v, "msgs_per_sec") > 0.0);
    let v = bench_json(
        "connections",
        &[
            "--connections",
            "20",
            "--lingering",
            "10",
            "--duration",
            "1",
            "--tls-dev",
        ],
    );
    assert_eq!(v["tls"], true);
    assert!(number(&v, "round_trips_per_sec") > 0.0);
}

#[test]
fn runs_report_the_median() {
    let v = bench_json("throughput", &["--count", "1000", "--runs", "3"]);
    assert_eq!(v["runs"], 3);
    assert!(number(&v, "msgs_per_sec") > 0.0);
}

#[test]
fn impossible_parameters_fail_with_a_message() {
    let (status, _, err) = bench(&["throughput", "--size", "4"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("--size"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Beyond the per-process open-file limit of the server process.
    let (status, _, err) = bench(&["connections", "--connections", "5000000"]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("open files"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
