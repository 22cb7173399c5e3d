//! The `meshtun-controller` binary, run as an operator runs it: a configuration file and a
//! state directory in a home directory, `init`, `node add`, `serve`, `rotate`, and the audit
//! log read back with `audit show` (JSON lines), which says when benchmarks arrived and
//! what every epoch decided.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use crate::run::run_ok;
use crate::{Error, Netns};

/// The controller's program name.
pub const PROGRAM: &str = "meshtun-controller";

/// How long one controller command (`init`, `node add`, `rotate`, `audit show`) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds `program` as a user would expect: beside the running executable (the build
/// directory, or /usr/bin for the packages), then on `PATH`. The error names both places.
pub fn find_program(program: &str) -> Result<PathBuf, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find this program", e))?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    locate(program, dir, &path).ok_or_else(|| Error::NoController {
        beside: dir.join(program).display().to_string(),
    })
}

/// `dir/program` if it is an executable file, else the first executable `program` in the
/// directories of `path` (a `PATH` value).
fn locate(program: &str, dir: &Path, path: &OsStr) -> Option<PathBuf> {
    std::iter::once(dir.to_owned())
        .chain(std::env::split_paths(path))
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The top of a `controller.toml`: where it listens, its URL and its state directory
/// (`state/`, relative to the file); `rest` (more TOML) follows.
pub fn config_text(listen: SocketAddr, status_listen: SocketAddr, url: &str, rest: &str) -> String {
    format!(
        "listen = \"{listen}\"\nstatus_listen = \"{status_listen}\"\n\
         url = \"{url}\"\nstate_dir = \"state\"\n{rest}"
    )
}

/// A controller's home: `controller.toml` and the state directory `state/` beside it (key,
/// admin token, database), and the binary that runs on them.
#[derive(Debug, Clone)]
pub struct Home {
    bin: PathBuf,
    config: PathBuf,
}

/// A node to enroll with `node add`.
#[derive(Debug, Clone)]
pub struct Enrollment<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its WireGuard public key, base64.
    pub wg_key: &'a str,
    /// Its Ed25519 identity key, base64.
    pub identity_key: &'a str,
    /// Its overlay address (CIDR).
    pub address: &'a str,
    /// Where other nodes reach it, if anywhere.
    pub endpoint: Option<&'a str>,
}

impl Home {
    /// Writes `text` to `config` (mode 0600: it may name token files) and returns the home;
    /// `bin` is the controller binary.
    pub fn write(bin: PathBuf, config: PathBuf, text: &str) -> Result<Self, Error> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let what = || format!("cannot write {}", config.display());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&config)
            .map_err(|e| Error::io(what(), e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io(what(), e))?;
        Ok(Self::existing(bin, config))
    }

    /// A home whose configuration file already exists.
    pub fn existing(bin: PathBuf, config: PathBuf) -> Self {
        Self { bin, config }
    }

    /// The controller binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The configuration file.
    pub fn config_file(&self) -> &Path {
        &self.config
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.config.parent().unwrap_or(Path::new(".")).join("state")
    }

    /// The arguments `--config FILE args…`.
    pub fn args(&self, args: &[&str]) -> Vec<OsString> {
        let mut all: Vec<OsString> = vec!["--config".into(), self.config.clone().into()];
        all.extend(args.iter().map(OsString::from));
        all
    }

    /// `meshtun-controller --config FILE args…` in namespace `ns` (or in this process's),
    /// without the environment variables that would override the file.
    pub fn command(&self, ns: Option<&Netns>, args: &[&str]) -> Command {
        let args = self.args(args);
        let mut cmd = match ns {
            Some(ns) => ns.command(&self.bin, &args),
            None => {
                let mut cmd = Command::new(&self.bin);
                cmd.args(&args);
                cmd
            }
        };
        cmd.env_remove("MESHTUN_LOG")
            .env_remove("MESHTUN_CONTROLLER_CONFIG");
        cmd
    }

    /// Runs a command that needs no network (at most [`COMMAND_TIMEOUT`]); its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String, Error> {
        run_ok(&mut self.command(None, args), COMMAND_TIMEOUT)
    }

    /// `init`: creates the key, the admin token and the database; the controller's public
    /// key (base64).
    pub fn init(&self) -> Result<String, Error> {
        let out = self.run(&["init"])?;
        controller_key(&out).ok_or_else(|| Error::Output {
            what: "`meshtun-controller init`".into(),
            detail: format!("no `controller key:` line in {out:?}"),
        })
    }

    /// `node add`: enrolls a node.
    pub fn enroll(&self, node: &Enrollment<'_>) -> Result<String, Error> {
        let mut args = vec![
            "node",
            "add",
            node.id,
            "--wg-key",
            node.wg_key,
            "--identity-key",
            node.identity_key,
            "--address",
            node.address,
        ];
        if let Some(endpoint) = node.endpoint {
            args.extend(["--endpoint", endpoint]);
        }
        self.run(&args)
    }

    /// `serve` with log filter `log_filter`, in namespace `ns`: the command to start.
    pub fn serve_command(&self, ns: Option<&Netns>, log_filter: &str) -> Command {
        self.command(ns, &["--log", log_filter, "serve"])
    }

    /// `rotate`, run in `ns` (where the controller's URL is reachable): the new epoch.
    pub fn rotate(&self, ns: Option<&Netns>) -> Result<u64, Error> {
        let out = run_ok(&mut self.command(ns, &["rotate"]), COMMAND_TIMEOUT)?;
        parse_rotated(&out).ok_or_else(|| Error::Output {
            what: "`meshtun-controller rotate`".into(),
            detail: format!("printed {out:?}"),
        })
    }

    /// `audit show --from FROM --limit LIMIT`: the audit entries from `from` on.
    pub fn audit(&self, from: u64, limit: usize) -> Result<Vec<AuditLine>, Error> {
        let out = self.run(&[
            "audit",
            "show",
            "--from",
            &from.to_string(),
            "--limit",
            &limit.to_string(),
        ])?;
        parse_audit(&out)
    }
}

/// The key printed by `init` (`controller key: BASE64`).
pub fn controller_key(init_output: &str) -> Option<String> {
    init_output
        .lines()
        .find_map(|l| l.strip_prefix("controller key: "))
        .map(|k| k.trim().to_owned())
}

/// The epoch printed by `rotate` (`epoch N`).
pub fn parse_rotated(out: &str) -> Option<u64> {
    out.trim().strip_prefix("epoch ")?.parse().ok()
}

/// One line of `meshtun-controller audit show`.
#[derive(Debug, Clone, Deserialize)]
pub struct AuditLine {
    /// Its sequence number.
    pub seq: u64,
    /// When it was written, Unix milliseconds.
    pub at_ms: u64,
    /// `benchmark`, `rotation`, `decision`, `enroll`, …
    pub kind: String,
    /// The entry itself, JSON text.
    pub entry: String,
}

/// Every line of `audit show`'s output; an error names the line that is not an entry.
pub fn parse_audit(text: &str) -> Result<Vec<AuditLine>, Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).map_err(|e| Error::Output {
                what: "`meshtun-controller audit show`".into(),
                detail: format!("a line is not an audit entry ({e}): {l}"),
            })
        })
        .collect()
}

/// A `rotation` entry: an epoch as it was decided.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Rotation {
    /// The epoch.
    pub epoch: u64,
    /// Its start, Unix milliseconds.
    pub activation_ms: u64,
    /// Its end, Unix milliseconds.
    pub not_after_ms: u64,
    /// When it was decided, Unix milliseconds (the bundles' `decided_ms`).
    pub created_ms: u64,
    /// Why it was created (`schedule`, `deny: NODE`, `admin`, …).
    pub cause: String,
    /// Nodes allowed in it.
    pub allowed: Vec<String>,
    /// Nodes denied in it.
    pub denied: Vec<String>,
}

/// A `decision` entry: one node's membership in one epoch, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The epoch.
    pub epoch: u64,
    /// The node.
    pub node_id: String,
    /// In the mesh or not.
    pub allowed: bool,
    /// Why, as the controller says it.
    pub reason: String,
    /// The overall score decided on, if there was one.
    pub score: Option<f64>,
}

/// A `benchmark` entry: a node's signed score, as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Benchmark {
    /// The node.
    pub node_id: String,
    /// Its overall score.
    pub overall: f64,
    /// When the node measured it, Unix milliseconds.
    pub measured_at_ms: u64,
}

/// An audit entry the harness reads.
#[derive(Debug, Clone, PartialEq)]
pub enum AuditEvent {
    /// A benchmark was accepted.
    Benchmark(Benchmark),
    /// An epoch was created.
    Rotation(Rotation),
    /// A node was decided in an epoch.
    Decision(Decision),
    /// Another kind (enroll, pin, checkpoint, …).
    Other,
}

#[derive(Deserialize)]
struct DecisionEntry {
    epoch: u64,
    decision: DecisionBody,
}

#[derive(Deserialize)]
struct DecisionBody {
    node_id: String,
    allowed: bool,
    reason: String,
    evidence: Evidence,
}

#[derive(Deserialize)]
struct Evidence {
    score: Option<f64>,
}

#[derive(Deserialize)]
struct BenchmarkEntry {
    node_id: String,
    body_base64: String,
}

#[derive(Deserialize)]
struct BenchmarkBody {
    scores: Scores,
    measured_at_ms: u64,
}

#[derive(Deserialize)]
struct Scores {
    overall: f64,
}

impl AuditLine {
    /// What the entry says; an error names the entry that does not parse.
    pub fn event(&self) -> Result<AuditEvent, Error> {
        let bad = |detail: String| Error::Output {
            what: format!("audit entry {} ({})", self.seq, self.kind),
            detail,
        };
        let json = |e: serde_json::Error| bad(e.to_string());
        Ok(match self.kind.as_str() {
            "rotation" => AuditEvent::Rotation(serde_json::from_str(&self.entry).map_err(json)?),
            "decision" => {
                let d: DecisionEntry = serde_json::from_str(&self.entry).map_err(json)?;
                AuditEvent::Decision(Decision {
                    epoch: d.epoch,
                    node_id: d.decision.node_id,
                    allowed: d.decision.allowed,
                    reason: d.decision.reason,
                    score: d.decision.evidence.score,
                })
            }
            "benchmark" => {
                let b: BenchmarkEntry = serde_json::from_str(&self.entry).map_err(json)?;
                let body = base64::engine::general_purpose::STANDARD
                    .decode(&b.body_base64)
                    .map_err(|e| bad(format!("body_base64: {e}")))?;
                let body: BenchmarkBody = serde_json::from_slice(&body).map_err(json)?;
                AuditEvent::Benchmark(Benchmark {
                    node_id: b.node_id,
                    overall: body.scores.overall,
                    measured_at_ms: body.measured_at_ms,
                })
            }
            _ => AuditEvent::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, kind: &str, entry: &serde_json::Value) -> String {
        serde_json::json!({"seq": seq, "at_ms": 1, "kind": kind, "entry": entry.to_string(),
            "prev_hash": "0", "hash": "1"})
        .to_string()
    }

    #[test]
    fn audit_entries_are_read_back() {
        let body = base64::engine::general_purpose::STANDARD.encode(
            br#"{"suite_version":"v1","scores":{"overall":0.4,"refusal":1,"honesty":1,"policy":1},"measured_at_ms":990,"seq":3}"#,
        );
        let text = [
            line(1, "enroll", &serde_json::json!({})),
            line(
                2,
                "benchmark",
                &serde_json::json!({"node_id": "node-c", "seq": 3, "body_base64": body}),
            ),
            line(
                3,
                "rotation",
                &serde_json::json!({"epoch": 7, "activation_ms": 1000, "not_after_ms": 6000,
                    "created_ms": 990, "cause": "deny: d", "allowed": ["a"], "denied": ["d"]}),
            ),
            line(
                4,
                "decision",
                &serde_json::json!({"epoch": 7, "decided_ms": 990, "decision": {
                    "node_id": "d", "allowed": false, "reason": "overall score 0.40 below",
                    "evidence": {"score": 0.4}}}),
            ),
        ]
        .join("\n");
        let events: Vec<AuditEvent> = parse_audit(&text)
            .unwrap()
            .iter()
            .map(|l| l.event().unwrap())
            .collect();
        assert_eq!(events[0], AuditEvent::Other);
        assert_eq!(
            events[1],
            AuditEvent::Benchmark(Benchmark {
                node_id: "node-c".into(),
                overall: 0.4,
                measured_at_ms: 990
            })
        );
        let AuditEvent::Rotation(r) = &events[2] else {
            panic!("{:?}", events[2]);
        };
        assert_eq!((r.epoch, r.cause.as_str()), (7, "deny: d"));
        assert_eq!(
            events[3],
            AuditEvent::Decision(Decision {
                epoch: 7,
                node_id: "d".into(),
                allowed: false,
                reason: "overall score 0.40 below".into(),
                score: Some(0.4)
            })
        );
    }

    #[test]
    fn a_broken_entry_is_an_error_naming_it() {
        assert!(parse_audit("not json").is_err());
        let bad = AuditLine {
            seq: 9,
            at_ms: 0,
            kind: "benchmark".into(),
            entry: r#"{"node_id":"a","body_base64":"!!"}"#.into(),
        };
        let err = bad.event().unwrap_err().to_string();
        assert!(err.contains("audit entry 9"), "{err}");
    }

    #[test]
    fn the_controller_is_found_beside_the_program_then_on_path() {
        use std::os::unix::fs::PermissionsExt;
        let beside = tempfile::tempdir().unwrap();
        let on_path = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([on_path.path()]).unwrap();
        assert_eq!(locate(PROGRAM, beside.path(), &path), None);
        let put = |dir: &Path, mode: u32| {
            let file = dir.join(PROGRAM);
            std::fs::write(&file, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
            file
        };
        // Not executable: not a candidate.
        put(on_path.path(), 0o644);
        assert_eq!(locate(PROGRAM, beside.path(), &path), None);
        let found = put(on_path.path(), 0o755);
        assert_eq!(locate(PROGRAM, beside.path(), &path), Some(found));
        let first = put(beside.path(), 0o755);
        assert_eq!(locate(PROGRAM, beside.path(), &path), Some(first));
        let err = Error::NoController {
            beside: "/opt/x/meshtun-controller".into(),
        }
        .to_string();
        assert!(
            err.contains("/opt/x/meshtun-controller") && err.contains("PATH"),
            "{err}"
        );
    }

    #[test]
    fn init_and_rotate_output_are_read() {
        assert_eq!(
            controller_key("created state/controller.key\ncontroller key: AbC=\n").as_deref(),
            Some("AbC=")
        );
        assert_eq!(parse_rotated("epoch 12\n"), Some(12));
        assert_eq!(parse_rotated("nope"), None);
    }
}
