//! `meshtun demo --ha`: what the second controller needs. A throwaway PostgreSQL cluster
//! ([`meshtun_testbed::postgres::TempCluster`], run as `nobody`, listening only on a Unix
//! socket in its own temporary directory, which the controllers in their namespaces reach
//! by path), the controller key and admin token copied from the first instance's home as
//! an operator copies them, and who leads, read from `meshtun-controller status`.

use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;

use meshtun_proto::private_file::{write as write_private_file, Replace};
use meshtun_testbed::postgres::{self, TempCluster};

use super::DemoError;

/// The database the controllers share.
pub const DATABASE: &str = "meshtun";

/// The state files every instance must hold alike: the signing key and the admin token.
const SHARED_SECRETS: [&str; 2] = ["controller.key", "admin.token"];

/// Whether PostgreSQL's server binaries (`initdb`, `postgres`) are where
/// [`postgres::bin_dir`] looks.
pub fn server_installed() -> bool {
    postgres::bin_dir()
        .is_some_and(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
}

/// Starts the cluster and creates the controllers' database; its URL (over the socket).
/// Without PostgreSQL's server binaries, the error says what to install.
pub fn start_cluster() -> Result<(TempCluster, String), DemoError> {
    if !server_installed() {
        return Err(DemoError::NoPostgres);
    }
    let cluster = TempCluster::start().map_err(|e| DemoError::Cluster(e.0))?;
    cluster
        .psql("postgres", &format!("CREATE DATABASE {DATABASE}"))
        .map_err(|e| DemoError::Cluster(format!("cannot create database {DATABASE}: {e}")))?;
    let url = cluster.url(DATABASE);
    Ok((cluster, url))
}

/// Copies the key and the admin token from the state directory `from` into `to` (created,
/// mode 0700; the files 0600), before the other instance's `init`.
pub fn share_secrets(from: &Path, to: &Path) -> Result<(), DemoError> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(to)
        .map_err(|e| DemoError::io(format!("cannot create {}", to.display()), e))?;
    for name in SHARED_SECRETS {
        let source = from.join(name);
        let text = zeroize::Zeroizing::new(
            std::fs::read(&source)
                .map_err(|e| DemoError::io(format!("cannot read {}", source.display()), e))?,
        );
        let target = to.join(name);
        write_private_file(&target, &text, Replace::Never)
            .map_err(|e| DemoError::io(format!("cannot write {}", target.display()), e))?;
    }
    Ok(())
}

/// Who leads, from `meshtun-controller status`'s `cluster` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The instance holding an unexpired lease, if any.
    pub leader: Option<String>,
    /// The newest term granted.
    pub term: u64,
}

impl ClusterView {
    /// Reads `status`'s JSON; the error says what is missing.
    pub fn parse(status: &str) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_str(status).map_err(|e| format!("not JSON: {e}"))?;
        let cluster = value
            .get("cluster")
            .ok_or("no `cluster` field (not several instances on PostgreSQL?)")?;
        let leader = match cluster.get("leader") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(name)) => Some(name.clone()),
            Some(other) => return Err(format!("`cluster.leader` is {other}, not a name")),
        };
        let term = cluster
            .get("term")
            .and_then(serde_json::Value::as_u64)
            .ok_or("no number `cluster.term`")?;
        Ok(Self { leader, term })
    }

    /// Whether `instance` leads.
    pub fn led_by(&self, instance: &str) -> bool {
        self.leader.as_deref() == Some(instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_and_term_are_read_from_status() {
        let status = r#"{"epoch": null, "nodes": {}, "allowed": 0, "denied": 0,
            "cluster": {"leader": "ctl-2", "term": 3, "lease_left_ms": 1500, "instances": []}}"#;
        let view = ClusterView::parse(status).unwrap();
        assert_eq!(view.leader.as_deref(), Some("ctl-2"));
        assert_eq!(view.term, 3);
        assert!(view.led_by("ctl-2") && !view.led_by("ctl-1"));
        let none = r#"{"cluster": {"leader": null, "term": 4}}"#;
        assert_eq!(ClusterView::parse(none).unwrap().leader, None);
        let err = ClusterView::parse(r#"{"nodes": {}}"#).unwrap_err();
        assert!(err.contains("no `cluster` field"), "{err}");
        assert!(ClusterView::parse(r#"{"cluster": {"leader": 7, "term": 1}}"#).is_err());
    }

    #[test]
    fn the_key_and_token_are_copied_private_and_never_over_another() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a");
        std::fs::create_dir(&from).unwrap();
        for name in SHARED_SECRETS {
            std::fs::write(from.join(name), format!("{name} secret\n")).unwrap();
        }
        let to = dir.path().join("b/state");
        std::fs::create_dir(dir.path().join("b")).unwrap();
        share_secrets(&from, &to).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&to), 0o700);
        for name in SHARED_SECRETS {
            assert_eq!(
                std::fs::read_to_string(to.join(name)).unwrap(),
                format!("{name} secret\n")
            );
            assert_eq!(mode(&to.join(name)), 0o600);
        }
        let err = share_secrets(&from, &to).unwrap_err().to_string();
        assert!(err.contains(&to.display().to_string()), "{err}");
    }
}
