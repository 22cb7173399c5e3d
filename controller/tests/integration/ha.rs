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
        Self::start_polling(name, database, key, Duration::from_millis(300)).await
    }

    /// [`Instance::start`] with long-polls of `long_poll`.
    async fn start_polling(
        name: &str,
        database: &Database,
        key: &IdentityKey,
        long_poll: Duration,
    ) -> Self {
        let (database, key, instance) = (database.clone(), key.clone(), name.to_owned());
        let (engine, parts) = tokio::task::spawn_blocking(move || {
            let store = Arc::new(Store::connect(&database).expect("cannot open the store"));
            let parts = store.shared_parts(30_000).expect("PostgreSQL shares parts");
            let settings = EngineSettings {
                policy: Policy::default(),
                schedule: Schedule::new(2_000, 1_000).expect("schedule"),
                rotate_on_deny: true,
                relay: None,
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
                long_poll,
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
    let database = Database::parse(&cluster.url(&name), std::path::Path::new("/"), None).unwrap();
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

/// A relay between the controller and PostgreSQL's Unix socket that the test can cut, as a
/// partition would: the relayed connections are dropped and new ones refused.
struct Relay {
    dir: tempfile::TempDir,
    socket_dir: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    fn start(cluster: &meshtun_controller::temp_cluster::TempCluster) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = cluster.port();
        let socket = format!(".s.PGSQL.{port}");
        let listener = tokio::net::UnixListener::bind(dir.path().join(&socket)).unwrap();
        let target = cluster.socket_dir().join(&socket);
        let task = tokio::spawn(async move {
            let mut relayed = tokio::task::JoinSet::new();
            while let Ok((mut near, _)) = listener.accept().await {
                let target = target.clone();
                relayed.spawn(async move {
                    if let Ok(mut far) = tokio::net::UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut near, &mut far).await;
                    }
                });
            }
        });
        let socket_dir = cluster.socket_dir().to_owned();
        Self {
            dir,
            socket_dir,
            task,
        }
    }

    /// `cluster_url` (the cluster's URL of a database) through the relay.
    fn url(&self, cluster_url: &str) -> String {
        let encode = |p: &std::path::Path| p.display().to_string().replace('/', "%2F");
        cluster_url.replace(&encode(&self.socket_dir), &encode(self.dir.path()))
    }

    fn cut(&self) {
        self.task.abort();
    }
}

/// A node's long-poll parked on an instance that then loses its database ends at once
/// with 503, so the node moves to another instance, instead of hanging until its timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_long_poll_ends_with_503_when_its_instance_loses_the_database() {
    let Some(cluster) = temp_cluster::shared_or_skip("ha_parked_poll") else {
        return;
    };
    let name = cluster.create_database("ha_poll").unwrap();
    let relay = Relay::start(cluster);
    let relayed = relay.url(&cluster.url(&name));
    assert_ne!(relayed, cluster.url(&name));
    let database = Database::parse(&relayed, std::path::Path::new("/"), None).unwrap();
    let key = IdentityKey::generate();
    let store_db = database.clone();
    let nodes = tokio::task::spawn_blocking(move || {
        enroll(&Store::connect(&store_db).unwrap(), &["node-a"])
    })
    .await
    .unwrap();
    let long_poll = Duration::from_secs(30);
    let a = Instance::start_polling("a", &database, &key, long_poll).await;
    wait_for(Duration::from_secs(10), "a first epoch", || {
        a.newest_epoch().is_some()
    })
    .await;

    // Ask for an epoch far ahead: nothing newer comes, so the poll parks.
    let after = a.newest_epoch().unwrap() + 3_600_000;
    let path = format!("/v1/config/node-a?after={after}");
    let node = &nodes[0];
    let sig = meshtun_proto::auth::RequestSignature::sign(
        &node.identity,
        &key.public(),
        &node.id,
        "GET",
        &path,
        b"",
        meshtun_proto::time::unix_ms(),
    );
    let mut request = reqwest::Client::new().get(format!("{}{path}", a.url));
    for (header, value) in sig.headers() {
        request = request.header(header, value);
    }
    let poll = tokio::spawn(async move {
        let answer = request.send().await.unwrap();
        let status = answer.status();
        (status, answer.text().await.unwrap_or_default())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !poll.is_finished(),
        "the poll parks while the database answers"
    );

    relay.cut();
    let cut = Instant::now();
    let (status, body) = tokio::time::timeout(long_poll, poll)
        .await
        .expect("the parked poll was not ended when its instance lost the database")
        .unwrap();
    let took = cut.elapsed();
    eprintln!("parked poll ended {took:?} after the database was cut: {status} {body}");
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("lost its database"), "{body}");
    // Lost after a lease without answers, seen within a third of one more.
    assert!(took < LEASE * 2 + Duration::from_secs(1), "took {took:?}");
    a.crash();
}
