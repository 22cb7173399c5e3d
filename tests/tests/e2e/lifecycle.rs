//! The daemon's life cycle: a SIGHUP reload applies only what changed (an added or removed
//! peer) and leaves established sessions alone, and a broken configuration is refused while the
//! daemon keeps running; after a crash (SIGKILL) the policy rules stay behind until
//! `meshtun down` or the next `meshtun up` removes them; `meshtun down` stops a running
//! daemon by interface name or by configuration file, and refuses a name nothing serves.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshtun_e2e::config::{Config, Node};
use meshtun_e2e::traffic::{assert_no_ping, assert_ping};
use meshtun_e2e::wg::{self, DumpPeer};
use meshtun_e2e::{
    meshtun_in, pid_file, require_root, state_file, uapi_socket, wait_until, Daemon, Netns, Veth,
    WgGo, STATE_DIR,
};

/// How long a reload (or a failed one) may take to show.
const RELOAD_PATIENCE: Duration = Duration::from_secs(10);

/// How long a `meshtun down` command may take.
const DOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The peer `key` in `wg show <iface> dump` inside `ns`, if listed.
fn peer_in(ns: &Netns, iface: &str, key: &str) -> Option<DumpPeer> {
    wg::dump(ns, iface)
        .peers
        .into_iter()
        .find(|p| p.public_key == key)
}

/// The TOML of `config` with `line` added at the top of the `[interface]` table.
fn with_unknown_key(config: &Config, line: &str) -> String {
    let toml = config.to_toml();
    assert!(
        toml.starts_with("[interface]\n"),
        "unexpected TOML layout:\n{toml}"
    );
    toml.replacen("[interface]\n", &format!("[interface]\n{line}\n"), 1)
}

/// Asserts that B's session on A is the one recorded in `before`: same handshake time, and
/// transfer counters that kept counting (a re-created peer would start again from zero).
fn assert_same_session(ns_a: &Netns, iface: &str, before: &DumpPeer, when: &str) {
    let now =
        peer_in(ns_a, iface, &before.public_key).unwrap_or_else(|| panic!("{when}: A lost peer B"));
    assert_eq!(
        now.latest_handshake, before.latest_handshake,
        "{when}: B's session was re-handshaked (before: {before:?}, now: {now:?})"
    );
    assert!(
        now.rx_bytes >= before.rx_bytes && now.tx_bytes >= before.tx_bytes,
        "{when}: B's transfer counters went back (before: {before:?}, now: {now:?})"
    );
}

#[test]
fn reload_applies_only_the_difference() {
    if !require_root("reload_applies_only_the_difference") {
        return;
    }
    let test = "reload_diff";
    let (ns_a, ns_b, ns_c) = (Netns::new(test), Netns::new(test), Netns::new(test));
    let ab = Veth::connect(&ns_a, &ns_b, 0);
    let ac = Veth::connect(&ns_a, &ns_c, 1);
    let (a, b, c) = (Node::new("a", 1), Node::new("b", 2), Node::new("c", 3));
    let mut ca = a.config();
    ca.peers.push(b.as_peer().endpoint(ab.b_v4.into(), b.port));
    let mut cb = b.config();
    cb.peers.push(a.as_peer().endpoint(ab.a_v4.into(), a.port));
    // C is wireguard-go; it knows A from the start, A learns about C by a reload.
    let mut cc = c.config();
    cc.peers.push(a.as_peer().endpoint(ac.a_v4.into(), a.port));
    let mut da = Daemon::start(&ns_a, &ca);
    let db = Daemon::start(&ns_b, &cb);
    let _wc = WgGo::start(&ns_c, &cc);
    let name = da.name().to_owned();

    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_b, a.v6.into());
    assert_no_ping(&ns_a, c.v4.into());
    // Let the clock pass the handshake's second: any new handshake would change the time.
    std::thread::sleep(Duration::from_millis(1500));
    let before = peer_in(&ns_a, &name, &b.keys.public).expect("A lists B");
    assert!(before.latest_handshake.is_some(), "{before:?}");
    let b_sees_a = peer_in(&ns_b, db.name(), &a.keys.public).expect("B lists A");
    eprintln!("before the reloads, A's peer B: {before:?}");

    // Add C.
    let mut with_c = ca.clone();
    with_c
        .peers
        .push(c.as_peer().endpoint(ac.b_v4.into(), c.port));
    da.reload(&with_c);
    assert!(
        wait_until(RELOAD_PATIENCE, || peer_in(&ns_a, &name, &c.keys.public)
            .is_some()),
        "C is not listed on A {RELOAD_PATIENCE:?} after the reload; log:\n{}",
        da.log()
    );
    assert_same_session(&ns_a, &name, &before, "right after adding C");
    let peers = wg::wg(&ns_a, &["show", &name, "peers"]);
    assert!(peers.contains(&c.keys.public), "`wg show peers`:\n{peers}");
    assert_ping(&ns_a, c.v4.into());
    assert_ping(&ns_a, c.v6.into());
    assert_ping(&ns_c, a.v4.into());
    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_b, a.v4.into());
    assert_same_session(&ns_a, &name, &before, "after pinging B past the reload");
    let b_later = peer_in(&ns_b, db.name(), &a.keys.public).expect("B lists A");
    assert_eq!(
        b_later.latest_handshake, b_sees_a.latest_handshake,
        "B re-handshaked with A: {b_sees_a:?} then {b_later:?}"
    );
    let after_pings = peer_in(&ns_a, &name, &b.keys.public).expect("A lists B");
    assert!(
        after_pings.tx_bytes > before.tx_bytes && after_pings.rx_bytes > before.rx_bytes,
        "no traffic counted for B after the reload: {before:?} then {after_pings:?}"
    );

    // Remove C again.
    da.reload(&ca);
    assert!(
        wait_until(RELOAD_PATIENCE, || peer_in(&ns_a, &name, &c.keys.public)
            .is_none()),
        "C is still listed on A {RELOAD_PATIENCE:?} after removing it; log:\n{}",
        da.log()
    );
    assert_no_ping(&ns_a, c.v4.into());
    assert_no_ping(&ns_c, a.v4.into());
    assert_ping(&ns_a, b.v4.into());
    assert_same_session(&ns_a, &name, &before, "after removing C");
    assert_eq!(
        da.log().matches("configuration reloaded").count(),
        2,
        "expected two reloads in the log:\n{}",
        da.log()
    );

    // A broken configuration: refused, logged, and the running one stays.
    let unknown = "no_such_setting = 1";
    da.reload_text(&with_unknown_key(&ca, unknown));
    assert!(
        wait_until(RELOAD_PATIENCE, || da.log().contains("reload failed")),
        "no \"reload failed\" in the log {RELOAD_PATIENCE:?} after a broken reload:\n{}",
        da.log()
    );
    let log = da.log();
    let failure = log
        .lines()
        .find(|l| l.contains("reload failed"))
        .unwrap_or_default();
    eprintln!("failed reload logged as: {failure}");
    assert!(
        failure.contains("no_such_setting"),
        "the failure does not name the unknown key: {failure}"
    );
    da.assert_running();
    let dump = wg::dump(&ns_a, &name);
    let keys: Vec<&str> = dump.peers.iter().map(|p| p.public_key.as_str()).collect();
    assert_eq!(keys, [b.keys.public.as_str()], "{dump:?}");
    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_b, a.v6.into());
    assert_same_session(&ns_a, &name, &before, "after the failed reload");
    da.stop_cleanly();
}

/// Two namespaces where A routes everything (`0.0.0.0/0`, `::/0`) to its peer B, so that A's
/// daemon installs policy routing: a table of its own, a fwmark on its UDP socket, rules.
struct DefaultRoute {
    ns_a: Netns,
    ns_b: Netns,
    a: Node,
    b: Node,
    ca: Config,
    cb: Config,
}

impl DefaultRoute {
    fn new(test: &str) -> Self {
        let (ns_a, ns_b) = (Netns::new(test), Netns::new(test));
        let veth = Veth::connect(&ns_a, &ns_b, 0);
        let (a, b) = (Node::new("a", 1), Node::new("b", 2));
        let mut ca = a.config();
        let mut peer_b = b.as_peer().endpoint(veth.b_v4.into(), b.port);
        peer_b.allowed_ips = vec!["0.0.0.0/0".into(), "::/0".into()];
        ca.peers.push(peer_b);
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

    /// Pings B's tunnel addresses from A (through the policy-routed default route) and back.
    fn ping_through_tunnel(&self) {
        assert_ping(&self.ns_a, self.b.v4.into());
        assert_ping(&self.ns_a, self.b.v6.into());
        assert_ping(&self.ns_b, self.a.v4.into());
    }
}

/// What of A's policy routing exists in `ns`: rules of both families, the routes of `table`,
/// and the nftables table meshtun names after `iface`.
#[derive(Debug)]
struct Policy {
    v4_rules: String,
    v6_rules: String,
    table_routes: String,
    nft_tables: String,
}

impl Policy {
    fn read(ns: &Netns, table: u32) -> Self {
        let table = table.to_string();
        Self {
            v4_rules: ns.ip(&["-4", "rule", "show"]),
            v6_rules: ns.ip(&["-6", "rule", "show"]),
            table_routes: ns.run(&["ip", "route", "show", "table", &table]).stdout
                + &ns
                    .run(&["ip", "-6", "route", "show", "table", &table])
                    .stdout,
            nft_tables: ns.ok(&["nft", "list", "tables"]),
        }
    }

    /// Asserts both rules wg-quick installs, in both families: everything not marked `mark`
    /// looks up `table`, and the main table is used except for its default route.
    fn assert_rules(&self, mark: u32, table: u32) {
        let marked = format!("not from all fwmark {mark:#x} lookup {table}");
        let suppress = "from all lookup main suppress_prefixlength 0";
        for rules in [&self.v4_rules, &self.v6_rules] {
            assert!(
                rules.contains(&marked) && rules.contains(suppress),
                "no policy rules ({marked:?}, {suppress:?}) in:\n{rules}"
            );
        }
    }

    /// Asserts nothing of the policy routing is left.
    fn assert_gone(&self, table: u32, iface: &str) {
        let rules = format!("{}{}", self.v4_rules, self.v6_rules);
        assert!(
            !rules.contains(&format!("lookup {table}")) && !rules.contains("suppress_prefixlength"),
            "policy rules left behind:\n{rules}"
        );
        assert!(
            self.table_routes.trim().is_empty(),
            "routes left in table {table}:\n{}",
            self.table_routes
        );
        assert!(
            !self.nft_tables.contains(&format!("meshtun-{iface}")),
            "nftables table left behind:\n{}",
            self.nft_tables
        );
    }
}

/// Starts A, checks the tunnel and the policy routing, kills A with SIGKILL and checks what it
/// left behind. Returns the firewall mark (= table) A used.
fn crash(net: &DefaultRoute, da: &mut Daemon<'_>) -> u32 {
    let name = da.name().to_owned();
    net.ping_through_tunnel();
    let mark = wg::dump(&net.ns_a, &name).interface.fwmark;
    assert_eq!(
        mark, 51820,
        "A's UDP socket does not carry the expected mark"
    );
    let up = Policy::read(&net.ns_a, mark);
    up.assert_rules(mark, mark);
    assert!(
        up.table_routes.contains(&format!("default dev {name}")),
        "no default routes in table {mark}:\n{}",
        up.table_routes
    );
    assert!(
        up.nft_tables
            .contains(&format!("table inet meshtun-{name}")),
        "no nftables table:\n{}",
        up.nft_tables
    );

    wait_for_pid_file(&net.ns_a, &name);
    let status = da.kill();
    eprintln!("killed meshtun {name}: {status}");
    let left = Policy::read(&net.ns_a, mark);
    eprintln!("after SIGKILL: {left:#?}");
    left.assert_rules(mark, mark);
    assert!(
        left.nft_tables.contains(&format!("meshtun-{name}")),
        "{left:?}"
    );
    assert!(uapi_socket(&name).exists(), "no stale UAPI socket");
    assert!(pid_file(&net.ns_a, &name).exists(), "no stale pid file");
    assert!(
        state_file(&net.ns_a, &name).exists(),
        "no state file to clean up from"
    );
    mark
}

/// Waits until the daemon for `name` in `ns` has written its pid file, the last step of its
/// start (after the UAPI socket answers), so that a kill leaves one behind.
fn wait_for_pid_file(ns: &Netns, name: &str) {
    let file = pid_file(ns, name);
    assert!(
        wait_until(Duration::from_secs(5), || file.exists()),
        "no pid file {} within 5 s",
        file.display()
    );
}

/// Asserts that nothing of interface `name` is left in `ns` or in the runtime directories.
fn assert_nothing_left(ns: &Netns, name: &str, table: u32) {
    Policy::read(ns, table).assert_gone(table, name);
    assert!(!ns.has_link(name), "interface {name} left behind");
    let state_dir = ns.state_dir_under(Path::new(STATE_DIR));
    for file in [
        uapi_socket(name),
        pid_file(ns, name),
        state_file(ns, name),
        state_dir,
    ] {
        assert!(!file.exists(), "{} left behind", file.display());
    }
}

#[test]
fn crash_recovery_by_meshtun_down() {
    if !require_root("crash_recovery_by_meshtun_down") {
        return;
    }
    let net = DefaultRoute::new("crash_down");
    let mut da = Daemon::start(&net.ns_a, &net.ca);
    let _db = Daemon::start(&net.ns_b, &net.cb);
    let name = da.name().to_owned();
    let table = crash(&net, &mut da);

    let out = meshtun_in(&net.ns_a, &["down", &name], DOWN_TIMEOUT);
    eprintln!("meshtun down after the crash: {out:?}");
    assert!(
        out.success(),
        "`meshtun down` failed after a crash: {out:?}"
    );
    assert!(
        out.stderr.contains("cleaned up"),
        "`meshtun down` does not say it cleaned up: {out:?}"
    );
    assert_nothing_left(&net.ns_a, &name, table);
}

/// A's daemon crashes with policy routing in place. `meshtun down` of A's interface in B's
/// namespace, which has policy rules of the same shape, must not consume A's record (A could
/// then never clean up) nor act on it there; a copy of A's state file planted in B's
/// directory is refused, naming A's namespace. A's own `down` still cleans up.
#[test]
fn a_crash_cleanup_in_another_namespace_leaves_both_alone() {
    if !require_root("a_crash_cleanup_in_another_namespace_leaves_both_alone") {
        return;
    }
    let net = DefaultRoute::new("crash_other");
    let mut da = Daemon::start(&net.ns_a, &net.ca);
    let _db = Daemon::start(&net.ns_b, &net.cb);
    let name = da.name().to_owned();
    net.ping_through_tunnel();
    let mark = wg::dump(&net.ns_a, &name).interface.fwmark;
    for family in ["-4", "-6"] {
        let table = mark.to_string();
        net.ns_b.ip(&[
            family, "rule", "add", "not", "fwmark", &table, "table", &table,
        ]);
        net.ns_b.ip(&[
            family,
            "rule",
            "add",
            "table",
            "main",
            "suppress_prefixlength",
            "0",
        ]);
    }
    da.kill();

    let out = meshtun_in(&net.ns_b, &["down", &name], DOWN_TIMEOUT);
    assert!(
        !out.success() && out.stderr.contains(&format!("{name} is not running")),
        "`meshtun down` in B acted on A's crash: {out:?}"
    );
    let planted = state_file(&net.ns_b, &name);
    std::fs::create_dir_all(planted.parent().expect("a directory")).unwrap();
    std::fs::copy(state_file(&net.ns_a, &name), &planted).expect("A left its state file");
    let out = meshtun_in(&net.ns_b, &["down", &name], DOWN_TIMEOUT);
    let theirs = format!("net:[{}]", net.ns_a.inode());
    assert!(
        !out.success() && out.stderr.contains(&theirs),
        "`meshtun down` in B did not refuse A's state file, naming {theirs}: {out:?}"
    );
    assert!(planted.exists(), "the refused state file was removed");
    Policy::read(&net.ns_b, mark).assert_rules(mark, mark);
    std::fs::remove_file(&planted).unwrap();

    let out = meshtun_in(&net.ns_a, &["down", &name], DOWN_TIMEOUT);
    assert!(
        out.success() && out.stderr.contains("cleaned up"),
        "A's `meshtun down` did not clean up after its crash: {out:?}"
    );
    assert_nothing_left(&net.ns_a, &name, mark);
}

#[test]
fn crash_recovery_by_the_next_start() {
    if !require_root("crash_recovery_by_the_next_start") {
        return;
    }
    let net = DefaultRoute::new("crash_up");
    let mut first = Daemon::start(&net.ns_a, &net.ca);
    let _db = Daemon::start(&net.ns_b, &net.cb);
    let name = first.name().to_owned();
    let table = crash(&net, &mut first);

    let second = Daemon::start(&net.ns_a, &net.ca);
    assert!(
        second
            .log()
            .contains("cleaned up after an earlier run that did not stop cleanly"),
        "the new daemon does not report cleaning up:\n{}",
        second.log()
    );
    net.ping_through_tunnel();
    let policy = Policy::read(&net.ns_a, table);
    policy.assert_rules(table, table);
    // One set of rules, not the old ones plus new ones.
    let suppress = policy.v4_rules.matches("suppress_prefixlength").count();
    assert_eq!(suppress, 1, "duplicate rules:\n{}", policy.v4_rules);
    second.stop_cleanly();
    assert_nothing_left(&net.ns_a, &name, table);
}

/// A namespace with a daemon for a one-peer configuration (the peer needs no endpoint).
fn lone_config() -> Config {
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let mut config = a.config();
    config.peers.push(b.as_peer());
    config
}

/// Runs `meshtun down target` in `ns` and asserts it stops `daemon` within 5 s, cleanly.
fn down_stops(ns: &Netns, mut daemon: Daemon<'_>, target: &str) {
    let name = daemon.name().to_owned();
    let pid = daemon.pid().expect("the daemon runs");
    let start = Instant::now();
    let out = meshtun_in(ns, &["down", target], DOWN_TIMEOUT);
    assert!(out.success(), "`meshtun down {target}` failed: {out:?}");
    assert!(
        out.stderr.contains(&format!("stopped meshtun (pid {pid})")),
        "`meshtun down {target}` does not report the pid it stopped: {out:?}"
    );
    let status = daemon.wait_exit(Duration::from_secs(5));
    let took = start.elapsed();
    eprintln!("`meshtun down {target}` stopped pid {pid} in {took:?}: {status:?}");
    assert!(
        status.is_some_and(|s| s.success()),
        "the daemon did not exit with status 0 within 5 s of `meshtun down` ({status:?}); \
         its log:\n{}",
        daemon.log()
    );
    assert!(!ns.has_link(&name), "interface {name} left behind");
    assert!(!uapi_socket(&name).exists(), "UAPI socket left behind");
    assert!(!pid_file(ns, &name).exists(), "pid file left behind");
    assert!(
        daemon.log().contains("interface is down"),
        "no teardown in the log:\n{}",
        daemon.log()
    );
}

#[test]
fn down_stops_a_running_daemon() {
    if !require_root("down_stops_a_running_daemon") {
        return;
    }
    let ns = Netns::new("down");
    let config = lone_config();
    let name = config.name().to_owned();

    let daemon = Daemon::start(&ns, &config);
    down_stops(&ns, daemon, &name);

    let daemon = Daemon::start(&ns, &config);
    let path = daemon.config_path().to_string_lossy().into_owned();
    down_stops(&ns, daemon, &path);

    let out = meshtun_in(&ns, &["down", &name], DOWN_TIMEOUT);
    assert!(
        !out.success(),
        "`meshtun down` of a stopped interface succeeded: {out:?}"
    );
    assert!(
        out.stderr.contains(&format!("{name} is not running")),
        "unclear message for an interface that is not running: {out:?}"
    );
    let missing = Path::new("/nonexistent-meshtun-dir/x.toml");
    let out = meshtun_in(&ns, &["down", &missing.to_string_lossy()], DOWN_TIMEOUT);
    assert!(
        !out.success(),
        "`meshtun down` of a missing file succeeded: {out:?}"
    );
    assert!(
        out.stderr.contains(&*missing.to_string_lossy()),
        "the message does not name the missing file: {out:?}"
    );
}

/// The harness after a crash: a test that panics with a killed daemon still leaves no pid
/// file, state file or socket behind (the guard runs `meshtun down`).
#[test]
fn a_killed_daemon_is_cleaned_up_when_a_test_panics() {
    if !require_root("a_killed_daemon_is_cleaned_up_when_a_test_panics") {
        return;
    }
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let net = DefaultRoute::new("crash_panic");
        let mut da = Daemon::start(&net.ns_a, &net.ca);
        let name = da.name().to_owned();
        wait_for_pid_file(&net.ns_a, &name);
        da.kill();
        let files = [
            uapi_socket(&name),
            pid_file(&net.ns_a, &name),
            state_file(&net.ns_a, &name),
        ];
        seen = Some((files.clone(), files.map(|f| f.exists())));
        panic!("deliberate panic to exercise the cleanup after a crash");
    }));
    assert!(result.is_err());
    let (files, left) = seen.expect("the closure ran up to its panic");
    assert_eq!(
        left, [true; 3],
        "the kill left no socket, pid or state file"
    );
    for file in files.iter().map(PathBuf::as_path).chain(files[1].parent()) {
        assert!(!file.exists(), "{} left behind", file.display());
    }
}
