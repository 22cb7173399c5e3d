//! Relay (TURN, RFC 8656) credentials: the controller mints them per epoch with the TURN
//! REST API scheme that coturn implements (`use-auth-secret`, `static-auth-secret`), and a
//! node's bundle carries them, the password sealed to the node like its preshared keys.
//!
//! The scheme: username = `"EXPIRY:NODE_ID"` with `EXPIRY` in Unix seconds, password =
//! `base64(HMAC-SHA1(secret, username))`. The relay server holds the same secret and
//! recomputes the password; it refuses a username whose expiry has passed. The controller
//! sets the expiry to the bundle's `not_after`, so a node that is denied gets no new
//! credentials and loses relay access when its current ones expire, within its epoch.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::hmac;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The most relay servers a bundle names.
pub const MAX_RELAY_URLS: usize = 4;

/// Length of a password: base64 of a 20-byte HMAC-SHA1.
pub const PASSWORD_LEN: usize = 28;

/// The shared secret of the controller and the relay servers (`static-auth-secret` in
/// coturn's configuration). Redacted `Debug`, zeroized on drop.
#[derive(Clone)]
pub struct RelaySecret(Zeroizing<String>);

impl RelaySecret {
    /// Wraps the secret as read from its file (surrounding white space removed).
    pub fn new(text: &str) -> Self {
        Self(Zeroizing::new(text.trim().to_owned()))
    }

    /// Whether the secret is empty (an empty secret would let anyone mint credentials).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The password of `username`: `base64(HMAC-SHA1(secret, username))`.
    pub fn password(&self, username: &str) -> RelayPassword {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, self.0.as_bytes());
        let tag = hmac::sign(&key, username.as_bytes());
        RelayPassword::new(STANDARD.encode(tag.as_ref()))
    }

    /// The credentials of node `node_id`, valid until `expiry_s` (Unix seconds).
    pub fn mint(&self, node_id: &str, expiry_s: u64) -> (String, RelayPassword) {
        let username = format!("{expiry_s}:{node_id}");
        let password = self.password(&username);
        (username, password)
    }
}

impl std::fmt::Debug for RelaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelaySecret(<redacted>)")
    }
}

/// A relay password (TURN long-term credential). Redacted `Debug`, zeroized on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayPassword(Zeroizing<String>);

impl RelayPassword {
    /// Wraps a password.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// The password text: only for the TURN client's MESSAGE-INTEGRITY key and for sealing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RelayPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayPassword(<redacted>)")
    }
}

/// The relay part of a bundle: where the relays are and the recipient's credentials for
/// this epoch, the password sealed to the recipient ([`crate::bundle::Sealer::seal_relay`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRelay {
    /// The relay servers, `turn:HOST:PORT` (UDP), at most [`MAX_RELAY_URLS`].
    pub urls: Vec<String>,
    /// The TURN username, `"EXPIRY:NODE_ID"`.
    pub username: String,
    /// When the credentials stop working, Unix seconds (the expiry in the username).
    pub expires_s: u64,
    /// The password, sealed to the recipient (base64).
    pub sealed_password: String,
}

/// Why a relay URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayUrlError {
    /// Not `turn:HOST:PORT`.
    #[error("relay URL {0:?} is not of the form turn:HOST:PORT (UDP; turns: is not supported)")]
    Form(String),
}

/// Splits `turn:HOST:PORT` (optionally with `?transport=udp`) into `HOST:PORT`, the form
/// a socket address resolver takes. IPv6 hosts are in brackets.
pub fn parse_turn_url(url: &str) -> Result<&str, RelayUrlError> {
    let bad = || RelayUrlError::Form(url.to_owned());
    let rest = url.strip_prefix("turn:").ok_or_else(bad)?;
    let rest = rest.strip_suffix("?transport=udp").unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.len() <= 255
        && (host.starts_with('[') && host.ends_with(']')
            || host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
    if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector was computed independently with
    /// `printf 1700000000:node-a | openssl dgst -sha1 -hmac north-wind-secret -binary | base64`.
    #[test]
    fn the_password_is_coturns_rest_api_hmac() {
        let secret = RelaySecret::new("north-wind-secret\n");
        let (user, password) = secret.mint("node-a", 1_700_000_000);
        assert_eq!(user, "1700000000:node-a");
        assert_eq!(password.expose(), "QNzZVB8ni9Ld9xsBxuB2L0HrK4g=");
        assert_eq!(password.expose().len(), PASSWORD_LEN);
        let (_, other) = RelaySecret::new("another").mint("node-a", 1_700_000_000);
        assert_ne!(other, password, "the password depends on the secret");
        let (_, later) = secret.mint("node-a", 1_700_000_001);
        assert_ne!(later, password, "and on the expiry");
    }

    #[test]
    fn secrets_and_passwords_are_redacted() {
        let secret = RelaySecret::new("north-wind-secret");
        let (_, password) = secret.mint("node-a", 1);
        assert!(!format!("{secret:?}").contains("north"));
        assert!(!format!("{password:?}").contains(password.expose()));
    }

    #[test]
    fn turn_urls() {
        assert_eq!(
            parse_turn_url("turn:198.51.100.1:3478"),
            Ok("198.51.100.1:3478")
        );
        assert_eq!(
            parse_turn_url("turn:relay.example.net:3478?transport=udp"),
            Ok("relay.example.net:3478")
        );
        assert_eq!(
            parse_turn_url("turn:[2001:db8::1]:3478"),
            Ok("[2001:db8::1]:3478")
        );
        for bad in [
            "turns:198.51.100.1:5349",
            "stun:198.51.100.1:3478",
            "turn:198.51.100.1",
            "turn:198.51.100.1:0",
            "turn::3478",
            "turn:a b:3478",
            "turn:198.51.100.1:3478?transport=tcp",
        ] {
            assert!(parse_turn_url(bad).is_err(), "{bad}");
        }
    }
}
