//! Linux tun through tun-rs, with virtio-net offload: the kernel hands over TCP super-packets
//! that are split on read, and packets are coalesced again on write. With several lanes the
//! device is multi-queue: the kernel spreads flows over the queues, one send worker each.

use std::io;

use tokio::sync::Mutex;
use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, VIRTIO_NET_HDR_LEN};

use super::TunOptions;
use crate::device::transport::{PacketBatch, TunIo, MAX_PACKET};

/// Free packet slots a further read without waiting needs: a TCP super-packet of 64 KiB
/// splits into this many segments at an MSS of 1024 bytes or more.
const DRAIN_ROOM: usize = 64;

/// One queue of the device, with its own read buffer and coalescing table.
struct Queue {
    dev: AsyncDevice,
    /// Raw read buffer: virtio-net header plus one (possibly 64 KiB) packet.
    read_buf: Mutex<Vec<u8>>,
    gro: Mutex<GROTable>,
}

impl Queue {
    fn new(dev: AsyncDevice) -> Self {
        Self {
            dev,
            read_buf: Mutex::new(vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET]),
            gro: Mutex::new(GROTable::new()),
        }
    }
}

/// An open Linux tun device.
pub struct Tun {
    queues: Vec<Queue>,
    name: String,
    offload: bool,
    udp_offload: bool,
}

impl Tun {
    /// Opens (creating if needed) the tun device described by `opts`, with `opts.lanes`
    /// queues if the kernel (or, for a persistent device, the way it was created) allows,
    /// and one otherwise.
    pub fn open(opts: &TunOptions) -> io::Result<Self> {
        let open = |offload: bool, multi_queue: bool| {
            let mut builder = DeviceBuilder::new()
                .name(&opts.name)
                .offload(offload)
                .multi_queue(multi_queue);
            builder = if opts.persistent {
                builder.inherit_enable_state()
            } else {
                builder.mtu(opts.mtu)
            };
            builder.build_async()
        };
        let want_queues = opts.lanes > 1;
        let mut attempts = vec![(opts.offload, want_queues)];
        if want_queues {
            attempts.push((opts.offload, false));
        }
        if opts.offload {
            attempts.push((false, false));
        }
        let mut last = None;
        let mut opened = None;
        for (offload, multi_queue) in attempts {
            match open(offload, multi_queue) {
                Ok(dev) => {
                    opened = Some((dev, offload, multi_queue));
                    break;
                }
                Err(error) => {
                    tracing::info!(%error, offload, multi_queue, "cannot open the tun device this way; trying a plainer one");
                    last = Some(error);
                }
            }
        }
        let Some((dev, offload, multi_queue)) = opened else {
            return Err(last.unwrap_or_else(|| io::Error::other("no way to open the tun device")));
        };
        let offload = offload && dev.tcp_gso();
        // UDP segmentation offload (`TUN_F_USO4/6`, Linux 6.2+): a UDP GSO sender's
        // super-packets reach the device whole, and are split here like TCP's.
        let udp_offload = offload && dev.udp_gso();
        let name = dev.name().unwrap_or_else(|_| opts.name.clone());
        let mut queues = Vec::with_capacity(opts.lanes.max(1));
        if multi_queue {
            for _ in 1..opts.lanes {
                match dev.try_clone() {
                    Ok(queue) => queues.push(Queue::new(queue)),
                    Err(error) => {
                        tracing::info!(%error, interface = %name, "cannot open another tun queue; using fewer lanes");
                        break;
                    }
                }
            }
        }
        queues.insert(0, Queue::new(dev));
        Ok(Self {
            queues,
            name,
            offload,
            udp_offload,
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

    /// True if the kernel also hands over UDP super-packets (`TUN_F_USO4/6`, Linux 6.2+).
    pub fn udp_offload(&self) -> bool {
        self.udp_offload
    }

    fn queue(&self, lane: usize) -> &Queue {
        &self.queues[lane % self.queues.len()]
    }
}

impl TunIo for Tun {
    fn lanes(&self) -> usize {
        self.queues.len()
    }

    async fn recv(&self, lane: usize, batch: &mut PacketBatch) -> io::Result<()> {
        let queue = self.queue(lane);
        let mut original = queue.read_buf.lock().await;
        let (bufs, sizes, count, headroom) = batch.raw_parts();
        let mut n = loop {
            match queue
                .dev
                .recv_multiple(&mut original, bufs, sizes, headroom)
                .await
            {
                Ok(n) => break n,
                // A malformed offload packet from the kernel: skip it.
                Err(e) if e.kind() == io::ErrorKind::Other => {
                    tracing::debug!(error = %e, "tun read skipped");
                }
                Err(e) => return Err(e),
            }
        };
        // Then whatever else is waiting, without waiting: small packets come one per read,
        // and a batch of them costs one send and one peer lock instead of one each.
        // At most one attempt per slot, so that skipped reads cannot keep the worker here.
        for _ in 0..bufs.len() {
            if bufs.len() - n < DRAIN_ROOM {
                break;
            }
            match queue.dev.try_recv_multiple(
                &mut original,
                &mut bufs[n..],
                &mut sizes[n..],
                headroom,
            ) {
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Other => {
                    tracing::debug!(error = %e, "tun read skipped");
                }
                // Nothing more now (WouldBlock), or an error the next read reports.
                Err(_) => break,
            }
        }
        *count = n;
        Ok(())
    }

    async fn send(&self, lane: usize, batch: &mut PacketBatch) -> io::Result<()> {
        let queue = self.queue(lane);
        let mut gro = queue.gro.lock().await;
        let (bufs, headroom) = batch.packet_buffers();
        let result = queue.dev.send_multiple(&mut gro, bufs, headroom).await;
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
