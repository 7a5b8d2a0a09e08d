//! `Peer`, `Receipt` and `Message`: one session's handle, as Python objects.

use std::future::IntoFuture;
use std::time::Duration;

use bytes::Bytes;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString};

use crate::bridge::{Completions, Op};
use crate::errors;
use crate::runtime::{self, Here, wait};

/// A message received from the peer: its body and its sequence number in the session.
///
/// A body of 512 B to 8 KiB may share its memory with the bodies received just before and
/// after it (at most 16 times its size and 32 KiB): keeping the ``Message`` itself for long
/// keeps that much alive. ``body`` is a copy of its own; keep that instead.
#[pyclass(frozen, module = "steadfast._steadfast")]
pub(crate) struct Message {
    body: Bytes,
    seq: u64,
    timestamp_us: u64,
}

impl From<steadfast::Message> for Message {
    fn from(m: steadfast::Message) -> Self {
        Message {
            body: m.body,
            seq: m.seq.0,
            timestamp_us: m.timestamp_us,
        }
    }
}

#[pymethods]
impl Message {
    /// The body, as sent.
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.body)
    }

    /// Sequence number in its direction of the session (consecutive from 1).
    #[getter]
    fn seq(&self) -> u64 {
        self.seq
    }

    /// The sender's clock at `send`, microseconds since the Unix epoch (0: not given).
    #[getter]
    fn timestamp_us(&self) -> u64 {
        self.timestamp_us
    }

    /// The body decoded as text (UTF-8).
    fn text<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        // Python's own decoder, for its UnicodeDecodeError (position, reason) on bad bytes.
        PyBytes::new(py, &self.body).call_method1("decode", ("utf-8",))
    }

    /// The body decoded from MessagePack (as `send_value` encodes it) into Python objects.
    fn value<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let kwargs = PyDict::new(py);
        kwargs.set_item("raw", false)?;
        kwargs.set_item("strict_map_key", false)?;
        py.import("msgpack")?
            .call_method("unpackb", (PyBytes::new(py, &self.body),), Some(&kwargs))
    }

    fn __len__(&self) -> usize {
        self.body.len()
    }

    fn __repr__(&self) -> String {
        format!("Message(seq={}, {} bytes)", self.seq, self.body.len())
    }
}

/// The body of a message from Python: `bytes`, `bytearray`, `memoryview` or `str` (UTF-8).
pub(crate) fn body(obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Bytes::copy_from_slice(s.to_cow()?.as_bytes()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Bytes::from(b.to_vec()));
    }
    // Anything else with the buffer protocol (memoryview, array, …), through
    // `memoryview(obj).tobytes()` (`bytes(obj)` would turn an int into that many zeros).
    let bytes = obj
        .py()
        .import("builtins")
        .and_then(|b| b.getattr("memoryview"))
        .and_then(|mv| mv.call1((obj,)))
        .and_then(|mv| mv.call_method0("tobytes"))
        .map_err(|_| {
            pyo3::exceptions::PyTypeError::new_err(format!(
                "a message body is bytes, bytearray, memoryview or str, not {}",
                obj.get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
    Ok(Bytes::copy_from_slice(bytes.cast::<PyBytes>()?.as_bytes()))
}

/// A session id as 32 hex digits (all 128 bits; its `Display` shows the first 64).
pub(crate) fn hex(id: steadfast::SessionId) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// A message's receipt: resolves when the peer's application has taken the message.
#[pyclass(frozen, module = "steadfast._steadfast")]
pub(crate) struct Receipt {
    inner: steadfast::Receipt,
    peer: steadfast::Peer,
    here: Here,
}

#[pymethods]
impl Receipt {
    /// The message's sequence number.
    #[getter]
    fn seq(&self) -> u64 {
        self.inner.seq().0
    }

    /// Whether the peer's application has taken the message already.
    #[getter]
    fn acknowledged(&self) -> bool {
        self.inner.is_acknowledged()
    }

    /// Waits until the peer's application has taken the message.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        self.here.check(py)?;
        let r = wait(py, self.inner.clone().into_future(), timeout, "receipt")?;
        r.map_err(|e| errors::receipt(py, e, self.peer.unacknowledged()))
    }

    /// The wait as an operation of an event loop (`steadfast.aio`).
    #[pyo3(signature = (completions, timeout=None))]
    fn wait_op(&self, completions: &Bound<'_, Completions>, timeout: Option<f64>) -> PyResult<Op> {
        self.here.check(completions.py())?;
        let receipt = self.inner.clone();
        let peer = self.peer.clone();
        Op::start(completions, timeout, "receipt", async move {
            let r = receipt.await;
            crate::bridge::outcome(move |py| {
                r.map_err(|e| errors::receipt(py, e, peer.unacknowledged()))?;
                Ok(py.None())
            })
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "Receipt(seq={}, acknowledged={})",
            self.inner.seq().0,
            self.inner.is_acknowledged()
        )
    }
}

/// One session's handle (see the `steadfast.Peer` wrapper for the documented API).
#[pyclass(frozen, module = "steadfast._steadfast")]
pub(crate) struct PeerCore {
    pub(crate) inner: steadfast::Peer,
    /// The process the session's handle was made in.
    pub(crate) here: Here,
}

impl PeerCore {
    fn receipt(&self, inner: steadfast::Receipt) -> Receipt {
        Receipt {
            inner,
            peer: self.inner.clone(),
            here: self.here,
        }
    }
}

#[pymethods]
impl PeerCore {
    /// The session's id (32 hex digits), once established.
    #[getter]
    fn id(&self) -> Option<String> {
        self.inner.id().map(hex)
    }

    /// The client's name (HELLO), if it gave one.
    #[getter]
    fn name(&self) -> Option<String> {
        self.inner.name().map(str::to_string)
    }

    /// The address of the current connection's other end.
    #[getter]
    fn addr(&self) -> Option<String> {
        self.inner.addr().map(|a| a.to_string())
    }

    #[getter]
    fn connected(&self) -> bool {
        self.inner.is_connected()
    }

    #[getter]
    fn ended(&self) -> bool {
        self.inner.is_ended()
    }

    #[getter]
    fn end_reason(&self) -> Option<String> {
        self.inner.end_reason().map(|r| errors::reason_text(&r))
    }

    /// Queues a message, waiting (GIL released) only while the outbox is full.
    #[pyo3(signature = (body, timeout=None))]
    fn send(
        &self,
        py: Python<'_>,
        body: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Receipt> {
        self.here.check(py)?;
        let body = self::body(body)?;
        match self.inner.try_send(body.clone()) {
            Ok(r) => Ok(self.receipt(r)),
            Err(steadfast::error::SendError::Full) => {
                let r = wait(py, self.inner.send(body), timeout, "send")?;
                r.map(|r| self.receipt(r)).map_err(|e| errors::send(py, e))
            }
            Err(e) => Err(errors::send(py, e)),
        }
    }

    /// Queues a message if the outbox has room now (`Full` otherwise).
    fn try_send(&self, py: Python<'_>, body: &Bound<'_, PyAny>) -> PyResult<Receipt> {
        self.here.check(py)?;
        let body = self::body(body)?;
        self.inner
            .try_send(body)
            .map(|r| self.receipt(r))
            .map_err(|e| errors::send(py, e))
    }

    /// Queues every body in order (waiting for room as `send` does); the last one's receipt.
    #[pyo3(signature = (bodies, timeout=None))]
    fn send_many(
        &self,
        py: Python<'_>,
        bodies: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Receipt>> {
        self.here.check(py)?;
        let mut all = Vec::new();
        for b in bodies.try_iter()? {
            all.push(self::body(&b?)?);
        }
        let r = wait(py, self.inner.send_all(all), timeout, "send_many")?;
        r.map(|r| r.map(|r| self.receipt(r)))
            .map_err(|e| errors::send(py, e))
    }

    /// Takes the next message, waiting for one (GIL released).
    #[pyo3(signature = (timeout=None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Message> {
        self.here.check(py)?;
        if let Some(m) = self.inner.try_recv().map_err(|e| errors::recv(py, e))? {
            return Ok(m.into());
        }
        let r = wait(py, self.inner.recv(), timeout, "recv")?;
        r.map(Message::from).map_err(|e| errors::recv(py, e))
    }

    /// Takes the next message if one is waiting.
    fn try_recv(&self, py: Python<'_>) -> PyResult<Option<Message>> {
        self.here.check(py)?;
        self.inner
            .try_recv()
            .map(|m| m.map(Message::from))
            .map_err(|e| errors::recv(py, e))
    }

    /// Takes at least one message, waiting for it, and up to `n` (partial read).
    #[pyo3(signature = (n, timeout=None))]
    fn recv_many(&self, py: Python<'_>, n: usize, timeout: Option<f64>) -> PyResult<Vec<Message>> {
        self.here.check(py)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let now = self.inner.recv_up_to(n).map_err(|e| errors::recv(py, e))?;
        if !now.is_empty() {
            return Ok(now.into_iter().map(Message::from).collect());
        }
        let r = wait(py, self.inner.recv_many(n), timeout, "recv_many")?;
        r.map(|v| v.into_iter().map(Message::from).collect())
            .map_err(|e| errors::recv(py, e))
    }

    /// Takes up to `n` waiting messages without waiting.
    fn try_recv_many(&self, py: Python<'_>, n: usize) -> PyResult<Vec<Message>> {
        self.here.check(py)?;
        self.inner
            .recv_up_to(n)
            .map(|v| v.into_iter().map(Message::from).collect())
            .map_err(|e| errors::recv(py, e))
    }

    /// Waits until every message sent so far is acknowledged.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        self.here.check(py)?;
        let r = wait(py, self.inner.flush(), timeout, "flush")?;
        r.map_err(|e| errors::receipt(py, e, self.inner.unacknowledged()))
    }

    /// Closes the session (CLOSE), waiting up to `timeout` for what is queued to be
    /// acknowledged first; returns why it ended.
    #[pyo3(signature = (reason="closed", timeout=5.0))]
    fn close(&self, py: Python<'_>, reason: &str, timeout: f64) -> PyResult<String> {
        self.here.check(py)?;
        runtime::deadline(Some(timeout))?;
        let limit = Duration::from_secs_f64(timeout);
        let peer = self.inner.clone();
        let reason = reason.to_string();
        let r = wait(
            py,
            async move { peer.close_within(&reason, limit).await },
            None,
            "close",
        )?;
        Ok(errors::reason_text(&r))
    }

    /// Round-trip time of a PING, in seconds.
    #[pyo3(signature = (timeout=None))]
    fn ping(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<f64> {
        self.here.check(py)?;
        let r = wait(py, self.inner.ping(), timeout, "ping")?;
        r.map(|d| d.as_secs_f64()).map_err(|e| errors::send(py, e))
    }

    /// The sequence number the next message sent will carry (messages queued so far + 1,
    /// over the session's whole life, also after a restart from its state).
    #[getter]
    fn next_seq(&self) -> Option<u64> {
        self.inner.next_seq().map(|s| s.0)
    }

    /// Messages sent and not acknowledged yet, in order (copies).
    fn unacknowledged(&self) -> Vec<Message> {
        self.inner
            .unacknowledged()
            .into_iter()
            .map(Message::from)
            .collect()
    }

    /// The session's counters.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        d.set_item("queued", s.queued)?;
        d.set_item("sent", s.sent)?;
        d.set_item("acknowledged", s.acknowledged)?;
        d.set_item("retransmitted", s.retransmitted)?;
        d.set_item("body_bytes_sent", s.body_bytes_sent)?;
        d.set_item("bytes_received", s.bytes_received)?;
        d.set_item("received", s.received)?;
        d.set_item("in_flight", s.in_flight)?;
        d.set_item("waiting", s.waiting)?;
        d.set_item("connections", s.connections)?;
        d.set_item("rtt", s.rtt.map(|d| d.as_secs_f64()))?;
        Ok(d)
    }

    /// An operation that completes once a message can be taken (`True`) or the session is
    /// over with nothing left (`False`). Takes nothing.
    #[pyo3(signature = (completions, timeout=None))]
    fn readable_op(
        &self,
        completions: &Bound<'_, Completions>,
        timeout: Option<f64>,
    ) -> PyResult<Op> {
        self.here.check(completions.py())?;
        let peer = self.inner.clone();
        Op::start(completions, timeout, "recv", async move {
            let ready = peer.readable().await;
            crate::bridge::outcome(move |py| {
                Ok(ready.into_pyobject(py)?.to_owned().into_any().unbind())
            })
        })
    }

    /// An operation that completes once a body of `len` bytes fits the outbox. Queues
    /// nothing.
    #[pyo3(signature = (completions, len, timeout=None))]
    fn writable_op(
        &self,
        completions: &Bound<'_, Completions>,
        len: usize,
        timeout: Option<f64>,
    ) -> PyResult<Op> {
        self.here.check(completions.py())?;
        let peer = self.inner.clone();
        Op::start(completions, timeout, "send", async move {
            peer.writable(len).await;
            crate::bridge::outcome(|py| Ok(py.None()))
        })
    }

    /// `flush` as an operation of an event loop.
    #[pyo3(signature = (completions, timeout=None))]
    fn flush_op(&self, completions: &Bound<'_, Completions>, timeout: Option<f64>) -> PyResult<Op> {
        self.here.check(completions.py())?;
        let peer = self.inner.clone();
        Op::start(completions, timeout, "flush", async move {
            let r = peer.flush().await;
            crate::bridge::outcome(move |py| {
                r.map_err(|e| errors::receipt(py, e, peer.unacknowledged()))?;
                Ok(py.None())
            })
        })
    }

    /// `close` as an operation of an event loop.
    #[pyo3(signature = (completions, reason="closed", timeout=5.0))]
    fn close_op(
        &self,
        completions: &Bound<'_, Completions>,
        reason: &str,
        timeout: f64,
    ) -> PyResult<Op> {
        self.here.check(completions.py())?;
        runtime::deadline(Some(timeout))?;
        let limit = Duration::from_secs_f64(timeout);
        let peer = self.inner.clone();
        let reason = reason.to_string();
        Op::start(completions, None, "close", async move {
            let r = peer.close_within(&reason, limit).await;
            let text = errors::reason_text(&r);
            crate::bridge::outcome(move |py| Ok(PyString::new(py, &text).into_any().unbind()))
        })
    }

    fn __repr__(&self) -> String {
        let id = self
            .inner
            .id()
            .map(|i| i.to_string())
            .unwrap_or_else(|| "-".into());
        format!(
            "Peer(id={id}, name={:?}, connected={})",
            self.inner.name(),
            self.inner.is_connected()
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PeerCore>()
            .is_ok_and(|o| o.get().inner.id().is_some() && o.get().inner.id() == self.inner.id())
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.id().hash(&mut h);
        h.finish()
    }
}
