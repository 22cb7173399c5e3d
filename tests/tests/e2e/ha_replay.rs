//! Controller high availability: a signed node request accepted by one instance and
//! replayed, byte for byte, to the other is refused there (the instances share the replay
//! nonces in PostgreSQL), both ways; a replay to the same instance is refused too. Then
//! each instance stops cleanly on SIGTERM.

use meshtun_e2e::controller::Reply;
use meshtun_e2e::gating::ha::{HA_TIMING, TWO_INSTANCES};
use meshtun_e2e::gating::Mesh;
use meshtun_e2e::require_root;

/// Sends `GET /v1/config/a` signed once by node a, first to instance `first`, then the
/// same signature to `first` again and to `other`, from node a's namespace; the three
/// answers.
fn send_and_replay(mesh: &Mesh, first: usize, other: usize) -> [Reply; 3] {
    let node = mesh.node("a");
    let path = "/v1/config/a";
    node.ns.enter(|| {
        let (to_first, to_other) = (
            mesh.instance(first).home.client(),
            mesh.instance(other).home.client(),
        );
        let sig = to_first.sign(&node.keys, "GET", path, &[]);
        let send = |client: &meshtun_e2e::controller::Client| {
            client
                .send_signed(&sig, "GET", path, Vec::new())
                .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        };
        [send(&to_first), send(&to_first), send(&to_other)]
    })
}

#[test]
fn a_signed_request_replayed_to_the_other_instance_is_refused() {
    if !require_root("a_signed_request_replayed_to_the_other_instance_is_refused") {
        return;
    }
    let mesh = Mesh::with_backend("ha_replay", HA_TIMING, &["a"], TWO_INSTANCES);
    let mut ctls: Vec<_> = (0..2).map(|i| mesh.start_instance(i)).collect();
    for (first, other) in [(0, 1), (1, 0)] {
        let [accepted, again, replayed] = send_and_replay(&mesh, first, other);
        assert_eq!(
            accepted.status,
            200,
            "ctl-{first} refused a fresh signed request: {}",
            accepted.text()
        );
        assert_eq!(
            again.status,
            401,
            "ctl-{first} did not refuse the replay of a request it accepted: {}",
            again.text()
        );
        assert_eq!(
            replayed.status,
            401,
            "ctl-{other} did not refuse a request accepted by ctl-{first} and replayed to it \
             ({}): {}",
            replayed.status,
            replayed.text()
        );
    }
    for ctl in &mut ctls {
        let log = ctl.log();
        let status = ctl.terminate();
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly on SIGTERM ({status:?}); its log:\n{log}{}",
            ctl.name(),
            ctl.log()
        );
    }
}
