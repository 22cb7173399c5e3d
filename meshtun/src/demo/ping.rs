//! Pings between the nodes through the tunnel: in each node's namespace, meshtun's prober
//! ([`crate::probe`], the one behind `meshtun show`) sends one ICMP echo to each other node
//! through the node's tunnel interface; all nodes at once, each waiting at most the timeout.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

/// The most pings [`Steady`] sends in each direction, and the longest it runs, whatever
/// happens to the demo's loop.
const STEADY_MAX: (u32, Duration) = (6_000, Duration::from_secs(600));

/// Pings answered and sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Answered within the timeout.
    pub answered: u32,
    /// Sent (or tried).
    pub sent: u32,
}

/// Pings one way from each of its senders to its target, one after the other at a steady
/// pace, until [`Steady::finish`]: each on its own thread, in its sender's namespace.
#[derive(Debug)]
pub struct Steady {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Tally>>,
}

impl Steady {
    /// Starts pinging `to` from each `from`, every `every`, each ping waiting at most
    /// `timeout`.
    pub fn start(
        pairs: Vec<(PingFrom, &'static NodeSpec)>,
        every: Duration,
        timeout: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = pairs
            .into_iter()
            .map(|(from, to)| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || steady_from(&from, to, every, timeout, &stop))
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops and returns the total over every direction.
    pub fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        std::mem::take(&mut self.threads)
            .into_iter()
            .map(|t| t.join().unwrap_or_default())
            .fold(Tally::default(), |sum, t| Tally {
                answered: sum.answered + t.answered,
                sent: sum.sent + t.sent,
            })
    }
}

impl Drop for Steady {
    /// Stops the threads (on an early end of the demo); they end within one ping.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One direction of [`Steady`]. A namespace that cannot be entered counts one ping sent,
/// none answered.
fn steady_from(
    from: &PingFrom,
    to: &NodeSpec,
    every: Duration,
    timeout: Duration,
    stop: &AtomicBool,
) -> Tally {
    let address = [Some(IpAddr::from(to.tunnel))];
    let started = Instant::now();
    let result = meshtun_testbed::enter_named(&from.namespace, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut tally = Tally::default();
        while !stop.load(Ordering::Relaxed)
            && tally.sent < STEADY_MAX.0
            && started.elapsed() < STEADY_MAX.1
        {
            let sent_at = Instant::now();
            let result = runtime.block_on(probe::probe(&from.ifname, &address, timeout));
            tally.sent += 1;
            if result
                .into_iter()
                .next()
                .map(Outcome::from)
                .is_some_and(|o| matches!(o, Outcome::Reply(_)))
            {
                tally.answered += 1;
            }
            std::thread::sleep(every.saturating_sub(sent_at.elapsed()));
        }
        Ok::<_, std::io::Error>(tally)
    });
    match result {
        Ok(Ok(tally)) => tally,
        _ => Tally {
            answered: 0,
            sent: 1,
        },
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
    fn steady_pings_from_a_missing_namespace_count_as_lost() {
        let nodes = &crate::demo::plan::NODES;
        let from = PingFrom {
            node: &nodes[0],
            namespace: "mtdemo-no-such-namespace".into(),
            ifname: "mtdemo0a".into(),
        };
        let steady = Steady::start(
            vec![(from, &nodes[1])],
            Duration::from_millis(10),
            Duration::from_millis(10),
        );
        assert_eq!(
            steady.finish(),
            Tally {
                answered: 0,
                sent: 1
            }
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
