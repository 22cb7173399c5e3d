//! Two (or more) devices in one process, over in-memory tun and UDP transports: the fixture
//! of the device-level integration tests.

#![allow(dead_code)] // device_queue.rs, a test binary of its own, uses only part of it

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use meshtun::device::channel::{ChannelTun, ChannelUdpFactory, Network, TunHandle};
use meshtun::device::Device;
use meshtun::wgcfg::{DeviceSettings, PeerSettings};
use meshtun_proto::{PresharedKey, PrivateKey};
use tokio::time::timeout;

pub mod spokes;

pub type Dev = Device<ChannelTun, ChannelUdpFactory>;

pub const WAIT: Duration = Duration::from_secs(5);

/// An IPv4 or IPv6 packet with a correct length field (checksums are not checked here).
pub fn ip_packet(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    match (
        src.parse::<IpAddr>().unwrap(),
        dst.parse::<IpAddr>().unwrap(),
    ) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = 20 + payload.len();
            let mut p = vec![
                0x45,
                0,
                (total >> 8) as u8,
                total as u8,
                0,
                0,
                0,
                0,
                64,
                17,
                0,
                0,
            ];
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(payload);
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let len = payload.len();
            let mut p = vec![0x60, 0, 0, 0, (len >> 8) as u8, len as u8, 17, 64];
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(payload);
            p
        }
        _ => panic!("mixed families"),
    }
}

pub struct Node {
    pub key: PrivateKey,
    pub dev: Dev,
    pub tun: TunHandle,
    pub addr: SocketAddr,
}

pub fn peer(
    key: &PrivateKey,
    ips: &[&str],
    endpoint: Option<SocketAddr>,
    psk: Option<&PresharedKey>,
) -> PeerSettings {
    PeerSettings {
        probes: Vec::new(),
        public_key: key.public_key(),
        preshared_key: psk.cloned(),
        endpoint,
        allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
        persistent_keepalive: None,
        forward: false,
    }
}

pub fn node(net: &Network, ip: &str, port: u16, key: PrivateKey, peers: Vec<PeerSettings>) -> Node {
    node_with_lanes(net, ip, port, key, peers, 1)
}

pub fn node_with_lanes(
    net: &Network,
    ip: &str,
    port: u16,
    key: PrivateKey,
    peers: Vec<PeerSettings>,
    lanes: usize,
) -> Node {
    let ip: IpAddr = ip.parse().unwrap();
    let (tun, handle) = ChannelTun::pair_with_lanes(lanes);
    let settings = DeviceSettings {
        private_key: key.clone(),
        listen_port: Some(port),
        fwmark: None,
        peers,
    };
    let dev = Device::start("mt-test", tun, net.host(ip), 1420, &settings).unwrap();
    Node {
        key,
        dev,
        tun: handle,
        addr: SocketAddr::new(ip, port),
    }
}

/// Alice (192.0.2.1, 100.64.0.1, fd00::1) and Bob (192.0.2.2, 100.64.0.2, fd00::2); only
/// Alice knows Bob's endpoint.
pub fn pair(net: &Network, psk: Option<&PresharedKey>) -> (Node, Node) {
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let bob_addr: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    let alice = node(
        net,
        "192.0.2.1",
        51820,
        ka.clone(),
        vec![peer(
            &kb,
            &["100.64.0.2/32", "fd00::2/128"],
            Some(bob_addr),
            psk,
        )],
    );
    let bob = node(
        net,
        "192.0.2.2",
        51820,
        kb,
        vec![peer(&ka, &["100.64.0.1/32", "fd00::1/128"], None, psk)],
    );
    (alice, bob)
}

pub async fn expect(handle: &mut TunHandle, want: &[u8]) {
    loop {
        let got = timeout(WAIT, handle.from_device.recv())
            .await
            .expect("packet not delivered in time")
            .expect("tun closed");
        if got == want {
            return;
        }
    }
}

pub async fn ping(from: &Node, to: &mut Node, src: &str, dst: &str, tag: &[u8]) {
    let packet = ip_packet(src, dst, tag);
    from.tun.to_device.send(packet.clone()).await.unwrap();
    expect(&mut to.tun, &packet).await;
}
