//! The controller's live state: enrolled nodes, recent epochs with their decisions, and the
//! bundles built from them. Every change is committed to the [`Store`] first, then applied
//! in memory, then announced to long-polling nodes. The engine owns that order: callers
//! write through its methods ([`Engine::submit_benchmark`], [`Engine::enroll`],
//! [`Engine::remove_node`], [`Engine::rotate_now`]), never to the store directly, and
//! publications are serialised (one at a time, ids ascending in the store and in memory).
//!
//! Epochs follow the [`Schedule`]: the next one is decided and published `lead` before it
//! activates, so that nodes switch together. With `rotate_on_deny`, an allowed node whose
//! benchmark fails triggers an immediate epoch that leaves it out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use meshtun_proto::enroll::{EnrollResponse, SignedEnrollReply};
use meshtun_proto::membership::MembershipPublic;
use meshtun_proto::wire::{EpochInfo, EpochTimes};
use meshtun_proto::{EpochId, EpochSecret, IdentityPublic, KeySet, PrivateKey};
use parking_lot::RwLock;
use tokio::sync::watch;

use crate::bundles::BundleCache;
use crate::clock::Clock;
use crate::ha::{Leadership, Publish};
use crate::keys::ControllerKeys;
use crate::membership::{decide, newly_failing};
use crate::metrics::Metrics;
use crate::model::{Decision, EpochRecord, NodeInput, NodeRecord, Policy, Statement};
use crate::network::Network;
use crate::schedule::{in_force, next_epoch_id, Action, Schedule, Window};
use crate::store::{Candidates, Retention, Store, StoreError};
use meshtun_proto::report::Chain;

mod bundling;
pub mod cutoff;
mod follow;
mod statements;
mod writes;

/// Epochs kept in memory (current, published next, and recent ones for late fetchers).
const KEEP_EPOCHS: usize = crate::store::LIVE_EPOCHS;

/// The least time between two prunings of the database, however often epochs come.
const PRUNE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Shortest time between two membership checks prompted by benchmarks: a flood of
/// benchmarks costs at most this many checks, and a failing node is still cut off within it.
pub const DENY_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// Shortest time between two warnings that a node holds an epoch above the newest one
/// published (every such request is counted in the metrics).
pub const AHEAD_WARN_INTERVAL: Duration = Duration::from_secs(10);

/// One epoch with its decisions.
#[derive(Debug)]
pub struct EpochView {
    /// The epoch.
    pub record: EpochRecord,
    /// Decision per node.
    pub decisions: BTreeMap<String, Decision>,
    /// Its signed cut-off notice (JSON), when it denies nodes allowed before
    /// ([`cutoff`](mod@cutoff)).
    pub cutoff: Option<crate::bundles::BundleJson>,
}

impl EpochView {
    fn times(&self) -> EpochTimes {
        EpochTimes {
            epoch: self.record.id,
            activation_ms: self.record.activation_ms,
            not_after_ms: self.record.not_after_ms,
        }
    }

    fn allowed(&self) -> BTreeSet<&str> {
        self.decisions
            .values()
            .filter(|d| d.allowed)
            .map(|d| d.node_id.as_str())
            .collect()
    }
}

#[derive(Default)]
struct State {
    nodes: BTreeMap<String, NodeRecord>,
    /// Each node's latest candidate report (shared with bundle builders without a copy).
    candidates: Arc<HashMap<String, Candidates>>,
    /// Ascending by id.
    epochs: Vec<Arc<EpochView>>,
}

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The membership policy.
    pub policy: Policy,
    /// Epoch timing.
    pub schedule: Schedule,
    /// Rotate at once when an allowed node fails.
    pub rotate_on_deny: bool,
    /// The TURN relays whose credentials allowed nodes get (`[relay]`).
    pub relay: Option<crate::relay::RelayIssuer>,
}

/// The controller's live state.
pub struct Engine {
    store: Arc<Store>,
    keys: ControllerKeys,
    settings: EngineSettings,
    clock: Clock,
    state: RwLock<State>,
    /// The newest epoch decided and committed.
    decided: watch::Sender<EpochId>,
    /// The newest epoch announced to long-polling nodes: once its bundles are prebuilt when
    /// [`Engine::run`] is prebuilding, at once otherwise.
    published: watch::Sender<EpochId>,
    /// True while [`Engine::run`]'s prebuilder is running.
    prebuilding: AtomicBool,
    cache: BundleCache,
    /// Raised when a benchmark is stored, so that [`Engine::check_on_benchmarks`] runs.
    benchmarks: tokio::sync::Notify,
    /// Whether a round of [`Engine::run`] is running on a blocking thread.
    in_round: std::sync::atomic::AtomicBool,
    /// Counters and gauges for `/metrics`.
    pub metrics: Metrics,
    /// The overlay's address plan enrollments follow.
    network: Network,
    /// The operator's membership key enrollments must be signed with, if configured.
    membership_key: Option<MembershipPublic>,
    /// How long the database keeps history.
    retention: Retention,
    /// Paces the warnings of [`Engine::check_after`].
    ahead_warnings: DefaultDirectRateLimiter,
    /// Held while deciding whether to publish and publishing: one publication at a time,
    /// whichever of the schedule, an admin rotation or a deny check asks.
    publishing: parking_lot::Mutex<()>,
    /// Whether this instance decides and publishes, or follows the leader's epochs.
    leadership: Leadership,
    /// The lease term whose predecessors' epochs were loaded (0: none yet).
    loaded_term: std::sync::atomic::AtomicU64,
}

impl Engine {
    /// Loads nodes and recent epochs from `store` (resuming the epoch in force).
    pub fn open(
        store: Arc<Store>,
        keys: impl Into<ControllerKeys>,
        settings: EngineSettings,
        clock: Clock,
    ) -> Result<Self, StoreError> {
        let mut epochs = Vec::new();
        for record in store.latest_epochs(KEEP_EPOCHS)?.into_iter().rev() {
            let decisions = store
                .decisions(record.id)?
                .into_iter()
                .map(|d| (d.node_id.clone(), d))
                .collect();
            epochs.push(Arc::new(EpochView {
                record,
                decisions,
                cutoff: None,
            }));
        }
        let last = epochs.last().map_or(0, |e| e.record.id);
        let nodes = store
            .nodes()?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        let candidates = Arc::new(store.candidates()?);
        let newest_end = epochs.last().map(|e| e.record.not_after_ms);
        let (published, _) = watch::channel(last);
        let (decided, _) = watch::channel(last);
        let engine = Self {
            store,
            settings,
            clock,
            state: RwLock::new(State {
                nodes,
                epochs,
                candidates,
            }),
            decided,
            published,
            prebuilding: AtomicBool::new(false),
            cache: BundleCache::default(),
            benchmarks: tokio::sync::Notify::new(),
            in_round: std::sync::atomic::AtomicBool::new(false),
            metrics: Metrics::default(),
            network: Network::default(),
            membership_key: None,
            keys: keys.into(),
            retention: Retention::default(),
            ahead_warnings: RateLimiter::direct(
                Quota::with_period(AHEAD_WARN_INTERVAL)
                    .unwrap_or_else(|| Quota::per_second(std::num::NonZeroU32::MIN)),
            ),
            publishing: parking_lot::Mutex::new(()),
            leadership: Leadership::sole(),
            loaded_term: std::sync::atomic::AtomicU64::new(0),
        };
        if let Some(end) = newest_end {
            engine.metrics.newest_epoch(last, end);
        }
        Ok(engine)
    }

    /// The engine deciding and publishing only while `leadership` says it leads, and
    /// loading the epochs the leader publishes otherwise (the default is
    /// [`Leadership::sole`]: always).
    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Whether this instance leads.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// The engine keeping `retention` worth of history (the default is
    /// [`Retention::default`]).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// The engine with `network` as its address plan (the default is
    /// [`Network::default`]).
    pub fn with_network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// The overlay's address plan.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The engine with `key` as the membership key every enrollment with an invite must be
    /// signed with (`[membership] public_key`; none by default).
    pub fn with_membership_key(mut self, key: Option<MembershipPublic>) -> Self {
        self.membership_key = key;
        self
    }

    /// The membership key enrollments must be signed with, if configured.
    pub fn membership_key(&self) -> Option<&MembershipPublic> {
        self.membership_key.as_ref()
    }

    /// The X25519 key tickets name for the proof of WireGuard key possession.
    pub fn enrollment_key(&self) -> &PrivateKey {
        self.keys.enrollment_key()
    }

    /// Signs an enrollment reply with the controller key.
    pub fn sign_enrollment(&self, reply: &EnrollResponse) -> SignedEnrollReply {
        SignedEnrollReply::sign(reply, self.keys.signing())
    }

    /// The clock the engine runs on.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The controller's public key, which nodes pin.
    pub fn public_key(&self) -> IdentityPublic {
        self.keys.public()
    }

    /// The controller keys a node's request may name (see [`ControllerKeys`]).
    pub fn answers_to(&self) -> &KeySet {
        self.keys.answers_to()
    }

    /// The durable store, for reads (and invites, which no in-memory state follows). Writes
    /// that change nodes, benchmarks or epochs go through the engine's methods, which keep
    /// memory in step with the store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Rereads the enrolled nodes (after an enrollment, removal or pin).
    pub fn refresh_nodes(&self) -> Result<(), StoreError> {
        let nodes = self
            .store
            .nodes()?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        let candidates = Arc::new(self.store.candidates()?);
        let mut state = self.state.write();
        state.nodes = nodes;
        state.candidates = candidates;
        Ok(())
    }

    /// Records node `id`'s candidate report, durably, for the bundles of epochs built from
    /// now on. Blocking.
    pub fn report_candidates(&self, id: &str, report: Candidates) -> Result<(), StoreError> {
        self.store.set_candidates(id, &report)?;
        let mut state = self.state.write();
        Arc::make_mut(&mut state.candidates).insert(id.to_owned(), report);
        Ok(())
    }

    /// The identity key of an enrolled node.
    pub fn node_identity(&self, id: &str) -> Option<IdentityPublic> {
        self.state.read().nodes.get(id).map(|n| n.identity_key)
    }

    /// True if `id` is enrolled.
    pub fn has_node(&self, id: &str) -> bool {
        self.state.read().nodes.contains_key(id)
    }

    fn epochs(&self) -> Vec<Arc<EpochView>> {
        self.state.read().epochs.clone()
    }

    /// The newest epoch this instance holds (published here, or loaded from the leader).
    pub fn newest_epoch_id(&self) -> Option<EpochId> {
        self.state.read().epochs.last().map(|e| e.record.id)
    }

    /// The epoch in force now: the highest id whose window contains now.
    pub fn current(&self) -> Option<Arc<EpochView>> {
        let now = self.clock.now_ms();
        self.epochs()
            .into_iter()
            .filter(|e| in_force(&e.times(), now))
            .max_by_key(|e| e.record.id)
    }

    /// Publishes whatever the schedule says is due; returns when to come back.
    pub fn step(&self) -> Result<u64, StoreError> {
        let _one = self.publishing.lock();
        if !self.may_decide()? {
            return Ok(self.clock.now_ms() + 1_000);
        }
        for _ in 0..2 {
            let times: Vec<EpochTimes> = self.epochs().iter().map(|e| e.times()).collect();
            match self
                .settings
                .schedule
                .plan(&times, self.clock.now_ms())
                .action
            {
                Action::Publish(window) => {
                    self.publish_locked(window, "schedule")?;
                }
                Action::Wait { until_ms } => return Ok(until_ms),
            }
        }
        Ok(self.clock.now_ms() + 1_000)
    }

    fn inputs(&self) -> Result<Vec<NodeInput>, StoreError> {
        let latest = self.store.latest_benchmarks()?;
        let history = self.store.last_history()?;
        let mut statements = self.statements()?;
        let state = self.state.read();
        Ok(state
            .nodes
            .values()
            .map(|n| NodeInput {
                node_id: n.id.clone(),
                latest: latest.get(&n.id).cloned(),
                pin: n.pin,
                history: history.get(&n.id).copied(),
                statements: statements.remove(&n.id).unwrap_or_default(),
            })
            .collect())
    }

    /// The newest statement of every registered evaluator about each node and dimension,
    /// by subject, when the policy reads any (see [`statements::by_subject`]); and, when it
    /// reads peers, the newest observation of every node allowed in the current epoch about
    /// each node it peers with ([`statements::add_observations`]).
    fn statements(&self) -> Result<HashMap<String, Vec<Statement>>, StoreError> {
        let sources = &self.settings.policy.sources;
        let Some(oldest) = sources.rules().map(|(_, rule)| rule.max_age_ms).max() else {
            return Ok(HashMap::new());
        };
        let since = self.clock.now_ms().saturating_sub(oldest.saturating_mul(2));
        let scores = self.store.latest_statement_scores(since)?;
        let mut by_subject = statements::by_subject(scores);
        if sources.reads_peers() {
            let observed = self.store.latest_observation_scores(since)?;
            let current = self.current();
            let allowed = current.as_ref().map(|e| e.allowed()).unwrap_or_default();
            let topology = &self.settings.policy.topology;
            statements::add_observations(&mut by_subject, observed, &allowed, topology);
        }
        Ok(by_subject)
    }

    /// Decides membership and publishes a new epoch with `window`.
    pub fn publish(&self, window: Window, cause: &str) -> Result<EpochId, StoreError> {
        let _one = self.publishing.lock();
        self.publish_locked(window, cause)
    }

    /// [`Engine::publish`], with `publishing` held by the caller.
    fn publish_locked(&self, window: Window, cause: &str) -> Result<EpochId, StoreError> {
        let started = std::time::Instant::now();
        self.refresh_nodes()?;
        let now = self.clock.now_ms();
        let inputs = self.inputs()?;
        let decisions = decide(&inputs, &self.settings.policy, now);
        let id = next_epoch_id(self.epochs().last().map(|e| e.record.id), now);
        let record = EpochRecord {
            id,
            secret: EpochSecret::generate(),
            activation_ms: window.activation_ms,
            not_after_ms: window.not_after_ms,
            created_ms: now,
            cause: cause.to_owned(),
        };
        let fence = match self.leadership.may_publish() {
            Publish::Sole => None,
            Publish::Leader(token) => Some(token),
            Publish::Follower => return Err(StoreError::NotLeader),
        };
        self.store.insert_epoch_fenced(
            &record,
            &decisions,
            &inputs,
            &self.settings.policy,
            now,
            fence.as_ref(),
        )?;
        for d in &decisions {
            tracing::info!(
                epoch = id,
                node = %d.node_id,
                "MEMBERSHIP={} {}",
                if d.allowed { "ALLOW" } else { "DENY" },
                d.reason
            );
        }
        let decisions: BTreeMap<String, Decision> = decisions
            .into_iter()
            .map(|d| (d.node_id.clone(), d))
            .collect();
        // Before the epoch is announced, so that the notice is served while bundles build.
        let cutoff = self.cutoff_notice(&record, &decisions, &self.epochs(), now);
        let view = Arc::new(EpochView {
            record,
            decisions,
            cutoff,
        });
        let allowed = view.allowed().len();
        {
            let mut state = self.state.write();
            state.epochs.push(view.clone());
            let excess = state.epochs.len().saturating_sub(KEEP_EPOCHS);
            state.epochs.drain(..excess);
            if let Some(oldest) = state.epochs.first() {
                self.cache.retain_from(oldest.record.id);
            }
        }
        self.metrics.rotated(
            cause,
            started.elapsed(),
            id,
            allowed,
            view.decisions.len() - allowed,
        );
        self.metrics.newest_epoch(id, view.record.not_after_ms);
        tracing::info!(
            epoch = id,
            cause,
            allowed,
            activation_ms = window.activation_ms,
            "epoch published"
        );
        self.decided.send_replace(id);
        if !self.prebuilding.load(Ordering::Acquire) {
            self.published.send_replace(id);
        }
        Ok(id)
    }

    /// Publishes an immediate epoch now (admin rotation).
    pub fn rotate_now(&self, cause: &str) -> Result<EpochId, StoreError> {
        self.publish(self.settings.schedule.immediate(self.clock.now_ms()), cause)
    }

    /// With `rotate_on_deny`, rotates at once if a node allowed in the current epoch now
    /// fails. Returns the new epoch, if any.
    pub fn check_deny(&self) -> Result<Option<EpochId>, StoreError> {
        if !self.settings.rotate_on_deny {
            return Ok(None);
        }
        // Held from the check to the publication: two checks never both rotate for one deny.
        let _one = self.publishing.lock();
        if !self.may_decide()? {
            return Ok(None);
        }
        let Some(current) = self.current() else {
            return Ok(None);
        };
        let previous: Vec<Decision> = current.decisions.values().cloned().collect();
        let inputs = self.inputs()?;
        let failing = newly_failing(
            &previous,
            &inputs,
            &self.settings.policy,
            self.clock.now_ms(),
        );
        if failing.is_empty() {
            return Ok(None);
        }
        let cause = format!("deny: {}", failing.join(", "));
        let window = self.settings.schedule.immediate(self.clock.now_ms());
        self.publish_locked(window, &cause).map(Some)
    }

    /// The epochs a node may still be given at `now_ms`: not ended, and not superseded by a
    /// later one activating no later. With `announced_only`, only epochs already announced
    /// to long-polling nodes count (a decided epoch is served once announced).
    fn live_epochs(&self, now_ms: u64, announced_only: bool) -> Vec<Arc<EpochView>> {
        let announced = *self.published.borrow();
        let epochs: Vec<Arc<EpochView>> = self
            .epochs()
            .into_iter()
            .filter(|e| !announced_only || e.record.id <= announced)
            .collect();
        epochs
            .iter()
            .filter(|e| e.record.not_after_ms > now_ms)
            .filter(|e| {
                !epochs.iter().any(|later| {
                    later.record.id > e.record.id
                        && later.record.activation_ms <= e.record.activation_ms.max(now_ms)
                })
            })
            .cloned()
            .collect()
    }

    /// The epoch to give a node that holds `after`: the oldest live epoch newer than `after`
    /// (among the announced ones, or all decided ones).
    fn epoch_for(&self, after: Option<EpochId>, announced_only: bool) -> Option<Arc<EpochView>> {
        self.live_epochs(self.clock.now_ms(), announced_only)
            .into_iter()
            .filter(|e| after.is_none_or(|a| e.record.id > a))
            .min_by_key(|e| e.record.id)
    }

    /// Checks the epoch a node says it holds (`after`, from a bundle request) against the
    /// newest epoch decided here. An `after` above it means the node saw epochs this database
    /// never had: the database was restored from a backup, or re-initialised. Such a request
    /// is counted in the metrics and logged (at most once per [`AHEAD_WARN_INTERVAL`]); the
    /// node gets the next epoch this controller publishes, whose id follows the wall clock
    /// (see [`crate::schedule`]). Returns true if `after` is ahead.
    pub fn check_after(&self, node: &str, after: Option<EpochId>) -> bool {
        let newest = *self.decided.borrow();
        let Some(after) = after.filter(|a| *a > newest) else {
            return false;
        };
        self.metrics.ahead_of_database();
        if self.ahead_warnings.check().is_ok() {
            tracing::warn!(
                node,
                node_epoch = after,
                newest_epoch = newest,
                "node {node} holds epoch {after}, above the newest epoch {newest} in this \
                 controller's database: was the database restored from a backup? It gets the \
                 next epoch published (ids follow the wall clock)"
            );
        }
        true
    }

    /// `GET /v1/epoch`.
    pub fn epoch_info(&self) -> Option<EpochInfo> {
        let current = self.current()?;
        let next = self
            .epoch_for(Some(current.record.id), false)
            .map(|e| e.times());
        Some(EpochInfo {
            current: current.times(),
            next,
            length_ms: self.settings.schedule.length_ms,
        })
    }

    /// Decisions of the epoch in force, for status reports.
    pub fn current_decisions(&self) -> Vec<Decision> {
        self.current()
            .map(|e| e.decisions.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The membership policy decisions follow.
    pub fn policy(&self) -> &Policy {
        &self.settings.policy
    }

    /// Whether allowed nodes are handed TURN relay credentials (`[relay]`).
    pub fn offers_relays(&self) -> bool {
        self.settings.relay.is_some()
    }

    /// The epochs this instance holds, ascending by id.
    pub fn epoch_views(&self) -> Vec<Arc<EpochView>> {
        self.epochs()
    }

    /// Each node's latest candidate report.
    pub fn candidates(&self) -> Arc<HashMap<String, Candidates>> {
        self.state.read().candidates.clone()
    }

    /// The enrolled nodes.
    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.state.read().nodes.values().cloned().collect()
    }

    /// Runs the schedule and the deny check until `shutdown` completes; prebuilds the
    /// bundles of each epoch once it is published (and of the epochs resumed at start).
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let builder = tokio::spawn(self.clone().prebuild_on_publish());
        let checker = tokio::spawn(self.clone().check_on_benchmarks());
        let pruner = tokio::spawn(self.clone().prune_after_publish());
        let follower = self
            .leadership
            .wakes()
            .map(|wakes| tokio::spawn(self.clone().follow_published(wakes)));
        tokio::pin!(shutdown);
        loop {
            // The store is blocking (a database file or server): never on a runtime worker.
            let engine = self.clone();
            self.in_round
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let wake = tokio::task::spawn_blocking(move || engine.tick())
                .await
                .unwrap_or_else(|error| {
                    tracing::error!(error = %Chain(&error), "the schedule task failed; retrying in 1 s");
                    self.clock.now_ms() + 1_000
                });
            self.in_round
                .store(false, std::sync::atomic::Ordering::SeqCst);
            let at = self.clock.instant_at(wake.min(self.clock.now_ms() + 1_000));
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = &mut shutdown => {
                    builder.abort();
                    checker.abort();
                    pruner.abort();
                    if let Some(follower) = follower {
                        follower.abort();
                    }
                    return;
                }
            }
        }
    }

    /// Whether [`Engine::run`] is in a round (rereading nodes, publishing, checking denials)
    /// right now: tests on a paused clock wait for it before moving time on.
    pub fn round_in_progress(&self) -> bool {
        self.in_round.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// One round of [`Engine::run`], blocking: rereads the nodes, publishes what is due and
    /// checks for denials; returns when to come back (Unix milliseconds).
    fn tick(&self) -> u64 {
        // Nodes enrolled, removed or pinned from the command line show up within a second.
        if let Err(error) = self.refresh_nodes() {
            tracing::error!(error = %Chain(&error), "cannot reread the enrolled nodes");
        }
        let wake = match self.step() {
            Ok(until) => until,
            Err(error) => {
                tracing::error!(error = %Chain(&error), "cannot publish the next epoch; retrying in 1 s");
                self.clock.now_ms() + 1_000
            }
        };
        if let Err(error) = self.check_deny() {
            tracing::error!(error = %Chain(&error), "membership check failed");
        }
        wake
    }

    /// Checks for newly failing nodes ([`Engine::check_deny`]) after benchmarks are stored,
    /// at most once per [`DENY_CHECK_INTERVAL`] however many arrive; runs until dropped
    /// ([`Engine::run`] runs it).
    pub async fn check_on_benchmarks(self: Arc<Self>) {
        loop {
            self.benchmarks.notified().await;
            let engine = self.clone();
            let checked = tokio::task::spawn_blocking(move || engine.check_deny()).await;
            match checked {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::error!(error = %Chain(&error), "membership check after benchmarks failed")
                }
                Err(error) => {
                    tracing::error!(error = %Chain(&error), "membership check task failed")
                }
            }
            tokio::time::sleep(DENY_CHECK_INTERVAL).await;
        }
    }

    /// Prunes the database ([`Store::prune`]) after every decided epoch, at most once per
    /// [`PRUNE_INTERVAL`]; runs until dropped ([`Engine::run`] runs it). A failure is logged
    /// as an error at every attempt and nothing is pruned: an audit log that does not verify
    /// is kept whole for inspection.
    async fn prune_after_publish(self: Arc<Self>) {
        let mut decided = self.decided.subscribe();
        decided.mark_changed();
        while decided.changed().await.is_ok() {
            decided.borrow_and_update();
            let engine = self.clone();
            let pruned = tokio::task::spawn_blocking(move || {
                let report = engine.store.prune(&engine.retention, &engine.keys)?;
                Ok::<_, crate::store::AuditError>((report, engine.store.size_bytes()?))
            })
            .await;
            match pruned {
                Ok(Ok((report, bytes))) => {
                    self.metrics.pruned(&report, bytes);
                    if !report.is_empty() {
                        tracing::info!(
                            benchmarks = report.benchmarks,
                            epochs = report.epochs,
                            audit_entries = report.audit_entries,
                            checkpoint = report.checkpoint,
                            "pruned history past its retention"
                        );
                    }
                }
                Ok(Err(error)) => {
                    self.metrics.prune_failed();
                    tracing::error!(error = %Chain(&error), "cannot prune the database; it keeps growing");
                }
                Err(error) => tracing::error!(error = %Chain(&error), "the pruning task failed"),
            }
            tokio::time::sleep(PRUNE_INTERVAL).await;
        }
    }

    /// Prebuilds bundles now and after every decided epoch, one run at a time (epochs decided
    /// during a run are coalesced into the next), and announces each epoch to long-polling
    /// nodes once its bundles are built, so that they are served from the cache instead of
    /// each building its own bundle at once.
    async fn prebuild_on_publish(self: Arc<Self>) {
        let _running = Flag::raise(&self.prebuilding);
        let mut decided = self.decided.subscribe();
        decided.mark_changed();
        while decided.changed().await.is_ok() {
            let id = *decided.borrow_and_update();
            let engine = self.clone();
            let started = std::time::Instant::now();
            let built = tokio::task::spawn_blocking(move || engine.prebuild_bundles()).await;
            self.published.send_replace(id);
            match built {
                Ok(built) => tracing::debug!(
                    epoch = id,
                    built,
                    took_ms = started.elapsed().as_millis(),
                    "bundles prebuilt"
                ),
                Err(error) => {
                    tracing::error!(error = %Chain(&error), "prebuilding bundles failed; bundles are built on request");
                    return;
                }
            }
        }
    }
}

/// Holds an [`AtomicBool`] up while alive.
struct Flag<'a>(&'a AtomicBool);

impl<'a> Flag<'a> {
    fn raise(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag)
    }
}

impl Drop for Flag<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}
