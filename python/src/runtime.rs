//! The one tokio runtime behind every object of the module, and waiting on it from Python
//! with the GIL released.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors;

/// How long a blocking wait runs before it looks for a signal (Ctrl-C) from Python.
const SLICE: Duration = Duration::from_millis(50);

/// How long a wait polls again, yielding the CPU between polls, before it parks, in
/// microseconds (`set_wait_spin`; default 0: it parks at once). A reply that comes within it
/// is taken without a thread wake-up, whose cost on a virtual machine with idle CPUs is tens
/// of microseconds; but a thread that yields its CPU while other work is runnable may get it
/// back only a scheduler slice later. Measured (BENCHMARKS.md, "From Python"), 50 µs against
/// none: request/response p50 −15 to −25 % on an idle machine, for +40 % CPU per round trip;
/// with the CPUs busy, p99 3.6–5.0 ms against 0.11–0.23 ms.
static SPIN_US: AtomicU64 = AtomicU64::new(0);

/// Sets how long every blocking wait of the process polls before it parks (see [`SPIN_US`]).
#[pyfunction]
pub(crate) fn set_wait_spin(microseconds: u64) -> PyResult<()> {
    if microseconds > 1_000_000 {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "the wait spin is at most 1,000,000 microseconds",
        ));
    }
    SPIN_US.store(microseconds, Ordering::Relaxed);
    Ok(())
}

/// How many processes deep, through `fork`, the package works: each child of a fork starts a
/// runtime of its own (the parent's threads do not exist in it).
const GENERATIONS: usize = 16;

/// The runtime of each generation: 0 in the process that imported the package, one more in
/// each child of a `fork` (`after_fork_in_child`). A slot, once started, is never dropped: in
/// a child, the parent's runtime has no threads left to stop.
static RUNTIMES: [OnceLock<Runtime>; GENERATIONS] = [const { OnceLock::new() }; GENERATIONS];

/// This process's generation.
static GENERATION: AtomicUsize = AtomicUsize::new(0);

/// The process's runtime: two worker threads named `steadfast`, started on first use (in a
/// child of a `fork`, a new one).
pub(crate) fn rt() -> &'static Runtime {
    let g = GENERATION.load(Ordering::Acquire).min(GENERATIONS - 1);
    RUNTIMES[g].get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("steadfast")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("steadfast: cannot start the tokio runtime: {e}"))
    })
}

/// Called (through `os.register_at_fork`) in the child of a `fork`: the objects made before
/// it belong to the parent, whose connections and runtime threads they use; new ones start
/// a runtime of their own.
#[pyfunction]
pub(crate) fn after_fork_in_child() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The process an object was made in (its generation): used elsewhere, it refuses to act.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Here(usize);

impl Here {
    /// This process.
    pub(crate) fn now() -> Here {
        Here(GENERATION.load(Ordering::Acquire))
    }

    /// `Ok` in the process the object was made in; in a child of a `fork`,
    /// `steadfast.Error`: the object's connections are the parent's (a write from the child
    /// would go into the parent's byte stream) and its runtime's threads are not there.
    pub(crate) fn check(self, py: Python<'_>) -> PyResult<()> {
        if self.0 == GENERATION.load(Ordering::Acquire) && self.0 < GENERATIONS - 1 {
            Ok(())
        } else if self.0 >= GENERATIONS - 1 {
            Err(errors::error(
                py,
                format!(
                    "steadfast works up to {} levels of fork deep",
                    GENERATIONS - 1
                ),
            ))
        } else {
            Err(errors::error(
                py,
                "this object was made before os.fork(): use it in the process that made it, \
                 and make new ones in the child"
                    .into(),
            ))
        }
    }
}

/// A `timeout=` argument in seconds: `None` waits without a limit.
pub(crate) fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => {
            // Far-off deadlines saturate instead of overflowing `Instant`.
            let d = Duration::try_from_secs_f64(t).unwrap_or(Duration::from_secs(u32::MAX.into()));
            Ok(Some(Instant::now().checked_add(d).unwrap_or_else(|| {
                Instant::now() + Duration::from_secs(u32::MAX.into())
            })))
        }
        Some(t) => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be a finite number of seconds >= 0, not {t}"
        ))),
    }
}

/// Wakes the thread that waits in [`wait`].
struct Unparker(std::thread::Thread);

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion with the GIL released, until `timeout` seconds have passed
/// (then [`errors::timeout`]). Signals are checked between slices of 50 ms, so Ctrl-C
/// interrupts the wait: the future is then dropped, and the library's futures are cancel
/// safe (a message is taken, or queued, only when its future completes).
///
/// The calling thread polls the future itself (inside the runtime's context, so that it may
/// use the runtime's I/O and blocking pool), again and again for [`SPIN_US`], then parks between
/// polls with the deadline as its timeout: a wait registers no timer with the runtime, whose
/// threads would otherwise be woken to arm it.
pub(crate) fn wait<F>(
    py: Python<'_>,
    fut: F,
    timeout: Option<f64>,
    what: &str,
) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let deadline = deadline(timeout)?;
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(Unparker(std::thread::current())));
    loop {
        let out = py.detach(|| {
            let _runtime = rt().enter();
            let mut cx = Context::from_waker(&waker);
            let slice_end = match deadline {
                Some(d) => d.min(Instant::now() + SLICE),
                None => Instant::now() + SLICE,
            };
            let spin_end = Instant::now() + Duration::from_micros(SPIN_US.load(Ordering::Relaxed));
            loop {
                if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                    return Some(v);
                }
                let now = Instant::now();
                if now < spin_end.min(slice_end) {
                    std::thread::yield_now();
                    continue;
                }
                if now >= slice_end {
                    return None;
                }
                std::thread::park_timeout(slice_end - now);
            }
        });
        if let Some(v) = out {
            return Ok(v);
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(errors::timeout(py, what));
        }
    }
}
