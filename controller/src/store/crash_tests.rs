//! Crash consistency: a writer process is killed with SIGKILL at random moments; every
//! benchmark it acknowledged must survive, and the audit chain must still verify.
//!
//! The writer is this same test binary, started with [`WRITER_DB`] set, running this same
//! test, which then acts as the writer instead of the parent.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore as _};

use super::testutil::{bench_path, benchmark, node};
use super::{Database, Store};

/// Set in the writer's environment: the database it writes to (a path or a URL).
const WRITER_DB: &str = "MESHTUN_STORE_CRASH_WRITER_DB";
/// The test's own name, to start it again as the writer.
const TEST_NAME: &str = "kill_during_writes_loses_no_acknowledged_benchmark";
/// The same test on PostgreSQL.
const PG_TEST_NAME: &str = "kill_during_writes_on_postgres_loses_no_acknowledged_benchmark";
/// Kill rounds.
const ROUNDS: usize = 24;
/// Longest random delay between the writer's first acknowledgement and the kill.
const MAX_DELAY_MS: u64 = 150;
/// A writer left running stops by itself after this long.
const WRITER_LIFETIME: Duration = Duration::from_secs(20);

#[test]
fn kill_during_writes_loses_no_acknowledged_benchmark() {
    match std::env::var(WRITER_DB) {
        Ok(db) => write_until_killed(&db),
        Err(_) => {
            let dir = tempfile::tempdir().unwrap();
            let db = dir.path().join("crash.db");
            kill_repeatedly(TEST_NAME, &db.display().to_string());
        }
    }
}

#[test]
fn kill_during_writes_on_postgres_loses_no_acknowledged_benchmark() {
    match std::env::var(WRITER_DB) {
        Ok(db) => write_until_killed(&db),
        Err(_) => {
            let Some(cluster) = crate::temp_cluster::shared_or_skip(PG_TEST_NAME) else {
                return;
            };
            let db = cluster.create_database("crash").unwrap();
            kill_repeatedly(PG_TEST_NAME, &cluster.url(&db));
        }
    }
}

fn open(db: &str) -> Store {
    Store::connect(&Database::parse(db, Path::new("/"), None).unwrap()).unwrap()
}

/// The writer: inserts benchmarks for node-a and prints `ACK <seq>` after each commit.
fn write_until_killed(db: &str) {
    let store = open(db);
    let (record, key) = node("node-a", 1);
    if store.node("node-a").unwrap().is_none() {
        store.add_node(&record).unwrap();
    }
    let mut seq = store
        .benchmarks("node-a", 1)
        .unwrap()
        .first()
        .map_or(0, |b| b.seq);
    let mut out = std::io::stdout().lock();
    let deadline = Instant::now() + WRITER_LIFETIME;
    while Instant::now() < deadline {
        seq += 1;
        let (bench, body, sig) = benchmark(&key, "node-a", seq, 0.8);
        let stored = store.insert_benchmark(
            &crate::store::testutil::controller(),
            &bench,
            &body,
            &sig,
            &bench_path("node-a"),
        );
        match stored {
            Ok(()) => {}
            // On PostgreSQL, the killed writer's last COMMIT may reach the server and commit
            // after this writer read the newest seq (it was never acknowledged): go past it.
            Err(super::StoreError::Replay { latest, .. }) => {
                seq = latest;
                continue;
            }
            Err(e) => panic!("{e}"),
        }
        writeln!(out, "ACK {seq}").unwrap();
        out.flush().unwrap();
    }
}

/// On PostgreSQL, the server ends a killed client's sessions a moment later, and may still
/// commit the transaction whose `COMMIT` it had received (never acknowledged): wait for
/// that, so the checks below read one settled state.
fn wait_for_the_killed_writers_sessions(store: &Store) {
    if !store.is_postgres() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let others = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
                  AND pid <> pg_backend_pid()";
    while super::testutil::query_i64(store, others) > 0 {
        assert!(
            Instant::now() < deadline,
            "the killed writer's sessions linger"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// Kills the child when dropped, so a failing assertion leaves no writer behind.
struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_writer(test: &str, db: &str) -> (Writer, mpsc::Receiver<u64>) {
    let exe = std::env::current_exe().unwrap();
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let mut child = Command::new(exe)
        .args([
            &format!("{module}::{test}"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WRITER_DB, db)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        // Only whole lines count: a line cut by the kill was never acknowledged.
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(seq) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ACK ")) {
                let _ = tx.send(seq.parse().unwrap());
            }
            line.clear();
        }
    });
    (Writer(child), rx)
}

fn kill_repeatedly(test: &str, db: &str) {
    let started = Instant::now();
    let mut acked = BTreeSet::new();
    for round in 0..ROUNDS {
        let (mut writer, acks) = spawn_writer(test, db);
        let first = acks
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("round {round}: the writer acknowledged nothing: {e}"));
        acked.insert(first);
        thread::sleep(Duration::from_millis(OsRng.next_u64() % (MAX_DELAY_MS + 1)));
        writer.0.kill().unwrap();
        writer.0.wait().unwrap();
        // The reader thread ends at EOF, dropping the sender.
        acked.extend(acks.iter());

        let store = open(db);
        wait_for_the_killed_writers_sessions(&store);
        let stored: BTreeSet<u64> = store
            .benchmarks("node-a", usize::MAX)
            .unwrap()
            .into_iter()
            .map(|b| b.seq)
            .collect();
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged but lost: {lost:?}"
        );
        let report = store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        // Each benchmark and its audit entry were committed together, or neither was.
        assert_eq!(
            report.signatures_verified,
            stored.len() as u64,
            "round {round}"
        );
    }
    assert!(
        acked.len() > ROUNDS,
        "the writers acknowledged only {}",
        acked.len()
    );
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
