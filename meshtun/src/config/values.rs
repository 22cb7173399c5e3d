//! Conversions of single values, shared by the TOML parser and the `wg-quick` importer.
//!
//! Each returns the reason as plain text; the caller adds the file, line and key. Reasons
//! never quote a secret.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;
use meshtun_proto::{PresharedKey, PrivateKey, PublicKey};

use crate::host::{Dns, RouteTable};
use crate::sched::Scheduling;

/// The longest interface name: `IFNAMSIZ` (16) minus the terminating NUL.
pub(super) const MAX_IFNAME_LEN: usize = 15;

/// The smallest MTU an IPv4-only interface may have.
pub(super) const MIN_MTU_V4: u16 = 576;

/// The smallest MTU once any IPv6 address is configured (RFC 8200).
pub(super) const MIN_MTU_V6: u16 = 1280;

/// A value that may be written as an integer or as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scalar<'a> {
    Int(i64),
    Str(&'a str),
}

/// Checks an interface name as Linux's `dev_valid_name` does.
pub(super) fn interface_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the interface name is empty".into());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "the interface name `{}` is {} bytes long; at most {MAX_IFNAME_LEN} are allowed",
            name.escape_debug(),
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid interface name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "the interface name `{}` contains {:?}; '/', ':', whitespace and control characters are not allowed",
            name.escape_debug(),
            bad
        ));
    }
    Ok(name.to_owned())
}

/// Parses a CIDR or a bare address (a /32 or /128).
fn ip_net(text: &str, example: &str) -> Result<IpNet, String> {
    if let Ok(net) = IpNet::from_str(text) {
        return Ok(net);
    }
    IpAddr::from_str(text).map(IpNet::from).map_err(|_| {
        format!(
            "`{}` is not an IP address or network (like {example})",
            text.escape_debug()
        )
    })
}

/// An interface address; host bits are kept (`100.64.0.1/24`).
pub(super) fn interface_address(text: &str) -> Result<IpNet, String> {
    ip_net(text, "100.64.0.1/24 or fd00::1/64")
}

/// An allowed-IP network, normalised to its network address as the kernel does.
pub(super) fn allowed_ip(text: &str) -> Result<IpNet, String> {
    ip_net(text, "10.0.0.0/24 or fd00::/64").map(|net| net.trunc())
}

/// An MTU within the range valid for IPv4; the IPv6 minimum is checked with the addresses.
pub(super) fn mtu(value: i64) -> Result<u16, String> {
    u16::try_from(value)
        .ok()
        .filter(|mtu| *mtu >= MIN_MTU_V4)
        .ok_or_else(|| {
            format!(
                "{value} is out of range: the MTU must be between {MIN_MTU_V4} and 65535 \
                 ({MIN_MTU_V6} or more when an IPv6 address is configured)"
            )
        })
}

/// A UDP port written as text (`wg-quick`'s `ListenPort`).
pub(super) fn port(text: &str) -> Result<u16, String> {
    text.parse::<u16>().map_err(|_| {
        format!(
            "`{}` is not a port number (0 to 65535)",
            text.escape_debug()
        )
    })
}

/// The address the metrics endpoint listens on: an IP address and a port, not 0.
pub(super) fn metrics_listen(text: &str) -> Result<SocketAddr, String> {
    let addr = text.parse::<SocketAddr>().map_err(|_| {
        format!(
            "`{}` is not an IP address and port; write \"127.0.0.1:9586\" or \"[::1]:9586\"",
            text.escape_debug()
        )
    })?;
    if addr.port() == 0 {
        return Err(format!(
            "`{addr}` has port 0, which would pick a port Prometheus cannot know; give a port"
        ));
    }
    Ok(addr)
}

/// An integer written as text (`wg-quick`'s `MTU`).
pub(super) fn integer(text: &str) -> Result<i64, String> {
    text.parse::<i64>()
        .map_err(|_| format!("`{}` is not a number", text.escape_debug()))
}

fn u32_text(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// A firewall mark: an integer, `"0x..."`, a decimal string, or `"off"`. 0 means off.
pub(super) fn fwmark(value: Scalar<'_>) -> Result<Option<u32>, String> {
    let mark = match value {
        Scalar::Str(text) if text.eq_ignore_ascii_case("off") => return Ok(None),
        Scalar::Str(text) => u32_text(text),
        Scalar::Int(n) => u32::try_from(n).ok(),
    };
    match mark {
        Some(0) => Ok(None),
        Some(mark) => Ok(Some(mark)),
        None => Err(format!(
            "{} is not a firewall mark: use a number from 0 to 4294967295, \"0x...\" or \"off\"",
            show(value)
        )),
    }
}

/// A routing table: `"auto"`, `"off"`, a number, or one of iproute2's reserved names.
/// `scheduling`: `"realtime"` or `"normal"`.
pub(super) fn scheduling(value: &str) -> Result<Scheduling, String> {
    Scheduling::parse(value)
        .ok_or_else(|| format!("{value:?} is not a scheduling: use \"realtime\" or \"normal\""))
}

pub(super) fn table(value: Scalar<'_>) -> Result<RouteTable, String> {
    let id = match value {
        Scalar::Str(text) if text.eq_ignore_ascii_case("auto") => return Ok(RouteTable::Auto),
        Scalar::Str(text) if text.eq_ignore_ascii_case("off") => return Ok(RouteTable::Off),
        Scalar::Str("main") => Some(254),
        Scalar::Str("local") => Some(255),
        Scalar::Str("default") => Some(253),
        Scalar::Str(text) => text.parse::<u32>().ok(),
        Scalar::Int(n) => u32::try_from(n).ok(),
    };
    match id {
        Some(0) => Err("0 is not a routing table; use \"off\" for no routes".into()),
        Some(id) => Ok(RouteTable::Id(id)),
        None => Err(format!(
            "{} is not a routing table: use \"auto\", \"off\" or a number from 1 to 4294967295",
            show(value)
        )),
    }
}

/// A keepalive interval in seconds, or `"off"`. 0 means off.
pub(super) fn keepalive(value: Scalar<'_>) -> Result<Option<u16>, String> {
    let seconds = match value {
        Scalar::Str(text) if text.eq_ignore_ascii_case("off") => return Ok(None),
        Scalar::Str(text) => text.parse::<u16>().ok(),
        Scalar::Int(n) => u16::try_from(n).ok(),
    };
    match seconds {
        Some(0) => Ok(None),
        Some(seconds) => Ok(Some(seconds)),
        None => Err(format!(
            "{} is not a keepalive interval: use seconds from 0 to 65535, or \"off\"",
            show(value)
        )),
    }
}

fn show(value: Scalar<'_>) -> String {
    match value {
        Scalar::Int(n) => n.to_string(),
        Scalar::Str(text) => format!("\"{}\"", text.escape_debug()),
    }
}

/// Adds one `dns` entry: an address becomes a name server, anything else a search domain.
pub(super) fn dns_entry(text: &str, dns: &mut Dns) -> Result<(), String> {
    if let Ok(addr) = IpAddr::from_str(text) {
        dns.servers.push(addr);
        return Ok(());
    }
    if text.is_empty() {
        return Err("an empty DNS entry".into());
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(format!(
            "`{}` is neither an IP address nor a search domain",
            text.escape_debug()
        ));
    }
    dns.search.push(text.to_owned());
    Ok(())
}

/// A hook command.
pub(super) fn hook(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Err("the command is empty".into());
    }
    if text.contains('\0') {
        return Err("the command contains a NUL character".into());
    }
    Ok(text.to_owned())
}

/// A base64 private key.
pub(super) fn private_key(text: &str) -> Result<PrivateKey, String> {
    PrivateKey::from_base64(text.trim()).map_err(|e| format!("not a valid private key: {e}"))
}

/// A base64 public key.
pub(super) fn public_key(text: &str) -> Result<PublicKey, String> {
    PublicKey::from_base64(text.trim()).map_err(|e| format!("not a valid public key: {e}"))
}

/// A base64 preshared key, which must not be all zero.
pub(super) fn preshared_key(text: &str) -> Result<PresharedKey, String> {
    let key = PresharedKey::from_base64(text.trim())
        .map_err(|e| format!("not a valid preshared key: {e}"))?;
    if key.is_zero() {
        return Err(
            "an all-zero preshared key means no key in WireGuard; remove the key instead".into(),
        );
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_linux_rules() {
        assert_eq!(interface_name("wg0").unwrap(), "wg0");
        assert_eq!(interface_name("a23456789012345").unwrap().len(), 15);
        assert!(interface_name("a234567890123456")
            .unwrap_err()
            .contains("16 bytes"));
        assert!(interface_name("").is_err());
        assert!(interface_name("..").is_err());
        for bad in ["wg/0", "wg 0", "wg\u{0}", "wg:0", "wg\t"] {
            assert!(interface_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn addresses_keep_host_bits_and_allowed_ips_do_not() {
        assert_eq!(
            interface_address("100.64.0.1/24").unwrap().to_string(),
            "100.64.0.1/24"
        );
        assert_eq!(
            interface_address("fd00::1").unwrap().to_string(),
            "fd00::1/128"
        );
        assert_eq!(
            interface_address("10.0.0.1").unwrap().to_string(),
            "10.0.0.1/32"
        );
        assert_eq!(
            allowed_ip("10.0.0.7/24").unwrap().to_string(),
            "10.0.0.0/24"
        );
        assert_eq!(allowed_ip("fd00::7/64").unwrap().to_string(), "fd00::/64");
        assert!(allowed_ip("10.0.0.0/33")
            .unwrap_err()
            .contains("10.0.0.0/33"));
        assert!(interface_address("wg0").is_err());
    }

    #[test]
    fn mtu_range() {
        assert_eq!(mtu(576), Ok(576));
        assert_eq!(mtu(65535), Ok(65535));
        assert!(mtu(575).unwrap_err().contains("between 576 and 65535"));
        assert!(mtu(65536).is_err());
        assert!(mtu(-1).is_err());
    }

    #[test]
    fn fwmark_forms() {
        assert_eq!(fwmark(Scalar::Int(51820)), Ok(Some(51820)));
        assert_eq!(fwmark(Scalar::Str("0xca6c")), Ok(Some(0xca6c)));
        assert_eq!(fwmark(Scalar::Str("1234")), Ok(Some(1234)));
        assert_eq!(fwmark(Scalar::Str("off")), Ok(None));
        assert_eq!(fwmark(Scalar::Int(0)), Ok(None));
        assert_eq!(fwmark(Scalar::Int(u32::MAX.into())), Ok(Some(u32::MAX)));
        assert!(fwmark(Scalar::Int(-1))
            .unwrap_err()
            .contains("-1 is not a firewall mark"));
        assert!(fwmark(Scalar::Str("0x1ffffffff")).is_err());
        assert!(fwmark(Scalar::Str("on")).unwrap_err().contains("\"on\""));
    }

    #[test]
    fn table_forms() {
        assert_eq!(table(Scalar::Str("auto")), Ok(RouteTable::Auto));
        assert_eq!(table(Scalar::Str("off")), Ok(RouteTable::Off));
        assert_eq!(table(Scalar::Int(1234)), Ok(RouteTable::Id(1234)));
        assert_eq!(table(Scalar::Str("1234")), Ok(RouteTable::Id(1234)));
        assert_eq!(table(Scalar::Str("main")), Ok(RouteTable::Id(254)));
        assert!(table(Scalar::Int(0)).unwrap_err().contains("\"off\""));
        assert!(table(Scalar::Str("wg")).is_err());
    }

    #[test]
    fn keepalive_forms() {
        assert_eq!(keepalive(Scalar::Int(25)), Ok(Some(25)));
        assert_eq!(keepalive(Scalar::Int(0)), Ok(None));
        assert_eq!(keepalive(Scalar::Str("off")), Ok(None));
        assert_eq!(keepalive(Scalar::Str("25")), Ok(Some(25)));
        assert!(keepalive(Scalar::Int(65536)).is_err());
    }

    #[test]
    fn dns_entries_split_into_servers_and_search_domains() {
        let mut dns = Dns::default();
        dns_entry("1.1.1.1", &mut dns).unwrap();
        dns_entry("mesh.internal", &mut dns).unwrap();
        dns_entry("2606:4700::1111", &mut dns).unwrap();
        assert_eq!(dns.servers.len(), 2);
        assert_eq!(dns.search, vec!["mesh.internal".to_string()]);
        assert!(dns_entry("a b", &mut dns).is_err());
        assert!(dns_entry("", &mut dns).is_err());
    }

    #[test]
    fn key_errors_do_not_quote_the_key() {
        let almost = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBm=";
        let reason = private_key(almost).unwrap_err();
        assert!(!reason.contains(almost));
        assert!(reason.starts_with("not a valid private key"));
        let zero = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        assert_eq!(
            preshared_key(zero).unwrap_err(),
            "an all-zero preshared key means no key in WireGuard; remove the key instead"
        );
    }
}
