//! Controller high availability: the leader (ctl-0, which every node uses: its first URL)
//! is cut off from PostgreSQL by nftables in its own namespace, 1.5 s before its next
//! publication is due, while it still reaches the nodes. It publishes nothing after its
//! lease (the database records each epoch's writer); ctl-1 takes over and publishes; the
//! nodes move to ctl-1 and lose no ping between them. The cut-off instance, asked for a
//! bundle after ctl-1 published a newer epoch, must not hand out its stale one as current:
//! it answers 503 or not at all.

use std::time::Duration;

use meshtun_e2e::gating::ha::{takeover_bound, HA_TIMING, LEASE, TWO_INSTANCES};
use meshtun_e2e::gating::observe::{first_time, show_gate};
use meshtun_e2e::gating::{now_ms, Mesh};
use meshtun_e2e::require_root;

const NODES: [&str; 3] = ["a", "b", "c"];

/// Drops every packet between `ns` and the database's address, both ways.
fn cut_off_database(mesh: &Mesh, ns: &meshtun_e2e::Netns) {
    let db = format!("192.0.2.{}", meshtun_e2e::gating::ha::DATABASE_HOST);
    let rules = format!(
        "table inet e2e_cut {{\n chain out {{ type filter hook output priority 0; ip daddr {db} drop; }}\n \
         chain in {{ type filter hook input priority 0; ip saddr {db} drop; }}\n}}\n"
    );
    let file = mesh.dir().join("cut.nft");
    std::fs::write(&file, rules).expect("cannot write the nftables rules");
    ns.ok(&["nft", "-f", &file.to_string_lossy()]);
}

/// The controller URL node `id` uses, as `meshtun show` reports it.
fn url_in_use(mesh: &Mesh, id: &str) -> String {
    let node = mesh.node(id);
    show_gate(&node.ns, &node.iface)["controller_url"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_leader_cut_off_from_the_database_stops_publishing_and_its_nodes_move() {
    if !require_root("a_leader_cut_off_from_the_database_stops_publishing_and_its_nodes_move") {
        return;
    }
    let mesh = Mesh::with_backend("ha_cut", HA_TIMING, &NODES, TWO_INSTANCES);
    let db = mesh.database();
    let ctls = mesh.start_cluster();
    let daemons = mesh.start_nodes();
    let newest = mesh.admit_all(&ctls[0], &daemons);
    let (url0, url1) = (mesh.instance(0).url(), mesh.instance(1).url());
    for id in NODES {
        assert_eq!(url_in_use(&mesh, id), url0, "node {id} does not use ctl-0");
    }
    let pings = mesh.ping_pairs(&NODES, HA_TIMING.epoch_len() * 4);
    let mut due = mesh.next_publication_due();
    if due < now_ms() + 2000 {
        due += HA_TIMING.epoch * 1000;
    }
    std::thread::sleep(Duration::from_millis((due - 1500).saturating_sub(now_ms())));
    let cut_ms = now_ms();
    cut_off_database(&mesh, &mesh.instance(0).ns);
    let by_other = first_time(
        takeover_bound(LEASE) + HA_TIMING.epoch_len(),
        Duration::from_millis(50),
        || {
            db.publications()
                .iter()
                .any(|p| p.instance == "ctl-1" && p.at_ms > cut_ms)
        },
    )
    .unwrap_or_else(|| {
        panic!(
            "ctl-1 published nothing after the cut; lease {:?}",
            db.lease()
        )
    });
    let moved = first_time(
        Duration::from_secs(HA_TIMING.long_poll * 3),
        Duration::from_millis(100),
        || NODES.iter().all(|id| url_in_use(&mesh, id) == url1),
    );
    // The cut-off instance, asked for node a's bundle from a's namespace.
    let node = mesh.node("a");
    let answer = node.ns.enter(|| {
        let client = mesh.instance(0).home.client();
        client.bundle(&node.keys, None)
    });
    let reports: Vec<_> = pings.into_iter().map(|r| r.finish()).collect();
    let late: Vec<_> = db
        .publications()
        .into_iter()
        .filter(|p| p.instance == "ctl-0" && p.at_ms > cut_ms + LEASE * 1000)
        .collect();
    assert!(
        late.is_empty(),
        "ctl-0 published after its lease, cut off from the database: {late:?}"
    );
    let newest_now = db.epochs().iter().map(|e| e.id).max().unwrap_or(newest);
    match &answer {
        Ok(reply) => assert!(
            reply.status == 503,
            "the cut-off ctl-0 answered a bundle request {} ({} bytes) after ctl-1 published \
             epoch {newest_now}: it cannot confirm that its bundle is the newest",
            reply.status,
            reply.body.len()
        ),
        Err(e) => eprintln!("the cut-off ctl-0 did not answer: {e}"),
    }
    let moved = moved.unwrap_or_else(|| {
        let urls: Vec<_> = NODES.iter().map(|id| url_in_use(&mesh, id)).collect();
        panic!("the nodes did not all move to ctl-1 within 3 long-polls: {urls:?}")
    });
    for report in &reports {
        report.assert_no_loss();
    }
    // Reconnected, ctl-0 stops at once on SIGTERM (cut off, it waits for the database).
    mesh.instance(0)
        .ns
        .ok(&["nft", "delete", "table", "inet", "e2e_cut"]);
    eprintln!(
        "ha partition: ctl-0 cut off {} ms before its publication was due; ctl-1 published \
         {} ms after the cut; every node on ctl-1 {} ms after the cut; 0 pings lost; the \
         cut-off ctl-0 answered a bundle request with {:?}",
        due - cut_ms,
        by_other - cut_ms,
        moved - cut_ms,
        answer
            .as_ref()
            .map(|r| r.status)
            .map_err(ToString::to_string)
    );
}
