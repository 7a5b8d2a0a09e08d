//! The write side of one connection: its transport's writing half and the bytes waiting for
//! it, shared by the connection's driver and the session's handles (with the read side,
//! [`crate::input`], which lives as long).
//!
//! The driver writes batches and waits for the transport when it is full. A handle that finds
//! the connection idle (nothing waiting here, nothing unacknowledged) may encode and write its
//! own message from its task, without waking the driver: a request/response exchange then
//! costs the same wake-ups as raw TCP (one per direction) instead of one more per hand-off to
//! the driver. Bytes go out in the order they were encoded: whoever encodes appends here,
//! under the session's lock, and writes from the front, under this one.

use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::io::AsyncWrite;

use crate::input::Reader;

/// The write side of one connection.
pub(crate) struct Output {
    /// The generation of the connection in the session (see `PeerState::generation`).
    pub(crate) generation: u64,
    /// Any task may write (plain TCP): a write that cannot go on at once
    /// is left to the driver. Off for TLS, whose writes may leave bytes inside the TLS layer
    /// that only a later write or flush pushes out.
    pub(crate) direct: bool,
    inner: Mutex<Pending>,
    /// The connection's read side (`None` once the driver stopped: the reading half is
    /// dropped with it).
    pub(crate) reader: Mutex<Option<Reader>>,
    /// Reads made by waiting `recv` calls (tests).
    #[cfg(test)]
    pub(crate) direct_reads: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("generation", &self.generation)
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

/// The transport's writing half and the bytes not yet written to it.
pub(crate) struct Pending {
    writer: Pin<Box<dyn AsyncWrite + Send>>,
    /// Encoded frames; `buf[pos..]` is still to be written.
    pub(crate) buf: Vec<u8>,
    pos: usize,
    /// A write from a handle's task failed: the driver ends the connection.
    pub(crate) failed: bool,
}

/// How a write attempt from a handle's task went.
pub(crate) enum Attempt {
    /// Everything was written.
    Done,
    /// The transport is full or failed: the driver must take over.
    Blocked,
}

impl Output {
    pub(crate) fn new(
        generation: u64,
        direct: bool,
        writer: impl AsyncWrite + Send + 'static,
        reader: Reader,
    ) -> Output {
        Output {
            generation,
            direct,
            inner: Mutex::new(Pending {
                writer: Box::pin(writer),
                buf: Vec::new(),
                pos: 0,
                failed: false,
            }),
            reader: Mutex::new(Some(reader)),
            #[cfg(test)]
            direct_reads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The pending bytes (held only to encode or for a non-blocking write, never across an
    /// await).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Pending> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The read side (held only to read and feed the core, never across an await).
    pub(crate) fn reader(&self) -> MutexGuard<'_, Option<Reader>> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The pending bytes if nobody else holds them now.
    pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, Pending>> {
        match self.inner.try_lock() {
            Ok(g) => Some(g),
            Err(std::sync::TryLockError::Poisoned(e)) => Some(e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

impl Pending {
    /// Nothing waits to be written.
    pub(crate) fn is_idle(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Writes what waits until all is written (`Ready(Ok)`), the transport is full
    /// (`Pending`, `cx` is woken when it has room) or it fails.
    pub(crate) fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pos < self.buf.len() {
            match self.writer.as_mut().poll_write(cx, &self.buf[self.pos..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.pos += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.buf.clear();
        self.pos = 0;
        Poll::Ready(Ok(()))
    }

    /// One non-blocking attempt to write what waits, from a task other than the driver's
    /// (which is then woken for what is left: its own poll registers its waker).
    pub(crate) fn write_now(&mut self) -> Attempt {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_write_all(&mut cx) {
            Poll::Ready(Ok(())) => Attempt::Done,
            Poll::Ready(Err(_)) => {
                self.failed = true;
                Attempt::Blocked
            }
            Poll::Pending => Attempt::Blocked,
        }
    }

    /// Shuts the transport's writing side down (after the last bytes).
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.writer.as_mut().poll_shutdown(cx)
    }

    /// Gives back the buffer's memory after a busy period when it holds more than `keep`.
    pub(crate) fn shrink(&mut self, keep: usize) {
        if self.is_idle() && self.buf.capacity() > keep {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }
}
