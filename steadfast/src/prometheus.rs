//! A Prometheus recorder for the server's metrics, set up in one call (feature `prometheus`).

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::metered::RTT_BUCKETS_SECONDS;

/// How often the recorder folds the samples it buffered into its histograms: until then it
/// holds every round-trip sample, so without this a server nobody scrapes would hold them all.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs a Prometheus recorder as the process's `metrics` recorder, with the round-trip
/// histogram's buckets ([`RTT_BUCKETS_SECONDS`]), every series labelled `node="NAME"` when
/// `node` is given, and the help texts of [`describe_metrics`](crate::describe_metrics);
/// starts a task on the current tokio runtime that folds buffered samples every 5 seconds.
/// Render the text for a scrape with [`PrometheusHandle::render`], after
/// [`Server::record_gauges`](crate::Server::record_gauges).
///
/// ```no_run
/// # #[tokio::main] async fn main() {
/// let metrics = steadfast::install_prometheus(Some("eu-1")).expect("no other recorder");
/// let server = steadfast::Server::bind(["127.0.0.1:0"], steadfast::ServerConfig::default())
///     .await
///     .expect("bind");
/// // At each scrape of /metrics:
/// server.record_gauges();
/// let body: String = metrics.render();
/// # }
/// ```
///
/// # Errors
/// [`BuildError`] when the process has a recorder already.
///
/// # Panics
/// Outside a tokio runtime (the upkeep task needs one).
pub fn install_prometheus(node: Option<&str>) -> Result<PrometheusHandle, BuildError> {
    let mut builder = PrometheusBuilder::new();
    if let Some(n) = node {
        builder = builder.add_global_label("node", n);
    }
    let handle = builder
        .set_buckets_for_metric(
            Matcher::Full("steadfast_rtt_seconds".into()),
            RTT_BUCKETS_SECONDS,
        )?
        .install_recorder()?;
    crate::describe_metrics();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
