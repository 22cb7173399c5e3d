//! Which routes to add and where, decided from the plan alone (no system calls).

// Parts of this module serve only the Linux implementation.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::RouteTable;

/// The first routing table (and firewall mark) tried for a default route with
/// `table = auto` when no fwmark is configured, as `wg-quick` does.
pub const FIRST_AUTO_TABLE: u32 = 51820;

/// The kernel's main routing table.
pub const MAIN_TABLE: u32 = 254;

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of a network.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    /// `-4` or `-6`, as `ip` writes it.
    pub fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
}

/// Where one route goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The main table, unless a route on the interface already covers it (`table = auto`).
    Main,
    /// This table, unconditionally (`table = N`).
    Table(u32),
    /// A default route with `table = auto`: its own table selected by fwmark, with policy
    /// rules (the `wg-quick` default-route handling).
    PolicyDefault,
}

/// True for `0.0.0.0/0` and `::/0`.
pub fn is_default(net: &IpNet) -> bool {
    net.prefix_len() == 0
}

/// The routes in the order `wg-quick` adds them: host bits cleared, duplicates removed,
/// longest prefix first (ties by address, for a stable order).
pub fn sorted_routes(routes: &[IpNet]) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = routes.iter().map(IpNet::trunc).collect();
    out.sort_by(|a, b| {
        b.prefix_len()
            .cmp(&a.prefix_len())
            .then_with(|| Family::of(a).cmp(&Family::of(b)))
            .then_with(|| a.network().cmp(&b.network()))
    });
    out.dedup();
    out
}

/// Where a route goes under `table`; `None` when no route is added (`table = off`).
pub fn placement(net: &IpNet, table: RouteTable) -> Option<Placement> {
    match table {
        RouteTable::Off => None,
        RouteTable::Id(id) => Some(Placement::Table(id)),
        RouteTable::Auto if is_default(net) => Some(Placement::PolicyDefault),
        RouteTable::Auto => Some(Placement::Main),
    }
}

/// The first table number from [`FIRST_AUTO_TABLE`] that holds no route, as `wg-quick`
/// picks it when no fwmark is configured.
pub fn first_free_table(used: impl IntoIterator<Item = u32>) -> Option<u32> {
    let used: std::collections::BTreeSet<u32> = used.into_iter().collect();
    (FIRST_AUTO_TABLE..=u32::MAX).find(|t| !used.contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn routes_sorted_longest_prefix_first_without_duplicates() {
        let input = nets(&[
            "0.0.0.0/0",
            "100.64.0.0/10",
            "fd00::/8",
            "100.64.1.7/32",
            "192.0.2.9/24",
            "192.0.2.0/24",
            "::/0",
        ]);
        let expected = nets(&[
            "100.64.1.7/32",
            "192.0.2.0/24",
            "100.64.0.0/10",
            "fd00::/8",
            "0.0.0.0/0",
            "::/0",
        ]);
        assert_eq!(sorted_routes(&input), expected);
    }

    #[test]
    fn default_routes_are_prefix_zero_only() {
        assert!(is_default(&"0.0.0.0/0".parse().unwrap()));
        assert!(is_default(&"::/0".parse().unwrap()));
        assert!(!is_default(&"0.0.0.0/1".parse().unwrap()));
        assert!(!is_default(&"128.0.0.0/1".parse().unwrap()));
        assert!(!is_default(&"::/1".parse().unwrap()));
    }

    #[test]
    fn placement_follows_table_setting() {
        let default4: IpNet = "0.0.0.0/0".parse().unwrap();
        let default6: IpNet = "::/0".parse().unwrap();
        let net: IpNet = "100.64.0.0/10".parse().unwrap();
        assert_eq!(placement(&net, RouteTable::Off), None);
        assert_eq!(placement(&default4, RouteTable::Off), None);
        assert_eq!(placement(&net, RouteTable::Auto), Some(Placement::Main));
        assert_eq!(
            placement(&default4, RouteTable::Auto),
            Some(Placement::PolicyDefault)
        );
        assert_eq!(
            placement(&default6, RouteTable::Auto),
            Some(Placement::PolicyDefault)
        );
        assert_eq!(
            placement(&default4, RouteTable::Id(7)),
            Some(Placement::Table(7))
        );
        assert_eq!(
            placement(&net, RouteTable::Id(7)),
            Some(Placement::Table(7))
        );
    }

    #[test]
    fn first_free_table_skips_used_tables() {
        assert_eq!(first_free_table([254, 255]), Some(51820));
        assert_eq!(first_free_table([51820, 51821, 51823]), Some(51822));
    }
}
