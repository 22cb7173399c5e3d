//! The gating tasks of a running daemon: benchmarks out, bundles in, and what to enforce.
//!
//! [`Gate::start`] spawns three tasks:
//! - the fetcher long-polls the controller for bundles newer than the last one it saw, and
//!   for the cut-off notice of a newer epoch served before that epoch's bundles;
//! - the scheduler runs a [`GateState`]: it takes verified bundles, keeps the newest in the
//!   cache file, and at each activation time (or when the loss rule applies) sends a
//!   [`GateUpdate`] — the membership and gated peers to enforce now — to the daemon, which
//!   owns the device and the routes;
//! - the benchmarker (with a `[benchmark]` section) runs the benchmark source every interval
//!   and submits the result.
//!
//! Every task records what it sees in the [`SharedGateStatus`]. Dropping the [`Gate`] stops
//! them.

use std::sync::Arc;
use std::time::Duration;

use meshtun_proto::{EpochId, KeySet, PrivateKey};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::benchmark::BenchmarkSource;
use super::bundle::Trust;
use super::cache::load_cache;
use super::client::{ClientError, ControllerClient};
use super::cutoff::Fetched;
use super::members::RefusedPeer;
use super::resolve::system_lookup;
use super::scheduler::Scheduler;
use super::state::GateState;
use super::status::{MembershipState, SharedGateStatus};
use super::unix_ms;
use crate::config::{BenchmarkSettings, ControllerSettings};
use crate::wgcfg::PeerSettings;
use meshtun_proto::report::{describe, Chain};

/// How long one bundle request waits at the controller (the controller answers sooner, with
/// 304, if its own long-poll limit is shorter).
pub const LONG_POLL: Duration = Duration::from_secs(25);

/// The first retry delay after a failed request; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);

/// The longest retry delay after failed requests.
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// A gated peer to configure: its node id and its WireGuard settings for the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatedPeerConfig {
    /// The peer's node id.
    pub node_id: String,
    /// Its settings, preshared key included.
    pub settings: PeerSettings,
    /// The `host:port` its endpoint was resolved from, when the host is a name (the daemon
    /// looks it up again when the peer goes silent).
    pub endpoint_name: Option<String>,
    /// For a hub: the nodes reached through it, for display.
    pub forwards_to: Vec<String>,
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
    /// When the controller decided it, in Unix milliseconds of this node's clock (the
    /// controller's time shifted by the estimated offset), so that the cut-off latency is
    /// measured on one clock; 0: unknown.
    pub decided_ms: u64,
    /// The gated peers (empty unless allowed).
    pub peers: Vec<GatedPeerConfig>,
    /// Whether this node forwards between its gated peers (a hub; never unless allowed).
    pub forward: bool,
    /// This node's relay credentials for the epoch (only when allowed).
    pub relay: Option<crate::relay::RelayCredentials>,
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
    /// The client the gating tasks talk to the controller with.
    pub fn client(&self) -> Arc<ControllerClient> {
        self.client.clone()
    }

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
        let grace_ms = u64::try_from(options.controller.grace.as_millis()).unwrap_or(u64::MAX);
        {
            let mut s = status.lock();
            s.node_id = options.controller.node_id.clone();
            s.controller_url = client.url().to_owned();
            s.loss_policy = options.controller.on_controller_loss.as_str();
            s.grace_ms = grace_ms;
        }
        let mut state = GateState::new(options.controller.on_controller_loss, grace_ms);
        restore_cache(&mut state, options, client.controller_keys(), &status);
        let (bundles, received) = mpsc::channel(4);
        let after = state.newest_epoch();
        let scheduler = Scheduler::new(
            state,
            options.controller.cache_file.clone(),
            status.clone(),
            updates,
            system_lookup(),
            Arc::new(unix_ms),
        );
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
fn restore_cache(
    state: &mut GateState,
    options: &GateOptions,
    pinned: &KeySet,
    status: &SharedGateStatus,
) {
    let settings = &options.controller;
    let trust = Trust {
        controller: pinned,
        members: settings.membership_key.as_ref(),
    };
    match load_cache(
        &settings.cache_file,
        &trust,
        &settings.node_id,
        &options.wg_private,
        unix_ms(),
    ) {
        Ok(Some(cached)) => {
            note_refused(cached.bundle.epoch, &cached.bundle.refused, status);
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
        Err(error) => {
            tracing::warn!(target: "meshtun::gate", "{}; starting without it", Chain(&error))
        }
    }
}

/// Logs each peer of epoch `epoch`'s bundle that the membership key refused, naming it and
/// why, and counts them in `status` (`meshtun_gate_membership_refused_total`).
pub(super) fn note_refused(epoch: EpochId, refused: &[RefusedPeer], status: &SharedGateStatus) {
    if refused.is_empty() {
        return;
    }
    for peer in refused {
        tracing::warn!(
            target: "meshtun::gate",
            epoch,
            "REFUSED peer={} key={}: {}; the peer is left out, the rest of the bundle applies",
            peer.node_id,
            peer.public_key,
            peer.reason
        );
    }
    status.lock().membership_refused += refused.len() as u64;
}

/// Long-polls for bundles newer than `after`, and for the cut-off notices of newer epochs
/// than the last one seen, and hands them to the scheduler.
async fn fetch_loop(
    client: Arc<ControllerClient>,
    mut after: Option<EpochId>,
    bundles: mpsc::Sender<Fetched>,
    status: SharedGateStatus,
) {
    let mut seen_cutoff: EpochId = 0;
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    loop {
        crate::supervise::fault_point("fetch");
        match client.fetch(after, seen_cutoff, LONG_POLL).await {
            Ok(answer) => {
                backoff = MIN_BACKOFF;
                if failing {
                    tracing::info!(target: "meshtun::gate", "the controller answers again");
                    failing = false;
                }
                contact(&status, &client);
                match &answer {
                    Some(Fetched::Bundle(bundle)) => after = after.max(Some(bundle.epoch)),
                    Some(Fetched::CutOff(notice)) => seen_cutoff = seen_cutoff.max(notice.epoch),
                    None => {}
                }
                if let Some(fetched) = answer {
                    if bundles.send(fetched).await.is_err() {
                        return;
                    }
                }
            }
            Err(error) => {
                record_error(&status, &client, &error);
                if client.take_retry_now() {
                    // Another instance of the controller: ask it at once.
                    continue;
                }
                if !failing {
                    tracing::warn!(target: "meshtun::gate", "{}; retrying", Chain(&error));
                    failing = true;
                } else {
                    tracing::debug!(target: "meshtun::gate", "{}; retrying", Chain(&error));
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

fn contact(status: &SharedGateStatus, client: &ControllerClient) {
    let mut s = status.lock();
    s.last_contact_ms = Some(unix_ms());
    s.last_error = None;
    client.url().clone_into(&mut s.controller_url);
}

fn record_error(status: &SharedGateStatus, client: &ControllerClient, error: &ClientError) {
    let mut s = status.lock();
    s.last_error = Some(describe(error));
    if s.controller_url != client.url() {
        s.failovers += 1;
        client.url().clone_into(&mut s.controller_url);
    }
}

/// How far ahead of this node's clock a sequence number the controller reports may be and
/// still be adopted: a clock that ran this far ahead and was stepped back is caught up at
/// once, while a forged 409 (plain http) cannot push the sequence arbitrarily far.
const MAX_SEQ_AHEAD_MS: u64 = 30 * 86_400_000;

/// Benchmark sequence numbers: the node's clock in Unix milliseconds, but always above the
/// last one used, so they only grow, across restarts too (the controller refuses replays).
#[derive(Debug, Default)]
pub(crate) struct SeqCounter {
    last: u64,
}

impl SeqCounter {
    /// The sequence number for a benchmark measured at `now_ms`.
    pub(crate) fn next(&mut self, now_ms: u64) -> u64 {
        self.last = now_ms.max(self.last.saturating_add(1));
        self.last
    }

    /// The controller holds `latest` for this node, at or above what was sent: continue
    /// above it, unless it is more than [`MAX_SEQ_AHEAD_MS`] ahead of `now_ms`. Returns
    /// whether it was adopted.
    pub(crate) fn resync(&mut self, latest: u64, now_ms: u64) -> bool {
        if latest < self.last || latest > now_ms.saturating_add(MAX_SEQ_AHEAD_MS) {
            return false;
        }
        self.last = latest;
        true
    }
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
    let mut seqs = SeqCounter::default();
    loop {
        crate::supervise::fault_point("benchmark");
        ticker.tick().await;
        let now = unix_ms();
        let seq = seqs.next(now);
        let benchmark = match source.next(seq, now).await {
            Ok(b) => b,
            Err(error) => {
                status.lock().benchmark_failures += 1;
                tracing::warn!(target: "meshtun::gate", "benchmark run failed, nothing submitted: {}", Chain(&error));
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
                tracing::warn!(target: "meshtun::gate", "benchmark not submitted: {}", Chain(&error));
                if let Some(latest) = error.latest_seq().filter(|l| seqs.resync(*l, now)) {
                    tracing::warn!(
                        target: "meshtun::gate",
                        "the controller holds benchmark seq {latest}, above this one ({seq}): \
                         this node's clock went back since; continuing from {}",
                        latest + 1
                    );
                }
                if let Some(after) = error.retry_after() {
                    tokio::time::sleep(after).await;
                }
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_follow_the_clock_but_only_grow() {
        let mut seqs = SeqCounter::default();
        assert_eq!(seqs.next(1_000), 1_000);
        assert_eq!(seqs.next(1_000), 1_001);
        assert_eq!(seqs.next(500), 1_002, "the clock went back");
        assert_eq!(seqs.next(5_000), 5_000);
    }

    #[test]
    fn a_controller_ahead_is_caught_up_but_a_forged_jump_is_bounded() {
        // The node's clock ran an hour ahead, then was stepped back and the daemon restarted:
        // the controller holds seq now + 1 h.
        let now = 1_800_000_000_000;
        let mut seqs = SeqCounter::default();
        let sent = seqs.next(now);
        assert!(seqs.resync(now + 3_600_000, now));
        assert_eq!(seqs.next(now + 10_000), now + 3_600_001);
        // A forged 409 (on plain http) naming a seq far in the future is ignored, and so is
        // one below what was already used.
        assert!(!seqs.resync(u64::MAX - 1, now));
        assert!(!seqs.resync(now + MAX_SEQ_AHEAD_MS + 1, now));
        assert!(!seqs.resync(sent, now));
        assert_eq!(seqs.next(now), now + 3_600_002);
    }

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
