//! Roaming: node B changes its outer address while the tunnel is up. A has no endpoint for B
//! and learns it only from B's authenticated packets; B sends a keepalive every second, so A
//! must follow B to the new address, and traffic recovers both ways. B's old address is
//! deleted before the new one is added, so B must not keep sending from a source address it
//! no longer has.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use meshtun_e2e::config::Node;
use meshtun_e2e::traffic::assert_ping;
use meshtun_e2e::{
    add_outer_addr, del_outer_addr, require_root, wait_until, wg, Daemon, Family, Netns, Veth,
};

/// B's address after the move: host `.22` / `::22` in the same subnet.
fn moved(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let [x, y, z, _] = a.octets();
            Ipv4Addr::new(x, y, z, 22).into()
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0x22).into()
        }
    }
}

fn endpoint_follows_b(test: &str, family: Family) {
    let (ns_a, ns_b) = (Netns::new(test), Netns::new(test));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let mut ca = a.config();
    ca.peers.push(b.as_peer());
    let mut cb = b.config();
    cb.peers.push(
        a.as_peer()
            .endpoint(veth.a_addr(family), a.port)
            .keepalive(1),
    );
    let da = Daemon::start(&ns_a, &ca);
    let _db = Daemon::start(&ns_b, &cb);

    assert_ping(&ns_b, a.v4.into());
    let b_endpoint = |ip: IpAddr| Some(SocketAddr::new(ip, b.port));
    let seen = || wg::dump(&ns_a, da.name()).peer(&b.keys.public).endpoint;
    assert_eq!(seen(), b_endpoint(veth.b_addr(family)));

    let (old, new) = (veth.b_addr(family), moved(veth.b_addr(family)));
    del_outer_addr(&ns_b, &veth.b_dev, old);
    add_outer_addr(&ns_b, &veth.b_dev, new);
    assert!(
        wait_until(Duration::from_secs(15), || seen() == b_endpoint(new)),
        "A still shows B at {:?}, not at {new}, 15 s after B moved",
        seen()
    );
    assert_ping(&ns_a, b.v4.into());
    assert_ping(&ns_a, b.v6.into());
    assert_ping(&ns_b, a.v4.into());
}

#[test]
fn roaming_over_ipv4() {
    if !require_root("roaming_over_ipv4") {
        return;
    }
    endpoint_follows_b("roaming_v4", Family::V4);
}

#[test]
fn roaming_over_ipv6() {
    if !require_root("roaming_over_ipv6") {
        return;
    }
    endpoint_follows_b("roaming_v6", Family::V6);
}
