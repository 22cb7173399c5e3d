//! The tables: one per backend, as the bench always printed them, then the main figures of
//! every backend side by side.

use std::time::Duration;

use crate::load::LoadReport;
use crate::{Args, Row};

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A deny's notice time, or why there is none.
fn notice_ms(notice: Option<Duration>) -> String {
    notice.map_or_else(|| "none (the bundles came first)".to_owned(), ms)
}

/// Prints every scenario `backend` ran (`description`: where its data lived).
pub fn print_table(backend: &str, description: &str, rows: &[Row], args: &Args) {
    println!();
    println!("=== {backend}: {description}");
    println!();
    for row in rows {
        let b = &row.build;
        let per_bundle = b.total / u32::try_from(b.count.max(1)).unwrap_or(u32::MAX);
        println!("{}", row.name);
        println!(
            "  setup                  {} nodes enrolled in {}, {} signed benchmarks stored one at a time in {} ({:.0}/s)",
            row.nodes,
            ms(row.enroll),
            row.nodes,
            ms(row.benchmarks),
            per_second(row.nodes, row.benchmarks)
        );
        println!(
            "  rotation               {} (decide every node, commit epoch; median of {})",
            ms(row.rotation),
            args.rotations
        );
        println!(
            "  derive every pair key  {} for {} pairs on one core ({:.2} µs per pair)",
            ms(row.pair_keys.1),
            row.pair_keys.0,
            row.pair_keys.1.as_secs_f64() * 1e6 / row.pair_keys.0.max(1) as f64
        );
        println!(
            "  build every bundle     {} for {} bundles on {} threads ({:.1} µs of wall time per bundle), {} sealed keys",
            ms(b.total),
            b.count,
            std::thread::available_parallelism().map_or(1, usize::from),
            per_bundle.as_secs_f64() * 1e6,
            b.peers
        );
        println!("  rotation + bundles     {}", ms(row.rotation + b.total));
        println!(
            "  bundle size            mean {:.1} KiB, max {:.1} KiB",
            b.mean_bytes as f64 / 1024.0,
            b.max_bytes as f64 / 1024.0
        );
        for (label, r) in &row.serving {
            println!("  serving ({label:<10})    {}", load_line(r));
        }
        println!("  benchmark submissions  {}", load_line(&row.submissions));
        println!(
            "  deny                   cut-off notice served {} after the rotation began, the epoch's bundle {} (every bundle built)",
            notice_ms(row.deny.notice),
            ms(row.deny.bundles)
        );
        println!();
    }
    println!(
        "serving and submissions: {} concurrent keep-alive clients for {} s on the same machine (submissions: at most one per node, each node's in seq order); every request carries its own signature and nonce (signed before the clock starts) and is verified by the controller; a submission is answered after its commit",
        args.clients, args.seconds
    );
}

/// One serving or submission run: rate, throughput, outcomes, latency.
fn load_line(r: &LoadReport) -> String {
    format!(
        "{:>8.0} req/s, {:.1} MiB/s, {} ok, {} failed, latency p50 {} p90 {} p99 {} max {}{}",
        r.rate(),
        r.bytes as f64 / r.elapsed.as_secs_f64() / (1 << 20) as f64,
        r.ok,
        r.failed,
        ms(r.latency[0]),
        ms(r.latency[1]),
        ms(r.latency[2]),
        ms(r.latency[3]),
        if r.exhausted {
            " (prepared requests ran out)"
        } else {
            ""
        }
    )
}

fn per_second(count: usize, took: Duration) -> f64 {
    count as f64 / took.as_secs_f64().max(1e-9)
}

/// With more than one backend, their main figures per scenario, one column each.
pub fn print_side_by_side(results: &[(&str, Vec<Row>)]) {
    let Some((_, first)) = results.first() else {
        return;
    };
    if results.len() < 2 {
        return;
    }
    let names: Vec<&str> = results.iter().map(|(name, _)| *name).collect();
    for (i, row) in first.iter().enumerate() {
        let rows: Vec<&Row> = results.iter().filter_map(|(_, rows)| rows.get(i)).collect();
        println!();
        println!("| {} | {} |", row.name, names.join(" | "));
        println!("|---|{}", "---|".repeat(names.len()));
        let line = |label: &str, cell: &dyn Fn(&Row) -> String| {
            let cells: Vec<String> = rows.iter().map(|r| cell(r)).collect();
            println!("| {label} | {} |", cells.join(" | "));
        };
        line("enroll (one commit each)", &|r| {
            format!("{:.0}/s", per_second(r.nodes, r.enroll))
        });
        line("benchmarks stored one at a time", &|r| {
            format!("{:.0}/s", per_second(r.nodes, r.benchmarks))
        });
        line("rotation (decide, commit)", &|r| ms(r.rotation));
        line("every bundle built and signed", &|r| ms(r.build.total));
        line("rotation + bundles", &|r| ms(r.rotation + r.build.total));
        line("deny: decision → cut-off notice served", &|r| {
            notice_ms(r.deny.notice)
        });
        line("deny: decision → its bundle (all built)", &|r| {
            ms(r.deny.bundles)
        });
        for (j, (label, _)) in row.serving.iter().enumerate() {
            line(&format!("bundle requests ({label})"), &|r| {
                r.serving
                    .get(j)
                    .map_or_else(String::new, |(_, l)| rate_p99(l))
            });
        }
        line("benchmark submissions", &|r| rate_p99(&r.submissions));
    }
}

fn rate_p99(r: &LoadReport) -> String {
    format!("{:.0}/s, p99 {}", r.rate(), ms(r.latency[2]))
}
