//! The core's vectored output (`Connection::poll_transmit_vectored`): large bodies are left
//! in the memory the application gave them in, each with its place in the stream; put back in
//! their places, the stream is the one `poll_transmit` writes, and the peer receives every
//! message whole and in order (`steadfast/src/output.rs` writes them so).

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;
mod support;

use steadfast::proto::{Config, Connection, Event, ResumeToken, SPLICE_MIN, Session, SessionId};
use support::core::{events, pump, transmit};

/// A client and a server with an established session.
fn established(cfg: &Config, now: &mut Instant) -> (Connection, Connection) {
    let mut client =
        Connection::connect(cfg.clone(), *now, Session::client(cfg, None), None).unwrap();
    let mut server = Connection::accept(cfg.clone(), *now).unwrap();
    server.handle_input(*now, &transmit(&mut client, *now));
    assert!(matches!(&events(&mut server)[..], [Event::Hello(_)]));
    server.accept_new(*now, SessionId([7; 16]), ResumeToken([1; 16]));
    pump(now, &mut client, &mut server);
    assert!(client.is_established() && server.is_established());
    (client, server)
}

/// `buf` with each body put back before `buf[at..]`.
fn joined(buf: &[u8], bodies: &VecDeque<(usize, Bytes)>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut from = 0;
    for (at, body) in bodies {
        out.extend_from_slice(&buf[from..*at]);
        out.extend_from_slice(body);
        from = *at;
    }
    out.extend_from_slice(&buf[from..]);
    out
}

#[test]
fn large_bodies_stay_in_place_and_arrive_whole_and_in_order() {
    let mut now = Instant::now();
    // Chunks of at most 4 KiB, so that the largest message goes in pieces.
    let cfg = Config::default().max_chunk(4_096);
    let (mut client, mut server) = established(&cfg, &mut now);
    let sizes = [1, SPLICE_MIN - 1, SPLICE_MIN, 1_024, 3_000, 10_000, 64];
    let sent: Vec<Bytes> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| Bytes::from((0..n).map(|b| (b + i) as u8).collect::<Vec<u8>>()))
        .collect();
    for body in &sent {
        client.send(body.clone(), 0).unwrap();
    }
    let (mut buf, mut bodies) = (Vec::new(), VecDeque::new());
    let n = client.poll_transmit_vectored(now, &mut buf, &mut bodies);
    let stream = joined(&buf, &bodies);
    assert_eq!(n, stream.len(), "the count includes the bodies");

    // Bodies of SPLICE_MIN bytes and more, and the chunks of the largest, point into the
    // application's memory; smaller ones were copied.
    let inside = |b: &Bytes, of: &Bytes| {
        let (start, end) = (of.as_ptr() as usize, of.as_ptr() as usize + of.len());
        (start..end).contains(&(b.as_ptr() as usize))
    };
    for (i, body) in sent.iter().enumerate() {
        let referenced = bodies.iter().filter(|(_, b)| inside(b, body)).count();
        let want = match sizes[i] {
            n if n < SPLICE_MIN => 0,
            10_000 => 3, // chunks of 4,096 + 4,096 + 1,808 bytes
            _ => 1,
        };
        assert_eq!(
            referenced, want,
            "message {i} ({} bytes): {referenced} references",
            sizes[i]
        );
    }
    assert!(bodies.iter().all(|(_, b)| b.len() >= SPLICE_MIN));

    // The peer reads the joined stream as it would the copied one.
    server.handle_input(now, &stream);
    for body in &sent {
        assert_eq!(&server.recv().unwrap().body, body);
    }
    assert!(server.recv().is_none());
}

#[test]
fn the_joined_stream_is_the_copied_one() {
    let mut now = Instant::now();
    let cfg = Config::default();
    let (mut a, _a_server) = established(&cfg, &mut now);
    let (mut b, _b_server) = established(&cfg, &mut now);
    for n in [700, 20, 5_000, 512, 100_000] {
        let body = Bytes::from(vec![n as u8; n]);
        a.send(body.clone(), 42).unwrap();
        b.send(body, 42).unwrap();
    }
    let (mut buf, mut bodies) = (Vec::new(), VecDeque::new());
    let mut copied = Vec::new();
    loop {
        let x = a.poll_transmit_vectored(now, &mut buf, &mut bodies);
        let y = b.poll_transmit(now, &mut copied);
        assert_eq!(x, y, "the same count each call");
        if x == 0 {
            break;
        }
    }
    assert!(!bodies.is_empty());
    assert_eq!(joined(&buf, &bodies), copied);
}
