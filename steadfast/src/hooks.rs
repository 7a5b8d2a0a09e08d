//! Lifecycle hooks: a handler trait with a method per moment in a session's life, and a loop
//! that drives it from a server's or a client's events (the `pre_loop` / `loop_pass` /
//! `transmission_received` / `post_loop` / `conn_init` / `conn_shutdown` of frameworks that
//! came before). Every method has an empty default; implement what you need.
//!
//! ```
//! use std::time::Duration;
//! use steadfast::hooks::{ServerHooks, run_server};
//! use steadfast::{Client, ClientConfig, Message, Peer, Server, ServerConfig};
//!
//! struct Echo { seen: usize }
//!
//! impl ServerHooks for Echo {
//!     async fn on_message(&mut self, peer: &Peer, message: Message) -> bool {
//!         self.seen += 1;
//!         let _ = peer.send(message.body).await;
//!         self.seen < 3 // keep going until three messages were echoed
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).await?;
//! let client = Client::connect(server.local_addrs()[0].to_string(), ClientConfig::default()).await?;
//! for text in ["a", "b", "c"] {
//!     client.send(text).await?;
//! }
//! let mut echo = Echo { seen: 0 };
//! run_server(&mut server, &mut echo, Duration::from_secs(1)).await;
//! assert_eq!(client.recv().await?.body, "a");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::time::Duration;

use crate::error::EndReason;
use crate::error::RecvError;
use crate::peer::Peer;
use crate::proto::{ConnectionError, Message};
use crate::{Client, ClientEvent, Server, ServerEvent};

/// What a server's application does at each moment. Methods returning `bool` stop the loop
/// when they return `false`.
pub trait ServerHooks {
    /// Before the first event (pre_loop).
    fn on_start(&mut self, server: &Server) -> impl Future<Output = ()> {
        let _ = server;
        async {}
    }
    /// A new session (conn_init).
    fn on_connected(&mut self, peer: &Peer) -> impl Future<Output = ()> {
        let _ = peer;
        async {}
    }
    /// A session resumed on a new connection.
    fn on_resumed(&mut self, peer: &Peer) -> impl Future<Output = ()> {
        let _ = peer;
        async {}
    }
    /// A message arrived (transmission_received); taking it here acknowledges it.
    fn on_message(&mut self, peer: &Peer, message: Message) -> impl Future<Output = bool> {
        let _ = (peer, message);
        async { true }
    }
    /// A message arrived whose body did not decode through the session's
    /// [transforms](crate::transform) ([`RecvError::Transform`]); it counts as taken. By
    /// default the loop goes on.
    fn on_bad_message(&mut self, peer: &Peer, error: RecvError) -> impl Future<Output = bool> {
        let _ = (peer, error);
        async { true }
    }
    /// Every tick interval (loop_pass).
    fn on_tick(&mut self, server: &Server) -> impl Future<Output = bool> {
        let _ = server;
        async { true }
    }
    /// A session's connection ended; it lingers, resumable.
    fn on_disconnected(
        &mut self,
        peer: &Peer,
        error: &ConnectionError,
    ) -> impl Future<Output = ()> {
        let _ = (peer, error);
        async {}
    }
    /// A session ended, expired or closed (conn_shutdown), with what it never got acknowledged.
    fn on_session_ended(
        &mut self,
        peer: &Peer,
        reason: &EndReason,
        unacknowledged: &[Message],
    ) -> impl Future<Output = ()> {
        let _ = (peer, reason, unacknowledged);
        async {}
    }
    /// After the loop (post_loop).
    fn on_stop(&mut self, server: &Server) -> impl Future<Output = ()> {
        let _ = server;
        async {}
    }
}

/// Drives `hooks` from `server`'s events until a hook returns `false` or the server stops.
/// Messages are handed to `on_message` in order per peer, as they arrive.
///
/// The hooks run one at a time on this one task (they share `&mut H`): a hook that takes long
/// delays every peer. For peers that must not wait for each other, serve each in its own task
/// from [`Server::accept`].
pub async fn run_server<H: ServerHooks>(server: &mut Server, hooks: &mut H, tick: Duration) {
    hooks.on_start(server).await;
    let mut ticks = tokio::time::interval(tick);
    ticks.tick().await;
    'outer: loop {
        tokio::select! {
            ev = server.next_event() => {
                let Some(ev) = ev else { break };
                match ev {
                    ServerEvent::Connected { peer } => {
                        hooks.on_connected(&peer).await;
                        // Messages that came with the handshake.
                        if !deliver(hooks, &peer).await { break 'outer; }
                    }
                    ServerEvent::Resumed { peer } => hooks.on_resumed(&peer).await,
                    ServerEvent::Disconnected { peer, error } => {
                        hooks.on_disconnected(&peer, &error).await;
                    }
                    ServerEvent::Expired { peer, unacknowledged } => {
                        let reason = peer.end_reason().unwrap_or(EndReason::Shutdown);
                        hooks.on_session_ended(&peer, &reason, &unacknowledged).await;
                    }
                    ServerEvent::Ended { peer, reason, unacknowledged } => {
                        hooks.on_session_ended(&peer, &reason, &unacknowledged).await;
                    }
                    ServerEvent::MessagesWaiting { peer } => {
                        if !deliver(hooks, &peer).await { break 'outer; }
                    }
                }
            }
            _ = ticks.tick() => {
                if !hooks.on_tick(server).await { break; }
            }
        }
    }
    hooks.on_stop(server).await;
}

async fn deliver<H: ServerHooks>(hooks: &mut H, peer: &Peer) -> bool {
    loop {
        // Only this loop reads the peer, so what waits is there to take; `recv_many` decodes
        // large transformed bodies off the async workers.
        if peer.waiting() == 0 {
            return true;
        }
        let batch = match peer.recv_many(256).await {
            Ok(batch) => batch,
            Err(crate::error::RecvError::Ended) => return true,
            Err(e) => {
                if !hooks.on_bad_message(peer, e).await {
                    return false;
                }
                continue;
            }
        };
        if batch.is_empty() {
            return true;
        }
        for m in batch {
            if !hooks.on_message(peer, m).await {
                return false;
            }
        }
    }
}

/// What a client's application does at each moment. Methods returning `bool` stop the loop
/// when they return `false`.
pub trait ClientHooks {
    /// Before the first event.
    fn on_start(&mut self, peer: &Peer) -> impl Future<Output = ()> {
        let _ = peer;
        async {}
    }
    /// A connection carries the session (`resumed` after a loss).
    fn on_connected(&mut self, peer: &Peer, resumed: bool) -> impl Future<Output = ()> {
        let _ = (peer, resumed);
        async {}
    }
    /// A message arrived; taking it here acknowledges it.
    fn on_message(&mut self, peer: &Peer, message: Message) -> impl Future<Output = bool> {
        let _ = (peer, message);
        async { true }
    }
    /// A message arrived whose body did not decode through the session's
    /// [transforms](crate::transform) ([`RecvError::Transform`]); it counts as taken. By
    /// default the loop goes on.
    fn on_bad_message(&mut self, peer: &Peer, error: RecvError) -> impl Future<Output = bool> {
        let _ = (peer, error);
        async { true }
    }
    /// Every tick interval.
    fn on_tick(&mut self, peer: &Peer) -> impl Future<Output = bool> {
        let _ = peer;
        async { true }
    }
    /// The connection was lost; a reconnect follows.
    fn on_disconnected(
        &mut self,
        peer: &Peer,
        error: &ConnectionError,
    ) -> impl Future<Output = ()> {
        let _ = (peer, error);
        async {}
    }
    /// The session is over for good, with what it never got acknowledged.
    fn on_session_ended(
        &mut self,
        peer: &Peer,
        reason: &EndReason,
        unacknowledged: &[Message],
    ) -> impl Future<Output = ()> {
        let _ = (peer, reason, unacknowledged);
        async {}
    }
    /// After the loop.
    fn on_stop(&mut self, peer: &Peer) -> impl Future<Output = ()> {
        let _ = peer;
        async {}
    }
}

/// Drives `hooks` from `client`'s events and messages until a hook returns `false` or the
/// session ends.
pub async fn run_client<H: ClientHooks>(client: &mut Client, hooks: &mut H, tick: Duration) {
    let peer = client.peer().clone();
    hooks.on_start(&peer).await;
    let mut ticks = tokio::time::interval(tick);
    ticks.tick().await;
    loop {
        tokio::select! {
            ev = client.next_event() => match ev {
                Some(ClientEvent::Connected { resumed }) => hooks.on_connected(&peer, resumed).await,
                Some(ClientEvent::Disconnected { error }) => hooks.on_disconnected(&peer, &error).await,
                Some(ClientEvent::SessionLost { reason, unacknowledged }) => {
                    hooks.on_session_ended(&peer, &reason, &unacknowledged).await;
                    break;
                }
                Some(_) => {}
                None => break,
            },
            m = peer.recv() => match m {
                Ok(m) => {
                    if !hooks.on_message(&peer, m).await { break; }
                }
                Err(e @ RecvError::Transform { .. }) => {
                    if !hooks.on_bad_message(&peer, e).await { break; }
                }
                Err(_) => {
                    let reason = peer.end_reason().unwrap_or(EndReason::ClientDropped);
                    let unacknowledged = peer.unacknowledged();
                    hooks.on_session_ended(&peer, &reason, &unacknowledged).await;
                    break;
                }
            },
            _ = ticks.tick() => {
                if !hooks.on_tick(&peer).await { break; }
            }
        }
    }
    hooks.on_stop(&peer).await;
}
