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

/// Lanes for a device: one per core, at most four. More lanes than cores only add
/// contention; past four, the one tunnel socket per address family is the limit.
pub fn default_lanes() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}
