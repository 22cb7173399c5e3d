//! meshtun without root: a daemon running as an unprivileged user with CAP_NET_ADMIN as its
//! only capability (what the systemd unit gives it), one started as root that switches to
//! such a user itself (`--user`), and one with no capability at all on a tun device created
//! beforehand, each carry traffic with a daemon run as root.

use meshtun_e2e::config::Node;
use meshtun_e2e::traffic::{assert_ping, tcp_transfer};
use meshtun_e2e::{require_root, Daemon, Family, Netns, Privilege, Veth, UNPRIVILEGED_UID};

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
    if !require_root("a_daemon_with_only_cap_net_admin_carries_traffic") {
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

/// Two nodes, B unprivileged with CAP_NET_ADMIN alone as `privilege` arranges it.
fn net_admin_only(privilege: Privilege) {
    let (ns_a, ns_b) = (Netns::new("unpriv"), Netns::new("unpriv"));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let mut ca = a.config();
    ca.peers
        .push(b.as_peer().endpoint(veth.b_addr(Family::V4), b.port));
    let mut cb = b.config();
    cb.peers
        .push(a.as_peer().endpoint(veth.a_addr(Family::V4), a.port));
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
    // Exit status 0, its UAPI socket removed and the interface gone: the teardown worked
    // without root too.
    db.stop_cleanly();
    da.stop_cleanly();
}

#[test]
fn a_daemon_with_no_capability_attaches_to_a_tun_created_beforehand() {
    if !require_root("a_daemon_with_no_capability_attaches_to_a_tun_created_beforehand") {
        return;
    }
    let (ns_a, ns_b) = (Netns::new("nocap"), Netns::new("nocap"));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let mut ca = a.config();
    ca.peers
        .push(b.as_peer().endpoint(veth.b_addr(Family::V4), b.port));
    let mut cb = b.config();
    cb.peers
        .push(a.as_peer().endpoint(veth.a_addr(Family::V4), a.port));

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
