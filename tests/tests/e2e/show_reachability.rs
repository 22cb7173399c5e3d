//! `meshtun show` probes every peer over the tunnel: two meshtun nodes in two namespaces;
//! A's `meshtun show` reports B reachable, in text and JSON, then unreachable once B's daemon
//! is stopped. `wg show` and `wg showconf` keep working against A throughout.

use std::time::{Duration, Instant};

use meshtun_e2e::config::{pair, Node};
use meshtun_e2e::wg::{self, parse_conf};
use meshtun_e2e::{meshtun_in, require_root, Daemon, Family, Netns, Veth};

/// Time allowed for one `meshtun show` run (the probe itself waits at most 1 s).
const SHOW_TIMEOUT: Duration = Duration::from_secs(15);

/// `meshtun show NAME ARGS` in `ns`; fails the test if it fails.
fn show(ns: &Netns, name: &str, args: &[&str]) -> String {
    let mut full = vec!["show", name];
    full.extend_from_slice(args);
    meshtun_in(ns, &full, SHOW_TIMEOUT).expect_success()
}

/// The section of `meshtun show` text about the peer with public key `key`.
fn peer_section<'t>(text: &'t str, key: &str) -> &'t str {
    text.split("\n\n")
        .find(|section| section.starts_with(&format!("peer: {key}\n")))
        .unwrap_or_else(|| panic!("`meshtun show` has no section for peer {key}:\n{text}"))
}

/// The reachability object of the only peer in `meshtun show NAME --json` output.
fn json_reachability(text: &str) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"));
    json[0]["peers"][0]["reachability"].clone()
}

/// `wg show` and `wg showconf` still read the interface, and see peer `key`.
fn assert_wg_reads(ns: &Netns, name: &str, key: &str) {
    let text = wg::wg(ns, &["show", name]);
    assert!(text.contains(&format!("peer: {key}")), "{text}");
    let conf = wg::wg(ns, &["showconf", name]);
    let sections = parse_conf(&conf).unwrap_or_else(|e| panic!("{e}:\n{conf}"));
    let peers: Vec<_> = sections.iter().filter(|s| s.name == "Peer").collect();
    assert_eq!(peers.len(), 1, "{conf}");
    assert_eq!(peers[0].get("PublicKey"), Some(key), "{conf}");
}

#[test]
fn show_reports_live_and_stopped_peers() {
    if !require_root("show_reports_live_and_stopped_peers") {
        return;
    }
    let test = "show_reach";
    let (ns_a, ns_b) = (Netns::new(test), Netns::new(test));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let (ca, cb) = pair(&a, veth.a_addr(Family::V4), &b, veth.b_addr(Family::V4));
    let mut da = Daemon::start(&ns_a, &ca);
    let db = Daemon::start(&ns_b, &cb);
    let name = da.name().to_owned();
    let key = b.keys.public.as_str();

    // No session yet: the probe's echo starts the handshake and still gets its reply; the
    // status is read again after probing, so the handshake shows.
    let text = show(&ns_a, &name, &[]);
    let section = peer_section(&text, key);
    assert!(section.contains("\n  reachable: yes ("), "{text}");
    assert!(section.contains("\n  latest handshake: "), "{text}");
    assert!(
        !text.contains("membership"),
        "an ungated interface:\n{text}"
    );
    let reachability = json_reachability(&show(&ns_a, &name, &["--json"]));
    assert_eq!(reachability["state"], "reachable", "{reachability}");
    // B's first host route, 100.64.0.2/32, is the address probed.
    assert_eq!(reachability["address"], b.v4.to_string());
    assert!(reachability["rtt_ms"]
        .as_f64()
        .is_some_and(|ms| ms < 1000.0));
    let unprobed = show(&ns_a, &name, &["--no-probe"]);
    assert!(!unprobed.contains("reachable"), "{unprobed}");
    assert_wg_reads(&ns_a, &name, key);

    db.stop_cleanly();
    let started = Instant::now();
    let text = show(&ns_a, &name, &["--probe-timeout", "500"]);
    assert!(started.elapsed() >= Duration::from_millis(500));
    let section = peer_section(&text, key);
    assert!(
        section.contains("\n  reachable: no (no reply in 500 ms)"),
        "{text}"
    );
    let reachability = json_reachability(&show(&ns_a, &name, &["--json"]));
    assert_eq!(reachability["state"], "unreachable", "{reachability}");
    assert_eq!(reachability["timeout_ms"], 1000);
    assert_wg_reads(&ns_a, &name, key);

    da.assert_running();
    da.stop_cleanly();
}
