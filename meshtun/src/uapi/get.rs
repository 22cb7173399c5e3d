//! The answer to `get`: writing it from a [`DeviceStatus`] and reading it back into one.
//!
//! The format is wireguard-go's, byte for byte: device keys, then per peer `public_key`,
//! `preshared_key` (all zeros when none), `protocol_version=1`, `endpoint` (when known), the
//! handshake time, the byte counters, the keepalive interval and one `allowed_ip` per
//! network; then `errno=0` and a blank line. A gated interface adds meshtun's own keys
//! (see [`super::gate_keys`]), after `fwmark` and at the end of each peer section, which `wg`
//! skips.

use std::fmt::{Display, Write as _};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use meshtun_proto::{PresharedKey, PrivateKey, PublicKey, KEY_LEN};

use super::error::UapiError;
use super::gate_keys::{self, DeviceGateReader, PeerGateReader};
use super::set::{number, parse_endpoint};
use crate::wgcfg::{DeviceStatus, PeerStatus};

/// Appends the full answer to a successful `get` for `status`, ending in `errno=0` and a
/// blank line. The text contains the private and preshared keys: keep it in a zeroizing
/// buffer and send it only over the 0600 socket.
pub fn write_get(status: &DeviceStatus, out: &mut String) {
    if let Some(key) = status
        .private_key
        .as_ref()
        .filter(|k| !is_zero(k.as_bytes()))
    {
        key_line(out, "private_key", key.as_bytes());
    }
    if status.listen_port != 0 {
        line(out, "listen_port", status.listen_port);
    }
    if status.fwmark != 0 {
        line(out, "fwmark", status.fwmark);
    }
    if let Some(gate) = &status.gate {
        gate_keys::write_device_gate(gate, out);
    }
    for peer in &status.peers {
        write_peer(peer, out);
    }
    write_errno(0, out);
}

/// A meshtun key beside the WireGuard ones: when the peer's endpoint last changed, Unix ms.
const ENDPOINT_SINCE: &str = "meshtun_endpoint_since_ms";

fn unix_ms(time: SystemTime) -> Option<u64> {
    let since = time.duration_since(UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

fn write_peer(peer: &PeerStatus, out: &mut String) {
    key_line(out, "public_key", peer.public_key.as_bytes());
    let psk = peer.preshared_key.as_ref().map(PresharedKey::as_bytes);
    key_line(out, "preshared_key", psk.unwrap_or(&[0; KEY_LEN]));
    line(out, "protocol_version", 1);
    if let Some(endpoint) = peer.endpoint {
        line(out, "endpoint", endpoint);
    }
    if let Some(ms) = peer.endpoint_since.and_then(unix_ms) {
        line(out, ENDPOINT_SINCE, ms);
    }
    let since_epoch = peer
        .last_handshake
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .unwrap_or_default();
    line(out, "last_handshake_time_sec", since_epoch.as_secs());
    line(out, "last_handshake_time_nsec", since_epoch.subsec_nanos());
    line(out, "tx_bytes", peer.tx_bytes);
    line(out, "rx_bytes", peer.rx_bytes);
    line(
        out,
        "persistent_keepalive_interval",
        peer.persistent_keepalive.unwrap_or(0),
    );
    for net in &peer.allowed_ips {
        line(out, "allowed_ip", net);
    }
    if let Some(gate) = &peer.gate {
        gate_keys::write_peer_gate(gate, out);
    }
}

/// Appends the status line that ends every answer: `errno=0`, or `errno=-N` for a failure
/// with the positive errno `N`, as wireguard-go sends it; then a blank line.
pub fn write_errno(errno: i32, out: &mut String) {
    line(out, "errno", errno.saturating_neg());
    out.push('\n');
}

fn line(out: &mut String, key: &str, value: impl Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key}={value}");
}

/// Writes a key as hex straight into `out`, so that no other copy of a secret is made.
fn key_line(out: &mut String, key: &str, bytes: &[u8; KEY_LEN]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(key.len() + 2 + 2 * KEY_LEN);
    out.push_str(key);
    out.push('=');
    for byte in bytes {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out.push('\n');
}

fn is_zero(bytes: &[u8; KEY_LEN]) -> bool {
    bytes.iter().all(|b| *b == 0)
}

/// Reads a daemon's answer to `get` (as [`super::request_get`] returns it) into the status
/// of the interface `name`.
///
/// A non-zero `errno` becomes [`UapiError::Remote`]; a malformed answer [`UapiError::Reply`].
/// Unknown keys are skipped, as `wg` skips them, so newer daemons can add some.
pub fn parse_get_reply(name: &str, text: &str) -> Result<DeviceStatus, UapiError> {
    let mut reply = ReplyParser::new(name);
    let mut lines = text.split_inclusive('\n').enumerate();
    while let Some((index, raw)) = lines.next() {
        let line_no = index + 1;
        let Some(line) = raw.strip_suffix('\n') else {
            return reply.finish(line_no, false);
        };
        if line.is_empty() {
            if lines.next().is_some() {
                return Err(UapiError::reply(
                    line_no + 1,
                    "text after the blank line that ends the reply",
                ));
            }
            return reply.finish(line_no, true);
        }
        reply.line(line, line_no)?;
    }
    reply.finish(text.split_inclusive('\n').count() + 1, false)
}

/// A peer being read, with the handshake time still in two halves.
struct PeerReply {
    status: PeerStatus,
    handshake_sec: u64,
    handshake_nsec: u64,
    gate: PeerGateReader,
}

struct ReplyParser {
    status: DeviceStatus,
    gate: DeviceGateReader,
    peer: Option<PeerReply>,
    errno: Option<i64>,
}

impl ReplyParser {
    fn new(name: &str) -> Self {
        Self {
            status: DeviceStatus {
                name: name.to_owned(),
                private_key: None,
                listen_port: 0,
                fwmark: 0,
                peers: Vec::new(),
                gate: None,
            },
            gate: DeviceGateReader::default(),
            peer: None,
            errno: None,
        }
    }

    fn line(&mut self, line: &str, line_no: usize) -> Result<(), UapiError> {
        let (key, value) = line.split_once('=').ok_or_else(|| {
            UapiError::reply(
                line_no,
                format!("expected key=value, got a line of {} bytes", line.len()),
            )
        })?;
        let bad = |what: &str| UapiError::reply(line_no, format!("{key}: expected {what}"));
        if self.errno.is_some() {
            return Err(UapiError::reply(line_no, "a line after errno"));
        }
        if key == "errno" {
            let errno = match value.strip_prefix('-') {
                Some(digits) => number::<i64>(digits).map(|n| -n),
                None => number::<i64>(value),
            };
            self.errno = Some(errno.ok_or_else(|| bad("an errno number"))?);
            return Ok(());
        }
        if key == "public_key" {
            let public_key = PublicKey::from_hex(value).map_err(|err| bad(&err.to_string()))?;
            self.end_peer(line_no)?;
            self.peer = Some(PeerReply::new(public_key));
            return Ok(());
        }
        match &mut self.peer {
            None => self.device_line(key, value, line_no),
            Some(peer) => peer.line(key, value, line_no),
        }
    }

    fn device_line(&mut self, key: &str, value: &str, line_no: usize) -> Result<(), UapiError> {
        let bad = |what: &str| UapiError::reply(line_no, format!("{key}: expected {what}"));
        match key {
            _ if key.starts_with(gate_keys::PREFIX) => self.gate.line(key, value, line_no)?,
            "private_key" => {
                let key = PrivateKey::from_hex(value).map_err(|err| bad(&err.to_string()))?;
                self.status.private_key = (!is_zero(key.as_bytes())).then_some(key);
            }
            "listen_port" => {
                self.status.listen_port = number(value).ok_or_else(|| bad("a port"))?
            }
            "fwmark" => self.status.fwmark = number(value).ok_or_else(|| bad("a number"))?,
            _ => {}
        }
        Ok(())
    }

    fn end_peer(&mut self, line_no: usize) -> Result<(), UapiError> {
        if let Some(peer) = self.peer.take() {
            self.status.peers.push(peer.finish(line_no)?);
        }
        Ok(())
    }

    fn finish(mut self, line_no: usize, terminated: bool) -> Result<DeviceStatus, UapiError> {
        let Some(errno) = self.errno else {
            let reason = if terminated {
                "the reply ended without an errno line"
            } else {
                "the reply was cut short"
            };
            return Err(UapiError::reply(line_no, reason));
        };
        if errno != 0 {
            let errno = i32::try_from(errno.unsigned_abs()).unwrap_or(i32::MAX);
            return Err(UapiError::Remote { errno });
        }
        self.end_peer(line_no)?;
        self.status.gate = self.gate.finish()?;
        Ok(self.status)
    }
}

impl PeerReply {
    fn new(public_key: PublicKey) -> Self {
        Self {
            status: PeerStatus {
                endpoint_since: None,
                public_key,
                preshared_key: None,
                endpoint: None,
                last_handshake: None,
                rx_bytes: 0,
                tx_bytes: 0,
                persistent_keepalive: None,
                allowed_ips: Vec::new(),
                gate: None,
            },
            handshake_sec: 0,
            handshake_nsec: 0,
            gate: PeerGateReader::default(),
        }
    }

    fn line(&mut self, key: &str, value: &str, line_no: usize) -> Result<(), UapiError> {
        let bad = |what: &str| UapiError::reply(line_no, format!("{key}: expected {what}"));
        let peer = &mut self.status;
        match key {
            ENDPOINT_SINCE => {
                let ms: u64 = number(value).ok_or_else(|| bad("Unix milliseconds"))?;
                peer.endpoint_since = UNIX_EPOCH.checked_add(Duration::from_millis(ms));
            }
            _ if key.starts_with(gate_keys::PREFIX) => self.gate.line(key, value, line_no)?,
            "preshared_key" => {
                let psk = PresharedKey::from_hex(value).map_err(|err| bad(&err.to_string()))?;
                peer.preshared_key = (!psk.is_zero()).then_some(psk);
            }
            "endpoint" => peer.endpoint = Some(parse_endpoint(value).map_err(bad)?),
            "last_handshake_time_sec" => {
                self.handshake_sec = number(value).ok_or_else(|| bad("seconds"))?;
            }
            "last_handshake_time_nsec" => {
                self.handshake_nsec = number(value).ok_or_else(|| bad("nanoseconds"))?;
            }
            "tx_bytes" => peer.tx_bytes = number(value).ok_or_else(|| bad("a byte count"))?,
            "rx_bytes" => peer.rx_bytes = number(value).ok_or_else(|| bad("a byte count"))?,
            "persistent_keepalive_interval" => {
                let seconds: u16 = number(value).ok_or_else(|| bad("seconds 0-65535"))?;
                peer.persistent_keepalive = (seconds != 0).then_some(seconds);
            }
            "allowed_ip" => {
                let net: IpNet = value
                    .parse()
                    .map_err(|_| bad("a network such as 10.0.0.0/24"))?;
                peer.allowed_ips.push(net);
            }
            "protocol_version" if value != "1" => return Err(bad("protocol version 1")),
            _ => {}
        }
        Ok(())
    }

    fn finish(mut self, line_no: usize) -> Result<PeerStatus, UapiError> {
        if self.handshake_sec != 0 || self.handshake_nsec != 0 {
            let since_epoch = Duration::from_secs(self.handshake_sec)
                .checked_add(Duration::from_nanos(self.handshake_nsec));
            let time = since_epoch
                .and_then(|d| UNIX_EPOCH.checked_add(d))
                .ok_or_else(|| UapiError::reply(line_no, "last_handshake_time is out of range"))?;
            self.status.last_handshake = Some(time);
        }
        self.status.gate = self.gate.finish()?;
        Ok(self.status)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::wgcfg::MembershipState;
    use crate::wgcfg::{DeviceGate, PeerGate};

    fn at(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    const PRIVATE: &str = "f0e949d14570f5f58d656119d8ab8dbf998d94d300640bd4f43a33dd10172576";
    const PEER_A: &str = "29e5ad6ebcc90ceb765cb6b4936e745a9f8a9ac708212394a0e88632ee236b6f";
    const PSK: &str = "3256e9d9ec7c09c33fd60d6aa39425b86a70ae071062923bc9816d6330112138";
    const PEER_B: &str = "c56897a9a71af238922a523739ca5c728feb41c0cd85de1dab3689c1df6aa917";

    fn sample() -> DeviceStatus {
        DeviceStatus {
            name: "wg0".into(),
            private_key: Some(PrivateKey::from_hex(PRIVATE).unwrap()),
            listen_port: 33507,
            fwmark: 7,
            peers: vec![
                PeerStatus {
                    endpoint_since: None,
                    public_key: PublicKey::from_hex(PEER_A).unwrap(),
                    preshared_key: Some(PresharedKey::from_hex(PSK).unwrap()),
                    endpoint: Some("[2001:db8::1]:51820".parse().unwrap()),
                    last_handshake: Some(at(1_700_000_000, 123_456_789)),
                    rx_bytes: 2048,
                    tx_bytes: 1024,
                    persistent_keepalive: Some(25),
                    allowed_ips: vec!["10.0.0.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
                    gate: None,
                },
                PeerStatus {
                    endpoint_since: None,
                    public_key: PublicKey::from_hex(PEER_B).unwrap(),
                    preshared_key: None,
                    endpoint: Some("192.0.2.7:1".parse().unwrap()),
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive: None,
                    allowed_ips: vec![],
                    gate: None,
                },
            ],
            gate: None,
        }
    }

    /// The bytes wireguard-go sends for the same state.
    fn expected() -> String {
        format!(
            "private_key={PRIVATE}\nlisten_port=33507\nfwmark=7\n\
             public_key={PEER_A}\npreshared_key={PSK}\nprotocol_version=1\n\
             endpoint=[2001:db8::1]:51820\nlast_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=123456789\ntx_bytes=1024\nrx_bytes=2048\n\
             persistent_keepalive_interval=25\nallowed_ip=10.0.0.0/24\nallowed_ip=fd00::/64\n\
             public_key={PEER_B}\npreshared_key={zero}\nprotocol_version=1\n\
             endpoint=192.0.2.7:1\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n\
             tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\nerrno=0\n\n",
            zero = "0".repeat(64)
        )
    }

    #[test]
    fn writes_the_exact_bytes() {
        let mut out = String::new();
        write_get(&sample(), &mut out);
        assert_eq!(out, expected());
    }

    #[test]
    fn omits_unset_device_fields() {
        let status = DeviceStatus {
            name: "wg0".into(),
            private_key: None,
            listen_port: 0,
            fwmark: 0,
            peers: vec![],
            gate: None,
        };
        let mut out = String::new();
        write_get(&status, &mut out);
        assert_eq!(out, "errno=0\n\n");
    }

    #[test]
    fn errno_is_negated_like_wireguard_go() {
        let mut out = String::new();
        write_errno(libc::EINVAL, &mut out);
        assert_eq!(out, "errno=-22\n\n");
    }

    #[test]
    fn reply_round_trips() {
        let status = parse_get_reply("wg7", &expected()).unwrap();
        assert_eq!(status.name, "wg7");
        assert_eq!(status.private_key.as_ref().unwrap().to_hex(), PRIVATE);
        assert_eq!(status.listen_port, 33507);
        assert_eq!(status.fwmark, 7);
        assert_eq!(status.peers.len(), 2);
        let a = &status.peers[0];
        assert_eq!(a.public_key.to_hex(), PEER_A);
        assert_eq!(a.preshared_key.as_ref().unwrap().to_hex(), PSK);
        assert_eq!(a.last_handshake, Some(at(1_700_000_000, 123_456_789)));
        assert_eq!((a.rx_bytes, a.tx_bytes), (2048, 1024));
        assert_eq!(a.persistent_keepalive, Some(25));
        assert_eq!(a.allowed_ips.len(), 2);
        let b = &status.peers[1];
        assert!(b.preshared_key.is_none());
        assert!(b.last_handshake.is_none());
        assert!(b.persistent_keepalive.is_none());
        let mut again = String::new();
        write_get(&status, &mut again);
        assert_eq!(again, expected());
    }

    #[test]
    fn reply_errno_becomes_a_remote_error() {
        for text in ["errno=-22\n\n", "errno=22\n\n"] {
            match parse_get_reply("wg0", text) {
                Err(UapiError::Remote { errno }) => assert_eq!(errno, 22),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_replies_are_refused_with_the_line() {
        for (text, line) in [
            ("listen_port=1\n", 2),
            ("listen_port=1\n\n", 2),
            ("listen_port=x\nerrno=0\n\n", 1),
            ("oops\nerrno=0\n\n", 1),
            ("errno=0\nlisten_port=1\n\n", 2),
            ("errno=0\n\nmore\n", 3),
            ("errno=zero\n\n", 1),
        ] {
            match parse_get_reply("wg0", text) {
                Err(UapiError::Reply { line: got, .. }) => assert_eq!(got, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let bad_time = format!(
            "public_key={PEER_A}\nlast_handshake_time_sec={}\nerrno=0\n\n",
            u64::MAX
        );
        assert!(parse_get_reply("wg0", &bad_time).is_err());
    }

    #[test]
    fn unknown_reply_keys_are_skipped() {
        let text = format!("future=1\npublic_key={PEER_A}\nfuture_peer=2\nerrno=0\n\n");
        let status = parse_get_reply("wg0", &text).unwrap();
        assert_eq!(status.peers.len(), 1);
    }

    fn gated_sample() -> DeviceStatus {
        let mut status = sample();
        status.gate = Some(DeviceGate {
            forward: false,
            membership_refused: 0,
            observing: None,
            node_id: "node-a".into(),
            controller_url: "http://192.0.2.1:8080".into(),
            controller_key: String::new(),
            loss_policy: "keep_last".into(),
            membership: MembershipState::Allowed,
            epoch: Some(42),
            epoch_not_after_ms: Some(1_700_000_060_000),
            next_epoch: None,
            controller_last_contact_ms: Some(1_700_000_000_000),
            controller_error: None,
            nat: crate::wgcfg::NatStatus::default(),
            relay: None,
        });
        status.peers[0].gate = Some(PeerGate {
            forwards_to: Vec::new(),
            node_id: "node-b".into(),
            psk_since_ms: 1_699_999_990_000,
            psk_epoch: Some(41),
        });
        status.peers[0].endpoint_since =
            Some(UNIX_EPOCH + Duration::from_millis(1_699_999_995_500));
        status
    }

    #[test]
    fn gating_keys_follow_the_wireguard_go_keys() {
        let mut out = String::new();
        write_get(&gated_sample(), &mut out);
        let device = "fwmark=7\nmeshtun_node_id=node-a\n\
                      meshtun_controller_url=http://192.0.2.1:8080\n\
                      meshtun_loss_policy=keep_last\nmeshtun_membership=ALLOWED\n\
                      meshtun_epoch=42\nmeshtun_epoch_not_after_ms=1700000060000\n\
                      meshtun_controller_last_contact_ms=1700000000000\npublic_key=";
        assert!(out.contains(device), "{out}");
        let peer = "allowed_ip=fd00::/64\nmeshtun_node_id=node-b\n\
                    meshtun_psk_since_ms=1699999990000\nmeshtun_psk_epoch=41\npublic_key=";
        assert!(out.contains(peer), "{out}");
        // Without them the answer is wireguard-go's, byte for byte.
        let plain: String = out
            .lines()
            .filter(|l| !l.starts_with("meshtun_"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(plain, expected());
    }

    #[test]
    fn gated_reply_round_trips() {
        let sent = gated_sample();
        let mut out = String::new();
        write_get(&sent, &mut out);
        let read = parse_get_reply("wg0", &out).unwrap();
        assert_eq!(read.gate, sent.gate);
        let gates: Vec<_> = read.peers.iter().map(|p| p.gate.clone()).collect();
        assert_eq!(gates, [sent.peers[0].gate.clone(), None]);
        assert_eq!(read.peers[0].endpoint_since, sent.peers[0].endpoint_since);
        assert!(
            out.contains("meshtun_endpoint_since_ms=1699999995500\n"),
            "{out}"
        );
        let mut again = String::new();
        write_get(&read, &mut again);
        assert_eq!(again, out);
    }

    #[test]
    fn a_broken_gating_key_names_its_line() {
        let text = format!(
            "meshtun_membership=ALLOWED\npublic_key={PEER_A}\nmeshtun_psk_since_ms=soon\n\
             errno=0\n\n"
        );
        match parse_get_reply("wg0", &text) {
            Err(UapiError::Reply { line: 3, reason }) => {
                assert!(reason.contains("meshtun_psk_since_ms"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unterminated_reply_with_errno_is_accepted() {
        let status = parse_get_reply("wg0", "listen_port=5\nerrno=0\n").unwrap();
        assert_eq!(status.listen_port, 5);
    }
}
