//! A deny at scale: how long after the rotation that denies one node a node long-polling
//! for the new epoch is served the cut-off notice, and how long until the epoch's bundles
//! are all built and announced, with the engine running as `serve` runs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use meshtun_controller::engine::cutoff::Served;
use meshtun_controller::engine::Engine;
use meshtun_controller::model::Pin;

use crate::setup::SimNode;

/// The two times of one deny, from the start of its rotation.
pub struct DenyTiming {
    /// Until a waiting long-poll that asks for notices was served the cut-off notice; `None`
    /// when the epoch's bundles were announced first (a mesh small enough to build them all
    /// before that long-poll was answered: it was served the bundle).
    pub notice: Option<Duration>,
    /// Until a waiting long-poll was served the new epoch's bundle (every bundle built).
    pub bundles: Duration,
}

/// Denies the first node (pins it) with the engine running, while the second node
/// long-polls twice: once asking for notices, once not.
pub fn measure(
    engine: &Arc<Engine>,
    nodes: &[SimNode],
    runtime: &tokio::runtime::Runtime,
) -> Result<DenyTiming> {
    let (Some(victim), Some(watcher)) = (nodes.first(), nodes.get(1)) else {
        bail!("a deny needs two nodes");
    };
    let held = engine.newest_epoch_id().context("no epoch yet")?;
    runtime.block_on(async {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(engine.clone().run(async {
            let _ = stopped.await;
        }));
        // Let the engine's first round (nothing due, everything prebuilt) pass.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let wait = |seen: u64| {
            let (engine, id) = (engine.clone(), watcher.id.clone());
            tokio::spawn(async move {
                let served = engine
                    .wait_served(&id, Some(held), Some(seen), Duration::from_secs(60))
                    .await;
                (served, Instant::now())
            })
        };
        let (notice_poll, bundle_poll) = (wait(0), wait(u64::MAX));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The store may block (PostgreSQL's client): never on a runtime worker.
        let (e, id) = (engine.clone(), victim.id.clone());
        let started = Instant::now();
        tokio::task::spawn_blocking(move || e.store().set_pin(&id, Some(Pin::Deny))).await??;
        let e = engine.clone();
        let rotated = tokio::task::spawn_blocking(move || e.rotate_now("bench deny")).await??;
        let (notice, noticed) = notice_poll.await?;
        let (bundle, bundled) = bundle_poll.await?;
        let _ = stop.send(());
        running.await?;
        // The engine's own deny check may see the pin and rotate first (it rereads the
        // nodes every second): then that epoch is the deny, served before ours.
        match (notice, bundle) {
            (Some(first), Some(Served::Bundle(b, _)))
                if b > held && b <= rotated && served_epoch(&first) == b =>
            {
                let notice = matches!(first, Served::CutOff(..))
                    .then(|| noticed.saturating_duration_since(started));
                Ok(DenyTiming {
                    notice,
                    bundles: bundled.saturating_duration_since(started),
                })
            }
            (notice, bundle) => bail!(
                "the deny (epoch {rotated} or an earlier one of the engine's) was not served as a \
                 notice, then a bundle: served {}, then {}",
                describe(notice.as_ref()),
                describe(bundle.as_ref())
            ),
        }
    })
}

fn served_epoch(served: &Served) -> u64 {
    match served {
        Served::CutOff(epoch, _) | Served::Bundle(epoch, _) => *epoch,
    }
}

/// What a long-poll was served, without the bundle itself.
fn describe(served: Option<&Served>) -> String {
    match served {
        Some(Served::CutOff(epoch, _)) => format!("the cut-off notice of epoch {epoch}"),
        Some(Served::Bundle(epoch, _)) => format!("the bundle of epoch {epoch}"),
        None => "nothing".to_owned(),
    }
}
