//! The namespaces of a gated mesh, the controller's home and the nodes' files.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::MutexGuard;
use std::time::Duration;

use meshtun_proto::PublicKey;
use tempfile::TempDir;

use super::control::ControllerProc;
use super::ha::{Backend, HaDatabase, DATABASE_HOST};
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
                scheduling: None,
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

/// One controller instance of a mesh: its namespace (on the bridge at `192.0.2.HOST`), its
/// name and its home (configuration and state directory).
pub struct Instance {
    /// Its `[ha] instance` name (`ctl-0`, `ctl-1`…; `ctl-0` alone with SQLite).
    pub name: String,
    /// Host number: it listens on `192.0.2.HOST:8700`.
    pub host: u8,
    /// Its namespace.
    pub ns: Netns,
    /// Its configuration and state directory.
    pub home: ControllerHome,
}

impl Instance {
    /// The URL nodes use for it.
    pub fn url(&self) -> String {
        format!("http://192.0.2.{}:{CONTROLLER_PORT}", self.host)
    }
}

/// A hub namespace with a bridge, the controller instances' namespaces and homes (and, with
/// [`Backend::Postgres`], the database's), and the gated nodes (not yet running: see
/// [`Mesh::start_controller`] and [`Mesh::start_node`]).
pub struct Mesh {
    timing: Timing,
    hub: Netns,
    instances: Vec<Instance>,
    database: Option<HaDatabase>,
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
        Self::with_backend(test, timing, ids, Backend::Sqlite)
    }

    /// Like [`Mesh::new`], with the controller deployed as `backend` says. With
    /// [`Backend::Postgres`], the instances share the key and admin token made by one `init`,
    /// and instance `i` listens on `192.0.2.(250 + i)`.
    pub fn with_backend(test: &str, timing: Timing, ids: &[&str], backend: Backend) -> Self {
        Self::build(test, timing, ids, backend, true)
    }

    /// Like [`Mesh::new`], with nodes enrolled without an endpoint: the controller learns
    /// where they are only from what they report (NAT traversal).
    pub fn without_endpoints(test: &str, timing: Timing, ids: &[&str]) -> Self {
        Self::build(test, timing, ids, Backend::Sqlite, false)
    }

    fn build(test: &str, timing: Timing, ids: &[&str], backend: Backend, pin: bool) -> Self {
        let exclusive = crate::exclusive();
        let hub = Netns::new(test);
        hub.ip(&["link", "add", BRIDGE, "type", "bridge"]);
        hub.ip(&["link", "set", BRIDGE, "up"]);
        let dir = tempfile::Builder::new()
            .prefix("meshtun-gating-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let mut mesh = Self {
            timing,
            hub,
            instances: Vec::new(),
            database: None,
            controller_key: String::new(),
            nodes: Vec::new(),
            dir,
            test: test.to_owned(),
            _exclusive: exclusive,
        };
        let (count, lease) = match backend {
            Backend::Sqlite => (1, None),
            Backend::Postgres { instances, lease } => {
                assert!((1..=9).contains(&instances), "1 to 9 instances");
                let ns = Netns::new(test);
                mesh.connect(&ns, DATABASE_HOST);
                mesh.database = Some(HaDatabase::start(ns, mesh.dir.path()));
                (instances, Some(lease))
            }
        };
        for i in 0..count {
            let instance = mesh.new_instance(i, lease);
            mesh.instances.push(instance);
        }
        mesh.controller_key = controller_key(&mesh.controller_run_ok(0, &["init"]));
        mesh.share_secrets();
        if let Some(db) = &mesh.database {
            db.record_publications();
        }
        for (i, id) in ids.iter().enumerate() {
            let index = u8::try_from(i + 1).expect("at most 239 nodes");
            let mut node = mesh.add_node(id, index);
            if !pin {
                node.keys.endpoint = None;
            }
            mesh.enroll(&node.keys);
            mesh.nodes.push(node);
        }
        mesh
    }

    /// Instance `i`'s namespace and home, with `[ha]` settings if `lease` is given.
    fn new_instance(&self, i: u8, lease: Option<u64>) -> Instance {
        let name = format!("ctl-{i}");
        let host = CONTROLLER_HOST + i;
        let ns = Netns::new(&self.test);
        self.connect(&ns, host);
        let listen = SocketAddr::from(([192, 0, 2, host], CONTROLLER_PORT));
        let mut settings = self.timing.controller_settings();
        let top = match (&self.database, lease) {
            (Some(db), Some(lease)) => {
                settings.push_str(&format!("\n[ha]\nlease = {lease}\ninstance = \"{name}\"\n"));
                db.config_lines(&name)
            }
            _ => String::new(),
        };
        let home = ControllerHome::with_header(listen, "http", &top, &settings);
        Instance {
            name,
            host,
            ns,
            home,
        }
    }

    /// Copies instance 0's key and admin token (made by `init`) to the other instances.
    fn share_secrets(&self) {
        let first = &self.instances[0].home;
        for other in &self.instances[1..] {
            let state = other.home.state_dir();
            std::fs::create_dir_all(&state)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", state.display()));
            std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))
                .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", state.display()));
            for (from, to) in [
                (first.key_file(), other.home.key_file()),
                (first.admin_token_file(), other.home.admin_token_file()),
            ] {
                std::fs::copy(&from, &to).unwrap_or_else(|e| {
                    panic!("cannot copy {} to {}: {e}", from.display(), to.display())
                });
            }
        }
    }

    /// `meshtun-controller node add` for `node`, run by instance 0.
    fn enroll(&self, node: &TestNode) {
        let wg = node.wg.public_key().to_base64();
        let identity = node.identity.public().to_base64();
        let mut args = vec![
            "node",
            "add",
            &node.id,
            "--wg-key",
            &wg,
            "--identity-key",
            &identity,
            "--address",
            &node.address,
        ];
        if let Some(endpoint) = &node.endpoint {
            args.extend(["--endpoint", endpoint]);
        }
        self.controller_run_ok(0, &args);
    }

    /// `meshtun-controller --config FILE ARGS` of instance `i`, inside its namespace (where
    /// it reaches the database, whichever the backend).
    pub fn controller_command(&self, i: usize, args: &[&str]) -> Command {
        let instance = self.instance(i);
        let bin = crate::controller_bin();
        let config = instance.home.config_file().to_string_lossy().into_owned();
        let mut full = vec!["--config", config.as_str()];
        full.extend_from_slice(args);
        let mut cmd = instance.ns.command(&bin.to_string_lossy(), &full);
        cmd.env_remove("MESHTUN_LOG")
            .env_remove("MESHTUN_CONTROLLER_CONFIG");
        cmd
    }

    /// Runs [`Mesh::controller_command`] to completion and returns its stdout; fails the
    /// test if it fails.
    pub fn controller_run_ok(&self, i: usize, args: &[&str]) -> String {
        run(&mut self.controller_command(i, args), COMMAND_TIMEOUT).expect_success()
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

    /// Rotates the controller key of every instance (stopped: they read it at start) to
    /// `new`: writes it to their key files and lists the key `init` made in their
    /// `previous_keys`, so that requests naming it are still answered. Returns `new`'s
    /// public half.
    pub fn roll_controller_key(&self, new: &meshtun_proto::IdentityKey) -> String {
        for instance in &self.instances {
            let key_file = instance.home.key_file();
            let dir = key_file
                .parent()
                .expect("the key file is in the state directory");
            let name = key_file
                .file_name()
                .expect("a key file name")
                .to_string_lossy();
            write_secret(dir, &name, &new.to_base64());
            let config = instance.home.config_file();
            let text = std::fs::read_to_string(config)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", config.display()));
            let line = format!("previous_keys = [\"{}\"]\n", self.controller_key);
            std::fs::write(config, line + &text)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        }
        new.public().to_base64()
    }

    /// Appends `text` (TOML tables, such as `[stun]`) to instance `i`'s configuration; it
    /// applies from the instance's next start.
    pub fn add_controller_settings(&self, i: usize, text: &str) {
        use std::io::Write as _;
        let path = self.instance(i).home.config_file();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
        writeln!(file, "\n{text}")
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// The controller's home (configuration, state, commands): instance 0's.
    pub fn home(&self) -> &ControllerHome {
        &self.instances[0].home
    }

    /// The controller's namespace: instance 0's.
    pub fn controller_ns(&self) -> &Netns {
        &self.instances[0].ns
    }

    /// Controller instance `i`; fails the test if there is none.
    pub fn instance(&self, i: usize) -> &Instance {
        self.instances
            .get(i)
            .unwrap_or_else(|| panic!("no controller instance {i} in the mesh"))
    }

    /// The controller instances.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The index of the instance named `name`; fails the test if there is none.
    pub fn instance_index(&self, name: &str) -> usize {
        self.instances
            .iter()
            .position(|i| i.name == name)
            .unwrap_or_else(|| panic!("no controller instance named {name:?}"))
    }

    /// The PostgreSQL database of a [`Backend::Postgres`] mesh; fails the test otherwise.
    pub fn database(&self) -> &HaDatabase {
        self.database
            .as_ref()
            .expect("this mesh's controller runs on SQLite, not PostgreSQL")
    }

    /// The ids of the nodes with a stored benchmark, whichever the backend.
    pub fn benchmarked_nodes(&self) -> Vec<String> {
        match &self.database {
            Some(db) => db.benchmarked_nodes(),
            None => {
                let stored = self.home().open_db().benchmarks();
                let mut ids: Vec<String> = stored.keys().map(|(n, _)| n.clone()).collect();
                ids.dedup();
                ids
            }
        }
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

    /// Starts `meshtun-controller serve` in its namespace and waits until it answers
    /// (instance 0).
    pub fn start_controller(&self) -> ControllerProc<'_> {
        ControllerProc::start(self, 0)
    }

    /// Starts instance `i`'s `serve` in its namespace and waits until it answers.
    pub fn start_instance(&self, i: usize) -> ControllerProc<'_> {
        ControllerProc::start(self, i)
    }

    /// The `[controller]` and `[benchmark]` sections of node `id`'s configuration.
    pub fn gating_sections(&self, id: &str) -> String {
        self.gating_sections_with(id, "")
    }

    /// The controller key made by `init` (base64).
    pub fn controller_key(&self) -> &str {
        &self.controller_key
    }

    /// Like [`Mesh::gating_sections`], with `extra` (TOML lines, such as `stun = […]\n`) at
    /// the end of `[controller]`.
    pub fn gating_sections_with(&self, id: &str, extra: &str) -> String {
        self.sections(id, &[&self.controller_key], extra)
    }

    /// [`Mesh::gating_sections`] with `public_key` set to the list `keys`.
    pub fn gating_sections_pinning(&self, id: &str, keys: &[&str]) -> String {
        self.sections(id, keys, "")
    }

    fn sections(&self, id: &str, keys: &[&str], extra: &str) -> String {
        let node = self.node(id);
        let text = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let path = |p: PathBuf| text(&p.to_string_lossy());
        let urls: Vec<String> = self.instances.iter().map(Instance::url).collect();
        let url = match urls.as_slice() {
            [one] => text(one),
            all => toml::Value::Array(all.iter().map(|u| toml::Value::String(u.clone())).collect())
                .to_string(),
        };
        format!(
            "\n[controller]\nurl = {}\npublic_key = {}\nnode_id = {}\n\
             identity_key_file = {}\ngrace = {}\ncache_file = {}\n{}\n\
             [benchmark]\ninterval = {}\ncommand = [\"/bin/cat\", {}]\n\
             suite_version = \"e2e-gating-1\"\n",
            url,
            toml::Value::Array(
                keys.iter()
                    .map(|k| toml::Value::String((*k).to_owned()))
                    .collect()
            ),
            text(&node.id),
            path(node.identity_file()),
            self.timing.grace,
            path(node.cache_file()),
            extra,
            self.timing.interval,
            path(node.score_file()),
        )
    }

    /// Starts `meshtun up` for node `id`, gated by the controller, with `static_peers`
    /// besides; waits until its UAPI socket answers and its interface has its address.
    pub fn start_node(&self, id: &str, static_peers: Vec<Peer>) -> Daemon<'_> {
        self.start_node_with_env(id, static_peers, &[])
    }

    /// Like [`Mesh::start_node`] without static peers, pinning the controller keys `keys`.
    pub fn start_node_pinning(&self, id: &str, keys: &[&str]) -> Daemon<'_> {
        let sections = self.gating_sections_pinning(id, keys);
        self.start_with_sections(id, Vec::new(), &sections, &[])
    }

    /// Like [`Mesh::start_node`], with `env` added to the daemon's environment.
    pub fn start_node_with_env(
        &self,
        id: &str,
        static_peers: Vec<Peer>,
        env: &[(&str, &str)],
    ) -> Daemon<'_> {
        self.start_node_with_keys(id, static_peers, env, "")
    }

    /// Like [`Mesh::start_node_with_env`], with `extra` at the end of `[controller]`
    /// ([`Mesh::gating_sections_with`]).
    pub fn start_node_with_keys(
        &self,
        id: &str,
        static_peers: Vec<Peer>,
        env: &[(&str, &str)],
        extra: &str,
    ) -> Daemon<'_> {
        let sections = self.gating_sections_with(id, extra);
        self.start_with_sections(id, static_peers, &sections, env)
    }

    fn start_with_sections(
        &self,
        id: &str,
        static_peers: Vec<Peer>,
        sections: &str,
        env: &[(&str, &str)],
    ) -> Daemon<'_> {
        let node = self.node(id);
        let mut config = node.interface_config();
        config.peers = static_peers;
        let address = format!(" {}/24 ", node.tunnel());
        Daemon::start_with_env(&node.ns, &config, sections, env, || {
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
