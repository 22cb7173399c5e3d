//! A live SQLite deployment moved to PostgreSQL with `meshtun-controller migrate`, as the
//! README tells an operator to (see `meshtun_e2e::gating::migrate`).
//!
//! `a_live_sqlite_deployment_moves_to_postgres_and_the_mesh_goes_on`: a gated mesh of three
//! (a, b, c) on the default SQLite controller builds real history: epochs, decisions,
//! benchmarks, audit entries, c denied by its score, readmitted, then denied by an operator's
//! pin (so that, with a passing score, only the copied pin keeps it out). Then:
//!
//! 1. while the controller runs, `migrate` copies it into a new database of a PostgreSQL
//!    cluster on the mesh's bridge: it reports the rows per table (equal to what the target
//!    holds) and a verified chain, which `audit verify --database postgres://…` confirms and
//!    which is a prefix of the source's chain (a snapshot); `migrate` again into that database
//!    is refused and changes nothing;
//! 2. the controller is stopped (it went on writing meanwhile: the final copy holds more);
//!    the final copy, into another new database, holds every row of the source, and
//!    `audit verify` on it and on the SQLite file agree (entries, head, decisions);
//! 3. the controller starts on the PostgreSQL database at the same address, with the same key
//!    and secrets. Every node has an epoch newer than SQLite's last within one epoch, its
//!    lead and some slack; the ids go on increasing; c, still passing its benchmarks (which
//!    reach the new database), stays denied and out of a's and b's peers; the controller
//!    extends the copied audit chain, which still verifies; a <-> b lose no ping from before
//!    the copy until after the new epoch.
//!
//! The timing is the HA tests' (a 6 s epoch published 4 s ahead, 3 s grace). The controller
//! is stopped half a second before its next publication is due, so the switch (SIGTERM, the
//! final copy, the start) must fit in the lead plus the grace.
//!
//! `migrate_names_a_source_or_target_it_cannot_copy_and_creates_nothing`: an unknown scheme
//! (its password not echoed), a PostgreSQL source, a missing file, a file that is not a
//! database, an empty one, an SQLite target: each refused, named, nothing created.

use std::time::{Duration, Instant};

use meshtun_e2e::controller::{ControllerHome, StateDb};
use meshtun_e2e::gating::ha::{HaDatabase, HA_TIMING};
use meshtun_e2e::gating::migrate::Migrated;
use meshtun_e2e::gating::observe::{self, wait_removed};
use meshtun_e2e::gating::{now_ms, ControllerProc, Mesh, PingRun, Timing, FAILING, PASSING};
use meshtun_e2e::{require_root, run_command, wait_until};

/// The tables `migrate` copies.
const TABLES: [&str; 8] = [
    "nodes",
    "node_addresses",
    "invites",
    "benchmarks",
    "epochs",
    "decisions",
    "audit_checkpoints",
    "audit",
];

/// How long a <-> b go on pinging after the last node is in a PostgreSQL epoch (new
/// preshared keys, new handshakes).
const AFTER_SWITCH: Duration = Duration::from_secs(3);

/// Scheduling slack on top of the epoch timing.
const SLACK: Duration = Duration::from_secs(2);

/// How long a readmission or a denial may take to be decided.
fn decision_limit(timing: Timing) -> Duration {
    timing.epoch_len() * 2 + SLACK
}

#[test]
fn a_live_sqlite_deployment_moves_to_postgres_and_the_mesh_goes_on() {
    if !require_root("a_live_sqlite_deployment_moves_to_postgres_and_the_mesh_goes_on") {
        return;
    }
    let mesh = Mesh::new("ha_migrate", HA_TIMING, &["a", "b", "c"]);
    let db = mesh.start_database();
    let mut ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);
    build_history(&mesh, &ctl);
    // Longer than the test needs: stopped once the switch is over (`AFTER_SWITCH`).
    let pings = mesh.ping_pairs(&["a", "b"], Duration::from_secs(45));
    let runs: Vec<&PingRun> = pings.iter().collect();
    assert!(
        wait_until(Duration::from_secs(5), || runs
            .iter()
            .all(|r| !r.replies_so_far().is_empty())),
        "a <-> b got no reply before the copy"
    );

    let live = live_copy(&mesh, &db);
    let (mut switch, target, last) = stop_and_copy(&mesh, &mut ctl, &db, &live);
    mesh.set_database(0, &db.config_lines_for(&target, "ctl-0"));
    switch.started_ms = now_ms();
    ctl.restart();
    eprintln!(
        "the controller on PostgreSQL answers {} ms after its start, {} ms after the SQLite one \
         was stopped",
        now_ms() - switch.started_ms,
        now_ms() - switch.stopped_ms
    );
    let switched_ms = goes_on(&mesh, &ctl, &db, &target, &switch);
    chain_goes_on(&mesh, &db, &target, &last);
    let until = switched_ms + u64::try_from(AFTER_SWITCH.as_millis()).unwrap_or(u64::MAX);
    std::thread::sleep(Duration::from_millis(until.saturating_sub(now_ms())));
    for run in pings {
        let report = run.stop();
        eprintln!(
            "{}: {} pings, {} lost",
            report.label,
            report.transmitted,
            report.lost()
        );
        report.assert_no_loss();
        assert!(
            report.last_reply_ms().is_some_and(|t| t >= until - 500),
            "{}: the pings did not go on past the switch ({:?})",
            report.label,
            report.last_reply_ms()
        );
    }
}

/// Stops the SQLite controller half a second before its next publication is due (so the
/// nodes live on the lead and the grace until the PostgreSQL one publishes), then makes the
/// final copy. Returns the switch so far, the new database and what was copied.
fn stop_and_copy(
    mesh: &Mesh,
    ctl: &mut ControllerProc<'_>,
    db: &HaDatabase,
    live: &Migrated,
) -> (Switch, String, Migrated) {
    let lead = Duration::from_secs(HA_TIMING.lead);
    let in_force = ctl.wait_before_publish(lead, Duration::from_millis(500));
    let stopped_ms = now_ms();
    let status = ctl.terminate();
    assert!(
        status.is_some_and(|s| s.success()),
        "the SQLite controller did not stop cleanly on SIGTERM: {status:?}"
    );
    eprintln!(
        "the SQLite controller stopped in {} ms",
        now_ms() - stopped_ms
    );
    let source = StateDb::open_read_only(&mesh.home().database());
    let last_sqlite = source.epochs().last().expect("SQLite holds no epoch").id;
    let (target, last) = final_copy(mesh, db, &source);
    assert!(
        last.entries > live.entries && last.rows_of("benchmarks") > live.rows_of("benchmarks"),
        "the controller did not go on writing during and after the live copy: {live:?}, then \
         {last:?}"
    );
    let switch = Switch {
        due_ms: in_force.not_after_ms - HA_TIMING.lead * 1000,
        stopped_ms,
        started_ms: 0,
        last_sqlite,
    };
    (switch, target, last)
}

/// c denied by its score, readmitted, then denied by a pin while its score passes.
fn build_history(mesh: &Mesh, ctl: &ControllerProc<'_>) {
    let (a, b, c) = (mesh.node("a"), mesh.node("b"), mesh.node("c"));
    let limit = decision_limit(mesh.timing());
    let failed_at = now_ms();
    mesh.set_score("c", FAILING);
    wait_removed(a, c);
    assert!(ctl.denial("c", failed_at).is_some(), "no epoch denies c");

    let passed_at = now_ms();
    mesh.set_score("c", PASSING);
    assert!(
        wait_until(limit, || ctl.admission("c", passed_at).is_some()),
        "c, passing again, was not readmitted within {limit:?}"
    );
    assert!(
        wait_until(limit, || observe::peers_present(
            &a.iface,
            &[c.public_key()]
        )),
        "a did not list c again after its readmission"
    );

    let pinned_at = now_ms();
    mesh.controller_run_ok(0, &["node", "pin", "c", "deny"]);
    ctl.rotate();
    wait_removed(a, c);
    wait_removed(b, c);
    assert!(
        ctl.denial("c", pinned_at).is_some(),
        "no epoch denies pinned c"
    );
    assert_eq!(ctl.membership("c"), "DENIED");
}

/// `migrate` while the controller runs, checked; then refused into the same database.
fn live_copy(mesh: &Mesh, db: &HaDatabase) -> Migrated {
    let url = db.url(db.name(), "migrate");
    let started = Instant::now();
    let out = mesh.migrate(0, &mesh.home().database(), &url, db.password_file());
    let took = started.elapsed();
    assert!(
        out.success(),
        "`{}` failed: {}{}",
        out.command,
        out.stdout,
        out.stderr
    );
    let copied = Migrated::parse(&out.stdout)
        .unwrap_or_else(|| panic!("`migrate` printed no report: {}", out.stdout));
    eprintln!("live copy in {} ms: {copied:?}", took.as_millis());
    assert_history(&copied);
    assert_target_holds(db, db.name(), &copied);

    let verified = mesh.audit_verify(0, Some((&url, db.password_file())));
    assert_eq!(
        (verified.entries, &verified.head),
        (copied.entries, &copied.head),
        "`audit verify` on PostgreSQL disagrees with what `migrate` verified"
    );
    let head_seq = number(&db.sql("SELECT max(seq) FROM audit"));
    let source = StateDb::open_read_only(&mesh.home().database());
    assert_eq!(
        source.audit_hash(head_seq).as_deref(),
        Some(copied.head.as_str()),
        "the live copy's chain is not a prefix of the source's (entry {head_seq})"
    );

    let again = mesh.migrate(0, &mesh.home().database(), &url, db.password_file());
    assert!(
        !again.success() && again.stderr.contains("not empty"),
        "`migrate` into a database that holds a deployment was not refused as not empty: \
         {}{}",
        again.stdout,
        again.stderr
    );
    assert_target_holds(db, db.name(), &copied);
    assert_eq!(
        mesh.audit_verify(0, Some((&url, db.password_file()))),
        verified
    );
    copied
}

/// The history `build_history` made is all in the copy.
fn assert_history(copied: &Migrated) {
    assert_eq!(copied.rows_of("nodes"), 3, "{copied:?}");
    assert_eq!(copied.rows_of("node_addresses"), 3, "{copied:?}");
    let epochs = copied.rows_of("epochs");
    assert!(epochs >= 4, "{copied:?}");
    assert!(copied.rows_of("decisions") >= 3 * epochs, "{copied:?}");
    assert!(copied.rows_of("benchmarks") >= 9, "{copied:?}");
    assert_eq!(copied.rows_of("audit"), copied.entries, "{copied:?}");
}

/// `database` of the cluster holds exactly the rows `copied` reports.
fn assert_target_holds(db: &HaDatabase, database: &str, copied: &Migrated) {
    for table in TABLES {
        let held = number(&db.sql_in(database, &format!("SELECT COUNT(*) FROM {table}")));
        assert_eq!(held, copied.rows_of(table), "table {table} of {database}");
    }
}

/// With the controller stopped: `migrate` into a new database copies every row, and both
/// chains verify alike. Returns the new database and what was copied.
fn final_copy(mesh: &Mesh, db: &HaDatabase, source: &StateDb) -> (String, Migrated) {
    let target = db.create_database("final");
    let url = db.url(&target, "migrate");
    let started = Instant::now();
    let out = mesh.migrate(0, &mesh.home().database(), &url, db.password_file());
    let took = started.elapsed();
    assert!(
        out.success(),
        "`{}` failed: {}{}",
        out.command,
        out.stdout,
        out.stderr
    );
    let copied = Migrated::parse(&out.stdout)
        .unwrap_or_else(|| panic!("`migrate` printed no report: {}", out.stdout));
    eprintln!("final copy in {} ms: {copied:?}", took.as_millis());
    for table in TABLES {
        assert_eq!(
            copied.rows_of(table),
            source.row_count(table),
            "table {table}"
        );
    }
    assert_target_holds(db, &target, &copied);
    let t = Instant::now();
    let on_sqlite = mesh.audit_verify(0, None);
    eprintln!("audit verify on SQLite: {} ms", t.elapsed().as_millis());
    let t = Instant::now();
    let on_postgres = mesh.audit_verify(0, Some((&url, db.password_file())));
    eprintln!("audit verify on PostgreSQL: {} ms", t.elapsed().as_millis());
    eprintln!("audit verify: SQLite {on_sqlite:?}, PostgreSQL {on_postgres:?}");
    assert_eq!(on_postgres, on_sqlite);
    assert_eq!(on_postgres.entries, copied.entries);
    (target, copied)
}

/// When the SQLite controller stopped and the PostgreSQL one was started, Unix ms.
struct Switch {
    /// When the SQLite controller's next publication was due.
    due_ms: u64,
    stopped_ms: u64,
    started_ms: u64,
    /// The last epoch the SQLite controller published.
    last_sqlite: u64,
}

/// After the switch: the ids go on from SQLite's, every node has a newer epoch within one
/// epoch + lead + slack of the start, c stays denied though its benchmarks pass. Returns
/// when the last node was seen in a PostgreSQL epoch (Unix ms).
fn goes_on(
    mesh: &Mesh,
    ctl: &ControllerProc<'_>,
    db: &HaDatabase,
    target: &str,
    switch: &Switch,
) -> u64 {
    let timing = mesh.timing();
    let limit = timing.epoch_len() + Duration::from_secs(timing.lead) + SLACK;
    let newer = format!(
        "SELECT COALESCE(min(id), 0) FROM epochs WHERE id > {}",
        switch.last_sqlite
    );
    let published = observe::first_time(limit, Duration::from_millis(50), || {
        number(&db.sql_in(target, &newer)) > 0
    })
    .unwrap_or_else(|| panic!("the controller on PostgreSQL published no epoch in {limit:?}"));
    let first = number(&db.sql_in(target, &newer));
    eprintln!(
        "first epoch on PostgreSQL: {first}, published {} ms after the start, {} ms after the \
         SQLite controller was stopped, {} ms after it was due (SQLite's last epoch: {})",
        published - switch.started_ms,
        published - switch.stopped_ms,
        published as i64 - switch.due_ms as i64,
        switch.last_sqlite
    );
    assert!(first > switch.last_sqlite, "the epoch ids do not go on");
    let deadline_ms = switch.started_ms + u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    let mut last_ms = 0;
    for node in mesh.nodes() {
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms()));
        let shown = || observe::show_gate(&node.ns, &node.iface)["epoch"].as_u64();
        let at = observe::first_time(left, Duration::from_millis(100), || {
            shown().is_some_and(|e| e > switch.last_sqlite)
        });
        let at = at.unwrap_or_else(|| {
            panic!(
                "{} shows epoch {:?}, not one newer than {}, {limit:?} after the start on \
                 PostgreSQL",
                node.id,
                shown(),
                switch.last_sqlite
            )
        });
        eprintln!(
            "{} in a PostgreSQL epoch {} ms after the start",
            node.id,
            at - switch.started_ms
        );
        last_ms = last_ms.max(at);
    }
    stays_denied(mesh, ctl, db, target, switch);
    last_ms
}

/// c, pinned deny in the copied state and passing its benchmarks, stays denied.
fn stays_denied(
    mesh: &Mesh,
    ctl: &ControllerProc<'_>,
    db: &HaDatabase,
    target: &str,
    switch: &Switch,
) {
    let c = mesh.node("c");
    let denial = ctl.denial("c", switch.started_ms);
    assert!(
        denial
            .as_ref()
            .is_some_and(|d| d.epoch > switch.last_sqlite),
        "no epoch published on PostgreSQL denies c: {:?}",
        ctl.rotations()
    );
    assert_eq!(ctl.membership("c"), "DENIED");
    assert_eq!(observe::shown_membership(&c.ns, &c.iface), "DENIED");
    let received = format!(
        "SELECT COUNT(*) FROM benchmarks WHERE node_id = 'c' AND received_ms > {}",
        switch.started_ms
    );
    assert!(
        number(&db.sql_in(target, &received)) > 0,
        "c's passing benchmarks did not reach the controller on PostgreSQL"
    );
    for id in ["a", "b"] {
        let node = mesh.node(id);
        assert!(
            observe::peers_absent(&node.iface, &[c.public_key()]),
            "{id} lists the denied c as a peer after the switch"
        );
    }
}

/// The controller on PostgreSQL extends the copied chain: `audit verify` (now on
/// PostgreSQL) passes with more entries, the copied head among them.
fn chain_goes_on(mesh: &Mesh, db: &HaDatabase, target: &str, copied: &Migrated) {
    let now = mesh.audit_verify(0, None);
    assert!(now.entries > copied.entries, "{now:?} after {copied:?}");
    let at_head = format!("SELECT COUNT(*) FROM audit WHERE hash = '{}'", copied.head);
    assert_eq!(
        number(&db.sql_in(target, &at_head)),
        1,
        "the copied head is not in the chain"
    );
    eprintln!(
        "audit verify on PostgreSQL after the switch: {} entries ({} copied)",
        now.entries, copied.entries
    );
}

fn number(text: &str) -> u64 {
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("psql printed {text:?}, not a number: {e}"))
}

/// `migrate` from or to something it cannot copy: it fails before touching the target, its
/// message names what is wrong and where, and it creates nothing. No root, no PostgreSQL:
/// the arguments and the source are checked first (the target's port 9 on loopback is never
/// reached).
#[test]
fn migrate_names_a_source_or_target_it_cannot_copy_and_creates_nothing() {
    let home = ControllerHome::new("");
    home.init();
    let root = home.root();
    let empty = root.join("empty.db");
    std::fs::File::create(&empty).expect("cannot create empty.db");
    let config = home.config_file().to_string_lossy().into_owned();
    let missing = format!("sqlite://{}", root.join("typo.db").display());
    let empty_url = format!("sqlite://{}", empty.display());
    let source = format!("sqlite://{}", home.database().display());
    let pg = "postgres://meshtun@127.0.0.1:9/none?sslmode=disable";
    // An unknown scheme carries a password that must not be echoed.
    let mysql = "mysql://meshtun:hunter2@db.example/mesh";
    let cases: [(&str, &str, &[&str]); 7] = [
        (
            mysql,
            pg,
            &["--from", "mysql://", "sqlite://", "postgres://"],
        ),
        (
            "postgres://meshtun@db.example/mesh",
            pg,
            &["--from sqlite://"],
        ),
        (&missing, pg, &["typo.db", "does not exist"]),
        (&config, pg, &["controller.toml", "not a database"]),
        (&empty_url, pg, &["empty.db", "schema version 0"]),
        (&source, "copy.db", &["--to postgres://"]),
        (&source, mysql, &["--to", "mysql://"]),
    ];
    let before = listing(root);
    for (from, to, expected) in cases {
        let mut cmd = home.command(&["migrate", "--from", from, "--to", to]);
        let out = run_command(cmd.current_dir(root), Duration::from_secs(30));
        let what = format!("`migrate --from {from} --to {to}`");
        assert!(!out.success(), "{what} succeeded: {}", out.stdout);
        for word in expected {
            assert!(
                out.stderr.contains(word),
                "{what} does not say {word:?}: {}",
                out.stderr
            );
        }
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
        assert_eq!(listing(root), before, "{what} created files");
        assert_eq!(
            std::fs::metadata(&empty).map(|m| m.len()).ok(),
            Some(0),
            "{what} wrote into empty.db"
        );
    }
}

/// Every path under `dir`, recursively, sorted.
fn listing(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir)
        .expect("cannot list the directory")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            all.extend(listing(&path));
        }
        all.push(path);
    }
    all.sort();
    all
}
