//! The longest-prefix-match table behind cryptokey routing.
//!
//! Outbound, the destination address of a packet picks the peer whose allowed IPs hold the
//! most specific matching network. Inbound, a decrypted packet is delivered only if the same
//! lookup on its source address names the peer it came from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

/// A map from IP networks to values, queried by longest-prefix match.
///
/// Networks are stored normalised to their network address (`10.0.0.7/24` is `10.0.0.0/24`),
/// as the kernel's WireGuard does.
#[derive(Clone)]
pub struct AllowedIps<T> {
    v4: PrefixMap<Ipv4Net, T>,
    v6: PrefixMap<Ipv6Net, T>,
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> AllowedIps<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            v4: PrefixMap::new(),
            v6: PrefixMap::new(),
        }
    }

    /// Inserts `net` (normalised), returning the value it replaces.
    pub fn insert(&mut self, net: IpNet, value: T) -> Option<T> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.insert(n, value),
            IpNet::V6(n) => self.v6.insert(n, value),
        }
    }

    /// Removes exactly `net` (normalised), returning its value.
    pub fn remove(&mut self, net: &IpNet) -> Option<T> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.remove(&n),
            IpNet::V6(n) => self.v6.remove(&n),
        }
    }

    /// The value stored for exactly `net`, if any.
    pub fn get(&self, net: &IpNet) -> Option<&T> {
        match net.trunc() {
            IpNet::V4(n) => self.v4.get(&n),
            IpNet::V6(n) => self.v6.get(&n),
        }
    }

    /// The value of the most specific network containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&T> {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(a),
            IpAddr::V6(a) => self.lookup_v6(a),
        }
    }

    /// Longest-prefix match for an IPv4 address.
    pub fn lookup_v4(&self, addr: Ipv4Addr) -> Option<&T> {
        // A /32 is always a valid prefix length.
        let host = Ipv4Net::from(addr);
        self.v4.get_lpm(&host).map(|(_, v)| v)
    }

    /// Longest-prefix match for an IPv6 address.
    pub fn lookup_v6(&self, addr: Ipv6Addr) -> Option<&T> {
        let host = Ipv6Net::from(addr);
        self.v6.get_lpm(&host).map(|(_, v)| v)
    }

    /// Keeps only the entries for which `keep` returns true.
    pub fn retain(&mut self, mut keep: impl FnMut(IpNet, &T) -> bool) {
        self.v4.retain(|n, v| keep(IpNet::V4(*n), v));
        self.v6.retain(|n, v| keep(IpNet::V6(*n), v));
    }

    /// Every entry, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &T)> {
        let v4 = self.v4.iter().map(|(n, v)| (IpNet::V4(n), v));
        let v6 = self.v6.iter().map(|(n, v)| (IpNet::V6(n), v));
        v4.chain(v6)
    }

    /// Number of networks in the table.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// True if the table holds no network.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn most_specific_network_wins() {
        let mut t = AllowedIps::new();
        t.insert(net("0.0.0.0/0"), "default");
        t.insert(net("100.64.0.0/10"), "mesh");
        t.insert(net("100.64.1.0/24"), "site");
        t.insert(net("100.64.1.7/32"), "host");
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(&"default"));
        assert_eq!(t.lookup(ip("100.100.0.1")), Some(&"mesh"));
        assert_eq!(t.lookup(ip("100.64.1.8")), Some(&"site"));
        assert_eq!(t.lookup(ip("100.64.1.7")), Some(&"host"));
    }

    #[test]
    fn families_are_separate() {
        let mut t = AllowedIps::new();
        t.insert(net("0.0.0.0/0"), 4);
        assert_eq!(t.lookup(ip("fd00::1")), None);
        t.insert(net("::/0"), 6);
        t.insert(net("fd00:1::/64"), 64);
        assert_eq!(t.lookup(ip("fd00::1")), Some(&6));
        assert_eq!(t.lookup(ip("fd00:1::9")), Some(&64));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some(&4));
    }

    #[test]
    fn networks_are_normalised() {
        let mut t = AllowedIps::new();
        assert_eq!(t.insert(net("10.1.2.3/24"), 1), None);
        assert_eq!(t.insert(net("10.1.2.0/24"), 2), Some(1));
        assert_eq!(t.get(&net("10.1.2.99/24")), Some(&2));
        assert_eq!(t.iter().next().map(|(n, _)| n), Some(net("10.1.2.0/24")));
        assert_eq!(t.remove(&net("10.1.2.200/24")), Some(2));
        assert!(t.is_empty());
    }

    #[test]
    fn no_match_outside_every_network() {
        let mut t = AllowedIps::new();
        t.insert(net("100.64.0.0/24"), ());
        assert_eq!(t.lookup(ip("100.64.1.1")), None);
        assert_eq!(t.lookup(ip("::1")), None);
    }

    #[test]
    fn retain_drops_one_owner() {
        let mut t = AllowedIps::new();
        t.insert(net("100.64.0.1/32"), "a");
        t.insert(net("100.64.0.2/32"), "b");
        t.insert(net("fd00::2/128"), "b");
        t.retain(|_, v| *v != "b");
        assert_eq!(t.len(), 1);
        assert_eq!(t.lookup(ip("100.64.0.2")), None);
        assert_eq!(t.lookup(ip("100.64.0.1")), Some(&"a"));
    }
}
