//! NAT routers: a namespace put between a node and its network that forwards the node's
//! traffic and masquerades it with nftables, so that the node sits behind a NAT as it would
//! behind a home router or a carrier-grade NAT. Used by the e2e tests and `meshtun demo --nat`.
//!
//! ```text
//!   node (198.51.100.2) --private veth-- router (198.51.100.1 | PUBLIC) --the node's old link-- network
//! ```
//!
//! [`Router::insert`] moves the node's outer link into the router, which takes the node's
//! outer address as its public address; the node gets a private link with a default route
//! through the router. [`Mapping`] says how the router maps the node's flows;
//! [`Router::set_mapping`], [`Router::flush_conntrack`] and [`Router::set_udp_timeout`]
//! change it later. The conntrack commands need the `conntrack` tool (Debian package
//! `conntrack`); the rules need `nft` (package `nftables`).

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::run::run_ok;
use crate::{Error, Netns};

/// The nftables table the router's rules live in.
const TABLE: &str = "meshtun_nat";

/// The router's address on the private link (every router has its own link, so all use
/// the same documentation subnet, 198.51.100.0/24).
pub const ROUTER_PRIVATE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// The node's address on the private link.
pub const NODE_PRIVATE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// The router's end of the private link.
const ROUTER_LINK: &str = "lan0";

/// The node's end of the private link.
pub const NODE_LINK: &str = "nat0";

/// How long one `nft`, `sysctl` or `conntrack` command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// The nftables statement.
    pub fn statement(self) -> &'static [&'static str] {
        match self {
            Mapping::EndpointIndependent => &["masquerade"],
            Mapping::FullyRandom => &["masquerade", "random,fully-random"],
        }
    }

    /// The statement as written in an nftables rule.
    pub fn rule_text(self) -> String {
        self.statement().join(" ")
    }
}

/// A NAT router in front of one node; [`Router::delete`] (or dropping it) deletes its
/// namespace, and with it its links and rules.
#[derive(Debug)]
pub struct Router {
    ns: Netns,
    public: Ipv4Addr,
    outside: String,
}

impl Router {
    /// Puts a router, in the new namespace `ns`, between `node` and the network its outer
    /// address `public` is on: the link holding `public` moves into `ns`, which takes
    /// `public` (same prefix length) and masquerades what the node sends as `mapping` says;
    /// the node gets [`NODE_PRIVATE`]/24 on [`NODE_LINK`] and a default route through the
    /// router. The router drops what arrives from outside unasked.
    pub fn insert(
        ns: Netns,
        node: &Netns,
        public: Ipv4Addr,
        mapping: Mapping,
    ) -> Result<Self, Error> {
        let (outside, prefix) = link_with(node, public)?;
        node.ip(&["link", "set", "dev", &outside, "netns", ns.name()])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{public}/{prefix}"),
            "dev",
            &outside,
        ])?;
        ns.ip(&["link", "set", &outside, "up"])?;
        ns.ip(&[
            "link",
            "add",
            ROUTER_LINK,
            "type",
            "veth",
            "peer",
            "name",
            NODE_LINK,
            "netns",
            node.name(),
        ])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_PRIVATE}/24"),
            "dev",
            ROUTER_LINK,
        ])?;
        ns.ip(&["link", "set", ROUTER_LINK, "up"])?;
        node.ip(&[
            "addr",
            "add",
            &format!("{NODE_PRIVATE}/24"),
            "dev",
            NODE_LINK,
        ])?;
        node.ip(&["link", "set", NODE_LINK, "up"])?;
        node.ip(&[
            "route",
            "add",
            "default",
            "via",
            &ROUTER_PRIVATE.to_string(),
        ])?;
        let router = Self {
            ns,
            public,
            outside,
        };
        router.run(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])?;
        router.run(&["nft", "add", "table", "ip", TABLE])?;
        router.nft_chain("postrouting", "type nat hook postrouting priority 100 ;")?;
        router.add_rule(mapping)?;
        router.firewall_inbound()?;
        Ok(router)
    }

    /// The router's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Its public address (the node's outer address before).
    pub fn public(&self) -> Ipv4Addr {
        self.public
    }

    /// Runs `args[0] args[1..]` in the router's namespace; its standard output.
    fn run(&self, args: &[&str]) -> Result<String, Error> {
        let (program, rest) = args.split_first().ok_or_else(|| Error::Output {
            what: "a router command".into(),
            detail: "empty".into(),
        })?;
        run_ok(&mut self.ns.command(program, rest), COMMAND_TIMEOUT)
    }

    /// `nft add chain ip TABLE name { spec }`.
    fn nft_chain(&self, name: &str, spec: &str) -> Result<(), Error> {
        let mut args = vec!["nft", "add", "chain", "ip", TABLE, name, "{"];
        args.extend(spec.split(' '));
        args.push("}");
        self.run(&args).map(drop)
    }

    /// Drops what arrives from outside unasked, addressed to the router itself, as a home
    /// router's firewall does. Without it, a peer's packet that reaches the router before
    /// the node's own has opened the mapping leaves a connection-tracking entry for the
    /// router's own port, and the node's packet is then mapped to another port (Linux
    /// avoids the clash): a simultaneous open that lost the race would never complete.
    fn firewall_inbound(&self) -> Result<(), Error> {
        self.nft_chain(
            "input",
            "type filter hook input priority 0 ; policy accept ;",
        )?;
        self.run(&[
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
        ])
        .map(drop)
    }

    fn add_rule(&self, mapping: Mapping) -> Result<(), Error> {
        let mut args = vec!["nft", "add", "rule", "ip", TABLE, "postrouting"];
        args.extend(["oifname", self.outside.as_str()]);
        args.extend(mapping.statement());
        self.run(&args).map(drop)
    }

    /// Maps new flows as `mapping` says from now on, and forgets the existing mappings
    /// (`conntrack -F`), so that every flow gets a new one.
    pub fn set_mapping(&self, mapping: Mapping) -> Result<(), Error> {
        self.run(&["nft", "flush", "chain", "ip", TABLE, "postrouting"])?;
        self.add_rule(mapping)?;
        self.flush_conntrack()
    }

    /// Forwards UDP `port` of the public address to the node's same port, whoever sends
    /// (endpoint-independent filtering for that port: a "full cone"), as a port forward on
    /// a home router does.
    pub fn forward_port(&self, port: u16) -> Result<(), Error> {
        self.nft_chain("prerouting", "type nat hook prerouting priority -100 ;")?;
        let to = format!("{}:{port}", NODE_PRIVATE);
        let port = port.to_string();
        let rule = ["udp", "dport", port.as_str(), "dnat", "to", to.as_str()];
        let mut args = vec!["nft", "add", "rule", "ip", TABLE, "prerouting"];
        args.extend(["iifname", self.outside.as_str()]);
        args.extend(rule);
        self.run(&args).map(drop)
    }

    /// Forgets every mapping (`conntrack -F`), as a router that reboots or rebinds does.
    pub fn flush_conntrack(&self) -> Result<(), Error> {
        self.run(&["conntrack", "-F"]).map(drop)
    }

    /// Sets how long an idle UDP mapping lives, in seconds (both the one-way and the
    /// "stream" timeout).
    pub fn set_udp_timeout(&self, seconds: u32) -> Result<(), Error> {
        for key in [
            "net.netfilter.nf_conntrack_udp_timeout",
            "net.netfilter.nf_conntrack_udp_timeout_stream",
        ] {
            self.run(&["sysctl", "-q", "-w", &format!("{key}={seconds}")])?;
        }
        Ok(())
    }

    /// The public ports the router maps the node's UDP flows to destination port `dport` to,
    /// as `(destination address, public port)`, from its conntrack table.
    pub fn udp_mappings(&self, dport: u16) -> Result<Vec<(Ipv4Addr, u16)>, Error> {
        let out = self.run(&["conntrack", "-L", "-p", "udp"])?;
        Ok(parse_udp_mappings(&out, dport))
    }

    /// Deletes the router's namespace now, reporting a failure.
    pub fn delete(self) -> Result<(), Error> {
        self.ns.delete()
    }
}

/// The link of `ns` that holds `addr`, and the address's prefix length.
fn link_with(ns: &Netns, addr: Ipv4Addr) -> Result<(String, u8), Error> {
    let out = ns.ip(&["-o", "-4", "addr", "show"])?;
    let wanted = format!("{addr}/");
    out.lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = fields.iter().position(|f| f.starts_with(&wanted))?;
            let prefix = fields[at].strip_prefix(&wanted)?.parse().ok()?;
            let dev = fields.get(1)?.split('@').next()?.to_owned();
            Some((dev, prefix))
        })
        .ok_or_else(|| Error::Output {
            what: format!("the addresses of namespace {}", ns.name()),
            detail: format!("no link holds {addr}:\n{out}"),
        })
}

/// `conntrack -L` lines of UDP flows to port `dport`: the original destination, and the
/// destination port of the reply direction (the public port the NAT chose).
pub fn parse_udp_mappings(listing: &str, dport: u16) -> Vec<(Ipv4Addr, u16)> {
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

    #[test]
    fn the_symmetric_nat_randomises_every_port() {
        assert_eq!(Mapping::EndpointIndependent.rule_text(), "masquerade");
        assert_eq!(
            Mapping::FullyRandom.rule_text(),
            "masquerade random,fully-random"
        );
    }
}
