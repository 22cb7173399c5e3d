//! Secret hygiene of the real controller binary. The controller runs with `--log trace` while
//! nodes enroll (directly and with an invite), submit passing, failing and refused
//! benchmarks, fetch their bundles across several epochs (scheduled, deny-triggered and
//! admin-rotated), and the admin uses every command. Then every secret is gathered: each
//! epoch secret, each pair key of each epoch (as derived by `derive_pair_psk`), the
//! controller's key, the nodes' WireGuard and identity keys, the admin token, the invite
//! token and ticket. None may appear, in any encoding, in:
//!
//! - the trace log, or what any command printed (except the ticket `invite` prints);
//! - any HTTP answer: health, epoch, status, metrics, the dashboard (`/ui`, its script and
//!   `/ui/data`), enrollment, benchmark answers and errors, and bundles (also their decoded
//!   payloads: bundles carry sealed keys only);
//! - the configuration, or any file in the state directory, except the ones meant to hold
//!   them: the key file holds only the controller key, the token file only the admin token,
//!   the database (with its `-wal` and `-shm`) only the epoch secrets;
//! - the running controller's environment and command line.
//!
//! The key, token and database files must be mode 0600, the state directory 0700. The sealed
//! keys in the bundles must open, with each node's private key, to the derived pair keys (so
//! the search looks for the right values).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use meshtun_e2e::controller::{
    benchmark_body, now_ms, Client, ControllerHome, Reply, StoredEpoch, TestNode,
};
use meshtun_e2e::secrets::{leaks, Secret};
use meshtun_proto::bundle::{Opener, SignedBundle};
use meshtun_proto::wire::{EnrollRequest, EpochInfo, Ticket};
use meshtun_proto::{derive_pair_psk, EpochSecret, IdentityKey, IdentityPublic};

/// How long to wait for an epoch change or for a membership to show.
const EPOCH_WAIT: Duration = Duration::from_secs(15);

/// Everything that must hold no secret: (where, bytes).
#[derive(Default)]
struct Places(Vec<(String, Vec<u8>)>);

impl Places {
    fn add(&mut self, place: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((place.into(), bytes.into()));
    }

    fn reply(&mut self, place: &str, reply: &Reply) {
        self.add(place, reply.body.clone());
    }

    /// A command's stdout and stderr.
    fn output(&mut self, place: &str, out: &meshtun_e2e::Output) {
        self.add(format!("stdout of {place}"), out.stdout.clone());
        self.add(format!("stderr of {place}"), out.stderr.clone());
    }
}

fn expect_status(what: &str, reply: Reply, status: u16) -> Reply {
    assert_eq!(reply.status, status, "{what}: {}", reply.text());
    reply
}

/// `GET path`, expecting 200.
fn get(client: &Client, path: &str) -> Reply {
    let reply = client
        .get(path)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    expect_status(&format!("GET {path}"), reply, 200)
}

/// Polls `/v1/status` until every node in `ids` is ALLOWED; returns the last answer.
fn wait_all_allowed(client: &Client, ids: &[&str]) -> Reply {
    let deadline = Instant::now() + EPOCH_WAIT;
    loop {
        let reply = get(client, "/v1/status");
        let status: serde_json::Value = reply.json();
        let allowed = |id: &&str| status["nodes"][*id]["membership"] == "ALLOWED";
        if ids.iter().all(allowed) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "not every node of {ids:?} was allowed within {EPOCH_WAIT:?}: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `/v1/epoch` until the epoch in force is above `above`; returns it.
fn wait_epoch_above(client: &Client, above: u64) -> EpochInfo {
    let deadline = Instant::now() + EPOCH_WAIT;
    loop {
        let info: EpochInfo = get(client, "/v1/epoch").json();
        if info.current.epoch > above {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "no epoch after {above} within {EPOCH_WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Submits a benchmark, expecting `status`.
fn submit(client: &Client, node: &TestNode, seq: u64, overall: f64, status: u16) -> Reply {
    let reply = client
        .submit_benchmark(node, benchmark_body(seq, overall, now_ms()))
        .unwrap_or_else(|e| panic!("benchmark {seq} of {}: {e}", node.id));
    expect_status(&format!("benchmark {seq} of {}", node.id), reply, status)
}

/// Enrolls a fourth node with an invite ticket; returns it, the ticket and its token.
fn enroll_with_invite(
    home: &ControllerHome,
    client: &Client,
    controller: &IdentityPublic,
    places: &mut Places,
) -> (TestNode, String, String) {
    let node = TestNode::generate("sec-d", 4);
    let out = home.run(&[
        "--log",
        "trace",
        "invite",
        &node.id,
        "--address",
        &node.address,
    ]);
    // The ticket on stdout is where the token belongs; the log must not repeat it.
    places.add("stderr of invite", out.stderr.clone());
    let ticket_text = out.expect_success().trim().to_owned();
    let ticket = Ticket::decode(&ticket_text).expect("`invite` printed a ticket");
    assert_eq!(ticket.url, home.url());
    assert_eq!(ticket.node_id, node.id);
    assert_eq!(ticket.controller_key, *controller);
    let build = |wg: &meshtun_proto::PrivateKey| {
        let (request, _) = EnrollRequest::build(
            &ticket,
            wg,
            &node.identity,
            vec![node.address.parse().expect("a CIDR address")],
            None,
        )
        .expect("an enrollment builds");
        serde_json::to_vec(&request).expect("an enrollment serializes")
    };
    let body = build(&node.wg);
    // The request proves the token without carrying it: it is searched like any output.
    places.add(
        "enroll request",
        String::from_utf8_lossy(&body).into_owned(),
    );
    let enrolled = client.post("/v1/enroll", body).expect("POST /v1/enroll");
    places.reply("enroll answer", &expect_status("enroll", enrolled, 201));
    let again = client
        .post("/v1/enroll", build(&meshtun_proto::PrivateKey::generate()))
        .expect("POST /v1/enroll");
    places.reply(
        "second enroll answer",
        &expect_status("reused ticket", again, 403),
    );
    (node, ticket_text, ticket.token.clone())
}

/// A bundle fetched by `node`, kept whole to check and search once the epochs are known.
struct Fetched {
    node: usize,
    reply: Reply,
}

/// Fetches every node's bundle newer than `after` (the current one if `None`).
fn fetch_bundles(client: &Client, nodes: &[TestNode], after: Option<u64>, out: &mut Vec<Fetched>) {
    for (i, node) in nodes.iter().enumerate() {
        let reply = client
            .bundle(node, after)
            .unwrap_or_else(|e| panic!("bundle of {}: {e}", node.id));
        let reply = expect_status(
            &format!("bundle of {} after {after:?}", node.id),
            reply,
            200,
        );
        out.push(Fetched { node: i, reply });
    }
}

/// Checks a bundle's signature and opens its sealed keys, comparing each with the pair key
/// derived from the stored epoch secret; adds its raw and decoded forms to `places`.
/// Returns (epoch, keys opened).
fn check_bundle(
    fetched: &Fetched,
    nodes: &[TestNode],
    controller: &IdentityPublic,
    secrets: &BTreeMap<u64, EpochSecret>,
    places: &mut Places,
) -> (u64, usize) {
    let node = &nodes[fetched.node];
    let signed: SignedBundle = fetched.reply.json();
    let bundle = signed
        .verify(controller)
        .unwrap_or_else(|e| panic!("bundle of {}: {e}", node.id));
    let place = format!("bundle of {} for epoch {}", node.id, bundle.epoch);
    places.reply(&place, &fetched.reply);
    places.add(
        format!("decoded payload of the {place}"),
        serde_json::to_vec(&bundle).expect("a bundle serializes"),
    );
    assert_eq!(bundle.node_id, node.id);
    let secret = secrets
        .get(&bundle.epoch)
        .unwrap_or_else(|| panic!("{place}: epoch not in the database"));
    let Some(seal_key) = bundle.seal_key else {
        assert!(bundle.peers.is_empty(), "{place}: peers without a seal key");
        return (bundle.epoch, 0);
    };
    let opener = Opener::new(&node.wg, &seal_key);
    for (i, peer) in bundle.peers.iter().enumerate() {
        let index = u32::try_from(i).expect("few peers");
        let psk = opener
            .open(index, bundle.epoch, peer)
            .unwrap_or_else(|e| panic!("{place}: {e}"));
        let expected = derive_pair_psk(
            secret,
            bundle.epoch,
            &node.wg.public_key(),
            &peer.public_key,
        );
        assert!(
            psk == expected,
            "{place}: the key sealed for {} is not the derived pair key",
            peer.node_id
        );
    }
    (bundle.epoch, bundle.peers.len())
}

/// Adds the epochs whose secrets the database holds now to `seen` (the controller erases a
/// secret once 4 newer epochs exist, so the test reads them while they are live).
fn remember_epochs(home: &ControllerHome, seen: &mut BTreeMap<u64, StoredEpoch>) {
    for epoch in home.open_db().epochs() {
        if !epoch.secret_hex.is_empty() {
            seen.insert(epoch.id, epoch);
        }
    }
}

/// Every secret of the run, labelled.
fn gather_secrets(
    home: &ControllerHome,
    epochs: &[StoredEpoch],
    nodes: &[TestNode],
    invite: (&str, &str),
) -> Vec<Secret> {
    let mut all = Vec::new();
    for epoch in epochs {
        let secret = EpochSecret::from_hex(&epoch.secret_hex).expect("a stored secret is hex");
        all.push(Secret::bytes(
            format!("epoch {} secret", epoch.id),
            secret.as_bytes(),
        ));
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                let psk =
                    derive_pair_psk(&secret, epoch.id, &a.wg.public_key(), &b.wg.public_key());
                all.push(Secret::bytes(
                    format!("pair key {}–{} of epoch {}", a.id, b.id, epoch.id),
                    psk.as_bytes(),
                ));
            }
        }
    }
    let read = |path: &Path| {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    all.push(Secret::text("controller key", &read(&home.key_file())));
    all.push(Secret::text("admin token", &read(&home.admin_token_file())));
    all.push(Secret::text("invite ticket", invite.0));
    all.push(Secret::text("invite token", invite.1));
    for node in nodes {
        all.push(Secret::bytes(
            format!("WireGuard key of {}", node.id),
            node.wg.as_bytes(),
        ));
        all.push(Secret::text(
            format!("identity key of {}", node.id),
            &node.identity.to_base64(),
        ));
    }
    all
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The database and its write-ahead log and shared-memory files.
const DB_FILES: [&str; 3] = ["controller.db", "controller.db-wal", "controller.db-shm"];

/// Whether state file `name` may hold the secret labelled `label`: the key file the
/// controller key, the token file the admin token, the database the epoch secrets.
fn may_hold(name: &str, label: &str) -> bool {
    match name {
        "controller.key" => label == "controller key",
        "admin.token" => label == "admin token",
        n if DB_FILES.contains(&n) => label.starts_with("epoch ") && label.ends_with(" secret"),
        _ => false,
    }
}

/// Checks the state directory: modes, and which secrets each file holds; the secrets of
/// epochs not in `live` must be gone from the database files. Returns the number of files.
fn check_state_dir(home: &ControllerHome, secrets: &[Secret], live: &[u64]) -> usize {
    let dir_mode = mode(&home.state_dir());
    assert_eq!(
        dir_mode, 0o700,
        "the state directory has mode {dir_mode:o}, not 700"
    );
    let mut by_name = BTreeMap::new();
    for entry in std::fs::read_dir(home.state_dir()).expect("the state directory lists") {
        let path = entry.expect("a directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if name == "controller.key" || name == "admin.token" || DB_FILES.contains(&name.as_str()) {
            let file_mode = mode(&path);
            assert_eq!(
                file_mode,
                0o600,
                "{} has mode {file_mode:o}, not 600",
                path.display()
            );
        }
        let found: Vec<_> = leaks(secrets, &bytes)
            .into_iter()
            .filter(|label| !may_hold(&name, label))
            .collect();
        assert!(found.is_empty(), "{} holds {found:?}", path.display());
        by_name.insert(name, bytes);
    }
    // The search finds what is where it belongs.
    let holds = |names: &[&str], secret: &Secret| {
        names
            .iter()
            .filter_map(|n| by_name.get(*n))
            .any(|bytes| secret.found_in(bytes))
    };
    let erased = |label: &str| {
        label
            .strip_prefix("epoch ")
            .and_then(|rest| rest.strip_suffix(" secret"))
            .and_then(|id| id.parse::<u64>().ok())
            .is_some_and(|id| !live.contains(&id))
    };
    for secret in secrets {
        if erased(secret.label()) {
            assert!(
                !holds(&DB_FILES, secret),
                "{} is still in the database files after its epoch left the live window",
                secret.label()
            );
            continue;
        }
        let home_files: Vec<&str> = ["controller.key", "admin.token"]
            .into_iter()
            .chain(DB_FILES)
            .filter(|n| may_hold(n, secret.label()))
            .collect();
        assert!(
            home_files.is_empty() || holds(&home_files, secret),
            "{} is not in {home_files:?}: the search would not find it there",
            secret.label()
        );
    }
    by_name.len()
}

/// The running process's environment and command line.
fn process_places(pid: u32, places: &mut Places) {
    for what in ["environ", "cmdline"] {
        let path = format!("/proc/{pid}/{what}");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        places.add(path, bytes);
    }
}

#[test]
fn no_secret_leaves_its_place() {
    let home = ControllerHome::new("[epoch]\nlength = 2\nlead = 1\n[api]\nlong_poll = 3\n");
    let mut places = Places::default();
    let out = home.run(&["--log", "trace", "init"]);
    places.output("init", &out);
    out.expect_success();
    let key_text = std::fs::read_to_string(home.key_file()).expect("init wrote the key");
    let controller = IdentityKey::from_base64(&key_text)
        .expect("the key file holds a key")
        .public();
    let mut nodes: Vec<TestNode> = ["sec-a", "sec-b", "sec-c"]
        .iter()
        .zip(1..)
        .map(|(id, i)| TestNode::generate(id, i))
        .collect();
    for node in &nodes {
        home.enroll(node);
    }
    let log = home.root().join("serve-trace.log");
    let mut server = home.serve("trace", &log);
    let first = server.wait_ready();
    let client = home.client();
    let status_client = home.status_client();
    places.reply("/health", &get(&client, "/health"));
    places.reply("/v1/epoch", &get(&client, "/v1/epoch"));
    for node in &nodes {
        places.reply("benchmark answer", &submit(&client, node, 1, 0.9, 201));
    }
    let (invited, ticket, token) = enroll_with_invite(&home, &client, &controller, &mut places);
    nodes.push(invited);
    places.reply(
        "benchmark answer",
        &submit(&client, &nodes[3], 1, 0.95, 201),
    );
    // Refused: a score out of range, a replayed seq, a request signed with the wrong key.
    places.reply("422 answer", &submit(&client, &nodes[0], 2, 1.5, 422));
    places.reply("409 answer", &submit(&client, &nodes[0], 1, 0.9, 409));
    let mut impostor = TestNode::generate("sec-a", 1);
    impostor.identity = IdentityKey::generate();
    places.reply("401 answer", &submit(&client, &impostor, 5, 0.9, 401));

    let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    places.reply(
        "/v1/status (all allowed)",
        &wait_all_allowed(&status_client, &ids),
    );
    let mut fetched = Vec::new();
    let mut seen = BTreeMap::new();
    fetch_bundles(&client, &nodes, None, &mut fetched);
    remember_epochs(&home, &mut seen);
    let allowed_epoch: EpochInfo = get(&client, "/v1/epoch").json();

    // A failing benchmark from an allowed node: an immediate epoch without it.
    places.reply("benchmark answer", &submit(&client, &nodes[2], 2, 0.2, 201));
    let after_deny = wait_epoch_above(&client, allowed_epoch.current.epoch);
    fetch_bundles(
        &client,
        &nodes,
        Some(allowed_epoch.current.epoch),
        &mut fetched,
    );
    remember_epochs(&home, &mut seen);
    for args in [
        &["status"][..],
        &["rotate"],
        &["node", "list"],
        &["audit", "verify"],
        &["audit", "show", "--limit", "1000"],
    ] {
        let mut full = vec!["--log", "trace"];
        full.extend_from_slice(args);
        let out = home.run(&full);
        places.output(&args.join(" "), &out);
        out.expect_success();
    }
    let rotated = wait_epoch_above(&client, after_deny.current.epoch);
    fetch_bundles(
        &client,
        &nodes,
        Some(after_deny.current.epoch),
        &mut fetched,
    );
    remember_epochs(&home, &mut seen);
    // At least one scheduled epoch after the rotation.
    let last = wait_epoch_above(&client, rotated.current.epoch);
    fetch_bundles(&client, &nodes, Some(rotated.current.epoch), &mut fetched);
    remember_epochs(&home, &mut seen);
    places.reply("/v1/status", &get(&status_client, "/v1/status"));
    places.reply("/metrics", &get(&status_client, "/metrics"));
    for page in ["/ui", "/ui/app.js", "/ui/data"] {
        places.reply(page, &get(&status_client, page));
    }
    places.reply("/v1/epoch", &get(&client, "/v1/epoch"));
    process_places(server.pid().expect("the controller runs"), &mut places);
    let status = server.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "the controller did not stop cleanly on SIGTERM: {status:?}"
    );
    let trace = std::fs::read(&log).expect("the log is readable");
    let text = String::from_utf8_lossy(&trace);
    for expected in [
        "epoch published",
        "MEMBERSHIP=DENY",
        "node enrolled with an invite",
    ] {
        assert!(
            text.contains(expected),
            "the log lacks {expected:?}:\n{text}"
        );
    }
    places.add("the serve log (trace)", trace);
    places.add(
        "the configuration file",
        std::fs::read(home.config_file()).expect("readable"),
    );

    let epochs = home.open_db().epochs();
    // Only the 4 newest epochs keep their secrets in the database.
    let live: Vec<u64> = epochs
        .iter()
        .filter(|e| !e.secret_hex.is_empty())
        .map(|e| e.id)
        .collect();
    let newest: Vec<u64> = epochs.iter().rev().take(4).map(|e| e.id).rev().collect();
    assert_eq!(live, newest, "epochs with a secret in the database");
    remember_epochs(&home, &mut seen);
    let seen: Vec<StoredEpoch> = seen.into_values().collect();
    let secrets_by_epoch: BTreeMap<u64, EpochSecret> = seen
        .iter()
        .map(|e| (e.id, EpochSecret::from_hex(&e.secret_hex).expect("hex")))
        .collect();
    let mut opened = 0;
    let mut bundle_epochs = std::collections::BTreeSet::new();
    for f in &fetched {
        let (epoch, keys) = check_bundle(f, &nodes, &controller, &secrets_by_epoch, &mut places);
        bundle_epochs.insert(epoch);
        opened += keys;
    }
    assert!(opened > 0, "no bundle carried a sealed key");
    let causes: Vec<&str> = epochs.iter().map(|e| e.cause.as_str()).collect();
    assert!(
        causes.iter().any(|c| c.starts_with("deny: sec-c")),
        "{causes:?}"
    );
    assert!(causes.contains(&"admin"), "{causes:?}");

    let secrets = gather_secrets(&home, &seen, &nodes, (&ticket, &token));
    let mut found = Vec::new();
    for (place, bytes) in &places.0 {
        for label in leaks(&secrets, bytes) {
            found.push(format!("{label} in {place}"));
        }
    }
    assert!(
        found.is_empty(),
        "secrets out of place:\n{}",
        found.join("\n")
    );
    let files = check_state_dir(&home, &secrets, &live);
    eprintln!(
        "controller secrets test: {} secrets ({} epochs {}..={}, causes {causes:?}) searched in \
         {} places and {files} state files; {} bundles from epochs {bundle_epochs:?} opened to \
         {opened} derived pair keys; last epoch seen via the API {}; first {}",
        secrets.len(),
        epochs.len(),
        epochs.first().map_or(0, |e| e.id),
        epochs.last().map_or(0, |e| e.id),
        places.0.len(),
        fetched.len(),
        last.current.epoch,
        first.current.epoch,
    );
}
