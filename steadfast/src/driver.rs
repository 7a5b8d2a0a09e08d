//! Drives one protocol connection over any byte stream (TCP, TLS, in-memory duplex).
//!
//! One task per connection: it reads whatever arrives and feeds the core, writes what the core
//! produces in batches (many frames, one write), sleeps until the core's next deadline, and
//! wakes when the application sends, receives or closes. It always keeps reading, whatever the
//! application does, so acknowledgements and heartbeats flow (PROTOCOL.md §6) — except that
//! on plain TCP a `recv` waiting for a message reads it from its own task instead, the driver
//! sleeping on ([`crate::input`]), as a handle writes its own message to an idle connection
//! ([`crate::output`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{debug, trace};

pub(crate) use crate::clock::now;
use crate::error::EndReason;
use crate::input::{ReadHalf, Reader};
use crate::metered;
use crate::output::Output;
use crate::proto::{ConnectionError, Event, Role, Seq, SessionEnd};
use crate::session::{Link, PeerShared, PeerState, StoreAnswer};
use crate::store::StoreError;

/// Bytes read per call while data streams in.
pub(crate) const READ_CHUNK: usize = 64 << 10;
/// The read buffer of a quiet connection: buffers grow under load (a read that fills the
/// buffer makes it [`READ_MID`], then [`READ_CHUNK`]) and shrink back when the connection
/// is idle, so thousands of idle sessions cost little memory.
const READ_SMALL: usize = 256;
/// The read buffer of a connection whose messages outgrow [`READ_SMALL`] (requests and
/// replies of a few hundred bytes): one step before [`READ_CHUNK`].
const READ_MID: usize = 4 << 10;
/// Bytes encoded per driver turn, under the session's lock: senders wait for that lock
/// meanwhile, so a turn encodes a few socket writes' worth, not all there is.
const WRITE_BATCH: usize = 32 << 10;
/// Bytes encoded per driver turn with a session store: every turn waits for its commit, so
/// a turn carries more.
const DURABLE_BATCH: usize = 256 << 10;
/// Bytes a connection reads while its turn's commit is in flight, at most: as much as a
/// durable sender's turn sends.
const READ_DURING_COMMIT: usize = DURABLE_BATCH;
/// Write-buffer capacity kept across idle periods.
const WRITE_KEEP: usize = 4 << 10;
/// How long a closing connection may take to write its last frames.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Any byte stream a connection can run over (TCP, TLS, in-memory).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {
    /// The stream as plain TCP, if it is that, else itself.
    fn into_tcp(self: Box<Self>) -> Result<tokio::net::TcpStream, BoxStream>;
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {
    fn into_tcp(self: Box<Self>) -> Result<tokio::net::TcpStream, BoxStream> {
        let any: Box<dyn std::any::Any> = self;
        match any.downcast::<tokio::net::TcpStream>() {
            Ok(tcp) => Ok(*tcp),
            Err(any) => Err(any
                .downcast::<T>()
                .map(|t| t as BoxStream)
                .expect("a stream is of its own type")),
        }
    }
}

/// The writing half of a connection's stream.
type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;

/// Splits a stream into its halves: plain TCP into its own halves (reads and writes never
/// wait for each other), any other stream behind a lock the halves share. True for plain TCP:
/// handles may then write to it from their own tasks (see [`crate::output`]); a TLS stream's
/// writes may leave bytes inside the TLS layer that only a later write or flush pushes out.
fn split(stream: BoxStream) -> (ReadHalf, WriteHalf, bool) {
    match stream.into_tcp() {
        Ok(tcp) => {
            let (r, w) = tcp.into_split();
            (Box::new(r), Box::new(w), true)
        }
        Err(other) => {
            let (r, w) = tokio::io::split(other);
            (Box::new(r), Box::new(w), false)
        }
    }
}

/// A boxed stream: plain TCP or TLS behind one type.
pub(crate) type BoxStream = Box<dyn Stream>;

/// How a driven connection ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The connection ended; the session is detached and resumable.
    Disconnected(ConnectionError),
    /// The session ended.
    Ended(SessionEnd),
    /// Another connection took the session over.
    Replaced,
}

/// Store writes that must be on disk before this turn's bytes are written.
type Pending = Vec<StoreAnswer>;

/// One turn of the driver loop, decided under the lock.
enum Step {
    Run(Option<Instant>, Option<Outcome>, Pending),
    /// Taken over: write these last bytes and stop.
    Replaced(Vec<u8>),
}

/// What the driver reports while the connection lives.
#[derive(Debug)]
pub(crate) enum Progress {
    /// The handshake finished (client side).
    Established {
        /// The session was resumed.
        resumed: bool,
    },
    /// Messages are waiting and the application has not been told since its last read.
    MessagesWaiting,
    /// Messages arrived: wake receivers (the driver's own).
    Readable,
    /// Acknowledgements arrived: wake senders and receipts (the driver's own).
    Acknowledged,
}

/// Runs the connection in `peer`'s state (attached with generation `generation`) over
/// `stream` until it ends.
pub(crate) async fn drive<F>(
    peer: &Arc<PeerShared>,
    generation: u64,
    stream: BoxStream,
    mut on_progress: F,
) -> Outcome
where
    F: FnMut(Progress),
{
    let (rd, wr, direct) = split(stream);
    let output = Arc::new(Output::new(
        generation,
        direct,
        wr,
        Reader::new(rd, READ_SMALL),
    ));
    {
        let mut st = peer.lock();
        if st.generation == generation {
            st.output = Some(output.clone());
        }
    }
    // However the driver stops (also dropped, as when its client goes away), the session lets
    // go of the stream's writing half, so the transport closes with the driver.
    let _installed = Installed {
        peer,
        output: &output,
    };
    drive_output(peer, generation, &output, &mut on_progress).await
}

/// The session's reference to a driver's output, removed when the driver stops.
struct Installed<'a> {
    peer: &'a PeerShared,
    output: &'a Arc<Output>,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        {
            let mut st = self.peer.lock();
            if st
                .output
                .as_ref()
                .is_some_and(|o| Arc::ptr_eq(o, self.output))
            {
                st.output = None;
            }
        }
        // The reading half goes with the driver: its readiness registration holds the
        // session's routing waker, which would otherwise keep the session, and through it this
        // output and the socket, alive.
        self.output.reader().take();
    }
}

async fn drive_output<F>(
    peer: &Arc<PeerShared>,
    generation: u64,
    output: &Output,
    on_progress: &mut F,
) -> Outcome
where
    F: FnMut(Progress),
{
    // Registered for the transport's readiness where a waiting `recv` may read for itself
    // (plain TCP, no store): it wakes this driver or that `recv` (see `crate::input`). Elsewhere
    // the driver registers its own waker, as ever.
    let route = (output.direct && peer.lock().durable.is_none()).then(|| crate::input::route(peer));
    let mut progress = Vec::new();
    // One timer for the connection's life, moved only when the core's next deadline moves
    // (registering a timer on every turn cost more than the turn's own work).
    let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(sleep);
    let mut armed: Option<Instant> = None;
    // The handshake's queues are released after the first turn, which sends and reports
    // what they hold: an idle connection should not keep them until its first timer.
    let mut handshake_queues = true;
    // Input was taken while the last turn's commits were in flight.
    let mut input_meanwhile = false;
    loop {
        // Under the lock: gather output, events and the next deadline.
        peer.turn_clock_us.store(
            crate::clock::wall_clock_us(),
            std::sync::atomic::Ordering::Relaxed,
        );
        let step = {
            let mut st = peer.lock();
            let now = now();
            let replaced = st.generation != generation;
            let durable = st.durable.is_some();
            match &mut st.link {
                Link::Attached(_) if replaced => {
                    // Another connection took the session over: this one still owes its
                    // socket the GOAWAY the takeover queued.
                    match st.rare.as_mut().and_then(|r| r.farewell.take()) {
                        Some(f) if f.0 == generation => Step::Replaced(f.1),
                        other => {
                            if other.is_some() {
                                st.rare().farewell = other;
                            }
                            Step::Replaced(Vec::new())
                        }
                    }
                }
                Link::Attached(conn) => {
                    let mut out = output.lock();
                    if std::mem::take(&mut out.failed) {
                        conn.handle_disconnect();
                    }
                    let before = metered::before(conn);
                    let start = out.encoded();
                    if out.is_idle() {
                        let batch = if durable { DURABLE_BATCH } else { WRITE_BATCH };
                        while out.encoded() < batch && out.transmit(conn, now) > 0 {}
                    }
                    let deadline = conn.poll_timeout();
                    if conn.is_closed() {
                        // Ending: everything the connection still owes (a CLOSE reply, a
                        // GOAWAY) goes after what is pending, whatever the batch size.
                        while out.transmit(conn, now) > 0 {}
                    }
                    metered::after_output(conn, before, (out.encoded() - start) as u64);
                    drop(out);
                    // Handles that change the session before this driver sleeps compare the
                    // connection's next deadline with this one and wake the driver if earlier.
                    st.driver_wake = deadline;
                    let outcome = handle_events(&mut st, &mut progress);
                    if std::mem::take(&mut handshake_queues)
                        && let Link::Attached(conn) = &mut st.link
                    {
                        conn.release_buffers();
                    }
                    st.account();
                    // Durable before visible: what this turn changed is committed before its
                    // bytes (DATA of new messages, ACKs of positions, proofs of tokens) go out.
                    let pending: Pending = st
                        .durable_commit(false)
                        .into_iter()
                        .chain(st.rare.as_mut().and_then(|r| r.unsettled.take()))
                        .collect();
                    Step::Run(deadline, outcome, pending)
                }
                _ => Step::Replaced(Vec::new()),
            }
        };
        let (deadline, outcome) = match step {
            Step::Run(d, o, pending) => {
                let confirm = !pending.is_empty();
                let failed = if pending.is_empty() {
                    None
                } else {
                    // Boxed: a connection without a store never holds this future's state
                    // (it would grow every session's task).
                    let waited = Box::pin(await_commits(peer, generation, output, pending));
                    let (failed, input) = waited.await;
                    input_meanwhile = input;
                    failed
                };
                if let Some(failed) = failed {
                    let error = match failed {
                        StoreError::Fenced => {
                            // Another server of the fleet resumed the session: nothing of this
                            // turn goes out, and this server stops carrying it at once.
                            tracing::info!(
                                "session moved to another server: dropping its connection"
                            );
                            peer.abandon(EndReason::Moved);
                            return Outcome::Replaced;
                        }
                        e => e.to_string(),
                    };
                    tracing::error!(%error, "session store commit failed: dropping the connection");
                    // Nothing of this turn may go out; the session detaches (resumable) and
                    // the next connection's first commit stores it all again.
                    let mut st = peer.lock();
                    if let Some(d) = st.durable.as_mut() {
                        d.committed = None;
                    }
                    if st.generation != generation {
                        return Outcome::Replaced;
                    }
                    if let Link::Attached(conn) = &mut st.link {
                        conn.handle_disconnect();
                    }
                    let outcome = handle_events(&mut st, &mut progress);
                    st.account();
                    drop(st);
                    report(peer, &mut progress, on_progress);
                    peer.settle();
                    return outcome.unwrap_or(Outcome::Disconnected(ConnectionError::Reset));
                }
                if confirm {
                    // The commits went through under this server's epoch: what they confirmed
                    // of the receive side is the application's now.
                    peer.lock().confirm_visible();
                }
                (d, o)
            }
            Step::Replaced(farewell) => {
                output.lock().buf.extend_from_slice(&farewell);
                flush_and_shut(output).await;
                return Outcome::Replaced;
            }
        };
        report(peer, &mut progress, on_progress);
        if let Some(outcome) = outcome {
            peer.settle();
            // Write what is left (a CLOSE, a GOAWAY) and end.
            flush_and_shut(output).await;
            return outcome;
        }
        if let Some(d) = deadline
            && armed != Some(d)
        {
            sleep.as_mut().reset(d.into());
            armed = Some(d);
        }
        let writing = !output.lock().is_idle();
        if std::mem::take(&mut input_meanwhile) {
            // Input arrived while the commits were in flight: the next turn handles it at
            // once (the core may owe an ACK for it). What the commits released goes out
            // first, as far as the socket takes it now, and a deadline that has passed is
            // handled: steady input starves neither the writes nor the timers.
            if writing {
                let _ = output.lock().write_now();
            }
            if deadline.is_some_and(|d| d <= now()) {
                armed = None;
                handle_timeout(peer, generation);
            }
            continue;
        }
        tokio::select! {
            // The next turn reports what came.
            _ = std::future::poll_fn(|cx| {
                read_once(output, route.as_ref().unwrap_or(cx.waker()), peer, generation)
            }) => {}
            r = std::future::poll_fn(|cx| output.lock().poll_write_all(cx)), if writing => {
                if r.is_err() {
                    let mut st = peer.lock();
                    let current = st.generation == generation;
                    if let Link::Attached(conn) = &mut st.link && current {
                        conn.handle_disconnect();
                    }
                }
            }
            () = peer.driver.notified() => {}
            () = &mut sleep, if deadline.is_some() => {
                armed = None;
                handle_timeout(peer, generation);
                // A timer fired with nothing read since the one before: release what a busy
                // period grew (a busy connection keeps its buffer: shrinking it on every
                // timer regrew and zeroed 64 KiB each time).
                if let Some(r) = output.reader().as_mut()
                    && !std::mem::take(&mut r.read_since_timer)
                    && r.buf.len() > READ_SMALL
                {
                    r.buf = vec![0u8; READ_SMALL];
                }
                output.lock().shrink(WRITE_KEEP);
            }
        }
    }
}

/// Waits for a turn's commits (in order) while the connection goes on reading, within the
/// receive window and the memory budget as ever, so that the next turn's commit covers what
/// arrived during this one's instead of one read's worth. Nothing is written until the
/// commits are in. At most [`READ_DURING_COMMIT`] bytes are taken: what the core gathers
/// between two turns (events, replies owed) stays bounded however long a commit takes.
/// Returns the first failure, if any, and whether input was taken.
async fn await_commits(
    peer: &PeerShared,
    generation: u64,
    output: &Output,
    pending: Pending,
) -> (Option<StoreError>, bool) {
    let commits = async move {
        for answer in pending {
            match answer.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Some(e),
                Err(_) => return Some(StoreError::Closed),
            }
        }
        None
    };
    tokio::pin!(commits);
    let mut reading = true;
    let mut input = false;
    let mut taken = 0;
    loop {
        tokio::select! {
            failed = &mut commits => return (failed, input),
            // A session with a store: no `recv` reads for itself (see `crate::input`).
            fed = std::future::poll_fn(|cx| read_once(output, cx.waker(), peer, generation)), if reading => {
                taken += fed.bytes;
                // After the end of the stream (or an error) nothing more comes.
                reading = fed.open && taken < READ_DURING_COMMIT;
                input = true;
                if fed.waiting {
                    // The turn that reports them waits for the commits: a waiting `recv`
                    // need not.
                    peer.readable.notify_waiters();
                }
            }
        }
    }
}

/// Reads once from the connection's reading half and feeds the core; `Pending` (`waker`
/// registered: the driver's own, or the session's routing waker, which wakes the driver
/// through its `driver` notification, see `crate::input`) when nothing is there.
fn read_once(
    output: &Output,
    waker: &std::task::Waker,
    peer: &PeerShared,
    generation: u64,
) -> std::task::Poll<crate::input::FedInput> {
    match output.reader().as_mut() {
        Some(r) => r.poll_feed(waker, peer, generation),
        None => std::task::Poll::Pending,
    }
}

/// The core's deadline passed: it acts (ACKs, PINGs, timeouts) and lets go of what it
/// no longer needs.
fn handle_timeout(peer: &PeerShared, generation: u64) {
    let mut st = peer.lock();
    let current = st.generation == generation;
    if let Link::Attached(conn) = &mut st.link
        && current
    {
        conn.handle_timeout(now());
        conn.release_buffers();
    }
}

/// Feeds what a read returned (bytes, the end of the stream or an error) to the connection,
/// if it still carries the session, and grows the read buffer when data streams in. True if
/// messages are waiting for the application.
pub(crate) fn take_input(
    peer: &PeerShared,
    generation: u64,
    r: std::io::Result<usize>,
    rbuf: &mut Vec<u8>,
) -> bool {
    let mut st = peer.lock();
    let current = st.generation == generation;
    let allowance = receive_allowance(&st);
    if let Link::Attached(conn) = &mut st.link
        && current
    {
        match r {
            Ok(0) | Err(_) => conn.handle_disconnect(),
            Ok(n) => {
                conn.set_receive_allowance(allowance);
                let before = metered::before(conn);
                conn.handle_input(now(), &rbuf[..n]);
                metered::after_input(conn, before, n as u64);
            }
        }
        // Count what this input added at once, under the same lock: another session's
        // allowance must not be computed from a total that misses it.
        st.account();
    }
    let waiting = st.waiting_messages() > 0;
    drop(st);
    if matches!(r, Ok(n) if n == rbuf.len()) && rbuf.len() < READ_CHUNK {
        // The read filled the buffer: more comes than it holds. Grow a step (data that
        // streams in is read in big chunks after two reads).
        let next = if rbuf.len() < READ_MID {
            READ_MID
        } else {
            READ_CHUNK
        };
        rbuf.resize(next, 0);
    }
    waiting
}

/// Writes what is left for the transport and shuts its writing side down, within
/// [`FLUSH_TIMEOUT`].
async fn flush_and_shut(output: &Output) {
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, async {
        std::future::poll_fn(|cx| output.lock().poll_write_all(cx)).await?;
        std::future::poll_fn(|cx| output.lock().poll_shutdown(cx)).await
    })
    .await;
}

/// What the server's memory budget leaves this session for received bytes: what its inbox and
/// reassembly buffer hold now plus what nobody uses (`None` without a budget: a client).
fn receive_allowance(st: &PeerState) -> Option<u64> {
    let budget = st.budget.as_ref()?;
    let free = budget
        .limit
        .saturating_sub(budget.used.load(std::sync::atomic::Ordering::Relaxed));
    let held = match &st.link {
        Link::Attached(conn) => {
            conn.reassembly_bytes() + conn.session().map_or(0, crate::proto::Session::inbox_bytes)
        }
        _ => 0,
    };
    Some(held + free)
}

/// Reports a turn's progress, after the session's lock is released (a woken task then finds
/// it free): wakes receivers and senders, and tells the owner the rest.
pub(crate) fn report<F: FnMut(Progress)>(
    peer: &PeerShared,
    progress: &mut Vec<Progress>,
    on_progress: &mut F,
) {
    for p in progress.drain(..) {
        match p {
            Progress::Readable => peer.readable.notify_waiters(),
            Progress::Acknowledged => peer.progress.notify_waiters(),
            p => on_progress(p),
        }
    }
}

/// Applies the core's events to the shared state; returns how the connection ended, if it did.
/// Wake-ups go into `progress`, for [`report`].
pub(crate) fn handle_events(st: &mut PeerState, progress: &mut Vec<Progress>) -> Option<Outcome> {
    handle_events_while(st, progress, |_| true)
}

/// [`handle_events`] up to the first event `take` refuses (it and the ones after it stay
/// queued, in order).
pub(crate) fn handle_events_while(
    st: &mut PeerState,
    progress: &mut Vec<Progress>,
    take: fn(&Event) -> bool,
) -> Option<Outcome> {
    let mut outcome = None;
    let mut acked = false;
    while let Link::Attached(conn) = &mut st.link {
        let role = conn.role();
        let Some(event) = conn.poll_event_if(take) else {
            break;
        };
        match event {
            Event::Established {
                session_id,
                resumed,
            } => {
                st.established(session_id, None);
                progress.push(Progress::Established { resumed });
                debug!(session = %session_id, resumed, "established");
            }
            Event::MessagesAvailable => {
                progress.push(Progress::Readable);
                // A waiting `recv` takes them: nothing to report (if it gives up, it does).
                if !st.notified && st.receivers == 0 {
                    st.notified = true;
                    progress.push(Progress::MessagesWaiting);
                }
            }
            Event::Acknowledged { first, end } => {
                trace!(%first, %end, "acknowledged");
                acked = true;
            }
            Event::Pong { rtt } => {
                if role == Role::Server {
                    metered::rtt(rtt);
                }
                if let Some(r) = &mut st.rare {
                    for w in r.ping_waiters.drain(..) {
                        let _ = w.send(rtt);
                    }
                }
            }
            Event::Disconnected(e) => {
                debug!(error = %e, "connection ended");
                st.detach(e.clone(), now());
                outcome = Some(Outcome::Disconnected(e));
            }
            Event::SessionEnded {
                reason,
                unacknowledged,
                discarded,
            } => {
                debug!(%reason, unacknowledged = unacknowledged.len(), discarded, "session ended");
                let acked_to = unacknowledged.first().map_or(Seq(u64::MAX), |m| m.seq);
                st.end(
                    EndReason::Protocol(reason.clone()),
                    unacknowledged,
                    acked_to,
                );
                outcome = Some(Outcome::Ended(reason));
            }
            Event::Hello(_) => {}
        }
    }
    if acked {
        progress.push(Progress::Acknowledged);
    }
    outcome
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};

    use super::*;

    /// An output whose connection reads from `rd` into `len` bytes and writes nowhere.
    fn reading(rd: impl AsyncRead + Unpin + Send + 'static, len: usize) -> Output {
        Output::new(0, false, tokio::io::sink(), Reader::new(Box::new(rd), len))
    }

    /// A session with no connection: input fed to it is dropped.
    fn ended_peer() -> Arc<PeerShared> {
        let receiving =
            crate::decode::Receiving::new(&crate::proto::Config::default(), 1, Duration::ZERO);
        PeerShared::new(
            Role::Server,
            None,
            Link::Ended,
            crate::transform::Chain::new(),
            &receiving,
        )
    }

    /// A stream with `left` bytes ready at once, then nothing (pending for ever); counts what
    /// was read.
    struct Ready {
        left: usize,
        read: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for Ready {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let n = buf.remaining().min(self.left);
            if n == 0 {
                return Poll::Pending;
            }
            buf.put_slice(&vec![0u8; n]);
            self.left -= n;
            self.read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_commit_that_does_not_return_stops_the_reading_at_its_bound() {
        let peer = ended_peer();
        // 16 MiB are waiting to be read; the commit never returns.
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let rd = Ready {
            left: 16 << 20,
            read: read.clone(),
        };
        let output = reading(rd, READ_CHUNK);
        let (_held, answer) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _entered = rt.enter();
        let mut waiting = Box::pin(await_commits(&peer, 0, &output, vec![answer]));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        drop(waiting);
        let read = read.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            read <= READ_DURING_COMMIT + READ_CHUNK,
            "read {read} bytes while the commit was in flight"
        );
        assert!(read >= READ_DURING_COMMIT, "read only {read} bytes");
    }

    /// A stream with nothing to read until the test puts bytes there and wakes the waker
    /// its last read registered, as a socket's readiness does.
    struct Later {
        state: Arc<std::sync::Mutex<(usize, Option<Waker>)>>,
        read: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl AsyncRead for Later {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let mut st = self.state.lock().unwrap();
            let n = buf.remaining().min(st.0);
            if n == 0 {
                st.1 = Some(cx.waker().clone());
                return Poll::Pending;
            }
            buf.put_slice(&vec![0u8; n]);
            st.0 -= n;
            self.read.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            Poll::Ready(Ok(()))
        }
    }

    /// Set when woken.
    struct Flag(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn input_that_comes_during_a_commit_wakes_the_wait_to_read_it() {
        let peer = ended_peer();
        let state = Arc::new(std::sync::Mutex::new((0, None)));
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let rd = Later {
            state: state.clone(),
            read: read.clone(),
        };
        let output = reading(rd, READ_SMALL);
        // The commit never returns.
        let (_held, answer) = tokio::sync::oneshot::channel();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _entered = rt.enter();
        let mut waiting = Box::pin(await_commits(&peer, 0, &output, vec![answer]));
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(waiting.as_mut().poll(&mut cx).is_pending());

        // Bytes arrive; the stream wakes what its read registered.
        let registered = {
            let mut st = state.lock().unwrap();
            st.0 = 100;
            st.1.take().expect("the read registered a waker")
        };
        registered.wake();
        assert!(
            flag.0.load(std::sync::atomic::Ordering::SeqCst),
            "the wait for the commit was not woken by the input"
        );
        assert!(waiting.as_mut().poll(&mut cx).is_pending());
        assert_eq!(read.load(std::sync::atomic::Ordering::Relaxed), 100);
    }

    #[test]
    fn a_read_buffer_grows_a_step_at_a_time() {
        let peer = ended_peer();
        let mut buf = vec![0u8; READ_SMALL];
        // A read that leaves room: the buffer stays small.
        take_input(&peer, 0, Ok(READ_SMALL - 1), &mut buf);
        assert_eq!(buf.len(), READ_SMALL);
        // Full reads: a step, then the streaming size, then no more.
        take_input(&peer, 0, Ok(READ_SMALL), &mut buf);
        assert_eq!(buf.len(), READ_MID);
        take_input(&peer, 0, Ok(READ_MID), &mut buf);
        assert_eq!(buf.len(), READ_CHUNK);
        take_input(&peer, 0, Ok(READ_CHUNK), &mut buf);
        assert_eq!(buf.len(), READ_CHUNK);
    }
}
