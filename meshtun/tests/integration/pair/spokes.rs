//! A hub device with many peers ("spokes") on the in-memory network. Each spoke is a plain
//! boringtun `Tunn` driven by the test: it answers the hub's handshakes and records whether
//! its current `Tunn` has decrypted data from the hub, which proves the hub's session with
//! it uses that `Tunn`'s preshared key. After a rotation a spoke keeps its previous `Tunn`
//! beside the new one (make-before-break, as a meshtun node does), and datagrams go to the
//! one their receiver index names; a spoke can log every data packet it decrypts, with the
//! `Tunn` that decrypted it.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use meshtun::device::channel::{ChannelTun, Network, TunHandle};
use meshtun::device::Device;
use meshtun::wgcfg::{DeviceSettings, PeerSettings};
use meshtun_proto::{PresharedKey, PrivateKey};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{ip_packet, Dev};

/// The hub's outer address.
pub const HUB: &str = "192.0.2.1:51820";

/// One spoke.
pub struct Spoke {
    key: PrivateKey,
    /// Its outer address.
    pub addr: SocketAddr,
    /// Its tunnel address.
    pub ip: Ipv4Addr,
    /// Its preshared key with the hub.
    pub psk: PresharedKey,
    tunn: Tunn,
    /// The session index of `tunn`.
    index: u32,
    /// The `Tunn` before the last rotation, and its index: it still decrypts.
    previous: Option<(Tunn, u32)>,
    /// Its current `Tunn` decrypted a data packet (or keepalive) from the hub.
    pub heard: bool,
    /// Every IP packet decrypted: when the hub sent it, the index of the `Tunn` that decrypted it, the
    /// packet; kept only when `logging`.
    pub log: Vec<(Instant, u32, Vec<u8>)>,
    /// Keep `log`.
    pub logging: bool,
}

impl Spoke {
    /// The session index of its current `Tunn` (a rotation adds 10,000).
    pub fn index(&self) -> u32 {
        self.index
    }
}

/// A hub and its spokes.
pub struct Hub {
    /// The hub's device.
    pub dev: Dev,
    /// The hub's tun.
    pub tun: TunHandle,
    hub_key: PrivateKey,
    hub_addr: SocketAddr,
    /// The spokes, by outer address.
    pub spokes: Arc<Mutex<HashMap<SocketAddr, Spoke>>>,
    driver: JoinHandle<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn tunn(spoke: &PrivateKey, hub: &PrivateKey, psk: &PresharedKey, index: u32) -> Tunn {
    let hub = x25519::PublicKey::from(*hub.public_key().as_bytes());
    Tunn::new(
        spoke.to_static_secret(),
        hub,
        Some(*psk.as_bytes()),
        None,
        index,
        None,
    )
}

impl Hub {
    /// A hub with `n` spokes, each with its own preshared key; nothing has handshaken yet.
    pub fn new(net: &Network, n: usize) -> Self {
        let hub_key = PrivateKey::generate();
        let hub_addr: SocketAddr = HUB.parse().unwrap();
        let mut spokes = HashMap::new();
        for i in 0..n {
            let key = PrivateKey::generate();
            let psk = PresharedKey::generate();
            let addr = SocketAddr::from(([198, 51, 100, 1], 20_000 + i as u16));
            let ip = Ipv4Addr::new(100, 65, (i / 256) as u8, (i % 256) as u8);
            let tunn = tunn(&key, &hub_key, &psk, i as u32);
            spokes.insert(
                addr,
                Spoke {
                    key,
                    addr,
                    ip,
                    psk,
                    tunn,
                    index: i as u32,
                    previous: None,
                    heard: false,
                    log: Vec::new(),
                    logging: false,
                },
            );
        }
        let spokes = Arc::new(Mutex::new(spokes));
        let (tun, handle) = ChannelTun::pair();
        let settings = Self::settings_of(&hub_key, &spokes.lock());
        let factory = net.host(hub_addr.ip());
        let dev = Device::start("mt-hub", tun, factory, 1420, &settings).unwrap();
        let driver = tokio::spawn(drive(net.clone(), spokes.clone(), hub_addr));
        Self {
            dev,
            tun: handle,
            hub_key,
            hub_addr,
            spokes,
            driver,
        }
    }

    fn settings_of(hub_key: &PrivateKey, spokes: &HashMap<SocketAddr, Spoke>) -> DeviceSettings {
        let mut peers: Vec<PeerSettings> = spokes
            .values()
            .map(|s| PeerSettings {
                probes: Vec::new(),
                public_key: s.key.public_key(),
                preshared_key: Some(s.psk.clone()),
                endpoint: Some(s.addr),
                allowed_ips: vec![format!("{}/32", s.ip).parse().unwrap()],
                persistent_keepalive: None,
                forward: false,
            })
            .collect();
        peers.sort_by_key(|p| p.endpoint);
        DeviceSettings {
            private_key: hub_key.clone(),
            listen_port: Some(51820),
            fwmark: None,
            peers,
        }
    }

    /// The hub's configuration with the spokes' current keys.
    pub fn settings(&self) -> DeviceSettings {
        Self::settings_of(&self.hub_key, &self.spokes.lock())
    }

    /// Gives every spoke a new preshared key and a fresh `Tunn` with it, keeping the
    /// previous one to decrypt (the spokes have rotated); returns the hub configuration that
    /// matches.
    pub fn rotate_spokes(&self) -> DeviceSettings {
        let mut spokes = self.spokes.lock();
        for spoke in spokes.values_mut() {
            spoke.psk = PresharedKey::generate();
            // Indices stay unique: each rotation moves every spoke up by 10,000.
            let index = spoke.index + 10_000;
            let new = tunn(&spoke.key, &self.hub_key, &spoke.psk, index);
            let old = std::mem::replace(&mut spoke.tunn, new);
            spoke.previous = Some((old, spoke.index));
            spoke.index = index;
            spoke.heard = false;
        }
        drop(spokes);
        self.settings()
    }

    /// Sends one packet from the hub's host to every spoke.
    pub async fn send_to_all(&self, tag: &[u8]) {
        let ips: Vec<Ipv4Addr> = self.spokes.lock().values().map(|s| s.ip).collect();
        for ip in ips {
            let packet = ip_packet("100.64.0.1", &ip.to_string(), tag);
            self.tun.to_device.send(packet).await.unwrap();
        }
    }

    /// How many spokes have heard from the hub on their current `Tunn`.
    pub fn heard(&self) -> usize {
        self.spokes.lock().values().filter(|s| s.heard).count()
    }

    /// The hub's outer address.
    pub fn addr(&self) -> SocketAddr {
        self.hub_addr
    }
}

/// True unless `datagram` names the spoke's previous `Tunn` as its receiver (a boringtun
/// session index is the `Tunn`'s index shifted left by 8). Initiations name none: the
/// current `Tunn` answers them.
fn addressed_to_current(spoke: &Spoke, datagram: &[u8]) -> bool {
    let Some((_, old)) = &spoke.previous else {
        return true;
    };
    // The receiver index: after the sender's in a response, first in a cookie reply or data.
    let receiver = match datagram.first() {
        Some(2) => datagram.get(8..12),
        Some(3 | 4) => datagram.get(4..8),
        _ => None,
    };
    let Some(receiver) = receiver else {
        return true;
    };
    let receiver = u32::from_le_bytes([receiver[0], receiver[1], receiver[2], receiver[3]]);
    receiver >> 8 != *old
}

/// Carries datagrams from the hub to the spokes' `Tunn`s and their answers back.
async fn drive(net: Network, spokes: Arc<Mutex<HashMap<SocketAddr, Spoke>>>, hub: SocketAddr) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(SocketAddr, Instant, Vec<u8>)>();
    let known: Vec<SocketAddr> = spokes.lock().keys().copied().collect();
    let known: std::collections::HashSet<SocketAddr> = known.into_iter().collect();
    net.set_tap(move |_, dst, d| {
        if known.contains(&dst) {
            let _ = tx.send((dst, Instant::now(), d.to_vec()));
            return false;
        }
        true
    });
    let mut buf = vec![0u8; 65_536];
    let mut answers = Vec::new();
    while let Some((dst, sent, datagram)) = rx.recv().await {
        {
            let mut spokes = spokes.lock();
            let Some(spoke) = spokes.get_mut(&dst) else {
                continue;
            };
            let from = Some(hub.ip());
            let current = addressed_to_current(spoke, &datagram);
            let (tunn, index) = match (&mut spoke.previous, current) {
                (Some((old, index)), false) => (old, *index),
                _ => (&mut spoke.tunn, spoke.index),
            };
            match tunn.decapsulate(from, &datagram, &mut buf) {
                TunnResult::WriteToNetwork(p) => {
                    answers.push((spoke.addr, p.to_vec()));
                    while let TunnResult::WriteToNetwork(p) = tunn.decapsulate(None, &[], &mut buf)
                    {
                        answers.push((spoke.addr, p.to_vec()));
                    }
                }
                TunnResult::WriteToTunnelV4(p, _) if datagram[0] == 4 => {
                    if spoke.logging {
                        spoke.log.push((sent, index, p.to_vec()));
                    }
                    spoke.heard |= current;
                }
                TunnResult::Done if datagram[0] == 4 => spoke.heard |= current,
                _ => {}
            }
        }
        for (k, (from, answer)) in answers.drain(..).enumerate() {
            net.inject(from, hub, &answer);
            if k % 64 == 63 {
                tokio::task::yield_now().await;
            }
        }
        if rx.is_empty() {
            tokio::task::yield_now().await;
        }
    }
}
