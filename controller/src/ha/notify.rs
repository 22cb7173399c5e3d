//! New epochs wake every instance: the leader's publishing transaction sends
//! `NOTIFY meshtun_epoch, '<id>'` ([`notify_epoch`]), which PostgreSQL delivers to every
//! listening session only if, and when, the transaction commits. Each instance runs
//! [`run_listener`] on a dedicated connection and turns each notification into a [`Wake`]
//! on a tokio watch channel; the engine then loads the newest epochs from the database and
//! wakes its long-polls.
//!
//! Notifications sent while a listener is disconnected are lost, so every (re)connection
//! also sends [`Wake::Reconnected`], after which the engine re-reads the newest epoch.
//! Reconnections back off from [`MIN_BACKOFF`] to [`MAX_BACKOFF`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshtun_proto::report::Chain;
use meshtun_proto::EpochId;
use postgres::fallible_iterator::FallibleIterator as _;
use postgres::{Client, Transaction};
use tokio::sync::watch;

use super::{Connect, Ctx as _, HaError};

/// The channel epochs are announced on.
pub const EPOCH_CHANNEL: &str = "meshtun_epoch";

/// First wait before reconnecting a lost listener.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Longest wait between two reconnection attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long the listener waits for a notification before checking whether to stop.
const POLL: Duration = Duration::from_millis(200);

/// How often an idle listener checks that its connection still answers (a dead peer or a
/// cut network shows no error until something is sent).
const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// Most notifications taken in one pass (a flood still lets the listener check its stop flag).
const MAX_BATCH: usize = 1024;

/// Why the engine should look at the database's epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Nothing yet (the channel's initial value).
    Start,
    /// Epoch `id` was published (committed).
    Epoch(EpochId),
    /// The listener (re)connected: notifications may have been missed, read the newest.
    Reconnected,
}

/// Announces epoch `id` to every listening instance when `tx` commits (and never if it
/// rolls back).
pub fn notify_epoch(tx: &mut Transaction<'_>, id: EpochId) -> Result<(), HaError> {
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&EPOCH_CHANNEL, &id.to_string()],
    )
    .ctx(&format!("announcing epoch {id}"))
    .map(drop)
}

/// Listens for new epochs until dropped, reconnecting with backoff; sends a [`Wake`] for
/// every notification and every (re)connection. It ends only by being dropped; a panic in
/// it is passed on to whoever awaits it, so a supervisor sees it fail.
pub async fn run_listener(connect: Connect, wake: watch::Sender<Wake>) {
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(stop.clone());
    let mut backoff = MIN_BACKOFF;
    loop {
        let (c, w, s) = (connect.clone(), wake.clone(), stop.clone());
        let started = Instant::now();
        let session = tokio::task::spawn_blocking(move || listen(&c, &w, &s)).await;
        match session {
            Ok(Ok(())) => return,
            Ok(Err(error)) => {
                if started.elapsed() > MAX_BACKOFF {
                    backoff = MIN_BACKOFF;
                }
                tracing::error!(
                    error = %Chain(&error),
                    retry_in_ms = backoff.as_millis(),
                    "the epoch listener lost PostgreSQL; new epochs are not seen until it \
                     reconnects"
                );
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return,
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One session: connect, `LISTEN`, pass notifications on until `stop` (Ok) or an error.
fn listen(connect: &Connect, wake: &watch::Sender<Wake>, stop: &AtomicBool) -> Result<(), HaError> {
    let mut client = connect().ctx("connecting the epoch listener")?;
    client
        .batch_execute(&format!("LISTEN {EPOCH_CHANNEL}"))
        .ctx("LISTEN for new epochs")?;
    tracing::info!("listening for new epochs");
    wake.send_replace(Wake::Reconnected);
    let mut checked = Instant::now();
    while !stop.load(Ordering::Acquire) {
        for payload in next_batch(&mut client)? {
            match payload.parse::<EpochId>() {
                Ok(id) => wake.send_replace(Wake::Epoch(id)),
                Err(_) => {
                    tracing::warn!(
                        payload,
                        "a notification on {EPOCH_CHANNEL} is not an epoch id"
                    );
                    wake.send_replace(Wake::Reconnected)
                }
            };
        }
        if client.is_closed() {
            return Err(HaError::Corrupt {
                what: "listening for new epochs".into(),
                reason: "the server closed the connection".into(),
            });
        }
        if checked.elapsed() >= HEALTH_EVERY {
            client
                .is_valid(HEALTH_EVERY)
                .ctx("checking the epoch listener's connection")?;
            checked = Instant::now();
        }
    }
    Ok(())
}

/// The payloads of the notifications that arrive within [`POLL`] (at most [`MAX_BATCH`]).
fn next_batch(client: &mut Client) -> Result<Vec<String>, HaError> {
    let mut notifications = client.notifications();
    let mut it = notifications.timeout_iter(POLL);
    let mut batch = Vec::new();
    while let Some(n) = it.next().ctx("waiting for new epochs")? {
        batch.push(n.payload().to_owned());
        if batch.len() >= MAX_BATCH {
            break;
        }
    }
    Ok(batch)
}

/// Raises a flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}
