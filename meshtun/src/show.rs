//! `meshtun show`: the state of running interfaces, read from their UAPI sockets and printed
//! as `wg show` does, or as JSON. Secrets are never printed.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::uapi::{self, UapiError};
use crate::wgcfg::{DeviceStatus, PeerStatus};

/// Why `show` could not read an interface.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    /// The socket directory could not be listed.
    #[error("cannot list {dir}: {source}")]
    List {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No daemon serves this interface.
    #[error("no meshtun or WireGuard daemon serves interface {0} (is it up?)")]
    NotRunning(String),
    /// Talking to the daemon failed.
    #[error("interface {name}: {source}")]
    Uapi {
        /// The interface.
        name: String,
        /// Why.
        #[source]
        source: UapiError,
    },
}

/// The interfaces with a UAPI socket in `dir`, sorted by name.
pub fn interfaces(dir: &std::path::Path) -> Result<Vec<String>, ShowError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ShowError::List {
                dir: dir.to_owned(),
                source,
            })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".sock").map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Reads the status of interface `name` from its UAPI socket in `dir`.
pub async fn fetch(dir: &std::path::Path, name: &str) -> Result<DeviceStatus, ShowError> {
    let path = uapi::socket_path_in(dir, name);
    if !path.exists() {
        return Err(ShowError::NotRunning(name.to_owned()));
    }
    let err = |source| ShowError::Uapi {
        name: name.to_owned(),
        source,
    };
    let reply = uapi::request_get(&path).await.map_err(err)?;
    uapi::parse_get_reply(name, &reply).map_err(err)
}

/// One interface, as `meshtun show --json` prints it.
#[derive(Debug, Serialize)]
pub struct InterfaceView {
    /// Interface name.
    pub name: String,
    /// Our public key, if a private key is set.
    pub public_key: Option<String>,
    /// UDP listen port.
    pub listen_port: u16,
    /// Firewall mark, 0 if none.
    pub fwmark: u32,
    /// The peers.
    pub peers: Vec<PeerView>,
}

/// One peer, as `meshtun show --json` prints it.
#[derive(Debug, Serialize)]
pub struct PeerView {
    /// The peer's public key.
    pub public_key: String,
    /// Whether a preshared key is set (the key itself is never shown).
    pub preshared_key: bool,
    /// Current endpoint.
    pub endpoint: Option<String>,
    /// Allowed IPs.
    pub allowed_ips: Vec<String>,
    /// Unix time of the latest handshake, if any.
    pub latest_handshake: Option<u64>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
    /// Persistent keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
}

impl From<&DeviceStatus> for InterfaceView {
    fn from(s: &DeviceStatus) -> Self {
        Self {
            name: s.name.clone(),
            public_key: s.private_key.as_ref().map(|k| k.public_key().to_base64()),
            listen_port: s.listen_port,
            fwmark: s.fwmark,
            peers: s.peers.iter().map(PeerView::from).collect(),
        }
    }
}

impl From<&PeerStatus> for PeerView {
    fn from(p: &PeerStatus) -> Self {
        Self {
            public_key: p.public_key.to_base64(),
            preshared_key: p.preshared_key.is_some(),
            endpoint: p.endpoint.map(|e| e.to_string()),
            allowed_ips: p.allowed_ips.iter().map(|n| n.to_string()).collect(),
            latest_handshake: p
                .last_handshake
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            persistent_keepalive: p.persistent_keepalive,
        }
    }
}

/// `wg show`-style text for one interface.
pub fn render_text(s: &DeviceStatus, now: SystemTime) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "interface: {}", s.name);
    if let Some(key) = &s.private_key {
        let _ = writeln!(out, "  public key: {}", key.public_key());
        let _ = writeln!(out, "  private key: (hidden)");
    }
    let _ = writeln!(out, "  listening port: {}", s.listen_port);
    if s.fwmark != 0 {
        let _ = writeln!(out, "  fwmark: {:#x}", s.fwmark);
    }
    for p in &s.peers {
        out.push('\n');
        render_peer(&mut out, p, now);
    }
    out
}

fn render_peer(out: &mut String, p: &PeerStatus, now: SystemTime) {
    let _ = writeln!(out, "peer: {}", p.public_key);
    if p.preshared_key.is_some() {
        let _ = writeln!(out, "  preshared key: (hidden)");
    }
    if let Some(e) = p.endpoint {
        let _ = writeln!(out, "  endpoint: {e}");
    }
    let ips: Vec<String> = p.allowed_ips.iter().map(|n| n.to_string()).collect();
    let ips = if ips.is_empty() {
        "(none)".to_owned()
    } else {
        ips.join(", ")
    };
    let _ = writeln!(out, "  allowed ips: {ips}");
    if let Some(t) = p.last_handshake {
        let ago = now.duration_since(t).unwrap_or(Duration::ZERO);
        let _ = writeln!(out, "  latest handshake: {}", ago_text(ago));
    }
    if p.rx_bytes > 0 || p.tx_bytes > 0 {
        let _ = writeln!(
            out,
            "  transfer: {} received, {} sent",
            bytes_text(p.rx_bytes),
            bytes_text(p.tx_bytes)
        );
    }
    if let Some(k) = p.persistent_keepalive {
        let _ = writeln!(
            out,
            "  persistent keepalive: every {}",
            plural(u64::from(k), "second")
        );
    }
}

fn plural(n: u64, unit: &str) -> String {
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// "1 minute, 5 seconds ago", as `wg` writes it.
fn ago_text(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "Now".to_owned();
    }
    let mut parts = Vec::new();
    for (unit, len) in [
        ("day", 86_400),
        ("hour", 3_600),
        ("minute", 60),
        ("second", 1),
    ] {
        if secs >= len {
            parts.push(plural(secs / len, unit));
            secs %= len;
        }
    }
    format!("{} ago", parts.join(", "))
}

/// "1.23 KiB", as `wg` writes it.
fn bytes_text(n: u64) -> String {
    const UNITS: [(&str, f64); 4] = [
        ("TiB", 1_099_511_627_776.0),
        ("GiB", 1_073_741_824.0),
        ("MiB", 1_048_576.0),
        ("KiB", 1_024.0),
    ];
    for (unit, size) in UNITS {
        if n as f64 >= size {
            return format!("{:.2} {unit}", n as f64 / size);
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtun_proto::{PresharedKey, PrivateKey};

    fn status() -> DeviceStatus {
        let key = PrivateKey::generate();
        DeviceStatus {
            name: "wg0".into(),
            private_key: Some(key),
            listen_port: 51820,
            fwmark: 0xca6c,
            peers: vec![PeerStatus {
                public_key: PrivateKey::generate().public_key(),
                preshared_key: Some(PresharedKey::generate()),
                endpoint: Some("192.0.2.2:51820".parse().unwrap()),
                last_handshake: Some(UNIX_EPOCH + Duration::from_secs(1_000)),
                rx_bytes: 2048,
                tx_bytes: 100,
                persistent_keepalive: Some(25),
                allowed_ips: vec!["100.64.0.2/32".parse().unwrap()],
            }],
        }
    }

    #[test]
    fn text_looks_like_wg_show_and_hides_secrets() {
        let s = status();
        let text = render_text(&s, UNIX_EPOCH + Duration::from_secs(1_065));
        assert!(text.contains("interface: wg0"));
        assert!(text.contains("listening port: 51820"));
        assert!(text.contains("fwmark: 0xca6c"));
        assert!(text.contains("endpoint: 192.0.2.2:51820"));
        assert!(text.contains("latest handshake: 1 minute, 5 seconds ago"));
        assert!(text.contains("transfer: 2.00 KiB received, 100 B sent"));
        assert!(text.contains("persistent keepalive: every 25 seconds"));
        let private = s.private_key.as_ref().unwrap();
        assert!(!text.contains(&private.to_base64()));
        assert!(!text.contains(&s.peers[0].preshared_key.as_ref().unwrap().to_base64()));
    }

    #[test]
    fn json_has_no_secrets() {
        let s = status();
        let json = serde_json::to_string(&InterfaceView::from(&s)).unwrap();
        assert!(json.contains("\"latest_handshake\":1000"));
        assert!(json.contains("\"preshared_key\":true"));
        assert!(!json.contains(&s.private_key.as_ref().unwrap().to_base64()));
        assert!(!json.contains(&s.peers[0].preshared_key.as_ref().unwrap().to_base64()));
    }
}
