//! The one tokio runtime behind every object of the module, and waiting on it from Python
//! with the GIL released.

use std::future::Future;
use std::sync::OnceLock;
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

/// Runs `fut` to completion with the GIL released, until `timeout` seconds have passed
/// (then [`errors::timeout`]). Signals are checked between slices of 50 ms, so Ctrl-C
/// interrupts the wait: the future is then dropped, and the library's futures are cancel
/// safe (a message is taken, or queued, only when its future completes).
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
    let mut fut = Box::pin(fut);
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        let out = py.detach(|| {
            rt().block_on(async { tokio::time::timeout(slice, fut.as_mut()).await.ok() })
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
