use meshtun_proto::IdentityKey;

use super::*;
use crate::config::Config;

const NOW_MS: u64 = 1_700_000_000_000;

fn ticket() -> Ticket {
    Ticket {
        url: "http://192.0.2.10:8700/".into(),
        controller_key: IdentityKey::generate().public(),
        enroll_key: meshtun_proto::PrivateKey::generate().public_key(),
        node_id: "node-d".into(),
        token: "secret-token".into(),
        expires_ms: NOW_MS + 60_000,
        membership_key: None,
    }
}

fn options(dir: &Path) -> JoinOptions {
    JoinOptions {
        ticket: ticket(),
        config: Some(dir.join("wg0.toml")),
        interface: "wg0".into(),
        listen_port: 51820,
        addresses: vec!["100.64.0.4/24".parse().unwrap()],
        endpoint: Some("192.0.2.4:51820".into()),
        benchmark: None,
        force: false,
        membership_sig: None,
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_expired_ticket_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.ticket.expires_ms = NOW_MS - 120_000;
    let err = prepare(&options, NOW_MS).err().unwrap();
    assert_eq!(
        err.to_string(),
        "the ticket for node node-d (controller http://192.0.2.10:8700) expired 120 s ago; \
         ask the controller's admin for a new one (`meshtun-controller invite node-d`)"
    );
    assert!(entries(dir.path()).is_empty());
}

#[test]
fn preparing_creates_only_the_identity_and_a_valid_draft() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/wg0.toml");
    let options = JoinOptions {
        config: Some(path.clone()),
        ..options(dir.path())
    };
    let prepared = prepare(&options, NOW_MS).unwrap();
    assert!(prepared.identity.created);
    assert_eq!(entries(&dir.path().join("sub")), ["wg0.identity"]);
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&dir.path().join("sub")), 0o700);
    assert_eq!(mode(&dir.path().join("sub/wg0.identity")), 0o600);
    let controller = &prepared.draft.controller;
    assert_eq!(controller.urls, ["http://192.0.2.10:8700"]);
    assert_eq!(
        controller.public_keys.keys(),
        [options.ticket.controller_key]
    );
    assert_eq!(
        controller.identity_key_file,
        dir.path().join("sub/wg0.identity")
    );
    let text = prepared.draft.render_checked(&path).unwrap();
    let config = Config::parse(&text, &path).unwrap();
    assert_eq!(config.interface.addresses, options.addresses);
    assert_eq!(config.interface.listen_port, Some(51820));

    // A second attempt reuses the identity key.
    let again = prepare(&options, NOW_MS).unwrap();
    assert!(!again.identity.created);
    assert_eq!(again.identity.key.public(), prepared.identity.key.public());
    assert_ne!(
        again.draft.interface.private_key.public_key(),
        prepared.draft.interface.private_key.public_key()
    );
}

#[test]
fn an_existing_configuration_is_kept_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let path = dir.path().join("wg0.toml");
    std::fs::write(&path, "# mine\n").unwrap();
    let err = prepare(&options, NOW_MS).err().unwrap();
    assert!(matches!(err, JoinError::ConfigExists { .. }), "{err}");
    assert!(err.to_string().contains("pass --force"), "{err}");
    assert_eq!(
        entries(dir.path()),
        ["wg0.toml"],
        "nothing else was created"
    );
    let forced = JoinOptions {
        force: true,
        ..options.clone()
    };
    prepare(&forced, NOW_MS).unwrap();

    let directory = JoinOptions {
        config: Some(dir.path().to_owned()),
        ..forced
    };
    let err = prepare(&directory, NOW_MS).err().unwrap();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

#[test]
fn bad_options_are_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let base = options(dir.path());
    let mut bad_name = base.clone();
    bad_name.interface = "wg0/../x".into();
    let mut bad_endpoint = base.clone();
    bad_endpoint.endpoint = Some("192.0.2.4".into());
    let mut bad_node = base.clone();
    bad_node.ticket.node_id = "Node D".into();
    let mut bad_url = base.clone();
    bad_url.ticket.url = "http://192.0.2.10:8700/api".into();
    let mut bad_address = base.clone();
    bad_address.addresses = vec!["fd00::4/64".parse().unwrap()];
    bad_address.benchmark = Some(BenchmarkSourceConfig::Command(vec![String::new()]));
    for (options, expected) in [
        (bad_name, "--interface:"),
        (bad_endpoint, "--endpoint:"),
        (bad_node, "not a valid node id"),
        (bad_url, "has a path"),
        (bad_address, "would not load, so nothing was sent"),
    ] {
        let err = prepare(&options, NOW_MS).err().unwrap().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(!err.contains("secret-token"), "{err}");
        assert!(entries(dir.path()).is_empty(), "{expected}");
    }
}

#[test]
fn options_never_show_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let shown = format!("{:?}", options(dir.path()));
    assert!(shown.contains("node-d"), "{shown}");
    assert!(!shown.contains("secret-token"), "{shown}");
}

#[test]
fn an_assignment_outside_the_overlay_or_a_default_route_overlay_is_refused() {
    let reply = |addresses: &[&str], network: &[&str]| EnrollResponse {
        request_digest: String::new(),
        node_id: "node-d".into(),
        wg_public_key: PrivateKey::generate().public_key(),
        identity_key: IdentityKey::generate().public(),
        addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        endpoint: None,
        network: network.iter().map(|n| n.parse().unwrap()).collect(),
    };
    check_assignment(&reply(&["100.64.0.4/24"], &["100.64.0.0/10"])).unwrap();
    // A connected route for half of IPv4 (review #10), or an address outside the overlay.
    let err = check_assignment(&reply(&["1.0.0.1/1"], &["100.64.0.0/10"])).unwrap_err();
    assert!(err.contains("1.0.0.1/1"), "{err}");
    let err = check_assignment(&reply(&["100.64.0.4/8"], &["100.64.0.0/10"])).unwrap_err();
    assert!(err.contains("outside the overlay prefixes"), "{err}");
    let err = check_assignment(&reply(&["1.0.0.1/1"], &["0.0.0.0/1"])).unwrap_err();
    assert!(err.contains("shorter than /8"), "{err}");
}

/// A ticket naming a membership key: the first run keeps the WireGuard key in the pending
/// key file (0600) and stops asking for the signature of exactly these keys; a later run
/// reads the same keys back; only the key's signature over them passes, and the
/// configuration names the membership key.
#[test]
fn a_mesh_with_a_membership_key_keeps_the_keys_and_asks_for_their_signature() {
    use meshtun_proto::membership::MembershipKey;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let key = MembershipKey::generate();
    let mut opts = options(dir.path());
    opts.ticket.membership_key = Some(key.public());
    let first = prepare(&opts, NOW_MS).unwrap();
    let pending = dir.path().join("wg0.toml.pending-key");
    assert_eq!(first.pending, pending);
    let mode = std::fs::metadata(&pending).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let wg = first.draft.interface.private_key.clone();
    let identity = first.identity.key.public();
    let keys = (&wg, &identity);
    let asked = membership::check(&opts.ticket, None, keys, &pending).unwrap_err();
    let text = asked.to_string();
    assert!(matches!(asked, JoinError::SignatureNeeded { .. }), "{text}");
    for part in [
        "meshtun-controller membership sign".to_owned(),
        "--node node-d".to_owned(),
        format!("--wg-key {}", wg.public_key()),
        format!("--identity-key {identity}"),
    ] {
        assert!(text.contains(&part), "{part:?} not in: {text}");
    }
    assert!(
        !text.contains(&wg.to_base64()),
        "the private key is printed: {text}"
    );

    let second = prepare(&opts, NOW_MS).unwrap();
    assert_eq!(
        second.draft.interface.private_key.public_key(),
        wg.public_key(),
        "a new key was made"
    );
    assert_eq!(second.identity.key.public(), identity);
    let for_other = key.sign("node-e", &wg.public_key(), &identity).unwrap();
    let by_other = MembershipKey::generate()
        .sign("node-d", &wg.public_key(), &identity)
        .unwrap();
    for wrong in [for_other, by_other] {
        let err = membership::check(&opts.ticket, Some(wrong), keys, &pending).unwrap_err();
        assert!(matches!(err, JoinError::MembershipSig { .. }), "{err}");
    }
    let good = key.sign("node-d", &wg.public_key(), &identity).unwrap();
    let checked = membership::check(&opts.ticket, Some(good), keys, &pending).unwrap();
    assert_eq!(checked, Some(good));
    let written = second.draft.render_checked(&second.path).unwrap();
    assert!(
        written.contains(&format!("membership_key = \"{}\"", key.public())),
        "{written}"
    );

    // Without a membership key in the ticket nothing is kept and nothing is asked.
    let plain = tempfile::tempdir().unwrap();
    let prepared = prepare(&options(plain.path()), NOW_MS).unwrap();
    assert!(!prepared.pending.exists());
    let keys = (&prepared.draft.interface.private_key, &identity);
    assert!(matches!(
        membership::check(&ticket(), None, keys, &pending),
        Ok(None)
    ));
}
