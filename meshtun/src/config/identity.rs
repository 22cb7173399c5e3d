//! The node's Ed25519 identity key file: read it, or create it on first start.

use std::io;
use std::path::{Path, PathBuf};

use meshtun_proto::IdentityKey;

use meshtun_proto::private_file::{self, Replace};

use super::secrets::{read_key_file, warning};

/// Why the identity key file could not be read or created. Never carries the key.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    /// The file exists but could not be read.
    #[error("cannot read the identity key file {}", .file.display())]
    Read {
        /// The identity key file.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file does not hold a base64 Ed25519 seed.
    #[error("the identity key file {} does not hold a base64 Ed25519 seed: {reason}", .file.display())]
    Decode {
        /// The identity key file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file was missing and could not be created.
    #[error("cannot create the identity key file {}", .file.display())]
    Create {
        /// The identity key file.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The identity key, and what the operator should be told about it.
#[derive(Debug)]
pub struct LoadedIdentity {
    /// The key.
    pub key: IdentityKey,
    /// True if the file did not exist and was created now (its public key must be enrolled
    /// at the controller).
    pub created: bool,
    /// A warning if group or others may read or change the file.
    pub warning: Option<String>,
}

/// Reads the Ed25519 seed (base64) from `path`, or, if there is no such file, generates a
/// key and writes it there with mode 0600. An existing file is never overwritten: if
/// another process creates it first, that file's key is used.
pub fn load_or_create_identity(path: &Path) -> Result<LoadedIdentity, IdentityFileError> {
    match read_identity(path) {
        Err(IdentityFileError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
        }
        other => return other.map(|key| loaded(path, key, false)),
    }
    let key = IdentityKey::generate();
    let seed = zeroize::Zeroizing::new(key.to_base64());
    // Sized up front: growing it would leave a copy of the seed in freed memory.
    let mut text = zeroize::Zeroizing::new(String::with_capacity(seed.len() + 1));
    text.push_str(&seed);
    text.push('\n');
    let written = private_file::write(path, text.as_bytes(), Replace::Never);
    match written {
        Ok(()) => Ok(loaded(path, key, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read_identity(path).map(|key| loaded(path, key, false))
        }
        Err(source) => Err(IdentityFileError::Create {
            file: path.to_path_buf(),
            source,
        }),
    }
}

fn read_identity(path: &Path) -> Result<IdentityKey, IdentityFileError> {
    let text = read_key_file(path).map_err(|source| IdentityFileError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    IdentityKey::from_base64(&text).map_err(|e| IdentityFileError::Decode {
        file: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn loaded(path: &Path, key: IdentityKey, created: bool) -> LoadedIdentity {
    LoadedIdentity {
        key,
        created,
        warning: warning(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_missing_key_is_created_once_with_mode_0600_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-a.identity");
        let first = load_or_create_identity(&path).unwrap();
        assert!(first.created);
        assert_eq!(first.warning, None);
        #[cfg(unix)]
        assert_eq!(mode(&path), 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), first.key.to_base64());
        let second = load_or_create_identity(&path).unwrap();
        assert!(!second.created);
        assert_eq!(second.key.public(), first.key.public());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["node-a.identity"], "no temporary file is left");
    }

    #[test]
    fn an_existing_key_is_read_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        let key = IdentityKey::generate();
        std::fs::write(&path, format!("  {}\n", key.to_base64())).unwrap();
        let loaded = load_or_create_identity(&path).unwrap();
        assert!(!loaded.created);
        assert_eq!(loaded.key.public(), key.public());
    }

    #[test]
    fn a_bad_file_is_an_error_naming_it_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, "not a key").unwrap();
        let err = load_or_create_identity(&path).unwrap_err();
        assert!(matches!(err, IdentityFileError::Decode { .. }), "{err}");
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("base64"), "{message}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }

    #[test]
    fn a_missing_directory_is_a_create_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/id");
        let err = load_or_create_identity(&path).unwrap_err();
        assert!(matches!(err, IdentityFileError::Create { .. }), "{err}");
        assert!(err.to_string().contains("cannot create"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_key_file_gets_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, IdentityKey::generate().to_base64()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let loaded = load_or_create_identity(&path).unwrap();
        let warning = loaded.warning.unwrap();
        assert!(
            warning.contains("0644") && warning.contains("chmod 600"),
            "{warning}"
        );
    }
}
