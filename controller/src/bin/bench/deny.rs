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
    /// Until a waiting long-poll was served the cut-off notice.
    pub notice: Duration,
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
        tokio::task::spawn_blocking(move || e.store().set_pin(&id, Some(Pin::Deny))).await??;
        let started = Instant::now();
        let e = engine.clone();
        let epoch = tokio::task::spawn_blocking(move || e.rotate_now("bench deny")).await??;
        let (notice, noticed) = notice_poll.await?;
        let (bundle, bundled) = bundle_poll.await?;
        let _ = stop.send(());
        running.await?;
        match (notice, bundle) {
            (Some(Served::CutOff(n, _)), Some(Served::Bundle(b, _)))
                if n == epoch && b == epoch =>
            {
                Ok(DenyTiming {
                    notice: noticed.saturating_duration_since(started),
                    bundles: bundled.saturating_duration_since(started),
                })
            }
            _ => bail!("the deny of epoch {epoch} was not served as a notice, then a bundle"),
        }
    })
}
