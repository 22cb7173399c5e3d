//! Hub forwarding in `hub_and_spoke` (see `meshtun_e2e::gating`): the controller makes
//! `hub` the one hub of spokes s1, s2 and s3, each a gated `meshtun up` in its own namespace.
//!
//! - `spokes_reach_each_other_through_the_hub_and_a_denied_spoke_leaves_every_route`:
//!   each spoke lists only the hub as a peer, whose allowed IPs carry the other spokes'
//!   addresses; spoke-to-spoke pings go through the hub (whose own forwarding sysctls stay
//!   0), with RTTs printed against a direct spoke-to-hub ping; `meshtun show` says the hub
//!   forwards and the spokes reach each other via it. A packet s1 sends through the hub with
//!   s3's address as its source never reaches s2. Then s3's score fails: by the decision
//!   time T + 1 s the hub has removed s3 and neither s1 nor s2 routes s3's address any more;
//!   s1 <-> s2 lose no ping throughout, and s3's pings get no reply after T + 1 s.

use std::net::IpAddr;
use std::time::Duration;

use meshtun_e2e::gating::observe::{self, first_time, uapi_peers, wait_removed};
use meshtun_e2e::gating::{now_ms, ControllerProc, GatedNode, Mesh, Timing, FAILING};
use meshtun_e2e::traffic::assert_ping;
use meshtun_e2e::{meshtun_in, require_root, wait_until, Daemon, Netns};

/// How long after the decision the denied spoke must be gone everywhere.
const CUTOFF_LIMIT_MS: u64 = 1000;

/// How long the nodes may take to be admitted.
const ADMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How often routes are read while waiting.
const POLL: Duration = Duration::from_millis(20);

const SPOKES: [&str; 3] = ["s1", "s2", "s3"];

/// The allowed IPs `node` gives its peer `hub`; empty if the UAPI does not answer or `hub`
/// is not a peer.
fn routes_via(node: &GatedNode, hub: &GatedNode) -> Vec<String> {
    uapi_peers(&node.iface)
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.public_key == hub.public_key())
        .map(|p| p.allowed_ips)
        .unwrap_or_default()
}

fn host_route(node: &GatedNode) -> String {
    format!("{}/32", node.tunnel())
}

/// Whether one of `routes` (`a.b.c.d/len`; IPv6 ones are skipped) covers `node`'s tunnel
/// address: the controller aggregates neighbouring spokes' host routes.
fn covers(routes: &[String], node: &GatedNode) -> bool {
    let addr = u32::from(node.tunnel());
    routes.iter().any(|r| {
        let Some((net, len)) = r.split_once('/') else {
            return false;
        };
        match (net.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) {
            (Ok(net), Ok(len)) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                addr & mask == u32::from(net) & mask
            }
            _ => false,
        }
    })
}

/// Waits until the controller has every node's benchmark, rotates, and waits until the hub
/// lists every spoke and each spoke routes the other spokes through the hub.
fn admit(mesh: &Mesh, ctl: &ControllerProc<'_>, daemons: &[Daemon<'_>]) {
    let ids: Vec<&str> = mesh.nodes().iter().map(|n| n.id.as_str()).collect();
    ctl.wait_benchmarks(&ids, ADMIT_TIMEOUT);
    let epoch = ctl.rotate();
    let hub = mesh.node("hub");
    let spokes: Vec<&GatedNode> = SPOKES.iter().map(|s| mesh.node(s)).collect();
    let keys: Vec<_> = spokes.iter().map(|s| s.public_key()).collect();
    for daemon in daemons {
        assert!(
            wait_until(ADMIT_TIMEOUT, || observe::has_membership(
                &daemon.log(),
                "ALLOWED"
            )),
            "a node was not allowed within {ADMIT_TIMEOUT:?} of epoch {epoch}:\n{}",
            ctl.status_text()
        );
    }
    assert!(
        wait_until(ADMIT_TIMEOUT, || observe::peers_present(&hub.iface, &keys)),
        "the hub does not list every spoke: {:?}",
        uapi_peers(&hub.iface)
    );
    for spoke in &spokes {
        let want: Vec<&GatedNode> = spokes
            .iter()
            .copied()
            .filter(|o| o.id != spoke.id)
            .chain([hub])
            .collect();
        let ok = wait_until(ADMIT_TIMEOUT, || {
            let routes = routes_via(spoke, hub);
            want.iter().all(|w| covers(&routes, w)) && !covers(&routes, spoke)
        });
        let peers = uapi_peers(&spoke.iface).unwrap_or_default();
        assert!(
            ok && peers.len() == 1,
            "{} should have the hub as its only peer, routing the other spokes: {peers:?}",
            spoke.id
        );
    }
}

/// The average RTT (ms) of 20 pings from `ns` to `to`, 50 ms apart; all must be answered.
fn rtt_ms(ns: &Netns, to: IpAddr) -> f64 {
    let to = to.to_string();
    let out = ns.run(&["ping", "-n", "-q", "-c", "20", "-i", "0.05", "-W", "1", &to]);
    assert!(out.success(), "pings to {to} lost: {}", out.stdout);
    out.stdout
        .lines()
        .find_map(|l| l.split_once("min/avg/max/mdev = "))
        .and_then(|(_, v)| v.split('/').nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no RTT in ping's output:\n{}", out.stdout))
}

/// 0 or 1, from `/proc/sys/...` in `ns`.
fn sysctl(ns: &Netns, path: &str) -> String {
    ns.ok(&["cat", path]).trim().to_owned()
}

/// Sends 5 pings from `from` to `to` with the source address `spoofed`, which `from` adds to
/// its interface for the purpose; counts on `to` the echo requests that arrive from
/// `spoofed` and, as a control, from `from`'s own address.
fn spoof(from: &GatedNode, to: &GatedNode, spoofed: &GatedNode) -> (u64, u64) {
    let rule = |src: String| {
        format!("add rule inet spoof input ip saddr {src} icmp type echo-request counter")
    };
    let script = format!(
        "add table inet spoof\n\
         add chain inet spoof input {{ type filter hook input priority 0; }}\n\
         {}\n{}\n",
        rule(spoofed.tunnel().to_string()),
        rule(from.tunnel().to_string())
    );
    let path = std::env::temp_dir().join(format!("meshtun-spoof-{}.nft", std::process::id()));
    std::fs::write(&path, script).expect("cannot write the nft script");
    to.ns.ok(&["nft", "-f", &path.display().to_string()]);
    let _ = std::fs::remove_file(&path);
    let fake = host_route(spoofed);
    from.ns.ip(&["addr", "add", &fake, "dev", &from.iface]);
    let dst = to.tunnel().to_string();
    let spoof_src = spoofed.tunnel().to_string();
    for src in [spoof_src.as_str(), &from.tunnel().to_string()] {
        from.ns.run(&[
            "ping", "-n", "-q", "-c", "5", "-i", "0.05", "-W", "1", "-I", src, &dst,
        ]);
    }
    from.ns.ip(&["addr", "del", &fake, "dev", &from.iface]);
    let listing = to.ns.ok(&["nft", "list", "table", "inet", "spoof"]);
    to.ns.ok(&["nft", "delete", "table", "inet", "spoof"]);
    let counts: Vec<u64> = listing
        .lines()
        .filter_map(|l| {
            l.split_once("counter packets ")?
                .1
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(counts.len(), 2, "cannot read the counters:\n{listing}");
    (counts[0], counts[1])
}

#[test]
fn spokes_reach_each_other_through_the_hub_and_a_denied_spoke_leaves_every_route() {
    if !require_root(
        "spokes_reach_each_other_through_the_hub_and_a_denied_spoke_leaves_every_route",
    ) {
        return;
    }
    let mesh = Mesh::new(
        "hub_forwarding",
        Timing::default(),
        &["hub", "s1", "s2", "s3"],
    );
    mesh.add_controller_settings(0, "[topology]\nkind = \"hub_and_spoke\"\nhubs = [\"hub\"]");
    let (hub, s1, s2, s3) = (
        mesh.node("hub"),
        mesh.node("s1"),
        mesh.node("s2"),
        mesh.node("s3"),
    );
    let ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    admit(&mesh, &ctl, &daemons);

    for (from, to) in [(s1, s2), (s2, s3), (s3, s1)] {
        assert_ping(&from.ns, to.tunnel().into());
    }
    let via_hub = rtt_ms(&s1.ns, s2.tunnel().into());
    let direct = rtt_ms(&s1.ns, hub.tunnel().into());
    eprintln!("RTT s1 -> s2 through the hub: {via_hub:.3} ms; s1 -> hub directly: {direct:.3} ms");
    for path in [
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sys/net/ipv6/conf/all/forwarding",
    ] {
        assert_eq!(sysctl(&hub.ns, path), "0", "{path} on the hub");
    }
    let shown = observe::show_gate(&hub.ns, &hub.iface);
    assert_eq!(shown["forward"], true, "`meshtun show` on the hub: {shown}");
    let text = meshtun_in(
        &s1.ns,
        &["show", &s1.iface, "--no-probe"],
        Duration::from_secs(30),
    )
    .expect_success();
    for other in [s2, s3] {
        let line = format!("{} via hub", other.id);
        assert!(
            text.contains(&line),
            "`meshtun show` on s1 lacks `{line}`:\n{text}"
        );
    }

    // s1 claims s3's address through the hub: nothing arrives at s2, while s1's own does.
    let (spoofed, genuine) = spoof(s1, s2, s3);
    assert_eq!(
        spoofed, 0,
        "s2 received pings with s3's source from s1 through the hub"
    );
    assert_eq!(
        genuine, 5,
        "s1's genuine pings did not all reach s2 (the control)"
    );

    // s1 <-> s2 throughout; s3 -> s1 until after the cut-off.
    let allowed = [
        mesh.ping("s1", "s2", Duration::from_secs(8)),
        mesh.ping("s2", "s1", Duration::from_secs(8)),
    ];
    let from_s3 = mesh.ping("s3", "s1", Duration::from_secs(8));
    assert!(
        wait_until(Duration::from_secs(5), || !from_s3
            .replies_so_far()
            .is_empty()),
        "s3's pings got no reply before the denial"
    );

    let failed_at = now_ms();
    mesh.set_score("s3", FAILING);
    let at_hub = wait_removed(hub, s3);
    let gone_from = |spoke: &GatedNode| {
        first_time(Duration::from_secs(10), POLL, || {
            !covers(&routes_via(spoke, hub), s3)
        })
        .unwrap_or_else(|| panic!("{} still routes s3 through the hub after 10 s", spoke.id))
    };
    let removed = [
        ("hub", at_hub),
        ("s1", gone_from(s1)),
        ("s2", gone_from(s2)),
    ];
    let denial = ctl.denial("s3", failed_at).unwrap_or_else(|| {
        panic!(
            "no epoch denying s3 in the audit log: {:?}",
            ctl.rotations()
        )
    });
    let t = denial.created_ms;
    for (id, at) in removed {
        eprintln!(
            "{id} dropped s3 {} ms after the decision (epoch {})",
            at as i64 - t as i64,
            denial.epoch
        );
        assert!(
            at <= t + CUTOFF_LIMIT_MS,
            "{id} still had s3 {} ms after the controller denied it",
            at.saturating_sub(t)
        );
    }
    for spoke in [s1, s2] {
        let routes = routes_via(spoke, hub);
        let other = if spoke.id == "s1" { s2 } else { s1 };
        assert!(
            covers(&routes, other) && covers(&routes, hub),
            "{} lost routes it should keep: {routes:?}",
            spoke.id
        );
    }
    let report = from_s3.stop();
    let late = report.replies_after(t + CUTOFF_LIMIT_MS);
    assert!(
        late.is_empty(),
        "s3 had {} ping replies more than {CUTOFF_LIMIT_MS} ms after its denial",
        late.len()
    );
    for run in allowed {
        run.finish().assert_no_loss();
    }
    for mut daemon in daemons {
        daemon.assert_running();
    }
}
