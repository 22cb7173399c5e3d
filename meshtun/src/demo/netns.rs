//! The demo's network: a hub namespace holding a bridge (the virtual switch), and the
//! controller's and the three nodes' namespaces, each joined to the switch by a veth pair.
//! Every link lives inside a demo namespace, so deleting the namespaces removes them all.

use std::fs::File;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use nix::sched::{setns, CloneFlags};

use super::plan::{Names, CONTROLLER, CONTROLLER_ADDR, HUB, NODES, PREFIX_LEN};
use super::DemoError;

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// The bridge in the hub namespace.
const BRIDGE: &str = "switch";

/// The name of the outer interface in every namespace joined to the switch.
pub const OUTER_IF: &str = "eth0";

/// Runs `ip args`; its standard output, or an error with its standard error.
pub fn ip(args: &[&str]) -> Result<String, DemoError> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| DemoError::io(format!("cannot run `{command}`"), source))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(DemoError::Command {
            command,
            reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Checks that the `ip` tool is there.
pub fn check_ip_tool() -> Result<(), DemoError> {
    Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(drop)
        .map_err(|source| DemoError::MissingTool {
            tool: "ip (iproute2)",
            source,
        })
}

/// Moves the calling thread into namespace `name`. Threads it starts afterwards, and sockets
/// it creates, belong to that namespace.
pub fn enter(name: &str) -> std::io::Result<()> {
    let file = File::open(format!("{NETNS_DIR}/{name}"))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
}

/// Runs `f` on a new thread inside namespace `name` and returns its result.
pub fn in_namespace<T: Send>(
    name: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter(name)?;
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The namespaces and links of one run; deleted on drop.
#[derive(Debug)]
pub struct Network {
    /// The namespaces created so far, in order.
    namespaces: Vec<String>,
}

impl Network {
    /// Creates every namespace, the switch and the veth pairs, and addresses the outer
    /// interfaces. What was created is deleted again if a step fails.
    pub fn create(names: &Names) -> Result<Self, DemoError> {
        let mut network = Self {
            namespaces: Vec::new(),
        };
        for ns in names.all_namespaces() {
            ip(&["netns", "add", &ns])?;
            network.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let hub = names.namespace(HUB);
        ip(&["-n", &hub, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", BRIDGE, "up"])?;
        let mut members = vec![(CONTROLLER.to_owned(), CONTROLLER_ADDR)];
        members.extend(NODES.iter().map(|n| (n.letter.to_string(), n.outer)));
        for (role, addr) in members {
            join_switch(&hub, &names.namespace(&role), &role, addr)?;
        }
        Ok(network)
    }

    /// The namespaces that still exist.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// Deletes every namespace (and with them every link and tun device in them); returns
    /// a message for each one that could not be deleted.
    pub fn delete(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for ns in self.namespaces.drain(..).rev() {
            if let Err(error) = ip(&["netns", "delete", &ns]) {
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
fn join_switch(hub: &str, ns: &str, role: &str, addr: Ipv4Addr) -> Result<(), DemoError> {
    let port = format!("v-{role}");
    ip(&[
        "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", OUTER_IF, "netns", ns,
    ])?;
    ip(&["-n", hub, "link", "set", &port, "master", BRIDGE, "up"])?;
    let cidr = format!("{addr}/{PREFIX_LEN}");
    ip(&["-n", ns, "addr", "add", &cidr, "dev", OUTER_IF])?;
    ip(&["-n", ns, "link", "set", OUTER_IF, "up"])?;
    Ok(())
}
