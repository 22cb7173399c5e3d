//! The demo's network: a hub namespace holding a bridge (the virtual switch), and the
//! controller's and the three nodes' namespaces, each joined to the switch by a veth pair.
//! Every link lives inside a demo namespace, so deleting the namespaces removes them all.
//! The namespaces are [`meshtun_testbed::Netns`] guards, the ones the e2e tests use.
//!
//! With `--nat`, the relay's namespace joins the switch too, and each node is put behind a
//! NAT router ([`meshtun_testbed::nat::Router`], the e2e tests' routers): the router takes
//! the node's outer address as its public one and the node gets a private address.

use std::net::Ipv4Addr;

use meshtun_testbed::nat::Router;
use meshtun_testbed::Netns;

use super::plan::{controllers, nat_mapping, Names, HUB, NODES, PREFIX_LEN, RELAY, RELAY_ADDR};
use super::DemoError;

/// The bridge in the hub namespace.
const BRIDGE: &str = "switch";

/// The name of the outer interface in every namespace joined to the switch.
pub const OUTER_IF: &str = "eth0";

/// The namespaces and links of one run; deleted on drop.
#[derive(Debug)]
pub struct Network {
    /// The namespaces created so far, in order.
    namespaces: Vec<Netns>,
    /// With `--nat`: the nodes' routers, in node order.
    routers: Vec<Router>,
}

impl Network {
    /// Creates every namespace (with both controllers' if `ha`, the relay's and the
    /// routers if `nat`), the switch and the veth pairs, and addresses the outer
    /// interfaces. What was created is deleted again if a step fails.
    pub fn create(names: &Names, ha: bool, nat: bool) -> Result<Self, DemoError> {
        let mut network = Self {
            namespaces: Vec::new(),
            routers: Vec::new(),
        };
        for ns in names.all_namespaces(ha, nat) {
            network.namespaces.push(Netns::create(ns)?);
        }
        let hub = network.get(&names.namespace(HUB))?;
        hub.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        hub.ip(&["link", "set", BRIDGE, "up"])?;
        let mut members: Vec<_> = controllers(ha)
            .iter()
            .map(|c| (c.role.to_owned(), c.addr))
            .collect();
        if nat {
            members.push((RELAY.to_owned(), RELAY_ADDR));
        }
        members.extend(NODES.iter().map(|n| (n.letter.to_string(), n.outer)));
        for (role, addr) in members {
            join_switch(hub, network.get(&names.namespace(&role))?, &role, addr)?;
        }
        if nat {
            for node in &NODES {
                let ns = Netns::create(names.router_namespace(node))?;
                let inside = network.get(&names.node_namespace(node))?;
                let router = Router::insert(ns, inside, node.outer, nat_mapping(node))?;
                network.routers.push(router);
            }
        }
        Ok(network)
    }

    /// With `--nat`: the routers, in node order.
    pub fn routers(&self) -> &[Router] {
        &self.routers
    }

    /// The namespace called `name`.
    pub fn get(&self, name: &str) -> Result<&Netns, DemoError> {
        self.namespaces
            .iter()
            .find(|ns| ns.name() == name)
            .ok_or_else(|| {
                let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "not created");
                DemoError::io(format!("namespace {name}"), missing)
            })
    }

    /// How many namespaces exist (the routers' included).
    pub fn len(&self) -> usize {
        self.namespaces.len() + self.routers.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Deletes every namespace, the last created first (and with them every link and tun
    /// device in them); returns a message for each one that could not be deleted.
    pub fn delete(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        while let Some(router) = self.routers.pop() {
            if let Err(error) = router.delete() {
                problems.push(meshtun_proto::report::describe(&error));
            }
        }
        while let Some(ns) = self.namespaces.pop() {
            if let Err(error) = ns.delete() {
                problems.push(meshtun_proto::report::describe(&error));
            }
        }
        problems
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for problem in self.delete() {
            eprintln!("meshtun demo: {problem}");
        }
    }
}

/// Joins namespace `ns` to the switch in `hub`: a veth pair with `OUTER_IF` in `ns`,
/// addressed `addr`, and `v-ROLE` on the bridge.
fn join_switch(hub: &Netns, ns: &Netns, role: &str, addr: Ipv4Addr) -> Result<(), DemoError> {
    let port = format!("v-{role}");
    hub.ip(&[
        "link",
        "add",
        &port,
        "type",
        "veth",
        "peer",
        "name",
        OUTER_IF,
        "netns",
        ns.name(),
    ])?;
    hub.ip(&["link", "set", &port, "master", BRIDGE, "up"])?;
    let cidr = format!("{addr}/{PREFIX_LEN}");
    ns.ip(&["addr", "add", &cidr, "dev", OUTER_IF])?;
    ns.ip(&["link", "set", OUTER_IF, "up"])?;
    Ok(())
}
