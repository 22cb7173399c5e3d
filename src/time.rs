//! Wall-clock time in Unix milliseconds, the unit of every timestamp meshtun exchanges
//! (bundles, benchmarks, signed requests, invites) and records.

use std::time::{SystemTime, UNIX_EPOCH};

/// `time` in Unix milliseconds: 0 before 1970, `u64::MAX` beyond what 64 bits hold.
pub fn unix_ms_of(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The system's wall clock now, in Unix milliseconds ([`unix_ms_of`]).
pub fn unix_ms() -> u64 {
    unix_ms_of(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_outside_the_range_saturate() {
        assert_eq!(unix_ms_of(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(unix_ms_of(UNIX_EPOCH + Duration::from_millis(1_234)), 1_234);
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 10);
        assert_eq!(unix_ms_of(far), u64::MAX);
    }

    #[test]
    fn now_is_after_2023() {
        assert!(unix_ms() > 1_700_000_000_000);
    }
}
