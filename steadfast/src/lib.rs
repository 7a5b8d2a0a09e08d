//! # steadfast
//!
//! Message-oriented communication over TCP in which every message arrives **exactly once, in
//! order**, across dropped connections and reconnects, and the sender learns, per message, that
//! the peer's application has taken it.
//!
//! ```text
//!  application ── Client / Server / Peer handles            (runtime issue, in progress)
//!       │
//!  runtime (tokio) ── one driver task per connection          (feature `runtime`)
//!       │
//!  protocol core (no I/O) ── steadfast::proto: frames, handshake, sessions,
//!                            outbox, duplicate suppression, ACKs, flow control, heartbeats
//! ```
//!
//! ## Status
//!
//! The protocol core ([`proto`]) is complete and tested on a simulated link with a virtual
//! clock; the tokio runtime, the typed application layer and the command-line tool come next.
//! The wire format is specified in `PROTOCOL.md`, whose sections the code cites as `§n`.
//!
//! ## Delivery guarantees (of the core)
//!
//! - **Exactly once, in order, per session and direction**, across any number of connection
//!   losses while the session lives: every message carries a 64-bit sequence number, the
//!   receiver drops what it already has, and a resume exchanges exact positions so each side
//!   resends precisely what the other lacks.
//! - **Receipts**: [`proto::Event::Acknowledged`] reports each sequence number exactly once,
//!   when the peer's application has taken the message.
//! - **No silent loss**: a session that ends hands every unacknowledged message back in
//!   [`proto::Event::SessionEnded`].
//! - **Bounded memory**: the outbox is bounded in messages and bytes (a full outbox is
//!   [`proto::SendError::Full`]); the inbox is bounded by the receive window the peer must
//!   respect; every frame length is checked before buffering.
//!
//! ## Features
//!
//! - `runtime` (default): the tokio runtime. Without it, only the I/O-free core builds
//!   (`cargo check -p steadfast --no-default-features`).

#![forbid(unsafe_code)]

pub mod proto;

#[cfg(feature = "runtime")]
mod client;
#[cfg(feature = "runtime")]
mod config;
#[cfg(feature = "runtime")]
mod driver;
#[cfg(feature = "runtime")]
pub mod error;
#[cfg(feature = "runtime")]
mod peer;
#[cfg(feature = "runtime")]
mod server;

#[cfg(feature = "runtime")]
pub use client::{Client, ClientEvent};
#[cfg(feature = "runtime")]
pub use config::{ClientConfig, ServerConfig};
#[cfg(feature = "runtime")]
pub use peer::{EndReason, Peer, PeerStats, Receipt};
#[cfg(feature = "runtime")]
pub use proto::{Message, Seq, SessionId};
#[cfg(feature = "runtime")]
pub use server::{Server, ServerEvent};
