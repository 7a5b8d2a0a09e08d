//! The core's events taken in part (`Connection::poll_event_if`): a `recv` that reads its
//! message in its own task takes what concerns receivers and senders, and leaves the rest
//! (the handshake's report) in order for the connection's task (`steadfast/src/input.rs`).

#![cfg(feature = "runtime")]
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::Bytes;
mod support;

use steadfast::proto::{Config, Connection, Event, ResumeToken, Session, SessionId};
use support::core::{events, pump, transmit};

/// What a waiting `recv` takes.
fn routine(e: &Event) -> bool {
    matches!(
        e,
        Event::MessagesAvailable | Event::Acknowledged { .. } | Event::Pong { .. }
    )
}

#[test]
fn events_taken_in_part_leave_the_rest_first_and_in_order() {
    let mut now = Instant::now();
    let cfg = Config::default();
    let mut client =
        Connection::connect(cfg.clone(), now, Session::client(&cfg, None), None).unwrap();
    let mut server = Connection::accept(cfg, now).unwrap();
    server.handle_input(now, &transmit(&mut client, now));
    assert!(matches!(&events(&mut server)[..], [Event::Hello(_)]));
    server.accept_new(now, SessionId([7; 16]), ResumeToken([1; 16]));
    pump(&mut now, &mut client, &mut server);
    // A message comes right behind the WELCOME, before anything took the client's events.
    server.send(Bytes::from_static(b"first"), 0).unwrap();
    client.handle_input(now, &transmit(&mut server, now));

    // The handshake's report is first: nothing routine is taken past it.
    assert!(client.poll_event_if(routine).is_none());
    assert!(client.has_events());
    assert!(matches!(
        client.poll_event(),
        Some(Event::Established { resumed: false, .. })
    ));
    assert!(matches!(
        client.poll_event_if(routine),
        Some(Event::MessagesAvailable)
    ));
    assert!(!client.has_events());
}
