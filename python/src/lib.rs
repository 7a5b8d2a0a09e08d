//! The native half of the `steadfast` Python package: the Rust implementation's sessions,
//! clients and servers as Python objects. The Python half (`steadfast/__init__.py`,
//! `steadfast/aio.py`) wraps these with the documented API; nothing here is meant to be
//! imported directly.
//!
//! Every blocking call releases the GIL while it waits; every object is safe to share
//! between Python threads.

mod bridge;
mod endpoints;
mod errors;
mod metrics;
mod peer;
mod runtime;

use pyo3::prelude::*;

/// The extension module `steadfast._steadfast`.
#[pymodule]
fn _steadfast(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<peer::Message>()?;
    m.add_class::<peer::Receipt>()?;
    m.add_class::<peer::PeerCore>()?;
    m.add_class::<endpoints::ClientCore>()?;
    m.add_class::<endpoints::ServerCore>()?;
    m.add_class::<bridge::Completions>()?;
    m.add_class::<bridge::Op>()?;
    m.add_function(wrap_pyfunction!(runtime::after_fork_in_child, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::set_wait_spin, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::enable_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(metrics::render_metrics, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
