//! Edges of protocol version 2 found in review: announced timings that round or saturate, a
//! hostile server's timings, the pipelined-bytes limit whatever the split, pipelined frames
//! that must not prove a token, a continuation cut short by the memory budget, a close while
//! a part is held, a client holding a part that meets a version-1-only server, a pipelined
//! frame split across the server's answer, and manual acknowledgement after a CLOSE
//! (PROTOCOL.md §2, §4.4, §5.5, §7.2, §8).

#![cfg(all(feature = "runtime", feature = "zstd"))]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use steadfast::proto::frame::{Data, Hello, Welcome, WelcomeKind};
mod support;

use steadfast::proto::{
    CloseCode, Config, Connection, ConnectionError, Event, Frame, RejectCode, ResumeToken, Seq,
    Session, SessionId, Timings,
};
use support::core::{decode_all_in, enc, events, good_limits, pump, transmit};

const SID: SessionId = SessionId([0x51; 16]);

fn hello_new(first_seq: Seq) -> Hello {
    Hello {
        min_version: 1,
        max_version: 2,
        limits: good_limits(),
        resume: None,
        first_seq,
        name: None,
        credentials: None,
        transforms: Vec::new(),
    }
}

fn data(seq: u64, more: bool, body: &[u8]) -> Frame {
    Frame::Data(Data {
        offset: None,
        seq: Seq(seq),
        timestamp_us: 0,
        more,
        body: Bytes::copy_from_slice(body),
    })
}

/// Handshake between a real client and a real server (new session).
fn pair(now: &mut Instant, ccfg: Config, scfg: Config) -> (Connection, Connection) {
    let mut client =
        Connection::connect(ccfg.clone(), *now, Session::client(&ccfg, None), None).unwrap();
    let mut server = Connection::accept(scfg, *now).unwrap();
    server.handle_input(*now, &transmit(&mut client, *now));
    let evs = events(&mut server);
    assert!(matches!(&evs[..], [Event::Hello(_)]), "{evs:?}");
    server.accept_new(*now, SID, ResumeToken([1; 16]));
    pump(now, &mut client, &mut server);
    (client, server)
}

/// A server whose timings are valid durations but equal, or beyond 2^32 - 1, in whole
/// milliseconds still announces a valid pair: its clients stay.
#[test]
fn timings_that_round_or_saturate_still_make_a_valid_welcome() {
    for (k, i) in [
        (
            Duration::from_micros(100_500),
            Duration::from_micros(100_900),
        ),
        (
            Duration::from_secs(50 * 86_400),
            Duration::from_secs(60 * 86_400),
        ),
    ] {
        let mut now = Instant::now();
        let scfg = Config::default().keepalive_interval(k).idle_timeout(i);
        scfg.validate().unwrap();
        let (mut client, _server) = pair(&mut now, Config::default(), scfg);
        let evs = events(&mut client);
        assert!(
            client.is_established() && !evs.iter().any(|e| matches!(e, Event::SessionEnded { .. })),
            "keepalive {k:?} idle {i:?}: {evs:?}"
        );
    }
}

/// A server announcing huge timings cannot switch off the client's detection of a dead link:
/// the client keeps its own idle timeout (a live server answers its PINGs).
#[test]
fn a_hostile_servers_timings_leave_the_clients_idle_timeout_alone() {
    let mut now = Instant::now();
    let cfg = Config::default();
    let mut client =
        Connection::connect(cfg.clone(), now, Session::client(&cfg, None), None).unwrap();
    transmit(&mut client, now);
    client.handle_input(
        now,
        &enc(&[Frame::Welcome(Welcome {
            version: 2,
            session_id: SID,
            token: ResumeToken([1; 16]),
            limits: good_limits(),
            kind: WelcomeKind::New { first_seq: Seq(1) },
            transforms: Vec::new(),
            timings: Some(Timings {
                keepalive_ms: u32::MAX - 1,
                idle_timeout_ms: u32::MAX,
            }),
        })]),
    );
    assert!(client.is_established());
    events(&mut client);
    let start = now;
    let hour = start + Duration::from_secs(3_600);
    while now < hour && !client.is_closed() {
        transmit(&mut client, now);
        now = client.poll_timeout().unwrap().min(hour);
        client.handle_timeout(now);
    }
    let evs = events(&mut client);
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Disconnected(ConnectionError::IdleTimeout))),
        "{evs:?}"
    );
    assert!(
        now - start <= Duration::from_secs(10),
        "detected after {:?}",
        now - start
    );
}

/// More than a frame's worth of bytes before the answer is refused whether it came in the same
/// read as the HELLO or later (§2).
#[test]
fn the_pipelined_bytes_limit_holds_however_the_bytes_were_split() {
    let now = Instant::now();
    let cfg = Config::default().max_frame(8_192);
    let hello = enc(&[Frame::Hello(hello_new(Seq(1)))]);
    let frames: Vec<Frame> = (1..=70u64).map(|s| data(s, false, &[b'x'; 100])).collect();
    let pipelined = enc(&frames);
    assert!(pipelined.len() > 8_198);
    for same_read in [true, false] {
        let mut server = Connection::accept(cfg.clone(), now).unwrap();
        if same_read {
            server.handle_input(now, &[hello.clone(), pipelined.clone()].concat());
        } else {
            server.handle_input(now, &hello);
            server.handle_input(now, &pipelined);
        }
        events(&mut server);
        server.accept_new(now, SID, ResumeToken([1; 16]));
        let out = decode_all_in(&transmit(&mut server, now), 1);
        assert!(
            matches!(&out[..], [Frame::Reject(r)] if r.code == RejectCode::ProtocolError),
            "same read {same_read}: {out:?}"
        );
        assert!(server.session().is_none());
    }
}

/// A frame the client sent before it could hold the WELCOME's token is handled after the
/// WELCOME, but does not prove the token (§4.4 rule A); the first frame sent after it does.
#[test]
fn pipelined_frames_do_not_prove_the_new_token() {
    let now = Instant::now();
    let mut server = Connection::accept(Config::default(), now).unwrap();
    server.handle_input(
        now,
        &enc(&[Frame::Hello(hello_new(Seq(1))), Frame::Ping(1)]),
    );
    events(&mut server);
    server.accept_new(now, SID, ResumeToken([1; 16]));
    let out = decode_all_in(&transmit(&mut server, now), 2);
    assert!(
        matches!(&out[..], [Frame::Welcome(_), Frame::Pong(1)]),
        "{out:?}"
    );
    let record = server.session().unwrap().record();
    assert_eq!(record.token, None, "a pipelined frame proved the token");
    assert_eq!(record.issued, Some(ResumeToken([1; 16])));
    server.handle_input(now, &enc(&[Frame::Ping(2)]));
    let record = server.session().unwrap().record();
    assert_eq!(record.token, Some(ResumeToken([1; 16])));
    assert_eq!(record.issued, None);
}

/// A held part on the server, then the continuation runs the receive allowance out: the part
/// is dropped, the next resume states 0, the client sends the message whole: it arrives once,
/// intact.
#[test]
fn a_continuation_cut_short_by_the_budget_comes_again_whole() {
    let mut now = Instant::now();
    let ccfg = Config::default().max_chunk(1_000);
    let scfg = Config::default();
    let (mut client, mut server) = pair(&mut now, ccfg.clone(), scfg.clone());
    assert_eq!(client.version(), Some(2));
    events(&mut client);
    events(&mut server);
    let body: Vec<u8> = (0..50_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let seq = client.send(Bytes::from(body.clone()), 0).unwrap();
    let out = transmit(&mut client, now);
    server.handle_input(now, &out[..10_500]);
    client.handle_disconnect();
    server.handle_disconnect();
    let s_session = server.take_session().unwrap();
    assert!(s_session.held_partial_bytes() > 0);
    let c_session = client.take_session().unwrap();

    let mut client = Connection::connect(ccfg.clone(), now, c_session, None).unwrap();
    let mut server = Connection::accept(scfg.clone(), now).unwrap();
    server.set_receive_allowance(Some(12_000));
    server.handle_input(now, &transmit(&mut client, now));
    events(&mut server);
    server
        .accept_resume(now, s_session, ResumeToken([2; 16]))
        .unwrap();
    pump(&mut now, &mut client, &mut server);
    assert!(server.is_closed(), "expected GOAWAY ResourceLimit");
    client.handle_disconnect();
    let s_session = server.take_session().unwrap();
    assert_eq!(s_session.held_partial_bytes(), 0);
    let c_session = client.take_session().unwrap();

    let mut client = Connection::connect(ccfg, now, c_session, None).unwrap();
    let mut server = Connection::accept(scfg, now).unwrap();
    server.handle_input(now, &transmit(&mut client, now));
    events(&mut server);
    server
        .accept_resume(now, s_session, ResumeToken([3; 16]))
        .unwrap();
    pump(&mut now, &mut client, &mut server);
    let m = server.recv().unwrap();
    assert_eq!(m.seq, seq);
    assert_eq!(&m.body[..], &body[..]);
    assert!(server.recv().is_none());
}

/// A session closed while detached drops the part it holds: its next HELLO offers the
/// configured range in the version-1 layout.
#[test]
fn closing_drops_a_held_part() {
    let mut now = Instant::now();
    let cfg = Config::default().max_chunk(1_000);
    let (mut client, mut server) = pair(&mut now, cfg.clone(), cfg.clone());
    events(&mut client);
    events(&mut server);
    server.send(Bytes::from(vec![7u8; 20_000]), 0).unwrap();
    let out = transmit(&mut server, now);
    client.handle_input(now, &out[..5_000]);
    client.handle_disconnect();
    let mut s = client.take_session().unwrap();
    assert!(s.held_partial_bytes() > 0);
    s.close(CloseCode::Normal, "bye");
    assert_eq!(s.held_partial_bytes(), 0);
    let mut c2 = Connection::connect(cfg, now, s, None).unwrap();
    let out = decode_all_in(&transmit(&mut c2, now), 1);
    let Frame::Hello(h) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!((h.min_version, h.max_version), (1, 2));
    assert_eq!(h.resume.as_ref().map(|r| r.partial), Some(0));
}

/// A client holding a part offers versions 2 and up; a version-1-only server refuses that
/// (VersionMismatch), leaving its session untouched. The client keeps its session, drops the
/// part and resumes in version 1 on its next connection, where the message comes whole.
#[test]
fn a_client_holding_a_part_resumes_with_a_version_1_only_server() {
    let mut now = Instant::now();
    let cfg = Config::default().max_chunk(1_000);
    let (mut client, mut server) = pair(&mut now, cfg.clone(), cfg.clone());
    events(&mut client);
    events(&mut server);
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    server.send(Bytes::from(body.clone()), 0).unwrap();
    let out = transmit(&mut server, now);
    client.handle_input(now, &out[..5_000]);
    client.handle_disconnect();
    server.handle_disconnect();
    let c = client.take_session().unwrap();
    let mut s = Some(server.take_session().unwrap());
    let v1 = cfg.clone().versions(1, 1);

    let mut client = Connection::connect(cfg.clone(), now, c, None).unwrap();
    let mut server = Connection::accept(v1.clone(), now).unwrap();
    server.handle_input(now, &transmit(&mut client, now));
    assert!(events(&mut server).is_empty() || server.is_closed());
    client.handle_input(now, &transmit(&mut server, now));
    let evs = events(&mut client);
    assert!(
        matches!(
            &evs[..],
            [Event::Disconnected(ConnectionError::Rejected {
                code: RejectCode::VersionMismatch,
                ..
            })]
        ),
        "{evs:?}"
    );
    let c = client.take_session().unwrap();
    assert_eq!(c.held_partial_bytes(), 0);

    let mut client = Connection::connect(cfg, now, c, None).unwrap();
    let mut server = Connection::accept(v1, now).unwrap();
    server.handle_input(now, &transmit(&mut client, now));
    let evs = events(&mut server);
    assert!(matches!(&evs[..], [Event::Hello(_)]), "{evs:?}");
    server
        .accept_resume(now, s.take().unwrap(), ResumeToken([9; 16]))
        .unwrap();
    pump(&mut now, &mut client, &mut server);
    assert_eq!(client.version(), Some(1));
    let m = client.recv().unwrap();
    assert_eq!(&m.body[..], &body[..]);
    assert!(client.recv().is_none());
}

/// A pipelined frame that the server's answer splits (part of it held before the WELCOME, the
/// rest after) began before the client could hold the new token: it does not prove it either
/// (§4.4 rule A); the next whole frame does.
#[test]
fn a_pipelined_frame_split_across_the_answer_does_not_prove_the_token() {
    let now = Instant::now();
    let mut server = Connection::accept(Config::default(), now).unwrap();
    let ping = enc(&[Frame::Ping(1)]);
    server.handle_input(
        now,
        &[enc(&[Frame::Hello(hello_new(Seq(1)))]), ping[..10].to_vec()].concat(),
    );
    events(&mut server);
    server.accept_new(now, SID, ResumeToken([1; 16]));
    server.handle_input(now, &ping[10..]);
    let out = decode_all_in(&transmit(&mut server, now), 2);
    assert!(
        matches!(&out[..], [Frame::Welcome(_), Frame::Pong(1)]),
        "{out:?}"
    );
    let record = server.session().unwrap().record();
    assert_eq!(
        record.token, None,
        "a split pipelined frame proved the token"
    );
    server.handle_input(now, &enc(&[Frame::Ping(2)]));
    let record = server.session().unwrap().record();
    assert_eq!(record.token, Some(ResumeToken([1; 16])));
}

/// With manual acknowledgement, a message taken but not acknowledged when this side's CLOSE
/// goes out stays unacknowledged: the CLOSE's delivered position is final (§7.2).
#[test]
fn manual_acknowledgement_after_close_changes_nothing() {
    let mut now = Instant::now();
    let cfg = Config::default().manual_ack(true);
    let (mut client, mut server) = pair(&mut now, cfg.clone(), cfg);
    events(&mut client);
    events(&mut server);
    client.send(Bytes::from_static(b"one"), 0).unwrap();
    pump(&mut now, &mut client, &mut server);
    let m = server.recv().unwrap();
    server.close(now, CloseCode::Normal, "bye");
    assert_eq!(server.session_mut().unwrap().acknowledge(m.seq), 0);
    pump(&mut now, &mut client, &mut server);
    let evs = events(&mut client);
    let handed_back = evs.iter().find_map(|e| match e {
        Event::SessionEnded { unacknowledged, .. } => Some(unacknowledged.len()),
        _ => None,
    });
    assert_eq!(handed_back, Some(1), "{evs:?}");
}

/// The session remembers the version its last connection spoke.
#[test]
fn a_session_knows_the_version_of_its_last_connection() {
    let mut now = Instant::now();
    let v1 = Config::default().versions(1, 1);
    let (client, server) = pair(&mut now, Config::default(), v1);
    assert_eq!(client.session().unwrap().version(), Some(1));
    assert_eq!(server.session().unwrap().version(), Some(1));
    let (client, _server) = pair(&mut now, Config::default(), Config::default());
    assert_eq!(client.session().unwrap().version(), Some(2));
    let cfg = Config::default();
    assert_eq!(Session::client(&cfg, None).version(), None);
}
