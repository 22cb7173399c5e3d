//! Linux tun through tun-rs, with virtio-net offload: the kernel hands over TCP super-packets
//! that are split on read, and packets are coalesced again on write.

use std::io;

use tokio::sync::Mutex;
use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, VIRTIO_NET_HDR_LEN};

use super::TunOptions;
use crate::device::transport::{PacketBatch, TunIo, MAX_PACKET};

/// An open Linux tun device.
pub struct Tun {
    dev: AsyncDevice,
    name: String,
    offload: bool,
    /// Raw read buffer: virtio-net header plus one (possibly 64 KiB) packet.
    read_buf: Mutex<Vec<u8>>,
    gro: Mutex<GROTable>,
}

impl Tun {
    /// Opens (creating if needed) the tun device described by `opts`.
    pub fn open(opts: &TunOptions) -> io::Result<Self> {
        let open = |offload: bool| {
            let mut builder = DeviceBuilder::new().name(&opts.name).offload(offload);
            builder = if opts.persistent {
                builder.inherit_enable_state()
            } else {
                builder.mtu(opts.mtu)
            };
            builder.build_async()
        };
        let (dev, offload) = match open(opts.offload) {
            Ok(dev) => (dev, opts.offload),
            Err(error) if opts.offload => {
                tracing::info!(%error, "tun offload unavailable; using plain batched I/O");
                (open(false)?, false)
            }
            Err(error) => return Err(error),
        };
        let offload = offload && dev.tcp_gso();
        let name = dev.name().unwrap_or_else(|_| opts.name.clone());
        Ok(Self {
            dev,
            name,
            offload,
            read_buf: Mutex::new(vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET]),
            gro: Mutex::new(GROTable::new()),
        })
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True if segmentation offload is on.
    pub fn offload(&self) -> bool {
        self.offload
    }
}

impl TunIo for Tun {
    async fn recv(&self, batch: &mut PacketBatch) -> io::Result<()> {
        let mut original = self.read_buf.lock().await;
        let (bufs, sizes, count, headroom) = batch.raw_parts();
        loop {
            match self
                .dev
                .recv_multiple(&mut original, bufs, sizes, headroom)
                .await
            {
                Ok(n) => {
                    *count = n;
                    return Ok(());
                }
                // A malformed offload packet from the kernel: skip it.
                Err(e) if e.kind() == io::ErrorKind::Other => {
                    tracing::debug!(error = %e, "tun read skipped");
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send(&self, batch: &mut PacketBatch) -> io::Result<()> {
        let mut gro = self.gro.lock().await;
        let (bufs, headroom) = batch.packet_buffers();
        let result = self.dev.send_multiple(&mut gro, bufs, headroom).await;
        batch.restore();
        result.map(|_| ())
    }
}
