//! Traffic checks through a tunnel: ping, a content-verified TCP transfer, and iperf3.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::netns::Netns;
use crate::run::wait_timeout;
use crate::wait_until;

/// How long [`assert_ping`] keeps trying before failing (handshakes, DAD, roaming).
pub const PING_PATIENCE: Duration = Duration::from_secs(10);

/// Sends `count` pings from `ns` to `to` (0.2 s apart, 1 s reply timeout); true if any reply
/// came back.
pub fn ping(ns: &Netns, to: IpAddr, count: u32) -> bool {
    let count = count.to_string();
    let to = to.to_string();
    ns.run(&[
        "ping", "-n", "-q", "-c", &count, "-W", "1", "-i", "0.2", &to,
    ])
    .success()
}

/// Sends `count` pings from `ns` to `to`, `interval` apart (below 0.2 s needs root), each
/// waiting at most 1 s for its reply; returns how many replies came back.
pub fn ping_replies(ns: &Netns, to: IpAddr, count: u32, interval: Duration) -> u32 {
    let count = count.to_string();
    let interval = format!("{:.3}", interval.as_secs_f64());
    let to = to.to_string();
    let out = ns.run(&[
        "ping", "-n", "-q", "-c", &count, "-W", "1", "-i", &interval, &to,
    ]);
    received_count(&out.stdout).unwrap_or_else(|| {
        panic!(
            "cannot read `{}`:\n{}{}",
            out.command, out.stdout, out.stderr
        )
    })
}

/// The number of replies in ping's summary line (`20 packets transmitted, 19 received, …`).
fn received_count(summary: &str) -> Option<u32> {
    let line = summary
        .lines()
        .find(|l| l.contains(" packets transmitted, "))?;
    let (_, rest) = line.split_once(" packets transmitted, ")?;
    rest.split_once(" received")?.0.trim().parse().ok()
}

/// Asserts that pings from `ns` reach `to` within [`PING_PATIENCE`].
pub fn assert_ping(ns: &Netns, to: IpAddr) {
    assert!(
        wait_until(PING_PATIENCE, || ping(ns, to, 3)),
        "no ping reply from {to} in namespace {} within {PING_PATIENCE:?}",
        ns.name()
    );
}

/// Asserts that none of 3 pings from `ns` to `to` is answered.
pub fn assert_no_ping(ns: &Netns, to: IpAddr) {
    assert!(
        !ping(ns, to, 3),
        "ping from namespace {} to {to} was answered but should not be",
        ns.name()
    );
}

/// Time limit for each step of [`tcp_transfer`] (connect, accept, each read and write).
const TCP_TIMEOUT: Duration = Duration::from_secs(20);

/// Opens a TCP connection from `client` to a listener on `server_addr` in `server`, sends
/// `bytes` pseudo-random bytes each way (client first, then server), and checks that each side
/// received exactly what the other sent.
pub fn tcp_transfer(
    server: &Netns,
    server_addr: IpAddr,
    client: &Netns,
    bytes: usize,
) -> Result<(), String> {
    let listener = server
        .enter(|| TcpListener::bind((server_addr, 0)))
        .map_err(|e| format!("cannot listen on {server_addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    std::thread::scope(|s| {
        let serving = s.spawn(|| serve(listener, bytes));
        let client_result = client
            .enter(|| TcpStream::connect_timeout(&addr, TCP_TIMEOUT))
            .map_err(|e| format!("cannot connect to {addr}: {e}"))
            .and_then(|stream| exchange_as_client(stream, bytes));
        let server_result = serving
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        client_result.and(server_result)
    })
}

fn serve(listener: TcpListener, bytes: usize) -> Result<(), String> {
    let stream = accept_within(&listener, TCP_TIMEOUT)?;
    set_timeouts(&stream)?;
    let mut stream = stream;
    let received = read_all(&mut stream, bytes)?;
    verify(&received, 1, bytes, "server")?;
    stream
        .write_all(&pattern(2, bytes))
        .map_err(|e| format!("server: sending failed: {e}"))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("server: shutdown failed: {e}"))
}

fn exchange_as_client(mut stream: TcpStream, bytes: usize) -> Result<(), String> {
    set_timeouts(&stream)?;
    stream
        .write_all(&pattern(1, bytes))
        .map_err(|e| format!("client: sending failed: {e}"))?;
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| format!("client: shutdown failed: {e}"))?;
    let received = read_all(&mut stream, bytes)?;
    verify(&received, 2, bytes, "client")
}

fn accept_within(listener: &TcpListener, timeout: Duration) -> Result<TcpStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("server: no connection accepted: {e}")),
        }
    }
}

fn set_timeouts(stream: &TcpStream) -> Result<(), String> {
    stream
        .set_read_timeout(Some(TCP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(TCP_TIMEOUT)))
        .map_err(|e| e.to_string())
}

/// Reads until EOF, refusing more than `expected` bytes (plus one, to detect the excess).
fn read_all(stream: &mut TcpStream, expected: usize) -> Result<Vec<u8>, String> {
    let mut received = Vec::with_capacity(expected);
    stream
        .take(expected as u64 + 1)
        .read_to_end(&mut received)
        .map_err(|e| format!("receiving failed after {} bytes: {e}", received.len()))?;
    Ok(received)
}

fn verify(received: &[u8], seed: u64, expected: usize, who: &str) -> Result<(), String> {
    if received.len() != expected {
        return Err(format!(
            "{who}: received {} bytes, expected {expected}",
            received.len()
        ));
    }
    match received
        .iter()
        .zip(pattern(seed, expected))
        .position(|(a, b)| *a != b)
    {
        Some(at) => Err(format!("{who}: received data differs at byte {at}")),
        None => Ok(()),
    }
}

/// `len` deterministic pseudo-random bytes (xorshift64) for `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    Pattern::new(seed).fill(&mut bytes);
    bytes
}

/// The byte stream [`pattern`] starts, produced a piece at a time.
struct Pattern(u64);

impl Pattern {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Fills `out` with the stream's next bytes.
    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0.to_le_bytes()[0];
        }
    }
}

/// Chunk size of [`tcp_duplex`]'s writes and checks.
const DUPLEX_CHUNK: usize = 64 * 1024;

/// Opens a TCP connection from `client` to a listener on `server_addr` in `server` and
/// streams `bytes` pseudo-random bytes each way at the same time, checking every byte as it
/// arrives (in constant memory, so transfers can be large). Returns how long it took.
pub fn tcp_duplex(
    server: &Netns,
    server_addr: IpAddr,
    client: &Netns,
    bytes: u64,
) -> Result<Duration, String> {
    let listener = server
        .enter(|| TcpListener::bind((server_addr, 0)))
        .map_err(|e| format!("cannot listen on {server_addr}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let started = Instant::now();
    std::thread::scope(|s| {
        let serving = s.spawn(|| {
            let stream = accept_within(&listener, TCP_TIMEOUT)?;
            duplex(stream, 2, 1, bytes, &format!("server {addr}"))
        });
        let client_result = client
            .enter(|| TcpStream::connect_timeout(&addr, TCP_TIMEOUT))
            .map_err(|e| format!("cannot connect to {addr}: {e}"))
            .and_then(|stream| duplex(stream, 1, 2, bytes, &format!("client of {addr}")));
        let server_result = serving
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        client_result.and(server_result)
    })?;
    Ok(started.elapsed())
}

/// Sends `bytes` of stream `send_seed` on `stream` while checking that the other side sends
/// exactly `bytes` of stream `recv_seed`.
fn duplex(
    stream: TcpStream,
    send_seed: u64,
    recv_seed: u64,
    bytes: u64,
    who: &str,
) -> Result<(), String> {
    set_timeouts(&stream)?;
    let mut writer = stream.try_clone().map_err(|e| format!("{who}: {e}"))?;
    std::thread::scope(|s| {
        let sending = s.spawn(move || -> Result<(), String> {
            let mut pattern = Pattern::new(send_seed);
            let mut chunk = vec![0; DUPLEX_CHUNK];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(DUPLEX_CHUNK as u64) as usize;
                pattern.fill(&mut chunk[..n]);
                writer
                    .write_all(&chunk[..n])
                    .map_err(|e| format!("{who}: sending failed with {left} bytes left: {e}"))?;
                left -= n as u64;
            }
            writer
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("{who}: shutdown failed: {e}"))
        });
        let received = check_stream(stream, recv_seed, bytes, who);
        let sent = sending
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        received.and(sent)
    })
}

/// Reads `stream` to its end, comparing it with stream `seed`; it must be `bytes` long.
fn check_stream(mut stream: TcpStream, seed: u64, bytes: u64, who: &str) -> Result<(), String> {
    let mut pattern = Pattern::new(seed);
    let mut got = vec![0; DUPLEX_CHUNK];
    let mut want = vec![0; DUPLEX_CHUNK];
    let mut at = 0u64;
    loop {
        let n = match stream.read(&mut got) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("{who}: receiving failed after {at} bytes: {e}")),
        };
        if at + n as u64 > bytes {
            return Err(format!("{who}: received more than the {bytes} bytes sent"));
        }
        pattern.fill(&mut want[..n]);
        if let Some(k) = got[..n].iter().zip(&want[..n]).position(|(a, b)| a != b) {
            return Err(format!(
                "{who}: received data differs at byte {}",
                at + k as u64
            ));
        }
        at += n as u64;
    }
    if at != bytes {
        return Err(format!("{who}: received {at} bytes, expected {bytes}"));
    }
    Ok(())
}

/// What iperf3's client reported.
#[derive(Debug, Clone, Copy)]
pub struct IperfResult {
    /// Bytes the sender sent.
    pub sent_bytes: u64,
    /// Bytes the receiver received.
    pub received_bytes: u64,
}

/// Runs a one-shot `iperf3` server on `server_addr` in `server` and a client in `client` for
/// `seconds`; with `reverse`, the server sends. Fails the test if iperf3 reports an error.
pub fn iperf3(
    server: &Netns,
    server_addr: IpAddr,
    client: &Netns,
    seconds: u32,
    reverse: bool,
) -> IperfResult {
    let addr = server_addr.to_string();
    let mut cmd = server.command("iperf3", &["-s", "-1", "-B", &addr, "-p", "5201"]);
    cmd.stdout(std::process::Stdio::null());
    let mut child = server.spawn(&mut cmd);
    let listening = wait_until(Duration::from_secs(5), || {
        let out = server.run(&["ss", "-H", "-l", "-t", "-n", "sport = :5201"]);
        !out.stdout.trim().is_empty()
    });
    let result = listening.then(|| run_iperf3_client(client, &addr, seconds, reverse));
    if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    server.forget(child.id());
    match result {
        Some(r) => r,
        None => panic!("iperf3 server in {} did not start listening", server.name()),
    }
}

fn run_iperf3_client(client: &Netns, addr: &str, seconds: u32, reverse: bool) -> IperfResult {
    let secs = seconds.to_string();
    let mut args = vec!["iperf3", "-c", addr, "-p", "5201", "-t", &secs, "-J"];
    args.extend(["--connect-timeout", "5000"]);
    if reverse {
        args.push("-R");
    }
    let out = client.run_timeout(&args, Duration::from_secs(u64::from(seconds) + 30));
    parse_iperf3(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 to {addr} failed: {e}\nstdout:\n{}\nstderr:\n{}",
            out.stdout, out.stderr
        )
    })
}

/// Extracts the totals from iperf3's JSON report; an `error` member is an error.
pub fn parse_iperf3(json: &str) -> Result<IperfResult, String> {
    let report: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(error) = report.get("error") {
        return Err(format!("iperf3 reported: {error}"));
    }
    let total = |which: &str| {
        report
            .pointer(&format!("/end/{which}/bytes"))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| format!("no end.{which}.bytes in the report"))
    };
    Ok(IperfResult {
        sent_bytes: total("sum_sent")?,
        received_bytes: total("sum_received")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_seed_dependent() {
        assert_eq!(pattern(1, 64), pattern(1, 64));
        assert_ne!(pattern(1, 64), pattern(2, 64));
        assert!(verify(&pattern(1, 100), 1, 100, "t").is_ok());
        let mut bad = pattern(1, 100);
        bad[42] ^= 1;
        assert_eq!(
            verify(&bad, 1, 100, "t"),
            Err("t: received data differs at byte 42".into())
        );
        assert!(verify(&pattern(1, 99), 1, 100, "t").is_err());
    }

    #[test]
    fn ping_summary_gives_the_reply_count() {
        let out = "PING 100.64.0.1 (100.64.0.1) 56(84) bytes of data.\n\n\
                   --- 100.64.0.1 ping statistics ---\n\
                   20 packets transmitted, 17 received, 15% packet loss, time 1907ms\n";
        assert_eq!(received_count(out), Some(17));
        let none = "3 packets transmitted, 0 received, +3 errors, 100% packet loss\n";
        assert_eq!(received_count(none), Some(0));
        assert_eq!(
            received_count("ping: connect: Network is unreachable\n"),
            None
        );
    }

    #[test]
    fn iperf3_report_totals_and_errors() {
        let ok = r#"{"end":{"sum_sent":{"bytes":1000},"sum_received":{"bytes":990}}}"#;
        let r = parse_iperf3(ok).unwrap();
        assert_eq!((r.sent_bytes, r.received_bytes), (1000, 990));
        let err = r#"{"start":{},"error":"unable to connect to server"}"#;
        assert!(parse_iperf3(err).unwrap_err().contains("unable to connect"));
        assert!(parse_iperf3("").is_err());
    }

    #[test]
    fn tcp_transfer_works_over_loopback_in_a_namespace() {
        if !crate::require_root("tcp_transfer_works_over_loopback_in_a_namespace") {
            return;
        }
        let ns = Netns::new("tcp_loopback");
        tcp_transfer(&ns, "127.0.0.1".parse().unwrap(), &ns, 1 << 20).unwrap();
    }
}
