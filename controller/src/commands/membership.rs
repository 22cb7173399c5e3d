//! `meshtun-controller node add | list | remove | pin` and `invite`: who is in the mesh.
//! They act on the database directly, as the evaluator commands do.

use ipnet::IpNet;
use meshtun_proto::enroll::enrollment_key;
use meshtun_proto::report::describe;
use meshtun_proto::wire::{check_endpoint, valid_node_id, Ticket};
use meshtun_proto::{IdentityPublic, PublicKey};

use super::{load_key, random_token, CommandError};
use crate::clock::Clock;
use crate::config::ControllerConfig;
use crate::enrollment_sig::check_enrollment;
use crate::model::{NodeRecord, Pin};
use crate::store::Store;

/// `node add`.
pub fn node_add(
    config: &ControllerConfig,
    name: &str,
    wg_key: &str,
    identity_key: &str,
    addresses: Vec<IpNet>,
    endpoint: Option<String>,
    membership_sig: Option<&str>,
) -> Result<NodeRecord, CommandError> {
    if !valid_node_id(name) {
        return Err(CommandError::Argument(format!(
            "node id {name:?}: use 1 to 64 characters from a-z 0-9 - _ ."
        )));
    }
    let wg_public_key = PublicKey::from_base64(wg_key)
        .map_err(|e| CommandError::Argument(format!("--wg-key: {e}")))?;
    if wg_public_key.is_low_order() {
        return Err(CommandError::Argument(format!(
            "--wg-key: {wg_public_key} is of small order (such as all-zero): anyone could \
             compute what is shared with it; generate a real key (`meshtun genkey`)"
        )));
    }
    let identity_key = IdentityPublic::from_base64(identity_key)
        .map_err(|e| CommandError::Argument(format!("--identity-key: {e}")))?;
    check_assignment(config, &addresses, endpoint.as_deref())?;
    let membership_sig = check_enrollment(
        config.membership_key.as_ref(),
        name,
        &wg_public_key,
        &identity_key,
        membership_sig,
    )
    .map_err(|e| CommandError::Argument(format!("--membership-sig: {}", describe(&e))))?;
    let node = NodeRecord {
        id: name.to_owned(),
        wg_public_key,
        identity_key,
        addresses,
        endpoint,
        pin: None,
        enrolled_ms: Clock::system().now_ms(),
        membership_sig,
    };
    Store::connect(&config.database)?.add_node(&node)?;
    Ok(node)
}

/// Checks addresses and an endpoint an admin gives against `[network]` and `host:port`.
fn check_assignment(
    config: &ControllerConfig,
    addresses: &[IpNet],
    endpoint: Option<&str>,
) -> Result<(), CommandError> {
    config
        .network
        .check(addresses)
        .map_err(|e| CommandError::Argument(format!("--address: {e}")))?;
    if let Some(text) = endpoint {
        check_endpoint(text).map_err(|e| CommandError::Argument(format!("--endpoint: {e}")))?;
    }
    Ok(())
}

/// `node list`.
pub fn node_list(config: &ControllerConfig) -> Result<Vec<NodeRecord>, CommandError> {
    Ok(Store::connect(&config.database)?.nodes()?)
}

/// `node remove`.
pub fn node_remove(config: &ControllerConfig, name: &str) -> Result<(), CommandError> {
    if Store::connect(&config.database)?.remove_node(name)? {
        Ok(())
    } else {
        Err(CommandError::Argument(format!("no node {name}")))
    }
}

/// `node pin`.
pub fn node_pin(
    config: &ControllerConfig,
    name: &str,
    pin: Option<Pin>,
) -> Result<(), CommandError> {
    Ok(Store::connect(&config.database)?.set_pin(name, pin)?)
}

/// `invite`: stores a one-time token and returns the printable ticket.
pub fn invite(
    config: &ControllerConfig,
    name: &str,
    addresses: &[IpNet],
    endpoint: Option<&str>,
    ttl_secs: Option<u64>,
) -> Result<String, CommandError> {
    check_assignment(config, addresses, endpoint)?;
    let key = load_key(config)?;
    let token = random_token();
    let ttl_ms = ttl_secs.map_or(
        u64::try_from(config.invite_ttl.as_millis()).unwrap_or(u64::MAX),
        |s| s.saturating_mul(1000),
    );
    let expires_ms = Clock::system().now_ms().saturating_add(ttl_ms);
    let addresses = (!addresses.is_empty()).then_some(addresses);
    Store::connect(&config.database)?
        .create_invite(name, &token, expires_ms, addresses, endpoint)?;
    Ok(Ticket {
        url: config.url.clone(),
        controller_key: key.public(),
        enroll_key: enrollment_key(&key).public_key(),
        node_id: name.to_owned(),
        token,
        expires_ms,
        membership_key: config.membership_key,
    }
    .encode())
}

#[cfg(test)]
mod tests {
    use meshtun_proto::IdentityKey;

    use super::super::init;
    use super::*;

    #[test]
    fn node_add_and_invite_refuse_small_order_keys_foreign_addresses_and_bad_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("controller.toml");
        let text =
            "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"state\"\n\
                    [network]\nipv4 = \"100.64.0.0/24\"\n";
        let config = ControllerConfig::parse(text, &file).unwrap();
        init(&config).unwrap();
        let identity = IdentityKey::generate().public().to_base64();
        let good = meshtun_proto::PrivateKey::generate()
            .public_key()
            .to_base64();
        let add = |key: &str, address: &str, endpoint: Option<&str>| {
            node_add(
                &config,
                "node-a",
                key,
                &identity,
                vec![address.parse().unwrap()],
                endpoint.map(str::to_owned),
                None,
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let zero = PublicKey::from_bytes([0; 32]).to_base64();
        assert!(add(&zero, "100.64.0.1/24", None)
            .unwrap_err()
            .contains("small order"));
        assert!(add(&good, "0.0.0.0/1", None)
            .unwrap_err()
            .contains("outside the overlay"));
        assert!(add(&good, "100.64.0.1/24", Some("nowhere"))
            .unwrap_err()
            .contains("--endpoint"));
        add(&good, "100.64.0.1/24", Some("192.0.2.1:51820")).unwrap();
        let err = invite(
            &config,
            "node-b",
            &["100.64.0.1/24".parse().unwrap()],
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("already held by node node-a"), "{err}");
        // The ticket names the enrollment key derived from the controller key.
        let ticket = Ticket::decode(&invite(&config, "node-b", &[], None, None).unwrap()).unwrap();
        let key = load_key(&config).unwrap();
        assert_eq!(ticket.controller_key, key.public());
        assert_eq!(ticket.enroll_key, enrollment_key(&key).public_key());
    }
}
