//! Reading the configuration and key files, and checking who else may read them.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{ConfigError, MAX_CONFIG_SIZE};

/// The largest key file read: a key is 44 characters, leave room for comments and newlines.
const MAX_KEY_FILE_SIZE: usize = 4096;

/// Opens a file for reading without blocking on FIFOs or adopting a terminal.
#[cfg(unix)]
fn open(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
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
/// error.
pub(crate) fn read_limited(path: &Path, limit: usize) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
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

/// Moves the bytes into a `String` without copying them; non-UTF-8 bytes are wiped.
fn into_text(mut bytes: Zeroizing<Vec<u8>>) -> Option<Zeroizing<String>> {
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Some(Zeroizing::new(text)),
        Err(err) => {
            drop(Zeroizing::new(err.into_bytes()));
            None
        }
    }
}

/// Reads a configuration file as UTF-8, refusing files over [`MAX_CONFIG_SIZE`].
pub(super) fn read_config_file(path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    let bytes = read_limited(path, MAX_CONFIG_SIZE)
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| ConfigError::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_CONFIG_SIZE,
        })?;
    into_text(bytes).ok_or_else(|| ConfigError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// Reads a key file (base64, surrounding whitespace ignored) as `wg` does.
pub(super) fn read_key_file(path: &Path) -> io::Result<Zeroizing<String>> {
    let bytes = read_limited(path, MAX_KEY_FILE_SIZE)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a key file holds one base64 key, this one is over {MAX_KEY_FILE_SIZE} bytes"),
        )
    })?;
    into_text(bytes)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "the file is not text"))
}

/// Resolves a key-file path written in the configuration relative to the config's directory.
pub(super) fn resolve_key_path(config: &Path, written: &str) -> PathBuf {
    let written = Path::new(written);
    if written.is_absolute() {
        return written.to_path_buf();
    }
    match config.parent() {
        Some(dir) => dir.join(written),
        None => written.to_path_buf(),
    }
}

/// One warning per file in `files` that group or others may read or write.
pub(super) fn permission_warnings(files: &[PathBuf]) -> Vec<String> {
    files.iter().filter_map(|file| warning(file)).collect()
}

/// A warning if group or others may read or write `file`.
#[cfg(unix)]
pub(super) fn warning(file: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;

    // Files that are gone or unreadable cannot leak anything more than they already did.
    let mode = std::fs::metadata(file).ok()?.permissions().mode() & 0o7777;
    (mode & 0o066 != 0).then(|| {
        format!(
            "{} holds a secret key but has mode {mode:04o}, so other users can read or change it; \
             run `chmod 600 {}`",
            file.display(),
            file.display()
        )
    })
}

#[cfg(not(unix))]
pub(super) fn warning(_file: &Path) -> Option<String> {
    None
}

/// Whether [`write_private_file`] may replace an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replace {
    /// Never: fail with [`io::ErrorKind::AlreadyExists`] if the file exists.
    Never,
    /// Atomically: readers see the old file or the new one, never a mix.
    Atomically,
}

/// Writes `bytes` to `path` with mode 0600: first to a temporary file beside it, synced,
/// then moved into place (linked for [`Replace::Never`], so an existing file is never
/// overwritten). A crash leaves either no file or the whole file, never a part.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8], replace: Replace) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.{stamp}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let result = write_new(&temp, bytes).and_then(|()| match replace {
        Replace::Never => std::fs::hard_link(&temp, path),
        Replace::Atomically => std::fs::rename(&temp, path),
    });
    // After a link, or after any failure, the temporary name must go.
    if replace == Replace::Never || result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir);
    Ok(())
}

/// Creates `path` (which must not exist) with mode 0600 and writes and syncs `bytes`.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn relative_key_paths_follow_the_config_file() {
        let config = Path::new("/etc/meshtun/wg0.toml");
        assert_eq!(
            resolve_key_path(config, "wg0.key"),
            Path::new("/etc/meshtun/wg0.key")
        );
        assert_eq!(
            resolve_key_path(config, "/k/wg0.key"),
            Path::new("/k/wg0.key")
        );
        assert_eq!(resolve_key_path(Path::new("wg0.toml"), "k"), Path::new("k"));
    }

    /// Finding #21: the buffer a secret is read into is never reallocated, up to the largest
    /// file allowed, so no copy of the secret is left behind in freed memory.
    #[test]
    fn secret_reads_never_reallocate_up_to_the_limit_21() {
        for len in [0, 1, 44, MAX_KEY_FILE_SIZE] {
            let mut file = tempfile::NamedTempFile::new().unwrap();
            file.write_all(&vec![b'k'; len]).unwrap();
            let bytes = read_limited(file.path(), MAX_KEY_FILE_SIZE)
                .unwrap()
                .unwrap();
            assert_eq!(bytes.len(), len);
            // Sized once, from the file's length (plus the byte that detects a larger file).
            assert_eq!(bytes.capacity(), len + 1, "a {len}-byte file");
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&[b'k'; MAX_KEY_FILE_SIZE + 1]).unwrap();
        assert!(read_limited(file.path(), MAX_KEY_FILE_SIZE)
            .unwrap()
            .is_none());
        // A file longer than its announced length (0 for /proc files) would make the buffer
        // grow: refused instead.
        let err = read_limited(Path::new("/proc/self/status"), MAX_KEY_FILE_SIZE).unwrap_err();
        assert!(err.to_string().contains("grew"), "{err}");
    }

    #[test]
    fn oversized_files_are_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&vec![b'#'; MAX_CONFIG_SIZE + 1]).unwrap();
        let err = read_config_file(file.path()).unwrap_err();
        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("larger than 1048576 bytes"));

        let mut key = tempfile::NamedTempFile::new().unwrap();
        key.write_all(&[b'A'; 5000]).unwrap();
        let err = read_key_file(key.path()).unwrap_err();
        assert!(err.to_string().contains("over 4096 bytes"));
    }

    #[test]
    fn special_files_are_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_key_file(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("key.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = read_key_file(&fifo).unwrap_err();
        assert_eq!(err.to_string(), "not a regular file");
    }

    #[test]
    fn non_utf8_config_is_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"[interface]\nname = \"\xff\"\n").unwrap();
        let err = read_config_file(file.path()).unwrap_err();
        assert!(
            err.to_string().ends_with("is not valid UTF-8 text"),
            "{err}"
        );
    }
}
