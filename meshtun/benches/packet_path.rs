//! Per-packet cost of the data plane without namespaces or system calls: a batch of packets
//! routed and encrypted (send path), and decrypted and checked against the sender's allowed
//! IPs (receive path), for full-size and small packets. And the control path: how long a
//! configuration change to 1,000 peers holds the device's control lock.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meshtun::device::benching::{hub_settings, ApplyBench, PacketBench};
use meshtun_proto::PrivateKey;

/// Peers in the control-path benchmark.
const PEERS: usize = 1_000;

const SIZES: [usize; 2] = [1420, 64];

fn encapsulate_and_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("encapsulate_and_route");
    for size in SIZES {
        let mut bench = PacketBench::new(size);
        assert_eq!(
            bench.encapsulate(),
            bench.batch_len(),
            "the send path dropped packets"
        );
        group.throughput(Throughput::Bytes((bench.batch_len() * size) as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| bench.encapsulate())
        });
    }
    group.finish();
}

fn decapsulate_and_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("decapsulate_and_check");
    for size in SIZES {
        let mut bench = PacketBench::new(size);
        bench.encapsulate();
        assert_eq!(
            bench.decapsulate(),
            bench.batch_len(),
            "the receive path dropped packets"
        );
        group.throughput(Throughput::Bytes((bench.batch_len() * size) as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            // Every round needs fresh datagrams (replays are refused); only decryption is timed.
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    bench.encapsulate();
                    let start = Instant::now();
                    std::hint::black_box(bench.decapsulate());
                    total += start.elapsed();
                }
                total
            })
        });
    }
    group.finish();
}

/// A change to 1,000 peers under the control lock: every preshared key new (an epoch's
/// bundle; the `Tunn`s are built before the lock and not timed), and an unchanged
/// configuration applied again.
fn apply_change(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply_1000_peers");
    group.sample_size(10);
    let hub = PrivateKey::generate();
    let keys: Vec<PrivateKey> = (0..PEERS).map(|_| PrivateKey::generate()).collect();
    let mut bench = ApplyBench::new(&hub_settings(&hub, &keys));
    group.bench_function("new_preshared_keys", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let next = hub_settings(&hub, &keys);
                bench.prepare(&next);
                let start = Instant::now();
                assert_eq!(bench.apply(&next), PEERS);
                total += start.elapsed();
            }
            total
        })
    });
    let same = hub_settings(&hub, &keys);
    bench.apply(&same);
    group.bench_function("no_change", |b| b.iter(|| bench.apply(&same)));
    group.finish();
}

criterion_group!(
    benches,
    encapsulate_and_route,
    decapsulate_and_check,
    apply_change
);
criterion_main!(benches);
