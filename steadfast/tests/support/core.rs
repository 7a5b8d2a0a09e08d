//! Driving the I/O-free protocol core by hand (`tests/hostile.rs`, `tests/v2_edges.rs`): encode
//! frames, take what a connection has to send, decode it, drain events, and move bytes both
//! ways on a virtual clock until both sides are quiet.

use std::time::{Duration, Instant};

use steadfast::proto::{Connection, Decoder, Event, Frame, Limits, Window};

/// The frames, encoded back to back.
pub fn enc(frames: &[Frame]) -> Vec<u8> {
    let mut buf = Vec::new();
    for f in frames {
        f.encode(&mut buf);
    }
    buf
}

/// Everything the connection has to send now.
pub fn transmit(conn: &mut Connection, now: Instant) -> Vec<u8> {
    let mut buf = Vec::new();
    while conn.poll_transmit(now, &mut buf) > 0 {}
    buf
}

/// Decodes what a connection of protocol `version` sent; it must be well-formed.
pub fn decode_all_in(bytes: &[u8], version: u16) -> Vec<Frame> {
    let mut dec = Decoder::new(1 << 24);
    dec.set_version(version);
    dec.feed(bytes);
    let mut out = Vec::new();
    while let Some(f) = dec.decode().unwrap() {
        out.push(f);
    }
    assert_eq!(dec.buffered(), 0, "trailing bytes in output");
    out
}

/// Every event waiting.
pub fn events(conn: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

/// The default limits, as a peer announces them.
pub fn good_limits() -> Limits {
    Limits {
        max_frame: 65_536,
        max_message: 16 << 20,
        window: Window {
            messages: 8_192,
            bytes: 8 << 20,
        },
    }
}

/// Moves bytes both ways until neither side has anything to say, advancing the virtual clock
/// in small steps while quiet (delayed ACKs), and firing due timeouts.
pub fn pump(now: &mut Instant, a: &mut Connection, b: &mut Connection) {
    let mut quiet = 0;
    for _ in 0..10_000 {
        let ab = transmit(a, *now);
        if !ab.is_empty() {
            b.handle_input(*now, &ab);
        }
        let ba = transmit(b, *now);
        if !ba.is_empty() {
            a.handle_input(*now, &ba);
        }
        if ab.is_empty() && ba.is_empty() {
            quiet += 1;
            if quiet > 3 {
                return;
            }
            *now += Duration::from_millis(2);
            for c in [&mut *a, &mut *b] {
                if c.poll_timeout().is_some_and(|t| t <= *now) {
                    c.handle_timeout(*now);
                }
            }
        } else {
            quiet = 0;
        }
    }
    panic!("the link never went quiet");
}
