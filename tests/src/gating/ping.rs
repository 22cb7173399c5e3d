//! Pings at a fixed rate in the background, and what they saw.
//!
//! `ping -i 0.02` does not send 50 requests a second on every kernel (its timer rounds the
//! interval up: 41 a second on a 250 Hz kernel), so [`PingRun`] is its own small ICMP echo
//! client: a raw ICMP socket created inside the namespace, one thread sending echo requests
//! on an exact schedule (request `n` at `start + (n - 1) × interval`), one thread collecting
//! the replies. A request counts as answered, as with `ping -W 1`, if its reply arrives
//! within [`REPLY_WAIT`]. Requests and replies carry a per-run identifier, so runs sharing a
//! namespace do not see each other's replies.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};

use crate::netns::Netns;

/// How long a request may wait for its reply (as `ping -W 1`).
pub const REPLY_WAIT: Duration = Duration::from_secs(1);

/// Bytes of payload in each echo request (as ping's default).
const PAYLOAD: usize = 56;

/// ICMP echo request and reply types.
const ECHO_REQUEST: u8 = 8;
const ECHO_REPLY: u8 = 0;

static NEXT_ID: AtomicU16 = AtomicU16::new(0);

/// What the two threads of a run share.
#[derive(Default)]
struct Shared {
    /// Send time of each request, Unix milliseconds, by sequence number - 1.
    sent: Vec<u64>,
    /// (sequence number, arrival in Unix milliseconds) of each first reply.
    replies: Vec<(u32, u64)>,
    /// Requests the kernel refused to send, and the first refusal.
    send_errors: u32,
    first_send_error: Option<String>,
    /// The sender has sent its last request (or was stopped).
    sender_done: bool,
}

/// Echo requests from a namespace to one address at a fixed rate, in the background.
pub struct PingRun {
    label: String,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    sender: Option<JoinHandle<()>>,
    receiver: Option<JoinHandle<()>>,
    count: u32,
    interval: Duration,
}

/// What a finished run saw.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReport {
    /// Who pinged whom, for messages.
    pub label: String,
    /// Echo requests sent.
    pub transmitted: u32,
    /// Requests answered within `REPLY_WAIT`.
    pub received: u32,
    /// Each answered request: its sequence number and when the reply arrived (Unix ms).
    pub replies: Vec<(u32, u64)>,
    /// When each request was sent (Unix ms); request `n` is at index `n - 1`.
    pub sent_ms: Vec<u64>,
    /// Requests the kernel refused to send (no route, …): sent and lost.
    pub send_errors: u32,
    /// The first such refusal.
    pub first_send_error: Option<String>,
}

impl PingReport {
    /// Requests without a reply.
    pub fn lost(&self) -> u32 {
        self.transmitted.saturating_sub(self.received)
    }

    /// The sequence numbers (1..=transmitted) without a reply.
    pub fn lost_seqs(&self) -> Vec<u32> {
        (1..=self.transmitted)
            .filter(|s| !self.replies.iter().any(|(seq, _)| seq == s))
            .collect()
    }

    /// The sequence numbers without a reply, runs compressed: `"95-182"`.
    pub fn lost_ranges(&self) -> String {
        compress(&self.lost_seqs())
    }

    /// When the last reply arrived (Unix milliseconds).
    pub fn last_reply_ms(&self) -> Option<u64> {
        self.replies.iter().map(|&(_, at)| at).max()
    }

    /// When the first reply arrived (Unix milliseconds).
    pub fn first_reply_ms(&self) -> Option<u64> {
        self.replies.iter().map(|&(_, at)| at).min()
    }

    /// Replies that arrived after `at_ms`.
    pub fn replies_after(&self, at_ms: u64) -> Vec<(u32, u64)> {
        self.replies
            .iter()
            .copied()
            .filter(|&(_, t)| t > at_ms)
            .collect()
    }

    /// The achieved rate: requests per second between the first and the last request.
    pub fn rate(&self) -> f64 {
        match (self.sent_ms.first(), self.sent_ms.last()) {
            (Some(&first), Some(&last)) if last > first => {
                (self.sent_ms.len() - 1) as f64 * 1000.0 / (last - first) as f64
            }
            _ => 0.0,
        }
    }

    /// Fails the test unless every request was answered.
    pub fn assert_no_loss(&self) {
        assert!(
            self.transmitted > 0 && self.lost() == 0,
            "{}: {} of {} pings lost (sequence numbers {}; request n was sent (n - 1) × {:.0} \
             ms after the first; {} refused by the kernel, the first: {:?})",
            self.label,
            self.lost(),
            self.transmitted,
            self.lost_ranges(),
            1000.0 / self.rate().max(1.0),
            self.send_errors,
            self.first_send_error
        );
    }
}

impl PingRun {
    /// Starts `count` echo requests from `ns` to `to`, `interval` apart; `label` names the
    /// pair in messages.
    pub fn start(ns: &Netns, label: &str, to: IpAddr, count: u32, interval: Duration) -> Self {
        let IpAddr::V4(to) = to else {
            panic!("{label}: only IPv4 is pinged");
        };
        assert!(
            count <= u32::from(u16::MAX),
            "{label}: {count} requests do not fit ICMP's 16-bit sequence numbers"
        );
        let socket = ns.enter(open_icmp).unwrap_or_else(|e| {
            panic!(
                "{label}: cannot open a raw ICMP socket in {}: {e}",
                ns.name()
            )
        });
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() as u16);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let receiver = {
            let socket = socket.try_clone().expect("cannot duplicate a socket");
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || receive(&socket, to, id, &shared))
        };
        let sender = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::spawn(move || {
                send(&socket, to, id, count, interval, &shared, &stop);
            })
        };
        Self {
            label: label.to_owned(),
            shared,
            stop,
            sender: Some(sender),
            receiver: Some(receiver),
            count,
            interval,
        }
    }

    /// Starts requests at `rate` per second for `duration`.
    pub fn at_rate(ns: &Netns, label: &str, to: IpAddr, rate: u32, duration: Duration) -> Self {
        let count = (duration.as_secs_f64() * f64::from(rate)).ceil() as u32;
        Self::start(
            ns,
            label,
            to,
            count.max(1),
            Duration::from_secs(1) / rate.max(1),
        )
    }

    /// The replies so far (sequence number, arrival in Unix milliseconds).
    pub fn replies_so_far(&self) -> Vec<(u32, u64)> {
        self.lock().replies.clone()
    }

    /// Waits until every request is sent and the last reply awaited, and returns what the
    /// run saw; fails the test if it ran far longer than planned or broke.
    pub fn finish(mut self) -> PingReport {
        let planned = self.interval * self.count + REPLY_WAIT + Duration::from_secs(10);
        let deadline = Instant::now() + planned;
        while self.receiver.as_ref().is_some_and(|r| !r.is_finished()) {
            assert!(
                Instant::now() < deadline,
                "{}: pinging did not finish within {planned:?}",
                self.label
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.join();
        self.report()
    }

    /// Stops sending now, waits `REPLY_WAIT` for the replies still due, and returns what
    /// the run saw.
    pub fn stop(mut self) -> PingReport {
        self.stop.store(true, Ordering::Relaxed);
        self.join();
        self.report()
    }

    fn join(&mut self) {
        for handle in [self.sender.take(), self.receiver.take()]
            .into_iter()
            .flatten()
        {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        lock(&self.shared)
    }

    fn report(&self) -> PingReport {
        let shared = self.lock();
        let mut replies = shared.replies.clone();
        replies.sort_unstable();
        PingReport {
            label: self.label.clone(),
            transmitted: shared.sent.len() as u32,
            received: replies.len() as u32,
            replies,
            sent_ms: shared.sent.clone(),
            send_errors: shared.send_errors,
            first_send_error: shared.first_send_error.clone(),
        }
    }
}

impl Drop for PingRun {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The threads end within REPLY_WAIT plus one receive timeout; nothing to report.
        for handle in [self.sender.take(), self.receiver.take()]
            .into_iter()
            .flatten()
        {
            let _ = handle.join();
        }
    }
}

/// A raw ICMP socket (in the calling thread's namespace), used through `UdpSocket`'s
/// datagram calls: `send_to` ignores the port, `recv_from` returns the IP header first.
fn open_icmp() -> std::io::Result<UdpSocket> {
    let fd = socket(
        AddressFamily::Inet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::Icmp,
    )?;
    let socket = UdpSocket::from(fd);
    socket.set_read_timeout(Some(Duration::from_millis(50)))?;
    Ok(socket)
}

fn send(
    socket: &UdpSocket,
    to: Ipv4Addr,
    id: u16,
    count: u32,
    interval: Duration,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
) {
    let start = Instant::now();
    let dest = SocketAddr::from((to, 0));
    for seq in 1..=count {
        let due = start + interval * (seq - 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Recorded before sending: the reply may be read before `send_to` returns.
        let packet = echo_request(id, seq as u16);
        lock(shared).sent.push(super::now_ms());
        // A request the kernel refuses (no route once the tunnel is gone) is sent and lost.
        if let Err(e) = socket.send_to(&packet, dest) {
            let mut shared = lock(shared);
            shared.send_errors += 1;
            shared
                .first_send_error
                .get_or_insert_with(|| format!("request {seq}: {e}"));
        }
    }
    shared
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .sender_done = true;
}

fn receive(socket: &UdpSocket, from: Ipv4Addr, id: u16, shared: &Mutex<Shared>) {
    let mut buf = [0u8; 2048];
    let mut done_since: Option<Instant> = None;
    loop {
        let sender_done = lock(shared).sender_done;
        if sender_done && done_since.get_or_insert_with(Instant::now).elapsed() >= REPLY_WAIT {
            return;
        }
        let Ok((n, SocketAddr::V4(src))) = socket.recv_from(&mut buf) else {
            continue;
        };
        let Some(seq) = buf.get(..n).and_then(|p| echo_reply_seq(p, id)) else {
            continue;
        };
        if *src.ip() != from {
            continue;
        }
        let now = super::now_ms();
        let mut s = lock(shared);
        let seq = u32::from(seq);
        let on_time = seq
            .checked_sub(1)
            .and_then(|i| s.sent.get(i as usize))
            .is_some_and(|&at| now <= at + REPLY_WAIT.as_millis() as u64);
        if on_time && !s.replies.iter().any(|&(q, _)| q == seq) {
            s.replies.push((seq, now));
        }
    }
}

fn lock(shared: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An ICMP echo request with identifier `id`, sequence number `seq` and a 56-byte payload.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![ECHO_REQUEST, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend((0..PAYLOAD).map(|i| i as u8));
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The sequence number of an IPv4 packet (as a raw socket returns it: IP header first) if
/// it is an echo reply with identifier `id`.
fn echo_reply_seq(ip_packet: &[u8], id: u16) -> Option<u16> {
    let header_len = usize::from(ip_packet.first()? & 0x0f) * 4;
    let icmp = ip_packet.get(header_len..)?;
    let field = |at: usize| Some(u16::from_be_bytes([*icmp.get(at)?, *icmp.get(at + 1)?]));
    (*icmp.first()? == ECHO_REPLY && field(4)? == id).then_some(field(6)?)
}

/// The Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// `[1, 2, 3, 7, 9, 10]` → `"1-3, 7, 9-10"`, so long runs of losses stay readable.
fn compress(seqs: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(&start) = seqs.get(i) {
        let mut end = start;
        while seqs.get(i + 1) == Some(&(end + 1)) {
            end += 1;
            i += 1;
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> PingReport {
        PingReport {
            label: "a->b".into(),
            transmitted: 5,
            received: 3,
            replies: vec![(1, 1_000_123), (2, 1_000_143), (4, 1_000_190)],
            sent_ms: vec![1_000_100, 1_000_120, 1_000_140, 1_000_160, 1_000_180],
            send_errors: 0,
            first_send_error: None,
        }
    }

    #[test]
    fn reports_replies_with_their_times_and_the_losses() {
        let r = report();
        assert_eq!(r.lost(), 2);
        assert_eq!(r.lost_seqs(), [3, 5]);
        assert_eq!(r.first_reply_ms(), Some(1_000_123));
        assert_eq!(r.last_reply_ms(), Some(1_000_190));
        assert_eq!(r.replies_after(1_000_150), [(4, 1_000_190)]);
        assert_eq!(r.rate(), 50.0);
    }

    #[test]
    #[should_panic(expected = "a->b: 2 of 5 pings lost (sequence numbers 3, 5; request n")]
    fn a_lossy_report_fails_with_the_lost_sequence_numbers() {
        report().assert_no_loss();
    }

    #[test]
    fn runs_of_sequence_numbers_are_compressed() {
        assert_eq!(compress(&[1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
        assert_eq!(compress(&[]), "");
    }

    #[test]
    fn echo_requests_carry_a_valid_checksum() {
        let packet = echo_request(0x1234, 7);
        assert_eq!(packet.len(), 8 + PAYLOAD);
        assert_eq!(&packet[..2], &[ECHO_REQUEST, 0]);
        assert_eq!(&packet[4..8], &[0x12, 0x34, 0, 7]);
        assert_eq!(
            checksum(&packet),
            0,
            "a packet with its checksum sums to zero"
        );
        // RFC 1071's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
    }

    #[test]
    fn only_echo_replies_with_our_identifier_are_taken() {
        let mut reply = vec![0x45; 1];
        reply.extend([0u8; 19]);
        reply.extend([ECHO_REPLY, 0, 0, 0, 0x12, 0x34, 0, 9]);
        assert_eq!(echo_reply_seq(&reply, 0x1234), Some(9));
        assert_eq!(echo_reply_seq(&reply, 0x1235), None);
        reply[20] = ECHO_REQUEST;
        assert_eq!(echo_reply_seq(&reply, 0x1234), None);
        assert_eq!(echo_reply_seq(&reply[..24], 0x1234), None);
        assert_eq!(echo_reply_seq(&[], 0x1234), None);
    }

    #[test]
    fn fifty_requests_a_second_are_answered_on_loopback() {
        if !crate::require_root("fifty_requests_a_second_are_answered_on_loopback") {
            return;
        }
        let ns = Netns::new("ping_loopback");
        let run = PingRun::at_rate(
            &ns,
            "lo",
            Ipv4Addr::LOCALHOST.into(),
            50,
            Duration::from_secs(1),
        );
        let report = run.finish();
        assert_eq!(report.transmitted, 50, "{report:?}");
        report.assert_no_loss();
        assert!((report.rate() - 50.0).abs() < 2.0, "rate {}", report.rate());
        let stopped = PingRun::at_rate(
            &ns,
            "lo",
            Ipv4Addr::LOCALHOST.into(),
            50,
            Duration::from_secs(10),
        )
        .stop();
        assert!(stopped.transmitted < 10, "{stopped:?}");
    }
}
