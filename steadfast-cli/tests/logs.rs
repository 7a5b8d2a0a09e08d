//! `serve`'s log: timestamped lines, `RUST_LOG` (and `STEADFAST_LOG`) honoured, JSON on
//! request, every refused handshake logged once with its reason and address, at a bounded rate.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod support;
use support::proc::{Proc, addr_after, run_with_input, spawn, spawn_with_env};

/// Whether a line starts with an RFC 3339 timestamp (`2026-12-03T16:57:18.123456Z`).
fn timestamped(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[10] == b'T'
}

/// Opens a connection, sends what no steadfast client would, reads to the end: its local
/// address (the source address the server sees).
fn refused_once(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    let local = s.local_addr().unwrap().to_string();
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    local
}

fn start(env: &[(&str, &str)], extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let serve = spawn_with_env(&args, env);
    let line = serve.wait_for("listening on");
    // The address ends where the text (or the JSON string) does.
    let addr: String = addr_after(&line, "listening on ")
        .chars()
        .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (serve, addr)
}

#[test]
fn lines_are_timestamped_and_a_refused_handshake_is_logged_once() {
    let (serve, addr) = start(&[], &[]);
    let from = refused_once(&addr);
    let line = serve.wait_for("refused handshake");
    assert!(timestamped(&line), "{line}");
    assert!(line.contains(&from), "the source address is named: {line}");
    assert!(
        line.contains("ProtocolError") && line.contains("not a steadfast peer"),
        "the reason is given: {line}"
    );
    // A session's lifecycle lines carry timestamps too.
    let mut client = spawn(&["connect", &addr]);
    let connected = serve.wait_for("connected:");
    assert!(timestamped(&connected), "{connected}");
    drop(client.child.stdin.take());
    let _ = client.child.wait();
    // Exactly one line for that refusal.
    let again: Vec<String> = serve.stderr.try_iter().collect();
    assert!(!again.iter().any(|l| l.contains(&from)), "{again:?}");
}

#[test]
fn a_flood_of_refusals_cannot_flood_the_log() {
    let (serve, addr) = start(&[], &[]);
    let start = Instant::now();
    let flood = 300u64;
    for _ in 0..flood {
        refused_once(&addr);
    }
    // Refusals go on, one at a time, until the server reports the ones it left out.
    let mut logged = 0u64;
    let mut sent = flood;
    let summary = loop {
        assert!(start.elapsed() < Duration::from_secs(30), "no summary line");
        refused_once(&addr);
        sent += 1;
        let mut found = None;
        for l in serve.stderr.try_iter() {
            if l.contains("refused handshake from") {
                logged += 1;
            }
            if l.contains("more refused handshakes were not logged") {
                found = Some(l);
            }
        }
        if let Some(l) = found {
            break l;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let windows = start.elapsed().as_secs() + 2;
    assert!(
        logged <= 20 * windows,
        "{logged} refusal lines in under {windows} s: not rate-limited"
    );
    let left_out: u64 = summary
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap();
    assert!(left_out > 0 && logged + left_out <= sent, "{summary}");
}

#[test]
fn rust_log_and_json_are_honoured() {
    // RUST_LOG=warn hides the info lines (but not where the server listens). The console's
    // answer to /list, written after the refusal was handled, marks where its line would be.
    let (mut serve, addr) = start(&[("RUST_LOG", "warn")], &["--console"]);
    refused_once(&addr);
    let mut console = serve.child.stdin.take().unwrap();
    console.write_all(b"/list\n").unwrap();
    console.flush().unwrap();
    let mut before = Vec::new();
    loop {
        let l = serve.stderr.recv_timeout(Duration::from_secs(20)).unwrap();
        if l.contains("0 sessions") {
            break;
        }
        before.push(l);
    }
    assert!(
        !before.iter().any(|l| l.contains("refused handshake")),
        "{before:?}"
    );
    drop(console);
    drop(serve);
    // STEADFAST_LOG still works, as an alias; debug shows the library's debug lines.
    let (serve, addr) = start(&[("STEADFAST_LOG", "debug")], &[]);
    let sent = run_with_input(&["send", &addr], b"x\n");
    assert!(sent.status.success());
    serve.wait_for("DEBUG");
    drop(serve);
    // JSON: one object per line.
    let (serve, addr) = start(&[], &["--log-format", "json"]);
    let from = refused_once(&addr);
    let line = serve.wait_for(&from);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["level"], "INFO", "{line}");
    assert!(v["timestamp"].is_string(), "{line}");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("refused handshake"),
        "{line}"
    );
}
