//! # steadfast
//!
//! Message-oriented communication over TCP in which every message arrives **exactly once, in
//! order**, across dropped connections and reconnects, and the sender learns, per message, that
//! the peer's application has taken it. Brokerless and point to point.
//!
//! ```text
//!  application ── Client / Server / Peer handles: send (receipt), recv, ping, stats
//!       │
//!  runtime (tokio) ── one driver task per connection: socket ⇄ protocol core, timers,
//!       │            reconnect loop with jittered backoff, accept loop, session registry;
//!       │            a message sent on an idle plain-TCP connection (and an ACK due after a
//!       │            read) is written from the caller's task, without a hand-off
//!       │
//!  protocol core (no I/O) ── steadfast::proto: frames, handshake, sessions, outbox,
//!                            duplicate suppression, ACKs, flow control, heartbeats
//! ```
//!
//! ## Getting started
//!
//! ```
//! use steadfast::{Client, ClientConfig, Server, ServerConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).await?;
//! let addr = server.local_addrs()[0].to_string();
//!
//! let client = Client::connect(addr, ClientConfig::default().name("alice")).await?;
//! let receipt = client.send("hello").await?;
//!
//! let Some(peer) = server.accept().await else { panic!() };
//! let message = peer.recv().await?;           // taking it acknowledges it
//! assert_eq!(message.body, "hello");
//! receipt.await?;                             // resolves: alice's message was taken
//!
//! client.close("done").await;                 // a graceful end of the session
//! # Ok(())
//! # }
//! ```
//!
//! A server serves each peer in a task of its own, so that no peer (a slow reader, a large
//! message to decode) holds up another; [`Server`] is a cheap handle that any task can clone:
//!
//! ```no_run
//! # async fn f(server: steadfast::Server) {
//! while let Some(peer) = server.accept().await {
//!     tokio::spawn(async move {
//!         while let Ok(m) = peer.recv().await {
//!             let _ = peer.send(m.body).await; // echo
//!         }
//!     });
//! }
//! # }
//! ```
//!
//! Received messages, new peers and events are also [`Stream`](futures_core::Stream)s
//! ([`Peer::messages`], [`Server::incoming`], [`Server::events`], [`Client::events`]).
//!
//! ## Delivery guarantees
//!
//! - **Exactly once, in order, per session and direction**, across any number of connection
//!   losses while the session lives: every message carries a 64-bit sequence number, the
//!   receiver drops what it already has, and a resume exchanges exact positions so each side
//!   resends precisely what the other lacks. Order holds per session and direction; it does
//!   not hold across peers, or across the per-peer copies of a broadcast.
//! - **Receipts**: [`Peer::send`] returns a [`Receipt`] that resolves when the peer's
//!   application has taken the message (its `recv` returned it), or fails with
//!   [`error::ReceiptError::SessionLost`] — never silently.
//! - **No silent loss**: a session that cannot continue (closed, expired, refused after a
//!   server restart, given up) ends explicitly on both sides, and every unacknowledged message
//!   is handed back ([`ClientEvent::SessionLost`], [`ServerEvent::Expired`],
//!   [`ServerEvent::Ended`], [`Peer::take_unacknowledged`]). A client never starts a new
//!   session silently in place of a lost one.
//! - **Bounded memory**: the outbox is bounded in messages and bytes (`send` waits, `try_send`
//!   says [`error::SendError::Full`]); the inbox is bounded by the receive window the peer must
//!   respect, and the socket is always read, so a slow reader slows its sender and heartbeats
//!   and acknowledgements keep flowing. Every frame length is checked before buffering. A
//!   server also counts every session's inbox, outbox, message being reassembled and large
//!   body being decoded against one memory budget ([`ServerConfig::memory_budget`]); control
//!   output cannot pile up (a waiting PONG takes the newest PING's value); pending handshakes
//!   and sessions are limited per source address. SECURITY.md lists every bound.
//! - **No lost events**: lifecycle events ([`ServerEvent`], [`ClientEvent`]) are never
//!   dropped; repeated ones of a kind fold together while unread, so their queues stay
//!   bounded.
//! - **Large messages through bad links**: a message is sent in chunks, and with protocol
//!   version 2 (spoken by default; version 1 still with peers that speak only it) a message cut
//!   off by a connection loss continues after the resume from the last chunk the receiver
//!   holds, so a message larger than what the link carries between two cuts still arrives.
//!   Messages up to 16 MiB by default ([`proto::Config::max_message`], at most 4 GiB − 1).
//! - **Liveness**: PING every 3 s and an idle timeout of 10 s by default: a dead or half-open
//!   connection is noticed within 10 s on both sides, even during a large transfer (messages
//!   are chunked; control frames go first). A version-2 client pings only when the link has
//!   been quiet for half an idle timeout (the server's PINGs keep an idle one quiet: half the
//!   heartbeat traffic), often enough for the server's idle timeout whatever its own settings.
//!
//! Across a *crash* of a process (not a link) sessions are lost unless a [`store`] keeps them:
//! with a durable store, a message whose receipt resolved is never lost by a crash of either
//! side, and a receiver may see again only messages it had received but not yet acknowledged
//! (at-least-once across crashes, exactly-once across link faults).
//!
//! ## Cancel safety
//!
//! - [`Peer::send`]: dropping the future before it completes queues nothing.
//! - [`Peer::recv`], [`Peer::recv_many`]: dropping the future takes nothing; no message is
//!   lost (one whose decoding was under way is kept for the next call).
//! - Awaiting a [`Receipt`] is optional; dropping it changes nothing.
//!
//! ## Configuration
//!
//! [`ClientConfig`] and [`ServerConfig`] (and the protocol's [`proto::Config`]) start from safe
//! defaults; the table in the [`ServerConfig`] docs lists them with their reasons.
//!
//! ## Features
//!
//! - `runtime` (default): the tokio runtime. Without it, only the I/O-free core builds
//!   (`cargo check -p steadfast --no-default-features`).
//! - `tls`: TLS 1.3 with rustls (ring provider), mutual TLS ([`tls`]).
//! - `serde`: typed messages as MessagePack ([`typed`]).
//! - `dev-certs`: development certificates for tests and local setups.
//! - `lz4`, `zstd`: compression [`transform`]s, negotiated in the handshake.
//! - `durable`: sessions that survive the death of the process ([`store::DurableStore`]).
//!
//! Also: [`raw`], the framing layer alone (no sessions), and [`blocking`], the same API for
//! programs without an async runtime.
//!
//! The wire format is specified in `PROTOCOL.md`, whose sections the code cites as `§n`.

#![forbid(unsafe_code)]

pub mod proto;

#[cfg(feature = "runtime")]
mod admission;
#[cfg(feature = "runtime")]
pub mod blocking;
#[cfg(feature = "runtime")]
pub mod chaos;
#[cfg(feature = "runtime")]
mod client;
#[cfg(feature = "runtime")]
mod clock;
#[cfg(feature = "runtime")]
mod config;
#[cfg(feature = "runtime")]
mod decode;
#[cfg(feature = "runtime")]
mod driver;
#[cfg(feature = "runtime")]
pub mod error;
#[cfg(feature = "runtime")]
mod events;
#[cfg(feature = "runtime")]
mod fleet;
#[cfg(feature = "runtime")]
pub mod hooks;
#[cfg(feature = "runtime")]
mod input;
#[cfg(feature = "runtime")]
mod linger;
#[cfg(feature = "runtime")]
mod metered;
#[cfg(feature = "runtime")]
mod output;
#[cfg(feature = "runtime")]
mod peer;
#[cfg(feature = "prometheus")]
mod prometheus;
#[cfg(feature = "runtime")]
pub mod proxy;
#[cfg(feature = "runtime")]
pub mod raw;
#[cfg(feature = "runtime")]
pub use metered::{RTT_BUCKETS_SECONDS, describe_metrics};
#[cfg(feature = "prometheus")]
pub use prometheus::install_prometheus;
#[cfg(feature = "runtime")]
mod refusals;
#[cfg(feature = "serde")]
pub mod rpc;
#[cfg(feature = "runtime")]
mod server;
#[cfg(feature = "runtime")]
mod session;
#[cfg(feature = "runtime")]
pub mod store;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transform;
#[cfg(feature = "serde")]
pub mod typed;

#[cfg(feature = "runtime")]
pub use client::{Client, ClientEvent, IntoAddrs};
#[cfg(feature = "runtime")]
pub use config::{
    AdmissionPolicy, AuthDecision, AuthFuture, AuthRequest, ClientConfig, ServerConfig,
};
#[cfg(feature = "runtime")]
pub use error::EndReason;
#[cfg(feature = "runtime")]
pub use fleet::{FleetReceipt, SendToError};
#[cfg(feature = "runtime")]
pub use peer::{Peer, PeerStats, Receipt};
#[cfg(feature = "runtime")]
pub use proto::{Message, Seq, SessionId};
#[cfg(feature = "runtime")]
pub use server::{Server, ServerEvent};
