//! `serve --metrics ADDR`: Prometheus text at `/metrics` and the session list as JSON at
//! `/sessions`, over plain HTTP/1.1 on the given address (127.0.0.1 keeps it on the machine).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use steadfast::Server;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Scrapers served at once; more wait for a slot.
const MAX_CLIENTS: usize = 16;

/// Installs the Prometheus recorder and serves `/metrics` and `/sessions` on `addr`: the
/// address it listens on.
/// `node`: a label `node="NAME"` on every series (`serve --node`).
pub(crate) async fn start(
    addr: &str,
    server: Server,
    node: Option<&str>,
) -> Result<SocketAddr, String> {
    let handle = steadfast::install_prometheus(node).map_err(|e| format!("--metrics: {e}"))?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--metrics {addr}: cannot listen: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("--metrics {addr}: {e}"))?;
    let state = Arc::new((server, handle));
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move {
                        if req.method() == Method::GET && req.uri().path() == "/fleet/sessions" {
                            return Ok::<_, Infallible>(fleet_sessions(&state.0).await);
                        }
                        Ok::<_, Infallible>(answer(&req, &state.0, &state.1))
                    }
                });
                // A scraper that sends its request slowly, or never, is dropped.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
                drop(slot);
            });
        }
    });
    Ok(local)
}

fn answer(
    req: &Request<Incoming>,
    server: &Server,
    handle: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = kind.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    if req.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            server.record_gauges();
            reply(StatusCode::OK, "text/plain; version=0.0.4", handle.render())
        }
        "/sessions" => reply(StatusCode::OK, "application/json", sessions(server)),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "/metrics, /sessions or /fleet/sessions\n".into(),
        ),
    }
}

/// Every session of the fleet (a shared store; else this server's), whichever server holds
/// it, as a JSON array: id, name, node, state, unacknowledged.
async fn fleet_sessions(server: &Server) -> Response<Full<Bytes>> {
    let (status, body) = match server.fleet_sessions().await {
        Ok(list) => {
            let list: Vec<serde_json::Value> = list
                .into_iter()
                .map(|s| {
                    serde_json::json!({
                        "id": s.id.to_string(),
                        "name": s.name,
                        "node": s.node,
                        "state": if s.lingering { "lingering" } else { "live" },
                        "unacknowledged": s.unacknowledged,
                    })
                })
                .collect();
            let mut text = serde_json::Value::Array(list).to_string();
            text.push('\n');
            (StatusCode::OK, text)
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{{\"error\":{}}}\n",
                serde_json::Value::String(e.to_string())
            ),
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = "application/json".parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Every session as a JSON object, in one array.
fn sessions(server: &Server) -> String {
    let list: Vec<serde_json::Value> = server
        .peers()
        .into_iter()
        .filter(|p| !p.is_ended())
        .map(|p| {
            let s = p.stats();
            serde_json::json!({
                "id": p.id().map(|i| i.to_string()),
                "name": p.name(),
                "addr": p.addr().map(|a| a.to_string()),
                "state": if p.is_connected() { "live" } else { "lingering" },
                "connected_secs": p.connected_for().map(|d| d.as_secs_f64()),
                "lingering_secs": p.lingering_for().map(|d| d.as_secs_f64()),
                "connections": s.connections,
                "outbox": s.in_flight,
                "inbox": s.waiting,
                "queued": s.queued,
                "acknowledged": s.acknowledged,
                "received": s.received,
                "retransmitted": s.retransmitted,
                "rtt_secs": s.rtt.map(|d| d.as_secs_f64()),
            })
        })
        .collect();
    let mut text = serde_json::Value::Array(list).to_string();
    text.push('\n');
    text
}
