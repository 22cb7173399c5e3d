//! `meshtun-controller-bench`: how long a rotation takes, how fast bundles are served and
//! benchmarks stored, for a 1,000-node full mesh and a 10,000-node hub-and-spoke network, on
//! SQLite and on PostgreSQL (`--database`; default both, one table each, then side by side).
//!
//! For each backend and scenario: enroll the nodes in a fresh database, store one passing
//! signed benchmark per node, then measure
//! - the rotation: deciding every node and committing the epoch ([`Engine::rotate_now`]);
//! - building every node's signed bundle of that epoch (pair keys derived and sealed);
//! - the serving rate of cached bundles through the real HTTP API on 127.0.0.1;
//! - the rate of signed benchmark submissions through that API, each committed before its
//!   answer;
//! - a deny with the engine running: from the rotation to the cut-off notice served to a
//!   waiting long-poll, and to the epoch's bundle (every bundle built).
//!
//! PostgreSQL runs in a throwaway cluster the bench starts (`fsync` on), or on the server of
//! `--database-url`.
//!
//! Run with `cargo run --release -p meshtun-controller --bin meshtun-controller-bench`.

mod backend;
mod deny;
mod load;
mod report;
mod setup;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use std::path::PathBuf;

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, ValueEnum};
use meshtun_controller::engine::Engine;
use meshtun_controller::membership::peers_of;
use meshtun_controller::model::Topology;
use meshtun_proto::bundle::{Opener, SignedBundle};
use meshtun_proto::{derive_pair_psk, PairKeys, PublicKey};

use backend::{Backend, Kind};
use load::{LoadReport, LoadSpec, Request};
use setup::{node_id, Prepared, SimNode};

/// Rotation and serving benchmark of the meshtun controller.
#[derive(Debug, Parser)]
#[command(name = "meshtun-controller-bench", version)]
struct Args {
    /// Which store backend to measure (default: both, SQLite then PostgreSQL).
    #[arg(long, value_enum)]
    database: Option<Kind>,
    /// A PostgreSQL database to measure (`postgres://…`, no password in it) instead of a
    /// throwaway cluster: it must be empty, holds one scenario (--only), and keeps its data.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// The file holding the password of --database-url, if the server asks for one.
    #[arg(long, value_name = "PATH", requires = "database_url")]
    password_file: Option<PathBuf>,
    /// Which scenarios to run (default: both).
    #[arg(long, value_enum)]
    only: Option<Scenario>,
    /// Nodes of the full mesh.
    #[arg(long, default_value_t = 1_000)]
    mesh_nodes: usize,
    /// Nodes of the hub-and-spoke network (hubs included).
    #[arg(long, default_value_t = 10_000)]
    star_nodes: usize,
    /// Hubs of the hub-and-spoke network.
    #[arg(long, default_value_t = 10)]
    hubs: usize,
    /// Seconds to drive requests in each serving and submission run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent clients in each serving run.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Rotations to time (the median is reported).
    #[arg(long, default_value_t = 3)]
    rotations: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    FullMesh,
    HubAndSpoke,
}

/// Figures of one scenario.
struct Row {
    name: String,
    nodes: usize,
    enroll: Duration,
    benchmarks: Duration,
    rotation: Duration,
    pair_keys: (usize, Duration),
    build: Build,
    serving: Vec<(String, LoadReport)>,
    submissions: LoadReport,
    deny: deny::DenyTiming,
}

/// Building every bundle of one epoch.
struct Build {
    total: Duration,
    count: usize,
    peers: usize,
    mean_bytes: usize,
    max_bytes: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    println!(
        "meshtun-controller-bench: {cores} cores, load average {}",
        load_average()
    );
    let mut results = Vec::new();
    for kind in kinds(&args)? {
        let backend = Backend::start(
            kind,
            args.database_url.as_deref(),
            args.password_file.clone(),
        )?;
        let description = backend.describe();
        let rows = run_backend(&args, &backend, &runtime)?;
        report::print_table(backend.name(), &description, &rows, &args);
        results.push((backend.name(), rows));
    }
    report::print_side_by_side(&results);
    println!("load average at the end: {}", load_average());
    Ok(())
}

/// The backends to measure, in order.
fn kinds(args: &Args) -> Result<Vec<Kind>> {
    if args.database_url.is_some() {
        if args.only.is_none() {
            bail!("--database-url holds one scenario: choose it with --only");
        }
        if args.database == Some(Kind::Sqlite) {
            bail!("--database-url names a PostgreSQL server: it needs --database postgres");
        }
        return Ok(vec![Kind::Postgres]);
    }
    Ok(args
        .database
        .map_or_else(|| vec![Kind::Sqlite, Kind::Postgres], |k| vec![k]))
}

/// Runs the chosen scenarios on `backend`.
fn run_backend(
    args: &Args,
    backend: &Backend,
    runtime: &tokio::runtime::Runtime,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    if args.only.is_none_or(|s| s == Scenario::FullMesh) {
        rows.push(full_mesh(args, backend, runtime)?);
    }
    if args.only.is_none_or(|s| s == Scenario::HubAndSpoke) {
        rows.push(hub_and_spoke(args, backend, runtime)?);
    }
    Ok(rows)
}

/// The 1, 5 and 15-minute load averages: other work on the machine skews the figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn full_mesh(args: &Args, backend: &Backend, runtime: &tokio::runtime::Runtime) -> Result<Row> {
    let name = format!("full mesh, {} nodes", args.mesh_nodes);
    eprintln!("== {}, {name}: enrolling", backend.name());
    let prepared = setup::prepare(backend, "mesh", args.mesh_nodes, Topology::FullMesh)?;
    let all: Vec<&SimNode> = prepared.nodes.iter().collect();
    scenario(name, &prepared, args, runtime, &[("every node", &all)])
}

fn hub_and_spoke(args: &Args, backend: &Backend, runtime: &tokio::runtime::Runtime) -> Result<Row> {
    let name = format!(
        "hub and spoke, {} nodes ({} hubs)",
        args.star_nodes, args.hubs
    );
    eprintln!("== {}, {name}: enrolling", backend.name());
    let hubs = (0..args.hubs).map(node_id).collect();
    let prepared = setup::prepare(
        backend,
        "star",
        args.star_nodes,
        Topology::HubAndSpoke { hubs },
    )?;
    let spokes: Vec<&SimNode> = prepared.nodes.iter().skip(args.hubs).collect();
    let hubs: Vec<&SimNode> = prepared.nodes.iter().take(args.hubs).collect();
    scenario(
        name,
        &prepared,
        args,
        runtime,
        &[("spokes", &spokes), ("hubs", &hubs)],
    )
}

fn scenario(
    name: String,
    prepared: &Prepared,
    args: &Args,
    runtime: &tokio::runtime::Runtime,
    targets: &[(&str, &Vec<&SimNode>)],
) -> Result<Row> {
    let engine = &prepared.engine;
    eprintln!("== {name}: rotating");
    let rotation = median_rotation(engine, args.rotations)?;
    let pair_keys = derive_every_pair_key(engine, &prepared.nodes, &prepared.topology)?;
    eprintln!("== {name}: building every bundle");
    let build = build_all(engine, &prepared.nodes)?;
    check_pair(engine, &prepared.nodes)?;
    let mut serving = Vec::new();
    for (label, nodes) in targets {
        eprintln!("== {name}: serving {label}");
        let spec = LoadSpec {
            request: Request::Bundle,
            clients: args.clients,
            duration: Duration::from_secs(args.seconds),
            prepared: 40_000 * usize::try_from(args.seconds)?,
        };
        let report = runtime.block_on(load::run(engine.clone(), nodes, &spec))?;
        serving.push(((*label).to_owned(), report));
    }
    eprintln!("== {name}: submitting benchmarks");
    let all: Vec<&SimNode> = prepared.nodes.iter().collect();
    let spec = LoadSpec {
        request: Request::Benchmark,
        clients: args.clients.min(all.len()).max(1),
        duration: Duration::from_secs(args.seconds),
        prepared: 4_000 * usize::try_from(args.seconds)?,
    };
    let submissions = runtime.block_on(load::run(engine.clone(), &all, &spec))?;
    eprintln!("== {name}: denying a node");
    let deny = deny::measure(engine, &prepared.nodes, runtime)?;
    Ok(Row {
        name,
        nodes: prepared.nodes.len(),
        enroll: prepared.enroll,
        benchmarks: prepared.benchmarks,
        rotation,
        pair_keys,
        build,
        serving,
        submissions,
        deny,
    })
}

/// Times `count` rotations (decide every node, commit the epoch) and returns the median.
fn median_rotation(engine: &Engine, count: usize) -> Result<Duration> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let started = Instant::now();
        engine.rotate_now("bench")?;
        times.push(started.elapsed());
    }
    times.sort_unstable();
    Ok(times[times.len() / 2])
}

/// Derives the key of every pair of the newest epoch once, on one core (what holding every
/// key would cost to compute; bundles derive them as they are built instead).
fn derive_every_pair_key(
    engine: &Engine,
    nodes: &[SimNode],
    topology: &Topology,
) -> Result<(usize, Duration)> {
    let epoch = engine.current().context("no epoch in force")?;
    let allowed: BTreeSet<&str> = epoch
        .decisions
        .values()
        .filter(|d| d.allowed)
        .map(|d| d.node_id.as_str())
        .collect();
    let keys: HashMap<&str, PublicKey> = nodes
        .iter()
        .map(|n| (n.id.as_str(), n.wg.public_key()))
        .collect();
    let pairs: Vec<(PublicKey, PublicKey)> = nodes
        .iter()
        .flat_map(|a| {
            peers_of(&a.id, &allowed, topology)
                .into_iter()
                .filter(|b| a.id.as_str() < *b)
                .filter_map(|b| Some((keys.get(a.id.as_str())?.to_owned(), *keys.get(b)?)))
                .collect::<Vec<_>>()
        })
        .collect();
    let started = Instant::now();
    let derive = PairKeys::new(&epoch.record.secret, epoch.record.id);
    for (a, b) in &pairs {
        std::hint::black_box(derive.derive(a, b));
    }
    Ok((pairs.len(), started.elapsed()))
}

/// Builds the newest epoch's bundle of every node on every core, as the engine does after
/// each publication, and checks each bundle's signature.
fn build_all(engine: &Engine, nodes: &[SimNode]) -> Result<Build> {
    let started = Instant::now();
    let built = engine.prebuild_bundles();
    let total = started.elapsed();
    ensure!(
        built == nodes.len(),
        "built {built} bundles for {} nodes",
        nodes.len()
    );
    let (mut sum, mut max, mut peers) = (0, 0, 0);
    for node in nodes {
        let (_, json) = engine
            .bundle(&node.id, None)
            .with_context(|| format!("no bundle for {}", node.id))?;
        sum += json.len();
        max = max.max(json.len());
        let signed: SignedBundle = serde_json::from_slice(&json)?;
        peers += signed.verify(&engine.public_key())?.peers.len();
    }
    Ok(Build {
        total,
        count: nodes.len(),
        peers,
        mean_bytes: sum / nodes.len().max(1),
        max_bytes: max,
    })
}

/// Checks that the first two nodes open the same key for their pair, and that it is the
/// derived one.
fn check_pair(engine: &Engine, nodes: &[SimNode]) -> Result<()> {
    let (Some(a), Some(b)) = (nodes.first(), nodes.get(1)) else {
        return Ok(());
    };
    let open = |me: &SimNode, other: &SimNode| -> Result<_> {
        let (_, json) = engine.bundle(&me.id, None).context("no bundle")?;
        let signed: SignedBundle = serde_json::from_slice(&json)?;
        let bundle = signed.verify(&engine.public_key())?;
        let (index, peer) = bundle
            .peers
            .iter()
            .enumerate()
            .find(|(_, p)| p.node_id == other.id)
            .with_context(|| format!("{} is not a peer of {}", other.id, me.id))?;
        let seal = bundle.seal_key.context("no seal key")?;
        Ok((
            Opener::new(&me.wg, &seal).open(u32::try_from(index)?, bundle.epoch, peer)?,
            bundle.epoch,
        ))
    };
    let (ab, epoch) = open(a, b)?;
    let (ba, _) = open(b, a)?;
    ensure!(ab == ba, "the two ends of a pair opened different keys");
    let secret = engine
        .current()
        .filter(|e| e.record.id == epoch)
        .context("the bundles' epoch is not current")?
        .record
        .secret
        .clone();
    let expected = derive_pair_psk(&secret, epoch, &a.wg.public_key(), &b.wg.public_key());
    ensure!(ab == expected, "the opened key is not the derived pair key");
    Ok(())
}
