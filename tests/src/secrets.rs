//! Looking for secrets where they must not be: a [`Secret`] knows every form it could be
//! written in (raw bytes, hex, base64), and [`leaks`] names the secrets found in some bytes.

use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;

/// Shortest secret accepted: shorter byte strings could turn up by chance.
pub const MIN_SECRET_BYTES: usize = 16;

/// A secret under a label, with every encoding of it to look for.
#[derive(Clone)]
pub struct Secret {
    label: String,
    needles: Vec<Vec<u8>>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.label)
    }
}

impl Secret {
    /// A binary secret (a key): found as the raw bytes, as lower- or upper-case hex, or as
    /// standard or URL-safe base64 (with or without padding).
    ///
    /// Panics if `raw` is shorter than [`MIN_SECRET_BYTES`].
    pub fn bytes(label: impl Into<String>, raw: &[u8]) -> Self {
        let label = label.into();
        assert!(
            raw.len() >= MIN_SECRET_BYTES,
            "secret {label} is {} bytes; too short to look for",
            raw.len()
        );
        // Unpadded base64 is a prefix of the padded form, so it finds both.
        let needles = vec![
            raw.to_vec(),
            hex::encode(raw).into_bytes(),
            hex::encode_upper(raw).into_bytes(),
            STANDARD_NO_PAD.encode(raw).into_bytes(),
            URL_SAFE_NO_PAD.encode(raw).into_bytes(),
        ];
        Self { label, needles }
    }

    /// A secret that is text (a token): found as the text itself, and, if the text is
    /// base64 or URL-safe base64 of at least [`MIN_SECRET_BYTES`] bytes, in every form
    /// [`Secret::bytes`] looks for.
    ///
    /// Panics if `text` is shorter than [`MIN_SECRET_BYTES`].
    pub fn text(label: impl Into<String>, text: &str) -> Self {
        let label = label.into();
        let text = text.trim();
        assert!(
            text.len() >= MIN_SECRET_BYTES,
            "secret {label} is {} characters; too short to look for",
            text.len()
        );
        let decoded = [STANDARD_NO_PAD, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text.trim_end_matches('=')).ok())
            .filter(|raw| raw.len() >= MIN_SECRET_BYTES);
        let mut secret = match decoded {
            Some(raw) => Self::bytes(label, &raw),
            None => Self {
                label,
                needles: Vec::new(),
            },
        };
        secret.needles.push(text.as_bytes().to_vec());
        secret
    }

    /// What the secret is, for messages (never the secret itself).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether any form of the secret occurs in `haystack`.
    pub fn found_in(&self, haystack: &[u8]) -> bool {
        self.needles
            .iter()
            .any(|needle| memchr::memmem::find(haystack, needle).is_some())
    }
}

/// The labels of the secrets that occur in `haystack`, in the order given.
pub fn leaks<'a>(secrets: &'a [Secret], haystack: &[u8]) -> Vec<&'a str> {
    secrets
        .iter()
        .filter(|s| s.found_in(haystack))
        .map(Secret::label)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [
        0xfb, 0xff, 0x3e, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
        21, 22, 23, 24, 25, 26, 27, 28, 29,
    ];

    #[test]
    fn a_key_is_found_in_every_encoding() {
        let secret = Secret::bytes("key", &KEY);
        let forms = [
            KEY.to_vec(),
            hex::encode(KEY).into_bytes(),
            hex::encode_upper(KEY).into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(KEY)
                .into_bytes(),
            URL_SAFE_NO_PAD.encode(KEY).into_bytes(),
        ];
        for form in forms {
            let mut haystack = b"prefix \x00 ".to_vec();
            haystack.extend_from_slice(&form);
            haystack.extend_from_slice(b" suffix");
            assert!(
                secret.found_in(&haystack),
                "{:?}",
                String::from_utf8_lossy(&form)
            );
        }
    }

    #[test]
    fn a_key_is_not_found_where_it_is_not() {
        let secret = Secret::bytes("key", &KEY);
        let mut other = KEY;
        other[31] ^= 1;
        assert!(!secret.found_in(&other));
        assert!(!secret.found_in(hex::encode(other).as_bytes()));
        assert!(!secret.found_in(b""));
        // Half of the hex form is not the key.
        assert!(!secret.found_in(&hex::encode(KEY).as_bytes()[..32]));
    }

    #[test]
    fn a_token_is_found_as_text_and_as_its_bytes() {
        let token = URL_SAFE_NO_PAD.encode(KEY);
        let secret = Secret::text("admin token", &format!("{token}\n"));
        assert!(secret.found_in(format!("Bearer {token}").as_bytes()));
        assert!(secret.found_in(hex::encode(KEY).as_bytes()));
        let plain = Secret::text("password", "correct horse battery staple");
        assert!(plain.found_in(b"pw=correct horse battery staple;"));
        assert!(!plain.found_in(b"correct horse"));
    }

    #[test]
    fn leaks_names_what_was_found() {
        let secrets = [
            Secret::bytes("one", &KEY),
            Secret::text("two", "0123456789abcdefXYZ"),
        ];
        let haystack = format!("x {} y", "0123456789abcdefXYZ");
        assert_eq!(leaks(&secrets, haystack.as_bytes()), vec!["two"]);
        assert!(leaks(&secrets, b"nothing").is_empty());
        assert_eq!(format!("{:?}", secrets[0]), "Secret(one)");
    }

    #[test]
    #[should_panic(expected = "too short")]
    fn short_secrets_are_refused() {
        Secret::bytes("tiny", b"abc");
    }
}
