//! `serve --metrics`: the Prometheus text read by a real parser (Python's `prometheus_client`)
//! after known traffic, with exact counts, and the session list as JSON.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

mod support;
use support::proc::{addr_after, run_with_input, spawn};

/// GET `path` from `addr`: the body.
fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// Every sample of a Prometheus text, as `name{labels}` → value, read by `prometheus_client`.
fn parse(text: &str) -> HashMap<String, f64> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[s.name + ("{" + labels + "}" if labels else "")] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with prometheus_client (CI installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the parser refused the text:\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn metrics_count_known_traffic_exactly_and_sessions_are_listed() {
    let serve = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics_line = serve.wait_for("metrics on http://");
    let web = addr_after(&metrics_line, "metrics on http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let addr = addr_after(&serve.wait_for("listening on"), "listening on ");
    // Before any traffic every counter is there, at zero.
    let m = parse(&get(&web, "/metrics"));
    assert_eq!(m["steadfast_messages_received_total"], 0.0, "{m:?}");
    // 100 messages from one session.
    let lines: String = (0..100).map(|i| format!("line {i}\n")).collect();
    let sent = run_with_input(&["send", &addr], lines.as_bytes());
    assert!(sent.status.success());
    // One refused handshake.
    let mut bad = TcpStream::connect(&addr).unwrap();
    bad.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = bad.read_to_end(&mut Vec::new());
    serve.wait_for("refused handshake");
    // One session held open, by name.
    let mut watcher = spawn(&["connect", &addr, "--name", "watcher"]);
    serve.wait_for("\"watcher\"");
    let m = parse(&get(&web, "/metrics"));
    let at = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in {m:?}"));
    assert_eq!(at("steadfast_messages_received_total"), 100.0);
    assert_eq!(at("steadfast_connections_total"), 2.0);
    assert_eq!(at("steadfast_resumes_total"), 0.0);
    assert_eq!(
        at("steadfast_handshakes_refused_total{reason=\"protocol_violation\"}"),
        1.0
    );
    assert_eq!(at("steadfast_sessions{state=\"live\"}"), 1.0);
    assert_eq!(at("steadfast_sessions{state=\"lingering\"}"), 0.0);
    assert_eq!(at("steadfast_messages_sent_total"), 0.0);
    assert!(at("steadfast_bytes_received_total") > 100.0 * 7.0);
    assert!(at("steadfast_bytes_sent_total") > 0.0);
    let sessions: serde_json::Value = serde_json::from_str(&get(&web, "/sessions")).unwrap();
    let list = sessions.as_array().unwrap();
    assert_eq!(list.len(), 1, "{sessions}");
    assert_eq!(list[0]["name"], "watcher");
    assert_eq!(list[0]["state"], "live");
    assert!(
        list[0]["connected_secs"].as_f64().unwrap() >= 0.0,
        "{sessions}"
    );
    assert!(list[0]["lingering_secs"].is_null(), "{sessions}");
    assert!(
        list[0]["id"].is_string() && list[0]["addr"].is_string(),
        "{sessions}"
    );
    drop(watcher.child.stdin.take());
    let _ = watcher.child.wait();
}
