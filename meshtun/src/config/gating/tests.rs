//! The `[controller]` and `[benchmark]` sections: good files, defaults, and bad files with
//! the line, key and reason of each error.

use std::path::Path;
use std::time::Duration;

use meshtun_proto::IdentityKey;

use crate::config::tests::PRIVATE;
use crate::config::{BenchmarkSourceConfig, Config, ConfigError, ControllerSettings, LossPolicy};

fn controller_key() -> String {
    IdentityKey::from_bytes([7; 32]).public().to_base64()
}

fn interface() -> String {
    format!("[interface]\nprivate_key = \"{PRIVATE}\"\n")
}

/// `[interface]` (lines 1-2), then `[controller]` from line 3 with `extra` after its keys.
fn with_controller(extra: &str) -> String {
    format!(
        "{}[controller]\nurl = \"http://192.0.2.10:8700\"\npublic_key = \"{}\"\nnode_id = \"node-a\"\n{extra}",
        interface(),
        controller_key()
    )
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/meshtun/wg0.toml"))
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("accepted: {config:?}"),
        Err(err) => err.to_string(),
    }
}

fn controller(config: &Config) -> &ControllerSettings {
    config.controller.as_ref().expect("a [controller] section")
}

#[test]
fn a_plain_file_has_no_gating() {
    let config = parse(&interface()).unwrap();
    assert_eq!(config.controller, None);
    assert_eq!(config.benchmark, None);
}

#[test]
fn every_gating_key_is_read() {
    let text = with_controller(
        "identity_key_file = \"keys/node-a.identity\"\non_controller_loss = \"keep_last\"\n\
         grace = 45\ncache_file = \"/run/meshtun/wg0.bundle\"\n\
         [benchmark]\ninterval = 20\ntimeout = 5\ncommand = [\"/usr/local/bin/harness\", \"--json\"]\n\
         suite_version = \"suite-7\"\n",
    );
    let config = parse(&text).unwrap();
    let c = controller(&config);
    assert_eq!(c.urls, ["http://192.0.2.10:8700"]);
    assert_eq!(c.public_keys.primary().to_base64(), controller_key());
    assert_eq!(c.node_id, "node-a");
    assert_eq!(
        c.identity_key_file,
        Path::new("/etc/meshtun/keys/node-a.identity")
    );
    assert_eq!(c.on_controller_loss, LossPolicy::KeepLast);
    assert_eq!(c.grace, Duration::from_secs(45));
    assert_eq!(c.cache_file, Path::new("/run/meshtun/wg0.bundle"));
    let b = config.benchmark.as_ref().unwrap();
    assert_eq!(b.interval, Duration::from_secs(20));
    assert_eq!(b.timeout, Duration::from_secs(5));
    assert_eq!(
        b.source,
        BenchmarkSourceConfig::Command(vec!["/usr/local/bin/harness".into(), "--json".into()])
    );
    assert_eq!(b.suite_version.as_deref(), Some("suite-7"));
}

#[test]
fn gating_defaults() {
    let text = with_controller("[benchmark]\nsimulated = { mean = 0.9, stddev = 0.03 }\n");
    let config = parse(&text).unwrap();
    let c = controller(&config);
    assert_eq!(c.identity_key_file, Path::new("/etc/meshtun/wg0.identity"));
    assert_eq!(c.on_controller_loss, LossPolicy::FailClosed);
    assert_eq!(c.grace, Duration::from_secs(30));
    assert_eq!(c.cache_file, Path::new("/var/lib/meshtun/wg0.bundle"));
    let b = config.benchmark.as_ref().unwrap();
    assert_eq!(b.interval, Duration::from_secs(10));
    assert_eq!(b.timeout, Duration::from_secs(30), "3 × interval");
    assert_eq!(
        b.source,
        BenchmarkSourceConfig::Simulated {
            mean: 0.9,
            stddev: 0.03
        }
    );
    assert_eq!(b.suite_version, None);

    let long = parse(&with_controller(
        "[benchmark]\ninterval = 300\nsimulated = { mean = 1, stddev = 0 }\n",
    ))
    .unwrap();
    assert_eq!(
        long.benchmark.unwrap().timeout,
        Duration::from_secs(60),
        "the default timeout is capped at 60 s"
    );
}

#[test]
fn the_default_identity_file_follows_the_interface_name() {
    let text = format!(
        "[interface]\nname = \"mesh0\"\nprivate_key = \"{PRIVATE}\"\n[controller]\n\
         url = \"https://ctl.example:8700/\"\npublic_key = \"{}\"\nnode_id = \"n1\"\n",
        controller_key()
    );
    let config = parse(&text).unwrap();
    let c = controller(&config);
    assert_eq!(
        c.urls,
        ["https://ctl.example:8700"],
        "the trailing slash is dropped"
    );
    assert_eq!(
        c.identity_key_file,
        Path::new("/etc/meshtun/mesh0.identity")
    );
    assert_eq!(c.cache_file, Path::new("/var/lib/meshtun/mesh0.bundle"));
}

#[test]
fn relative_harness_paths_follow_the_config_file() {
    let text = with_controller("[benchmark]\ncommand = [\"bin/harness\", \"x/y\"]\n");
    let config = parse(&text).unwrap();
    assert_eq!(
        config.benchmark.unwrap().source,
        BenchmarkSourceConfig::Command(vec!["/etc/meshtun/bin/harness".into(), "x/y".into()])
    );
    let text = with_controller("[benchmark]\ncommand = [\"harness\"]\n");
    assert_eq!(
        parse(&text).unwrap().benchmark.unwrap().source,
        BenchmarkSourceConfig::Command(vec!["harness".into()]),
        "a bare program name is looked up in PATH"
    );
}

#[test]
fn the_identity_file_is_checked_for_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wg0.toml");
    std::fs::write(&path, with_controller("")).unwrap();
    let identity = dir.path().join("wg0.identity");
    std::fs::write(&identity, IdentityKey::generate().to_base64()).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o640)).unwrap();
        let warnings = Config::load(&path).unwrap().permission_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("wg0.identity"), "{warnings:?}");
    }
}

/// Each case: `[controller]` keys (from line 7) or later sections appended to a valid file,
/// and the parts the message must contain.
#[test]
fn bad_controller_values_name_line_and_key() {
    let cases: &[(&str, &[&str])] = &[
        (
            "bogus = 1\n",
            &["line 7", "`controller.bogus`", "unknown field"],
        ),
        (
            "on_controller_loss = \"open\"\n",
            &["line 7", "`controller.on_controller_loss`", "fail_closed"],
        ),
        (
            "grace = -1\n",
            &["line 7", "`controller.grace`", "from 0 to 86400"],
        ),
        (
            "grace = \"30s\"\n",
            &["line 7", "`controller.grace`", "invalid type"],
        ),
        (
            "cache_file = \"\"\n",
            &["line 7", "`controller.cache_file`", "file path"],
        ),
        (
            "allowed_prefixes = [\"0.0.0.0/1\", \"128.0.0.0/1\"]\n",
            &["line 7", "`controller.allowed_prefixes`", "shorter than /8"],
        ),
        (
            "allowed_prefixes = [\"::/0\"]\n",
            &["`controller.allowed_prefixes`", "shorter than /16"],
        ),
        (
            "allowed_prefixes = [\"100.64.0.1/24\"]\n",
            &[
                "`controller.allowed_prefixes`",
                "host bits",
                "100.64.0.0/24",
            ],
        ),
        (
            "allowed_prefixes = []\n",
            &["`controller.allowed_prefixes`", "empty"],
        ),
        (
            "allowed_prefixes = [\"mesh\"]\n",
            &["`controller.allowed_prefixes`", "CIDR"],
        ),
    ];
    for (extra, parts) in cases {
        let message = error(&with_controller(extra));
        for part in *parts {
            assert!(message.contains(part), "{extra:?}: {message}");
        }
    }
}

#[test]
fn allowed_prefixes_are_read_and_absent_by_default() {
    let text = with_controller("allowed_prefixes = [\"100.64.0.0/10\", \"fd00:64::/64\"]\n");
    let config = parse(&text).unwrap();
    assert_eq!(
        controller(&config).allowed_prefixes,
        Some(vec![
            "100.64.0.0/10".parse().unwrap(),
            "fd00:64::/64".parse().unwrap()
        ])
    );
    let config = parse(&with_controller("")).unwrap();
    assert_eq!(controller(&config).allowed_prefixes, None);
}

#[test]
fn bad_controller_identity_values() {
    let base = |url: &str, key: &str, node: &str| {
        format!(
            "{}[controller]\nurl = \"{url}\"\npublic_key = \"{key}\"\nnode_id = \"{node}\"\n",
            interface()
        )
    };
    let key = controller_key();
    let cases: Vec<(String, &[&str])> = vec![
        (
            base("ftp://192.0.2.10", &key, "node-a"),
            &["line 4", "`controller.url`", "http or https"],
        ),
        (
            base("192.0.2.10:8700", &key, "node-a"),
            &["line 4", "`controller.url`"],
        ),
        (
            base("http://192.0.2.10:8700/api", &key, "node-a"),
            &["line 4", "`controller.url`", "path"],
        ),
        (
            base("http://u:p@192.0.2.10:8700", &key, "node-a"),
            &["line 4", "`controller.url`", "credentials"],
        ),
        (
            base("http://192.0.2.10:8700", "short", "node-a"),
            &["line 5", "`controller.public_key`", "Ed25519"],
        ),
        (
            base("http://192.0.2.10:8700", &key, "Node A"),
            &["line 6", "`controller.node_id`", "not a valid node id"],
        ),
        (
            format!("{}[controller]\nnode_id = \"a\"\n", interface()),
            &["line 3", "`controller.url`", "missing"],
        ),
    ];
    for (text, parts) in &cases {
        let message = error(text);
        for part in *parts {
            assert!(message.contains(part), "{text}: {message}");
        }
    }
}

#[test]
fn bad_benchmark_values_name_line_and_key() {
    // `[benchmark]` is on line 7; its first key on line 8.
    let cases: &[(&str, &[&str])] = &[
        ("", &["line 7", "`benchmark.command`", "missing"]),
        (
            "command = [\"h\"]\nsimulated = { mean = 0.5, stddev = 0.1 }\n",
            &["line 9", "`benchmark.simulated`", "not both"],
        ),
        (
            "command = []\n",
            &["line 8", "`benchmark.command`", "empty"],
        ),
        (
            "command = \"harness --json\"\n",
            &["line 8", "`benchmark.command`", "invalid type"],
        ),
        (
            "interval = 0\ncommand = [\"h\"]\n",
            &["line 8", "`benchmark.interval`", "from 1 to 86400"],
        ),
        (
            "timeout = 0\ncommand = [\"h\"]\n",
            &["line 8", "`benchmark.timeout`", "from 1 to 3600"],
        ),
        (
            "simulated = { mean = 1.5, stddev = 0.1 }\n",
            &["line 8", "`benchmark.simulated.mean`", "[0, 1]"],
        ),
        (
            "simulated = { mean = 0.5, stddev = -0.1 }\n",
            &["line 8", "`benchmark.simulated.stddev`", "[0, 1]"],
        ),
        (
            "simulated = { mean = nan, stddev = 0.1 }\n",
            &["line 8", "`benchmark.simulated.mean`", "NaN"],
        ),
        (
            "simulated = { mean = 0.5 }\n",
            &["line 8", "`benchmark.simulated`", "stddev"],
        ),
        (
            "simulated = { mean = 0.5, stddev = 0.1, seed = 3 }\n",
            &["line 8", "`benchmark.simulated.seed`", "unknown field"],
        ),
        (
            "command = [\"h\"]\nsuite_version = \"has space\"\n",
            &["line 9", "`benchmark.suite_version`", "printable"],
        ),
    ];
    for (extra, parts) in cases {
        let message = error(&with_controller(&format!("[benchmark]\n{extra}")));
        for part in *parts {
            assert!(message.contains(part), "{extra:?}: {message}");
        }
    }
}

#[test]
fn benchmark_needs_a_controller() {
    let message = error(&format!("{}[benchmark]\ncommand = [\"h\"]\n", interface()));
    assert!(
        message.contains("line 3: `benchmark`: [benchmark] needs a [controller] section"),
        "{message}"
    );
}

#[test]
fn gating_without_an_interface_is_refused() {
    let text = format!(
        "[controller]\nurl = \"http://192.0.2.10\"\npublic_key = \"{}\"\nnode_id = \"a\"\n",
        controller_key()
    );
    assert!(matches!(
        parse(&text),
        Err(ConfigError::MissingInterface { .. })
    ));
}

/// `[controller]` with `url = <urls>` (a TOML value) on line 4.
fn with_urls(urls: &str) -> String {
    format!(
        "{}[controller]\nurl = {urls}\npublic_key = \"{}\"\nnode_id = \"node-a\"\n",
        interface(),
        controller_key()
    )
}

#[test]
fn a_list_of_controller_instances_is_read_in_order() {
    let text = with_urls("[\"https://ctl-1.example:8700/\", \"https://192.0.2.11:8700\"]");
    let config = parse(&text).unwrap();
    assert_eq!(
        controller(&config).urls,
        ["https://ctl-1.example:8700", "https://192.0.2.11:8700"]
    );
}

#[test]
fn bad_controller_lists_name_the_line_and_the_fault() {
    let nine: Vec<String> = (1..=9)
        .map(|i| format!("\"http://192.0.2.{i}:8700\""))
        .collect();
    let nine = format!("[{}]", nine.join(", "));
    let cases: Vec<(String, &[&str])> = vec![
        (with_urls("[]"), &["line 4", "`controller.url`", "empty"]),
        (
            with_urls("[\"http://192.0.2.10:8700\", \"http://192.0.2.10:8700/\"]"),
            &["line 4", "`controller.url`", "twice"],
        ),
        (
            with_urls(&nine),
            &["line 4", "`controller.url`", "at most 8"],
        ),
        (
            with_urls("[\"http://192.0.2.10:8700\", \"ftp://192.0.2.11\"]"),
            &["line 4", "`controller.url`", "http or https"],
        ),
        (with_urls("[1, 2]"), &["line 4", "url"]),
    ];
    for (text, parts) in &cases {
        let message = error(text);
        for part in *parts {
            assert!(message.contains(part), "{part:?} not in: {message}");
        }
    }
}

/// Key rotation: `public_key` takes a list, the first being the key requests name; a bad
/// list is refused naming the key at fault.
#[test]
fn public_key_takes_a_list_of_up_to_four_distinct_keys() {
    let keys: Vec<String> = (1..=5u8)
        .map(|i| IdentityKey::from_bytes([i; 32]).public().to_base64())
        .collect();
    let with_keys = |list: &str| {
        format!(
            "{}[controller]\nurl = \"http://192.0.2.10:8700\"\npublic_key = {list}\nnode_id = \"node-a\"\n",
            interface()
        )
    };
    let quoted = |ks: &[String]| {
        let inner: Vec<String> = ks.iter().map(|k| format!("\"{k}\"")).collect();
        format!("[{}]", inner.join(", "))
    };
    let config = parse(&with_keys(&quoted(&keys[..2]))).unwrap();
    let c = controller(&config);
    let got: Vec<String> = c.public_keys.keys().iter().map(|k| k.to_base64()).collect();
    assert_eq!(got, keys[..2]);
    assert_eq!(c.public_keys.primary().to_base64(), keys[0]);

    let cases: Vec<(String, &[&str])> = vec![
        (with_keys("[]"), &["`controller.public_key`", "no key"]),
        (
            with_keys(&quoted(&keys)),
            &["`controller.public_key`", "5 keys", "at most 4"],
        ),
        (
            with_keys(&quoted(&[keys[0].clone(), keys[0].clone()])),
            &["`controller.public_key`", "listed twice"],
        ),
        (
            with_keys(&format!("[\"{}\", \"short\"]", keys[0])),
            &["line 5", "`controller.public_key`", "key #2", "Ed25519"],
        ),
    ];
    for (text, parts) in &cases {
        let message = error(text);
        for part in *parts {
            assert!(message.contains(part), "{part:?} not in {message:?}");
        }
    }
}

#[test]
fn stun_servers_default_to_the_first_controller_host() {
    let config = parse(&with_controller("")).unwrap();
    let c = controller(&config);
    assert_eq!(c.stun, None);
    let servers: Vec<String> = c.stun_servers().iter().map(|s| s.to_string()).collect();
    assert_eq!(servers, ["192.0.2.10:3478"]);
    let v6 = parse(&with_urls(
        "[\"https://[2001:db8::1]:8700\", \"http://192.0.2.1:1\"]",
    ))
    .unwrap();
    let servers: Vec<String> = controller(&v6)
        .stun_servers()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(servers, ["[2001:db8::1]:3478"]);
}

#[test]
fn stun_servers_are_read_and_checked() {
    let listed = parse(&with_controller(
        "stun = [\"192.0.2.50:3478\", \"stun.example.net:19302\"]\n",
    ))
    .unwrap();
    let servers: Vec<String> = controller(&listed)
        .stun_servers()
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(servers, ["192.0.2.50:3478", "stun.example.net:19302"]);
    let none = parse(&with_controller("stun = []\n")).unwrap();
    assert!(
        controller(&none).stun_servers().is_empty(),
        "[] turns STUN off"
    );
    for (extra, fault) in [
        (
            "stun = [\"a:1\", \"b:1\", \"c:1\", \"d:1\", \"e:1\"]\n",
            "at most 4",
        ),
        ("stun = [\"192.0.2.50\"]\n", "HOST:PORT"),
        ("stun = [\"192.0.2.50:0\"]\n", "port"),
        ("stun = [\"a:1\", \"a:1\"]\n", "twice"),
    ] {
        let message = error(&with_controller(extra));
        assert!(
            message.contains("line 7")
                && message.contains("controller.stun")
                && message.contains(fault),
            "{extra:?}: {message}"
        );
    }
}

#[test]
fn gated_keepalive_is_automatic_unless_set() {
    use crate::config::GatedKeepalive;
    let auto = parse(&with_controller("")).unwrap();
    assert_eq!(controller(&auto).keepalive, GatedKeepalive::Auto);
    for (extra, wanted) in [
        ("keepalive = 2\n", GatedKeepalive::Every(2)),
        ("keepalive = \"30\"\n", GatedKeepalive::Every(30)),
        ("keepalive = 0\n", GatedKeepalive::Off),
        ("keepalive = \"off\"\n", GatedKeepalive::Off),
    ] {
        let config = parse(&with_controller(extra)).unwrap();
        assert_eq!(controller(&config).keepalive, wanted, "{extra:?}");
    }
    for extra in [
        "keepalive = 70000\n",
        "keepalive = -1\n",
        "keepalive = \"auto\"\n",
        "keepalive = [25]\n",
    ] {
        let message = error(&with_controller(extra));
        assert!(
            message.contains("line 7") && message.contains("controller.keepalive"),
            "{extra:?}: {message}"
        );
    }
}

#[test]
fn observations_are_off_unless_asked_for() {
    use crate::config::ObserveSettings;
    let plain = parse(&with_controller("")).unwrap();
    let observe = controller(&plain).observe;
    assert_eq!(observe, ObserveSettings::default());
    assert!(!observe.enabled);
    assert_eq!(observe.interval, Duration::from_secs(30));
    assert_eq!(observe.peers, 16);
    for (extra, interval, peers) in [
        ("observe = true\n", 30, 16),
        ("observe = true\nobserve_interval = \"90s\"\n", 90, 16),
        ("observe = true\nobserve_interval = \"1m 30s\"\n", 90, 16),
        ("observe = true\nobserve_interval = \"1h\"\n", 3600, 16),
        (
            "observe = true\nobserve_interval = 5\nobserve_peers = 256\n",
            5,
            256,
        ),
        ("observe = true\nobserve_peers = 1\n", 30, 1),
    ] {
        let config = parse(&with_controller(extra)).unwrap();
        let observe = controller(&config).observe;
        assert!(observe.enabled, "{extra:?}");
        assert_eq!(observe.interval, Duration::from_secs(interval), "{extra:?}");
        assert_eq!(observe.peers, peers, "{extra:?}");
    }
    // The other keys set, observing still off.
    let off = parse(&with_controller("observe = false\nobserve_peers = 4\n")).unwrap();
    assert!(!controller(&off).observe.enabled);
}

#[test]
fn bad_observation_values_name_line_and_key() {
    let cases: &[(&str, &[&str])] = &[
        (
            "observe = \"yes\"\n",
            &["`controller.observe`", "invalid type"],
        ),
        ("observe = 1\n", &["`controller.observe`", "invalid type"]),
        (
            "observe_interval = \"4s\"\n",
            &[
                "line 7",
                "`controller.observe_interval`",
                "4s is out of range",
                "from 5 s",
            ],
        ),
        (
            "observe_interval = \"2h\"\n",
            &["`controller.observe_interval`", "to 3600 s"],
        ),
        (
            "observe_interval = 4\n",
            &["`controller.observe_interval`", "from 5 to 3600"],
        ),
        (
            "observe_interval = -30\n",
            &["`controller.observe_interval`", "out of range"],
        ),
        (
            "observe_interval = \"soon\"\n",
            &["`controller.observe_interval`", "not a duration", "\"30s\""],
        ),
        (
            "observe_interval = \"30\"\n",
            &["`controller.observe_interval`", "not a duration"],
        ),
        (
            "observe_interval = 1.5\n",
            &["`controller.observe_interval`", "not a float"],
        ),
        (
            "observe_peers = 0\n",
            &["line 7", "`controller.observe_peers`", "from 1 to 256"],
        ),
        (
            "observe_peers = 257\n",
            &["`controller.observe_peers`", "from 1 to 256"],
        ),
        (
            "observe_peers = -1\n",
            &["`controller.observe_peers`", "-1 is out of range"],
        ),
    ];
    for (extra, parts) in cases {
        let message = error(&with_controller(extra));
        for part in *parts {
            assert!(message.contains(part), "{extra:?}: {message}");
        }
    }
}
