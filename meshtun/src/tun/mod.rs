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

/// The tun control device that Linux opens to create or attach to a tun interface.
#[cfg(target_os = "linux")]
pub const TUN_CONTROL_DEVICE: &str = "/dev/net/tun";

/// What to tell the user when opening the tun device failed with `error`: for a permission
/// error, which of the two checks refused (the control device's mode, or the missing
/// capability), with the device's mode and owner and what to do. `None` for other errors.
#[cfg(target_os = "linux")]
pub fn access_hint(error: &std::io::Error) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = nix::unistd::geteuid();
    match error.raw_os_error() {
        Some(libc::EACCES) => {
            let device = match std::fs::metadata(TUN_CONTROL_DEVICE) {
                Ok(meta) => format!(
                    "{TUN_CONTROL_DEVICE} is mode {:04o}, owner uid {} gid {}",
                    meta.mode() & 0o7777,
                    meta.uid(),
                    meta.gid()
                ),
                Err(e) => format!("{TUN_CONTROL_DEVICE} cannot be inspected ({e})"),
            };
            Some(format!(
                "{device}, and this process (uid {uid}) may not open it. Distributions ship \
                 it mode 0666 (through udev), so that any process holding CAP_NET_ADMIN can \
                 create tun devices; restore that mode (`chmod 0666 {TUN_CONTROL_DEVICE}`, and a \
                 udev rule `KERNEL==\"tun\", MODE=\"0666\"` to keep it) or run meshtun as root"
            ))
        }
        Some(libc::EPERM) => Some(format!(
            "this process (uid {uid}) lacks CAP_NET_ADMIN, which creating a tun device \
             needs: run meshtun as root, give it the capability (the systemd unit does, with \
             AmbientCapabilities=CAP_NET_ADMIN), or attach to a device created beforehand \
             for this user (`ip tuntap add dev NAME mode tun user {uid}` and \
             `meshtun up --existing-tun`)"
        )),
        _ => None,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod access_tests {
    use super::*;

    #[test]
    fn a_mode_refusal_names_the_device_its_mode_and_the_distribution_default() {
        let hint = access_hint(&std::io::Error::from_raw_os_error(libc::EACCES)).unwrap();
        assert!(hint.contains("/dev/net/tun is mode 0"), "{hint}");
        assert!(hint.contains("0666"), "{hint}");
        assert!(hint.contains("owner uid"), "{hint}");
    }

    #[test]
    fn a_missing_capability_names_cap_net_admin() {
        let hint = access_hint(&std::io::Error::from_raw_os_error(libc::EPERM)).unwrap();
        assert!(hint.contains("CAP_NET_ADMIN"), "{hint}");
    }

    #[test]
    fn other_errors_get_no_hint() {
        assert!(access_hint(&std::io::Error::from_raw_os_error(libc::EBUSY)).is_none());
    }
}
