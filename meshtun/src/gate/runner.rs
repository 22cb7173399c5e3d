//! The gating tasks of a running daemon: benchmarks out, bundles in, and what to enforce.
//!
//! [`Gate::start`] spawns three tasks:
//! - the fetcher long-polls the controller for bundles newer than the last one it saw;
//! - the scheduler runs a [`GateState`]: it takes verified bundles, keeps the newest in the
//!   cache file, and at each activation time (or when the loss rule applies) sends a
//!   [`GateUpdate`] — the membership and gated peers to enforce now — to the daemon, which
//!   owns the device and the routes;
//! - the benchmarker (with a `[benchmark]` section) runs the benchmark source every interval
//!   and submits the result.
//!
//! Every task records what it sees in the [`SharedGateStatus`]. Dropping the [`Gate`] stops
//! them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshtun_proto::bundle::{Membership, SignedBundle};
use meshtun_proto::{EpochId, IdentityPublic, PrivateKey};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::benchmark::BenchmarkSource;
use super::bundle::{GatedPeer, VerifiedBundle};
use super::cache::{load_cache, save_cache};
use super::client::{ClientError, ControllerClient};
use super::state::{Enforced, GateState};
use super::status::{MembershipState, SharedGateStatus};
use super::unix_ms;
use crate::config::{BenchmarkSettings, ControllerSettings};
use crate::wgcfg::PeerSettings;

/// How long one bundle request waits at the controller (the controller answers sooner, with
/// 304, if its own long-poll limit is shorter).
pub const LONG_POLL: Duration = Duration::from_secs(25);

/// The first retry delay after a failed request; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);

/// The longest retry delay after failed requests.
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// How long a peer's host name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A gated peer to configure: its node id and its WireGuard settings for the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatedPeerConfig {
    /// The peer's node id.
    pub node_id: String,
    /// Its settings, preshared key included.
    pub settings: PeerSettings,
}

/// What the daemon must enforce from now on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateUpdate {
    /// This node's membership.
    pub membership: MembershipState,
    /// The epoch of the bundle behind it (the last one, when lost).
    pub epoch: Option<EpochId>,
    /// That bundle's activation, Unix milliseconds.
    pub activation_ms: Option<u64>,
    /// That bundle's end, Unix milliseconds.
    pub not_after_ms: Option<u64>,
    /// When the controller decided it, Unix milliseconds (0: unknown).
    pub decided_ms: u64,
    /// The gated peers (empty unless allowed).
    pub peers: Vec<GatedPeerConfig>,
}

/// What the gating tasks need.
#[derive(Debug, Clone)]
pub struct GateOptions {
    /// The `[controller]` section.
    pub controller: ControllerSettings,
    /// The `[benchmark]` section, if any.
    pub benchmark: Option<BenchmarkSettings>,
    /// The interface's private key (to open the sealed preshared keys of cached bundles).
    pub wg_private: PrivateKey,
}

/// The running gating tasks of one interface.
pub struct Gate {
    scheduler: JoinHandle<()>,
    fetcher: JoinHandle<()>,
    benchmarker: Option<JoinHandle<()>>,
    client: Arc<ControllerClient>,
    status: SharedGateStatus,
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.scheduler.abort();
        self.fetcher.abort();
        if let Some(task) = &self.benchmarker {
            task.abort();
        }
    }
}

impl Gate {
    /// Starts the gating tasks with `client`; updates go to `updates`. The cached bundle, if
    /// any, is read first (blocking, briefly) so that a restarted node rejoins at once.
    pub fn start(
        options: &GateOptions,
        client: ControllerClient,
        source: Option<BenchmarkSource>,
        status: SharedGateStatus,
        updates: mpsc::Sender<GateUpdate>,
    ) -> Self {
        let client = Arc::new(client);
        {
            let mut s = status.lock();
            s.node_id = options.controller.node_id.clone();
            s.controller_url = options.controller.url.clone();
            s.loss_policy = options.controller.on_controller_loss.as_str();
        }
        let mut state = GateState::new(
            options.controller.on_controller_loss,
            u64::try_from(options.controller.grace.as_millis()).unwrap_or(u64::MAX),
        );
        restore_cache(&mut state, options, client.controller_key());
        let (bundles, received) = mpsc::channel(4);
        let scheduler = Scheduler {
            state,
            cache_file: options.controller.cache_file.clone(),
            status: status.clone(),
            updates,
            resolved: HashMap::new(),
            unsaved: None,
        };
        let after = scheduler.state.newest_epoch();
        let scheduler = tokio::spawn(scheduler.run(received));
        let fetcher = tokio::spawn(fetch_loop(client.clone(), after, bundles, status.clone()));
        let mut gate = Self {
            scheduler,
            fetcher,
            benchmarker: None,
            client,
            status,
        };
        if let (Some(source), Some(settings)) = (source, &options.benchmark) {
            gate.restart_benchmarks(source, settings.interval);
        }
        gate
    }

    /// Replaces the benchmark source (after a reload), or starts one.
    pub fn restart_benchmarks(&mut self, source: BenchmarkSource, interval: Duration) {
        if let Some(task) = self.benchmarker.take() {
            task.abort();
        }
        self.benchmarker = Some(tokio::spawn(benchmark_loop(
            self.client.clone(),
            source,
            interval,
            self.status.clone(),
        )));
    }

    /// Stops submitting benchmarks (the `[benchmark]` section was removed).
    pub fn stop_benchmarks(&mut self) {
        if let Some(task) = self.benchmarker.take() {
            task.abort();
        }
    }
}

/// Puts the cached bundle, if there is a valid one, in the state.
fn restore_cache(state: &mut GateState, options: &GateOptions, controller: &IdentityPublic) {
    let settings = &options.controller;
    match load_cache(
        &settings.cache_file,
        controller,
        &settings.node_id,
        &options.wg_private,
        unix_ms(),
    ) {
        Ok(Some(cached)) => {
            tracing::info!(
                target: "meshtun::gate",
                "using the cached bundle for epoch {} from {}{}",
                cached.bundle.epoch,
                settings.cache_file.display(),
                if cached.expired { " (expired: the grace rule applies)" } else { "" }
            );
            state.restore(cached.bundle);
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(target: "meshtun::gate", "{error}; starting without it"),
    }
}

/// Long-polls for bundles newer than `after` and hands them to the scheduler.
async fn fetch_loop(
    client: Arc<ControllerClient>,
    mut after: Option<EpochId>,
    bundles: mpsc::Sender<VerifiedBundle>,
    status: SharedGateStatus,
) {
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        match client.fetch_bundle(after, LONG_POLL).await {
            Ok(answer) => {
                backoff = MIN_BACKOFF;
                if failing {
                    tracing::info!(target: "meshtun::gate", "the controller answers again");
                    failing = false;
                }
                contact(&status);
                if let Some(bundle) = answer {
                    after = after.max(Some(bundle.epoch));
                    if bundles.send(bundle).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                record_error(&status, &error);
                if !failing {
                    tracing::warn!(target: "meshtun::gate", "{error}; retrying");
                    failing = true;
                } else {
                    tracing::debug!(target: "meshtun::gate", "{error}; retrying");
                }
                // A 429 says how long to wait: never come back sooner.
                tokio::time::sleep(retry_delay(&error, backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// How long to wait after `error`: the backoff, or the controller's `Retry-After` if longer.
fn retry_delay(error: &ClientError, backoff: Duration) -> Duration {
    error
        .retry_after()
        .map_or(backoff, |after| after.max(backoff))
}

fn contact(status: &SharedGateStatus) {
    let mut s = status.lock();
    s.last_contact_ms = Some(unix_ms());
    s.last_error = None;
}

fn record_error(status: &SharedGateStatus, error: &ClientError) {
    status.lock().last_error = Some(error.to_string());
}

/// Runs the benchmark source every `interval` and submits what it measures.
async fn benchmark_loop(
    client: Arc<ControllerClient>,
    mut source: BenchmarkSource,
    interval: Duration,
    status: SharedGateStatus,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_seq = 0u64;
    loop {
        ticker.tick().await;
        let now = unix_ms();
        // Sequence numbers only grow, across restarts too: the controller refuses replays.
        let seq = now.max(last_seq + 1);
        last_seq = seq;
        let benchmark = match source.next(seq, now).await {
            Ok(b) => b,
            Err(error) => {
                status.lock().benchmark_failures += 1;
                tracing::warn!(target: "meshtun::gate", "benchmark run failed, nothing submitted: {error}");
                continue;
            }
        };
        match client.submit_benchmark(&benchmark).await {
            Ok(()) => {
                let mut s = status.lock();
                s.benchmarks_submitted += 1;
                s.last_benchmark_ms = Some(unix_ms());
                s.last_contact_ms = s.last_benchmark_ms;
                drop(s);
                tracing::debug!(
                    target: "meshtun::gate",
                    seq,
                    overall = benchmark.scores.overall,
                    "benchmark submitted"
                );
            }
            Err(error) => {
                status.lock().benchmark_failures += 1;
                tracing::warn!(target: "meshtun::gate", "benchmark not submitted: {error}");
                if let Some(after) = error.retry_after() {
                    tokio::time::sleep(after).await;
                }
            }
        }
    }
}

/// Turns bundles and time into [`GateUpdate`]s.
struct Scheduler {
    state: GateState,
    cache_file: PathBuf,
    status: SharedGateStatus,
    updates: mpsc::Sender<GateUpdate>,
    /// Peer endpoints resolved when their bundle arrived, by their text.
    resolved: HashMap<String, SocketAddr>,
    /// The last bundle accepted, to write to the cache once what is due is enforced.
    unsaved: Option<SignedBundle>,
}

impl Scheduler {
    async fn run(mut self, mut received: mpsc::Receiver<VerifiedBundle>) {
        self.resolve_endpoints_of_known().await;
        loop {
            if self.state.advance(unix_ms()) && !self.send_update().await {
                return;
            }
            // After the update: a cut-off does not wait for the disk.
            if let Some(signed) = self.unsaved.take() {
                self.save(signed).await;
            }
            let deadline = self.state.next_deadline();
            tokio::select! {
                bundle = received.recv() => match bundle {
                    Some(bundle) => self.accept(bundle).await,
                    None => return,
                },
                () = sleep_until_unix(deadline) => {}
            }
        }
    }

    /// Takes a verified bundle from the fetcher.
    async fn accept(&mut self, bundle: VerifiedBundle) {
        let epoch = bundle.epoch;
        let signed = bundle.signed.clone();
        let endpoints: Vec<String> = bundle
            .peers
            .iter()
            .filter_map(|p| p.endpoint.clone())
            .collect();
        match self.state.offer(bundle, unix_ms()) {
            Ok(()) => {}
            Err(error) => {
                tracing::debug!(target: "meshtun::gate", "bundle ignored: {error}");
                return;
            }
        }
        self.status.lock().next_epoch = self.state.next_epoch();
        self.resolve(&endpoints).await;
        self.unsaved = Some(signed);
        tracing::debug!(target: "meshtun::gate", epoch, "bundle accepted");
    }

    /// Writes `signed` to the cache file (a failure is logged: the bundle is still used).
    async fn save(&self, signed: SignedBundle) {
        let file = self.cache_file.clone();
        let saved = tokio::task::spawn_blocking(move || save_cache(&file, &signed)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(target: "meshtun::gate", "{error}"),
            Err(error) => {
                tracing::warn!(target: "meshtun::gate", "bundle cache writer stopped: {error}")
            }
        }
    }

    /// Resolves the endpoints of the bundles known at start (the cached one).
    async fn resolve_endpoints_of_known(&mut self) {
        let endpoints: Vec<String> = self
            .state
            .bundles()
            .flat_map(|b| b.peers.iter().filter_map(|p| p.endpoint.clone()))
            .collect();
        self.resolve(&endpoints).await;
    }

    /// Resolves host names ahead of the activation time, so that applying is instant.
    async fn resolve(&mut self, endpoints: &[String]) {
        for text in endpoints {
            if text.parse::<SocketAddr>().is_ok() || self.resolved.contains_key(text) {
                continue;
            }
            let lookup =
                tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(text.as_str()));
            match lookup.await {
                Ok(Ok(mut addrs)) => {
                    if let Some(addr) = addrs.next() {
                        self.resolved.insert(text.clone(), addr);
                    }
                }
                Ok(Err(error)) => {
                    tracing::warn!(target: "meshtun::gate", "cannot resolve peer endpoint `{text}`: {error}")
                }
                Err(_) => {
                    tracing::warn!(target: "meshtun::gate", "cannot resolve peer endpoint `{text}` within {} s", RESOLVE_TIMEOUT.as_secs())
                }
            }
        }
    }

    fn endpoint(&self, peer: &GatedPeer) -> Option<SocketAddr> {
        let text = peer.endpoint.as_deref()?;
        text.parse()
            .ok()
            .or_else(|| self.resolved.get(text).copied())
    }

    /// Sends what is enforced now; false if the daemon is gone.
    async fn send_update(&mut self) -> bool {
        let update = self.update();
        self.status.lock().next_epoch = self.state.next_epoch();
        self.updates.send(update).await.is_ok()
    }

    fn update(&self) -> GateUpdate {
        let (membership, bundle) = match self.state.enforced() {
            Enforced::Nothing => (MembershipState::Pending, None),
            Enforced::Lost(b) => (MembershipState::Lost, Some(b)),
            Enforced::Bundle(b) => match &b.membership {
                Membership::Allowed => (MembershipState::Allowed, Some(b)),
                Membership::Denied { reason } => (
                    MembershipState::Denied {
                        reason: reason.clone(),
                    },
                    Some(b),
                ),
            },
        };
        let peers = match (&membership, bundle) {
            (MembershipState::Allowed, Some(b)) => b
                .peers
                .iter()
                .map(|p| GatedPeerConfig {
                    node_id: p.node_id.clone(),
                    settings: PeerSettings {
                        public_key: p.public_key,
                        preshared_key: Some(p.psk.clone()),
                        endpoint: self.endpoint(p),
                        allowed_ips: p.allowed_ips.clone(),
                        persistent_keepalive: None,
                    },
                })
                .collect(),
            _ => Vec::new(),
        };
        GateUpdate {
            membership,
            epoch: bundle.map(|b| b.epoch),
            activation_ms: bundle.map(|b| b.activation_ms),
            not_after_ms: bundle.map(|b| b.not_after_ms),
            decided_ms: bundle.map_or(0, |b| b.decided_ms),
            peers,
        }
    }
}

/// Sleeps until Unix time `deadline_ms`, or forever without one.
async fn sleep_until_unix(deadline_ms: Option<u64>) {
    match deadline_ms {
        Some(deadline) => {
            let wait = deadline.saturating_sub(unix_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_is_waited_out_and_other_errors_back_off_15() {
        let throttled = ClientError::Throttled {
            what: "fetching the bundle",
            retry_after: Duration::from_secs(7),
            reason: "over quota".into(),
        };
        assert_eq!(retry_delay(&throttled, MIN_BACKOFF), Duration::from_secs(7));
        assert_eq!(
            retry_delay(&throttled, Duration::from_secs(9)),
            Duration::from_secs(9)
        );
        let failed = ClientError::Server {
            what: "fetching the bundle",
            status: 503,
            reason: "busy".into(),
        };
        assert_eq!(retry_delay(&failed, MIN_BACKOFF), MIN_BACKOFF);
    }
}
