//! A controller brought back from a backup while its mesh runs: the scenario the backup
//! tests share. Once the nodes are in the mesh, `backup` takes a backup and the mesh runs
//! [`EPOCHS_BEHIND`] epochs past it; then the controller is killed, `restore` puts the backup
//! in place of its database, and it starts again.
//!
//! Asserted: the nodes held epochs above the backup's newest; within one epoch plus its lead
//! and a second of slack from the restart, every node shows an epoch above the one it held
//! and is ALLOWED; pings between every pair, from just before the kill to one epoch past that
//! limit, lose nothing; every daemon still runs.

use std::time::Duration;

use super::observe::{first_time, show_gate};
use super::{now_ms, Mesh, Timing};

/// How often the nodes are polled.
const POLL: Duration = Duration::from_millis(50);

/// Slack on top of one epoch and its lead.
const SLACK: Duration = Duration::from_secs(1);

/// Epochs let pass between the backup and the restore.
pub const EPOCHS_BEHIND: u32 = 3;

/// The nodes of the scenario.
const IDS: [&str; 3] = ["a", "b", "c"];

/// The epoch node `id` shows (`meshtun show --json`), and its membership.
fn shown_epoch(mesh: &Mesh, id: &str) -> (u64, String) {
    let node = mesh.node(id);
    let gate = show_gate(&node.ns, &node.iface);
    let epoch = gate["epoch"].as_u64().unwrap_or(0);
    let membership = gate["membership"].as_str().unwrap_or("").to_owned();
    (epoch, membership)
}

/// Runs the scenario on a mesh of three named `name` (the default [`Timing`]): `backup` is
/// called with the controller running, `restore` with it killed.
pub fn restore_brings_every_node_back(
    name: &str,
    backup: impl FnOnce(&Mesh),
    restore: impl FnOnce(&Mesh),
) {
    let timing = Timing::default();
    let mesh = Mesh::new(name, timing, &IDS);
    let mut ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);

    backup(&mesh);
    // The sleep is the test: the mesh moves EPOCHS_BEHIND epochs past the backup.
    std::thread::sleep(timing.epoch_len() * EPOCHS_BEHIND);
    let held: Vec<u64> = IDS.iter().map(|id| shown_epoch(&mesh, id).0).collect();
    let issued = newest_epoch(&mesh);

    // Restore: stop, replace the database, start; pinging all along, until an epoch after
    // the limit (when nodes on their last bundle would have dropped their peers long ago).
    let limit = timing.epoch_len() + Duration::from_secs(timing.lead) + SLACK;
    let pings = mesh.ping_pairs(&IDS, limit + timing.epoch_len() + Duration::from_secs(3));
    ctl.kill();
    restore(&mesh);
    let in_backup = newest_epoch(&mesh);
    assert!(
        held.iter().all(|h| *h > in_backup),
        "the nodes hold epochs {held:?}, not above the backup's newest {in_backup}"
    );
    ctl.restart();
    let restarted_at = now_ms();
    eprintln!(
        "restored a backup whose newest epoch is {in_backup}; the nodes held {held:?}, the \
         original controller had issued up to {issued}"
    );

    for (id, held) in IDS.iter().zip(&held) {
        let left = Duration::from_millis(
            (restarted_at + limit.as_millis() as u64).saturating_sub(now_ms()),
        );
        let back = first_time(left, POLL, || {
            let (epoch, membership) = shown_epoch(&mesh, id);
            epoch > *held && membership == "ALLOWED"
        });
        let shown = shown_epoch(&mesh, id);
        let at = back.unwrap_or_else(|| {
            panic!(
                "{id} still shows epoch {} ({}) {} ms after the restored controller started \
                 (limit {limit:?}); it held epoch {held} before the restore",
                shown.0,
                shown.1,
                now_ms() - restarted_at
            )
        });
        eprintln!(
            "{id}: epoch {} ALLOWED {} ms after the restart (held {held})",
            shown.0,
            at - restarted_at
        );
    }
    // No ping was lost across the restore, and they went on to an epoch past the limit.
    for run in pings {
        let report = run.finish();
        eprintln!(
            "{}: {} sent, {} received, last reply {} ms after the restart",
            report.label,
            report.transmitted,
            report.received,
            report.last_reply_ms().unwrap_or(0) as i64 - restarted_at as i64
        );
        report.assert_no_loss();
        let covered = restarted_at + (limit + timing.epoch_len()).as_millis() as u64;
        assert!(
            report.last_reply_ms().is_some_and(|last| last >= covered),
            "{}: the pings ended before an epoch past the limit",
            report.label
        );
    }
    for mut daemon in daemons {
        daemon.assert_running();
    }
}

/// The newest epoch in the controller's database.
fn newest_epoch(mesh: &Mesh) -> u64 {
    mesh.home()
        .open_db()
        .epochs()
        .iter()
        .map(|e| e.id)
        .max()
        .expect("the database holds an epoch")
}
