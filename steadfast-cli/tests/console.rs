//! `connect` as a console driven through a pipe: commands only with a leading /, `//` for a
//! literal slash, unknown commands refused here (never sent), `/help` answered locally,
//! receipts in order, and the end of input waiting for every receipt.

#![allow(clippy::unwrap_used)]

mod support;
use support::proc::{addr_after, all_of_stdout, exit_status, run_with_input, spawn};

#[test]
fn the_console_sends_lines_runs_commands_and_waits_for_every_receipt() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let addr = addr_after(&serve.wait_for("listening on"), "listening on ");
    let mut input = b"hello\n/foo\n//slash\n/help\n".to_vec();
    let n = 300;
    for i in 0..n {
        input.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    let out = run_with_input(&["connect", &addr, "--timeout", "30"], &input);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("unknown command /foo: not sent"),
        "a typo is refused here: {err}"
    );
    assert!(
        err.contains("/quit     wait for every receipt"),
        "/help is local: {err}"
    );
    // Every receipt, in the order the lines were sent, before the exit.
    let receipts: Vec<u64> = err
        .lines()
        .filter_map(|l| {
            l.strip_prefix("[#")?
                .strip_suffix(" acknowledged]")?
                .parse()
                .ok()
        })
        .collect();
    let sent = 2 + n; // hello, /slash and the numbered lines
    assert_eq!(receipts, (1..=sent as u64).collect::<Vec<_>>(), "{err}");
    serve.terminate();
    assert!(exit_status(&mut serve).success());
    let got = all_of_stdout(&mut serve);
    let mut want = String::from("hello\n/slash\n");
    for i in 0..n {
        want.push_str(&format!("line {i}\n"));
    }
    assert_eq!(
        got, want,
        "/foo and /help were not sent; //slash went as /slash"
    );
}

#[test]
fn with_null_framing_a_record_starting_with_a_slash_is_a_message() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0", "-0"]);
    let addr = addr_after(&serve.wait_for("listening on"), "listening on ");
    let out = run_with_input(&["connect", &addr, "-0"], b"/quit\0/foo\0data\0");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serve.terminate();
    assert!(exit_status(&mut serve).success());
    assert_eq!(all_of_stdout(&mut serve), "/quit\0/foo\0data\0");
}

/// On a terminal (a pty, driven by Python's `pty` module as a person would type): a line is
/// sent, the up arrow recalls it from the history and Enter sends it again, an unknown
/// command is refused, and /quit waits for the receipts and ends with status 0.
#[test]
fn on_a_terminal_the_console_edits_lines_and_recalls_them() {
    let mut serve = spawn(&["serve", "--listen", "127.0.0.1:0"]);
    let addr = addr_after(&serve.wait_for("listening on"), "listening on ");
    on_a_pty(
        &["connect", &addr],
        r#"
until(b"type to send")
os.write(fd, b"hello\r")
until(b"[#1 acknowledged]")
os.write(fd, b"\x1b[A\r")
until(b"[#2 acknowledged]")
os.write(fd, b"/nope\r")
# (the editor may redraw its prompt inside the line: wait for its parts)
until(b"unknown command")
until(b": not sent")
os.write(fd, b"/quit\r")
"#,
    );
    serve.terminate();
    assert!(exit_status(&mut serve).success());
    assert_eq!(
        all_of_stdout(&mut serve),
        "hello\nhello\n",
        "the recalled line went again"
    );
}

/// `serve --console` on a terminal edits and recalls lines too: `/list` twice (the second by
/// the up arrow), then `/quit` stops the server with status 0.
#[test]
fn the_operator_console_on_a_terminal_recalls_lines() {
    on_a_pty(
        &["serve", "--listen", "127.0.0.1:0", "--console"],
        r#"
until(b"console ready")
os.write(fd, b"/list\r")
until(b"0 sessions")
os.write(fd, b"\x1b[A\r")
until(b"0 sessions", 2)
os.write(fd, b"/quit\r")
"#,
    );
}

/// `serve --console` on a terminal with its stdout sent to a file: the file holds the messages
/// and nothing of the editor (its prompt and echo go to the terminal itself).
#[test]
fn the_operator_console_keeps_the_prompt_out_of_the_messages() {
    let dir = support::TempDir::new("console-out");
    let out = dir.0.join("messages");
    on_a_pty_to(
        &["serve", "--listen", "127.0.0.1:0", "--console"],
        r#"
until(b"console ready")
port = re.search(rb"listening on 127\.0\.0\.1:(\d+)", seen).group(1).decode()
subprocess.run([argv[0], "send", "127.0.0.1:" + port], input=b"hello\n", check=True)
os.write(fd, b"/list\r")
until(b"sessions")
os.write(fd, b"/quit\r")
"#,
        Some(&out),
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello\n");
}

/// Runs the binary with `args` on a pty (Python's `pty` module), typing as `steps` say (Python
/// using `fd`, the terminal, and `until(needle, count=1)`, which waits at most 20 s for what
/// the program wrote); then it must exit with status 0.
fn on_a_pty(args: &[&str], steps: &str) {
    on_a_pty_to(args, steps, None);
}

/// [`on_a_pty`], with the program's stdout sent to `stdout` instead of the terminal.
fn on_a_pty_to(args: &[&str], steps: &str, stdout: Option<&std::path::Path>) {
    let script = format!(
        r#"
import json, os, pty, re, select, subprocess, sys, time
argv = json.loads(sys.argv[1])
pid, fd = pty.fork()
if pid == 0:
    if sys.argv[2]:
        os.dup2(os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
    os.execv(argv[0], argv)
seen = b""
def until(needle, count=1):
    global seen
    end = time.monotonic() + 20
    while seen.count(needle) < count:
        left = end - time.monotonic()
        if left <= 0:
            sys.exit("never saw %r x%d in %r" % (needle, count, seen))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                seen += os.read(fd, 4096)
            except OSError:
                sys.exit("the program ended early: %r" % seen)
{steps}
_, status = os.waitpid(pid, 0)
sys.exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else "exit status %r: %r" % (status, seen))
"#
    );
    let mut argv = vec![support::proc::BIN];
    argv.extend_from_slice(args);
    let out = std::process::Command::new("python3")
        .args(["-c", &script, &serde_json::to_string(&argv).unwrap()])
        .arg(stdout.map_or(std::ffi::OsStr::new(""), |p| p.as_os_str()))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
