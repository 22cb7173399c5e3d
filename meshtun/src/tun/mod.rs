//! The real tun device, through tun-rs: Linux (with TCP/UDP segmentation offload when the
//! kernel offers it, plain batched I/O otherwise) and macOS utun.

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;

#[cfg(target_os = "linux")]
pub use linux::Tun;
#[cfg(target_os = "macos")]
pub use macos::Tun;

/// How to open the tun device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunOptions {
    /// Interface name (`utun` or `utunN` on macOS).
    pub name: String,
    /// MTU to set, unless `persistent` is set.
    pub mtu: u16,
    /// Ask for segmentation offload (Linux).
    pub offload: bool,
    /// Attach to a persistent device created beforehand and owned by this user, without
    /// changing its MTU or link state (running with no capability at all).
    pub persistent: bool,
    /// Queues to open, one per lane (Linux multi-queue; a device that cannot have them, or
    /// a persistent one created without `multi_queue`, gets one).
    pub lanes: usize,
}

/// Lanes for a device: `MESHTUN_LANES` if it holds a number from 1 to 16, else one per
/// core, at most four. More lanes than cores only add contention; past four, the one tunnel
/// socket per address family is the limit.
pub fn default_lanes() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    lanes_from(std::env::var("MESHTUN_LANES").ok().as_deref(), cores)
}

fn lanes_from(setting: Option<&str>, cores: usize) -> usize {
    match setting.map(|s| s.trim().parse::<usize>()) {
        Some(Ok(n)) if (1..=16).contains(&n) => n,
        Some(_) => {
            tracing::warn!(
                value = setting.unwrap_or_default(),
                "MESHTUN_LANES must be a number from 1 to 16; using one lane per core"
            );
            cores.clamp(1, 4)
        }
        None => cores.clamp(1, 4),
    }
}

#[cfg(test)]
mod tests {
    use super::lanes_from;

    #[test]
    fn lanes_follow_the_cores_up_to_four_unless_set() {
        assert_eq!(lanes_from(None, 1), 1);
        assert_eq!(lanes_from(None, 2), 2);
        assert_eq!(lanes_from(None, 64), 4);
        assert_eq!(lanes_from(Some("1"), 8), 1);
        assert_eq!(lanes_from(Some(" 8 "), 2), 8);
        assert_eq!(lanes_from(Some("0"), 2), 2);
        assert_eq!(lanes_from(Some("many"), 3), 3);
        assert_eq!(lanes_from(Some("17"), 64), 4);
    }
}
