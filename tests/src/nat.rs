//! NAT routers for end-to-end tests: a namespace put between a node and its network that
//! forwards the node's traffic and masquerades it with nftables, so that the node sits
//! behind a NAT as it would behind a home router or a carrier-grade NAT.
//!
//! ```text
//!   node (198.51.100.2) --private veth-- router (198.51.100.1 | PUBLIC) --the node's old link-- network
//! ```
//!
//! [`Router::insert`] moves the node's outer link into the router, which takes the node's
//! outer address as its public address; the node gets a private link with a default route
//! through the router. [`Mapping`] says how the router maps the node's flows;
//! [`Router::set_mapping`], [`Router::flush_conntrack`] and [`Router::set_udp_timeout`]
//! change it during a test. The conntrack commands need the `conntrack` tool (Debian
//! package `conntrack`).

use std::net::Ipv4Addr;

use crate::netns::{Netns, Veth};

/// The nftables table the router's rules live in.
const TABLE: &str = "meshtun_nat";

/// The private subnet between the node and its router (198.51.100.0/24, the veth subnet 1).
const PRIVATE_SUBNET: usize = 1;

/// How the router maps the node's flows to its public address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// `masquerade`: one mapping per source port whatever the destination, the port kept
    /// where it is free (endpoint-independent, a "cone" NAT).
    EndpointIndependent,
    /// `masquerade random,fully-random`: a random port for every new flow, so every
    /// destination sees another port (endpoint-dependent, a "symmetric" NAT).
    FullyRandom,
}

impl Mapping {
    fn statement(self) -> &'static [&'static str] {
        match self {
            Mapping::EndpointIndependent => &["masquerade"],
            Mapping::FullyRandom => &["masquerade", "random,fully-random"],
        }
    }
}

/// A NAT router in front of one node; its namespace (and so its links and rules) goes away
/// when dropped.
pub struct Router {
    /// The router's namespace.
    pub ns: Netns,
    /// The router's public address (the node's outer address before).
    pub public: Ipv4Addr,
    /// The node's address on the private link.
    pub private: Ipv4Addr,
    /// The node's end of the private link (a device in the node's namespace).
    pub node_link: String,
    /// The router's link to the network (the node's old one).
    outside: String,
}

impl Router {
    /// Puts a router between `node` and the network its outer address `public` is on: the
    /// link holding `public` moves into a new namespace, which takes `public` (same prefix
    /// length) and masquerades what the node sends as `mapping` says; the node gets
    /// 198.51.100.2/24 on a private link and a default route through the router.
    pub fn insert(test: &str, node: &Netns, public: Ipv4Addr, mapping: Mapping) -> Self {
        let (outside, prefix) = link_with(node, public);
        let ns = Netns::new(test);
        node.ip(&["link", "set", "dev", &outside, "netns", ns.name()]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{public}/{prefix}"),
            "dev",
            &outside,
        ]);
        ns.ip(&["link", "set", &outside, "up"]);
        let private = Veth::connect(&ns, node, PRIVATE_SUBNET);
        node.ip(&["route", "add", "default", "via", &private.a_v4.to_string()]);
        ns.ok(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        ns.ok(&["nft", "add", "table", "ip", TABLE]);
        ns.ok(&[
            "nft",
            "add",
            "chain",
            "ip",
            TABLE,
            "postrouting",
            "{",
            "type",
            "nat",
            "hook",
            "postrouting",
            "priority",
            "100",
            ";",
            "}",
        ]);
        let router = Self {
            ns,
            public,
            private: private.b_v4,
            node_link: private.b_dev.clone(),
            outside,
        };
        router.add_rule(mapping);
        router.firewall_inbound();
        router
    }

    /// Drops what arrives from outside unasked, addressed to the router itself, as a home
    /// router's firewall does. Without it, a peer's packet that reaches the router before
    /// the node's own has opened the mapping leaves a connection-tracking entry for the
    /// router's own port, and the node's packet is then mapped to another port (Linux
    /// avoids the clash): a simultaneous open that lost the race would never complete.
    fn firewall_inbound(&self) {
        let chain = "{ type filter hook input priority 0 ; policy accept ; }";
        let mut args = vec!["nft", "add", "chain", "ip", TABLE, "input"];
        args.extend(chain.split(' '));
        self.ns.ok(&args);
        self.ns.ok(&[
            "nft",
            "add",
            "rule",
            "ip",
            TABLE,
            "input",
            "iifname",
            self.outside.as_str(),
            "ct",
            "state",
            "new",
            "drop",
        ]);
    }

    fn add_rule(&self, mapping: Mapping) {
        let mut args = vec!["nft", "add", "rule", "ip", TABLE, "postrouting"];
        args.extend(["oifname", self.outside.as_str()]);
        args.extend(mapping.statement());
        self.ns.ok(&args);
    }

    /// Maps new flows as `mapping` says from now on, and forgets the existing mappings
    /// (`conntrack -F`), so that every flow gets a new one.
    pub fn set_mapping(&self, mapping: Mapping) {
        self.ns
            .ok(&["nft", "flush", "chain", "ip", TABLE, "postrouting"]);
        self.add_rule(mapping);
        self.flush_conntrack();
    }

    /// Forgets every mapping (`conntrack -F`), as a router that reboots or rebinds does.
    pub fn flush_conntrack(&self) {
        self.ns.ok(&["conntrack", "-F"]);
    }

    /// Sets how long an idle UDP mapping lives, in seconds (both the one-way and the
    /// "stream" timeout), so that a test can outlast it in seconds.
    pub fn set_udp_timeout(&self, seconds: u32) {
        for key in [
            "net.netfilter.nf_conntrack_udp_timeout",
            "net.netfilter.nf_conntrack_udp_timeout_stream",
        ] {
            self.ns
                .ok(&["sysctl", "-q", "-w", &format!("{key}={seconds}")]);
        }
    }

    /// The public ports the router maps the node's UDP flows to destination port `dport` to,
    /// as `(destination address, public port)`, from its conntrack table.
    pub fn udp_mappings(&self, dport: u16) -> Vec<(Ipv4Addr, u16)> {
        let out = self.ns.ok(&["conntrack", "-L", "-p", "udp"]);
        parse_udp_mappings(&out, dport)
    }
}

/// The link of `ns` that holds `addr`, and the address's prefix length.
fn link_with(ns: &Netns, addr: Ipv4Addr) -> (String, u8) {
    let out = ns.ip(&["-o", "-4", "addr", "show"]);
    let wanted = format!("{addr}/");
    out.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|f| f.starts_with(&wanted))?;
            let prefix = fields[at].strip_prefix(&wanted)?.parse().ok()?;
            let dev = fields.get(1)?.split('@').next()?.to_owned();
            Some((dev, prefix))
        })
        .unwrap_or_else(|| panic!("no link holds {addr} in {}:\n{out}", ns.name()))
}

/// `conntrack -L` lines of UDP flows to port `dport`: the original destination, and the
/// destination port of the reply direction (the public port the NAT chose).
fn parse_udp_mappings(listing: &str, dport: u16) -> Vec<(Ipv4Addr, u16)> {
    let wanted = dport.to_string();
    listing
        .lines()
        .filter_map(|line| {
            let values = |key: &str| -> Vec<&str> {
                line.split_whitespace()
                    .filter_map(|f| f.strip_prefix(key))
                    .collect()
            };
            let (dst, dports) = (values("dst="), values("dport="));
            if dports.first() != Some(&wanted.as_str()) {
                return None;
            }
            Some((dst.first()?.parse().ok()?, dports.get(1)?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_lines_give_the_public_port() {
        let listing = "\
udp      17 29 src=198.51.100.2 dst=192.0.2.250 sport=51820 dport=3478 src=192.0.2.250 dst=192.0.2.1 sport=3478 dport=40123 mark=0 use=1
udp      17 25 src=198.51.100.2 dst=192.0.2.251 sport=51820 dport=3478 [UNREPLIED] src=192.0.2.251 dst=192.0.2.1 sport=3478 dport=51820 mark=0 use=1
udp      17 25 src=198.51.100.2 dst=192.0.2.9 sport=51820 dport=53 src=192.0.2.9 dst=192.0.2.1 sport=53 dport=51820 mark=0 use=1
";
        assert_eq!(
            parse_udp_mappings(listing, 3478),
            [
                (Ipv4Addr::new(192, 0, 2, 250), 40123),
                (Ipv4Addr::new(192, 0, 2, 251), 51820)
            ]
        );
    }
}
