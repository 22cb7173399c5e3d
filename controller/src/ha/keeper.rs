//! The lease keeper: every `L/3` it acquires or renews the lease, heartbeats this instance
//! and reads the cluster's status, on its own connection, and feeds the answers to the
//! [`Leadership`] handle. At shutdown it releases the lease, so another instance can take
//! over within one renew interval.
//!
//! One database round runs at a time, in a blocking thread. A round that has not answered
//! within `L/3` counts as failed (the handle steps down at its local deadline whatever
//! happens), and no new round starts until it answers, so a dead network costs one thread.
//! The keeper's statements are bounded by `statement_timeout` and `lock_timeout` of `L/3`;
//! the [`Connect`] given should also bound connecting and TCP silence (`connect_timeout`,
//! `tcp_user_timeout`) to about that.

use std::future::Future;
use std::time::Duration;

use meshtun_proto::report::Chain;
use postgres::Client;

use super::instances::{cluster_status, heartbeat, ClusterStatus};
use super::lease::{release, try_acquire, Attempt, Change, LeaseTiming};
use super::{Connect, Ctx as _, HaError, Leadership};

/// Who this instance is, for the lease and the instances table.
#[derive(Debug, Clone)]
pub struct KeeperSettings {
    /// This instance's name (`[ha] instance`); must be unique among the instances.
    pub instance: String,
    /// The URL it serves nodes on (shown by `status`).
    pub url: String,
}

/// A connection held across `await`s. Closing a connection of the blocking driver blocks,
/// which panics on a runtime thread, so a parked connection is closed on a thread of its own.
#[derive(Default)]
struct Parked(Option<Client>);

impl Parked {
    fn take(&mut self) -> Option<Client> {
        self.0.take()
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return drop(client);
        }
        let slot = std::sync::Arc::new(parking_lot::Mutex::new(Some(client)));
        let theirs = slot.clone();
        let closing = std::thread::Builder::new()
            .name("pg-close".into())
            .spawn(move || drop(theirs.lock().take()));
        if closing.is_err() {
            // No thread to close it on: leave it to the process's exit.
            std::mem::forget(slot.lock().take());
        }
    }
}

/// What one round learnt.
struct Round {
    client: Parked,
    granted: Result<Option<u64>, HaError>,
    status: Option<ClusterStatus>,
}

/// Keeps `leadership`'s lease until `shutdown` completes, then releases it. A panic in a
/// round is passed on to whoever awaits this, so a supervisor sees it fail.
pub async fn run_keeper(
    connect: Connect,
    leadership: Leadership,
    settings: KeeperSettings,
    shutdown: impl Future<Output = ()>,
) {
    let Some(timing) = leadership.timing() else {
        return; // The sole instance has no lease.
    };
    tokio::pin!(shutdown);
    let every = timing.renew_every();
    let mut client = Parked::default();
    let mut first = true;
    loop {
        let started = tokio::time::Instant::now();
        let Some(attempt) = leadership.attempt() else {
            return;
        };
        let (c, s) = (connect.clone(), settings.clone());
        let mut taken = std::mem::take(&mut client);
        let mut job = tokio::task::spawn_blocking(move || {
            round(taken.take(), &c, &s, attempt, timing, first)
        });
        let done = loop {
            tokio::select! {
                done = &mut job => break Some(done),
                () = tokio::time::sleep(every) => {
                    tracing::warn!("the lease keeper's PostgreSQL round has not answered in {every:?}");
                    log(&settings, leadership.failed());
                    leadership.check_database();
                }
                () = &mut shutdown => break None,
            }
        };
        let round = match done {
            None => break,
            Some(Ok(round)) => round,
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Some(Err(_)) => break,
        };
        client = round.client;
        let change = match round.granted {
            Ok(Some(term)) => leadership.granted(attempt, term),
            Ok(None) => leadership.refused(),
            Err(error) => {
                tracing::error!(error = %Chain(&error), "cannot renew the leader lease");
                leadership.failed()
            }
        };
        log(&settings, change);
        leadership.check_database();
        if let Some(status) = round.status {
            leadership.set_cluster(status);
            first = false;
        }
        tokio::select! {
            () = tokio::time::sleep_until(started + every) => {}
            () = &mut shutdown => break,
        }
    }
    step_down(connect, &leadership, &settings, client, every).await;
}

/// Releases the lease at shutdown: locally at once, in the database within `within`.
async fn step_down(
    connect: Connect,
    leadership: &Leadership,
    settings: &KeeperSettings,
    mut client: Parked,
    within: Duration,
) {
    let Some(term) = leadership.release() else {
        return;
    };
    let instance = settings.instance.clone();
    let job = tokio::task::spawn_blocking(move || {
        let mut client = match client.take() {
            Some(c) if !c.is_closed() => c,
            _ => open(&connect, within)?,
        };
        release(&mut client, &instance, term)
    });
    match tokio::time::timeout(within, job).await {
        Ok(Ok(Ok(_))) => tracing::info!(term, "released the leader lease"),
        Ok(Ok(Err(error))) => {
            tracing::warn!(error = %Chain(&error), "cannot release the leader lease; it expires")
        }
        _ => tracing::warn!("releasing the leader lease timed out; it expires"),
    }
}

/// One round: (re)connect if needed, acquire or renew, heartbeat, read the status.
fn round(
    client: Option<Client>,
    connect: &Connect,
    settings: &KeeperSettings,
    attempt: Attempt,
    timing: LeaseTiming,
    first: bool,
) -> Round {
    let mut client = match client {
        Some(c) if !c.is_closed() => c,
        _ => match open(connect, timing.renew_every()) {
            Ok(c) => c,
            Err(e) => {
                return Round {
                    client: Parked(None),
                    granted: Err(e),
                    status: None,
                }
            }
        },
    };
    let granted = try_acquire(
        &mut client,
        &settings.instance,
        attempt.term,
        timing.lease(),
    );
    if granted.is_err() {
        return Round {
            client: Parked(None),
            granted,
            status: None,
        };
    }
    let leader = matches!(granted, Ok(Some(_)));
    let status = heartbeat(
        &mut client,
        &settings.instance,
        &settings.url,
        leader,
        first,
    )
    .and_then(|()| cluster_status(&mut client))
    .inspect_err(
        |error| tracing::warn!(error = %Chain(error), "cannot record this instance's heartbeat"),
    )
    .ok();
    Round {
        client: Parked(Some(client)),
        granted,
        status,
    }
}

/// A new keeper connection whose statements and lock waits are bounded by `bound`.
fn open(connect: &Connect, bound: Duration) -> Result<Client, HaError> {
    let mut client = connect().ctx("connecting the lease keeper")?;
    let ms = bound.as_millis().max(1);
    client
        .batch_execute(&format!(
            "SET statement_timeout = {ms}; SET lock_timeout = {ms}; \
             SET idle_in_transaction_session_timeout = {ms}"
        ))
        .ctx("bounding the lease keeper's statements")?;
    Ok(client)
}

fn log(settings: &KeeperSettings, change: Change) {
    let instance = settings.instance.as_str();
    match change {
        Change::Acquired { term } => {
            tracing::info!(instance, term, "this instance leads now (term {term})")
        }
        Change::SteppedDown { term, why } => {
            tracing::warn!(instance, term, "this instance no longer leads: {why}")
        }
        Change::None | Change::Renewed => {}
    }
}
