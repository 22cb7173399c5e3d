//! Attacks on the PostgreSQL backend that only a shared server allows: several controller
//! instances (store handles with pools of their own) writing one database at once.

use std::sync::{Arc, Barrier};
use std::thread;

use super::super::testutil::{bench_path, benchmark, controller, node, query_strings};
use super::super::{Store, StoreError};
use crate::model::{EpochRecord, Policy};
use meshtun_proto::EpochSecret;

/// Two handles on one fresh database of the shared cluster, or `None` when skipped.
fn two_instances(test: &str) -> Option<[Arc<Store>; 2]> {
    let cluster = crate::temp_cluster::shared_or_skip(test)?;
    let db = cluster.create_database("race").unwrap();
    let target = super::PgTarget {
        url: cluster.url(&db),
        password_file: None,
    };
    Some([
        Arc::new(Store::connect_postgres(&target).unwrap()),
        Arc::new(Store::connect_postgres(&target).unwrap()),
    ])
}

fn epoch(id: u64, writer: u8) -> EpochRecord {
    EpochRecord {
        id,
        secret: EpochSecret::from_bytes([writer; 32]),
        activation_ms: id * 1000,
        not_after_ms: id * 1000 + 1000,
        created_ms: id * 1000,
        cause: format!("writer {writer}"),
    }
}

#[test]
fn attack_two_instances_racing_for_the_same_epoch_ids_store_each_once() {
    let Some(stores) = two_instances("attack_two_instances_racing_for_the_same_epoch_ids")
    else {
        return;
    };
    const IDS: u64 = 30;
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4u8)
        .map(|writer| {
            let store = stores[usize::from(writer % 2)].clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let mut won = Vec::new();
                for id in 1..=IDS {
                    match store.insert_epoch(&epoch(id, writer), &[], &[], &Policy::default(), 0) {
                        Ok(()) => won.push(id),
                        Err(StoreError::EpochNotNewer { .. }) => {}
                        Err(e) => panic!("writer {writer}, epoch {id}: {e}"),
                    }
                }
                won
            })
        })
        .collect();
    let mut won: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    won.sort_unstable();
    // Every id stored once, by one writer, with that writer's secret only.
    assert_eq!(won, (1..=IDS).collect::<Vec<_>>());
    assert_eq!(
        stores[0].epoch_ids().unwrap(),
        (1..=IDS).rev().collect::<Vec<_>>()
    );
    let rows = query_strings(
        &stores[1],
        "SELECT CAST(COUNT(*) AS TEXT) FROM epochs GROUP BY id HAVING COUNT(*) > 1",
    );
    assert!(rows.is_empty(), "{rows:?}");
    let report = stores[1].verify_audit(&controller()).unwrap();
    assert_eq!(report.entries, IDS);
}

#[test]
fn attack_two_instances_appending_at_once_keep_one_unbroken_chain() {
    let Some(stores) = two_instances("attack_two_instances_appending_at_once") else {
        return;
    };
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4u8)
        .map(|i| {
            let store = stores[usize::from(i % 2)].clone();
            let barrier = barrier.clone();
            thread::spawn(move || {
                let id = format!("node-{i}");
                let (n, key) = node(&id, i + 1);
                barrier.wait();
                store.add_node(&n).unwrap();
                for seq in 1..=25 {
                    let (rec, body, sig) = benchmark(&key, &id, seq, 0.9);
                    store
                        .insert_benchmark(&controller(), &rec, &body, &sig, &bench_path(&id))
                        .unwrap();
                    // The same benchmark replayed through the other instance is refused.
                    let err = store
                        .insert_benchmark(&controller(), &rec, &body, &sig, &bench_path(&id))
                        .unwrap_err();
                    assert!(matches!(err, StoreError::Replay { .. }), "{err}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let report = stores[1].verify_audit(&controller()).unwrap();
    assert_eq!(report.entries, 4 + 100);
    assert_eq!(report.signatures_verified, 100);
    assert_eq!(stores[0].latest_benchmarks().unwrap().len(), 4);
}

#[test]
fn every_connection_commits_synchronously() {
    let Some(stores) = two_instances("every_connection_commits_synchronously") else {
        return;
    };
    assert_eq!(
        query_strings(&stores[0], "SHOW synchronous_commit"),
        ["on"]
    );
    assert!(stores[0].location().starts_with("postgres://meshtun@/"));
}

#[test]
fn a_newer_schema_is_refused_clearly() {
    let Some(stores) = two_instances("pg_a_newer_schema_is_refused_clearly") else {
        return;
    };
    super::super::testutil::execute(&stores[0], "UPDATE meshtun_schema SET version = 99")
        .unwrap();
    let cluster = crate::temp_cluster::TempCluster::shared().unwrap();
    let db = stores[0].location().rsplit('/').next().unwrap().to_owned();
    let err = Store::connect_postgres(&super::PgTarget {
        url: cluster.url(&db),
        password_file: None,
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("schema version 99"), "{err}");
    assert!(err.contains("use a newer meshtun-controller"), "{err}");
}
