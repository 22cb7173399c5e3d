//! Which network namespace a process is in, and the state directory of each namespace.
//!
//! Interface names are per network namespace, so two daemons for `wg0` may run at once in two
//! namespaces. Their state and pid files must not collide: the initial namespace (pid 1's)
//! keeps the state directory itself, as before, and any other namespace gets a
//! subdirectory `netns-INODE` of it, named after the inode that `ls -l /proc/PID/ns/net`
//! shows as `net:[INODE]`. The namespace is also recorded in each state file, so a file
//! that reached another namespace's directory (copied, planted, or left by a dead namespace
//! whose inode was reused) is never undone there.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The prefix of a namespace's subdirectory of the state directory.
const SUBDIR_PREFIX: &str = "netns-";

/// A network namespace, by the device and inode of its `/proc/PID/ns/net` file (unique
/// while the namespace exists, and soon reused after), and the namespace's cookie where
/// known (unique until reboot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetnsId {
    /// The device of the namespace file system.
    pub dev: u64,
    /// The inode, as in `net:[INODE]`.
    pub ino: u64,
    /// `SO_NETNS_COOKIE` (Linux 5.14): tells a namespace from an earlier one that had the
    /// same inode. Known for the calling thread's namespace only.
    #[serde(default)]
    pub cookie: Option<u64>,
}

impl fmt::Display for NetnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}]", self.ino)
    }
}

impl NetnsId {
    /// The namespace of the calling thread (where its sockets and netlink requests go,
    /// also after a `setns` of that thread alone); `None` without `/proc` (macOS), where
    /// there are no network namespaces.
    pub fn current() -> Option<NetnsId> {
        let id = Self::at(Path::new("/proc/thread-self/ns/net"))
            .or_else(|| Self::at(Path::new("/proc/self/ns/net")))?;
        Some(NetnsId {
            cookie: current_cookie(),
            ..id
        })
    }

    /// Whether `self` and `other` are one namespace: the same inode, and the same cookie
    /// when both know theirs.
    pub fn same(&self, other: &NetnsId) -> bool {
        let cookies_agree = match (self.cookie, other.cookie) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        self.dev == other.dev && self.ino == other.ino && cookies_agree
    }

    /// The namespace of process `pid`; `None` if it is gone or may not be inspected.
    pub fn of(pid: u32) -> Option<NetnsId> {
        Self::at(&Path::new("/proc").join(pid.to_string()).join("ns/net"))
    }

    fn at(path: &Path) -> Option<NetnsId> {
        let meta = std::fs::metadata(path).ok()?;
        Some(NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
            cookie: None,
        })
    }
}

/// The cookie of the calling thread's network namespace, from a socket opened there.
#[cfg(target_os = "linux")]
fn current_cookie() -> Option<u64> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    // Unbound: a fresh namespace may have no address at all yet.
    let socket = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid socket fd, and a pointer to a u64 (the option's type) with its length,
    // both outliving the call.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            std::ptr::addr_of_mut!(cookie).cast(),
            &mut len,
        )
    };
    (rc == 0 && len as usize == std::mem::size_of::<u64>()).then_some(cookie)
}

#[cfg(not(target_os = "linux"))]
fn current_cookie() -> Option<u64> {
    None
}

/// Whether process `pid` is in the calling thread's network namespace: `true` where there are no
/// namespaces, `false` when its namespace cannot be told (the safe answer for a caller about
/// to signal it).
pub fn same_as_current(pid: u32) -> bool {
    match NetnsId::current() {
        None => true,
        Some(ours) => NetnsId::of(pid).is_some_and(|theirs| theirs.same(&ours)),
    }
}

/// The state directory of this process's network namespace under `base`: `base` itself in
/// the initial namespace, where there are no namespaces, or when the initial namespace
/// cannot be told (not root: as before); else `base/netns-INODE`. Call it once, before
/// dropping privileges.
pub fn state_dir(base: &Path) -> PathBuf {
    match (NetnsId::current(), initial()) {
        (Some(ours), Some(initial)) if !ours.same(&initial) => subdir(base, ours),
        _ => base.to_owned(),
    }
}

/// The initial network namespace: pid 1's (a container's own, in a container), or, where
/// pid 1 may not be inspected (some sandboxes deny it even to root), that of the kernel
/// threads: pid 2 when it is `kthreadd`, whose parent is 0. `None` when neither can be read
/// (not root).
fn initial() -> Option<NetnsId> {
    NetnsId::of(1).or_else(|| {
        let stat = std::fs::read_to_string("/proc/2/stat").ok()?;
        let kthreadd = stat.starts_with("2 (kthreadd) ") && parent_pid(&stat)? == 0;
        kthreadd.then(|| NetnsId::of(2)).flatten()
    })
}

/// Field 4 of a `/proc/PID/stat` text: the parent's pid.
fn parent_pid(stat: &str) -> Option<u32> {
    // The command name (field 2) is in parentheses and may contain spaces or ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// Fails if `dir`, a namespace's subdirectory of the state directory, exists as anything
/// but a directory: whoever owns the state directory (the daemon's user, under systemd)
/// could otherwise point it, as a symbolic link, at a directory where root's `down` would
/// then remove and write files.
pub fn check_subdir(dir: &Path) -> std::io::Result<()> {
    if !is_subdir(dir) {
        return Ok(());
    }
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a directory (a symbolic link?): refusing to use it as this network \
             namespace's state directory",
        )),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `base/netns-INODE`.
pub fn subdir(base: &Path, netns: NetnsId) -> PathBuf {
    base.join(format!("{SUBDIR_PREFIX}{}", netns.ino))
}

/// True when `dir` is named like a namespace's subdirectory.
fn is_subdir(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|name| name.to_str())
        .is_some_and(|name| name.starts_with(SUBDIR_PREFIX))
}

/// Removes `dir`, the state directory [`state_dir`] chose under `base`, if it is an empty
/// namespace subdirectory (the last daemon of that namespace stopped), so they do not pile
/// up; `base` itself always stays.
pub fn remove_if_empty(base: &Path, dir: &Path) {
    if dir.parent() == Some(base) && is_subdir(dir) {
        // Fails, harmlessly, while another interface of the namespace has files there.
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_and_its_pid_are_in_the_same_namespace() {
        let ours = NetnsId::current().expect("/proc/self/ns/net is readable");
        assert!(ours.cookie.is_some(), "no SO_NETNS_COOKIE");
        assert!(NetnsId::of(std::process::id()).is_some_and(|id| id.same(&ours)));
        let reused = NetnsId {
            cookie: ours.cookie.map(|c| c + 1),
            ..ours
        };
        assert!(
            !reused.same(&ours),
            "a reused inode counts as the same namespace"
        );
        assert!(same_as_current(std::process::id()));
        assert!(
            !same_as_current(u32::MAX),
            "an unknown process counts as elsewhere"
        );
        assert_eq!(ours.to_string(), format!("net:[{}]", ours.ino));
    }

    #[test]
    fn a_namespace_subdirectory_that_is_a_link_is_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("netns-7");
        check_subdir(&dir).expect("a missing subdirectory is fine");
        std::os::unix::fs::symlink(base.path(), &dir).unwrap();
        let err = check_subdir(&dir).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        std::fs::remove_file(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        check_subdir(&dir).expect("a directory is fine");
    }

    #[test]
    fn the_parent_pid_is_read_after_the_command_name() {
        assert_eq!(parent_pid("2 (kthreadd) S 0 0 0 0 -1"), Some(0));
        assert_eq!(parent_pid("77 (a) b) S 1 77 77"), Some(1));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn a_namespace_subdirectory_is_named_after_the_inode_and_removed_only_when_empty() {
        let base = tempfile::tempdir().unwrap();
        let id = NetnsId {
            dev: 4,
            ino: 4026532281,
            cookie: None,
        };
        let dir = subdir(base.path(), id);
        assert_eq!(dir, base.path().join("netns-4026532281"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("wg1.json"), "{}").unwrap();
        remove_if_empty(base.path(), &dir);
        assert!(dir.exists(), "a subdirectory with files was removed");
        std::fs::remove_file(dir.join("wg1.json")).unwrap();
        remove_if_empty(base.path(), &dir);
        assert!(!dir.exists());
        let named_like_one = base.path().join("netns-1");
        std::fs::create_dir(&named_like_one).unwrap();
        remove_if_empty(&named_like_one, &named_like_one);
        assert!(named_like_one.exists(), "a base directory was removed");
    }
}
