//! A child process whose stderr is collected line by line (all of it, kept), killed with
//! SIGKILL when dropped: for tests that kill and restart servers and read their logs later.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::proc::BIN;

/// A child process killed (SIGKILL) when dropped; its stderr collected line by line.
pub(crate) struct Watched {
    pub(crate) child: Child,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Watched {
    pub(crate) fn spawn(args: &[&str], stdin: Stdio, stdout: Stdio) -> Watched {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Watched {
            child,
            stderr: lines,
        }
    }

    pub(crate) fn stderr(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The first stderr line containing `needle`, waiting up to `limit`; `None` if the
    /// process exited (or the time passed) without writing it.
    pub(crate) fn wait_for(&mut self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(l) = self.stderr().into_iter().find(|l| l.contains(needle)) {
                return Some(l);
            }
            if Instant::now() >= deadline || self.child.try_wait().unwrap().is_some() {
                // One last look: the line may have come with the exit.
                std::thread::sleep(Duration::from_millis(20));
                return self.stderr().into_iter().find(|l| l.contains(needle));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// The first stderr line after the first `from` lines that contains one of `needles`,
    /// waiting up to `limit`; `None` if the time passed (or the process exited) first.
    pub(crate) fn wait_for_any_after(
        &mut self,
        from: usize,
        needles: &[&str],
        limit: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + limit;
        let find = |lines: Vec<String>| {
            lines
                .into_iter()
                .skip(from)
                .find(|l| needles.iter().any(|n| l.contains(n)))
        };
        loop {
            if let Some(l) = find(self.stderr()) {
                return Some(l);
            }
            if Instant::now() >= deadline || self.child.try_wait().unwrap().is_some() {
                std::thread::sleep(Duration::from_millis(20));
                return find(self.stderr());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILL, and reap it (the state directory's lock and the port are free afterwards).
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the exit, up to `limit`.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.kill9();
    }
}
