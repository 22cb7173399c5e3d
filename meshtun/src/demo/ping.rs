//! Pings between the nodes through the tunnel: in each node's namespace, meshtun's prober
//! ([`crate::probe`], the one behind `meshtun show`) sends one ICMP echo to each other node
//! through the node's tunnel interface; all nodes at once, each waiting at most the timeout.

use std::net::IpAddr;
use std::time::Duration;

use super::plan::NodeSpec;
use crate::probe::{self, Reachability};

/// What one ping found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The answer came after this long.
    Reply(Duration),
    /// No answer within the timeout.
    NoReply,
    /// The request could not be sent (no interface yet, no socket).
    SendFailed(String),
}

impl From<Reachability> for Outcome {
    fn from(r: Reachability) -> Self {
        match r {
            Reachability::Reachable { rtt, .. } => Outcome::Reply(rtt),
            Reachability::Unreachable { .. } => Outcome::NoReply,
            Reachability::Unknown { reason, .. } => Outcome::SendFailed(reason),
        }
    }
}

/// One ping from one node to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The sender's letter.
    pub from: char,
    /// The target's letter.
    pub to: char,
    /// What happened.
    pub outcome: Outcome,
}

impl Probe {
    /// Whether the target answered.
    pub fn answered(&self) -> bool {
        matches!(self.outcome, Outcome::Reply(_))
    }
}

/// A node to ping from: its namespace and tunnel interface.
#[derive(Debug, Clone)]
pub struct PingFrom {
    /// The node.
    pub node: &'static NodeSpec,
    /// Its namespace.
    pub namespace: String,
    /// Its tunnel interface.
    pub ifname: String,
}

/// The nodes that ping each other.
#[derive(Debug, Clone)]
pub struct Pinger {
    nodes: Vec<PingFrom>,
}

impl Pinger {
    /// Pings among `nodes`.
    pub fn new(nodes: Vec<PingFrom>) -> Self {
        Self { nodes }
    }

    /// Pings every node from every other node through the tunnel, all at once, waiting at
    /// most `timeout`. Returns one probe per ordered pair, in node order. Blocks.
    pub fn round(&self, timeout: Duration) -> Vec<Probe> {
        std::thread::scope(|s| {
            let handles: Vec<_> = self
                .nodes
                .iter()
                .map(|from| {
                    let targets: Vec<&NodeSpec> = self
                        .nodes
                        .iter()
                        .filter(|to| to.node.id != from.node.id)
                        .map(|to| to.node)
                        .collect();
                    s.spawn(move || ping_from(from, &targets, timeout))
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    }
}

/// Pings `targets` from inside `from`'s namespace, through its tunnel interface.
fn ping_from(from: &PingFrom, targets: &[&NodeSpec], timeout: Duration) -> Vec<Probe> {
    let addresses: Vec<Option<IpAddr>> = targets.iter().map(|t| Some(t.tunnel.into())).collect();
    let results = meshtun_testbed::enter_named(&from.namespace, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(runtime.block_on(probe::probe(&from.ifname, &addresses, timeout)))
    });
    let outcomes: Vec<Outcome> = match results.and_then(|r| {
        r.map_err(|e: std::io::Error| meshtun_testbed::Error::io("cannot start a runtime", e))
    }) {
        Ok(results) => results.into_iter().map(Outcome::from).collect(),
        Err(e) => {
            let why = format!("cannot ping from {}: {e}", from.namespace);
            vec![Outcome::SendFailed(why); targets.len()]
        }
    };
    targets
        .iter()
        .zip(outcomes)
        .map(|(to, outcome)| Probe {
            from: from.node.letter,
            to: to.letter,
            outcome,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn reachability_maps_to_what_the_matrix_shows() {
        let address = IpAddr::V4(Ipv4Addr::new(100, 64, 0, 2));
        let rtt = Duration::from_micros(400);
        assert_eq!(
            Outcome::from(Reachability::Reachable { address, rtt }),
            Outcome::Reply(rtt)
        );
        let timeout = Duration::from_secs(1);
        assert_eq!(
            Outcome::from(Reachability::Unreachable { address, timeout }),
            Outcome::NoReply
        );
        let reason = "cannot bind the ICMP socket to interface x: No such device".to_owned();
        assert_eq!(
            Outcome::from(Reachability::Unknown {
                address: Some(address),
                reason: reason.clone()
            }),
            Outcome::SendFailed(reason)
        );
    }

    #[test]
    fn a_namespace_that_does_not_exist_is_reported_for_every_target() {
        let nodes = &crate::demo::plan::NODES;
        let pinger = Pinger::new(vec![
            PingFrom {
                node: &nodes[0],
                namespace: "mtdemo-no-such-namespace".into(),
                ifname: "mtdemo0a".into(),
            },
            PingFrom {
                node: &nodes[1],
                namespace: "mtdemo-no-such-namespace".into(),
                ifname: "mtdemo0b".into(),
            },
        ]);
        let probes = pinger.round(Duration::from_millis(10));
        assert_eq!(probes.len(), 2);
        assert_eq!((probes[0].from, probes[0].to), ('a', 'b'));
        assert_eq!((probes[1].from, probes[1].to), ('b', 'a'));
        for p in &probes {
            assert!(
                matches!(&p.outcome, Outcome::SendFailed(why) if why.contains("mtdemo-no-such-namespace")),
                "{p:?}"
            );
        }
    }
}
