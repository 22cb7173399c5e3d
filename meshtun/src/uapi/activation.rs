//! Socket activation: a UAPI socket created by the service manager and passed to the daemon
//! (the `sd_listen_fds(3)` protocol: `LISTEN_PID`, `LISTEN_FDS`, `LISTEN_FDNAMES`).
//!
//! Under systemd, `meshtun@.socket` binds `/run/wireguard/IF.sock` as root (mode 0600) in a
//! root-owned directory, and the daemon, running as its own user, only accepts on it: a
//! compromised daemon cannot create or replace a socket in that directory, where root's `wg`
//! and `wg-quick` look for every interface. The daemon checks that what it was given is a
//! listening Unix stream socket bound to its own interface's path and refuses anything else,
//! and it never removes that file (systemd does, when the socket unit stops).

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, SockaddrLike, SockaddrStorage};

use super::error::UapiError;
use super::socket::{check_ifname, socket_path_in, SocketFile, UapiSocket};

/// The descriptors the service manager passed, taken from the environment.
#[derive(Debug)]
pub struct Inherited {
    /// Each descriptor with its name, or why the variables could not be read.
    fds: Result<Vec<(OwnedFd, String)>, String>,
}

impl Inherited {
    /// Descriptors passed some other way (tests), each with its name.
    pub fn from_fds(fds: Vec<(OwnedFd, String)>) -> Self {
        Self { fds: Ok(fds) }
    }
}

/// Takes the sockets the service manager passed to this process, if any, and unsets
/// `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` so that hooks do not inherit them. The
/// descriptors are made close-on-exec. Variables meant for another process (a different
/// `LISTEN_PID`) give `None`.
///
/// # Safety
///
/// Changes the environment: call it before any other thread exists (before the async
/// runtime is built), as [`std::env::remove_var`] requires.
pub unsafe fn take_listen_fds() -> Option<Inherited> {
    // SAFETY: the caller guarantees that no other thread reads or writes the environment.
    let taken = unsafe { sd_notify::listen_fds_with_names_and_unset_env() };
    let fds = match taken {
        Ok(fds) => fds
            // SAFETY: the service manager handed these descriptors to this process, which
            // has not used them yet; each is owned here and nowhere else.
            .map(|(fd, name)| (unsafe { OwnedFd::from_raw_fd(fd) }, name))
            .collect::<Vec<_>>(),
        Err(err) => {
            return Some(Inherited {
                fds: Err(err.to_string()),
            })
        }
    };
    (!fds.is_empty()).then_some(Inherited { fds: Ok(fds) })
}

/// Makes the passed socket the UAPI socket of `ifname`, whose path is `dir/IFNAME.sock`.
///
/// Refuses, saying why, anything but exactly one listening Unix stream socket bound to that
/// path (the same file name in the same directory, symbolic links resolved) whose file still
/// exists. The file is left in place when the socket is closed.
pub fn adopt_in(inherited: Inherited, dir: &Path, ifname: &str) -> Result<UapiSocket, UapiError> {
    check_ifname(ifname)?;
    let expected = socket_path_in(dir, ifname);
    let refuse = |passed: String, reason: String| UapiError::Activation {
        passed,
        ifname: ifname.to_owned(),
        reason,
        expected: expected.clone(),
    };
    let fds = inherited
        .fds
        .map_err(|reason| refuse("unreadable".to_owned(), reason))?;
    let count = fds.len();
    let mut fds = fds.into_iter();
    let (fd, name) = match (fds.next(), fds.next()) {
        (Some(one), None) => one,
        _ => {
            let reason = format!("meshtun takes exactly one socket, {count} were passed");
            return Err(refuse(format!("{count} descriptors"), reason));
        }
    };
    let passed = format!("fd {} named {name:?}", fd.as_raw_fd());
    let bound = listening_unix_stream(&fd).map_err(|r| refuse(passed.clone(), r))?;
    same_socket_path(&bound, &expected).map_err(|r| refuse(passed.clone(), r))?;
    let listener = UnixListener::from(fd);
    listener
        .set_nonblocking(true)
        .map_err(|e| refuse(passed, format!("cannot make it non-blocking: {e}")))?;
    tracing::info!(path = %expected.display(), "serving the UAPI on the socket passed by the service manager");
    Ok(UapiSocket::new(
        listener,
        SocketFile::inherited(expected),
        ifname,
    ))
}

/// The path `fd` is bound to, if it is a listening Unix stream socket; otherwise what it is.
fn listening_unix_stream(fd: &OwnedFd) -> Result<PathBuf, String> {
    let kind = getsockopt(fd, sockopt::SockType)
        .map_err(|e| format!("it is not a socket of a known type ({e})"))?;
    let addr: SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(|e| format!("cannot read its address: {e}"))?;
    let Some(unix) = addr.as_unix_addr() else {
        let family = addr
            .family()
            .map_or_else(|| "unknown".to_owned(), |f| format!("{f:?}"));
        return Err(format!(
            "it is not a Unix socket but a {family} one bound to {addr}"
        ));
    };
    if kind != SockType::Stream {
        return Err(format!("it is a {kind:?} Unix socket, not a stream one"));
    }
    let listening = getsockopt(fd, sockopt::AcceptConn)
        .map_err(|e| format!("cannot tell whether it listens: {e}"))?;
    if !listening {
        return Err("it does not listen".to_owned());
    }
    unix.path()
        .map(Path::to_owned)
        .ok_or_else(|| "it is not bound to a path (unnamed or abstract)".to_owned())
}

/// Whether `bound` names the file `expected` (the same name in the same directory once
/// symbolic links such as `/var/run` are resolved), and that file is still a socket.
fn same_socket_path(bound: &Path, expected: &Path) -> Result<(), String> {
    let canonical_dir = |path: &Path| path.parent().and_then(|dir| fs::canonicalize(dir).ok());
    let same = bound.file_name() == expected.file_name()
        && canonical_dir(bound).is_some()
        && canonical_dir(bound) == canonical_dir(expected);
    if !same {
        return Err(format!("it is bound to {}", bound.display()));
    }
    match fs::symlink_metadata(expected) {
        Ok(meta) if meta.file_type().is_socket() => Ok(()),
        Ok(_) => Err(format!("{} is not a socket", expected.display())),
        Err(err) => Err(format!(
            "{} cannot be inspected ({err}), so `wg` could not reach the daemon",
            expected.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::os::unix::net::{UnixDatagram, UnixStream};

    use super::*;

    fn passed(fd: impl Into<OwnedFd>) -> Inherited {
        Inherited::from_fds(vec![(fd.into(), "meshtun@wgact0.socket".to_owned())])
    }

    fn refusal(inherited: Inherited, dir: &Path, ifname: &str) -> String {
        let err = adopt_in(inherited, dir, ifname).unwrap_err();
        assert!(matches!(err, UapiError::Activation { .. }), "{err}");
        err.to_string()
    }

    #[test]
    fn adopts_its_own_listening_socket_and_never_removes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let path = socket_path_in(tmp.path(), "wgact0");
        let listener = UnixListener::bind(&path).unwrap();
        let socket = adopt_in(passed(listener), tmp.path(), "wgact0").unwrap();
        assert_eq!(socket.path(), path);
        UnixStream::connect(&path).unwrap();
        drop(socket);
        assert!(
            path.exists(),
            "the service manager's socket file was removed"
        );
    }

    #[test]
    fn refuses_a_tcp_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = refusal(passed(tcp), tmp.path(), "wgact1");
        assert!(
            err.contains("not a Unix socket") && err.contains("127.0.0.1"),
            "{err}"
        );
        assert!(err.contains("wgact1.sock"), "{err}");
    }

    #[test]
    fn refuses_a_socket_of_another_interface() {
        let tmp = tempfile::tempdir().unwrap();
        let other = socket_path_in(tmp.path(), "wgother");
        let listener = UnixListener::bind(&other).unwrap();
        let err = refusal(passed(listener), tmp.path(), "wgact2");
        assert!(
            err.contains("bound to") && err.contains("wgother.sock"),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_socket_in_another_directory() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let listener = UnixListener::bind(socket_path_in(a.path(), "wgact3")).unwrap();
        let err = refusal(passed(listener), b.path(), "wgact3");
        assert!(err.contains("bound to"), "{err}");
    }

    #[test]
    fn refuses_a_datagram_or_unbound_or_non_listening_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = socket_path_in(tmp.path(), "wgact4");
        let datagram = UnixDatagram::bind(&path).unwrap();
        let err = refusal(passed(datagram), tmp.path(), "wgact4");
        assert!(err.contains("Datagram"), "{err}");
        let (a, _b) = UnixStream::pair().unwrap();
        let err = refusal(passed(a), tmp.path(), "wgact4");
        assert!(err.contains("does not listen"), "{err}");
        let file = fs::File::open("/dev/null").unwrap();
        let err = refusal(passed(file), tmp.path(), "wgact4");
        assert!(err.contains("not a socket"), "{err}");
    }

    #[test]
    fn refuses_a_socket_whose_file_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = socket_path_in(tmp.path(), "wgact5");
        let listener = UnixListener::bind(&path).unwrap();
        fs::remove_file(&path).unwrap();
        let err = refusal(passed(listener), tmp.path(), "wgact5");
        assert!(err.contains("could not reach"), "{err}");
    }

    #[test]
    fn refuses_more_than_one_socket_and_unreadable_variables() {
        let tmp = tempfile::tempdir().unwrap();
        let a = UnixListener::bind(socket_path_in(tmp.path(), "wgact6")).unwrap();
        let b = UnixListener::bind(tmp.path().join("x.sock")).unwrap();
        let two = Inherited::from_fds(vec![(a.into(), "a".to_owned()), (b.into(), "b".to_owned())]);
        let err = refusal(two, tmp.path(), "wgact6");
        assert!(err.contains("exactly one") && err.contains('2'), "{err}");
        let broken = Inherited {
            fds: Err("invalid LISTEN_FDS".to_owned()),
        };
        let err = refusal(broken, tmp.path(), "wgact6");
        assert!(err.contains("invalid LISTEN_FDS"), "{err}");
    }
}
