//! Lease keepers of several instances on one database: never two leaders at once, a
//! crashed leader replaced within the lease plus a renew interval, a clean shutdown handed
//! over at once, and the cluster's status naming the leader and each instance's contact.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Db;
use crate::ha::{run_keeper, KeeperSettings, Leadership, LeaseTiming, Publish};

const LEASE: Duration = Duration::from_millis(900);

struct Running {
    leadership: Leadership,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

fn start(db: &Db, name: &str) -> Running {
    let leadership = Leadership::lease(name, LeaseTiming::new(LEASE));
    let (stop, stopped) = oneshot::channel::<()>();
    let settings = KeeperSettings {
        instance: name.into(),
        url: format!("http://{name}.example:8700"),
    };
    let task = tokio::spawn(run_keeper(
        db.connect(name),
        leadership.clone(),
        settings,
        async move {
            let _ = stopped.await;
        },
    ));
    Running {
        leadership,
        stop: Some(stop),
        task,
    }
}

/// Samples every 5 ms for `for_`: panics if two instances lead at once; returns the leader
/// seen last and when each instance was first seen leading.
async fn watch(instances: &[&Running], for_: Duration) -> Vec<Option<Instant>> {
    let end = Instant::now() + for_;
    let mut first = vec![None; instances.len()];
    while Instant::now() < end {
        let leading: Vec<usize> = instances
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.leadership.may_publish(), Publish::Leader(_)))
            .map(|(i, _)| i)
            .collect();
        assert!(leading.len() <= 1, "two leaders at once: {leading:?}");
        for i in leading {
            first[i].get_or_insert(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first
}

async fn until_leads(r: &Running, within: Duration) -> Duration {
    let started = Instant::now();
    while !matches!(r.leadership.may_publish(), Publish::Leader(_)) {
        assert!(
            started.elapsed() < within,
            "no leadership within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// Three keepers: exactly one leads. The leader crashes (its keeper dropped without
/// releasing): another takes over within L + L/3, and at no sample did two lead. Then the
/// new leader shuts down cleanly: the third takes over within one renew interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_keepers_never_let_two_instances_lead_and_fail_over_within_the_lease() {
    let Some(db) =
        tokio::task::block_in_place(|| Db::new("attack_keepers_never_let_two_instances_lead"))
    else {
        return;
    };
    let db = Arc::new(db);
    let mut all = vec![start(&db, "a"), start(&db, "b"), start(&db, "c")];
    let first = watch(
        &all.iter().collect::<Vec<_>>(),
        Duration::from_millis(1_000),
    )
    .await;
    let leaders: Vec<usize> = (0..3).filter(|&i| first[i].is_some()).collect();
    assert_eq!(leaders.len(), 1, "{first:?}");
    let crashed = all.remove(leaders[0]);
    let old_term = crashed.leadership.token().unwrap().term();
    crashed.task.abort();
    let crashed_at = Instant::now();
    let rest: Vec<&Running> = all.iter().collect();
    // The crashed instance's handle counts too: it must have stepped down before anyone
    // else leads.
    let mut watched = rest.clone();
    watched.push(&crashed);
    let seen = watch(&watched, LEASE + LEASE / 3 + Duration::from_millis(300)).await;
    let next = (0..2)
        .find(|&i| seen[i].is_some())
        .expect("nobody took over");
    let failover = seen[next].unwrap() - crashed_at;
    assert!(
        failover <= LEASE + LEASE / 3 + Duration::from_millis(200),
        "failover took {failover:?}"
    );
    let new_term = all[next].leadership.token().unwrap().term();
    assert!(new_term > old_term);
    // Clean shutdown of the new leader: the other takes over within a renew interval.
    let mut leaving = all.remove(next);
    leaving.stop.take().unwrap().send(()).unwrap();
    leaving.task.await.unwrap();
    assert!(!leaving.leadership.is_leader());
    let handover = until_leads(&all[0], LEASE).await;
    assert!(
        handover <= LEASE / 3 + Duration::from_millis(200),
        "handover took {handover:?}"
    );
    assert!(all[0].leadership.token().unwrap().term() > new_term);
    all[0].task.abort();
}

/// The status names the leader and every instance with its last contact; a silent
/// instance's contact ages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_status_names_the_leader_and_each_instances_last_contact() {
    let Some(db) = tokio::task::block_in_place(|| Db::new("the_cluster_status_names_the_leader"))
    else {
        return;
    };
    let a = start(&db, "a");
    until_leads(&a, LEASE).await;
    let b = start(&db, "b");
    tokio::time::sleep(LEASE / 2).await;
    let status = b.leadership.cluster().expect("b's keeper read the status");
    assert_eq!(status.leader.as_deref(), Some("a"));
    assert!(status.term >= 1);
    assert!(status.lease_left_ms > 0 && status.lease_left_ms <= LEASE.as_millis() as u64);
    let ids: Vec<&str> = status.instances.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(status.instances[0].leader && !status.instances[1].leader);
    assert_eq!(status.instances[1].url, "http://b.example:8700");
    for i in &status.instances {
        assert!(i.last_contact_ms < 1_000, "{i:?}");
    }
    a.task.abort();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let status = b.leadership.cluster().unwrap();
    assert_eq!(status.leader.as_deref(), Some("b"));
    let a_row = status.instances.iter().find(|i| i.id == "a").unwrap();
    assert!(a_row.last_contact_ms >= 1_000, "{a_row:?}");
    assert!(!a_row.leader);
    let leaders = tokio::task::block_in_place(|| {
        db.int("SELECT count(*) FROM controller_instances WHERE leader")
    });
    assert_eq!(leaders, 1);
    b.task.abort();
}
