//! Tests of `wg-quick` import: every key, round trips through [`Config::parse`], and errors.

use super::*;
use crate::config::tests::{psk, public, OWN_PUBLIC, PRIVATE};
use meshtun_proto::PresharedKey;

fn wg0() -> &'static Path {
    Path::new("/etc/wireguard/wg0.conf")
}

/// Imports `text`, parses the TOML back, checks both agree, and returns the parsed config.
fn round_trip(text: &str) -> (Config, String) {
    let toml = import_wg_quick(text, wg0()).unwrap();
    let (imported, _) = parse_wg_quick(text, wg0()).unwrap();
    let parsed = Config::parse(&toml, Path::new("/etc/meshtun/wg0.toml"))
        .unwrap_or_else(|err| panic!("{err}\n{toml}"));
    assert_eq!(parsed.interface, imported.interface, "\n{toml}");
    assert_eq!(parsed.peers, imported.peers, "\n{toml}");
    (parsed, toml)
}

fn error(text: &str) -> String {
    match import_wg_quick(text, wg0()) {
        Ok(toml) => panic!("accepted:\n{toml}"),
        Err(err) => err.to_string(),
    }
}

fn net(text: &str) -> ipnet::IpNet {
    text.parse().unwrap()
}

fn full() -> String {
    format!(
        "# wg-quick file\n\
         [Interface]\n\
         PrivateKey = {PRIVATE}\n\
         Address = 10.0.0.1/24, fd00::1/64\n\
         address = 10.9.0.1\n\
         ListenPort = 51820\n\
         MTU = 1380\n\
         FwMark = 0xca6c\n\
         DNS = 10.0.0.53, mesh.internal\n\
         DNS = fd00::53\n\
         Table = 1234\n\
         PreUp = echo pre %i\n\
         PostUp = iptables -A FORWARD -i %i -j ACCEPT; echo done\n\
         PostUp = echo second   # a comment\n\
         PreDown = echo pre-down\n\
         PostDown = echo down\n\
         SaveConfig = true\n\
         \n\
         [Peer]\n\
         PublicKey = {p1}\n\
         PresharedKey = {k1}\n\
         AllowedIPs = 10.0.0.2/32, 10.1.0.7/16\n\
         AllowedIPs = fd00::2/128\n\
         Endpoint = peer1.example.net:51820\n\
         PersistentKeepalive = 25\n\
         \n\
         [peer]\n\
         publickey = {p2}\n\
         allowedips = 10.2.0.0/16\n\
         endpoint = [fd00::3]:51821\n\
         persistentkeepalive = off\n",
        p1 = public(1),
        k1 = psk(2),
        p2 = public(3),
    )
}

#[test]
fn every_key_is_converted_and_round_trips() {
    let (config, toml) = round_trip(&full());
    let interface = &config.interface;
    assert_eq!(interface.name, "wg0");
    assert_eq!(interface.private_key.public_key().to_base64(), OWN_PUBLIC);
    assert_eq!(
        interface.addresses,
        vec![net("10.0.0.1/24"), net("fd00::1/64"), net("10.9.0.1/32")]
    );
    assert_eq!(interface.listen_port, Some(51820));
    assert_eq!(interface.mtu, 1380);
    assert_eq!(interface.fwmark, Some(0xca6c));
    assert_eq!(interface.dns.servers.len(), 2);
    assert_eq!(interface.dns.search, vec!["mesh.internal"]);
    assert_eq!(interface.table, RouteTable::Id(1234));
    assert_eq!(interface.hooks.pre_up, vec!["echo pre %i"]);
    assert_eq!(
        interface.hooks.post_up,
        vec![
            "iptables -A FORWARD -i %i -j ACCEPT; echo done",
            "echo second"
        ]
    );
    assert_eq!(interface.hooks.pre_down, vec!["echo pre-down"]);
    assert_eq!(interface.hooks.post_down, vec!["echo down"]);

    let [first, second] = config.peers.as_slice() else {
        panic!("expected two peers");
    };
    assert_eq!(first.public_key.to_base64(), public(1));
    assert_eq!(first.preshared_key.as_ref().unwrap().to_base64(), psk(2));
    assert_eq!(
        first.allowed_ips,
        vec![net("10.0.0.2/32"), net("10.1.0.0/16"), net("fd00::2/128")]
    );
    assert_eq!(
        first.endpoint.as_ref().unwrap().to_string(),
        "peer1.example.net:51820"
    );
    assert_eq!(first.persistent_keepalive, Some(25));
    assert_eq!(
        second.endpoint.as_ref().unwrap().to_string(),
        "[fd00::3]:51821"
    );
    assert_eq!(second.persistent_keepalive, None);

    assert!(
        toml.contains("# SaveConfig = true (line 17) was dropped"),
        "{toml}"
    );
    assert!(toml.contains("fwmark = \"0xca6c\""), "{toml}");
}

#[test]
fn a_minimal_file_round_trips_with_defaults() {
    let text = format!("[Interface]\nPrivateKey = {PRIVATE}\n");
    let (config, toml) = round_trip(&text);
    assert_eq!(config.interface.mtu, 1420);
    assert_eq!(config.interface.table, RouteTable::Auto);
    assert!(
        !toml.contains("mtu"),
        "the default MTU is not written: {toml}"
    );
}

#[test]
fn table_and_fwmark_variants_round_trip() {
    for (table, expected) in [
        ("off", RouteTable::Off),
        ("auto", RouteTable::Auto),
        ("main", RouteTable::Id(254)),
    ] {
        let text = format!("[Interface]\nPrivateKey = {PRIVATE}\nTable = {table}\nFwMark = off\n");
        let (config, _) = round_trip(&text);
        assert_eq!(config.interface.table, expected);
        assert_eq!(config.interface.fwmark, None);
    }
}

#[test]
fn the_name_comes_from_the_file_name() {
    let text = format!("[Interface]\nPrivateKey = {PRIVATE}\n");
    let toml = import_wg_quick(&text, Path::new("/etc/wireguard/office-vpn.conf")).unwrap();
    assert!(toml.contains("name = \"office-vpn\""), "{toml}");
    let message = import_wg_quick(&text, Path::new("/tmp/much-too-long-name.conf"))
        .unwrap_err()
        .to_string();
    assert!(message.contains("line 1: `Interface.name`: the file name cannot name the interface"));
}

#[test]
fn quoting_survives_the_conversion() {
    let text = format!(
        "[Interface]\nPrivateKey = {PRIVATE}\nPostUp = printf '%s\\n' \"quoted\" \\\\ done\n"
    );
    let (config, _) = round_trip(&text);
    assert_eq!(
        config.interface.hooks.post_up,
        vec!["printf '%s\\n' \"quoted\" \\\\ done"]
    );
}

#[test]
fn unknown_keys_name_the_line() {
    let text = format!("[Interface]\nPrivateKey = {PRIVATE}\nListenPrt = 1\n");
    assert_eq!(
        error(&text),
        "/etc/wireguard/wg0.conf: line 3: unknown key `ListenPrt` in [Interface]"
    );
    let text = format!("[Interface]\nPrivateKey = {PRIVATE}\n[Peer]\nMTU = 1400\n");
    assert_eq!(
        error(&text),
        "/etc/wireguard/wg0.conf: line 4: unknown key `MTU` in [Peer]"
    );
}

#[test]
fn malformed_lines_name_the_line() {
    let cases = [
        (
            "PrivateKey = x\n",
            "line 1: `PrivateKey` comes before any [Interface] or [Peer] section",
        ),
        ("[Interface]\n[Wat]\n", "line 2: unknown section [Wat]"),
        ("[Interface\n", "line 1: a section header must look like"),
        (
            "[Interface]\njust words\n",
            "line 2: expected `Key = Value`",
        ),
        (
            "[Interface]\n[Interface]\n",
            "line 2: a second [Interface] section (the first is on line 1)",
        ),
        (
            "[Interface]\nSaveConfig = yes\n",
            "line 2: `SaveConfig` must be true or false",
        ),
    ];
    for (text, expected) in cases {
        let message = error(text);
        assert!(message.contains(expected), "{text:?}: {message}");
    }
}

#[test]
fn a_pasted_key_is_not_echoed() {
    let text = format!("[Interface]\n{PRIVATE}\n");
    let message = error(&text);
    assert!(message.contains("line 2"), "{message}");
    assert!(
        !message.contains(PRIVATE.trim_end_matches('=')),
        "{message}"
    );
}

#[test]
fn bad_values_name_line_and_key() {
    let cases = [
        ("MTU = 9x", "line 3: `Interface.MTU`: `9x` is not a number"),
        ("MTU = 100", "line 3: `Interface.MTU`: 100 is out of range"),
        (
            "ListenPort = 70000",
            "line 3: `Interface.ListenPort`: `70000` is not a port number",
        ),
        (
            "Address = 10.0.0.1/24, nonsense",
            "line 3: `Interface.Address`: `nonsense` is not an IP address",
        ),
        (
            "ListenPort = 1\nListenPort = 2",
            "line 4: `Interface.ListenPort`: set twice (first on line 3)",
        ),
        (
            "Table = 0",
            "line 3: `Interface.Table`: 0 is not a routing table",
        ),
    ];
    for (fragment, expected) in cases {
        let message = error(&format!(
            "[Interface]\nPrivateKey = {PRIVATE}\n{fragment}\n"
        ));
        assert!(message.contains(expected), "{fragment:?}: {message}");
    }
}

#[test]
fn cross_peer_checks_use_wg_quick_lines() {
    let text = format!(
        "[Interface]\nPrivateKey = {PRIVATE}\n[Peer]\nPublicKey = {k}\n[Peer]\nPublicKey = {k}\n",
        k = public(1)
    );
    let message = error(&text);
    assert!(message.contains("line 6: `Peer#2.PublicKey`"), "{message}");
    assert!(message.contains("peer #1 (line 4)"), "{message}");

    let text = format!(
        "[Interface]\nPrivateKey = {PRIVATE}\n[Peer]\nPublicKey = {}\nAllowedIPs = 0.0.0.0/0\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 10.0.0.0/8, 0.0.0.0/0\n",
        public(1),
        public(2)
    );
    let message = error(&text);
    assert!(
        message.contains("line 8: `Peer#2.AllowedIPs`: 0.0.0.0/0"),
        "{message}"
    );
}

#[test]
fn missing_pieces_are_reported() {
    let message = error("[Interface]\nListenPort = 1\n");
    assert!(
        message.contains("line 1: `Interface.PrivateKey`: missing"),
        "{message}"
    );
    let message = error(&format!(
        "[Interface]\nPrivateKey = {PRIVATE}\n[Peer]\nAllowedIPs = 10.0.0.0/8\n"
    ));
    assert!(
        message.contains("line 3: `Peer#1.PublicKey`: missing"),
        "{message}"
    );
    assert!(error("# nothing\n")
        .ends_with("the configuration is empty; it needs an [interface] section"));
    let zero = PresharedKey::from_bytes([0; 32]).to_base64();
    let message = error(&format!(
        "[Interface]\nPrivateKey = {PRIVATE}\n[Peer]\nPublicKey = {}\nPresharedKey = {zero}\n",
        public(1)
    ));
    assert!(
        message.contains("line 5: `Peer#1.PresharedKey`: an all-zero preshared key"),
        "{message}"
    );
}

#[test]
fn empty_hooks_and_list_items_are_skipped() {
    let text = format!(
        "[Interface]\nPrivateKey = {PRIVATE}\nPostUp =\nAddress = 10.0.0.1/24,\n[Peer]\nPublicKey = {}\nAllowedIPs =\n",
        public(1)
    );
    let (config, _) = round_trip(&text);
    assert!(config.interface.hooks.post_up.is_empty());
    assert_eq!(config.interface.addresses, vec![net("10.0.0.1/24")]);
    assert!(config.peers[0].allowed_ips.is_empty());
}

#[test]
fn crlf_files_are_read() {
    let text = full().replace('\n', "\r\n");
    let (config, _) = round_trip(&text);
    assert_eq!(config.peers.len(), 2);
}
