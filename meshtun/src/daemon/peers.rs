//! The gated peers as the device gets them: the scheduler's settings, with the keepalive in
//! force ([`crate::gate::keepalive`]) and any endpoint a re-resolution moved.

use crate::config::ControllerSettings;
use crate::gate::keepalive;
use crate::gate::GatedPeerConfig;

/// `applied` with the persistent keepalive `controller`'s `keepalive` and the NAT decision
/// give.
pub(super) fn gated_in_force(
    applied: &[GatedPeerConfig],
    controller: Option<&ControllerSettings>,
    behind_nat: bool,
) -> Vec<GatedPeerConfig> {
    let interval = controller.and_then(|c| keepalive::interval(c.keepalive, behind_nat));
    applied
        .iter()
        .cloned()
        .map(|mut peer| {
            peer.settings.persistent_keepalive = interval;
            peer
        })
        .collect()
}
