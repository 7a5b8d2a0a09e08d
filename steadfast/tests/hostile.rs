//! A hostile peer against `Connection`, server and client side: every attack ends in a defined
//! outcome (an event, a REJECT or CLOSE code read back from what `poll_transmit` produced) and
//! never in a panic. Everything runs in memory on a virtual clock.

#![cfg(all(feature = "runtime", feature = "zstd"))]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use bytes::Bytes;
use steadfast::proto::frame::{Close, Data, HEADER_LEN, Hello, Reject, Welcome, WelcomeKind, kind};
mod support;

use steadfast::proto::{
    CloseCode, Config, Connection, ConnectionError, Event, Frame, Limits, Message, RejectCode,
    ResumeRequest, ResumeToken, SUPPORTED_VERSIONS, Seq, Session, SessionEnd, SessionId, Window,
};
use support::core::{decode_all_in, enc, events, good_limits, pump, transmit};

// ------------------------------------------------------------------------------- helpers

const SID: SessionId = SessionId([0x51; 16]);
const OTHER_SID: SessionId = SessionId([0x52; 16]);
const TOKEN: [u8; 16] = [0x70; 16];
const WRONG: [u8; 16] = [0x71; 16];
const FRESH: [u8; 16] = [0x72; 16];
const FRESH2: [u8; 16] = [0x73; 16];

fn raw(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(payload);
    v
}

/// Decodes what a connection sent; it must be well-formed.
fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    decode_all_in(bytes, 1)
}

fn sent(conn: &mut Connection, now: Instant) -> Vec<Frame> {
    decode_all(&transmit(conn, now))
}

fn hello_new(first_seq: Seq) -> Hello {
    Hello {
        min_version: 1,
        max_version: 1,
        limits: good_limits(),
        resume: None,
        first_seq,
        name: Some("mallory".into()),
        credentials: Some(Bytes::from_static(b"secret")),
        transforms: Vec::new(),
    }
}

fn hello_resume(session_id: SessionId, token: [u8; 16], received: Seq) -> Frame {
    Frame::Hello(Hello {
        resume: Some(ResumeRequest {
            partial: 0,
            session_id,
            token: ResumeToken(token),
            received,
        }),
        first_seq: Seq(0),
        ..hello_new(Seq(0))
    })
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

fn ack(delivered: u64) -> Frame {
    Frame::Ack {
        delivered: Seq(delivered),
        window: good_limits().window,
    }
}

fn welcome_new(version: u16, limits: Limits) -> Frame {
    Frame::Welcome(Welcome {
        timings: None,
        version,
        session_id: SID,
        token: ResumeToken(TOKEN),
        limits,
        kind: WelcomeKind::New { first_seq: Seq(1) },
        transforms: Vec::new(),
    })
}

fn bodies(msgs: &[Message]) -> Vec<&[u8]> {
    msgs.iter().map(|m| &m.body[..]).collect()
}

/// Feeds `input` to a connection that has not finished its handshake (server side) and checks
/// that it answers with exactly one REJECT of `code` and ends with `Disconnected(Rejected)`.
fn expect_reject(conn: &mut Connection, now: Instant, input: &[u8], code: RejectCode) -> Reject {
    conn.handle_input(now, input);
    let out = sent(conn, now);
    let [Frame::Reject(r)] = &out[..] else {
        panic!("expected one REJECT, sent {out:?}");
    };
    assert_eq!(r.code, code, "REJECT {r:?}");
    let evs = events(conn);
    assert!(
        evs.iter().any(|e| matches!(e,
            Event::Disconnected(ConnectionError::Rejected { code: c, .. }) if *c == code)),
        "events {evs:?}"
    );
    assert!(!evs.iter().any(|e| matches!(e, Event::Established { .. })));
    assert!(conn.is_closed());
    assert_eq!(conn.poll_timeout(), None);
    // The connection is over: more input is ignored and nothing more goes out.
    conn.handle_input(now, input);
    assert!(transmit(conn, now).is_empty());
    assert!(conn.poll_event().is_none());
    r.clone()
}

/// What an established connection reported when it closed the session on a violation.
struct Ended {
    close: Close,
    unacknowledged: Vec<Message>,
    discarded: usize,
}

/// Feeds `input` to an established connection and checks that it sends CLOSE `code` and ends
/// the session with `SessionEnded { reason: ProtocolViolation { code } }`.
fn expect_close(conn: &mut Connection, now: Instant, input: &[u8], code: CloseCode) -> Ended {
    conn.handle_input(now, input);
    let out = sent(conn, now);
    let closes: Vec<&Close> = out
        .iter()
        .filter_map(|f| match f {
            Frame::Close(c) => Some(c),
            _ => None,
        })
        .collect();
    assert_eq!(closes.len(), 1, "expected one CLOSE, sent {out:?}");
    assert_eq!(closes[0].code, code, "CLOSE {:?}", closes[0]);
    assert!(
        matches!(out.last(), Some(Frame::Close(_))),
        "CLOSE is the last frame"
    );
    let close = closes[0].clone();
    assert!(conn.is_closed());
    assert!(conn.session().is_none());
    let mut ended = None;
    for e in events(conn) {
        match e {
            Event::SessionEnded {
                reason,
                unacknowledged,
                discarded,
            } => {
                assert!(ended.is_none(), "two SessionEnded");
                match reason {
                    SessionEnd::ProtocolViolation { code: c, .. } => assert_eq!(c, code),
                    other => panic!("ended with {other:?}"),
                }
                ended = Some(Ended {
                    close: close.clone(),
                    unacknowledged,
                    discarded,
                });
            }
            Event::Disconnected(e) => panic!("Disconnected({e:?}) instead of SessionEnded"),
            _ => {}
        }
    }
    conn.handle_input(now, input);
    assert!(transmit(conn, now).is_empty(), "output after the end");
    ended.expect("no SessionEnded")
}

/// A real session: a client `Connection` and a server `Connection` talking in memory, the
/// server's application accepting with `SID` and `TOKEN`. One message went each way and was
/// taken and acknowledged.
fn real_session(now: &mut Instant) -> (Connection, Connection) {
    let cfg = Config::default();
    let mut client = Connection::connect(
        cfg.clone(),
        *now,
        Session::client(&cfg, Some("alice".into())),
        None,
    )
    .unwrap();
    let mut server = Connection::accept(cfg, *now).unwrap();
    server.handle_input(*now, &transmit(&mut client, *now));
    let evs = events(&mut server);
    assert!(
        matches!(&evs[..], [Event::Hello(r)] if r.resume.is_none() && r.name.as_deref() == Some("alice"))
    );
    server.accept_new(*now, SID, ResumeToken(TOKEN));
    pump(now, &mut client, &mut server);
    assert!(client.is_established() && server.is_established());
    assert!(events(&mut client).iter().any(|e| matches!(e,
        Event::Established { session_id, resumed: false } if *session_id == SID)));
    assert!(
        events(&mut server)
            .iter()
            .any(|e| matches!(e, Event::Established { .. }))
    );

    client.send(Bytes::from_static(b"c1"), 0).unwrap();
    server.send(Bytes::from_static(b"s1"), 0).unwrap();
    pump(now, &mut client, &mut server);
    assert_eq!(server.recv().unwrap().body, "c1");
    assert_eq!(client.recv().unwrap().body, "s1");
    pump(now, &mut client, &mut server);
    assert_eq!(client.session().unwrap().acked(), Seq(2));
    assert_eq!(server.session().unwrap().acked(), Seq(2));
    events(&mut client);
    events(&mut server);
    (client, server)
}

/// Sends `body` from one side of an established pair and checks it arrives and is
/// acknowledged.
fn check_flows(now: &mut Instant, from: &mut Connection, to: &mut Connection, body: &'static [u8]) {
    let seq = from.send(Bytes::from_static(body), 0).unwrap();
    pump(now, from, to);
    let msg = to.recv().unwrap();
    assert_eq!((msg.seq, &msg.body[..]), (seq, body));
    pump(now, from, to);
    assert!(
        events(from).iter().any(|e| matches!(e,
            Event::Acknowledged { first, end } if *first <= seq && seq < *end)),
        "no receipt for {seq}"
    );
}

/// A server `Connection` established with a hand-driven client (the hostile peer), after the
/// server's application queued and transmitted `s1` (seq 1) and `s2` (seq 2). The client's
/// first message number is 1.
fn hostile_client_vs_server(cfg: Config, now: Instant) -> Connection {
    let mut server = Connection::accept(cfg, now).unwrap();
    server.handle_input(now, &enc(&[Frame::Hello(hello_new(Seq(1)))]));
    let evs = events(&mut server);
    let [Event::Hello(req)] = &evs[..] else {
        panic!("{evs:?}");
    };
    assert_eq!(req.credentials.as_deref(), Some(&b"secret"[..]));
    server.accept_new(now, SID, ResumeToken(TOKEN));
    server.send(Bytes::from_static(b"s1"), 0).unwrap();
    server.send(Bytes::from_static(b"s2"), 0).unwrap();
    let out = sent(&mut server, now);
    assert!(matches!(&out[0], Frame::Welcome(w)
        if w.session_id == SID && w.kind == WelcomeKind::New { first_seq: Seq(1) }));
    let seqs: Vec<Seq> = out
        .iter()
        .filter_map(|f| match f {
            Frame::Data(d) => Some(d.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, [Seq(1), Seq(2)]);
    assert!(
        events(&mut server)
            .iter()
            .any(|e| matches!(e, Event::Established { .. }))
    );
    server
}

/// A client `Connection` whose application queued `q1` and `q2` before connecting; its HELLO
/// has gone out and is checked. The hostile server answers next.
fn client_awaiting_welcome(cfg: &Config, now: Instant) -> Connection {
    let mut session = Session::client(cfg, Some("carol".into()));
    session.send(Bytes::from_static(b"q1"), 0).unwrap();
    session.send(Bytes::from_static(b"q2"), 0).unwrap();
    let mut client =
        Connection::connect(cfg.clone(), now, session, Some(Bytes::from_static(b"pw"))).unwrap();
    let out = sent(&mut client, now);
    let [Frame::Hello(h)] = &out[..] else {
        panic!("expected HELLO, sent {out:?}");
    };
    assert_eq!((h.min_version, h.max_version), SUPPORTED_VERSIONS);
    assert_eq!(h.resume, None);
    assert_eq!(h.first_seq, Seq(1));
    assert_eq!(h.credentials.as_deref(), Some(&b"pw"[..]));
    client
}

/// A client established with a hand-driven (hostile) server; `q1` and `q2` were sent and not
/// acknowledged.
fn hostile_server_vs_client(now: Instant) -> Connection {
    let mut client = client_awaiting_welcome(&Config::default(), now);
    client.handle_input(now, &enc(&[welcome_new(1, good_limits())]));
    assert!(client.is_established());
    let out = sent(&mut client, now);
    assert!(out.iter().any(|f| matches!(
        f,
        Frame::Ack {
            delivered: Seq(1),
            ..
        }
    )));
    assert_eq!(
        out.iter().filter(|f| matches!(f, Frame::Data(_))).count(),
        2,
        "{out:?}"
    );
    events(&mut client);
    client
}

fn hello_event(conn: &mut Connection) -> steadfast::proto::HelloRequest {
    let evs = events(conn);
    let [Event::Hello(req)] = &evs[..] else {
        panic!("expected Event::Hello, got {evs:?}");
    };
    req.clone()
}

// ------------------------------------------------------------- server: before the handshake

#[test]
fn server_refuses_http_request() {
    let now = Instant::now();
    let mut server = Connection::accept(Config::default(), now).unwrap();
    let r = expect_reject(
        &mut server,
        now,
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        RejectCode::ProtocolError,
    );
    // "GET " read as a length prefix is far above the limit.
    assert!(r.reason.contains("exceeds"), "{}", r.reason);
    assert_eq!(server.buffered_input(), 0);
}

#[test]
fn first_bytes_of_another_protocol_are_named_on_both_sides() {
    let now = Instant::now();
    // A TLS client (a ClientHello record) and an HTTP client at a plain server.
    for (input, named) in [
        (
            &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03][..],
            "speaks TLS",
        ),
        (
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            "(\"GET / HTTP/1.1\"…)",
        ),
    ] {
        let mut server = Connection::accept(Config::default(), now).unwrap();
        let r = expect_reject(&mut server, now, input, RejectCode::ProtocolError);
        assert!(r.reason.contains(named), "{}", r.reason);
    }
    // A plain client answered by a TLS server (an alert record) or an HTTP server.
    for (input, named) in [
        (
            &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32][..],
            "speaks TLS",
        ),
        (
            &b"HTTP/1.0 400 Bad Request\r\n\r\n"[..],
            "(\"HTTP/1.0 400 Bad Request\"…): not a steadfast peer",
        ),
    ] {
        let mut client = client_awaiting_welcome(&Config::default(), now);
        client.handle_input(now, input);
        let evs = events(&mut client);
        assert!(
            matches!(&evs[..], [Event::SessionEnded {
                reason: SessionEnd::ProtocolViolation { detail, .. }, ..
            }] if detail.contains(named)),
            "{evs:?}"
        );
    }
    // A steadfast frame that breaks a rule is described as such, not as another protocol.
    let mut server = Connection::accept(Config::default(), now).unwrap();
    let r = expect_reject(
        &mut server,
        now,
        &raw(0x99, 0, b"hi"),
        RejectCode::ProtocolError,
    );
    assert!(!r.reason.contains("peer"), "{}", r.reason);
}

#[test]
fn server_refuses_oversized_length_prefix_before_payload() {
    let now = Instant::now();
    let mut server = Connection::accept(Config::default(), now).unwrap();
    // Only the six header bytes: the refusal must not wait for (or reserve) the payload.
    let mut header = u32::MAX.to_be_bytes().to_vec();
    header.extend_from_slice(&[kind::HELLO, 0]);
    let r = expect_reject(&mut server, now, &header, RejectCode::ProtocolError);
    assert!(r.reason.contains("4294967295"), "{}", r.reason);
    assert_eq!(server.buffered_input(), 0);

    // One above the configured maximum is refused too; exactly the maximum waits for more.
    let mut server = Connection::accept(Config::default().max_frame(10_000), now).unwrap();
    let mut header = 10_001u32.to_be_bytes().to_vec();
    header.extend_from_slice(&[kind::HELLO, 0]);
    expect_reject(&mut server, now, &header, RejectCode::ProtocolError);
    let mut server = Connection::accept(Config::default().max_frame(10_000), now).unwrap();
    let mut header = 10_000u32.to_be_bytes().to_vec();
    header.extend_from_slice(&[kind::HELLO, 0]);
    server.handle_input(now, &header);
    assert!(!server.is_closed());
    assert!(transmit(&mut server, now).is_empty());
    assert!(server.buffered_input() <= HEADER_LEN);
}

#[test]
fn server_truncated_hello_then_disconnect() {
    let now = Instant::now();
    let mut server = Connection::accept(Config::default(), now).unwrap();
    let hello = enc(&[Frame::Hello(hello_new(Seq(1)))]);
    let half = &hello[..hello.len() / 2];
    server.handle_input(now, half);
    assert!(events(&mut server).is_empty());
    assert!(transmit(&mut server, now).is_empty());
    assert!(!server.is_closed());
    assert!(server.buffered_input() <= half.len());
    server.handle_disconnect();
    let evs = events(&mut server);
    assert!(
        matches!(&evs[..], [Event::Disconnected(ConnectionError::Reset)]),
        "{evs:?}"
    );
    assert!(server.is_closed());
    assert!(transmit(&mut server, now).is_empty());
    assert_eq!(server.poll_timeout(), None);
    // The rest of the HELLO arriving late changes nothing.
    server.handle_input(now, &hello[hello.len() / 2..]);
    assert!(events(&mut server).is_empty());

    // A transport that dies with a REJECT still queued gets no write.
    let mut server = Connection::accept(Config::default(), now).unwrap();
    server.handle_input(now, &hello);
    hello_event(&mut server);
    server.reject(RejectCode::ServerFull, 100, "busy");
    server.handle_disconnect();
    assert!(transmit(&mut server, now).is_empty());
}

#[test]
fn server_refuses_unknown_frame_type() {
    let now = Instant::now();
    for k in [0x00, 0x04, 0x7f, 0xff] {
        let mut server = Connection::accept(Config::default(), now).unwrap();
        let r = expect_reject(
            &mut server,
            now,
            &raw(k, 0, b"xy"),
            RejectCode::ProtocolError,
        );
        assert!(
            r.reason.contains(&format!("unknown frame type 0x{k:02x}")),
            "{}",
            r.reason
        );
    }
}

#[test]
fn server_refuses_frames_before_hello() {
    let now = Instant::now();
    let early = [
        data(1, false, b"early"),
        ack(1),
        Frame::Ping(7),
        welcome_new(1, good_limits()),
        Frame::Close(Close {
            code: CloseCode::Normal,
            delivered: Seq(0),
            reason: String::new(),
        }),
    ];
    for f in early {
        let mut server = Connection::accept(Config::default(), now).unwrap();
        let r = expect_reject(
            &mut server,
            now,
            &enc(std::slice::from_ref(&f)),
            RejectCode::ProtocolError,
        );
        assert!(r.reason.contains("expected HELLO"), "{f:?}: {}", r.reason);
        assert!(server.session().is_none());
    }
}

#[test]
fn server_refuses_hello_with_bad_magic() {
    let now = Instant::now();
    let mut server = Connection::accept(Config::default(), now).unwrap();
    let mut hello = enc(&[Frame::Hello(hello_new(Seq(1)))]);
    hello[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(b"SSH-");
    let r = expect_reject(&mut server, now, &hello, RejectCode::ProtocolError);
    assert!(r.reason.contains("magic"), "{}", r.reason);
}

#[test]
fn server_refuses_a_transform_list_beyond_its_bounds() {
    let now = Instant::now();
    let cfg = Config::default().transforms(["a", "b", "c", "d", "e", "f", "g", "h"]);
    // A HELLO with the longest list allowed (8 names), as encoded: its last byte is the last
    // name's only byte.
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let valid = hello_with_transforms(&names);
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut v = valid.clone();
        edit(&mut v);
        let len = (v.len() - HEADER_LEN) as u32;
        v[..4].copy_from_slice(&len.to_be_bytes());
        v
    };
    // The list's count byte: 8 names of 2 bytes each follow it.
    let count_at = valid.len() - 8 * 2 - 1;
    assert_eq!(valid[count_at], 8);
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "nine names",
            with(&|v| {
                v[count_at] = 9;
                v.extend_from_slice(&[1, b'i']);
            }),
        ),
        (
            "a name that is not visible ASCII",
            with(&|v| {
                let last = v.len() - 1;
                v[last] = b' ';
            }),
        ),
        (
            "an empty name",
            with(&|v| {
                let last = v.len() - 2;
                v[last] = 0;
                v.pop();
            }),
        ),
        (
            "a list cut short",
            with(&|v| {
                v.pop();
            }),
        ),
    ];
    for (_what, bytes) in cases {
        let mut server = Connection::accept(cfg.clone(), now).unwrap();
        expect_reject(&mut server, now, &bytes, RejectCode::ProtocolError);
    }
    // Control: the untouched HELLO is accepted.
    let mut server = Connection::accept(cfg, now).unwrap();
    server.handle_input(now, &valid);
    assert_eq!(hello_event(&mut server).name.as_deref(), Some("mallory"));
}

#[test]
fn server_refuses_disjoint_version_range_with_its_own_range() {
    let now = Instant::now();
    let cfg = Config::default().versions(3, 4);
    for (lo, hi) in [(1, 2), (5, 9), (0, 0), (9, 2)] {
        let mut server = Connection::accept(cfg.clone(), now).unwrap();
        let hello = Hello {
            min_version: lo,
            max_version: hi,
            ..hello_new(Seq(1))
        };
        let r = expect_reject(
            &mut server,
            now,
            &enc(&[Frame::Hello(hello)]),
            RejectCode::VersionMismatch,
        );
        assert_eq!((r.min_version, r.max_version), (3, 4), "client {lo}..={hi}");
        assert!(!RejectCode::VersionMismatch.is_retryable());
    }
    // Overlapping ranges: the highest common version is offered to the application.
    let mut server = Connection::accept(cfg, now).unwrap();
    let hello = Hello {
        min_version: 2,
        max_version: 9,
        ..hello_new(Seq(1))
    };
    server.handle_input(now, &enc(&[Frame::Hello(hello)]));
    assert_eq!(hello_event(&mut server).version, 4);
    assert!(transmit(&mut server, now).is_empty());
}

/// A HELLO for a new session naming `transforms`.
fn hello_with_transforms(transforms: &[&str]) -> Vec<u8> {
    let hello = Hello {
        transforms: transforms.iter().map(|t| (*t).to_owned()).collect(),
        ..hello_new(Seq(1))
    };
    enc(&[Frame::Hello(hello)])
}

#[test]
fn server_accepts_a_transform_chain_whole_or_refuses_it_naming_the_transform() {
    let now = Instant::now();
    let cfg = Config::default()
        .transforms(["lz4", "sign"])
        .required_transforms(["sign"]);
    let refused: [(&[&str], &str); 4] = [
        (&["zstd", "sign"], "\"zstd\" is not supported"),
        (&["lz4"], "\"sign\" is required"),
        (&[], "\"sign\" is required"),
        (&["sign", "sign"], "listed twice"),
    ];
    for (offer, why) in refused {
        let mut server = Connection::accept(cfg.clone(), now).unwrap();
        let r = expect_reject(
            &mut server,
            now,
            &hello_with_transforms(offer),
            RejectCode::Incompatible,
        );
        assert!(r.reason.contains(why), "{offer:?}: {}", r.reason);
        assert!(!RejectCode::Incompatible.is_retryable());
    }
    // The client's order is kept (it need not be the server's).
    let mut server = Connection::accept(cfg, now).unwrap();
    server.handle_input(now, &hello_with_transforms(&["sign", "lz4"]));
    hello_event(&mut server);
    server.accept_new(now, SID, ResumeToken(TOKEN));
    let out = sent(&mut server, now);
    assert!(
        matches!(&out[..], [Frame::Welcome(w)] if w.transforms == ["sign", "lz4"]),
        "{out:?}"
    );
    assert_eq!(server.session().unwrap().transforms(), ["sign", "lz4"]);
}

#[test]
fn a_resume_must_name_the_sessions_transforms_and_a_mismatch_leaves_it_untouched() {
    let mut now = Instant::now();
    let cfg = Config::default().transforms(["lz4"]);
    let mut client =
        Connection::connect(cfg.clone(), now, Session::client(&cfg, None), None).unwrap();
    let mut server = Connection::accept(cfg.clone(), now).unwrap();
    server.handle_input(now, &transmit(&mut client, now));
    hello_event(&mut server);
    server.accept_new(now, SID, ResumeToken(TOKEN));
    pump(&mut now, &mut client, &mut server);
    assert!(client.is_established() && server.is_established());
    assert_eq!(client.session().unwrap().transforms(), ["lz4"]);
    client.handle_disconnect();
    server.handle_disconnect();
    let session = server.take_session().unwrap();

    // The right token, but no transforms: refused, and the session is given back as it was.
    let mut other = Connection::accept(cfg.clone(), now).unwrap();
    other.handle_input(now, &enc(&[hello_resume(SID, TOKEN, Seq(1))]));
    hello_event(&mut other);
    let back = *other
        .accept_resume(now, session, ResumeToken(FRESH))
        .unwrap_err();
    let out = sent(&mut other, now);
    assert!(
        matches!(&out[..], [Frame::Reject(r)] if r.code == RejectCode::Incompatible
            && r.reason.contains("lz4")),
        "{out:?}"
    );
    assert!(back.verify_token(&ResumeToken(TOKEN)));
    assert!(!back.verify_token(&ResumeToken(FRESH)));
    assert_eq!(back.transforms(), ["lz4"]);

    // The real client's resume names them and goes through.
    let client_session = client.take_session().unwrap();
    let mut client = Connection::connect(cfg.clone(), now, client_session, None).unwrap();
    let mut server = Connection::accept(cfg, now).unwrap();
    server.handle_input(now, &transmit(&mut client, now));
    hello_event(&mut server);
    server.accept_resume(now, back, ResumeToken(FRESH)).unwrap();
    pump(&mut now, &mut client, &mut server);
    assert!(client.is_established() && server.is_established());
}

#[test]
fn server_refuses_hello_with_unusable_limits() {
    let now = Instant::now();
    let l = good_limits();
    let bad = [
        Limits {
            max_frame: 8_191,
            ..l
        },
        Limits { max_frame: 0, ..l },
        Limits {
            max_message: 0,
            ..l
        },
        Limits {
            window: Window {
                messages: 0,
                bytes: 1 << 20,
            },
            ..l
        },
        Limits {
            window: Window {
                messages: 10,
                bytes: 0,
            },
            ..l
        },
    ];
    for limits in bad {
        let mut server = Connection::accept(Config::default(), now).unwrap();
        let hello = Hello {
            limits,
            ..hello_new(Seq(1))
        };
        expect_reject(
            &mut server,
            now,
            &enc(&[Frame::Hello(hello)]),
            RejectCode::ProtocolError,
        );
    }
    // The minimum itself is fine.
    let mut server = Connection::accept(Config::default(), now).unwrap();
    let hello = Hello {
        limits: Limits {
            max_frame: 8_192,
            ..l
        },
        ..hello_new(Seq(1))
    };
    server.handle_input(now, &enc(&[Frame::Hello(hello)]));
    hello_event(&mut server);
}

#[test]
fn server_handshake_timeout_for_silent_client() {
    let t0 = Instant::now();
    let cfg = Config::default().handshake_timeout(Duration::from_secs(5));
    let mut server = Connection::accept(cfg.clone(), t0).unwrap();
    let deadline = t0 + Duration::from_secs(5);
    assert_eq!(server.poll_timeout(), Some(deadline));
    server.handle_timeout(deadline - Duration::from_millis(1));
    assert!(events(&mut server).is_empty());
    assert!(!server.is_closed());
    server.handle_timeout(deadline);
    let evs = events(&mut server);
    assert!(
        matches!(
            &evs[..],
            [Event::Disconnected(ConnectionError::HandshakeTimeout)]
        ),
        "{evs:?}"
    );
    assert!(server.is_closed());
    assert_eq!(server.poll_timeout(), None);
    assert!(transmit(&mut server, deadline).is_empty());

    // A client trickling its HELLO one byte a second does not push the deadline back.
    let mut server = Connection::accept(cfg.clone(), t0).unwrap();
    let hello = enc(&[Frame::Hello(hello_new(Seq(1)))]);
    for (i, b) in hello.iter().take(5).enumerate() {
        let t = t0 + Duration::from_secs(i as u64);
        server.handle_input(t, std::slice::from_ref(b));
        assert_eq!(server.poll_timeout(), Some(deadline));
    }
    server.handle_timeout(deadline);
    assert!(matches!(
        &events(&mut server)[..],
        [Event::Disconnected(ConnectionError::HandshakeTimeout)]
    ));

    // An application that never decides on a valid HELLO times out the same way.
    let mut server = Connection::accept(cfg, t0).unwrap();
    server.handle_input(t0, &hello);
    hello_event(&mut server);
    server.handle_timeout(deadline);
    assert!(matches!(
        &events(&mut server)[..],
        [Event::Disconnected(ConnectionError::HandshakeTimeout)]
    ));
    // A late decision sends nothing.
    server.accept_new(deadline, SID, ResumeToken(TOKEN));
    assert!(transmit(&mut server, deadline).is_empty());
    assert!(!server.is_established());
}

/// A frame the client sent after its HELLO, before the answer (a client must not), is held
/// unparsed while the application decides and handled as a frame of the established
/// connection once WELCOME is out: the same outcome however TCP split the bytes (§2).
#[test]
fn frames_between_hello_and_decision_wait_for_the_welcome_however_split() {
    let now = Instant::now();
    let hello = enc(&[Frame::Hello(hello_new(Seq(1)))]);
    let eager = enc(&[data(1, false, b"eager")]);
    for same_read in [true, false] {
        let mut server = Connection::accept(Config::default(), now).unwrap();
        if same_read {
            server.handle_input(now, &[hello.clone(), eager.clone()].concat());
        } else {
            server.handle_input(now, &hello);
            server.handle_input(now, &eager);
        }
        hello_event(&mut server);
        assert!(
            transmit(&mut server, now).is_empty(),
            "nothing before the answer"
        );
        assert!(server.session().is_none());
        server.accept_new(now, SID, ResumeToken(TOKEN));
        let out = sent(&mut server, now);
        assert!(matches!(&out[0], Frame::Welcome(_)), "{out:?}");
        assert_eq!(
            server.recv().unwrap().body,
            "eager",
            "same read: {same_read}"
        );
        assert!(server.is_established());
    }
    // After a REJECT the held bytes are ignored.
    let mut server = Connection::accept(Config::default(), now).unwrap();
    server.handle_input(now, &[hello.clone(), eager.clone()].concat());
    hello_event(&mut server);
    server.reject(RejectCode::Unauthenticated, 0, "no");
    let out = sent(&mut server, now);
    assert!(matches!(&out[..], [Frame::Reject(_)]), "{out:?}");
    assert!(server.session().is_none());
}

/// More than a frame's worth of bytes before the answer is refused at once.
#[test]
fn a_flood_before_the_answer_is_refused() {
    let now = Instant::now();
    let config = Config::default();
    let mut server = Connection::accept(config, now).unwrap();
    server.handle_input(now, &enc(&[Frame::Hello(hello_new(Seq(1)))]));
    hello_event(&mut server);
    let pings = enc(&vec![Frame::Ping(7); 65_536 / 14 + 2]);
    let r = expect_reject(&mut server, now, &pings, RejectCode::ProtocolError);
    assert!(r.reason.contains("before WELCOME"), "{r:?}");
    // The application's late answer creates nothing.
    server.accept_new(now, SID, ResumeToken(TOKEN));
    assert!(transmit(&mut server, now).is_empty());
    assert!(server.session().is_none());
}

// ----------------------------------------------------------------------- resume attacks

#[test]
fn resume_with_wrong_token_refused_original_session_keeps_working() {
    let mut now = Instant::now();
    let (mut client, mut server) = real_session(&mut now);

    // The attacker knows the session id, not the token.
    let mut attacker = Connection::accept(Config::default(), now).unwrap();
    attacker.handle_input(now, &enc(&[hello_resume(SID, WRONG, Seq(2))]));
    let req = hello_event(&mut attacker);
    let resume = req.resume.unwrap();
    // Application logic: find the session (still carried by the live connection) and verify.
    let live = server
        .session()
        .filter(|s| s.id() == Some(resume.session_id))
        .unwrap();
    assert!(
        live.verify_token(&ResumeToken(TOKEN)),
        "control: the real token is accepted"
    );
    assert!(!live.verify_token(&resume.token));
    attacker.reject(RejectCode::UnknownSession, 0, "unknown session");
    let out = sent(&mut attacker, now);
    assert!(matches!(&out[..], [Frame::Reject(r)] if r.code == RejectCode::UnknownSession));
    assert!(attacker.is_closed() && attacker.session().is_none());

    // The original connection noticed nothing and still carries messages both ways.
    assert!(server.is_established() && client.is_established());
    assert!(transmit(&mut server, now).is_empty());
    check_flows(&mut now, &mut client, &mut server, b"after the attack");
    check_flows(&mut now, &mut server, &mut client, b"still here");
}

#[test]
fn accept_resume_with_wrong_token_gives_session_back() {
    let mut now = Instant::now();
    let (mut client, mut server) = real_session(&mut now);
    // The transport breaks; both sides keep their session.
    client.handle_disconnect();
    server.handle_disconnect();
    let server_session = server.take_session().unwrap();
    let client_session = client.take_session().unwrap();

    let mut attacker = Connection::accept(Config::default(), now).unwrap();
    attacker.handle_input(now, &enc(&[hello_resume(SID, WRONG, Seq(2))]));
    hello_event(&mut attacker);
    let back = *attacker
        .accept_resume(now, server_session, ResumeToken(FRESH))
        .unwrap_err();
    let out = sent(&mut attacker, now);
    assert!(
        matches!(&out[..], [Frame::Reject(r)] if r.code == RejectCode::UnknownSession),
        "{out:?}"
    );
    assert!(attacker.session().is_none() && attacker.is_closed());
    // Untouched: same id, old token still valid, the fresh one was not installed.
    assert_eq!(back.id(), Some(SID));
    assert!(back.verify_token(&ResumeToken(TOKEN)));
    assert!(!back.verify_token(&ResumeToken(FRESH)));
    assert_eq!(back.acked(), Seq(2));

    // The real client resumes the returned session.
    let cfg = Config::default();
    let mut client = Connection::connect(cfg.clone(), now, client_session, None).unwrap();
    let mut server = Connection::accept(cfg, now).unwrap();
    server.handle_input(now, &transmit(&mut client, now));
    let req = hello_event(&mut server).resume.unwrap();
    assert_eq!(req.session_id, SID);
    assert!(back.verify_token(&req.token));
    server
        .accept_resume(now, back, ResumeToken(FRESH2))
        .unwrap();
    pump(&mut now, &mut client, &mut server);
    assert!(events(&mut client).iter().any(|e| matches!(e,
        Event::Established { session_id, resumed: true } if *session_id == SID)));
    check_flows(&mut now, &mut client, &mut server, b"resumed");
    // Rotation: once the client proved it holds the fresh token, the old one is dead.
    let s = server.session().unwrap();
    assert!(s.verify_token(&ResumeToken(FRESH2)));
    assert!(!s.verify_token(&ResumeToken(TOKEN)));
}

#[test]
fn resume_of_unknown_session_refused() {
    let mut now = Instant::now();
    let (mut client, mut server) = real_session(&mut now);
    client.handle_disconnect();
    server.handle_disconnect();
    let mut table: HashMap<SessionId, Session> = HashMap::new();
    table.insert(SID, server.take_session().unwrap());

    // Application logic: the id is not in the table.
    let mut attacker = Connection::accept(Config::default(), now).unwrap();
    attacker.handle_input(now, &enc(&[hello_resume(OTHER_SID, TOKEN, Seq(2))]));
    let req = hello_event(&mut attacker).resume.unwrap();
    assert!(!table.contains_key(&req.session_id));
    attacker.reject(RejectCode::UnknownSession, 0, "unknown session");
    assert!(matches!(&sent(&mut attacker, now)[..],
        [Frame::Reject(r)] if r.code == RejectCode::UnknownSession));

    // The core checks the id too: the right token for a different id is refused.
    let mut attacker = Connection::accept(Config::default(), now).unwrap();
    attacker.handle_input(now, &enc(&[hello_resume(OTHER_SID, TOKEN, Seq(2))]));
    hello_event(&mut attacker);
    let session = table.remove(&SID).unwrap();
    let back = *attacker
        .accept_resume(now, session, ResumeToken(FRESH))
        .unwrap_err();
    assert!(matches!(&sent(&mut attacker, now)[..],
        [Frame::Reject(r)] if r.code == RejectCode::UnknownSession));
    assert_eq!(back.id(), Some(SID));
    assert!(!back.verify_token(&ResumeToken(FRESH)));
}

#[test]
fn resume_with_impossible_position_refused() {
    let mut now = Instant::now();
    let (mut client, mut server) = real_session(&mut now);
    for body in [&b"s2"[..], b"s3", b"s4"] {
        server.send(Bytes::copy_from_slice(body), 0).unwrap();
    }
    pump(&mut now, &mut client, &mut server);
    while client.recv().is_some() {}
    pump(&mut now, &mut client, &mut server);
    // The server sent seq 1..=4, all acknowledged.
    assert_eq!(server.session().unwrap().acked(), Seq(5));
    client.handle_disconnect();
    server.handle_disconnect();
    let mut session = server.take_session().unwrap();

    // Claims to have received a message the server never sent, or less than it acknowledged.
    for received in [6, 1_000, u64::MAX, 4, 0] {
        let mut attacker = Connection::accept(Config::default(), now).unwrap();
        attacker.handle_input(now, &enc(&[hello_resume(SID, TOKEN, Seq(received))]));
        hello_event(&mut attacker);
        session = *attacker
            .accept_resume(now, session, ResumeToken(FRESH))
            .unwrap_err();
        let out = sent(&mut attacker, now);
        assert!(
            matches!(&out[..], [Frame::Reject(r)] if r.code == RejectCode::ProtocolError),
            "received {received}: {out:?}"
        );
        assert!(session.verify_token(&ResumeToken(TOKEN)));
        assert!(!session.verify_token(&ResumeToken(FRESH)));
    }

    // Control: the exact position is accepted.
    let mut peer = Connection::accept(Config::default(), now).unwrap();
    peer.handle_input(now, &enc(&[hello_resume(SID, TOKEN, Seq(5))]));
    hello_event(&mut peer);
    peer.accept_resume(now, session, ResumeToken(FRESH))
        .unwrap();
    let out = sent(&mut peer, now);
    assert!(
        matches!(&out[0], Frame::Welcome(w) if w.kind == WelcomeKind::Resumed { partial: 0,
            received: Seq(2), delivered: Seq(2) }),
        "{out:?}"
    );
}

// ------------------------------------------------------------------ after the handshake

#[test]
fn data_gap_closes_with_protocol_error() {
    let now = Instant::now();
    let mut server = hostile_client_vs_server(Config::default(), now);
    server.handle_input(now, &enc(&[data(1, false, b"c1")]));
    assert!(!server.is_closed());
    let ended = expect_close(
        &mut server,
        now,
        &enc(&[data(3, false, b"c3")]),
        CloseCode::ProtocolError,
    );
    assert_eq!(bodies(&ended.unacknowledged), [b"s1", b"s2"]);
    assert_eq!(ended.discarded, 1, "c1 was received, not taken");
    assert_eq!(ended.close.delivered, Seq(1));
}

#[test]
fn data_gap_closes_client_too() {
    let now = Instant::now();
    let mut client = hostile_server_vs_client(now);
    let ended = expect_close(
        &mut client,
        now,
        &enc(&[data(2, false, b"skipped one")]),
        CloseCode::ProtocolError,
    );
    assert_eq!(bodies(&ended.unacknowledged), [b"q1", b"q2"]);
}

#[test]
fn data_beyond_message_window_closes_with_flow_control() {
    let now = Instant::now();
    let cfg = Config::default().window(Window {
        messages: 2,
        bytes: 1 << 20,
    });
    let mut server = hostile_client_vs_server(cfg, now);
    server.handle_input(now, &enc(&[data(1, false, b"a"), data(2, false, b"b")]));
    assert!(!server.is_closed());
    // The window counts from the delivered position: taking one frees one slot.
    assert_eq!(server.recv().unwrap().body, "a");
    server.handle_input(now, &enc(&[data(3, false, b"c")]));
    assert!(!server.is_closed());
    assert_eq!(server.session().unwrap().inbox_len(), 2);
    let ended = expect_close(
        &mut server,
        now,
        &enc(&[data(4, false, b"d")]),
        CloseCode::FlowControl,
    );
    assert_eq!(bodies(&ended.unacknowledged), [b"s1", b"s2"]);
    assert_eq!(ended.discarded, 2);
    assert_eq!(ended.close.delivered, Seq(2));
}

#[test]
fn data_beyond_byte_window_closes_with_flow_control() {
    let now = Instant::now();
    let cfg = Config::default().window(Window {
        messages: 100,
        bytes: 100,
    });
    // Exactly the window is fine; one byte more is not.
    let mut server = hostile_client_vs_server(cfg.clone(), now);
    server.handle_input(
        now,
        &enc(&[data(1, false, &[1; 60]), data(2, false, &[2; 40])]),
    );
    assert!(!server.is_closed());
    let ended = expect_close(
        &mut server,
        now,
        &enc(&[data(3, false, &[3; 1])]),
        CloseCode::FlowControl,
    );
    assert_eq!(bodies(&ended.unacknowledged), [b"s1", b"s2"]);

    // A single message larger than the window is allowed when nothing else is outstanding
    // (§6), but nothing may follow it.
    let mut server = hostile_client_vs_server(cfg.clone(), now);
    server.handle_input(now, &enc(&[data(1, false, &[1; 150])]));
    assert!(!server.is_closed());
    expect_close(
        &mut server,
        now,
        &enc(&[data(2, false, b"x")]),
        CloseCode::FlowControl,
    );

    // A chunked message is counted as its chunks arrive.
    let mut server = hostile_client_vs_server(cfg, now);
    server.handle_input(
        now,
        &enc(&[data(1, false, &[1; 60]), data(2, true, &[2; 30])]),
    );
    assert!(!server.is_closed());
    expect_close(
        &mut server,
        now,
        &enc(&[data(2, true, &[2; 30])]),
        CloseCode::FlowControl,
    );
}

#[test]
fn chunked_message_above_max_message_closes_early() {
    const MAX: usize = 10_000;
    const CHUNK: usize = 4_096;
    let now = Instant::now();
    let cfg = Config::default().max_message(MAX as u32);

    // Exactly the maximum, in chunks, is one message.
    let mut server = hostile_client_vs_server(cfg.clone(), now);
    let body: Vec<u8> = (0..MAX).map(|i| i as u8).collect();
    let chunks: Vec<Frame> = body
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, c)| data(1, (i + 1) * CHUNK < MAX, c))
        .collect();
    server.handle_input(now, &enc(&chunks));
    assert_eq!(server.recv().unwrap().body, body);

    // A message that never ends: refused at the chunk that crosses the maximum, having
    // accepted at most max_message + one chunk.
    let mut server = hostile_client_vs_server(cfg.clone(), now);
    let chunk = enc(&[data(1, true, &[0xee; CHUNK])]);
    let mut accepted = 0;
    loop {
        accepted += CHUNK;
        server.handle_input(now, &chunk);
        if server.is_closed() {
            break;
        }
        assert!(accepted <= MAX, "still open after {accepted} bytes");
        assert!(transmit(&mut server, now).is_empty());
    }
    assert!(accepted <= MAX + CHUNK);
    assert_eq!(accepted, 3 * CHUNK);
    let evs = events(&mut server);
    assert!(evs.iter().any(|e| matches!(e,
        Event::SessionEnded { reason: SessionEnd::ProtocolViolation { code: CloseCode::MessageTooLarge, .. }, unacknowledged, .. }
            if bodies(unacknowledged) == [b"s1", b"s2"])), "{evs:?}");
    let out = sent(&mut server, now);
    assert!(matches!(&out[..], [Frame::Close(c)] if c.code == CloseCode::MessageTooLarge));

    // All of it in one read: refused, and nothing of the rest stays buffered.
    let mut server = hostile_client_vs_server(cfg.clone(), now);
    let flood: Vec<u8> = chunk
        .iter()
        .copied()
        .cycle()
        .take(chunk.len() * 100)
        .collect();
    let ended = expect_close(&mut server, now, &flood, CloseCode::MessageTooLarge);
    assert_eq!(bodies(&ended.unacknowledged), [b"s1", b"s2"]);
    assert_eq!(server.buffered_input(), 0);

    // One unchunked frame above the maximum.
    let mut server = hostile_client_vs_server(cfg, now);
    expect_close(
        &mut server,
        now,
        &enc(&[data(1, false, &[0; MAX + 1])]),
        CloseCode::MessageTooLarge,
    );
}

#[test]
fn chunk_of_another_message_inside_a_message_closes() {
    let now = Instant::now();
    let mut server = hostile_client_vs_server(Config::default(), now);
    server.handle_input(now, &enc(&[data(1, true, b"part one ")]));
    let ended = expect_close(
        &mut server,
        now,
        &enc(&[data(2, false, b"interloper")]),
        CloseCode::ProtocolError,
    );
    assert_eq!(bodies(&ended.unacknowledged), [b"s1", b"s2"]);
}

#[test]
fn ack_for_unsent_sequence_number_closes() {
    let now = Instant::now();
    let mut server = hostile_client_vs_server(Config::default(), now);
    server.handle_input(now, &enc(&[ack(2)]));
    let evs = events(&mut server);
    assert!(
        evs.iter().any(|e| matches!(
            e,
            Event::Acknowledged {
                first: Seq(1),
                end: Seq(2)
            }
        )),
        "{evs:?}"
    );
    // Seq 3 was never sent: an ACK up to (excluding) 4 claims it was delivered.
    let ended = expect_close(&mut server, now, &enc(&[ack(4)]), CloseCode::ProtocolError);
    assert_eq!(bodies(&ended.unacknowledged), [b"s2"]);

    // An ACK that goes backwards.
    let mut server = hostile_client_vs_server(Config::default(), now);
    server.handle_input(now, &enc(&[ack(3)]));
    assert!(!server.is_closed());
    expect_close(&mut server, now, &enc(&[ack(2)]), CloseCode::ProtocolError);

    // A CLOSE whose final position claims an unsent message.
    let mut server = hostile_client_vs_server(Config::default(), now);
    let close = Frame::Close(Close {
        code: CloseCode::Normal,
        delivered: Seq(9),
        reason: String::new(),
    });
    let ended = expect_close(&mut server, now, &enc(&[close]), CloseCode::ProtocolError);
    assert_eq!(bodies(&ended.unacknowledged), [b"s1", b"s2"]);
}

#[test]
fn handshake_frames_after_establishment_close() {
    let now = Instant::now();
    let handshake = [
        Frame::Hello(hello_new(Seq(1))),
        hello_resume(SID, TOKEN, Seq(1)),
        welcome_new(1, good_limits()),
        Frame::Reject(Reject {
            code: RejectCode::ServerFull,
            retry_after_ms: 0,
            min_version: 1,
            max_version: 1,
            reason: String::new(),
        }),
    ];
    for f in &handshake {
        let mut server = hostile_client_vs_server(Config::default(), now);
        let ended = expect_close(
            &mut server,
            now,
            &enc(std::slice::from_ref(f)),
            CloseCode::ProtocolError,
        );
        assert_eq!(bodies(&ended.unacknowledged), [b"s1", b"s2"], "{f:?}");
        let mut client = hostile_server_vs_client(now);
        let ended = expect_close(
            &mut client,
            now,
            &enc(std::slice::from_ref(f)),
            CloseCode::ProtocolError,
        );
        assert_eq!(bodies(&ended.unacknowledged), [b"q1", b"q2"], "{f:?}");
    }
}

#[test]
fn oversized_frame_after_establishment_closes() {
    let now = Instant::now();
    let mut server = hostile_client_vs_server(Config::default(), now);
    let mut header = (65_537u32).to_be_bytes().to_vec();
    header.extend_from_slice(&[kind::DATA, 0]);
    let ended = expect_close(&mut server, now, &header, CloseCode::FrameTooLarge);
    assert_eq!(bodies(&ended.unacknowledged), [b"s1", b"s2"]);
    assert_eq!(server.buffered_input(), 0);

    let mut server = hostile_client_vs_server(Config::default(), now);
    expect_close(
        &mut server,
        now,
        &raw(0x42, 0, b""),
        CloseCode::ProtocolError,
    );
}

#[test]
fn forged_pong_does_not_panic() {
    let now = Instant::now();
    let mut server = hostile_client_vs_server(Config::default(), now);
    // A PONG "sent" far in the future is ignored; the connection stays up.
    server.handle_input(now, &enc(&[Frame::Pong(u64::MAX)]));
    assert!(!server.is_closed());
    assert!(
        !events(&mut server)
            .iter()
            .any(|e| matches!(e, Event::Pong { .. }))
    );
    server.handle_input(now, &enc(&[Frame::Ping(42)]));
    assert!(sent(&mut server, now).contains(&Frame::Pong(42)));
}

/// A peer may pick any first sequence number; one at the very end of the space leaves the
/// receiver no room to count past it (regression: `seq + 1` once overflowed and panicked).
#[test]
fn data_at_end_of_sequence_space_is_refused_not_panic() {
    let now = Instant::now();
    for first in [u64::MAX, u64::MAX - 1] {
        let mut server = Connection::accept(Config::default(), now).unwrap();
        server.handle_input(now, &enc(&[Frame::Hello(hello_new(Seq(first)))]));
        let out = sent(&mut server, now);
        if let [Frame::Reject(r)] = &out[..] {
            // Refusing such a HELLO is a fine answer too.
            assert_eq!(r.code, RejectCode::ProtocolError);
            continue;
        }
        hello_event(&mut server);
        server.accept_new(now, SID, ResumeToken(TOKEN));
        sent(&mut server, now);
        let input = enc(&(first..=u64::MAX)
            .map(|s| data(s, false, b"x"))
            .collect::<Vec<_>>());
        let r = catch_unwind(AssertUnwindSafe(|| server.handle_input(now, &input)));
        assert!(r.is_ok(), "first_seq {first}: handle_input panicked");
        // A sender can never send u64::MAX (Session::send stops at SequenceExhausted), so it
        // is a protocol violation.
        let out = sent(&mut server, now);
        assert!(
            out.iter()
                .any(|f| matches!(f, Frame::Close(c) if c.code == CloseCode::ProtocolError)),
            "{out:?}"
        );
    }
}

// -------------------------------------------------------------- client: hostile server

#[test]
fn client_ends_session_when_server_answers_garbage() {
    let now = Instant::now();
    let cases: [(&[u8], CloseCode); 3] = [
        (
            b"HTTP/1.1 400 Bad Request\r\n\r\n",
            CloseCode::FrameTooLarge,
        ),
        (&[0, 0, 0, 2, 0x99, 0, b'h', b'i'], CloseCode::ProtocolError),
        (&[0, 0, 0, 0, kind::WELCOME, 0], CloseCode::ProtocolError),
    ];
    for (garbage, code) in cases {
        let mut client = client_awaiting_welcome(&Config::default(), now);
        client.handle_input(now, garbage);
        // No CLOSE (there is no session on the wire yet) and certainly no DATA.
        assert!(transmit(&mut client, now).is_empty());
        assert!(client.is_closed());
        let evs = events(&mut client);
        assert!(
            matches!(&evs[..], [Event::SessionEnded {
                reason: SessionEnd::ProtocolViolation { code: c, .. },
                unacknowledged,
                ..
            }] if *c == code && bodies(unacknowledged) == [b"q1", b"q2"]),
            "{evs:?}"
        );
    }
}

#[test]
fn client_refuses_welcome_it_cannot_accept() {
    let now = Instant::now();
    let l = good_limits();
    let cases = [
        welcome_new(2, l),
        welcome_new(0, l),
        welcome_new(
            1,
            Limits {
                max_frame: 1_000,
                ..l
            },
        ),
        // A resumed WELCOME for a session the client never had.
        Frame::Welcome(Welcome {
            timings: None,
            version: 1,
            session_id: SID,
            token: ResumeToken(TOKEN),
            limits: l,
            kind: WelcomeKind::Resumed {
                partial: 0,
                received: Seq(1),
                delivered: Seq(1),
            },
            transforms: Vec::new(),
        }),
        // A chain the client does not apply.
        Frame::Welcome(Welcome {
            timings: None,
            version: 1,
            session_id: SID,
            token: ResumeToken(TOKEN),
            limits: l,
            kind: WelcomeKind::New { first_seq: Seq(1) },
            transforms: vec!["lz4".into()],
        }),
    ];
    for w in cases {
        let mut client = client_awaiting_welcome(&Config::default(), now);
        client.handle_input(now, &enc(std::slice::from_ref(&w)));
        assert!(!client.is_established());
        assert!(transmit(&mut client, now).is_empty(), "{w:?}");
        let evs = events(&mut client);
        assert!(
            matches!(&evs[..], [Event::SessionEnded {
                reason: SessionEnd::ProtocolViolation { code: CloseCode::ProtocolError, .. },
                unacknowledged,
                ..
            }] if bodies(unacknowledged) == [b"q1", b"q2"]),
            "{w:?}: {evs:?}"
        );
    }
}

#[test]
fn client_reject_server_full_is_retryable() {
    let now = Instant::now();
    let cfg = Config::default();
    let mut client = client_awaiting_welcome(&cfg, now);
    let reject = Frame::Reject(Reject {
        code: RejectCode::ServerFull,
        retry_after_ms: 250,
        min_version: 1,
        max_version: 1,
        reason: "full".into(),
    });
    client.handle_input(now, &enc(&[reject]));
    let evs = events(&mut client);
    assert!(
        matches!(&evs[..], [Event::Disconnected(ConnectionError::Rejected {
            code: RejectCode::ServerFull,
            retry_after_ms: 250,
            reason,
        })] if reason == "full"),
        "{evs:?}"
    );
    assert!(client.is_closed());
    assert!(transmit(&mut client, now).is_empty());
    let session = client.take_session().unwrap();
    assert_eq!(session.outbox_len(), 2);
    assert_eq!(session.id(), None);
    // Retrying sends the same new-session HELLO.
    let mut retry = Connection::connect(cfg, now, session, None).unwrap();
    let out = sent(&mut retry, now);
    assert!(
        matches!(&out[..], [Frame::Hello(h)] if h.resume.is_none() && h.first_seq == Seq(1)),
        "{out:?}"
    );
}

#[test]
fn client_reject_unauthenticated_is_final() {
    let now = Instant::now();
    let mut client = client_awaiting_welcome(&Config::default(), now);
    let reject = Frame::Reject(Reject {
        code: RejectCode::Unauthenticated,
        retry_after_ms: 0,
        min_version: 1,
        max_version: 1,
        reason: "bad password".into(),
    });
    client.handle_input(now, &enc(&[reject]));
    let evs = events(&mut client);
    assert!(
        matches!(&evs[..], [Event::SessionEnded {
            reason: SessionEnd::Rejected { code: RejectCode::Unauthenticated, reason },
            unacknowledged,
            discarded: 0,
        }] if reason == "bad password" && bodies(unacknowledged) == [b"q1", b"q2"]),
        "{evs:?}"
    );
    assert!(client.take_session().is_none());
    assert!(transmit(&mut client, now).is_empty());
}

#[test]
fn client_handshake_timeout_keeps_session() {
    let t0 = Instant::now();
    let mut client = client_awaiting_welcome(&Config::default(), t0);
    let deadline = client.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + Duration::from_secs(10));
    client.handle_timeout(deadline);
    assert!(matches!(
        &events(&mut client)[..],
        [Event::Disconnected(ConnectionError::HandshakeTimeout)]
    ));
    assert_eq!(client.take_session().unwrap().outbox_len(), 2);
}
