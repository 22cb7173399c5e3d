//! The device's two edges, as traits: the tun side (IP packets) and the UDP side (WireGuard
//! datagrams). Both move packets in batches through reusable buffers, so that the per-packet
//! path neither allocates nor makes a system call per packet when the platform can batch.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// Bytes reserved in front of every tun packet buffer: room for a virtio-net header when the
/// tun device does segmentation offload.
pub const TUN_HEADROOM: usize = 16;

/// Largest IP packet a tun batch slot holds.
pub const MAX_PACKET: usize = 65_535;

/// Most bytes one segmented UDP send may carry: the whole must fit one IPv4 datagram
/// (65,535 bytes less the IP and UDP headers), or the kernel refuses it.
pub const MAX_SEGMENTED_BYTES: usize = 65_507;

/// A batch of IP packets for the tun side, in reusable buffers.
///
/// Packet `i` lives at `bufs[i][headroom .. headroom + sizes[i]]`.
pub struct PacketBatch {
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    count: usize,
    headroom: usize,
    slot_len: usize,
}

impl PacketBatch {
    /// A batch of `capacity` slots, each able to hold a packet of `slot_len` bytes after
    /// `headroom` reserved bytes.
    pub fn new(capacity: usize, slot_len: usize, headroom: usize) -> Self {
        Self {
            bufs: (0..capacity)
                .map(|_| vec![0; headroom + slot_len])
                .collect(),
            sizes: vec![0; capacity],
            count: 0,
            headroom,
            slot_len,
        }
    }

    /// A batch whose buffers can also grow, without reallocating, to a whole coalesced
    /// packet of [`MAX_PACKET`] bytes: the tun transport merges consecutive TCP segments of a
    /// flow into the first one's buffer on write (receive offload), and merges nothing into
    /// a buffer without that room. Pages past `slot_len` are touched only when a coalesced
    /// packet fills them.
    pub fn coalescing(capacity: usize, slot_len: usize, headroom: usize) -> Self {
        let room = headroom + MAX_PACKET.max(slot_len);
        Self {
            bufs: (0..capacity)
                .map(|_| {
                    let mut buf = Vec::with_capacity(room);
                    buf.resize(headroom + slot_len, 0);
                    buf
                })
                .collect(),
            sizes: vec![0; capacity],
            count: 0,
            headroom,
            slot_len,
        }
    }

    /// Number of packets in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// True if the batch holds no packet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// True if every slot is used.
    pub fn is_full(&self) -> bool {
        self.count == self.bufs.len()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Packet `i`.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][self.headroom..self.headroom + self.sizes[i]]
    }

    /// The writable area of the next free slot, or `None` if the batch is full.
    pub fn next_slot(&mut self) -> Option<&mut [u8]> {
        let headroom = self.headroom;
        self.bufs.get_mut(self.count).map(|b| &mut b[headroom..])
    }

    /// Marks the next slot as holding a packet of `len` bytes.
    pub fn commit(&mut self, len: usize) {
        debug_assert!(self.count < self.bufs.len());
        self.sizes[self.count] = len;
        self.count += 1;
    }

    /// Copies `packet` into the next slot. Returns false if the batch is full or the packet
    /// does not fit.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        match self.next_slot() {
            Some(slot) if slot.len() >= packet.len() => {
                slot[..packet.len()].copy_from_slice(packet);
                self.commit(packet.len());
                true
            }
            _ => false,
        }
    }

    /// The raw buffers, sizes, packet count and headroom, for transports that read into the
    /// batch. Every buffer is `headroom + slot_len` bytes long.
    pub fn raw_parts(&mut self) -> (&mut [Vec<u8>], &mut [usize], &mut usize, usize) {
        (
            &mut self.bufs,
            &mut self.sizes,
            &mut self.count,
            self.headroom,
        )
    }

    /// The buffers of the packets in the batch, each cut to end where its packet ends, for
    /// transports that write whole buffers (and may grow them to coalesce packets). Call
    /// [`restore`](Self::restore) afterwards.
    pub fn packet_buffers(&mut self) -> (&mut [Vec<u8>], usize) {
        for (buf, size) in self.bufs.iter_mut().zip(&self.sizes).take(self.count) {
            buf.truncate(self.headroom + size);
        }
        (&mut self.bufs[..self.count], self.headroom)
    }

    /// Gives every buffer its full slot length back after [`packet_buffers`](Self::packet_buffers).
    pub fn restore(&mut self) {
        let len = self.headroom + self.slot_len;
        for buf in &mut self.bufs[..self.count] {
            buf.resize(len, 0);
        }
    }
}

/// The tun side of the device: reads IP packets sent by the host, writes decrypted ones.
///
/// A tun device may have several queues (lanes): the host spreads its flows over them, each
/// flow staying on one queue, and the device runs one send worker per lane. Lanes are
/// numbered `0..lanes()`; any lane may be written.
pub trait TunIo: Send + Sync + 'static {
    /// Number of lanes (at least 1).
    fn lanes(&self) -> usize {
        1
    }

    /// Waits for at least one packet on `lane`, then fills `batch` (which the caller has
    /// cleared).
    fn recv(
        &self,
        lane: usize,
        batch: &mut PacketBatch,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Writes every packet in `batch` to the host through `lane`.
    fn send(
        &self,
        lane: usize,
        batch: &mut PacketBatch,
    ) -> impl Future<Output = io::Result<()>> + Send;
}

/// A batch of outgoing datagrams, laid out back to back in one buffer so that consecutive
/// datagrams to the same destination can go out in one segmentation-offload send.
pub struct DatagramBatch {
    arena: Vec<u8>,
    used: usize,
    entries: Vec<(SocketAddr, usize, usize)>,
    max_entries: usize,
    max_datagram: usize,
}

impl DatagramBatch {
    /// A batch for up to `max_entries` datagrams of at most `max_datagram` bytes each.
    pub fn new(max_entries: usize, max_datagram: usize) -> Self {
        Self {
            arena: vec![0; max_entries * max_datagram],
            used: 0,
            entries: Vec::with_capacity(max_entries),
            max_entries,
            max_datagram,
        }
    }

    /// Free space for a datagram of the largest size this batch was made for.
    pub fn space_max(&mut self) -> Option<&mut [u8]> {
        self.space(self.max_datagram)
    }

    /// Number of further largest-size datagrams the batch can surely take.
    pub fn remaining(&self) -> usize {
        let by_bytes = (self.arena.len() - self.used) / self.max_datagram.max(1);
        by_bytes.min(self.max_entries - self.entries.len())
    }

    /// Number of datagrams in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the batch holds no datagram.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the batch.
    pub fn clear(&mut self) {
        self.used = 0;
        self.entries.clear();
    }

    /// Free space for the next datagram, if at least `need` bytes and one entry are left.
    pub fn space(&mut self, need: usize) -> Option<&mut [u8]> {
        if self.entries.len() >= self.max_entries || self.arena.len() - self.used < need {
            return None;
        }
        Some(&mut self.arena[self.used..])
    }

    /// Records the `len` bytes just written at the start of [`space`](Self::space) as a
    /// datagram to `dest`.
    pub fn commit(&mut self, dest: SocketAddr, len: usize) {
        debug_assert!(self.used + len <= self.arena.len());
        self.entries.push((dest, self.used, len));
        self.used += len;
    }

    /// Copies the last datagram committed, to `dest` as well. Returns false if there is none
    /// or no room.
    pub fn repeat_last(&mut self, dest: SocketAddr) -> bool {
        let Some(&(_, start, len)) = self.entries.last() else {
            return false;
        };
        if self.space(len).is_none() {
            return false;
        }
        self.arena.copy_within(start..start + len, self.used);
        self.commit(dest, len);
        true
    }

    /// Copies `datagram` into the batch. Returns false if it does not fit.
    pub fn push(&mut self, dest: SocketAddr, datagram: &[u8]) -> bool {
        match self.space(datagram.len()) {
            Some(space) => {
                space[..datagram.len()].copy_from_slice(datagram);
                self.commit(dest, datagram.len());
                true
            }
            None => false,
        }
    }

    /// The datagrams, in order, with their destinations.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.entries
            .iter()
            .map(|&(dest, start, len)| (dest, &self.arena[start..start + len]))
    }

    /// Runs of consecutive datagrams to the same destination where every datagram but the
    /// last has the same size: `(dest, contiguous bytes, segment size)`. A run can go out as
    /// one segmentation-offload send: it has at most `max_segments` datagrams and at most
    /// [`MAX_SEGMENTED_BYTES`] bytes.
    pub fn runs(&self, max_segments: usize) -> Runs<'_> {
        Runs {
            batch: self,
            next: 0,
            max_segments: max_segments.max(1),
        }
    }
}

/// Iterator over [`DatagramBatch::runs`].
pub struct Runs<'a> {
    batch: &'a DatagramBatch,
    next: usize,
    max_segments: usize,
}

impl<'a> Iterator for Runs<'a> {
    type Item = (SocketAddr, &'a [u8], usize);

    fn next(&mut self) -> Option<Self::Item> {
        let entries = &self.batch.entries;
        let &(dest, start, seg) = entries.get(self.next)?;
        let mut end = start + seg;
        let mut i = self.next + 1;
        while i < entries.len() && i - self.next < self.max_segments {
            let (d, s, l) = entries[i];
            // Same destination, contiguous, and no longer than the segment size; a shorter
            // datagram ends the run.
            if d != dest || s != end || l > seg || end + l - start > MAX_SEGMENTED_BYTES {
                break;
            }
            end += l;
            i += 1;
            if l < seg {
                break;
            }
        }
        self.next = i;
        Some((dest, &self.batch.arena[start..end], seg))
    }
}

/// Where a received datagram came from and how it is laid out.
#[derive(Debug, Clone, Copy)]
pub struct RecvMeta {
    /// Source address.
    pub src: SocketAddr,
    /// Bytes received into the buffer.
    pub len: usize,
    /// Size of each datagram when several arrived coalesced (receive offload); equal to
    /// `len` otherwise.
    pub stride: usize,
}

/// A batch of received datagrams.
pub struct RecvBatch {
    /// One buffer per receive slot.
    pub bufs: Vec<Vec<u8>>,
    /// What was received into each slot.
    pub meta: Vec<RecvMeta>,
    /// Slots filled by the last receive.
    pub count: usize,
}

impl RecvBatch {
    /// A batch of `slots` buffers of `buf_len` bytes each.
    pub fn new(slots: usize, buf_len: usize) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            bufs: (0..slots).map(|_| vec![0; buf_len]).collect(),
            meta: vec![
                RecvMeta {
                    src: unspecified,
                    len: 0,
                    stride: 0,
                };
                slots
            ],
            count: 0,
        }
    }

    /// Every datagram received, split at the stride, with its source.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.meta[..self.count]
            .iter()
            .zip(&self.bufs)
            .flat_map(|(meta, buf)| {
                let data = &buf[..meta.len.min(buf.len())];
                let stride = if meta.stride == 0 {
                    data.len().max(1)
                } else {
                    meta.stride
                };
                data.chunks(stride).map(move |d| (meta.src, d))
            })
    }
}

/// One UDP socket of the device.
pub trait UdpIo: Send + Sync + 'static {
    /// Waits for at least one datagram, then fills `batch`.
    fn recv(&self, batch: &mut RecvBatch) -> impl Future<Output = io::Result<()>> + Send;

    /// Sends `data` to `dest`: one datagram, or several of `segment_size` bytes each (the
    /// last may be shorter) when the socket supports segmentation offload.
    fn send(
        &self,
        dest: SocketAddr,
        data: &[u8],
        segment_size: usize,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// How many segments one [`send`](Self::send) may carry (1 without offload).
    fn max_segments(&self) -> usize;

    /// Sets the firewall mark on outgoing packets (0 clears it).
    fn set_fwmark(&self, mark: u32) -> io::Result<()>;
}

/// The sockets of one listening port: IPv4 and IPv6, either may be missing.
pub struct UdpSockets<S> {
    /// The IPv4 socket.
    pub v4: Option<Arc<S>>,
    /// The IPv6 socket.
    pub v6: Option<Arc<S>>,
    /// The port both are bound to.
    pub port: u16,
}

impl<S> Clone for UdpSockets<S> {
    fn clone(&self) -> Self {
        Self {
            v4: self.v4.clone(),
            v6: self.v6.clone(),
            port: self.port,
        }
    }
}

impl<S> UdpSockets<S> {
    /// The socket that can reach `dest`.
    pub fn for_dest(&self, dest: &SocketAddr) -> Option<&Arc<S>> {
        match dest {
            SocketAddr::V4(_) => self.v4.as_ref(),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
    }
}

/// Opens the device's UDP sockets; called again when the listen port changes.
pub trait UdpFactory: Send + Sync + 'static {
    /// The socket type.
    type Socket: UdpIo;

    /// Binds IPv4 and IPv6 sockets on `port` (0 picks a free port, the same for both) and
    /// marks them with `fwmark` if set.
    fn bind(&self, port: u16, fwmark: Option<u32>) -> io::Result<UdpSockets<Self::Socket>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn runs_group_equal_sized_datagrams_to_one_destination() {
        let mut b = DatagramBatch::new(16, 256);
        for _ in 0..3 {
            assert!(b.push(addr(1), &[1; 100]));
        }
        assert!(b.push(addr(1), &[1; 40]));
        assert!(b.push(addr(1), &[1; 100]));
        assert!(b.push(addr(2), &[2; 100]));
        let runs: Vec<_> = b
            .runs(64)
            .map(|(d, bytes, seg)| (d, bytes.len(), seg))
            .collect();
        assert_eq!(
            runs,
            vec![
                (addr(1), 340, 100),
                (addr(1), 100, 100),
                (addr(2), 100, 100)
            ]
        );
    }

    #[test]
    fn runs_respect_the_segment_limit() {
        let mut b = DatagramBatch::new(16, 256);
        for _ in 0..5 {
            b.push(addr(1), &[0; 10]);
        }
        let sizes: Vec<_> = b.runs(2).map(|(_, bytes, _)| bytes.len()).collect();
        assert_eq!(sizes, vec![20, 20, 10]);
    }

    #[test]
    fn runs_stay_within_one_udp_datagram_of_bytes() {
        let mut b = DatagramBatch::new(128, 1452);
        for _ in 0..100 {
            b.push(addr(1), &[0; 1452]);
        }
        let runs: Vec<_> = b.runs(64).map(|(_, bytes, _)| bytes.len()).collect();
        assert!(runs.iter().all(|len| *len <= MAX_SEGMENTED_BYTES));
        assert_eq!(runs.iter().sum::<usize>(), 100 * 1452);
        assert_eq!(runs[0], 45 * 1452);
    }

    #[test]
    fn a_longer_datagram_starts_a_new_run() {
        let mut b = DatagramBatch::new(16, 256);
        b.push(addr(1), &[0; 10]);
        b.push(addr(1), &[0; 20]);
        let sizes: Vec<_> = b
            .runs(8)
            .map(|(_, bytes, seg)| (bytes.len(), seg))
            .collect();
        assert_eq!(sizes, vec![(10, 10), (20, 20)]);
    }

    #[test]
    fn batches_refuse_what_does_not_fit() {
        let mut b = DatagramBatch::new(2, 50);
        assert!(b.push(addr(1), &[0; 60]));
        assert!(!b.push(addr(1), &[0; 41]));
        assert!(b.push(addr(1), &[0; 40]));
        assert!(!b.push(addr(1), &[0; 1]));
        let mut p = PacketBatch::new(1, 8, TUN_HEADROOM);
        assert!(!p.push(&[0; 9]));
        assert!(p.push(&[7; 8]));
        assert!(p.is_full());
        assert_eq!(p.packet(0), &[7; 8]);
    }

    #[test]
    fn coalesced_datagrams_are_split_at_the_stride() {
        let mut r = RecvBatch::new(2, 64);
        r.bufs[0][..10].copy_from_slice(&[1, 1, 1, 1, 2, 2, 2, 2, 3, 3]);
        r.meta[0] = RecvMeta {
            src: addr(9),
            len: 10,
            stride: 4,
        };
        r.count = 1;
        let got: Vec<_> = r.datagrams().map(|(_, d)| d.to_vec()).collect();
        assert_eq!(got, vec![vec![1; 4], vec![2; 4], vec![3; 2]]);
    }
}
