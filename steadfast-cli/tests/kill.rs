//! Durable sessions with real processes: `serve --state` and `send --state` killed with
//! SIGKILL again and again mid-stream, restarted on the same state directories; then the
//! server's output is checked line by line against the input. Also: damaged, foreign and
//! other-role state directories are refused with one line and left as they were.
//! Loopback only; every process is killed at the end and the temporary directories removed.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::TempDir;
use support::watched::Watched as Proc;

const BIN: &str = env!("CARGO_BIN_EXE_steadfast");

/// A small deterministic generator (xorshift64*), so that a failing schedule can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Starts `serve --state` on `listen`, appending its stdout to `out`. A port still busy
/// after a kill is retried (bounded).
fn start_server(listen: &str, state: &Path, out: &Path) -> (Proc, String) {
    start_server_with(listen, Some(state), out)
}

fn start_server_with(listen: &str, state: Option<&Path>, out: &Path) -> (Proc, String) {
    let mut args = vec!["serve", "--listen", listen];
    if let Some(s) = state {
        args.extend(["--state", s.to_str().unwrap()]);
    }
    let mut last = Vec::new();
    for _ in 0..100 {
        let file = File::options().create(true).append(true).open(out).unwrap();
        let mut p = Proc::spawn(&args, Stdio::null(), Stdio::from(file));
        if let Some(line) = p.wait_for("listening on ", Duration::from_secs(20)) {
            let at = line.find("listening on ").unwrap_or(0) + "listening on ".len();
            let addr = line[at..].trim().to_string();
            return (p, addr);
        }
        last = p.stderr();
        let busy = last
            .iter()
            .any(|l| l.contains("in use") || l.contains("could not listen"));
        assert!(busy, "serve did not start: {last:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("serve could not listen on {listen}: {last:?}");
}

fn start_sender(addr: &str, state: &Path, input: &Path) -> Proc {
    Proc::spawn(
        // --retry: a sender restarted while its server restarts waits for it.
        &["send", addr, "--retry", "--state", state.to_str().unwrap()],
        Stdio::from(File::open(input).unwrap()),
        Stdio::null(),
    )
}

/// The number of input lines a sender said it skipped (0 if it did not say).
fn skipped(sender: &Proc) -> u64 {
    sender
        .stderr()
        .iter()
        .find_map(|l| {
            l.strip_prefix("skipping the first ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.replace(',', "").parse().ok())
        })
        .unwrap_or(0)
}

/// What the check of the server's output found.
#[derive(Debug, Default)]
struct Verdict {
    /// Lines delivered for the first time.
    unique: usize,
    /// Lines written again after a server restart.
    duplicates: usize,
    /// Restarts after which lines came again.
    redelivery_runs: usize,
    /// Partial lines left by a kill in the middle of a write.
    torn: usize,
}

/// Checks the server's output: split at the byte offsets where restarted servers began
/// appending, every line is an input line; the first occurrences are the input exactly, in
/// order; each line follows the one before it (number + 1) except at a restart point, where a
/// run of lines received but not acknowledged before the kill may begin again (at a number
/// not beyond the next new line). A partial last line of a killed server must be the start of
/// the line that followed.
fn verify(out: &[u8], input: &[String], restarts: &[u64]) -> Result<Verdict, String> {
    let mut v = Verdict::default();
    let mut bounds: Vec<usize> = restarts.iter().map(|&r| r as usize).collect();
    bounds.insert(0, 0);
    bounds.push(out.len());
    // `next`: the number of distinct lines delivered; `prev`: the number of the last line.
    let (mut next, mut prev) = (0usize, 0usize);
    for (segment, w) in bounds.windows(2).enumerate() {
        let (from, to) = (w[0], w[1]);
        if from > to || to > out.len() {
            return Err(format!("output shrank: {from}..{to} of {}", out.len()));
        }
        let bytes = &out[from..to];
        let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        // The piece after the last newline: empty, or a line torn by the kill.
        let tail = lines.pop().unwrap_or_default();
        for (i, raw) in lines.iter().enumerate() {
            let text = std::str::from_utf8(raw).map_err(|_| "output is not UTF-8".to_string())?;
            let n: usize = text
                .split(' ')
                .next()
                .and_then(|s| s.parse().ok())
                .filter(|n| (1..=input.len()).contains(n))
                .ok_or_else(|| format!("not an input line: {text:?}"))?;
            if text != input[n - 1] {
                return Err(format!("line {n} altered: {text:?}"));
            }
            let restart_point = i == 0 && segment > 0;
            if n != prev + 1 {
                // After a restart the stream goes on from the first line not acknowledged,
                // which is at most the first line never written.
                if !(restart_point && n <= next + 1) {
                    return Err(format!(
                        "line {n} after line {prev} (segment {segment}, {next} delivered): {}",
                        if n > next + 1 {
                            "lines lost or reordered"
                        } else {
                            "a duplicate not right after a server restart"
                        }
                    ));
                }
                if n <= next {
                    v.redelivery_runs += 1;
                }
            }
            if n == next + 1 {
                next = n;
                v.unique += 1;
            } else {
                v.duplicates += 1;
            }
            prev = n;
        }
        if !tail.is_empty() {
            let follows = input.get(prev).map_or(&b""[..], |l| l.as_bytes());
            if segment + 1 == bounds.len() - 1 || !follows.starts_with(tail) {
                return Err(format!(
                    "a partial line {:?} (segment {segment})",
                    String::from_utf8_lossy(tail)
                ));
            }
            v.torn += 1;
        }
    }
    if next != input.len() {
        return Err(format!(
            "only lines 1..={next} of {} were delivered",
            input.len()
        ));
    }
    Ok(v)
}

#[test]
fn sigkill_of_server_and_sender_again_and_again_loses_nothing() {
    let started = Instant::now();
    let dir = TempDir::new("kill");
    let server_state = dir.0.join("server-state");
    let client_state = dir.0.join("client-state");
    let out = dir.0.join("out.txt");
    const LINES: usize = 100_000;
    let (input_path, input) = numbered_input(&dir.0, LINES);

    let (mut server, addr) = start_server("127.0.0.1:0", &server_state, &out);
    let listen = addr.clone();
    let mut sender = start_sender(&addr, &client_state, &input_path);

    let mut rng = Rng(0x5eed_2024_0001);
    let (mut server_kills, mut sender_kills) = (0u32, 0u32);
    // Byte offsets of the output at which each restarted server began.
    let mut restarts: Vec<u64> = Vec::new();
    // What each restarted sender skipped (must never go down: numbers are stored first).
    let mut skips: Vec<u64> = Vec::new();
    let mut sender_done = false;
    const EVENTS: u64 = 20;
    let total = file_len(&input_path);
    for event in 0..EVENTS {
        // Kill at pseudo-random points spread over the stream: somewhere in the event's
        // share of the first 90% of the input (immediately if already past it).
        // Also after some output of the restarted processes (a kill mid-stream, not during
        // start-up only).
        let share = total * 9 / 10 / EVENTS;
        let target =
            (event * share + rng.below(share)).max(file_len(&out) + 2_000 + rng.below(8_000));
        let deadline = Instant::now() + Duration::from_secs(20);
        while file_len(&out) < target {
            if let Some(status) = sender.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "send exited {status:?}: {:?}",
                    sender.stderr()
                );
                sender_done = true;
                break;
            }
            assert!(
                server.child.try_wait().unwrap().is_none(),
                "serve died by itself: {:?}",
                server.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "no progress before event {event}: output {} bytes; serve {:?}; send {:?}",
                file_len(&out),
                server.stderr(),
                sender.stderr()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        if sender_done {
            break;
        }
        // 0: the server, 1: the sender, 2: both at the same moment.
        let which = rng.below(3);
        if which != 1 {
            server.kill9();
            server_kills += 1;
            restarts.push(file_len(&out));
            server = start_server(&listen, &server_state, &out).0;
        }
        if which != 0 {
            sender.kill9();
            sender_kills += 1;
            sender = start_sender(&addr, &client_state, &input_path);
            // Its skip count, once it connected (the server may be restarting).
            if sender
                .wait_for("skipping the first", Duration::from_secs(20))
                .is_some()
            {
                skips.push(skipped(&sender));
            }
        }
    }
    // The last sender runs to its end: every line acknowledged.
    let status = sender
        .wait_exit(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("send did not finish: {:?}", sender.stderr()));
    assert!(
        status.success(),
        "send exited {status:?}: {:?}",
        sender.stderr()
    );
    assert!(
        skips.windows(2).all(|w| w[0] <= w[1]),
        "a restarted sender skipped fewer lines than an earlier one: {skips:?}"
    );
    // Run again with the same input: everything was sent, nothing is sent twice.
    let before = file_len(&out);
    let mut again = start_sender(&addr, &client_state, &input_path);
    let status = again.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{:?}", again.stderr());
    assert_eq!(skipped(&again), LINES as u64, "{:?}", again.stderr());
    assert!(
        again
            .stderr()
            .iter()
            .any(|l| l.contains("0 messages sent, 0 acknowledged")),
        "{:?}",
        again.stderr()
    );
    // The server stops gracefully (SIGTERM); its output is final.
    let _ = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let status = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("serve did not stop on SIGTERM: {:?}", server.stderr()));
    assert!(status.success(), "{:?}", server.stderr());
    assert_eq!(
        file_len(&out),
        before,
        "a rerun of send delivered lines again"
    );

    let output = std::fs::read(&out).unwrap();
    let verdict = verify(&output, &input, &restarts).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "kills: {server_kills} of the server, {sender_kills} of the sender; messages {LINES}; \
         lost 0; duplicates seen {} (in {} redelivery runs after server restarts); torn lines {}; \
         sender restarts skipped {skips:?}; {:.1} s",
        verdict.duplicates,
        verdict.redelivery_runs,
        verdict.torn,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(verdict.unique, LINES);
    assert!(
        server_kills >= 4 && sender_kills >= 4,
        "too few kills before the sender finished: {server_kills} server, {sender_kills} sender"
    );
}

#[test]
fn the_check_finds_loss_reordering_and_misplaced_duplicates() {
    // The verifier itself: a test that cannot fail proves nothing.
    let input: Vec<String> = (1..=5).map(|i| format!("{i:05} x")).collect();
    let text = |ns: &[usize]| -> Vec<u8> {
        ns.iter()
            .map(|n| format!("{}\n", input[n - 1]))
            .collect::<String>()
            .into_bytes()
    };
    let at = |ns: &[usize], k: usize| text(&ns[..k]).len() as u64;
    let ok = [1, 2, 3, 2, 3, 4, 5];
    let v = verify(&text(&ok), &input, &[at(&ok, 3)]).unwrap();
    assert_eq!((v.unique, v.duplicates, v.redelivery_runs), (5, 2, 1));
    // A duplicate without a restart there.
    assert!(verify(&text(&ok), &input, &[]).is_err());
    assert!(verify(&text(&ok), &input, &[at(&ok, 2)]).is_err());
    // Lost, reordered, missing at the end.
    assert!(verify(&text(&[1, 3, 4, 5]), &input, &[]).is_err());
    assert!(verify(&text(&[1, 2, 4, 3, 5]), &input, &[]).is_err());
    assert!(verify(&text(&[1, 2, 3, 4]), &input, &[]).is_err());
    // A restart may not skip ahead.
    let skip = [1, 2, 4, 5];
    assert!(verify(&text(&skip), &input, &[at(&skip, 2)]).is_err());
    // A torn line at a restart point is the start of the line that follows it.
    let mut torn = text(&[1, 2]);
    torn.extend_from_slice(&input[2].as_bytes()[..3]);
    let cut = torn.len() as u64;
    torn.extend_from_slice(&text(&[3, 4, 5]));
    let v = verify(&torn, &input, &[cut]).unwrap();
    assert_eq!((v.unique, v.torn), (5, 1));
    assert!(verify(&torn, &input, &[]).is_err());
}

fn numbered_input(dir: &Path, lines: usize) -> (PathBuf, Vec<String>) {
    let input: Vec<String> = (1..=lines)
        .map(|i| format!("{i:05} line of the kill test {}", "x".repeat(i % 37)))
        .collect();
    let mut text = input.join("\n");
    text.push('\n');
    let path = dir.join("input.txt");
    std::fs::write(&path, &text).unwrap();
    (path, input)
}

fn sigterm(p: &Proc) {
    let _ = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status();
}

#[test]
fn sigterm_sends_goaway_and_the_sender_resumes_on_the_next_server() {
    let dir = TempDir::new("goaway");
    let server_state = dir.0.join("server-state");
    let client_state = dir.0.join("client-state");
    let out = dir.0.join("out.txt");
    const LINES: usize = 30_000;
    let (input_path, input) = numbered_input(&dir.0, LINES);
    let (mut server, addr) = start_server("127.0.0.1:0", &server_state, &out);
    let mut sender = start_sender(&addr, &client_state, &input_path);
    // Mid-stream, a graceful stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    while file_len(&out) < 200_000 {
        assert!(
            Instant::now() < deadline,
            "no progress: {:?}",
            sender.stderr()
        );
        assert!(
            sender.child.try_wait().unwrap().is_none(),
            "{:?}",
            sender.stderr()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    sigterm(&server);
    let status = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("serve did not stop: {:?}", server.stderr()));
    assert!(status.success(), "{:?}", server.stderr());
    let restart = file_len(&out);
    assert!(
        (restart as usize) < input.iter().map(|l| l.len() + 1).sum::<usize>(),
        "the stream was over before the stop"
    );
    // The sender was told to go away and keeps trying; the next server restores its session.
    let (server, _) = start_server(&addr, &server_state, &out);
    assert!(
        server
            .stderr()
            .iter()
            .any(|l| l.contains("restored 1 session")),
        "{:?}",
        server.stderr()
    );
    let status = sender
        .wait_exit(Duration::from_secs(40))
        .unwrap_or_else(|| panic!("send did not finish: {:?}", sender.stderr()));
    assert!(status.success(), "{:?}", sender.stderr());
    assert!(
        sender.stderr().iter().any(|l| l == "resumed"),
        "the sender did not resume: {:?}",
        sender.stderr()
    );
    sigterm(&server);
    let mut server = server;
    assert!(server.wait_exit(Duration::from_secs(10)).unwrap().success());
    let v =
        verify(&std::fs::read(&out).unwrap(), &input, &[restart]).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "graceful restart: {LINES} messages, lost 0, duplicates {}",
        v.duplicates
    );
    assert_eq!(
        v.duplicates, 0,
        "a graceful stop wrote lines that came again (acknowledgements not committed before exit)"
    );
}

#[test]
fn after_a_lost_session_the_next_run_sends_the_unacknowledged_lines_again() {
    let dir = TempDir::new("lost");
    let client_state = dir.0.join("client-state");
    let (out1, out2) = (dir.0.join("out1.txt"), dir.0.join("out2.txt"));
    const LINES: usize = 50_000;
    let (input_path, input) = numbered_input(&dir.0, LINES);
    // A server without state: killed, its sessions are gone.
    let (mut server, addr) = start_server_with("127.0.0.1:0", None, &out1);
    let mut sender = start_sender(&addr, &client_state, &input_path);
    let deadline = Instant::now() + Duration::from_secs(20);
    while file_len(&out1) < 100_000 {
        assert!(
            Instant::now() < deadline,
            "no progress: {:?}",
            sender.stderr()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill9();
    let (_server, _) = start_server_with(&addr, None, &out2);
    let status = sender.wait_exit(Duration::from_secs(30)).unwrap();
    assert_eq!(status.code(), Some(4), "{:?}", sender.stderr());
    let lost_from: usize = sender
        .stderr()
        .iter()
        .find_map(|l| {
            l.strip_prefix("error: input lines ")
                .and_then(|r| r.split("..").next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no line range: {:?}", sender.stderr()));
    // The next run skips only the lines before the first unacknowledged one.
    let mut again = start_sender(&addr, &client_state, &input_path);
    let status = again.wait_exit(Duration::from_secs(30)).unwrap();
    assert!(status.success(), "{:?}", again.stderr());
    assert_eq!(
        skipped(&again),
        lost_from as u64 - 1,
        "{:?}",
        again.stderr()
    );
    let first = std::fs::read_to_string(&out1).unwrap();
    let second = std::fs::read_to_string(&out2).unwrap();
    let first: Vec<&str> = first.lines().collect();
    let second: Vec<&str> = second.lines().collect();
    // The first server ran without --state: it acknowledged lines when it took them, so a
    // kill -9 may lose some it had taken but not yet written, and it may have written some
    // whose acknowledgement never reached the sender. What it wrote is a prefix (its last
    // line may be torn by the kill).
    let whole = &first[..first.len().saturating_sub(1)];
    assert!(
        whole[..] == input[..whole.len()],
        "the first server's output is not a prefix"
    );
    assert_eq!(second, input[lost_from - 1..]);
}

/// Runs the binary to its end with no input; (exit code, stderr lines).
fn run(args: &[&str]) -> (i32, Vec<String>) {
    let out = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    (
        out.status.code().unwrap_or(-1),
        err.lines().map(str::to_owned).collect(),
    )
}

/// `serve --state DIR` or `send --state DIR` must refuse with one error line naming `needle`
/// and leave the state file byte for byte as it was.
#[track_caller]
fn refused_by(serve: bool, dir: &Path, needle: &str) {
    let file = dir.join("steadfast.redb");
    let before = std::fs::read(&file).ok();
    let d = dir.to_str().unwrap();
    let (code, err) = if serve {
        run(&["serve", "--listen", "127.0.0.1:0", "--state", d])
    } else {
        // Port 1 on loopback: nothing listens; the state is checked before connecting.
        run(&["send", "127.0.0.1:1", "--timeout", "1", "--state", d])
    };
    let cmd = if serve { "serve" } else { "send" };
    assert_ne!(code, 0, "{cmd} accepted {d}: {err:?}");
    assert_eq!(err.len(), 1, "{cmd}: not one line: {err:?}");
    assert!(
        err[0].starts_with("error: ") && err[0].contains(d) && err[0].contains(needle),
        "{cmd}: {err:?}"
    );
    // (Compared without printing: a state file is large.)
    assert!(
        std::fs::read(&file).ok() == before,
        "{cmd} changed the state file {}",
        file.display()
    );
}

#[test]
fn damaged_foreign_and_other_role_state_is_refused_with_one_line_and_left_alone() {
    let dir = TempDir::new("badstate");
    // Garbage where the database should be.
    let garbage = dir.0.join("garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(
        garbage.join("steadfast.redb"),
        b"not a database at all, someone else's notes\n".repeat(200),
    )
    .unwrap();
    refused_by(true, &garbage, "steadfast.redb");
    refused_by(false, &garbage, "steadfast.redb");

    // A real server state (one session stored), then the other role on each.
    let server_state = dir.0.join("server");
    let client_state = dir.0.join("client");
    let out = dir.0.join("out.txt");
    let input = dir.0.join("in.txt");
    std::fs::write(&input, "one\ntwo\nthree\n").unwrap();
    let (mut server, addr) = start_server("127.0.0.1:0", &server_state, &out);
    // The server's state is locked while it runs: a second server is refused.
    refused_by(true, &server_state, "in use");
    let mut sender = start_sender(&addr, &client_state, &input);
    let status = sender.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{:?}", sender.stderr());
    // Stopped gracefully: the database is closed cleanly. (After a SIGKILL the first open
    // repairs the file whoever opens it, so it could not be "left as it was".)
    sigterm(&server);
    assert!(server.wait_exit(Duration::from_secs(10)).unwrap().success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\ntwo\nthree\n");
    refused_by(true, &client_state, "client state");
    refused_by(false, &server_state, "server state");

    // A truncated real state file.
    for (serve, state) in [(true, &server_state), (false, &client_state)] {
        let file = state.join("steadfast.redb");
        let bytes = std::fs::read(&file).unwrap();
        assert!(bytes.len() > 64);
        std::fs::write(&file, &bytes[..bytes.len() / 3]).unwrap();
        refused_by(serve, state, "steadfast.redb");
    }
    // A state directory that is a file.
    let not_dir = dir.0.join("plain-file");
    std::fs::write(&not_dir, b"x").unwrap();
    for serve in [true, false] {
        let (code, err) = if serve {
            run(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--state",
                not_dir.to_str().unwrap(),
            ])
        } else {
            run(&["send", "127.0.0.1:1", "--state", not_dir.to_str().unwrap()])
        };
        assert_ne!(code, 0);
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].starts_with("error: "), "{err:?}");
    }
    assert_eq!(std::fs::read(&not_dir).unwrap(), b"x");
}
