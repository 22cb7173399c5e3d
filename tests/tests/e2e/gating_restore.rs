//! #9: a gated mesh of three whose controller database is restored from a backup (the
//! scenario of `meshtun_e2e::gating::restore`).
//!
//! `a_restored_backup_brings_every_node_back_within_one_epoch_9`: the backup is an online
//! copy of the controller's database (SQLite's `VACUUM INTO`); the restore puts it in place
//! of the database, deleting the write-ahead log, as an operator restoring a backup by hand
//! does. Every node is back within one epoch and no ping is lost. With sequential epoch
//! ids, the restored controller's ids are below what the nodes hold: they get 304 until the
//! counter catches up three epochs later, and drop their gated peers once their last bundle
//! runs out.

use meshtun_e2e::gating::restore::restore_brings_every_node_back;
use meshtun_e2e::require_root;

#[test]
fn a_restored_backup_brings_every_node_back_within_one_epoch_9() {
    if !require_root("a_restored_backup_brings_every_node_back_within_one_epoch_9") {
        return;
    }
    let file = |mesh: &meshtun_e2e::gating::Mesh| mesh.dir().join("controller-backup.db");
    restore_brings_every_node_back(
        "gating_restore",
        |mesh| mesh.home().open_db().backup_to(&file(mesh)),
        |mesh| mesh.home().restore_database(&file(mesh)),
    );
}
