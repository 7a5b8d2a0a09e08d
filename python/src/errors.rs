//! Rust errors as the package's exceptions (defined in Python, `steadfast/_errors.py`, so that
//! they carry typed attributes and docstrings).

use pyo3::prelude::*;
use pyo3::types::PyList;
use steadfast::EndReason;
use steadfast::error::{BindError, ConnectError, ReceiptError, RecvError, SendError};

use crate::peer::Message;

/// An instance of exception class `name` of `steadfast._errors`, made with `args`.
fn make<'py, A>(py: Python<'py>, name: &str, args: A) -> PyErr
where
    A: pyo3::call::PyCallArgs<'py>,
{
    let made = py
        .import("steadfast._errors")
        .and_then(|m| m.getattr(name))
        .and_then(|cls| cls.call1(args));
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// `Error`, the base class, for what fits no subclass.
pub(crate) fn error(py: Python<'_>, what: String) -> PyErr {
    make(py, "Error", (what,))
}

/// `Timeout`: a wait ran out.
pub(crate) fn timeout(py: Python<'_>, what: &str) -> PyErr {
    make(py, "Timeout", (format!("{what}: timed out"),))
}

/// `SessionLost`, with the messages this side sent and the peer never acknowledged.
pub(crate) fn session_lost(
    py: Python<'_>,
    reason: &str,
    unacknowledged: Vec<steadfast::Message>,
) -> PyErr {
    let list = match PyList::new(py, unacknowledged.into_iter().map(Message::from)) {
        Ok(l) => l,
        Err(e) => return e,
    };
    make(
        py,
        "SessionLost",
        (format!("session lost: {reason}"), reason.to_string(), list),
    )
}

/// `Closed`: the session is closing or over.
pub(crate) fn closed(py: Python<'_>, what: &str) -> PyErr {
    make(py, "Closed", (what.to_string(),))
}

/// A send that was refused.
pub(crate) fn send(py: Python<'_>, e: SendError) -> PyErr {
    match e {
        SendError::Full => make(py, "Full", ("outbox full",)),
        SendError::TooLarge { len, max } => make(py, "TooLarge", (e.to_string(), len, max)),
        SendError::Closed => closed(py, "session closed"),
        other => make(py, "Error", (other.to_string(),)),
    }
}

/// A receive that failed.
pub(crate) fn recv(py: Python<'_>, e: RecvError) -> PyErr {
    match e {
        RecvError::Ended => closed(py, "session ended"),
        other => make(py, "Error", (other.to_string(),)),
    }
}

/// A receipt that will not resolve (`unacknowledged`: the session's messages the peer never
/// took, when the session is lost).
pub(crate) fn receipt(
    py: Python<'_>,
    e: ReceiptError,
    unacknowledged: Vec<steadfast::Message>,
) -> PyErr {
    match e {
        ReceiptError::SessionLost(reason) => session_lost(py, &reason.to_string(), unacknowledged),
        ReceiptError::Undelivered => session_lost(
            py,
            "the session ended before the message was acknowledged",
            unacknowledged,
        ),
        ReceiptError::TimedOut => timeout(py, "acknowledgement"),
        ReceiptError::Store(s) => make(py, "StoreError", (s,)),
        other => make(py, "Error", (other.to_string(),)),
    }
}

/// A connection that could not be made.
pub(crate) fn connect(py: Python<'_>, e: ConnectError) -> PyErr {
    match e {
        ConnectError::Rejected { code, reason } => make(
            py,
            "Refused",
            (
                format!("server refused the session ({code:?}): {reason}"),
                format!("{code:?}"),
                reason,
            ),
        ),
        ConnectError::SessionLost {
            reason,
            unacknowledged,
        } => session_lost(py, &reason.to_string(), unacknowledged),
        ConnectError::Config(c) => make(py, "ConfigError", (c.to_string(),)),
        ConnectError::Store(s) => make(py, "StoreError", (s.to_string(),)),
        other => make(py, "ConnectionFailed", (other.to_string(),)),
    }
}

/// A listener that could not be opened.
pub(crate) fn bind(py: Python<'_>, e: BindError) -> PyErr {
    match e {
        BindError::Config(c) => make(py, "ConfigError", (c.to_string(),)),
        BindError::Store(s) => make(py, "StoreError", (s.to_string(),)),
        other => make(py, "BindFailed", (other.to_string(),)),
    }
}

/// A configuration that cannot be used (bad TLS files, state directory, …).
pub(crate) fn config(py: Python<'_>, what: String) -> PyErr {
    make(py, "ConfigError", (what,))
}

/// An end reason as text, for events and `SessionLost`.
pub(crate) fn reason_text(r: &EndReason) -> String {
    r.to_string()
}
