//! The daemon's gating tasks against the real controller, served in-process on 127.0.0.1:
//! benchmarks go out, bundles come in, and updates say what to enforce, when.

use std::time::Duration;

use meshtun::config::{BenchmarkSettings, BenchmarkSourceConfig, ControllerSettings, LossPolicy};
use meshtun::gate::{
    BenchmarkSource, ControllerClient, Gate, GateOptions, GateUpdate, MembershipState,
    SharedGateStatus,
};
use tokio::sync::mpsc;
use tokio::time::timeout;

const EPOCH_MS: u64 = 4_000;

use crate::common;

use crate::wait_for;
use common::{now_ms, Controller};

async fn controller() -> Controller {
    common::start(common::Options {
        nodes: &["node-a", "node-b"],
        epoch_ms: EPOCH_MS,
        lead_ms: 1_000,
        long_poll: Duration::from_millis(500),
        ..common::Options::default()
    })
    .await
}

struct Running {
    _gate: Gate,
    updates: mpsc::Receiver<GateUpdate>,
    status: SharedGateStatus,
}

/// Starts node `n`'s gating tasks with simulated scores around `mean`.
fn start(c: &Controller, n: usize, mean: f64, dir: &std::path::Path) -> Running {
    start_at(&c.url, c, n, mean, dir)
}

/// [`start`], against the controller at `url`.
fn start_at(url: &str, c: &Controller, n: usize, mean: f64, dir: &std::path::Path) -> Running {
    let node = &c.nodes[n];
    let options = GateOptions {
        controller: ControllerSettings {
            urls: vec![url.to_owned()],
            public_keys: meshtun_proto::KeySet::one(c.key.public()),
            node_id: node.id.clone(),
            identity_key_file: dir.join(format!("{}.identity", node.id)),
            on_controller_loss: LossPolicy::FailClosed,
            grace: Duration::from_secs(1),
            cache_file: dir.join(format!("{}.bundle", node.id)),
            ca_file: None,
            allowed_prefixes: None,
            stun: None,
            keepalive: Default::default(),
            membership_key: None,
            observe: Default::default(),
        },
        benchmark: Some(BenchmarkSettings {
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            source: BenchmarkSourceConfig::Simulated { mean, stddev: 0.0 },
            suite_version: None,
        }),
        wg_private: node.wg.clone(),
    };
    let client = ControllerClient::new(
        url,
        meshtun_proto::KeySet::one(c.key.public()),
        &node.id,
        node.identity.clone(),
        node.wg.clone(),
    )
    .unwrap();
    let source = BenchmarkSource::from_settings(options.benchmark.as_ref().unwrap()).unwrap();
    let status = SharedGateStatus::default();
    let (tx, updates) = mpsc::channel(8);
    let gate = Gate::start(&options, client, Some(source), status.clone(), tx);
    Running {
        _gate: gate,
        updates,
        status,
    }
}

async fn next(r: &mut Running, within: Duration) -> GateUpdate {
    timeout(within, r.updates.recv())
        .await
        .expect("no update in time")
        .expect("gate stopped")
}

/// Waits (briefly) for the scheduler to write `file`, which it does after sending an update.
async fn wait_for_file(file: &std::path::Path) {
    let what = format!("{} to be written", file.display());
    wait_for(Duration::from_secs(2), &what, || file.exists()).await;
}

async fn wait_benchmarks(r: &Running) {
    wait_for(Duration::from_secs(5), "a benchmark submitted", || {
        r.status.lock().benchmarks_submitted > 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_then_cut_off_at_once_then_lost_when_the_controller_is_silent() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller().await;
    let mut a = start(&c, 0, 0.9, dir.path());
    let mut b = start(&c, 1, 0.9, dir.path());
    wait_benchmarks(&a).await;
    wait_benchmarks(&b).await;

    // The controller decides: both are allowed, each gets the other with the same key.
    c.engine.step().unwrap();
    let ua = next(&mut a, Duration::from_secs(3)).await;
    let ub = next(&mut b, Duration::from_secs(3)).await;
    assert_eq!(ua.membership, MembershipState::Allowed);
    assert_eq!(ua.epoch, ub.epoch);
    assert_eq!(ua.peers.len(), 1);
    assert_eq!(ua.peers[0].node_id, "node-b");
    let (pa, pb) = (&ua.peers[0].settings, &ub.peers[0].settings);
    assert_eq!(pa.public_key, c.nodes[1].wg.public_key());
    assert_eq!(pa.endpoint, Some("192.0.2.2:51820".parse().unwrap()));
    assert_eq!(pa.preshared_key, pb.preshared_key);
    assert!(ua.decided_ms > 0 && ua.decided_ms <= now_ms());
    assert!(a.status.lock().last_contact_ms.is_some());

    // The cache holds the bundle, 0600 (written just after the update is sent).
    let cache = dir.path().join("node-a.bundle");
    wait_for_file(&cache).await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // node-b fails: an immediate rotation removes it from node-a's peers within a second.
    drop(b);
    let decided = now_ms();
    let mut low = meshtun::gate::SimulatedSource::new(0.2, 0.0, None).unwrap();
    let bad = low.next(now_ms(), now_ms()).unwrap();
    let b_client = ControllerClient::new(
        &c.url,
        meshtun_proto::KeySet::one(c.key.public()),
        "node-b",
        c.nodes[1].identity.clone(),
        c.nodes[1].wg.clone(),
    )
    .unwrap();
    // The controller decides within its deny-check interval of receipt (rotate_on_deny).
    b_client.submit_benchmark(&bad).await.unwrap();
    let cut = next(&mut a, Duration::from_secs(1)).await;
    assert_eq!(cut.membership, MembershipState::Allowed);
    assert!(cut.peers.is_empty(), "node-b still listed: {:?}", cut.peers);
    assert!(cut.epoch > ua.epoch);
    assert!(
        now_ms() - decided < 1_000,
        "cut-off took {} ms",
        now_ms() - decided
    );

    // No further epoch: past not_after + grace, node-a fails closed. When the cut came from
    // the deny's cut-off notice, the epoch's bundle follows as one more update, which must
    // not bring node-b back.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(EPOCH_MS + 3_000);
    let lost = loop {
        let within = deadline.saturating_duration_since(tokio::time::Instant::now());
        let update = next(&mut a, within).await;
        if update.membership != MembershipState::Allowed {
            break update;
        }
        assert!(update.peers.is_empty(), "node-b back: {:?}", update.peers);
        assert_eq!(
            update.epoch, cut.epoch,
            "only the deny epoch's bundle may follow"
        );
    };
    assert_eq!(lost.membership, MembershipState::Lost);
    assert!(lost.peers.is_empty());
    assert!(now_ms() >= cut.not_after_ms.unwrap() + 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_uses_its_cached_bundle_before_the_controller_answers() {
    let dir = tempfile::tempdir().unwrap();
    let c = controller().await;
    let mut a = start(&c, 0, 0.9, dir.path());
    let b = start(&c, 1, 0.9, dir.path());
    wait_benchmarks(&a).await;
    wait_benchmarks(&b).await;
    c.engine.step().unwrap();
    let first = next(&mut a, Duration::from_secs(3)).await;
    assert_eq!(first.peers.len(), 1);
    wait_for_file(&dir.path().join("node-a.bundle")).await;
    drop(a);
    // Restart node-a against a controller URL that does not answer: the cache is enough.
    let mut again = start_at("http://127.0.0.1:9", &c, 0, 0.9, dir.path());
    let restored = next(&mut again, Duration::from_secs(1)).await;
    assert_eq!(restored.epoch, first.epoch);
    assert_eq!(restored.peers, first.peers);
}
