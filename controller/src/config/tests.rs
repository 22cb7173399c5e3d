//! The configuration file: good files, defaults, and bad values named with their key.

use super::*;

const MINIMAL: &str =
    "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"state\"\n";

fn parse(text: &str) -> Result<ControllerConfig, ConfigError> {
    ControllerConfig::parse(text, Path::new("/etc/meshtun/controller.toml"))
}

#[test]
fn the_database_is_a_path_an_sqlite_url_or_a_postgres_url() {
    for (line, expected) in [
        (
            "database = \"db/state.db\"",
            "sqlite:///etc/meshtun/db/state.db",
        ),
        (
            "database = \"sqlite:///var/lib/m/state.db\"",
            "sqlite:///var/lib/m/state.db",
        ),
        (
            "database = \"postgres://meshtun@db.example/mesh?sslmode=require\"",
            "postgres://meshtun@db.example/mesh",
        ),
    ] {
        let c = parse(&format!("{MINIMAL}{line}\n")).unwrap();
        assert_eq!(c.database.to_string(), expected);
    }
    let c = parse(&format!(
        "{MINIMAL}database = \"postgres://m@db.example/mesh\"\n\
         database_password_file = \"pg.password\"\n"
    ))
    .unwrap();
    match c.database {
        Database::Postgres(t) => assert_eq!(
            t.password_file.as_deref(),
            Some(Path::new("/etc/meshtun/pg.password"))
        ),
        other => panic!("{other:?}"),
    }
    let err = parse(&format!(
        "{MINIMAL}database_password_file = \"pg.password\"\n"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("database_password_file"), "{err}");
}

#[test]
fn a_database_url_of_another_kind_is_refused_not_taken_for_a_file() {
    for url in [
        "mysql://meshtun:hunter2@db.example/mesh",
        "file:///var/lib/m/state.db",
    ] {
        let err = parse(&format!("{MINIMAL}database = \"{url}\"\n"))
            .unwrap_err()
            .to_string();
        let scheme = url.split_once("://").unwrap().0;
        assert!(err.contains("`database`"), "{err}");
        assert!(err.contains(&format!("{scheme}://")), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
    // A path with `://` after a directory is still a path.
    let c = parse(&format!("{MINIMAL}database = \"db/a://b.db\"\n")).unwrap();
    assert_eq!(c.database.to_string(), "sqlite:///etc/meshtun/db/a://b.db");
}

#[test]
fn defaults_follow_the_seeds() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.policy.threshold, 0.70);
    assert_eq!(c.policy.max_age_ms, 120_000);
    assert_eq!(c.epoch_length, Duration::from_secs(60));
    assert_eq!(c.epoch_lead, Duration::from_secs(10));
    assert!(c.rotate_on_deny);
    assert_eq!(
        c.database,
        Database::Sqlite("/etc/meshtun/state/controller.db".into())
    );
    assert_eq!(c.policy.topology, Topology::FullMesh);
    assert_eq!(c.network, Network::default());
}

#[test]
fn the_network_section_names_the_overlay() {
    let c = parse(&format!(
        "{MINIMAL}[network]\nipv4 = \"100.64.0.0/24\"\nipv6 = \"fd00:64::/64\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.network.prefixes(),
        vec![
            "100.64.0.0/24".parse().unwrap(),
            "fd00:64::/64".parse().unwrap()
        ]
    );
    let err = |t: &str| parse(&format!("{MINIMAL}{t}")).unwrap_err().to_string();
    assert!(err("[network]\n").contains("`network`"));
    assert!(err("[network]\nipv4 = \"0.0.0.0/1\"\n").contains("`network.ipv4`"));
    assert!(err("[network]\nipv4 = \"100.64.0.1/24\"\n").contains("host bits"));
    assert!(err("[network]\nipv6 = \"::/0\"\n").contains("`network.ipv6`"));
    assert!(err("[network]\nipv4 = \"mesh\"\n").contains("line 5"));
}

/// Key rotation: `previous_keys` lists up to three public keys, each once; a key that
/// does not decode names the key and the line.
#[test]
fn previous_keys_are_read_and_bounded() {
    let keys: Vec<String> = (1..=4u8)
        .map(|i| {
            meshtun_proto::IdentityKey::from_bytes([i; 32])
                .public()
                .to_base64()
        })
        .collect();
    let list = |ks: &[String]| {
        let inner: Vec<String> = ks.iter().map(|k| format!("\"{k}\"")).collect();
        format!("{MINIMAL}previous_keys = [{}]\n", inner.join(", "))
    };
    let c = parse(&list(&keys[..3])).unwrap();
    let got: Vec<String> = c.previous_keys.iter().map(|k| k.to_base64()).collect();
    assert_eq!(got, keys[..3]);
    assert!(parse(MINIMAL).unwrap().previous_keys.is_empty());
    let err = |t: &str| parse(t).unwrap_err().to_string();
    let many = err(&list(&keys));
    assert!(
        many.contains("`previous_keys`") && many.contains("at most 3"),
        "{many}"
    );
    let twice = err(&list(&[keys[0].clone(), keys[0].clone()]));
    assert!(twice.contains("listed twice"), "{twice}");
    let bad = err(&format!("{MINIMAL}previous_keys = [\"short\"]\n"));
    assert!(
        bad.contains("`previous_keys`: key #1: not an Ed25519"),
        "{bad}"
    );
}

#[test]
fn every_section_parses() {
    let text = format!(
        "{MINIMAL}[epoch]\nlength = 10\nlead = 3\nrotate_on_deny = false\n[policy]\nthreshold = 0.8\nmax_age = 30\nreadmit_after = 3\n[policy.minimums]\nhonesty = 0.5\n[topology]\nkind = \"hub_and_spoke\"\nhubs = [\"hub-1\"]\n[api]\nclock_skew = 10\nlong_poll = 5\ninvite_ttl = 60\n[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n"
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.policy.minimums.honesty, Some(0.5));
    assert_eq!(
        c.policy.topology,
        Topology::HubAndSpoke {
            hubs: vec!["hub-1".into()]
        }
    );
    assert_eq!(c.tls.unwrap().cert, Path::new("/etc/meshtun/c.pem"));
    assert_eq!(c.policy.readmit_after, 3);
}

#[test]
fn errors_name_the_key_and_line() {
    let err = |t: &str| parse(t).unwrap_err().to_string();
    assert!(err(&format!("{MINIMAL}bogus = 1\n")).contains("line 4"));
    assert!(err(&format!("{MINIMAL}bogus = 1\n")).contains("bogus"));
    assert!(err(&format!("{MINIMAL}[epoch]\nlength = 10\nlead = 10\n")).contains("`epoch.lead`"));
    assert!(err(&format!("{MINIMAL}[policy]\nthreshold = 1.5\n")).contains("`policy.threshold`"));
    assert!(err(&format!(
        "{MINIMAL}[topology]\nkind = \"hub_and_spoke\"\nhubs = []\n"
    ))
    .contains("`topology.hubs`"));
    assert!(err("listen = \"nowhere\"\n").contains("line 1"));
    assert!(err(&MINIMAL.replace("http://", "ftp://")).contains("`url`"));
}

#[test]
fn unbounded_values_are_refused_with_their_key_25() {
    let err = |t: &str| parse(&format!("{MINIMAL}{t}")).unwrap_err().to_string();
    // A huge long_poll used to overflow `Instant + long_poll` on every bundle request.
    let huge = err("[api]\nlong_poll = 9223372036854775807\n");
    assert!(huge.contains("`api.long_poll`"), "{huge}");
    assert!(err("[api]\nlong_poll = 0\n").contains("`api.long_poll`"));
    assert!(err("[api]\nclock_skew = 100000\n").contains("`api.clock_skew`"));
    assert!(err("[api]\nclock_skew = 0\n").contains("`api.clock_skew`"));
    assert!(err("[epoch]\nlength = 99999999999\nlead = 1\n").contains("`epoch.length`"));
    for key in [
        "max_connections",
        "max_connections_per_address",
        "max_long_polls",
        "max_long_polls_per_address",
        "header_timeout",
        "request_timeout",
        "tls_handshake_timeout",
        "node_rate",
        "node_burst",
        "evaluator_rate",
        "evaluator_burst",
    ] {
        let message = err(&format!("[limits]\n{key} = 0\n"));
        assert!(message.contains(&format!("`limits.{key}`")), "{message}");
    }
    for key in ["benchmarks", "decisions", "audit"] {
        let message = err(&format!("[retention]\n{key} = 1\n"));
        assert!(message.contains(&format!("`retention.{key}`")), "{message}");
        let message = err(&format!("[retention]\n{key} = 99999999999\n"));
        assert!(message.contains(&format!("`retention.{key}`")), "{message}");
    }
    let c = parse(&format!("{MINIMAL}[retention]\naudit = 86400\n")).unwrap();
    assert_eq!(c.retention.audit, Duration::from_secs(86_400));
    assert_eq!(c.retention.benchmarks, Retention::default().benchmarks);
    // Unset long-poll caps follow lowered connection caps.
    let c = parse(&format!("{MINIMAL}[limits]\nmax_connections = 100\n")).unwrap();
    assert_eq!(c.limits.max_long_polls, 100);
    assert_eq!(c.limits.max_long_polls_per_address, 100);
    let message = err("[limits]\nmax_connections = 100\nmax_long_polls = 200\n");
    assert!(message.contains("`limits.max_long_polls`"), "{message}");
    let message = err("[limits]\nmax_connections = 100\nmax_connections_per_address = 200\n");
    assert!(
        message.contains("`limits.max_connections_per_address`"),
        "{message}"
    );
    assert!(
        message.contains("limits.max_connections (100)"),
        "{message}"
    );
    let c = parse(&format!(
        "{MINIMAL}[limits]\nheader_timeout = 2\nnode_rate = 5\n"
    ))
    .unwrap();
    assert_eq!(c.limits.header_timeout, Duration::from_secs(2));
    assert_eq!(c.limits.node_rate, 5);
    assert_eq!(c.limits.evaluator_rate, Limits::default().evaluator_rate);
    let c = parse(&format!(
        "{MINIMAL}[limits]\nevaluator_rate = 7\nevaluator_burst = 70\n"
    ))
    .unwrap();
    assert_eq!((c.limits.evaluator_rate, c.limits.evaluator_burst), (7, 70));
    assert_eq!(c.limits.node_burst, Limits::default().node_burst);
    assert_eq!(c.limits.max_connections, Limits::default().max_connections);
}

#[test]
fn the_status_listener_is_loopback_unless_a_read_token_guards_it_11() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.status_listen, "127.0.0.1:8701".parse().unwrap());
    assert_eq!(c.read_token_file, None);
    let open = format!("status_listen = \"0.0.0.0:8701\"\n{MINIMAL}");
    let message = parse(&open).unwrap_err().to_string();
    assert!(message.contains("`status_listen`"), "{message}");
    assert!(message.contains("read_token_file"), "{message}");
    let guarded = format!("read_token_file = \"read.token\"\n{open}");
    let c = parse(&guarded).unwrap();
    assert_eq!(
        c.read_token_file.unwrap(),
        Path::new("/etc/meshtun/read.token")
    );
    let same = format!("status_listen = \"127.0.0.1:8700\"\n{MINIMAL}");
    assert!(parse(&same)
        .unwrap_err()
        .to_string()
        .contains("`status_listen`"));
}

#[test]
fn the_ha_section_reaches_the_configuration() {
    let c = parse(&format!("{MINIMAL}[ha]\nlease = 4\ninstance = \"ctl-1\"\n")).unwrap();
    assert_eq!(c.ha.lease, Duration::from_secs(4));
    assert_eq!(c.ha.instance, "ctl-1");
    let message = parse(&format!("{MINIMAL}[ha]\nlease = 0\n")).unwrap_err();
    assert!(message.to_string().contains("`ha.lease`"), "{message}");
}

#[test]
fn the_packaged_example_parses() {
    let text = include_str!("../../../packaging/examples/controller.toml");
    let c = parse(text).unwrap();
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.status_listen, "127.0.0.1:8701".parse().unwrap());
}

/// `[membership] public_key`: absent by default; a key that does not decode, or of small
/// order, is refused naming the key.
#[test]
fn the_membership_key_is_optional_and_checked() {
    assert!(parse(MINIMAL).unwrap().membership_key.is_none());
    let key = meshtun_proto::membership::MembershipKey::generate().public();
    let text = format!("{MINIMAL}[membership]\npublic_key = \"{key}\"\n");
    assert_eq!(parse(&text).unwrap().membership_key, Some(key));
    let mut small = [0u8; 32];
    small[0] = 1;
    let small = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, small);
    for bad in ["short", small.as_str()] {
        let err = parse(&format!("{MINIMAL}[membership]\npublic_key = \"{bad}\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`membership.public_key`"), "{err}");
    }
    let unknown = parse(&format!("{MINIMAL}[membership]\nkey = \"{key}\"\n")).unwrap_err();
    assert!(unknown.to_string().contains("unknown field"), "{unknown}");
}
