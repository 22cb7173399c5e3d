//! Re-resolving a host-name endpoint when its peer goes silent (issue 15, item 3), as
//! wg-quick's `reresolve-dns.sh` does. Node a has static peer b at `b.reresolve.test:51820`,
//! a name that only a's `/etc/hosts` knows: a file in `/etc/netns/NS/`, which `ip netns
//! exec` binds over `/etc/hosts` for the daemon (a private mount namespace), rewritten in
//! place during the test. b has no endpoint for a and no keepalive, so b never tells a
//! where it went.
//!
//! `a_silent_peers_name_is_looked_up_again_and_traffic_resumes`: b's address changes, and
//! the name is pointed at the new one. a's pings go unanswered until the daemon sees 20 s of
//! sends with nothing back (a failing handshake), looks the name up again in the
//! background and moves the endpoint; then they are answered. The test prints how long
//! that took.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshtun_e2e::config::Node;
use meshtun_e2e::traffic::{assert_ping, ping};
use meshtun_e2e::{
    add_outer_addr, del_outer_addr, require_root, wait_until, wg, Daemon, Family, Netns, Veth,
};

/// b's endpoint name.
const NAME: &str = "b.reresolve.test";

/// How long a may take to find b again: 20 s of unanswered sends, a 2 s check, a lookup,
/// and a ping round.
const RECOVERY: Duration = Duration::from_secs(40);

/// `/etc/netns/NS/hosts`: the `/etc/hosts` of commands run with `ip netns exec NS`;
/// removed (with its directory) when dropped.
struct Hosts {
    dir: PathBuf,
}

impl Hosts {
    fn new(ns: &Netns, addr: IpAddr) -> Self {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let hosts = Self { dir };
        hosts.point_to(addr);
        hosts
    }

    /// Points [`NAME`] at `addr`, rewriting the file in place (the bind mount follows the
    /// inode, so a rename would not be seen).
    fn point_to(&self, addr: IpAddr) {
        let path = self.dir.join("hosts");
        std::fs::write(&path, format!("127.0.0.1 localhost\n{addr} {NAME}\n"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_silent_peers_name_is_looked_up_again_and_traffic_resumes() {
    if !require_root("a_silent_peers_name_is_looked_up_again_and_traffic_resumes") {
        return;
    }
    let _exclusive = meshtun_e2e::exclusive();
    let (ns_a, ns_b) = (Netns::new("reresolve"), Netns::new("reresolve"));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let old = veth.b_addr(Family::V4);
    let hosts = Hosts::new(&ns_a, old);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let mut ca = a.config();
    let mut peer_b = b.as_peer();
    peer_b.endpoint = Some(format!("{NAME}:{}", b.port));
    ca.peers.push(peer_b);
    let mut cb = b.config();
    cb.peers.push(a.as_peer());
    let da = Daemon::start(&ns_a, &ca);
    let _db = Daemon::start(&ns_b, &cb);
    assert_ping(&ns_a, b.v4.into());
    let seen = || wg::dump(&ns_a, da.name()).peer(&b.keys.public).endpoint;
    assert_eq!(seen(), Some(SocketAddr::new(old, b.port)));

    // b moves; the name follows.
    let IpAddr::V4(old4) = old else {
        unreachable!("an IPv4 address")
    };
    let [x, y, z, _] = old4.octets();
    let new = IpAddr::V4(Ipv4Addr::new(x, y, z, 22));
    del_outer_addr(&ns_b, &veth.b_dev, old);
    add_outer_addr(&ns_b, &veth.b_dev, new);
    hosts.point_to(new);
    let moved = Instant::now();
    let back = wait_until(RECOVERY, || ping(&ns_a, b.v4.into(), 2));
    let took = moved.elapsed();
    assert!(
        back,
        "a cannot ping b {RECOVERY:?} after b's name moved to {new}; a shows b at {:?}; \
         a's log:\n{}",
        seen(),
        da.log()
    );
    println!("traffic back {took:?} after the peer's name moved");
    assert_eq!(seen(), Some(SocketAddr::new(new, b.port)));
    assert!(
        da.log().contains("looking up its endpoint again"),
        "a's log does not say it looked b's name up again:\n{}",
        da.log()
    );
}
