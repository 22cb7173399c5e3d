//! The daemon's STUN client, sans I/O: it says when to send which Binding request to which
//! server, matches the responses and keeps each server's answer (the node's reflexive
//! address, as that server saw the WireGuard socket). The daemon's task does the I/O: it
//! resolves the servers' names, sends the requests from the WireGuard socket and feeds the
//! responses the device's receive path hands over.
//!
//! - A response counts only if its transaction id is the one outstanding for a server and it
//!   comes from that server's address: an on-path attacker spraying responses cannot plant
//!   a false address without seeing the request.
//! - A lost request is sent again after [`FIRST_RTO`], doubling, [`ATTEMPTS`] times in all;
//!   then the server's answer is forgotten and it is asked again at the next refresh.
//! - Every server is asked again every [`REFRESH`] (which also keeps the NAT's mapping
//!   alive), and at once after [`StunClient::refresh_now`] (the local addresses changed).
//! - With two servers of one address family, equal answers mean an endpoint-independent
//!   mapping; different ones an endpoint-dependent ("symmetric") NAT.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshtun_proto::stun::{binding_request, parse_binding_response, TransactionId};

use crate::wgcfg::{NatKind, NatStatus, Reflexive};

/// STUN servers asked at most.
pub const MAX_SERVERS: usize = 4;

/// How often each server is asked again.
pub const REFRESH: Duration = Duration::from_secs(25);

/// The first retransmission timeout (RFC 8489 suggests 500 ms).
pub const FIRST_RTO: Duration = Duration::from_millis(500);

/// Requests sent per transaction, the first included.
pub const ATTEMPTS: u32 = 5;

/// One outstanding transaction.
#[derive(Debug, Clone, Copy)]
struct Pending {
    id: TransactionId,
    /// The address the request went to: only it may answer.
    to: SocketAddr,
    /// Requests sent so far.
    sent: u32,
    /// When to send again, or give up.
    deadline: Instant,
}

/// One configured server.
#[derive(Debug, Clone)]
struct Server {
    name: String,
    addr: Option<SocketAddr>,
    pending: Option<Pending>,
    /// When the next transaction starts (if none is pending).
    next: Instant,
    answer: Option<(SocketAddr, u64)>,
}

/// What became of a datagram handed to [`StunClient::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// It answered a server's outstanding request.
    Answered,
    /// Not a Binding success response.
    Malformed,
    /// No outstanding request has its transaction id.
    UnknownTransaction,
    /// Its transaction id is outstanding, but for another address than its source.
    WrongSource,
}

/// A request to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The server's address.
    pub to: SocketAddr,
    /// The Binding request.
    pub datagram: Vec<u8>,
}

/// The STUN client of one WireGuard socket.
#[derive(Debug)]
pub struct StunClient {
    servers: Vec<Server>,
    rejected: u64,
}

impl StunClient {
    /// A client of `servers` (`host:port`, at most [`MAX_SERVERS`]; more are ignored), none
    /// resolved yet.
    pub fn new(servers: &[String], now: Instant) -> Self {
        Self {
            servers: servers
                .iter()
                .take(MAX_SERVERS)
                .map(|name| Server {
                    name: name.clone(),
                    addr: None,
                    pending: None,
                    next: now,
                    answer: None,
                })
                .collect(),
            rejected: 0,
        }
    }

    /// The configured server names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.servers.iter().map(|s| s.name.as_str())
    }

    /// Sets server `index`'s address (`None`: it does not resolve). A new address drops
    /// the outstanding request and the old answer, and asks at once.
    pub fn set_address(&mut self, index: usize, addr: Option<SocketAddr>, now: Instant) {
        let Some(server) = self.servers.get_mut(index) else {
            return;
        };
        if server.addr == addr {
            return;
        }
        server.addr = addr;
        server.pending = None;
        server.answer = None;
        server.next = now;
    }

    /// Asks every server again now (the local addresses changed).
    pub fn refresh_now(&mut self, now: Instant) {
        for server in &mut self.servers {
            server.pending = None;
            server.next = now;
        }
    }

    /// The next request due at `now`, if any; call until `None`.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        for server in &mut self.servers {
            let Some(addr) = server.addr else {
                continue;
            };
            match &mut server.pending {
                Some(p) if p.deadline <= now => {
                    if p.sent >= ATTEMPTS {
                        // No answer: what it said before may no longer hold.
                        server.pending = None;
                        server.answer = None;
                        server.next = now + REFRESH;
                        continue;
                    }
                    p.sent += 1;
                    p.deadline = now + FIRST_RTO * (1 << (p.sent - 1));
                    return Some(Transmit {
                        to: p.to,
                        datagram: binding_request(p.id),
                    });
                }
                Some(_) => {}
                None if server.next <= now => {
                    let id = TransactionId::random();
                    server.pending = Some(Pending {
                        id,
                        to: addr,
                        sent: 1,
                        deadline: now + FIRST_RTO,
                    });
                    return Some(Transmit {
                        to: addr,
                        datagram: binding_request(id),
                    });
                }
                None => {}
            }
        }
        None
    }

    /// When [`Self::poll_transmit`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.servers
            .iter()
            .filter(|s| s.addr.is_some())
            .map(|s| s.pending.map_or(s.next, |p| p.deadline))
            .min()
    }

    /// A STUN datagram from `src`, received on the WireGuard socket at `now_ms` (Unix
    /// milliseconds, for the report).
    pub fn handle(
        &mut self,
        src: SocketAddr,
        datagram: &[u8],
        now: Instant,
        now_ms: u64,
    ) -> Handled {
        let Ok(response) = parse_binding_response(datagram) else {
            self.rejected += 1;
            return Handled::Malformed;
        };
        let Some(server) = self
            .servers
            .iter_mut()
            .find(|s| s.pending.is_some_and(|p| p.id == response.transaction))
        else {
            self.rejected += 1;
            return Handled::UnknownTransaction;
        };
        if server.pending.is_some_and(|p| p.to != src) {
            self.rejected += 1;
            return Handled::WrongSource;
        }
        server.pending = None;
        server.answer = Some((response.mapped, now_ms));
        server.next = now + REFRESH;
        Handled::Answered
    }

    /// Responses dropped since start (malformed, unknown, from the wrong source).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// The answers in force and the kind of NAT they show.
    pub fn status(&self) -> NatStatus {
        let reflexive: Vec<Reflexive> = self
            .servers
            .iter()
            .filter_map(|s| {
                s.answer.map(|(address, at_ms)| Reflexive {
                    server: s.name.clone(),
                    address,
                    at_ms,
                })
            })
            .collect();
        // Two names for one server address prove nothing: compare distinct servers only.
        let mut distinct: Vec<(SocketAddr, SocketAddr)> = Vec::new();
        for s in &self.servers {
            if let (Some(addr), Some((mapped, _))) = (s.addr, s.answer) {
                if !distinct.iter().any(|(a, _)| *a == addr) {
                    distinct.push((addr, mapped));
                }
            }
        }
        let mapped: Vec<SocketAddr> = distinct.into_iter().map(|(_, m)| m).collect();
        NatStatus {
            reflexive,
            kind: nat_kind(&mapped),
        }
    }
}

/// Compares the answers of servers of one address family (the first family with two).
fn nat_kind(answers: &[SocketAddr]) -> NatKind {
    for v4 in [true, false] {
        let mut same_family = answers.iter().filter(|a| a.is_ipv4() == v4);
        let Some(first) = same_family.next() else {
            continue;
        };
        let mut compared = false;
        for other in same_family {
            if other != first {
                return NatKind::EndpointDependent;
            }
            compared = true;
        }
        if compared {
            return NatKind::EndpointIndependent;
        }
    }
    NatKind::Unknown
}

#[cfg(test)]
mod tests;
