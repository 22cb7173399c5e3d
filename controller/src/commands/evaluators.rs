//! `meshtun-controller evaluator add | list | remove`: the identities that may sign
//! statements about nodes. They act on the database directly; a running controller sees a
//! change within a second (it rereads the evaluators), and its store checks the evaluator
//! again whenever it stores a statement.

use meshtun_proto::IdentityPublic;

use super::CommandError;
use crate::clock::Clock;
use crate::config::ControllerConfig;
use crate::store::{EvaluatorListing, EvaluatorRecord, Store};

/// `evaluator add NAME PUBKEY --dimensions D,… [--group G]`: returns what was stored
/// (dimensions sorted, repeats dropped).
pub fn add(
    config: &ControllerConfig,
    name: &str,
    public_key: &str,
    dimensions: Vec<String>,
    group: Option<String>,
) -> Result<EvaluatorRecord, CommandError> {
    let key = IdentityPublic::from_base64(public_key)
        .map_err(|e| CommandError::Argument(format!("PUBKEY: {e}")))?;
    let evaluator = EvaluatorRecord {
        name: name.to_owned(),
        key,
        dimensions,
        group,
        added_ms: Clock::system().now_ms(),
        removed_ms: None,
    }
    .normalize()?;
    Store::connect(&config.database)?.add_evaluator(&evaluator)?;
    Ok(evaluator)
}

/// `evaluator list`: every evaluator, removed ones too, by name.
pub fn list(config: &ControllerConfig) -> Result<Vec<EvaluatorListing>, CommandError> {
    Ok(Store::connect(&config.database)?.evaluators()?)
}

/// `evaluator remove NAME`.
pub fn remove(config: &ControllerConfig, name: &str) -> Result<(), CommandError> {
    if Store::connect(&config.database)?.remove_evaluator(name)? {
        Ok(())
    } else {
        Err(CommandError::Argument(format!(
            "no active evaluator {name}"
        )))
    }
}

/// One line of `evaluator list`: name, key, group, dimensions, last statement, state;
/// tab-separated, `-` for none.
pub fn listing_line(l: &EvaluatorListing, now_ms: u64) -> String {
    let e = &l.evaluator;
    let last = l.last_statement_ms.map_or_else(
        || "no statement".to_owned(),
        |at| format!("last statement {} s ago", now_ms.saturating_sub(at) / 1000),
    );
    let state = match e.removed_ms {
        Some(at) => format!("removed {} s ago", now_ms.saturating_sub(at) / 1000),
        None => "active".to_owned(),
    };
    format!(
        "{}\t{}\tgroup {}\t{}\t{last}\t{state}",
        e.name,
        e.key,
        e.group.as_deref().unwrap_or("-"),
        e.dimensions.join(","),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtun_proto::IdentityKey;

    fn config(dir: &std::path::Path) -> ControllerConfig {
        let plain =
            "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"state\"\n";
        ControllerConfig::parse(plain, &dir.join("controller.toml")).unwrap()
    }

    #[test]
    fn add_list_remove_and_names_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let key = IdentityKey::from_bytes([3; 32]).public().to_base64();
        let dims = vec![
            "refusal".to_owned(),
            "honesty".to_owned(),
            "honesty".to_owned(),
        ];
        let added = add(&config, "eval-1", &key, dims, Some("lab".into())).unwrap();
        assert_eq!(added.dimensions, ["honesty", "refusal"]);
        let listed = list(&config).unwrap();
        assert_eq!(listed.len(), 1);
        let line = listing_line(&listed[0], added.added_ms);
        assert!(
            line.starts_with(&format!(
                "eval-1\t{key}\tgroup lab\thonesty,refusal\tno statement\tactive"
            )),
            "{line}"
        );
        remove(&config, "eval-1").unwrap();
        let err = remove(&config, "eval-1").unwrap_err().to_string();
        assert!(err.contains("no active evaluator eval-1"), "{err}");
        assert!(list(&config).unwrap()[0].evaluator.removed_ms.is_some());
        let err = add(&config, "eval-1", &key, vec!["honesty".into()], None).unwrap_err();
        assert!(
            meshtun_proto::report::describe(&err).contains("was removed"),
            "{err}"
        );
    }

    #[test]
    fn bad_keys_names_and_dimensions_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let key = IdentityKey::from_bytes([3; 32]).public().to_base64();
        let err = add(&config, "eval-1", "not-a-key", vec!["honesty".into()], None).unwrap_err();
        assert!(err.to_string().starts_with("PUBKEY: "), "{err}");
        for (name, dims) in [
            ("Eval 1", vec!["honesty"]),
            ("eval-1", vec![]),
            ("eval-1", vec!["Honesty"]),
        ] {
            let dims = dims.into_iter().map(String::from).collect();
            let err = add(&config, name, &key, dims, None).unwrap_err();
            let text = meshtun_proto::report::describe(&err);
            assert!(text.starts_with("evaluator "), "{text}");
        }
        assert!(list(&config).unwrap().is_empty());
    }
}
