//! Crash consistency of the real controller binary: `serve` is killed with SIGKILL at random
//! moments, at least 50 times, while three nodes submit benchmarks. After every kill:
//!
//! - every benchmark the controller acknowledged (201) is in the database, with the body
//!   that was sent, and nothing is there that was not sent;
//! - the epoch, and its secret, are the ones of the first start (the epoch lasts an hour,
//!   so no restart may create or replace one);
//! - every tenth round, and at the end, `meshtun-controller audit verify` succeeds (hash
//!   chain, every benchmark signature, every decision recomputed).
//!
//! Runs on loopback; needs neither root nor namespaces. The kill delays come from a seeded
//! generator: the seed is printed, and `MESHTUN_CRASH_SEED=N` repeats a run.
//!
//! Both backends: SQLite (the default), and PostgreSQL (a throwaway cluster over its Unix
//! socket; missing PostgreSQL fails the test under `CI=true`, and skips it visibly
//! elsewhere).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use meshtun_e2e::controller::{
    benchmark_body, free_loopback_port, now_ms, Client, ControllerHome, StoredEpoch, TestNode,
};
use meshtun_testbed::postgres::{shared_or_skip, TempCluster};

/// Where the controller keeps its state, and how the test reads it.
enum Backend {
    /// The home's SQLite database.
    Sqlite,
    /// A database of a PostgreSQL cluster, reached over its Unix socket.
    Postgres {
        cluster: &'static TempCluster,
        database: String,
    },
}

impl Backend {
    /// The controller's home, with this backend's `database` line.
    fn home(&self, settings: &str) -> ControllerHome {
        match self {
            Backend::Sqlite => ControllerHome::new(settings),
            Backend::Postgres { cluster, database } => {
                let listen = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()));
                let top = format!("database = \"{}\"\n", cluster.url(database));
                ControllerHome::with_header(listen, "http", &top, settings)
            }
        }
    }

    /// Every stored benchmark: `(node, seq)` → the raw body.
    fn benchmarks(&self, home: &ControllerHome) -> BTreeMap<(String, u64), Vec<u8>> {
        match self {
            Backend::Sqlite => home.open_db().benchmarks(),
            Backend::Postgres { .. } => self
                .rows("SELECT node_id, seq, encode(raw_body, 'hex') FROM benchmarks")
                .into_iter()
                .map(|f| {
                    let seq = f[1].parse().expect("a numeric seq");
                    let body = hex::decode(&f[2]).expect("hex from encode()");
                    ((f[0].clone(), seq), body)
                })
                .collect(),
        }
    }

    /// Every stored epoch, by id.
    fn epochs(&self, home: &ControllerHome) -> Vec<StoredEpoch> {
        match self {
            Backend::Sqlite => home.open_db().epochs(),
            Backend::Postgres { .. } => self
                .rows(
                    "SELECT id, secret, activation_ms, not_after_ms, cause FROM epochs \
                     ORDER BY id",
                )
                .into_iter()
                .map(|f| StoredEpoch {
                    id: f[0].parse().expect("a numeric id"),
                    secret_hex: f[1].clone(),
                    activation_ms: f[2].parse().expect("a numeric activation"),
                    not_after_ms: f[3].parse().expect("a numeric end"),
                    cause: f[4].clone(),
                })
                .collect(),
        }
    }

    /// psql's rows for `sql`, split at `|` (PostgreSQL only).
    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let Backend::Postgres { cluster, database } = self else {
            unreachable!("rows() reads PostgreSQL only")
        };
        let out = cluster
            .psql(database, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?}: {e}"));
        out.lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('|').map(str::to_owned).collect())
            .collect()
    }
}

/// How many times `serve` is started and killed.
const ROUNDS: u32 = 50;
/// Nodes submitting at once, one thread each.
const NODES: u8 = 3;
/// Longest wait between the controller answering and the kill.
const MAX_KILL_DELAY_MS: u64 = 300;
/// The whole test must finish within this.
const TIME_LIMIT: Duration = Duration::from_secs(150);
/// `audit verify` runs after every this many rounds (it checkpoints the write-ahead log, so
/// the other restarts find the database exactly as the kill left it).
const VERIFY_EVERY: u32 = 10;

/// What one submitting thread saw in one round.
#[derive(Default)]
struct Submitted {
    /// Seq → body of every request sent (answered or not).
    sent: BTreeMap<u64, Vec<u8>>,
    /// Seqs answered 201.
    acknowledged: BTreeSet<u64>,
    /// Answers other than 201, as "seq: status body".
    unexpected: Vec<String>,
    /// The first seq not used.
    next_seq: u64,
}

/// Submits passing benchmarks for `node` from `seq` on until the controller stops answering.
fn submit_until_killed(node: &TestNode, client: &Client, mut seq: u64) -> Submitted {
    let mut out = Submitted::default();
    loop {
        let body = benchmark_body(seq, 0.9, now_ms());
        out.sent.insert(seq, body.clone());
        let reply = client.submit_benchmark(node, body);
        // Whatever happened, this seq may be stored: never use it again.
        seq += 1;
        match reply {
            Ok(r) if r.status == 201 => {
                out.acknowledged.insert(seq - 1);
            }
            Ok(r) => out
                .unexpected
                .push(format!("seq {}: {} {}", seq - 1, r.status, r.text())),
            Err(_) => break,
        }
    }
    out.next_seq = seq;
    out
}

/// Totals over the whole run.
#[derive(Default)]
struct Tally {
    sent: BTreeMap<(String, u64), Vec<u8>>,
    acknowledged: BTreeSet<(String, u64)>,
    unexpected: Vec<String>,
    delays_ms: Vec<u64>,
    acknowledged_per_round: Vec<usize>,
}

impl Tally {
    fn add(&mut self, node: &str, round: Submitted) -> usize {
        let n = round.acknowledged.len();
        for (seq, body) in round.sent {
            self.sent.insert((node.to_owned(), seq), body);
        }
        self.acknowledged
            .extend(round.acknowledged.into_iter().map(|s| (node.to_owned(), s)));
        self.unexpected
            .extend(round.unexpected.into_iter().map(|u| format!("{node} {u}")));
        n
    }
}

/// Checks the database after a kill: acknowledged benchmarks present, nothing unsent, the
/// epoch of the first start unchanged.
fn check_database(
    backend: &Backend,
    home: &ControllerHome,
    round: u32,
    tally: &Tally,
    first: &StoredEpoch,
) {
    let stored = backend.benchmarks(home);
    let missing: Vec<_> = tally
        .acknowledged
        .iter()
        .filter(|k| !stored.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "round {round}: {} acknowledged benchmarks missing after SIGKILL, first: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    for (key, body) in &stored {
        let sent = tally.sent.get(key);
        assert!(
            sent == Some(body),
            "round {round}: stored benchmark {key:?} was {}",
            if sent.is_some() {
                "stored with another body than the one sent"
            } else {
                "never sent"
            }
        );
    }
    let epochs = backend.epochs(home);
    assert_eq!(
        epochs.len(),
        1,
        "round {round}: expected only the first epoch, found ids {:?} (causes {:?})",
        epochs.iter().map(|e| e.id).collect::<Vec<_>>(),
        epochs.iter().map(|e| &e.cause).collect::<Vec<_>>()
    );
    assert!(
        epochs[0] == *first,
        "round {round}: epoch {} (activation {}, end {}) differs from the first start's \
         epoch {} (activation {}, end {}), or its secret changed",
        epochs[0].id,
        epochs[0].activation_ms,
        epochs[0].not_after_ms,
        first.id,
        first.activation_ms,
        first.not_after_ms
    );
}

fn seed() -> u64 {
    match std::env::var("MESHTUN_CRASH_SEED") {
        Ok(s) => s.parse().expect("MESHTUN_CRASH_SEED must be a number"),
        Err(_) => now_ms(),
    }
}

#[test]
fn acknowledged_benchmarks_and_the_epoch_survive_sigkill() {
    crash_test(&Backend::Sqlite);
}

#[test]
fn acknowledged_benchmarks_and_the_epoch_survive_sigkill_on_postgres() {
    let test = "acknowledged_benchmarks_and_the_epoch_survive_sigkill_on_postgres";
    let Some(cluster) = shared_or_skip(test) else {
        return;
    };
    let database = cluster
        .create_database("crash")
        .unwrap_or_else(|e| panic!("{test}: {e}"));
    crash_test(&Backend::Postgres { cluster, database });
}

fn crash_test(backend: &Backend) {
    let _exclusive = meshtun_e2e::exclusive();
    let started = Instant::now();
    // The nodes submit as fast as the controller answers: durability is tested here, not
    // the per-node quota (controller_abuse tests that), so it is set above their pace.
    let home = backend.home(
        "[epoch]\nlength = 3600\nlead = 10\n[limits]\nnode_rate = 1000\nnode_burst = 10000\n",
    );
    home.init();
    let nodes: Vec<Arc<TestNode>> = (1..=NODES)
        .map(|i| Arc::new(TestNode::generate(&format!("crash-{i}"), i)))
        .collect();
    for node in &nodes {
        home.enroll(node);
    }
    let seed = seed();
    eprintln!("controller crash test: seed {seed} (MESHTUN_CRASH_SEED={seed} repeats it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next_seq = vec![1u64; nodes.len()];
    let mut tally = Tally::default();
    let mut first: Option<StoredEpoch> = None;
    let mut verified = 0;
    for round in 1..=ROUNDS {
        assert!(
            started.elapsed() < TIME_LIMIT,
            "round {round} would start after {TIME_LIMIT:?}"
        );
        let log = home.root().join(format!("serve-{round}.log"));
        let mut controller = home.serve("info", &log);
        let info = controller.wait_ready();
        if let Some(first) = &first {
            assert_eq!(
                info.current.epoch, first.id,
                "round {round}: /v1/epoch reports another epoch than the first start"
            );
        }
        let workers: Vec<_> = nodes
            .iter()
            .zip(&next_seq)
            .map(|(node, &seq)| {
                let (node, client) = (node.clone(), home.client());
                thread::spawn(move || submit_until_killed(&node, &client, seq))
            })
            .collect();
        let delay = rng.u64(0..=MAX_KILL_DELAY_MS);
        // The sleep is the test: the kill comes at a random point of the writes.
        thread::sleep(Duration::from_millis(delay));
        let status = controller.kill();
        assert!(
            status.is_some_and(|s| !s.success()),
            "round {round}: the controller had exited by itself ({status:?}) before the kill"
        );
        let mut acknowledged = 0;
        for ((node, worker), seq) in nodes.iter().zip(workers).zip(next_seq.iter_mut()) {
            let round_result = worker.join().expect("a submitting thread panicked");
            *seq = round_result.next_seq;
            acknowledged += tally.add(&node.id, round_result);
        }
        tally.delays_ms.push(delay);
        tally.acknowledged_per_round.push(acknowledged);
        let epoch = first.get_or_insert_with(|| {
            let epochs = backend.epochs(&home);
            assert_eq!(epochs.len(), 1, "the first start created {epochs:?}");
            assert_eq!(epochs[0].id, info.current.epoch);
            epochs[0].clone()
        });
        check_database(backend, &home, round, &tally, epoch);
        if round % VERIFY_EVERY == 0 {
            home.audit_verify();
            verified += 1;
        }
    }
    let report = home.audit_verify();
    assert!(
        tally.unexpected.is_empty(),
        "answers other than 201 to valid benchmarks: {:?}",
        tally.unexpected
    );
    let stored = backend.benchmarks(&home).len();
    let total = tally.acknowledged.len();
    assert!(
        total >= usize::try_from(ROUNDS).unwrap(),
        "only {total} benchmarks acknowledged in {ROUNDS} rounds: the submitters barely ran"
    );
    assert!(
        started.elapsed() < TIME_LIMIT,
        "took {:?}",
        started.elapsed()
    );
    eprintln!(
        "controller crash test: {ROUNDS} SIGKILLs in {:.1} s; {total} benchmarks acknowledged, \
         {stored} stored ({} committed without an answer), {} sent; epoch {} kept its secret; \
         audit verify passed {} times; final: {}",
        started.elapsed().as_secs_f64(),
        stored - total,
        tally.sent.len(),
        first.map_or(0, |e| e.id),
        verified + 1,
        report.trim()
    );
    eprintln!(
        "acknowledged per round: {:?}\nkill delays (ms): {:?}",
        tally.acknowledged_per_round, tally.delays_ms
    );
}
