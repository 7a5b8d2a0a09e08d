//! `steadfast request` and `serve --exec`: request/response from the shell on the library's
//! rpc, through cuts, with errors, timeouts, lost sessions and Ctrl-C. Loopback only; every
//! process is killed at the end.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

mod support;
use support::TempDir;
use support::proc::{
    BIN, Proc, addr_after, all_of_stdout, exit_status, run_with_input, spawn, start_chaos,
};

/// `serve --exec CMD` with these options, and its address.
fn serve_exec(cmd: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--exec", cmd];
    args.extend_from_slice(extra);
    let serve = spawn(&args);
    let addr = addr_after(&serve.wait_for("listening on"), "listening on ");
    (serve, addr)
}

/// Runs `request ADDR ARGS…` with `stdin` to its end: exit code, stdout, stderr.
fn request(addr: &str, args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let mut all = vec!["request", addr];
    all.extend_from_slice(args);
    let out = run_with_input(&all, stdin);
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Bytes of every value, `\n`, `\r` and NUL included.
fn binary(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The state letter of a process in /proc (`None` once it is gone).
fn process_state(pid_file: &std::path::Path) -> Option<char> {
    let pid = std::fs::read_to_string(pid_file).unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).ok()?;
    stat.rsplit(')').next()?.trim_start().chars().next()
}

/// Whether the process is gone or a zombie waiting for its reaper (not running, not sleeping).
fn is_ended(pid_file: &std::path::Path) -> bool {
    matches!(process_state(pid_file), None | Some('Z'))
}

/// Waits (at most 20 s: a bound against a hang, not a timing check) for the process to be
/// gone: SIGKILL takes effect when the kernel next runs it, a moment after it was sent.
fn ends(pid_file: &std::path::Path) -> bool {
    for _ in 0..200 {
        if is_ended(pid_file) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Waits (at most 20 s: a bound against a hang, not a timing check) for a file to exist.
fn wait_for_file(path: &std::path::Path) {
    for _ in 0..200 {
        if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{} never appeared", path.display());
}

/// Lines in a file (0 if it does not exist).
fn lines_in(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// The command's stdout is the reply, byte for byte; the body reaches its stdin unaltered;
/// the route and the body's kind are in its environment; each request runs it once.
#[test]
fn a_request_runs_the_command_and_its_stdout_is_the_reply() {
    let dir = TempDir::new("exec-once");
    let log = dir.0.join("runs");
    let cmd = format!(
        "echo run >> '{}'; printf '%s %s|' \"$STEADFAST_ROUTE\" \"$STEADFAST_BODY\"; cat",
        log.display()
    );
    let (_serve, addr) = serve_exec(&cmd, &[]);
    let body = binary(100_000, 7);
    let (code, out, err) = request(&addr, &["files/put"], &body);
    assert_eq!(code, 0, "{err}");
    let mut want = b"files/put bytes|".to_vec();
    want.extend_from_slice(&body);
    assert!(out == want, "the reply differs ({} bytes)", out.len());
    // BODY as an argument; `-` is stdin.
    let (code, out, err) = request(&addr, &["greet", "a b\r\nc"], b"ignored");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, b"greet bytes|a b\r\nc");
    let (code, out, _) = request(&addr, &["dash", "-"], b"from stdin");
    assert_eq!((code, out.as_slice()), (0, &b"dash bytes|from stdin"[..]));
    // A structured value reaches the command as a line of JSON.
    let (code, out, err) = request(&addr, &["j", "--json", r#"{"n":[1,2.5,null]}"#], b"");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out),
        "j json|{\"n\":[1,2.5,null]}\n"
    );
    assert_eq!(lines_in(&log), 4, "one run per request");
}

/// What goes wrong comes back as an error reply (exit 1) that says what happened; a
/// command that overruns is killed with everything it started.
#[test]
fn failures_come_back_as_error_replies_that_say_why() {
    let dir = TempDir::new("exec-errors");
    let pid_file = dir.0.join("pid");
    let cmd = format!(
        "case \"$STEADFAST_ROUTE\" in \
           fail) echo 'no such file' >&2; exit 3;; \
           big) head -c 5000 /dev/zero;; \
           hang) sleep 300 & echo $! > '{}'; wait;; \
           slow) sleep 5;; \
         esac",
        pid_file.display()
    );
    let (serve, addr) = serve_exec(&cmd, &["--exec-timeout", "2", "--max-message", "1KiB"]);
    let (code, out, err) = request(&addr, &["fail", ""], b"");
    assert_eq!(code, 1, "{err}");
    assert!(out.is_empty());
    assert!(
        err.contains("fail: the command exited with status 3: no such file"),
        "{err}"
    );
    serve.wait_for("route \"fail\": the command exited with status 3");
    let (code, _, err) = request(&addr, &["big", ""], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("wrote more than 1,024 bytes"), "{err}");
    // Killed at --exec-timeout, the background `sleep` it started too.
    let (code, _, err) = request(&addr, &["hang", ""], b"");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("ran over 2.0 s (--exec-timeout) and was killed"),
        "{err}"
    );
    assert!(ends(&pid_file), "the command's child survived");
    // The requester's own --timeout: exit 3, saying the request may still be handled.
    let (code, _, err) = request(&addr, &["slow", "", "--timeout", "1"], b"");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no reply within 1.0 s (--timeout)"), "{err}");
    // Plain messages (from `send`) are no requests: the server says it drops them.
    let mut send = Command::new(BIN)
        .args(["send", &addr])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    send.stdin.take().unwrap().write_all(b"a line\n").unwrap();
    send.wait().unwrap();
    serve.wait_for("not an rpc envelope: answered with an error reply and dropped");
    // A body above --max-message is refused before anything is sent.
    let (code, _, err) = request(&addr, &["x", "--max-message", "100"], &[b'a'; 101]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("over the largest message of 100 bytes"),
        "{err}"
    );
}

/// Requests and replies are messages of the session: through a proxy that cuts the link every
/// 20 to 60 KB, requests and replies of up to 100 KB (sent in 16 KiB chunks, resumed after
/// each cut) each get their own reply, and each runs exactly once.
#[test]
fn requests_survive_cuts_and_each_runs_once() {
    let dir = TempDir::new("exec-cuts");
    let log = dir.0.join("runs");
    let cmd = format!("echo \"$STEADFAST_ROUTE\" >> '{}'; cat", log.display());
    let (_serve, addr) = serve_exec(&cmd, &[]);
    let (mut chaos, proxy) = start_chaos(&addr, &["--min-bytes", "20000", "--max-bytes", "60000"]);
    let n = 20;
    for i in 0..n {
        let body = binary(5_000 * (i + 1), i as u64 + 1);
        let route = format!("r{i}");
        let (code, out, err) = request(&proxy, &[&route, "--timeout", "60"], &body);
        assert_eq!(code, 0, "request {i}: {err}");
        assert!(out == body, "request {i}: the reply differs");
    }
    let runs = std::fs::read_to_string(&log).unwrap();
    let want: String = (0..n).map(|i| format!("r{i}\n")).collect();
    assert_eq!(runs, want, "each request ran once, in order");
    let _ = chaos.child.kill();
    let faults = all_of_stdout(&mut chaos);
    let cuts = faults.lines().filter(|l| l.starts_with("fault:")).count();
    assert!(cuts >= 20, "too few cuts to mean anything: {faults}");
}

/// A route of a program on the library's rpc takes a JSON body as the typed value it
/// expects; the reply's value comes back as JSON; a route nobody handles is named.
#[test]
fn a_typed_route_takes_json_and_answers_json() {
    use steadfast::rpc::{Router, Rpc};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(steadfast::Server::bind(
            ["127.0.0.1:0"],
            steadfast::ServerConfig::default(),
        ))
        .unwrap();
    let addr = server.local_addrs()[0].to_string();
    rt.spawn(async move {
        let mut rpcs = Vec::new();
        while let Some(peer) = server.accept().await {
            let router = Router::new()
                .route("add", |_ctx, (a, b): (i64, i64)| async move {
                    Ok::<_, String>(a + b)
                })
                .route("hello", |_ctx, name: String| async move {
                    Ok::<_, String>(format!("hello, {name}"))
                });
            rpcs.push(Rpc::new(peer, router));
        }
    });
    let (code, out, err) = request(&addr, &["add", "--json", "[2, 3]"], b"");
    assert_eq!(
        (code, String::from_utf8_lossy(&out).as_ref()),
        (0, "5\n"),
        "{err}"
    );
    // A string reply is written as it is, like bytes.
    let (code, out, err) = request(&addr, &["hello", "--json", "\"ann\""], b"");
    assert_eq!((code, out.as_slice()), (0, &b"hello, ann"[..]), "{err}");
    let (code, _, err) = request(&addr, &["sub", "--json", "[2, 3]"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no handler for route \"sub\""), "{err}");
    let (code, _, err) = request(&addr, &["add", "--json", "[2,"], b"");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the body is not JSON (--json)"), "{err}");
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// The server dies while the command runs and comes back without the session: the request's
/// outcome is unknown, and `request` says so with exit 4.
#[test]
fn a_request_whose_session_is_lost_exits_4() {
    let dir = TempDir::new("exec-lost");
    let pid_file = dir.0.join("pid");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let cmd = format!("echo $$ > '{}'; exec sleep 60", pid_file.display());
    let serve = spawn(&["serve", "--listen", &addr, "--exec", &cmd]);
    serve.wait_for("listening on");
    let mut req = spawn(&["request", &addr, "work", "--timeout", "60"]);
    drop(req.child.stdin.take());
    wait_for_file(&pid_file);
    drop(serve); // SIGKILL: the run it started is orphaned, and killed below
    let serve2 = spawn(&["serve", "--listen", &addr, "--exec", "cat"]);
    serve2.wait_for("listening on");
    assert_eq!(exit_status(&mut req).code(), Some(4));
    let err = req.wait_for("before the reply");
    assert!(err.contains("may or may not have been handled"), "{err}");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
}

/// Ctrl-C while waiting for the reply closes the session (the server sees it end, not
/// linger) and exits 130; the server kills the run of the ended session.
#[test]
fn ctrl_c_in_request_closes_the_session() {
    let dir = TempDir::new("exec-ctrl-c");
    let pid_file = dir.0.join("pid");
    let cmd = format!("echo $$ > '{}'; exec sleep 60", pid_file.display());
    let (serve, addr) = serve_exec(&cmd, &[]);
    let mut req = spawn(&["request", &addr, "work"]);
    drop(req.child.stdin.take());
    wait_for_file(&pid_file);
    Command::new("kill")
        .args(["-INT", &req.child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(exit_status(&mut req).code(), Some(130));
    req.wait_for("the request may or may not have been handled");
    let ended = serve.wait_for("ended:");
    assert!(ended.contains("interrupted"), "{ended}");
    assert!(
        ends(&pid_file),
        "the run of the ended session was not killed"
    );
}

/// A run is over when the command exits: what it left running in the background (holding
/// its stdout) does not hold the reply back, and is killed.
#[test]
fn a_run_ends_with_its_command_and_takes_its_leftovers_along() {
    let dir = TempDir::new("exec-leftovers");
    let pid_file = dir.0.join("pid");
    let cmd = format!("sleep 60 & echo $! > '{}'; echo done", pid_file.display());
    let (_serve, addr) = serve_exec(&cmd, &["--exec-timeout", "30"]);
    let (code, out, err) = request(&addr, &["bg", ""], b"");
    assert_eq!((code, out.as_slice()), (0, &b"done\n"[..]), "{err}");
    assert!(ends(&pid_file), "the background process survived");
}

/// --exec-max bounds the runs of the whole server: two sessions' requests with one slot run
/// one after the other, never together.
#[test]
fn exec_max_bounds_the_runs_of_the_whole_server() {
    let dir = TempDir::new("exec-max");
    let log = dir.0.join("log");
    let cmd = format!(
        "echo start >> '{0}'; sleep 0.3; echo end >> '{0}'",
        log.display()
    );
    let (_serve, addr) = serve_exec(&cmd, &["--exec-max", "1"]);
    let a = {
        let addr = addr.clone();
        std::thread::spawn(move || request(&addr, &["a", ""], b""))
    };
    let (code, _, err) = request(&addr, &["b", ""], b"");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = a.join().unwrap();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "start\nend\nstart\nend\n"
    );
    // Runs that would not be repeated after a crash: --exec refuses --state.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--exec",
            "cat",
            "--state",
        ])
        .arg(dir.0.join("state"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}
