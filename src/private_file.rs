//! Files that hold secrets or state root acts on: one writer (owner only, atomic), one bounded
//! reader, and one rule for which modes expose a file. The daemon (configuration and key
//! files, the bundle cache, the host state) and the controller (its key, epoch database and
//! tokens) both use them. Blocking: async code calls them from a blocking task.
//!
//! **Writing** ([`write()`]): the bytes go to a new temporary file in the same directory,
//! created with mode 0600 and `O_EXCL` (so never through a link someone planted there),
//! synced, then renamed over the target ([`Replace::Atomically`]) or linked to it
//! ([`Replace::Never`], which never overwrites), and the directory is synced. A crash leaves
//! the old file or the whole new one, never a part; it may leave a temporary file named
//! `.NAME.PID.N.tmp` behind.
//!
//! **Exposure** ([`exposed_mode`]): a file is private when group and others have no
//! permission bit at all (`mode & 0o077 == 0`), the rule of OpenSSH for private keys.
//!
//! **Trust** ([`changeable_by_others`]): a file (or a directory above it) that a user other
//! than root and the reader owns, or that group or others may write, can be changed behind
//! the reader's back, as sshd's `StrictModes` has it.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use zeroize::Zeroizing;

/// The permission bits of group and others: a private file has none of them.
pub const GROUP_OTHER_BITS: u32 = 0o077;

/// How many temporary names ([`temp_name`]) [`write()`] tries before giving up: a name is
/// taken by a concurrent write of the same file, a crash, or someone who planted it.
pub const TEMP_ATTEMPTS: u32 = 8;

/// Whether [`write()`] may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Never: fail with [`io::ErrorKind::AlreadyExists`] if the file exists.
    Never,
    /// Atomically: readers see the old file or the new one, never a mix.
    Atomically,
}

/// Writes `bytes` to `path` with mode 0600, atomically (see the module documentation). The
/// directory must exist ([`create_dir`]).
pub fn write(path: &Path, bytes: &[u8], replace: Replace) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let temp = write_temp(dir, name, bytes)?;
    let result = match replace {
        Replace::Never => std::fs::hard_link(&temp, path),
        Replace::Atomically => std::fs::rename(&temp, path),
    };
    // After a link, or after a failed rename, the temporary name must go.
    if replace == Replace::Never || result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir);
    Ok(())
}

/// Creates a temporary file beside `name` in `dir` holding `bytes`, synced; its path.
fn write_temp(dir: &Path, name: &std::ffi::OsStr, bytes: &[u8]) -> io::Result<std::path::PathBuf> {
    let mut last = None;
    for n in 0..TEMP_ATTEMPTS {
        let temp = dir.join(temp_name(name, n));
        match write_new(&temp, bytes) {
            Ok(()) => return Ok(temp),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => {
                // A partial file of ours: remove it (create_new made it ours).
                let _ = std::fs::remove_file(&temp);
                return Err(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary file name was free")))
}

/// The `n`th temporary name for the file `name`: `.NAME.PID.N.tmp`.
pub fn temp_name(name: &std::ffi::OsStr, n: u32) -> OsString {
    let mut temp = OsString::from(".");
    temp.push(name);
    temp.push(format!(".{}.{n}.tmp", std::process::id()));
    temp
}

/// Creates `path` (which must not exist, not even as a link) with mode 0600, and writes and
/// syncs `bytes`.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Makes a new directory entry durable (best effort: not every platform can sync a directory).
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Creates `dir` and its missing parents, the new ones with mode 0700. An existing directory
/// is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The permission bits (`mode & 0o7777`) of a file or directory that group or others have
/// some permission on; `None` when it is private ([`GROUP_OTHER_BITS`] all clear).
#[cfg(unix)]
pub fn exposed_mode(meta: &Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    (mode & GROUP_OTHER_BITS != 0).then_some(mode)
}

/// Who besides root and the user `trusted` could change a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Changeable {
    /// Another user owns it: this uid.
    Owner(u32),
    /// Group or others may write it: its permission bits (`mode & 0o7777`).
    Writable(u32),
}

/// Whether someone besides root and `trusted` could change what `meta` describes: its owner
/// is another user, or group or others may write it (except a sticky directory, in which
/// they may only add and remove entries of their own).
#[cfg(unix)]
pub fn changeable_by_others(meta: &Metadata, trusted: u32) -> Option<Changeable> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o7777;
    let sticky = meta.is_dir() && mode & 0o1000 != 0;
    if meta.uid() != 0 && meta.uid() != trusted {
        Some(Changeable::Owner(meta.uid()))
    } else if mode & 0o022 != 0 && !sticky {
        Some(Changeable::Writable(mode))
    } else {
        None
    }
}

/// Never exposed where Unix modes do not exist.
#[cfg(not(unix))]
pub fn exposed_mode(_meta: &Metadata) -> Option<u32> {
    None
}

/// Opens a file for reading without blocking on FIFOs or adopting a terminal.
#[cfg(unix)]
fn open(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

#[cfg(not(unix))]
fn open(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Reads at most `limit` bytes of a regular file; `Ok(None)` if it is larger.
///
/// The bytes may hold a secret: they are read into one buffer sized from the file's length up
/// front, which never reallocates (a reallocation would leave a copy in freed memory) and is
/// zeroized on drop, also when the file is refused. A file that grows while it is read is an
/// error; so is anything but a regular file (a FIFO is refused without blocking).
pub fn read_limited(path: &Path, limit: usize) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut file = open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let expected = usize::try_from(meta.len()).unwrap_or(usize::MAX).min(limit);
    // One byte more than allowed or announced tells a larger file from one of the right size.
    let mut bytes = Zeroizing::new(vec![0u8; expected.saturating_add(1)]);
    let mut filled = 0;
    while let Some(spare) = bytes.get_mut(filled..).filter(|s| !s.is_empty()) {
        match file.read(spare) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    if filled > expected {
        if expected == limit {
            return Ok(None);
        }
        return Err(io::Error::other("the file grew while it was read"));
    }
    bytes.truncate(filled);
    Ok(Some(bytes))
}

#[cfg(all(test, unix))]
mod tests;
