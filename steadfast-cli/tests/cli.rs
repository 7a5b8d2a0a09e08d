//! The real `steadfast` binary, driven as a user would: serve and send through chaos with
//! cuts, exit codes, the demo. Loopback only; every process is killed at the end.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::TempDir;
use support::proc::{
    BIN, Proc, addr_after, all_of_stdout, exit_status, run_with_input, spawn, start_chaos,
};

fn run_send(addr: &str, input: &[u8], extra: &[&str]) -> (i32, String) {
    let mut args = vec!["send", addr];
    args.extend_from_slice(extra);
    let out = run_with_input(&args, input);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serve_and_send_through_chaos_keep_every_line_in_order() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    // Read the server's stdout as it comes (a full pipe would stop it, and so the sender).
    let mut stdout = serve.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let (chaos, proxy) = start_chaos(
        &server,
        &["--seed", "7", "--min-bytes", "2000", "--max-bytes", "30000"],
    );
    let n = 20_000;
    let input: String = (0..n).map(|i| format!("line {i} of the input\n")).collect();
    let (code, err) = run_send(&proxy, input.as_bytes(), &["--timeout", "120"]);
    assert_eq!(code, 0, "send failed: {err}");
    assert!(
        err.contains("20,000 messages sent, 20,000 acknowledged"),
        "{err}"
    );
    // Every acknowledged line is on the server's stdout once it stops.
    serve.terminate();
    let status = serve.child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(status.success(), "serve exited {status:?}");
    assert_eq!(out, input, "lines out differ from lines in");
    // The proxy really cut the link, more than once, and the sender said so.
    drop(chaos);
    let reconnects = err.matches("reconnecting").count();
    assert!(reconnects > 1, "no cut seen by the sender: {err}");
}

#[test]
fn send_exit_codes() {
    // Unreachable with a timeout: a clear error and a non-zero status.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let (code, err) = run_send(&dead, b"x\n", &["--timeout", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach"), "{err}");
    // Bad address syntax.
    let (code, err) = run_send("not an address", b"x\n", &["--timeout", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("error: invalid address"), "{err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line, no retries: {err}"
    );
    // Empty input is trivially acknowledged.
    let serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let (code, err) = run_send(&server, b"", &["--timeout", "5"]);
    assert_eq!(code, 0, "{err}");
    // A link that stalls for good: --timeout expires with status 3 and says how far it got.
    let (chaos, proxy) = start_chaos(
        &server,
        &[
            "--min-bytes",
            "300",
            "--max-bytes",
            "300",
            "--stall-per-mille",
            "1000",
            "--stall-secs",
            "60",
        ],
    );
    let input: String = (0..1_000).map(|i| format!("{i}\n")).collect();
    let (code, err) = run_send(&proxy, input.as_bytes(), &["--timeout", "2"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("timed out"), "{err}");
    drop(chaos);
    drop(serve);
}

#[test]
fn a_session_lost_to_a_server_restart_exits_4() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let serve = spawn(&["serve", "--listen", &addr]);
    serve.wait_for("listening on");
    let mut send = Command::new(BIN)
        .args(["send", &addr, "--timeout", "60"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = send.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    stdin.flush().unwrap();
    // Kill the server without a goodbye and start a fresh one with no state.
    std::thread::sleep(Duration::from_millis(300));
    drop(serve);
    let serve2 = spawn(&["serve", "--listen", &addr]);
    serve2.wait_for("listening on");
    stdin.write_all(b"second\n").unwrap();
    drop(stdin);
    let out = send.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("session lost"), "{err}");
}

#[test]
fn demo_with_a_small_count_reports_nothing_lost() {
    let out = Command::new(BIN)
        .args([
            "demo",
            "--messages",
            "50000",
            "--max-bytes",
            "65536",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("delivered exactly once, in order  50,000"),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("lost") && l.trim_end().ends_with(" 0")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("duplicated") && l.trim_end().ends_with(" 0")),
        "{stdout}"
    );
    let cuts: u64 = stdout
        .lines()
        .find(|l| l.starts_with("link cuts survived"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|s| s.replace(',', "").parse().ok())
        .unwrap();
    assert!(cuts > 0, "{stdout}");
}

#[test]
fn a_port_in_use_is_one_clear_line() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["serve", "--listen", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.starts_with("error: could not listen on"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn connect_console_and_operator_console() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0", "--console", "--echo"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let mut connect = Command::new(BIN)
        .args(["connect", &server, "--name", "carol"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut cin = connect.stdin.take().unwrap();
    let cout = connect.stdout.take().unwrap();
    let mut cout = BufReader::new(cout).lines();
    cin.write_all(b"hello there\n").unwrap();
    cin.flush().unwrap();
    // The server echoes it back.
    assert_eq!(cout.next().unwrap().unwrap(), "< hello there");
    serve.wait_for("connected:");
    // The operator lists, pings and messages the peer by name.
    let sin = serve.child.stdin.as_mut().unwrap();
    sin.write_all(b"/list\n/ping carol\n/send carol from the operator\n/stats\n")
        .unwrap();
    sin.flush().unwrap();
    serve.wait_for("\"carol\"");
    assert_eq!(cout.next().unwrap().unwrap(), "< from the operator");
    serve.wait_for("sessions 1 (live 1");
    cin.write_all(b"/status\n/quit\n").unwrap();
    drop(cin);
    let out = connect.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("connected session"), "{err}");
    assert!(err.contains("acknowledged"), "{err}");
    let sin = serve.child.stdin.as_mut().unwrap();
    sin.write_all(b"/quit\n").unwrap();
    sin.flush().unwrap();
    assert!(serve.child.wait().unwrap().success());
}

#[test]
fn send_compresses_with_either_algorithm_and_serve_decodes() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let mut stdout = serve.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    let mut expected = String::new();
    for algorithm in ["lz4", "zstd"] {
        let input: String = (0..500)
            .map(|i| format!("{algorithm} line {i} {}\n", "abc".repeat(50)))
            .collect();
        let (code, err) = run_send(
            &server,
            input.as_bytes(),
            &["--compress", algorithm, "--timeout", "60"],
        );
        assert_eq!(code, 0, "send --compress {algorithm} failed: {err}");
        assert!(err.contains("500 messages sent, 500 acknowledged"), "{err}");
        expected.push_str(&input);
    }
    serve.terminate();
    let status = serve.child.wait().unwrap();
    assert!(status.success(), "serve exited {status:?}");
    assert_eq!(reader.join().unwrap(), expected);
    // An unknown algorithm is a usage error, not a connection attempt.
    let (code, err) = run_send(&server, b"x\n", &["--compress", "gzip"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gzip"), "{err}");
}

/// A client that never reads what it is sent cannot freeze `serve --echo`: its echoes fill
/// its bounded echo queue, it is kicked (the log says how many echoes it never
/// acknowledged), a second client is served meanwhile, and SIGTERM still stops the server.
#[test]
fn serve_echo_kicks_a_peer_that_does_not_read_and_serves_the_others() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0", "--echo"]);
    let addr = addr_after(&serve.wait_for("listening on"), "listening on ");
    let mut stdout = serve.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        stdout.read_to_string(&mut out).unwrap();
        out
    });
    // `send` never reads: its receive window (8,192) and then its echo queue on the server
    // (the outbox, 16,384) fill up well before 50,000 lines.
    let hog_input: String = (0..50_000).map(|i| format!("hog {i}\n")).collect();
    let hog_addr = addr.clone();
    let hog =
        std::thread::spawn(move || run_send(&hog_addr, hog_input.as_bytes(), &["--timeout", "60"]));
    serve.wait_for("kicking");
    let ended = serve.wait_for("ended:");
    assert!(
        ended.contains("never acknowledged") && !ended.contains("(0 messages"),
        "the kicked peer's unacknowledged echoes are not reported: {ended}"
    );
    let input: String = (0..1_000).map(|i| format!("other {i}\n")).collect();
    let (code, err) = run_send(&addr, input.as_bytes(), &["--timeout", "30"]);
    assert_eq!(code, 0, "the second client was not served: {err}");
    let (hog_code, hog_err) = hog.join().unwrap();
    assert_eq!(
        hog_code, 4,
        "the kicked sender must report its session lost: {hog_err}"
    );
    serve.terminate();
    let start = std::time::Instant::now();
    let status = serve.child.wait().unwrap();
    let out = reader.join().unwrap();
    assert!(status.success(), "serve exited {status:?}");
    println!("serve stopped {:?} after SIGTERM", start.elapsed());
    let others: Vec<&str> = out.lines().filter(|l| l.starts_with("other ")).collect();
    let expected: Vec<String> = (0..1_000).map(|i| format!("other {i}")).collect();
    assert_eq!(
        others, expected,
        "the second client's lines, in order, once each"
    );
}

/// One line far larger than what a connection carries between two cuts, with
/// `--max-message` on both ends and `steadfast chaos` cutting every `cut_max` bytes at most:
/// it arrives intact, exactly once, and `send` reports what it had to transmit again.
fn one_large_line_through_chaos(size: usize, max_message: &str, cut_max: u64) {
    let mut serve = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--max-message",
        max_message,
    ]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let mut stdout = serve.child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).unwrap();
        out
    });
    let (mut chaos, proxy) = start_chaos(
        &server,
        &[
            "--seed",
            "5",
            "--min-bytes",
            &(cut_max / 4).to_string(),
            "--max-bytes",
            &cut_max.to_string(),
        ],
    );
    let mut line: Vec<u8> = (0..size).map(|i| b'a' + (i * 7 % 26) as u8).collect();
    line.push(b'\n');
    let (code, err) = run_send(
        &proxy,
        &line,
        &["--max-message", max_message, "--timeout", "600"],
    );
    assert_eq!(code, 0, "send failed: {err}");
    assert!(err.contains("1 message sent, 1 acknowledged"), "{err}");
    serve.terminate();
    assert!(serve.child.wait().unwrap().success());
    let out = reader.join().unwrap();
    assert_eq!(
        out.len(),
        line.len(),
        "the line arrived with another length"
    );
    assert!(out == line, "the line arrived altered");
    let _ = chaos.child.kill();
    let mut faults = String::new();
    chaos
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut faults)
        .unwrap();
    let cuts = faults.lines().filter(|l| l.starts_with("fault:")).count();
    println!("{size} bytes in one line through {cuts} cuts: {err}");
    assert!(cuts as u64 >= size as u64 / cut_max, "{faults}");
}

#[test]
fn a_line_larger_than_the_bytes_between_two_cuts_arrives_once() {
    one_large_line_through_chaos(24 << 20, "32MiB", 2 << 20);
}

/// The issue's figure: `cargo test --release -p steadfast-cli --test cli -- --ignored
/// --nocapture a_256_mib`.
#[test]
#[ignore = "256 MiB: run in release"]
fn a_256_mib_line_through_a_cut_every_4_mib_at_most_arrives_once() {
    one_large_line_through_chaos(256 << 20, "300MiB", 4 << 20);
}

#[test]
fn send_refuses_a_line_above_max_message_instead_of_skipping_it() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let input = format!("short\n{}\nafter\n", "x".repeat(2_000));
    let (code, err) = run_send(&server, input.as_bytes(), &["--max-message", "1KiB"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("input line 2 is 2000 bytes"), "{err}");
    serve.terminate();
}

/// Mistakes a user makes with addresses, TLS options and ports are refused at once with one
/// line that names the option or file and says what to do; nothing goes out in plaintext.
#[test]
fn mistakes_are_refused_at_once_saying_what_to_do() {
    let one_line = |code: i32, err: &str, needle: &str| {
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(needle), "{needle:?} not in {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "one line, no retries: {err}"
        );
    };
    // Addresses that are no HOST:PORT: refused before any attempt (--timeout gives the old
    // behaviour, retrying a DNS lookup of the URL, a bound).
    for (addr, why) in [
        ("http://127.0.0.1:7011", "a URL (http://)"),
        ("127.0.0.1", "no port"),
        ("127.0.0.1:99999", "is not a port"),
    ] {
        let (code, err) = run_send(addr, b"x\n", &["--timeout", "3"]);
        one_line(code, &err, why);
    }
    let dir = TempDir::new("mistakes");
    let d = dir.0.to_str().unwrap();
    let status = Command::new(BIN)
        .args(["cert", "--out", d, "--name", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (ca, cert, key) = (
        format!("{d}/ca.pem"),
        format!("{d}/client.pem"),
        format!("{d}/client.key"),
    );
    let serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let plain = addr_after(&serve.wait_for("listening on"), "listening on ");
    // TLS options without TLS would be ignored and the line sent in plaintext.
    let (code, err) = run_send(
        &plain,
        b"x\n",
        &["--tls-client-cert", &cert, "--tls-client-key", &key],
    );
    one_line(code, &err, "--tls-client-cert needs TLS: add --tls-ca FILE");
    let (code, err) = run_send(&plain, b"x\n", &["--tls-server-name", "example.org"]);
    one_line(code, &err, "--tls-server-name needs TLS");
    // A file that is no PEM certificate, or is missing, is named.
    let (code, err) = run_send(&plain, b"x\n", &["--tls-ca", &key]);
    one_line(code, &err, &format!("--tls-ca {key}: holds no certificate"));
    let (code, err) = run_send(&plain, b"x\n", &["--tls-ca", &format!("{d}/missing.pem")]);
    one_line(code, &err, "missing.pem: cannot read it");
    // TLS against a plain server.
    let (code, err) = run_send(&plain, b"x\n", &["--tls-ca", &ca, "--timeout", "5"]);
    one_line(code, &err, "the server does not speak TLS");
    // A token over plain TCP still goes, with a warning (a server may be behind a TLS proxy).
    let token = format!("{d}/token");
    std::fs::write(&token, "sesame\n").unwrap();
    let (code, err) = run_send(&plain, b"x\n", &["--token-file", &token, "--timeout", "5"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: --token-file without TLS"), "{err}");
    drop(serve);
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0", "--token-file", &token]);
    serve.wait_for("warning: --token-file without TLS");
    serve.terminate();
    drop(serve);
    // A server given a key where its certificate belongs names the file.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &key,
            "--tls-key",
            &key,
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    one_line(
        out.status.code().unwrap_or(-1),
        &err,
        &format!("--tls-cert {key}: holds no certificate"),
    );
    // Plain TCP against a TLS server, and against a server of another protocol.
    let tls = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        &format!("{d}/server.pem"),
        "--tls-key",
        &format!("{d}/server.key"),
    ]);
    let tls_addr = addr_after(&tls.wait_for("listening on"), "listening on ");
    let (code, err) = run_send(&tls_addr, b"x\n", &["--timeout", "5"]);
    one_line(code, &err, "the server speaks TLS: add --tls-ca FILE");
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    let answering = std::thread::spawn(move || {
        let (mut s, _) = http.accept().unwrap();
        let mut buf = [0u8; 256];
        let _ = s.read(&mut buf);
        s.write_all(b"HTTP/1.0 400 Bad Request\r\nServer: test\r\n\r\n")
            .unwrap();
    });
    let (code, err) = run_send(&http_addr, b"x\n", &["--timeout", "5"]);
    answering.join().unwrap();
    one_line(
        code,
        &err,
        "answered with text (\"HTTP/1.0 400 Bad Request\"…): not a steadfast server",
    );
    drop(tls);
}

/// `--timeout` covers the whole run: also the wait for room in the outbox when the server
/// stops taking messages (its stdout, a pipe nobody reads here, fills and it stalls).
#[test]
fn send_timeout_fires_while_waiting_for_room() {
    let serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let mut send = spawn(&["send", &server, "--timeout", "2"]);
    // More lines than the window (8,192) and than the pipe holds (64 KiB).
    let input: String = (0..50_000).map(|i| format!("line {i:08}\n")).collect();
    let mut stdin = send.child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    // Not a timing check: a bound on how long to wait before calling it stuck (the process
    // is killed when `send` is dropped).
    let mut status = None;
    for _ in 0..600 {
        status = send.child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = status.expect("send did not stop at its --timeout while the server stalled");
    assert_eq!(status.code(), Some(3));
    send.wait_for("error: timed out");
    drop(send);
    let _ = writer.join();
    drop(serve);
}

/// Reads `n` lines of a child's stdout, then closes it, as `| head -n` does.
fn head(p: &mut Proc, n: usize) -> Vec<String> {
    let out = p.child.stdout.take().unwrap();
    BufReader::new(out)
        .lines()
        .take(n)
        .map(Result::unwrap)
        .collect()
}

/// `serve | head -3` and `chaos | head -1`: when the reader of stdout goes away, the command
/// stops quietly with the status of a process ended by SIGPIPE (141), without a panic or an
/// error line, and serve acknowledges no line it could not write: the sender is told.
#[test]
fn a_closed_stdout_ends_quietly_and_loses_nothing_silently() {
    let quiet_141 = |p: &mut Proc, name: &str| {
        let status = exit_status(p);
        assert_eq!(status.code(), Some(141), "{name}: {status:?}");
        let rest: Vec<String> = p.stderr.try_iter().collect();
        assert!(
            !rest
                .iter()
                .any(|l| l.contains("panicked") || l.starts_with("error:")),
            "{name}: {rest:?}"
        );
    };
    let input: String = (0..200_000).map(|i| format!("line {i:08}\n")).collect();
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let to_serve = input.clone();
    let sender =
        std::thread::spawn(move || run_send(&server, to_serve.as_bytes(), &["--timeout", "60"]));
    assert_eq!(head(&mut serve, 3).len(), 3);
    let (code, err) = sender.join().unwrap();
    // Not every line was taken by serve's reader: send must not report success.
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("were not acknowledged"), "{err}");
    quiet_141(&mut serve, "serve");
    // The fault proxy prints a line per fault.
    let serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let (mut chaos, proxy) = start_chaos(&server, &["--min-bytes", "2000", "--max-bytes", "4000"]);
    // The sender's fate does not matter here (its proxy goes away): it is killed at the end.
    let mut send = spawn(&["send", &proxy]);
    let mut stdin = send.child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    assert_eq!(head(&mut chaos, 1).len(), 1);
    quiet_141(&mut chaos, "chaos");
    drop(send);
    let _ = writer.join();
    drop(serve);
}

/// One table of exit statuses: README.md shows the one every command's `--help` prints.
#[test]
fn the_exit_status_table_is_the_same_in_readme_and_every_help() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme
        .find("Exit status (serve, send, connect, listen, request, chaos):")
        .unwrap();
    let table = &readme[start..start + readme[start..].find("```").unwrap()];
    assert!(table.lines().count() >= 8, "{table}");
    for command in ["serve", "send", "connect", "listen", "request", "chaos"] {
        let out = Command::new(BIN)
            .args([command, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains(table.trim_end()),
            "{command} --help differs:\n{help}"
        );
    }
}

/// A server not reachable at first: exit 1 at once, saying --retry waits for it; with
/// --retry, attempts go on until --timeout (exit 3).
#[test]
fn an_unreachable_server_ends_the_run_unless_retry() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap().to_string();
    drop(l);
    let (code, err) = run_send(&dead, b"x\n", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--retry waits for it"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let (code, err) = run_send(&dead, b"x\n", &["--retry", "--timeout", "1"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("retrying in"), "{err}");
    assert!(err.contains("giving up (--timeout)"), "{err}");
    let mut connect = spawn(&["connect", &dead]);
    assert_eq!(exit_status(&mut connect).code(), Some(1));
}

/// Ctrl-C (SIGINT) in `send` closes the session gracefully (the server sees it end, not
/// linger) and says how many lines were acknowledged; exit 130.
#[test]
fn ctrl_c_in_send_closes_the_session_and_says_how_far_it_got() {
    let serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let mut serve = serve;
    let mut send = spawn(&["send", &server]);
    let mut stdin = send.child.stdin.take().unwrap();
    stdin.write_all(b"one\ntwo\n").unwrap();
    stdin.flush().unwrap();
    // The input stays open: send waits for more, as on a terminal.
    let lines = {
        let out = serve.child.stdout.take().unwrap();
        let mut r = BufReader::new(out);
        let mut v = Vec::new();
        for _ in 0..2 {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            v.push(l);
        }
        v
    };
    assert_eq!(lines, ["one\n", "two\n"]);
    serve.wait_for("connected:");
    Command::new("kill")
        .args(["-INT", &send.child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(exit_status(&mut send).code(), Some(130));
    send.wait_for("interrupted: 2 of 2 messages acknowledged; the session is closed");
    // The server saw a CLOSE, not a dropped connection.
    let ended = serve.wait_for("ended:");
    assert!(ended.contains("closed"), "{ended}");
    drop(stdin);
}

/// Random bodies (newlines, `\r`, NUL and any byte inside; some empty), from a seed.
fn random_bodies(n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let len = (next() % 120) as usize;
            (0..len)
                .map(|_| match next() % 8 {
                    0 => b'\n',
                    1 => b'\r',
                    2 => 0,
                    _ => next() as u8,
                })
                .collect()
        })
        .collect()
}

/// Splits `bytes` framed as `how` back into bodies.
fn unframe(bytes: &[u8], how: &str) -> Vec<Vec<u8>> {
    if how == "--length-prefixed" {
        let mut out = Vec::new();
        let mut rest = bytes;
        while rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push(rest[4..4 + len].to_vec());
            rest = &rest[4 + len..];
        }
        assert!(rest.is_empty(), "a cut record at the end");
        return out;
    }
    let mut out: Vec<Vec<u8>> = bytes.split(|b| *b == 0).map(<[u8]>::to_vec).collect();
    assert_eq!(
        out.pop(),
        Some(Vec::new()),
        "every record ends with its NUL"
    );
    out
}

/// Any bytes at all go through `send` and `serve` unchanged with --length-prefixed, and
/// anything without a NUL with -0, through a fault proxy that cuts the link.
#[test]
fn binary_messages_round_trip_byte_for_byte_through_cuts() {
    for (how, seed) in [("--length-prefixed", 7u64), ("-0", 11)] {
        let mut bodies = random_bodies(3_000, seed);
        if how == "-0" {
            bodies.retain(|b| !b.contains(&0));
        }
        let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0", how]);
        let server = addr_after(&serve.wait_for("listening on"), "listening on ");
        let (chaos, proxy) = start_chaos(&server, &["--min-bytes", "3000", "--max-bytes", "9000"]);
        let mut input = Vec::new();
        for b in &bodies {
            if how == "-0" {
                input.extend_from_slice(b);
                input.push(0);
            } else {
                input.extend_from_slice(&(b.len() as u32).to_be_bytes());
                input.extend_from_slice(b);
            }
        }
        // serve's stdout is read as it comes (a full pipe would stall it).
        let mut stdout = serve.child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).unwrap();
            out
        });
        let (code, err) = run_send(&proxy, &input, &[how, "--timeout", "60"]);
        assert_eq!(code, 0, "{how}: {err}");
        // Everything is acknowledged, so written and flushed: stop serve, take it all.
        serve.terminate();
        let out = reader.join().unwrap();
        assert_eq!(unframe(&out, how), bodies, "{how}");
        drop(chaos);
    }
}

/// A message `--lines` cannot show (a newline inside) stops serve with an error naming it,
/// before it is acknowledged: the sender is told, nothing is altered. `--format json` carries
/// a body that is no UTF-8 as base64, marked.
#[test]
fn a_message_the_output_cannot_show_is_never_altered() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    // Sent with -0: the second record holds a newline.
    let (code, err) = run_send(&server, b"fine\0two\nlines\0", &["-0", "--timeout", "20"]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("not acknowledged"), "{err}");
    let stop = serve.wait_for("error: message");
    assert!(stop.contains("holds a newline"), "{stop}");
    assert_eq!(exit_status(&mut serve).code(), Some(1));
    let out = all_of_stdout(&mut serve);
    assert_eq!(out, "fine\n");
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0", "--format", "json"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let (code, err) = run_send(&server, b"caf\xe9\n", &["--timeout", "20"]);
    assert_eq!(code, 0, "{err}");
    serve.terminate();
    let out = all_of_stdout(&mut serve);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["body"], serde_json::Value::Null, "{out}");
    assert_eq!(v["body_base64"], "Y2Fm6Q==", "{out}");
}

/// `listen` receives only: what the server sends (an operator's /broadcast here) comes out on
/// stdout, framed as asked, each message acknowledged once written; Ctrl-C closes the session.
#[test]
fn listen_writes_what_the_server_sends() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0", "--console"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let mut listen = spawn(&["listen", &server, "-0"]);
    listen.wait_for("listening to");
    serve.wait_for("connected:");
    let mut console = serve.child.stdin.take().unwrap();
    console.write_all(b"/broadcast hello there\n").unwrap();
    console.flush().unwrap();
    let mut stdout = listen.child.stdout.take().unwrap();
    let mut got = [0u8; 12];
    stdout.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello there\0");
    Command::new("kill")
        .args(["-INT", &listen.child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(exit_status(&mut listen).code(), Some(130));
    listen.wait_for("interrupted: 1 message received and written; the session is closed");
    let ended = serve.wait_for("ended:");
    assert!(
        ended.contains("0 messages to it never acknowledged"),
        "{ended}"
    );
    drop(console);
}

/// `send --state` records what it read of its input; a rerun with a different input is
/// refused instead of skipping records it never sent, and the same input is skipped as sent.
#[test]
fn a_different_input_with_the_same_state_is_refused() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    // serve's stdout is drained as it comes (a full pipe would stall it).
    let mut stdout = serve.child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let dir = TempDir::new("consumed");
    let state = dir.0.join("state");
    let state = state.to_str().unwrap();
    for n in [5usize, 3_000] {
        let input: String = (0..n).map(|i| format!("record {i} of {n}\n")).collect();
        let (code, err) = run_send(
            &server,
            input.as_bytes(),
            &["--state", state, "--timeout", "30"],
        );
        assert_eq!(code, 0, "{err}");
        // The same input again: every record is skipped as sent.
        let (code, err) = run_send(
            &server,
            input.as_bytes(),
            &["--state", state, "--timeout", "30"],
        );
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("0 messages sent"), "{err}");
        // One byte changed in the part already sent: refused, nothing sent.
        let other = input.replacen("record 3 ", "record 3!", 1);
        let (code, err) = run_send(
            &server,
            other.as_bytes(),
            &["--state", state, "--timeout", "30"],
        );
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("the input differs"), "{err}");
        // The refusal changed nothing: the right input is still recognised, and more of it
        // is sent.
        let more = format!("{input}one more\n");
        let (code, err) = run_send(
            &server,
            more.as_bytes(),
            &["--state", state, "--timeout", "30"],
        );
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("1 message sent"), "{err}");
        std::fs::remove_dir_all(dir.0.join("state")).unwrap();
    }
    drop(serve);
    let _ = drain.join();
}

/// `connect -0` sends and shows binary messages unchanged: a record with a newline inside
/// goes to an echoing server and comes back byte for byte, framed alone (no "< ").
#[test]
fn connect_with_null_framing_is_binary_safe() {
    let mut serve = spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--echo",
        "--length-prefixed",
    ]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let mut stdout = serve.child.stdout.take().unwrap();
    let drain = std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let mut connect = spawn(&["connect", &server, "-0"]);
    connect.wait_for("connected to");
    let mut stdin = connect.child.stdin.take().unwrap();
    stdin.write_all(b"two\nlines\r\0").unwrap();
    stdin.flush().unwrap();
    let mut out = connect.child.stdout.take().unwrap();
    let mut got = [0u8; 11];
    out.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"two\nlines\r\0");
    drop(stdin);
    assert_eq!(exit_status(&mut connect).code(), Some(0));
    drop(serve);
    let _ = drain.join();
}

/// Input that ends inside a length-prefixed record is an error, not a quiet end: exit 1.
#[test]
fn connect_fails_on_a_cut_record() {
    let serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let server = addr_after(&serve.wait_for("listening on"), "listening on ");
    let mut connect = spawn(&["connect", &server, "--length-prefixed"]);
    connect.wait_for("connected to");
    let mut stdin = connect.child.stdin.take().unwrap();
    stdin.write_all(&[0, 0, 0, 5, b'a', b'b']).unwrap();
    drop(stdin);
    connect.wait_for("error: input: the input ends inside a record");
    assert_eq!(exit_status(&mut connect).code(), Some(1));
    drop(serve);
}
