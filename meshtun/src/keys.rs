//! `genkey`, `pubkey` and `genpsk`, as `wg` has them.

use std::io::Read;

use meshtun_proto::{KeyError, PresharedKey, PrivateKey};
use zeroize::Zeroizing;

/// Why `pubkey` failed.
#[derive(Debug, thiserror::Error)]
pub enum PubkeyError {
    /// Standard input could not be read.
    #[error("cannot read the private key from standard input")]
    Read(#[from] std::io::Error),
    /// The input is not a key.
    #[error("standard input does not hold a private key")]
    Key(#[from] KeyError),
}

/// A new private key, base64.
pub fn genkey() -> Zeroizing<String> {
    Zeroizing::new(PrivateKey::generate().to_base64())
}

/// A new preshared key, base64.
pub fn genpsk() -> Zeroizing<String> {
    Zeroizing::new(PresharedKey::generate().to_base64())
}

/// The public key (base64) of the private key read from `input`.
pub fn pubkey(input: impl Read) -> Result<String, PubkeyError> {
    let mut text = Zeroizing::new(String::new());
    // A key is 44 characters; refuse to read much more.
    input.take(1024).read_to_string(&mut text)?;
    let key = PrivateKey::from_base64(text.trim())?;
    Ok(key.public_key().to_base64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubkey_matches_the_generated_key() {
        let private = genkey();
        let public = pubkey(format!("{}\n", *private).as_bytes()).unwrap();
        let expected = PrivateKey::from_base64(&private).unwrap().public_key();
        assert_eq!(public, expected.to_base64());
    }

    #[test]
    fn pubkey_refuses_garbage() {
        let err = pubkey("not a key".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("does not hold a private key"));
    }

    #[test]
    fn generated_keys_differ() {
        assert_ne!(*genpsk(), *genpsk());
        assert_eq!(genpsk().len(), 44);
    }
}
