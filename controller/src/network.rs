//! The overlay's address plan (`[network]`): the prefixes node addresses come from, the
//! checks an address must pass, and the next free address of each prefix. No I/O: the store
//! calls these inside the enrollment transaction, with the addresses already held.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use meshtun_proto::wire::MAX_NODE_ADDRESSES;
use serde::{Deserialize, Serialize};

/// The shortest overlay prefix accepted: nodes refuse gated routes shorter than this
/// (`meshtun`'s `MIN_GATED_PREFIX_V4`), so a wider overlay would be unreachable.
pub const MIN_PREFIX_V4: u8 = 8;

/// The shortest IPv6 overlay prefix accepted (`meshtun`'s `MIN_GATED_PREFIX_V6`).
pub const MIN_PREFIX_V6: u8 = 16;

/// The longest IPv4 overlay prefix: a /30 still has two host addresses.
pub const MAX_PREFIX_V4: u8 = 30;

/// The longest IPv6 overlay prefix: a /126 still has three host addresses.
pub const MAX_PREFIX_V6: u8 = 126;

/// The overlay prefixes: every node address lies inside one, and enrollment assigns the
/// next free address of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// The IPv4 overlay prefix.
    pub ipv4: Option<Ipv4Net>,
    /// The IPv6 overlay prefix.
    pub ipv6: Option<Ipv6Net>,
}

impl Default for Network {
    /// `100.64.0.0/10` (the shared address space meshtun's examples use), no IPv6.
    fn default() -> Self {
        Self {
            ipv4: Some(Ipv4Net::new_assert(
                std::net::Ipv4Addr::new(100, 64, 0, 0),
                10,
            )),
            ipv6: None,
        }
    }
}

/// Why addresses were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// More than [`MAX_NODE_ADDRESSES`].
    #[error("{0} addresses; a node may have at most {MAX_NODE_ADDRESSES}")]
    TooMany(usize),
    /// Outside every overlay prefix (the address, or the network its prefix length makes).
    #[error(
        "address {address} is outside the overlay ({overlay}): its network {network} would \
         not be inside it"
    )]
    Outside {
        /// The address.
        address: IpNet,
        /// Its network.
        network: IpNet,
        /// The overlay prefixes, for the message.
        overlay: String,
    },
    /// The prefix's own network or broadcast address.
    #[error("address {0} is the network or broadcast address of its overlay prefix")]
    Reserved(IpNet),
    /// Listed twice.
    #[error("address {0} is listed twice")]
    Repeated(IpAddr),
    /// No free address left.
    #[error("the overlay prefix {0} has no free address left")]
    Full(IpNet),
}

impl Network {
    /// The configured prefixes, IPv4 first.
    pub fn prefixes(&self) -> Vec<IpNet> {
        self.ipv4
            .map(IpNet::V4)
            .into_iter()
            .chain(self.ipv6.map(IpNet::V6))
            .collect()
    }

    fn overlay_text(&self) -> String {
        let list: Vec<String> = self.prefixes().iter().map(ToString::to_string).collect();
        if list.is_empty() {
            "no prefix configured".into()
        } else {
            list.join(", ")
        }
    }

    /// The overlay prefix `address` belongs to, if its network lies inside one.
    fn prefix_of(&self, address: &IpNet) -> Option<IpNet> {
        self.prefixes()
            .into_iter()
            .find(|p| p.contains(&address.trunc()))
    }

    /// Checks a node's addresses: at most [`MAX_NODE_ADDRESSES`], each inside an overlay
    /// prefix together with the network its prefix length makes (so `100.64.0.9/8` is
    /// refused from `100.64.0.0/24`), none a network or broadcast address, none twice.
    pub fn check(&self, addresses: &[IpNet]) -> Result<(), AddressError> {
        if addresses.len() > MAX_NODE_ADDRESSES {
            return Err(AddressError::TooMany(addresses.len()));
        }
        let mut seen = HashSet::new();
        for address in addresses {
            let Some(prefix) = self.prefix_of(address) else {
                return Err(AddressError::Outside {
                    address: *address,
                    network: address.trunc(),
                    overlay: self.overlay_text(),
                });
            };
            if reserved(&prefix, address.addr()) {
                return Err(AddressError::Reserved(*address));
            }
            if !seen.insert(address.addr()) {
                return Err(AddressError::Repeated(address.addr()));
            }
        }
        Ok(())
    }

    /// The next free address of every prefix, with the prefix's length (`100.64.0.3/24`),
    /// skipping `held`. Takes at most `held.len() + 2` steps per prefix.
    pub fn assign(&self, held: &HashSet<IpAddr>) -> Result<Vec<IpNet>, AddressError> {
        self.prefixes()
            .into_iter()
            .map(|prefix| {
                let free = prefix
                    .hosts()
                    .find(|a| !reserved(&prefix, *a) && !held.contains(a))
                    .ok_or(AddressError::Full(prefix))?;
                IpNet::new(free, prefix.prefix_len()).map_err(|_| AddressError::Full(prefix))
            })
            .collect()
    }
}

/// The network address of `prefix` (IPv6: the subnet-router anycast address) and, for IPv4,
/// its broadcast address: never a node's.
fn reserved(prefix: &IpNet, address: IpAddr) -> bool {
    address == prefix.network() || (prefix.addr().is_ipv4() && address == prefix.broadcast())
}

/// Checks a configured prefix: no host bits, and a length nodes accept with room for hosts.
pub fn check_prefix(net: &IpNet) -> Result<(), String> {
    if net.trunc() != *net {
        return Err(format!(
            "{net} has host bits set; write the network, {}",
            net.trunc()
        ));
    }
    let (min, max) = match net {
        IpNet::V4(_) => (MIN_PREFIX_V4, MAX_PREFIX_V4),
        IpNet::V6(_) => (MIN_PREFIX_V6, MAX_PREFIX_V6),
    };
    if !(min..=max).contains(&net.prefix_len()) {
        return Err(format!(
            "{net}: the prefix length must be from /{min} (nodes refuse shorter routes) to \
             /{max}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn plan() -> Network {
        Network {
            ipv4: Some("100.64.0.0/24".parse().unwrap()),
            ipv6: Some("fd00:64::/64".parse().unwrap()),
        }
    }

    #[test]
    fn addresses_inside_the_overlay_pass() {
        let p = plan();
        p.check(&[net("100.64.0.4/24"), net("fd00:64::4/64")])
            .unwrap();
        p.check(&[net("100.64.0.4/32"), net("100.64.0.5/28")])
            .unwrap();
        p.check(&[]).unwrap();
    }

    #[test]
    fn addresses_outside_reserved_repeated_or_too_many_are_refused() {
        let p = plan();
        let err = |list: &[&str]| {
            let nets: Vec<IpNet> = list.iter().map(|n| net(n)).collect();
            p.check(&nets).unwrap_err().to_string()
        };
        assert!(err(&["0.0.0.0/1"]).contains("outside the overlay (100.64.0.0/24, fd00:64::/64)"));
        assert!(err(&["100.64.0.9/16"]).contains("its network 100.64.0.0/16"));
        assert!(err(&["198.51.100.53/32"]).contains("outside"));
        assert!(err(&["fd00:65::1/64"]).contains("outside"));
        assert!(err(&["100.64.0.0/24"]).contains("network or broadcast"));
        assert!(err(&["100.64.0.255/32"]).contains("network or broadcast"));
        assert!(err(&["fd00:64::/128"]).contains("network or broadcast"));
        assert!(err(&["100.64.0.4/24", "100.64.0.4/32"]).contains("listed twice"));
        let many: Vec<String> = (1..=9).map(|i| format!("100.64.0.{i}/32")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(err(&many).contains("at most 8"));
    }

    #[test]
    fn the_next_free_address_of_each_prefix_is_assigned() {
        let p = plan();
        let held: HashSet<IpAddr> = ["100.64.0.1", "100.64.0.2", "fd00:64::1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            p.assign(&held).unwrap(),
            vec![net("100.64.0.3/24"), net("fd00:64::2/64")]
        );
        let tiny = Network {
            ipv4: Some("100.64.0.0/30".parse().unwrap()),
            ipv6: None,
        };
        let held: HashSet<IpAddr> = ["100.64.0.1", "100.64.0.2"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            tiny.assign(&held).unwrap_err().to_string(),
            "the overlay prefix 100.64.0.0/30 has no free address left"
        );
    }

    #[test]
    fn configured_prefixes_are_checked() {
        check_prefix(&net("100.64.0.0/10")).unwrap();
        check_prefix(&net("fd00:64::/64")).unwrap();
        assert!(check_prefix(&net("100.64.0.1/24"))
            .unwrap_err()
            .contains("100.64.0.0/24"));
        assert!(check_prefix(&net("0.0.0.0/1")).unwrap_err().contains("/8"));
        assert!(check_prefix(&net("100.64.0.0/31")).is_err());
        assert!(check_prefix(&net("::/8")).is_err());
    }
}
