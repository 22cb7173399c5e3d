//! Reading and writing sysctls through `/proc/sys`.
//!
//! Network sysctls belong to the network namespace of the calling thread, so these are plain
//! blocking calls made on the caller's thread (not on a worker pool).

use std::io;
use std::path::PathBuf;

/// `net.ipv4.conf.all.src_valid_mark`: lets the fwmark influence the reverse-path check, as
/// `wg-quick` sets it for a policy-routed IPv4 default route.
pub const SRC_VALID_MARK: &str = "net.ipv4.conf.all.src_valid_mark";

/// The `/proc/sys` path of a dotted key.
pub fn path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// The current value, without the trailing newline.
pub fn read(key: &str) -> io::Result<String> {
    Ok(std::fs::read_to_string(path(key))?.trim().to_owned())
}

/// Writes a value.
pub fn write(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(path(key), format!("{value}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_maps_to_proc_sys_path() {
        assert_eq!(
            path(SRC_VALID_MARK),
            PathBuf::from("/proc/sys/net/ipv4/conf/all/src_valid_mark")
        );
    }

    #[test]
    fn reads_a_value_without_newline() {
        let value = read("net.ipv4.conf.all.src_valid_mark").unwrap();
        assert!(value == "0" || value == "1", "{value:?}");
    }
}
