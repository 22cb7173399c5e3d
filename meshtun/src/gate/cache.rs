//! The bundle cache: the last verified signed bundle, kept on disk so that a restarted
//! daemon can rejoin the mesh before the controller answers.
//!
//! The file holds the [`SignedBundle`] JSON exactly as the controller signed it (its keys are
//! sealed to the interface's WireGuard key, so it holds no key in the clear). It is written
//! atomically with mode 0600, its directory created with mode 0700 if missing. Loading
//! verifies it again in full — signature, node id, recipient, sealed keys — as if it had just
//! been fetched; only expiry is reported rather than refused, so that the caller can apply
//! its grace rule. These functions block: call them from a blocking task.

use std::io;
use std::path::{Path, PathBuf};

use meshtun_proto::bundle::{SignedBundle, MAX_BUNDLE_BYTES};
use meshtun_proto::PrivateKey;

use super::bundle::{verify_cached_bundle, BundleCheckError, Trust, VerifiedBundle};
use meshtun_proto::private_file::{self, read_limited, Replace};

/// The largest cache file read: a signed bundle of [`MAX_BUNDLE_BYTES`], base64 and JSON.
pub const MAX_CACHE_BYTES: usize = MAX_BUNDLE_BYTES / 3 * 4 + 4096;

/// Why the cache could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The file could not be read.
    #[error("cannot read the bundle cache {}", .file.display())]
    Read {
        /// The cache file.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is larger than [`MAX_CACHE_BYTES`].
    #[error("the bundle cache {} is larger than {MAX_CACHE_BYTES} bytes", .file.display())]
    TooLarge {
        /// The cache file.
        file: PathBuf,
    },
    /// The file is not a signed bundle.
    #[error("the bundle cache {} is not a signed bundle: {reason}", .file.display())]
    Parse {
        /// The cache file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The cached bundle fails verification (tampered, another node's, another key's).
    #[error("the bundle cache {} is refused", .file.display())]
    Bundle {
        /// The cache file.
        file: PathBuf,
        /// Why.
        #[source]
        source: BundleCheckError,
    },
    /// The file could not be written.
    #[error("cannot write the bundle cache {}", .file.display())]
    Write {
        /// The cache file.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// A bundle read back from the cache, fully verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBundle {
    /// The bundle.
    pub bundle: VerifiedBundle,
    /// True if the bundle's `not_after` has passed: the caller decides, with its grace
    /// period and loss policy, whether it may still be used.
    pub expired: bool,
}

/// Writes `signed` to `path` atomically, mode 0600, creating its directory (mode 0700).
pub fn save_cache(path: &Path, signed: &SignedBundle) -> Result<(), CacheError> {
    let fail = |source| CacheError::Write {
        file: path.to_path_buf(),
        source,
    };
    let json = serde_json::to_vec(signed).map_err(|e| fail(io::Error::other(e)))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_file::create_dir(dir).map_err(fail)?;
    }
    private_file::write(path, &json, Replace::Atomically).map_err(fail)
}

/// Reads and verifies the cached bundle for node `node_id` with WireGuard key `wg_private`
/// with `trust` (the pinned controller keys and the membership key). `Ok(None)` if there is no cache file.
pub fn load_cache(
    path: &Path,
    trust: &Trust<'_>,
    node_id: &str,
    wg_private: &PrivateKey,
    now_ms: u64,
) -> Result<Option<CachedBundle>, CacheError> {
    let file = || path.to_path_buf();
    let bytes = match read_limited(path, MAX_CACHE_BYTES) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(CacheError::TooLarge { file: file() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CacheError::Read {
                file: file(),
                source,
            })
        }
    };
    let signed: SignedBundle = serde_json::from_slice(&bytes).map_err(|e| CacheError::Parse {
        file: file(),
        reason: e.to_string(),
    })?;
    let bundle = verify_cached_bundle(&signed, trust, node_id, wg_private).map_err(|source| {
        CacheError::Bundle {
            file: file(),
            source,
        }
    })?;
    Ok(Some(CachedBundle {
        expired: bundle.is_expired(now_ms),
        bundle,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::bundle::tests::{Fixture, NOW};
    use meshtun_proto::{IdentityKey, KeySet};

    fn load(f: &Fixture, path: &Path, now: u64) -> Result<Option<CachedBundle>, CacheError> {
        load_cache(
            path,
            &Trust::controller(&KeySet::one(f.controller.public())),
            "node-a",
            &f.wg,
            now,
        )
    }

    #[test]
    fn a_saved_bundle_loads_back_verified_with_mode_0600() {
        let f = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/meshtun/wg0.bundle");
        let signed = f.sign(&f.bundle(5, NOW + 60_000));
        save_cache(&path, &signed).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        let cached = load(&f, &path, NOW).unwrap().unwrap();
        assert!(!cached.expired);
        assert_eq!(cached.bundle, f.verify(&signed).unwrap());
        assert_eq!(cached.bundle.peers[0].psk, f.peers[0].2);
    }

    #[test]
    fn a_bundle_cached_before_the_signature_label_still_loads_but_is_refused_from_the_network() {
        use base64::Engine as _;
        let f = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.bundle");
        let signed = f.sign(&f.bundle(5, NOW + 60_000));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&signed.payload)
            .unwrap();
        let old = SignedBundle {
            payload: signed.payload.clone(),
            signature: base64::engine::general_purpose::STANDARD.encode(f.controller.sign(&bytes)),
        };
        assert!(
            f.verify(&old).is_err(),
            "an unlabelled signature from the network"
        );
        save_cache(&path, &old).unwrap();
        let cached = load(&f, &path, NOW).unwrap().unwrap();
        assert_eq!(cached.bundle.epoch, 5);
        assert_eq!(cached.bundle.peers[0].psk, f.peers[0].2);
    }

    #[test]
    fn saving_replaces_the_previous_bundle_and_leaves_no_temporary_file() {
        let f = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.bundle");
        save_cache(&path, &f.sign(&f.bundle(5, NOW + 60_000))).unwrap();
        save_cache(&path, &f.sign(&f.bundle(6, NOW + 120_000))).unwrap();
        assert_eq!(load(&f, &path, NOW).unwrap().unwrap().bundle.epoch, 6);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn an_expired_bundle_is_loaded_and_flagged() {
        let f = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.bundle");
        save_cache(&path, &f.sign(&f.bundle(5, NOW + 1_000))).unwrap();
        let cached = load(&f, &path, NOW + 1_000).unwrap().unwrap();
        assert!(cached.expired);
        assert_eq!(cached.bundle.epoch, 5);
    }

    #[test]
    fn no_file_is_no_bundle() {
        let f = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(&f, &dir.path().join("none"), NOW).unwrap(), None);
    }

    #[test]
    fn a_tampered_or_foreign_cache_is_refused() {
        let f = Fixture::new();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wg0.bundle");
        let signed = f.sign(&f.bundle(5, NOW + 60_000));
        save_cache(&path, &signed).unwrap();

        let other_controller = KeySet::one(IdentityKey::generate().public());
        let err = load_cache(
            &path,
            &Trust::controller(&other_controller),
            "node-a",
            &f.wg,
            NOW,
        )
        .unwrap_err();
        let message = meshtun_proto::report::describe(&err);
        assert!(message.contains("does not verify"), "{message}");
        let err = load_cache(
            &path,
            &Trust::controller(&KeySet::one(f.controller.public())),
            "node-b",
            &f.wg,
            NOW,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                CacheError::Bundle {
                    source: BundleCheckError::BundleForAnotherNode { .. },
                    ..
                }
            ),
            "{err}"
        );

        // One character of the payload changed.
        let mut text = std::fs::read_to_string(&path).unwrap();
        let at = text.find("\"payload\":\"").unwrap() + 20;
        let flipped = if text.as_bytes()[at] == b'A' {
            "B"
        } else {
            "A"
        };
        text.replace_range(at..at + 1, flipped);
        std::fs::write(&path, &text).unwrap();
        let err = load(&f, &path, NOW).unwrap_err();
        assert!(matches!(err, CacheError::Bundle { .. }), "{err}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );

        std::fs::write(&path, "{\"payload\":1}").unwrap();
        assert!(matches!(
            load(&f, &path, NOW),
            Err(CacheError::Parse { .. })
        ));
    }
}
