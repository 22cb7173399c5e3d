//! The node's gating state machine, without I/O: which bundle is in force at a given time.
//!
//! Verified bundles are [offered](GateState::offer) as they arrive; each waits for its
//! activation time. [`GateState::advance`] moves the state to a time: the newest bundle whose
//! activation has come is put in force (older waiting ones are dropped unused), and once the
//! bundle in force is past its `not_after` plus the grace, the loss policy applies: with
//! `fail_closed` the node enforces nothing but its static peers ([`Enforced::Lost`]); with
//! `keep_last` the last bundle stays in force. A newer bundle ends the loss.
//!
//! The caller applies [`GateState::enforced`] to the device whenever `advance` reports a
//! change, and wakes up again at [`GateState::next_deadline`] or when a bundle arrives.

use meshtun_proto::EpochId;

use super::bundle::{BundleCheckError, VerifiedBundle};
use super::cutoff::{CutOffIgnored, VerifiedCutOff};
use crate::config::LossPolicy;

/// Bundles waiting for their activation time, at most: the controller publishes one epoch
/// ahead, so more means a confused or hostile controller; the oldest are dropped.
const MAX_WAITING: usize = 4;

/// What the node enforces now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced<'a> {
    /// No bundle yet: no gated peer.
    Nothing,
    /// This bundle's membership and peers.
    Bundle(&'a VerifiedBundle),
    /// The controller is lost past the grace and the policy fails closed: no gated peer. The
    /// bundle is the last one that was in force.
    Lost(&'a VerifiedBundle),
}

/// The gating state of one node.
#[derive(Debug, Clone)]
pub struct GateState {
    policy: LossPolicy,
    grace_ms: u64,
    in_force: Option<VerifiedBundle>,
    waiting: Vec<VerifiedBundle>,
    lost: bool,
    /// A cut-off notice newer than the bundle in force, until a bundle of its epoch (or a
    /// later one) is put in force.
    cutoff: Option<VerifiedCutOff>,
}

impl GateState {
    /// A node with no bundle, applying `policy` once a bundle is `grace_ms` past its end.
    pub fn new(policy: LossPolicy, grace_ms: u64) -> Self {
        Self {
            policy,
            grace_ms,
            in_force: None,
            waiting: Vec::new(),
            lost: false,
            cutoff: None,
        }
    }

    /// The newest epoch known (in force or waiting): bundles must be newer than this.
    pub fn newest_epoch(&self) -> Option<EpochId> {
        let waiting = self.waiting.iter().map(|b| b.epoch).max();
        waiting.max(self.in_force.as_ref().map(|b| b.epoch))
    }

    /// Accepts a verified bundle if it is newer than every bundle known and not expired at
    /// `now_ms`. It takes effect at its activation time, through [`Self::advance`].
    pub fn offer(&mut self, bundle: VerifiedBundle, now_ms: u64) -> Result<(), BundleCheckError> {
        bundle.check_fresh(self.newest_epoch(), now_ms)?;
        self.queue(bundle);
        Ok(())
    }

    /// Accepts the bundle read back from the cache at start, even if expired: within the
    /// grace (or with `keep_last`) it is put in force; past it, the node starts lost.
    pub fn restore(&mut self, bundle: VerifiedBundle) {
        if self.newest_epoch().is_none_or(|e| bundle.epoch > e) {
            self.queue(bundle);
        }
    }

    fn queue(&mut self, bundle: VerifiedBundle) {
        self.waiting.push(bundle);
        self.waiting.sort_by_key(|b| b.epoch);
        while self.waiting.len() > MAX_WAITING {
            self.waiting.remove(0);
        }
    }

    /// Applies a verified cut-off notice at `now_ms` (the controller's time): it must be
    /// current and newer than every bundle and notice known, so that a replayed notice
    /// cannot cut off a node readmitted since. Its peers (and those of earlier notices not
    /// superseded by a bundle yet) stay removed from what is enforced
    /// ([`Self::cutoff`]) until a bundle of its epoch or a later one is in force.
    pub fn cut_off(&mut self, notice: VerifiedCutOff, now_ms: u64) -> Result<(), CutOffIgnored> {
        meshtun_proto::cutoff::check_current(notice.epoch, notice.not_after_ms, now_ms)
            .map_err(CutOffIgnored::Expired)?;
        let known = self
            .newest_epoch()
            .max(self.cutoff.as_ref().map(|c| c.epoch));
        if let Some(have) = known.filter(|have| notice.epoch <= *have) {
            return Err(CutOffIgnored::Stale {
                got: notice.epoch,
                have,
            });
        }
        // Notices of epochs whose bundles are not in force yet add up: a later one never
        // brings back a peer an earlier one removed (its bundle will, if readmitted).
        let mut notice = notice;
        if let Some(earlier) = self.cutoff.take() {
            notice.denied.extend(earlier.denied);
            notice.names_me |= earlier.names_me;
        }
        self.cutoff = Some(notice);
        Ok(())
    }

    /// The cut-off notice applied on top of the bundle in force, if any.
    pub fn cutoff(&self) -> Option<&VerifiedCutOff> {
        self.cutoff.as_ref()
    }

    /// Moves the state to `now_ms`. Returns true if what is enforced changed.
    pub fn advance(&mut self, now_ms: u64) -> bool {
        let mut changed = false;
        if let Some(pos) = self.waiting.iter().rposition(|b| b.activation_ms <= now_ms) {
            let due: Vec<VerifiedBundle> = self.waiting.drain(..=pos).collect();
            self.in_force = due.into_iter().next_back();
            self.lost = false;
            changed = true;
            let in_force = self.in_force.as_ref().map(|b| b.epoch);
            if self
                .cutoff
                .as_ref()
                .is_some_and(|c| Some(c.epoch) <= in_force)
            {
                self.cutoff = None;
            }
        }
        let past_grace = self
            .in_force
            .as_ref()
            .is_some_and(|b| now_ms >= b.not_after_ms.saturating_add(self.grace_ms));
        if past_grace && self.policy == LossPolicy::FailClosed && !self.lost {
            self.lost = true;
            changed = true;
        }
        changed
    }

    /// What is enforced now (as of the last [`Self::advance`]).
    pub fn enforced(&self) -> Enforced<'_> {
        match &self.in_force {
            None => Enforced::Nothing,
            Some(b) if self.lost => Enforced::Lost(b),
            Some(b) => Enforced::Bundle(b),
        }
    }

    /// Every bundle known: the one in force, then the waiting ones.
    pub fn bundles(&self) -> impl Iterator<Item = &VerifiedBundle> {
        self.in_force.iter().chain(&self.waiting)
    }

    /// The epoch of the first bundle waiting for its activation.
    pub fn next_epoch(&self) -> Option<EpochId> {
        self.waiting.first().map(|b| b.epoch)
    }

    /// When [`Self::advance`] should run next (Unix milliseconds): the next activation, or
    /// the moment the loss rule applies. `None` if nothing is scheduled.
    pub fn next_deadline(&self) -> Option<u64> {
        let activation = self.waiting.iter().map(|b| b.activation_ms).min();
        let loss = match (&self.in_force, self.policy, self.lost) {
            (Some(b), LossPolicy::FailClosed, false) => {
                Some(b.not_after_ms.saturating_add(self.grace_ms))
            }
            _ => None,
        };
        match (activation, loss) {
            (Some(a), Some(l)) => Some(a.min(l)),
            (a, l) => a.or(l),
        }
    }
}

#[cfg(test)]
mod tests;
