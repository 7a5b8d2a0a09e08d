//! HAProxy (Debian's package; `.ci/run` installs it) in the foreground, in TCP mode, with a
//! configuration written for the test; killed by its PID when dropped.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::TempDir;

/// A HAProxy process, killed (by its PID) when dropped.
pub(crate) struct Haproxy(std::process::Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// HAProxy forwarding `front` to the backend described by `backend` (the lines after
/// `backend steadfast`: `balance`, `server` lines, options). Returns once `front` accepts.
pub(crate) fn start(dir: &TempDir, front: &str, backend: &str) -> Haproxy {
    let cfg = dir.0.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 1000\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend front\n  bind {front}\n  default_backend steadfast\n\
             backend steadfast\n{backend}"
        ),
    )
    .unwrap();
    let child = Haproxy(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("haproxy is not installed (.ci/run installs Debian's package)"),
    );
    // Ready once its front end accepts (bounded: 20 s).
    for _ in 0..400 {
        if std::net::TcpStream::connect(front).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("haproxy never listened on {front}");
}
