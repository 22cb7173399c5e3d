//! The acquire-or-renew statement under races.

use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use super::{expire_lease, Db};
use crate::ha::lease::{release, try_acquire};

const LONG: Duration = Duration::from_secs(60);

/// Eight instances race for the lease at the same instant, twelve times (the lease expired
/// behind the holder's back before each round): exactly one wins each round, and the terms
/// of the winners go up by exactly one per round.
#[test]
fn attack_instances_acquiring_at_once_exactly_one_wins_and_terms_increase() {
    let Some(db) = Db::new("attack_instances_acquiring_at_once") else {
        return;
    };
    const RACERS: usize = 8;
    const ROUNDS: usize = 12;
    let mut terms = Vec::new();
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|i| {
                let (barrier, mut client) = (barrier.clone(), db.client());
                thread::spawn(move || {
                    barrier.wait();
                    let me = format!("instance-{i}");
                    try_acquire(&mut client, &me, None, LONG)
                        .unwrap()
                        .map(|t| (me, t))
                })
            })
            .collect();
        let winners: Vec<(String, u64)> = racers
            .into_iter()
            .filter_map(|r| r.join().unwrap())
            .collect();
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        terms.push(winners[0].1);
        // While the winner holds it, nobody else gets it.
        let mut other = db.client();
        assert_eq!(
            try_acquire(&mut other, "latecomer", None, LONG).unwrap(),
            None
        );
        expire_lease(&db);
    }
    let expected: Vec<u64> = (1..=ROUNDS as u64).collect();
    assert_eq!(terms, expected, "terms must go up by one per new holder");
}

#[test]
fn a_renewal_keeps_the_term_and_a_holder_that_lost_track_gets_a_new_one() {
    let Some(db) = Db::new("renewal_keeps_the_term") else {
        return;
    };
    let mut a = db.client();
    let term = try_acquire(&mut a, "a", None, LONG).unwrap().unwrap();
    assert_eq!(
        try_acquire(&mut a, "a", Some(term), LONG).unwrap(),
        Some(term)
    );
    // Asking without a term (a restarted instance of the same name) starts a new term, so
    // tokens of the earlier holder stop fencing.
    assert_eq!(
        try_acquire(&mut a, "a", None, LONG).unwrap(),
        Some(term + 1)
    );
    // A renewal naming a term that is not the current one starts a new term too.
    assert_eq!(
        try_acquire(&mut a, "a", Some(term), LONG).unwrap(),
        Some(term + 2)
    );
    // An expired lease is not renewed in its term.
    expire_lease(&db);
    assert_eq!(
        try_acquire(&mut a, "a", Some(term + 2), LONG).unwrap(),
        Some(term + 3)
    );
}

#[test]
fn the_lease_expires_by_the_database_clock_and_release_hands_it_over_at_once() {
    let Some(db) = Db::new("lease_expires_by_the_database_clock") else {
        return;
    };
    let (mut a, mut b) = (db.client(), db.client());
    let t1 = try_acquire(&mut a, "a", None, Duration::from_millis(300))
        .unwrap()
        .unwrap();
    assert_eq!(try_acquire(&mut b, "b", None, LONG).unwrap(), None);
    thread::sleep(Duration::from_millis(350));
    let t2 = try_acquire(&mut b, "b", None, LONG).unwrap().unwrap();
    assert!(t2 > t1);
    // a's release of its old term does nothing.
    assert!(!release(&mut a, "a", t1).unwrap());
    assert_eq!(try_acquire(&mut a, "a", None, LONG).unwrap(), None);
    // b's release lets a in at once.
    assert!(release(&mut b, "b", t2).unwrap());
    let t3 = try_acquire(&mut a, "a", None, LONG).unwrap().unwrap();
    assert!(t3 > t2);
    let left = db.int(
        "SELECT (EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000)::bigint \
         FROM leader_lease",
    );
    assert!((55_000..=60_000).contains(&left), "{left} ms left");
}
