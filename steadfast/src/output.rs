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

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use tokio::io::AsyncWrite;

use crate::input::Reader;
use crate::proto::Connection;

/// The most slices handed to one vectored write.
const MAX_SLICES: usize = 64;

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
    /// The transport takes vectored writes: large message bodies are written from their own
    /// memory (`spliced`) instead of being copied into `buf`.
    vectored: bool,
    /// A write from a handle's task failed: the driver ends the connection.
    pub(crate) failed: bool,
    /// Encoded frames; `buf[pos..]` is still to be written.
    pub(crate) buf: Vec<u8>,
    pos: usize,
    /// Bodies not copied into `buf` (made at the connection's first, so that a connection
    /// that never has one carries only the pointer).
    spliced: Option<Box<Spliced>>,
}

/// Bodies written from their own memory.
struct Spliced {
    /// Each with the place it goes: before `buf[at..]` (`Connection::poll_transmit_vectored`).
    /// The front one is cut by what was written of it.
    bodies: VecDeque<(usize, Bytes)>,
    /// Bytes of the bodies pushed since the output was last empty.
    len: usize,
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
                vectored: writer.is_write_vectored(),
                writer: Box::pin(writer),
                failed: false,
                buf: Vec::new(),
                pos: 0,
                spliced: None,
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
        self.pos == self.buf.len() && self.bodies().is_none()
    }

    /// The bodies waiting, if any.
    fn bodies(&self) -> Option<&VecDeque<(usize, Bytes)>> {
        self.spliced
            .as_deref()
            .map(|s| &s.bodies)
            .filter(|b| !b.is_empty())
    }

    /// Bytes encoded since the output was last empty, bodies written from their own memory
    /// included (what a batch is measured in).
    pub(crate) fn encoded(&self) -> usize {
        self.buf.len() + self.spliced.as_ref().map_or(0, |s| s.len)
    }

    /// Appends what `conn` has to send (`Connection::poll_transmit`, vectored when the
    /// transport takes vectored writes); returns the bytes it added.
    #[inline]
    pub(crate) fn transmit(&mut self, conn: &mut Connection, now: std::time::Instant) -> usize {
        if !self.vectored {
            return conn.poll_transmit(now, &mut self.buf);
        }
        let before = self.buf.len();
        match &mut self.spliced {
            Some(s) => {
                let n = conn.poll_transmit_vectored(now, &mut self.buf, &mut s.bodies);
                s.len += n - (self.buf.len() - before);
                n
            }
            None => {
                let mut bodies = VecDeque::new();
                let n = conn.poll_transmit_vectored(now, &mut self.buf, &mut bodies);
                if bodies.capacity() == 0 {
                    // Nothing was pushed, so nothing is allocated: no drop to run.
                    std::mem::forget(bodies);
                } else {
                    let len = n - (self.buf.len() - before);
                    self.spliced = Some(Box::new(Spliced { bodies, len }));
                }
                n
            }
        }
    }

    /// Writes what waits until all is written (`Ready(Ok)`), the transport is full
    /// (`Pending`, `cx` is woken when it has room) or it fails.
    pub(crate) fn poll_write_all(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.spliced.is_none() {
            // Only `buf`.
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
            return Poll::Ready(Ok(()));
        }
        while !self.is_idle() {
            let bodies = self
                .spliced
                .as_deref()
                .map(|s| &s.bodies)
                .filter(|b| !b.is_empty());
            let written = match bodies {
                Some(bodies) => {
                    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                    let used = slices_of(&self.buf, self.pos, bodies, &mut slices);
                    self.writer
                        .as_mut()
                        .poll_write_vectored(cx, &slices[..used])
                }
                None => self.writer.as_mut().poll_write(cx, &self.buf[self.pos..]),
            };
            match written {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.buf.clear();
        self.pos = 0;
        if let Some(s) = &mut self.spliced {
            s.len = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// Marks `n` more bytes as written: of `buf` up to the next body's place, then of that
    /// body, and so on.
    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let next = self.spliced.as_deref_mut().and_then(|s| {
                let place = s.bodies.front()?.0;
                Some((place, &mut s.bodies))
            });
            match next {
                Some((place, bodies)) if place == self.pos => {
                    let Some((_, body)) = bodies.front_mut() else {
                        return;
                    };
                    let k = n.min(body.len());
                    body.advance(k);
                    n -= k;
                    if body.is_empty() {
                        bodies.pop_front();
                    }
                }
                next => {
                    let end = next.map_or(self.buf.len(), |(place, _)| place);
                    let k = n.min(end - self.pos);
                    debug_assert!(k > 0, "written past what waits");
                    if k == 0 {
                        return;
                    }
                    self.pos += k;
                    n -= k;
                }
            }
        }
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
            self.spliced = None;
        }
    }
}

/// Fills `slices` with what waits (`buf[pos..]` and `bodies` in their places), in stream
/// order; returns how many it filled.
fn slices_of<'a>(
    buf: &'a [u8],
    pos: usize,
    bodies: &'a VecDeque<(usize, Bytes)>,
    slices: &mut [IoSlice<'a>; MAX_SLICES],
) -> usize {
    let mut used = 0;
    let mut at = pos;
    for (place, body) in bodies {
        if *place > at {
            slices[used] = IoSlice::new(&buf[at..*place]);
            used += 1;
            at = *place;
        }
        if used == MAX_SLICES {
            return used;
        }
        slices[used] = IoSlice::new(body);
        used += 1;
        if used == MAX_SLICES {
            return used;
        }
    }
    if at < buf.len() {
        slices[used] = IoSlice::new(&buf[at..]);
        used += 1;
    }
    used
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A transport that takes at most the next of `sizes` bytes per write (vectored or
    /// not), and is full (`Pending`) when a size is 0; it keeps what it was given.
    struct Trickle {
        sizes: Vec<usize>,
        next: usize,
        got: std::sync::Arc<Mutex<Vec<u8>>>,
        vectored_calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Trickle {
        fn take(&mut self, slices: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
            let mut room = self.sizes[self.next % self.sizes.len()];
            self.next += 1;
            if room == 0 {
                return Poll::Pending;
            }
            let mut got = self.got.lock().unwrap();
            let mut n = 0;
            for s in slices {
                let k = room.min(s.len());
                got.extend_from_slice(&s[..k]);
                room -= k;
                n += k;
                if room == 0 {
                    break;
                }
            }
            Poll::Ready(Ok(n))
        }
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.take(&[IoSlice::new(buf)])
        }
        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.vectored_calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.take(bufs)
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Bytes and bodies appended in any mix, written in writes of any size, some of them
    /// refused: the transport gets exactly the stream, in order, and the output ends idle.
    #[test]
    fn bodies_go_out_in_their_places_whatever_the_write_sizes() {
        proptest::proptest!(|(
            parts in proptest::collection::vec((0usize..300, proptest::option::of(1usize..3_000)), 1..120),
            sizes in proptest::collection::vec(0usize..5_000, 1..20),
        )| {
            let sizes = if sizes.iter().all(|&s| s == 0) { vec![1] } else { sizes };
            let got = std::sync::Arc::new(Mutex::new(Vec::new()));
            let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let writer = Trickle { sizes, next: 0, got: got.clone(), vectored_calls: calls.clone() };
            let mut p = Pending {
                vectored: true,
                writer: Box::pin(writer),
                failed: false,
                buf: Vec::new(),
                pos: 0,
                spliced: None,
            };
            let mut want = Vec::new();
            let mut byte = 0u8;
            let mut next = || { byte = byte.wrapping_add(1); byte };
            for (plain, body) in &parts {
                for _ in 0..*plain {
                    let b = next();
                    p.buf.push(b);
                    want.push(b);
                }
                if let Some(len) = body {
                    let body: Vec<u8> = (0..*len).map(|_| next()).collect();
                    want.extend_from_slice(&body);
                    let at = p.buf.len();
                    let s = p.spliced.get_or_insert_with(|| {
                        Box::new(Spliced { bodies: VecDeque::new(), len: 0 })
                    });
                    s.len += body.len();
                    s.bodies.push_back((at, Bytes::from(body)));
                }
            }
            proptest::prop_assert_eq!(p.encoded(), want.len());
            let mut cx = Context::from_waker(Waker::noop());
            let mut rounds = 0;
            while p.poll_write_all(&mut cx).is_pending() {
                rounds += 1;
                proptest::prop_assert!(rounds < 1_000_000);
            }
            proptest::prop_assert!(p.is_idle());
            proptest::prop_assert_eq!(p.encoded(), 0);
            proptest::prop_assert_eq!(&*got.lock().unwrap(), &want);
            let spliced = parts.iter().any(|(_, b)| b.is_some());
            proptest::prop_assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed) > 0, spliced);
        });
    }
}
