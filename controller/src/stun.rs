//! The controller's STUN server (`[stun] listen`): it answers STUN Binding requests
//! (RFC 8489) with the address and port it saw them come from, so that a daemon learns its
//! reflexive address from its own WireGuard socket.
//!
//! It answers nothing else: a datagram that is not a well-formed Binding request (see
//! [`meshtun_proto::stun`]) is dropped unanswered. A UDP server answers whatever source a
//! datagram claims, so it must not become a reflector for spoofed traffic:
//! - [`Admission`] holds a token bucket per source (an IPv4 address, an IPv6 /64) in a table
//!   of at most [`StunLimits::max_sources`] entries: idle entries are swept, and while the
//!   table is full of busy ones a new source is refused, so spraying spoofed sources cannot
//!   grow memory;
//! - a global bucket caps the answers per second whatever the sources;
//! - an answer has XOR-MAPPED-ADDRESS and FINGERPRINT only: 40 bytes for IPv4, 52 for IPv6,
//!   against 20 bytes for the smallest request (28 with a FINGERPRINT), so what it can
//!   reflect is at most `rate × 52` bytes per second, whatever the sources.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use meshtun_proto::stun::{binding_success, parse_binding_request, MAX_MESSAGE};
use tokio::net::UdpSocket;

use crate::quota::address_key;

/// The bounds of the STUN server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StunLimits {
    /// Answers per second, whatever the sources (`[stun] rate`).
    pub rate: u32,
    /// Answers per second to one source, sustained…
    pub per_source_rate: f64,
    /// …and in a burst.
    pub per_source_burst: f64,
    /// Sources tracked at once.
    pub max_sources: usize,
}

impl Default for StunLimits {
    fn default() -> Self {
        Self {
            rate: DEFAULT_RATE,
            // A daemon asks every 25 s, and retransmits a lost request at 0.5, 1.5, 3.5 s…:
            // one per second with a burst of 8 covers a few nodes behind one NAT.
            per_source_rate: 1.0,
            per_source_burst: 8.0,
            max_sources: 4096,
        }
    }
}

/// Default of `[stun] rate`: answers per second in total.
pub const DEFAULT_RATE: u32 = 500;

/// `[stun]` as written.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStun {
    listen: Option<SocketAddr>,
    rate: Option<u32>,
}

/// The validated `[stun]` section: the server runs only if `listen` is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StunConfig {
    /// The UDP address to answer on.
    pub listen: SocketAddr,
    /// Its bounds.
    pub limits: StunLimits,
}

/// The largest `[stun] rate` accepted.
pub const MAX_RATE: u32 = 100_000;

impl RawStun {
    /// `None` without `listen`; an error names the key.
    pub(crate) fn validate(&self) -> Result<Option<StunConfig>, (&'static str, String)> {
        let rate = self.rate.unwrap_or(DEFAULT_RATE);
        if !(1..=MAX_RATE).contains(&rate) {
            return Err(("stun.rate", format!("{rate} is not in 1..={MAX_RATE}")));
        }
        match self.listen {
            None if self.rate.is_some() => Err((
                "stun.rate",
                "set stun.listen too: without it no STUN server runs".into(),
            )),
            None => Ok(None),
            Some(listen) => Ok(Some(StunConfig {
                listen,
                limits: StunLimits {
                    rate,
                    ..StunLimits::default()
                },
            })),
        }
    }
}

/// Why a request was not answered, or that it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Answered,
    /// Not a well-formed Binding request.
    Malformed,
    /// Its source is over its rate.
    SourceLimited,
    /// The server is over its global rate.
    GlobalLimited,
    /// The source table is full of busy sources.
    TableFull,
}

impl Outcome {
    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Malformed => "malformed",
            Self::SourceLimited => "source_limited",
            Self::GlobalLimited => "global_limited",
            Self::TableFull => "table_full",
        }
    }
}

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Full again: forgetting it changes nothing.
    fn idle(&self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }
}

/// The rate limits of the STUN server: sans-IO, one owner (the server task).
pub struct Admission {
    limits: StunLimits,
    sources: HashMap<IpAddr, Bucket>,
    global: Bucket,
    last_sweep: Option<Instant>,
}

/// How often a full table is swept at most: a sweep is linear in the table.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

impl Admission {
    /// Empty tables under `limits`.
    pub fn new(limits: StunLimits, now: Instant) -> Self {
        Self {
            limits,
            sources: HashMap::with_capacity(limits.max_sources.min(1024)),
            global: Bucket::full(f64::from(limits.rate), now),
            last_sweep: None,
        }
    }

    /// Sources tracked now.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }

    /// Whether a request from `source` may be answered now; spends its tokens if so.
    pub fn admit(&mut self, source: IpAddr, now: Instant) -> Outcome {
        let key = address_key(source);
        let (rate, burst) = (self.limits.per_source_rate, self.limits.per_source_burst);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.limits.max_sources {
            self.sweep(now);
            if self.sources.len() >= self.limits.max_sources {
                return Outcome::TableFull;
            }
        }
        let bucket = self
            .sources
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now));
        if !bucket.take(rate, burst, now) {
            return Outcome::SourceLimited;
        }
        let global = f64::from(self.limits.rate);
        if !self.global.take(global, global, now) {
            return Outcome::GlobalLimited;
        }
        Outcome::Answered
    }

    /// Forgets the sources whose buckets are full again, at most every [`SWEEP_EVERY`].
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|last| now.saturating_duration_since(last) < SWEEP_EVERY)
        {
            return;
        }
        self.last_sweep = Some(now);
        let (rate, burst) = (self.limits.per_source_rate, self.limits.per_source_burst);
        self.sources.retain(|_, b| !b.idle(rate, burst, now));
    }

    /// The answer to `datagram` from `source`, if it gets one, and the outcome.
    pub fn handle(
        &mut self,
        source: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> (Option<Vec<u8>>, Outcome) {
        let Ok(id) = parse_binding_request(datagram) else {
            return (None, Outcome::Malformed);
        };
        let source = unmap(source);
        match self.admit(source.ip(), now) {
            Outcome::Answered => (Some(binding_success(id, source)), Outcome::Answered),
            refused => (None, refused),
        }
    }
}

/// An IPv4-mapped IPv6 source (a dual-stack socket) is answered as the IPv4 address it is.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Answers Binding requests on `socket` under `limits` until `stopped` completes, telling
/// `record` every outcome and the number of sources tracked (the controller counts them in
/// its metrics).
pub async fn serve(
    socket: UdpSocket,
    limits: StunLimits,
    record: impl Fn(Outcome, usize),
    stopped: impl Future<Output = ()>,
) {
    if let Ok(addr) = socket.local_addr() {
        tracing::info!(%addr, "answering STUN Binding requests");
    }
    let mut admission = Admission::new(limits, Instant::now());
    // One byte more than accepted: a longer datagram reads as too long, not as a prefix.
    let mut buf = [0u8; MAX_MESSAGE + 1];
    tokio::pin!(stopped);
    loop {
        let (len, source) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(error) => {
                    // ICMP errors from earlier answers surface here; none is fatal.
                    tracing::debug!(%error, "STUN receive failed");
                    continue;
                }
            },
            () = &mut stopped => return,
        };
        let (answer, outcome) = admission.handle(source, &buf[..len], Instant::now());
        record(outcome, admission.sources());
        if let Some(answer) = answer {
            if let Err(error) = socket.send_to(&answer, source).await {
                tracing::debug!(%source, %error, "STUN answer not sent");
            }
        }
    }
}

#[cfg(test)]
#[path = "stun_tests.rs"]
mod tests;
