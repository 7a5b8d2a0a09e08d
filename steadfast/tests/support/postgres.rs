//! A private PostgreSQL cluster for a test: `initdb` and `pg_ctl` in a temporary directory,
//! listening on 127.0.0.1 on a free port, run as the `postgres` user when the tests run as
//! root (PostgreSQL refuses to run as root). Stopped by its PID when dropped. Shared by the
//! library's and the CLI's tests.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where Debian keeps PostgreSQL's server programs (not on `PATH`).
const BIN_DIRS: &[&str] = &[
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
];

fn program(name: &str) -> PathBuf {
    for d in BIN_DIRS {
        let p = Path::new(d).join(name);
        if p.exists() {
            return p;
        }
    }
    // On PATH, or a clear failure below.
    PathBuf::from(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A command run as the cluster's owner.
fn as_owner(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.arg("-u").arg("postgres").arg("--").arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A running private cluster.
pub struct Postgres {
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    root: bool,
}

impl Postgres {
    /// Creates and starts a cluster (a user `steadfast`, trusted on loopback). Panics with a
    /// clear message when PostgreSQL is not installed: `.ci/run` installs it.
    pub fn start(name: &str) -> Postgres {
        let root = is_root();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "steadfast-pg-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        if root {
            let owned = Command::new("chown")
                .arg("postgres:")
                .arg(&dir)
                .status()
                .unwrap();
            assert!(owned.success(), "chown postgres {}", dir.display());
        }
        let data = dir.join("data");
        let out = as_owner(root, &program("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "steadfast", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("initdb is not installed (.ci/run installs Debian's postgresql)");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let pg = Postgres {
            dir,
            data,
            port,
            root,
        };
        pg.start_again();
        pg
    }

    /// Starts the cluster (again, after [`Postgres::stop`]) and waits until it accepts.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let out = as_owner(self.root, &program("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "start"])
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl is not installed (.ci/run installs Debian's postgresql)");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// The postmaster's PID (the first line of `postmaster.pid`), if it runs.
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Stops the cluster: SIGINT to the postmaster (a fast shutdown: sessions are cut), then
    /// waits (bounded) for it to be gone.
    pub fn stop(&self) {
        let Some(pid) = self.pid() else { return };
        let _ = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status();
        for _ in 0..600 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }

    /// The connection URL of the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://steadfast@127.0.0.1:{}/postgres", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL through `psql` and returns its unaligned output.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .arg(self.url())
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("psql is not installed (.ci/run installs Debian's postgresql)");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free on 127.0.0.1 now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
