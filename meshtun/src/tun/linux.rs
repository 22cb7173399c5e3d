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

#[cfg(test)]
mod tests {
    use tun_rs::{GROTable, VIRTIO_NET_HDR_LEN};

    use crate::device::transport::{PacketBatch, TUN_HEADROOM};

    /// Ones'-complement sum of `data`, folded.
    fn sum(data: &[u8], mut acc: u32) -> u32 {
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            acc += hi | pair.get(1).map_or(0, |b| u32::from(*b));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc
    }

    /// An IPv4 TCP segment (ACK, no options) of `payload` bytes at `seq`, both checksums valid.
    fn segment(seq: u32, payload: usize) -> Vec<u8> {
        let total = 40 + payload;
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40; // don't fragment
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[100, 64, 0, 1]);
        p[16..20].copy_from_slice(&[100, 64, 0, 2]);
        let ip = !sum(&p[..20], 0) as u16;
        p[10..12].copy_from_slice(&ip.to_be_bytes());
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&5201u16.to_be_bytes());
        p[24..28].copy_from_slice(&seq.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x10; // ACK
        p[34..36].copy_from_slice(&512u16.to_be_bytes());
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, 6]);
        pseudo.extend_from_slice(&((total - 20) as u16).to_be_bytes());
        let tcp = !sum(&p[20..], sum(&pseudo, 0)) as u16;
        p[36..38].copy_from_slice(&tcp.to_be_bytes());
        p
    }

    /// Runs tun-rs's receive offload over `batch` and returns the buffer lengths it left.
    fn coalesce(batch: &mut PacketBatch) -> Vec<usize> {
        let mut table = GROTable::new();
        let (bufs, headroom) = batch.packet_buffers();
        assert!(headroom >= VIRTIO_NET_HDR_LEN);
        table.apply_gro(bufs, headroom, false).expect("gro");
        bufs.iter().map(Vec::len).collect()
    }

    #[test]
    fn decrypted_segments_of_a_flow_coalesce_into_one_write() {
        let mut batch = PacketBatch::coalescing(64, 1484, TUN_HEADROOM);
        for k in 0..40u32 {
            assert!(batch.push(&segment(1_000 + k * 1380, 1380)));
        }
        let lens = coalesce(&mut batch);
        // The first buffer now holds the headers once and all 40 payloads.
        assert_eq!(lens[0], TUN_HEADROOM + 40 + 40 * 1380);
    }

    #[test]
    fn buffers_without_room_are_written_one_by_one() {
        // What a plain batch gives: tun-rs does not reallocate to coalesce, so every
        // segment would cost its own write.
        let mut batch = PacketBatch::new(64, 1484, TUN_HEADROOM);
        for k in 0..40u32 {
            assert!(batch.push(&segment(1_000 + k * 1380, 1380)));
        }
        let lens = coalesce(&mut batch);
        assert!(lens.iter().all(|len| *len == TUN_HEADROOM + 40 + 1380));
    }
}
