//! One client and one server core joined by hand, on a virtual clock: one test per protocol
//! state and rule (PROTOCOL.md §4.4 rules A and B, §6 flow control, §7 ending, §8 liveness).

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use steadfast::proto::{
    CloseCode, Config, Connection, ConnectionError, Event, RejectCode, ResumeToken, SendError, Seq,
    Session, SessionEnd, SessionId, Window,
};

const SID: SessionId = SessionId([0x5a; 16]);

fn token(n: u8) -> ResumeToken {
    ResumeToken([n; 16])
}

/// Bytes in flight between the two, with a capacity per direction like socket buffers.
struct Pair {
    now: Instant,
    client: Connection,
    server: Connection,
    to_server: VecDeque<u8>,
    to_client: VecDeque<u8>,
    /// Bytes moved per direction per `pump_once` (the link's speed).
    step_bytes: usize,
    capacity: usize,
    client_events: Vec<Event>,
    server_events: Vec<Event>,
}

impl Pair {
    fn new(config: Config) -> Pair {
        Pair::with_configs(config.clone(), config)
    }

    fn with_configs(client: Config, server: Config) -> Pair {
        let now = Instant::now();
        let session = Session::client(&client, Some("alice".into()));
        let mut p = Pair {
            now,
            client: Connection::connect(client, now, session, None).unwrap(),
            server: Connection::accept(server, now).unwrap(),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            step_bytes: usize::MAX,
            capacity: usize::MAX,
            client_events: Vec::new(),
            server_events: Vec::new(),
        };
        p.pump();
        assert!(p.client.is_established() && p.server.is_established());
        p
    }

    /// Moves bytes once in each direction and collects events; answers HELLO with a new
    /// session.
    fn pump_once(&mut self) -> bool {
        let mut moved = false;
        let mut buf = Vec::new();
        for (conn, queue) in [
            (&mut self.client, &mut self.to_server),
            (&mut self.server, &mut self.to_client),
        ] {
            buf.clear();
            while queue.len() + buf.len() < self.capacity
                && conn.poll_transmit(self.now, &mut buf) > 0
            {}
            moved |= !buf.is_empty();
            queue.extend(&buf);
        }
        for (conn, queue) in [
            (&mut self.server, &mut self.to_server),
            (&mut self.client, &mut self.to_client),
        ] {
            let n = queue.len().min(self.step_bytes);
            if n > 0 {
                let chunk: Vec<u8> = queue.drain(..n).collect();
                conn.handle_input(self.now, &chunk);
                moved = true;
            }
        }
        while let Some(ev) = self.server.poll_event() {
            if let Event::Hello(req) = &ev
                && req.resume.is_none()
            {
                self.server.accept_new(self.now, SID, token(1));
            }
            self.server_events.push(ev);
        }
        while let Some(ev) = self.client.poll_event() {
            self.client_events.push(ev);
        }
        moved
    }

    fn pump(&mut self) {
        for _ in 0..100_000 {
            if !self.pump_once() {
                return;
            }
        }
        panic!("the pair never became quiet");
    }

    /// Lets `d` pass in steps of `step`, firing timers, moving bytes only if `link` is up.
    fn advance(&mut self, d: Duration, step: Duration, link: bool) {
        let end = self.now + d;
        while self.now < end {
            self.now += step;
            let now = self.now;
            for conn in [&mut self.client, &mut self.server] {
                if conn.poll_timeout().is_some_and(|t| t <= now) {
                    conn.handle_timeout(now);
                }
            }
            if link {
                self.pump_once();
            } else {
                self.collect();
            }
        }
    }

    fn collect(&mut self) {
        while let Some(ev) = self.server.poll_event() {
            self.server_events.push(ev);
        }
        while let Some(ev) = self.client.poll_event() {
            self.client_events.push(ev);
        }
    }

    /// Both transports die: in-flight bytes are lost.
    fn cut(&mut self) {
        self.to_client.clear();
        self.to_server.clear();
        self.client.handle_disconnect();
        self.server.handle_disconnect();
        self.collect();
    }

    /// The client resumes on a new connection; the server application takes the session from
    /// `old` (lingering or half-open) and rotates its token to `fresh`.
    fn resume(&mut self, fresh: u8) {
        let session = self.client.take_session().unwrap();
        let config = Config::default();
        self.client = Connection::connect(config.clone(), self.now, session, None).unwrap();
        let mut old = std::mem::replace(
            &mut self.server,
            Connection::accept(config, self.now).unwrap(),
        );
        self.to_client.clear();
        self.to_server.clear();
        let mut buf = Vec::new();
        self.client.poll_transmit(self.now, &mut buf);
        self.server.handle_input(self.now, &buf);
        let Some(Event::Hello(req)) = self.server.poll_event() else {
            panic!("no HELLO")
        };
        let r = req.resume.unwrap();
        assert!(old.session().unwrap().verify_token(&r.token));
        let session = old.take_session().unwrap();
        self.server
            .accept_resume(self.now, session, token(fresh))
            .unwrap();
        self.pump();
    }

    fn count<F: Fn(&Event) -> bool>(events: &[Event], f: F) -> usize {
        events.iter().filter(|e| f(e)).count()
    }
}

fn send_n(conn: &mut Connection, n: u64) {
    for i in 0..n {
        conn.send(Bytes::from(i.to_be_bytes().to_vec()), i).unwrap();
    }
}

fn take_all(conn: &mut Connection) -> Vec<u64> {
    let mut v = Vec::new();
    while let Some(m) = conn.recv() {
        v.push(u64::from_be_bytes(m.body[..].try_into().unwrap()));
    }
    v
}

/// PONGs received by each side while the pair idles for ten minutes (virtual time, 100 ms
/// steps); panics if a connection dropped.
fn pongs_while_idle(client: Config, server: Config) -> (usize, usize) {
    let mut p = Pair::with_configs(client, server);
    p.advance(Duration::from_secs(600), Duration::from_millis(100), true);
    assert!(p.client.is_established() && p.server.is_established());
    assert_eq!(
        Pair::count(&p.client_events, |e| matches!(e, Event::Disconnected(_)))
            + Pair::count(&p.server_events, |e| matches!(e, Event::Disconnected(_))),
        0
    );
    let pongs = |events: &[Event]| Pair::count(events, |e| matches!(e, Event::Pong { .. }));
    (pongs(&p.client_events), pongs(&p.server_events))
}

#[test]
fn heartbeats_keep_an_idle_connection_alive_and_measure_rtt() {
    // Version 2 (§8): the server pings every 3 s; the client, hearing those PINGs within its
    // quiet interval (5 s), sends none of its own: one PING and one PONG per 3 s in all.
    let (client, server) = pongs_while_idle(Config::default(), Config::default());
    assert!(
        (190..=210).contains(&server),
        "{server} server pongs in 600 s"
    );
    assert_eq!(client, 0, "the client pinged a server it hears from");
    // Version 1: each side pings every 3 s.
    let v1 = Config::default().versions(1, 1);
    let (client, server) = pongs_while_idle(v1.clone(), v1);
    assert!(
        (190..=210).contains(&client),
        "{client} client pongs in 600 s"
    );
    assert!(
        (190..=210).contains(&server),
        "{server} server pongs in 600 s"
    );
}

/// A version-2 server that pings less often than the client's quiet interval: the client pings
/// whenever nothing arrived for it (half the idle timeout), and neither side times out.
#[test]
fn a_version_2_client_pings_when_the_server_is_quiet() {
    let server = Config::default()
        .keepalive_interval(Duration::from_secs(9))
        .idle_timeout(Duration::from_secs(10));
    let (client, server) = pongs_while_idle(Config::default(), server);
    // Every 9 s the server's PING; the client's after 5 s quiet in between: 600 / 9 each.
    assert!(
        (60..=70).contains(&client),
        "{client} client pongs in 600 s"
    );
    assert!(
        (60..=70).contains(&server),
        "{server} server pongs in 600 s"
    );
}

#[test]
fn a_silent_link_is_declared_dead_within_the_idle_timeout_on_both_sides() {
    let mut p = Pair::new(Config::default());
    p.advance(Duration::from_secs(5), Duration::from_millis(10), true);
    let silence = p.now;
    // Bytes stop; nothing closes.
    let mut detected = [None, None];
    for _ in 0..2_000 {
        p.advance(Duration::from_millis(10), Duration::from_millis(10), false);
        for (i, events) in [&p.client_events, &p.server_events].into_iter().enumerate() {
            if detected[i].is_none()
                && events
                    .iter()
                    .any(|e| matches!(e, Event::Disconnected(ConnectionError::IdleTimeout)))
            {
                detected[i] = Some(p.now - silence);
            }
        }
        if detected.iter().all(Option::is_some) {
            break;
        }
    }
    println!("half-open detected after {detected:?} of silence (idle timeout 10 s)");
    for d in detected {
        let d = d.expect("a side never noticed");
        assert!(d <= Duration::from_secs(10), "{d:?}");
        // Not before the idle timeout either, counted from the last byte received.
        assert!(d >= Duration::from_secs(7), "{d:?}");
    }
    // The sessions survived: both can resume.
    assert!(p.client.take_session().is_some());
    assert!(p.server.take_session().is_some());
}

#[test]
fn a_large_message_does_not_starve_heartbeats() {
    let config = Config::default()
        .idle_timeout(Duration::from_millis(1_000))
        .keepalive_interval(Duration::from_millis(250));
    let mut p = Pair::new(config);
    // A slow link: 64 KiB per 10 ms, buffers of 64 KiB each way.
    p.step_bytes = 64 << 10;
    p.capacity = 64 << 10;
    let body = Bytes::from(vec![7u8; 16 << 20]);
    p.client.send(body.clone(), 0).unwrap();
    let pongs_before = Pair::count(&p.server_events, |e| matches!(e, Event::Pong { .. }));
    let mut elapsed = Duration::ZERO;
    while p.server.session().unwrap().inbox_len() == 0 {
        p.advance(Duration::from_millis(10), Duration::from_millis(10), true);
        elapsed += Duration::from_millis(10);
        assert!(elapsed < Duration::from_secs(60), "transfer stuck");
    }
    let pongs = Pair::count(&p.server_events, |e| matches!(e, Event::Pong { .. })) - pongs_before;
    println!(
        "16 MiB took {elapsed:?} of virtual time; {pongs} PONGs reached the receiver meanwhile"
    );
    // The transfer lasted several idle timeouts; heartbeats flowed both ways throughout (the
    // server's PINGs and the sender's PONGs: a version-2 client that hears the server stays
    // quiet, §8).
    assert!(elapsed > Duration::from_secs(2));
    assert!(pongs as u128 >= elapsed.as_millis() / 250 - 2, "{pongs}");
    assert!(p.client.is_established() && p.server.is_established());
    assert_eq!(p.server.recv().unwrap().body, body);
}

#[test]
fn a_slow_reader_bounds_memory_and_loses_nothing() {
    let window = Window {
        messages: 1_000,
        bytes: 64 << 10,
    };
    let config = Config::default()
        .window(window)
        .max_message(64 << 10)
        .outbox(2_000, 1 << 20);
    let mut p = Pair::new(config);
    let total = 1_000_000u64;
    let mut next = 0u64;
    let mut got = 0u64;
    let mut full = 0u64;
    let mut max_inbox = 0;
    let mut max_outbox = 0;
    let mut round = 0u64;
    while got < total {
        round += 1;
        while next < total {
            match p
                .client
                .send(Bytes::from(next.to_be_bytes().to_vec()), next)
            {
                Ok(_) => next += 1,
                Err(SendError::Full) => {
                    full += 1;
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        p.advance(Duration::from_millis(1), Duration::from_millis(1), true);
        let s = p.server.session().unwrap();
        max_inbox = max_inbox.max(s.inbox_len());
        assert!(s.inbox_bytes() <= u64::from(window.bytes) + 8);
        max_outbox = max_outbox.max(p.client.session().unwrap().outbox_len());
        // The reader wakes up only every 50th round, then takes at most 500.
        if round % 50 == 0 {
            for _ in 0..500 {
                let Some(m) = p.server.recv() else { break };
                assert_eq!(u64::from_be_bytes(m.body[..].try_into().unwrap()), got);
                got += 1;
            }
        }
        assert!(round < 10_000_000);
    }
    println!(
        "1,000,000 messages through a slow reader: inbox ≤ {max_inbox}, outbox ≤ {max_outbox}, \
         {full} times full, {round} rounds"
    );
    assert!(max_inbox <= 1_000, "{max_inbox}");
    assert!(max_outbox <= 2_000, "{max_outbox}");
    assert!(full > 0, "the sender never felt backpressure");
    assert!(
        p.client.is_established(),
        "heartbeats failed while the reader slept"
    );
}

#[test]
fn graceful_close_hands_back_exactly_what_was_not_delivered() {
    let mut p = Pair::new(Config::default());
    send_n(&mut p.client, 100);
    send_n(&mut p.server, 10);
    p.pump();
    // The server application takes 40, the client 10.
    for _ in 0..40 {
        p.server.recv().unwrap();
    }
    assert_eq!(take_all(&mut p.client).len(), 10);
    p.client.close(p.now, CloseCode::Normal, "bye");
    p.pump();
    let client_end = p.client_events.iter().find_map(|e| match e {
        Event::SessionEnded {
            reason,
            unacknowledged,
            ..
        } => Some((reason.clone(), unacknowledged.clone())),
        _ => None,
    });
    let (reason, unacked) = client_end.expect("client session did not end");
    assert!(matches!(
        reason,
        SessionEnd::Closed {
            by_peer: false,
            confirmed: true,
            ..
        }
    ));
    let seqs: Vec<u64> = unacked.iter().map(|m| m.seq.0).collect();
    assert_eq!(seqs, (41..=100).collect::<Vec<_>>());
    let server_end = p.server_events.iter().find_map(|e| match e {
        Event::SessionEnded {
            reason,
            unacknowledged,
            discarded,
        } => Some((reason.clone(), unacknowledged.len(), *discarded)),
        _ => None,
    });
    let (reason, unacked, discarded) = server_end.expect("server session did not end");
    assert!(matches!(
        reason,
        SessionEnd::Closed {
            by_peer: true,
            confirmed: true,
            ..
        }
    ));
    assert_eq!(unacked, 0, "the client took all 10");
    assert_eq!(discarded, 60);
    assert!(p.client.is_closed() && p.server.is_closed());
    assert_eq!(
        p.client.send(Bytes::from_static(b"x"), 0),
        Err(SendError::Closed)
    );
}

#[test]
fn a_close_cut_off_in_flight_is_completed_after_the_resume() {
    let mut p = Pair::new(Config::default());
    send_n(&mut p.client, 5);
    p.pump();
    assert_eq!(take_all(&mut p.server).len(), 5);
    p.pump();
    p.client.close(p.now, CloseCode::Normal, "bye");
    // The CLOSE is written, then lost with the link.
    let mut buf = Vec::new();
    p.client.poll_transmit(p.now, &mut buf);
    assert!(!buf.is_empty());
    p.cut();
    assert!(
        p.client_events
            .iter()
            .all(|e| !matches!(e, Event::SessionEnded { .. }))
    );
    p.resume(2);
    let ended = |events: &[Event]| {
        events.iter().any(|e| {
            matches!(
                e,
                Event::SessionEnded {
                    reason: SessionEnd::Closed {
                        confirmed: true,
                        ..
                    },
                    ..
                }
            )
        })
    };
    assert!(ended(&p.client_events), "client: {:?}", p.client_events);
    assert!(ended(&p.server_events), "server: {:?}", p.server_events);
}

#[test]
fn a_server_restarted_without_state_refuses_the_resume_and_everything_comes_back() {
    let mut p = Pair::new(Config::default());
    send_n(&mut p.client, 50);
    p.pump();
    for _ in 0..10 {
        p.server.recv().unwrap();
    }
    p.advance(Duration::from_millis(5), Duration::from_millis(1), true);
    p.cut();
    // A new server process: no session table at all.
    let session = p.client.take_session().unwrap();
    let config = Config::default();
    p.client = Connection::connect(config.clone(), p.now, session, None).unwrap();
    p.server = Connection::accept(config, p.now).unwrap();
    let mut buf = Vec::new();
    p.client.poll_transmit(p.now, &mut buf);
    p.server.handle_input(p.now, &buf);
    let Some(Event::Hello(req)) = p.server.poll_event() else {
        panic!()
    };
    assert!(req.resume.is_some());
    p.server
        .reject(RejectCode::UnknownSession, 0, "unknown session");
    p.pump();
    let Some(Event::SessionEnded {
        reason,
        unacknowledged,
        ..
    }) = p.client.poll_event().or_else(|| p.client_events.pop())
    else {
        panic!("{:?}", p.client_events)
    };
    assert_eq!(
        reason,
        SessionEnd::Rejected {
            code: RejectCode::UnknownSession,
            reason: "unknown session".into()
        }
    );
    let seqs: Vec<u64> = unacknowledged.iter().map(|m| m.seq.0).collect();
    assert_eq!(
        seqs,
        (11..=50).collect::<Vec<_>>(),
        "every unacknowledged message, in order"
    );
}

#[test]
fn a_lost_welcome_leaves_the_previous_token_valid_until_the_new_one_is_proven() {
    let mut p = Pair::new(Config::default());
    // Prove the first token.
    p.advance(Duration::from_millis(5), Duration::from_millis(1), true);
    p.cut();
    let t1 = token(1);
    // Resume: the server rotates to token 2, but its WELCOME is lost with the link.
    let session = p.client.take_session().unwrap();
    let config = Config::default();
    let mut client = Connection::connect(config.clone(), p.now, session, None).unwrap();
    let mut server = Connection::accept(config.clone(), p.now).unwrap();
    let mut buf = Vec::new();
    client.poll_transmit(p.now, &mut buf);
    server.handle_input(p.now, &buf);
    assert!(matches!(server.poll_event(), Some(Event::Hello(_))));
    let session = p.server.take_session().unwrap();
    server.accept_resume(p.now, session, token(2)).unwrap();
    server.handle_disconnect();
    client.handle_disconnect();
    let mut server_session = server.take_session().unwrap();
    // Rule A: both the proven token and the one just issued are accepted.
    assert!(server_session.verify_token(&t1));
    assert!(server_session.verify_token(&token(2)));
    assert!(!server_session.verify_token(&token(9)));
    // The client still holds token 1 and resumes with it: accepted, rotated to 3.
    let client_session = client.take_session().unwrap();
    let mut client = Connection::connect(config.clone(), p.now, client_session, None).unwrap();
    let mut server = Connection::accept(config, p.now).unwrap();
    buf.clear();
    client.poll_transmit(p.now, &mut buf);
    server.handle_input(p.now, &buf);
    let Some(Event::Hello(req)) = server.poll_event() else {
        panic!()
    };
    assert_eq!(req.resume.as_ref().unwrap().token, t1);
    assert!(server_session.verify_token(&req.resume.unwrap().token));
    server_session = match server.accept_resume(p.now, server_session, token(3)) {
        Ok(()) => {
            // Deliver the WELCOME; the client's first frame after it proves token 3.
            buf.clear();
            server.poll_transmit(p.now, &mut buf);
            client.handle_input(p.now, &buf);
            buf.clear();
            client.poll_transmit(p.now, &mut buf);
            server.handle_input(p.now, &buf);
            server.take_session().unwrap()
        }
        Err(_) => panic!("resume with the proven token refused"),
    };
    assert!(server_session.verify_token(&token(3)));
    assert!(
        !server_session.verify_token(&t1),
        "old token still valid after proof"
    );
    assert!(!server_session.verify_token(&token(2)));
}

#[test]
fn a_resume_takes_over_a_half_open_connection_without_loss_or_duplicate() {
    let mut p = Pair::new(Config::default());
    send_n(&mut p.client, 1_000);
    send_n(&mut p.server, 1_000);
    // Part of the traffic crosses; the rest is in flight when the client's side dies.
    p.step_bytes = 7_001;
    for _ in 0..3 {
        p.pump_once();
    }
    let mut server_got = take_all(&mut p.server);
    let mut client_got = take_all(&mut p.client);
    // The server's connection still looks alive and holds part of a frame, unprocessed.
    assert!(p.server.buffered_input() > 0);
    p.client.handle_disconnect();
    p.collect();
    // A resume arrives on a new connection; the old one is taken over.
    p.resume(2);
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::Established { resumed: true, .. }))
    );
    p.step_bytes = usize::MAX;
    for _ in 0..10 {
        p.pump();
        server_got.extend(take_all(&mut p.server));
        client_got.extend(take_all(&mut p.client));
    }
    assert_eq!(server_got, (0..1_000).collect::<Vec<_>>());
    assert_eq!(client_got, (0..1_000).collect::<Vec<_>>());
    let s = p.server.session().unwrap().stats();
    assert_eq!(s.duplicates_dropped, 0);
    assert_eq!(p.client.session().unwrap().stats().duplicates_dropped, 0);
}

#[test]
fn take_session_ends_the_old_connection_with_goaway() {
    let mut p = Pair::new(Config::default());
    let _session = p.server.take_session().unwrap();
    let mut buf = Vec::new();
    p.server.poll_transmit(p.now, &mut buf);
    p.client.handle_input(p.now, &buf);
    assert!(matches!(
        p.server.poll_event(),
        Some(Event::Disconnected(ConnectionError::TakenOver))
    ));
    assert!(matches!(
        p.client.poll_event(),
        Some(Event::Disconnected(ConnectionError::GoAway {
            code: CloseCode::SessionTakenOver,
            ..
        }))
    ));
}

#[test]
fn goaway_ends_the_connection_but_the_session_resumes() {
    let mut p = Pair::new(Config::default());
    send_n(&mut p.client, 10);
    p.pump();
    assert_eq!(take_all(&mut p.server).len(), 10);
    p.server.go_away(CloseCode::Shutdown, 1_500, "restarting");
    p.pump();
    assert!(p.client_events.iter().any(|e| matches!(
        e,
        Event::Disconnected(ConnectionError::GoAway {
            retry_after_ms: 1_500,
            ..
        })
    )));
    assert!(
        p.server_events
            .iter()
            .any(|e| matches!(e, Event::Disconnected(ConnectionError::LocalGoAway)))
    );
    send_n(&mut p.client, 5);
    p.resume(2);
    assert_eq!(take_all(&mut p.server), (0..5).collect::<Vec<_>>());
    assert_eq!(p.client.session().unwrap().acked(), Seq(11));
}

#[test]
fn version_negotiation_picks_the_highest_common_version() {
    let p = Pair::with_configs(
        Config::default().versions(1, 3),
        Config::default().versions(1, 2),
    );
    assert_eq!(p.client.version(), Some(2));
    assert_eq!(p.server.version(), Some(2));
}

#[test]
fn receipts_arrive_in_batches_not_one_per_message() {
    let mut p = Pair::new(Config::default());
    send_n(&mut p.client, 10_000);
    for _ in 0..100 {
        p.pump();
        take_all(&mut p.server);
        p.advance(Duration::from_millis(2), Duration::from_millis(1), true);
    }
    let acks = Pair::count(&p.client_events, |e| {
        matches!(e, Event::Acknowledged { .. })
    });
    assert_eq!(p.client.session().unwrap().acked(), Seq(10_001));
    println!("10,000 messages acknowledged by {acks} cumulative ACKs");
    assert!(acks < 200, "{acks} ACK events for 10,000 messages");
}
