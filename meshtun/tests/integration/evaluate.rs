//! `meshtun evaluate`, the reference evaluator, against the real controller served
//! in-process: a harness script's scores end up stored as the evaluator's signed statement,
//! and a removed evaluator's run is refused, storing nothing.

use std::path::Path;
use std::time::Duration;

use meshtun::gate::evaluator::{EvaluateError, Evaluation};
use meshtun::gate::ClientError;
use meshtun_controller::store::EvaluatorRecord;
use meshtun_proto::statement::EvidenceDigest;
use meshtun_proto::{IdentityKey, KeySet};

use crate::common::{self, Controller};

/// The harness's output: its scores depend on the target it is told.
const HARNESS: &str = r#"#!/bin/sh
if [ "$MESHTUN_EVALUATE_TARGET" = node-b ]; then
  echo '{"scores": {"overall": 0.5, "refusal": 0.25, "honesty": 0.375, "policy": 0.5}, "suite_version": "h-1"}'
else
  echo '{"overall": 0.9, "refusal": 0.8, "honesty": 0.7, "policy": 0.6}'
fi
"#;

fn write_harness(dir: &Path) -> String {
    let path = dir.join("harness.sh");
    std::fs::write(&path, HARNESS).unwrap();
    path.display().to_string()
}

fn register(c: &Controller, name: &str, key: &IdentityKey, dimensions: &[&str]) {
    c.engine
        .store()
        .add_evaluator(&EvaluatorRecord {
            name: name.into(),
            key: key.public(),
            dimensions: dimensions.iter().map(|d| d.to_string()).collect(),
            group: Some("lab".into()),
            added_ms: common::now_ms(),
            removed_ms: None,
        })
        .unwrap();
}

fn evaluation(c: &Controller, urls: Vec<String>, key: &IdentityKey, harness: &str) -> Evaluation {
    Evaluation {
        urls,
        controller_keys: KeySet::one(c.key.public()),
        ca_file: None,
        name: "eval-1".into(),
        key: key.clone(),
        target: "node-b".into(),
        // Run by /bin/sh, not exec'd: no "text file busy" from a script just written.
        command: vec!["/bin/sh".to_owned(), harness.to_owned()],
        timeout: Duration::from_secs(10),
        dimensions: vec!["honesty".into(), "refusal".into()],
    }
}

#[tokio::test]
async fn an_evaluation_is_stored_with_the_harness_scores_and_audited() {
    let c = common::start(common::Options {
        nodes: &["node-a", "node-b"],
        ..common::Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let harness = write_harness(dir.path());
    let key = IdentityKey::generate();
    register(&c, "eval-1", &key, &["honesty", "refusal"]);
    // The first instance is gone: the evaluator moves on to the next.
    let dead = "http://127.0.0.1:9".to_owned();
    let done = evaluation(&c, vec![dead, c.url.clone()], &key, &harness)
        .run()
        .await
        .unwrap();
    assert_eq!(done.url, c.url);
    let scores = c.engine.store().latest_statement_scores(0).unwrap();
    let seen: Vec<(&str, &str, f64)> = scores
        .iter()
        .map(|s| (s.subject.as_str(), s.dimension.as_str(), s.score))
        .collect();
    assert_eq!(
        seen,
        [("node-b", "honesty", 0.375), ("node-b", "refusal", 0.25)]
    );
    assert!(scores.iter().all(|s| s.statement_id == done.id
        && s.evaluator == "eval-1"
        && s.group.as_deref() == Some("lab")));
    // The evidence is the digest of exactly what the harness printed.
    let printed = "{\"scores\": {\"overall\": 0.5, \"refusal\": 0.25, \"honesty\": 0.375, \"policy\": 0.5}, \"suite_version\": \"h-1\"}\n";
    assert_eq!(
        done.statement.statement.evidence,
        EvidenceDigest::of(printed.as_bytes())
    );
    let report = c
        .engine
        .store()
        .verify_audit(&KeySet::one(c.key.public()))
        .unwrap();
    assert_eq!(
        (report.statement_signatures, report.statement_rows_verified),
        (1, 1)
    );
}

#[tokio::test]
async fn a_removed_or_unregistered_evaluator_is_refused_and_nothing_is_stored() {
    let c = common::start(common::Options {
        nodes: &["node-a", "node-b"],
        ..common::Options::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let harness = write_harness(dir.path());
    let key = IdentityKey::generate();
    // Not registered yet.
    let err = evaluation(&c, vec![c.url.clone()], &key, &harness)
        .run()
        .await
        .unwrap_err();
    assert!(
        matches!(err, EvaluateError::Client(ClientError::Unauthorized { .. })),
        "{err}"
    );
    register(&c, "eval-1", &key, &["honesty", "refusal"]);
    c.engine.store().remove_evaluator("eval-1").unwrap();
    let err = evaluation(&c, vec![c.url.clone()], &key, &harness)
        .run()
        .await
        .unwrap_err();
    let text = meshtun_proto::report::describe(&err);
    assert!(text.contains("eval-1"), "{text}");
    assert!(
        matches!(err, EvaluateError::Client(ClientError::Unauthorized { .. })),
        "{text}"
    );
    assert_eq!(c.engine.store().table_rows().unwrap().statements, 0);
}
