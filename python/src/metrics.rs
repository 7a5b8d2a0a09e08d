//! Prometheus metrics of the process's servers: a recorder installed on request
//! (`enable_metrics`), its exposition text rendered on demand (`metrics_text`).

use std::sync::{Mutex, OnceLock, PoisonError};

use metrics_exporter_prometheus::PrometheusHandle;
use pyo3::prelude::*;

use crate::errors;
use crate::runtime::rt;

/// The recorder, once installed (the `metrics` facade takes one per process).
static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process's Prometheus recorder: from now on every server counts into it.
/// `node` labels every series (`node="NAME"`). Calling it again does nothing.
#[pyfunction]
#[pyo3(signature = (node=None))]
pub(crate) fn enable_metrics(py: Python<'_>, node: Option<String>) -> PyResult<()> {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = {
        let _runtime = rt().enter();
        steadfast::install_prometheus(node.as_deref())
            .map_err(|e| errors::config(py, format!("metrics: {e}")))?
    };
    let _ = HANDLE.set(handle);
    Ok(())
}

/// The metrics in Prometheus's text exposition format (version 0.0.4) (the package's
/// `metrics_text` sets a server's gauges first).
#[pyfunction]
pub(crate) fn render_metrics(py: Python<'_>) -> PyResult<String> {
    match HANDLE.get() {
        Some(h) => Ok(py.detach(|| h.render())),
        None => Err(errors::config(
            py,
            "metrics are not enabled: call steadfast.enable_metrics() first".into(),
        )),
    }
}
