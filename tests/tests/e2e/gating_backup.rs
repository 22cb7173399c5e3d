//! Issue 18: a gated mesh of three whose controller is backed up with `meshtun-controller
//! backup` while it runs, then killed, and restored with `meshtun-controller restore` into a
//! fresh database of a controller on the same address and key (see `meshtun_e2e::gating`).
//!
//! `backup_and_restore_commands_bring_every_node_back_within_one_epoch`: once the nodes
//! are in the mesh, the test runs `backup FILE` (the file must come out 0600, headed as a
//! backup holding secrets) and lets three epochs pass, so that the nodes hold an epoch well
//! above the backup's newest. It then kills the controller, deletes its database (and WAL),
//! runs `restore FILE` (which verifies the audit chain) and starts the controller again.
//!
//! Asserted: within one epoch plus its lead and a second of slack from the restart, every
//! node shows an epoch above the one it held and is ALLOWED; pings between every pair, from
//! just before the kill to one epoch past that limit, lose nothing.

use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use meshtun_e2e::gating::observe::{first_time, show_gate};
use meshtun_e2e::gating::{now_ms, Mesh, Timing};
use meshtun_e2e::require_root;

/// How often the nodes are polled.
const POLL: Duration = Duration::from_millis(50);

/// Slack on top of one epoch and its lead.
const SLACK: Duration = Duration::from_secs(1);

/// Epochs let pass between the backup and the restore.
const EPOCHS_BEHIND: u32 = 3;

/// The epoch node `id` shows (`meshtun show --json`), and its membership.
fn shown_epoch(mesh: &Mesh, id: &str) -> (u64, String) {
    let node = mesh.node(id);
    let gate = show_gate(&node.ns, &node.iface);
    let epoch = gate["epoch"].as_u64().unwrap_or(0);
    let membership = gate["membership"].as_str().unwrap_or("").to_owned();
    (epoch, membership)
}

#[test]
fn backup_and_restore_commands_bring_every_node_back_within_one_epoch() {
    if !require_root("backup_and_restore_commands_bring_every_node_back_within_one_epoch") {
        return;
    }
    let timing = Timing::default();
    let ids = ["a", "b", "c"];
    let mesh = Mesh::new("gating_backup", timing, &ids);
    let mut ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);

    // A backup by the command, while the controller runs; then the mesh runs on.
    let backup = mesh.dir().join("controller.backup");
    let path = backup.to_str().expect("a UTF-8 path");
    let said = mesh.home().run_ok(&["backup", path]);
    eprintln!("backup: {said}");
    let mode = std::fs::metadata(&backup)
        .expect("the backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the backup is mode {mode:o}");
    let text = std::fs::read(&backup).expect("the backup");
    let head = String::from_utf8_lossy(&text[..text.len().min(1024)]).into_owned();
    assert!(
        head.starts_with("meshtun-controller backup v1\nbackend: sqlite\n")
            && head.contains("SECRET: this file holds the controller's epoch secrets"),
        "{head}"
    );
    let refused = mesh.home().run(&["backup", path]);
    assert!(
        !refused.status.success(),
        "a second backup replaced the first"
    );
    assert_eq!(std::fs::read(&backup).expect("the backup"), text);
    // The sleep is the test: the mesh moves EPOCHS_BEHIND epochs past the backup.
    std::thread::sleep(timing.epoch_len() * EPOCHS_BEHIND);
    let held: Vec<u64> = ids.iter().map(|id| shown_epoch(&mesh, id).0).collect();
    let issued = mesh
        .home()
        .open_db()
        .epochs()
        .iter()
        .map(|e| e.id)
        .max()
        .expect("an epoch");

    // Restore: stop, replace the database, start; pinging all along, until an epoch after
    // the limit (when nodes on their last bundle would have dropped their peers long ago).
    let limit = timing.epoch_len() + Duration::from_secs(timing.lead) + SLACK;
    let pings = mesh.ping_pairs(&ids, limit + timing.epoch_len() + Duration::from_secs(3));
    ctl.kill();
    // A fresh database: the old one and its WAL are gone.
    let db = mesh.home().database();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(&name);
    }
    let said = mesh.home().run_ok(&["restore", path]);
    eprintln!("restore: {said}");
    assert!(said.contains("audit log verified"), "{said}");
    let in_backup = mesh
        .home()
        .open_db()
        .epochs()
        .iter()
        .map(|e| e.id)
        .max()
        .expect("the backup holds an epoch");
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

    for (id, held) in ids.iter().zip(&held) {
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
