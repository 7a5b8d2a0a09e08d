//! Running the `steadfast` binary from a test: a child process killed when dropped, its
//! stderr read line by line as it comes.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_steadfast");

/// A child process killed when dropped.
pub(crate) struct Proc {
    pub(crate) child: Child,
    /// Lines of stderr as they come.
    pub(crate) stderr: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn spawn(args: &[&str]) -> Proc {
    spawn_with_env(args, &[])
}

/// [`spawn`] with these environment variables set.
pub(crate) fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut child = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Proc { child, stderr: rx }
}

impl Proc {
    /// Waits for a stderr line containing `needle`; returns it.
    pub(crate) fn wait_for(&self, needle: &str) -> String {
        loop {
            let line = self
                .stderr
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no stderr line with {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }

    pub(crate) fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

/// A fault proxy in front of `upstream` with these options, and its address.
pub(crate) fn start_chaos(upstream: &str, options: &[&str]) -> (Proc, String) {
    let mut args = vec!["chaos", "--listen", "127.0.0.1:0", "--upstream", upstream];
    args.extend_from_slice(options);
    let chaos = spawn(&args);
    let proxy = addr_after(&chaos.wait_for("chaos proxy on"), "chaos proxy on ");
    (chaos, proxy)
}

/// The address after `marker` in a line like "listening on 127.0.0.1:4242".
pub(crate) fn addr_after(line: &str, marker: &str) -> String {
    let rest = &line[line.find(marker).unwrap() + marker.len()..];
    rest.split_whitespace().next().unwrap().to_string()
}

/// Waits (at most 60 s: a bound against a hang, not a timing check) for a child to exit.
pub(crate) fn exit_status(p: &mut Proc) -> std::process::ExitStatus {
    for _ in 0..600 {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the process did not exit");
}

/// What a child wrote to stdout, to its end (once it has stopped).
pub(crate) fn all_of_stdout(p: &mut Proc) -> String {
    let mut out = String::new();
    p.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    out
}

/// Runs the binary with `args` and `input` on its stdin (written from a thread of its own,
/// so that a command that stops reading cannot block the test), to its end.
pub(crate) fn run_with_input(args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}
