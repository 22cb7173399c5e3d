//! The bench's PostgreSQL path, on a tiny mesh, so that it cannot rot unnoticed: its own
//! durable cluster, every figure measured, and the data really in PostgreSQL.

use clap::Parser as _;
use meshtun_testbed::postgres::{required, start_or_skip, Options};

use super::*;

const NODES: usize = 6;

fn tiny(database: &str) -> Args {
    Args::parse_from([
        "meshtun-controller-bench",
        "--database",
        database,
        "--only",
        "full-mesh",
        "--mesh-nodes",
        &NODES.to_string(),
        "--seconds",
        "1",
        "--clients",
        "2",
        "--rotations",
        "2",
    ])
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Checks one row's figures: everything built, served and stored, nothing failed.
fn check_row(row: &Row) {
    assert_eq!(row.nodes, NODES);
    assert!(row.rotation > Duration::ZERO);
    assert_eq!(row.build.count, NODES);
    assert_eq!(row.build.peers, NODES * (NODES - 1), "every pair sealed");
    let (label, serving) = &row.serving[0];
    assert!(serving.ok > 0 && serving.failed == 0, "serving {label}");
    let s = &row.submissions;
    assert!(s.ok > 0 && s.failed == 0, "{} failed submissions", s.failed);
    assert!(!s.exhausted, "a one-second run needs fewer submissions");
    // On a mesh this small the bundles may all be built before the waiting long-poll is
    // answered; then it gets the bundle, and no notice is needed.
    assert!(
        row.deny
            .notice
            .is_none_or(|notice| notice <= row.deny.bundles),
        "notice after {:?}, bundles after {:?}",
        row.deny.notice,
        row.deny.bundles
    );
}

/// The SQLite path, with the deny: its notice (unless the bundles came first) and its bundle.
#[test]
fn the_sqlite_path_measures_a_tiny_mesh_and_its_deny() {
    let args = tiny("sqlite");
    let backend = Backend::start(Kind::Sqlite, None, None).unwrap();
    let rows = run_backend(&args, &backend, &runtime()).unwrap();
    assert_eq!(rows.len(), 1);
    check_row(&rows[0]);
    report::print_table(backend.name(), &backend.describe(), &rows, &args);
}

#[test]
fn the_postgres_path_measures_a_tiny_mesh_in_its_own_durable_cluster() {
    let args = tiny("postgres");
    assert_eq!(kinds(&args).unwrap(), vec![Kind::Postgres]);
    let backend = match Backend::start(Kind::Postgres, None, None) {
        Ok(backend) => backend,
        Err(e) if required() => panic!("PostgreSQL is required under CI=true: {e:#}"),
        Err(e) => {
            eprintln!("SKIPPED the bench's PostgreSQL path: {e:#}");
            return;
        }
    };
    let Backend::OwnCluster(cluster) = &backend else {
        panic!("no cluster of its own");
    };
    let description = backend.describe();
    assert!(description.contains("fsync=on"), "{description}");
    assert!(
        description.contains("synchronous_commit=on"),
        "{description}"
    );
    let rows = run_backend(&args, &backend, &runtime()).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    check_row(row);
    report::print_table(backend.name(), &description, &rows, &args);
    // What was measured went to PostgreSQL: the setup's benchmark per node, every
    // acknowledged submission, and the rotations' epochs.
    let databases = cluster
        .psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname LIKE 'bench_mesh%'",
        )
        .unwrap();
    let lines: Vec<&str> = databases.lines().collect();
    assert_eq!(lines.len(), 1, "one database per scenario: {databases}");
    let count = |sql: &str| -> usize { cluster.psql(lines[0], sql).unwrap().parse().unwrap() };
    assert_eq!(
        count("SELECT count(*) FROM benchmarks"),
        NODES + row.submissions.ok
    );
    // The two timed rotations and the deny's.
    assert_eq!(count("SELECT count(*) FROM epochs"), 3);
}

#[test]
fn database_url_measures_an_empty_database_once_and_refuses_one_with_data() {
    let Some(cluster) = start_or_skip("bench --database-url", Options::default()) else {
        return;
    };
    let db = cluster.create_database("bench_url").unwrap();
    let url = cluster.url(&db);
    let mut args = tiny("postgres");
    args.database_url = Some(url.clone());
    let backend = Backend::start(Kind::Postgres, Some(&url), None).unwrap();
    assert!(matches!(backend, Backend::Server { .. }));
    let rows = run_backend(&args, &backend, &runtime()).unwrap();
    check_row(&rows[0]);
    // One scenario per database: a second one on the same backend is refused...
    let Err(err) = run_backend(&args, &backend, &runtime()) else {
        panic!("a second scenario ran on the same database");
    };
    assert!(format!("{err:#}").contains("one scenario"), "{err:#}");
    // ...and so is a database that already holds a controller's state.
    drop(backend);
    let again = Backend::start(Kind::Postgres, Some(&url), None).unwrap();
    let Err(err) = run_backend(&args, &again, &runtime()) else {
        panic!("a scenario ran on a database holding nodes");
    };
    assert!(format!("{err:#}").contains("empty"), "{err:#}");
    let nodes: usize = cluster
        .psql(&db, "SELECT count(*) FROM nodes")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(nodes, NODES, "the refused runs added nothing");
}

#[test]
fn database_url_means_postgres_and_one_chosen_scenario() {
    let parse = |extra: &[&str]| {
        let mut argv = vec!["meshtun-controller-bench"];
        argv.extend_from_slice(extra);
        kinds(&Args::parse_from(argv))
    };
    assert_eq!(parse(&[]).unwrap(), vec![Kind::Sqlite, Kind::Postgres]);
    assert_eq!(
        parse(&["--database", "sqlite"]).unwrap(),
        vec![Kind::Sqlite]
    );
    let url = "postgres://bench@localhost/bench";
    let err = parse(&["--database-url", url]).unwrap_err().to_string();
    assert!(err.contains("--only"), "{err}");
    let err = parse(&[
        "--database-url",
        url,
        "--only",
        "full-mesh",
        "--database",
        "sqlite",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("PostgreSQL"), "{err}");
    assert_eq!(
        parse(&["--database-url", url, "--only", "full-mesh"]).unwrap(),
        vec![Kind::Postgres]
    );
}

#[test]
fn a_cluster_without_fsync_is_refused() {
    let Some(cluster) = start_or_skip("bench fsync check", Options::default()) else {
        return;
    };
    let err = Backend::OwnCluster(cluster).check_durable().unwrap_err();
    assert!(err.to_string().contains("fsync=off"), "{err:#}");
}
