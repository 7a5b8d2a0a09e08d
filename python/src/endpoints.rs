//! `Client` and `Server` cores: connecting, listening, accepting and the event queues.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use steadfast::store::{DurableStore, SessionStore, StoreRole};
use steadfast::{ClientConfig, ClientEvent, ServerConfig};

use crate::bridge::{Completions, Op, outcome};
use crate::errors;
use crate::peer::{Message, PeerCore, body};
use crate::runtime::{Here, wait};

/// A `token=` argument: bytes or text.
fn token(t: &Bound<'_, PyAny>) -> PyResult<bytes::Bytes> {
    body(t)
}

/// A durable store in `dir` (a directory, created if missing), loaded.
fn durable(py: Python<'_>, dir: &str, role: StoreRole) -> PyResult<Arc<dyn SessionStore>> {
    let opened = DurableStore::open(dir, role).and_then(|s| s.load().map(|_| s));
    match opened {
        Ok(s) => Ok(Arc::new(s)),
        Err(e) => Err(errors::config(py, format!("state {dir}: {e}"))),
    }
}

/// The settings of a client from the keyword arguments of `Client(...)`.
#[allow(clippy::too_many_arguments)]
fn client_config(
    py: Python<'_>,
    name: Option<String>,
    token_: Option<&Bound<'_, PyAny>>,
    tls_ca: Option<String>,
    tls: bool,
    server_name: Option<String>,
    state: Option<String>,
    max_attempts: Option<u32>,
) -> PyResult<ClientConfig> {
    let mut config = ClientConfig::default().max_attempts(max_attempts);
    if let Some(n) = name {
        config = config.name(n);
    }
    if let Some(t) = token_ {
        config = config.credentials(token(t)?);
    }
    let client_tls = match (tls_ca, tls) {
        (Some(ca), _) => Some(
            steadfast::tls::TlsClient::from_ca_file(&ca)
                .map_err(|e| errors::config(py, format!("tls_ca {ca}: {e}")))?,
        ),
        (None, true) => Some(
            steadfast::tls::TlsClient::with_system_roots()
                .map_err(|e| errors::config(py, format!("tls: {e}")))?,
        ),
        (None, false) => None,
    };
    match (client_tls, server_name) {
        (Some(mut t), name) => {
            if let Some(n) = name {
                t = t
                    .server_name(&n)
                    .map_err(|e| errors::config(py, format!("server_name {n}: {e}")))?;
            }
            config = config.tls(t);
        }
        (None, Some(_)) => {
            return Err(errors::config(
                py,
                "server_name needs TLS (tls_ca=... or tls=True)".into(),
            ));
        }
        (None, None) => {}
    }
    if let Some(dir) = state {
        config = config.store(durable(py, &dir, StoreRole::Client)?);
    }
    Ok(config)
}

/// A connected client.
#[pyclass(frozen, module = "steadfast._steadfast")]
pub(crate) struct ClientCore {
    inner: steadfast::Client,
    /// The process it was made in.
    here: Here,
}

fn client_event(py: Python<'_>, e: ClientEvent) -> PyResult<Py<PyAny>> {
    let t = match e {
        ClientEvent::Connected { resumed } => PyTuple::new(
            py,
            [if resumed { "resumed" } else { "connected" }
                .into_pyobject(py)?
                .into_any()],
        )?,
        ClientEvent::Disconnected { error } => {
            ("disconnected", error.to_string()).into_pyobject(py)?
        }
        ClientEvent::Reconnecting { attempt, delay } => {
            ("reconnecting", attempt, delay.as_secs_f64()).into_pyobject(py)?
        }
        ClientEvent::SessionLost {
            reason,
            unacknowledged,
        } => (
            "session_lost",
            errors::reason_text(&reason),
            PyList::new(py, unacknowledged.into_iter().map(Message::from))?,
        )
            .into_pyobject(py)?,
        _ => PyTuple::new(py, ["other"])?,
    };
    Ok(t.into_any().unbind())
}

#[pymethods]
impl ClientCore {
    /// Connects (blocking, GIL released) to the first address of `addresses` that answers.
    #[staticmethod]
    #[pyo3(signature = (addresses, *, name=None, token=None, tls_ca=None, tls=false, server_name=None, state=None, max_attempts=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        addresses: Vec<String>,
        name: Option<String>,
        token: Option<&Bound<'_, PyAny>>,
        tls_ca: Option<String>,
        tls: bool,
        server_name: Option<String>,
        state: Option<String>,
        max_attempts: Option<u32>,
        timeout: Option<f64>,
    ) -> PyResult<ClientCore> {
        let here = Here::now();
        here.check(py)?;
        let config = client_config(
            py,
            name,
            token,
            tls_ca,
            tls,
            server_name,
            state,
            max_attempts,
        )?;
        let addrs = addresses.join(",");
        let r = wait(
            py,
            steadfast::Client::connect(addrs, config),
            timeout,
            "connect",
        )?;
        r.map(|inner| ClientCore { inner, here })
            .map_err(|e| errors::connect(py, e))
    }

    /// `connect` as an operation of an event loop; its result is a `ClientCore`.
    #[staticmethod]
    #[pyo3(signature = (completions, addresses, *, name=None, token=None, tls_ca=None, tls=false, server_name=None, state=None, max_attempts=None, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn connect_op(
        py: Python<'_>,
        completions: &Bound<'_, Completions>,
        addresses: Vec<String>,
        name: Option<String>,
        token: Option<&Bound<'_, PyAny>>,
        tls_ca: Option<String>,
        tls: bool,
        server_name: Option<String>,
        state: Option<String>,
        max_attempts: Option<u32>,
        timeout: Option<f64>,
    ) -> PyResult<Op> {
        let here = Here::now();
        here.check(py)?;
        let config = client_config(
            py,
            name,
            token,
            tls_ca,
            tls,
            server_name,
            state,
            max_attempts,
        )?;
        let addrs = addresses.join(",");
        Op::start(completions, timeout, "connect", async move {
            let r = steadfast::Client::connect(addrs, config).await;
            outcome(move |py| match r {
                Ok(inner) => Ok(Py::new(py, ClientCore { inner, here })?.into_any()),
                Err(e) => Err(errors::connect(py, e)),
            })
        })
    }

    /// The session's handle.
    #[getter]
    fn peer(&self) -> PeerCore {
        PeerCore {
            inner: self.inner.peer().clone(),
            here: self.here,
        }
    }

    /// The next connection event, waiting up to `timeout` (`None` on timeout): a tuple whose
    /// first item names it (`connected`, `resumed`, `disconnected`, `reconnecting`,
    /// `session_lost`).
    #[pyo3(signature = (timeout=0.0))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        self.here.check(py)?;
        if let Some(e) = self.inner.try_next_event() {
            return client_event(py, e).map(Some);
        }
        let client = self.inner.clone();
        match wait(
            py,
            async move { client.next_event().await },
            timeout,
            "event",
        ) {
            Ok(Some(e)) => client_event(py, e).map(Some),
            Ok(None) => Ok(None),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A listening server.
#[pyclass(frozen, module = "steadfast._steadfast")]
pub(crate) struct ServerCore {
    inner: steadfast::Server,
    /// The process it was made in.
    here: Here,
    /// Sessions an `accept_op` accepted whose result was never taken (the operation was
    /// cancelled at the instant it completed): the next `accept` returns them first.
    returned: Arc<Mutex<VecDeque<steadfast::Peer>>>,
}

/// A peer an `accept_op` accepted, on its way to the caller: dropped untaken (a cancelled
/// operation), it goes back to the server's `returned` queue, so no session goes unaccepted.
struct Accepted {
    peer: Option<steadfast::Peer>,
    returned: Arc<Mutex<VecDeque<steadfast::Peer>>>,
}

impl Drop for Accepted {
    fn drop(&mut self) {
        if let Some(p) = self.peer.take() {
            self.returned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_back(p);
        }
    }
}

fn peer_obj(py: Python<'_>, p: steadfast::Peer, here: Here) -> PyResult<Bound<'_, PeerCore>> {
    Bound::new(py, PeerCore { inner: p, here })
}

fn server_event(py: Python<'_>, e: steadfast::ServerEvent, here: Here) -> PyResult<Py<PyAny>> {
    use steadfast::ServerEvent as E;
    let none = py.None();
    let empty = PyList::empty(py);
    let t = match e {
        E::Connected { peer } => ("connected", peer_obj(py, peer, here)?, none, empty),
        E::Resumed { peer } => ("resumed", peer_obj(py, peer, here)?, none, empty),
        E::Disconnected { peer, error } => (
            "disconnected",
            peer_obj(py, peer, here)?,
            error.to_string().into_pyobject(py)?.into_any().unbind(),
            empty,
        ),
        E::Expired {
            peer,
            unacknowledged,
        } => (
            "ended",
            peer_obj(py, peer, here)?,
            "expired".into_pyobject(py)?.into_any().unbind(),
            PyList::new(py, unacknowledged.into_iter().map(Message::from))?,
        ),
        E::Ended {
            peer,
            reason,
            unacknowledged,
        } => (
            "ended",
            peer_obj(py, peer, here)?,
            errors::reason_text(&reason)
                .into_pyobject(py)?
                .into_any()
                .unbind(),
            PyList::new(py, unacknowledged.into_iter().map(Message::from))?,
        ),
        E::MessagesWaiting { peer } => ("messages", peer_obj(py, peer, here)?, none, empty),
        _ => return Ok(py.None()),
    };
    Ok(t.into_pyobject(py)?.into_any().unbind())
}

impl ServerCore {
    fn take_returned(&self) -> Option<steadfast::Peer> {
        self.returned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }
}

#[pymethods]
impl ServerCore {
    /// Listens on every address (`host:port`, port 0 for any).
    #[staticmethod]
    #[pyo3(signature = (addresses, *, tls_cert=None, tls_key=None, state=None, node=None, token=None, linger=None))]
    #[allow(clippy::too_many_arguments)]
    fn bind(
        py: Python<'_>,
        addresses: Vec<String>,
        tls_cert: Option<String>,
        tls_key: Option<String>,
        state: Option<String>,
        node: Option<String>,
        token: Option<&Bound<'_, PyAny>>,
        linger: Option<f64>,
    ) -> PyResult<ServerCore> {
        let here = Here::now();
        here.check(py)?;
        let mut config = ServerConfig::default();
        if let Some(l) = linger {
            let d = Duration::try_from_secs_f64(l)
                .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("linger: {e}")))?;
            config = config.linger(d);
        }
        match (tls_cert, tls_key) {
            (Some(c), Some(k)) => {
                let t = steadfast::tls::TlsServer::from_pem_files(&c, &k)
                    .map_err(|e| errors::config(py, format!("tls_cert {c} / tls_key {k}: {e}")))?;
                config = config.tls(t);
            }
            (None, None) => {}
            _ => {
                return Err(errors::config(
                    py,
                    "tls_cert and tls_key go together".into(),
                ));
            }
        }
        if let Some(t) = token {
            config = config.shared_token(crate::endpoints::token(t)?);
        }
        if let Some(s) = state {
            if s.starts_with("postgres://") || s.starts_with("postgresql://") {
                let node = node.unwrap_or_else(|| format!("python-{}", std::process::id()));
                let options = steadfast::store::PgOptions::node(node);
                let url = s.clone();
                let r = wait(
                    py,
                    async move { steadfast::store::PgStore::connect(&url, options).await },
                    None,
                    "state",
                )?;
                let store = r.map_err(|e| errors::config(py, format!("state: {e}")))?;
                config = config.store(Arc::new(store));
            } else {
                config = config.store(durable(py, &s, StoreRole::Server)?);
            }
        }
        let r = wait(py, steadfast::Server::bind(addresses, config), None, "bind")?;
        r.map(|inner| ServerCore {
            inner,
            here,
            returned: Arc::default(),
        })
        .map_err(|e| errors::bind(py, e))
    }

    /// The addresses it listens on (`host:port`, the OS's ports for port 0).
    #[getter]
    fn addresses(&self) -> Vec<String> {
        self.inner
            .local_addrs()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// The next new session, waiting up to `timeout`.
    #[pyo3(signature = (timeout=None))]
    fn accept(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<PeerCore> {
        self.here.check(py)?;
        if let Some(p) = self.take_returned() {
            return Ok(PeerCore {
                inner: p,
                here: self.here,
            });
        }
        let server = self.inner.clone();
        match wait(py, async move { server.accept().await }, timeout, "accept")? {
            Some(p) => Ok(PeerCore {
                inner: p,
                here: self.here,
            }),
            None => Err(errors::closed(py, "server shut down")),
        }
    }

    /// Sets the process's gauges (sessions live and lingering, outbox, memory budget) from
    /// this server, for `metrics_text`.
    fn record_gauges(&self) {
        self.inner.record_gauges();
    }

    /// `accept` as an operation of an event loop.
    #[pyo3(signature = (completions, timeout=None))]
    fn accept_op(
        &self,
        completions: &Bound<'_, Completions>,
        timeout: Option<f64>,
    ) -> PyResult<Op> {
        let server = self.inner.clone();
        let here = self.here;
        here.check(completions.py())?;
        let mut accepted = Accepted {
            peer: self.take_returned(),
            returned: self.returned.clone(),
        };
        Op::start(completions, timeout, "accept", async move {
            if accepted.peer.is_none() {
                accepted.peer = server.accept().await;
            }
            outcome(move |py| match accepted.peer.take() {
                Some(p) => Ok(Py::new(py, PeerCore { inner: p, here })?.into_any()),
                None => Err(errors::closed(py, "server shut down")),
            })
        })
    }

    /// The next event, waiting up to `timeout` (`None` then): `(kind, peer, detail,
    /// unacknowledged)` with kind `connected`, `resumed`, `disconnected`, `ended` or
    /// `messages`.
    #[pyo3(signature = (timeout=None))]
    fn next_event(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        self.here.check(py)?;
        loop {
            let e = match self.inner.try_next_event() {
                Some(e) => Some(e),
                None => {
                    let server = self.inner.clone();
                    match wait(
                        py,
                        async move { server.next_event().await },
                        timeout,
                        "event",
                    ) {
                        Ok(e) => e,
                        Err(e) if e.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) => {
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let Some(e) = e else {
                return Err(errors::closed(py, "server shut down"));
            };
            let ev = server_event(py, e, self.here)?;
            if !ev.is_none(py) {
                return Ok(Some(ev));
            }
        }
    }

    /// The handles of every live or lingering session.
    fn peers(&self) -> Vec<PeerCore> {
        self.inner
            .peers()
            .into_iter()
            .map(|p| PeerCore {
                inner: p,
                here: self.here,
            })
            .collect()
    }

    /// Live connections now.
    #[getter]
    fn connections(&self) -> usize {
        self.inner.connections()
    }

    /// The server's gauges: `connections` (handshakes included), `handshakes`, `sessions`
    /// (live and lingering) and `queued_bytes` (counted against the memory budget).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, pyo3::types::PyDict>> {
        let d = pyo3::types::PyDict::new(py);
        d.set_item("connections", self.inner.connections())?;
        d.set_item("handshakes", self.inner.handshakes())?;
        d.set_item("sessions", self.inner.peers().len())?;
        d.set_item("queued_bytes", self.inner.queued_bytes())?;
        Ok(d)
    }

    /// Ends a session (CLOSE with `reason`); `False` if there is no such session.
    fn kick(&self, py: Python<'_>, id: &str, reason: &str) -> PyResult<bool> {
        self.here.check(py)?;
        let Some(p) = self
            .inner
            .peers()
            .into_iter()
            .find(|p| p.id().is_some_and(|i| crate::peer::hex(i) == id))
        else {
            return Ok(false);
        };
        let Some(sid) = p.id() else { return Ok(false) };
        Ok(self.inner.kick(sid, reason))
    }

    /// Stops listening, closes every session (waiting up to `drain` seconds for what is
    /// queued to be acknowledged) and returns what each peer never acknowledged.
    #[pyo3(signature = (drain=1.0))]
    fn shutdown(&self, py: Python<'_>, drain: f64) -> PyResult<Vec<(PeerCore, Vec<Message>)>> {
        self.here.check(py)?;
        crate::runtime::deadline(Some(drain))?;
        let d = Duration::from_secs_f64(drain);
        let server = self.inner.clone();
        let left = wait(
            py,
            async move { server.shutdown(d).await },
            None,
            "shutdown",
        )?;
        Ok(left
            .into_iter()
            .map(|(p, m)| {
                (
                    PeerCore {
                        inner: p,
                        here: self.here,
                    },
                    m.into_iter().map(Message::from).collect(),
                )
            })
            .collect())
    }
}
