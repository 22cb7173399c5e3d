//! meshtun's own keys in the answer to `get`: the membership gating state.
//!
//! `wg` and other UAPI clients skip keys they do not know, both at device level and inside
//! a peer section, so a gated interface adds its state to the ordinary answer:
//!
//! | key (device level)                   | value                                    |
//! |--------------------------------------|------------------------------------------|
//! | `meshtun_node_id`                    | this node's id (text)                    |
//! | `meshtun_controller_url`             | the controller's base URL (text)         |
//! | `meshtun_controller_key`             | the key that signed the last bundle (text; absent before one) |
//! | `meshtun_loss_policy`                | `fail_closed` or `keep_last` (text)      |
//! | `meshtun_membership`                 | `PENDING`, `ALLOWED`, `DENIED` or `LOST` |
//! | `meshtun_reason`                     | why this node is denied (text)           |
//! | `meshtun_epoch`                      | epoch of the bundle in force             |
//! | `meshtun_epoch_not_after_ms`         | its end, Unix milliseconds               |
//! | `meshtun_next_epoch`                 | a verified bundle awaiting activation    |
//! | `meshtun_controller_last_contact_ms` | last answer from the controller, Unix ms |
//! | `meshtun_controller_error`           | last error talking to it (text)          |
//! | `meshtun_reflexive`                  | `ADDRESS SERVER UNIX_MS`: one STUN answer; repeated, at most 4 |
//! | `meshtun_nat`                        | `unknown`, `endpoint_independent` or `endpoint_dependent` |
//! | `meshtun_forward`                    | `true`: this node forwards between its gated peers (a hub); absent otherwise |
//! | `meshtun_relay`                      | `SERVER RELAYED EXPIRES_S STATE`: the TURN allocation (`-` before one) |
//! | `meshtun_membership_refused`         | peers refused for their membership signature since start; absent while 0 |
//! | `meshtun_observing`                  | `PEERS INTERVAL_S SENT REFUSED FAILED`: peer observations; absent while off |
//!
//! | key (peer section)     | value                                              |
//! |------------------------|----------------------------------------------------|
//! | `meshtun_node_id`      | the peer's node id (text)                          |
//! | `meshtun_psk_since_ms` | when its preshared key was put in use, Unix ms     |
//! | `meshtun_psk_epoch`    | the epoch of the bundle that brought that key (absent without one) |
//! | `meshtun_forwards_to`  | a node reached through this peer (a hub; text); repeated |
//!
//! `meshtun_membership` marks a gated interface and is always sent for one; keys without a
//! value to report are left out. Text values are percent-encoded (`%`, `=`, control
//! characters and non-ASCII bytes), so that every value is one line without `=`, which some
//! clients (wgctrl-go) require; they are cut to [`MAX_TEXT`] bytes first. No key is sent.

use std::fmt::{Display, Write as _};

use meshtun_proto::EpochId;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

use super::error::UapiError;
use super::set::number;
use crate::wgcfg::{DeviceGate, PeerGate};
use crate::wgcfg::{MembershipState, NatKind, NatStatus, ObservingShown, Reflexive, RelayShown};

/// The prefix of every meshtun key.
pub const PREFIX: &str = "meshtun_";

/// Longest text value sent, in bytes before encoding; longer ones are cut at a character
/// boundary.
pub const MAX_TEXT: usize = 1024;

/// Bytes percent-encoded in text values, besides non-ASCII ones.
const ESCAPED: &AsciiSet = &CONTROLS.add(b'%').add(b'=');

/// Appends the device-level gating keys for `gate`.
pub fn write_device_gate(gate: &DeviceGate, out: &mut String) {
    text_line(out, "meshtun_node_id", &gate.node_id);
    text_line(out, "meshtun_controller_url", &gate.controller_url);
    if !gate.controller_key.is_empty() {
        text_line(out, "meshtun_controller_key", &gate.controller_key);
    }
    text_line(out, "meshtun_loss_policy", &gate.loss_policy);
    line(out, "meshtun_membership", gate.membership.as_str());
    if let Some(reason) = gate.membership.reason() {
        text_line(out, "meshtun_reason", reason);
    }
    optional_line(out, "meshtun_epoch", gate.epoch);
    optional_line(out, "meshtun_epoch_not_after_ms", gate.epoch_not_after_ms);
    optional_line(out, "meshtun_next_epoch", gate.next_epoch);
    optional_line(
        out,
        "meshtun_controller_last_contact_ms",
        gate.controller_last_contact_ms,
    );
    if let Some(error) = &gate.controller_error {
        text_line(out, "meshtun_controller_error", error);
    }
    for r in gate.nat.reflexive.iter().take(MAX_REFLEXIVE) {
        let value = format!("{} {} {}", r.address, r.server, r.at_ms);
        text_line(out, "meshtun_reflexive", &value);
    }
    if !gate.nat.reflexive.is_empty() || gate.nat.kind != NatKind::Unknown {
        line(out, "meshtun_nat", gate.nat.kind.as_str());
    }
    if gate.forward {
        line(out, "meshtun_forward", "true");
    }
    if let Some(r) = &gate.relay {
        let relayed = r.relayed.map_or("-".to_owned(), |a| a.to_string());
        let value = format!("{} {relayed} {} {}", r.server, r.expires_s, r.state);
        text_line(out, "meshtun_relay", &value);
    }
    if gate.membership_refused > 0 {
        line(out, "meshtun_membership_refused", gate.membership_refused);
    }
    if let Some(o) = &gate.observing {
        let value = format!(
            "{} {} {} {} {}",
            o.peers, o.interval_s, o.sent, o.refused, o.failed
        );
        line(out, "meshtun_observing", value);
    }
}

fn decode_observing(key: &str, value: &str, line_no: usize) -> Result<ObservingShown, UapiError> {
    let bad = || {
        UapiError::reply(
            line_no,
            format!("{key}: expected PEERS INTERVAL_S SENT REFUSED FAILED"),
        )
    };
    let numbers: Vec<u64> = value
        .split(' ')
        .map(|n| number(n).ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    let [peers, interval_s, sent, refused, failed] = numbers[..] else {
        return Err(bad());
    };
    Ok(ObservingShown {
        peers,
        interval_s,
        sent,
        refused,
        failed,
    })
}

fn decode_relay(key: &str, value: &str, line_no: usize) -> Result<RelayShown, UapiError> {
    let text = decode_text(key, value, line_no)?;
    let bad = || {
        UapiError::reply(
            line_no,
            format!("{key}: expected SERVER RELAYED EXPIRES_S STATE"),
        )
    };
    let mut parts = text.split(' ');
    let (Some(server), Some(relayed), Some(expires), Some(state), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(bad());
    };
    Ok(RelayShown {
        server: server.parse().map_err(|_| bad())?,
        relayed: match relayed {
            "-" => None,
            a => Some(a.parse().map_err(|_| bad())?),
        },
        expires_s: number(expires).ok_or_else(bad)?,
        state: state.to_owned(),
    })
}

/// `meshtun_reflexive` lines read at most (one per STUN server).
pub const MAX_REFLEXIVE: usize = 4;

fn decode_reflexive(key: &str, value: &str, line_no: usize) -> Result<Reflexive, UapiError> {
    let text = decode_text(key, value, line_no)?;
    let bad = || UapiError::reply(line_no, format!("{key}: expected ADDRESS SERVER UNIX_MS"));
    let mut parts = text.split(' ');
    let (Some(address), Some(server), Some(at_ms), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    Ok(Reflexive {
        address: address.parse().map_err(|_| bad())?,
        server: server.to_owned(),
        at_ms: number(at_ms).ok_or_else(bad)?,
    })
}

/// Appends the gating keys of one peer section.
pub fn write_peer_gate(gate: &PeerGate, out: &mut String) {
    text_line(out, "meshtun_node_id", &gate.node_id);
    line(out, "meshtun_psk_since_ms", gate.psk_since_ms);
    optional_line(out, "meshtun_psk_epoch", gate.psk_epoch);
    for node in &gate.forwards_to {
        text_line(out, "meshtun_forwards_to", node);
    }
}

fn line(out: &mut String, key: &str, value: impl Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key}={value}");
}

fn optional_line(out: &mut String, key: &str, value: Option<u64>) {
    if let Some(value) = value {
        line(out, key, value);
    }
}

fn text_line(out: &mut String, key: &str, value: &str) {
    line(out, key, utf8_percent_encode(clip(value), ESCAPED));
}

/// `text` cut to at most [`MAX_TEXT`] bytes, at a character boundary.
fn clip(text: &str) -> &str {
    let mut end = text.len().min(MAX_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

fn decode_text(key: &str, value: &str, line_no: usize) -> Result<String, UapiError> {
    percent_decode_str(value)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| UapiError::reply(line_no, format!("{key}: the text is not UTF-8")))
}

fn decode_number(key: &str, value: &str, line_no: usize) -> Result<u64, UapiError> {
    number(value).ok_or_else(|| UapiError::reply(line_no, format!("{key}: expected a number")))
}

/// Collects the device-level gating keys of a `get` answer.
#[derive(Debug, Default)]
pub struct DeviceGateReader {
    first_line: Option<usize>,
    node_id: String,
    controller_url: String,
    controller_key: String,
    loss_policy: String,
    membership: Option<String>,
    reason: Option<String>,
    epoch: Option<EpochId>,
    epoch_not_after_ms: Option<u64>,
    next_epoch: Option<EpochId>,
    controller_last_contact_ms: Option<u64>,
    controller_error: Option<String>,
    nat: NatStatus,
    forward: bool,
    relay: Option<RelayShown>,
    membership_refused: u64,
    observing: Option<ObservingShown>,
}

impl DeviceGateReader {
    /// Reads one device-level line whose key starts with [`PREFIX`]; unknown meshtun keys
    /// are skipped, as any unknown key is.
    pub fn line(&mut self, key: &str, value: &str, line_no: usize) -> Result<(), UapiError> {
        let text = || decode_text(key, value, line_no);
        let num = || decode_number(key, value, line_no);
        match key {
            "meshtun_node_id" => self.node_id = text()?,
            "meshtun_controller_url" => self.controller_url = text()?,
            "meshtun_controller_key" => self.controller_key = text()?,
            "meshtun_loss_policy" => self.loss_policy = text()?,
            "meshtun_membership" => self.membership = Some(value.to_owned()),
            "meshtun_reason" => self.reason = Some(text()?),
            "meshtun_epoch" => self.epoch = Some(num()?),
            "meshtun_epoch_not_after_ms" => self.epoch_not_after_ms = Some(num()?),
            "meshtun_next_epoch" => self.next_epoch = Some(num()?),
            "meshtun_controller_last_contact_ms" => {
                self.controller_last_contact_ms = Some(num()?);
            }
            "meshtun_controller_error" => self.controller_error = Some(text()?),
            "meshtun_reflexive" => {
                let reflexive = decode_reflexive(key, value, line_no)?;
                if self.nat.reflexive.len() < MAX_REFLEXIVE {
                    self.nat.reflexive.push(reflexive);
                }
            }
            "meshtun_relay" => self.relay = Some(decode_relay(key, value, line_no)?),
            "meshtun_membership_refused" => self.membership_refused = num()?,
            "meshtun_observing" => self.observing = Some(decode_observing(key, value, line_no)?),
            "meshtun_nat" => {
                self.nat.kind = NatKind::parse(value).ok_or_else(|| {
                    UapiError::reply(line_no, format!("{key}: unknown kind of NAT"))
                })?;
            }
            "meshtun_forward" => {
                self.forward = match value {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(UapiError::reply(
                            line_no,
                            format!("{key}: expected true or false"),
                        ))
                    }
                };
            }
            _ => return Ok(()),
        }
        self.first_line.get_or_insert(line_no);
        Ok(())
    }

    /// The gating state read, `None` if the answer had no gating key (an ungated interface,
    /// or another daemon).
    pub fn finish(self) -> Result<Option<DeviceGate>, UapiError> {
        let Some(first_line) = self.first_line else {
            return Ok(None);
        };
        let Some(word) = self.membership else {
            return Err(UapiError::reply(
                first_line,
                "gating keys without meshtun_membership",
            ));
        };
        let membership = match word.as_str() {
            "PENDING" => MembershipState::Pending,
            "ALLOWED" => MembershipState::Allowed,
            "DENIED" => MembershipState::Denied {
                reason: self.reason.unwrap_or_default(),
            },
            "LOST" => MembershipState::Lost,
            _ => {
                return Err(UapiError::reply(
                    first_line,
                    "meshtun_membership: expected PENDING, ALLOWED, DENIED or LOST",
                ))
            }
        };
        Ok(Some(DeviceGate {
            node_id: self.node_id,
            controller_url: self.controller_url,
            controller_key: self.controller_key,
            loss_policy: self.loss_policy,
            membership,
            epoch: self.epoch,
            epoch_not_after_ms: self.epoch_not_after_ms,
            next_epoch: self.next_epoch,
            controller_last_contact_ms: self.controller_last_contact_ms,
            controller_error: self.controller_error,
            nat: self.nat,
            forward: self.forward,
            relay: self.relay,
            membership_refused: self.membership_refused,
            observing: self.observing,
        }))
    }
}

/// Collects the gating keys of one peer section.
#[derive(Debug, Default)]
pub struct PeerGateReader {
    first_line: Option<usize>,
    node_id: Option<String>,
    psk_since_ms: Option<u64>,
    psk_epoch: Option<EpochId>,
    forwards_to: Vec<String>,
}

impl PeerGateReader {
    /// Reads one peer-section line whose key starts with [`PREFIX`]; unknown meshtun keys
    /// are skipped.
    pub fn line(&mut self, key: &str, value: &str, line_no: usize) -> Result<(), UapiError> {
        match key {
            "meshtun_node_id" => self.node_id = Some(decode_text(key, value, line_no)?),
            "meshtun_psk_since_ms" => {
                self.psk_since_ms = Some(decode_number(key, value, line_no)?);
            }
            "meshtun_psk_epoch" => self.psk_epoch = Some(decode_number(key, value, line_no)?),
            "meshtun_forwards_to" => {
                self.forwards_to.push(decode_text(key, value, line_no)?);
            }
            _ => return Ok(()),
        }
        self.first_line.get_or_insert(line_no);
        Ok(())
    }

    /// The peer's gating state, `None` if its section had no gating key. Both keys must be
    /// there if one is.
    pub fn finish(self) -> Result<Option<PeerGate>, UapiError> {
        let Some(first_line) = self.first_line else {
            return Ok(None);
        };
        match (self.node_id, self.psk_since_ms) {
            (Some(node_id), Some(psk_since_ms)) => Ok(Some(PeerGate {
                node_id,
                psk_since_ms,
                psk_epoch: self.psk_epoch,
                forwards_to: self.forwards_to,
            })),
            _ => Err(UapiError::reply(
                first_line,
                "a peer needs both meshtun_node_id and meshtun_psk_since_ms",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(membership: MembershipState) -> DeviceGate {
        DeviceGate {
            forward: true,
            membership_refused: 3,
            observing: Some(ObservingShown {
                peers: 16,
                interval_s: 30,
                sent: 12,
                refused: 2,
                failed: 1,
            }),
            node_id: "node-a".into(),
            controller_url: "https://ctl.example:8443/base?x=1&y=%41".into(),
            controller_key: "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=".into(),
            loss_policy: "fail_closed".into(),
            membership,
            epoch: Some(42),
            epoch_not_after_ms: Some(1_700_000_060_000),
            next_epoch: Some(43),
            controller_last_contact_ms: Some(1_700_000_000_000),
            controller_error: Some("connect: refused\nretrying = soon".into()),
            relay: Some(RelayShown {
                server: "198.51.100.1:3478".parse().unwrap(),
                relayed: Some("198.51.100.1:49152".parse().unwrap()),
                expires_s: 1_700_000_060,
                state: "allocated".into(),
            }),
            nat: NatStatus {
                reflexive: vec![
                    Reflexive {
                        server: "ctl.example:3478".into(),
                        address: "203.0.113.7:40001".parse().unwrap(),
                        at_ms: 1_700_000_000_500,
                    },
                    Reflexive {
                        server: "[2001:db8::3]:3478".into(),
                        address: "[2001:db8::7]:51820".parse().unwrap(),
                        at_ms: 1_700_000_000_600,
                    },
                ],
                kind: NatKind::EndpointDependent,
            },
        }
    }

    fn read_device(text: &str) -> Result<Option<DeviceGate>, UapiError> {
        let mut reader = DeviceGateReader::default();
        for (index, line) in text.lines().enumerate() {
            let (key, value) = line.split_once('=').unwrap();
            reader.line(key, value, index + 1)?;
        }
        reader.finish()
    }

    #[test]
    fn device_keys_have_the_documented_form() {
        let mut out = String::new();
        write_device_gate(
            &gate(MembershipState::Denied {
                reason: "overall 0.40 below 0.70".into(),
            }),
            &mut out,
        );
        assert_eq!(
            out,
            "meshtun_node_id=node-a\n\
             meshtun_controller_url=https://ctl.example:8443/base?x%3D1&y%3D%2541\n\
             meshtun_controller_key=AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM%3D\n\
             meshtun_loss_policy=fail_closed\n\
             meshtun_membership=DENIED\n\
             meshtun_reason=overall 0.40 below 0.70\n\
             meshtun_epoch=42\n\
             meshtun_epoch_not_after_ms=1700000060000\n\
             meshtun_next_epoch=43\n\
             meshtun_controller_last_contact_ms=1700000000000\n\
             meshtun_controller_error=connect: refused%0Aretrying %3D soon\n\
             meshtun_reflexive=203.0.113.7:40001 ctl.example:3478 1700000000500\n\
             meshtun_reflexive=[2001:db8::7]:51820 [2001:db8::3]:3478 1700000000600\n\
             meshtun_nat=endpoint_dependent\n\
             meshtun_forward=true\n\
             meshtun_relay=198.51.100.1:3478 198.51.100.1:49152 1700000060 allocated\n\
             meshtun_membership_refused=3\n\
             meshtun_observing=16 30 12 2 1\n"
        );
    }

    #[test]
    fn every_value_is_one_line_with_one_equals_sign() {
        let nasty = "a=b\nc\r\nd%0A\u{7f}é\u{2028}";
        let mut device = gate(MembershipState::Denied {
            reason: nasty.into(),
        });
        device.node_id = nasty.into();
        device.controller_error = Some(nasty.into());
        let mut out = String::new();
        write_device_gate(&device, &mut out);
        write_peer_gate(
            &PeerGate {
                forwards_to: Vec::new(),
                node_id: nasty.into(),
                psk_since_ms: 1,
                psk_epoch: None,
            },
            &mut out,
        );
        for line in out.lines() {
            assert_eq!(line.matches('=').count(), 1, "{line:?}");
            assert!(line.is_ascii() && !line.contains('\r'), "{line:?}");
        }
        let read = read_device(&out.lines().take(11).collect::<Vec<_>>().join("\n"))
            .unwrap()
            .unwrap();
        assert_eq!(read.node_id, nasty);
        assert_eq!(read.membership.reason(), Some(nasty));
        assert_eq!(read.controller_error.as_deref(), Some(nasty));
    }

    #[test]
    fn device_keys_round_trip_for_every_state() {
        for membership in [
            MembershipState::Pending,
            MembershipState::Allowed,
            MembershipState::Denied {
                reason: "overall 0.40 below 0.70".into(),
            },
            MembershipState::Denied {
                reason: String::new(),
            },
            MembershipState::Lost,
        ] {
            let sent = gate(membership);
            let mut out = String::new();
            write_device_gate(&sent, &mut out);
            assert_eq!(read_device(&out).unwrap(), Some(sent));
        }
        let sparse = DeviceGate {
            epoch: None,
            epoch_not_after_ms: None,
            next_epoch: None,
            controller_last_contact_ms: None,
            controller_error: None,
            nat: NatStatus::default(),
            membership_refused: 0,
            observing: None,
            ..gate(MembershipState::Pending)
        };
        let mut out = String::new();
        write_device_gate(&sparse, &mut out);
        assert!(
            !out.contains("epoch")
                && !out.contains("last_contact")
                && !out.contains("nat")
                && !out.contains("refused"),
            "{out}"
        );
        assert_eq!(read_device(&out).unwrap(), Some(sparse));
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let device = DeviceGate {
            controller_error: Some(long.clone()),
            ..gate(MembershipState::Lost)
        };
        let mut out = String::new();
        write_device_gate(&device, &mut out);
        let read = read_device(&out).unwrap().unwrap();
        let error = read.controller_error.unwrap();
        assert_eq!(error.len(), MAX_TEXT);
        assert!(long.starts_with(&error));
    }

    #[test]
    fn bad_and_excess_reflexive_lines() {
        let base = "meshtun_membership=ALLOWED\n";
        for bad in [
            "meshtun_reflexive=203.0.113.7:1 s:3478\n",
            "meshtun_reflexive=nonsense s:3478 1\n",
            "meshtun_reflexive=203.0.113.7:1 s:3478 1 extra\n",
            "meshtun_nat=cone\n",
        ] {
            assert!(read_device(&format!("{base}{bad}")).is_err(), "{bad}");
        }
        let many = "meshtun_reflexive=203.0.113.7:1 s:3478 1\n".repeat(100);
        let read = read_device(&format!("{base}{many}")).unwrap().unwrap();
        assert_eq!(read.nat.reflexive.len(), MAX_REFLEXIVE);
    }

    #[test]
    fn no_gating_keys_means_no_gate() {
        assert_eq!(read_device("meshtun_future=1").unwrap(), None);
        assert_eq!(PeerGateReader::default().finish().unwrap(), None);
    }

    #[test]
    fn bad_gating_values_are_refused_with_their_line() {
        for (text, line) in [
            ("meshtun_node_id=a\nmeshtun_epoch=x", 2),
            ("meshtun_node_id=a", 1),
            ("meshtun_epoch=1\nmeshtun_membership=MAYBE", 1),
            ("meshtun_membership=ALLOWED\nmeshtun_reason=%FF", 2),
        ] {
            match read_device(text) {
                Err(UapiError::Reply { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn peer_keys_round_trip_and_need_each_other() {
        let sent = PeerGate {
            forwards_to: Vec::new(),
            node_id: "node-b".into(),
            psk_since_ms: 1_700_000_000_123,
            psk_epoch: Some(42),
        };
        let mut out = String::new();
        write_peer_gate(&sent, &mut out);
        assert_eq!(
            out,
            "meshtun_node_id=node-b\nmeshtun_psk_since_ms=1700000000123\nmeshtun_psk_epoch=42\n"
        );
        let mut reader = PeerGateReader::default();
        for (index, line) in out.lines().enumerate() {
            let (key, value) = line.split_once('=').unwrap();
            reader.line(key, value, index + 1).unwrap();
        }
        assert_eq!(reader.finish().unwrap(), Some(sent));

        let mut half = PeerGateReader::default();
        half.line("meshtun_node_id", "node-b", 7).unwrap();
        assert!(matches!(
            half.finish(),
            Err(UapiError::Reply { line: 7, .. })
        ));
        let mut bad = PeerGateReader::default();
        assert!(bad.line("meshtun_psk_since_ms", "-1", 3).is_err());
        assert!(bad.line("meshtun_psk_epoch", "soon", 4).is_err());
    }

    #[test]
    fn the_nodes_reached_through_a_hub_round_trip() {
        let sent = PeerGate {
            forwards_to: vec!["s2".into(), "odd=id\n".into()],
            node_id: "hub".into(),
            psk_since_ms: 5,
            psk_epoch: None,
        };
        let mut out = String::new();
        write_peer_gate(&sent, &mut out);
        let mut reader = PeerGateReader::default();
        for (index, line) in out.lines().enumerate() {
            let (key, value) = line.split_once('=').unwrap();
            reader.line(key, value, index + 1).unwrap();
        }
        assert_eq!(reader.finish().unwrap(), Some(sent));
        let mut device = DeviceGateReader::default();
        assert!(device.line("meshtun_forward", "yes", 2).is_err());
    }
}
