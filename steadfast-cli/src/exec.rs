//! `steadfast serve --exec CMD`: every request (on the library's rpc, from `steadfast
//! request` or any program) runs CMD; what it writes to stdout is the reply.
//!
//! CMD runs under `sh -c` with the request's body on stdin (bytes or a string as they are,
//! any other value as one line of JSON) and the route, session, peer address and name in
//! `STEADFAST_*` variables. Exit status 0: its stdout is the reply. Anything else (a non-zero
//! status, a signal, --exec-timeout, a reply above --max-message) is an error reply carrying
//! the reason and the first lines of its stderr. The command runs in a process group of its
//! own, killed whole when it overruns or the server stops.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use steadfast::Peer;
use steadfast::rpc::{Context, Router, Rpc};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Semaphore;

use crate::value::{Bin, Body};

/// How much of a failed command's stderr goes into its error reply.
const STDERR_KEPT: usize = 2_048;

/// How long what a command left running may keep its stdout or stderr open once it exited.
const LEFTOVER_GRACE: Duration = Duration::from_millis(200);

/// The command and its limits.
pub(crate) struct Exec {
    /// The shell command line.
    pub(crate) command: String,
    /// How long one run may take.
    pub(crate) timeout: Duration,
    /// The largest reply (stdout beyond it is not read: the run fails).
    pub(crate) max_reply: u32,
    /// Runs going at once on the whole server (`--exec-max`).
    pub(crate) slots: Semaphore,
}

/// A router that runs the command for every route, at most `jobs` at once per session.
pub(crate) fn router(exec: Arc<Exec>, jobs: usize) -> Router {
    Router::new()
        .fallback(move |ctx: Context, body: Body| {
            let exec = exec.clone();
            async move {
                let ran = exec.run(&ctx, body).await;
                if let Err(e) = &ran {
                    tracing::warn!(
                        "exec: {} route {:?}: {e}",
                        crate::serve::describe(&ctx.peer),
                        ctx.route
                    );
                }
                ran.map(Bin)
            }
        })
        .max_in_flight(jobs)
}

/// Serves one session's requests until it ends; dropping the rpc (when the server stops and
/// aborts this task) cancels the runs still going, killing their processes.
pub(crate) async fn serve_peer(peer: Peer, router: Router) {
    let _rpc = Rpc::new(peer.clone(), router);
    peer.ended().await;
}

impl Exec {
    /// One run of the command for one request: its stdout, or why there is none.
    async fn run(&self, ctx: &Context, body: Body) -> Result<Vec<u8>, String> {
        let (input, kind) = match body {
            Body::Bytes(b) => (b, "bytes"),
            Body::Json(mut line) => {
                line.push(b'\n');
                (line, "json")
            }
        };
        // A slot of the server's first (waiting holds this session's slot, so its further
        // requests stay unacknowledged): the timeout counts from the start of the run.
        let Ok(_slot) = self.slots.acquire().await else {
            return Err("the server is stopping".into());
        };
        let peer = &ctx.peer;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .env("STEADFAST_ROUTE", &ctx.route)
            .env("STEADFAST_BODY", kind)
            .env(
                "STEADFAST_SESSION",
                peer.id().map(|i| i.to_string()).unwrap_or_default(),
            )
            .env(
                "STEADFAST_PEER",
                peer.addr().map(|a| a.to_string()).unwrap_or_default(),
            )
            .env("STEADFAST_NAME", peer.name().unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", self.command))?;
        // Leaving this function (the run over, a timeout, an overlong reply, the server
        // stopping) kills the command's process group: what it started ends with it.
        let group = Group(child.id());
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err("the command's pipes are missing".into());
        };
        let max = self.max_reply as usize;
        let feed = async {
            // A command that does not read its input is fine: the pipe just closes.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
            Ok::<_, String>(())
        };
        let reply = async {
            let mut out = Vec::new();
            read_up_to(stdout, max + 1, &mut out)
                .await
                .map_err(|e| format!("reading the command's stdout: {e}"))?;
            if out.len() > max {
                return Err(format!(
                    "the command wrote more than {} (--max-message)",
                    crate::human::plural(max as u64, "byte")
                ));
            }
            Ok(out)
        };
        let errors = async { Ok::<_, String>(keep_start(stderr, STDERR_KEPT).await) };
        let reading = async { tokio::try_join!(feed, reply, errors) };
        tokio::pin!(reading);
        let ran = async {
            let mut exited = None;
            let read = tokio::select! {
                r = &mut reading => r,
                s = child.wait() => {
                    exited = Some(s.map_err(|e| format!("waiting for the command: {e}"))?);
                    // The command is done; what it left running in the background gets a
                    // moment to close its stdout and stderr, then is killed.
                    match tokio::time::timeout(LEFTOVER_GRACE, &mut reading).await {
                        Ok(r) => r,
                        Err(_) => {
                            group.kill();
                            (&mut reading).await
                        }
                    }
                }
            };
            let ((), out, err) = read?;
            let status = match exited {
                Some(s) => s,
                None => child
                    .wait()
                    .await
                    .map_err(|e| format!("waiting for the command: {e}"))?,
            };
            Ok::<_, String>((status, out, err))
        };
        let (status, out, err) =
            tokio::time::timeout(self.timeout, ran)
                .await
                .map_err(|_| {
                    format!(
                        "the command ran over {} (--exec-timeout) and was killed",
                        crate::human::duration(self.timeout)
                    )
                })??;
        if status.success() {
            return Ok(out);
        }
        let why = failure(status);
        let err = String::from_utf8_lossy(&err);
        let err = err.trim();
        Err(if err.is_empty() {
            why
        } else {
            format!("{why}: {err}")
        })
    }
}

/// How a command failed, in words.
fn failure(status: std::process::ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("the command exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("the command was killed by signal {signal}");
        }
    }
    format!("the command failed ({status})")
}

/// Reads until the end or `limit` bytes, whichever comes first.
async fn read_up_to(
    r: impl AsyncRead + Unpin,
    limit: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    r.take(limit as u64).read_to_end(out).await.map(|_| ())
}

/// The first `limit` bytes of a stream, the rest read and dropped (so that the writer never
/// blocks on a full pipe); a cut is marked.
async fn keep_start(mut r: impl AsyncRead + Unpin, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let _ = read_up_to(&mut r, limit, &mut kept).await;
    if let Ok(n) = tokio::io::copy(&mut r, &mut tokio::io::sink()).await
        && n > 0
    {
        kept.extend_from_slice(format!(" … ({n} more bytes)").as_bytes());
    }
    kept
}

/// The command's process group, killed when the run is over (or given up).
struct Group(Option<u32>);

impl Group {
    /// Sends SIGKILL to every process of the group. The group's id is its leader's process
    /// id, which is not given to another process while the leader is unreaped or any member
    /// lives; a group already gone is fine.
    fn kill(&self) {
        #[cfg(unix)]
        if let Some(pid) = self
            .0
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}
