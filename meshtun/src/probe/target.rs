//! Which address of a peer to probe (the rule is in the [module documentation](super)).

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::wgcfg::PeerStatus;

/// Host addresses tried per network before giving up on it.
const TRIES_PER_NETWORK: usize = 4;

/// Why a peer has no address to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoTarget {
    /// The peer has no allowed IPs.
    #[error("the peer has no allowed IPs")]
    NoAllowedIps,
    /// Its only allowed IPs are default routes, which name no host of the peer.
    #[error("the peer's allowed IPs are only default routes")]
    OnlyDefaultRoutes,
    /// Every candidate is an address of this host or is routed to another peer.
    #[error("every candidate address is this host's own or routed to another peer")]
    NoCandidate,
}

/// The address to probe for peer `index` of `peers` (see the module documentation), given
/// this host's own addresses `local`.
pub fn probe_address(
    peers: &[PeerStatus],
    index: usize,
    local: &HashSet<IpAddr>,
) -> Result<IpAddr, NoTarget> {
    let Some(peer) = peers.get(index) else {
        return Err(NoTarget::NoAllowedIps);
    };
    if peer.allowed_ips.is_empty() {
        return Err(NoTarget::NoAllowedIps);
    }
    let is_host = |net: &IpNet| net.prefix_len() == net.max_prefix_len();
    let host_routes = peer
        .allowed_ips
        .iter()
        .filter(|net| is_host(net))
        .map(IpNet::addr);
    let networks = peer
        .allowed_ips
        .iter()
        .filter(|net| !is_host(net) && net.prefix_len() > 0)
        .flat_map(|net| lowest_hosts(net).take(TRIES_PER_NETWORK));
    let mut candidates = host_routes.chain(networks).peekable();
    if candidates.peek().is_none() {
        return Err(NoTarget::OnlyDefaultRoutes);
    }
    candidates
        .find(|addr| !local.contains(addr) && routed_to(peers, *addr) == Some(index))
        .ok_or(NoTarget::NoCandidate)
}

/// The host addresses of `net` from the lowest up: for IPv4 without the network and
/// broadcast addresses (except in a /31), for IPv6 without the subnet-router anycast
/// address (except in a /127).
fn lowest_hosts(net: &IpNet) -> impl Iterator<Item = IpAddr> + '_ {
    let skip_network = matches!(net, IpNet::V6(v6) if v6.prefix_len() < 127);
    net.hosts().skip(usize::from(skip_network))
}

/// The peer the device routes `addr` to: the one with the longest allowed IP containing it.
fn routed_to(peers: &[PeerStatus], addr: IpAddr) -> Option<usize> {
    peers
        .iter()
        .enumerate()
        .flat_map(|(index, peer)| peer.allowed_ips.iter().map(move |net| (index, net)))
        .filter(|(_, net)| net.contains(&addr))
        .max_by_key(|(_, net)| net.prefix_len())
        .map(|(index, _)| index)
}

/// This host's addresses on every interface (in this network namespace); empty if they
/// cannot be listed.
pub fn local_addresses() -> HashSet<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return HashSet::new();
    };
    interfaces
        .filter_map(|interface| interface.address)
        .filter_map(|address| {
            let v4 = address.as_sockaddr_in().map(|a| IpAddr::V4(a.ip()));
            v4.or_else(|| address.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use meshtun_proto::PrivateKey;

    use super::*;

    fn peer(nets: &[&str]) -> PeerStatus {
        PeerStatus {
            endpoint_since: None,
            public_key: PrivateKey::generate().public_key(),
            preshared_key: None,
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive: None,
            allowed_ips: nets.iter().map(|n| n.parse().unwrap()).collect(),
            gate: None,
        }
    }

    fn address(peers: &[PeerStatus], index: usize, local: &[&str]) -> Result<String, NoTarget> {
        let local = local.iter().map(|a| a.parse().unwrap()).collect();
        probe_address(peers, index, &local).map(|a| a.to_string())
    }

    #[test]
    fn a_host_route_comes_first() {
        let peers = [peer(&["10.1.0.0/16", "fd00::2/128", "100.64.0.2/32"])];
        assert_eq!(address(&peers, 0, &[]).unwrap(), "fd00::2");
    }

    #[test]
    fn otherwise_the_lowest_host_of_the_first_network() {
        for (net, expected) in [
            ("10.1.0.0/16", "10.1.0.1"),
            ("10.1.2.3/24", "10.1.2.1"),
            ("192.0.2.4/31", "192.0.2.4"),
            ("fd00:1::/64", "fd00:1::1"),
            ("fd00:1::/127", "fd00:1::"),
        ] {
            let peers = [peer(&["0.0.0.0/0", net, "10.9.0.0/16"])];
            assert_eq!(address(&peers, 0, &[]).unwrap(), expected, "{net}");
        }
    }

    #[test]
    fn own_addresses_and_other_peers_routes_are_skipped() {
        let hub = peer(&["100.64.0.0/24"]);
        let spoke = peer(&["100.64.0.2/32"]);
        let peers = [hub, spoke];
        // 100.64.0.1 is ours, 100.64.0.2 belongs to the spoke: the hub is probed at .3.
        assert_eq!(address(&peers, 0, &["100.64.0.1"]).unwrap(), "100.64.0.3");
        assert_eq!(address(&peers, 1, &["100.64.0.1"]).unwrap(), "100.64.0.2");
        let taken = [peer(&["100.64.0.0/30"]), peer(&["100.64.0.2/32"])];
        assert_eq!(
            address(&taken, 0, &["100.64.0.1"]),
            Err(NoTarget::NoCandidate)
        );
    }

    #[test]
    fn peers_without_a_host_to_probe() {
        assert_eq!(address(&[peer(&[])], 0, &[]), Err(NoTarget::NoAllowedIps));
        let default_only = [peer(&["0.0.0.0/0", "::/0"])];
        assert_eq!(
            address(&default_only, 0, &[]),
            Err(NoTarget::OnlyDefaultRoutes)
        );
        assert_eq!(address(&default_only, 3, &[]), Err(NoTarget::NoAllowedIps));
    }

    #[test]
    fn loopback_is_among_the_local_addresses() {
        assert!(local_addresses().contains(&IpAddr::from([127, 0, 0, 1])));
    }
}
