//! `packaging/monitoring`: the Prometheus alert rules and the Grafana dashboard.
//!
//! - `promtool_checks_and_unit_tests_the_alert_rules`: `promtool check rules` accepts
//!   `meshtun.rules.yml`, and `promtool test rules meshtun.rules.test.yml` passes (each alert
//!   firing for an instance in trouble, not for a healthy one, not before its `for:`).
//!   Needs promtool (Debian's `prometheus`): without it the test prints a `SKIP` line, or
//!   fails when `CI=true`.
//! - `the_dashboard_and_the_rules_name_only_exported_metrics`: the real binaries run (a
//!   controller and a gated node serving `[metrics]`, in namespaces) and are scraped; every
//!   metric named by a dashboard panel's query, a template variable's query or an alert
//!   rule's expression must be a series of those scrapes (or `up`, which Prometheus makes).
//! - `a_misspelled_metric_is_caught`: the check itself, on a query with a typo.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshtun_e2e::gating::{Mesh, Timing};
use meshtun_e2e::{in_ci, repo_root, require_root, run_command, wait_until};
use yaml_rust2::{Yaml, YamlLoader};

/// Series Prometheus makes itself, which the rules may name.
const PROMETHEUS_OWN: &[&str] = &["up"];

/// Where node a serves its metrics, inside its namespace.
const NODE_METRICS: &str = "127.0.0.1:9586";

/// PromQL words that are not metric names: operators, modifiers and aggregations (which may
/// be followed by `by (…)` rather than by their parenthesis).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn monitoring_dir() -> PathBuf {
    repo_root().join("packaging/monitoring")
}

/// promtool's path, or `None` (after a `SKIP` line) when it is not installed outside CI.
fn promtool(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("promtool"))
        .find(|p| p.is_file());
    if found.is_none() {
        let why = "promtool is not installed (Debian package: prometheus)";
        assert!(!in_ci(), "{test}: {why}; CI=true, so this fails");
        eprintln!("SKIP {test}: {why}");
    }
    found
}

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let test = "promtool_checks_and_unit_tests_the_alert_rules";
    let Some(promtool) = promtool(test) else {
        return;
    };
    for args in [
        ["check", "rules", "meshtun.rules.yml"],
        ["test", "rules", "meshtun.rules.test.yml"],
    ] {
        let mut cmd = Command::new(&promtool);
        cmd.args(args).current_dir(monitoring_dir());
        let out = run_command(&mut cmd, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "`promtool {}` failed:\n{}{}",
            args.join(" "),
            out.stdout,
            out.stderr
        );
        assert!(out.stdout.contains("SUCCESS"), "{}", out.stdout);
    }
}

/// The metric names in a PromQL expression: every identifier that is not a function, a
/// keyword, a label (in `{…}` or a grouping list), a string, a duration, a number or a
/// Grafana variable (`$name`, `${name}`, `$__rate_interval`).
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut labels_next = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i = match c {
            '"' | '\'' | '`' => skip_string(&chars, i),
            '{' => skip_to(&chars, i, '}'),
            '[' => skip_to(&chars, i, ']'),
            '(' if labels_next => {
                labels_next = false;
                skip_to(&chars, i, ')')
            }
            '$' => {
                if chars.get(i + 1) == Some(&'{') {
                    skip_to(&chars, i, '}')
                } else {
                    skip_while(&chars, i + 1, |c| c.is_ascii_alphanumeric() || c == '_')
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                skip_while(&chars, i, |c| c.is_ascii_alphanumeric() || c == '.')
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let end = skip_while(&chars, i, |c| {
                    c.is_ascii_alphanumeric() || c == '_' || c == ':'
                });
                let word: String = chars[i..end].iter().collect();
                let next = skip_while(&chars, end, char::is_whitespace);
                if GROUPING.contains(&word.as_str()) {
                    labels_next = true;
                } else if !KEYWORDS.contains(&word.as_str()) && chars.get(next) != Some(&'(') {
                    names.push(word);
                }
                end
            }
            _ => i + 1,
        };
    }
    names
}

/// The index after the string starting at `start` (its quote), escapes included.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The index after the first `close` from `start`, strings skipped.
fn skip_to(chars: &[char], start: usize, close: char) -> usize {
    let mut i = start + 1;
    while i < chars.len() && chars[i] != close {
        i = match chars[i] {
            '"' | '\'' | '`' => skip_string(chars, i),
            _ => i + 1,
        };
    }
    i + 1
}

fn skip_while(chars: &[char], start: usize, keep: impl Fn(char) -> bool) -> usize {
    let mut i = start;
    while i < chars.len() && keep(chars[i]) {
        i += 1;
    }
    i
}

/// Every query of the dashboard, with where it is: each panel's targets' `expr` and each
/// query variable's query (`label_values(SELECTOR, label)`: the selector).
fn dashboard_queries(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let dashboard: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    let mut queries = Vec::new();
    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels");
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array();
        let targets = targets.unwrap_or_else(|| panic!("panel {title:?} has no targets"));
        assert!(!targets.is_empty(), "panel {title:?} has no targets");
        for target in targets {
            let expr = target["expr"].as_str();
            let expr = expr.unwrap_or_else(|| panic!("a target of panel {title:?} has no expr"));
            queries.push((format!("panel {title:?}"), expr.to_owned()));
        }
    }
    let variables = dashboard["templating"]["list"].as_array();
    for variable in variables.into_iter().flatten() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let name = variable["name"].as_str().unwrap_or("?");
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map_or(query, |(selector, _label)| selector);
        queries.push((format!("variable {name:?}"), selector.to_owned()));
    }
    queries
}

/// Every alert's expression, with its name.
fn rule_expressions(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    let groups = docs.first().map(|d| &d["groups"]);
    let groups = groups
        .and_then(Yaml::as_vec)
        .expect("the rules file has groups");
    let mut exprs = Vec::new();
    for group in groups {
        for rule in group["rules"].as_vec().expect("a group has rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("?");
            let expr = rule["expr"].as_str();
            let expr = expr.unwrap_or_else(|| panic!("rule {name} has no expr"));
            exprs.push((format!("rule {name}"), expr.to_owned()));
        }
    }
    exprs
}

/// The metric names a scrape shows: each sample's name, and each family's series names by
/// its type (`_total` of a counter, `_bucket`, `_sum` and `_count` of a histogram, `_info`
/// of an info), so that a family without samples yet counts too.
fn exported_names(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "info" => &["_info"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// Each query's names that `exported` lacks, as messages naming where they are.
fn unexported(queries: &[(String, String)], exported: &BTreeSet<String>) -> Vec<String> {
    let mut missing = Vec::new();
    for (place, expr) in queries {
        for name in metric_names(expr) {
            if !exported.contains(&name) && !PROMETHEUS_OWN.contains(&name.as_str()) {
                missing.push(format!("{place}: {name} (in `{expr}`)"));
            }
        }
    }
    missing
}

/// `GET /metrics` on `addr`, from the calling thread's namespace.
fn scrape(addr: &str) -> String {
    let url = format!("http://{addr}/metrics");
    let reply = reqwest::blocking::get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(reply.status().is_success(), "GET {url}: {}", reply.status());
    reply.text().unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

#[test]
fn the_dashboard_and_the_rules_name_only_exported_metrics() {
    if !require_root("the_dashboard_and_the_rules_name_only_exported_metrics") {
        return;
    }
    let mesh = Mesh::new("monitoring", Timing::default(), &["a"]);
    let _ctl = mesh.start_controller();
    let metrics = format!("\n[metrics]\nlisten = \"{NODE_METRICS}\"\n");
    let _node = mesh.start_node_with_keys("a", Vec::new(), &[], &metrics);
    // Once the node holds a bundle (it is denied: it has sent no benchmark yet).
    let mut node = String::new();
    let bundled = wait_until(Duration::from_secs(20), || {
        node = mesh.node("a").ns.enter(|| scrape(NODE_METRICS));
        node.contains("meshtun_gate_bundle_remaining_seconds{")
    });
    assert!(bundled, "the node reports no bundle:\n{node}");
    let controller = mesh.controller_ns().enter(|| {
        let reply = mesh.home().status_client().get("/metrics");
        reply.unwrap_or_else(|e| panic!("GET /metrics: {e}")).text()
    });
    let mut exported = exported_names(&node);
    exported.extend(exported_names(&controller));
    // The new gauges: the node's grace is its configured one, the newest epoch ends later.
    let value = |scrape: &str, name: &str| -> f64 {
        let line = scrape.lines().find(|l| l.starts_with(name));
        let line = line.unwrap_or_else(|| panic!("no {name} in:\n{scrape}"));
        let value = line.rsplit(' ').next().and_then(|v| v.parse().ok());
        value.unwrap_or_else(|| panic!("{line}"))
    };
    let timing = Timing::default();
    let grace = value(&node, "meshtun_gate_grace_remaining_seconds{")
        - value(&node, "meshtun_gate_bundle_remaining_seconds{");
    assert!(
        (grace - timing.grace as f64).abs() < 0.01,
        "grace {grace}:\n{node}"
    );
    let end = value(
        &controller,
        "meshtun_controller_epoch_end_timestamp_seconds ",
    );
    let now = meshtun_e2e::controller::now_ms() as f64 / 1000.0;
    let latest = now + 2.0 * timing.epoch as f64;
    assert!(
        (now - 1.0..latest).contains(&end),
        "epoch end {end} at {now}"
    );

    let dir = monitoring_dir();
    let mut queries = dashboard_queries(&dir.join("grafana-meshtun.json"));
    let panels = queries.len();
    queries.extend(rule_expressions(&dir.join("meshtun.rules.yml")));
    assert!(panels >= 30 && queries.len() >= panels + 8, "{queries:#?}");
    let named: usize = queries.iter().map(|(_, e)| metric_names(e).len()).sum();
    assert!(
        named >= queries.len(),
        "too few names found in {queries:#?}"
    );
    let missing = unexported(&queries, &exported);
    assert!(
        missing.is_empty(),
        "metrics neither meshtun nor meshtun-controller exports:\n{}\n\nthey export:\n{}",
        missing.join("\n"),
        exported.iter().cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn a_misspelled_metric_is_caught() {
    let scrape = "# TYPE meshtun_peers gauge\nmeshtun_peers{interface=\"wg0\"} 1\n\
                  # TYPE meshtun_gate_cutoffs counter\n\
                  # TYPE meshtun_gate_decision_to_cutoff_seconds histogram\n";
    let exported = exported_names(scrape);
    let good = "sum by (instance, path) (rate(meshtun_gate_cutoffs_total{instance=~\"$instance\"}\
                [$__rate_interval])) / on(instance) group_left(node_id) meshtun_peers > 0.5 \
                and histogram_quantile(0.9, rate(meshtun_gate_decision_to_cutoff_seconds_bucket[5m])) \
                or max without (job) (up{job=\"x\"}) < time() - 1e6";
    let query = |expr: &str| vec![("panel \"P\"".to_owned(), expr.to_owned())];
    assert_eq!(unexported(&query(good), &exported), Vec::<String>::new());
    assert_eq!(
        metric_names(good),
        [
            "meshtun_gate_cutoffs_total",
            "meshtun_peers",
            "meshtun_gate_decision_to_cutoff_seconds_bucket",
            "up"
        ]
    );
    let typo = good.replace("meshtun_peers", "meshtun_peer");
    let missing = unexported(&query(&typo), &exported);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(
        missing[0].starts_with("panel \"P\": meshtun_peer "),
        "{missing:?}"
    );
    // A counter's bare family name is not a series.
    let bare = unexported(&query("rate(meshtun_gate_cutoffs[5m])"), &exported);
    assert_eq!(bare.len(), 1, "{bare:?}");
}
