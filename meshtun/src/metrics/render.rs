//! The OpenMetrics text of one snapshot: the device's peers and counters and, for a gated
//! interface, its membership. Built at scrape time from plain data; holds no secret.

use std::fmt;
use std::time::SystemTime;

use meshtun_proto::time::unix_ms_of;

use meshtun_proto::PublicKey;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, MetricEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::device::CounterTotals;
use crate::gate::{GateStatus, CUTOFF_BUCKETS};
use crate::wgcfg::{DeviceStatus, NatKind};

/// The prefix of every metric name.
const PREFIX: &str = "meshtun";

/// The membership states, each a `state` label of `meshtun_gate_membership`.
const STATES: [&str; 4] = ["pending", "allowed", "denied", "lost"];

/// Labels of one sample.
type Labels = Vec<(&'static str, String)>;

/// What a scrape reports about one peer: its key and traffic, never its preshared key.
#[derive(Debug)]
struct PeerSample {
    public_key: PublicKey,
    rx_bytes: u64,
    tx_bytes: u64,
    last_handshake: Option<SystemTime>,
    /// [`PeerStatus::path`](crate::wgcfg::PeerStatus::path) at the scrape.
    path: &'static str,
    endpoint_since: Option<SystemTime>,
}

/// Everything one scrape reports, copied out of the device and the gate status.
#[derive(Debug)]
struct Sample {
    peers: Vec<PeerSample>,
    counters: CounterTotals,
    gate: Option<GateStatus>,
    now: SystemTime,
    /// Packet worker threads at real-time priority (process-wide, see [`crate::sched`]).
    realtime_workers: u64,
    /// Times a packet worker dropped to normal priority after running too long.
    worker_demotions: u64,
}

/// The OpenMetrics text for interface `status` with `counters` and, when gated, `gate`,
/// with ages measured at `now`.
pub(super) fn render(
    status: &DeviceStatus,
    counters: CounterTotals,
    gate: Option<GateStatus>,
    now: SystemTime,
) -> String {
    let relay = gate
        .as_ref()
        .and_then(|g| g.relay.as_ref())
        .map(|r| r.server);
    let peers = status
        .peers
        .iter()
        .map(|peer| PeerSample {
            public_key: peer.public_key,
            rx_bytes: peer.rx_bytes,
            tx_bytes: peer.tx_bytes,
            last_handshake: peer.last_handshake,
            path: peer.path(now, relay),
            endpoint_since: peer.endpoint_since,
        })
        .collect();
    let sample = Sample {
        peers,
        counters,
        gate,
        now,
        realtime_workers: crate::sched::realtime_threads(),
        worker_demotions: crate::sched::demotions(),
    };
    let interface = [("interface".into(), status.name.clone().into())];
    let mut registry = Registry::with_prefix_and_labels(PREFIX, interface.into_iter());
    registry.register_collector(Box::new(sample));
    let mut out = String::new();
    // Writing into a String cannot fail, and the collector itself never fails.
    let _ = encode(&mut out, &registry);
    out
}

impl Collector for Sample {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        self.encode_device(&mut encoder)?;
        self.encode_scheduling(&mut encoder)?;
        if let Some(gate) = &self.gate {
            self.encode_gate(gate, &mut encoder)?;
        }
        Ok(())
    }
}

impl Sample {
    fn encode_scheduling(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        gauges(
            e,
            "packet_workers_realtime",
            "Packet worker threads running at real-time priority ([interface] scheduling)",
            None,
            [(vec![], self.realtime_workers)],
        )?;
        counters(
            e,
            "packet_worker_demotions",
            "Times a packet worker ran 50 ms without idling and dropped to normal priority",
            None,
            [(vec![], self.worker_demotions)],
        )
    }

    fn encode_device(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let count = self.peers.len() as u64;
        gauges(
            e,
            "peers",
            "Peers configured on the interface",
            None,
            [(vec![], count)],
        )?;
        let per_peer = |value: fn(&PeerSample) -> u64| {
            self.peers
                .iter()
                .map(move |p| (self.peer_labels(&p.public_key), value(p)))
        };
        counters(
            e,
            "peer_receive",
            "Bytes of datagrams received from the peer (handshakes and data), as wg counts transfer",
            Some(Unit::Bytes),
            per_peer(|p| p.rx_bytes),
        )?;
        counters(
            e,
            "peer_transmit",
            "Bytes of datagrams sent to the peer (handshakes and data), as wg counts transfer",
            Some(Unit::Bytes),
            per_peer(|p| p.tx_bytes),
        )?;
        gauges(
            e,
            "peer_last_handshake_age",
            "Seconds since the last completed handshake with the peer (absent before the first)",
            Some(Unit::Seconds),
            self.peers.iter().filter_map(|p| {
                let at = p.last_handshake?;
                Some((self.peer_labels(&p.public_key), age(self.now, at)))
            }),
        )?;
        self.encode_paths(e)?;
        self.encode_counters(e)
    }

    /// Per gated peer: its path (`direct`, `relayed` with the relay server as `via`,
    /// `trying`, `none`) and since when its endpoint is the one in use.
    fn encode_paths(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let gated = |p: &&PeerSample| {
            self.gate
                .as_ref()
                .is_some_and(|g| g.peer(&p.public_key).is_some())
        };
        gauges(
            e,
            "peer_path",
            "1 for the path to each gated peer: direct (a recent handshake), relayed (the same, through the relay named by via), trying (its candidates are probed) or none",
            None,
            self.peers.iter().filter(gated).map(|p| {
                let mut labels = self.peer_labels(&p.public_key);
                labels.push(("path", p.path.to_owned()));
                if p.path == "relayed" {
                    let via = self.gate.as_ref().and_then(|g| g.relay.as_ref());
                    labels.push(("via", via.map_or(String::new(), |r| r.server.to_string())));
                }
                (labels, 1u32)
            }),
        )?;
        gauges(
            e,
            "peer_endpoint_age",
            "Seconds since the endpoint in use for the peer last changed",
            Some(Unit::Seconds),
            self.peers.iter().filter(gated).filter_map(|p| {
                let at = p.endpoint_since?;
                Some((self.peer_labels(&p.public_key), age(self.now, at)))
            }),
        )
    }

    fn encode_counters(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let c = &self.counters;
        let help = "Packets decrypted and delivered to the host";
        counters(e, "received_packets", help, None, [(vec![], c.packets_in)])?;
        let help = "Bytes of packets decrypted and delivered to the host";
        counters(
            e,
            "received",
            help,
            Some(Unit::Bytes),
            [(vec![], c.bytes_in)],
        )?;
        let help = "Packets encrypted and sent to peers";
        counters(e, "sent_packets", help, None, [(vec![], c.packets_out)])?;
        let reason = |text: &str| vec![("reason", text.to_owned())];
        counters(
            e,
            "dropped_packets",
            "Packets dropped, by reason: invalid (a datagram that failed to parse or \
             authenticate, or a replay), source (an inner source outside the sender's allowed \
             IPs), no_route (no peer for the destination), no_endpoint (the peer has no endpoint), \
             queue_full (the peer has no session yet and the device's queue budget is spent), \
             forward (on a hub, a packet from a spoke to a peer it may not reach through it)",
            None,
            [
                (reason("invalid"), c.dropped_invalid),
                (reason("source"), c.dropped_source),
                (reason("no_route"), c.dropped_no_route),
                (reason("no_endpoint"), c.dropped_no_endpoint),
                (reason("queue_full"), c.dropped_queue_full),
                (reason("forward"), c.dropped_forward),
            ],
        )?;
        let help = "Packets a hub decrypted from one gated peer and encrypted again to another";
        counters(e, "forwarded_packets", help, None, [(vec![], c.forwarded)])?;
        let help = "Cookie replies sent to handshakes under load";
        counters(e, "cookie_replies", help, None, [(vec![], c.cookies_sent)])
    }

    /// The labels of a peer: its public key, and its node id when the bundle in force lists it.
    fn peer_labels(&self, key: &PublicKey) -> Labels {
        let mut labels = vec![("public_key", key.to_base64())];
        if let Some(peer) = self.gate.as_ref().and_then(|gate| gate.peer(key)) {
            labels.push(("node_id", peer.node_id.clone()));
        }
        labels
    }

    fn encode_gate(&self, gate: &GateStatus, e: &mut DescriptorEncoder) -> fmt::Result {
        let mut info = e.encode_descriptor(
            "gate",
            "This node's identity at the controller, the controller instance in use and its loss policy",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&vec![
            ("node_id", gate.node_id.clone()),
            ("controller_url", gate.controller_url.clone()),
            (
                "controller_key",
                gate.controller_key
                    .map(|k| k.to_base64())
                    .unwrap_or_default(),
            ),
            ("loss_policy", gate.loss_policy.to_owned()),
        ])?;
        let help = "Moves from one controller instance to another since start";
        let value = gate.failovers;
        counters(
            e,
            "gate_controller_failovers",
            help,
            None,
            [(vec![], value)],
        )?;
        let state = gate.membership.as_str().to_ascii_lowercase();
        gauges(
            e,
            "gate_membership",
            "The membership enforced now: 1 for the current state, 0 for the others",
            None,
            STATES.map(|s| (vec![("state", s.to_owned())], u64::from(s == state))),
        )?;
        let help = "Epoch of the bundle in force (absent before the first bundle)";
        gauges(
            e,
            "gate_epoch",
            help,
            None,
            gate.epoch.map(|ep| (vec![], ep)),
        )?;
        self.encode_gate_times(gate, e)?;
        self.encode_gate_counts(gate, e)?;
        self.encode_cutoffs(gate, e)?;
        self.encode_nat(gate, e)
    }

    fn encode_nat(&self, gate: &GateStatus, e: &mut DescriptorEncoder) -> fmt::Result {
        let now_ms = unix_ms_of(self.now);
        gauges(
            e,
            "stun_reflexive_age",
            "Seconds since the STUN server answered, labelled with the reflexive address it saw",
            Some(Unit::Seconds),
            gate.nat.reflexive.iter().map(|r| {
                let labels = vec![
                    ("server", r.server.clone()),
                    ("address", r.address.to_string()),
                ];
                (labels, ms_age(now_ms, r.at_ms))
            }),
        )?;
        let kind = gate.nat.kind;
        gauges(
            e,
            "nat",
            "The kind of NAT STUN shows: 1 for the current kind, 0 for the others",
            None,
            [
                NatKind::Unknown,
                NatKind::EndpointIndependent,
                NatKind::EndpointDependent,
            ]
            .map(|k| (vec![("kind", k.as_str().to_owned())], u64::from(k == kind))),
        )?;
        let help = "STUN responses dropped: malformed, unknown transaction, or wrong source";
        let value = gate.stun_rejected;
        counters(e, "stun_rejected", help, None, [(vec![], value)])?;
        self.encode_relay(gate, e)
    }

    fn encode_relay(&self, gate: &GateStatus, e: &mut DescriptorEncoder) -> fmt::Result {
        let Some(relay) = &gate.relay else {
            return Ok(());
        };
        let relayed = relay.relayed.map_or(String::new(), |a| a.to_string());
        gauges(
            e,
            "relay_allocated",
            "1 while this node holds an allocation on the TURN relay, labelled with the relayed address",
            None,
            [(
                vec![("server", relay.server.to_string()), ("relayed", relayed)],
                u64::from(relay.relayed.is_some()),
            )],
        )?;
        let left = relay.expires_s.saturating_sub(unix_ms_of(self.now) / 1000);
        gauges(
            e,
            "relay_credentials_expiry",
            "Seconds until the relay credentials of the bundle in force expire",
            Some(Unit::Seconds),
            [(vec![], left)],
        )
    }

    fn encode_gate_times(&self, gate: &GateStatus, e: &mut DescriptorEncoder) -> fmt::Result {
        let now_ms = unix_ms_of(self.now);
        gauges(
            e,
            "gate_controller_contact_age",
            "Seconds since the controller last answered (absent before the first answer)",
            Some(Unit::Seconds),
            gate.last_contact_ms.map(|at| (vec![], ms_age(now_ms, at))),
        )?;
        gauges(
            e,
            "gate_bundle_remaining",
            "Seconds until the bundle in force ends; negative once it has ended",
            Some(Unit::Seconds),
            gate.not_after_ms
                .map(|end| (vec![], (end as f64 - now_ms as f64) / 1000.0)),
        )?;
        gauges(
            e,
            "gate_grace_remaining",
            "Seconds until the bundle in force ends plus the grace: at 0 the loss policy applies",
            Some(Unit::Seconds),
            gate.not_after_ms.map(|end| {
                let limit = end.saturating_add(gate.grace_ms);
                (vec![], (limit as f64 - now_ms as f64) / 1000.0)
            }),
        )?;
        gauges(
            e,
            "gate_psk_age",
            "Seconds since the gated peer's current preshared key was put in use",
            Some(Unit::Seconds),
            gate.peers.iter().map(|p| {
                let labels = vec![
                    ("public_key", p.public_key.to_base64()),
                    ("node_id", p.node_id.clone()),
                ];
                (labels, ms_age(now_ms, p.psk_since_ms))
            }),
        )
    }

    fn encode_gate_counts(&self, gate: &GateStatus, e: &mut DescriptorEncoder) -> fmt::Result {
        let peers = gate.peers.len() as u64;
        let help = "Gated peers configured from the bundle in force";
        gauges(e, "gate_peers", help, None, [(vec![], peers)])?;
        let help = "Benchmarks the controller acknowledged since start";
        let value = gate.benchmarks_submitted;
        counters(
            e,
            "gate_benchmarks_submitted",
            help,
            None,
            [(vec![], value)],
        )?;
        let help = "Benchmark runs or submissions that failed since start";
        let value = gate.benchmark_failures;
        counters(e, "gate_benchmark_failures", help, None, [(vec![], value)])?;
        let help = "Bundles applied since start";
        let value = gate.bundles_applied;
        counters(e, "gate_bundles_applied", help, None, [(vec![], value)])?;
        let help = "Peers of accepted bundles refused for their membership signature since start";
        let value = gate.membership_refused;
        counters(e, "gate_membership_refused", help, None, [(vec![], value)])?;
        let help = "Peer observations since start, by outcome: sent (stored by the controller), refused (4xx) or failed (not signed, or no controller answered)";
        let outcomes = [
            ("sent", gate.observations_sent),
            ("refused", gate.observations_refused),
            ("failed", gate.observations_failed),
        ];
        let samples = outcomes.map(|(outcome, n)| (vec![("outcome", outcome.to_owned())], n));
        counters(e, "gate_observations", help, None, samples)
    }

    fn encode_cutoffs(&self, gate: &GateStatus, e: &mut DescriptorEncoder) -> fmt::Result {
        let help =
            "Peers cut off since start (left a bundle, or removed by a denial or the loss rule)";
        counters(e, "gate_cutoffs", help, None, [(vec![], gate.cutoffs)])?;
        let mut histogram = e.encode_descriptor(
            "gate_decision_to_cutoff",
            "Time from the controller's decision to the cut-off of a peer it removed",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        let count = gate.cutoff_seconds_count;
        // Per bucket (the encoder sums them), the longer ones in +Inf.
        let mut buckets: Vec<(f64, u64)> = CUTOFF_BUCKETS
            .into_iter()
            .zip(gate.cutoff_buckets)
            .collect();
        let bounded: u64 = gate.cutoff_buckets.iter().sum();
        buckets.push((f64::INFINITY, count.saturating_sub(bounded)));
        histogram.encode_histogram::<Labels>(gate.cutoff_seconds_sum, count, &buckets, None)?;
        gauges(
            e,
            "gate_last_decision_to_cutoff",
            "Time from the controller's decision to the last cut-off (absent before the first)",
            Some(Unit::Seconds),
            gate.last_cutoff_seconds.map(|s| (vec![], s)),
        )
    }
}

/// One gauge family: a descriptor, then a sample per label set.
fn gauges<V: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    samples.into_iter().try_for_each(|(labels, value)| {
        sample(&mut family, &labels, |m: &mut MetricEncoder| {
            m.encode_gauge(&value)
        })
    })
}

/// One counter family: a descriptor, then a sample per label set.
fn counters<V: EncodeCounterValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    samples: impl IntoIterator<Item = (Labels, V)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
    samples.into_iter().try_for_each(|(labels, value)| {
        sample(&mut family, &labels, |m: &mut MetricEncoder| {
            m.encode_counter::<Labels, V, f64>(&value, None)
        })
    })
}

/// Encodes one sample of `family` with `labels` (none: the family's name alone).
fn sample(
    family: &mut MetricEncoder,
    labels: &Labels,
    value: impl FnOnce(&mut MetricEncoder) -> fmt::Result,
) -> fmt::Result {
    if labels.is_empty() {
        value(family)
    } else {
        value(&mut family.encode_family(labels)?)
    }
}

/// Seconds from `then` to `now`, 0 if `then` is later.
fn age(now: SystemTime, then: SystemTime) -> f64 {
    now.duration_since(then).unwrap_or_default().as_secs_f64()
}

/// Seconds from Unix milliseconds `then_ms` to `now_ms`, 0 if `then_ms` is later.
fn ms_age(now_ms: u64, then_ms: u64) -> f64 {
    now_ms.saturating_sub(then_ms) as f64 / 1000.0
}

#[cfg(test)]
mod tests;
