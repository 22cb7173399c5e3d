//! Checks that span several keys or sections, shared by the TOML parser and the importer.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use ipnet::IpNet;
use meshtun_proto::PublicKey;

use super::keys::{Ctx, Field, Section};
use super::values::MIN_MTU_V6;
use super::{Config, ConfigError, PeerConfig};

/// Source lines of the values the cross-field checks may complain about.
#[derive(Debug, Clone, Default)]
pub(super) struct Lines {
    /// The `[interface]` header.
    pub(super) interface: usize,
    /// The `mtu` key, if set.
    pub(super) mtu: Option<usize>,
    /// One entry per peer, in order.
    pub(super) peers: Vec<PeerLines>,
}

/// Source lines within one peer section.
#[derive(Debug, Clone, Default)]
pub(super) struct PeerLines {
    /// The `public_key` key.
    pub(super) public_key: usize,
    /// Each allowed-IP network (normalised) with the line that lists it.
    pub(super) allowed_ips: Vec<(IpNet, usize)>,
}

/// Runs the cross-field checks and removes allowed IPs a peer lists twice.
pub(super) fn finish(
    mut config: Config,
    lines: &Lines,
    ctx: &Ctx<'_>,
) -> Result<Config, ConfigError> {
    check_mtu(&config, lines, ctx)?;
    check_public_keys(&config, lines, ctx)?;
    for peer in &mut config.peers {
        dedup_allowed_ips(peer);
    }
    check_allowed_ips(&config, lines, ctx)?;
    Ok(config)
}

fn check_mtu(config: &Config, lines: &Lines, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let interface = &config.interface;
    let has_v6 = interface
        .addresses
        .iter()
        .any(|net| matches!(net, IpNet::V6(_)));
    if has_v6 && interface.mtu < MIN_MTU_V6 {
        return Err(ctx.invalid(
            lines.mtu.unwrap_or(lines.interface),
            Section::Interface,
            Field::Mtu,
            format!(
                "{} is too small: with an IPv6 address the MTU must be at least {MIN_MTU_V6}",
                interface.mtu
            ),
        ));
    }
    Ok(())
}

/// The line of peer `index`'s public key (front ends record one for every peer).
fn public_key_line(lines: &Lines, index: usize) -> usize {
    lines
        .peers
        .get(index)
        .map_or(lines.interface, |peer| peer.public_key)
}

fn check_public_keys(config: &Config, lines: &Lines, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let own = config.interface.private_key.public_key();
    let mut seen: HashMap<PublicKey, usize> = HashMap::new();
    for (index, peer) in config.peers.iter().enumerate() {
        let line = public_key_line(lines, index);
        if peer.public_key == own {
            return Err(ctx.invalid(
                line,
                Section::Peer(index),
                Field::PublicKey,
                format!(
                    "{} is this interface's own public key; a peer must be another node",
                    peer.public_key
                ),
            ));
        }
        if let Some(first) = seen.insert(peer.public_key, index) {
            return Err(ctx.invalid(
                line,
                Section::Peer(index),
                Field::PublicKey,
                format!(
                    "{} is also the public key of peer #{} (line {}); each peer must appear once",
                    peer.public_key,
                    first + 1,
                    public_key_line(lines, first)
                ),
            ));
        }
    }
    Ok(())
}

/// Keeps the first occurrence of each network (entries may differ only in host bits).
fn dedup_allowed_ips(peer: &mut PeerConfig) {
    let mut seen = HashSet::new();
    peer.allowed_ips.retain(|net| seen.insert(*net));
}

fn check_allowed_ips(config: &Config, lines: &Lines, ctx: &Ctx<'_>) -> Result<(), ConfigError> {
    let mut owner: HashMap<IpNet, usize> = HashMap::new();
    for (index, peer) in config.peers.iter().enumerate() {
        for net in &peer.allowed_ips {
            let first = match owner.entry(*net) {
                Entry::Vacant(slot) => {
                    slot.insert(index);
                    continue;
                }
                Entry::Occupied(slot) => *slot.get(),
            };
            if first == index {
                continue;
            }
            let other = config.peers.get(first).map(|p| p.public_key.to_string());
            return Err(ctx.invalid(
                allowed_ip_line(lines, index, net),
                Section::Peer(index),
                Field::AllowedIps,
                format!(
                    "{net} is an allowed IP of both peer #{} ({}) and peer #{} ({}); \
                     a network can be routed to one peer only",
                    first + 1,
                    other.unwrap_or_default(),
                    index + 1,
                    peer.public_key
                ),
            ));
        }
    }
    Ok(())
}

/// The line where peer `index` lists `net`.
fn allowed_ip_line(lines: &Lines, index: usize, net: &IpNet) -> usize {
    lines
        .peers
        .get(index)
        .and_then(|peer| {
            peer.allowed_ips
                .iter()
                .find(|(candidate, _)| candidate == net)
        })
        .map_or_else(|| public_key_line(lines, index), |(_, line)| *line)
}
