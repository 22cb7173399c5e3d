//! The peers as the device gets them: the static settings and the scheduler's gated peers,
//! with the keepalive in force for gated peers ([`crate::gate::keepalive`]) and any endpoint
//! a re-resolution moved ([`super::reresolve`]).

use std::collections::HashMap;
use std::net::SocketAddr;

use meshtun_proto::PublicKey;

use crate::config::ControllerSettings;
use crate::gate::keepalive;
use crate::gate::GatedPeerConfig;
use crate::wgcfg::DeviceSettings;

/// `applied` with the persistent keepalive `controller`'s `keepalive` and the NAT decision
/// give, and the endpoints `moved` gives for their endpoint names.
pub(super) fn gated_in_force(
    applied: &[GatedPeerConfig],
    controller: Option<&ControllerSettings>,
    behind_nat: bool,
    moved: impl Fn(&str) -> Option<SocketAddr>,
) -> Vec<GatedPeerConfig> {
    let interval = controller.and_then(|c| keepalive::interval(c.keepalive, behind_nat));
    applied
        .iter()
        .cloned()
        .map(|mut peer| {
            peer.settings.persistent_keepalive = interval;
            if let Some(address) = peer.endpoint_name.as_deref().and_then(&moved) {
                peer.settings.endpoint = Some(address);
            }
            peer
        })
        .collect()
}

/// `settings` with the endpoints `moved` gives for the static peers' endpoint `names`.
pub(super) fn statics_in_force(
    settings: &DeviceSettings,
    names: &HashMap<PublicKey, String>,
    moved: impl Fn(&str) -> Option<SocketAddr>,
) -> DeviceSettings {
    let mut settings = settings.clone();
    for peer in &mut settings.peers {
        if let Some(address) = names.get(&peer.public_key).and_then(|n| moved(n)) {
            peer.endpoint = Some(address);
        }
    }
    settings
}
