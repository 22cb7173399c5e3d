//! The `wg` tool against meshtun's UAPI socket: `wg show`, `wg show dump`, `wg showconf`,
//! and `wg set` changing allowed IPs and preshared keys on a running tunnel. The peer is
//! wireguard-go, the reference implementation. Also `meshtun show --json` and key commands.

use std::net::IpAddr;
use std::time::Duration;

use meshtun_e2e::config::{genpsk, pubkey, write_secret, Config, Node};
use meshtun_e2e::traffic::{assert_no_ping, assert_ping, ping};
use meshtun_e2e::wg::{self, parse_conf};
use meshtun_e2e::{meshtun, meshtun_in, require_root, wait_until, Daemon, Netns, Veth, WgGo};

/// A meshtun node M and a wireguard-go node G sharing a PSK, each knowing the other's
/// IPv4 endpoint.
struct Pair {
    ns_m: Netns,
    ns_g: Netns,
    veth: Veth,
    m: Node,
    g: Node,
    psk: String,
}

impl Pair {
    fn new(test: &str) -> Self {
        let (ns_m, ns_g) = (Netns::new(test), Netns::new(test));
        let veth = Veth::connect(&ns_m, &ns_g, 0);
        Self {
            ns_m,
            ns_g,
            veth,
            m: Node::new("m", 1),
            g: Node::new("g", 2),
            psk: genpsk(),
        }
    }

    fn configs(&self) -> (Config, Config) {
        let mut cm = self.m.config();
        cm.peers.push(
            self.g
                .as_peer()
                .psk(&self.psk)
                .endpoint(self.veth.b_v4.into(), self.g.port),
        );
        let mut cg = self.g.config();
        cg.peers.push(
            self.m
                .as_peer()
                .psk(&self.psk)
                .endpoint(self.veth.a_v4.into(), self.m.port),
        );
        (cm, cg)
    }

    fn ping_both_ways(&self) {
        assert_ping(&self.ns_m, self.g.v4.into());
        assert_ping(&self.ns_g, self.m.v4.into());
    }

    fn g_endpoint(&self) -> String {
        format!("{}:{}", self.veth.b_v4, self.g.port)
    }
}

#[test]
fn wg_show_lists_peer_endpoint_handshake_and_transfer() {
    if !require_root("wg_show_lists_peer_endpoint_handshake_and_transfer") {
        return;
    }
    let p = Pair::new("wg_show");
    let (cm, cg) = p.configs();
    let daemon = Daemon::start(&p.ns_m, &cm);
    let _wggo = WgGo::start(&p.ns_g, &cg);
    p.ping_both_ways();

    let text = wg::wg(&p.ns_m, &["show", daemon.name()]);
    let expected = [
        format!("interface: {}", daemon.name()),
        format!("public key: {}", p.m.keys.public),
        "private key: (hidden)".to_owned(),
        format!("listening port: {}", p.m.port),
        format!("peer: {}", p.g.keys.public),
        "preshared key: (hidden)".to_owned(),
        format!("endpoint: {}", p.g_endpoint()),
        format!("allowed ips: {}/32, {}/128", p.g.v4, p.g.v6),
        "latest handshake: ".to_owned(),
        "transfer: ".to_owned(),
    ];
    for line in &expected {
        assert!(
            text.contains(line.as_str()),
            "`wg show` lacks {line:?}:\n{text}"
        );
    }
    assert!(
        text.contains(" received, ") && text.contains(" sent"),
        "{text}"
    );
}

#[test]
fn wg_show_dump_reports_a_recent_handshake() {
    if !require_root("wg_show_dump_reports_a_recent_handshake") {
        return;
    }
    let p = Pair::new("wg_dump");
    let (cm, cg) = p.configs();
    let daemon = Daemon::start(&p.ns_m, &cm);
    let _wggo = WgGo::start(&p.ns_g, &cg);
    p.ping_both_ways();

    let dump = wg::dump(&p.ns_m, daemon.name());
    assert_eq!(dump.interface.private_key, p.m.keys.private);
    assert_eq!(dump.interface.public_key, p.m.keys.public);
    assert_eq!(dump.interface.listen_port, p.m.port);
    assert_eq!(dump.interface.fwmark, 0);
    assert_eq!(dump.peers.len(), 1);
    let peer = dump.peer(&p.g.keys.public);
    assert_eq!(peer.preshared_key.as_deref(), Some(p.psk.as_str()));
    assert_eq!(
        peer.endpoint,
        Some((IpAddr::V4(p.veth.b_v4), p.g.port).into())
    );
    assert_eq!(
        peer.allowed_ips,
        [format!("{}/32", p.g.v4), format!("{}/128", p.g.v6)]
    );
    assert!(
        peer.handshake_within(Duration::from_secs(60)),
        "latest handshake is not a Unix time within the last minute: {peer:?}"
    );
    assert!(peer.rx_bytes > 0 && peer.tx_bytes > 0, "{peer:?}");
    assert_eq!(peer.persistent_keepalive, None);
}

#[test]
fn wg_showconf_parses_and_matches_the_config() {
    if !require_root("wg_showconf_parses_and_matches_the_config") {
        return;
    }
    let p = Pair::new("wg_showconf");
    let (cm, _) = p.configs();
    let daemon = Daemon::start(&p.ns_m, &cm);

    let text = wg::wg(&p.ns_m, &["showconf", daemon.name()]);
    let conf = parse_conf(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let names: Vec<&str> = conf.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["Interface", "Peer"], "{text}");
    let port = p.m.port.to_string();
    assert_eq!(conf[0].get("ListenPort"), Some(port.as_str()));
    assert_eq!(conf[0].get("PrivateKey"), Some(p.m.keys.private.as_str()));
    assert_eq!(conf[1].get("PublicKey"), Some(p.g.keys.public.as_str()));
    assert_eq!(conf[1].get("PresharedKey"), Some(p.psk.as_str()));
    assert_eq!(conf[1].get("Endpoint"), Some(p.g_endpoint().as_str()));
    let ips = format!("{}/32, {}/128", p.g.v4, p.g.v6);
    assert_eq!(conf[1].get("AllowedIPs"), Some(ips.as_str()));
}

#[test]
fn wg_set_allowed_ips_moves_traffic() {
    if !require_root("wg_set_allowed_ips_moves_traffic") {
        return;
    }
    let p = Pair::new("wg_set_ips");
    let (cm, mut cg) = p.configs();
    // G also owns 100.64.0.3, which M does not (yet) accept from or route to G.
    let extra: IpAddr = "100.64.0.3".parse().unwrap();
    cg.interface.address.push(format!("{extra}/32"));
    let daemon = Daemon::start(&p.ns_m, &cm);
    let _wggo = WgGo::start(&p.ns_g, &cg);
    p.ping_both_ways();
    assert_no_ping(&p.ns_m, extra);

    let new_ips = format!("{extra}/32,{}/128", p.g.v6);
    let g_pub = p.g.keys.public.as_str();
    let name = daemon.name();
    wg::wg(
        &p.ns_m,
        &["set", name, "peer", g_pub, "allowed-ips", &new_ips],
    );

    let peer_ips = wg::dump(&p.ns_m, name).peer(g_pub).allowed_ips.clone();
    assert_eq!(peer_ips, [format!("{extra}/32"), format!("{}/128", p.g.v6)]);
    assert_ping(&p.ns_m, extra);
    assert_ping(&p.ns_m, p.g.v6.into());
    assert_no_ping(&p.ns_m, p.g.v4.into());
}

#[test]
fn wg_set_preshared_key_on_both_sides() {
    if !require_root("wg_set_preshared_key_on_both_sides") {
        return;
    }
    let p = Pair::new("wg_set_psk");
    let (cm, cg) = p.configs();
    let daemon = Daemon::start(&p.ns_m, &cm);
    let wggo = WgGo::start(&p.ns_g, &cg);
    p.ping_both_ways();

    let psk2 = genpsk();
    let psk2_file = write_secret(wggo.dir(), "psk2", &psk2);
    let psk2_file = psk2_file.to_str().unwrap();
    let (m_pub, g_pub) = (p.m.keys.public.as_str(), p.g.keys.public.as_str());
    wg::wg(
        &p.ns_m,
        &[
            "set",
            daemon.name(),
            "peer",
            g_pub,
            "preshared-key",
            psk2_file,
        ],
    );
    wg::wg(
        &p.ns_g,
        &[
            "set",
            wggo.name(),
            "peer",
            m_pub,
            "preshared-key",
            psk2_file,
        ],
    );
    let shown = wg::dump(&p.ns_m, daemon.name())
        .peer(g_pub)
        .preshared_key
        .clone();
    assert_eq!(shown.as_deref(), Some(psk2.as_str()));
    // The current session survives a PSK change.
    p.ping_both_ways();

    // Make G forget its session, so that the next handshake proves which PSK meshtun uses:
    // first with a PSK meshtun does not have (no traffic), then with the new one.
    let wrong_file = write_secret(wggo.dir(), "wrong", &genpsk());
    let ips = format!("{}/32,{}/128", p.m.v4, p.m.v6);
    let m_endpoint = format!("{}:{}", p.veth.a_v4, p.m.port);
    wg::wg(&p.ns_g, &["set", wggo.name(), "peer", m_pub, "remove"]);
    wg::wg(
        &p.ns_g,
        &[
            "set",
            wggo.name(),
            "peer",
            m_pub,
            "preshared-key",
            wrong_file.to_str().unwrap(),
            "allowed-ips",
            &ips,
            "endpoint",
            &m_endpoint,
        ],
    );
    assert_no_ping(&p.ns_g, p.m.v4.into());
    wg::wg(
        &p.ns_g,
        &[
            "set",
            wggo.name(),
            "peer",
            m_pub,
            "preshared-key",
            psk2_file,
        ],
    );
    assert!(
        wait_until(Duration::from_secs(15), || ping(&p.ns_g, p.m.v4.into(), 3)),
        "no traffic within 15 s after both sides switched to the new preshared key"
    );
    assert_ping(&p.ns_m, p.g.v4.into());
}

#[test]
fn meshtun_show_json_reports_the_peer_without_secrets() {
    if !require_root("meshtun_show_json_reports_the_peer_without_secrets") {
        return;
    }
    let p = Pair::new("meshtun_show");
    let (cm, cg) = p.configs();
    let daemon = Daemon::start(&p.ns_m, &cm);
    let _wggo = WgGo::start(&p.ns_g, &cg);
    p.ping_both_ways();

    let timeout = Duration::from_secs(10);
    let out = meshtun_in(&p.ns_m, &["show", daemon.name(), "--json"], timeout);
    let text = out.expect_success();
    assert!(
        !text.contains(&p.m.keys.private) && !text.contains(&p.psk),
        "secret in show"
    );
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
    let iface = json
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == daemon.name()))
        .unwrap_or_else(|| panic!("no array entry named {}:\n{text}", daemon.name()));
    assert_eq!(iface["public_key"], p.m.keys.public.as_str());
    assert_eq!(iface["listen_port"], p.m.port);
    let peer = &iface["peers"][0];
    assert_eq!(peer["public_key"], p.g.keys.public.as_str());
    assert_eq!(peer["preshared_key"], true);
    assert_eq!(peer["endpoint"], p.g_endpoint().as_str());
    let ips = [format!("{}/32", p.g.v4), format!("{}/128", p.g.v6)];
    assert_eq!(peer["allowed_ips"], serde_json::json!(ips));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let handshake = peer["latest_handshake"].as_u64().unwrap_or(0);
    assert!(handshake + 60 >= now && handshake <= now + 5, "{peer}");
    assert!(peer["rx_bytes"].as_u64() > Some(0) && peer["tx_bytes"].as_u64() > Some(0));

    let text = meshtun_in(&p.ns_m, &["show", daemon.name()], timeout).expect_success();
    assert!(
        text.contains(&p.g.keys.public),
        "`meshtun show` lacks the peer:\n{text}"
    );
    assert!(
        !text.contains(&p.m.keys.private) && !text.contains(&p.psk),
        "secret in show"
    );
}

/// Key commands agree with `wg`; they need no root.
#[test]
fn meshtun_key_commands_agree_with_wg() {
    let private = meshtun(&["genkey"], "").expect_success().trim().to_owned();
    assert_eq!(private.len(), 44, "not a base64 key: {private:?}");
    let public = meshtun(&["pubkey"], &format!("{private}\n")).expect_success();
    assert_eq!(public.trim(), pubkey(&private));
    let psk1 = meshtun(&["genpsk"], "").expect_success();
    let psk2 = meshtun(&["genpsk"], "").expect_success();
    assert_eq!(psk1.trim().len(), 44);
    assert_ne!(psk1, psk2);
    assert!(!meshtun(&["pubkey"], "not a key\n").success());
}
