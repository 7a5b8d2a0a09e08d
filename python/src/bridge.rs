//! Operations for an asyncio event loop: a tokio task does the waiting, then queues its
//! operation's id in the loop's `Completions` and writes one byte to a pipe that the loop
//! watches (`loop.add_reader`). The loop's reader drains the ids and completes their futures.
//! No tokio thread ever takes the GIL, and no Python code runs off the loop's thread.
//!
//! The operations that take or queue messages are readiness waits (`readable_op`,
//! `writable_op`): the message itself is taken or queued by the coroutine, on the loop's
//! thread, after the wait. Cancelling the coroutine drops the wait, which took nothing: so
//! `steadfast.aio` is cancel safe exactly as the Rust API is.

use std::future::Future;
use std::io::{PipeReader, PipeWriter, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;

use crate::errors;
use crate::runtime::{deadline, rt};

/// What an operation gives back, built on the loop's thread with the GIL.
pub(crate) type Outcome = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// An [`Outcome`] from a closure.
pub(crate) fn outcome(
    f: impl FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send + 'static,
) -> Outcome {
    Box::new(f)
}

struct Ready {
    ids: Vec<u64>,
    next_id: u64,
}

/// The completed operations of one event loop, and the pipe that tells it.
#[pyclass(frozen, module = "steadfast._steadfast")]
pub(crate) struct Completions {
    ready: Mutex<Ready>,
    writer: Mutex<PipeWriter>,
    reader: PipeReader,
}

impl Completions {
    fn done(&self, id: u64) {
        let first = {
            let mut r = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
            r.ids.push(id);
            r.ids.len() == 1
        };
        // One byte per batch: the loop drains every id when it wakes, so the pipe holds at
        // most a byte or two (a write never blocks on a full pipe).
        if first {
            let mut w = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            let _ = w.write(&[1]);
        }
    }
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> PyResult<Self> {
        let (reader, writer) = std::io::pipe()?;
        Ok(Completions {
            ready: Mutex::new(Ready {
                ids: Vec::new(),
                next_id: 0,
            }),
            writer: Mutex::new(writer),
            reader,
        })
    }

    /// The pipe's reading end, for `loop.add_reader` (the loop reads and discards its bytes).
    fn fileno(&self) -> i32 {
        self.reader.as_raw_fd()
    }

    /// The ids of the operations completed since the last call.
    fn drain(&self) -> Vec<u64> {
        std::mem::take(
            &mut self
                .ready
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .ids,
        )
    }
}

enum State {
    Running,
    Done(Outcome),
    /// Taken by `result`, or cancelled: an outcome that arrives now is dropped at once (what
    /// it carries goes back where it came from, as its drop decides).
    Taken,
}

/// One operation under way on the runtime.
#[pyclass(frozen, module = "steadfast._steadfast")]
pub(crate) struct Op {
    id: u64,
    state: Arc<Mutex<State>>,
    task: tokio::task::AbortHandle,
}

impl Op {
    /// Starts `fut` on the runtime; when it completes (or `timeout` passes: `Timeout`), the
    /// operation is done and `completions` says so.
    pub(crate) fn start<F>(
        completions: &Bound<'_, Completions>,
        timeout: Option<f64>,
        what: &'static str,
        fut: F,
    ) -> PyResult<Op>
    where
        F: Future<Output = Outcome> + Send + 'static,
    {
        let deadline = deadline(timeout)?;
        let id = {
            let c = completions.get();
            let mut r = c.ready.lock().unwrap_or_else(PoisonError::into_inner);
            r.next_id += 1;
            r.next_id
        };
        let state = Arc::new(Mutex::new(State::Running));
        let done = state.clone();
        let completions: Py<Completions> = completions.clone().unbind();
        let task = rt().spawn(async move {
            let out = match deadline {
                None => fut.await,
                Some(d) => match tokio::time::timeout_at(d.into(), fut).await {
                    Ok(o) => o,
                    Err(_) => outcome(move |py| Err(errors::timeout(py, what))),
                },
            };
            let unwanted = {
                let mut st = done.lock().unwrap_or_else(PoisonError::into_inner);
                match *st {
                    State::Taken => Some(out),
                    _ => {
                        *st = State::Done(out);
                        None
                    }
                }
            };
            if unwanted.is_none() {
                completions.get().done(id);
            }
            drop(unwanted);
        });
        Ok(Op {
            id,
            state,
            task: task.abort_handle(),
        })
    }
}

#[pymethods]
impl Op {
    /// The id that `Completions.drain` reports when this operation is done.
    #[getter]
    fn id(&self) -> u64 {
        self.id
    }

    /// The result (or the exception raised) once done; `None` before.
    fn result(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let taken = {
            let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            match std::mem::replace(&mut *st, State::Taken) {
                State::Done(o) => Some(o),
                other => {
                    *st = other;
                    None
                }
            }
        };
        match taken {
            Some(o) => o(py).map(Some),
            None => Ok(None),
        }
    }

    /// Stops the operation (it only waited: nothing is lost). A result that came and was not
    /// taken is dropped now, not when this object is collected (an accepted session goes back
    /// to the server for the next `accept`).
    fn cancel(&self) {
        self.task.abort();
        let untaken = std::mem::replace(
            &mut *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            State::Taken,
        );
        drop(untaken);
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.task.abort();
    }
}
