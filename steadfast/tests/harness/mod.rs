//! A two-peer harness on a virtual clock: one client and one server protocol core joined by a
//! simulated link that can be cut after N bytes (in the middle of a frame), reset, or stalled
//! (bytes stop, nothing closes). The server side keeps a table of sessions like a real server
//! (attached to a connection, or lingering), takes over sessions from half-open connections,
//! and the client reconnects and resumes after every loss.
//!
//! Both applications send generated messages whose bodies depend only on their index, so the
//! receiver can check each delivery: nothing lost, nothing duplicated, in order. Receipts
//! (`Event::Acknowledged`) are checked to cover every sequence number exactly once.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use steadfast::proto::{
    CloseCode, Config, Connection, ConnectionError, Event, RejectCode, ResumeToken, Seq, Session,
    SessionEnd, SessionId,
};

/// Body of the `index`-th message in one direction: its length varies from 1 byte to several
/// chunks; its content is a function of the index.
pub fn body(dir: u8, index: u64, max_len: usize) -> Bytes {
    let h = index.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ u64::from(dir);
    let len = match h % 100 {
        0..=59 => 1 + (h >> 8) as usize % 64,
        60..=94 => 1 + (h >> 8) as usize % 1_024,
        _ => 1 + (h >> 8) as usize % max_len,
    };
    let mut v = Vec::with_capacity(len);
    for j in 0..len {
        v.push((index as usize).wrapping_mul(31).wrapping_add(j) as u8 ^ dir);
    }
    Bytes::from(v)
}

/// Which side of the link a fault is noticed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Both ends see the transport end (an RST or FIN that arrives).
    Both,
    /// Only the client notices; the server's connection is left half-open.
    ClientOnly,
    /// Only the server notices; the client's connection is left half-open.
    ServerOnly,
}

#[derive(Debug)]
struct Link {
    client_gen: u64,
    server_conn: u64,
    to_server: VecDeque<u8>,
    to_client: VecDeque<u8>,
    /// Bytes that may still cross, per direction, before the link breaks.
    budget: Option<(bool, usize, Notice)>,
    stalled_until: Option<Instant>,
}

/// One direction's checker.
#[derive(Debug, Default)]
pub struct Flow {
    /// Index of the first message of the current session (it changes when a server restart
    /// ends a session and the applications start a new one).
    pub base: u64,
    /// Messages the sending application queued.
    pub sent: u64,
    /// Messages the receiving application took, all checked.
    pub delivered: u64,
    /// Acknowledged up to (exclusive), from receipts.
    pub acked_to: Option<Seq>,
    /// Receipts seen (sequence numbers).
    pub receipts: u64,
    /// Highest inbox length seen at the receiver.
    pub max_inbox: usize,
    /// Highest inbox bytes seen at the receiver.
    pub max_inbox_bytes: u64,
    /// Highest outbox length seen at the sender.
    pub max_outbox: usize,
    /// Highest outbox bytes seen at the sender.
    pub max_outbox_bytes: u64,
}

/// What the server keeps per session.
enum Slot {
    Attached(u64),
    Lingering(Box<Session>),
}

struct ServerConn {
    id: u64,
    conn: Connection,
}

/// Knobs of a simulation run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Messages each way.
    pub messages: u64,
    /// Largest message body.
    pub max_len: usize,
    /// Chance per step of a fault, in 1/10,000.
    pub fault_rate: u32,
    /// Largest number of bytes a cut lets through.
    pub cut_max: usize,
    /// Cut every time after 1..=N KB (progress test) instead of random faults.
    pub cut_every: Option<(usize, usize)>,
    /// With `cut_every`: count the bytes of both directions towards the cut (otherwise those
    /// of one direction, picked at random per connection).
    pub cut_both: bool,
    /// Largest number of messages an application sends per step.
    pub send_burst: usize,
    /// Largest number of messages an application takes per step (0 = slow reader off).
    pub recv_burst: usize,
    /// Largest number of bytes the link moves per step and direction.
    pub link_step: usize,
    /// Bytes the link buffers per direction (a socket's send buffer): a side writes only
    /// while there is room.
    pub link_capacity: usize,
    /// Server restarts without state (a crash with nothing durable), at most this many.
    pub restarts: u64,
    /// Give up after this many steps.
    pub max_steps: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            messages: 10_000,
            max_len: 40_000,
            fault_rate: 300,
            cut_max: 60_000,
            cut_every: None,
            cut_both: false,
            send_burst: 64,
            recv_burst: 96,
            link_step: 64 << 10,
            link_capacity: 256 << 10,
            restarts: 0,
            max_steps: 10_000_000,
        }
    }
}

/// Counters of a run.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Steps simulated.
    pub steps: u64,
    /// Faults injected, by kind.
    pub cuts: u64,
    /// Resets.
    pub resets: u64,
    /// Stalls (short and long).
    pub stalls: u64,
    /// Cuts aimed at a handshake (few bytes after a reconnect).
    pub handshake_cuts: u64,
    /// Connections made by the client.
    pub connections: u64,
    /// Resumes accepted by the server.
    pub resumes: u64,
    /// Sessions taken over from a half-open connection.
    pub takeovers: u64,
    /// Idle timeouts observed, and the longest time from the start of the silence.
    pub idle_timeouts: u64,
    /// Longest delay between a stall's start and a side declaring the connection dead.
    pub max_detection: Duration,
    /// Virtual time elapsed.
    pub virtual_time: Duration,
    /// Messages retransmitted after resumes (both sides).
    pub retransmitted: u64,
    /// Duplicates dropped by receivers (exact positions make this 0).
    pub duplicates_dropped: u64,
    /// Server restarts without state.
    pub restarts: u64,
    /// Messages handed back to the client when a restart ended its session.
    pub handed_back: u64,
    /// Of those, messages the dead server's application had taken but not yet acknowledged
    /// (delivered again in the next session: at-least-once across a crash).
    pub delivered_twice: u64,
    /// Protocol versions the client's established connections spoke.
    pub versions: std::collections::BTreeSet<u16>,
}

impl Report {
    /// All faults.
    pub fn faults(&self) -> u64 {
        self.cuts + self.resets + self.stalls
    }
}

/// The simulation.
pub struct Sim {
    pub now: Instant,
    pub start: Instant,
    rng: fastrand::Rng,
    pub config: Config,
    /// The server's configuration (the client's unless a test sets another, e.g. to speak
    /// another protocol version).
    pub server_config: Config,
    pub plan: Plan,
    // Client.
    client: Option<Connection>,
    client_gen: u64,
    parked: Option<Session>,
    reconnect_at: Option<Instant>,
    // Server.
    conns: Vec<ServerConn>,
    next_conn: u64,
    table: HashMap<SessionId, Slot>,
    link: Option<Link>,
    /// Since when the client's connection hears nothing because of a fault.
    client_silent_since: Option<Instant>,
    /// Bytes written into sockets that no longer lead anywhere (they fill up and block, like
    /// a half-open socket's send buffer), per client generation and server connection.
    void: HashMap<(bool, u64), usize>,
    /// Since when each server connection hears nothing because of a fault.
    server_silent_since: HashMap<u64, Instant>,
    /// Client-to-server flow ([0]) and server-to-client flow ([1]).
    pub flows: [Flow; 2],
    pub report: Report,
    /// Events that end a session, which a fault run must never see.
    pub session_ends: Vec<(bool, SessionEnd, usize)>,
    first_seq: Seq,
    /// Pending handshake cut: the next link gets a small budget.
    cut_next_handshake: bool,
    /// The server restarted without state; the client's session is about to be refused.
    restarting: bool,
}

const C2S: usize = 0;
const S2C: usize = 1;

impl Sim {
    /// A simulation with the given seed.
    pub fn new(seed: u64, config: Config, plan: Plan) -> Self {
        let now = Instant::now();
        let first_seq = Seq(0);
        let mut sim = Sim {
            now,
            start: now,
            rng: fastrand::Rng::with_seed(seed),
            client: None,
            client_gen: 0,
            parked: Some(Session::client(&config, Some("sim-client".into()))),
            reconnect_at: Some(now),
            conns: Vec::new(),
            next_conn: 0,
            table: HashMap::new(),
            link: None,
            client_silent_since: None,
            void: HashMap::new(),
            server_silent_since: HashMap::new(),
            flows: Default::default(),
            report: Report::default(),
            session_ends: Vec::new(),
            server_config: config.clone(),
            config,
            plan,
            first_seq,
            cut_next_handshake: false,
            restarting: false,
        };
        sim.first_seq = sim.parked.as_ref().unwrap().next_seq();
        sim
    }

    /// Runs until every message in both directions is delivered and acknowledged.
    ///
    /// # Panics
    /// On any violation of the guarantees, or if it does not finish in `max_steps`.
    pub fn run(&mut self) -> Report {
        while !self.done() {
            assert!(
                self.report.steps < self.plan.max_steps,
                "no completion after {} steps: {:?} {:?}",
                self.report.steps,
                self.flows,
                self.report
            );
            assert!(
                self.session_ends.is_empty(),
                "session ended during a fault run: {:?}",
                self.session_ends
            );
            self.step();
        }
        self.report.virtual_time = self.now - self.start;
        let stats: Vec<_> = [self.client_session(), self.server_session()]
            .into_iter()
            .flatten()
            .map(|s| s.stats())
            .collect();
        for st in stats {
            self.report.retransmitted += st.retransmitted;
            self.report.duplicates_dropped += st.duplicates_dropped;
        }
        self.report.clone()
    }

    fn done(&self) -> bool {
        let n = self.plan.messages;
        self.flows.iter().all(|f| {
            f.sent == n
                && f.delivered == n
                && f.acked_to == Some(Seq(self.first_seq.0 + n - f.base))
        })
    }

    /// One step: applications act, bytes move, faults strike, time passes.
    pub fn step(&mut self) {
        self.report.steps += 1;
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!(
                "t step {} now {:?} silent {:?} link {:?} client {:?}",
                self.report.steps,
                self.now - self.start,
                self.client_silent_since.map(|t| t - self.start),
                self.link.as_ref().map(|l| (
                    l.budget,
                    l.stalled_until.map(|t| t - self.start),
                    l.to_server.len(),
                    l.to_client.len()
                )),
                self.client
                    .as_ref()
                    .map(|c| (c.is_established(), c.poll_timeout().map(|t| t - self.start))),
            );
        }
        if std::env::var("SIM_DEBUG").is_ok() && self.report.steps % 100_000 == 0 {
            eprintln!(
                "step {} now {:?} link {:?} client {:?} flows {:?}",
                self.report.steps,
                self.now - self.start,
                self.link.as_ref().map(|l| (
                    l.budget,
                    l.stalled_until.is_some(),
                    l.to_server.len(),
                    l.to_client.len()
                )),
                self.client
                    .as_ref()
                    .map(|c| (c.is_established(), c.is_closed())),
                self.flows
                    .iter()
                    .map(|f| (f.sent, f.delivered, f.acked_to))
                    .collect::<Vec<_>>()
            );
        }
        // Timers fired at the end of the last step are seen before the link moves again.
        self.events();
        self.maybe_reconnect();
        self.apps();
        self.transmit();
        self.deliver();
        self.faults();
        self.events();
        self.reap();
        self.advance();
    }

    fn client_session(&self) -> Option<&Session> {
        match &self.client {
            Some(c) if c.session().is_some() => c.session(),
            _ => self.parked.as_ref(),
        }
    }

    fn client_session_mut(&mut self) -> Option<&mut Session> {
        match &mut self.client {
            Some(c) if c.session().is_some() => c.session_mut(),
            _ => self.parked.as_mut(),
        }
    }

    /// The server's end of the client's session. A server may also hold sessions whose
    /// WELCOME never reached the client (the client then asked for a new one); those linger
    /// unused and are not the peer's.
    fn server_session(&self) -> Option<&Session> {
        let sid = self.client_session()?.id()?;
        let slot = self.table.get(&sid)?;
        match slot {
            Slot::Lingering(s) => Some(s),
            Slot::Attached(id) => self
                .conns
                .iter()
                .find(|c| c.id == *id)
                .and_then(|c| c.conn.session()),
        }
    }

    fn server_session_mut(&mut self) -> Option<&mut Session> {
        let sid = self.client_session()?.id()?;
        let slot = self.table.get_mut(&sid)?;
        match slot {
            Slot::Lingering(s) => Some(s),
            Slot::Attached(id) => {
                let id = *id;
                self.conns
                    .iter_mut()
                    .find(|c| c.id == id)
                    .and_then(|c| c.conn.session_mut())
            }
        }
    }

    fn maybe_reconnect(&mut self) {
        if self.client.is_some() || self.reconnect_at.is_none_or(|t| self.now < t) {
            return;
        }
        let Some(session) = self.parked.take() else {
            return;
        };
        self.reconnect_at = None;
        self.client_silent_since = None;
        self.client_gen += 1;
        self.report.connections += 1;
        let conn = Connection::connect(self.config.clone(), self.now, session, None).unwrap();
        self.client = Some(conn);
        let server = Connection::accept(self.server_config.clone(), self.now).unwrap();
        self.next_conn += 1;
        self.conns.push(ServerConn {
            id: self.next_conn,
            conn: server,
        });
        let mut link = Link {
            client_gen: self.client_gen,
            server_conn: self.next_conn,
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            budget: None,
            stalled_until: None,
        };
        if let Some((lo, hi)) = self.plan.cut_every {
            let dir = self.rng.bool();
            link.budget = Some((dir, self.rng.usize(lo..=hi), Notice::Both));
            self.report.cuts += 1;
        } else if std::mem::take(&mut self.cut_next_handshake) {
            // Cut inside the HELLO, the WELCOME or the first frames after it.
            let dir = self.rng.bool();
            let notice = self.pick_notice();
            link.budget = Some((dir, self.rng.usize(0..200), notice));
            self.report.cuts += 1;
            self.report.handshake_cuts += 1;
        }
        self.link = Some(link);
    }

    fn pick_notice(&mut self) -> Notice {
        match self.rng.u8(0..4) {
            0 => Notice::ClientOnly,
            1 => Notice::ServerOnly,
            _ => Notice::Both,
        }
    }

    fn apps(&mut self) {
        let (n, max_len, burst, recv_burst) = (
            self.plan.messages,
            self.plan.max_len,
            self.plan.send_burst,
            self.plan.recv_burst,
        );
        let sends = self.rng.usize(0..=burst);
        let recvs = self.rng.usize(0..=recv_burst);
        let client_recvs = self.rng.usize(0..=recv_burst);
        let sends2 = self.rng.usize(0..=burst);
        for (dir, count, is_client) in [(C2S, sends, true), (S2C, sends2, false)] {
            for _ in 0..count {
                if self.flows[dir].sent == n {
                    break;
                }
                let k = self.flows[dir].sent;
                let b = body(dir as u8, k, max_len);
                let session = if is_client {
                    self.client_session_mut()
                } else {
                    self.server_session_mut()
                };
                let Some(session) = session else { break };
                match session.send(b, k) {
                    Ok(seq) => {
                        assert_eq!(seq, Seq(self.first_seq.0 + k - self.flows[dir].base));
                        self.flows[dir].sent += 1;
                    }
                    Err(steadfast::proto::SendError::Full) => break,
                    Err(e) => panic!("send failed: {e}"),
                }
            }
            let session = if is_client {
                self.client_session()
            } else {
                self.server_session()
            };
            if let Some((len, bytes)) = session.map(|s| (s.outbox_len(), s.outbox_bytes())) {
                let f = &mut self.flows[dir];
                f.max_outbox = f.max_outbox.max(len);
                f.max_outbox_bytes = f.max_outbox_bytes.max(bytes);
            }
        }
        // Receivers: the server takes client messages, the client server messages.
        for (dir, count) in [(C2S, recvs), (S2C, client_recvs)] {
            let first = self.first_seq;
            let session = if dir == C2S {
                self.server_session_mut()
            } else {
                self.client_session_mut()
            };
            let Some(session) = session else { continue };
            let (inbox, inbox_bytes) = (session.inbox_len(), session.inbox_bytes());
            let mut got = Vec::new();
            for _ in 0..count {
                match session.recv() {
                    Some(m) => got.push(m),
                    None => break,
                }
            }
            let f = &mut self.flows[dir];
            f.max_inbox = f.max_inbox.max(inbox);
            f.max_inbox_bytes = f.max_inbox_bytes.max(inbox_bytes);
            for m in got {
                let k = f.delivered;
                assert_eq!(
                    m.seq,
                    Seq(first.0 + k - f.base),
                    "direction {dir}: out of order or lost"
                );
                assert_eq!(m.timestamp_us, k, "direction {dir}: wrong timestamp");
                assert_eq!(
                    m.body,
                    body(dir as u8, k, max_len),
                    "direction {dir}: body {k}"
                );
                f.delivered += 1;
            }
        }
    }

    fn transmit(&mut self) {
        let mut buf = Vec::new();
        let now = self.now;
        let cap = self.plan.link_capacity;
        if let Some(c) = self.client.as_mut() {
            let queue = match self.link.as_mut() {
                Some(link) if link.client_gen == self.client_gen => Some(&mut link.to_server),
                _ => None,
            };
            // A side writes while its socket has room.
            let void = self.void.entry((true, self.client_gen)).or_insert(0);
            let used = queue.as_ref().map_or(*void, |q| q.len());
            buf.clear();
            while buf.len() < cap.saturating_sub(used) && c.poll_transmit(now, &mut buf) > 0 {}
            match queue {
                Some(q) => q.extend(&buf),
                None => *void += buf.len(),
            }
        }
        for sc in &mut self.conns {
            let queue = match self.link.as_mut() {
                Some(link) if link.server_conn == sc.id => Some(&mut link.to_client),
                _ => None,
            };
            let void = self.void.entry((false, sc.id)).or_insert(0);
            let used = queue.as_ref().map_or(*void, |q| q.len());
            buf.clear();
            while buf.len() < cap.saturating_sub(used) && sc.conn.poll_transmit(now, &mut buf) > 0 {
            }
            match queue {
                Some(q) => q.extend(&buf),
                None => *void += buf.len(),
            }
        }
    }

    fn deliver(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if let Some(until) = link.stalled_until {
            if self.now < until {
                return;
            }
            link.stalled_until = None;
            self.client_silent_since = None;
            self.server_silent_since.remove(&link.server_conn);
        }
        let mut broke = None;
        for to_server in [true, false] {
            let queue = if to_server {
                &mut link.to_server
            } else {
                &mut link.to_client
            };
            let mut n = self.rng.usize(1..=self.plan.link_step).min(queue.len());
            if let Some((dir, budget, notice)) = link.budget.as_mut()
                && (*dir == to_server || self.plan.cut_both)
            {
                n = n.min(*budget);
                *budget -= n;
                if *budget == 0 {
                    broke = Some(*notice);
                }
            }
            let chunk: Vec<u8> = queue.drain(..n).collect();
            if chunk.is_empty() {
                continue;
            }
            if to_server {
                let id = link.server_conn;
                if let Some(sc) = self.conns.iter_mut().find(|c| c.id == id) {
                    sc.conn.handle_input(self.now, &chunk);
                }
            } else if let Some(c) = self.client.as_mut() {
                c.handle_input(self.now, &chunk);
            }
            if broke.is_some() {
                break;
            }
        }
        if let Some(notice) = broke {
            self.break_link(notice);
        }
    }

    /// Ends the link; the sides that notice get a disconnect, the others stay half-open.
    pub fn break_link(&mut self, notice: Notice) {
        let Some(link) = self.link.take() else {
            return;
        };
        if notice == Notice::ServerOnly {
            self.client_silent_since.get_or_insert(self.now);
        }
        if notice == Notice::ClientOnly {
            self.server_silent_since
                .entry(link.server_conn)
                .or_insert(self.now);
        }
        if matches!(notice, Notice::Both | Notice::ClientOnly)
            && let Some(c) = self.client.as_mut()
        {
            c.handle_disconnect();
        }
        if matches!(notice, Notice::Both | Notice::ServerOnly)
            && let Some(sc) = self.conns.iter_mut().find(|c| c.id == link.server_conn)
        {
            sc.conn.handle_disconnect();
        }
    }

    fn faults(&mut self) {
        if self.plan.cut_every.is_some() || self.plan.fault_rate == 0 {
            return;
        }
        if self.report.restarts < self.plan.restarts
            && !self.restarting
            && self.flows[C2S].sent > self.flows[C2S].base
            && self.rng.u32(0..100_000) < self.plan.fault_rate
        {
            self.restart_server();
            return;
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if link.budget.is_some() || link.stalled_until.is_some() {
            return;
        }
        if self.rng.u32(0..10_000) >= self.plan.fault_rate {
            return;
        }
        match self.rng.u8(0..10) {
            0..=4 => {
                let dir = self.rng.bool();
                let after = self.rng.usize(0..=self.plan.cut_max);
                let notice = match self.rng.u8(0..4) {
                    0 => Notice::ClientOnly,
                    1 => Notice::ServerOnly,
                    _ => Notice::Both,
                };
                if let Some(link) = self.link.as_mut() {
                    link.budget = Some((dir, after, notice));
                }
                self.report.cuts += 1;
            }
            5 | 6 => {
                self.report.resets += 1;
                self.break_link(Notice::Both);
            }
            7 => {
                // The next connection is cut during its handshake or resume.
                self.report.resets += 1;
                self.cut_next_handshake = true;
                self.break_link(Notice::Both);
            }
            _ => {
                // A stall: short ones must be survived, long ones detected by both sides.
                let long = self.rng.bool();
                let d = if long {
                    self.config_idle() + Duration::from_millis(self.rng.u64(0..5_000))
                } else {
                    Duration::from_millis(self.rng.u64(100..3_000))
                };
                if let Some(link) = self.link.as_mut() {
                    link.stalled_until = Some(self.now + d);
                    self.server_silent_since.insert(link.server_conn, self.now);
                }
                self.client_silent_since = Some(self.now);
                self.report.stalls += 1;
            }
        }
    }

    fn config_idle(&self) -> Duration {
        // The default idle timeout unless a test changed it; see Plan users.
        Duration::from_secs(10)
    }

    fn events(&mut self) {
        let now = self.now;
        // Client.
        let mut client_lost = false;
        let mut restart_check = None;
        if let Some(c) = self.client.as_mut() {
            while let Some(ev) = c.poll_event() {
                match ev {
                    Event::Acknowledged { first, end } => {
                        record_ack(&mut self.flows[C2S], self.first_seq, first, end);
                    }
                    Event::Established { .. } => {
                        self.report.versions.extend(c.version());
                    }
                    Event::Disconnected(e) => {
                        if e == ConnectionError::IdleTimeout {
                            if self.client_silent_since.is_none() {
                                eprintln!(
                                    "step {} now {:?} link {:?}",
                                    self.report.steps,
                                    now - self.start,
                                    self.link.as_ref().map(|l| (
                                        l.client_gen,
                                        self.client_gen,
                                        l.budget,
                                        l.stalled_until.map(|t| t - self.start),
                                        l.to_server.len(),
                                        l.to_client.len()
                                    ))
                                );
                            }
                            let since = self
                                .client_silent_since
                                .expect("idle timeout on a healthy link: heartbeats failed");
                            self.report.idle_timeouts += 1;
                            self.report.max_detection = self.report.max_detection.max(now - since);
                        }
                        client_lost = true;
                    }
                    Event::SessionEnded {
                        reason,
                        discarded,
                        unacknowledged,
                    } => {
                        if self.restarting {
                            restart_check = Some((reason, unacknowledged));
                        } else {
                            self.session_ends.push((true, reason, discarded));
                        }
                        client_lost = true;
                    }
                    _ => {}
                }
            }
        }
        if let Some((reason, unacked)) = restart_check {
            self.new_session_after_restart(reason, unacked);
        }
        if client_lost {
            let mut c = self.client.take().unwrap();
            if let Some(s) = c.take_session() {
                self.parked = Some(s);
            }
            // Jittered backoff, near-immediate first retry.
            self.reconnect_at = Some(now + Duration::from_millis(self.rng.u64(0..30)));
            if let Some(link) = &self.link
                && link.client_gen == self.client_gen
            {
                // The client closed its socket: the server sees it, unless the link is stalled
                // (then the server's connection stays half-open until its idle timeout or a
                // takeover).
                let notice = if link.stalled_until.is_some() {
                    Notice::ClientOnly
                } else {
                    Notice::Both
                };
                self.break_link(notice);
            }
        }
        // Server connections.
        let mut i = 0;
        while i < self.conns.len() {
            let id = self.conns[i].id;
            let mut evs = Vec::new();
            while let Some(ev) = self.conns[i].conn.poll_event() {
                evs.push(ev);
            }
            for ev in evs {
                match ev {
                    Event::Hello(req) => self.decide(i, req),
                    Event::Acknowledged { first, end } => {
                        record_ack(&mut self.flows[S2C], self.first_seq, first, end);
                    }
                    Event::Disconnected(e) => {
                        if e == ConnectionError::IdleTimeout {
                            let since = *self
                                .server_silent_since
                                .get(&id)
                                .expect("idle timeout on a healthy link: heartbeats failed");
                            self.report.idle_timeouts += 1;
                            self.report.max_detection = self.report.max_detection.max(now - since);
                        }
                        if let Some(s) = self.conns[i].conn.take_session() {
                            let sid = s.id().unwrap();
                            if matches!(self.table.get(&sid), Some(Slot::Attached(a)) if *a == id) {
                                self.table.insert(sid, Slot::Lingering(Box::new(s)));
                            }
                        }
                    }
                    Event::SessionEnded {
                        reason, discarded, ..
                    } => {
                        self.session_ends.push((false, reason, discarded));
                        self.table
                            .retain(|_, slot| !matches!(slot, Slot::Attached(a) if *a == id));
                    }
                    _ => {}
                }
            }
            i += 1;
        }
    }

    /// The server application's answer to a HELLO.
    fn decide(&mut self, i: usize, req: steadfast::proto::HelloRequest) {
        let now = self.now;
        let token = ResumeToken(self.rng.u128(..).to_le_bytes());
        let Some(resume) = req.resume else {
            let id = SessionId(self.rng.u128(..).to_le_bytes());
            self.conns[i].conn.accept_new(now, id, token);
            self.table.insert(id, Slot::Attached(self.conns[i].id));
            return;
        };
        let session = match self.table.remove(&resume.session_id) {
            None => None,
            Some(Slot::Lingering(s)) => {
                if s.verify_token(&resume.token) {
                    Some(*s)
                } else {
                    self.table.insert(resume.session_id, Slot::Lingering(s));
                    None
                }
            }
            Some(Slot::Attached(old)) => {
                let j = self.conns.iter().position(|c| c.id == old).unwrap();
                let ok = self.conns[j]
                    .conn
                    .session()
                    .is_some_and(|s| s.verify_token(&resume.token));
                if ok {
                    // §4.4 rule B: the resume takes the session over from the half-open
                    // connection.
                    self.report.takeovers += 1;
                    self.conns[j].conn.take_session()
                } else {
                    self.table.insert(resume.session_id, Slot::Attached(old));
                    None
                }
            }
        };
        let Some(session) = session else {
            self.conns[i]
                .conn
                .reject(RejectCode::UnknownSession, 0, "unknown session");
            return;
        };
        let id = self.conns[i].id;
        match self.conns[i].conn.accept_resume(now, session, token) {
            Ok(()) => {
                self.report.resumes += 1;
                self.table.insert(resume.session_id, Slot::Attached(id));
            }
            Err(s) => {
                self.table.insert(resume.session_id, Slot::Lingering(s));
            }
        }
    }

    /// Drops connections that are over and whose bytes are out.
    fn reap(&mut self) {
        // A closing connection writes its last frames (a REJECT, a CLOSE) before its socket
        // closes.
        let now = self.now;
        for sc in &mut self.conns {
            if sc.conn.is_closed()
                && let Some(link) = self.link.as_mut()
                && link.server_conn == sc.id
            {
                let mut buf = Vec::new();
                while sc.conn.poll_transmit(now, &mut buf) > 0 {}
                link.to_client.extend(&buf);
            }
        }
        let link_server = self.link.as_ref().map(|l| l.server_conn);
        let mut closed_link_server = false;
        self.conns.retain(|c| {
            let keep = !c.conn.is_closed();
            if !keep && Some(c.id) == link_server {
                closed_link_server = true;
            }
            keep
        });
        if closed_link_server {
            // The server closed its socket: the client reads the rest, then EOF.
            if let Some(link) = self.link.as_mut() {
                let rest: Vec<u8> = link.to_client.drain(..).collect();
                if link.stalled_until.is_none()
                    && link.client_gen == self.client_gen
                    && let Some(c) = self.client.as_mut()
                {
                    c.handle_input(self.now, &rest);
                    c.handle_disconnect();
                }
            }
            self.link = None;
        }
    }

    fn advance(&mut self) {
        let stalled = self
            .link
            .as_ref()
            .is_some_and(|l| l.stalled_until.is_some_and(|t| t > self.now));
        // Without a link nothing moves but the clock.
        let idle = self.link.is_none();
        let mut dt = Duration::from_micros(self.rng.u64(0..=1_000));
        if stalled || idle {
            // Nothing moves: jump to the next deadline.
            let mut next = self.link.as_ref().and_then(|l| l.stalled_until);
            let deadlines = self
                .client
                .iter()
                .filter_map(|c| c.poll_timeout())
                .chain(self.conns.iter().filter_map(|c| c.conn.poll_timeout()))
                .chain(self.reconnect_at);
            // (A deadline already past is work a blocked writer cannot do yet.)
            for d in deadlines.filter(|d| *d > self.now) {
                next = Some(next.map_or(d, |n: Instant| n.min(d)));
            }
            if let Some(n) = next
                && n > self.now
            {
                dt = n - self.now;
            }
        }
        self.now += dt;
        let now = self.now;
        if let Some(c) = self.client.as_mut()
            && c.poll_timeout().is_some_and(|t| t <= now)
        {
            c.handle_timeout(now);
        }
        for sc in &mut self.conns {
            if sc.conn.poll_timeout().is_some_and(|t| t <= now) {
                sc.conn.handle_timeout(now);
            }
        }
    }

    /// The server process dies and comes back with no state: every connection is reset and
    /// every session forgotten.
    pub fn restart_server(&mut self) {
        self.report.restarts += 1;
        self.restarting = true;
        self.link = None;
        self.conns.clear();
        self.table.clear();
        self.server_silent_since.clear();
        if let Some(c) = self.client.as_mut() {
            c.handle_disconnect();
        }
    }

    /// The client learned that its session is gone. No silent loss: what comes back must be
    /// exactly the messages not acknowledged, in order. Then both applications carry on in a
    /// new session, the client resending what came back (at-least-once across the crash).
    fn new_session_after_restart(
        &mut self,
        reason: SessionEnd,
        unacked: Vec<steadfast::proto::Message>,
    ) {
        assert!(
            matches!(
                reason,
                SessionEnd::Rejected {
                    code: RejectCode::UnknownSession,
                    ..
                }
            ),
            "{reason:?}"
        );
        let f = &self.flows[C2S];
        let acked_index = f.base + f.acked_to.map_or(0, |a| a.0 - self.first_seq.0);
        let expected: Vec<u64> = (acked_index..f.sent).collect();
        let got: Vec<u64> = unacked.iter().map(|m| m.timestamp_us).collect();
        assert_eq!(
            got, expected,
            "handed back must be exactly the unacknowledged suffix"
        );
        for m in &unacked {
            assert_eq!(m.body, body(C2S as u8, m.timestamp_us, self.plan.max_len));
        }
        self.report.handed_back += unacked.len() as u64;
        self.report.delivered_twice += f.delivered.saturating_sub(acked_index);
        let f = &mut self.flows[C2S];
        f.sent = acked_index;
        f.delivered = acked_index;
        f.base = acked_index;
        f.acked_to = None;
        // Receipts restart with the new session; earlier ones were checked in the old one.
        f.receipts = acked_index;
        // The new server application carries on from what the client has taken.
        let f = &mut self.flows[S2C];
        let taken = f.delivered;
        f.sent = taken;
        f.base = taken;
        f.acked_to = None;
        f.receipts = taken;
        self.parked = Some(Session::client(&self.config, Some("sim-client".into())));
        self.restarting = false;
    }

    /// Closes the session from the client side and runs until both ends report the end.
    pub fn close_from_client(&mut self) -> Vec<(bool, SessionEnd, usize)> {
        let now = self.now;
        if let Some(c) = self.client.as_mut() {
            c.close(now, CloseCode::Normal, "done");
        }
        for _ in 0..10_000 {
            if self.session_ends.len() >= 2 {
                break;
            }
            self.transmit();
            self.deliver();
            self.events();
            self.reap();
            self.maybe_reconnect();
            self.advance();
        }
        std::mem::take(&mut self.session_ends)
    }
}

fn record_ack(flow: &mut Flow, first_seq: Seq, first: Seq, end: Seq) {
    let expected = flow.acked_to.unwrap_or(first_seq);
    assert_eq!(
        first, expected,
        "receipts must be contiguous and never repeat"
    );
    assert!(end > first, "empty receipt range");
    flow.receipts += end.0 - first.0;
    flow.acked_to = Some(end);
}
