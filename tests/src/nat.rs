//! NAT routers for end-to-end tests: [`meshtun_testbed::nat::Router`] (shared with
//! `meshtun demo --nat`) in a namespace named for the test, with commands that fail the
//! test when they fail.
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

use crate::netns::Netns;
pub use meshtun_testbed::nat::Mapping;

/// A NAT router in front of one node; its namespace (and so its links and rules) goes away
/// when dropped.
#[derive(Debug)]
pub struct Router {
    inner: meshtun_testbed::nat::Router,
    /// The router's public address (the node's outer address before).
    pub public: Ipv4Addr,
    /// The node's address on the private link.
    pub private: Ipv4Addr,
    /// The node's end of the private link (a device in the node's namespace).
    pub node_link: String,
}

/// Fails the test with the harness error.
fn check<T>(result: Result<T, meshtun_testbed::Error>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

impl Router {
    /// Puts a router between `node` and the network its outer address `public` is on (see
    /// [`meshtun_testbed::nat::Router::insert`]), in a new namespace named for `test`.
    pub fn insert(test: &str, node: &Netns, public: Ipv4Addr, mapping: Mapping) -> Self {
        let ns = Netns::new(test).into_inner();
        let inner = check(meshtun_testbed::nat::Router::insert(
            ns, node, public, mapping,
        ));
        Self {
            inner,
            public,
            private: meshtun_testbed::nat::NODE_PRIVATE,
            node_link: meshtun_testbed::nat::NODE_LINK.to_owned(),
        }
    }

    /// Maps new flows as `mapping` says from now on, and forgets the existing mappings.
    pub fn set_mapping(&self, mapping: Mapping) {
        check(self.inner.set_mapping(mapping));
    }

    /// Forwards UDP `port` of the public address to the node's same port, whoever sends
    /// (a "full cone" for that port).
    pub fn forward_port(&self, port: u16) {
        check(self.inner.forward_port(port));
    }

    /// Forgets every mapping (`conntrack -F`), as a router that reboots or rebinds does.
    pub fn flush_conntrack(&self) {
        check(self.inner.flush_conntrack());
    }

    /// Sets how long an idle UDP mapping lives, in seconds.
    pub fn set_udp_timeout(&self, seconds: u32) {
        check(self.inner.set_udp_timeout(seconds));
    }

    /// The public ports the router maps the node's UDP flows to destination port `dport` to,
    /// as `(destination address, public port)`, from its conntrack table.
    pub fn udp_mappings(&self, dport: u16) -> Vec<(Ipv4Addr, u16)> {
        check(self.inner.udp_mappings(dport))
    }
}
