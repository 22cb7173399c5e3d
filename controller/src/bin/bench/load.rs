//! Serving rate: the real controller ([`meshtun_controller::serve`]) on 127.0.0.1, driven by concurrent clients that fetch
//! signed `GET /v1/config/{node}` for a fixed time.
//!
//! Every request carries its own signature and nonce. They are signed before the clock
//! starts (each is still well inside the replay window when sent), so the figure is the
//! controller's rate, not the clients' signing rate: clients and controller share the
//! machine's cores.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshtun_controller::api::ApiSettings;
use meshtun_controller::config::Limits;
use meshtun_controller::engine::Engine;
use meshtun_controller::{serve, Epochs, ServeSettings};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::IdentityPublic;
use zeroize::Zeroizing;

use crate::setup::SimNode;

/// How a serving run is shaped.
pub struct LoadSpec {
    /// Concurrent clients (one keep-alive connection each).
    pub clients: usize,
    /// How long to drive requests.
    pub duration: Duration,
    /// Signed requests prepared ahead (the run stops early if they run out).
    pub prepared: usize,
}

/// What a serving run measured.
pub struct LoadReport {
    /// Successful requests.
    pub ok: usize,
    /// Requests that failed or were refused.
    pub failed: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Response bytes received.
    pub bytes: u64,
    /// Latency percentiles (50, 90, 99, max).
    pub latency: [Duration; 4],
    /// True if the prepared requests ran out before the time was up.
    pub exhausted: bool,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// A request ready to send: the path and its four signature headers.
struct Prepared {
    path: String,
    headers: reqwest::header::HeaderMap,
}

fn sign_all(
    controller: &IdentityPublic,
    nodes: &[&SimNode],
    count: usize,
    now_ms: u64,
) -> Result<Vec<Prepared>> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let per = count.div_ceil(workers);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                s.spawn(move || -> Result<Vec<Prepared>> {
                    (w * per..((w + 1) * per).min(count))
                        .map(|i| prepare_one(controller, nodes[i % nodes.len()], now_ms))
                        .collect()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(count);
        for h in handles {
            match h.join() {
                Ok(part) => all.extend(part?),
                Err(_) => bail!("a signing thread panicked"),
            }
        }
        Ok(all)
    })
}

fn prepare_one(controller: &IdentityPublic, node: &SimNode, now_ms: u64) -> Result<Prepared> {
    let path = format!("/v1/config/{}", node.id);
    let sig = RequestSignature::sign(
        &node.identity,
        controller,
        &node.id,
        "GET",
        &path,
        b"",
        now_ms,
    );
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in sig.headers() {
        headers.insert(
            reqwest::header::HeaderName::from_static(name),
            value.parse().context("signature header value")?,
        );
    }
    Ok(Prepared { path, headers })
}

/// Serves `engine` on an ephemeral port and fetches bundles of `nodes` (round robin).
pub async fn run(engine: Arc<Engine>, nodes: &[&SimNode], spec: &LoadSpec) -> Result<LoadReport> {
    // The serving rate is measured, not each node's quota: every node may send at the
    // bench's pace.
    let limits = Limits {
        node_rate: 1_000,
        node_burst: 10_000,
        ..Limits::default()
    };
    let api = ApiSettings {
        admin_token: Zeroizing::new("bench-admin-token".to_owned()),
        read_token: None,
        clock_skew: Duration::from_secs(60),
        long_poll: Duration::from_secs(1),
        limits,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // The epochs are rotated by the bench itself: no engine task.
    let settings = ServeSettings {
        shared: None,
        engine: engine.clone(),
        api,
        tls: None,
        status: None,
        epochs: Epochs::Manual,
    };
    let server = tokio::spawn(serve(listener, settings, std::future::pending()));
    let controller = engine.public_key();
    let requests = Arc::new(sign_all(
        &controller,
        nodes,
        spec.prepared,
        engine.clock().now_ms(),
    )?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(spec.clients)
        .build()?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + spec.duration;
    let tasks: Vec<_> = (0..spec.clients)
        .map(|_| {
            let (client, requests, next) = (client.clone(), requests.clone(), next.clone());
            let base = format!("http://{addr}");
            tokio::spawn(async move { drive(client, base, requests, next, deadline).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut failed, mut bytes) = (0, 0);
    for t in tasks {
        let part = t.await.context("a client task failed")?;
        latencies.extend(part.latencies);
        failed += part.failed;
        bytes += part.bytes;
    }
    let elapsed = started.elapsed();
    server.abort();
    latencies.sort_unstable();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).copied().unwrap_or_default()
    };
    Ok(LoadReport {
        ok: latencies.len(),
        failed,
        elapsed,
        bytes,
        latency: [pick(0.50), pick(0.90), pick(0.99), pick(1.0)],
        exhausted: next.load(Ordering::Relaxed) >= requests.len(),
    })
}

#[derive(Default)]
struct ClientResult {
    latencies: Vec<Duration>,
    failed: usize,
    bytes: u64,
}

async fn drive(
    client: reqwest::Client,
    base: String,
    requests: Arc<Vec<Prepared>>,
    next: Arc<AtomicUsize>,
    deadline: Instant,
) -> ClientResult {
    let mut out = ClientResult::default();
    while Instant::now() < deadline {
        let Some(req) = requests.get(next.fetch_add(1, Ordering::Relaxed)) else {
            break;
        };
        let sent = Instant::now();
        let answer = client
            .get(format!("{base}{}", req.path))
            .headers(req.headers.clone())
            .send()
            .await;
        let body = match answer {
            Ok(resp) if resp.status() == reqwest::StatusCode::OK => resp.bytes().await.ok(),
            Ok(resp) => {
                if out.failed == 0 {
                    eprintln!("request {} answered {}", req.path, resp.status());
                }
                None
            }
            Err(error) => {
                if out.failed == 0 {
                    eprintln!("request {} failed: {error}", req.path);
                }
                None
            }
        };
        match body {
            Some(b) if !b.is_empty() => {
                out.latencies.push(sent.elapsed());
                out.bytes += b.len() as u64;
            }
            _ => out.failed += 1,
        }
    }
    out
}
