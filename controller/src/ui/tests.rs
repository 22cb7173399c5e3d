//! Unit tests of the dashboard's token parsing, decisions log and pairs.

use std::collections::BTreeMap;

use axum::http::{header, HeaderMap, HeaderValue};
use base64::Engine as _;

use super::data::{decisions_log, pairs, MAX_LOG, MAX_PAIRS};
use super::{local_host, presented};
use crate::model::{Decision, Evidence, History, Topology};
use crate::store::EpochSummary;

fn headers(value: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
    h
}

fn basic(text: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}

#[test]
fn the_token_is_read_from_bearer_or_the_basic_password() {
    let token = |v: &str| presented(&headers(v)).map(|t| t.to_string());
    assert_eq!(token("Bearer abc").as_deref(), Some("abc"));
    assert_eq!(token(&basic("user:abc")).as_deref(), Some("abc"));
    assert_eq!(token(&basic(":a:b")).as_deref(), Some("a:b"));
    assert_eq!(token(&basic("no-colon")), None);
    assert_eq!(token("Basic %%%"), None);
    assert_eq!(token("Digest abc"), None);
    assert_eq!(presented(&HeaderMap::new()).map(|t| t.to_string()), None);
}

fn decision(node: &str, allowed: bool) -> Decision {
    Decision {
        node_id: node.to_owned(),
        allowed,
        reason: format!("{node} {}", if allowed { "passes" } else { "fails" }),
        passing: allowed,
        history: History::default(),
        evidence: Evidence {
            score: Some(0.5),
            threshold: 0.7,
            age_ms: Some(1),
            max_age_ms: 120_000,
            seq: Some(1),
            sources: Vec::new(),
        },
    }
}

fn epoch(id: u64) -> EpochSummary {
    EpochSummary {
        id,
        activation_ms: id * 1000,
        not_after_ms: id * 1000 + 1000,
        created_ms: id * 1000 - 10,
        cause: "schedule".to_owned(),
    }
}

#[test]
fn the_log_keeps_denials_and_changes_newest_first() {
    let epochs = vec![
        (epoch(1), vec![decision("a", true), decision("b", true)]),
        (epoch(2), vec![decision("a", true), decision("b", false)]),
        (epoch(3), vec![decision("a", true), decision("b", true)]),
    ];
    let log = decisions_log(&epochs);
    let rows: Vec<(u64, &str, Option<&str>)> = log
        .iter()
        .map(|r| (r.epoch, r.node.as_str(), r.change))
        .collect();
    assert_eq!(
        rows,
        vec![(3, "b", Some("readmitted")), (2, "b", Some("denied"))]
    );
    assert_eq!(log[1].reason, "b fails");
}

#[test]
fn the_log_is_capped() {
    let epochs: Vec<_> = (1..=MAX_LOG as u64 + 50)
        .map(|i| (epoch(i), vec![decision("d", false)]))
        .collect();
    let log = decisions_log(&epochs);
    assert_eq!(log.len(), MAX_LOG);
    assert_eq!(log[0].epoch, MAX_LOG as u64 + 50, "newest first");
}

#[test]
fn pairs_follow_the_topology_and_leave_denied_nodes_out() {
    let decisions: BTreeMap<String, Decision> = [
        decision("a", true),
        decision("b", true),
        decision("c", true),
        decision("d", false),
    ]
    .into_iter()
    .map(|d| (d.node_id.clone(), d))
    .collect();
    let (full, total) = pairs(&decisions, &Topology::FullMesh);
    assert_eq!(total, 3);
    let names: Vec<(&str, &str)> = full.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    assert_eq!(names, vec![("a", "b"), ("a", "c"), ("b", "c")]);
    let hub = Topology::HubAndSpoke {
        hubs: vec!["a".to_owned()],
    };
    let (spokes, _) = pairs(&decisions, &hub);
    assert!(
        spokes.iter().all(|(x, y)| x == "a" || y == "a"),
        "{spokes:?}"
    );
    assert!(
        spokes.iter().all(|(x, y)| x != "d" && y != "d"),
        "{spokes:?}"
    );
}

#[test]
fn pairs_are_capped() {
    let decisions: BTreeMap<String, Decision> = (0..100)
        .map(|i| decision(&format!("n{i:03}"), true))
        .map(|d| (d.node_id.clone(), d))
        .collect();
    let (shown, total) = pairs(&decisions, &Topology::FullMesh);
    assert_eq!(total, 100 * 99 / 2);
    assert_eq!(shown.len(), MAX_PAIRS.min(total));
}

#[test]
fn only_addresses_and_localhost_are_local_hosts() {
    for ok in [
        "127.0.0.1",
        "127.0.0.1:8701",
        "[::1]:8701",
        "[::1]",
        "localhost",
        "LocalHost:8701",
        "10.0.0.1:80",
    ] {
        assert!(local_host(ok), "{ok}");
    }
    for bad in [
        "evil.example",
        "evil.example:8701",
        "localhost.evil.example",
        "127.0.0.1.nip.io:8701",
        "",
        "[evil]:80",
    ] {
        assert!(!local_host(bad), "{bad}");
    }
}
