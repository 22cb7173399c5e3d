//! Several instances on one database: only the leader decides and publishes
//! ([`Engine::may_decide`] gates [`Engine::step`] and [`Engine::check_deny`]); every instance
//! loads what the leader published ([`Engine::load_published`]) when woken by the epoch
//! listener, and a new leader loads its predecessors' epochs before it decides anything.
//! With SQLite ([`Leadership::sole`](crate::ha::Leadership::sole)) none of this runs.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meshtun_proto::EpochId;
use tokio::sync::watch;

use super::{Engine, EpochView, KEEP_EPOCHS};
use crate::ha::{Publish, Wake};
use crate::store::StoreError;

/// How often a follower rereads the newest epochs even without a wake (a notification lost
/// between a listener's failure and its reconnection is caught up by then at the latest).
pub const FOLLOW_POLL: Duration = Duration::from_secs(5);

impl Engine {
    /// True if this instance may decide and publish now. A leader in a term it has not
    /// loaded yet first loads the epochs published before it (by the previous leader), so
    /// that its next epoch follows them. Called with `publishing` held.
    pub(super) fn may_decide(&self) -> Result<bool, StoreError> {
        match self.leadership.may_publish() {
            Publish::Sole => Ok(true),
            Publish::Follower => Ok(false),
            Publish::Leader(token) => {
                if self.loaded_term.load(Ordering::Acquire) != token.term() {
                    self.load_published_locked()?;
                    self.loaded_term.store(token.term(), Ordering::Release);
                }
                Ok(true)
            }
        }
    }

    /// Loads the epochs in the store newer than the newest held here (published by another
    /// instance), with their decisions, and announces them as if published here. Returns
    /// the newest loaded, if any. Blocking.
    pub fn load_published(&self) -> Result<Option<EpochId>, StoreError> {
        let _one = self.publishing.lock();
        self.load_published_locked()
    }

    fn load_published_locked(&self) -> Result<Option<EpochId>, StoreError> {
        let known = self.epochs().last().map(|e| e.record.id);
        let newer: Vec<_> = self
            .store
            .latest_epochs(KEEP_EPOCHS)?
            .into_iter()
            .filter(|r| known.is_none_or(|k| r.id > k))
            .collect();
        if newer.is_empty() {
            return Ok(None);
        }
        // Their decisions may name nodes enrolled through another instance.
        self.refresh_nodes()?;
        let mut views: Vec<Arc<EpochView>> = Vec::with_capacity(newer.len());
        let now = self.clock.now_ms();
        for record in newer.into_iter().rev() {
            let decisions = self
                .store
                .decisions(record.id)?
                .into_iter()
                .map(|d| (d.node_id.clone(), d))
                .collect();
            let held: Vec<Arc<EpochView>> = self
                .epochs()
                .into_iter()
                .chain(views.iter().cloned())
                .collect();
            let cutoff = self.cutoff_notice(&record, &decisions, &held, now);
            views.push(Arc::new(EpochView {
                record,
                decisions,
                cutoff,
            }));
        }
        let newest = views.last().map(|v| v.record.id);
        if let Some(view) = views.last() {
            self.metrics
                .newest_epoch(view.record.id, view.record.not_after_ms);
        }
        {
            let mut state = self.state.write();
            state.epochs.extend(views);
            let excess = state.epochs.len().saturating_sub(KEEP_EPOCHS);
            state.epochs.drain(..excess);
            if let Some(oldest) = state.epochs.first() {
                self.cache.retain_from(oldest.record.id);
            }
        }
        if let Some(id) = newest {
            tracing::info!(epoch = id, "loaded the epoch the leader published");
            self.decided.send_replace(id);
            if !self.prebuilding.load(Ordering::Acquire) {
                self.published.send_replace(id);
            }
        }
        Ok(newest)
    }

    /// Loads published epochs at every wake from the epoch listener and every
    /// `FOLLOW_POLL`, until the wakes end or this is dropped ([`Engine::run`] runs it when
    /// the engine has a lease). A panic in a load is passed on.
    pub async fn follow_published(self: Arc<Self>, mut wakes: watch::Receiver<Wake>) {
        loop {
            let engine = self.clone();
            match tokio::task::spawn_blocking(move || engine.load_published()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => {
                    tracing::error!(%error, "cannot load the epochs the leader published")
                }
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(_) => return,
            }
            tokio::select! {
                changed = wakes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    wakes.borrow_and_update();
                }
                () = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
