//! Bad configurations: `meshtun up` must exit non-zero quickly with a message naming the
//! problem, and leave nothing behind (no interface, no route, no UAPI socket). `meshtun check`
//! reports the same problems without root.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use meshtun_e2e::config::{write_secret, Config, Node};
use meshtun_e2e::{meshtun, meshtun_in, require_root, uapi_socket, Netns};

/// How long a failing `meshtun up` may take.
const QUICKLY: Duration = Duration::from_secs(10);

/// A valid configuration with one peer (so that routes would be added).
fn valid_config() -> Config {
    let (a, b) = (Node::new("x", 1), Node::new("y", 2));
    let mut config = a.config();
    config.peers.push(b.as_peer());
    config
}

/// The TOML of `config` with `line` added at the top of the `[interface]` table.
fn with_unknown_key(config: &Config, line: &str) -> String {
    let toml = config.to_toml();
    assert!(
        toml.starts_with("[interface]\n"),
        "unexpected TOML layout:\n{toml}"
    );
    toml.replacen("[interface]\n", &format!("[interface]\n{line}\n"), 1)
}

/// A configuration whose peer's public key is not a key.
fn with_bad_public_key() -> Config {
    let mut config = valid_config();
    config.peers[0].public_key = "not-a-public-key".into();
    config
}

/// Runs `meshtun up` on `toml` in `ns` and asserts it fails quickly, that its output names
/// each of `mentions`, and that no interface, route or socket is left.
fn assert_up_fails(ns: &Netns, name: &str, toml: &str, mentions: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_secret(dir.path(), &format!("{name}.toml"), toml);
    let start = Instant::now();
    let out = meshtun_in(ns, &["up", path.to_str().unwrap()], QUICKLY);
    let message = format!("{}{}", out.stderr, out.stdout);
    assert!(
        !out.success(),
        "`meshtun up` accepted a bad config:\n{message}"
    );
    assert!(start.elapsed() < QUICKLY);
    for word in mentions {
        assert!(
            message.contains(word),
            "the error does not name {word:?}:\n{message}"
        );
    }
    assert!(!ns.has_link(name), "interface {name} left behind");
    let routes = ns.routes();
    assert!(
        !routes.contains(name),
        "routes via {name} left behind:\n{routes}"
    );
    assert!(
        !uapi_socket(name).exists(),
        "UAPI socket of {name} left behind"
    );
}

#[test]
fn up_rejects_an_unknown_key() {
    if !require_root("up_rejects_an_unknown_key") {
        return;
    }
    let ns = Netns::new("bad_unknown_key");
    let config = valid_config();
    let toml = with_unknown_key(&config, "bogus_setting = 1");
    assert_up_fails(&ns, config.name(), &toml, &["bogus_setting"]);
}

#[test]
fn up_rejects_a_bad_public_key() {
    if !require_root("up_rejects_a_bad_public_key") {
        return;
    }
    let ns = Netns::new("bad_public_key");
    let config = with_bad_public_key();
    assert_up_fails(&ns, config.name(), &config.to_toml(), &["public_key"]);
}

#[test]
fn up_rejects_a_listen_port_in_use() {
    if !require_root("up_rejects_a_listen_port_in_use") {
        return;
    }
    let ns = Netns::new("bad_port_taken");
    let config = valid_config();
    let port = config.interface.listen_port.unwrap();
    let _taken = ns
        .enter(|| UdpSocket::bind(("0.0.0.0", port)))
        .expect("cannot take the port first");
    assert_up_fails(&ns, config.name(), &config.to_toml(), &[&port.to_string()]);
}

/// `meshtun check` accepts the valid config and rejects each bad one, naming the problem.
#[test]
fn check_reports_the_same_problems() {
    let dir = tempfile::tempdir().unwrap();
    let config = valid_config();
    let check = |file: &str, toml: &str| {
        let path = write_secret(dir.path(), file, toml);
        meshtun(&["check", path.to_str().unwrap()], "")
    };
    let good = check("good.toml", &config.to_toml());
    assert!(
        good.success(),
        "a valid config was rejected:\n{}",
        good.stderr
    );
    let cases = [
        (
            "unknown.toml",
            with_unknown_key(&config, "bogus_setting = 1"),
            "bogus_setting",
        ),
        ("badkey.toml", with_bad_public_key().to_toml(), "public_key"),
    ];
    for (file, toml, word) in cases {
        let out = check(file, &toml);
        let message = format!("{}{}", out.stderr, out.stdout);
        assert!(!out.success(), "{file} was accepted");
        assert!(
            message.contains(word),
            "{file}: the error does not name {word:?}:\n{message}"
        );
    }
}

/// Every path under which the daemon would find `nft` (`PATH` and the `sbin` directories it
/// also searches) that holds it on this machine.
fn nft_paths() -> Vec<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]);
    let mut found: Vec<String> = dirs
        .map(|d| format!("{d}/nft"))
        .filter(|p| std::path::Path::new(p).is_file())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// A full tunnel (a peer with `0.0.0.0/0`) on a host without `nft` would go up without
/// wg-quick's anti-spoofing rules. `meshtun up` refuses it before touching anything: the
/// error names the program and its package, the `pre_up` hook never ran, and there is no
/// interface, route, policy rule or state file. `nft` is hidden from the daemon alone, in a
/// mount namespace of its own.
#[test]
fn up_refuses_a_full_tunnel_without_nft_and_changes_nothing() {
    if !require_root("up_refuses_a_full_tunnel_without_nft_and_changes_nothing") {
        return;
    }
    let ns = Netns::new("bad_no_nft");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pre_up_ran");
    let mut config = valid_config();
    config.peers[0].allowed_ips = vec!["0.0.0.0/0".into()];
    let toml = config.to_toml().replacen(
        "[interface]\n",
        &format!("[interface]\npre_up = [\"touch {}\"]\n", marker.display()),
        1,
    );
    let path = write_secret(dir.path(), "full.toml", &toml);
    let hide: String = nft_paths()
        .iter()
        .map(|p| format!("mount --bind /dev/null {p} && "))
        .collect();
    let script = format!(
        "{hide}exec {} up {}",
        meshtun_e2e::meshtun_bin().display(),
        path.display()
    );
    let out = ns.run_timeout(&["unshare", "--mount", "sh", "-c", &script], QUICKLY);
    let message = format!("{}{}", out.stderr, out.stdout);
    assert!(
        !out.success(),
        "a full tunnel went up without nft:\n{message}"
    );
    for word in ["`nft`", "nftables", "0.0.0.0/0", config.name()] {
        assert!(
            message.contains(word),
            "the error does not name {word:?}:\n{message}"
        );
    }
    assert!(!marker.exists(), "the pre_up hook ran before the refusal");
    assert!(
        !ns.has_link(config.name()),
        "the tun device was left behind"
    );
    let rules = ns.ip(&["-4", "rule", "show"]);
    assert!(
        !rules.contains("51820"),
        "policy rules left behind:\n{rules}"
    );
    let state = meshtun_e2e::state_file(&ns, config.name());
    assert!(
        !state.exists(),
        "state file {} left behind",
        state.display()
    );
    assert!(
        !uapi_socket(config.name()).exists(),
        "UAPI socket left behind"
    );
}
