//! Checking a signed bundle from the controller and opening its preshared keys.
//!
//! [`verify_bundle`] accepts a bundle only if all of these hold: the signature verifies with
//! the pinned controller key; the format version is known; it is addressed to this node's id
//! and to this node's WireGuard public key; its activation precedes its end; a denied bundle
//! lists no peer; no peer appears twice or is this node; and every sealed preshared key opens
//! with this node's WireGuard private key. With a membership key, peers without a valid
//! membership signature are then left out and listed in [`VerifiedBundle::refused`]
//! ([`super::members`]); the rest of the bundle is used. Freshness (a newer epoch than the one in force, not
//! expired) depends on the caller's state and clock: [`VerifiedBundle::check_fresh`].

use std::collections::HashSet;

use ipnet::IpNet;
use meshtun_proto::bundle::{BundleError, Membership, Opener, SignedBundle, MAX_CANDIDATES};
use meshtun_proto::membership::MembershipPublic;
use meshtun_proto::{EpochId, IdentityPublic, KeySet, PresharedKey, PrivateKey, PublicKey};

use super::members::{admit, RefusedPeer};

use crate::relay::RelayCredentials;

/// Why a bundle was refused. Nothing from a refused bundle is used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleCheckError {
    /// Bad encoding, bad signature, unknown version or unparsable payload.
    #[error(transparent)]
    Signed(BundleError),
    /// Addressed to another node id.
    #[error(
        "the bundle for epoch {epoch} is addressed to node `{theirs}`, not to this node `{ours}`"
    )]
    BundleForAnotherNode {
        /// The epoch.
        epoch: EpochId,
        /// This node's id.
        ours: String,
        /// The bundle's node id.
        theirs: String,
    },
    /// Sealed to another WireGuard key than this interface's.
    #[error("the bundle for epoch {epoch} is sealed to WireGuard key {theirs}, not to this interface's key {ours}")]
    WrongRecipient {
        /// The epoch.
        epoch: EpochId,
        /// This interface's public key.
        ours: PublicKey,
        /// The bundle's recipient.
        theirs: PublicKey,
    },
    /// Not newer than the epoch this node already has.
    #[error("the controller sent epoch {got}, but epoch {have} is already known; a bundle must be newer")]
    StaleEpoch {
        /// The bundle's epoch.
        got: EpochId,
        /// The epoch already known.
        have: EpochId,
    },
    /// Past its end.
    #[error("the bundle for epoch {epoch} expired at {not_after_ms} (Unix ms), {} ms ago", .now_ms.saturating_sub(*.not_after_ms))]
    Expired {
        /// The epoch.
        epoch: EpochId,
        /// Its end, Unix milliseconds.
        not_after_ms: u64,
        /// The time of the check, Unix milliseconds.
        now_ms: u64,
    },
    /// A sealed preshared key does not open.
    #[error("the preshared key for peer `{peer}` in the bundle for epoch {epoch} does not open with this interface's private key")]
    Seal {
        /// The epoch.
        epoch: EpochId,
        /// The peer's node id.
        peer: String,
    },
    /// The bundle contradicts itself.
    #[error("the bundle for epoch {epoch} is inconsistent: {reason}")]
    Inconsistent {
        /// The epoch.
        epoch: EpochId,
        /// What is wrong.
        reason: String,
    },
}

/// One peer this node may talk to in the bundle's epoch, with the pair's preshared key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatedPeer {
    /// The peer's node id.
    pub node_id: String,
    /// The peer's WireGuard public key.
    pub public_key: PublicKey,
    /// Where it may be reached (`host:port`), best first, as the controller lists them.
    pub candidates: Vec<String>,
    /// Its overlay networks.
    pub allowed_ips: Vec<IpNet>,
    /// The pair's preshared key for this epoch.
    pub psk: PresharedKey,
    /// For a hub: the nodes this node reaches through it (their addresses are in
    /// `allowed_ips`), for display.
    pub forwards_to: Vec<String>,
}

/// A bundle that passed every check, with its keys opened, and the signed form it came in
/// (to keep in the cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBundle {
    /// The epoch.
    pub epoch: EpochId,
    /// When to switch to this bundle's keys, Unix milliseconds.
    pub activation_ms: u64,
    /// When the bundle stops being valid, Unix milliseconds.
    pub not_after_ms: u64,
    /// When the controller made it, Unix milliseconds.
    pub issued_ms: u64,
    /// When the controller decided this epoch's membership, Unix milliseconds (0: unknown).
    pub decided_ms: u64,
    /// Allowed, or denied with the controller's reason.
    pub membership: Membership,
    /// The peers, in the controller's order (empty when denied), without the refused ones.
    pub peers: Vec<GatedPeer>,
    /// The peers the bundle lists that the membership key refused (empty without one).
    pub refused: Vec<RefusedPeer>,
    /// Whether this node forwards between its gated peers (a hub); never when denied.
    pub forward: bool,
    /// The bundle as the controller signed it.
    pub signed: SignedBundle,
    /// The pinned controller key that signed it.
    pub signer: IdentityPublic,
    /// This node's relay credentials for the epoch (allowed bundles of a controller with
    /// `[relay]` only), the password opened.
    pub relay: Option<RelayCredentials>,
}

impl VerifiedBundle {
    /// True if this node is allowed in the mesh for the epoch.
    pub fn is_allowed(&self) -> bool {
        self.membership == Membership::Allowed
    }

    /// True if the bundle's end has passed at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.not_after_ms
    }

    /// Checks that the bundle is newer than epoch `after` (if given).
    pub fn check_newer(&self, after: Option<EpochId>) -> Result<(), BundleCheckError> {
        match after.filter(|have| self.epoch <= *have) {
            Some(have) => Err(BundleCheckError::StaleEpoch {
                got: self.epoch,
                have,
            }),
            None => Ok(()),
        }
    }

    /// Checks that the bundle is newer than epoch `after` (if given) and not expired at
    /// `now_ms` (the controller's time).
    pub fn check_fresh(&self, after: Option<EpochId>, now_ms: u64) -> Result<(), BundleCheckError> {
        self.check_newer(after)?;
        if self.is_expired(now_ms) {
            return Err(BundleCheckError::Expired {
                epoch: self.epoch,
                not_after_ms: self.not_after_ms,
                now_ms,
            });
        }
        Ok(())
    }
}

/// Verifies `signed` for node `node_id` with WireGuard key `wg_private`, against the pinned
/// controller keys, and opens its preshared keys. See the module documentation.
pub fn verify_bundle(
    signed: &SignedBundle,
    trust: &Trust<'_>,
    node_id: &str,
    wg_private: &PrivateKey,
) -> Result<VerifiedBundle, BundleCheckError> {
    let (bundle, signer) = signed
        .verify_pinned(trust.controller)
        .map_err(BundleCheckError::Signed)?;
    check_bundle(bundle, signer, signed, node_id, trust.members, wg_private)
}

/// What a node trusts a bundle with: the pinned controller keys, and the operator's
/// membership key (`[controller] membership_key`), if set.
#[derive(Debug, Clone, Copy)]
pub struct Trust<'a> {
    /// The pinned controller keys: the bundle must be signed by one.
    pub controller: &'a KeySet,
    /// The membership key: each peer must carry its signature.
    pub members: Option<&'a MembershipPublic>,
}

impl<'a> Trust<'a> {
    /// Trust in `controller` alone, with no membership key.
    pub fn controller(controller: &'a KeySet) -> Self {
        Self {
            controller,
            members: None,
        }
    }
}

/// [`verify_bundle`] for the node's own cache, which may hold a bundle signed before the
/// signature label ([`SignedBundle::verify_cached`]).
pub fn verify_cached_bundle(
    signed: &SignedBundle,
    trust: &Trust<'_>,
    node_id: &str,
    wg_private: &PrivateKey,
) -> Result<VerifiedBundle, BundleCheckError> {
    let (bundle, signer) = signed
        .verify_cached(trust.controller)
        .map_err(BundleCheckError::Signed)?;
    check_bundle(bundle, signer, signed, node_id, trust.members, wg_private)
}

/// Every check of [`verify_bundle`] after the signature.
fn check_bundle(
    bundle: meshtun_proto::bundle::Bundle,
    signer: IdentityPublic,
    signed: &SignedBundle,
    node_id: &str,
    members: Option<&MembershipPublic>,
    wg_private: &PrivateKey,
) -> Result<VerifiedBundle, BundleCheckError> {
    let epoch = bundle.epoch;
    let inconsistent = |reason: String| BundleCheckError::Inconsistent { epoch, reason };
    if bundle.node_id != node_id {
        return Err(BundleCheckError::BundleForAnotherNode {
            epoch,
            ours: node_id.to_owned(),
            theirs: bundle.node_id,
        });
    }
    let ours = wg_private.public_key();
    if bundle.recipient != ours {
        return Err(BundleCheckError::WrongRecipient {
            epoch,
            ours,
            theirs: bundle.recipient,
        });
    }
    if bundle.activation_ms >= bundle.not_after_ms {
        return Err(inconsistent(format!(
            "it activates at {} but ends at {}",
            bundle.activation_ms, bundle.not_after_ms
        )));
    }
    if matches!(bundle.membership, Membership::Denied { .. }) && !bundle.peers.is_empty() {
        return Err(inconsistent("it denies this node but lists peers".into()));
    }
    let mut seen = HashSet::new();
    for peer in &bundle.peers {
        if peer.endpoints().count() > MAX_CANDIDATES {
            return Err(inconsistent(format!(
                "peer `{}` has more than {MAX_CANDIDATES} candidate endpoints",
                peer.node_id
            )));
        }
        if peer.public_key == ours {
            return Err(inconsistent(format!(
                "peer `{}` has this interface's own public key",
                peer.node_id
            )));
        }
        if !seen.insert(peer.public_key) {
            return Err(inconsistent(format!(
                "public key {} is listed twice",
                peer.public_key
            )));
        }
    }
    if matches!(bundle.membership, Membership::Denied { .. }) && bundle.relay.is_some() {
        return Err(inconsistent(
            "it denies this node but carries relay credentials".into(),
        ));
    }
    let (peers, refused) = admit(members, &bundle.peers, open_peers(&bundle, wg_private)?);
    let forward = bundle.forward && bundle.membership == Membership::Allowed;
    let relay =
        RelayCredentials::open(&bundle, wg_private).map_err(|e| inconsistent(e.to_string()))?;
    Ok(VerifiedBundle {
        forward,
        relay,
        epoch,
        activation_ms: bundle.activation_ms,
        not_after_ms: bundle.not_after_ms,
        issued_ms: bundle.issued_ms,
        decided_ms: bundle.decided_ms,
        membership: bundle.membership,
        peers,
        refused,
        signed: signed.clone(),
        signer,
    })
}

/// Opens every peer's sealed preshared key.
fn open_peers(
    bundle: &meshtun_proto::bundle::Bundle,
    wg_private: &PrivateKey,
) -> Result<Vec<GatedPeer>, BundleCheckError> {
    let epoch = bundle.epoch;
    if bundle.peers.is_empty() {
        return Ok(Vec::new());
    }
    let Some(seal_key) = bundle.seal_key else {
        return Err(BundleCheckError::Inconsistent {
            epoch,
            reason: "it lists peers but has no seal key".into(),
        });
    };
    let opener = Opener::new(wg_private, &seal_key);
    bundle
        .peers
        .iter()
        .enumerate()
        .map(|(index, peer)| {
            let seal = || BundleCheckError::Seal {
                epoch,
                peer: peer.node_id.clone(),
            };
            let index = u32::try_from(index).map_err(|_| seal())?;
            let psk = opener.open(index, epoch, peer).map_err(|_| seal())?;
            if psk.is_zero() {
                return Err(seal());
            }
            Ok(GatedPeer {
                node_id: peer.node_id.clone(),
                public_key: peer.public_key,
                candidates: peer.endpoints().map(str::to_owned).collect(),
                allowed_ips: peer.allowed_ips.clone(),
                psk,
                forwards_to: peer.forwards_to.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
