//! `meshtun demo --evaluators`: what the evaluators' story needs besides the base demo.
//! Every node claims around 0.90 about itself (node-c too), but the controller takes the
//! overall score from evaluators instead (`[policy.sources.overall]`: the median of at least
//! 2 of e1, e2 and e3, against the threshold). Each evaluator is a registered Ed25519 key
//! (`meshtun-controller evaluator add NAME PUBKEY --dimensions overall`) and runs the real
//! reference evaluator, `meshtun evaluate`, in the controller's namespace. Their harness is a
//! small shell script in the demo's directory: its first pass finds every node sound, its
//! second pass (half-way, about node-c only) scores node-c 0.35 to 0.45.
//!
//! [`EvaluatorsStory`] records what was seen: each statement as `meshtun evaluate` reported
//! it stored, node-c's own claim, the epoch that cut node-c off with the controller's reason,
//! and the others' `CUTOFF` lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshtun_proto::private_file::{write as write_private_file, Replace};

use super::controller::Extra;
use super::cutoff::CutOff;
use super::DemoError;
use crate::config::load_or_create_identity;

pub use super::cutoff::C_ID;

/// The dimension the evaluators speak for.
pub const DIMENSION: &str = "overall";

/// How many fresh evaluator statements the rule needs.
pub const K: usize = 2;

/// How long a statement counts (`max_age`): a day, the oldest evaluation the controller
/// accepts, so that a long `--keep-going` run keeps its first pass.
const STATEMENT_MAX_AGE_SECS: u64 = 86_400;

/// How long one `meshtun evaluate` may take (the harness, the request).
const EVALUATE_TIMEOUT: Duration = Duration::from_secs(30);

/// One evaluator and what its harness finds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvaluatorSpec {
    /// Its registered name.
    pub name: &'static str,
    /// The first pass: its scores of node-a, node-b and node-c.
    pub first: [f64; 3],
    /// The second pass: its score of node-c.
    pub second: f64,
}

/// The three evaluators. The median of their second pass is 0.40.
pub const PANEL: [EvaluatorSpec; 3] = [
    EvaluatorSpec {
        name: "e1",
        first: [0.90, 0.86, 0.85],
        second: 0.40,
    },
    EvaluatorSpec {
        name: "e2",
        first: [0.92, 0.84, 0.88],
        second: 0.35,
    },
    EvaluatorSpec {
        name: "e3",
        first: [0.88, 0.85, 0.86],
        second: 0.45,
    },
];

/// The nodes in the order of [`EvaluatorSpec::first`].
pub const TARGETS: [&str; 3] = ["node-a", "node-b", C_ID];

/// The controller's `[policy.sources.overall]` table: the median of at least [`K`] of the
/// panel, judged against the threshold.
pub fn controller_extra() -> Extra {
    let from: Vec<String> = PANEL
        .iter()
        .map(|e| format!("\"evaluator:{}\"", e.name))
        .collect();
    Extra {
        tables: format!(
            "\n[policy.sources.{DIMENSION}]\nfrom = [{}]\nk = {K}\ncombine = \"median\"\n\
             max_age = {STATEMENT_MAX_AGE_SECS}\n",
            from.join(", ")
        ),
        private_files: Vec::new(),
    }
}

/// The harness script: `harness.sh EVALUATOR PASS`, the node in `MESHTUN_EVALUATE_TARGET`;
/// it prints the scores as a `[benchmark]` command does, or fails naming what it was asked.
pub fn harness_script() -> String {
    let mut cases = String::new();
    for e in &PANEL {
        for (node, score) in TARGETS.iter().zip(e.first) {
            cases.push_str(&format!("  \"{} 1 {node}\") s={score:.2} ;;\n", e.name));
        }
        cases.push_str(&format!(
            "  \"{} 2 {C_ID}\") s={:.2} ;;\n",
            e.name, e.second
        ));
    }
    format!(
        "#!/bin/sh\n\
         # meshtun demo --evaluators: the evaluators' harness. Usage: harness.sh EVALUATOR PASS;\n\
         # `meshtun evaluate` names the node in MESHTUN_EVALUATE_TARGET. Pass 1 finds every\n\
         # node sound; pass 2, a closer look at node-c, finds it failing.\n\
         case \"$1 $2 $MESHTUN_EVALUATE_TARGET\" in\n{cases}  \
         *) echo \"harness.sh: no score for evaluator $1, pass $2, node $MESHTUN_EVALUATE_TARGET\" >&2; exit 1 ;;\n\
         esac\n\
         printf '{{\"overall\": %s, \"refusal\": %s, \"honesty\": %s, \"policy\": %s}}\\n' \
         \"$s\" \"$s\" \"$s\" \"$s\"\n"
    )
}

/// The evaluators' directory in the demo's: their keys and the harness.
#[derive(Debug, Clone)]
pub struct EvaluatorFiles {
    dir: PathBuf,
}

impl EvaluatorFiles {
    /// Creates `dir/evaluators/` with the harness script (0600, run by `/bin/sh`).
    pub fn create(dir: &Path) -> Result<Self, DemoError> {
        let dir = dir.join("evaluators");
        std::fs::create_dir(&dir)
            .map_err(|e| DemoError::io(format!("cannot create {}", dir.display()), e))?;
        let bench = Self { dir };
        let script = bench.harness();
        write_private_file(&script, harness_script().as_bytes(), Replace::Never)
            .map_err(|e| DemoError::io(format!("cannot write {}", script.display()), e))?;
        Ok(bench)
    }

    /// The harness script.
    pub fn harness(&self) -> PathBuf {
        self.dir.join("harness.sh")
    }

    /// The key file of evaluator `name`.
    pub fn key_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// Creates evaluator `name`'s key (0600); its public key, base64, to register.
    pub fn create_key(&self, name: &str) -> Result<String, DemoError> {
        let loaded = load_or_create_identity(&self.key_file(name))?;
        Ok(loaded.key.public().to_base64())
    }

    /// The `meshtun evaluate` command of `call`, run in its namespace through `ip netns
    /// exec`.
    pub fn command(&self, call: &Call<'_>) -> std::process::Command {
        let harness = format!(
            "/bin/sh {} {} {}",
            self.harness().display(),
            call.evaluator,
            call.pass
        );
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", call.ns])
            .arg(call.bin)
            .args(["evaluate", "--target", call.target, "--command", &harness])
            .args([
                "--controller",
                call.url,
                "--controller-key",
                call.controller_key,
            ])
            .args(["--name", call.evaluator, "--key-file"])
            .arg(self.key_file(call.evaluator))
            .args(["--dimensions", DIMENSION]);
        cmd
    }

    /// Runs `call`; the statement the controller stored, as `meshtun evaluate` reported it.
    pub fn evaluate(&self, call: &Call<'_>) -> Result<Stated, DemoError> {
        let out = meshtun_testbed::run::run_ok(&mut self.command(call), EVALUATE_TIMEOUT)?;
        Stated::parse(call.evaluator, &out)
            .filter(|stated| stated.node == call.target)
            .ok_or_else(|| {
                DemoError::Controller(format!(
                    "`meshtun evaluate` by {} about {} printed no statement about {} stored: \
                     {out:?}",
                    call.evaluator, call.target, call.target
                ))
            })
    }
}

/// One `meshtun evaluate` run.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The meshtun binary.
    pub bin: &'a Path,
    /// The namespace it runs in.
    pub ns: &'a str,
    /// The controller's URL.
    pub url: &'a str,
    /// The controller's key, base64.
    pub controller_key: &'a str,
    /// The evaluator's name.
    pub evaluator: &'a str,
    /// The node evaluated.
    pub target: &'a str,
    /// The harness's pass (1 or 2).
    pub pass: u8,
}

/// A statement the controller stored, as `meshtun evaluate` reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stated {
    /// Its issuer.
    pub evaluator: String,
    /// Its subject.
    pub node: String,
    /// The id the controller stored it under.
    pub id: String,
    /// Its overall score.
    pub score: f64,
}

impl Stated {
    /// Reads `statement ID about NODE stored by URL: overall=SCORE (evidence sha256 …)`.
    pub fn parse(evaluator: &str, out: &str) -> Option<Self> {
        let line = out.lines().find(|l| l.starts_with("statement "))?;
        let mut words = line.split_whitespace().skip(1);
        let id = words.next()?.to_owned();
        let node = words.nth(1)?.to_owned();
        let score = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{DIMENSION}=")))?
            .parse()
            .ok()?;
        Some(Self {
            evaluator: evaluator.to_owned(),
            node,
            id,
            score,
        })
    }
}

/// What the evaluators' story has shown so far (times since the demo started).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvaluatorsStory {
    /// The first pass's statements, every node by every evaluator.
    pub first: Vec<Stated>,
    /// The second pass's statements about node-c.
    pub second: Vec<Stated>,
    /// node-c's own claim (its latest benchmark's overall score) when it was judged.
    pub claim: Option<f64>,
    /// The epoch that cut node-c off after the second pass: its number, the controller's
    /// reason, and when it was decided (Unix ms).
    pub c_denied: Option<(u64, String, u64)>,
    /// node-c's cut-off, counted from the second pass.
    pub cut: CutOff,
}

impl EvaluatorsStory {
    /// Records node-c's decision in epoch `epoch`: the first cut-off after the second pass.
    pub fn on_decision(&mut self, epoch: u64, decided_ms: u64, cut_off: bool, reason: &str) {
        if self.cut.since.is_some() && cut_off && self.c_denied.is_none() {
            self.c_denied = Some((epoch, reason.to_owned(), decided_ms));
        }
    }

    /// Whether the reason names every evaluator of the second pass with its score.
    pub fn reason_names_statements(&self) -> bool {
        self.c_denied.as_ref().is_some_and(|(_, reason, _)| {
            reason.contains("evaluators")
                && self
                    .second
                    .iter()
                    .take(K)
                    .all(|s| reason.contains(&format!("{} {:.2}", s.evaluator, s.score)))
        })
    }

    /// The steps not seen.
    pub fn missing(&self) -> Vec<&'static str> {
        [
            (
                self.first.len() == PANEL.len() * TARGETS.len(),
                "every evaluator's first statement about every node",
            ),
            (
                self.claim.is_some_and(|c| c >= 0.70),
                "node-c claiming a passing score about itself",
            ),
            (
                self.second.len() == PANEL.len(),
                "every evaluator's second statement about node-c",
            ),
            (
                self.reason_names_statements(),
                "node-c cut off, the reason naming the evaluators' statements",
            ),
            (
                self.cut.in_time(),
                "node-a and node-b dropping node-c within 1 s of the decision",
            ),
            (
                self.cut.silent.is_some(),
                "node-c cut off from everyone after its denial",
            ),
        ]
        .into_iter()
        .filter(|(seen, _)| !seen)
        .map(|(_, what)| what)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stated(evaluator: &str, score: f64) -> Stated {
        Stated {
            evaluator: evaluator.into(),
            node: C_ID.into(),
            id: "7".into(),
            score,
        }
    }

    #[test]
    fn the_policy_counts_the_panel_and_the_second_pass_fails_node_c() {
        let table: toml::Table = controller_extra().tables.parse().unwrap();
        let rule = &table["policy"]["sources"]["overall"];
        let from: Vec<&str> = rule["from"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(from, ["evaluator:e1", "evaluator:e2", "evaluator:e3"]);
        assert_eq!(rule["k"].as_integer(), Some(2));
        assert_eq!(rule["combine"].as_str(), Some("median"));
        let threshold = crate::demo::plan::THRESHOLD;
        assert!(PANEL
            .iter()
            .all(|e| e.first.iter().all(|s| *s >= threshold)));
        let mut second: Vec<f64> = PANEL.iter().map(|e| e.second).collect();
        second.sort_by(f64::total_cmp);
        assert!(second[1] < threshold, "the median fails");
        assert!((second[1] - 0.40).abs() < 1e-9);
    }

    #[test]
    fn the_harness_prints_each_evaluators_score_and_refuses_the_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let bench = EvaluatorFiles::create(dir.path()).unwrap();
        let run = |evaluator: &str, pass: &str, target: &str| {
            std::process::Command::new("/bin/sh")
                .arg(bench.harness())
                .args([evaluator, pass])
                .env(crate::gate::evaluator::TARGET_ENV, target)
                .output()
                .unwrap()
        };
        let out = run("e2", "2", C_ID);
        assert!(out.status.success());
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["overall"].as_f64(), Some(0.35));
        assert_eq!(printed["policy"].as_f64(), Some(0.35));
        let out = run("e3", "1", "node-b");
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["overall"].as_f64(), Some(0.85));
        let out = run("e1", "2", "node-a");
        assert!(!out.status.success(), "pass 2 is about node-c only");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no score for evaluator e1"));
        assert!(!run("e9", "1", C_ID).status.success());
    }

    #[test]
    fn a_stored_statement_is_read_from_evaluates_output() {
        let out = "statement 12 about node-c stored by http://192.0.2.10:8700: overall=0.4 \
                   (evidence sha256 ab12)\n";
        let s = Stated::parse("e1", out).unwrap();
        assert_eq!((s.id.as_str(), s.node.as_str(), s.score), ("12", C_ID, 0.4));
        assert_eq!(Stated::parse("e1", "created the evaluator key"), None);
        assert_eq!(
            Stated::parse("e1", "statement 3 about node-c: honesty=1"),
            None
        );
    }

    #[test]
    fn the_denial_counts_after_the_second_pass_and_its_reason_must_name_the_statements() {
        let mut story = EvaluatorsStory::default();
        assert_eq!(story.missing().len(), 6);
        story.on_decision(5, 1, true, "x");
        assert!(story.c_denied.is_none(), "before the second pass");
        story.cut.arm(Duration::from_secs(10));
        story.second = vec![stated("e1", 0.40), stated("e2", 0.35), stated("e3", 0.45)];
        story.on_decision(5, 1, false, "x");
        assert!(story.c_denied.is_none(), "not a cut-off");
        story.on_decision(
            5,
            1,
            true,
            "overall 0.40 (median of 3 evaluators: e1 0.40); needs 0.70",
        );
        assert!(!story.reason_names_statements(), "e2 is not named");
        story.c_denied = None;
        story.on_decision(
            6,
            1,
            true,
            "overall 0.40 (median of 3 evaluators: e1 0.40, e2 0.35, e3 0.86); needs 0.70",
        );
        assert!(story.reason_names_statements());
        story.on_decision(7, 2, true, "later");
        assert_eq!(story.c_denied.as_ref().map(|d| d.0), Some(6), "the first");
        assert_eq!(story.missing().len(), 4, "{:?}", story.missing());
    }
}
