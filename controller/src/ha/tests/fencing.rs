//! Fencing: a deposed or expired leader's late publication fails, and one epoch id never
//! gets two secrets.

use std::thread;
use std::time::{Duration, Instant};

use super::{expire_lease, publish, Db, PublishError};
use crate::ha::lease::try_acquire;
use crate::ha::{FenceError, LeaseToken};

const LONG: Duration = Duration::from_secs(60);

fn acquire(db: &Db, who: &str) -> LeaseToken {
    let term = try_acquire(&mut db.client(), who, None, LONG)
        .unwrap()
        .expect("lease free");
    LeaseToken::new(who, term)
}

/// True if the publication failed on the epoch id's primary key.
fn duplicate(published: Result<(), PublishError>) -> bool {
    matches!(published, Err(PublishError::Sql(e))
        if e.code() == Some(&postgres::error::SqlState::UNIQUE_VIOLATION))
}

fn secrets_of(db: &Db, id: i64) -> i64 {
    db.int(&format!("SELECT count(*) FROM test_epochs WHERE id = {id}"))
}

/// Leader a is deposed while it is paused (its lease expires behind its back and b takes
/// over); when it wakes, its publication with its old token is refused, and b's goes
/// through. A forged token (b's name, a's term; or a term from the future) is refused too.
#[test]
fn attack_a_deposed_leaders_late_publish_is_refused() {
    let Some(db) = Db::new("attack_deposed_leaders_late_publish") else {
        return;
    };
    let mut client = db.client();
    let a = acquire(&db, "a");
    publish(&mut client, &a, 1).unwrap();
    expire_lease(&db);
    let b = acquire(&db, "b");
    assert!(b.term() > a.term());
    let late = publish(&mut client, &a, 2).unwrap_err();
    assert!(
        matches!(&late, PublishError::Fence(FenceError::Deposed { holder, term, .. })
            if holder == "b" && *term == b.term()),
        "{late:?}"
    );
    for forged in [
        LeaseToken::new("b", a.term()),
        LeaseToken::new("a", b.term()),
        LeaseToken::new("b", b.term() + 1),
    ] {
        let refused = publish(&mut client, &forged, 2).unwrap_err();
        assert!(matches!(
            refused,
            PublishError::Fence(FenceError::Deposed { .. })
        ));
    }
    publish(&mut client, &b, 2).unwrap();
    assert_eq!(secrets_of(&db, 2), 1);
    let publisher: String = client
        .query_one("SELECT publisher FROM test_epochs WHERE id = 2", &[])
        .unwrap()
        .get(0);
    assert_eq!(publisher, "b");
}

/// A leader whose lease expired while it was paused, with nobody taking over yet, is
/// refused by the database's clock.
#[test]
fn attack_an_expired_leaders_publish_is_refused_even_if_nobody_took_over() {
    let Some(db) = Db::new("attack_expired_leaders_publish") else {
        return;
    };
    let mut client = db.client();
    let a = acquire(&db, "a");
    expire_lease(&db);
    let refused = publish(&mut client, &a, 1).unwrap_err();
    assert!(
        matches!(refused, PublishError::Fence(FenceError::Expired { .. })),
        "{refused:?}"
    );
    assert_eq!(secrets_of(&db, 1), 0);
}

/// The epoch id is the primary key: once published, the same id cannot be published again,
/// by the same leader or the next one, so an epoch never has two secrets.
#[test]
fn attack_one_epoch_id_never_gets_two_secrets() {
    let Some(db) = Db::new("attack_one_epoch_id_never_gets_two_secrets") else {
        return;
    };
    let mut client = db.client();
    let a = acquire(&db, "a");
    publish(&mut client, &a, 7).unwrap();
    assert!(duplicate(publish(&mut client, &a, 7)));
    expire_lease(&db);
    let b = acquire(&db, "b");
    assert!(duplicate(publish(&mut client, &b, 7)));
    assert_eq!(secrets_of(&db, 7), 1);
}

/// Leader a fences and inserts, then stalls inside its transaction (a pause, a slow
/// network) past its lease. Its lock on the lease row holds b off only until the server
/// ends a's idle transaction at the lease's end; then b takes over, a's commit fails, and
/// the epoch has b's secret only.
#[test]
fn attack_a_leader_stalled_inside_its_publication_cannot_commit_after_takeover() {
    let Some(db) = Db::new("attack_leader_stalled_inside_its_publication") else {
        return;
    };
    let lease = Duration::from_millis(800);
    let mut a_client = db.client();
    let a_term = try_acquire(&mut a_client, "a", None, lease)
        .unwrap()
        .unwrap();
    let a = LeaseToken::new("a", a_term);
    let started = Instant::now();
    let stalled = thread::spawn(move || {
        let mut tx = a_client.transaction().unwrap();
        crate::ha::fence(&mut tx, &a).unwrap();
        tx.execute(
            "INSERT INTO test_epochs (id, secret, publisher, term) VALUES (5, 'a', 'a', $1)",
            &[&(a.term() as i64)],
        )
        .unwrap();
        thread::sleep(Duration::from_millis(1_500));
        tx.commit()
    });
    let mut b_client = db.client();
    b_client.batch_execute("SET lock_timeout = 100").unwrap();
    let b_term = loop {
        match try_acquire(&mut b_client, "b", None, Duration::from_secs(60)) {
            Ok(Some(term)) => break term,
            Ok(None) | Err(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "b never took over"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let took_over = started.elapsed();
    assert!(b_term > a_term);
    assert!(
        took_over >= lease - Duration::from_millis(100) && took_over < Duration::from_millis(1_400),
        "takeover after {took_over:?}"
    );
    let committed = stalled.join().unwrap();
    assert!(committed.is_err(), "a's stalled publication committed");
    publish(&mut b_client, &LeaseToken::new("b", b_term), 5).unwrap();
    assert_eq!(secrets_of(&db, 5), 1);
    assert_eq!(
        db.int("SELECT term FROM test_epochs WHERE id = 5"),
        b_term as i64
    );
}
