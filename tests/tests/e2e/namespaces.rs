//! Network namespaces are first-class: interfaces of one name in two namespaces each get
//! their own state and pid files (under meshtun's default state directory), and `meshtun
//! down` in a namespace acts on that namespace's daemon only, whatever files or sockets of
//! another namespace it comes across.

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshtun_e2e::config::{Config, Node};
use meshtun_e2e::traffic::assert_ping;
use meshtun_e2e::{
    meshtun_in, pid_file, require_root, state_file, wait_until, Daemon, Netns, Output, Veth,
    STATE_DIR,
};

/// How long `meshtun down` may take.
const DOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The interface name both namespaces use, as an operator would.
const IFNAME: &str = "wg0";

/// Two namespaces joined by a veth pair, with the configurations of two nodes that are each
/// other's peer, both for an interface of the same name.
struct Pair {
    ns_a: Netns,
    ns_b: Netns,
    a: Node,
    b: Node,
    ca: Config,
    cb: Config,
}

impl Pair {
    fn new(test: &str, ifname: &str) -> Self {
        let (ns_a, ns_b) = (Netns::new(test), Netns::new(test));
        let veth = Veth::connect(&ns_a, &ns_b, 0);
        let (mut a, mut b) = (Node::new("a", 1), Node::new("b", 2));
        a.name = ifname.to_owned();
        b.name = ifname.to_owned();
        let mut ca = a.config();
        ca.peers
            .push(b.as_peer().endpoint(veth.b_v4.into(), b.port));
        let mut cb = b.config();
        cb.peers
            .push(a.as_peer().endpoint(veth.a_v4.into(), a.port));
        Self {
            ns_a,
            ns_b,
            a,
            b,
            ca,
            cb,
        }
    }
}

/// `meshtun [--uapi-dir DIR] down IFNAME` in `ns`, with the default state directory.
fn down_in(ns: &Netns, ifname: &str, uapi_dir: Option<&Path>) -> Output {
    let mut args = Vec::new();
    if let Some(dir) = uapi_dir {
        args.extend(["--uapi-dir", dir.to_str().expect("a UTF-8 path")]);
    }
    args.extend(["down", ifname]);
    meshtun_in(ns, &args, DOWN_TIMEOUT)
}

/// The runtime files meshtun keeps for `ifname` in `ns`, and their directory.
fn runtime_files(ns: &Netns, ifname: &str) -> [PathBuf; 3] {
    [
        state_file(ns, ifname),
        pid_file(ns, ifname),
        ns.state_dir_under(Path::new(STATE_DIR)),
    ]
}

/// Stops `daemon` with `meshtun down` run in its own namespace, and checks that it exited
/// with status 0 and left no link, socket, state or pid file.
fn down_stops(mut daemon: Daemon<'_>) {
    let ns = daemon.ns();
    let socket = daemon.uapi_socket();
    let out = down_in(ns, IFNAME, socket.parent());
    let status = daemon.wait_exit(Duration::from_secs(5));
    assert!(
        out.success() && status.is_some_and(|s| s.success()),
        "`meshtun down` in {} did not stop its daemon ({out:?}, exit {status:?}); its log:\n{}",
        ns.name(),
        daemon.log()
    );
    assert!(!ns.has_link(IFNAME), "{IFNAME} left in {}", ns.name());
    for file in runtime_files(ns, IFNAME).iter().chain([&socket]) {
        assert!(!file.exists(), "{} left behind", file.display());
    }
}

/// Two daemons for `wg0` in two namespaces, with the default state directory and a UAPI
/// directory each: both start, carry traffic to each other across the veth pair, and each
/// `meshtun down` stops its own namespace's daemon, leaving nothing behind.
#[test]
fn two_wg0_daemons_in_two_namespaces_coexist() {
    if !require_root("two_wg0_daemons_in_two_namespaces_coexist") {
        return;
    }
    let net = Pair::new("nswg0", IFNAME);
    let da = Daemon::start_private_uapi(&net.ns_a, &net.ca);
    let db = Daemon::start_private_uapi(&net.ns_b, &net.cb);
    for ns in [&net.ns_a, &net.ns_b] {
        let [state, pid, _] = runtime_files(ns, IFNAME);
        // The pid file is the last step of the start, after the UAPI socket answers.
        assert!(
            wait_until(Duration::from_secs(5), || state.exists() && pid.exists()),
            "{} or {} missing",
            state.display(),
            pid.display()
        );
    }
    assert_ping(&net.ns_a, net.b.v4.into());
    assert_ping(&net.ns_b, net.a.v6.into());
    down_stops(da);
    let mut db = db;
    db.assert_running();
    down_stops(db);
}

/// `meshtun down IFNAME` in a namespace without a daemon finds the daemon of another
/// namespace twice: it holds the shared UAPI socket path (both use the default UAPI
/// directory), and its pid lands in this namespace's pid file. Neither makes `down` signal
/// it. (The name is unique to the test: the default UAPI directory is the machine's.)
#[test]
fn down_in_one_namespace_never_stops_the_daemon_of_another() {
    if !require_root("down_in_one_namespace_never_stops_the_daemon_of_another") {
        return;
    }
    let ifname = meshtun_e2e::iface_name("nsd");
    let net = Pair::new("nsdown", &ifname);
    let mut da = Daemon::start(&net.ns_a, &net.ca);
    let pid = da.pid().expect("the daemon runs");

    // B's daemon for the same name cannot share the UAPI socket path, and is told so.
    let dir = tempfile::tempdir().unwrap();
    let config = net.cb.write_toml(dir.path());
    let out = meshtun_in(&net.ns_b, &["up", config.to_str().unwrap()], DOWN_TIMEOUT);
    assert!(
        !out.success() && out.stderr.contains("--uapi-dir or mount namespace"),
        "a second daemon on the same UAPI socket path is not told what to do: {out:?}"
    );
    da.assert_running();

    let out = down_in(&net.ns_b, &ifname, None);
    da.assert_running();
    assert!(
        !out.success() && out.stderr.contains(&format!("{ifname} is not running")),
        "`down` in another namespace did not report that none runs there: {out:?}"
    );
    assert!(
        out.stderr.contains("in another network namespace"),
        "`down` does not say whose the socket is: {out:?}"
    );

    // A pid file in B's directory, written by root, naming A's daemon.
    let planted = pid_file(&net.ns_b, &ifname);
    std::fs::create_dir_all(planted.parent().expect("a directory")).unwrap();
    std::fs::write(&planted, format!("{pid}\n")).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = down_in(&net.ns_b, &ifname, Some(empty.path()));
    da.assert_running();
    assert!(
        out.stderr.contains("in another"),
        "`down` does not say why it left pid {pid} alone: {out:?}"
    );
    for file in runtime_files(&net.ns_b, &ifname) {
        assert!(!file.exists(), "{} left behind", file.display());
    }
    da.stop_cleanly();
    for file in runtime_files(&net.ns_a, &ifname) {
        assert!(!file.exists(), "{} left behind", file.display());
    }
}
