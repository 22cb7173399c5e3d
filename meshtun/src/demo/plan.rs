//! The scenario as data: the three nodes, the addresses, the names of the namespaces and
//! interfaces, the controller's policy and the timeline. Nothing here touches the system.

use std::net::Ipv4Addr;
use std::time::Duration;

/// One node of the scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSpec {
    /// The node's id at the controller.
    pub id: &'static str,
    /// The short name used in namespace and interface names and in the ping matrix.
    pub letter: char,
    /// Its address on the outer network (the virtual switch).
    pub outer: Ipv4Addr,
    /// Its address inside the tunnel.
    pub tunnel: Ipv4Addr,
    /// The mean of its simulated benchmark scores at the start.
    pub mean: f64,
}

/// The three nodes: a and b pass the threshold, c does not (until it recovers).
pub const NODES: [NodeSpec; 3] = [
    NodeSpec {
        id: "node-a",
        letter: 'a',
        outer: Ipv4Addr::new(192, 0, 2, 1),
        tunnel: Ipv4Addr::new(100, 64, 0, 1),
        mean: 0.90,
    },
    NodeSpec {
        id: "node-b",
        letter: 'b',
        outer: Ipv4Addr::new(192, 0, 2, 2),
        tunnel: Ipv4Addr::new(100, 64, 0, 2),
        mean: 0.85,
    },
    NodeSpec {
        id: "node-c",
        letter: 'c',
        outer: Ipv4Addr::new(192, 0, 2, 3),
        tunnel: Ipv4Addr::new(100, 64, 0, 3),
        mean: 0.40,
    },
];

/// The node whose score recovers mid-way.
pub const RECOVERING: usize = 2;

/// Node c's mean score after it recovers.
pub const RECOVERED_MEAN: f64 = 0.90;

/// The standard deviation of every simulated score.
pub const STDDEV: f64 = 0.02;

// A recovered node passes every time (five standard deviations above the threshold).
const _: () = assert!(RECOVERED_MEAN - 5.0 * STDDEV >= THRESHOLD);

/// Seconds between two benchmark runs of a node.
pub const BENCHMARK_INTERVAL_SECS: u64 = 2;

/// The (first) controller's address on the outer network.
pub const CONTROLLER_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// One controller instance of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControllerSpec {
    /// Its instance name (`[ha] instance`), also its directory in the demo's directory.
    pub instance: &'static str,
    /// The role in its namespace's name.
    pub role: &'static str,
    /// Its address on the outer network.
    pub addr: Ipv4Addr,
}

impl ControllerSpec {
    /// Its base URL, as the nodes use it.
    pub fn url(&self) -> String {
        format!("http://{}:{CONTROLLER_PORT}", self.addr)
    }
}

/// The controllers: the first alone by default, both with `--ha`.
pub const CONTROLLERS: [ControllerSpec; 2] = [
    ControllerSpec {
        instance: "ctl-1",
        role: CONTROLLER,
        addr: CONTROLLER_ADDR,
    },
    ControllerSpec {
        instance: "ctl-2",
        role: "ctl2",
        addr: Ipv4Addr::new(192, 0, 2, 11),
    },
];

/// The controllers that run: both with `ha`, the first otherwise.
pub fn controllers(ha: bool) -> &'static [ControllerSpec] {
    if ha {
        &CONTROLLERS
    } else {
        &CONTROLLERS[..1]
    }
}

/// With `--ha`: how long the leader's lease lasts (`[ha] lease`); a dead leader is replaced
/// within `lease + lease/3`.
pub const HA_LEASE: Duration = Duration::from_secs(2);

/// With `--ha`: time between two pings from node-a to node-b (and back) while the leader is
/// replaced, to count every one lost.
pub const STEADY_PING_EVERY: Duration = Duration::from_millis(100);

/// The controller's API port.
pub const CONTROLLER_PORT: u16 = 8700;

/// The prefix length of the outer network and of the tunnel network.
pub const PREFIX_LEN: u8 = 24;

/// Every node's WireGuard port.
pub const LISTEN_PORT: u16 = 51820;

/// The minimum overall score.
pub const THRESHOLD: f64 = 0.70;

/// Consecutive passing evaluations a denied node needs to be readmitted.
pub const READMIT_AFTER: u32 = 1;

/// How long before its activation the next epoch is published.
pub const LEAD: Duration = Duration::from_secs(2);

/// Time between two rounds of pings.
pub const PING_EVERY: Duration = Duration::from_secs(3);

/// How long a ping waits for its answer.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// The shortest and longest epoch `--epoch` accepts, in seconds.
pub const EPOCH_RANGE_SECS: (u64, u64) = (4, 300);

/// Time that must remain after the recovery for the readmission to be shown, beyond one
/// epoch: the next benchmark, the lead, the switch and a few ping rounds.
const AFTER_RECOVERY_MARGIN: Duration = Duration::from_secs(15);

/// Time before the recovery for the first epoch and a few ping rounds.
const BEFORE_RECOVERY_MIN: Duration = Duration::from_secs(15);

/// What the user asked for on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOptions {
    /// The epoch length.
    pub epoch: Duration,
    /// How long the demo runs before it ends on its own (node c recovers half-way).
    pub duration: Duration,
    /// Keep running after `duration`, until Ctrl-C.
    pub keep_going: bool,
    /// Keep the temporary directory (configurations, keys, logs, database) at the end.
    pub keep: bool,
    /// Two controllers on one PostgreSQL; the leader is killed a third of the way.
    pub ha: bool,
    /// Every node behind its own NAT router, no endpoint configured, a relay; node-c is
    /// denied half-way (see [`super::nat`]).
    pub nat: bool,
    /// Node-c claims a passing score about itself while three evaluators score it; their
    /// second pass, half-way, fails it (see [`super::evaluators`]).
    pub evaluators: bool,
    /// Forward the controller's dashboard to this loopback address and tell what it shows
    /// (see [`super::dashboard`]).
    pub dashboard: Option<std::net::SocketAddr>,
}

impl DemoOptions {
    /// The shortest `duration` for an `epoch`: long enough to show c cut off, recovering,
    /// and readmitted (and, with `ha`, the leader killed and replaced before that).
    ///
    /// Node c recovers half-way, so each half must be long enough; with `ha` the leader is
    /// killed a third of the way and c recovers at two thirds, so each third must be.
    pub fn min_duration(epoch: Duration, ha: bool) -> Duration {
        BEFORE_RECOVERY_MIN.max(epoch + AFTER_RECOVERY_MARGIN) * if ha { 3 } else { 2 }
    }

    /// Checks the values; the error says which option is wrong and what would do.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(listen) = self.dashboard {
            super::dashboard::check_listen(listen)?;
        }
        let stories = [self.ha, self.nat, self.evaluators];
        if stories.iter().filter(|s| **s).count() > 1 {
            return Err("--ha, --nat and --evaluators are separate stories: choose one".into());
        }
        let (min, max) = EPOCH_RANGE_SECS;
        let secs = self.epoch.as_secs();
        if !(min..=max).contains(&secs) {
            return Err(format!(
                "--epoch {secs}: an epoch lasts {min} to {max} seconds in the demo"
            ));
        }
        let (shortest, flag, what) = if self.nat {
            (
                nat_min_duration(),
                " with --nat",
                "to show the paths, then node-c denied and cut off",
            )
        } else if self.evaluators {
            (
                nat_min_duration(),
                " with --evaluators",
                "to show node-c allowed, then judged by the evaluators and cut off",
            )
        } else {
            (
                Self::min_duration(self.epoch, self.ha),
                if self.ha { " with --ha" } else { "" },
                "to show node-c cut off, recovering and readmitted",
            )
        };
        if self.duration < shortest {
            return Err(format!(
                "--duration {}: with {secs} s epochs the demo{flag} needs at least {} s ({what})",
                self.duration.as_secs(),
                shortest.as_secs()
            ));
        }
        Ok(())
    }

    /// When node c's score recovers, counted from the first epoch: half-way, or at two
    /// thirds with `ha`.
    pub fn recover_at(&self) -> Duration {
        if self.ha {
            self.duration * 2 / 3
        } else {
            self.duration / 2
        }
    }

    /// With `nat`, when node-c's score drops, counted from the first epoch: half-way.
    pub fn deny_at(&self) -> Option<Duration> {
        self.nat.then(|| self.duration / 2)
    }

    /// With `evaluators`, when the evaluators' second pass judges node-c, counted from the
    /// first epoch: half-way.
    pub fn judge_at(&self) -> Option<Duration> {
        self.evaluators.then(|| self.duration / 2)
    }

    /// With `ha`, when the leader is killed, counted from the first epoch: a third of the way.
    pub fn kill_at(&self) -> Option<Duration> {
        self.ha.then(|| self.duration / 3)
    }

    /// When the demo ends, counted from the first epoch; `None` with `--keep-going`.
    pub fn end_at(&self) -> Option<Duration> {
        (!self.keep_going).then_some(self.duration)
    }
}

/// `--duration`'s default, in seconds.
pub const DEFAULT_DURATION_SECS: u64 = 120;

/// `--duration`'s default with `--nat`, in seconds: the NAT story is short.
pub const NAT_DEFAULT_DURATION_SECS: u64 = 30;

/// `--duration`'s default with `--evaluators`, in seconds: the story is short.
pub const EVALUATORS_DEFAULT_DURATION_SECS: u64 = 30;

/// With `--evaluators`: the mean score every node claims about itself (node-c too).
pub const CLAIMED_MEAN: f64 = 0.90;

// Node-c's claim would pass every time, were it counted.
const _: () = assert!(CLAIMED_MEAN - 5.0 * STDDEV >= THRESHOLD);

/// With `--nat`: the relay's (coturn's) address on the outer network.
pub const RELAY_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 20);

/// With `--nat`: the controller's STUN port, the default the nodes ask.
pub const STUN_PORT: u16 = 3478;

/// With `--nat`: the role of the relay's namespace.
pub const RELAY: &str = "relay";

/// With `--nat`: each node's mean score at the start (all pass; node-c is denied half-way).
pub const NAT_MEAN: f64 = 0.90;

/// With `--nat`: node-c's mean score once it drops.
pub const NAT_DENIED_MEAN: f64 = 0.40;

/// With `--nat`: how each node's router maps its flows; node-c's is symmetric.
pub fn nat_mapping(node: &NodeSpec) -> meshtun_testbed::nat::Mapping {
    use meshtun_testbed::nat::Mapping;
    if node.letter == 'c' {
        Mapping::FullyRandom
    } else {
        Mapping::EndpointIndependent
    }
}

/// With `--nat`: the shortest duration (the paths shown before half-way, the denial and
/// the cut-off after it).
pub fn nat_min_duration() -> Duration {
    NAT_HALF_MIN * 2
}

/// With `--nat`: each half must leave time for the candidates, the first handshakes and
/// two ping rounds (before), and the failing score, the epoch and a ping round (after).
const NAT_HALF_MIN: Duration = Duration::from_secs(10);

/// The names of everything the demo creates, unique per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pid: u32,
}

/// The role of the namespace holding the virtual switch.
pub const HUB: &str = "hub";

/// The role of the controller's namespace.
pub const CONTROLLER: &str = "ctl";

impl Names {
    /// Names for process `pid`.
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    /// The prefix shared by every namespace of this run.
    pub fn prefix(&self) -> String {
        format!("mtdemo-{}-", self.pid)
    }

    /// The namespace of `role` ([`HUB`], [`CONTROLLER`], or a node's letter).
    pub fn namespace(&self, role: &str) -> String {
        format!("{}{role}", self.prefix())
    }

    /// The namespace of a node.
    pub fn node_namespace(&self, node: &NodeSpec) -> String {
        self.namespace(&node.letter.to_string())
    }

    /// Every namespace joined to the switch, the hub first, with the controllers of `ha`
    /// and the relay's with `nat` (the routers' namespaces are made by the routers).
    pub fn all_namespaces(&self, ha: bool, nat: bool) -> Vec<String> {
        let mut all = vec![self.namespace(HUB)];
        all.extend(controllers(ha).iter().map(|c| self.namespace(c.role)));
        if nat {
            all.push(self.namespace(RELAY));
        }
        all.extend(NODES.iter().map(|n| self.node_namespace(n)));
        all
    }

    /// With `nat`: the namespace of `node`'s NAT router.
    pub fn router_namespace(&self, node: &NodeSpec) -> String {
        self.namespace(&format!("r{}", node.letter))
    }

    /// A node's tunnel interface. UAPI sockets and pid files of every namespace share one
    /// directory, so the name is unique on the machine; at most 14 bytes.
    pub fn ifname(&self, node: &NodeSpec) -> String {
        format!("mtdemo{}{}", self.pid, node.letter)
    }
}

/// The controller's base URL.
pub fn controller_url() -> String {
    format!("http://{CONTROLLER_ADDR}:{CONTROLLER_PORT}")
}

/// The node with this id.
pub fn node_by_id(id: &str) -> Option<&'static NodeSpec> {
    NODES.iter().find(|n| n.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(epoch: u64, duration: u64) -> DemoOptions {
        DemoOptions {
            epoch: Duration::from_secs(epoch),
            duration: Duration::from_secs(duration),
            keep_going: false,
            keep: false,
            ha: false,
            nat: false,
            evaluators: false,
            dashboard: None,
        }
    }

    #[test]
    fn defaults_and_the_test_settings_are_valid() {
        assert_eq!(options(10, 120).validate(), Ok(()));
        assert_eq!(options(5, 60).validate(), Ok(()));
        assert_eq!(
            DemoOptions::min_duration(Duration::from_secs(10), false).as_secs(),
            50
        );
        assert_eq!(
            DemoOptions::min_duration(Duration::from_secs(4), false).as_secs(),
            38
        );
        let mut ha = options(5, 60);
        ha.ha = true;
        assert_eq!(ha.validate(), Ok(()));
        ha.epoch = Duration::from_secs(10);
        ha.duration = Duration::from_secs(120);
        assert_eq!(ha.validate(), Ok(()));
    }

    #[test]
    fn with_ha_the_leader_dies_a_third_of_the_way_and_c_recovers_at_two_thirds() {
        let mut o = options(5, 60);
        assert_eq!(o.kill_at(), None);
        o.ha = true;
        assert_eq!(o.kill_at(), Some(Duration::from_secs(20)));
        assert_eq!(o.recover_at(), Duration::from_secs(40));
        o.duration = Duration::from_secs(59);
        let err = o.validate().unwrap_err();
        assert!(
            err.contains("--ha") && err.contains("at least 60 s"),
            "{err}"
        );
        let names = Names::new(7);
        assert_eq!(names.all_namespaces(true, false).len(), 6);
        assert!(names
            .all_namespaces(true, false)
            .contains(&"mtdemo-7-ctl2".to_owned()));
        assert_eq!(controllers(false), &CONTROLLERS[..1]);
        assert_eq!(CONTROLLERS[1].url(), "http://192.0.2.11:8700");
    }

    #[test]
    fn with_nat_c_is_denied_half_way_and_the_routers_have_their_namespaces() {
        let mut o = options(5, 20);
        o.nat = true;
        assert_eq!(o.validate(), Ok(()));
        assert_eq!(o.deny_at(), Some(Duration::from_secs(10)));
        assert_eq!(o.recover_at(), Duration::from_secs(10));
        o.duration = Duration::from_secs(19);
        let err = o.validate().unwrap_err();
        assert!(
            err.contains("--nat") && err.contains("at least 20 s"),
            "{err}"
        );
        o.duration = Duration::from_secs(30);
        o.ha = true;
        assert!(o.validate().unwrap_err().contains("choose one"));
        o.ha = false;
        o.evaluators = true;
        assert!(o.validate().unwrap_err().contains("choose one"));
        let names = Names::new(7);
        assert_eq!(names.router_namespace(&NODES[2]), "mtdemo-7-rc");
        assert!(names
            .all_namespaces(false, true)
            .contains(&"mtdemo-7-relay".to_owned()));
        assert_eq!(
            nat_mapping(&NODES[2]),
            meshtun_testbed::nat::Mapping::FullyRandom
        );
        assert_eq!(
            nat_mapping(&NODES[0]),
            meshtun_testbed::nat::Mapping::EndpointIndependent
        );
        assert_eq!(options(5, 60).deny_at(), None);
    }

    #[test]
    fn with_evaluators_c_is_judged_half_way() {
        let mut o = options(5, 20);
        assert_eq!(o.judge_at(), None);
        o.evaluators = true;
        assert_eq!(o.validate(), Ok(()));
        assert_eq!(o.judge_at(), Some(Duration::from_secs(10)));
        o.duration = Duration::from_secs(19);
        let err = o.validate().unwrap_err();
        assert!(
            err.contains("--evaluators") && err.contains("at least 20 s"),
            "{err}"
        );
    }

    #[test]
    fn bad_options_name_the_option_and_the_limit() {
        let err = options(2, 120).validate().unwrap_err();
        assert!(
            err.contains("--epoch 2") && err.contains("4 to 300"),
            "{err}"
        );
        let err = options(10, 30).validate().unwrap_err();
        assert!(
            err.contains("--duration 30") && err.contains("at least 50 s"),
            "{err}"
        );
    }

    #[test]
    fn recovery_is_half_way_and_keep_going_has_no_end() {
        let mut o = options(10, 120);
        assert_eq!(o.recover_at(), Duration::from_secs(60));
        assert_eq!(o.end_at(), Some(Duration::from_secs(120)));
        o.keep_going = true;
        assert_eq!(o.end_at(), None);
    }

    #[test]
    fn names_are_unique_per_process_and_interfaces_fit() {
        let names = Names::new(4_194_304);
        assert_eq!(names.namespace(HUB), "mtdemo-4194304-hub");
        assert_eq!(names.node_namespace(&NODES[2]), "mtdemo-4194304-c");
        for node in &NODES {
            let ifname = names.ifname(node);
            assert!(ifname.len() <= 15, "{ifname}");
        }
        assert_eq!(names.all_namespaces(false, false).len(), 5);
        assert!(names
            .all_namespaces(false, false)
            .iter()
            .all(|n| n.starts_with(&names.prefix())));
        assert_ne!(
            Names::new(1).ifname(&NODES[0]),
            Names::new(2).ifname(&NODES[0])
        );
    }

    #[test]
    fn the_seed_scenario_splits_at_the_threshold() {
        let passing: Vec<&str> = NODES
            .iter()
            .filter(|n| n.mean >= THRESHOLD)
            .map(|n| n.id)
            .collect();
        assert_eq!(passing, ["node-a", "node-b"]);
        assert_eq!(node_by_id("node-c").map(|n| n.letter), Some('c'));
        assert_eq!(controller_url(), "http://192.0.2.10:8700");
    }
}
