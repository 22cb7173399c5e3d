//! Reachability of peers over the tunnel: one ICMP or ICMPv6 echo to each peer, sent from
//! this host through the interface, all peers at once.
//!
//! # The address probed
//!
//! Each peer is probed at one address taken from its allowed IPs:
//! 1. the first single-host network (`/32` or `/128`), in configuration order;
//! 2. otherwise, for each other network in order (default routes `/0` excepted, as they name
//!    no host of the peer), its lowest host address: the network address plus one (for an
//!    IPv4 `/31` or IPv6 `/127`, where every address is a host, the network address itself),
//!    or the next ones up to four addresses in.
//!
//! A candidate is skipped if it is an address of this host, or if the device would route it
//! to another peer (a longer allowed IP of another peer contains it). A peer left without a
//! candidate is reported as [`Reachability::Unknown`].
//!
//! # Sockets
//!
//! One socket per IP version serves every peer of that version. A raw ICMP socket is tried
//! first; if the system refuses it (no `CAP_NET_RAW`), an unprivileged "ping" socket
//! (`SOCK_DGRAM`, which Linux allows to the groups in `net.ipv4.ping_group_range`). Either
//! is bound to the interface (`SO_BINDTODEVICE` on Linux, `IP_BOUND_IF` on macOS), so the
//! echo goes through the tunnel whatever the routing table says, and only replies that came
//! through it are read. Replies are matched by identifier, sequence number, source address
//! and a random token (see [`packet`]).

pub mod packet;
pub mod target;

use std::collections::HashSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand_core::{OsRng, RngCore};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::time::Instant;

pub use packet::Family;
pub use target::{local_addresses, probe_address, NoTarget};

use crate::wgcfg::PeerStatus;
use packet::{EchoRound, TOKEN_LEN};

/// The default time to wait for replies.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Largest ICMP message read (an echo reply to our requests is far smaller).
const RECV_BUFFER: usize = 2048;

/// Whether a peer answered over the tunnel.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Reachability {
    /// The peer answered.
    Reachable {
        /// The address probed.
        address: IpAddr,
        /// Round-trip time.
        #[serde(rename = "rtt_ms", serialize_with = "milliseconds")]
        rtt: Duration,
    },
    /// No reply came in time.
    Unreachable {
        /// The address probed.
        address: IpAddr,
        /// How long replies were waited for.
        #[serde(rename = "timeout_ms", serialize_with = "whole_milliseconds")]
        timeout: Duration,
    },
    /// The peer could not be probed.
    Unknown {
        /// The address that would have been probed, if one was chosen.
        address: Option<IpAddr>,
        /// Why it could not be probed.
        reason: String,
    },
}

/// A duration as milliseconds with microsecond precision.
fn milliseconds<S: serde::Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((duration.as_secs_f64() * 1e6).round() / 1e3)
}

/// A duration as whole milliseconds.
fn whole_milliseconds<S: serde::Serializer>(duration: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Probes every peer of interface `interface` (see the module documentation), waiting at
/// most `timeout` for replies. The result has one entry per peer, in order.
pub async fn probe_peers(
    interface: &str,
    peers: &[PeerStatus],
    local: &HashSet<IpAddr>,
    timeout: Duration,
) -> Vec<Reachability> {
    let targets: Vec<Result<IpAddr, NoTarget>> = (0..peers.len())
        .map(|index| probe_address(peers, index, local))
        .collect();
    let addresses: Vec<Option<IpAddr>> = targets.iter().map(|t| t.ok()).collect();
    let mut results = probe(interface, &addresses, timeout).await;
    for (result, target) in results.iter_mut().zip(&targets) {
        if let Err(why) = target {
            *result = Reachability::Unknown {
                address: None,
                reason: format!("no address to probe: {why}"),
            };
        }
    }
    results
}

/// Sends one echo to each address through `interface` and waits at most `timeout` for the
/// replies. The result has one entry per address, in order; `None` entries are reported as
/// [`Reachability::Unknown`] without probing.
pub async fn probe(
    interface: &str,
    addresses: &[Option<IpAddr>],
    timeout: Duration,
) -> Vec<Reachability> {
    probe_with(interface, addresses, timeout, &SOCKET_KINDS).await
}

/// [`probe`] with the socket kinds to try, in order.
async fn probe_with(
    interface: &str,
    addresses: &[Option<IpAddr>],
    timeout: Duration,
    kinds: &[SocketKind],
) -> Vec<Reachability> {
    let mut results: Vec<Reachability> = addresses
        .iter()
        .map(|address| Reachability::Unknown {
            address: *address,
            reason: "no address to probe".to_owned(),
        })
        .collect();
    let of_family = |family: Family| -> Vec<(usize, IpAddr)> {
        let matching = addresses.iter().enumerate().filter_map(|(index, address)| {
            address
                .filter(|a| Family::of(*a) == family)
                .map(|a| (index, a))
        });
        matching.collect()
    };
    let (v4, v6) = (of_family(Family::V4), of_family(Family::V6));
    let (v4, v6) = tokio::join!(
        probe_family(interface, Family::V4, &v4, timeout, kinds),
        probe_family(interface, Family::V6, &v6, timeout, kinds),
    );
    for (index, result) in v4.into_iter().chain(v6) {
        if let Some(slot) = results.get_mut(index) {
            *slot = result;
        }
    }
    results
}

/// Probes `targets` (index in the caller's list, address) of one family.
async fn probe_family(
    interface: &str,
    family: Family,
    targets: &[(usize, IpAddr)],
    timeout: Duration,
    kinds: &[SocketKind],
) -> Vec<(usize, Reachability)> {
    if targets.is_empty() {
        return Vec::new();
    }
    let unknown = |reason: &str| -> Vec<(usize, Reachability)> {
        targets
            .iter()
            .map(|(index, address)| {
                let reason = reason.to_owned();
                let address = Some(*address);
                (*index, Reachability::Unknown { address, reason })
            })
            .collect()
    };
    if targets.len() > usize::from(u16::MAX) {
        return unknown("too many peers to probe at once");
    }
    let socket = match EchoSocket::open(interface, family, kinds) {
        Ok(socket) => socket,
        Err(err) => return unknown(&meshtun_proto::report::describe(&err)),
    };
    let mut token = [0u8; TOKEN_LEN];
    OsRng.fill_bytes(&mut token);
    let addresses = targets.iter().map(|(_, address)| *address).collect();
    let round = EchoRound::new(family, socket.identifier, token, addresses);
    let mut pending = Pending::new(targets, timeout);
    for (sequence, (_, address)) in (0u16..).zip(targets) {
        if let Err(err) = socket.send(&round.request(sequence), *address).await {
            pending.fail(
                usize::from(sequence),
                format!("cannot send the echo: {err}"),
            );
            continue;
        }
        pending.sent(usize::from(sequence));
    }
    let deadline = Instant::now() + timeout;
    let mut buffer = vec![0u8; RECV_BUFFER];
    while pending.waiting() {
        let received = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await;
        match received {
            Err(_elapsed) => break,
            Ok(Err(err)) => {
                pending.fail_waiting(&format!("cannot read replies: {err}"));
                break;
            }
            Ok(Ok((len, from))) => {
                let message = buffer.get(..len).unwrap_or_default();
                let message = match family {
                    Family::V4 => packet::icmp_v4_message(message),
                    Family::V6 => Some(message),
                };
                if let Some(sequence) = message.and_then(|m| round.match_reply(from, m)) {
                    pending.answered(sequence);
                }
            }
        }
    }
    pending.finish()
}

/// The state of each echo of one family.
struct Pending {
    timeout: Duration,
    /// Per sequence number: caller's index, address, send time, result.
    echoes: Vec<(usize, IpAddr, Option<Instant>, Option<Reachability>)>,
}

impl Pending {
    fn new(targets: &[(usize, IpAddr)], timeout: Duration) -> Self {
        let echoes = targets
            .iter()
            .map(|(index, address)| (*index, *address, None, None))
            .collect();
        Self { timeout, echoes }
    }

    fn sent(&mut self, sequence: usize) {
        if let Some(echo) = self.echoes.get_mut(sequence) {
            echo.2 = Some(Instant::now());
        }
    }

    fn fail(&mut self, sequence: usize, reason: String) {
        if let Some(echo) = self.echoes.get_mut(sequence) {
            echo.3 = Some(Reachability::Unknown {
                address: Some(echo.1),
                reason,
            });
        }
    }

    fn fail_waiting(&mut self, reason: &str) {
        for sequence in 0..self.echoes.len() {
            if self.echoes.get(sequence).is_some_and(|e| e.3.is_none()) {
                self.fail(sequence, reason.to_owned());
            }
        }
    }

    fn answered(&mut self, sequence: usize) {
        if let Some((_, address, Some(sent), result @ None)) = self.echoes.get_mut(sequence) {
            *result = Some(Reachability::Reachable {
                address: *address,
                rtt: sent.elapsed(),
            });
        }
    }

    fn waiting(&self) -> bool {
        self.echoes.iter().any(|e| e.3.is_none())
    }

    fn finish(self) -> Vec<(usize, Reachability)> {
        let timeout = self.timeout;
        self.echoes
            .into_iter()
            .map(|(index, address, _, result)| {
                let result = result.unwrap_or(Reachability::Unreachable { address, timeout });
                (index, result)
            })
            .collect()
    }
}

/// An ICMP socket bound to one interface.
///
/// The socket is driven through tokio's `UdpSocket`, which only needs a datagram socket:
/// `sendto` and `recvfrom` with IPv4 or IPv6 addresses work on ICMP sockets alike.
struct EchoSocket {
    socket: tokio::net::UdpSocket,
    /// The echo identifier: ours for a raw socket, the kernel's for a Linux ping socket.
    identifier: u16,
}

/// The kinds of ICMP socket, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketKind {
    /// `SOCK_RAW`: needs `CAP_NET_RAW`.
    Raw,
    /// `SOCK_DGRAM` ("ping socket"): allowed to the groups in `net.ipv4.ping_group_range`
    /// on Linux, to everyone on macOS.
    Ping,
}

/// Raw first, then the unprivileged kind.
const SOCKET_KINDS: [SocketKind; 2] = [SocketKind::Raw, SocketKind::Ping];

/// Why no ICMP socket could be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("cannot open an ICMP socket ({})", describe(.0))]
    Open(Vec<(SocketKind, io::Error)>),
    #[error("cannot bind the ICMP socket to interface {interface}")]
    Bind {
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set up the ICMP socket")]
    Setup(#[source] io::Error),
}

fn describe(failures: &[(SocketKind, io::Error)]) -> String {
    let each = failures.iter().map(|(kind, err)| match kind {
        SocketKind::Raw => format!("raw: {err}"),
        SocketKind::Ping => format!("unprivileged: {err}"),
    });
    each.collect::<Vec<_>>().join("; ")
}

impl EchoSocket {
    /// The first socket of `kinds` that the system grants, bound to `interface`.
    fn open(interface: &str, family: Family, kinds: &[SocketKind]) -> Result<Self, OpenError> {
        let (domain, protocol) = match family {
            Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
            Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
        };
        let mut failures = Vec::new();
        let mut opened = None;
        for kind in kinds {
            let kind_type = match kind {
                SocketKind::Raw => Type::RAW,
                SocketKind::Ping => Type::DGRAM,
            };
            match Socket::new(domain, kind_type, Some(protocol)) {
                Ok(socket) => {
                    opened = Some((socket, *kind));
                    break;
                }
                Err(err) => failures.push((*kind, err)),
            }
        }
        let Some((socket, kind)) = opened else {
            return Err(OpenError::Open(failures));
        };
        bind_to_interface(&socket, interface, family).map_err(|source| OpenError::Bind {
            interface: interface.to_owned(),
            source,
        })?;
        let mut identifier = u16::try_from(OsRng.next_u32() & 0xffff).unwrap_or(0);
        if kind == SocketKind::Ping {
            // A Linux ping socket replaces the identifier with its "port": bind one and use it.
            let any = match family {
                Family::V4 => SocketAddr::from(([0, 0, 0, 0], 0)),
                Family::V6 => SocketAddr::from(([0u16; 8], 0)),
            };
            socket.bind(&any.into()).map_err(OpenError::Setup)?;
            let port = socket.local_addr().ok().and_then(|a| a.as_socket());
            if let Some(port) = port.map(|a| a.port()).filter(|p| *p != 0) {
                identifier = port;
            }
        }
        socket.set_nonblocking(true).map_err(OpenError::Setup)?;
        let socket = std::net::UdpSocket::from(std::os::fd::OwnedFd::from(socket));
        let socket = tokio::net::UdpSocket::from_std(socket).map_err(OpenError::Setup)?;
        Ok(Self { socket, identifier })
    }

    async fn send(&self, message: &[u8], to: IpAddr) -> io::Result<()> {
        self.socket
            .send_to(message, SocketAddr::new(to, 0))
            .await
            .map(drop)
    }

    async fn recv(&self, buffer: &mut [u8]) -> io::Result<(usize, IpAddr)> {
        let (len, from) = self.socket.recv_from(buffer).await?;
        Ok((len, from.ip()))
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn bind_to_interface(socket: &Socket, interface: &str, _family: Family) -> io::Result<()> {
    socket.bind_device(Some(interface.as_bytes()))
}

#[cfg(any(target_os = "macos", target_os = "ios"))]
fn bind_to_interface(socket: &Socket, interface: &str, family: Family) -> io::Result<()> {
    let index = nix::net::if_::if_nametoindex(interface).map_err(io::Error::from)?;
    let index = std::num::NonZeroU32::new(index)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such interface"))?;
    match family {
        Family::V4 => socket.bind_device_by_index_v4(Some(index)),
        Family::V6 => socket.bind_device_by_index_v6(Some(index)),
    }
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios"
)))]
fn bind_to_interface(_socket: &Socket, _interface: &str, _family: Family) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "binding a socket to an interface is not supported on this system",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the real prober over the loopback interface. Needs `CAP_NET_RAW` or a ping
    /// group; without either it reports the socket error, which must say so.
    #[tokio::test]
    async fn loopback_answers_and_the_result_keeps_the_order() {
        let addresses = [
            Some(IpAddr::from([127, 0, 0, 1])),
            None,
            Some(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
        ];
        let results = probe("lo", &addresses, Duration::from_secs(2)).await;
        assert_eq!(results.len(), 3);
        assert!(matches!(
            &results[1],
            Reachability::Unknown { address: None, .. }
        ));
        if !nix::unistd::geteuid().is_root() {
            for result in [&results[0], &results[2]] {
                if let Reachability::Unknown { reason, .. } = result {
                    assert!(reason.contains("ICMP socket"), "{reason}");
                }
            }
            return;
        }
        for (result, address) in [(&results[0], addresses[0]), (&results[2], addresses[2])] {
            match result {
                Reachability::Reachable { address: got, rtt } => {
                    assert_eq!(Some(*got), address);
                    assert!(*rtt < Duration::from_secs(2));
                }
                other => panic!("{address:?}: {other:?}"),
            }
        }
    }

    /// The unprivileged path: a Linux ping socket, allowed by `ping_group_range` in a
    /// network namespace of this test's own (on a thread that entered it). The kernel picks
    /// the identifier; replies only match if the prober uses it.
    #[cfg(target_os = "linux")]
    #[test]
    fn ping_sockets_are_used_when_raw_ones_are_not_available() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                !meshtun_testbed::in_ci(),
                "needs root to create a network namespace"
            );
            eprintln!("SKIP ping_sockets_are_used_when_raw_ones_are_not_available: not root");
            return;
        }
        let addresses = [
            Some(IpAddr::from([127, 0, 0, 1])),
            Some(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
        ];
        let results = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("run ip");
            assert!(up.success(), "ip link set lo up");
            std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 0").unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let timeout = Duration::from_secs(2);
            runtime.block_on(probe_with("lo", &addresses, timeout, &[SocketKind::Ping]))
        })
        .join()
        .expect("the namespace thread");
        for (result, address) in results.iter().zip(addresses) {
            match result {
                Reachability::Reachable { address: got, .. } => assert_eq!(Some(*got), address),
                other => panic!("{address:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn socket_errors_name_each_kind_tried() {
        let error = OpenError::Open(vec![
            (SocketKind::Raw, io::Error::from_raw_os_error(libc::EPERM)),
            (SocketKind::Ping, io::Error::from_raw_os_error(libc::EACCES)),
        ]);
        let text = error.to_string();
        assert!(
            text.starts_with("cannot open an ICMP socket (raw: "),
            "{text}"
        );
        assert!(text.contains("; unprivileged: "), "{text}");
    }

    #[tokio::test]
    async fn a_missing_interface_is_reported_not_probed() {
        let addresses = [Some(IpAddr::from([127, 0, 0, 1]))];
        let results = probe("mt-no-such-if", &addresses, Duration::from_millis(100)).await;
        match &results[0] {
            Reachability::Unknown { address, reason } => {
                assert_eq!(*address, addresses[0]);
                assert!(
                    reason.contains("mt-no-such-if") || reason.contains("ICMP socket"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn json_has_states_and_milliseconds() {
        let reachable = Reachability::Reachable {
            address: IpAddr::from([100, 64, 0, 2]),
            rtt: Duration::from_micros(612),
        };
        let json = serde_json::to_value(&reachable).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"state": "reachable", "address": "100.64.0.2", "rtt_ms": 0.612})
        );
        let unreachable = Reachability::Unreachable {
            address: IpAddr::from([100, 64, 0, 3]),
            timeout: Duration::from_secs(1),
        };
        let json = serde_json::to_value(&unreachable).unwrap();
        assert_eq!(json["state"], "unreachable");
        assert_eq!(json["timeout_ms"], 1000);
    }
}
