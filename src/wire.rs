//! JSON types of the controller's HTTP API, shared by the controller and the daemon.
//!
//! Times are Unix milliseconds (`*_ms`). Keys are base64.

use serde::{Deserialize, Serialize};

use crate::psk::EpochId;

/// Largest benchmark body the controller accepts.
pub const MAX_BENCHMARK_BYTES: usize = 4096;

/// Longest suite version string.
pub const MAX_SUITE_VERSION: usize = 64;

/// How far in the future a benchmark's `measured_at_ms` may be (clock skew allowance).
pub const MAX_FUTURE_SKEW_MS: u64 = 30_000;

/// Checks a node id: 1 to 64 characters from `a-z 0-9 - _ .`, starting with a letter or digit.
pub fn valid_node_id(id: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    !id.is_empty()
        && id.len() <= 64
        && id.chars().all(ok_char)
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

/// Longest endpoint text accepted (`[` IPv6 `]:` port, or a 253-character host name and a
/// port).
pub const MAX_ENDPOINT_LEN: usize = 261;

/// The most overlay addresses one node may have.
pub const MAX_NODE_ADDRESSES: usize = 8;

/// Checks an endpoint: `host:port`, where host is an IPv4 address, a bracketed IPv6
/// address, or a DNS name (labels of letters, digits and `-`, 1 to 63 characters each), and
/// port is 1 to 65535; at most [`MAX_ENDPOINT_LEN`] characters. `Err` says what is wrong.
pub fn check_endpoint(text: &str) -> Result<(), String> {
    if text.len() > MAX_ENDPOINT_LEN {
        return Err(format!(
            "the endpoint is {} characters long; at most {MAX_ENDPOINT_LEN} are accepted",
            text.len()
        ));
    }
    let shown = text.escape_debug();
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("endpoint `{shown}` is not host:port"));
    };
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok {
        return Err(format!(
            "endpoint `{shown}` has no valid port (1 to 65535) after the last `:`"
        ));
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        host.parse::<std::net::Ipv4Addr>().is_ok() || valid_dns_name(host)
    };
    if host_ok {
        Ok(())
    } else {
        Err(format!(
            "endpoint `{shown}`: the host is not an IPv4 address, a bracketed IPv6 address \
             or a DNS name"
        ))
    }
}

/// A DNS name: dot-separated labels of ASCII letters, digits and `-` (not at either end),
/// 1 to 63 characters each, 253 in all; a trailing dot is allowed.
fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The four behavioural scores, each in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scores {
    /// The overall score the seeds' rule uses.
    pub overall: f64,
    /// Refusing what should be refused.
    pub refusal: f64,
    /// Honesty.
    pub honesty: f64,
    /// Following policy.
    pub policy: f64,
}

impl Scores {
    /// The scores with their names, for messages and minimums.
    pub fn named(&self) -> [(&'static str, f64); 4] {
        [
            ("overall", self.overall),
            ("refusal", self.refusal),
            ("honesty", self.honesty),
            ("policy", self.policy),
        ]
    }
}

/// One benchmark result, as a node submits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Benchmark {
    /// Version of the benchmark suite that produced the scores.
    pub suite_version: String,
    /// The scores.
    pub scores: Scores,
    /// When the benchmark ran.
    pub measured_at_ms: u64,
    /// Strictly increasing per node; a repeated or lower number is a replay.
    pub seq: u64,
}

/// Why a benchmark was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BenchmarkError {
    /// The body is larger than [`MAX_BENCHMARK_BYTES`].
    #[error("the benchmark is {0} bytes; at most {MAX_BENCHMARK_BYTES} are accepted")]
    TooLarge(usize),
    /// Not valid JSON of the right shape.
    #[error("the benchmark does not parse: {0}")]
    Parse(String),
    /// A score is NaN, infinite or outside `[0, 1]`.
    #[error("score {name} is {value}; scores must be numbers in [0, 1]")]
    Score {
        /// Which score.
        name: &'static str,
        /// Its value, as text.
        value: String,
    },
    /// The suite version is empty, too long or not printable.
    #[error("suite_version must be 1 to {MAX_SUITE_VERSION} printable ASCII characters")]
    SuiteVersion,
    /// Measured in the future.
    #[error("measured_at_ms is {ahead_ms} ms in the future")]
    Future {
        /// How far ahead.
        ahead_ms: u64,
    },
}

impl Benchmark {
    /// Parses and checks a submitted body: size, shape, every score in `[0, 1]`, the suite
    /// version, and that it was not measured in the future (beyond clock skew).
    pub fn decode(body: &[u8], now_ms: u64) -> Result<Self, BenchmarkError> {
        if body.len() > MAX_BENCHMARK_BYTES {
            return Err(BenchmarkError::TooLarge(body.len()));
        }
        let b: Benchmark =
            serde_json::from_slice(body).map_err(|e| BenchmarkError::Parse(e.to_string()))?;
        b.validate(now_ms)?;
        Ok(b)
    }

    /// Checks the values of a parsed benchmark.
    pub fn validate(&self, now_ms: u64) -> Result<(), BenchmarkError> {
        for (name, value) in self.scores.named() {
            if !(0.0..=1.0).contains(&value) {
                return Err(BenchmarkError::Score {
                    name,
                    value: value.to_string(),
                });
            }
        }
        let v = &self.suite_version;
        if v.is_empty() || v.len() > MAX_SUITE_VERSION || !v.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BenchmarkError::SuiteVersion);
        }
        if self.measured_at_ms > now_ms + MAX_FUTURE_SKEW_MS {
            return Err(BenchmarkError::Future {
                ahead_ms: self.measured_at_ms - now_ms,
            });
        }
        Ok(())
    }
}

/// `GET /v1/epoch`: the current and (once published) the next epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochInfo {
    /// The epoch in force.
    pub current: EpochTimes,
    /// The next epoch, once its bundles are published.
    pub next: Option<EpochTimes>,
    /// Epoch length in milliseconds.
    pub length_ms: u64,
}

/// When an epoch starts and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochTimes {
    /// The epoch.
    pub epoch: EpochId,
    /// Start, Unix milliseconds.
    pub activation_ms: u64,
    /// End, Unix milliseconds.
    pub not_after_ms: u64,
}

pub use crate::enroll::{
    EnrollClaim, EnrollRequest, EnrollResponse, SignedEnrollReply, Ticket, TicketError,
    TICKET_PREFIX,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn body(overall: &str) -> String {
        format!(
            r#"{{"suite_version":"v1","scores":{{"overall":{overall},"refusal":0.9,"honesty":0.9,"policy":0.9}},"measured_at_ms":1000,"seq":1}}"#
        )
    }

    #[test]
    fn good_benchmarks_decode() {
        let b = Benchmark::decode(body("0.75").as_bytes(), 2_000).unwrap();
        assert_eq!(b.scores.overall, 0.75);
    }

    #[test]
    fn bad_benchmarks_are_refused_with_the_reason() {
        let err = |s: &str| {
            Benchmark::decode(s.as_bytes(), 2_000)
                .unwrap_err()
                .to_string()
        };
        assert!(err(&body("1.5")).contains("overall is 1.5"));
        assert!(err(&body("-0.1")).contains("overall"));
        assert!(err(&body("NaN")).contains("does not parse"));
        assert!(
            err(&body("1e999")).contains("does not parse") || err(&body("1e999")).contains("inf")
        );
        assert!(err("{}").contains("does not parse"));
        assert!(err(&"x".repeat(5000)).contains("5000 bytes"));
        let future = body("0.8").replace("\"measured_at_ms\":1000", "\"measured_at_ms\":99999999");
        assert!(err(&future).contains("in the future"));
        let extra = body("0.8").replace("\"seq\":1", "\"seq\":1,\"admin\":true");
        assert!(err(&extra).contains("does not parse"));
        let version = body("0.8").replace("\"v1\"", "\"\"");
        assert!(err(&version).contains("suite_version"));
    }

    #[test]
    fn nan_is_refused_even_when_constructed() {
        let mut b = Benchmark::decode(body("0.8").as_bytes(), 2_000).unwrap();
        b.scores.honesty = f64::NAN;
        assert!(b.validate(2_000).is_err());
    }

    #[test]
    fn endpoints_are_host_and_port_and_bounded() {
        for ok in [
            "192.0.2.1:51820",
            "[2001:db8::1]:51820",
            "node-a.mesh.example:1",
            "node-a.example.:65535",
        ] {
            assert_eq!(check_endpoint(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("192.0.2.1", "not host:port"),
            ("192.0.2.1:0", "no valid port"),
            ("192.0.2.1:65536", "no valid port"),
            ("192.0.2.1:+80", "no valid port"),
            ("2001:db8::1:51820", "the host is not"),
            ("[2001:db8::1:51820", "the host is not"),
            ("a b:1", "the host is not"),
            ("-a.example:1", "the host is not"),
            (":1", "the host is not"),
            ("a\nb:1", "the host is not"),
        ] {
            let err = check_endpoint(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = format!("{}.example:1", "a".repeat(300));
        assert!(check_endpoint(&long).unwrap_err().contains("at most 261"));
        let label = format!("{}.example:1", "a".repeat(64));
        assert!(check_endpoint(&label).is_err());
    }

    #[test]
    fn node_ids() {
        for ok in ["node-a", "a", "n1.edge_2"] {
            assert!(valid_node_id(ok), "{ok}");
        }
        for bad in ["", "-a", "Node", "a/b", "a b", &"a".repeat(65)] {
            assert!(!valid_node_id(bad), "{bad}");
        }
    }
}
