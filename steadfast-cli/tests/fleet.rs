//! A fleet with real components: a private PostgreSQL cluster (`initdb` + `pg_ctl`, started
//! by the test), `serve --state postgres://…` processes and HAProxy (Debian's package) in
//! front of them, round robin, no stickiness. A client (`send`) streams lines while:
//!
//! - servers are killed with SIGKILL and restarted, in turn: the union of the servers'
//!   outputs holds every line, each server process's output is in order, and lines come again
//!   only after a kill, at most one receive window per kill;
//! - the owning server is stopped (SIGSTOP) while the client moves to another one, then
//!   continued: it prints nothing more (neither what reached it meanwhile nor the batch it had
//!   in hand: it asks the store before it writes), and lines come again at most one receive
//!   window (what it wrote but had not acknowledged when it stopped);
//! - PostgreSQL itself is restarted mid-stream: nothing is lost, sends resume.
//!
//! Loopback only; every process is killed by its PID at the end.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::TempDir;
use support::haproxy::{self, Haproxy};
use support::postgres::Postgres;
use support::watched::Watched;

/// The receive window in messages (`proto::Config`'s default): what a killed server may have
/// printed without acknowledging.
const WINDOW: usize = 8_192;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// Waits until every thread of process `pid` is stopped (SIGSTOP is delivered
/// asynchronously: a thread finishes its system call first).
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let all = tasks.filter_map(Result::ok).all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
        });
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} did not stop");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success(), "kill {sig} {pid}");
}

/// One `serve` process of the fleet and the file its stdout goes to (one per process).
struct Member {
    proc: Watched,
    out: PathBuf,
}

/// PostgreSQL, `count` servers on fixed ports (a restarted one comes back on its port) and
/// HAProxy round robin in front of them.
struct Fleet {
    pg: Postgres,
    dir: TempDir,
    ports: Vec<u16>,
    members: Vec<Option<Member>>,
    /// Every output file, in the order the processes started, with the member's index.
    outputs: Vec<(usize, PathBuf)>,
    front: String,
    _balancer: Haproxy,
}

impl Fleet {
    fn start(name: &str, count: usize) -> Fleet {
        let pg = Postgres::start(name);
        let dir = TempDir::new(name);
        let ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let front = format!("127.0.0.1:{}", free_port());
        let mut backend = String::from(
            "  balance roundrobin\n  retries 3\n  option redispatch 1\n  timeout connect 1s\n",
        );
        for (i, p) in ports.iter().enumerate() {
            backend.push_str(&format!("  server s{i} 127.0.0.1:{p}\n"));
        }
        let balancer = haproxy::start(&dir, &front, &backend);
        let mut fleet = Fleet {
            pg,
            dir,
            ports,
            members: (0..count).map(|_| None).collect(),
            outputs: Vec::new(),
            front,
            _balancer: balancer,
        };
        for i in 0..count {
            fleet.start_member(i);
        }
        fleet
    }

    /// Starts member `i` (again) with a fresh output file; returns once it listens.
    fn start_member(&mut self, i: usize) {
        let out = self.dir.0.join(format!("s{i}-{}.txt", self.outputs.len()));
        let listen = format!("127.0.0.1:{}", self.ports[i]);
        let url = self.pg.url();
        let node = format!("s{i}");
        for _ in 0..100 {
            let file = File::create(&out).unwrap();
            let mut p = Watched::spawn(
                &[
                    "serve", "--listen", &listen, "--state", &url, "--node", &node,
                ],
                Stdio::null(),
                Stdio::from(file),
            );
            if p.wait_for("listening on ", Duration::from_secs(30))
                .is_some()
            {
                self.members[i] = Some(Member {
                    proc: p,
                    out: out.clone(),
                });
                self.outputs.push((i, out));
                return;
            }
            let err = p.stderr();
            assert!(
                err.iter().any(|l| l.contains("in use")),
                "serve s{i} did not start: {err:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("s{i} could not listen on {listen}");
    }

    fn member(&mut self, i: usize) -> &mut Member {
        self.members[i].as_mut().unwrap()
    }

    /// Lines printed by every process so far.
    fn total_bytes(&self) -> u64 {
        self.outputs.iter().map(|(_, p)| file_len(p)).sum()
    }

    /// The member whose current process printed last (its output grew most recently), after
    /// waiting (bounded) for output to grow at all.
    fn owner(&self) -> usize {
        self.owner_since(&self.current_lens())
    }

    /// The first member whose current process printed more than `before` shows.
    fn owner_since(&self, before: &[u64]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let now = self.current_lens();
            if let Some(i) = (0..now.len()).find(|&i| now[i] > before[i]) {
                return i;
            }
            if Instant::now() >= deadline {
                let logs: Vec<Vec<String>> = self
                    .members
                    .iter()
                    .map(|m| m.as_ref().map(|m| m.proc.stderr()).unwrap_or_default())
                    .collect();
                panic!("no server printed anything: {logs:#?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn current_lens(&self) -> Vec<u64> {
        self.members
            .iter()
            .map(|m| m.as_ref().map_or(0, |m| file_len(&m.out)))
            .collect()
    }

    /// The numbers of the lines in each output file, in the order the processes started.
    fn printed(&self) -> Vec<(usize, Vec<usize>)> {
        self.outputs
            .iter()
            .map(|(i, p)| {
                let text = std::fs::read_to_string(p).unwrap();
                let mut numbers = Vec::new();
                for line in text.split_inclusive('\n') {
                    // A line torn by a kill is not a delivered line.
                    let Some(line) = line.strip_suffix('\n') else {
                        continue;
                    };
                    numbers.push(line.split(' ').next().unwrap().parse().unwrap());
                }
                (*i, numbers)
            })
            .collect()
    }
}

fn numbered(from: usize, to: usize) -> String {
    (from..to).map(|i| format!("{i:06} fleet line\n")).collect()
}

/// Checks the outputs: each in order, together every line `1..=lines` at least once; returns
/// how many lines were printed more than once.
fn check(printed: &[(usize, Vec<usize>)], lines: usize) -> usize {
    let mut seen = vec![0u32; lines + 1];
    for (i, numbers) in printed {
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "the output of a process of s{i} is out of order"
        );
        for &n in numbers {
            assert!((1..=lines).contains(&n), "not an input line: {n}");
            seen[n] += 1;
        }
    }
    let missing: Vec<usize> = (1..=lines).filter(|&n| seen[n] == 0).collect();
    assert!(
        missing.is_empty(),
        "{} lines lost, the first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    seen.iter().map(|&c| c.saturating_sub(1) as usize).sum()
}

/// Writes `first` to the sender's stdin, then whatever comes through the channel, from a
/// thread of its own (a sender whose outbox is full stops reading: the test must not block);
/// stdin closes when the channel does.
fn feeder(
    send: &mut Watched,
    first: String,
) -> (std::sync::mpsc::Sender<String>, std::thread::JoinHandle<()>) {
    let mut stdin = send.child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let writer = std::thread::spawn(move || {
        stdin.write_all(first.as_bytes()).unwrap();
        stdin.flush().unwrap();
        for more in rx {
            stdin.write_all(more.as_bytes()).unwrap();
        }
    });
    (tx, writer)
}

fn sender(front: &str) -> Watched {
    Watched::spawn(&["send", front, "--retry"], Stdio::piped(), Stdio::null())
}

#[test]
fn a_fleet_behind_haproxy_loses_nothing_through_repeated_kill_9() {
    const LINES: usize = 200_000;
    const KILLS: usize = 7;
    const PART: usize = LINES / (KILLS + 1);
    let started = Instant::now();
    let mut fleet = Fleet::start("fleet-kill", 3);
    let mut send = sender(&fleet.front);
    // The input comes in parts, the next one after each kill: however fast the stream runs
    // (a restarted server takes a while to start), it is never over before the last kill.
    let line_bytes = numbered(1, 2).len() as u64;
    let (more, writer) = feeder(&mut send, numbered(1, PART + 1));
    let mut fed = PART;
    let mut kills = 0;
    let mut landed_elsewhere = 0;
    let mut failovers = Vec::new();
    while kills < KILLS {
        // Half of the latest part printed first: the stream is flowing when the owner dies.
        let target = (fed - PART / 2) as u64 * line_bytes;
        let deadline = Instant::now() + Duration::from_secs(60);
        while fleet.total_bytes() < target {
            assert!(
                send.child.try_wait().unwrap().is_none(),
                "send ended early: {:?}",
                send.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "no progress: {:?}",
                send.stderr()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let owner = fleet.owner();
        fleet.member(owner).proc.kill9();
        let killed = Instant::now();
        kills += 1;
        let mut after = fleet.current_lens();
        after[owner] = u64::MAX;
        // Where the client went on, and how long its next line took (failover time).
        let next =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fleet.owner_since(&after)))
                .unwrap_or_else(|_| panic!("after kill {kills}: send {:#?}", send.stderr()));
        failovers.push(killed.elapsed());
        if next != owner {
            landed_elsewhere += 1;
        }
        fleet.start_member(owner);
        let to = if kills == KILLS { LINES } else { fed + PART };
        more.send(numbered(fed + 1, to + 1)).unwrap();
        fed = to;
    }
    drop(more);
    writer.join().unwrap();
    let status = send
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("send did not finish: {:?}", send.stderr()));
    assert!(status.success(), "send: {:?}", send.stderr());
    let printed = fleet.printed();
    let duplicates = check(&printed, LINES);
    failovers.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "fleet kill test: {LINES} lines, {kills} kill -9s, the client landed on another server \
         after {landed_elsewhere} of them; lost 0; printed again {duplicates} (bound {}); \
         failover (kill to the next line printed elsewhere) p50 {:.1} ms, max {:.1} ms; {:.1} s",
        kills * WINDOW,
        ms(failovers[failovers.len() / 2]),
        ms(failovers[failovers.len() - 1]),
        started.elapsed().as_secs_f64()
    );
    assert!(
        duplicates <= kills * WINDOW,
        "{duplicates} lines printed again after {kills} kills"
    );
    assert!(
        landed_elsewhere * 2 > kills,
        "the client came back to the restarted server after most kills ({landed_elsewhere} of {kills} elsewhere)"
    );
}

#[test]
fn an_owner_stopped_while_its_session_moves_prints_nothing_more() {
    let mut fleet = Fleet::start("fleet-stop", 2);
    let mut send = sender(&fleet.front);
    let (more, input) = feeder(&mut send, numbered(1, 20_001));
    let owner = fleet.owner();
    let pid = fleet.member(owner).proc.child.id();
    signal(pid, "-STOP");
    wait_stopped(pid);
    let frozen = file_len(&fleet.member(owner).out);
    // More lines while the owner sleeps: they go to its socket until the client gives up on
    // it and resumes on the other server.
    more.send(numbered(20_001, 40_001)).unwrap();
    drop(more);
    input.join().unwrap();
    let status = send
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("send did not finish: {:?}", send.stderr()));
    assert!(status.success(), "send: {:?}", send.stderr());
    let other = 1 - owner;
    let mark = fleet.member(owner).proc.stderr().len();
    signal(pid, "-CONT");
    // The woken owner deals with its connection: the session moved (its commit refused) or
    // the connection timed out while it slept; either way it is done with it.
    let line = fleet.member(owner).proc.wait_for_any_after(
        mark,
        &["ended:", "disconnected:"],
        Duration::from_secs(60),
    );
    assert!(line.is_some(), "{:?}", fleet.member(owner).proc.stderr());
    // Its output is final once it stopped (SIGTERM: it writes what it holds and exits).
    signal(pid, "-TERM");
    let stopped = fleet.member(owner).proc.wait_exit(Duration::from_secs(30));
    assert!(stopped.is_some(), "the woken owner did not stop");
    let printed = fleet.printed();
    let duplicates = check(&printed, 40_000);
    let (frozen_lines, woken_lines) = {
        let text = std::fs::read_to_string(&fleet.member(owner).out).unwrap();
        let numbers: Vec<usize> = text
            .lines()
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        let before = text.as_bytes()[..frozen as usize]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        (before, numbers[before..].to_vec())
    };
    let after_move = printed
        .iter()
        .filter(|(i, _)| *i == other)
        .map(|(_, n)| n.len())
        .sum::<usize>();
    println!(
        "fencing test: owner s{owner} stopped after {frozen_lines} lines on its stdout; s{other} \
         printed {after_move} lines; the woken owner wrote {} more (taken before it was stopped: \
         the last ends at {:?}); lines printed by both {duplicates}; it logged {line:?}",
        woken_lines.len(),
        woken_lines.last()
    );
    // Lines 20,001 on were sent only after the stop: some reached the stopped owner's socket,
    // none may reach its output; nor may the batch it had taken before the stop, since the
    // client resumed elsewhere (`serve` asks the store before it writes, and asks again after
    // any stall longer than the shortest idle timeout). The one gap left is a stop between
    // that check and the write system call it allows: microseconds per batch.
    assert!(
        woken_lines.is_empty(),
        "the woken owner printed {} lines after the session moved (from {:?} to {:?})",
        woken_lines.len(),
        woken_lines.first(),
        woken_lines.last()
    );
    // What it wrote before the stop and had not acknowledged is printed again by the new
    // owner: a stall counts like a crash for it, at most one receive window.
    assert!(duplicates <= WINDOW);
}

#[test]
fn postgres_restarted_mid_stream_loses_nothing_and_sends_resume() {
    const LINES: usize = 60_000;
    let fleet = Fleet::start("fleet-pg", 2);
    let mut send = sender(&fleet.front);
    let (more, input) = feeder(&mut send, numbered(1, 20_001));
    let _ = fleet.owner();
    fleet.pg.stop();
    let stopped_at = fleet.total_bytes();
    more.send(numbered(20_001, LINES + 1)).unwrap();
    drop(more);
    // The sender's outbox fills while the database is down: its stdin waits (bounded), it
    // does not fail.
    fleet.pg.start_again();
    input.join().unwrap();
    let status = send
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("send did not finish: {:?}", send.stderr()));
    assert!(status.success(), "send: {:?}", send.stderr());
    let duplicates = check(&fleet.printed(), LINES);
    println!(
        "postgres restart: {stopped_at} bytes printed before the stop; {LINES} lines delivered, \
         {duplicates} printed twice"
    );
    assert_eq!(duplicates, 0, "no server died: nothing may come twice");
}

#[test]
fn a_client_with_several_addresses_skips_a_dead_one_and_follows_goaway_to_the_next() {
    const LINES: usize = 40_000;
    let mut fleet = Fleet::start("fleet-goaway", 2);
    // First a port nothing listens on, then both servers: the dead one is passed over.
    let dead = format!("127.0.0.1:{}", free_port());
    let list = format!(
        "{dead},127.0.0.1:{},127.0.0.1:{}",
        fleet.ports[0], fleet.ports[1]
    );
    let mut send = Watched::spawn(&["send", &list], Stdio::piped(), Stdio::null());
    let (more, input) = feeder(&mut send, numbered(1, 20_001));
    let owner = fleet.owner();
    assert_eq!(
        owner, 0,
        "the first live address in the list carries the session"
    );
    // A deploy: the owner stops gracefully and sends GOAWAY; the client resumes on the next
    // address of its list, where the session is claimed from the database.
    signal(fleet.member(0).proc.child.id(), "-TERM");
    let stopped = fleet.member(0).proc.wait_exit(Duration::from_secs(30));
    assert!(
        stopped.is_some_and(|s| s.success()),
        "{:?}",
        fleet.member(0).proc.stderr()
    );
    more.send(numbered(20_001, LINES + 1)).unwrap();
    drop(more);
    input.join().unwrap();
    let status = send
        .wait_exit(Duration::from_secs(120))
        .unwrap_or_else(|| panic!("send did not finish: {:?}", send.stderr()));
    assert!(status.success(), "send: {:?}", send.stderr());
    let duplicates = check(&fleet.printed(), LINES);
    assert_eq!(duplicates, 0, "a graceful move delivers nothing twice");
    let resumed = fleet
        .member(1)
        .proc
        .wait_for("resumed:", Duration::from_secs(5));
    assert!(resumed.is_some(), "{:?}", fleet.member(1).proc.stderr());
}

/// Fleet messaging through faults: a server in this process (`a`, on the same PostgreSQL)
/// sends 50,000 messages with `Server::send_to` to ten clients of two `serve` processes,
/// through fault proxies that cut the links mid-frame, while the first `serve` is killed with
/// SIGKILL and restarted. Every client receives its messages exactly once and in order, and
/// every receipt resolves.
#[test]
fn send_to_across_the_fleet_survives_cuts_and_a_kill_9() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use steadfast::chaos::{Chaos, ChaosConfig};
    use steadfast::store::{PgOptions, PgStore};
    use steadfast::{Client, ClientConfig, Server, ServerConfig};

    const SESSIONS: usize = 10;
    const EACH: usize = 5_000;
    let mut fleet = Fleet::start("fleet-mail", 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = PgStore::connect(&fleet.pg.url(), PgOptions::node("a"))
            .await
            .unwrap();
        let a = Server::bind(
            ["127.0.0.1:0"],
            ServerConfig::default().store(Arc::new(store)),
        )
        .await
        .unwrap();
        let mut proxies = Vec::new();
        for (i, port) in fleet.ports.clone().into_iter().enumerate() {
            let upstream = format!("127.0.0.1:{port}").parse().unwrap();
            let config = ChaosConfig {
                seed: 17 + i as u64,
                bytes: (16 << 10, 256 << 10),
                ..ChaosConfig::default()
            };
            proxies.push(Chaos::start("127.0.0.1:0", upstream, config).await.unwrap());
        }
        let (pb, pc) = (
            proxies[0].local_addr().to_string(),
            proxies[1].local_addr().to_string(),
        );
        // Half the clients start on s0 (then s1), half on s1 (then s0).
        let received = Arc::new(AtomicUsize::new(0));
        let mut ids = Vec::new();
        let mut readers = Vec::new();
        for i in 0..SESSIONS {
            let addrs = if i % 2 == 0 {
                vec![pb.clone(), pc.clone()]
            } else {
                vec![pc.clone(), pb.clone()]
            };
            let client = Client::connect(addrs, ClientConfig::default())
                .await
                .unwrap();
            ids.push(client.id().unwrap());
            let received = received.clone();
            readers.push(tokio::spawn(async move {
                for n in 0..EACH {
                    let m = tokio::time::timeout(Duration::from_secs(120), client.recv())
                        .await
                        .unwrap_or_else(|_| panic!("session {i}: message {n} never came"))
                        .unwrap();
                    // Exactly once and in order: each message is the next number.
                    assert_eq!(m.body, format!("{n}").as_bytes(), "session {i}");
                    received.fetch_add(1, Ordering::Relaxed);
                }
                client
            }));
        }
        let started = Instant::now();
        let senders: Vec<_> = ids
            .iter()
            .map(|&id| {
                let a = a.clone();
                tokio::spawn(async move {
                    let mut receipts = Vec::with_capacity(EACH);
                    for n in 0..EACH {
                        receipts.push(a.send_to(id, format!("{n}")).await.unwrap());
                    }
                    receipts
                })
            })
            .collect();
        // A third of the way in, s0 dies; it comes back at once, with nothing in memory.
        let deadline = Instant::now() + Duration::from_secs(120);
        while received.load(Ordering::Relaxed) < SESSIONS * EACH / 3 {
            assert!(Instant::now() < deadline, "no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fleet.member(0).proc.kill9();
        fleet.start_member(0);
        let mut resolved = 0;
        for s in senders {
            for r in s.await.unwrap() {
                tokio::time::timeout(Duration::from_secs(120), r)
                    .await
                    .expect("a receipt never resolved")
                    .unwrap();
                resolved += 1;
            }
        }
        let mut clients = Vec::new();
        for r in readers {
            clients.push(r.await.unwrap());
        }
        let cuts: u64 = proxies.iter().map(|p| p.stats().cuts()).sum();
        println!(
            "fleet send_to: {} messages to {SESSIONS} sessions on 2 servers, exactly once and in \
             order; {resolved} receipts; {cuts} links cut, 1 kill -9; {:.1} s",
            SESSIONS * EACH,
            started.elapsed().as_secs_f64()
        );
        assert_eq!(resolved, SESSIONS * EACH);
        assert!(cuts > 0, "the proxies cut nothing");
        drop(clients);
    });
}

/// The console of any server of the fleet lists, sends to and broadcasts to every session of
/// the fleet, whichever server holds it: here a console on a server of its own reaches a
/// client of `s0`, and reports the client's acknowledgement.
#[test]
fn the_console_reaches_sessions_held_by_another_server() {
    let fleet = Fleet::start("fleet-console", 1);
    let dir = &fleet.dir.0;
    let heard = dir.join("listen.txt");
    let addr = format!("127.0.0.1:{}", fleet.ports[0]);
    let mut client = Watched::spawn(
        &["listen", &addr, "--name", "bob"],
        Stdio::null(),
        Stdio::from(File::create(&heard).unwrap()),
    );
    client
        .wait_for("listening to", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("listen: {:?}", client.stderr()));
    let url = fleet.pg.url();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut operator = Watched::spawn(
        &[
            "serve",
            "--listen",
            &listen,
            "--state",
            &url,
            "--node",
            "ops",
            "--console",
            "--metrics",
            "127.0.0.1:0",
        ],
        Stdio::piped(),
        Stdio::null(),
    );
    operator
        .wait_for("console ready", Duration::from_secs(30))
        .unwrap();
    let mut keys = operator.child.stdin.take().unwrap();
    let mut type_line = |l: &str| keys.write_all(format!("{l}\n").as_bytes()).unwrap();
    // Listed once its session is stored (its handshake may still be under way).
    let mut listed = None;
    for _ in 0..100 {
        type_line("/list");
        listed = operator.wait_for("(bob) on s0 [live]", Duration::from_millis(300));
        if listed.is_some() {
            break;
        }
    }
    assert!(listed.is_some(), "{:?}", operator.stderr());
    assert!(
        operator
            .stderr()
            .iter()
            .any(|l| l == "1 sessions in the fleet")
    );
    // The same over HTTP, for dashboards.
    let metrics = operator
        .wait_for("metrics on http://", Duration::from_secs(30))
        .unwrap();
    let at = metrics
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_owned();
    let mut http = std::net::TcpStream::connect(&at).unwrap();
    http.write_all(b"GET /fleet/sessions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut http, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\"name\":\"bob\"") && answer.contains("\"node\":\"s0\""),
        "{answer}"
    );
    type_line("/send bob hello from ops");
    let acked = operator.wait_for("acknowledged it]", Duration::from_secs(30));
    assert!(acked.is_some(), "{:?}", operator.stderr());
    type_line("/broadcast to everyone");
    let stored = operator.wait_for(
        "stored for 1 sessions in the fleet",
        Duration::from_secs(30),
    );
    assert!(stored.is_some(), "{:?}", operator.stderr());
    type_line("/send nobody hi");
    assert!(
        operator
            .wait_for(
                "no session \"nobody\" in the fleet",
                Duration::from_secs(30)
            )
            .is_some()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&heard).unwrap_or_default();
        if text == "hello from ops\nto everyone\n" {
            break;
        }
        assert!(Instant::now() < deadline, "the client heard {text:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    type_line("/quit");
    assert!(operator.wait_exit(Duration::from_secs(30)).is_some());
    client.kill9();
}
