//! Whether root may act on a configuration file: only on one that no less privileged user can
//! change, as sshd's `StrictModes` and sudo's sudoers checks have it. A configuration holds
//! commands (hooks, the benchmark command), DNS servers and routes; a file the daemon's own
//! user can write would otherwise let that user make root run anything.

use std::path::Path;

use meshtun_proto::private_file::{self, Changeable};

/// Why `path` must not be trusted by root: a file or directory on its way that a user other
/// than root owns, or that group or others may write (a sticky directory aside). `None` when
/// the current user is not root (it then acts with its own rights only), or the file is safe.
pub fn untrusted_for_root(path: &Path) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let absolute = match std::fs::canonicalize(path) {
        Ok(absolute) => absolute,
        // What cannot be inspected cannot be trusted.
        Err(e) => return Some(format!("{} cannot be inspected: {e}", path.display())),
    };
    absolute.ancestors().find_map(unsafe_entry)
}

/// The reason `entry` (the file itself, or a directory above it) is not safe for root, if
/// it is not.
fn unsafe_entry(entry: &Path) -> Option<String> {
    let meta = match std::fs::metadata(entry) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("{} cannot be inspected: {e}", entry.display())),
    };
    // Root trusts root alone.
    match private_file::changeable_by_others(&meta, 0)? {
        Changeable::Owner(uid) => Some(format!(
            "{} is owned by uid {uid}, not root",
            entry.display()
        )),
        Changeable::Writable(mode) => Some(format!(
            "{} is mode {mode:04o}: group or others may write it",
            entry.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn root_trusts_only_files_no_one_else_can_change() {
        if !nix::unistd::geteuid().is_root() {
            assert!(untrusted_for_root(Path::new("/nonexistent")).is_none());
            return;
        }
        // Under /tmp (sticky, mode 1777): only the file and its own directory decide.
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        let file = dir.path().join("wg0.toml");
        std::fs::write(&file, "").unwrap();
        set_mode(&file, 0o640);
        assert_eq!(untrusted_for_root(&file), None);

        set_mode(&file, 0o660);
        let why = untrusted_for_root(&file).unwrap();
        assert!(why.contains("mode 0660"), "{why}");
        set_mode(&file, 0o600);

        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let why = untrusted_for_root(&file).unwrap();
        assert!(why.contains("uid 65534, not root"), "{why}");
        std::os::unix::fs::chown(&file, Some(0), None).unwrap();

        // A directory the user owns lets it swap the file.
        std::os::unix::fs::chown(dir.path(), Some(65534), None).unwrap();
        let why = untrusted_for_root(&file).unwrap();
        assert!(why.contains(&dir.path().display().to_string()), "{why}");
    }
}
