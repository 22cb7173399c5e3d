//! `meshtun demo` as a user runs it: it must tell the whole story (node-a and node-b reach
//! each other, node-c is cut off, then readmitted and reachable) within its time bound, exit
//! with success, and leave no namespace, link, runtime file, directory or process behind;
//! Ctrl-C must stop it early and clean up just the same. `meshtun demo --ha` must also name
//! the leader, show the other controller taking over after the kill with node-c still cut
//! off, lose no ping between node-a and node-b, and leave no PostgreSQL behind.
//! `meshtun demo --nat` must show every node's reflexive address, node-a and node-b on a
//! direct path at each other's router, the path node-c gets (whatever it is), and node-c
//! dropped by both others within 1 s of its denial and then cut off, and leave no router,
//! relay or namespace behind. `meshtun demo --evaluators` must show node-c's own passing
//! claim, each evaluator's statement about it, the controller's reason naming them, node-c
//! dropped by both others within 1 s and cut off, node-a and node-b answering each other in
//! every round, and leave nothing behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use meshtun_e2e::{meshtun_bin, require_root, run_command, wait_until, STATE_DIR, UAPI_DIR};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The demo's arguments in these tests: 5 s epochs, a minute from the first epoch.
const ARGS: [&str; 5] = ["demo", "--epoch", "5", "--duration", "60"];

/// With `--ha`: the shortest run 5 s epochs allow (three thirds of 20 s), with the dashboard
/// forwarded (which must follow the new leader).
const HA_ARGS: [&str; 8] = [
    "demo",
    "--ha",
    "--epoch",
    "5",
    "--duration",
    "60",
    "--dashboard",
    "127.0.0.1:0",
];

/// With `--nat`: 5 s epochs, 24 s from the first (node-c's score drops half-way).
const NAT_ARGS: [&str; 6] = ["demo", "--nat", "--epoch", "5", "--duration", "24"];

/// With `--evaluators`: 5 s epochs, 24 s from the first (the second pass half-way).
const EVALUATORS_ARGS: [&str; 6] = ["demo", "--evaluators", "--epoch", "5", "--duration", "24"];

/// The most a full run may take: the minute, setup, the first scores and cleanup.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// The most the demo may take to stop and clean up after Ctrl-C.
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// A running `meshtun demo`, its output collected line by line; killed on drop.
struct Demo {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Collects the lines of `pipe` into `into` until it closes.
fn collect(
    pipe: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            into.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line);
        }
    })
}

impl Demo {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(meshtun_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start meshtun demo");
        let stdout = Arc::default();
        let stderr = Arc::default();
        let readers = vec![
            collect(
                child.stdout.take().expect("stdout is piped"),
                Arc::clone(&stdout),
            ),
            collect(
                child.stderr.take().expect("stderr is piped"),
                Arc::clone(&stderr),
            ),
        ];
        Self {
            child,
            stdout,
            readers,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .join("\n")
    }

    /// Everything printed so far, for failure messages.
    fn transcript(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout().join("\n"),
            self.stderr()
        )
    }

    /// Waits for the demo to exit, at most `limit`; fails the test (after killing it) if it
    /// does not.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("cannot wait for the demo") {
                for reader in self.readers.drain(..) {
                    let _ = reader.join();
                }
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "meshtun demo did not finish within {limit:?}; killed it\n{}",
                    self.transcript()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The demo's directory, as its introduction names it.
    fn dir(&self) -> PathBuf {
        let stdout = self.stdout();
        let word = stdout
            .iter()
            .flat_map(|line| line.split_whitespace())
            .find(|word| word.contains("/meshtun-demo-"))
            .unwrap_or_else(|| panic!("the demo named no directory\n{}", self.transcript()));
        PathBuf::from(word.trim_end_matches(|c: char| !c.is_alphanumeric()))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The index of the first line at or after `from` that contains every one of `parts`.
fn find(lines: &[String], from: usize, parts: &[&str]) -> Option<usize> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, line)| parts.iter().all(|p| line.contains(p)))
        .map(|(i, _)| i)
}

/// Processes whose command line mentions `dir` (the node daemons run on configurations in it,
/// and the controller on its `controller.toml`).
fn processes_using(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(&needle)
                .then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
}

/// Asserts that the demo run by process `pid`, with directory `dir`, left nothing behind.
fn assert_nothing_left(pid: u32, dir: &Path, transcript: &str) {
    let prefix = format!("mtdemo-{pid}-");
    let namespaces = run_command(
        Command::new("ip").args(["netns", "list"]),
        Duration::from_secs(30),
    )
    .expect_success();
    assert!(
        !namespaces.contains(&prefix),
        "namespaces left behind:\n{namespaces}\n{transcript}"
    );
    let ifname = format!("mtdemo{pid}");
    let links = run_command(
        Command::new("ip").args(["-o", "link"]),
        Duration::from_secs(30),
    )
    .expect_success();
    assert!(
        !links.contains(&ifname),
        "links left behind:\n{links}\n{transcript}"
    );
    for runtime_dir in [UAPI_DIR, STATE_DIR] {
        let left: Vec<String> = std::fs::read_dir(runtime_dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with(&ifname))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "runtime files left in {runtime_dir}: {left:?}\n{transcript}"
        );
    }
    // The daemons are reaped by the demo before it exits, but give the kernel a moment.
    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(5), || {
        left = processes_using(dir);
        left.is_empty()
    });
    assert!(gone, "processes left behind: {left:?}\n{transcript}");
    assert!(
        !dir.exists(),
        "{} was not removed\n{transcript}",
        dir.display()
    );
}

#[test]
fn demo_tells_the_whole_story_and_leaves_nothing_behind() {
    if !require_root("demo_tells_the_whole_story_and_leaves_nothing_behind") {
        return;
    }
    let started = Instant::now();
    let mut demo = Demo::start(&ARGS);
    let status = demo.wait(RUN_LIMIT);
    let transcript = demo.transcript();
    assert!(
        status.success(),
        "meshtun demo failed ({status})\n{transcript}"
    );
    println!("meshtun demo took {:?}", started.elapsed());

    let lines = demo.stdout();
    // Before the recovery: a and b reach each other, c is cut off both ways.
    let cut_off = find(&lines, 0, &["ping", "a↔b ok", "a↔c cut off", "b↔c cut off"])
        .unwrap_or_else(|| panic!("no round with a↔b ok and c cut off\n{transcript}"));
    let recovers = find(&lines, cut_off, &["node-c's score recovers"])
        .unwrap_or_else(|| panic!("no recovery after the cut-off round\n{transcript}"));
    let readmitted = find(&lines, recovers, &["node-c", "ALLOW", "READMITTED"])
        .unwrap_or_else(|| panic!("no epoch readmitted node-c after its recovery\n{transcript}"));
    find(&lines, readmitted, &["ping", "a↔b ok", "a↔c ok", "b↔c ok"]).unwrap_or_else(|| {
        panic!("no round with every pair ok after the readmission\n{transcript}")
    });
    let denied = find(&lines, 0, &["node-c", "DENY", "below the threshold 0.70"])
        .unwrap_or_else(|| panic!("node-c's denial and its reason are not shown\n{transcript}"));
    assert!(denied < cut_off, "{transcript}");

    let summary = find(&lines, readmitted, &["What happened"])
        .unwrap_or_else(|| panic!("no summary\n{transcript}"));
    let summary_text = lines[summary..].join("\n");
    assert_eq!(summary_text.matches('✓').count(), 3, "{transcript}");
    assert!(!summary_text.contains('✗'), "{transcript}");
    assert!(
        !lines.iter().any(|l| l.contains('\x1b')),
        "colours on a pipe\n{transcript}"
    );
    find(&lines, summary, &["deleted 5 network namespaces"])
        .unwrap_or_else(|| panic!("the cleanup is not reported\n{transcript}"));

    assert_nothing_left(demo.pid(), &demo.dir(), &transcript);
}

#[test]
fn ctrl_c_stops_the_demo_and_cleans_up() {
    if !require_root("ctrl_c_stops_the_demo_and_cleans_up") {
        return;
    }
    let mut demo = Demo::start(&ARGS);
    let running = wait_until(Duration::from_secs(60), || {
        find(&demo.stdout(), 0, &["ping"]).is_some()
    });
    assert!(
        running,
        "no round of pings within 60 s\n{}",
        demo.transcript()
    );
    let dir = demo.dir();
    assert!(dir.is_dir(), "{}", demo.transcript());
    let running = processes_using(&dir);
    assert_eq!(running.len(), 4, "{running:?}\n{}", demo.transcript());
    assert!(
        running
            .iter()
            .any(|p| p.contains("meshtun-controller") && p.contains(" serve")),
        "the demo does not run the controller binary: {running:?}\n{}",
        demo.transcript()
    );

    let pid = Pid::from_raw(i32::try_from(demo.pid()).expect("pid fits"));
    kill(pid, Signal::SIGINT).expect("cannot send SIGINT to the demo");
    let stopping = Instant::now();
    let status = demo.wait(STOP_LIMIT);
    let transcript = demo.transcript();
    assert_eq!(status.code(), Some(1), "{transcript}");
    assert!(
        demo.stderr().contains("interrupted by SIGINT"),
        "{transcript}"
    );
    println!("stopped and cleaned up in {:?}", stopping.elapsed());
    assert_nothing_left(demo.pid(), &dir, &transcript);
}

/// The first word after the time stamp of `line` (`[  24.2s] ctl-1 leads …` → `ctl-1`).
fn subject(line: &str) -> &str {
    line.split(']')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("")
}

/// The PostgreSQL directory the demo names (`… Unix socket in /tmp/meshtun-pg-XXXX (pid N)`).
fn cluster_dir(lines: &[String], transcript: &str) -> PathBuf {
    let word = lines
        .iter()
        .flat_map(|line| line.split_whitespace())
        .find(|word| word.contains("/meshtun-pg-"))
        .unwrap_or_else(|| panic!("the demo named no PostgreSQL directory\n{transcript}"));
    PathBuf::from(word)
}

#[test]
fn demo_ha_survives_the_leaders_death_and_leaves_nothing_behind() {
    let test = "demo_ha_survives_the_leaders_death_and_leaves_nothing_behind";
    if !require_root(test) {
        return;
    }
    if meshtun_testbed::postgres::bin_dir().is_none() {
        assert!(
            !meshtun_testbed::in_ci(),
            "{test}: needs PostgreSQL's server binaries (apt install postgresql); CI=true"
        );
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIP {test}: no PostgreSQL server binaries\n").as_bytes(),
        );
        return;
    }
    let started = Instant::now();
    let mut demo = Demo::start(&HA_ARGS);
    let status = demo.wait(RUN_LIMIT);
    let transcript = demo.transcript();
    assert!(
        status.success(),
        "meshtun demo --ha failed ({status})\n{transcript}"
    );
    println!("meshtun demo --ha took {:?}", started.elapsed());
    let lines = demo.stdout();
    let line = |from: usize, parts: &[&str], what: &str| {
        find(&lines, from, parts).unwrap_or_else(|| panic!("{what}\n{transcript}"))
    };

    let denied = line(
        0,
        &["node-c", "DENY", "below the threshold 0.70"],
        "node-c's denial is not shown",
    );
    let cut_off = line(
        denied,
        &["ping", "a↔b ok", "a↔c cut off", "b↔c cut off"],
        "no round with a↔b ok and c cut off",
    );
    // Who leads just before the kill, from `status`, then the kill of that instance.
    let killed = line(cut_off, &["killed the leader", "SIGKILL"], "no kill");
    let named = (0..killed)
        .rev()
        .find(|&i| lines[i].contains("leads (term") && lines[i].contains("`cluster` field"))
        .unwrap_or_else(|| panic!("no leader named before the kill\n{transcript}"));
    let leader = subject(&lines[named]);
    assert!(
        ["ctl-1", "ctl-2"].contains(&leader),
        "leader {leader:?}\n{transcript}"
    );
    assert!(lines[killed].contains(leader), "{transcript}");
    let took_over = line(killed, &["took over: it leads in term"], "no takeover");
    let successor = subject(&lines[took_over]);
    assert!(
        ["ctl-1", "ctl-2"].contains(&successor) && successor != leader,
        "{successor} took over from {leader}\n{transcript}"
    );
    // With --dashboard, the forwarded page follows: served by the new leader, which it names.
    let page_follows = format!("dashboard: {successor} leads in term");
    line(
        killed,
        &[
            &page_follows,
            &format!("(the page is served by {successor})"),
        ],
        "the dashboard does not show the new leader serving the page",
    );
    // The epochs go on under the new leader, node-c still denied and still cut off.
    let new_epoch = line(
        took_over,
        &["decided and published by", successor],
        "no epoch of the new leader",
    );
    // The epoch's last line: node-c's decision, or the scores when nothing changed.
    assert!(
        lines[new_epoch - 1].contains("node-c") && lines[new_epoch - 1].contains("DENY"),
        "the new leader's epoch does not deny node-c\n{transcript}"
    );
    let recovers = line(took_over, &["node-c's score recovers"], "no recovery");
    let still_cut = line(
        took_over,
        &["ping", "a↔b ok", "a↔c cut off", "b↔c cut off"],
        "node-c not seen cut off after the takeover",
    );
    assert!(still_cut < recovers, "{transcript}");
    // Every ping between node-a and node-b across the takeover was answered.
    let steady = line(
        killed,
        &["a↔b across the takeover:"],
        "the pings are not counted",
    );
    let count = lines[steady]
        .split("takeover: ")
        .nth(1)
        .and_then(|rest| rest.split(" answered").next())
        .unwrap_or_default()
        .split(" of ")
        .map(|n| n.parse::<u32>().unwrap_or(0))
        .collect::<Vec<_>>();
    assert!(
        count.len() == 2 && count[1] >= 100 && count[0] == count[1],
        "pings lost across the takeover: {}\n{transcript}",
        lines[steady]
    );
    assert!(lines[steady].contains("(0 lost)"), "{transcript}");
    let readmitted = line(
        recovers,
        &["node-c", "ALLOW", "READMITTED"],
        "no epoch readmitted node-c",
    );
    line(
        readmitted,
        &["ping", "a↔b ok", "a↔c ok", "b↔c ok"],
        "no round with every pair ok after the readmission",
    );

    let summary = line(readmitted, &["What happened"], "no summary");
    let summary_text = lines[summary..].join("\n");
    assert_eq!(summary_text.matches('✓').count(), 6, "{transcript}");
    assert!(!summary_text.contains('✗'), "{transcript}");
    line(
        summary,
        &["stopped PostgreSQL", "and removed"],
        "PostgreSQL's cleanup is not reported",
    );
    // The survivor stops on SIGTERM, as a controller on SQLite does.
    line(
        summary,
        &["stopped", successor],
        "the surviving controller did not stop on SIGTERM",
    );
    line(
        summary,
        &["deleted 6 network namespaces"],
        "the cleanup is not reported",
    );

    let cluster = cluster_dir(&lines, &transcript);
    assert!(
        !cluster.exists(),
        "{} was not removed\n{transcript}",
        cluster.display()
    );
    let mut left = Vec::new();
    let gone = wait_until(Duration::from_secs(5), || {
        left = processes_using(&cluster);
        left.is_empty()
    });
    assert!(
        gone,
        "PostgreSQL processes left behind: {left:?}\n{transcript}"
    );
    assert_nothing_left(demo.pid(), &demo.dir(), &transcript);
}

/// `decision_to_cutoff_ms=N` of a `CUTOFF` line.
fn cutoff_ms(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|f| f.strip_prefix("decision_to_cutoff_ms="))
        .and_then(|ms| ms.parse().ok())
}

#[test]
fn demo_nat_shows_a_b_direct_and_c_cut_off_after_its_denial() {
    let test = "demo_nat_shows_a_b_direct_and_c_cut_off_after_its_denial";
    if !require_root(test) {
        return;
    }
    let missing: Vec<&str> = ["turnserver", "nft"]
        .into_iter()
        .filter(|tool| {
            !std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .any(|dir| dir.join(tool).is_file())
        })
        .collect();
    if !missing.is_empty() {
        assert!(
            !meshtun_testbed::in_ci(),
            "{test}: needs {missing:?} (apt install coturn nftables); CI=true"
        );
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIP {test}: no {missing:?}\n").as_bytes(),
        );
        return;
    }
    let started = Instant::now();
    let mut demo = Demo::start(&NAT_ARGS);
    let status = demo.wait(RUN_LIMIT);
    let transcript = demo.transcript();
    assert!(
        status.success(),
        "meshtun demo --nat failed ({status})\n{transcript}"
    );
    println!("meshtun demo --nat took {:?}", started.elapsed());
    let lines = demo.stdout();
    let line = |from: usize, parts: &[&str], what: &str| {
        find(&lines, from, parts).unwrap_or_else(|| panic!("{what}\n{transcript}"))
    };

    // Every node learnt its public address: its router's, 192.0.2.1 to .3.
    for (node, public) in [
        ("node-a", "192.0.2.1:"),
        ("node-b", "192.0.2.2:"),
        ("node-c", "192.0.2.3:"),
    ] {
        line(
            0,
            &[node, "learnt its public address", public],
            &format!("{node}'s reflexive address (its router's) is not shown"),
        );
    }
    // node-a and node-b direct, each at the other's router's public address.
    let direct = line(
        0,
        &[
            "node-a → node-b: direct to 192.0.2.2:",
            "node-b → node-a: direct to 192.0.2.1:",
        ],
        "no a↔b direct path at the routers' addresses",
    );
    line(
        direct,
        &["ping", "a↔b ok"],
        "a↔b pings not answered after the direct path",
    );
    // node-c, behind its symmetric NAT, is reached through the relay, both ways.
    let c_path = line(
        0,
        &[
            "path of node-c:",
            "node-a → node-c: relayed via",
            "node-c → node-a: relayed via",
        ],
        "node-a and node-c never showed each other relayed",
    );
    let seen = lines[c_path]
        .split("node-a → node-c: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_default();
    assert!(
        seen == "relayed",
        "node-c's path {seen:?} is not relayed\n{transcript}"
    );
    println!("node-c's path as node-a saw it: {}", lines[c_path]);

    // Denied, node-c is dropped by both others within a second of the decision.
    let drops = line(
        c_path,
        &["node-c's score drops"],
        "node-c's score does not drop",
    );
    let denied = line(
        drops,
        &["node-c", "DENY", "CUT OFF"],
        "no epoch denies node-c",
    );
    // The nodes' cut-off lines may come before or after the demo's line for the epoch.
    for node in ["node-a", "node-b"] {
        let cut = line(
            drops,
            &[node, "CUTOFF peer=node-c"],
            &format!("{node} does not log dropping node-c"),
        );
        let ms = cutoff_ms(&lines[cut])
            .unwrap_or_else(|| panic!("no decision_to_cutoff_ms: {}\n{transcript}", lines[cut]));
        assert!(
            ms <= 1000,
            "{node} dropped node-c {ms} ms after the decision\n{transcript}"
        );
    }
    line(
        denied,
        &["ping", "a↔b ok", "a↔c cut off", "b↔c cut off"],
        "no round with a↔b ok and node-c cut off after its denial",
    );

    let summary = line(denied, &["What happened"], "no summary");
    let summary_text = lines[summary..].join("\n");
    assert_eq!(summary_text.matches('✓').count(), 5, "{transcript}");
    assert!(!summary_text.contains('✗'), "{transcript}");
    line(
        summary,
        &["stopped the relay (coturn"],
        "the relay's stop is not reported",
    );
    line(
        summary,
        &["deleted 9 network namespaces"],
        "the cleanup is not reported",
    );
    assert_nothing_left(demo.pid(), &demo.dir(), &transcript);
}

#[test]
fn demo_evaluators_shows_the_claim_the_statements_and_c_cut_off() {
    if !require_root("demo_evaluators_shows_the_claim_the_statements_and_c_cut_off") {
        return;
    }
    let started = Instant::now();
    let mut demo = Demo::start(&EVALUATORS_ARGS);
    let status = demo.wait(RUN_LIMIT);
    let transcript = demo.transcript();
    assert!(
        status.success(),
        "meshtun demo --evaluators failed ({status})\n{transcript}"
    );
    println!("meshtun demo --evaluators took {:?}", started.elapsed());
    let lines = demo.stdout();
    let line = |from: usize, parts: &[&str], what: &str| {
        find(&lines, from, parts).unwrap_or_else(|| panic!("{what}\n{transcript}"))
    };

    // node-c's own claim passes, as the controller received it.
    let claim = line(
        0,
        &["node-c claims overall", "about itself"],
        "node-c's own claim is not shown",
    );
    let claimed: f64 = lines[claim]
        .split("node-c claims overall ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("no score in {:?}\n{transcript}", lines[claim]));
    assert!(claimed >= 0.70, "node-c claimed {claimed}\n{transcript}");
    // Each evaluator's statement about node-c, as `meshtun evaluate` reported it stored.
    let mut stated = claim;
    for (evaluator, score) in [("e1", "0.40"), ("e2", "0.35"), ("e3", "0.45")] {
        stated = line(
            stated,
            &[
                &format!("{evaluator} says node-c: overall {score}"),
                "statement",
            ],
            &format!("{evaluator}'s statement about node-c is not shown"),
        );
    }
    // The controller's decision names the statements.
    let denied = line(
        claim,
        &[
            "node-c",
            "DENY",
            "CUT OFF",
            "overall 0.40 (median of 3 evaluators: e1 0.40, e2 0.35, e3 0.",
            "needs 0.70",
        ],
        "no epoch cuts node-c off with a reason naming the evaluators' statements",
    );
    for node in ["node-a", "node-b"] {
        let cut = line(
            claim,
            &[node, "CUTOFF peer=node-c"],
            &format!("{node} does not log dropping node-c"),
        );
        let ms = cutoff_ms(&lines[cut])
            .unwrap_or_else(|| panic!("no decision_to_cutoff_ms: {}\n{transcript}", lines[cut]));
        assert!(
            ms <= 1000,
            "{node} dropped node-c {ms} ms after the decision\n{transcript}"
        );
    }
    line(
        denied,
        &["node-c cut off: dropped from the controller's decision to its removal in node-a "],
        "the narrative does not tell the time from the decision to the cut-off",
    );
    line(
        denied,
        &["ping", "a↔b ok", "a↔c cut off", "b↔c cut off"],
        "no round with a↔b ok and node-c cut off after its denial",
    );
    // Before the second pass node-c is reached; node-a and node-b answer in every round.
    let first_ok = line(0, &["ping", "a↔b ok"], "a↔b never answered");
    line(
        first_ok,
        &["ping", "a↔c ok", "b↔c ok"],
        "node-c was never reached before its judgement",
    );
    let summary = line(denied, &["What happened"], "no summary");
    let lost: Vec<&String> = lines[first_ok..summary]
        .iter()
        .filter(|l| l.contains("] ping ") && !l.contains("a↔b ok"))
        .collect();
    assert!(lost.is_empty(), "a↔b not kept: {lost:?}\n{transcript}");

    let summary_text = lines[summary..].join("\n");
    assert_eq!(summary_text.matches('✓').count(), 5, "{transcript}");
    assert!(!summary_text.contains('✗'), "{transcript}");
    line(
        summary,
        &["deleted 5 network namespaces"],
        "the cleanup is not reported",
    );
    assert_nothing_left(demo.pid(), &demo.dir(), &transcript);
}
