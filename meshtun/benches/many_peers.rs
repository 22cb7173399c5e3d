//! What 1,000 configured peers cost, against one: the route lookup (longest-prefix match in
//! the routing snapshot), a batch routed and encrypted to one peer, and the time
//! gated path takes to return: a bundle of 1,000 gated peers (each with a preshared key, an
//! endpoint and two networks) merged with the static settings and applied with
//! `Device::reconfigure`, as the daemon's `apply_peers` does, from scratch and when all 1,000
//! get a new preshared key (an epoch's rotation). The devices run on the in-memory
//! transports; the handshake initiations they send reach nobody.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meshtun::device::benching::{hub_peer_ip, hub_settings, ApplyBench, PacketBench};
use meshtun::device::channel::{ChannelTun, Network};
use meshtun::device::{Device, UdpFactory};
use meshtun::gate::{merge, GatedLimits, GatedPeerConfig};
use meshtun::wgcfg::DeviceSettings;
use meshtun_proto::{PresharedKey, PrivateKey};

/// The peer counts compared.
const COUNTS: [usize; 2] = [1, 1_000];
/// Peers in the reconfigure benchmark.
const PEERS: usize = 1_000;
/// Addresses looked up per round: one batch.
const LOOKUPS: usize = 128;

fn keys(n: usize) -> Vec<PrivateKey> {
    (0..n).map(|_| PrivateKey::generate()).collect()
}

/// A batch of destinations spread over the `n` peers' addresses.
fn destinations(n: usize) -> Vec<IpAddr> {
    (0..LOOKUPS).map(|i| hub_peer_ip((i * 7_919) % n)).collect()
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_lookup");
    group.throughput(Throughput::Elements(LOOKUPS as u64));
    for n in COUNTS {
        let bench = ApplyBench::new(&hub_settings(&PrivateKey::generate(), &keys(n)));
        let addrs = destinations(n);
        assert_eq!(bench.route(&addrs), LOOKUPS, "a lookup found no peer");
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| bench.route(std::hint::black_box(&addrs)))
        });
    }
    group.finish();
}

fn encapsulate_with_peers(c: &mut Criterion) {
    let mut group = c.benchmark_group("encapsulate_1420_with_peers");
    for n in COUNTS {
        let mut bench = PacketBench::with_peers(1420, n);
        assert_eq!(bench.encapsulate(), bench.batch_len(), "packets dropped");
        group.throughput(Throughput::Bytes((bench.batch_len() * 1420) as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| bench.encapsulate())
        });
    }
    group.finish();
}

/// A bundle with the peers of `settings`.
fn bundle(settings: &DeviceSettings) -> Vec<GatedPeerConfig> {
    let peers = settings.peers.iter().enumerate();
    peers
        .map(|(i, p)| GatedPeerConfig {
            node_id: format!("node-{i}"),
            settings: p.clone(),
            endpoint_name: None,
            forwards_to: Vec::new(),
        })
        .collect()
}

/// The next epoch's bundle: every preshared key new.
fn with_new_psks(bundle: &[GatedPeerConfig]) -> Vec<GatedPeerConfig> {
    let mut next = bundle.to_vec();
    for peer in &mut next {
        peer.settings.preshared_key = Some(PresharedKey::generate());
    }
    next
}

/// Merges `gated` with the static settings `statics` (no static peer) and applies the result,
/// as the daemon applies a bundle.
async fn apply<T: meshtun::device::TunIo, F: UdpFactory>(
    dev: &Device<T, F>,
    statics: &DeviceSettings,
    gated: &[GatedPeerConfig],
) {
    let limits = GatedLimits {
        allowed_prefixes: vec![
            "100.64.0.0/10".parse().expect("a prefix"),
            "fd00::/8".parse().expect("a prefix"),
        ],
        own_addresses: vec!["100.64.0.1".parse().expect("an address")],
    };
    let merged = merge(statics, &[], gated, &limits);
    assert!(merged.refused.is_empty(), "{:?}", merged.refused);
    dev.reconfigure(&merged.settings)
        .await
        .expect("the bundle applies");
}

/// CPU time of the whole process (every thread, user and system) so far.
fn process_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Adds to the totals the wall and CPU time `apply` took.
async fn timed(
    totals: &mut (Duration, Duration, u32),
    apply: impl std::future::Future<Output = ()>,
) {
    let (start, cpu) = (Instant::now(), process_cpu());
    apply.await;
    totals.0 += start.elapsed();
    totals.1 += process_cpu() - cpu;
    totals.2 += 1;
}

/// Prints the CPU time per round of `what` (the machine's other load does not change it),
/// beside the wall time criterion reports.
fn report_cpu(what: &str, totals: (Duration, Duration, u32)) {
    let n = totals.2.max(1);
    eprintln!(
        "{what}: {:?} of wall time and {:?} of CPU time (every thread) a round, over {n} rounds",
        totals.0 / n,
        totals.1 / n
    );
}

/// Lets the initiations of the last change go out (from their own task, after
/// `reconfigure` returned), untimed, so that the next round does not share the cores with
/// them.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// The gated path with 1,000 peers, timed until `Device::reconfigure` returns (the bundle
/// merged, the `Tunn`s built, the change applied under the control lock, the snapshot
/// published; the 1,000 handshake initiations go out after it returns).
fn reconfigure(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_bundle_1000_gated_peers");
    group.sample_size(10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let full = hub_settings(&PrivateKey::generate(), &keys(PEERS));
    let statics = DeviceSettings {
        peers: Vec::new(),
        ..full.clone()
    };
    let first = bundle(&full);
    let net = Network::new();
    let (tun, _handle) = ChannelTun::pair();
    let factory = net.host("192.0.2.1".parse().expect("an address"));
    let dev = rt.block_on(async { Device::start("mt-bench", tun, factory, 1420, &statics) });
    let dev = dev.expect("the device starts");
    let mut totals = (Duration::ZERO, Duration::ZERO, 0);
    group.bench_function("from_scratch", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let before = totals.0;
                for _ in 0..iters {
                    apply(&dev, &statics, &[]).await;
                    settle().await;
                    timed(&mut totals, apply(&dev, &statics, &first)).await;
                    settle().await;
                }
                totals.0 - before
            })
        })
    });
    report_cpu("from scratch", totals);
    rt.block_on(apply(&dev, &statics, &first));
    let mut current = first;
    let mut totals = (Duration::ZERO, Duration::ZERO, 0);
    group.bench_function("new_preshared_keys", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let before = totals.0;
                for _ in 0..iters {
                    let next = with_new_psks(&current);
                    timed(&mut totals, apply(&dev, &statics, &next)).await;
                    current = next;
                    settle().await;
                }
                totals.0 - before
            })
        })
    });
    report_cpu("new preshared keys", totals);
    group.finish();
    assert_eq!(dev.status().peers.len(), PEERS);
}

criterion_group!(benches, route_lookup, encapsulate_with_peers, reconfigure);
criterion_main!(benches);
