//! A controller with many enrolled nodes, each with one passing, signed benchmark, in a
//! fresh database (see [`crate::backend`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use meshtun_controller::clock::Clock;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::{BenchmarkRecord, NodeRecord, Policy, Topology};
use meshtun_controller::schedule::Schedule;
use meshtun_controller::store::{Store, BENCHMARK_METHOD};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::wire::{Benchmark, Scores};
use meshtun_proto::{IdentityKey, IdentityPublic, PrivateKey};

use crate::backend::{Backend, Keep};

/// One simulated node: what it holds privately.
pub struct SimNode {
    /// Node id.
    pub id: String,
    /// WireGuard private key (to open its sealed keys).
    pub wg: PrivateKey,
    /// Identity key (to sign its requests).
    pub identity: IdentityKey,
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under the system's temporary directory.
    pub fn new(label: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "meshtun-controller-bench-{}-{label}",
            std::process::id()
        ));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot clear {}", path.display()))?;
        }
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The prepared controller.
pub struct Prepared {
    /// The engine, with no epoch yet.
    pub engine: Arc<Engine>,
    /// Its network shape.
    pub topology: Topology,
    /// The nodes, in enrollment order.
    pub nodes: Vec<SimNode>,
    /// Time to enroll every node (one committed transaction each).
    pub enroll: Duration,
    /// Time to store every benchmark (signature check and commit each).
    pub benchmarks: Duration,
    /// Keeps the database until the scenario ends.
    _keep: Keep,
}

/// The id of node `i`.
pub fn node_id(i: usize) -> String {
    format!("node-{i:05}")
}

fn record(i: usize, node: &SimNode) -> Result<NodeRecord> {
    let index = u32::try_from(i).context("too many nodes")?;
    let [_, a, b, c] = index.to_be_bytes();
    Ok(NodeRecord {
        id: node.id.clone(),
        wg_public_key: node.wg.public_key(),
        identity_key: node.identity.public(),
        addresses: vec![format!("100.{}.{b}.{c}/10", 64 + (a & 63)).parse()?],
        endpoint: Some(format!("198.18.{b}.{c}:51820")),
        pin: None,
        enrolled_ms: 0,
        membership_sig: None,
    })
}

/// A passing benchmark with `seq`, measured at `now_ms`.
pub fn passing_benchmark(seq: u64, now_ms: u64) -> Benchmark {
    Benchmark {
        suite_version: "bench-1".to_owned(),
        scores: Scores {
            overall: 0.9,
            refusal: 0.9,
            honesty: 0.9,
            policy: 0.9,
        },
        measured_at_ms: now_ms,
        seq,
    }
}

/// Stores one passing benchmark of `node`, measured now, through the signed path.
fn submit(store: &Store, controller: &IdentityPublic, node: &SimNode, now_ms: u64) -> Result<()> {
    let wire = passing_benchmark(1, now_ms);
    let body = serde_json::to_vec(&wire)?;
    let path = format!("/v1/benchmarks/{}", node.id);
    let sig = RequestSignature::sign(
        &node.identity,
        controller,
        &node.id,
        BENCHMARK_METHOD,
        &path,
        &body,
        now_ms,
    );
    let record = BenchmarkRecord {
        node_id: node.id.clone(),
        suite_version: wire.suite_version,
        scores: wire.scores,
        measured_at_ms: wire.measured_at_ms,
        seq: wire.seq,
        received_ms: now_ms,
    };
    store
        .insert_benchmark(controller, &record, &body, &sig, &path)
        .with_context(|| format!("storing the benchmark of {}", node.id))
}

/// Enrolls `count` nodes in a fresh database of `backend`, stores a passing benchmark for
/// each (one at a time), and opens an engine with `topology`.
pub fn prepare(
    backend: &Backend,
    label: &str,
    count: usize,
    topology: Topology,
) -> Result<Prepared> {
    let (store, keep) = backend.fresh(label)?;
    let store = Arc::new(store);
    let nodes: Vec<SimNode> = (0..count)
        .map(|i| SimNode {
            id: node_id(i),
            wg: PrivateKey::generate(),
            identity: IdentityKey::generate(),
        })
        .collect();
    let started = Instant::now();
    for (i, node) in nodes.iter().enumerate() {
        store.add_node(&record(i, node)?)?;
    }
    let enroll = started.elapsed();
    let clock = Clock::system();
    let key = IdentityKey::generate();
    let controller = key.public();
    let started = Instant::now();
    for node in &nodes {
        submit(&store, &controller, node, clock.now_ms())?;
    }
    let benchmarks = started.elapsed();
    let settings = EngineSettings {
        policy: Policy {
            topology: topology.clone(),
            ..Policy::default()
        },
        schedule: Schedule::new(600_000, 60_000)?,
        rotate_on_deny: false,
        relay: None,
    };
    let engine = Arc::new(Engine::open(store, key, settings, clock)?);
    Ok(Prepared {
        engine,
        topology,
        nodes,
        enroll,
        benchmarks,
        _keep: keep,
    })
}
