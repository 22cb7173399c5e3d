//! Running the `wg` tool against an interface and parsing `wg show dump` and `wg showconf`.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::netns::Netns;

/// Runs `wg args` inside `ns` and returns its stdout; fails the test if `wg` fails.
pub fn wg(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec!["wg"];
    full.extend_from_slice(args);
    ns.ok(&full)
}

/// `wg show <name> dump`, parsed; fails the test if the output is malformed.
pub fn dump(ns: &Netns, name: &str) -> Dump {
    let text = wg(ns, &["show", name, "dump"]);
    parse_dump(&text).unwrap_or_else(|e| panic!("`wg show {name} dump`: {e}:\n{text}"))
}

/// The interface line of `wg show <name> dump`.
#[derive(Clone, PartialEq, Eq)]
pub struct DumpInterface {
    /// Private key, base64 (`(none)` if unset).
    pub private_key: String,
    /// Public key, base64.
    pub public_key: String,
    /// Listen port.
    pub listen_port: u16,
    /// Firewall mark, 0 if off.
    pub fwmark: u32,
}

impl std::fmt::Debug for DumpInterface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpInterface")
            .field("public_key", &self.public_key)
            .field("listen_port", &self.listen_port)
            .field("fwmark", &self.fwmark)
            .finish_non_exhaustive()
    }
}

/// A peer line of `wg show <name> dump`.
#[derive(Clone, PartialEq, Eq)]
pub struct DumpPeer {
    /// Public key, base64.
    pub public_key: String,
    /// Preshared key, base64; `None` for `(none)`.
    pub preshared_key: Option<String>,
    /// Current endpoint; `None` for `(none)`.
    pub endpoint: Option<SocketAddr>,
    /// Allowed IPs as printed (CIDR strings).
    pub allowed_ips: Vec<String>,
    /// Unix time of the latest handshake; `None` for 0 (never).
    pub latest_handshake: Option<u64>,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Keepalive interval; `None` for `off`.
    pub persistent_keepalive: Option<u16>,
}

impl std::fmt::Debug for DumpPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpPeer")
            .field("public_key", &self.public_key)
            .field(
                "preshared_key",
                &self.preshared_key.as_ref().map(|_| "(set)"),
            )
            .field("endpoint", &self.endpoint)
            .field("allowed_ips", &self.allowed_ips)
            .field("latest_handshake", &self.latest_handshake)
            .field("rx_bytes", &self.rx_bytes)
            .field("tx_bytes", &self.tx_bytes)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .finish()
    }
}

/// `wg show <name> dump`: the interface line and one line per peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    /// The interface.
    pub interface: DumpInterface,
    /// The peers, in the order printed.
    pub peers: Vec<DumpPeer>,
}

impl Dump {
    /// The peer with `public_key`; fails the test if there is none.
    pub fn peer(&self, public_key: &str) -> &DumpPeer {
        self.peers
            .iter()
            .find(|p| p.public_key == public_key)
            .unwrap_or_else(|| panic!("no peer {public_key} in {self:?}"))
    }
}

impl DumpPeer {
    /// Whether the latest handshake happened within `window` before now (allowing 5 s of
    /// clock skew into the future).
    pub fn handshake_within(&self, window: Duration) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.latest_handshake
            .is_some_and(|t| t + window.as_secs() >= now && t <= now + 5)
    }
}

/// Parses the output of `wg show <name> dump`.
pub fn parse_dump(text: &str) -> Result<Dump, String> {
    let mut lines = text.lines();
    let first = lines.next().ok_or("empty output")?;
    let interface = match first.split('\t').collect::<Vec<_>>()[..] {
        [private_key, public_key, port, fwmark] => DumpInterface {
            private_key: private_key.to_owned(),
            public_key: public_key.to_owned(),
            listen_port: number(port, "listen port")?,
            fwmark: parse_fwmark(fwmark)?,
        },
        _ => return Err(format!("interface line has not 4 fields: {first:?}")),
    };
    let peers = lines.map(parse_peer_line).collect::<Result<_, _>>()?;
    Ok(Dump { interface, peers })
}

/// A fwmark as `wg` prints it: `off`, or hexadecimal (`0xca6c`).
fn parse_fwmark(text: &str) -> Result<u32, String> {
    if text == "off" {
        return Ok(0);
    }
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).map_err(|_| format!("bad fwmark {text:?}")),
        None => number(text, "fwmark"),
    }
}

fn parse_peer_line(line: &str) -> Result<DumpPeer, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [pk, psk, endpoint, ips, handshake, rx, tx, keepalive] = fields[..] else {
        return Err(format!("peer line has not 8 fields: {line:?}"));
    };
    let none = |s: &str| (s != "(none)").then(|| s.to_owned());
    Ok(DumpPeer {
        public_key: pk.to_owned(),
        preshared_key: none(psk),
        endpoint: none(endpoint)
            .map(|e| e.parse().map_err(|_| format!("bad endpoint {e:?}")))
            .transpose()?,
        allowed_ips: none(ips)
            .map(|s| s.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        latest_handshake: Some(number(handshake, "latest handshake")?).filter(|&t| t != 0),
        rx_bytes: number(rx, "rx bytes")?,
        tx_bytes: number(tx, "tx bytes")?,
        persistent_keepalive: if keepalive == "off" {
            None
        } else {
            Some(number(keepalive, "persistent keepalive")?)
        },
    })
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{what} is not a number: {text:?}"))
}

/// One `[Section]` of a `wg showconf` file with its `Key = Value` entries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// `Interface` or `Peer`.
    pub name: String,
    /// The entries.
    pub entries: Vec<(String, String)>,
}

impl Section {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a `wg showconf` / `wg setconf` file: sections, `Key = Value` lines, blank lines and
/// `#` comments. Anything else is an error naming the line.
pub fn parse_conf(text: &str) -> Result<Vec<Section>, String> {
    let mut sections: Vec<Section> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            sections.push(Section {
                name: name.to_owned(),
                entries: Vec::new(),
            });
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: not `Key = Value`: {raw:?}", n + 1))?;
        let section = sections
            .last_mut()
            .ok_or_else(|| format!("line {}: entry before any section", n + 1))?;
        section
            .entries
            .push((key.trim().to_owned(), value.trim().to_owned()));
    }
    Ok(sections)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "cHJpdmF0ZQ==\tcHVibGlj\t51820\toff\n\
        cGVlcg==\t(none)\t192.0.2.1:51820\t10.9.0.1/32,fd00::1/128\t1700000000\t532\t476\toff\n\
        b3RoZXI=\tcHNr\t(none)\t(none)\t0\t0\t0\t25\n";

    #[test]
    fn parses_a_dump() {
        let dump = parse_dump(DUMP).unwrap();
        assert_eq!(dump.interface.listen_port, 51820);
        assert_eq!(dump.interface.fwmark, 0);
        let p = dump.peer("cGVlcg==");
        assert_eq!(p.endpoint, Some("192.0.2.1:51820".parse().unwrap()));
        assert_eq!(p.allowed_ips, ["10.9.0.1/32", "fd00::1/128"]);
        assert_eq!(p.latest_handshake, Some(1_700_000_000));
        assert_eq!((p.rx_bytes, p.tx_bytes), (532, 476));
        assert_eq!(p.preshared_key, None);
        let q = dump.peer("b3RoZXI=");
        assert_eq!(q.preshared_key.as_deref(), Some("cHNr"));
        assert_eq!((q.endpoint, q.latest_handshake), (None, None));
        assert!(q.allowed_ips.is_empty());
        assert_eq!(q.persistent_keepalive, Some(25));
    }

    #[test]
    fn fwmark_is_read_in_hex() {
        let dump = parse_dump("cHJpdmF0ZQ==\tcHVibGlj\t51820\t0xca6c\n").unwrap();
        assert_eq!(dump.interface.fwmark, 51820);
        assert!(parse_dump("a\tb\t1\t0xzz\n").is_err());
    }

    #[test]
    fn rejects_malformed_dumps() {
        assert!(parse_dump("").is_err());
        assert!(parse_dump("a\tb\t1\n").is_err());
        assert!(parse_dump("a\tb\tport\toff\n").is_err());
        assert!(parse_dump("a\tb\t1\toff\np\t(none)\t(none)\t(none)\t0\t0\n").is_err());
    }

    #[test]
    fn old_handshakes_are_not_recent() {
        let mut p = parse_dump(DUMP).unwrap().peers.remove(0);
        assert!(!p.handshake_within(Duration::from_secs(60)));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        p.latest_handshake = Some(now - 3);
        assert!(p.handshake_within(Duration::from_secs(60)));
        p.latest_handshake = None;
        assert!(!p.handshake_within(Duration::from_secs(60)));
    }

    #[test]
    fn parses_showconf() {
        let text = "[Interface]\nListenPort = 51820\nPrivateKey = a2V5=\n\n\
                    [Peer]\nPublicKey = cGVlcg==\nAllowedIPs = 10.0.0.2/32\n";
        let conf = parse_conf(text).unwrap();
        assert_eq!(conf.len(), 2);
        assert_eq!(conf[0].get("PrivateKey"), Some("a2V5="));
        assert_eq!(conf[1].name, "Peer");
        assert_eq!(conf[1].get("AllowedIPs"), Some("10.0.0.2/32"));
        assert!(parse_conf("ListenPort = 1\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(parse_conf("[Interface]\ngarbage\n")
            .unwrap_err()
            .contains("line 2"));
    }
}
