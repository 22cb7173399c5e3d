//! The one parser of a gated daemon's gate log lines, which the demo shows and the e2e tests
//! check: `MEMBERSHIP=STATE epoch=E …`, `APPLIED epoch=E peer=NODE …` and
//! `CUTOFF peer=NODE epoch=E decision_to_cutoff_ms=N`, anywhere in a tracing line.
//!
//! What a daemon's gate is *now* is better read from `meshtun show --json` (the UAPI gate
//! keys); these lines are the history: which epochs it applied and when it cut a peer off.

use std::collections::BTreeMap;

/// The keywords a gate line starts with.
const MARKERS: [&str; 3] = ["MEMBERSHIP=", "APPLIED ", "CUTOFF "];

/// One gate log line of a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateEvent {
    /// `MEMBERSHIP=STATE epoch=E …`: the node's membership changed or was confirmed.
    Membership {
        /// `ALLOWED`, `DENIED`, `LOST` or `PENDING`.
        state: String,
        /// The epoch, if the line names one.
        epoch: Option<u64>,
        /// Every `key=value` field of the line (quotes removed).
        fields: BTreeMap<String, String>,
    },
    /// `APPLIED epoch=E peer=NODE …`: a gated peer was configured for epoch `E`.
    Applied {
        /// The epoch.
        epoch: Option<u64>,
        /// The peer's node id.
        peer: String,
    },
    /// `CUTOFF peer=NODE epoch=E decision_to_cutoff_ms=N`: a gated peer was removed.
    Cutoff {
        /// The peer's node id.
        peer: String,
        /// The epoch that left it out.
        epoch: Option<u64>,
        /// Milliseconds from the controller's decision to the removal.
        decision_to_cutoff_ms: Option<u64>,
    },
}

/// Every gate event in a daemon's log, in order.
pub fn events(log: &str) -> Vec<GateEvent> {
    log.lines().filter_map(parse_line).collect()
}

/// The part of a log line worth showing a person, if any: from the gate keyword on, or
/// from the level of a warning or an error (`<timestamp>  WARN target: message`).
pub fn notable(line: &str) -> Option<&str> {
    if let Some(start) = MARKERS.iter().filter_map(|m| line.find(m)).min() {
        return line.get(start..);
    }
    let level = line
        .split_whitespace()
        .nth(1)
        .filter(|l| matches!(*l, "WARN" | "ERROR"))?;
    line.find(level).and_then(|start| line.get(start..))
}

/// The gate event of one log line, if it is one.
pub fn parse_line(line: &str) -> Option<GateEvent> {
    let (at, marker) = MARKERS
        .iter()
        .filter_map(|m| line.find(m).map(|at| (at, *m)))
        .min()?;
    let fields = fields(line.get(at..)?);
    let epoch = fields.get("epoch").and_then(|e| e.parse().ok());
    let peer = fields.get("peer").cloned().unwrap_or_default();
    Some(match marker {
        "MEMBERSHIP=" => GateEvent::Membership {
            state: fields.get("MEMBERSHIP").cloned().unwrap_or_default(),
            epoch,
            fields,
        },
        "APPLIED " => GateEvent::Applied { epoch, peer },
        _ => GateEvent::Cutoff {
            peer,
            epoch,
            decision_to_cutoff_ms: fields
                .get("decision_to_cutoff_ms")
                .and_then(|n| n.parse().ok()),
        },
    })
}

/// The `key=value` pairs of `text`; a value may be double-quoted with backslash escapes.
fn fields(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        if key.is_empty() && chars.peek().is_none() {
            return out;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value.extend(std::iter::from_fn(|| chars.next_if(|c| !c.is_whitespace())));
        }
        out.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2025-01-01T00:00:00.000001Z  INFO meshtun::gate: MEMBERSHIP=ALLOWED epoch=4 peers=2
2025-01-01T00:00:00.000002Z  INFO meshtun::gate: APPLIED epoch=4 peer=b psk=****
2025-01-01T00:00:01.000000Z  INFO gate{iface=mt0}: meshtun::gate: CUTOFF peer=d epoch=5 decision_to_cutoff_ms=137
2025-01-01T00:00:02.000000Z  INFO meshtun::gate: MEMBERSHIP=DENIED epoch=6 reason=\"overall 0.1 below \\\"threshold\\\" 0.7\"
2025-01-01T00:00:03.000000Z DEBUG meshtun::device: unrelated line
";

    #[test]
    fn gate_lines_are_parsed_with_their_fields() {
        let events = events(LOG);
        assert_eq!(events.len(), 4);
        assert!(matches!(&events[0],
            GateEvent::Membership { state, epoch: Some(4), fields }
                if state == "ALLOWED" && fields["peers"] == "2"));
        assert_eq!(
            events[1],
            GateEvent::Applied {
                epoch: Some(4),
                peer: "b".into()
            }
        );
        assert_eq!(
            events[2],
            GateEvent::Cutoff {
                peer: "d".into(),
                epoch: Some(5),
                decision_to_cutoff_ms: Some(137)
            }
        );
        let GateEvent::Membership { fields, epoch, .. } = &events[3] else {
            panic!("{:?}", events[3]);
        };
        assert_eq!(*epoch, Some(6));
        assert_eq!(fields["reason"], "overall 0.1 below \"threshold\" 0.7");
    }

    #[test]
    fn a_hostile_line_is_read_without_panicking() {
        // A peer name or reason cannot smuggle a second event into one line: the first
        // keyword wins, the rest is a field value.
        let line = "x MEMBERSHIP=DENIED epoch=3 reason=\"APPLIED epoch=9 peer=evil\"";
        let Some(GateEvent::Membership { state, fields, .. }) = parse_line(line) else {
            panic!("{line}");
        };
        assert_eq!(state, "DENIED");
        assert_eq!(fields["reason"], "APPLIED epoch=9 peer=evil");
        for odd in [
            "MEMBERSHIP=",
            "APPLIED ",
            "CUTOFF peer=\"unterminated",
            "MEMBERSHIP=ALLOWED epoch=18446744073709551616",
            "APPLIED epoch=\\",
            "=== MEMBERSHIP==",
        ] {
            let _ = parse_line(odd);
        }
        assert_eq!(
            parse_line("MEMBERSHIP=ALLOWED epoch=18446744073709551616"),
            Some(GateEvent::Membership {
                state: "ALLOWED".into(),
                epoch: None,
                fields: [
                    ("MEMBERSHIP".into(), "ALLOWED".into()),
                    ("epoch".into(), "18446744073709551616".into())
                ]
                .into()
            })
        );
    }

    #[test]
    fn notable_lines_are_the_gate_events_and_problems() {
        let line =
            "2026-11-21T10:00:00.123456Z  INFO meshtun::gate: MEMBERSHIP=ALLOWED epoch=3 peers=1";
        assert_eq!(notable(line), Some("MEMBERSHIP=ALLOWED epoch=3 peers=1"));
        let line = "2026-11-21T10:00:00Z  WARN meshtun::gate: cannot reach the controller";
        assert_eq!(
            notable(line),
            Some("WARN meshtun::gate: cannot reach the controller")
        );
        assert_eq!(
            notable("2026-11-21T10:00:00Z  INFO meshtun: interface is up"),
            None
        );
        assert_eq!(notable(""), None);
    }
}
