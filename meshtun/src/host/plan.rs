//! What the host setup is asked to do, as plain data built from the configuration.

use std::net::IpAddr;

use ipnet::IpNet;

/// The `table` setting: where routes for the peers' allowed IPs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteTable {
    /// The main table, or for a default route (`0.0.0.0/0`, `::/0`) a table of its own
    /// selected by fwmark, exactly as `wg-quick` does (`Table = auto`).
    #[default]
    Auto,
    /// Add no routes at all (`Table = off`).
    Off,
    /// Add every route to this table.
    Id(u32),
}

/// DNS settings for the interface (`dns = [...]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dns {
    /// Name servers.
    pub servers: Vec<IpAddr>,
    /// Search domains (the non-address entries of `dns`).
    pub search: Vec<String>,
}

impl Dns {
    /// True when there is nothing to configure.
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_empty()
    }
}

/// Shell commands run around bringing the interface up and down. `%i` is replaced by the
/// interface name. Commands run with `sh -c`, in order; a failing `pre_up` or `post_up`
/// aborts the start, as in `wg-quick`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hooks {
    /// Before the tun device is created.
    pub pre_up: Vec<String>,
    /// After the interface is configured and up.
    pub post_up: Vec<String>,
    /// Before the interface is torn down.
    pub pre_down: Vec<String>,
    /// After the interface is removed.
    pub post_down: Vec<String>,
}

/// Everything the host setup applies for one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlan {
    /// Interface name.
    pub ifname: String,
    /// Interface addresses, with their prefix length (host bits kept: `10.0.0.1/24`).
    pub addresses: Vec<IpNet>,
    /// Link MTU.
    pub mtu: u16,
    /// Where routes go.
    pub table: RouteTable,
    /// The configured firewall mark, if any.
    pub fwmark: Option<u32>,
    /// The union of every peer's allowed IPs: one route each.
    pub routes: Vec<IpNet>,
    /// DNS servers and search domains.
    pub dns: Dns,
    /// Hook commands.
    pub hooks: Hooks,
    /// The tun device was created beforehand (`ip tuntap add ... user meshtun`) and is left
    /// as found: its MTU and link state are not changed, and it is never deleted.
    pub existing_link: bool,
}
