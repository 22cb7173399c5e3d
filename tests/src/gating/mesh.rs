//! The namespaces of a gated mesh, the controller's home and the nodes' files.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::MutexGuard;
use std::time::Duration;

use meshtun_proto::PublicKey;
use tempfile::TempDir;

use super::control::ControllerProc;
use super::observe;
use super::ping::PingRun;
use super::{harness_output, Timing, CONTROLLER_HOST, CONTROLLER_PORT, NODE_PORT, PASSING};
use crate::config::{write_secret, Config, Interface, Peer};
use crate::controller::{ControllerHome, TestNode};
use crate::netns::{Netns, COMMAND_TIMEOUT};
use crate::run::run;
use crate::{traffic, Daemon};

/// The bridge joining every namespace of the mesh, inside the hub namespace.
const BRIDGE: &str = "br0";

/// How long the nodes may take, after the admitting rotation, to be in each other's peers.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(20);

/// One gated node: its namespace, keys, interface name and files.
pub struct GatedNode {
    /// Node id at the controller.
    pub id: String,
    /// Host number: outer address `192.0.2.INDEX`, tunnel address `100.64.0.INDEX`.
    pub index: u8,
    /// The node's namespace.
    pub ns: Netns,
    /// Its WireGuard and identity keys, as enrolled.
    pub keys: TestNode,
    /// Its interface name (unique on the machine).
    pub iface: String,
    dir: PathBuf,
}

impl GatedNode {
    /// The tunnel address, `100.64.0.INDEX`.
    pub fn tunnel(&self) -> Ipv4Addr {
        Ipv4Addr::new(100, 64, 0, self.index)
    }

    /// The outer address, `192.0.2.INDEX`.
    pub fn outer(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 0, 2, self.index)
    }

    /// The WireGuard public key.
    pub fn public_key(&self) -> PublicKey {
        self.keys.wg.public_key()
    }

    /// The WireGuard public key in base64, as `wg show` prints it.
    pub fn public_b64(&self) -> String {
        self.public_key().to_base64()
    }

    /// The file the node's benchmark command prints.
    pub fn score_file(&self) -> PathBuf {
        self.dir.join("score.json")
    }

    /// The identity key file (the Ed25519 seed in base64, mode 0600).
    pub fn identity_file(&self) -> PathBuf {
        self.dir.join("identity")
    }

    /// The bundle cache file.
    pub fn cache_file(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// The `[interface]` of the node's configuration, without peers: its private key, tunnel
    /// address in 100.64.0.0/24, port and MTU 1420.
    pub fn interface_config(&self) -> Config {
        Config {
            interface: Interface {
                name: self.iface.clone(),
                private_key: self.keys.wg.to_base64(),
                address: vec![format!("{}/24", self.tunnel())],
                listen_port: Some(NODE_PORT),
                mtu: Some(1420),
            },
            peers: Vec::new(),
            metrics: None,
        }
    }

    /// This node as a static peer of another: its key, tunnel address and endpoint.
    pub fn as_static_peer(&self) -> Peer {
        Peer {
            public_key: self.public_b64(),
            preshared_key: None,
            allowed_ips: vec![format!("{}/32", self.tunnel())],
            endpoint: Some(SocketAddr::from((self.outer(), NODE_PORT)).to_string()),
            persistent_keepalive: None,
        }
    }

    /// Rewrites the score its benchmark command prints (atomically: a rename).
    pub fn set_score(&self, score: f64) {
        let tmp = self.dir.join("score.json.new");
        std::fs::write(&tmp, harness_output(score))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
        std::fs::rename(&tmp, self.score_file())
            .unwrap_or_else(|e| panic!("cannot rename {}: {e}", tmp.display()));
    }
}

/// A hub namespace with a bridge, the controller's namespace and home, and the gated nodes
/// (not yet running: see [`Mesh::start_controller`] and [`Mesh::start_node`]).
pub struct Mesh {
    timing: Timing,
    hub: Netns,
    controller_ns: Netns,
    home: ControllerHome,
    controller_key: String,
    nodes: Vec<GatedNode>,
    dir: TempDir,
    test: String,
    /// Last, so that it is released after everything above is cleaned up.
    _exclusive: MutexGuard<'static, ()>,
}

impl Mesh {
    /// Builds the namespaces for `test`, initialises the controller with `timing`, and
    /// enrolls one node per id (the `i`-th has host number `i + 1`) with a passing score.
    /// Holds [`crate::exclusive`] until dropped: gated meshes assert on real time.
    pub fn new(test: &str, timing: Timing, ids: &[&str]) -> Self {
        let exclusive = crate::exclusive();
        let hub = Netns::new(test);
        hub.ip(&["link", "add", BRIDGE, "type", "bridge"]);
        hub.ip(&["link", "set", BRIDGE, "up"]);
        let dir = tempfile::Builder::new()
            .prefix("meshtun-gating-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let controller_ns = Netns::new(test);
        let listen = SocketAddr::from(([192, 0, 2, CONTROLLER_HOST], CONTROLLER_PORT));
        let home = ControllerHome::listening_on(listen, &timing.controller_settings());
        let mut mesh = Self {
            timing,
            hub,
            controller_ns,
            home,
            controller_key: String::new(),
            nodes: Vec::new(),
            dir,
            test: test.to_owned(),
            _exclusive: exclusive,
        };
        mesh.connect(&mesh.controller_ns, CONTROLLER_HOST);
        mesh.controller_key = controller_key(&mesh.home.init());
        for (i, id) in ids.iter().enumerate() {
            let index = u8::try_from(i + 1).expect("at most 249 nodes");
            let node = mesh.add_node(id, index);
            mesh.home.enroll(&node.keys);
            mesh.nodes.push(node);
        }
        mesh
    }

    fn add_node(&self, id: &str, index: u8) -> GatedNode {
        let ns = Netns::new(&self.test);
        self.connect(&ns, index);
        let dir = self.dir.path().join(format!("node-{id}"));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let keys = TestNode::generate(id, index);
        write_secret(
            &dir,
            "identity",
            &format!("{}\n", keys.identity.to_base64()),
        );
        let node = GatedNode {
            id: id.to_owned(),
            index,
            ns,
            keys,
            iface: crate::iface_name(&id.chars().take(2).collect::<String>()),
            dir,
        };
        node.set_score(PASSING);
        node
    }

    /// Joins `ns` to the bridge with outer address `192.0.2.HOST/24`.
    pub fn connect(&self, ns: &Netns, host: u8) {
        let hub_end = format!("h{}", crate::unique_suffix());
        let ns_end = format!("o{}", crate::unique_suffix());
        let out = run(
            Command::new("ip").args([
                "link",
                "add",
                &hub_end,
                "netns",
                self.hub.name(),
                "type",
                "veth",
                "peer",
                "name",
                &ns_end,
                "netns",
                ns.name(),
            ]),
            COMMAND_TIMEOUT,
        );
        out.expect_success();
        self.hub.ip(&["link", "set", &hub_end, "master", BRIDGE]);
        self.hub.ip(&["link", "set", &hub_end, "up"]);
        ns.ip(&["addr", "add", &format!("192.0.2.{host}/24"), "dev", &ns_end]);
        ns.ip(&["link", "set", &ns_end, "up"]);
    }

    /// A new namespace joined to the bridge as host `host` (for a peer outside the gating,
    /// such as wireguard-go).
    pub fn attach(&self, host: u8) -> Netns {
        let ns = Netns::new(&self.test);
        self.connect(&ns, host);
        ns
    }

    /// The timing the mesh runs with.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The controller's home (configuration, state, commands).
    pub fn home(&self) -> &ControllerHome {
        &self.home
    }

    /// The controller's namespace.
    pub fn controller_ns(&self) -> &Netns {
        &self.controller_ns
    }

    /// A directory for the test's files, removed with the mesh.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The nodes, in enrolment order.
    pub fn nodes(&self) -> &[GatedNode] {
        &self.nodes
    }

    /// The node `id`; fails the test if there is none.
    pub fn node(&self, id: &str) -> &GatedNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id} in the mesh"))
    }

    /// Sets the score node `id` reports from its next benchmark run on.
    pub fn set_score(&self, id: &str, score: f64) {
        self.node(id).set_score(score);
    }

    /// Starts `meshtun-controller serve` in its namespace and waits until it answers.
    pub fn start_controller(&self) -> ControllerProc<'_> {
        ControllerProc::start(self)
    }

    /// The `[controller]` and `[benchmark]` sections of node `id`'s configuration.
    pub fn gating_sections(&self, id: &str) -> String {
        let node = self.node(id);
        let text = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let path = |p: PathBuf| text(&p.to_string_lossy());
        let url = format!("http://192.0.2.{CONTROLLER_HOST}:{CONTROLLER_PORT}");
        format!(
            "\n[controller]\nurl = {}\npublic_key = {}\nnode_id = {}\n\
             identity_key_file = {}\ngrace = {}\ncache_file = {}\n\n\
             [benchmark]\ninterval = {}\ncommand = [\"/bin/cat\", {}]\n\
             suite_version = \"e2e-gating-1\"\n",
            text(&url),
            text(&self.controller_key),
            text(&node.id),
            path(node.identity_file()),
            self.timing.grace,
            path(node.cache_file()),
            self.timing.interval,
            path(node.score_file()),
        )
    }

    /// Starts `meshtun up` for node `id`, gated by the controller, with `static_peers`
    /// besides; waits until its UAPI socket answers and its interface has its address.
    pub fn start_node(&self, id: &str, static_peers: Vec<Peer>) -> Daemon<'_> {
        self.start_node_with_env(id, static_peers, &[])
    }

    /// Like [`Mesh::start_node`], with `env` added to the daemon's environment.
    pub fn start_node_with_env(
        &self,
        id: &str,
        static_peers: Vec<Peer>,
        env: &[(&str, &str)],
    ) -> Daemon<'_> {
        let node = self.node(id);
        let mut config = node.interface_config();
        config.peers = static_peers;
        let address = format!(" {}/24 ", node.tunnel());
        Daemon::start_with_env(&node.ns, &config, &self.gating_sections(id), env, || {
            if !crate::uapi_answers(&crate::uapi_socket(&node.iface)) {
                return Err(format!("the UAPI socket of {} does not answer", node.iface));
            }
            let addrs = node
                .ns
                .run(&["ip", "-o", "addr", "show", "dev", &node.iface]);
            if addrs.stdout.contains(&address) {
                Ok(())
            } else {
                Err(format!("{} lacks address{address}", node.iface))
            }
        })
    }

    /// Starts every node, without static peers, in enrolment order.
    pub fn start_nodes(&self) -> Vec<Daemon<'_>> {
        self.nodes
            .iter()
            .map(|n| self.start_node(&n.id, Vec::new()))
            .collect()
    }

    /// Brings the running nodes `daemons` (in enrolment order) into the mesh at once: waits
    /// until the controller holds a benchmark from each, asks it to rotate (new nodes are
    /// admitted at their first passing evaluation), and waits until every node has logged
    /// `MEMBERSHIP=ALLOWED`, lists every other node as a peer, and reaches each of them with
    /// a ping. Returns the epoch of the rotation it asked for.
    pub fn admit_all(&self, controller: &ControllerProc<'_>, daemons: &[Daemon<'_>]) -> u64 {
        let ids: Vec<&str> = self.nodes.iter().map(|n| n.id.as_str()).collect();
        controller.wait_benchmarks(&ids, ADMIT_TIMEOUT);
        let epoch = controller.rotate();
        for (node, daemon) in self.nodes.iter().zip(daemons) {
            let others: Vec<PublicKey> = self
                .nodes
                .iter()
                .filter(|o| o.id != node.id)
                .map(GatedNode::public_key)
                .collect();
            let ok = crate::wait_until(ADMIT_TIMEOUT, || {
                observe::has_membership(&daemon.log(), "ALLOWED")
                    && observe::peers_present(&node.iface, &others)
            });
            assert!(
                ok,
                "node {} was not admitted (MEMBERSHIP=ALLOWED and all {} other nodes as peers) \
                 within {ADMIT_TIMEOUT:?} of epoch {epoch}; controller status:\n{}",
                node.id,
                others.len(),
                controller.status_text()
            );
        }
        for node in &self.nodes {
            for other in self.nodes.iter().filter(|o| o.id != node.id) {
                traffic::assert_ping(&node.ns, other.tunnel().into());
            }
        }
        epoch
    }
}

impl Mesh {
    /// Starts pings at [`super::PING_RATE`] per second for `duration` between every ordered
    /// pair of the nodes `ids` (through the tunnel).
    pub fn ping_pairs(&self, ids: &[&str], duration: Duration) -> Vec<PingRun> {
        let mut runs = Vec::new();
        for from in ids {
            for to in ids.iter().filter(|t| *t != from) {
                runs.push(self.ping(from, to, duration));
            }
        }
        runs
    }

    /// Starts pings at [`super::PING_RATE`] per second for `duration` from node `from` to
    /// node `to`'s tunnel address.
    pub fn ping(&self, from: &str, to: &str, duration: Duration) -> PingRun {
        let (src, dst) = (self.node(from), self.node(to));
        PingRun::at_rate(
            &src.ns,
            &format!("ping {from} -> {to}"),
            dst.tunnel().into(),
            super::PING_RATE,
            duration,
        )
    }
}

/// The public key in `meshtun-controller init`'s output (`controller key: KEY`).
fn controller_key(init_output: &str) -> String {
    init_output
        .lines()
        .find_map(|l| l.strip_prefix("controller key: "))
        .map(|k| k.trim().to_owned())
        .unwrap_or_else(|| panic!("`meshtun-controller init` printed no key:\n{init_output}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_key_is_read_from_init() {
        let out = "created /x/state/controller.key\ncontroller key: QUJD\n";
        assert_eq!(controller_key(out), "QUJD");
    }

    #[test]
    #[should_panic(expected = "printed no key")]
    fn init_without_a_key_fails_the_test() {
        controller_key("created /x\n");
    }
}
