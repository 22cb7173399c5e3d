//! The epoch listener: a committed publication wakes it, a rolled-back one does not, and a
//! lost connection is re-made and announced so the engine re-reads the newest epoch.

use std::time::Duration;

use tokio::sync::watch;

use super::{publish, Db};
use crate::ha::lease::try_acquire;
use crate::ha::{notify_epoch, run_listener, LeaseToken, Wake};

const WAIT: Duration = Duration::from_secs(5);

async fn next(rx: &mut watch::Receiver<Wake>) -> Wake {
    tokio::time::timeout(WAIT, rx.changed())
        .await
        .expect("no wake within 5 s")
        .expect("listener gone");
    *rx.borrow_and_update()
}

async fn quiet(rx: &mut watch::Receiver<Wake>, for_: Duration) {
    let woke = tokio::time::timeout(for_, rx.changed()).await;
    assert!(woke.is_err(), "unexpected wake {:?}", *rx.borrow());
}

fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::task::JoinHandle<T> {
    tokio::task::spawn_blocking(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_epoch_wakes_every_listener_and_a_rollback_wakes_none() {
    let Some(db) =
        tokio::task::block_in_place(|| Db::new("a_committed_epoch_wakes_every_listener"))
    else {
        return;
    };
    let db = std::sync::Arc::new(db);
    let (tx_a, mut rx_a) = watch::channel(Wake::Start);
    let (tx_b, mut rx_b) = watch::channel(Wake::Start);
    let a = tokio::spawn(run_listener(db.connect("listener-a"), tx_a));
    let b = tokio::spawn(run_listener(db.connect("listener-b"), tx_b));
    assert_eq!(next(&mut rx_a).await, Wake::Reconnected);
    assert_eq!(next(&mut rx_b).await, Wake::Reconnected);
    let d = db.clone();
    blocking(move || {
        let mut client = d.client();
        let mut tx = client.transaction().unwrap();
        notify_epoch(&mut tx, 41).unwrap();
        tx.rollback().unwrap();
    })
    .await
    .unwrap();
    quiet(&mut rx_a, Duration::from_millis(400)).await;
    let d = db.clone();
    blocking(move || {
        let mut client = d.client();
        let term = try_acquire(&mut client, "leader", None, Duration::from_secs(60))
            .unwrap()
            .unwrap();
        publish(&mut client, &LeaseToken::new("leader", term), 42).unwrap();
    })
    .await
    .unwrap();
    assert_eq!(next(&mut rx_a).await, Wake::Epoch(42));
    assert_eq!(next(&mut rx_b).await, Wake::Epoch(42));
    a.abort();
    b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_connection_is_killed_reconnects_and_says_so() {
    let Some(db) = tokio::task::block_in_place(|| Db::new("a_listener_whose_connection_is_killed"))
    else {
        return;
    };
    let db = std::sync::Arc::new(db);
    let (tx, mut rx) = watch::channel(Wake::Start);
    let listener = tokio::spawn(run_listener(db.connect("listener-killed"), tx));
    assert_eq!(next(&mut rx).await, Wake::Reconnected);
    let d = db.clone();
    let killed = blocking(move || {
        d.int(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'listener-killed'",
        )
    })
    .await
    .unwrap();
    assert_eq!(killed, 1);
    let started = tokio::time::Instant::now();
    assert_eq!(next(&mut rx).await, Wake::Reconnected);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let d = db.clone();
    blocking(move || {
        let mut client = d.client();
        let mut tx = client.transaction().unwrap();
        notify_epoch(&mut tx, 43).unwrap();
        tx.commit().unwrap();
    })
    .await
    .unwrap();
    assert_eq!(next(&mut rx).await, Wake::Epoch(43));
    // Dropping the listener stops it: its session ends.
    listener.abort();
    let d = db.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let d = d.clone();
        let left = blocking(move || {
            d.int(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'listener-killed'",
            )
        })
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener's session stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
