//! A set of controller keys: what a node pins, and what a controller answers to.
//!
//! A node pins one or more controller keys and accepts a bundle signed by any of them. The
//! first is the one it names in its signed requests ([`crate::auth`]). A controller answers
//! requests naming its signing key or one of the keys it signed with before. Together they
//! rotate the controller key without a gap:
//!
//! 1. every node pins `[old, new]` (the old key stays first);
//! 2. each controller instance signs with `new` and keeps `old` as a previous key, so that
//!    it still answers requests naming `old`; an instance not yet moved signs with `old`,
//!    which the nodes still accept;
//! 3. every node pins `[new]` alone; then the controllers drop `old`.

use std::fmt;

use crate::identity::{BadSignature, IdentityPublic};

/// The most keys a set holds: the key in use and those being rotated to or from.
pub const MAX_KEYS: usize = 4;

/// Why a list of keys is not a key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeySetError {
    /// No key at all.
    #[error("no key is given")]
    Empty,
    /// More than [`MAX_KEYS`].
    #[error("{0} keys: at most {MAX_KEYS} controller keys can be listed")]
    TooMany(usize),
    /// The same key twice.
    #[error("the key {0} is listed twice")]
    Duplicate(IdentityPublic),
}

/// One to [`MAX_KEYS`] distinct Ed25519 public keys; the first is the primary one.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySet(Vec<IdentityPublic>);

impl KeySet {
    /// The set of `keys`, in order: not empty, at most [`MAX_KEYS`], each once.
    pub fn new(keys: Vec<IdentityPublic>) -> Result<Self, KeySetError> {
        if keys.is_empty() {
            return Err(KeySetError::Empty);
        }
        if keys.len() > MAX_KEYS {
            return Err(KeySetError::TooMany(keys.len()));
        }
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].contains(key) {
                return Err(KeySetError::Duplicate(*key));
            }
        }
        Ok(Self(keys))
    }

    /// The set of one key.
    pub fn one(key: IdentityPublic) -> Self {
        Self(vec![key])
    }

    /// The primary key: the one a node names in its requests, or a controller signs with.
    pub fn primary(&self) -> &IdentityPublic {
        // Never empty: checked by `new`, one key in `one`.
        &self.0[0]
    }

    /// Every key, the primary first.
    pub fn keys(&self) -> &[IdentityPublic] {
        &self.0
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &IdentityPublic) -> bool {
        self.0.contains(key)
    }

    /// The key of the set whose signature `signature` over `message` is, if any.
    pub fn verify(
        &self,
        message: &[u8],
        signature: &[u8],
    ) -> Result<&IdentityPublic, BadSignature> {
        self.0
            .iter()
            .find(|key| key.verify(message, signature).is_ok())
            .ok_or(BadSignature)
    }
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl fmt::Display for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{key}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IdentityKey;

    #[test]
    fn a_set_is_one_to_four_distinct_keys_primary_first() {
        let keys: Vec<IdentityKey> = (0..5).map(|_| IdentityKey::generate()).collect();
        let public: Vec<IdentityPublic> = keys.iter().map(IdentityKey::public).collect();
        assert_eq!(KeySet::new(vec![]), Err(KeySetError::Empty));
        assert_eq!(KeySet::new(public.clone()), Err(KeySetError::TooMany(5)));
        assert_eq!(
            KeySet::new(vec![public[0], public[1], public[0]]),
            Err(KeySetError::Duplicate(public[0]))
        );
        let set = KeySet::new(public[1..].to_vec()).unwrap();
        assert_eq!(set.primary(), &public[1]);
        assert_eq!(set.keys().len(), MAX_KEYS);
        assert!(!set.contains(&public[0]));
    }

    #[test]
    fn a_signature_by_any_key_of_the_set_names_it_and_others_are_refused() {
        let old = IdentityKey::generate();
        let new = IdentityKey::generate();
        let stranger = IdentityKey::generate();
        let set = KeySet::new(vec![old.public(), new.public()]).unwrap();
        let message = b"bundle";
        assert_eq!(set.verify(message, &old.sign(message)), Ok(&old.public()));
        assert_eq!(set.verify(message, &new.sign(message)), Ok(&new.public()));
        assert_eq!(
            set.verify(message, &stranger.sign(message)),
            Err(BadSignature)
        );
        assert_eq!(
            set.verify(b"other", &new.sign(message)),
            Err(BadSignature),
            "a signature over another message is refused"
        );
    }
}
