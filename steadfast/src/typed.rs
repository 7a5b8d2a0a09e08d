//! Typed messages (feature `serde`): any serde type, encoded as MessagePack with field names,
//! so a peer in another language (Python's `msgpack`, say) reads and writes them as maps.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use steadfast::{Client, ClientConfig, Server, ServerConfig};
//!
//! #[derive(Serialize, Deserialize, Debug, PartialEq)]
//! struct Order { id: u32, item: String }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::bind(["127.0.0.1:0"], ServerConfig::default()).await?;
//! let client = Client::connect(server.local_addrs()[0].to_string(), ClientConfig::default()).await?;
//! client.send_value(&Order { id: 7, item: "tea".into() }).await?;
//! let Some(peer) = server.accept().await else { panic!() };
//! let order: Order = peer.recv_value().await?;
//! assert_eq!(order, Order { id: 7, item: "tea".into() });
//! # Ok(()) }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{RecvError, SendError};
use crate::peer::{Peer, Receipt};
use crate::proto::Message;

/// Why a typed message could not be sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedSendError {
    /// The value could not be encoded.
    #[error("cannot encode the value: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// Sending failed.
    #[error(transparent)]
    Send(#[from] SendError),
}

/// A message that did not decode into the expected type. The message was taken (and so
/// acknowledged); it is here for inspection. The session carries on.
#[derive(Debug, thiserror::Error)]
#[error("message {} does not decode into the expected type: {error}", .message.seq)]
pub struct DecodeError {
    /// The decoder's complaint.
    pub error: rmp_serde::decode::Error,
    /// The message as received.
    pub message: Message,
}

/// Why `recv_value` returned no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedRecvError {
    /// The session is over.
    #[error(transparent)]
    Recv(#[from] RecvError),
    /// The next message is not of the expected type.
    #[error(transparent)]
    Decode(#[from] Box<DecodeError>),
}

/// Encodes a value as MessagePack with field names.
///
/// # Errors
/// If serde cannot encode it.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value)
}

/// Decodes a MessagePack value (with or without field names) of type `T`, for payloads that
/// did not come through a session (the [`raw`](crate::raw) layer, a file).
///
/// # Errors
/// [`rmp_serde::decode::Error`] if `bytes` is not one.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

impl Message {
    /// Decodes the body as a MessagePack value of type `T`.
    ///
    /// # Errors
    /// [`rmp_serde::decode::Error`] if it is not one.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, rmp_serde::decode::Error> {
        rmp_serde::from_slice(&self.body)
    }
}

impl Peer {
    /// Sends a value as MessagePack (waiting for room, like [`Peer::send`]).
    ///
    /// # Errors
    /// [`TypedSendError`] if it cannot be encoded or sent.
    pub async fn send_value<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<Receipt, TypedSendError> {
        Ok(self.send(encode(value)?).await?)
    }

    /// Sends a value as MessagePack if the outbox has room now.
    ///
    /// # Errors
    /// [`TypedSendError`] if it cannot be encoded or sent (`Full` included).
    pub fn try_send_value<T: Serialize + ?Sized>(
        &self,
        value: &T,
    ) -> Result<Receipt, TypedSendError> {
        Ok(self.try_send(encode(value)?)?)
    }

    /// Receives the next message and decodes it as `T`.
    ///
    /// # Errors
    /// [`TypedRecvError::Decode`] (with the message) if it is not a `T` — the session carries
    /// on; [`TypedRecvError::Recv`] once the session is over.
    pub async fn recv_value<T: DeserializeOwned>(&self) -> Result<T, TypedRecvError> {
        let message = self.recv().await?;
        message
            .decode()
            .map_err(|error| TypedRecvError::Decode(Box::new(DecodeError { error, message })))
    }
}
