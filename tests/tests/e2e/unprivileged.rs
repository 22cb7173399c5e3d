//! meshtun without root: a daemon running as an unprivileged user with CAP_NET_ADMIN as its
//! only capability (what the systemd unit gives it), one started as root that switches to
//! such a user itself (`--user`), and one with no capability at all on a tun device created
//! beforehand, each carry traffic with a daemon run as root.

use meshtun_e2e::config::{pair, Node};
use meshtun_e2e::traffic::{assert_ping, tcp_transfer};
use meshtun_e2e::{
    require_host, require_root, tun_device_open_to_all, Daemon, Family, Netns, Privilege, Veth,
    UNPRIVILEGED_UID,
};

/// CAP_NET_ADMIN, bit 12 of the capability masks in `/proc/PID/status`.
const CAP_NET_ADMIN_MASK: u64 = 1 << 12;

/// The real user id and the effective capabilities of process `pid`.
fn uid_and_caps(pid: u32) -> (u32, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read the status of pid {pid}: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("{name} is empty in /proc/{pid}/status"))
            .to_owned()
    };
    let uid = field("Uid:").parse().expect("a numeric uid");
    let caps = u64::from_str_radix(&field("CapEff:"), 16).expect("a hexadecimal mask");
    (uid, caps)
}

#[test]
fn a_daemon_with_only_cap_net_admin_carries_traffic() {
    let test = "a_daemon_with_only_cap_net_admin_carries_traffic";
    if !require_root(test) || !require_tun_open_to_all(test) {
        return;
    }
    net_admin_only(Privilege::NetAdmin);
}

#[test]
fn a_daemon_started_as_root_switches_to_its_user_and_carries_traffic() {
    if !require_root("a_daemon_started_as_root_switches_to_its_user_and_carries_traffic") {
        return;
    }
    net_admin_only(Privilege::SwitchUser);
}

/// A daemon that is not root opens `/dev/net/tun` itself: the device must have the mode
/// distributions give it.
fn require_tun_open_to_all(test: &str) -> bool {
    require_host(
        test,
        "/dev/net/tun open to every user (mode 0666)",
        tun_device_open_to_all(),
    )
}

/// Two nodes, B unprivileged with CAP_NET_ADMIN alone as `privilege` arranges it.
fn net_admin_only(privilege: Privilege) {
    let (ns_a, ns_b) = (Netns::new("unpriv"), Netns::new("unpriv"));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let (ca, cb) = pair(&a, veth.a_addr(Family::V4), &b, veth.b_addr(Family::V4));
    let mut da = Daemon::start(&ns_a, &ca);
    let mut db = Daemon::start_unprivileged(&ns_b, &cb, privilege);

    let pid = db.pid().expect("the unprivileged daemon runs");
    assert_eq!(
        uid_and_caps(pid),
        (UNPRIVILEGED_UID, CAP_NET_ADMIN_MASK),
        "the daemon must run as uid {UNPRIVILEGED_UID} with CAP_NET_ADMIN alone"
    );

    // Addresses and routes were set up by the unprivileged daemon itself.
    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_b, a.v4.into());
    assert_ping(&ns_b, a.v6.into());
    tcp_transfer(&ns_a, a.v4.into(), &ns_b, 1 << 20).expect("TCP, server on the root side");

    da.assert_running();
    db.assert_running();
    if privilege == Privilege::SwitchUser {
        // Finding #6: the socket directory stays root's, so the daemon's user cannot plant a
        // socket there for another interface. Its own socket then outlives it, answering
        // nothing (the next start replaces it).
        let socket = db.uapi_socket();
        let dir = socket.parent().expect("the socket is in a directory");
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir).expect("stat"));
        assert_eq!(owner, 0, "{} was given to the daemon's user", dir.display());
        let state_dir = db.state_dir();
        assert!(state_dir.exists(), "no {}", state_dir.display());
        let stopped = db.stop();
        assert!(
            stopped.status.is_some_and(|s| s.success()) && !stopped.link_left,
            "meshtun did not stop cleanly: {stopped:?}"
        );
        assert!(
            !meshtun_e2e::uapi_answers(&socket),
            "a stopped daemon answers"
        );
        assert!(
            !state_dir.exists(),
            "{} outlived the daemon",
            state_dir.display()
        );
    } else {
        // Exit status 0, its UAPI socket removed and the interface gone: the teardown worked
        // without root too.
        db.stop_cleanly();
    }
    da.stop_cleanly();
}

#[test]
fn a_daemon_with_no_capability_attaches_to_a_tun_created_beforehand() {
    let test = "a_daemon_with_no_capability_attaches_to_a_tun_created_beforehand";
    if !require_root(test) || !require_tun_open_to_all(test) {
        return;
    }
    let (ns_a, ns_b) = (Netns::new("nocap"), Netns::new("nocap"));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let (ca, mut cb) = pair(&a, veth.a_addr(Family::V4), &b, veth.b_addr(Family::V4));

    // What the administrator does beforehand, as root: the device, owned by the daemon's
    // user, its address and MTU, and the link up. The daemon adds no address and no route:
    // the connected route of the address covers the peer (IPv4 only here, as an IPv6
    // address waits for carrier before its route is usable).
    let uid = UNPRIVILEGED_UID.to_string();
    ns_b.ip(&["tuntap", "add", "dev", &b.name, "mode", "tun", "user", &uid]);
    ns_b.ip(&["addr", "add", &format!("{}/24", b.v4), "dev", &b.name]);
    ns_b.ip(&["link", "set", "dev", &b.name, "mtu", "1380", "up"]);
    cb.interface.address.clear();
    cb.peers[0].allowed_ips = vec![format!("{}/32", a.v4)];

    let mut da = Daemon::start(&ns_a, &ca);
    let mut db = Daemon::start_unprivileged(&ns_b, &cb, Privilege::NoCapability);
    let pid = db.pid().expect("the unprivileged daemon runs");
    assert_eq!(
        uid_and_caps(pid),
        (UNPRIVILEGED_UID, 0),
        "uid and capabilities"
    );

    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_b, a.v4.into());
    tcp_transfer(&ns_b, b.v4.into(), &ns_a, 1 << 20).expect("TCP, server on the tun's side");
    // The link was left as the administrator set it.
    let link = ns_b.ip(&["-o", "link", "show", "dev", &b.name]);
    assert!(link.contains("mtu 1380 "), "{link}");

    da.assert_running();
    db.assert_running();
    let stopped = db.stop();
    assert!(
        stopped.status.is_some_and(|s| s.success()) && !stopped.socket_left,
        "the daemon did not stop cleanly (exit: {:?}, socket left: {}); its log:\n{}",
        stopped.status,
        stopped.socket_left,
        stopped.log
    );
    // The device and its addresses outlive the daemon, ready for the next start.
    assert!(
        stopped.link_left,
        "the tun device created beforehand was deleted"
    );
    let addrs = ns_b.ip(&["-o", "addr", "show", "dev", &b.name]);
    assert!(addrs.contains(&format!(" {}/", b.v4)), "{addrs}");
    da.stop_cleanly();
}

/// On a host whose `/dev/net/tun` is mode 0600 (some container and VM images), a daemon with
/// CAP_NET_ADMIN alone cannot open it. It must say so usefully: the device, its mode and
/// owner, and that distributions ship it 0666, not just "Permission denied". The 0600
/// device is a private one, mounted over `/dev/net` in the daemon's own mount namespace.
#[test]
fn a_daemon_refused_by_the_tun_device_mode_says_what_to_do() {
    if !require_root("a_daemon_refused_by_the_tun_device_mode_says_what_to_do") {
        return;
    }
    let ns = Netns::new("tunmode");
    let dir = tempfile::tempdir().unwrap();
    let node = Node::new("a", 1);
    let config = meshtun_e2e::config::write_secret(dir.path(), "a.toml", &node.config().to_toml());
    let (state, uapi) = (dir.path().join("state"), dir.path().join("uapi"));
    for path in [&state, &uapi] {
        std::fs::create_dir(path).unwrap();
    }
    let owner = Some(nix::unistd::Uid::from_raw(UNPRIVILEGED_UID));
    let group = Some(nix::unistd::Gid::from_raw(UNPRIVILEGED_UID));
    for path in [dir.path(), &state, &uapi, &config] {
        nix::unistd::chown(path, owner, group).unwrap();
    }
    let uid = UNPRIVILEGED_UID.to_string();
    let script = format!(
        "mount -t tmpfs -o mode=0755 tmpfs /dev/net && mknod -m 0600 /dev/net/tun c 10 200 && \
         exec setpriv --reuid={uid} --regid={uid} --clear-groups --inh-caps=-all,+net_admin \
         --ambient-caps=-all,+net_admin --bounding-set=-all,+net_admin {} --state-dir {} \
         --uapi-dir {} up {}",
        meshtun_e2e::meshtun_bin().display(),
        state.display(),
        uapi.display(),
        config.display()
    );
    let out = ns.run_timeout(
        &["unshare", "--mount", "sh", "-c", &script],
        std::time::Duration::from_secs(10),
    );
    let message = format!("{}{}", out.stderr, out.stdout);
    assert!(!out.success(), "the daemon started:\n{message}");
    for words in [
        "/dev/net/tun is mode 0600",
        "owner uid 0 gid 0",
        &format!("uid {uid}"),
        "0666",
        &node.name,
    ] {
        assert!(
            message.contains(words),
            "the error does not say {words:?}:\n{message}"
        );
    }
    assert!(!ns.has_link(&node.name), "a tun device was left behind");
}
