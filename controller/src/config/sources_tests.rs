//! `[policy.sources.*]`: the issue's example, defaults, and each bad value refused with its
//! key.

use std::path::Path;

use crate::config::{ConfigError, ControllerConfig};
use crate::model::{Combine, Dimension, Source, SourceRule};

const MINIMAL: &str =
    "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"state\"\n";

fn parse(extra: &str) -> Result<ControllerConfig, ConfigError> {
    ControllerConfig::parse(
        &format!("{MINIMAL}{extra}"),
        Path::new("/etc/meshtun/controller.toml"),
    )
}

fn err(extra: &str) -> String {
    parse(extra).unwrap_err().to_string()
}

#[test]
fn the_issues_example_parses() {
    let c = parse(
        "[policy]\nmax_age = 300\n\
         [policy.sources.honesty]\n\
         from = [\"evaluator:e1\", \"evaluator:e2\", \"group:core\"]\n\
         k = 2\ncombine = \"median\"\nmax_age = 3600\nminimum = 0.70\n\
         [policy.sources.overall]\nfrom = [\"self\"]\n",
    )
    .unwrap();
    let s = &c.policy.sources;
    assert_eq!(
        s.rule(Dimension::Honesty),
        Some(&SourceRule {
            from: vec![
                Source::Evaluator("e1".into()),
                Source::Evaluator("e2".into()),
                Source::Group("core".into()),
            ],
            k: 2,
            combine: Combine::Median,
            max_age_ms: 3_600_000,
            minimum: Some(0.70),
        })
    );
    // `from = ["self"]` alone: k 1, median, the policy's max_age, the threshold as its bar.
    assert_eq!(
        s.rule(Dimension::Overall),
        Some(&SourceRule {
            from: vec![Source::SelfReported],
            k: 1,
            combine: Combine::Median,
            max_age_ms: 300_000,
            minimum: None,
        })
    );
    assert_eq!(s.rule(Dimension::Refusal), None);
}

#[test]
fn reachable_from_two_thirds_of_the_peers_parses() {
    let c = parse(
        "[policy.sources.reachable]\nfrom = [\"peers\"]\nk = 3\ncombine = \"mean\"\n\
         max_age = 180\nminimum = 0.66\n",
    )
    .unwrap();
    let s = &c.policy.sources;
    assert_eq!(
        s.rule(Dimension::Reachable),
        Some(&SourceRule {
            from: vec![Source::Peers],
            k: 3,
            combine: Combine::Mean,
            max_age_ms: 180_000,
            minimum: Some(0.66),
        })
    );
    assert!(s.reads_peers());
    assert!(!parse("").unwrap().policy.sources.reads_peers());
}

#[test]
fn without_sections_every_dimension_is_self_reported() {
    assert!(parse("").unwrap().policy.sources.is_empty());
    assert!(parse("[policy]\nthreshold = 0.8\n")
        .unwrap()
        .policy
        .sources
        .is_empty());
}

#[test]
fn a_minimum_may_come_from_policy_minimums() {
    let c = parse(
        "[policy.minimums]\nrefusal = 0.4\n\
         [policy.sources.refusal]\nfrom = [\"group:core\"]\nk = 1\ncombine = \"minimum\"\n",
    )
    .unwrap();
    let rule = c.policy.sources.rule(Dimension::Refusal).unwrap();
    assert_eq!((rule.minimum, rule.combine), (None, Combine::Minimum));
    assert_eq!(c.policy.minimums.refusal, Some(0.4));
}

#[test]
fn each_bad_value_is_refused_with_its_key() {
    let honesty = "[policy.sources.honesty]\nminimum = 0.7\n";
    let two = "from = [\"evaluator:e1\", \"evaluator:e2\"]\n";
    for (extra, key, says) in [
        (
            format!("{honesty}k = 1\n"),
            "policy.sources.honesty.from",
            "required",
        ),
        (
            format!("{honesty}from = []\nk = 1\n"),
            "policy.sources.honesty.from",
            "0 sources",
        ),
        (
            format!("{honesty}from = [\"evaluatr:e1\"]\nk = 1\n"),
            "policy.sources.honesty.from",
            "is not a source",
        ),
        (
            format!("{honesty}from = [\"evaluator:E1\"]\nk = 1\n"),
            "policy.sources.honesty.from",
            "lowercase",
        ),
        (
            format!("{honesty}from = [\"evaluator:\"]\nk = 1\n"),
            "policy.sources.honesty.from",
            "a name is",
        ),
        (
            format!("{honesty}from = [\"group:core\", \"group:core\"]\nk = 1\n"),
            "policy.sources.honesty.from",
            "`group:core` is listed twice",
        ),
        (
            format!("{honesty}from = [\"peers\"]\nk = 1\n"),
            "policy.sources.honesty.from",
            "`peers` scores only reachable, latency and handshake, not honesty",
        ),
        (
            "[policy.sources.reachable]\nfrom = [\"self\"]\nminimum = 0.66\n".to_owned(),
            "policy.sources.reachable.from",
            "reachable is scored by peer observations only",
        ),
        (
            "[policy.sources.latency]\nfrom = [\"peers\", \"evaluator:e1\"]\nk = 1\nminimum = 0.8\n"
                .to_owned(),
            "policy.sources.latency.from",
            "latency is scored by peer observations only",
        ),
        (
            "[policy.sources.handshake]\nfrom = [\"peers\"]\nk = 2\n".to_owned(),
            "policy.sources.handshake.minimum",
            "required: the lowest passing handshake value",
        ),
        (
            "[policy.sources.reachable]\nfrom = [\"peers\"]\nk = 2\ncombine = \"mode\"\nminimum = 0.66\n"
                .to_owned(),
            "policy.sources.reachable.combine",
            "is not \"median\", \"minimum\" or \"mean\"",
        ),
        (
            format!(
                "{honesty}from = [{}]\nk = 1\n",
                vec!["\"self\""; 33].join(", ")
            ),
            "policy.sources.honesty.from",
            "33 sources",
        ),
        (
            format!("{honesty}{two}"),
            "policy.sources.honesty.k",
            "required",
        ),
        (
            format!("{honesty}{two}k = 0\n"),
            "policy.sources.honesty.k",
            "0 is not in [1, 64]",
        ),
        (
            format!("{honesty}{two}k = -1\n"),
            "policy.sources.honesty.k",
            "-1 is not in",
        ),
        (
            "[policy.sources.honesty]\nfrom = [\"group:core\"]\nk = 65\nminimum = 0.7\n".into(),
            "policy.sources.honesty.k",
            "65 is not in [1, 64]",
        ),
        (
            format!("{honesty}{two}k = 3\n"),
            "policy.sources.honesty.k",
            "never be met",
        ),
        (
            format!("{honesty}{two}k = 2\ncombine = \"average\"\n"),
            "policy.sources.honesty.combine",
            "`average` is not \"median\", \"minimum\" or \"mean\"",
        ),
        (
            format!("{honesty}{two}k = 2\nmax_age = 0\n"),
            "policy.sources.honesty.max_age",
            "0 is not in [1, 2592000]",
        ),
        (
            format!("{honesty}{two}k = 2\nmax_age = -60\n"),
            "policy.sources.honesty.max_age",
            "-60 is not in",
        ),
        (
            format!("{honesty}{two}k = 2\nmax_age = 2592001\n"),
            "policy.sources.honesty.max_age",
            "2592001 is not in",
        ),
        (
            format!("[policy.sources.honesty]\n{two}k = 2\nminimum = 1.5\n"),
            "policy.sources.honesty.minimum",
            "1.5 is not in [0, 1]",
        ),
        (
            format!("[policy.sources.honesty]\n{two}k = 2\nminimum = nan\n"),
            "policy.sources.honesty.minimum",
            "NaN is not in [0, 1]",
        ),
        (
            format!("[policy.minimums]\nhonesty = 0.5\n{honesty}{two}k = 2\n"),
            "policy.sources.honesty.minimum",
            "policy.minimums.honesty is set too",
        ),
        (
            format!("[policy.sources.honesty]\n{two}k = 2\n"),
            "policy.sources.honesty.minimum",
            "required",
        ),
        (
            format!("[policy.sources.policy]\n{two}k = 2\n"),
            "policy.sources.policy.minimum",
            "policy.minimums.policy",
        ),
        (
            format!("[policy.sources.overall]\n{two}k = 2\nminimum = -0.1\n"),
            "policy.sources.overall.minimum",
            "-0.1 is not in",
        ),
    ] {
        let e = err(&extra);
        assert!(e.contains(&format!("`{key}`")), "{extra}: {e}");
        assert!(e.contains(says), "{extra}: {e}");
        assert!(e.starts_with("/etc/meshtun/controller.toml: "), "{e}");
    }
}

#[test]
fn an_unknown_dimension_or_key_is_refused_with_its_name_and_line() {
    let e = err("[policy.sources.honsty]\nfrom = [\"self\"]\n");
    assert!(e.contains("honsty") && e.contains("line 4"), "{e}");
    let e = err("[policy.sources.honesty]\nfrom = [\"self\"]\nkk = 2\n");
    assert!(e.contains("kk") && e.contains("line 6"), "{e}");
    let e = err("[policy.sources.honesty]\nfrom = [\"self\"]\nmax_age = \"1h\"\n");
    assert!(e.contains("line 6"), "{e}");
}
