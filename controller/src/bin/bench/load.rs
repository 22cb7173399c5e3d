//! Serving rate: the real controller ([`meshtun_controller::serve`]) on 127.0.0.1, driven by
//! concurrent clients for a fixed time, either fetching signed `GET /v1/config/{node}` (cached
//! bundles) or submitting signed `POST /v1/benchmarks/{node}` (each one committed to the
//! store before its 201).
//!
//! Every request carries its own signature and nonce. They are signed before the clock
//! starts (each is still well inside the replay window when sent), so the figure is the
//! controller's rate, not the clients' signing rate: clients and controller share the
//! machine's cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use meshtun_controller::api::ApiSettings;
use meshtun_controller::config::Limits;
use meshtun_controller::engine::Engine;
use meshtun_controller::store::BENCHMARK_METHOD;
use meshtun_controller::{serve, Epochs, ServeSettings};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::IdentityPublic;
use zeroize::Zeroizing;

use crate::setup::{self, SimNode};

/// What the clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /v1/config/{node}`: the node's bundle of the epoch in force.
    Bundle,
    /// `POST /v1/benchmarks/{node}`: a new passing benchmark, its seq one above the node's
    /// previous one (the setup stored seq 1). Each node is submitted for by one client only,
    /// one request at a time, so its seqs arrive in order.
    Benchmark,
}

/// How a serving run is shaped.
pub struct LoadSpec {
    /// What the clients send.
    pub request: Request,
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

/// A request ready to send: the path, its body (empty for a GET) and its four signature
/// headers.
struct Prepared {
    path: String,
    body: Vec<u8>,
    headers: reqwest::header::HeaderMap,
}

/// What client `c` sends, `per_client` requests: its share of the nodes (node `n` belongs
/// to client `n mod clients`; with more clients than nodes, clients share nodes), in turn, the
/// seq growing by one each round. Client-major: `(node index, seq)`.
fn assignments(nodes: usize, clients: usize, per_client: usize) -> Vec<(usize, u64)> {
    let mut out = Vec::with_capacity(clients * per_client);
    for c in 0..clients {
        let mine: Vec<usize> = if clients <= nodes {
            (c..nodes).step_by(clients).collect()
        } else {
            vec![c % nodes]
        };
        out.extend((0..per_client).map(|k| (mine[k % mine.len()], 2 + (k / mine.len()) as u64)));
    }
    out
}

/// Signs every client's requests (on every core), one list per client.
fn sign_all(
    controller: &IdentityPublic,
    nodes: &[&SimNode],
    spec: &LoadSpec,
    now_ms: u64,
) -> Result<Vec<Vec<Prepared>>> {
    let per_client = spec.prepared.div_ceil(spec.clients).max(1);
    let jobs = assignments(nodes.len(), spec.clients, per_client);
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let per = jobs.len().div_ceil(workers);
    let mut all = Vec::with_capacity(jobs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .chunks(per.max(1))
            .map(|part| {
                s.spawn(move || -> Result<Vec<Prepared>> {
                    part.iter()
                        .map(|&(n, seq)| {
                            prepare_one(controller, nodes[n], spec.request, seq, now_ms)
                        })
                        .collect()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(part) => all.extend(part?),
                Err(_) => bail!("a signing thread panicked"),
            }
        }
        Ok(())
    })?;
    let mut lists = Vec::with_capacity(spec.clients);
    let mut rest = all.into_iter();
    for _ in 0..spec.clients {
        lists.push(rest.by_ref().take(per_client).collect());
    }
    Ok(lists)
}

fn prepare_one(
    controller: &IdentityPublic,
    node: &SimNode,
    request: Request,
    seq: u64,
    now_ms: u64,
) -> Result<Prepared> {
    let (method, path, body) = match request {
        Request::Bundle => ("GET", format!("/v1/config/{}", node.id), Vec::new()),
        Request::Benchmark => (
            BENCHMARK_METHOD,
            format!("/v1/benchmarks/{}", node.id),
            serde_json::to_vec(&setup::passing_benchmark(seq, now_ms))?,
        ),
    };
    let sig = RequestSignature::sign(
        &node.identity,
        controller,
        &node.id,
        method,
        &path,
        &body,
        now_ms,
    );
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in sig.headers() {
        headers.insert(
            reqwest::header::HeaderName::from_static(name),
            value.parse().context("signature header value")?,
        );
    }
    Ok(Prepared {
        path,
        body,
        headers,
    })
}

/// Serves `engine` on an ephemeral port and sends `spec`'s requests for `nodes` (round
/// robin).
pub async fn run(engine: Arc<Engine>, nodes: &[&SimNode], spec: &LoadSpec) -> Result<LoadReport> {
    let held = Arc::strong_count(&engine);
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
        stun: None,
        shared: None,
        engine: engine.clone(),
        api,
        tls: None,
        status: None,
        epochs: Epochs::Manual,
    };
    // A client per node at most: each node's submissions must arrive in seq order.
    ensure!(
        spec.clients > 0 && (spec.request == Request::Bundle || spec.clients <= nodes.len()),
        "{} clients for {} nodes",
        spec.clients,
        nodes.len()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, settings, async move {
        let _ = stopped.await;
    }));
    let controller = engine.public_key();
    let lists = sign_all(&controller, nodes, spec, engine.clock().now_ms())?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(spec.clients)
        .build()?;
    let started = Instant::now();
    let deadline = started + spec.duration;
    let tasks: Vec<_> = lists
        .into_iter()
        .map(|requests| {
            let client = client.clone();
            let base = format!("http://{addr}");
            tokio::spawn(async move { drive(client, base, requests, deadline).await })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut failed, mut bytes, mut exhausted) = (0, 0, false);
    for t in tasks {
        let part = t.await.context("a client task failed")?;
        latencies.extend(part.latencies);
        failed += part.failed;
        bytes += part.bytes;
        exhausted |= part.exhausted;
    }
    let elapsed = started.elapsed();
    drop(client);
    stop_server(&engine, held, stop, server).await?;
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
        exhausted,
    })
}

/// Stops the server gracefully and waits until its tasks let go of `engine` (back to `held`
/// references, bounded): the last reference to a PostgreSQL store must not be dropped on a
/// runtime thread, where its blocking client cannot close.
async fn stop_server(
    engine: &Arc<Engine>,
    held: usize,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<Result<(), meshtun_controller::ServeError>>,
) -> Result<()> {
    let _ = stop.send(());
    server
        .await
        .context("the server task failed")?
        .context("the server failed")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Arc::strong_count(engine) > held && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(
        Arc::strong_count(engine) <= held,
        "the server still holds the engine 10 s after it stopped"
    );
    Ok(())
}

#[derive(Default)]
struct ClientResult {
    latencies: Vec<Duration>,
    failed: usize,
    bytes: u64,
    exhausted: bool,
}

async fn drive(
    client: reqwest::Client,
    base: String,
    requests: Vec<Prepared>,
    deadline: Instant,
) -> ClientResult {
    let mut out = ClientResult::default();
    let mut requests = requests.iter();
    while Instant::now() < deadline {
        let Some(req) = requests.next() else {
            out.exhausted = true;
            break;
        };
        let sent = Instant::now();
        let url = format!("{base}{}", req.path);
        let builder = if req.body.is_empty() {
            client.get(url)
        } else {
            client.post(url).body(req.body.clone())
        };
        let answer = builder.headers(req.headers.clone()).send().await;
        let body = match answer {
            Ok(resp) if resp.status().is_success() => resp.bytes().await.ok(),
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
