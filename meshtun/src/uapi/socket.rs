//! Creating the UAPI socket where `wg` looks for it, safely.
//!
//! The socket is bound inside a private (0700) staging directory, made 0600, then renamed
//! into place: it is never reachable with looser permissions, and no process-wide umask is
//! changed (that would race with other threads creating files). A stale socket left by a
//! crashed daemon is replaced; a socket that still answers is left alone.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use rand_core::{OsRng, RngCore};

use super::error::UapiError;

/// Where WireGuard userspace implementations put their sockets; `wg` looks only here.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The UAPI socket path for interface `ifname`: `/var/run/wireguard/<ifname>.sock`.
pub fn socket_path(ifname: &str) -> PathBuf {
    socket_path_in(Path::new(SOCKET_DIR), ifname)
}

/// The UAPI socket path for interface `ifname` in directory `dir`.
pub fn socket_path_in(dir: &Path, ifname: &str) -> PathBuf {
    dir.join(format!("{ifname}.sock"))
}

/// A bound, listening UAPI socket. Its file is removed when this value (or the server that
/// took it) is dropped, unless another socket has replaced it meanwhile.
#[derive(Debug)]
pub struct UapiSocket {
    listener: UnixListener,
    file: SocketFile,
    ifname: String,
}

impl UapiSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// Whether the service manager created this socket (socket activation).
    pub fn inherited(&self) -> bool {
        self.file.created.is_none()
    }

    /// The interface this socket configures.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub(crate) fn new(listener: UnixListener, file: SocketFile, ifname: &str) -> Self {
        Self {
            listener,
            file,
            ifname: ifname.to_owned(),
        }
    }

    pub(crate) fn into_parts(self) -> (UnixListener, SocketFile, String) {
        (self.listener, self.file, self.ifname)
    }
}

/// The socket's file: removed on drop if the daemon created it and it is still that file;
/// never removed if the service manager created it (socket activation).
#[derive(Debug)]
pub(crate) struct SocketFile {
    path: PathBuf,
    /// Device and inode of the file the daemon created; `None` for an inherited socket.
    created: Option<(u64, u64)>,
}

impl SocketFile {
    /// A socket file created by the service manager, which removes it itself.
    pub(crate) fn inherited(path: PathBuf) -> Self {
        Self {
            path,
            created: None,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let Some((dev, ino)) = self.created else {
            return;
        };
        let ours = fs::symlink_metadata(&self.path)
            .map(|meta| meta.dev() == dev && meta.ino() == ino)
            .unwrap_or(false);
        if ours {
            match fs::remove_file(&self.path) {
                Ok(()) => {}
                // Started as root with `--user`, the daemon cannot write the directory.
                Err(err) if err.kind() == io::ErrorKind::PermissionDenied => tracing::info!(
                    path = %self.path.display(),
                    "the UAPI socket stays in its root-owned directory; the next start or `wg` removes it"
                ),
                Err(err) => {
                    tracing::warn!(path = %self.path.display(), %err, "cannot remove the UAPI socket")
                }
            }
        }
    }
}

/// Binds the UAPI socket for `ifname` in [`SOCKET_DIR`] (see [`bind_in`]).
pub fn bind(ifname: &str) -> Result<UapiSocket, UapiError> {
    bind_in(Path::new(SOCKET_DIR), ifname)
}

/// Binds the UAPI socket for `ifname` in `dir`, mode 0600 from the start.
///
/// Creates `dir` (mode 0755) if missing. An existing socket is replaced only if connecting to
/// it is refused (its daemon is gone); if something answers, this fails with
/// [`UapiError::InUse`]. A file there that is not a socket is never touched.
pub fn bind_in(dir: &Path, ifname: &str) -> Result<UapiSocket, UapiError> {
    check_ifname(ifname)?;
    ensure_dir(dir)?;
    let path = socket_path_in(dir, ifname);
    refuse_if_live(&path)?;
    let staging = Staging::create(dir, ifname)?;
    let staged = staging.path.join("s");
    let socket_err = |action, source| UapiError::Socket {
        path: path.clone(),
        action,
        source,
    };
    let listener = UnixListener::bind(&staged).map_err(|e| socket_err("bind", e))?;
    fs::set_permissions(&staged, fs::Permissions::from_mode(0o600))
        .map_err(|e| socket_err("set mode 0600", e))?;
    fs::rename(&staged, &path).map_err(|e| socket_err("move into place", e))?;
    drop(staging);
    let meta = fs::symlink_metadata(&path).map_err(|e| socket_err("inspect", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| socket_err("make non-blocking", e))?;
    Ok(UapiSocket {
        listener,
        file: SocketFile {
            path,
            created: Some((meta.dev(), meta.ino())),
        },
        ifname: ifname.to_owned(),
    })
}

pub(crate) fn check_ifname(ifname: &str) -> Result<(), UapiError> {
    let reason = if ifname.is_empty() {
        "it is empty"
    } else if ifname.contains(['/', '\0']) {
        "it contains '/' or a NUL byte"
    } else if ifname.starts_with('.') {
        "it starts with '.'"
    } else if ifname.len() >= libc::IF_NAMESIZE {
        "interface names have at most 15 bytes"
    } else {
        return Ok(());
    };
    Err(UapiError::InterfaceName {
        name: ifname.to_owned(),
        reason,
    })
}

fn ensure_dir(dir: &Path) -> Result<(), UapiError> {
    let dir_err = |action, source| UapiError::Socket {
        path: dir.to_owned(),
        action,
        source,
    };
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(dir_err(
            "use as the socket directory",
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it exists and is not a directory",
            ),
        )),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| dir_err("create the socket directory", e))?;
            // The umask may have narrowed the mode; `wg` needs to traverse it as any user.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
                .map_err(|e| dir_err("set mode 0755", e))
        }
        Err(err) => Err(dir_err("inspect the socket directory", err)),
    }
}

fn refuse_if_live(path: &Path) -> Result<(), UapiError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(UapiError::Socket {
                path: path.to_owned(),
                action: "inspect the existing file",
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(UapiError::Socket {
            path: path.to_owned(),
            action: "replace the existing file",
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "it is not a socket; left in place",
            ),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(UapiError::InUse {
            path: path.to_owned(),
        }),
        Err(err)
            if err.kind() == io::ErrorKind::ConnectionRefused
                || err.kind() == io::ErrorKind::NotFound =>
        {
            tracing::info!(path = %path.display(), "replacing a stale UAPI socket");
            Ok(())
        }
        Err(source) => Err(UapiError::Socket {
            path: path.to_owned(),
            action: "check whether another daemon answers on the existing socket",
            source,
        }),
    }
}

/// A private directory beside the socket, removed with its contents on drop.
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn create(dir: &Path, ifname: &str) -> Result<Self, UapiError> {
        let name = format!(".{ifname}.{}.{:016x}", std::process::id(), OsRng.next_u64());
        let path = dir.join(name);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| UapiError::Socket {
                path: path.clone(),
                action: "create a private staging directory",
                source,
            })?;
        Ok(Self { path })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), %err, "cannot remove the UAPI staging directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn binds_0600_in_a_new_0755_dir_and_cleans_up() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("wireguard");
        let socket = bind_in(&dir, "wgtest0").unwrap();
        assert_eq!(socket.path(), dir.join("wgtest0.sock"));
        assert_eq!(mode(&dir), 0o755);
        assert_eq!(mode(socket.path()), 0o600);
        assert!(fs::symlink_metadata(socket.path())
            .unwrap()
            .file_type()
            .is_socket());
        // Reachable at its final path, and nothing else is left in the directory.
        UnixStream::connect(socket.path()).unwrap();
        let entries: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1);
        let path = socket.path().to_owned();
        drop(socket);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_when_a_daemon_answers() {
        let tmp = tempfile::tempdir().unwrap();
        let first = bind_in(tmp.path(), "wgtest1").unwrap();
        let err = bind_in(tmp.path(), "wgtest1").unwrap_err();
        assert!(matches!(err, UapiError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("wgtest1.sock"), "{err}");
        // The live socket is untouched.
        UnixStream::connect(first.path()).unwrap();
    }

    #[test]
    fn replaces_a_stale_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = socket_path_in(tmp.path(), "wgtest2");
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let socket = bind_in(tmp.path(), "wgtest2").unwrap();
        UnixStream::connect(socket.path()).unwrap();
    }

    #[test]
    fn leaves_other_files_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let path = socket_path_in(tmp.path(), "wgtest3");
        fs::write(&path, "keep me").unwrap();
        let err = bind_in(tmp.path(), "wgtest3").unwrap_err();
        let message = meshtun_proto::report::describe(&err);
        assert!(message.contains("not a socket"), "{message}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "keep me");
    }

    #[test]
    fn drop_keeps_a_socket_that_replaced_ours() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = bind_in(tmp.path(), "wgtest4").unwrap();
        let path = socket.path().to_owned();
        fs::remove_file(&path).unwrap();
        let _other = UnixListener::bind(&path).unwrap();
        drop(socket);
        assert!(path.exists());
    }

    #[test]
    fn refuses_bad_interface_names() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["", "a/b", "..", ".hidden", "sixteen-bytes-xx"] {
            let err = bind_in(tmp.path(), name).unwrap_err();
            assert!(
                matches!(err, UapiError::InterfaceName { .. }),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn default_path_is_where_wg_looks() {
        assert_eq!(socket_path("wg0"), Path::new("/var/run/wireguard/wg0.sock"));
    }
}
