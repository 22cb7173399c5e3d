//! Prometheus metrics for `/metrics`. Nothing secret is ever a label or a value.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label for a rotation's cause.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    /// "schedule", "admin" or "deny".
    pub cause: String,
}

/// Label for an HTTP outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// "accepted", "rejected", "unauthorized"…
    pub outcome: String,
}

/// Label for a kind of pruned row.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// "benchmarks", "statements", "epochs" or "audit_entries".
    pub kind: String,
}

/// Every metric the controller exports.
pub struct Metrics {
    registry: Registry,
    epoch: Gauge,
    epoch_end: Gauge,
    allowed: Gauge,
    denied: Gauge,
    rotations: Family<CauseLabel, Counter>,
    rotation_seconds: Histogram,
    benchmarks: Family<OutcomeLabel, Counter>,
    statements: Family<OutcomeLabel, Counter>,
    bundles: Family<OutcomeLabel, Counter>,
    auth_failures: Counter,
    throttled: Counter,
    refused_connections: Family<OutcomeLabel, Counter>,
    pruned: Family<KindLabel, Counter>,
    prune_failures: Counter,
    database_bytes: Gauge,
    ahead_of_database: Counter,
    stun: Family<OutcomeLabel, Counter>,
    stun_sources: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("meshtun_controller");
        let epoch = Gauge::default();
        let epoch_end = Gauge::default();
        let allowed = Gauge::default();
        let denied = Gauge::default();
        let rotations = Family::<CauseLabel, Counter>::default();
        let rotation_seconds = Histogram::new([0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]);
        let benchmarks = Family::<OutcomeLabel, Counter>::default();
        let statements = Family::<OutcomeLabel, Counter>::default();
        let bundles = Family::<OutcomeLabel, Counter>::default();
        let auth_failures = Counter::default();
        let throttled = Counter::default();
        let refused_connections = Family::<OutcomeLabel, Counter>::default();
        let pruned = Family::<KindLabel, Counter>::default();
        let prune_failures = Counter::default();
        let database_bytes = Gauge::default();
        registry.register(
            "pruned",
            "Rows removed past their retention, by kind (benchmarks, statements, epochs, \
             audit_entries)",
            pruned.clone(),
        );
        registry.register(
            "prune_failures",
            "Prunings that failed (the database keeps growing; see the controller's log)",
            prune_failures.clone(),
        );
        registry.register(
            "database_bytes",
            "Size of the database file, pages in use and free, after the last pruning",
            database_bytes.clone(),
        );
        let ahead_of_database = Counter::default();
        registry.register("epoch", "Id of the newest published epoch", epoch.clone());
        registry.register(
            "epoch_end_timestamp_seconds",
            "End (not_after) of the newest epoch this instance holds, Unix seconds (0 before \
             the first); once past, nodes run on their grace",
            epoch_end.clone(),
        );
        registry.register(
            "allowed_nodes",
            "Nodes allowed in the newest epoch",
            allowed.clone(),
        );
        registry.register(
            "denied_nodes",
            "Nodes denied in the newest epoch",
            denied.clone(),
        );
        registry.register("rotations", "Epochs published, by cause", rotations.clone());
        registry.register(
            "rotation_seconds",
            "Time to decide and commit an epoch",
            rotation_seconds.clone(),
        );
        registry.register(
            "benchmarks",
            "Benchmark submissions, by outcome",
            benchmarks.clone(),
        );
        registry.register(
            "statements",
            "Evaluator statements submitted, by outcome (accepted, rejected)",
            statements.clone(),
        );
        registry.register("bundles", "Bundle requests, by outcome", bundles.clone());
        registry.register(
            "auth_failures",
            "Requests refused for bad or missing credentials",
            auth_failures.clone(),
        );
        registry.register(
            "throttled",
            "Requests refused with 429: a node over its quota or too many waiting long-polls",
            throttled.clone(),
        );
        registry.register(
            "refused_connections",
            "Connections closed at once because a cap was reached, by cap",
            refused_connections.clone(),
        );
        registry.register(
            "epoch_ahead_of_database",
            "Bundle requests naming an epoch above the newest this controller published \
             (a database restored from a backup?)",
            ahead_of_database.clone(),
        );
        let stun = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "stun_requests",
            "Datagrams at the STUN server, by outcome (answered, malformed, source_limited, \
             global_limited, table_full)",
            stun.clone(),
        );
        let stun_sources = Gauge::default();
        registry.register(
            "stun_sources",
            "Sources the STUN server's rate limiter tracks",
            stun_sources.clone(),
        );
        // Each outcome counted from 0 at start, so that every family is in /metrics (and in
        // the dashboard) before its first event, and rate() sees the first one.
        for (family, outcomes) in [
            (&benchmarks, &["accepted", "rejected"][..]),
            (&statements, &["accepted", "rejected"][..]),
            (&bundles, &["served", "cutoff_notice", "not_modified"][..]),
            (&refused_connections, &["total", "address"][..]),
            (&stun, &STUN_OUTCOMES[..]),
        ] {
            for outcome in outcomes {
                let _created = family.get_or_create(&label(outcome));
            }
        }
        Self {
            registry,
            epoch,
            epoch_end,
            allowed,
            denied,
            rotations,
            rotation_seconds,
            benchmarks,
            statements,
            bundles,
            auth_failures,
            throttled,
            refused_connections,
            pruned,
            prune_failures,
            database_bytes,
            ahead_of_database,
            stun,
            stun_sources,
        }
    }
}

/// The outcomes of a datagram at the STUN server.
const STUN_OUTCOMES: [&str; 5] = {
    use crate::stun::Outcome;
    [
        Outcome::Answered.label(),
        Outcome::Malformed.label(),
        Outcome::SourceLimited.label(),
        Outcome::GlobalLimited.label(),
        Outcome::TableFull.label(),
    ]
};

fn label(outcome: &str) -> OutcomeLabel {
    OutcomeLabel {
        outcome: outcome.to_owned(),
    }
}

impl Metrics {
    /// An epoch was published.
    pub fn rotated(&self, cause: &str, took: Duration, epoch: u64, allowed: usize, denied: usize) {
        let cause = cause.split(':').next().unwrap_or(cause).to_owned();
        self.rotations.get_or_create(&CauseLabel { cause }).inc();
        self.rotation_seconds.observe(took.as_secs_f64());
        self.epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        self.allowed.set(i64::try_from(allowed).unwrap_or(i64::MAX));
        self.denied.set(i64::try_from(denied).unwrap_or(i64::MAX));
    }

    /// The newest epoch this instance holds is `epoch`, ending at `not_after_ms` (published
    /// here, loaded from the leader, or read from the database at start).
    pub fn newest_epoch(&self, epoch: u64, not_after_ms: u64) {
        self.epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
        let end = i64::try_from(not_after_ms / 1000).unwrap_or(i64::MAX);
        self.epoch_end.set(end);
    }

    /// A pruning removed what `report` says; the database is now `bytes` long.
    pub fn pruned(&self, report: &crate::store::PruneReport, bytes: u64) {
        for (kind, n) in [
            ("benchmarks", report.benchmarks),
            ("statements", report.statements),
            ("observations", report.observations),
            ("epochs", report.epochs),
            ("audit_entries", report.audit_entries),
        ] {
            let kind = kind.to_owned();
            self.pruned.get_or_create(&KindLabel { kind }).inc_by(n);
        }
        self.database_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A pruning failed.
    pub fn prune_failed(&self) {
        self.prune_failures.inc();
    }

    /// An evaluator's statement submission ended with `outcome`.
    pub fn statement(&self, outcome: &str) {
        self.statements.get_or_create(&label(outcome)).inc();
    }

    /// A benchmark submission ended with `outcome`.
    pub fn benchmark(&self, outcome: &str) {
        self.benchmarks.get_or_create(&label(outcome)).inc();
    }

    /// A bundle request ended with `outcome`.
    pub fn bundle(&self, outcome: &str) {
        self.bundles.get_or_create(&label(outcome)).inc();
    }

    /// A request was refused for its credentials.
    pub fn auth_failure(&self) {
        self.auth_failures.inc();
    }

    /// The STUN server handled a datagram with `outcome`; it tracks `sources` sources.
    pub fn stun(&self, outcome: &str, sources: usize) {
        self.stun.get_or_create(&label(outcome)).inc();
        self.stun_sources
            .set(i64::try_from(sources).unwrap_or(i64::MAX));
    }

    /// A request was refused with 429.
    pub fn throttled(&self) {
        self.throttled.inc();
    }

    /// A connection was closed at once: `cap` ("total" or "address") was reached.
    pub fn refused_connection(&self, cap: &str) {
        self.refused_connections.get_or_create(&label(cap)).inc();
    }

    /// A node asked for a bundle after an epoch this controller never published.
    pub fn ahead_of_database(&self) {
        self.ahead_of_database.inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_prometheus_text_format() {
        let m = Metrics::default();
        m.rotated("deny: node-c", Duration::from_millis(3), 7, 2, 1);
        m.benchmark("accepted");
        m.auth_failure();
        let text = m.render();
        assert!(text.contains("meshtun_controller_epoch 7"));
        assert!(text.contains("meshtun_controller_rotations_total{cause=\"deny\"} 1"));
        assert!(text.contains("meshtun_controller_benchmarks_total{outcome=\"accepted\"} 1"));
        assert!(text.contains("# EOF"));
    }

    #[test]
    fn the_newest_epoch_sets_its_id_and_end_in_seconds() {
        let m = Metrics::default();
        assert!(m
            .render()
            .contains("meshtun_controller_epoch_end_timestamp_seconds 0\n"));
        m.newest_epoch(9, 1_700_000_060_999);
        let text = m.render();
        assert!(text.contains("meshtun_controller_epoch 9\n"), "{text}");
        assert!(
            text.contains("meshtun_controller_epoch_end_timestamp_seconds 1700000060\n"),
            "{text}"
        );
    }

    #[test]
    fn every_outcome_family_is_exported_at_zero_before_its_first_event() {
        let text = Metrics::default().render();
        for series in [
            "meshtun_controller_benchmarks_total{outcome=\"rejected\"} 0",
            "meshtun_controller_statements_total{outcome=\"accepted\"} 0",
            "meshtun_controller_bundles_total{outcome=\"served\"} 0",
            "meshtun_controller_refused_connections_total{outcome=\"address\"} 0",
            "meshtun_controller_stun_requests_total{outcome=\"answered\"} 0",
            "meshtun_controller_stun_requests_total{outcome=\"table_full\"} 0",
        ] {
            assert!(
                text.contains(&format!("{series}\n")),
                "no {series} in:\n{text}"
            );
        }
        let m = Metrics::default();
        m.stun("answered", 1);
        let text = m.render();
        assert!(text.contains("meshtun_controller_stun_requests_total{outcome=\"answered\"} 1\n"));
    }
}
