//! `wg set` on a gated interface, as the README's "Live edits" documents it:
//!
//! - `static_edits_outlive_three_epochs_and_end_at_sighup`: edits to a static peer (its
//!   allowed IPs and keepalive) and a peer added with `wg set` stay through three epochs,
//!   each of which reconfigures the device; a SIGHUP rereads the file and replaces them.
//! - `attack_editing_the_controllers_peers_or_the_node_key_is_refused`: a local admin (or a
//!   script) cannot re-route, re-key or remove a peer the controller configured, nor change
//!   the key that is the node's identity at the controller: `wg` fails with EPERM, the daemon
//!   logs why, and the tunnel to the gated peer carries on untouched.

use std::time::Duration;

use meshtun_e2e::config::Peer;
use meshtun_e2e::gating::observe;
use meshtun_e2e::gating::{Mesh, Timing};
use meshtun_e2e::traffic::assert_ping;
use meshtun_e2e::{require_root, wait_until, wg};
use meshtun_proto::PrivateKey;

/// A static peer of node a from its file: nobody answers at its endpoint, which is fine.
fn static_peer(key: &PrivateKey) -> Peer {
    Peer {
        public_key: key.public_key().to_base64(),
        preshared_key: None,
        allowed_ips: vec!["100.64.0.30/32".into()],
        endpoint: Some("192.0.2.30:51820".into()),
        persistent_keepalive: None,
    }
}

/// The epochs node a has applied so far, from its log.
fn applied(log: &str) -> Vec<u64> {
    observe::membership_epochs(log, "ALLOWED")
}

#[test]
fn static_edits_outlive_three_epochs_and_end_at_sighup() {
    if !require_root("static_edits_outlive_three_epochs_and_end_at_sighup") {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::new("live_edits", timing, &["a", "b"]);
    let (a, b) = (mesh.node("a"), mesh.node("b"));
    let fixed = PrivateKey::generate();
    let added = PrivateKey::generate().public_key().to_base64();
    let fixed_b64 = fixed.public_key().to_base64();
    let ctl = mesh.start_controller();
    let daemons = vec![
        mesh.start_node("a", vec![static_peer(&fixed)]),
        mesh.start_node("b", Vec::new()),
    ];
    mesh.admit_all(&ctl, &daemons);

    wg::wg(
        &a.ns,
        &[
            "set",
            &a.iface,
            "peer",
            &fixed_b64,
            "allowed-ips",
            "100.64.0.30/32,100.64.7.0/24",
            "persistent-keepalive",
            "25",
        ],
    );
    wg::wg(
        &a.ns,
        &[
            "set",
            &a.iface,
            "peer",
            &added,
            "allowed-ips",
            "100.64.8.0/24",
        ],
    );
    let before = applied(&daemons[0].log()).last().copied().unwrap_or(0);
    let three_more = wait_until(timing.epoch_len() * 6, || {
        applied(&daemons[0].log())
            .iter()
            .filter(|e| **e > before)
            .count()
            >= 3
    });
    assert!(
        three_more,
        "node a applied fewer than three epochs:\n{}",
        daemons[0].log()
    );

    let dump = wg::dump(&a.ns, &a.iface);
    let edited = dump.peer(&fixed_b64);
    assert_eq!(
        edited.allowed_ips,
        ["100.64.0.30/32", "100.64.7.0/24"],
        "{edited:?}"
    );
    assert_eq!(edited.persistent_keepalive, Some(25), "{edited:?}");
    let new_peer = dump.peer(&added);
    assert_eq!(new_peer.allowed_ips, ["100.64.8.0/24"], "{new_peer:?}");
    assert!(
        dump.peers.iter().any(|p| p.public_key == b.public_b64()),
        "{dump:?}"
    );
    assert_ping(&a.ns, b.tunnel().into());

    // The file is the truth again after a reload: the edits are gone, b stays.
    daemons[0].signal(nix::sys::signal::Signal::SIGHUP);
    let reloaded = wait_until(Duration::from_secs(10), || {
        let dump = wg::dump(&a.ns, &a.iface);
        !dump.peers.iter().any(|p| p.public_key == added)
    });
    assert!(reloaded, "the peer added by `wg set` outlived a SIGHUP");
    let dump = wg::dump(&a.ns, &a.iface);
    assert_eq!(
        dump.peer(&fixed_b64).allowed_ips,
        ["100.64.0.30/32"],
        "{dump:?}"
    );
    assert_eq!(dump.peer(&fixed_b64).persistent_keepalive, None, "{dump:?}");
    assert!(
        dump.peers.iter().any(|p| p.public_key == b.public_b64()),
        "{dump:?}"
    );
}

#[test]
fn attack_editing_the_controllers_peers_or_the_node_key_is_refused() {
    if !require_root("attack_editing_the_controllers_peers_or_the_node_key_is_refused") {
        return;
    }
    let mesh = Mesh::new("live_edits_gated", Timing::default(), &["a", "b"]);
    let (a, b) = (mesh.node("a"), mesh.node("b"));
    let ctl = mesh.start_controller();
    let daemons = vec![
        mesh.start_node("a", Vec::new()),
        mesh.start_node("b", Vec::new()),
    ];
    mesh.admit_all(&ctl, &daemons);
    let before = wg::dump(&a.ns, &a.iface);
    let gated = before.peer(&b.public_b64()).clone();

    let key_file = mesh.dir().join("other.key");
    std::fs::write(&key_file, PrivateKey::generate().to_base64()).unwrap();
    let key_path = key_file.to_string_lossy().into_owned();
    let b64 = b.public_b64();
    let attempts: [&[&str]; 4] = [
        &["set", &a.iface, "peer", &b64, "allowed-ips", "0.0.0.0/0"],
        &[
            "set",
            &a.iface,
            "peer",
            &b64,
            "endpoint",
            "192.0.2.66:51820",
        ],
        &["set", &a.iface, "peer", &b64, "remove"],
        &["set", &a.iface, "private-key", &key_path],
    ];
    for args in attempts {
        let mut full = vec!["wg"];
        full.extend_from_slice(args);
        let out = a.ns.run(&full);
        let stderr = &out.stderr;
        assert!(
            !out.status.success(),
            "`wg {}` was accepted",
            args.join(" ")
        );
        assert!(
            stderr.contains("Operation not permitted"),
            "`wg {}`: {stderr}",
            args.join(" ")
        );
    }
    let log = daemons[0].log();
    assert!(
        log.contains(&format!("peer {b64} is node b of the controller's bundle")),
        "the daemon does not say why:\n{log}"
    );
    assert!(
        log.contains("the node's identity at the controller"),
        "{log}"
    );

    let after = wg::dump(&a.ns, &a.iface);
    assert_eq!(after.interface.public_key, before.interface.public_key);
    let still = after.peer(&b64);
    assert_eq!(still.allowed_ips, gated.allowed_ips, "{still:?}");
    assert_eq!(still.endpoint, gated.endpoint, "{still:?}");
    assert_ping(&a.ns, b.tunnel().into());
}
