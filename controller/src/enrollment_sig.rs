//! The operator's membership key at the controller: the offline commands that make the key
//! and sign enrollments (`membership key new`, `membership sign`), and the check every
//! enrollment passes when `[membership] public_key` is set.
//!
//! The controller only relays and stores the signatures: the nodes configured with the
//! membership key check them again in every bundle, so the check here is for the operator
//! (a mistyped signature is refused at `node add`, not found later as a peer every node
//! drops), not the guarantee. A controller without `[membership]` stores a signature it is
//! given without checking it, so that nodes with the key still get their peers.

use std::path::Path;

use meshtun_proto::membership::{MembershipError, MembershipKey, MembershipPublic, MembershipSig};
use meshtun_proto::{IdentityPublic, PublicKey};

use crate::commands::{read_secret, write_secret, CommandError};

/// Why an enrollment's membership signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigRefusal {
    /// `[membership] public_key` is set and the enrollment carries no signature.
    #[error(
        "node {node}: this controller requires a membership signature (`[membership] \
         public_key`); sign the node's keys with `meshtun-controller membership sign`"
    )]
    Missing {
        /// The node id.
        node: String,
    },
    /// The signature does not decode, or does not verify with the configured key.
    #[error("node {node}: the membership signature is refused")]
    Invalid {
        /// The node id.
        node: String,
        /// Why.
        #[source]
        source: MembershipError,
    },
}

/// Checks an enrollment's membership signature `sig` (base64, if given) for node `node_id`
/// with `wg_key` and `identity` against the configured `key`: required and verified when
/// the key is set, decoded only when it is not. Returns the signature to store.
pub fn check_enrollment(
    key: Option<&MembershipPublic>,
    node_id: &str,
    wg_key: &PublicKey,
    identity: &IdentityPublic,
    sig: Option<&str>,
) -> Result<Option<MembershipSig>, SigRefusal> {
    let sig = sig
        .map(MembershipSig::from_base64)
        .transpose()
        .map_err(|source| SigRefusal::Invalid {
            node: node_id.to_owned(),
            source,
        })?;
    check_signature(key, node_id, wg_key, identity, sig)
}

/// [`check_enrollment`] of a decoded signature (an invite's enrollment claim carries one).
pub fn check_signature(
    key: Option<&MembershipPublic>,
    node_id: &str,
    wg_key: &PublicKey,
    identity: &IdentityPublic,
    sig: Option<MembershipSig>,
) -> Result<Option<MembershipSig>, SigRefusal> {
    match (key, sig) {
        (Some(key), Some(sig)) => {
            key.verify(node_id, wg_key, identity, &sig)
                .map_err(|source| SigRefusal::Invalid {
                    node: node_id.to_owned(),
                    source,
                })?;
            Ok(Some(sig))
        }
        (Some(_), None) => Err(SigRefusal::Missing {
            node: node_id.to_owned(),
        }),
        (None, sig) => Ok(sig),
    }
}

/// Logs, at start, that enrollments need a signature by `key` (if one is configured).
pub fn announce(key: Option<&MembershipPublic>) {
    if let Some(key) = key {
        tracing::info!(
            membership_key = %key,
            "enrollments need a membership signature by this key ([membership] public_key)"
        );
    }
}

/// `membership key new FILE`: writes a fresh membership key (0600, never over an existing
/// file) and returns its public half.
pub fn key_new(file: &Path) -> Result<MembershipPublic, CommandError> {
    let key = MembershipKey::generate();
    write_secret(file, &key.to_base64())?;
    Ok(key.public())
}

/// `membership sign`: the signature of the key in `key_file` over node `node_id`'s
/// WireGuard key `wg_key` and identity key `identity_key` (both base64).
pub fn sign(
    key_file: &Path,
    node_id: &str,
    wg_key: &str,
    identity_key: &str,
) -> Result<MembershipSig, CommandError> {
    let arg =
        |name: &str, e: &dyn std::fmt::Display| CommandError::Argument(format!("{name}: {e}"));
    let wg_key = PublicKey::from_base64(wg_key).map_err(|e| arg("--wg-key", &e))?;
    if wg_key.is_low_order() {
        return Err(arg("--wg-key", &"a key of small order (such as all-zero)"));
    }
    let identity =
        IdentityPublic::from_base64(identity_key).map_err(|e| arg("--identity-key", &e))?;
    let text = read_secret(key_file)?;
    let key = MembershipKey::from_base64(&text).map_err(|e| CommandError::File {
        path: key_file.to_owned(),
        reason: e.to_string(),
    })?;
    key.sign(node_id, &wg_key, &identity)
        .map_err(|e| arg("--node", &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtun_proto::{IdentityKey, PrivateKey};

    #[test]
    fn key_new_and_sign_make_a_signature_the_check_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("membership.key");
        let public = key_new(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        assert!(
            key_new(&file).is_err(),
            "an existing key file is never replaced"
        );
        let wg = PrivateKey::generate().public_key();
        let identity = IdentityKey::generate().public();
        let sig = sign(&file, "node-a", &wg.to_base64(), &identity.to_base64()).unwrap();
        let text = sig.to_base64();
        let checked = check_enrollment(Some(&public), "node-a", &wg, &identity, Some(&text));
        assert_eq!(checked, Ok(Some(sig)));
        assert!(sign(&file, "Bad/Id", &wg.to_base64(), &identity.to_base64()).is_err());
        assert!(sign(&file, "node-a", &"A".repeat(44), &identity.to_base64()).is_err());
        let missing = dir.path().join("nothing.key");
        assert!(sign(&missing, "node-a", &wg.to_base64(), &identity.to_base64()).is_err());
    }

    #[test]
    fn node_add_refuses_a_bad_or_missing_signature_and_stores_a_good_one() {
        use crate::commands::{init, node_add, node_list};
        use crate::config::ControllerConfig;
        let dir = tempfile::tempdir().unwrap();
        let key = MembershipKey::generate();
        let text = format!(
            "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\n\
             state_dir = \"state\"\n[network]\nipv4 = \"100.64.0.0/24\"\n\
             [membership]\npublic_key = \"{}\"\n",
            key.public()
        );
        let config = ControllerConfig::parse(&text, &dir.path().join("c.toml")).unwrap();
        init(&config).unwrap();
        let wg = PrivateKey::generate().public_key();
        let identity = IdentityKey::generate().public();
        let add = |node: &str, sig: Option<&str>| {
            node_add(
                &config,
                node,
                &wg.to_base64(),
                &identity.to_base64(),
                vec!["100.64.0.1/24".parse().unwrap()],
                None,
                sig,
            )
            .map_err(|e| meshtun_proto::report::describe(&e))
        };
        let missing = add("node-a", None).unwrap_err();
        assert!(
            missing.contains("requires a membership signature"),
            "{missing}"
        );
        let for_b = key.sign("node-b", &wg, &identity).unwrap().to_base64();
        let wrong = add("node-a", Some(&for_b)).unwrap_err();
        assert!(wrong.contains("does not verify"), "{wrong}");
        assert!(
            node_list(&config).unwrap().is_empty(),
            "nothing was enrolled"
        );
        let good = key.sign("node-a", &wg, &identity).unwrap();
        let node = add("node-a", Some(&good.to_base64())).unwrap();
        assert_eq!(node.membership_sig, Some(good));
        let stored = node_list(&config).unwrap();
        assert_eq!(stored, vec![node]);
    }

    #[test]
    fn the_check_refuses_a_missing_foreign_or_malformed_signature_when_the_key_is_set() {
        let key = MembershipKey::generate();
        let wg = PrivateKey::generate().public_key();
        let identity = IdentityKey::generate().public();
        let good = key.sign("node-a", &wg, &identity).unwrap().to_base64();
        let public = key.public();
        let check = |node: &str, wg: &PublicKey, sig: Option<&str>| {
            check_enrollment(Some(&public), node, wg, &identity, sig)
        };
        assert!(matches!(
            check("node-a", &wg, None),
            Err(SigRefusal::Missing { .. })
        ));
        let other_wg = PrivateKey::generate().public_key();
        let foreign = MembershipKey::generate()
            .sign("node-a", &wg, &identity)
            .unwrap()
            .to_base64();
        for (node, wg, sig) in [
            ("node-b", &wg, good.as_str()),
            ("node-a", &other_wg, good.as_str()),
            ("node-a", &wg, foreign.as_str()),
            ("node-a", &wg, "garbage"),
        ] {
            let refused = check(node, wg, Some(sig)).unwrap_err();
            assert!(matches!(refused, SigRefusal::Invalid { .. }), "{refused}");
            assert!(refused.to_string().contains(node), "{refused}");
        }
        // Without the key, a signature is stored as given (nodes check it), none is fine.
        assert_eq!(
            check_enrollment(None, "node-a", &wg, &identity, None),
            Ok(None)
        );
        let stored = check_enrollment(None, "node-b", &wg, &identity, Some(&good)).unwrap();
        assert!(stored.is_some());
        assert!(check_enrollment(None, "node-a", &wg, &identity, Some("garbage")).is_err());
    }
}
