//! What `meshtun demo --nat` prints: the introduction, the routers, each node's reflexive
//! address, the a↔b direct path, node-c's path, node-c's score dropping, and the summary's
//! lines, each saying what was seen.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::{check, event, secs, Style, CONTINUE};
use crate::demo::cutoff::CUTOFF_BOUND_MS;
use crate::demo::nat::{NatStory, PeerPath, Reflexive};
use crate::demo::plan::{
    nat_mapping, DemoOptions, Names, NodeSpec, CONTROLLER_ADDR, NAT_DENIED_MEAN, NAT_MEAN, NODES,
    RELAY_ADDR, STUN_PORT, THRESHOLD,
};
use crate::demo::story::Story;

/// The introduction.
pub fn header(style: Style, names: &Names, opts: &DemoOptions, dir: &Path) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}\n",
        style.strong("meshtun demo --nat: NAT traversal and gating, live, on this machine")
    );
    let _ = writeln!(
        out,
        "A controller (`meshtun-controller serve`, with its STUN server on UDP {STUN_PORT}), a \
         TURN relay\n(coturn) and three nodes, each node behind its own NAT router. No node \
         was enrolled with an\nendpoint: each learns its public address from the controller's \
         STUN server, reports it,\nand the bundles list every peer's candidates.\n"
    );
    let _ = writeln!(
        out,
        "  controller  http://{CONTROLLER_ADDR}:8700, STUN {CONTROLLER_ADDR}:{STUN_PORT}   \
         epochs of {} s; threshold {THRESHOLD:.2}",
        opts.epoch.as_secs()
    );
    let _ = writeln!(out, "  relay       turn:{RELAY_ADDR}:3478 (coturn)");
    for node in &NODES {
        let _ = writeln!(
            out,
            "  {}      behind router {} (`{}`)   tunnel {}   scores around {NAT_MEAN:.2}",
            node.id,
            node.outer,
            nat_mapping(node).rule_text(),
            node.tunnel
        );
    }
    let end = match opts.end_at() {
        Some(end) => format!("The demo ends after {} s.", end.as_secs()),
        None => "The demo runs until Ctrl-C.".to_owned(),
    };
    let _ = writeln!(
        out,
        "\nExpect: node-a and node-b reach each other directly through both NATs (a simultaneous \
         open).\nnode-c's NAT gives every destination another port, so no direct path opens \
         to it: its\npeers reach it through the TURN relay, which carries only WireGuard \
         datagrams it cannot read.\n{} s after the first epoch, once its paths work, node-c's \
         score drops to {NAT_DENIED_MEAN:.2}: the\nothers drop it within a second of the \
         controller's decision. {end}\n",
        opts.deny_at().unwrap_or_default().as_secs()
    );
    let kept = if opts.keep {
        "kept at the end (--keep)"
    } else {
        "removed at the end; --keep keeps them"
    };
    let _ = writeln!(
        out,
        "{}",
        style.dim(&format!(
            "Namespaces {}{{hub,ctl,relay,a,b,c,ra,rb,rc}}. Configurations, keys, logs and the \
             controller's\ndatabase are in {} ({kept}).\n\
             Ctrl-C stops the demo at any time; everything it created is removed.",
            names.prefix(),
            dir.display()
        ))
    );
    out
}

/// A node's router, once it is in place.
pub fn router_line(style: Style, at: Duration, node: &NodeSpec, namespace: &str) -> String {
    event(
        at,
        &style.dim(&format!(
            "{} is behind router {namespace}: public {}, `{}`",
            node.id,
            node.outer,
            nat_mapping(node).rule_text()
        )),
    )
}

/// A node's reflexive address, as `meshtun show` first shows it.
pub fn reflexive_line(style: Style, at: Duration, node: &NodeSpec, seen: &Reflexive) -> String {
    format!(
        "{}\n{CONTINUE}{}",
        event(
            at,
            &format!(
                "{}  learnt its public address {} from the STUN server {}",
                node.id,
                style.strong(&seen.address),
                seen.server
            )
        ),
        style.dim(&format!(
            "(`meshtun show`; NAT kind: {}, as one STUN server lets it judge)",
            seen.nat
        ))
    )
}

/// node-a and node-b on a direct path.
pub fn direct_line(style: Style, at: Duration, ab: &PeerPath, ba: &PeerPath) -> String {
    format!(
        "{}\n{CONTINUE}{}",
        event(
            at,
            &style.good(&format!(
                "node-a → node-b: {}   node-b → node-a: {}",
                ab.describe(),
                ba.describe()
            ))
        ),
        style.dim("(each at the other's router: no third party carries their traffic)")
    )
}

/// The paths to and from node-c, and node-c's relay as it shows it.
pub fn c_paths_line(
    style: Style,
    at: Duration,
    paths: &[(String, PeerPath)],
    relay: &serde_json::Value,
) -> String {
    let parts: Vec<String> = paths
        .iter()
        .map(|(from, p)| format!("{from} → {}: {}", p.peer, p.describe()))
        .collect();
    let relay = match relay.get("state").and_then(serde_json::Value::as_str) {
        Some(state) => {
            let server = relay
                .get("server")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("?");
            let relayed = relay
                .get("relayed")
                .and_then(serde_json::Value::as_str)
                .map(|r| format!(", relayed address {r}"))
                .unwrap_or_default();
            format!("node-c's relay on {server}: {state}{relayed}")
        }
        None => "node-c shows no relay".to_owned(),
    };
    format!(
        "{}\n{CONTINUE}{}",
        event(at, &format!("path of node-c: {}", parts.join("   "))),
        style.dim(&format!("({relay}; as `meshtun show` says)"))
    )
}

/// node-c's score drops.
pub fn score_drops(style: Style, at: Duration, node: &str, pid: u32) -> String {
    format!(
        "{}\n{CONTINUE}{}",
        event(
            at,
            &style.notice(&format!(
                "{node}'s score drops: its benchmark now averages {NAT_DENIED_MEAN:.2}"
            ))
        ),
        style.dim(&format!(
            "(its configuration was rewritten and its daemon, pid {pid}, rereads it on SIGHUP;\n\
             {CONTINUE} the controller denies it at once, and the others must drop it within \
             {} s)",
            CUTOFF_BOUND_MS / 1000
        ))
    )
}

/// The summary's lines, one per claim.
pub fn summary(style: Style, story: &Story, nat: &NatStory) -> String {
    let mut out = String::new();
    let learnt: Vec<String> = nat
        .reflexive
        .iter()
        .map(|(node, r)| format!("{node} {}", r.address))
        .collect();
    let _ = writeln!(
        out,
        "  {} reflexive addresses learnt through STUN: {}.",
        check(style, nat.reflexive.len() == NODES.len()),
        if learnt.is_empty() {
            "none".to_owned()
        } else {
            learnt.join(", ")
        }
    );
    let direct = match &nat.ab_direct {
        Some((at, ab, ba)) => format!(
            "a↔b direct from {}: node-a → node-b {}, node-b → node-a {};\n    \
             they answered each other in {} of {} ping rounds.",
            secs(*at),
            ab.describe(),
            ba.describe(),
            story.ab_rounds.0,
            story.ab_rounds.1
        ),
        None => "a↔b: no direct path at the other's router was seen.".to_owned(),
    };
    let _ = writeln!(
        out,
        "  {} {direct}",
        check(
            style,
            nat.ab_direct.is_some() && story.ab_connected.is_some()
        )
    );
    let c_path = if nat.c_paths.is_empty() {
        "node-c's path: not seen.".to_owned()
    } else {
        let parts: Vec<String> = nat
            .c_paths
            .iter()
            .map(|(from, p)| format!("{from} → {} {}", p.peer, p.describe()))
            .collect();
        format!("node-c's path as last seen: {}.", parts.join(", "))
    };
    let _ = writeln!(out, "  {} {c_path}", check(style, !nat.c_paths.is_empty()));
    let denied = match nat.c_denied {
        Some((epoch, _)) => format!(
            "node-c denied in epoch {epoch}; from the decision to its removal, as each \
             node logged it:\n    {}",
            nat.cut.times_text()
        ),
        None => "node-c was not seen denied.".to_owned(),
    };
    let _ = writeln!(
        out,
        "  {} {denied} (bound {CUTOFF_BOUND_MS} ms)",
        check(style, nat.c_denied.is_some() && nat.cut.in_time())
    );
    let silent = match nat.cut.silent {
        Some(at) => format!(
            "node-c cut off everywhere: from {} nobody reached it and it reached nobody.",
            secs(at)
        ),
        None => "node-c was not seen cut off from everyone after its denial.".to_owned(),
    };
    let _ = writeln!(out, "  {} {silent}", check(style, nat.cut.silent.is_some()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(peer: &str, path: &str, endpoint: Option<&str>) -> PeerPath {
        PeerPath {
            peer: peer.into(),
            path: path.into(),
            endpoint: endpoint.map(|e| e.parse().unwrap()),
        }
    }

    #[test]
    fn the_summary_says_what_each_claim_saw() {
        let plain = Style::new(false);
        let mut story = Story {
            ab_connected: Some(Duration::from_secs(8)),
            ab_rounds: (5, 5),
            nat: Some(NatStory::default()),
            ..Story::default()
        };
        let text = summary(plain, &story, story.nat.as_ref().unwrap());
        assert_eq!(text.matches('✗').count(), 5, "{text}");
        assert!(text.contains("no direct path"), "{text}");

        let nat = story.nat.as_mut().unwrap();
        for (node, address) in [
            ("node-a", "192.0.2.1:51820"),
            ("node-b", "192.0.2.2:51820"),
            ("node-c", "192.0.2.3:40000"),
        ] {
            nat.reflexive.insert(
                node.into(),
                Reflexive {
                    address: address.into(),
                    server: "192.0.2.10:3478".into(),
                    nat: "unknown".into(),
                },
            );
        }
        nat.ab_direct = Some((
            Duration::from_secs(8),
            path("node-b", "direct", Some("192.0.2.2:51820")),
            path("node-a", "direct", Some("192.0.2.1:51820")),
        ));
        nat.c_paths = vec![(
            "node-a".into(),
            path("node-c", "trying", Some("192.0.2.3:40000")),
        )];
        nat.c_denied = Some((7, 0));
        nat.cut.times.insert("node-a".into(), Some(5));
        nat.cut.times.insert("node-b".into(), Some(7));
        nat.cut.silent = Some(Duration::from_secs(16));
        let text = summary(plain, &story, story.nat.as_ref().unwrap());
        assert_eq!(text.matches('✓').count(), 5, "{text}");
        assert!(
            text.contains("a↔b direct from 8.0 s: node-a → node-b direct to 192.0.2.2:51820"),
            "{text}"
        );
        assert!(
            text.contains("node-a → node-c trying (endpoint 192.0.2.3:40000)"),
            "{text}"
        );
        assert!(text.contains("node-a 5 ms, node-b 7 ms"), "{text}");
        assert!(story.missing().is_empty(), "{:?}", story.missing());

        story
            .nat
            .as_mut()
            .unwrap()
            .cut
            .times
            .insert("node-b".into(), Some(1500));
        let text = summary(plain, &story, story.nat.as_ref().unwrap());
        assert_eq!(
            text.matches('✗').count(),
            1,
            "a late cut-off is not a success: {text}"
        );
        assert_eq!(
            story.missing(),
            ["node-a and node-b dropping node-c within 1 s of the decision"]
        );
    }
}
