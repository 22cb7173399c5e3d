//! Per-packet cost of the data plane without namespaces or system calls: a batch of packets
//! routed and encrypted (send path), and decrypted and checked against the sender's allowed
//! IPs (receive path), for full-size and small packets.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meshtun::device::benching::PacketBench;

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

criterion_group!(benches, encapsulate_and_route, decapsulate_and_check);
criterion_main!(benches);
