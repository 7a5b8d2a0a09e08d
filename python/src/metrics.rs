//! Prometheus metrics of the process's servers: a recorder installed on request
//! (`enable_metrics`), its exposition text rendered on demand (`metrics_text`).

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pyo3::prelude::*;

use crate::errors;
use crate::runtime::rt;

/// How often the recorder folds the round-trip samples it buffered into its histograms (it
/// holds each sample until then).
const UPKEEP: Duration = Duration::from_secs(5);

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
    let mut builder = PrometheusBuilder::new();
    if let Some(n) = node {
        builder = builder.add_global_label("node", n);
    }
    let handle = builder
        .set_buckets_for_metric(
            Matcher::Full("steadfast_rtt_seconds".into()),
            steadfast::RTT_BUCKETS_SECONDS,
        )
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| errors::config(py, format!("metrics: {e}")))?;
    steadfast::describe_metrics();
    let upkeep = handle.clone();
    rt().spawn(async move {
        let mut every = tokio::time::interval(UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
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
