//! `ping -D` at a fixed rate in the background, and what it saw.

use std::fs::File;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netns::Netns;
use crate::run::wait_timeout;

/// How long ping waits for each reply (`-W`), in seconds.
const REPLY_WAIT_SECS: u64 = 1;

/// A `ping -n -D -i INTERVAL -c COUNT -W 1 TO` running in a namespace.
pub struct PingRun<'ns> {
    ns: &'ns Netns,
    child: Option<Child>,
    out: PathBuf,
    label: String,
    count: u32,
    interval: Duration,
    _dir: tempfile::TempDir,
}

/// What a finished ping saw.
#[derive(Debug, Clone, PartialEq)]
pub struct PingReport {
    /// Who pinged whom, for messages.
    pub label: String,
    /// Echo requests sent (from the summary line).
    pub transmitted: u32,
    /// Replies received (from the summary line).
    pub received: u32,
    /// Each reply: its sequence number and when it arrived (Unix milliseconds).
    pub replies: Vec<(u32, u64)>,
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

    /// Fails the test unless every request was answered.
    pub fn assert_no_loss(&self) {
        assert!(
            self.transmitted > 0 && self.lost() == 0,
            "{}: {} of {} pings lost (sequence numbers {})",
            self.label,
            self.lost(),
            self.transmitted,
            compress(&self.lost_seqs())
        );
    }
}

impl<'ns> PingRun<'ns> {
    /// Starts `count` pings from `ns` to `to`, `interval` apart; `label` names the pair.
    pub fn start(ns: &'ns Netns, label: &str, to: IpAddr, count: u32, interval: Duration) -> Self {
        let dir = tempfile::tempdir().expect("cannot create a temporary directory");
        let out = dir.path().join("ping.out");
        let file =
            File::create(&out).unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
        let interval_arg = format!("{:.3}", interval.as_secs_f64());
        let (count_arg, wait_arg, to_arg) = (
            count.to_string(),
            REPLY_WAIT_SECS.to_string(),
            to.to_string(),
        );
        let mut cmd = ns.command(
            "ping",
            &[
                "-n",
                "-D",
                "-i",
                &interval_arg,
                "-c",
                &count_arg,
                "-W",
                &wait_arg,
                &to_arg,
            ],
        );
        cmd.stdin(Stdio::null()).stdout(file).stderr(Stdio::null());
        let child = ns.spawn(&mut cmd);
        Self {
            ns,
            child: Some(child),
            out,
            label: label.to_owned(),
            count,
            interval,
            _dir: dir,
        }
    }

    /// Starts pings at `rate` per second for `duration`.
    pub fn at_rate(ns: &'ns Netns, label: &str, to: IpAddr, rate: u32, duration: Duration) -> Self {
        let count = (duration.as_secs_f64() * f64::from(rate)).ceil() as u32;
        Self::start(
            ns,
            label,
            to,
            count.max(1),
            Duration::from_secs(1) / rate.max(1),
        )
    }

    /// The replies printed so far (sequence number, arrival in Unix milliseconds), while
    /// ping runs.
    pub fn replies_so_far(&self) -> Vec<(u32, u64)> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines().filter_map(parse_reply).collect()
    }

    /// Waits for ping to finish by itself (all requests sent, the last reply awaited) and
    /// returns what it saw; fails the test if it runs far longer than planned.
    pub fn finish(mut self) -> PingReport {
        let planned = self.interval * self.count + Duration::from_secs(REPLY_WAIT_SECS + 10);
        let child = self.child.as_mut().expect("a running ping");
        if wait_timeout(child, planned).is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{}: ping did not finish within {planned:?}", self.label);
        }
        self.reap();
        self.report()
    }

    /// Stops ping now (SIGINT: it prints its summary) and returns what it saw.
    pub fn stop(mut self) -> PingReport {
        let child = self.child.as_mut().expect("a running ping");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        if wait_timeout(child, Duration::from_secs(5)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.reap();
        self.report()
    }

    fn reap(&mut self) {
        if let Some(child) = self.child.take() {
            self.ns.forget(child.id());
        }
    }

    fn report(&self) -> PingReport {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        parse_report(&self.label, &text)
            .unwrap_or_else(|| panic!("{}: cannot read ping's output:\n{text}", self.label))
    }
}

impl Drop for PingRun<'_> {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.ns.forget(child.id());
        }
    }
}

/// Parses `ping -n -D` output: reply lines and the summary.
fn parse_report(label: &str, text: &str) -> Option<PingReport> {
    let summary = text
        .lines()
        .find(|l| l.contains(" packets transmitted, "))?;
    let (sent, rest) = summary.split_once(" packets transmitted, ")?;
    let received = rest.split_once(" received")?.0.trim().parse().ok()?;
    let replies = text.lines().filter_map(parse_reply).collect();
    Some(PingReport {
        label: label.to_owned(),
        transmitted: sent.trim().parse().ok()?,
        received,
        replies,
    })
}

/// `[1700000000.123456] 64 bytes from 100.64.0.2: icmp_seq=7 ttl=64 time=0.3 ms` → (7, ms).
fn parse_reply(line: &str) -> Option<(u32, u64)> {
    let stamp = line.strip_prefix('[')?.split_once(']')?.0;
    if !line.contains(" bytes from ") {
        return None;
    }
    let (secs, micros) = stamp.split_once('.')?;
    let secs: u64 = secs.parse().ok()?;
    let frac = format!("{micros:0<6}");
    let micros: u64 = frac.get(..6)?.parse().ok()?;
    let seq = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("icmp_seq="))?
        .parse()
        .ok()?;
    Some((seq, secs * 1000 + micros / 1000))
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

    const OUTPUT: &str = "\
PING 100.64.0.2 (100.64.0.2) 56(84) bytes of data.
[1700000000.123456] 64 bytes from 100.64.0.2: icmp_seq=1 ttl=64 time=0.31 ms
[1700000000.143901] 64 bytes from 100.64.0.2: icmp_seq=2 ttl=64 time=0.28 ms
[1700000000.190000] 64 bytes from 100.64.0.2: icmp_seq=4 ttl=64 time=0.30 ms

--- 100.64.0.2 ping statistics ---
5 packets transmitted, 3 received, 40% packet loss, time 80ms
rtt min/avg/max/mdev = 0.280/0.296/0.310/0.012 ms
";

    #[test]
    fn reports_replies_with_their_times_and_the_losses() {
        let r = parse_report("a->b", OUTPUT).unwrap();
        assert_eq!((r.transmitted, r.received, r.lost()), (5, 3, 2));
        assert_eq!(r.replies[0], (1, 1_700_000_000_123));
        assert_eq!(r.lost_seqs(), [3, 5]);
        assert_eq!(r.first_reply_ms(), Some(1_700_000_000_123));
        assert_eq!(r.last_reply_ms(), Some(1_700_000_000_190));
        assert_eq!(r.replies_after(1_700_000_000_150), [(4, 1_700_000_000_190)]);
    }

    #[test]
    #[should_panic(expected = "a->b: 2 of 5 pings lost (sequence numbers 3, 5)")]
    fn a_lossy_report_fails_with_the_lost_sequence_numbers() {
        parse_report("a->b", OUTPUT).unwrap().assert_no_loss();
    }

    #[test]
    fn output_without_a_summary_is_not_a_report() {
        assert_eq!(parse_report("x", "PING 100.64.0.2\n"), None);
    }

    #[test]
    fn runs_of_sequence_numbers_are_compressed() {
        assert_eq!(compress(&[1, 2, 3, 7, 9, 10]), "1-3, 7, 9-10");
        assert_eq!(compress(&[]), "");
    }
}
