//! The thin framing layer alone: length-prefixed frames over any byte stream, with a size limit
//! checked before anything is buffered, and no sessions, acknowledgements or resumes.
//!
//! Each frame is a 4-byte big-endian length followed by that many bytes. A length above the
//! limit is refused as soon as its 4 bytes arrive; the payload buffer grows with the bytes that
//! actually arrive, never from the announced length.
//!
//! ```
//! use steadfast::raw::Framed;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), steadfast::raw::RawError> {
//! let (a, b) = tokio::io::duplex(1 << 16);
//! let (mut a, mut b) = (Framed::new(a, 1 << 20), Framed::new(b, 1 << 20));
//! a.send(b"hello").await?;
//! assert_eq!(b.recv().await?.as_deref(), Some(&b"hello"[..]));
//! drop(a);
//! assert_eq!(b.recv().await?, None); // a clean end between frames
//! # Ok(()) }
//! ```

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a raw frame could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RawError {
    /// A frame longer than the limit (announced by the peer, or given to `send`).
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame")]
    Truncated,
    /// The stream failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Bytes read from the stream at most per call.
const READ_CHUNK: usize = 64 << 10;

/// A stream that carries length-prefixed frames.
#[derive(Debug)]
pub struct Framed<S> {
    stream: S,
    max: u32,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Framed<S> {
    /// Frames over `stream`, refusing frames longer than `max` bytes (both ways).
    pub fn new(stream: S, max: u32) -> Self {
        Framed {
            stream,
            max,
            buf: BytesMut::new(),
        }
    }

    /// Writes one frame.
    ///
    /// # Errors
    /// [`RawError::TooLarge`] above the limit (nothing is written), or the stream's error.
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), RawError> {
        if payload.len() > self.max as usize {
            return Err(RawError::TooLarge {
                len: payload.len() as u64,
                max: self.max,
            });
        }
        let mut frame = Vec::with_capacity(4 + payload.len());
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// Reads the next frame; `Ok(None)` when the stream ends cleanly between frames.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes read so far stay buffered for the next call.
    ///
    /// # Errors
    /// [`RawError::TooLarge`] as soon as a length above the limit arrives,
    /// [`RawError::Truncated`] if the stream ends inside a frame, or the stream's error.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, RawError> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                if len > self.max {
                    return Err(RawError::TooLarge {
                        len: u64::from(len),
                        max: self.max,
                    });
                }
                if self.buf.len() >= 4 + len as usize {
                    self.buf.advance(4);
                    return Ok(Some(self.buf.split_to(len as usize).freeze()));
                }
            }
            // Room for what may arrive now, not for what the peer announced.
            self.buf.reserve(READ_CHUNK);
            let n = self.stream.read_buf(&mut self.buf).await?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(RawError::Truncated)
                };
            }
        }
    }

    /// The stream, back.
    pub fn into_inner(self) -> S {
        self.stream
    }
}
