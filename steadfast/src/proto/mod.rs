//! The protocol core: frames, handshake and sessions as a deterministic state machine.
//!
//! Nothing here performs I/O, spawns a task or reads a clock: bytes and `now` go in, bytes to
//! send, the next deadline and events come out (see [`Connection`] for the call order). The
//! tokio runtime of this crate is one driver of it; the tests drive it over a simulated link
//! with a virtual clock. Sections of PROTOCOL.md are cited as `§n`.
//!
//! ```
//! use std::time::Instant;
//! use bytes::Bytes;
//! use steadfast::proto::{Config, Connection, Event, ResumeToken, Session, SessionId};
//!
//! let now = Instant::now();
//! let config = Config::default();
//! let mut client =
//!     Connection::connect(config.clone(), now, Session::client(&config, None), None).unwrap();
//! let mut server = Connection::accept(config, now).unwrap();
//! client.send(Bytes::from_static(b"hello"), 0).unwrap();
//!
//! // Move bytes both ways until both sides are quiet.
//! let mut buf = Vec::new();
//! for _ in 0..4 {
//!     buf.clear();
//!     client.poll_transmit(now, &mut buf);
//!     server.handle_input(now, &buf);
//!     while let Some(event) = server.poll_event() {
//!         if let Event::Hello(_) = event {
//!             server.accept_new(now, SessionId([7; 16]), ResumeToken([9; 16]));
//!         }
//!     }
//!     buf.clear();
//!     server.poll_transmit(now, &mut buf);
//!     client.handle_input(now, &buf);
//! }
//! assert_eq!(server.recv().unwrap().body, "hello");
//! ```

#![deny(clippy::disallowed_methods)]

mod codec;
mod config;
mod connection;
pub mod frame;
mod session;
mod slab;

pub use codec::Decoder;
pub use config::{Config, ConfigError, MAX_ACK_DELAY, MIN_IDLE_TIMEOUT, SUPPORTED_VERSIONS};
pub use connection::{Connection, ConnectionError, Event, HelloRequest, SPLICE_MIN, SessionEnd};
pub use frame::{
    CloseCode, Frame, FrameError, Limits, RejectCode, ResumeRequest, ResumeToken, Seq, SessionId,
    Timings, Window,
};
pub use session::{Message, Role, SendError, Session, SessionRecord, Stats};
