//! The operator's membership key on a live mesh of the real binaries: three nodes enrolled
//! with the key's signature and configured with `membership_key`, and a fourth, `x`, that
//! the controller enrolls without one (its check is off: no `[membership]`), as a
//! compromised controller would add a peer of its own.
//!
//! - `every_signed_node_refuses_a_peer_added_without_a_signature`: the controller allows
//!   all four, yet every signed node logs why it refuses `x` (and `meshtun show` counts
//!   it), `wg show` lacks it, no ping
//!   passes either way between `x` and a signed node, and the signed nodes keep pinging each
//!   other with no loss across a rotation.

use std::time::Duration;

use meshtun_e2e::gating::observe;
use meshtun_e2e::gating::{Mesh, PingReport, PingRun, Timing};
use meshtun_e2e::traffic::assert_no_ping;
use meshtun_e2e::{require_root, wait_until, wg};

/// How long the nodes may take, after the admitting rotation, to apply its bundles.
const ADMIT: Duration = Duration::from_secs(20);

const SIGNED: [&str; 3] = ["a", "b", "c"];

/// Makes a membership key with the controller's command and re-enrolls the [`SIGNED`]
/// nodes with its signatures (removed, then added with `--membership-sig`, as an operator
/// would); returns the key's public half.
fn sign_nodes(mesh: &Mesh) -> String {
    let file = mesh.dir().join("membership.key");
    let file = file.to_string_lossy().into_owned();
    let out = mesh.controller_run_ok(0, &["membership", "key", "new", &file]);
    let public = out
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_else(|| panic!("`membership key new` printed no key: {out}"))
        .to_owned();
    for id in SIGNED {
        let node = mesh.node(id);
        let wg_key = node.public_b64();
        let identity = node.keys.identity.public().to_base64();
        let sign = [
            "membership",
            "sign",
            "--key",
            &file,
            "--node",
            id,
            "--wg-key",
            &wg_key,
            "--identity-key",
            &identity,
        ];
        let sig = mesh.controller_run_ok(0, &sign).trim().to_owned();
        mesh.controller_run_ok(0, &["node", "remove", id]);
        let mut add = vec![
            "node",
            "add",
            id,
            "--wg-key",
            &wg_key,
            "--identity-key",
            &identity,
            "--address",
            &node.keys.address,
            "--membership-sig",
            &sig,
        ];
        if let Some(endpoint) = &node.keys.endpoint {
            add.extend(["--endpoint", endpoint]);
        }
        mesh.controller_run_ok(0, &add);
    }
    public
}

#[test]
fn every_signed_node_refuses_a_peer_added_without_a_signature() {
    if !require_root("every_signed_node_refuses_a_peer_added_without_a_signature") {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::new("membership_key", timing, &["a", "b", "c", "x"]);
    let public = sign_nodes(&mesh);
    let ctl = mesh.start_controller();
    let extra = format!("membership_key = \"{public}\"\n");
    let daemons: Vec<_> = SIGNED
        .iter()
        .map(|id| mesh.start_node_with_keys(id, Vec::new(), &[], &extra))
        .collect();
    let rogue = mesh.start_node("x", Vec::new());
    ctl.wait_benchmarks(&["a", "b", "c", "x"], ADMIT);
    let epoch = ctl.rotate();
    let x = mesh.node("x");

    for (id, daemon) in SIGNED.iter().zip(&daemons) {
        let node = mesh.node(id);
        let others: Vec<_> = SIGNED
            .iter()
            .filter(|o| *o != id)
            .map(|o| mesh.node(o).public_key())
            .collect();
        let refused = |log: &str| {
            log.lines()
                .any(|l| l.contains("REFUSED peer=x") && l.contains("no membership signature"))
        };
        let ok = wait_until(ADMIT, || {
            let log = daemon.log();
            observe::has_membership(&log, "ALLOWED")
                && observe::peers_present(&node.iface, &others)
                && refused(&log)
        });
        assert!(
            ok,
            "node {id} did not take its signed peers and refuse x with the reason after epoch \
             {epoch}; its log:\n{}",
            daemon.log()
        );
        assert!(observe::peers_absent(&node.iface, &[x.public_key()]));
        let refused = observe::show_gate(&node.ns, &node.iface)["membership_refused"].as_u64();
        assert!(
            refused.is_some_and(|n| n >= 1),
            "{id}: `meshtun show` does not count the refused peer: {refused:?}"
        );
        let dump = wg::dump(&node.ns, &node.iface);
        assert_eq!(dump.peers.len(), 2, "{id}: {dump:?}");
        assert!(
            dump.peers.iter().all(|p| p.public_key != x.public_b64()),
            "{id} has x as a WireGuard peer: {dump:?}"
        );
    }

    // The controller allowed x (its bundle lists the signed nodes), but none of them
    // answers it, nor reaches it.
    assert!(
        wait_until(ADMIT, || observe::has_membership(&rogue.log(), "ALLOWED")),
        "the controller did not allow x; its log:\n{}",
        rogue.log()
    );
    for id in SIGNED {
        let node = mesh.node(id);
        assert_no_ping(&x.ns, node.tunnel().into());
        assert_no_ping(&node.ns, x.tunnel().into());
    }

    // The signed nodes lose nothing between themselves, across at least one rotation.
    let window = timing.epoch_len() + Duration::from_secs(3);
    let reports: Vec<PingReport> = mesh
        .ping_pairs(&SIGNED, window)
        .into_iter()
        .map(PingRun::finish)
        .collect();
    for report in &reports {
        report.assert_no_loss();
    }
    for id in SIGNED {
        assert!(observe::peers_absent(
            &mesh.node(id).iface,
            &[x.public_key()]
        ));
    }
}
