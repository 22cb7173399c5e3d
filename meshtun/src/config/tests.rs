//! Tests of the TOML configuration: good files, bad files and their messages, key files,
//! permission warnings, and what the configuration hands to the device and the host.

use std::fs;
use std::net::{IpAddr, SocketAddr};

use super::*;

/// From `wg pubkey`: this private key has the public key [`OWN_PUBLIC`].
pub(super) const PRIVATE: &str = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
pub(super) const OWN_PUBLIC: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

/// A distinct public key per `n`.
pub(super) fn public(n: u8) -> String {
    PublicKey::from_bytes([n; 32]).to_base64()
}

/// A distinct preshared key per `n` (never zero).
pub(super) fn psk(n: u8) -> String {
    PresharedKey::from_bytes([n; 32]).to_base64()
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/meshtun/wg0.toml"))
}

/// The error message for `text`, which must be refused.
fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(err) => err.to_string(),
    }
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

fn minimal() -> String {
    format!("[interface]\nprivate_key = \"{PRIVATE}\"\n")
}

#[test]
fn every_key_is_read() {
    let text = format!(
        r#"# a full configuration
[interface]
name = "mesh0"
private_key = "{PRIVATE}"
address = ["100.64.0.1/24", "fd00::1/64", "10.9.0.1"]
listen_port = 51820
mtu = 1380
fwmark = "0xca6c"
dns = ["100.64.0.53", "mesh.internal", "fd00::53"]
table = 1234
scheduling = "realtime"
pre_up = "echo pre-up %i"
post_up = ["echo up %i", "echo up again"]
pre_down = []
post_down = "echo down"

[[peer]]
public_key = "{p1}"
preshared_key = "{k1}"
allowed_ips = ["100.64.0.2/32", "10.1.0.7/16"]
endpoint = "peer1.example.net:51820"
persistent_keepalive = 25

[[peer]]
public_key = "{p2}"
allowed_ips = ["fd00::2/128"]
endpoint = "[fd00::2]:51821"
persistent_keepalive = "off"
"#,
        p1 = public(1),
        k1 = psk(9),
        p2 = public(2),
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.path, Path::new("/etc/meshtun/wg0.toml"));
    let interface = &config.interface;
    assert_eq!(interface.name, "mesh0");
    assert_eq!(interface.private_key.public_key().to_base64(), OWN_PUBLIC);
    assert_eq!(
        interface.addresses,
        vec![net("100.64.0.1/24"), net("fd00::1/64"), net("10.9.0.1/32")]
    );
    assert_eq!(interface.listen_port, Some(51820));
    assert_eq!(interface.mtu, 1380);
    assert_eq!(interface.fwmark, Some(0xca6c));
    assert_eq!(interface.scheduling, crate::sched::Scheduling::Realtime);
    assert_eq!(
        interface.dns.servers,
        vec![
            "100.64.0.53".parse::<IpAddr>().unwrap(),
            "fd00::53".parse().unwrap()
        ]
    );
    assert_eq!(interface.dns.search, vec!["mesh.internal"]);
    assert_eq!(interface.table, RouteTable::Id(1234));
    assert_eq!(interface.hooks.pre_up, vec!["echo pre-up %i"]);
    assert_eq!(interface.hooks.post_up, vec!["echo up %i", "echo up again"]);
    assert!(interface.hooks.pre_down.is_empty());
    assert_eq!(interface.hooks.post_down, vec!["echo down"]);

    let [first, second] = config.peers.as_slice() else {
        panic!("expected two peers");
    };
    assert_eq!(first.public_key.to_base64(), public(1));
    assert_eq!(
        first.preshared_key.as_ref().map(PresharedKey::to_base64),
        Some(psk(9))
    );
    assert_eq!(
        first.allowed_ips,
        vec![net("100.64.0.2/32"), net("10.1.0.0/16")]
    );
    let endpoint = first.endpoint.as_ref().unwrap();
    assert_eq!(
        (endpoint.host.as_str(), endpoint.port),
        ("peer1.example.net", 51820)
    );
    assert_eq!(first.persistent_keepalive, Some(25));
    assert_eq!(second.preshared_key, None);
    assert_eq!(second.endpoint.as_ref().unwrap().host, "fd00::2");
    assert_eq!(second.persistent_keepalive, None);
}

#[test]
fn defaults_apply_to_a_minimal_file() {
    let config = parse(&minimal()).unwrap();
    let interface = &config.interface;
    assert_eq!(interface.name, "wg0", "the name defaults to the file stem");
    assert_eq!(interface.mtu, 1420);
    assert_eq!(interface.table, RouteTable::Auto);
    assert_eq!(interface.listen_port, None);
    assert_eq!(interface.fwmark, None);
    assert!(interface.addresses.is_empty());
    assert!(interface.dns.is_empty());
    assert_eq!(interface.hooks, Hooks::default());
    assert_eq!(interface.scheduling, crate::sched::Scheduling::Normal);
    assert!(config.peers.is_empty());
}

#[test]
fn off_and_zero_mean_none() {
    let text = format!(
        "{}fwmark = 0\ntable = \"off\"\n[[peer]]\npublic_key = \"{}\"\npersistent_keepalive = 0\n",
        minimal(),
        public(1)
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.interface.fwmark, None);
    assert_eq!(config.interface.table, RouteTable::Off);
    assert_eq!(config.peers[0].persistent_keepalive, None);
    let config = parse(&format!("{}fwmark = \"off\"\n", minimal())).unwrap();
    assert_eq!(config.interface.fwmark, None);
}

#[test]
fn allowed_ips_are_normalised_and_deduplicated_within_a_peer() {
    let text = format!(
        "{}[[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"10.0.0.7/24\", \"10.0.0.0/24\", \"fd00::5/64\", \"192.0.2.1\"]\n",
        minimal(),
        public(1)
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.peers[0].allowed_ips,
        vec![net("10.0.0.0/24"), net("fd00::/64"), net("192.0.2.1/32")]
    );
}

/// Each case: a fragment appended to a valid `[interface]`, and the parts the message must
/// contain (the line, the key, and the reason).
#[test]
fn bad_interface_values_name_line_and_key() {
    let cases: &[(&str, &[&str])] = &[
        (
            "bogus = 1",
            &["line 3", "`interface.bogus`", "unknown field `bogus`"],
        ),
        (
            "listen_port = \"x\"",
            &["line 3", "`interface.listen_port`", "invalid type"],
        ),
        (
            "listen_port = 70000",
            &["line 3", "`interface.listen_port`", "70000"],
        ),
        (
            "mtu = 100",
            &["line 3", "`interface.mtu`", "between 576 and 65535"],
        ),
        (
            "name = \"a-very-long-name0\"",
            &["line 3", "`interface.name`", "at most 15"],
        ),
        (
            "name = \"wg 0\"",
            &["line 3", "`interface.name`", "whitespace"],
        ),
        (
            "address = [\"10.0.0.1/24\",\n  \"10.0.0.300\"]",
            &["line 4", "`interface.address`", "10.0.0.300"],
        ),
        (
            "address = \"10.0.0.1/24\"",
            &["line 3", "`interface.address`", "expected a sequence"],
        ),
        (
            "fwmark = \"on\"",
            &["line 3", "`interface.fwmark`", "not a firewall mark"],
        ),
        (
            "fwmark = true",
            &["line 3", "`interface.fwmark`", "integer or a string"],
        ),
        (
            "table = \"wg\"",
            &["line 3", "`interface.table`", "not a routing table"],
        ),
        (
            "scheduling = \"fifo\"",
            &[
                "line 3",
                "`interface.scheduling`",
                "\"realtime\" or \"normal\"",
            ],
        ),
        (
            "dns = [\"a b\"]",
            &["line 3", "`interface.dns`", "neither an IP address"],
        ),
        (
            "pre_up = 5",
            &["line 3", "`interface.pre_up`", "command string"],
        ),
        (
            "post_down = [\"ok\", 1]",
            &["line 3", "`interface.post_down`", "found integer"],
        ),
        (
            "post_up = \"\"",
            &["line 3", "`interface.post_up`", "empty"],
        ),
        (
            "private_key_file = \"wg0.key\"",
            &["line 3", "`interface.private_key_file`", "not both"],
        ),
        ("mtu = 14x0", &["line 3", "`interface.mtu`"]),
        ("name = \"a\"\nname = \"b\"", &["line 4", "duplicate key"]),
    ];
    for (fragment, expected) in cases {
        let message = error(&format!("{}{fragment}\n", minimal()));
        assert!(message.starts_with("/etc/meshtun/wg0.toml: "), "{message}");
        for part in *expected {
            assert!(
                message.contains(part),
                "{fragment:?}: {message:?} lacks {part:?}"
            );
        }
    }
}

#[test]
fn ipv6_needs_an_mtu_of_1280() {
    let base = format!("{}address = [\"fd00::1/64\"]\n", minimal());
    let message = error(&format!("{base}mtu = 1200\n"));
    assert!(
        message.contains("line 4: `interface.mtu`: 1200 is too small"),
        "{message}"
    );
    assert_eq!(
        parse(&format!("{base}mtu = 1280\n")).unwrap().interface.mtu,
        1280
    );
    let v4 = format!("{}address = [\"10.0.0.1/24\"]\nmtu = 1200\n", minimal());
    assert_eq!(parse(&v4).unwrap().interface.mtu, 1200);
}

#[test]
fn private_key_problems() {
    let message = error("[interface]\nname = \"wg0\"\n");
    assert!(
        message.contains("line 1: `interface.private_key`: missing"),
        "{message}"
    );

    let almost = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBm=";
    let message = error(&format!("[interface]\nprivate_key = \"{almost}\"\n"));
    assert!(message.contains("line 2: `interface.private_key`: not a valid private key"));
    assert!(!message.contains(almost), "the key leaked into {message:?}");

    let message = error("[interface]\nprivate_key = 5\n");
    assert!(
        message.contains("line 2: `interface.private_key`: invalid type"),
        "{message}"
    );
}

#[test]
fn bad_peer_values_name_the_peer_line_and_key() {
    let cases: &[(String, &[&str])] = &[
        (
            "allowed_ips = []".into(),
            &["line 3", "`peer#1.public_key`", "missing"],
        ),
        (
            format!(
                "public_key = \"{}\"\nallowed_ips = [\"10.0.0.0/33\"]",
                public(1)
            ),
            &["line 5", "`peer#1.allowed_ips`", "10.0.0.0/33"],
        ),
        (
            format!(
                "public_key = \"{}\"\nendpoint = \"fd00::1:51820\"",
                public(1)
            ),
            &["line 5", "`peer#1.endpoint`", "needs brackets"],
        ),
        (
            format!(
                "public_key = \"{}\"\npersistent_keepalive = 70000",
                public(1)
            ),
            &["line 5", "`peer#1.persistent_keepalive`", "70000"],
        ),
        (
            format!(
                "public_key = \"{}\"\npreshared_key = \"{}\"",
                public(1),
                PresharedKey::from_bytes([0; 32]).to_base64()
            ),
            &[
                "line 5",
                "`peer#1.preshared_key`",
                "an all-zero preshared key means no key in WireGuard; remove the key instead",
            ],
        ),
        (
            format!(
                "public_key = \"{}\"\npreshared_key = \"{}\"\npreshared_key_file = \"x.psk\"",
                public(1),
                psk(1)
            ),
            &["line 6", "`peer#1.preshared_key_file`", "not both"],
        ),
        (
            format!("public_key = \"{}\"\nallowed_ip = []", public(1)),
            &["line 5", "`peer#1.allowed_ip`", "unknown field"],
        ),
        (
            "public_key = \"AAAA\"".into(),
            &["line 4", "`peer#1.public_key`", "must be 32 bytes"],
        ),
    ];
    for (fragment, expected) in cases {
        let message = error(&format!("{}[[peer]]\n{fragment}\n", minimal()));
        for part in *expected {
            assert!(
                message.contains(part),
                "{fragment:?}: {message:?} lacks {part:?}"
            );
        }
    }
}

#[test]
fn the_second_peer_is_numbered() {
    let text = format!(
        "{}[[peer]]\npublic_key = \"{}\"\n\n[[peer]]\npublic_key = \"{}\"\nendpoint = \"x\"\n",
        minimal(),
        public(1),
        public(2)
    );
    let message = error(&text);
    assert!(
        message.contains("line 8: `peer#2.endpoint`: `x` is not HOST:PORT"),
        "{message}"
    );
}

#[test]
fn duplicate_and_own_public_keys_are_refused() {
    let text = format!(
        "{}[[peer]]\npublic_key = \"{k}\"\n[[peer]]\npublic_key = \"{k}\"\n",
        minimal(),
        k = public(1)
    );
    let message = error(&text);
    assert!(message.contains("line 6: `peer#2.public_key`"), "{message}");
    assert!(
        message.contains("also the public key of peer #1 (line 4)"),
        "{message}"
    );

    let text = format!("{}[[peer]]\npublic_key = \"{OWN_PUBLIC}\"\n", minimal());
    let message = error(&text);
    assert!(message.contains("line 4: `peer#1.public_key`"), "{message}");
    assert!(
        message.contains("this interface's own public key"),
        "{message}"
    );
}

#[test]
fn an_allowed_ip_belongs_to_one_peer() {
    let text = format!(
        "{}[[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"10.0.0.0/24\"]\n\
         [[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"10.1.0.0/24\",\n  \"10.0.0.9/24\"]\n",
        minimal(),
        public(1),
        public(2)
    );
    let message = error(&text);
    assert!(
        message.contains("line 9: `peer#2.allowed_ips`"),
        "{message}"
    );
    assert!(
        message.contains("10.0.0.0/24 is an allowed IP of both"),
        "{message}"
    );
    assert!(
        message.contains(&format!("peer #1 ({})", public(1))),
        "{message}"
    );
    assert!(
        message.contains(&format!("peer #2 ({})", public(2))),
        "{message}"
    );
}

#[test]
fn empty_and_incomplete_files_are_refused() {
    for text in ["", "\n\n", "# only a comment\n"] {
        let err = parse(text).unwrap_err();
        assert!(matches!(err, ConfigError::Empty { .. }), "{text:?}: {err}");
        assert_eq!(
            err.to_string(),
            "/etc/meshtun/wg0.toml: the configuration is empty; it needs an [interface] section"
        );
    }
    let text = format!("[[peer]]\npublic_key = \"{}\"\n", public(1));
    assert_eq!(
        error(&text),
        "/etc/meshtun/wg0.toml: there is no [interface] section"
    );
}

#[test]
fn unknown_sections_are_refused() {
    for section in ["gate", "Controller", "Interface"] {
        let message = error(&format!("{}[{section}]\n", minimal()));
        assert!(
            message.contains(&format!("line 3: `{section}`: unknown field")),
            "{message}"
        );
    }
}

#[test]
fn interface_without_usable_file_name_needs_a_name() {
    let text = minimal();
    let err = Config::parse(&text, Path::new("/etc/meshtun/has space.toml")).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("line 1: `interface.name`: not set"),
        "{message}"
    );
    let named = format!("{text}name = \"wg1\"\n");
    let config = Config::parse(&named, Path::new("/etc/meshtun/has space.toml")).unwrap();
    assert_eq!(config.interface.name, "wg1");
}

#[test]
fn oversized_text_is_refused() {
    let text = format!("{}{}", minimal(), "#".repeat(MAX_CONFIG_SIZE));
    assert!(matches!(parse(&text), Err(ConfigError::TooLarge { .. })));
}

#[test]
fn key_files_are_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("wg0.key"), format!("{PRIVATE}\n")).unwrap();
    fs::create_dir(dir.path().join("psk")).unwrap();
    fs::write(dir.path().join("psk/peer1.psk"), psk(7)).unwrap();
    let config_path = dir.path().join("wg0.toml");
    let text = format!(
        "[interface]\nprivate_key_file = \"wg0.key\"\n[[peer]]\npublic_key = \"{}\"\npreshared_key_file = \"psk/peer1.psk\"\n",
        public(1)
    );
    fs::write(&config_path, &text).unwrap();
    let config = Config::load(&config_path).unwrap();
    assert_eq!(
        config.interface.private_key.public_key().to_base64(),
        OWN_PUBLIC
    );
    assert_eq!(
        config.peers[0].preshared_key.as_ref().unwrap().to_base64(),
        psk(7)
    );
}

#[test]
fn key_file_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("wg0.toml");
    let message = Config::parse(
        "[interface]\nprivate_key_file = \"missing.key\"\n",
        &config_path,
    )
    .unwrap_err()
    .to_string();
    let missing = dir.path().join("missing.key");
    assert!(
        message.contains("line 2: `interface.private_key_file`: cannot read"),
        "{message}"
    );
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );

    fs::write(
        dir.path().join("zero.psk"),
        PresharedKey::from_bytes([0; 32]).to_base64(),
    )
    .unwrap();
    let text = format!(
        "{}[[peer]]\npublic_key = \"{}\"\npreshared_key_file = \"zero.psk\"\n",
        minimal(),
        public(1)
    );
    let message = Config::parse(&text, &config_path).unwrap_err().to_string();
    assert!(
        message.contains("line 5: `peer#1.preshared_key_file`"),
        "{message}"
    );
    assert!(
        message.contains("zero.psk: an all-zero preshared key"),
        "{message}"
    );
}

#[test]
fn load_reports_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let message = Config::load(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("cannot read {}", path.display())),
        "{message}"
    );
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn readable_secrets_produce_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0.toml");
    fs::write(&path, minimal()).unwrap();
    chmod(&path, 0o644);
    let config = Config::load(&path).unwrap();
    let warnings = config.permission_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(&path.display().to_string()));
    assert!(warnings[0].contains("mode 0644"), "{}", warnings[0]);
    assert!(warnings[0].contains(&format!("chmod 600 {}", path.display())));

    chmod(&path, 0o600);
    assert!(config.permission_warnings().is_empty());
    chmod(&path, 0o620);
    assert_eq!(
        config.permission_warnings().len(),
        1,
        "group-writable is also a risk"
    );
}

#[cfg(unix)]
#[test]
fn only_files_holding_secrets_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("wg0.key");
    fs::write(&key, PRIVATE).unwrap();
    chmod(&key, 0o640);
    let path = dir.path().join("wg0.toml");
    fs::write(&path, "[interface]\nprivate_key_file = \"wg0.key\"\n").unwrap();
    chmod(&path, 0o644);
    let warnings = Config::load(&path).unwrap().permission_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with(&format!("{} holds a secret key", key.display())));
    assert!(warnings[0].contains("mode 0640"));
}

#[test]
fn device_settings_resolve_endpoints() {
    let text = format!(
        "{}listen_port = 51820\nfwmark = 7\n[[peer]]\npublic_key = \"{}\"\npreshared_key = \"{}\"\n\
         allowed_ips = [\"10.0.0.2/32\"]\nendpoint = \"[fd00::2]:51820\"\npersistent_keepalive = 25\n\
         [[peer]]\npublic_key = \"{}\"\n",
        minimal(),
        public(1),
        psk(3),
        public(2)
    );
    let config = parse(&text).unwrap();
    let settings = config.device_settings().unwrap();
    assert_eq!(settings.private_key, config.interface.private_key);
    assert_eq!(settings.listen_port, Some(51820));
    assert_eq!(settings.fwmark, Some(7));
    let first = &settings.peers[0];
    assert_eq!(
        first.endpoint,
        Some("[fd00::2]:51820".parse::<SocketAddr>().unwrap())
    );
    assert_eq!(first.preshared_key.as_ref().unwrap().to_base64(), psk(3));
    assert_eq!(first.allowed_ips, vec![net("10.0.0.2/32")]);
    assert_eq!(first.persistent_keepalive, Some(25));
    assert_eq!(settings.peers[1].endpoint, None);
}

#[test]
fn unresolvable_endpoints_name_the_peer() {
    let text = format!(
        "{}[[peer]]\npublic_key = \"{}\"\nendpoint = \"nowhere.invalid:51820\"\n",
        minimal(),
        public(4)
    );
    let message = parse(&text)
        .unwrap()
        .device_settings()
        .unwrap_err()
        .to_string();
    let expected = format!(
        "/etc/meshtun/wg0.toml: peer #1 ({}): cannot resolve endpoint `nowhere.invalid:51820`",
        public(4)
    );
    assert!(message.starts_with(&expected), "{message}");
}

#[test]
fn host_plan_routes_every_allowed_ip_once() {
    let text = format!(
        "{}address = [\"10.0.0.1/24\"]\nmtu = 1400\ntable = 51820\nfwmark = 51820\ndns = [\"10.0.0.53\"]\n\
         post_up = \"echo %i\"\n\
         [[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"10.0.0.0/24\", \"0.0.0.0/0\"]\n\
         [[peer]]\npublic_key = \"{}\"\nallowed_ips = [\"fd00::/64\"]\n",
        minimal(),
        public(1),
        public(2)
    );
    let plan = parse(&text).unwrap().host_plan();
    assert_eq!(plan.ifname, "wg0");
    assert_eq!(plan.addresses, vec![net("10.0.0.1/24")]);
    assert_eq!(plan.mtu, 1400);
    assert_eq!(plan.table, RouteTable::Id(51820));
    assert_eq!(plan.fwmark, Some(51820));
    assert_eq!(
        plan.routes,
        vec![net("10.0.0.0/24"), net("0.0.0.0/0"), net("fd00::/64")]
    );
    assert_eq!(
        plan.dns.servers,
        vec!["10.0.0.53".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(plan.hooks.post_up, vec!["echo %i"]);
}

#[test]
fn debug_output_hides_secrets() {
    let text = format!(
        "{}[[peer]]\npublic_key = \"{}\"\npreshared_key = \"{}\"\n",
        minimal(),
        public(1),
        psk(5)
    );
    let shown = format!("{:?}", parse(&text).unwrap());
    assert!(!shown.contains(PRIVATE));
    assert!(!shown.contains(&psk(5)));
}

#[test]
fn metrics_section_gives_the_listen_address() {
    assert_eq!(parse(&minimal()).unwrap().metrics, None);
    for (written, expected) in [
        ("127.0.0.1:9586", "127.0.0.1:9586"),
        ("[::1]:9586", "[::1]:9586"),
        ("[fd00::1]:19586", "[fd00::1]:19586"),
    ] {
        let text = format!("{}[metrics]\nlisten = \"{written}\"\n", minimal());
        let metrics = parse(&text).unwrap().metrics.expect("a [metrics] section");
        assert_eq!(metrics.listen, expected.parse::<SocketAddr>().unwrap());
    }
}

#[test]
fn metrics_errors_name_the_file_line_key_and_value() {
    let at = |extra: &str| error(&format!("{}[metrics]\n{extra}", minimal()));
    let cases = [
        (
            "listen = \"localhost:9586\"\n",
            "`localhost:9586` is not an IP address and port",
        ),
        (
            "listen = \"127.0.0.1\"\n",
            "`127.0.0.1` is not an IP address and port",
        ),
        (
            "listen = \"::1:9586\"\n",
            "`::1:9586` is not an IP address and port",
        ),
        ("listen = \"127.0.0.1:0\"\n", "`127.0.0.1:0` has port 0"),
    ];
    for (extra, reason) in cases {
        let message = at(extra);
        assert!(
            message.starts_with("/etc/meshtun/wg0.toml: line 4: `metrics.listen`: "),
            "{message}"
        );
        assert!(message.contains(reason), "{message}");
    }
    let missing = at("");
    assert!(
        missing.contains("line 3: `metrics.listen`: missing"),
        "{missing}"
    );
    let unknown = at("listen = \"127.0.0.1:9586\"\nport = 9586\n");
    assert!(
        unknown.contains("line 5: `metrics.port`: unknown field"),
        "{unknown}"
    );
    let wrong_type = at("listen = 9586\n");
    assert!(
        wrong_type.contains("line 4: `metrics.listen`: invalid type"),
        "{wrong_type}"
    );
}
