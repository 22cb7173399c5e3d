//! Reading the configuration and key files, and checking who else may read them.

use std::io;
use std::path::{Path, PathBuf};

use meshtun_proto::private_file::{self, read_limited};
use zeroize::Zeroizing;

use super::{ConfigError, MAX_CONFIG_SIZE};

/// The largest key file read: a key is 44 characters, leave room for comments and newlines.
const MAX_KEY_FILE_SIZE: usize = 4096;

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

/// A warning if group or others have any permission on `file`
/// ([`private_file::exposed_mode`]).
pub(super) fn warning(file: &Path) -> Option<String> {
    // Files that are gone or unreadable cannot leak anything more than they already did.
    let mode = private_file::exposed_mode(&std::fs::metadata(file).ok()?)?;
    Some(format!(
        "{} holds a secret key but has mode {mode:04o}, so other users may read or change it; \
         run `chmod 600 {}`",
        file.display(),
        file.display()
    ))
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
