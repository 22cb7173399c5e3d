//! A node denied by the controller, in a gated mesh of three (see `meshtun_e2e::gating`):
//! a, b stay allowed; d's benchmark harness starts printing a failing score.
//!
//! - `a_denied_node_is_cut_off_within_a_second_and_readmitted`: with T the controller's
//!   decision time (the denying epoch's `created_ms` in the audit log, which bundles carry
//!   as `decided_ms`), a and b have removed d from their peers by T + 1 s, no ping from d is
//!   answered after T + 1 s, and a <-> b lose no ping. Once d's score passes again, it is
//!   back within one epoch (plus the benchmark interval, the publication lead and a
//!   handshake), reachable both ways, and a <-> b still lose nothing.
//! - `a_denied_node_keeping_its_keys_cannot_handshake`: after the denial, d's private key and
//!   the last preshared keys it held run in an ungated meshtun with a and b as static peers;
//!   for several seconds no handshake completes and no ping gets through.

use std::collections::BTreeMap;
use std::time::Duration;

use meshtun_e2e::config::Peer;
use meshtun_e2e::gating::observe::{self, first_time, wait_removed};
use meshtun_e2e::gating::{now_ms, Mesh, PingRun, Timing, FAILING, NODE_PORT, PASSING};
use meshtun_e2e::traffic::{assert_no_ping, assert_ping};
use meshtun_e2e::{require_root, wait_until, wg, Daemon};
use meshtun_proto::PresharedKey;

/// How long after the decision the denied node must be cut off everywhere.
const CUTOFF_LIMIT_MS: u64 = 1000;

/// How long a daemon may take to write a log line about what it has just done.
const LOG_WAIT: Duration = Duration::from_secs(2);

/// How often the allowed nodes' state is read while waiting.
const POLL: Duration = Duration::from_millis(20);

#[test]
fn a_denied_node_is_cut_off_within_a_second_and_readmitted() {
    if !require_root("a_denied_node_is_cut_off_within_a_second_and_readmitted") {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::new("gating_deny", timing, &["a", "b", "d"]);
    let (a, b, d) = (mesh.node("a"), mesh.node("b"), mesh.node("d"));
    let ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);

    // a <-> b for the whole test; d -> a and d -> b until the cut-off is over.
    let allowed = mesh.ping_pairs(&["a", "b"], Duration::from_secs(26));
    let from_d = [
        mesh.ping("d", "a", Duration::from_secs(30)),
        mesh.ping("d", "b", Duration::from_secs(30)),
    ];
    // Every run of pings is under way: each has had a reply.
    let under_way = |runs: &[&PingRun]| runs.iter().all(|r| !r.replies_so_far().is_empty());
    let runs: Vec<&PingRun> = allowed.iter().chain(&from_d).collect();
    assert!(
        wait_until(Duration::from_secs(10), || under_way(&runs)),
        "the pings got no reply before the denial"
    );

    // --- Denial ---
    let failed_at = now_ms();
    mesh.set_score("d", FAILING);
    let removed = [("a", wait_removed(a, d)), ("b", wait_removed(b, d))];
    let denial = ctl
        .denial("d", failed_at)
        .unwrap_or_else(|| panic!("no epoch denying d in the audit log: {:?}", ctl.rotations()));
    let t = denial.created_ms;
    for (id, at) in removed {
        eprintln!(
            "{id} removed d {} ms after the decision (epoch {}, cause {:?}; score failed {} ms \
             before the decision)",
            at as i64 - t as i64,
            denial.epoch,
            denial.cause,
            t as i64 - failed_at as i64
        );
        assert!(
            at <= t + CUTOFF_LIMIT_MS,
            "{id} still listed d {} ms after the controller denied it (limit {CUTOFF_LIMIT_MS})",
            at - t
        );
    }
    assert_eq!(ctl.membership("d"), "DENIED");
    for (node, daemon) in [(a, &daemons[0]), (b, &daemons[1])] {
        wait_until(LOG_WAIT, || {
            !observe::cutoffs(&daemon.log(), "d").is_empty()
        });
        let cutoffs = observe::cutoffs(&daemon.log(), "d");
        eprintln!("{}: CUTOFF lines for d: {cutoffs:?}", node.id);
        assert!(
            cutoffs
                .iter()
                .any(|ms| ms.is_some_and(|ms| ms <= CUTOFF_LIMIT_MS)),
            "{} logged no `CUTOFF peer=d … decision_to_cutoff_ms` within {CUTOFF_LIMIT_MS} ms: \
             {cutoffs:?}",
            node.id
        );
        let dump = wg::dump(&node.ns, &node.iface);
        assert!(
            !dump.peers.iter().any(|p| p.public_key == d.public_b64()),
            "`wg show {} dump` still lists d: {dump:?}",
            node.iface
        );
    }
    assert!(
        wait_until(LOG_WAIT, || observe::has_membership(
            &daemons[2].log(),
            "DENIED"
        )),
        "d did not log MEMBERSHIP=DENIED"
    );
    let shown = observe::show_gate(&d.ns, &d.iface);
    assert_eq!(
        shown["membership"], "DENIED",
        "`meshtun show` on d: {shown}"
    );
    assert!(
        shown["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "`meshtun show` on d gives no reason for the denial: {shown}"
    );
    for node in [a, b] {
        assert_eq!(observe::shown_membership(&node.ns, &node.iface), "ALLOWED");
    }
    assert!(
        observe::peers_absent(&d.iface, &[a.public_key(), b.public_key()]),
        "d still has gated peers after its denial: {:?}",
        observe::uapi_peers(&d.iface)
    );

    // Nothing from d is decrypted after T + 1 s, and nothing reaches it.
    assert_no_ping(&a.ns, d.tunnel().into());
    assert_no_ping(&b.ns, d.tunnel().into());
    // The sleep is the test: d's pings run one more second, in which no reply may come.
    std::thread::sleep(Duration::from_secs(1));
    for run in from_d {
        let report = run.stop();
        let late = report.replies_after(t + CUTOFF_LIMIT_MS);
        eprintln!(
            "{}: {} sent, {} replies, the last {:?} ms after the decision; no reply to {}",
            report.label,
            report.transmitted,
            report.received,
            report.last_reply_ms().map(|l| l as i64 - t as i64),
            report.lost_ranges()
        );
        assert!(
            report.first_reply_ms().is_some_and(|f| f < failed_at),
            "{}: d's pings never got through before the denial: {report:?}",
            report.label
        );
        assert!(
            late.is_empty(),
            "{}: {} replies came back more than {CUTOFF_LIMIT_MS} ms after d was denied, \
             the first {:?}",
            report.label,
            late.len(),
            late.first()
        );
    }

    // --- Readmission ---
    let passed_at = now_ms();
    mesh.set_score("d", PASSING);
    let limit = Duration::from_secs(timing.interval + timing.epoch + timing.lead + 2);
    let back = mesh.ping("d", "a", limit + Duration::from_secs(3));
    let first = first_time(limit + Duration::from_secs(2), POLL, || {
        !back.replies_so_far().is_empty()
    });
    let report = back.stop();
    let first = first
        .and(report.first_reply_ms())
        .unwrap_or_else(|| panic!("d was not readmitted within {limit:?}: {report:?}"));
    let admission = ctl.admission("d", passed_at);
    eprintln!(
        "d readmitted: first ping reply {} ms after its score passed again (admitting epoch \
         {:?}, decided {:?} ms and active {:?} ms after)",
        first - passed_at,
        admission.as_ref().map(|r| r.epoch),
        admission
            .as_ref()
            .map(|r| r.created_ms as i64 - passed_at as i64),
        admission
            .as_ref()
            .map(|r| r.activation_ms as i64 - passed_at as i64),
    );
    assert!(
        first - passed_at <= u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        "d took {} ms to be readmitted (limit {limit:?})",
        first - passed_at
    );
    assert_eq!(ctl.membership("d"), "ALLOWED");
    assert_eq!(observe::shown_membership(&d.ns, &d.iface), "ALLOWED");
    assert_ping(&d.ns, b.tunnel().into());
    assert_ping(&a.ns, d.tunnel().into());
    assert_ping(&b.ns, d.tunnel().into());

    for run in allowed {
        run.finish().assert_no_loss();
    }
    for mut daemon in daemons {
        daemon.assert_running();
    }
}

#[test]
fn a_denied_node_keeping_its_keys_cannot_handshake() {
    if !require_root("a_denied_node_keeping_its_keys_cannot_handshake") {
        return;
    }
    let timing = Timing::default();
    let mesh = Mesh::new("gating_rogue", timing, &["a", "b", "d"]);
    let (a, b, d) = (mesh.node("a"), mesh.node("b"), mesh.node("d"));
    let ctl = mesh.start_controller();
    let mut daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);

    // Deny d, remembering the last preshared keys it held for a and b.
    let mut last_psks: BTreeMap<String, String> = BTreeMap::new();
    mesh.set_score("d", FAILING);
    let gone = first_time(Duration::from_secs(15), POLL, || {
        let Some(peers) = observe::uapi_peers(&d.iface) else {
            return false;
        };
        for peer in &peers {
            for other in [a, b] {
                if peer.public_key == other.public_key() {
                    if let Some(psk) = &peer.preshared_key_hex {
                        last_psks.insert(other.id.clone(), psk.clone());
                    }
                }
            }
        }
        observe::peers_absent(&a.iface, &[d.public_key()])
            && observe::peers_absent(&b.iface, &[d.public_key()])
            && observe::peers_absent(&d.iface, &[a.public_key(), b.public_key()])
    });
    assert!(gone.is_some(), "d was not cut off within 15 s of failing");
    assert_eq!(ctl.membership("d"), "DENIED");
    assert_eq!(
        last_psks.len(),
        2,
        "d never showed preshared keys for both a and b: {last_psks:?}"
    );

    // The modified d: same private key and port, the old preshared keys, a and b as static
    // peers with keepalives so that it keeps initiating handshakes.
    let gated_d = daemons.pop().expect("d's daemon");
    gated_d.stop_cleanly();
    let mut config = d.interface_config();
    config.interface.name = meshtun_e2e::iface_name("dm");
    for other in [a, b] {
        let psk = PresharedKey::from_hex(&last_psks[&other.id])
            .expect("the UAPI prints preshared keys in hex");
        config.peers.push(Peer {
            public_key: other.public_b64(),
            preshared_key: Some(psk.to_base64()),
            allowed_ips: vec![format!("{}/32", other.tunnel())],
            endpoint: Some(format!("{}:{NODE_PORT}", other.outer())),
            persistent_keepalive: Some(1),
        });
    }
    let rogue = Daemon::start(&d.ns, &config);
    let allowed = mesh.ping_pairs(&["a", "b"], Duration::from_secs(8));
    let probes = [
        PingRun::at_rate(
            &d.ns,
            "ping d' -> a",
            a.tunnel().into(),
            10,
            Duration::from_secs(7),
        ),
        PingRun::at_rate(
            &d.ns,
            "ping d' -> b",
            b.tunnel().into(),
            10,
            Duration::from_secs(7),
        ),
    ];
    for probe in probes {
        let report = probe.finish();
        assert_eq!(
            report.received, 0,
            "{}: the denied node's old keys still carry traffic: {report:?}",
            report.label
        );
    }
    let dump = wg::dump(&d.ns, rogue.name());
    assert_eq!(dump.peers.len(), 2, "{dump:?}");
    for peer in &dump.peers {
        assert_eq!(
            peer.latest_handshake, None,
            "the denied node completed a handshake with its old keys: {peer:?}"
        );
        assert!(
            peer.tx_bytes > 0,
            "the denied node did not even try to handshake: {peer:?}"
        );
    }
    for node in [a, b] {
        let dump = wg::dump(&node.ns, &node.iface);
        assert!(
            !dump.peers.iter().any(|p| p.public_key == d.public_b64()),
            "{} lists d again: {dump:?}",
            node.id
        );
    }
    for run in allowed {
        run.finish().assert_no_loss();
    }
    for mut daemon in daemons {
        daemon.assert_running();
    }
}
