//! Live edits (`wg set`, `wg setconf`, `wg syncconf`) folded into the daemon's desired
//! configuration, with no I/O: the reconciler applies the result to the device.
//!
//! The rule, as documented in the README ("Live edits"):
//! - an edit changes the interface's static configuration as `wg set` changes wg-quick's, and
//!   lasts until the configuration file is read again (SIGHUP or a restart); epochs and
//!   bundles never undo it;
//! - the controller's peers are the controller's: an edit naming a peer of the bundle in
//!   force is refused whole, and so is a new private key on a gated interface (the key is the
//!   node's identity at the controller) or a firewall mark other than the one meshtun chose
//!   for a default route;
//! - `replace_peers` (`wg setconf`) replaces the static peers only.

use meshtun_proto::{PrivateKey, PublicKey};

use crate::gate::GatedPeerConfig;
use crate::wgcfg::{AllowedIpChange, DeviceSettings, DeviceUpdate, PeerSettings, PeerUpdate};

/// What a live edit may not change on this interface.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EditRules<'a> {
    /// Whether a controller gates this interface.
    pub gated: bool,
    /// The peers of the bundle in force.
    pub controller_peers: &'a [GatedPeerConfig],
    /// The firewall mark meshtun chose for a default route, if any.
    pub managed_fwmark: Option<u32>,
}

/// Why a live edit was refused; nothing of it was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditRefused {
    /// The edit names a peer that the controller's bundle configures.
    #[error(
        "peer {key} is node {node_id} of the controller's bundle: its key, endpoint and \
         allowed IPs come from the controller and cannot be edited or removed here"
    )]
    ControllerPeer {
        /// The peer's public key (base64).
        key: String,
        /// Its node id at the controller.
        node_id: String,
    },
    /// A new private key on a gated interface.
    #[error(
        "the private key of a gated interface is the node's identity at the controller: \
         change it in the configuration file and enroll the new key"
    )]
    GatedPrivateKey,
    /// The private key would be removed.
    #[error("an interface cannot run without a private key: stop it with `meshtun down` instead")]
    NoPrivateKey,
    /// A firewall mark other than the one chosen for the default route.
    #[error(
        "firewall mark {asked} would break the default route, which relies on mark {managed} \
         to keep encrypted packets out of the tunnel"
    )]
    ManagedFwmark {
        /// The mark asked for.
        asked: u32,
        /// The mark in use.
        managed: u32,
    },
}

/// `settings` with `update` applied, or why it is refused.
pub(crate) fn apply_edit(
    settings: &DeviceSettings,
    update: &DeviceUpdate,
    rules: &EditRules<'_>,
) -> Result<DeviceSettings, EditRefused> {
    check(settings, update, rules)?;
    let mut next = settings.clone();
    if let Some(Some(key)) = &update.private_key {
        next.private_key = key.clone();
    }
    if let Some(port) = update.listen_port {
        next.listen_port = (port != 0).then_some(port);
    }
    if let Some(mark) = update.fwmark {
        next.fwmark = (mark != 0).then_some(mark);
    }
    if update.replace_peers {
        next.peers.clear();
    }
    let own = next.private_key.public_key();
    for peer in &update.peers {
        // As in wireguard-go, a section for the interface's own key is ignored.
        if peer.public_key != own {
            apply_peer(&mut next.peers, peer);
        }
    }
    Ok(next)
}

/// Refuses an edit that the rules forbid, before anything is changed.
fn check(
    settings: &DeviceSettings,
    update: &DeviceUpdate,
    rules: &EditRules<'_>,
) -> Result<(), EditRefused> {
    match &update.private_key {
        Some(None) => return Err(EditRefused::NoPrivateKey),
        Some(Some(key)) if rules.gated && !same_key(key, &settings.private_key) => {
            return Err(EditRefused::GatedPrivateKey)
        }
        _ => {}
    }
    if let (Some(asked), Some(managed)) = (update.fwmark, rules.managed_fwmark) {
        if asked != managed {
            return Err(EditRefused::ManagedFwmark { asked, managed });
        }
    }
    for peer in &update.peers {
        if let Some(gated) = controller_peer(rules, &peer.public_key) {
            return Err(EditRefused::ControllerPeer {
                key: peer.public_key.to_base64(),
                node_id: gated.node_id.clone(),
            });
        }
    }
    Ok(())
}

fn same_key(a: &PrivateKey, b: &PrivateKey) -> bool {
    a.public_key() == b.public_key()
}

fn controller_peer<'a>(rules: &EditRules<'a>, key: &PublicKey) -> Option<&'a GatedPeerConfig> {
    rules
        .controller_peers
        .iter()
        .find(|p| p.settings.public_key == *key)
}

/// Applies one peer section to the static peers, as the device applies it.
fn apply_peer(peers: &mut Vec<PeerSettings>, update: &PeerUpdate) {
    let key = update.public_key;
    if update.remove {
        peers.retain(|p| p.public_key != key);
        return;
    }
    let index = match peers.iter().position(|p| p.public_key == key) {
        Some(index) => index,
        None if update.update_only => return,
        None => {
            peers.push(PeerSettings {
                probes: Vec::new(),
                public_key: key,
                preshared_key: None,
                endpoint: None,
                allowed_ips: Vec::new(),
                persistent_keepalive: None,
                forward: false,
            });
            peers.len() - 1
        }
    };
    let peer = &mut peers[index];
    if let Some(psk) = &update.preshared_key {
        peer.preshared_key = psk.clone();
    }
    if let Some(endpoint) = update.endpoint {
        peer.endpoint = Some(endpoint);
    }
    if let Some(keepalive) = update.persistent_keepalive {
        peer.persistent_keepalive = (keepalive != 0).then_some(keepalive);
    }
    if update.replace_allowed_ips {
        peer.allowed_ips.clear();
    }
    for change in &update.allowed_ips {
        match change {
            AllowedIpChange::Add(net) => claim(peers, index, net.trunc()),
            AllowedIpChange::Remove(net) => {
                let net = net.trunc();
                peers[index].allowed_ips.retain(|n| n.trunc() != net);
            }
        }
    }
}

/// Gives `net` to the peer at `index`, taking it from any other peer, as WireGuard does.
fn claim(peers: &mut [PeerSettings], index: usize, net: ipnet::IpNet) {
    for (i, peer) in peers.iter_mut().enumerate() {
        if i != index {
            peer.allowed_ips.retain(|n| n.trunc() != net);
        }
    }
    let nets = &mut peers[index].allowed_ips;
    if !nets.iter().any(|n| n.trunc() == net) {
        nets.push(net);
    }
}

#[cfg(test)]
#[path = "edit_tests.rs"]
mod tests;
