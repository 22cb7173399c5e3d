//! What one client may hold or spend: slots (connections, waiting long-polls) counted per
//! source address and in total, and a token bucket of signed requests per node.
//!
//! Both are checked before any database work, so a client over its share costs the
//! controller a map lookup and a refusal.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

/// Which cap refused a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The total cap.
    Total,
    /// The cap of this key (source address or node).
    PerKey,
}

/// Counted slots with a total cap and a cap per key.
pub struct Slots<K: Hash + Eq + Clone> {
    total: u32,
    per_key: u32,
    held: Mutex<Held<K>>,
}

struct Held<K> {
    total: u32,
    by_key: HashMap<K, u32>,
}

/// A slot taken from [`Slots`]; given back on drop.
pub struct Slot<K: Hash + Eq + Clone> {
    slots: Arc<Slots<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Slots<K> {
    /// At most `total` slots held at once, and at most `per_key` by one key.
    pub fn new(total: u32, per_key: u32) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_key,
            held: Mutex::new(Held {
                total: 0,
                by_key: HashMap::new(),
            }),
        })
    }

    /// Takes a slot for `key`, or says which cap is reached.
    pub fn try_take(self: &Arc<Self>, key: K) -> Result<Slot<K>, Full> {
        let mut held = self.held.lock();
        if held.total >= self.total {
            return Err(Full::Total);
        }
        let mine = held.by_key.entry(key.clone()).or_insert(0);
        if *mine >= self.per_key {
            return Err(Full::PerKey);
        }
        *mine += 1;
        held.total += 1;
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// Slots held now, in total.
    pub fn held(&self) -> u32 {
        self.held.lock().total
    }
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock();
        held.total = held.total.saturating_sub(1);
        if let Some(mine) = held.by_key.get_mut(&self.key) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                held.by_key.remove(&self.key);
            }
        }
    }
}

/// The key of a source address: IPv4 addresses (also IPv4-mapped IPv6 ones) as they are, an
/// IPv6 address by its /64, the smallest prefix a single host is usually given.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

/// A token bucket per node: `rate` signed requests per second, `burst` at once. A bucket is
/// made only for a node whose signature verified, so there are at most as many as nodes
/// enrolled while the controller runs.
pub struct NodeQuota {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl NodeQuota {
    /// A quota of `rate` requests per second, up to `burst` at once (both at least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        let one = NonZeroU32::MIN;
        let quota = Quota::per_second(NonZeroU32::new(rate).unwrap_or(one))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(one));
        Self {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
        }
    }

    /// Spends one request of `node`'s quota, or says how long until it may send again.
    pub fn spend(&self, node: &str) -> Result<(), Duration> {
        let key = node.to_owned();
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_cap_per_key_and_in_total_and_come_back_on_drop() {
        let slots = Slots::new(3, 2);
        let a = "192.0.2.1".parse::<IpAddr>().unwrap();
        let b = "192.0.2.2".parse::<IpAddr>().unwrap();
        let c = "192.0.2.3".parse::<IpAddr>().unwrap();
        let a1 = slots.try_take(a).unwrap();
        let _a2 = slots.try_take(a).unwrap();
        assert_eq!(slots.try_take(a).err(), Some(Full::PerKey));
        let _b1 = slots.try_take(b).unwrap();
        assert_eq!(slots.try_take(c).err(), Some(Full::Total));
        drop(a1);
        assert_eq!(slots.held(), 2);
        let _c1 = slots.try_take(c).unwrap();
        assert_eq!(slots.held.lock().by_key.len(), 3);
    }

    #[test]
    fn ipv6_sources_count_by_their_64() {
        let one = address_key("2001:db8:1:2:aaaa::1".parse().unwrap());
        let two = address_key("2001:db8:1:2:bbbb::9".parse().unwrap());
        let other = address_key("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(one, two);
        assert_ne!(one, other);
        let mapped = address_key("::ffff:192.0.2.7".parse().unwrap());
        assert_eq!(mapped, "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn a_node_over_its_quota_is_told_when_to_come_back_15() {
        let quota = NodeQuota::new(2, 5);
        for _ in 0..5 {
            quota.spend("node-a").unwrap();
        }
        let wait = quota.spend("node-a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another node's bucket is its own.
        quota.spend("node-b").unwrap();
    }
}
