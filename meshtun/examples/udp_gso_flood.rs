//! A UDP flood sent the way QUIC stacks send: Linux segmentation offload (`UDP_SEGMENT`),
//! one `sendmsg` carrying up to 64 KiB of equal-sized datagrams. `bench/throughput` runs it
//! through each tunnel to see whether a GSO sender rides the tunnel at TCP-like speed.
//!
//! `udp_gso_flood recv --bind IP:PORT [--max-seconds N] [--verify SIZE]` counts datagrams and
//! bytes (GRO and `recvmmsg`, through quinn-udp) until the flood has stopped for a second,
//! then prints `datagrams=N bytes=B seconds=S corrupt=C` (S from the first datagram to the
//! last). With `--verify`, every datagram must be SIZE bytes and hold what the sender wrote:
//! its number, a tag derived from it, and a fixed pattern; C counts those that do not.
//!
//! `udp_gso_flood send --to IP:PORT --seconds N [--size BYTES] [--segments N]` floods for N
//! seconds and prints what it sent in the same form. It fails, rather than measuring plain
//! sends, when the kernel refuses GSO (for instance a segment larger than the path MTU).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};

/// Room for one GRO-coalesced read (the largest UDP payload).
const GRO_BUF: usize = 64 * 1024;
/// Socket buffers asked for on both ends (capped by net.core.[rw]mem_max).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// The receiver stops once no datagram has come for this long after the first one.
const IDLE_END: Duration = Duration::from_secs(1);

#[derive(Parser)]
#[command(about = "UDP flood with GSO (UDP_SEGMENT) and a GRO receiver that counts it")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Flood ADDR with GSO sends for a fixed time.
    Send {
        /// Receiver address, IP:PORT.
        #[arg(long)]
        to: SocketAddr,
        /// How long to send, in seconds (1 to 600).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
        seconds: u64,
        /// UDP payload of each datagram, in bytes (it must fit the path MTU).
        #[arg(long, default_value_t = 1392, value_parser = clap::value_parser!(u16).range(1..=9000))]
        size: u16,
        /// Datagrams per sendmsg (size × segments stays under 64 KiB).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=128))]
        segments: u16,
    },
    /// Count what arrives on ADDR until the flood stops.
    Recv {
        /// Address to bind, IP:PORT.
        #[arg(long)]
        bind: SocketAddr,
        /// Give up after this many seconds even if datagrams keep coming (1 to 900).
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=900))]
        max_seconds: u64,
        /// Check every datagram's size (this many bytes) and contents.
        #[arg(long, value_parser = clap::value_parser!(u16).range(HEADER as i64..=9000))]
        verify: Option<u16>,
    },
}

/// Each datagram starts with its number and a tag derived from it (8 bytes each).
const HEADER: usize = 16;

/// The tag that follows datagram number `n`.
fn tag(n: u64) -> u64 {
    n.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x6d65_7368_7475_6e21
}

/// The byte at offset `k` (past the header) of every datagram.
fn pattern(k: usize) -> u8 {
    (k as u8).wrapping_mul(31) ^ 0x5a
}

/// A datagram of `size` bytes: a header for number 0, then the pattern.
fn template(size: usize) -> Vec<u8> {
    let mut d: Vec<u8> = (0..size).map(pattern).collect();
    stamp(&mut d, 0);
    d
}

/// Writes number `n` and its tag into the header of datagram `d`.
fn stamp(d: &mut [u8], n: u64) {
    d[..8].copy_from_slice(&n.to_le_bytes());
    d[8..HEADER].copy_from_slice(&tag(n).to_le_bytes());
}

/// Whether `d` is a whole datagram of `size` bytes as the sender wrote it.
fn intact(d: &[u8], size: usize) -> bool {
    if d.len() != size {
        return false;
    }
    let word = |at: usize| u64::from_le_bytes(d[at..at + 8].try_into().unwrap_or_default());
    word(8) == tag(word(0))
        && d.iter()
            .enumerate()
            .skip(HEADER)
            .all(|(k, b)| *b == pattern(k))
}

/// Datagrams and bytes seen, and over how long.
#[derive(Default)]
struct Tally {
    datagrams: u64,
    bytes: u64,
    seconds: f64,
    corrupt: u64,
}

impl Tally {
    fn print(&self) {
        println!(
            "datagrams={} bytes={} seconds={:.3} corrupt={}",
            self.datagrams, self.bytes, self.seconds, self.corrupt
        );
    }
}

/// Segments per sendmsg: what was asked, what the kernel takes, and what fits in 64 KiB.
fn segments_per_send(state: &UdpSocketState, size: usize, asked: usize) -> usize {
    let fit = (u16::MAX as usize - 48) / size;
    asked.min(state.max_gso_segments()).min(fit).max(1)
}

fn send(to: SocketAddr, seconds: u64, size: usize, asked: usize) -> Result<Tally> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    let state = UdpSocketState::new((&socket).into()).context("setting up the UDP socket")?;
    // A smaller buffer than asked is fine: the sender then blocks sooner.
    let _ = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER);
    if state.max_gso_segments() < 2 {
        bail!("this kernel or socket offers no UDP GSO (UDP_SEGMENT)");
    }
    if size < HEADER {
        bail!("--size {size} is below the {HEADER}-byte header every datagram carries");
    }
    let segments = segments_per_send(&state, size, asked);
    let mut contents = template(size).repeat(segments);
    let limit = Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tally = Tally::default();
    while start.elapsed() < limit {
        for (i, d) in contents.chunks_mut(size).enumerate() {
            stamp(d, tally.datagrams + i as u64);
        }
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents: &contents,
            segment_size: Some(size),
            src_ip: None,
        };
        match state.try_send((&socket).into(), &transmit) {
            Ok(()) => {
                tally.datagrams += segments as u64;
                tally.bytes += contents.len() as u64;
            }
            // The qdisc or device queue is full: try again (bounded by the deadline).
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::thread::yield_now(),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("sendmsg of {segments} × {size}-byte segments to {to}")
                })
            }
        }
    }
    tally.seconds = start.elapsed().as_secs_f64();
    Ok(tally)
}

/// Datagrams in one (possibly GRO-coalesced) read: `len` cut into `stride`-byte pieces.
fn datagrams_in(meta: &RecvMeta) -> u64 {
    if meta.stride == 0 {
        return 1;
    }
    meta.len.div_ceil(meta.stride).max(1) as u64
}

/// Waits up to 100 ms for the socket to be readable; returns whether it is.
fn readable(socket: &UdpSocket) -> Result<bool> {
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(100u8)) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e).context("poll on the receiving socket"),
    }
}

/// Counts the datagrams of one read that are not intact (`stride`-byte pieces of it).
fn corrupt_in(data: &[u8], meta: &RecvMeta, size: usize) -> u64 {
    let stride = if meta.stride == 0 {
        meta.len
    } else {
        meta.stride
    };
    data[..meta.len]
        .chunks(stride.max(1))
        .filter(|d| !intact(d, size))
        .count() as u64
}

fn recv(bind: SocketAddr, max_seconds: u64, verify: Option<usize>) -> Result<Tally> {
    let socket = UdpSocket::bind(bind).with_context(|| format!("binding {bind}"))?;
    socket
        .set_nonblocking(true)
        .context("making the socket non-blocking")?;
    let state = UdpSocketState::new((&socket).into()).context("setting up the UDP socket")?;
    let _ = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER);
    eprintln!(
        "udp_gso_flood: listening on {bind}, GRO up to {} segments",
        state.gro_segments()
    );
    let mut storage = vec![0u8; GRO_BUF * BATCH_SIZE];
    let mut meta = vec![RecvMeta::default(); BATCH_SIZE];
    let deadline = Instant::now() + Duration::from_secs(max_seconds);
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    let mut tally = Tally::default();
    while Instant::now() < deadline {
        if first.is_some() && last.elapsed() >= IDLE_END {
            break;
        }
        let mut bufs: Vec<IoSliceMut<'_>> =
            storage.chunks_mut(GRO_BUF).map(IoSliceMut::new).collect();
        let n = match state.recv((&socket).into(), &mut bufs, &mut meta) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                readable(&socket)?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("recvmmsg on the receiving socket"),
        };
        last = Instant::now();
        first.get_or_insert(last);
        for (m, data) in meta[..n].iter().zip(storage.chunks(GRO_BUF)) {
            tally.datagrams += datagrams_in(m);
            tally.bytes += m.len as u64;
            if let Some(size) = verify {
                tally.corrupt += corrupt_in(data, m, size);
            }
        }
    }
    tally.seconds = first.map_or(0.0, |f| (last - f).as_secs_f64());
    Ok(tally)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode {
        Mode::Send {
            to,
            seconds,
            size,
            segments,
        } => send(to, seconds, size.into(), segments.into()),
        Mode::Recv {
            bind,
            max_seconds,
            verify,
        } => recv(bind, max_seconds, verify.map(usize::from)),
    };
    match result {
        Ok(tally) => {
            tally.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("udp_gso_flood: {e:#}");
            ExitCode::FAILURE
        }
    }
}
