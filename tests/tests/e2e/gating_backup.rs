//! Issue 18: a gated mesh of three whose controller is backed up with `meshtun-controller
//! backup` while it runs, then killed, and restored with `meshtun-controller restore` into a
//! fresh database of a controller on the same address and key (the scenario of
//! `meshtun_e2e::gating::restore`).
//!
//! `backup_and_restore_commands_bring_every_node_back_within_one_epoch`: the backup file
//! must come out 0600, headed as a backup holding secrets, and a second backup to the same
//! file is refused without touching it. The restore deletes the database (and WAL) and runs
//! `restore FILE`, which verifies the audit chain. Every node is back within one epoch and
//! no ping is lost.

use std::os::unix::fs::PermissionsExt as _;

use meshtun_e2e::gating::restore::restore_brings_every_node_back;
use meshtun_e2e::gating::Mesh;
use meshtun_e2e::require_root;

/// The backup file, as a path the commands take.
fn backup_file(mesh: &Mesh) -> String {
    let file = mesh.dir().join("controller.backup");
    file.to_str().expect("a UTF-8 path").to_owned()
}

/// `backup FILE` with the controller running: a 0600 file, headed as holding secrets, that
/// a second backup does not replace.
fn backup(mesh: &Mesh) {
    let path = backup_file(mesh);
    let said = mesh.home().run_ok(&["backup", &path]);
    eprintln!("backup: {said}");
    let mode = std::fs::metadata(&path)
        .expect("the backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the backup is mode {mode:o}");
    let text = std::fs::read(&path).expect("the backup");
    let head = String::from_utf8_lossy(&text[..text.len().min(1024)]).into_owned();
    assert!(
        head.starts_with("meshtun-controller backup v1\nbackend: sqlite\n")
            && head.contains("SECRET: this file holds the controller's epoch secrets"),
        "{head}"
    );
    let refused = mesh.home().run(&["backup", &path]);
    assert!(
        !refused.status.success(),
        "a second backup replaced the first"
    );
    assert_eq!(std::fs::read(&path).expect("the backup"), text);
}

/// A fresh database (the old one and its WAL deleted), then `restore FILE`.
fn restore(mesh: &Mesh) {
    let db = mesh.home().database();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(&name);
    }
    let said = mesh.home().run_ok(&["restore", &backup_file(mesh)]);
    eprintln!("restore: {said}");
    assert!(said.contains("audit log verified"), "{said}");
}

#[test]
fn backup_and_restore_commands_bring_every_node_back_within_one_epoch() {
    if !require_root("backup_and_restore_commands_bring_every_node_back_within_one_epoch") {
        return;
    }
    restore_brings_every_node_back("gating_backup", backup, restore);
}
