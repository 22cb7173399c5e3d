//! Evaluators over self-reported scores (README "Evaluators"): three evaluators in the
//! group `core` and four nodes; the policy takes `honesty` from the median of at least 2 of
//! the group, with a minimum of 0.70. The evaluators run the real `meshtun evaluate` against
//! the controller.
//!
//! - `a_node_praising_itself_is_denied_by_the_evaluators_and_cut_off`: d reports 0.95 about
//!   itself; once e1 and e2 score its honesty 0.30 (e3 still 0.90), the controller denies d
//!   with a reason naming the evaluators, and a, b and c drop d within 1 s of the decision
//!   while they lose no ping among themselves.
//! - `statements_an_evaluator_may_not_make_are_refused_and_not_stored`: a statement signed
//!   with a key the controller does not know under a registered name, one about a dimension
//!   its evaluator may not score, one from a removed evaluator, one about a node that is
//!   not enrolled, and a request replayed byte for byte are each refused (401, 403, 401, 422,
//!   401), and the audit log gains no statement.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshtun_e2e::gating::observe::{self, wait_removed};
use meshtun_e2e::gating::{harness_output, now_ms, Mesh, Timing, PASSING};
use meshtun_e2e::{meshtun_bin, require_root, wait_until};
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::statement::{EvidenceDigest, Issuer, Statement};
use meshtun_proto::{IdentityKey, IdentityPublic};
use meshtun_testbed::controller::parse_audit;

/// How long after the decision the denied node must be cut off everywhere.
const CUTOFF_LIMIT_MS: u64 = 1000;

/// The honesty rule: the median of at least 2 of group `core`, fresh within a minute.
const SOURCES: &str = "[policy.sources.honesty]\nfrom = [\"group:core\"]\nk = 2\n\
                       combine = \"median\"\nmax_age = 60\nminimum = 0.70\n";

/// A registered evaluator: its name and key file.
struct Evaluator {
    name: String,
    key_file: PathBuf,
}

/// Writes a new evaluator key (0600, as `meshtun evaluate` writes it) into `dir`.
fn new_key(dir: &Path, name: &str) -> (PathBuf, IdentityKey) {
    let key = IdentityKey::generate();
    let path = dir.join(format!("{name}.key"));
    let text = format!("{}\n", key.to_base64());
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, key)
}

/// Registers `name` for `dimensions` in group `core`.
fn register(mesh: &Mesh, dir: &Path, name: &str, dimensions: &str) -> Evaluator {
    let (key_file, key) = new_key(dir, name);
    let public = key.public().to_base64();
    mesh.controller_run_ok(
        0,
        &[
            "evaluator",
            "add",
            name,
            &public,
            "--dimensions",
            dimensions,
            "--group",
            "core",
        ],
    );
    Evaluator {
        name: name.to_owned(),
        key_file,
    }
}

/// A harness that prints `score` for every dimension.
fn harness(dir: &Path, score: f64) -> PathBuf {
    let path = dir.join(format!("harness-{score}.json"));
    std::fs::write(&path, harness_output(score)).expect("write the harness output");
    path
}

/// Runs `meshtun evaluate` in the controller's namespace: `who` scores `target` with the
/// harness printing `output`, for `dimensions`. Returns (success, stderr).
fn evaluate(
    mesh: &Mesh,
    who: &Evaluator,
    target: &str,
    output: &Path,
    dimensions: &str,
) -> (bool, String) {
    let bin = meshtun_bin();
    let command = format!("/bin/cat {}", output.display());
    let url = mesh.instance(0).url();
    let key_file = who.key_file.to_string_lossy().into_owned();
    let bin = bin.to_string_lossy();
    let args = [
        &*bin,
        "evaluate",
        "--target",
        target,
        "--command",
        &command,
        "--controller",
        &url,
        "--controller-key",
        mesh.controller_key(),
        "--name",
        &who.name,
        "--key-file",
        &key_file,
        "--dimensions",
        dimensions,
    ];
    let out = mesh
        .controller_ns()
        .run_timeout(&args, Duration::from_secs(20));
    (out.status.success(), out.stderr.clone())
}

fn evaluate_ok(mesh: &Mesh, who: &Evaluator, target: &str, output: &Path) {
    let (ok, stderr) = evaluate(mesh, who, target, output, "honesty");
    assert!(ok, "{} could not score {target}: {stderr}", who.name);
}

/// The statements in the audit log.
fn audited_statements(mesh: &Mesh) -> usize {
    let out = mesh.controller_run_ok(0, &["audit", "show", "--from", "1", "--limit", "100000"]);
    parse_audit(&out)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|line| line.kind == "statement")
        .count()
}

#[test]
fn a_node_praising_itself_is_denied_by_the_evaluators_and_cut_off() {
    if !require_root("a_node_praising_itself_is_denied_by_the_evaluators_and_cut_off") {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mesh = Mesh::new("evaluators", Timing::default(), &["a", "b", "c", "d"]);
    mesh.add_controller_settings(0, SOURCES);
    let ctl = mesh.start_controller();
    let evaluators: Vec<Evaluator> = ["e1", "e2", "e3"]
        .iter()
        .map(|name| register(&mesh, dir.path(), name, "honesty"))
        .collect();
    let (good, bad) = (harness(dir.path(), PASSING), harness(dir.path(), 0.3));
    for id in ["a", "b", "c", "d"] {
        for e in &evaluators {
            evaluate_ok(&mesh, e, id, &good);
        }
    }
    mesh.set_score("d", 0.95);
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);
    let (a, b, c, d) = (
        mesh.node("a"),
        mesh.node("b"),
        mesh.node("c"),
        mesh.node("d"),
    );
    let allowed = mesh.ping_pairs(&["a", "b", "c"], Duration::from_secs(20));

    // --- Two of three evaluators judge d dishonest; d still says 0.95 about itself ---
    let judged_at = now_ms();
    evaluate_ok(&mesh, &evaluators[0], "d", &bad);
    evaluate_ok(&mesh, &evaluators[1], "d", &bad);
    let removed = [
        ("a", wait_removed(a, d)),
        ("b", wait_removed(b, d)),
        ("c", wait_removed(c, d)),
    ];
    let denial = ctl
        .denial("d", judged_at)
        .unwrap_or_else(|| panic!("no epoch denying d in the audit log: {:?}", ctl.rotations()));
    for (id, at) in removed {
        eprintln!(
            "{id} removed d {} ms after the decision",
            at as i64 - denial.created_ms as i64
        );
        assert!(
            at <= denial.created_ms + CUTOFF_LIMIT_MS,
            "{id} still listed d {} ms after the controller denied it",
            at - denial.created_ms
        );
    }
    let reason = wait_reason(d);
    for part in [
        "honesty 0.30",
        "median of 3 evaluators",
        "e1 0.30",
        "e2 0.30",
        "e3 0.90",
        "0.70",
    ] {
        assert!(
            reason.contains(part),
            "d's reason lacks {part:?}: {reason:?}"
        );
    }
    for run in allowed {
        run.stop().assert_no_loss();
    }
    for node in [a, b, c] {
        assert_eq!(observe::shown_membership(&node.ns, &node.iface), "ALLOWED");
    }
}

/// The reason `meshtun show` gives on `node` once it is denied.
fn wait_reason(node: &meshtun_e2e::gating::GatedNode) -> String {
    let mut reason = String::new();
    let denied = wait_until(Duration::from_secs(5), || {
        let shown = observe::show_gate(&node.ns, &node.iface);
        reason = shown["reason"].as_str().unwrap_or("").to_owned();
        shown["membership"] == "DENIED"
    });
    assert!(
        denied,
        "{} never showed itself DENIED (reason {reason:?})",
        node.id
    );
    reason
}

#[test]
fn statements_an_evaluator_may_not_make_are_refused_and_not_stored() {
    if !require_root("statements_an_evaluator_may_not_make_are_refused_and_not_stored") {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mesh = Mesh::new("eval_refused", Timing::default(), &["a"]);
    let _ctl = mesh.start_controller();
    let e1 = register(&mesh, dir.path(), "e1", "honesty");
    let e3 = register(&mesh, dir.path(), "e3", "honesty");
    let output = harness(dir.path(), PASSING);
    evaluate_ok(&mesh, &e1, "a", &output);
    let stored = audited_statements(&mesh);
    assert_eq!(stored, 1);

    // A forger who knows the name but not the key.
    let (forged_key, _) = new_key(dir.path(), "forger");
    let forger = Evaluator {
        name: "e1".into(),
        key_file: forged_key,
    };
    let refusals = [
        (
            "a key the controller does not know",
            evaluate(&mesh, &forger, "a", &output, "honesty"),
            "401",
        ),
        (
            "a dimension e1 may not score",
            evaluate(&mesh, &e1, "a", &output, "refusal"),
            "403",
        ),
        (
            "a node that is not enrolled",
            evaluate(&mesh, &e1, "nobody", &output, "honesty"),
            "422",
        ),
    ];
    mesh.controller_run_ok(0, &["evaluator", "remove", "e3"]);
    let removed = evaluate(&mesh, &e3, "a", &output, "honesty");
    for (what, (ok, stderr), status) in
        refusals
            .into_iter()
            .chain([("a removed evaluator", removed, "401")])
    {
        assert!(!ok, "a statement with {what} was accepted");
        assert!(
            stderr.contains(status),
            "{what}: expected {status}, got: {stderr}"
        );
    }
    assert_eq!(
        audited_statements(&mesh),
        stored,
        "a refused statement reached the audit log"
    );

    // A request captured on the way (say, behind a TLS-terminating proxy) and sent again,
    // byte for byte: the first is stored, the replay refused.
    let key = std::fs::read_to_string(&e1.key_file).expect("e1's key");
    let key = IdentityKey::from_base64(key.trim()).expect("e1's key parses");
    let request = signed_statement_request(&mesh, &key, "e1", "a");
    let first = post_raw(&mesh, &request);
    assert!(first.starts_with("HTTP/1.1 201"), "the original: {first}");
    let replay = post_raw(&mesh, &request);
    assert!(replay.starts_with("HTTP/1.1 401"), "the replay: {replay}");
    assert_eq!(
        audited_statements(&mesh),
        stored + 1,
        "the replay reached the audit log"
    );
}

/// A whole HTTP/1.1 request: `evaluator` (signing with `key`) scores `subject`'s honesty.
fn signed_statement_request(
    mesh: &Mesh,
    key: &IdentityKey,
    evaluator: &str,
    subject: &str,
) -> String {
    let statement = Statement {
        issuer: Issuer::Evaluator(evaluator.into()),
        subject: subject.into(),
        scores: [("honesty".to_owned(), 0.8)].into_iter().collect(),
        evaluated_at_ms: now_ms(),
        evidence: EvidenceDigest::of(b"captured"),
    };
    let body = statement.sign(key).expect("a valid statement").encode();
    let controller = IdentityPublic::from_base64(mesh.controller_key()).expect("controller key");
    let path = "/v1/statements";
    let sig = RequestSignature::sign(key, &controller, evaluator, "POST", path, &body, now_ms());
    let host = mesh.instance(0).url();
    let host = host.trim_start_matches("http://");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in sig.headers() {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head + std::str::from_utf8(&body).expect("a statement is JSON")
}

/// Sends `request` to the controller from its namespace; the whole answer.
fn post_raw(mesh: &Mesh, request: &str) -> String {
    let addr = mesh.instance(0).url();
    let addr = addr.trim_start_matches("http://").to_owned();
    mesh.controller_ns()
        .enter(|| -> std::io::Result<String> {
            let addr = addr.parse().expect("the controller's address");
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            stream.write_all(request.as_bytes())?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .expect("the controller answers")
}
