//! `meshtun demo`: membership gating shown live on one machine.
//!
//! The demo builds the three-node scenario in network namespaces: the real
//! `meshtun-controller` binary (found beside `meshtun` or on PATH, set up in the demo's
//! temporary directory as an operator would, serving inside its own namespace) and three
//! nodes, each a real `meshtun up` daemon with a `[controller]` section and simulated
//! benchmark scores: node-a around 0.90, node-b 0.85, node-c 0.40,
//! against a threshold of 0.70. It prints, as they happen, every epoch with each node's
//! decision and reason, the nodes' gating log lines, and every few seconds a round of pings
//! between the nodes through the tunnel: a↔b work, c is cut off. Half-way, node-c's score
//! recovers (its configuration is rewritten and its daemon reloads it on SIGHUP), and the
//! next epoch readmits it. A summary says what was shown.
//!
//! - [`plan`]: the scenario as data (nodes, addresses, names, policy, timeline);
//! - [`nodeconf`]: each node's keys and configuration file;
//! - [`netns`]: the namespaces, the virtual switch and the veth links;
//! - [`controller`]: the controller: its files, `serve`, `rotate`, its audit log read back;
//! - [`daemons`]: the node daemons and their logs; [`nodelog`]: what their logs say;
//! - [`ping`]: ICMP echo through the tunnel from inside each namespace;
//! - [`story`]: what has been shown so far; [`narrative`]: what is printed;
//! - [`cutoff`]: node-c's cut-off as the `--nat` and `--evaluators` stories see it.
//!
//! With `--ha` (`ha`, `takeover`): two controllers, `ctl-1` and `ctl-2`, on one
//! throwaway PostgreSQL cluster the demo starts, and every node lists both URLs. A third of
//! the way, the demo SIGKILLs the leader (named from `meshtun-controller status`) and shows
//! the other taking over, the epochs going on, node-c still cut off, and node-a and node-b
//! pinging each other ten times a second without losing one; node-c recovers at two thirds.
//!
//! With `--nat` (`nat`, `natscene`): every node behind its own NAT router (node-c's
//! symmetric), no endpoint enrolled, the controller's STUN server and a TURN relay
//! (coturn). The demo shows each node's reflexive address, node-a and node-b on a direct
//! path through both NATs, the path node-c gets, then node-c's score dropping half-way and
//! node-c cut off everywhere within a second of the decision.
//!
//! With `--evaluators` ([`evaluators`], `evalscene`): node-c claims 0.90 about itself, but
//! the controller takes every node's overall score from three registered evaluators, e1,
//! e2 and e3 (`[policy.sources.overall]`: the median of at least 2). Each runs the reference
//! evaluator, `meshtun evaluate`, with a small harness script in the demo's directory. Their
//! first pass finds every node sound; half-way their second pass scores node-c 0.35 to 0.45.
//! The demo shows node-c's own claim, each evaluator's statement, the epoch that cuts node-c
//! off with the controller's reason naming the statements, the others' `CUTOFF` lines with
//! the time from the decision, and the pings: a↔b kept, node-c's failing.
//!
//! With `--dashboard` ([`dashboard`]), with any story: the controller's live dashboard
//! forwarded from its namespace to this machine's loopback for a browser, and what the
//! page shows told as it changes.
//!
//! Everything is removed on every way out: the normal end, an error, Ctrl-C or SIGTERM.
//! Namespaces, processes, the controller's commands and the gate log parser are
//! [`meshtun_testbed`]'s, shared with the end-to-end tests.

pub mod controller;
pub mod cutoff;
pub mod daemons;
pub mod dashboard;
mod evalscene;
pub mod evaluators;
pub mod ha;
pub mod narrative;
pub mod nat;
mod natscene;
pub mod netns;
pub mod nodeconf;
pub mod nodelog;
pub mod ping;
pub mod plan;
mod scenario;
pub mod story;
mod takeover;

use std::cell::RefCell;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::IdentityFileError;
use controller::Controller;
use daemons::Daemons;
use narrative::Style;
use netns::Network;
pub use plan::DemoOptions;
use story::Story;

/// Why the demo could not run, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A command-line option is out of range.
    #[error("{0}")]
    Option(String),
    /// Not running as root.
    #[error(
        "meshtun demo must run as root: it creates network namespaces and tun devices \
         (try: sudo meshtun demo)"
    )]
    NotRoot,
    /// A tool the demo runs is missing.
    #[error("meshtun demo needs the `{tool}` tool")]
    MissingTool {
        /// The tool.
        tool: &'static str,
        /// Why it could not be run.
        #[source]
        source: std::io::Error,
    },
    /// A file or process operation failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The controller failed.
    #[error("the controller: {0}")]
    Controller(String),
    /// A command of the harness (`ip`, `meshtun-controller`, a process) failed.
    #[error(transparent)]
    Harness(#[from] meshtun_testbed::Error),
    /// A node's identity key file.
    #[error(transparent)]
    Identity(#[from] IdentityFileError),
    /// A node's daemon exited while the demo was running.
    #[error("{node}'s daemon exited ({status}); the end of its log, {}:\n{tail}", .log.display())]
    DaemonExited {
        /// The node.
        node: &'static str,
        /// Its exit status.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// Not every node's first score reached the controller in time.
    #[error("no score from {nodes} reached the controller within {seconds} s; the end of the logs:\n{tails}")]
    NoScores {
        /// The nodes without a score.
        nodes: String,
        /// How long the demo waited.
        seconds: u64,
        /// The last lines of their logs.
        tails: String,
    },
    /// `--ha` without PostgreSQL's server binaries.
    #[error(
        "meshtun demo --ha needs PostgreSQL's server binaries (initdb, postgres), looked for \
         in /usr/lib/postgresql/*/bin and $MESHTUN_PG_BIN: apt install postgresql"
    )]
    NoPostgres,
    /// The demo's PostgreSQL cluster could not be started or used.
    #[error("the demo's PostgreSQL: {0}")]
    Cluster(String),
    /// A signal stopped the demo.
    #[error("interrupted by {0}")]
    Interrupted(&'static str),
    /// The demo ran to its end without showing every step of the scenario.
    #[error("the demo did not show: {}", .0.join("; "))]
    Incomplete(Vec<&'static str>),
}

impl DemoError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        DemoError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Prints the demo's lines to standard output as they happen, stamped with the time since
/// the start. While a round of pings is out, other lines are held back, so that the round's
/// line, stamped when it was sent, comes before what happened during the round.
#[derive(Debug)]
pub struct Narrator {
    style: Style,
    start: Instant,
    held: RefCell<Option<Vec<String>>>,
}

impl Narrator {
    /// A narrator starting now.
    pub fn new(style: Style) -> Self {
        Self {
            style,
            start: Instant::now(),
            held: RefCell::new(None),
        }
    }

    /// Holds back the lines said from now on, until [`Narrator::release`].
    pub fn hold(&self) {
        self.held.borrow_mut().get_or_insert_with(Vec::new);
    }

    /// Prints `first` (if any), then the lines held back, and stops holding.
    pub fn release(&self, first: Option<&str>) {
        let held = self.held.borrow_mut().take().unwrap_or_default();
        for line in first.into_iter().chain(held.iter().map(String::as_str)) {
            self.say(line);
        }
    }

    /// The style lines are printed in.
    pub fn style(&self) -> Style {
        self.style
    }

    /// Time since the start.
    pub fn at(&self) -> Duration {
        self.start.elapsed()
    }

    /// Prints `text` and a newline, at once. A closed standard output is not an error: the
    /// demo still runs to its end and cleans up.
    pub fn say(&self, text: &str) {
        if let Some(held) = self.held.borrow_mut().as_mut() {
            held.push(text.to_owned());
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Prints a stamped line.
    pub fn event(&self, text: &str) {
        self.say(&narrative::event(self.at(), text));
    }
}

/// Everything the demo created; removed by [`Lab::tear_down`] or, failing that, on drop.
struct Lab {
    dir: Option<tempfile::TempDir>,
    keep: bool,
    network: Option<Network>,
    controllers: Vec<Controller>,
    cluster: Option<meshtun_testbed::postgres::TempCluster>,
    /// With `--nat`: coturn.
    relay: Option<meshtun_testbed::process::Process>,
    daemons: Daemons,
}

impl Lab {
    fn new(keep: bool, bin: PathBuf) -> Result<Self, DemoError> {
        // Keys and the controller's database are in it: owner only.
        let dir = tempfile::Builder::new()
            .prefix("meshtun-demo-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()
            .map_err(|e| DemoError::io("cannot create a temporary directory", e))?;
        Ok(Self {
            dir: Some(dir),
            keep,
            network: None,
            controllers: Vec::new(),
            cluster: None,
            relay: None,
            daemons: Daemons::new(bin),
        })
    }

    /// The demo's directory.
    fn dir(&self) -> PathBuf {
        self.dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default()
    }

    /// Stops the daemons, then the controllers and PostgreSQL, deletes the namespaces and
    /// the directories; returns a line for each step taken.
    fn tear_down(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let stopped = self.daemons.stop_all();
        if stopped.terminated > 0 {
            lines.push(format!("stopped {} node daemons", stopped.terminated));
        }
        for node in &stopped.killed {
            lines.push(format!(
                "killed {node}'s daemon, which ignored SIGTERM for 5 s"
            ));
        }
        lines.extend(stopped.problems);
        for mut controller in std::mem::take(&mut self.controllers) {
            match controller.stop() {
                Ok(line) => lines.push(line),
                Err(error) => lines.push(meshtun_proto::report::describe(&error)),
            }
        }
        if let Some(mut relay) = self.relay.take() {
            let pid = relay.pid().unwrap_or_default();
            match relay.terminate(Duration::from_secs(5)) {
                meshtun_testbed::process::Ended::Killed => lines.push(format!(
                    "killed the relay (coturn, pid {pid}), which ignored SIGTERM for 5 s"
                )),
                _ => lines.push(format!("stopped the relay (coturn, pid {pid})")),
            }
        }
        if let Some(cluster) = self.cluster.take() {
            let dir = cluster.socket_dir().display().to_string();
            let pid = cluster.pid();
            // Fast shutdown, then the directory is removed.
            drop(cluster);
            if std::path::Path::new(&dir).exists() {
                lines.push(format!(
                    "stopped PostgreSQL (pid {pid}); cannot remove {dir}"
                ));
            } else {
                lines.push(format!("stopped PostgreSQL (pid {pid}) and removed {dir}"));
            }
        }
        if let Some(mut network) = self.network.take() {
            let count = network.len();
            let problems = network.delete();
            lines.push(format!(
                "deleted {} network namespaces with their links",
                count - problems.len()
            ));
            lines.extend(problems);
        }
        if let Some(dir) = self.dir.take() {
            let path = dir.path().display().to_string();
            if self.keep {
                lines.push(format!("kept {} (--keep)", dir.keep().display()));
            } else {
                match dir.close() {
                    Ok(()) => lines.push(format!("removed {path}")),
                    Err(e) => lines.push(format!("cannot remove {path}: {e}")),
                }
            }
        }
        lines
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for line in self.tear_down() {
            eprintln!("meshtun demo: {line}");
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, which all end the demo (after cleaning up).
struct Signals(Vec<(Signal, &'static str)>);

impl Signals {
    fn new() -> Result<Self, DemoError> {
        let mut all = Vec::new();
        for (kind, name) in [
            (SignalKind::interrupt(), "SIGINT"),
            (SignalKind::terminate(), "SIGTERM"),
            (SignalKind::hangup(), "SIGHUP"),
        ] {
            let stream =
                signal(kind).map_err(|e| DemoError::io(format!("cannot handle {name}"), e))?;
            all.push((stream, name));
        }
        Ok(Self(all))
    }

    /// Waits for the first signal; its name.
    async fn recv(&mut self) -> &'static str {
        let waits = self.0.iter_mut().map(|(stream, name)| {
            let name = *name;
            Box::pin(async move {
                stream.recv().await;
                name
            })
        });
        futures::future::select_all(waits).await.0
    }
}

/// Namespaces named like the demo's whose process no longer runs (a demo that was killed),
/// from the output of `ip netns list`.
fn stale_namespaces(list: &str, running: impl Fn(u32) -> bool) -> Vec<String> {
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            name.strip_prefix("mtdemo-")
                .and_then(|rest| rest.split('-').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !running(pid))
        })
        .map(str::to_owned)
        .collect()
}

/// Runs the demo: checks, sets up, tells the story, cleans up. With `--keep-going`, Ctrl-C
/// is its normal end.
pub async fn run(opts: DemoOptions, style: Style) -> Result<(), DemoError> {
    opts.validate().map_err(DemoError::Option)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(DemoError::NotRoot);
    }
    meshtun_testbed::ip_tool().map_err(|e| match e {
        meshtun_testbed::Error::Spawn { source, .. } => DemoError::MissingTool {
            tool: "ip (iproute2)",
            source,
        },
        other => other.into(),
    })?;
    if opts.ha && !ha::server_installed() {
        return Err(DemoError::NoPostgres);
    }
    if opts.nat {
        nat::check_tools()?;
    }
    let bin = std::env::current_exe()
        .map_err(|e| DemoError::io("cannot find the meshtun executable", e))?;
    let mut signals = Signals::new()?;
    let narrator = Narrator::new(style);
    let stale = stale_namespaces(&meshtun_testbed::ip(&["netns", "list"])?, |pid| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    if !stale.is_empty() {
        narrator.say(&style.bad(&format!(
            "Left by an earlier demo that was killed: namespaces {}; remove them with \
             `ip netns delete NAME`.\n",
            stale.join(", ")
        )));
    }
    let mut lab = Lab::new(opts.keep, bin)?;
    let mut story = Story {
        ha: opts.ha.then(story::HaStory::default),
        nat: opts.nat.then(nat::NatStory::default),
        evaluators: opts.evaluators.then(evaluators::EvaluatorsStory::default),
        ..Story::default()
    };
    let outcome = tokio::select! {
        result = scenario::play(&mut lab, &mut story, &opts, &narrator) => result,
        name = signals.recv() => Err(DemoError::Interrupted(name)),
    };
    narrator.release(None);
    let outcome = match outcome {
        Err(DemoError::Interrupted(_)) if opts.keep_going && story.first_epoch.is_some() => Ok(()),
        other => other,
    };
    if story.first_epoch.is_some() {
        narrator.say(&narrative::summary(style, &story));
    }
    match &outcome {
        Err(DemoError::Interrupted(signal)) => {
            narrator.say(&style.bad(&format!("Stopping: {signal}")));
        }
        // The error itself is printed last, on standard error.
        Err(_) => narrator.say(&style.bad("Stopping because of an error (below).")),
        Ok(()) => {}
    }
    narrator.say(&style.strong("Cleaning up"));
    for line in lab.tear_down() {
        narrator.say(&format!("  {line}"));
    }
    outcome?;
    let missing = story.missing();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(DemoError::Incomplete(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_lines_come_after_the_released_one() {
        let narrator = Narrator::new(Style::new(false));
        narrator.hold();
        narrator.say("during the round");
        assert_eq!(
            narrator.held.borrow().as_deref(),
            Some(&["during the round".to_owned()][..])
        );
        narrator.release(Some("the round"));
        assert!(narrator.held.borrow().is_none());
    }

    #[test]
    fn the_directory_is_private_and_removed_unless_kept() {
        use std::os::unix::fs::PermissionsExt;
        let bin = PathBuf::from("/bin/true");
        let mut lab = Lab::new(false, bin.clone()).unwrap();
        let dir = lab.dir();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(lab.tear_down(), [format!("removed {}", dir.display())]);
        assert!(!dir.exists());
        assert!(lab.tear_down().is_empty(), "nothing is done twice");

        let mut lab = Lab::new(true, bin).unwrap();
        let dir = lab.dir();
        assert_eq!(
            lab.tear_down(),
            [format!("kept {} (--keep)", dir.display())]
        );
        assert!(dir.is_dir());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn stale_namespaces_are_those_of_demos_no_longer_running() {
        let list =
            "mtdemo-123-a (id: 4)\nmtdemo-123-hub\nmtdemo-456-a\nmt-two_nodes-0001\nmtdemo-x-a\n";
        assert_eq!(
            stale_namespaces(list, |pid| pid == 456),
            ["mtdemo-123-a", "mtdemo-123-hub"]
        );
        assert!(stale_namespaces("", |_| false).is_empty());
    }

    #[test]
    fn errors_say_what_to_do() {
        assert!(DemoError::NotRoot.to_string().contains("sudo meshtun demo"));
        assert!(DemoError::NoPostgres
            .to_string()
            .contains("apt install postgresql"));
        let err = DemoError::Incomplete(vec!["a", "b"]);
        assert_eq!(err.to_string(), "the demo did not show: a; b");
    }
}
