//! The writer against planted links and existing files, the exposure rule, the bounded reader.

use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_written_file_is_owner_only_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    write(&path, b"one", Replace::Atomically).unwrap();
    assert_eq!(mode(&path), 0o600);
    write(&path, b"two", Replace::Atomically).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"two");
    assert_eq!(mode(&path), 0o600);
    assert_eq!(names(dir.path()), ["secret"]);
}

/// An existing file (a key someone already made) is never overwritten by `Replace::Never`.
#[test]
fn never_replace_refuses_an_existing_file_and_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, "theirs").unwrap();
    let err = write(&path, b"ours", Replace::Never).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "theirs");
    assert_eq!(names(dir.path()), ["key"]);
    let fresh = dir.path().join("fresh");
    write(&fresh, b"ours", Replace::Never).unwrap();
    assert_eq!(
        (std::fs::read(&fresh).unwrap(), mode(&fresh)),
        (b"ours".to_vec(), 0o600)
    );
}

/// Whoever may write the directory plants the target as a link to a file of root's: the
/// write replaces the link, and the file it pointed to is untouched.
#[test]
fn a_planted_link_at_the_target_is_replaced_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "root's").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = dir.path().join("state.json");
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    write(&path, b"new", Replace::Atomically).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's");
    assert_eq!(mode(&victim), 0o644);
    assert!(std::fs::symlink_metadata(&path).unwrap().is_file());
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
}

/// Plants links (symbolic and hard, to a file of root's) at the first `count` temporary names
/// of `dir/name`.
fn plant(dir: &Path, name: &str, victim: &Path, count: u32) {
    for n in 0..count {
        let temp = dir.join(temp_name(name.as_ref(), n));
        if n % 2 == 0 {
            std::os::unix::fs::symlink(victim, &temp).unwrap();
        } else {
            std::fs::hard_link(victim, &temp).unwrap();
        }
    }
}

/// Links planted at the temporary names are never written through: the writer takes the
/// next free name, and fails when every name is taken.
#[test]
fn planted_temporary_files_are_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "root's").unwrap();
    let path = dir.path().join("cache");
    plant(dir.path(), "cache", &victim, TEMP_ATTEMPTS - 1);
    write(&path, b"ours", Replace::Atomically).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"ours");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's");

    let full = dir.path().join("full");
    plant(dir.path(), "full", &victim, TEMP_ATTEMPTS);
    let err = write(&full, b"ours", Replace::Atomically).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
    assert!(!full.exists());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root's");
}

#[test]
fn exposure_is_any_group_or_other_bit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, "").unwrap();
    for (bits, exposed) in [
        (0o600, None),
        (0o700, None),
        (0o400, None),
        (0o640, Some(0o640)),
        (0o604, Some(0o604)),
        (0o610, Some(0o610)),
        (0o601, Some(0o601)),
        (0o4600, None),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(exposed_mode(&meta), exposed, "mode {bits:o}");
    }
}

#[test]
fn a_missing_directory_is_created_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a/b");
    create_dir(&deep).unwrap();
    assert_eq!((mode(&dir.path().join("a")), mode(&deep)), (0o700, 0o700));
    // An existing directory is left as it is.
    std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o750)).unwrap();
    create_dir(&deep).unwrap();
    assert_eq!(mode(&deep), 0o750);
}

#[test]
fn reads_are_bounded_and_refuse_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, [b'k'; 100]).unwrap();
    assert_eq!(read_limited(&path, 100).unwrap().unwrap().len(), 100);
    assert!(read_limited(&path, 99).unwrap().is_none());
    let err = read_limited(dir.path(), 100).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn others_who_could_change_a_file_are_named() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, "").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    let me = meta.uid();
    assert_eq!(changeable_by_others(&meta, me), None);
    // Another reader trusts only root and itself.
    let other = if me == 0 {
        None
    } else {
        Some(Changeable::Owner(me))
    };
    assert_eq!(changeable_by_others(&meta, me.wrapping_add(1)), other);
    for bits in [0o664, 0o646, 0o4666] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(bits)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            changeable_by_others(&meta, me),
            Some(Changeable::Writable(bits))
        );
    }
    // A sticky directory (as /tmp) lets others add entries, not change ours.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let meta = std::fs::metadata(dir.path()).unwrap();
    assert_eq!(changeable_by_others(&meta, me), None);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let meta = std::fs::metadata(dir.path()).unwrap();
    assert_eq!(
        changeable_by_others(&meta, me),
        Some(Changeable::Writable(0o777))
    );
}
