//! The routing netlink requests the host setup makes: links, addresses, routes and rules.
//! Errors are returned as `io::Error` carrying the kernel's errno, so that callers can tell
//! "already exists" and "already gone" apart from real failures.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{AddressFlags, AddressHeaderFlags};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{AddressMessageBuilder, Handle, IpVersion, LinkUnspec, RouteMessageBuilder};
use tokio::task::JoinHandle;

use crate::host::routes::{Family, MAIN_TABLE};
use crate::host::state::RuleKind;

/// An open routing netlink connection; its background task stops when this is dropped.
pub struct Netlink {
    handle: Handle,
    task: JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A network interface as far as the host setup cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// True for a tun/tap device.
    pub is_tun: bool,
    /// True when the link has carrier: for a tun device, a process has it open.
    pub attached: bool,
}

/// True when the error means the object does not exist (any more).
pub fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ESRCH | libc::ENODEV | libc::EADDRNOTAVAIL | libc::ENXIO)
    )
}

/// True when the error means the object already exists.
pub fn is_exists(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EEXIST)
}

fn to_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn family_of(family: Family) -> AddressFamily {
    match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

impl Netlink {
    /// Opens a connection; must be called inside a tokio runtime.
    pub fn connect() -> io::Result<Netlink> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        let task = tokio::spawn(connection);
        Ok(Netlink { handle, task })
    }

    /// The interface named `name`, if it exists.
    pub async fn link(&self, name: &str) -> io::Result<Option<Link>> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match links.try_next().await {
            Ok(Some(msg)) => {
                let is_tun = msg.attributes.iter().any(|attr| match attr {
                    LinkAttribute::LinkInfo(infos) => infos
                        .iter()
                        .any(|info| matches!(info, LinkInfo::Kind(InfoKind::Tun))),
                    _ => false,
                });
                let attached = msg
                    .attributes
                    .iter()
                    .any(|attr| matches!(attr, LinkAttribute::Carrier(1)));
                Ok(Some(Link {
                    index: msg.header.index,
                    is_tun,
                    attached,
                }))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                let e = to_io(e);
                if is_gone(&e) {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// `ip link set dev IF mtu MTU up`.
    pub async fn set_mtu_up(&self, index: u32, mtu: u32) -> io::Result<()> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).up().build();
        self.handle.link().set(msg).execute().await.map_err(to_io)
    }

    /// `ip link delete dev IF`.
    pub async fn delete_link(&self, index: u32) -> io::Result<()> {
        self.handle.link().del(index).execute().await.map_err(to_io)
    }

    /// `ip address add ADDR/LEN dev IF`, IPv6 addresses with `nodad` so they are usable at
    /// once.
    pub async fn add_address(&self, index: u32, addr: &IpNet) -> io::Result<()> {
        let mut req = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        if addr.addr().is_ipv6() {
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(netlink_packet_route::address::AddressAttribute::Flags(
                    AddressFlags::Nodad,
                ));
        }
        req.execute().await.map_err(to_io)
    }

    /// `ip address delete ADDR/LEN dev IF`.
    pub async fn delete_address(&self, index: u32, addr: &IpNet) -> io::Result<()> {
        let msg = match addr.addr() {
            IpAddr::V4(ip) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(ip, addr.prefix_len())
                .build(),
            IpAddr::V6(ip) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(ip, addr.prefix_len())
                .build(),
        };
        self.handle
            .address()
            .del(msg)
            .execute()
            .await
            .map_err(to_io)
    }

    /// `ip route add DEST dev IF table TABLE`.
    pub async fn add_route(&self, index: u32, dest: &IpNet, table: u32) -> io::Result<()> {
        let msg = route_message(index, dest, table, false)?;
        self.handle.route().add(msg).execute().await.map_err(to_io)
    }

    /// `ip route delete DEST dev IF table TABLE`.
    pub async fn delete_route(&self, index: u32, dest: &IpNet, table: u32) -> io::Result<()> {
        let msg = route_message(index, dest, table, true)?;
        self.handle.route().del(msg).execute().await.map_err(to_io)
    }

    /// Every IPv4 and IPv6 route, as (destination, table, output interface).
    pub async fn routes(&self) -> io::Result<Vec<(IpNet, u32, Option<u32>)>> {
        let mut out = Vec::new();
        for family in [Family::V4, Family::V6] {
            let mut query = RouteMessage::default();
            query.header.address_family = family_of(family);
            let mut stream = self.handle.route().get(query).execute();
            while let Some(msg) = stream.try_next().await.map_err(to_io)? {
                if let Some(route) = route_summary(&msg) {
                    out.push(route);
                }
            }
        }
        Ok(out)
    }

    /// `ip rule add ...` for one of the default-route rules; the kernel picks the priority.
    pub async fn add_rule(&self, family: Family, kind: RuleKind) -> io::Result<()> {
        let mut req = self.handle.rule().add();
        *req.message_mut() = rule_message(family, kind, None);
        req.execute().await.map_err(to_io)
    }

    /// `ip rule delete ...`, matching the priority when it is known.
    pub async fn delete_rule(
        &self,
        family: Family,
        kind: RuleKind,
        priority: Option<u32>,
    ) -> io::Result<()> {
        let msg = rule_message(family, kind, priority);
        self.handle.rule().del(msg).execute().await.map_err(to_io)
    }

    /// The priorities of the rules of `family` that match `kind`.
    pub async fn rule_priorities(&self, family: Family, kind: RuleKind) -> io::Result<Vec<u32>> {
        let version = match family {
            Family::V4 => IpVersion::V4,
            Family::V6 => IpVersion::V6,
        };
        let mut stream = self.handle.rule().get(version).execute();
        let mut out = Vec::new();
        while let Some(msg) = stream.try_next().await.map_err(to_io)? {
            if rule_matches(&msg, kind) {
                out.push(rule_priority(&msg));
            }
        }
        Ok(out)
    }

    /// True when some rule of `family` carries `suppress_prefixlength` (another default
    /// route set up this way is active).
    pub async fn any_suppress_rule(&self, family: Family) -> io::Result<bool> {
        Ok(!self
            .rule_priorities(family, RuleKind::SuppressMainDefault)
            .await?
            .is_empty())
    }
}

fn route_message(index: u32, dest: &IpNet, table: u32, delete: bool) -> io::Result<RouteMessage> {
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(dest.network(), dest.prefix_len())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?
        .output_interface(index)
        .table_id(table);
    let mut msg = builder.build();
    if delete {
        // Match any protocol and scope, as `ip route delete` does.
        msg.header.protocol = RouteProtocol::Unspec;
        msg.header.scope = RouteScope::NoWhere;
    } else {
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = match dest {
            IpNet::V4(_) => RouteScope::Link,
            IpNet::V6(_) => RouteScope::Universe,
        };
    }
    msg.header.kind = RouteType::Unicast;
    Ok(msg)
}

fn route_summary(msg: &RouteMessage) -> Option<(IpNet, u32, Option<u32>)> {
    let mut table = u32::from(msg.header.table);
    let mut dest = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => dest = Some(IpAddr::V4(*a)),
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => dest = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let len = msg.header.destination_prefix_length;
    let dest = match (dest, msg.header.address_family) {
        (Some(addr), _) => addr,
        (None, AddressFamily::Inet) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (None, AddressFamily::Inet6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        (None, _) => return None,
    };
    let net = IpNet::new(dest, len).ok()?;
    Some((net, table, oif))
}

fn rule_message(family: Family, kind: RuleKind, priority: Option<u32>) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = family_of(family);
    msg.header.action = RuleAction::ToTable;
    let table = match kind {
        RuleKind::NotFwmark { fwmark, table } => {
            msg.header.flags = RuleFlags::Invert;
            msg.attributes.push(RuleAttribute::FwMark(fwmark));
            table
        }
        RuleKind::SuppressMainDefault => {
            msg.attributes.push(RuleAttribute::SuppressPrefixLen(0));
            MAIN_TABLE
        }
    };
    match u8::try_from(table) {
        Ok(small) => msg.header.table = small,
        Err(_) => msg.attributes.push(RuleAttribute::Table(table)),
    }
    if let Some(priority) = priority {
        msg.attributes.push(RuleAttribute::Priority(priority));
    }
    msg
}

fn rule_table(msg: &RuleMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

fn rule_priority(msg: &RuleMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Priority(p) => Some(*p),
            _ => None,
        })
        .unwrap_or(0)
}

fn rule_matches(msg: &RuleMessage, kind: RuleKind) -> bool {
    let fwmark = msg.attributes.iter().find_map(|a| match a {
        RuleAttribute::FwMark(m) => Some(*m),
        _ => None,
    });
    let suppress = msg.attributes.iter().find_map(|a| match a {
        RuleAttribute::SuppressPrefixLen(s) => Some(*s),
        _ => None,
    });
    match kind {
        RuleKind::NotFwmark {
            fwmark: mark,
            table,
        } => {
            msg.header.flags.contains(RuleFlags::Invert)
                && fwmark == Some(mark)
                && rule_table(msg) == table
        }
        RuleKind::SuppressMainDefault => suppress == Some(0) && rule_table(msg) == MAIN_TABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_fwmark_rule_uses_the_table_attribute_for_large_tables() {
        let kind = RuleKind::NotFwmark {
            fwmark: 51820,
            table: 51820,
        };
        let msg = rule_message(Family::V4, kind, Some(32765));
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert_eq!(msg.header.action, RuleAction::ToTable);
        assert!(msg.header.flags.contains(RuleFlags::Invert));
        assert_eq!(rule_table(&msg), 51820);
        assert_eq!(rule_priority(&msg), 32765);
        assert!(rule_matches(&msg, kind));
        assert!(!rule_matches(&msg, RuleKind::SuppressMainDefault));
        let other_mark = RuleKind::NotFwmark {
            fwmark: 1,
            table: 51820,
        };
        assert!(!rule_matches(&msg, other_mark));
    }

    #[test]
    fn suppress_rule_looks_up_main() {
        let msg = rule_message(Family::V6, RuleKind::SuppressMainDefault, None);
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        assert_eq!(msg.header.table, 254);
        assert!(!msg.header.flags.contains(RuleFlags::Invert));
        assert!(rule_matches(&msg, RuleKind::SuppressMainDefault));
    }

    #[test]
    fn route_summary_reads_default_routes_without_destination() {
        let dest: IpNet = "::/0".parse().unwrap();
        let msg = route_message(3, &dest, 51820, false).unwrap();
        assert_eq!(route_summary(&msg), Some((dest, 51820, Some(3))));
        let dest: IpNet = "100.64.0.0/10".parse().unwrap();
        let msg = route_message(3, &dest, MAIN_TABLE, false).unwrap();
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(route_summary(&msg), Some((dest, MAIN_TABLE, Some(3))));
    }
}
