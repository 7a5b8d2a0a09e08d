//! Incremental frame decoder: bytes in any split, frames out (PROTOCOL.md §3.1).
//!
//! The decoder waits for a full header, checks the announced length against the maximum frame
//! size *before* buffering any payload, then waits for the payload. Not having enough bytes yet
//! is `Ok(None)`, never an error. Memory held is at most one header plus one maximum frame,
//! plus whatever the caller fed in one call.

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{Frame, FrameError, HEADER_LEN};
use super::slab::{self, Slab};

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
    /// Where middling payloads are copied to (made at the first: a connection that never
    /// receives one carries only the pointer).
    slab: Option<Box<Slab>>,
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
            slab: None,
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
    /// read whose payload is still to come (a header alone leaves nothing buffered). Lets go
    /// of the memory payloads are copied into, in any case (payloads already returned keep
    /// what they use).
    pub fn shrink(&mut self) {
        if matches!(self.state, State::Head) && self.buf.is_empty() {
            self.buf = BytesMut::new();
        }
        self.slab = None;
    }

    /// Drops buffered bytes and any partially read frame.
    pub fn reset(&mut self) {
        self.buf = BytesMut::new();
        self.slab = None;
        self.state = State::Head;
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// # Errors
    /// [`FrameError::TooLarge`] as soon as a header announces a payload above the limit (no byte
    /// of it is reserved), or any parse error of the payload. After an error the stream cannot
    /// be trusted: the caller closes the connection.
    pub fn decode(&mut self) -> Result<Option<Frame>, FrameError> {
        self.decode_from(&mut &[][..])
    }

    /// As [`Decoder::feed`] of `input` followed by [`Decoder::decode`], except that it
    /// consumes from `input` only what the frame it returns needs: frames complete in `input`
    /// are parsed from it in place, without passing through the decoder's buffer. Bytes it
    /// did not consume stay in `input`; [`Decoder::feed`] them before the next call without
    /// `input` (a partial frame at the end of `input` is buffered here already).
    ///
    /// # Errors
    /// As [`Decoder::decode`].
    pub fn decode_from(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.state {
                State::Head => {
                    let header: [u8; HEADER_LEN] =
                        if self.buf.is_empty() && input.len() >= HEADER_LEN {
                            let (h, rest) = input.split_at(HEADER_LEN);
                            *input = rest;
                            [h[0], h[1], h[2], h[3], h[4], h[5]]
                        } else {
                            self.take_up_to(HEADER_LEN, input);
                            if self.buf.len() < HEADER_LEN {
                                return Ok(None);
                            }
                            let h = &self.buf[..HEADER_LEN];
                            let header = [h[0], h[1], h[2], h[3], h[4], h[5]];
                            self.buf.advance(HEADER_LEN);
                            header
                        };
                    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
                    if len > self.max_frame {
                        return Err(FrameError::TooLarge {
                            len,
                            max: self.max_frame,
                        });
                    }
                    self.state = State::Body {
                        len: len as usize,
                        kind: header[4],
                        flags: header[5],
                    };
                }
                State::Body { len, kind, flags } => {
                    // The payload is copied out: a small message kept in an inbox must not
                    // pin the whole read buffer it arrived in (a peer could otherwise hold
                    // 64 KiB of memory per byte of window), and the buffer stays unshared, so
                    // it is reused instead of reallocated. Middling payloads share a bounded
                    // allocation with their neighbours (`slab.rs`).
                    let payload = if self.buf.is_empty() && input.len() >= len {
                        let ahead = input.len();
                        let (body, rest) = input.split_at(len);
                        *input = rest;
                        copy_payload(&mut self.slab, body, ahead)
                    } else {
                        self.take_up_to(len, input);
                        if self.buf.len() < len {
                            return Ok(None);
                        }
                        let payload =
                            copy_payload(&mut self.slab, &self.buf[..len], self.buf.len());
                        self.buf.advance(len);
                        payload
                    };
                    self.state = State::Head;
                    return Frame::parse_in(self.version, kind, flags, payload).map(Some);
                }
            }
        }
    }

    /// Moves bytes from `input` into the buffer until it holds `want` (or `input` is empty).
    fn take_up_to(&mut self, want: usize, input: &mut &[u8]) {
        let n = want.saturating_sub(self.buf.len()).min(input.len());
        if n > 0 {
            let (now, rest) = input.split_at(n);
            self.buf.extend_from_slice(now);
            *input = rest;
        }
    }
}

/// `payload` copied out of the read: into `slab` (made if need be) if it is of the size that
/// shares one, else into an allocation of its own (`slab.rs`).
#[inline]
fn copy_payload(slab: &mut Option<Box<Slab>>, payload: &[u8], ahead: usize) -> Bytes {
    if slab::shares(payload.len()) {
        slab.get_or_insert_with(Box::default).copy(payload, ahead)
    } else {
        Bytes::copy_from_slice(payload)
    }
}
