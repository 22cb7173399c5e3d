//! Keys and configuration files: meshtun's TOML, and `wg setconf` files for wireguard-go.

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::run::{run, run_with_input};

/// A WireGuard key pair in base64, made by `wg genkey` and `wg pubkey`.
#[derive(Clone)]
pub struct KeyPair {
    /// The private key.
    pub private: String,
    /// Its public key.
    pub public: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl KeyPair {
    /// Generates a key pair with `wg genkey` and derives the public key with `wg pubkey`.
    pub fn generate() -> Self {
        let private = wg_output(Command::new("wg").arg("genkey"));
        let public = pubkey(&private);
        Self { private, public }
    }
}

/// The public key of `private` (base64), computed by `wg pubkey`.
pub fn pubkey(private: &str) -> String {
    let out = run_with_input(
        Command::new("wg").arg("pubkey"),
        &format!("{private}\n"),
        crate::netns::COMMAND_TIMEOUT,
    );
    key_from(out.expect_success())
}

/// A new preshared key (base64), made by `wg genpsk`.
pub fn genpsk() -> String {
    wg_output(Command::new("wg").arg("genpsk"))
}

fn wg_output(cmd: &mut Command) -> String {
    key_from(run(cmd, crate::netns::COMMAND_TIMEOUT).expect_success())
}

fn key_from(out: String) -> String {
    let key = out.trim().to_owned();
    assert_eq!(key.len(), 44, "`wg` printed something that is not a key");
    key
}

/// Writes `contents` to `dir/name` with mode 0600 (it may hold keys) and returns the path.
pub fn write_secret(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    file.write_all(contents.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path
}

/// A node's configuration, rendered as meshtun TOML or as a `wg setconf` file.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The `[interface]` table.
    pub interface: Interface,
    /// The `[[peer]]` tables.
    #[serde(rename = "peer", skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Peer>,
    /// The `[metrics]` table, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// The `[metrics]` table.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Where `GET /metrics` is served: `ip:port` or `[ipv6]:port`.
    pub listen: String,
}

/// The `[interface]` table.
#[derive(Clone, Serialize)]
pub struct Interface {
    /// Interface name (unique across tests: see [`crate::iface_name`]).
    pub name: String,
    /// Private key, base64.
    pub private_key: String,
    /// Tunnel addresses with prefix length.
    pub address: Vec<String>,
    /// UDP listen port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// Tunnel MTU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// The packet workers' priority, `"realtime"` or `"normal"` (the daemon's default when
    /// unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<String>,
}

impl std::fmt::Debug for Interface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interface")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("listen_port", &self.listen_port)
            .finish_non_exhaustive()
    }
}

/// One `[[peer]]` table.
#[derive(Clone, Serialize)]
pub struct Peer {
    /// The peer's public key, base64.
    pub public_key: String,
    /// Optional preshared key, base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preshared_key: Option<String>,
    /// Networks routed to and accepted from the peer.
    pub allowed_ips: Vec<String>,
    /// Outer endpoint, `ip:port` or `[ipv6]:port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Keepalive interval in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("public_key", &self.public_key)
            .field("allowed_ips", &self.allowed_ips)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// Sets the endpoint.
    pub fn endpoint(mut self, addr: IpAddr, port: u16) -> Self {
        self.endpoint = Some(SocketAddr::new(addr, port).to_string());
        self
    }

    /// Sets the preshared key.
    pub fn psk(mut self, psk: &str) -> Self {
        self.preshared_key = Some(psk.to_owned());
        self
    }

    /// Sets the persistent keepalive interval.
    pub fn keepalive(mut self, seconds: u16) -> Self {
        self.persistent_keepalive = Some(seconds);
        self
    }
}

impl Config {
    /// The interface name.
    pub fn name(&self) -> &str {
        &self.interface.name
    }

    /// The meshtun TOML form.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a test configuration always serializes")
    }

    /// Writes the meshtun TOML form to `dir/<name>.toml` (mode 0600) and returns its path.
    pub fn write_toml(&self, dir: &Path) -> PathBuf {
        write_secret(dir, &format!("{}.toml", self.name()), &self.to_toml())
    }

    /// The `wg setconf` form (keys, port and peers; addresses and MTU are set with `ip`).
    pub fn to_wg_conf(&self) -> String {
        let mut out = format!("[Interface]\nPrivateKey = {}\n", self.interface.private_key);
        if let Some(port) = self.interface.listen_port {
            let _ = writeln!(out, "ListenPort = {port}");
        }
        for peer in &self.peers {
            let _ = write!(out, "\n[Peer]\nPublicKey = {}\n", peer.public_key);
            if let Some(psk) = &peer.preshared_key {
                let _ = writeln!(out, "PresharedKey = {psk}");
            }
            if !peer.allowed_ips.is_empty() {
                let _ = writeln!(out, "AllowedIPs = {}", peer.allowed_ips.join(", "));
            }
            if let Some(endpoint) = &peer.endpoint {
                let _ = writeln!(out, "Endpoint = {endpoint}");
            }
            if let Some(keepalive) = peer.persistent_keepalive {
                let _ = writeln!(out, "PersistentKeepalive = {keepalive}");
            }
        }
        out
    }
}

/// A node of a test network: its keys, tunnel addresses and port, from which its own
/// [`Config`] and the [`Peer`] entry other nodes use for it are derived.
#[derive(Debug, Clone)]
pub struct Node {
    /// The interface name.
    pub name: String,
    /// The node's keys.
    pub keys: KeyPair,
    /// Tunnel IPv4 address, `100.64.0.<index>` (in 100.64.0.0/24).
    pub v4: Ipv4Addr,
    /// Tunnel IPv6 address, `fd00:64::<index>` (in fd00:64::/64).
    pub v6: Ipv6Addr,
    /// UDP listen port.
    pub port: u16,
}

impl Node {
    /// A node numbered `index` (1–254) with a fresh key pair and a unique interface name
    /// ending in `role`; it listens on port 51820 (namespaces keep ports apart).
    pub fn new(role: &str, index: u8) -> Self {
        Self {
            name: crate::iface_name(role),
            keys: KeyPair::generate(),
            v4: Ipv4Addr::new(100, 64, 0, index),
            v6: Ipv6Addr::new(0xfd00, 0x64, 0, 0, 0, 0, 0, index.into()),
            port: 51820,
        }
    }

    /// The node's configuration without peers: both tunnel addresses, its port, MTU 1420.
    pub fn config(&self) -> Config {
        Config {
            interface: Interface {
                name: self.name.clone(),
                private_key: self.keys.private.clone(),
                address: vec![format!("{}/24", self.v4), format!("{}/64", self.v6)],
                listen_port: Some(self.port),
                mtu: Some(1420),
                scheduling: None,
            },
            peers: Vec::new(),
            metrics: None,
        }
    }

    /// The peer entry for this node: its public key and its two tunnel addresses (/32, /128).
    pub fn as_peer(&self) -> Peer {
        Peer {
            public_key: self.keys.public.clone(),
            preshared_key: None,
            allowed_ips: vec![format!("{}/32", self.v4), format!("{}/128", self.v6)],
            endpoint: None,
            persistent_keepalive: None,
        }
    }
}

/// The configurations of two nodes that are each other's only peer: `a` reaches `b` at
/// `b_addr` and `b` reaches `a` at `a_addr` (their outer addresses), each on its port.
pub fn pair(a: &Node, a_addr: IpAddr, b: &Node, b_addr: IpAddr) -> (Config, Config) {
    let mut ca = a.config();
    ca.peers.push(b.as_peer().endpoint(b_addr, b.port));
    let mut cb = b.config();
    cb.peers.push(a.as_peer().endpoint(a_addr, a.port));
    (ca, cb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Config {
        let peer = Peer {
            public_key: "P".repeat(43) + "=",
            preshared_key: None,
            allowed_ips: vec!["100.64.0.2/32".into(), "fd00:64::2/128".into()],
            endpoint: None,
            persistent_keepalive: None,
        };
        Config {
            interface: Interface {
                name: "mt0".into(),
                private_key: "K".repeat(43) + "=",
                address: vec!["100.64.0.1/24".into()],
                listen_port: Some(51820),
                mtu: None,
                scheduling: None,
            },
            peers: vec![peer
                .psk(&("S".repeat(43) + "="))
                .endpoint("2001:db8::2".parse().unwrap(), 51821)
                .keepalive(25)],
            metrics: None,
        }
    }

    #[test]
    fn toml_has_the_documented_layout() {
        let text = sample().to_toml();
        let value: toml::Table = text.parse().unwrap();
        let iface = value["interface"].as_table().unwrap();
        assert_eq!(iface["name"].as_str(), Some("mt0"));
        assert_eq!(iface["listen_port"].as_integer(), Some(51820));
        assert!(!iface.contains_key("mtu"));
        let peer = &value["peer"].as_array().unwrap()[0];
        assert_eq!(peer["endpoint"].as_str(), Some("[2001:db8::2]:51821"));
        assert_eq!(peer["persistent_keepalive"].as_integer(), Some(25));
        assert_eq!(peer["allowed_ips"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn wg_conf_lists_peer_fields() {
        let text = sample().to_wg_conf();
        assert!(text.starts_with("[Interface]\nPrivateKey = KKK"));
        assert!(text.contains("ListenPort = 51820\n"));
        assert!(text.contains("AllowedIPs = 100.64.0.2/32, fd00:64::2/128\n"));
        assert!(text.contains("Endpoint = [2001:db8::2]:51821\n"));
        assert!(text.contains("PresharedKey = SSS"));
        assert!(text.contains("PersistentKeepalive = 25\n"));
    }

    #[test]
    fn secrets_are_written_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = sample().write_toml(dir.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(path).unwrap(), sample().to_toml());
    }

    #[test]
    fn debug_output_hides_private_keys() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("KKKK") && !text.contains("SSSS"));
    }
}
