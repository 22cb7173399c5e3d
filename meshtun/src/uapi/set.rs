//! Parsing the lines of a `set` request into a [`DeviceUpdate`].
//!
//! Keys are checked as wireguard-go checks them: a device section until the first
//! `public_key=`, then one section per peer. Booleans accept only `true`, numbers only decimal
//! digits, keys only 64 hex digits (all zeros removes a private or preshared key), endpoints
//! only numeric `ip:port` / `[ipv6]:port`, and `protocol_version` only `1`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::str::FromStr;

use ipnet::IpNet;
use meshtun_proto::{PresharedKey, PrivateKey, PublicKey};

use super::error::{shown, UapiError};
use crate::wgcfg::{AllowedIpChange, DeviceUpdate, PeerUpdate};

/// Parses the body lines of a `set` request (without `set=1` and the final blank line).
///
/// Error line numbers count `set=1` as line 1, so the first body line is line 2. A line
/// without `=` is a protocol error (`EPROTO`); an unknown key or a bad value is `EINVAL`.
pub fn parse_set<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<DeviceUpdate, UapiError> {
    let mut update = DeviceUpdate::default();
    for (index, line) in lines.into_iter().enumerate() {
        let line_no = index + 2;
        let Some((key, value)) = line.split_once('=') else {
            return Err(UapiError::protocol(
                line_no,
                format!(
                    "expected key=value, got a line of {} bytes without '='",
                    line.len()
                ),
            ));
        };
        if key == "public_key" {
            let public_key = PublicKey::from_hex(value)
                .map_err(|err| UapiError::invalid(line_no, key, err.to_string()))?;
            update.peers.push(PeerUpdate::new(public_key));
            continue;
        }
        match update.peers.last_mut() {
            None => device_line(&mut update, key, value, line_no)?,
            Some(peer) => peer_line(peer, key, value, line_no)?,
        }
    }
    Ok(update)
}

fn device_line(
    update: &mut DeviceUpdate,
    key: &str,
    value: &str,
    line_no: usize,
) -> Result<(), UapiError> {
    let invalid = |reason: &str| UapiError::invalid(line_no, key, reason);
    match key {
        "private_key" => {
            let private_key =
                PrivateKey::from_hex(value).map_err(|err| invalid(&err.to_string()))?;
            let is_zero = private_key.as_bytes().iter().all(|b| *b == 0);
            update.private_key = Some((!is_zero).then_some(private_key));
        }
        "listen_port" => {
            update.listen_port = Some(
                number(value).ok_or_else(|| bad_value(line_no, key, value, "a port 0-65535"))?,
            );
        }
        "fwmark" => {
            update.fwmark = Some(
                number(value)
                    .ok_or_else(|| bad_value(line_no, key, value, "a number 0-4294967295"))?,
            );
        }
        "replace_peers" => {
            expect_true(value, line_no, key)?;
            update.replace_peers = true;
        }
        _ => return Err(unknown_key(line_no, key, "device")),
    }
    Ok(())
}

fn peer_line(
    peer: &mut PeerUpdate,
    key: &str,
    value: &str,
    line_no: usize,
) -> Result<(), UapiError> {
    match key {
        "remove" => {
            expect_true(value, line_no, key)?;
            peer.remove = true;
        }
        "update_only" => {
            expect_true(value, line_no, key)?;
            peer.update_only = true;
        }
        "preshared_key" => {
            let psk = PresharedKey::from_hex(value)
                .map_err(|err| UapiError::invalid(line_no, key, err.to_string()))?;
            peer.preshared_key = Some((!psk.is_zero()).then_some(psk));
        }
        "endpoint" => {
            let endpoint =
                parse_endpoint(value).map_err(|reason| bad_value(line_no, key, value, reason))?;
            peer.endpoint = Some(endpoint);
        }
        "persistent_keepalive_interval" => {
            let seconds =
                number(value).ok_or_else(|| bad_value(line_no, key, value, "seconds 0-65535"))?;
            peer.persistent_keepalive = Some(seconds);
        }
        "replace_allowed_ips" => {
            expect_true(value, line_no, key)?;
            // Earlier allowed_ip lines of this section are replaced too, as in wireguard-go.
            peer.allowed_ips.clear();
            peer.replace_allowed_ips = true;
        }
        "allowed_ip" => {
            let change = parse_allowed_ip(value)
                .ok_or_else(|| bad_value(line_no, key, value, "a network such as 10.0.0.0/24"))?;
            peer.allowed_ips.push(change);
        }
        "protocol_version" => {
            if value != "1" {
                return Err(bad_value(
                    line_no,
                    key,
                    value,
                    "1, the only protocol version",
                ));
            }
        }
        _ => {
            let section = format!("peer {}", peer.public_key);
            return Err(unknown_key(line_no, key, &section));
        }
    }
    Ok(())
}

fn expect_true(value: &str, line_no: usize, key: &str) -> Result<(), UapiError> {
    if value == "true" {
        Ok(())
    } else {
        Err(bad_value(line_no, key, value, "true"))
    }
}

fn bad_value(line_no: usize, key: &str, value: &str, expected: &str) -> UapiError {
    UapiError::invalid(
        line_no,
        key,
        format!("invalid value {}, expected {expected}", shown(value)),
    )
}

fn unknown_key(line_no: usize, key: &str, section: &str) -> UapiError {
    UapiError::invalid(line_no, key, format!("not a key of the {section} section"))
}

/// A decimal number made only of digits (no sign, no spaces), as Go's `ParseUint` reads it.
pub(crate) fn number<T: FromStr>(value: &str) -> Option<T> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// `cidr` adds a network, `-cidr` removes one. Host bits are cleared.
fn parse_allowed_ip(value: &str) -> Option<AllowedIpChange> {
    match value.strip_prefix('-') {
        Some(net) => IpNet::from_str(net)
            .ok()
            .map(|n| AllowedIpChange::Remove(n.trunc())),
        None => IpNet::from_str(value)
            .ok()
            .map(|n| AllowedIpChange::Add(n.trunc())),
    }
}

/// A numeric endpoint: `1.2.3.4:51820` or `[2001:db8::1]:51820`, with an optional IPv6 zone
/// (`[fe80::1%eth0]:51820`, by interface name or index).
pub(crate) fn parse_endpoint(text: &str) -> Result<SocketAddr, &'static str> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or("[ipv6]:port")?;
        let port = number(port).ok_or("a port 0-65535 after the address")?;
        let (address, scope_id) = match host.split_once('%') {
            Some((address, zone)) => (address, zone_index(zone)?),
            None => (host, 0),
        };
        let address = Ipv6Addr::from_str(address).map_err(|_| "an IPv6 address inside [ ]")?;
        return Ok(SocketAddrV6::new(address, port, 0, scope_id).into());
    }
    let (host, port) = text.rsplit_once(':').ok_or("ip:port or [ipv6]:port")?;
    let port = number(port).ok_or("a port 0-65535 after the address")?;
    let address = Ipv4Addr::from_str(host).map_err(|_| "an IPv4 address, or an IPv6 one in [ ]")?;
    Ok(SocketAddrV4::new(address, port).into())
}

fn zone_index(zone: &str) -> Result<u32, &'static str> {
    if let Some(index) = number(zone) {
        return Ok(index);
    }
    if zone.is_empty() || zone.len() >= libc::IF_NAMESIZE {
        return Err("an IPv6 zone that is an interface name or index");
    }
    nix::net::if_::if_nametoindex(zone).map_err(|_| "an IPv6 zone naming an existing interface")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER_A: &str = "29e5ad6ebcc90ceb765cb6b4936e745a9f8a9ac708212394a0e88632ee236b6f";
    const PEER_B: &str = "c56897a9a71af238922a523739ca5c728feb41c0cd85de1dab3689c1df6aa917";
    const SECRET: &str = "f0e949d14570f5f58d656119d8ab8dbf998d94d300640bd4f43a33dd10172576";
    const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";

    fn parse(text: &str) -> Result<DeviceUpdate, UapiError> {
        parse_set(text.lines())
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn parses_every_device_key() {
        let update = parse(&format!(
            "private_key={SECRET}\nlisten_port=51820\nfwmark=4294967295\nreplace_peers=true"
        ))
        .unwrap();
        let key = update.private_key.unwrap().unwrap();
        assert_eq!(key.to_hex(), SECRET);
        assert_eq!(update.listen_port, Some(51820));
        assert_eq!(update.fwmark, Some(u32::MAX));
        assert!(update.replace_peers);
        assert!(update.peers.is_empty());
    }

    #[test]
    fn zero_private_key_removes_it() {
        let update = parse(&format!("private_key={ZERO}")).unwrap();
        assert_eq!(update.private_key, Some(None));
    }

    #[test]
    fn parses_every_peer_key() {
        let text = format!(
            "public_key={PEER_A}\nprotocol_version=1\npreshared_key={SECRET}\n\
             endpoint=192.0.2.1:51820\npersistent_keepalive_interval=25\n\
             replace_allowed_ips=true\nallowed_ip=10.0.0.1/24\nallowed_ip=-fd00::/64\n\
             update_only=true\npublic_key={PEER_B}\nremove=true"
        );
        let update = parse(&text).unwrap();
        assert_eq!(update.peers.len(), 2);
        let a = &update.peers[0];
        assert_eq!(a.public_key.to_hex(), PEER_A);
        assert_eq!(
            a.preshared_key.as_ref().unwrap().as_ref().unwrap().to_hex(),
            SECRET
        );
        assert_eq!(a.endpoint, Some("192.0.2.1:51820".parse().unwrap()));
        assert_eq!(a.persistent_keepalive, Some(25));
        assert!(a.replace_allowed_ips);
        assert!(a.update_only);
        assert!(!a.remove);
        assert_eq!(
            a.allowed_ips,
            [
                AllowedIpChange::Add(net("10.0.0.0/24")),
                AllowedIpChange::Remove(net("fd00::/64"))
            ]
        );
        let b = &update.peers[1];
        assert_eq!(b.public_key.to_hex(), PEER_B);
        assert!(b.remove);
        assert_eq!(b.preshared_key, None);
    }

    #[test]
    fn zero_preshared_key_clears_it() {
        let update = parse(&format!("public_key={PEER_A}\npreshared_key={ZERO}")).unwrap();
        assert_eq!(update.peers[0].preshared_key, Some(None));
    }

    #[test]
    fn replace_allowed_ips_drops_earlier_lines_of_the_section() {
        let text = format!(
            "public_key={PEER_A}\nallowed_ip=10.1.0.0/16\nreplace_allowed_ips=true\n\
             allowed_ip=10.2.0.0/16\npublic_key={PEER_B}\nallowed_ip=10.3.0.0/16"
        );
        let update = parse(&text).unwrap();
        assert_eq!(
            update.peers[0].allowed_ips,
            [AllowedIpChange::Add(net("10.2.0.0/16"))]
        );
        assert!(update.peers[0].replace_allowed_ips);
        assert_eq!(
            update.peers[1].allowed_ips,
            [AllowedIpChange::Add(net("10.3.0.0/16"))]
        );
        assert!(!update.peers[1].replace_allowed_ips);
    }

    #[test]
    fn the_same_peer_may_appear_twice_in_order() {
        let text =
            format!("public_key={PEER_A}\nremove=true\npublic_key={PEER_A}\nallowed_ip=10.0.0.0/8");
        let update = parse(&text).unwrap();
        assert_eq!(update.peers.len(), 2);
        assert!(update.peers[0].remove);
        assert!(!update.peers[1].remove);
    }

    #[test]
    fn endpoints_in_every_form() {
        assert_eq!(
            parse_endpoint("[2001:db8::1]:51820"),
            Ok("[2001:db8::1]:51820".parse().unwrap())
        );
        let scoped = parse_endpoint("[fe80::1%3]:1").unwrap();
        let SocketAddr::V6(v6) = scoped else {
            panic!("not IPv6: {scoped}")
        };
        assert_eq!(v6.scope_id(), 3);
        let lo = parse_endpoint("[fe80::1%lo]:1").unwrap();
        assert_eq!(lo.to_string(), "[fe80::1%1]:1");
        assert!(parse_endpoint("[fe80::1%no-such-if0]:1").is_err());
        assert!(parse_endpoint("2001:db8::1:51820").is_err());
        assert!(parse_endpoint("[192.0.2.1]:1").is_err());
        assert!(parse_endpoint("example.com:51820").is_err());
        assert!(parse_endpoint("192.0.2.1:65536").is_err());
        assert!(parse_endpoint("192.0.2.1:+1").is_err());
        assert!(parse_endpoint("192.0.2.1").is_err());
    }

    fn errno_and_message(text: &str) -> (i32, String) {
        let err = parse(text).unwrap_err();
        (err.errno(), err.to_string())
    }

    #[test]
    fn bad_lines_get_the_errno_wireguard_go_sends() {
        let (errno, message) = errno_and_message("listen_port");
        assert_eq!(errno, libc::EPROTO);
        assert!(message.contains("line 2"), "{message}");

        for (text, key) in [
            ("bogus=1", "bogus"),
            ("listen_port=65536", "listen_port"),
            ("listen_port=-1", "listen_port"),
            ("listen_port= 1", "listen_port"),
            ("fwmark=0x10", "fwmark"),
            ("replace_peers=false", "replace_peers"),
            ("private_key=abc", "private_key"),
            ("public_key=xyz", "public_key"),
        ] {
            let (errno, message) = errno_and_message(text);
            assert_eq!(errno, libc::EINVAL, "{text}");
            assert!(message.contains(key), "{text}: {message}");
        }
        for line in [
            "remove=1",
            "update_only=yes",
            "replace_allowed_ips=TRUE",
            "protocol_version=2",
            "allowed_ip=10.0.0.0",
            "allowed_ip=10.0.0.0/33",
            "endpoint=nowhere",
            "persistent_keepalive_interval=70000",
            "listen_port=1",
            "preshared_key=00",
        ] {
            let (errno, message) = errno_and_message(&format!("public_key={PEER_A}\n{line}"));
            assert_eq!(errno, libc::EINVAL, "{line}");
            assert!(message.contains("line 3"), "{line}: {message}");
        }
    }

    #[test]
    fn errors_never_echo_secrets() {
        let bad_secret = format!("{}zz", &SECRET[..62]);
        for text in [
            format!("private_key={bad_secret}"),
            format!("public_key={PEER_A}\npreshared_key={bad_secret}"),
            format!("public_key={PEER_A}\npreshared_key={SECRET}0"),
            SECRET.to_string(),
        ] {
            let message = parse(&text).unwrap_err().to_string();
            assert!(!message.contains(&SECRET[..20]), "{message}");
        }
    }

    #[test]
    fn unknown_peer_key_names_the_peer() {
        let (errno, message) =
            errno_and_message(&format!("public_key={PEER_A}\nprivate_key={SECRET}"));
        assert_eq!(errno, libc::EINVAL);
        assert!(
            message.contains("KeWtbrzJDOt2XLa0k250Wp+KmscIISOUoOiGMu4ja28="),
            "{message}"
        );
        assert!(!message.contains(&SECRET[..20]), "{message}");
    }
}
