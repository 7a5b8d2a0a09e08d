//! The one tokio runtime behind every object of the module, and waiting on it from Python
//! with the GIL released.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tokio::runtime::Runtime;

use crate::errors;

/// How long a blocking wait runs before it looks for a signal (Ctrl-C) from Python.
const SLICE: Duration = Duration::from_millis(50);

/// The module's runtime: two worker threads named `steadfast`, started on first use.
pub(crate) fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("steadfast")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("steadfast: cannot start the tokio runtime: {e}"))
    })
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
/// use the runtime's I/O and blocking pool) and parks between polls with the deadline as its
/// timeout: a wait registers no timer with the runtime, whose threads would otherwise be
/// woken to arm it.
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
            loop {
                if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                    return Some(v);
                }
                let now = Instant::now();
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
