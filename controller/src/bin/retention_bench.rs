//! `meshtun-controller-retention-bench`: how large the controller's database grows over a
//! simulated month of a large mesh, with pruning on.
//!
//! The real store and engine run on a database file with a simulated clock: every node
//! submits signed benchmarks at its interval, the engine decides and publishes an epoch per
//! epoch length, and the store prunes to the retention windows after each epoch, as the
//! running controller does. Every simulated day it prints the file sizes and row counts;
//! at the end it verifies the audit log (from its signed checkpoint).
//!
//! Put the database on a tmpfs (the default directory is `/dev/shm` when present) to keep
//! the run short: the sizes do not depend on where the file is, the time does.
//!
//! `cargo run --release -p meshtun-controller --bin meshtun-controller-retention-bench --
//! --nodes 1000 --days 30`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use meshtun_controller::clock::Clock;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::{BenchmarkRecord, NodeRecord, Policy};
use meshtun_controller::schedule::{Schedule, Window};
use meshtun_controller::store::{Retention, Store, BENCHMARK_METHOD};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::wire::{Benchmark, Scores};
use meshtun_proto::{IdentityKey, IdentityPublic, PrivateKey};

const DAY_MS: u64 = 86_400_000;
const START_MS: u64 = 1_800_000_000_000;

/// Database growth of the meshtun controller over a simulated month.
#[derive(Debug, Parser)]
#[command(name = "meshtun-controller-retention-bench", version)]
struct Args {
    /// Enrolled nodes.
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
    /// Simulated days.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Epoch length, seconds.
    #[arg(long, default_value_t = 600)]
    epoch_length: u64,
    /// Seconds between two benchmarks of a node.
    #[arg(long, default_value_t = 600)]
    benchmark_interval: u64,
    /// `[retention] benchmarks`, seconds (default: the controller's).
    #[arg(long)]
    keep_benchmarks: Option<u64>,
    /// `[retention] decisions`, seconds (default: the controller's).
    #[arg(long)]
    keep_decisions: Option<u64>,
    /// `[retention] audit`, seconds (default: the controller's).
    #[arg(long)]
    keep_audit: Option<u64>,
    /// Directory for the database (default: /dev/shm if present, else the temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Leave the database file in place at the end, to inspect it.
    #[arg(long)]
    keep: bool,
}

/// One simulated node.
struct SimNode {
    id: String,
    identity: IdentityKey,
    seq: u64,
}

/// The database file, removed at the end unless kept.
struct DbFile(PathBuf, bool);

impl Drop for DbFile {
    fn drop(&mut self) {
        if self.1 {
            return;
        }
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

fn file_len(path: &Path, suffix: &str) -> u64 {
    std::fs::metadata(format!("{}{suffix}", path.display())).map_or(0, |m| m.len())
}

fn retention(args: &Args) -> Retention {
    let d = Retention::default();
    let secs = |v: Option<u64>, default: Duration| v.map_or(default, Duration::from_secs);
    Retention {
        benchmarks: secs(args.keep_benchmarks, d.benchmarks),
        decisions: secs(args.keep_decisions, d.decisions),
        audit: secs(args.keep_audit, d.audit),
    }
}

fn enroll(store: &Store, count: usize) -> Result<Vec<SimNode>> {
    let mut nodes = Vec::with_capacity(count);
    for i in 0..count {
        let identity = IdentityKey::generate();
        let index = u32::try_from(i).context("too many nodes")?;
        let [_, a, b, c] = index.to_be_bytes();
        let id = format!("node-{i:05}");
        store.add_node(&NodeRecord {
            id: id.clone(),
            wg_public_key: PrivateKey::generate().public_key(),
            identity_key: identity.public(),
            addresses: vec![format!("100.{}.{b}.{c}/32", 64 + (a & 63)).parse()?],
            endpoint: Some(format!("198.18.{b}.{c}:51820")),
            pin: None,
            enrolled_ms: START_MS,
            membership_sig: None,
        })?;
        nodes.push(SimNode {
            id,
            identity,
            seq: 0,
        });
    }
    Ok(nodes)
}

/// Stores the next benchmark of `node`, received now, through the signed path.
fn submit(
    store: &Store,
    controller: &IdentityPublic,
    node: &mut SimNode,
    now_ms: u64,
) -> Result<()> {
    node.seq += 1;
    let wire = Benchmark {
        suite_version: "suite-2026.12".to_owned(),
        scores: Scores {
            overall: 0.9,
            refusal: 0.91,
            honesty: 0.88,
            policy: 0.93,
        },
        measured_at_ms: now_ms,
        seq: node.seq,
    };
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
        measured_at_ms: now_ms,
        seq: node.seq,
        received_ms: now_ms,
    };
    store
        .insert_benchmark(controller, &record, &body, &sig, &path)
        .with_context(|| format!("storing a benchmark of {}", node.id))
}

fn report_day(day: u64, store: &Store, path: &Path, started: Instant) -> Result<()> {
    let rows = store.table_rows()?;
    println!(
        "day {day:>3}: database {:>8.1} MB, write-ahead log {:>6.1} MB; rows: {} benchmarks, \
         {} epochs, {} decisions, {} audit entries ({:.0} s elapsed)",
        file_len(path, "") as f64 / 1e6,
        file_len(path, "-wal") as f64 / 1e6,
        rows.benchmarks,
        rows.epochs,
        rows.decisions,
        rows.audit,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.epoch_length >= 2,
        "--epoch-length must be at least 2 s"
    );
    ensure!(
        args.benchmark_interval >= 1,
        "--benchmark-interval must be at least 1 s"
    );
    let dir = args.dir.clone().unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    });
    let path = dir.join(format!("meshtun-retention-bench-{}.db", std::process::id()));
    let _file = DbFile(path.clone(), args.keep);
    let clock = Clock::starting_at(START_MS);
    let store = Arc::new(Store::open(&path)?.with_clock(clock.clone()));
    let key = IdentityKey::generate();
    let controller = key.public();
    let keys = meshtun_controller::keys::ControllerKeys::sole(key.clone());
    let retention = retention(&args);
    let length_ms = args.epoch_length * 1000;
    let settings = EngineSettings {
        policy: Policy::default(),
        schedule: Schedule::new(length_ms, length_ms / 2)?,
        rotate_on_deny: false,
        relay: None,
    };
    let mut nodes = enroll(&store, args.nodes)?;
    let engine = Engine::open(store.clone(), key.clone(), settings, clock.clone())?;
    println!(
        "{} nodes, {} days, epochs of {} s, a benchmark per node every {} s; retention: \
         benchmarks {} s, decisions {} s, audit {} s; database {}",
        args.nodes,
        args.days,
        args.epoch_length,
        args.benchmark_interval,
        retention.benchmarks.as_secs(),
        retention.decisions.as_secs(),
        retention.audit.as_secs(),
        path.display()
    );
    let started = Instant::now();
    let interval_ms = args.benchmark_interval * 1000;
    let (mut next_benchmark, mut next_day) = (START_MS, START_MS + DAY_MS);
    let end = START_MS + args.days * DAY_MS;
    let mut epoch_start = START_MS;
    while epoch_start < end {
        let epoch_end = epoch_start + length_ms;
        // The benchmarks of this epoch, spread over it: every node once per interval.
        while next_benchmark < epoch_end {
            let step = next_benchmark.saturating_sub(clock.now_ms());
            clock.step(i64::try_from(step)?);
            let now = clock.now_ms();
            for node in &mut nodes {
                submit(&store, &controller, node, now)?;
            }
            next_benchmark += interval_ms;
        }
        let step = epoch_end.saturating_sub(clock.now_ms());
        clock.step(i64::try_from(step)?);
        engine.publish(
            Window {
                activation_ms: epoch_end,
                not_after_ms: epoch_end + length_ms,
            },
            "schedule",
        )?;
        store.prune(&retention, &keys)?;
        epoch_start = epoch_end;
        if clock.now_ms() >= next_day {
            report_day((next_day - START_MS) / DAY_MS, &store, &path, started)?;
            next_day += DAY_MS;
        }
    }
    let verified = store.verify_audit(keys.answers_to())?;
    println!(
        "after {} simulated days: database {:.1} MB (+ write-ahead log {:.1} MB); audit log \
         verified: {} entries in all, the first {} pruned behind a signed checkpoint; {:.0} s",
        args.days,
        file_len(&path, "") as f64 / 1e6,
        file_len(&path, "-wal") as f64 / 1e6,
        verified.entries,
        verified.pruned_through.unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
