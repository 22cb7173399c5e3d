//! Endpoint discovery with STUN from behind a NAT (issue 15, item 1): a gated node sits
//! behind a router namespace that masquerades it with nftables ([`meshtun_e2e::nat`]); the
//! controller answers STUN Binding requests on `[stun] listen`.
//!
//! - `a_node_behind_a_nat_learns_the_routers_address_and_port`: with no `stun` key, the node
//!   asks its controller's host on port 3478, from its WireGuard socket; `meshtun show
//!   --json` gives the router's public address and the port the router's conntrack table
//!   maps the node's flow to, and the controller's metrics count the answer.
//! - `two_stun_servers_tell_a_cone_nat_from_a_symmetric_one`: with two STUN servers (the
//!   controller and a second `meshtun-controller` with only `[stun]`), plain masquerade
//!   shows as `endpoint_independent`; after the router switches to `masquerade
//!   random,fully-random` and the node's addresses change (which makes it ask again at
//!   once), as `endpoint_dependent`, with each server's reflexive port the one the router
//!   chose for that server.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Stdio};
use std::time::Duration;

use meshtun_e2e::controller::ControllerHome;
use meshtun_e2e::gating::observe::show_gate;
use meshtun_e2e::gating::{Mesh, Timing};
use meshtun_e2e::nat::{Mapping, Router};
use meshtun_e2e::{require_root, wait_until};

/// The controller's address on the mesh's bridge, and its STUN port.
const CONTROLLER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 250);
const STUN_PORT: u16 = 3478;

/// A second STUN server on the bridge.
const SECOND: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 251);

/// How long a node may take to learn its reflexive address (a first request, and a few
/// retransmissions while the servers start).
const LEARN: Duration = Duration::from_secs(10);

/// A child process killed (by its pid) and reaped when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The node's reflexive addresses and the NAT kind, as `meshtun show --json` reports them.
fn shown(mesh: &Mesh) -> (Vec<(String, SocketAddr)>, String) {
    let node = mesh.node("a");
    let gate = show_gate(&node.ns, &node.iface);
    let reflexive = gate["reflexive"]
        .as_array()
        .unwrap_or_else(|| panic!("`meshtun show --json` has no gate.reflexive: {gate}"))
        .iter()
        .map(|r| {
            let server = r["server"].as_str().unwrap_or_default().to_owned();
            let address = r["address"].as_str().unwrap_or_default();
            let address = address
                .parse()
                .unwrap_or_else(|e| panic!("reflexive address {address:?}: {e}"));
            (server, address)
        })
        .collect();
    let nat = gate["nat"].as_str().unwrap_or_default().to_owned();
    (reflexive, nat)
}

/// Waits until `show` reports `servers` reflexive addresses and the NAT kind `nat`; returns
/// them.
fn wait_for(mesh: &Mesh, servers: usize, nat: &str) -> Vec<(String, SocketAddr)> {
    let mut last = (Vec::new(), String::new());
    let ok = wait_until(LEARN, || {
        last = shown(mesh);
        last.0.len() == servers && last.1 == nat
    });
    assert!(
        ok,
        "after {LEARN:?} the node shows {:?} with nat {:?}, not {servers} reflexive addresses \
         with nat {nat:?}",
        last.0, last.1
    );
    last.0
}

/// The public port the router maps the node's flow to `server` to.
fn router_port(router: &Router, server: Ipv4Addr) -> u16 {
    let mappings = router.udp_mappings(STUN_PORT);
    let ports: Vec<u16> = mappings
        .iter()
        .filter(|(dst, _)| *dst == server)
        .map(|(_, port)| *port)
        .collect();
    match ports.as_slice() {
        [port] => *port,
        _ => panic!("the router maps {ports:?} to {server}:{STUN_PORT}: {mappings:?}"),
    }
}

#[test]
fn a_node_behind_a_nat_learns_the_routers_address_and_port() {
    if !require_root("a_node_behind_a_nat_learns_the_routers_address_and_port") {
        return;
    }
    let mesh = Mesh::new("nat_stun", Timing::default(), &["a"]);
    mesh.add_controller_settings(0, &format!("[stun]\nlisten = \"{CONTROLLER}:{STUN_PORT}\""));
    let node = mesh.node("a");
    let router = Router::insert(
        "nat_stun",
        &node.ns,
        node.outer(),
        Mapping::EndpointIndependent,
    );
    let _ctl = mesh.start_controller();
    let _daemon = mesh.start_node("a", Vec::new());

    let reflexive = wait_for(&mesh, 1, "unknown");
    let (server, address) = &reflexive[0];
    assert_eq!(
        server,
        &format!("{CONTROLLER}:{STUN_PORT}"),
        "the default server"
    );
    let port = router_port(&router, CONTROLLER);
    assert_eq!(
        *address,
        SocketAddr::from((router.public, port)),
        "the reflexive address is the router's public address and the port it chose"
    );
    assert_ne!(router.public, router.private);
    let metrics = mesh.controller_ns().enter(|| {
        let reply = mesh.home().status_client().get("/metrics");
        reply.unwrap_or_else(|e| panic!("GET /metrics: {e}")).text()
    });
    // The series is there from the start, at 0.
    let answered = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("meshtun_controller_stun_requests_total{outcome=\"answered\"} ")
        })
        .and_then(|v| v.parse::<f64>().ok());
    assert!(
        answered.is_some_and(|n| n >= 1.0),
        "the controller's metrics count no answered STUN request:\n{metrics}"
    );
}

#[test]
fn two_stun_servers_tell_a_cone_nat_from_a_symmetric_one() {
    if !require_root("two_stun_servers_tell_a_cone_nat_from_a_symmetric_one") {
        return;
    }
    let mesh = Mesh::new("nat_stun2", Timing::default(), &["a"]);
    mesh.add_controller_settings(0, &format!("[stun]\nlisten = \"{CONTROLLER}:{STUN_PORT}\""));
    let node = mesh.node("a");
    let router = Router::insert(
        "nat_stun2",
        &node.ns,
        node.outer(),
        Mapping::EndpointIndependent,
    );
    let _ctl = mesh.start_controller();
    // A second controller with nothing but its STUN server, on its own address.
    let second_ns = mesh.attach(251);
    let second = ControllerHome::listening_on(
        SocketAddr::from((SECOND, 8700)),
        &format!("[stun]\nlisten = \"{SECOND}:{STUN_PORT}\"\n"),
    );
    second.init();
    let bin = meshtun_e2e::controller_bin();
    let config = second.config_file().to_string_lossy().into_owned();
    let mut serve = second_ns.command(&bin.to_string_lossy(), &["--config", &config, "serve"]);
    serve.stdout(Stdio::null()).stderr(Stdio::null());
    let _second_proc = Reaped(second_ns.spawn(&mut serve));

    let servers = format!("stun = [\"{CONTROLLER}:{STUN_PORT}\", \"{SECOND}:{STUN_PORT}\"]\n");
    let _daemon = mesh.start_node_with_keys("a", Vec::new(), &[], &servers);
    let cone = wait_for(&mesh, 2, "endpoint_independent");
    let public = SocketAddr::from((router.public, router_port(&router, CONTROLLER)));
    assert!(
        cone.iter().all(|(_, address)| *address == public),
        "{cone:?}: both servers see {public}"
    );

    // The router turns symmetric and forgets its mappings; the node gets a new address (as
    // on a new network), and so asks both servers again at once rather than in 25 s.
    router.set_mapping(Mapping::FullyRandom);
    node.ns
        .ip(&["addr", "add", "198.51.100.9/24", "dev", &router.node_link]);
    let symmetric = wait_for(&mesh, 2, "endpoint_dependent");
    for (server, address) in &symmetric {
        let ip: Ipv4Addr = server
            .split(':')
            .next()
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| panic!("server {server}"));
        assert_eq!(
            *address,
            SocketAddr::from((router.public, router_port(&router, ip))),
            "{server} saw the port the router chose for it"
        );
    }
    assert_ne!(symmetric[0].1, symmetric[1].1);
}
