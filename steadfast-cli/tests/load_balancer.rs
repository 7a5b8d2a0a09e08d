//! `serve --proxy-protocol` behind a real HAProxy (Debian's package; `.ci/run` installs it):
//! HAProxy listens on 127.0.0.2 and forwards to `serve` on 127.0.0.1 from the source address
//! 127.0.0.3, with `send-proxy-v2` or `send-proxy`; `serve` must name the client's address
//! (127.0.0.1) rather than HAProxy's (127.0.0.3), and print every line.

#![allow(clippy::unwrap_used)]

mod support;
use support::proc::{Proc, addr_after, all_of_stdout, exit_status, run_with_input, spawn};
use support::{TempDir, haproxy};

/// A port free on 127.0.0.2 now (HAProxy's configuration needs a number).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
    l.local_addr().unwrap().port()
}

fn through_haproxy(option: &str) {
    let dir = TempDir::new(&format!("haproxy-{option}"));
    let mut serve: Proc = spawn(&["serve", "--listen", "127.0.0.1:0", "--proxy-protocol"]);
    let addr = addr_after(&serve.wait_for("listening on"), "listening on ");
    let front = format!("127.0.0.2:{}", free_port());
    let _balancer = haproxy::start(
        &dir,
        &front,
        &format!("  server s1 {addr} {option} source 127.0.0.3\n"),
    );
    let out = run_with_input(&["send", &front], b"one\ntwo\nthree\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The session is the client's: its address is the one the client connected from.
    let connected = serve.wait_for("connected:");
    assert!(
        connected.contains("from 127.0.0.1:"),
        "{option}: {connected}"
    );
    serve.terminate();
    exit_status(&mut serve);
    assert_eq!(all_of_stdout(&mut serve), "one\ntwo\nthree\n");
}

#[test]
fn serve_behind_haproxy_with_send_proxy_v2_sees_the_client() {
    through_haproxy("send-proxy-v2");
}

#[test]
fn serve_behind_haproxy_with_send_proxy_v1_sees_the_client() {
    through_haproxy("send-proxy");
}
