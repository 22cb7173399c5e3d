//! Peer observations: what a node saw of one of its peers, signed by the node as a
//! [`Statement`](crate::statement::Statement) with a node issuer
//! ([`Issuer::Node`](crate::statement::Issuer::Node)) and the peer as its subject.
//!
//! A peer observation scores only the dimensions of [`PEER_DIMENSIONS`], each in `[0, 1]`
//! with 1 the best:
//!
//! | dimension | score |
//! |---|---|
//! | `reachable` | 1 if the peer answered an ICMP echo through the tunnel, 0 if it did not |
//! | `latency` | `1 − RTT / 1 s` of that echo, 0 at or beyond one second; only when it answered |
//! | `handshake` | 1 if a WireGuard handshake with the peer completed within [`HANDSHAKE_FRESH`], 0 if not |
//!
//! A peer that could not be probed at all (no address of its to probe) is not observed. A
//! node's statement about itself is never a peer observation; the controller refuses it.
//! This module is the scoring, pure; probing and signing are the daemon's.

use std::time::Duration;

/// The dimensions a peer observation may score.
pub const PEER_DIMENSIONS: [&str; 3] = [REACHABLE, LATENCY, HANDSHAKE];

/// Whether the peer answered through the tunnel.
pub const REACHABLE: &str = "reachable";

/// How fast it answered: `1 − RTT / 1 s`.
pub const LATENCY: &str = "latency";

/// Whether a handshake with it completed recently.
pub const HANDSHAKE: &str = "handshake";

/// The round-trip time at which the latency score reaches 0.
pub const LATENCY_SCALE: Duration = Duration::from_secs(1);

/// How recent a completed handshake must be to score 1: WireGuard's `REJECT_AFTER_TIME`,
/// after which a session's keys are no longer used. A peer in use rekeys every two minutes.
pub const HANDSHAKE_FRESH: Duration = Duration::from_secs(180);

/// Whether `dimension` is one a peer observation may score.
pub fn is_peer_dimension(dimension: &str) -> bool {
    PEER_DIMENSIONS.contains(&dimension)
}

/// The latency score of a round-trip time: 1 at 0, falling linearly to 0 at
/// [`LATENCY_SCALE`] and beyond.
pub fn latency_score(rtt: Duration) -> f64 {
    let fraction = rtt.as_secs_f64() / LATENCY_SCALE.as_secs_f64();
    (1.0 - fraction).clamp(0.0, 1.0)
}

/// The round-trip time a latency score stands for (the inverse of [`latency_score`] on
/// `(0, 1]`), for reasons and displays.
pub fn latency_rtt(score: f64) -> Duration {
    let fraction = (1.0 - score).clamp(0.0, 1.0);
    LATENCY_SCALE.mul_f64(fraction)
}

/// The handshake score of a handshake completed `age` ago (`None`: never).
pub fn handshake_score(age: Option<Duration>) -> f64 {
    match age {
        Some(age) if age <= HANDSHAKE_FRESH => 1.0,
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_falls_from_one_to_zero_over_a_second() {
        assert_eq!(latency_score(Duration::ZERO), 1.0);
        assert!((latency_score(Duration::from_millis(250)) - 0.75).abs() < 1e-9);
        assert_eq!(latency_score(Duration::from_secs(1)), 0.0);
        assert_eq!(latency_score(Duration::from_secs(30)), 0.0);
        let rtt = latency_rtt(latency_score(Duration::from_millis(40)));
        assert!((rtt.as_secs_f64() - 0.040).abs() < 1e-9);
        assert_eq!(latency_rtt(2.0), Duration::ZERO);
        assert_eq!(latency_rtt(-1.0), LATENCY_SCALE);
    }

    #[test]
    fn a_handshake_counts_for_reject_after_time() {
        assert_eq!(handshake_score(None), 0.0);
        assert_eq!(handshake_score(Some(Duration::from_secs(5))), 1.0);
        assert_eq!(handshake_score(Some(HANDSHAKE_FRESH)), 1.0);
        assert_eq!(
            handshake_score(Some(HANDSHAKE_FRESH + Duration::from_millis(1))),
            0.0
        );
    }

    #[test]
    fn only_the_three_peer_dimensions_are_peer_dimensions() {
        for d in PEER_DIMENSIONS {
            assert!(is_peer_dimension(d));
        }
        for d in ["overall", "honesty", "refusal", "policy", "Reachable", ""] {
            assert!(!is_peer_dimension(d));
        }
    }
}
