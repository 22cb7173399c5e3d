//! In-memory transports, so that tests can run whole devices in one process.
//!
//! [`ChannelTun`] stands in for a tun device: the test writes IP packets "from the host" and
//! reads what the device delivers. [`Network`] is a simulated UDP network: sockets bound on
//! it exchange datagrams by address, and the test can watch, inject or drop traffic.
//! These transports allocate per packet; they are for tests, not for speed.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::transport::{PacketBatch, RecvBatch, RecvMeta, TunIo, UdpFactory, UdpIo, UdpSockets};

const QUEUE: usize = 1024;

/// The device side of an in-memory tun device.
pub struct ChannelTun {
    from_host: tokio::sync::Mutex<mpsc::Receiver<Vec<u8>>>,
    to_host: mpsc::Sender<Vec<u8>>,
    lanes: usize,
}

/// The test's side of an in-memory tun device.
pub struct TunHandle {
    /// Packets the "host" sends into the tunnel.
    pub to_device: mpsc::Sender<Vec<u8>>,
    /// Packets the device delivered to the "host".
    pub from_device: mpsc::Receiver<Vec<u8>>,
}

impl ChannelTun {
    /// A connected pair: the device's tun and the test's handle.
    pub fn pair() -> (ChannelTun, TunHandle) {
        Self::pair_with_lanes(1)
    }

    /// A connected pair whose tun has `lanes` lanes (at least 1), all reading the one host
    /// queue: the device runs a send worker per lane.
    pub fn pair_with_lanes(lanes: usize) -> (ChannelTun, TunHandle) {
        let (to_device, from_host) = mpsc::channel(QUEUE);
        let (to_host, from_device) = mpsc::channel(QUEUE);
        (
            ChannelTun {
                from_host: tokio::sync::Mutex::new(from_host),
                to_host,
                lanes: lanes.max(1),
            },
            TunHandle {
                to_device,
                from_device,
            },
        )
    }
}

impl TunIo for ChannelTun {
    fn lanes(&self) -> usize {
        self.lanes
    }

    async fn recv(&self, _lane: usize, batch: &mut PacketBatch) -> io::Result<()> {
        let mut rx = self.from_host.lock().await;
        let first = rx
            .recv()
            .await
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "tun handle dropped"))?;
        batch.push(&first);
        while !batch.is_full() {
            match rx.try_recv() {
                Ok(p) => {
                    batch.push(&p);
                }
                Err(_) => break,
            }
        }
        Ok(())
    }

    async fn send(&self, _lane: usize, batch: &mut PacketBatch) -> io::Result<()> {
        for i in 0..batch.len() {
            // A full or closed host queue drops the packet, as a real tun device would.
            let _ = self.to_host.try_send(batch.packet(i).to_vec());
        }
        Ok(())
    }
}

type Inbox = mpsc::Sender<(SocketAddr, Vec<u8>)>;
type Outbox = mpsc::Receiver<(SocketAddr, Vec<u8>)>;
type Tap = Box<dyn Fn(SocketAddr, SocketAddr, &[u8]) -> bool + Send + Sync>;

#[derive(Default)]
struct NetworkState {
    sockets: HashMap<SocketAddr, Inbox>,
    next_port: u16,
    tap: Option<Tap>,
}

/// A simulated UDP network.
#[derive(Clone, Default)]
pub struct Network {
    state: Arc<Mutex<NetworkState>>,
}

impl Network {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// A socket factory for a host at `ip`.
    pub fn host(&self, ip: IpAddr) -> ChannelUdpFactory {
        ChannelUdpFactory {
            net: self.clone(),
            ip,
        }
    }

    /// Calls `tap(src, dst, datagram)` for every datagram; one for which it returns false is
    /// dropped.
    pub fn set_tap(
        &self,
        tap: impl Fn(SocketAddr, SocketAddr, &[u8]) -> bool + Send + Sync + 'static,
    ) {
        self.state.lock().tap = Some(Box::new(tap));
    }

    /// Delivers a datagram from `src` to `dst`, as if sent by anyone.
    pub fn inject(&self, src: SocketAddr, dst: SocketAddr, datagram: &[u8]) {
        let state = self.state.lock();
        if let Some(tap) = &state.tap {
            if !tap(src, dst, datagram) {
                return;
            }
        }
        if let Some(inbox) = state.sockets.get(&dst) {
            let _ = inbox.try_send((src, datagram.to_vec()));
        }
    }

    fn bind(&self, ip: IpAddr, port: u16) -> io::Result<(SocketAddr, Outbox)> {
        let mut state = self.state.lock();
        let port = if port == 0 {
            state.next_port = state.next_port.max(40_000) + 1;
            state.next_port
        } else {
            port
        };
        let addr = SocketAddr::new(ip, port);
        if state.sockets.get(&addr).is_some_and(|s| !s.is_closed()) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} in use"),
            ));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        state.sockets.insert(addr, tx);
        Ok((addr, rx))
    }
}

/// Binds [`ChannelUdp`] sockets for one simulated host.
pub struct ChannelUdpFactory {
    net: Network,
    ip: IpAddr,
}

/// A UDP socket on a [`Network`].
pub struct ChannelUdp {
    net: Network,
    local: SocketAddr,
    inbox: tokio::sync::Mutex<Outbox>,
}

impl ChannelUdp {
    /// The socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl UdpFactory for ChannelUdpFactory {
    type Socket = ChannelUdp;

    fn bind(&self, port: u16, _fwmark: Option<u32>) -> io::Result<UdpSockets<ChannelUdp>> {
        let (local, rx) = self.net.bind(self.ip, port)?;
        let socket = Arc::new(ChannelUdp {
            net: self.net.clone(),
            local,
            inbox: tokio::sync::Mutex::new(rx),
        });
        let (v4, v6) = match self.ip {
            IpAddr::V4(_) => (Some(socket), None),
            IpAddr::V6(_) => (None, Some(socket)),
        };
        Ok(UdpSockets {
            v4,
            v6,
            port: local.port(),
        })
    }
}

impl UdpIo for ChannelUdp {
    async fn recv(&self, batch: &mut RecvBatch) -> io::Result<()> {
        let mut inbox = self.inbox.lock().await;
        batch.count = 0;
        let mut next = inbox.recv().await;
        while let Some((src, data)) = next {
            let slot = batch.count;
            let len = data.len().min(batch.bufs[slot].len());
            batch.bufs[slot][..len].copy_from_slice(&data[..len]);
            batch.meta[slot] = RecvMeta {
                src,
                len,
                stride: len,
            };
            batch.count += 1;
            if batch.count == batch.bufs.len() {
                break;
            }
            next = inbox.try_recv().ok();
        }
        if batch.count == 0 {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "socket closed"));
        }
        Ok(())
    }

    async fn send(&self, dest: SocketAddr, data: &[u8], segment_size: usize) -> io::Result<()> {
        for datagram in data.chunks(segment_size.max(1)) {
            self.net.inject(self.local, dest, datagram);
        }
        Ok(())
    }

    fn max_segments(&self) -> usize {
        64
    }

    fn set_fwmark(&self, _mark: u32) -> io::Result<()> {
        Ok(())
    }
}
