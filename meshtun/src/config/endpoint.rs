//! A peer's endpoint as configured: a host name or address and a port, not yet resolved.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// The longest DNS name.
const MAX_HOST_LEN: usize = 253;

/// `host:port`, `[v6]:port` or `1.2.3.4:port`, kept unresolved until the device starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// UDP port, never 0.
    pub port: u16,
}

impl Endpoint {
    /// Resolves the endpoint with the system resolver and returns the first address.
    ///
    /// Literal addresses are returned without a lookup. May block on DNS.
    pub fn resolve(&self) -> io::Result<SocketAddr> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the name has no addresses"))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for Endpoint {
    type Err = String;

    /// Parses `host:port`, `[v6]:port` or `1.2.3.4:port`; the error is a reason for a message.
    fn from_str(text: &str) -> Result<Self, String> {
        let shown = text.escape_debug();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| format!("`{shown}` has '[' without a matching ']'"))?;
            let port = after.strip_prefix(':').ok_or_else(|| {
                format!("`{shown}` needs a port after ']', as in [fd00::1]:51820")
            })?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(format!(
                    "`{}` in brackets is not an IPv6 address",
                    host.escape_debug()
                ));
            }
            (host, port)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(|| {
                format!("`{shown}` is not HOST:PORT (like vpn.example.net:51820)")
            })?;
            if host.contains(':') {
                return Err(format!(
                    "`{shown}`: an IPv6 endpoint needs brackets, as in [fd00::1]:51820"
                ));
            }
            check_host(host).map_err(|reason| format!("`{shown}`: {reason}"))?;
            (host, port)
        };
        let port = match port.parse::<u16>() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "`{shown}`: the port must be a number from 1 to 65535"
                ))
            }
            Ok(port) => port,
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
        })
    }
}

/// Checks a host name or IPv4 address for characters no resolver accepts.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!("the host name is longer than {MAX_HOST_LEN} bytes"));
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_';
    if !host.chars().all(valid) {
        return Err("the host name may only hold letters, digits, '-', '_' and '.'".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(text: &str) -> Endpoint {
        text.parse().unwrap()
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(ep("vpn.example.net:51820").host, "vpn.example.net");
        assert_eq!(ep("vpn.example.net:51820").port, 51820);
        assert_eq!(ep("[fd00::1]:51820").host, "fd00::1");
        assert_eq!(ep("192.0.2.1:1").host, "192.0.2.1");
    }

    #[test]
    fn display_round_trips() {
        for text in ["vpn.example.net:51820", "[fd00::1]:51820", "192.0.2.1:443"] {
            assert_eq!(ep(text).to_string(), text);
        }
    }

    #[test]
    fn refuses_bad_endpoints_with_a_reason() {
        let err = |text: &str| text.parse::<Endpoint>().unwrap_err();
        assert!(err("fd00::1:51820").contains("needs brackets"));
        assert!(err("[fd00::1]51820").contains("needs a port"));
        assert!(err("[fd00::1:51820").contains("without a matching"));
        assert!(err("[host]:1").contains("not an IPv6 address"));
        assert!(err("host").contains("not HOST:PORT"));
        assert!(err("host:0").contains("from 1 to 65535"));
        assert!(err("host:65536").contains("from 1 to 65535"));
        assert!(err(":51820").contains("host is empty"));
        assert!(err("bad host:1").contains("may only hold"));
    }

    #[test]
    fn literal_addresses_resolve_without_dns() {
        assert_eq!(
            ep("[fd00::1]:51820").resolve().unwrap(),
            "[fd00::1]:51820".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            ep("192.0.2.1:9").resolve().unwrap(),
            "192.0.2.1:9".parse::<SocketAddr>().unwrap()
        );
    }

    #[test]
    fn localhost_resolves() {
        let addr = ep("localhost:51820").resolve().unwrap();
        assert!(addr.ip().is_loopback());
        assert_eq!(addr.port(), 51820);
    }

    #[test]
    fn unknown_names_fail() {
        // `.invalid` is reserved never to resolve (RFC 6761).
        assert!(ep("nothing.invalid:51820").resolve().is_err());
    }
}
