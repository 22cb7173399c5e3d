//! Prometheus metrics of a running interface, served over HTTP on an optional address.
//!
//! The `[metrics]` section of the configuration turns it on:
//!
//! ```toml
//! [metrics]
//! listen = "127.0.0.1:9586"     # or "[::1]:9586"
//! ```
//!
//! `GET /metrics` answers in the OpenMetrics text format
//! (`application/openmetrics-text; version=1.0.0`), which Prometheus reads; any other path
//! is 404. Every value is read when the request arrives, from the device's status and
//! counters and the gating status: nothing is counted per packet for the metrics.
//!
//! Every sample carries the label `interface`. The metrics:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `meshtun_peers` | gauge | | peers configured |
//! | `meshtun_peer_receive_bytes_total` | counter | `public_key`, `node_id`¹ | datagram bytes received from the peer, as `wg show` counts transfer |
//! | `meshtun_peer_transmit_bytes_total` | counter | `public_key`, `node_id`¹ | datagram bytes sent to the peer |
//! | `meshtun_peer_last_handshake_age_seconds` | gauge | `public_key`, `node_id`¹ | since the last handshake (absent before the first) |
//! | `meshtun_peer_path` | gauge | `public_key`, `node_id`, `path` | 1 for a gated peer's path: `direct`, `trying` or `none` |
//! | `meshtun_peer_endpoint_age_seconds` | gauge | `public_key`, `node_id` | since a gated peer's endpoint last changed |
//! | `meshtun_received_packets_total`, `meshtun_received_bytes_total` | counter | | packets and bytes delivered to the host |
//! | `meshtun_sent_packets_total` | counter | | packets encrypted and sent |
//! | `meshtun_dropped_packets_total` | counter | `reason`: `invalid`, `source`, `no_route`, `no_endpoint` | packets dropped |
//! | `meshtun_cookie_replies_total` | counter | | cookie replies sent under load |
//!
//! With `[controller]` (membership gating), also:
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `meshtun_gate_info` | info | `node_id`, `controller_url`, `controller_key`, `loss_policy` | this node at the controller; the instance in use; the key that signed the last bundle accepted |
//! | `meshtun_gate_controller_failovers_total` | counter | | moves from one controller instance to another |
//! | `meshtun_gate_membership` | gauge | `state`: `pending`, `allowed`, `denied`, `lost` | 1 for the state enforced now, 0 for the others |
//! | `meshtun_gate_epoch` | gauge | | epoch of the bundle in force |
//! | `meshtun_gate_controller_contact_age_seconds` | gauge | | since the controller last answered |
//! | `meshtun_gate_bundle_remaining_seconds` | gauge | | until the bundle in force ends (negative after) |
//! | `meshtun_gate_grace_remaining_seconds` | gauge | | until the bundle in force ends plus `grace`: at 0 the loss policy applies |
//! | `meshtun_gate_psk_age_seconds` | gauge | `public_key`, `node_id` | since the gated peer's preshared key was put in use |
//! | `meshtun_gate_peers` | gauge | | gated peers configured |
//! | `meshtun_gate_benchmarks_submitted_total`, `meshtun_gate_benchmark_failures_total` | counter | | benchmarks acknowledged; runs or submissions that failed |
//! | `meshtun_gate_bundles_applied_total` | counter | | bundles applied |
//! | `meshtun_gate_cutoffs_total` | counter | | peers cut off |
//! | `meshtun_gate_membership_refused_total` | counter | | peers of accepted bundles refused for their membership signature (`[controller] membership_key`) |
//! | `meshtun_gate_decision_to_cutoff_seconds` | histogram (buckets 0.05 to 5 s) | | from the controller's decision to the cut-off |
//! | `meshtun_gate_last_decision_to_cutoff_seconds` | gauge | | the same, for the last cut-off |
//!
//! ¹ `node_id` when the bundle in force lists the peer. Counters count from the daemon's
//! start. No preshared key, private key or identity key ever appears.

mod render;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::device::{CounterTotals, Device, TunIo, UdpFactory};
use crate::gate::SharedGateStatus;
use crate::wgcfg::DeviceStatus;
use meshtun_proto::report::Chain;

/// The content type of the answer to `GET /metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long [`MetricsServer::stop`] waits for open requests.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the metrics endpoint could not be served.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("cannot listen for metrics on {addr}")]
    Bind {
        /// The `[metrics]` listen address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("the metrics server on {addr} failed")]
    Serve {
        /// The address it listened on.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The device's state at one moment, as the metrics read it.
#[derive(Debug, Clone)]
pub struct DeviceSnapshot {
    /// The interface and its peers.
    pub status: DeviceStatus,
    /// The packet counters, summed over the workers.
    pub counters: CounterTotals,
}

/// Reads the device's state at scrape time; `None` once the device is gone.
type DeviceReader = dyn Fn() -> Option<DeviceSnapshot> + Send + Sync;

/// Where the metrics come from: the device, and the gating status of a gated interface.
pub struct MetricsSource {
    device: Box<DeviceReader>,
    gate: Option<SharedGateStatus>,
}

impl MetricsSource {
    /// Metrics read from `device` at each scrape; it returns `None` once the device is gone,
    /// and the endpoint then answers 503.
    pub fn new(device: impl Fn() -> Option<DeviceSnapshot> + Send + Sync + 'static) -> Self {
        Self {
            device: Box::new(device),
            gate: None,
        }
    }

    /// Metrics of a running device. Holds only a weak reference, so that dropping the
    /// device still closes it while the endpoint runs.
    pub fn for_device<T: TunIo, F: UdpFactory>(device: &Arc<Device<T, F>>) -> Self {
        let device = Arc::downgrade(device);
        Self::new(move || {
            let device = device.upgrade()?;
            Some(DeviceSnapshot {
                status: device.status(),
                counters: device.counters(),
            })
        })
    }

    /// Adds the gating metrics, read from `gate` at each scrape.
    pub fn with_gate(mut self, gate: SharedGateStatus) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The OpenMetrics text now, or `None` if the device is gone.
    pub fn render(&self) -> Option<String> {
        let DeviceSnapshot { status, counters } = (self.device)()?;
        let gate = self.gate.as_ref().map(|gate| gate.lock().clone());
        Some(render::render(&status, counters, gate, SystemTime::now()))
    }
}

/// Binds the metrics listen address. Call it before the daemon reports ready, so that a
/// taken port stops the start.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    source: MetricsSource,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    let addr = listener
        .local_addr()
        .map_or_else(|_| "an unknown address".to_owned(), |a| a.to_string());
    let router = Router::new()
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(Arc::new(source));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| MetricsError::Serve { addr, source })
}

/// A metrics server running in its own task; dropping it stops the server.
#[derive(Debug)]
pub struct MetricsServer {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Spawns [`serve`] on `listener`; the server stops when the returned handle is dropped.
/// An error is logged.
pub fn spawn(listener: TcpListener, source: MetricsSource) -> MetricsServer {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(error) = serve(listener, source, shutdown).await {
            tracing::error!(error = %Chain(&error), "metrics endpoint stopped");
        }
    });
    MetricsServer {
        stop: Some(stop),
        task,
    }
}

impl MetricsServer {
    /// Stops the server and waits for open requests to finish, at most [`STOP_TIMEOUT`];
    /// connections still open then are dropped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(STOP_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn metrics(State(source): State<Arc<MetricsSource>>) -> Response {
    match source.render() {
        Some(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the interface is shutting down\n",
        )
            .into_response(),
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: this endpoint serves GET /metrics\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests;
