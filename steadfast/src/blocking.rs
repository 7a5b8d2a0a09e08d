//! The same API and guarantees for programs without an async runtime: each `Client` or `Server`
//! runs its own small tokio runtime (one worker thread) and its calls block the caller.
//!
//! ```
//! use std::time::Duration;
//! use steadfast::blocking::{Client, Server, ServerEvent};
//! use steadfast::{ClientConfig, ServerConfig};
//!
//! let mut server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).unwrap();
//! let client = Client::connect(server.local_addrs()[0].to_string(), ClientConfig::default()).unwrap();
//! let receipt = client.peer().send("hello").unwrap();
//! let Some(ServerEvent::Connected { peer }) = server.next_event_timeout(Duration::from_secs(5)) else { panic!() };
//! assert_eq!(peer.recv().unwrap().body, "hello");
//! receipt.wait().unwrap();
//! client.peer().close("done");
//! ```
//!
//! Do not call these from inside an async runtime: they block the thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::runtime::Runtime;

use crate::error::EndReason;
use crate::error::{BindError, ConnectError, ReceiptError, RecvError, SendError};
use crate::proto::{ConnectionError, Message, SessionId};
use crate::{ClientConfig, ClientEvent, PeerStats, ServerConfig};

fn runtime() -> std::io::Result<Arc<Runtime>> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("steadfast")
        .enable_all()
        .build()
        .map(Arc::new)
}

/// A blocking handle to one session (see [`crate::Peer`]).
#[derive(Clone, Debug)]
pub struct Peer {
    inner: crate::Peer,
    rt: Arc<Runtime>,
}

/// A blocking receipt (see [`crate::Receipt`]).
#[derive(Debug)]
pub struct Receipt {
    inner: crate::Receipt,
    rt: Arc<Runtime>,
}

impl Receipt {
    /// The message's sequence number.
    pub fn seq(&self) -> crate::Seq {
        self.inner.seq()
    }

    /// Whether the peer has acknowledged the message already.
    pub fn is_acknowledged(&self) -> bool {
        self.inner.is_acknowledged()
    }

    /// Waits until the peer's application has taken the message.
    ///
    /// # Errors
    /// [`ReceiptError::SessionLost`] if the session ends first.
    pub fn wait(self) -> Result<(), ReceiptError> {
        let rt = self.rt.clone();
        rt.block_on(self.inner.into_future_boxed())
    }

    /// Like [`Receipt::wait`], giving up after `timeout` (`Ok(false)`).
    ///
    /// # Errors
    /// [`ReceiptError::SessionLost`] if the session ends first.
    pub fn wait_timeout(self, timeout: Duration) -> Result<bool, ReceiptError> {
        let rt = self.rt.clone();
        rt.block_on(async {
            match tokio::time::timeout(timeout, self.inner.into_future_boxed()).await {
                Ok(r) => r.map(|()| true),
                Err(_) => Ok(false),
            }
        })
    }
}

impl Peer {
    /// The session id.
    pub fn id(&self) -> Option<SessionId> {
        self.inner.id()
    }

    /// The peer's name.
    pub fn name(&self) -> Option<&str> {
        self.inner.name()
    }

    /// Sends a message, blocking while the outbox is full.
    ///
    /// # Errors
    /// As [`crate::Peer::send`].
    pub fn send(&self, body: impl Into<Bytes>) -> Result<Receipt, SendError> {
        let inner = self.rt.block_on(self.inner.send(body))?;
        Ok(Receipt {
            inner,
            rt: self.rt.clone(),
        })
    }

    /// Sends a message if the outbox has room now.
    ///
    /// # Errors
    /// As [`crate::Peer::try_send`].
    pub fn try_send(&self, body: impl Into<Bytes>) -> Result<Receipt, SendError> {
        let inner = self.inner.try_send(body)?;
        Ok(Receipt {
            inner,
            rt: self.rt.clone(),
        })
    }

    /// Receives the next message, blocking until one arrives.
    ///
    /// # Errors
    /// [`RecvError::Ended`] once the session is over.
    pub fn recv(&self) -> Result<Message, RecvError> {
        self.rt.block_on(self.inner.recv())
    }

    /// Receives the next message, waiting at most `timeout` (`Ok(None)` then).
    ///
    /// # Errors
    /// [`RecvError::Ended`] once the session is over.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>, RecvError> {
        self.rt.block_on(async {
            match tokio::time::timeout(timeout, self.inner.recv()).await {
                Ok(r) => r.map(Some),
                Err(_) => Ok(None),
            }
        })
    }

    /// Takes the next waiting message, if any.
    ///
    /// # Errors
    /// As [`crate::Peer::try_recv`]: a body that does not decode through the transforms.
    pub fn try_recv(&self) -> Result<Option<Message>, RecvError> {
        self.inner.try_recv()
    }

    /// Takes up to `n` waiting messages.
    ///
    /// # Errors
    /// As [`crate::Peer::recv_up_to`].
    pub fn recv_up_to(&self, n: usize) -> Result<Vec<Message>, RecvError> {
        self.inner.recv_up_to(n)
    }

    /// Waits until every message sent so far is acknowledged.
    ///
    /// # Errors
    /// As [`crate::Peer::flush`].
    pub fn flush(&self) -> Result<(), ReceiptError> {
        self.rt.block_on(self.inner.flush())
    }

    /// Measures the round-trip time.
    ///
    /// # Errors
    /// As [`crate::Peer::ping`].
    pub fn ping(&self) -> Result<Duration, SendError> {
        self.rt.block_on(self.inner.ping())
    }

    /// Waits at most `timeout` until every message sent so far is acknowledged.
    ///
    /// # Errors
    /// As [`crate::Peer::flush_within`].
    pub fn flush_timeout(&self, timeout: Duration) -> Result<(), ReceiptError> {
        self.rt.block_on(self.inner.flush_within(timeout))
    }

    /// Closes the session within `limit` (see [`crate::Peer::close_within`]).
    pub fn close_within(&self, reason: &str, limit: Duration) -> EndReason {
        self.rt.block_on(self.inner.close_within(reason, limit))
    }

    /// Closes the session gracefully (see [`crate::Peer::close`]; bounded by the idle timeout).
    pub fn close(&self, reason: &str) {
        self.rt.block_on(self.inner.close(reason));
    }

    /// Counters.
    pub fn stats(&self) -> PeerStats {
        self.inner.stats()
    }

    /// Whether a connection carries the session now.
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// Why the session ended, once it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.inner.end_reason()
    }

    /// Once ended: the messages never acknowledged (given out once).
    pub fn take_unacknowledged(&self) -> Vec<Message> {
        self.inner.take_unacknowledged()
    }
}

/// A blocking client (see [`crate::Client`]).
#[derive(Debug)]
pub struct Client {
    // Dropped before the runtime it runs on.
    inner: crate::Client,
    peer: Peer,
}

impl Client {
    /// Connects and establishes a session (see [`crate::Client::connect`]).
    ///
    /// # Errors
    /// As [`crate::Client::connect`], or [`ConnectError::Io`] if no runtime could start.
    pub fn connect(
        addr: impl crate::IntoAddrs,
        config: ClientConfig,
    ) -> Result<Client, ConnectError> {
        let rt = runtime()?;
        let inner = rt.block_on(crate::Client::connect(addr, config))?;
        let peer = Peer {
            inner: inner.peer().clone(),
            rt,
        };
        Ok(Client { inner, peer })
    }

    /// The session handle.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The next event, waiting at most `timeout`.
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Option<ClientEvent> {
        let rt = self.peer.rt.clone();
        rt.block_on(async {
            tokio::time::timeout(timeout, self.inner.next_event())
                .await
                .ok()
                .flatten()
        })
    }
}

/// Something that happened on a blocking server (see [`crate::ServerEvent`]).
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A new session.
    Connected {
        /// Its handle.
        peer: Peer,
    },
    /// A session resumed on a new connection.
    Resumed {
        /// Its handle.
        peer: Peer,
    },
    /// A session's connection ended; it lingers.
    Disconnected {
        /// Its handle.
        peer: Peer,
        /// Why.
        error: ConnectionError,
    },
    /// A lingering session expired.
    Expired {
        /// Its handle.
        peer: Peer,
        /// Messages to it never acknowledged.
        unacknowledged: Vec<Message>,
    },
    /// A session ended.
    Ended {
        /// Its handle.
        peer: Peer,
        /// Why.
        reason: EndReason,
        /// Messages to it never acknowledged.
        unacknowledged: Vec<Message>,
    },
    /// A peer has messages waiting.
    MessagesWaiting {
        /// Its handle.
        peer: Peer,
    },
}

/// A blocking server (see [`crate::Server`]).
#[derive(Debug)]
pub struct Server {
    inner: Option<crate::Server>,
    rt: Arc<Runtime>,
}

impl Server {
    /// Binds every address and starts accepting.
    ///
    /// # Errors
    /// As [`crate::Server::bind`]; an I/O error if no runtime could start.
    pub fn bind<A: tokio::net::ToSocketAddrs + std::fmt::Display>(
        addrs: impl IntoIterator<Item = A>,
        config: ServerConfig,
    ) -> Result<Server, BindError> {
        let rt = runtime().map_err(|source| BindError::Io {
            addr: "runtime".into(),
            source,
        })?;
        let inner = rt.block_on(crate::Server::bind(addrs, config))?;
        Ok(Server {
            inner: Some(inner),
            rt,
        })
    }

    fn server(&self) -> &crate::Server {
        self.inner
            .as_ref()
            .unwrap_or_else(|| unreachable!("only shutdown takes it"))
    }

    fn wrap(&self, p: crate::Peer) -> Peer {
        Peer {
            inner: p,
            rt: self.rt.clone(),
        }
    }

    /// The addresses bound.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.server().local_addrs().to_vec()
    }

    /// The next new session, waiting at most `timeout` (see [`crate::Server::accept`]); serve
    /// each in a thread of its own so that no peer waits for another.
    pub fn accept_timeout(&self, timeout: Duration) -> Option<Peer> {
        let server = self.inner.as_ref()?;
        let peer = self
            .rt
            .block_on(async { tokio::time::timeout(timeout, server.accept()).await })
            .ok()
            .flatten()?;
        Some(self.wrap(peer))
    }

    /// The next event, waiting at most `timeout`. Events are never dropped (see
    /// [`crate::ServerEvent`]).
    pub fn next_event_timeout(&self, timeout: Duration) -> Option<ServerEvent> {
        let rt = self.rt.clone();
        let ev = rt.block_on(async {
            let server = self.inner.as_ref()?;
            tokio::time::timeout(timeout, server.next_event())
                .await
                .ok()
                .flatten()
        })?;
        Some(match ev {
            crate::ServerEvent::Connected { peer } => ServerEvent::Connected {
                peer: self.wrap(peer),
            },
            crate::ServerEvent::Resumed { peer } => ServerEvent::Resumed {
                peer: self.wrap(peer),
            },
            crate::ServerEvent::Disconnected { peer, error } => ServerEvent::Disconnected {
                peer: self.wrap(peer),
                error,
            },
            crate::ServerEvent::Expired {
                peer,
                unacknowledged,
            } => ServerEvent::Expired {
                peer: self.wrap(peer),
                unacknowledged,
            },
            crate::ServerEvent::Ended {
                peer,
                reason,
                unacknowledged,
            } => ServerEvent::Ended {
                peer: self.wrap(peer),
                reason,
                unacknowledged,
            },
            crate::ServerEvent::MessagesWaiting { peer } => ServerEvent::MessagesWaiting {
                peer: self.wrap(peer),
            },
        })
    }

    /// Every session, live and lingering.
    pub fn peers(&self) -> Vec<Peer> {
        self.server()
            .peers()
            .into_iter()
            .map(|p| self.wrap(p))
            .collect()
    }

    /// The session with this id.
    pub fn peer(&self, id: SessionId) -> Option<Peer> {
        self.server().peer(id).map(|p| self.wrap(p))
    }

    /// Graceful shutdown (see [`crate::Server::shutdown`]).
    pub fn shutdown(mut self, drain: Duration) -> Vec<(Peer, Vec<Message>)> {
        let Some(server) = self.inner.take() else {
            return Vec::new();
        };
        let lost = self.rt.block_on(server.shutdown(drain));
        lost.into_iter().map(|(p, m)| (self.wrap(p), m)).collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The async server is dropped inside its runtime's context (it ends its sessions).
        if let Some(server) = self.inner.take() {
            let _guard = self.rt.enter();
            drop(server);
        }
    }
}

impl crate::Receipt {
    fn into_future_boxed(
        self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ReceiptError>> + Send>> {
        std::future::IntoFuture::into_future(self)
    }
}
