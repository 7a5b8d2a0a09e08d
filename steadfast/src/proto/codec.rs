//! Incremental frame decoder: bytes in any split, frames out (PROTOCOL.md §3.1).
//!
//! The decoder waits for a full header, checks the announced length against the maximum frame
//! size *before* buffering any payload, then waits for the payload. Not having enough bytes yet
//! is `Ok(None)`, never an error. Memory held is at most one header plus one maximum frame,
//! plus whatever the caller fed in one call.

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{Frame, FrameError, HEADER_LEN};

/// What the decoder waits for next.
#[derive(Clone, Copy, Debug)]
enum State {
    /// A frame header.
    Head,
    /// The payload of a frame whose header has been read and checked.
    Body { len: usize, kind: u8, flags: u8 },
}

/// Turns a byte stream into frames.
#[derive(Debug)]
pub struct Decoder {
    buf: BytesMut,
    state: State,
    max_frame: u32,
    /// The connection's protocol version (1 until a handshake chose another): it decides
    /// which DATA flags are defined (§3.2).
    version: u16,
}

impl Decoder {
    /// A decoder that refuses frames whose payload exceeds `max_frame` bytes.
    pub fn new(max_frame: u32) -> Self {
        Decoder {
            buf: BytesMut::new(),
            state: State::Head,
            max_frame,
            version: 1,
        }
    }

    /// Parses the frames that follow by the rules of `version` (set when a handshake chose
    /// it).
    pub fn set_version(&mut self, version: u16) {
        self.version = version;
    }

    /// Appends received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether a frame has begun and is not complete yet (some of its bytes are buffered, or
    /// its header has been read).
    pub fn is_mid_frame(&self) -> bool {
        !self.buf.is_empty() || matches!(self.state, State::Body { .. })
    }

    /// Frees the buffer's memory if nothing is pending: no buffered byte and no frame header
    /// read whose payload is still to come (a header alone leaves nothing buffered).
    pub fn shrink(&mut self) {
        if matches!(self.state, State::Head) && self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
    }

    /// Drops buffered bytes and any partially read frame.
    pub fn reset(&mut self) {
        self.buf = BytesMut::new();
        self.state = State::Head;
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] as soon as a header announces a payload above the limit (no byte
    /// of it is reserved), or any parse error of the payload. After an error the stream cannot
    /// be trusted: the caller closes the connection.
    pub fn decode(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.state {
                State::Head => {
                    if self.buf.len() < HEADER_LEN {
                        return Ok(None);
                    }
                    let len =
                        u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                    if len > self.max_frame {
                        return Err(FrameError::TooLarge {
                            len,
                            max: self.max_frame,
                        });
                    }
                    let kind = self.buf[4];
                    let flags = self.buf[5];
                    self.buf.advance(HEADER_LEN);
                    self.state = State::Body {
                        len: len as usize,
                        kind,
                        flags,
                    };
                }
                State::Body { len, kind, flags } => {
                    if self.buf.len() < len {
                        return Ok(None);
                    }
                    // The payload gets an allocation of its own: a small message kept in an
                    // inbox must not pin the whole read buffer it arrived in (a peer could
                    // otherwise hold 64 KiB of memory per byte of window), and the buffer
                    // stays unshared, so it is reused instead of reallocated.
                    let payload = Bytes::copy_from_slice(&self.buf[..len]);
                    self.buf.advance(len);
                    self.state = State::Head;
                    return Frame::parse_in(self.version, kind, flags, payload).map(Some);
                }
            }
        }
    }
}
