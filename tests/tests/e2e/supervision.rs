//! No fail-open on a panic: a gated daemon whose task panics (a packet worker, the timers,
//! the membership scheduler, the fetch or benchmark loop, the UAPI server) must not go on
//! with that task dead: the last membership would then stay forever (`fail_closed` silently
//! turned into keep-last) or the interface would stay up with no data plane. Each task is made
//! to panic in turn through the debug build's fault hook (`MESHTUN_FAULT_PANIC`), while node
//! `a` pings node `b` and `wg` reads `b`'s state: `b` must exit with status 70 and a log line
//! naming the panic, its tun device (and every gated peer with it) must be gone, and `a`'s
//! pings must go unanswered.

use std::time::{Duration, Instant};

use meshtun_e2e::gating::{Mesh, Timing};
use meshtun_e2e::traffic::ping;
use meshtun_e2e::{require_root, wait_until};

/// When the fault fires, after the daemon's tasks start: by then `b` is in the mesh.
const FAULT_AFTER_MS: &str = "2500";

/// How long a task may take to reach its fault point (the longest loop is the scheduler's,
/// which waits for the next epoch boundary: at most an epoch).
const EXIT_WITHIN: Duration = Duration::from_secs(15);

/// Every task with a fault point (`TASKS` in meshtun/src/supervise.rs).
const TASKS: &[&str] = &[
    "timer",
    "send",
    "receive",
    "scheduler",
    "fetch",
    "benchmark",
    "uapi",
];

#[test]
fn a_panicking_task_stops_the_daemon_and_no_gated_peer_outlives_it() {
    if !require_root("a_panicking_task_stops_the_daemon_and_no_gated_peer_outlives_it") {
        return;
    }
    let mesh = Mesh::new("supervise", Timing::default(), &["a", "b"]);
    let ctl = mesh.start_controller();
    let mut daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);
    daemons.pop().expect("b's daemon").stop_cleanly();
    let (a, b) = (mesh.node("a"), mesh.node("b"));

    for task in TASKS {
        let env = [
            ("MESHTUN_FAULT_PANIC", *task),
            ("MESHTUN_FAULT_AFTER_MS", FAULT_AFTER_MS),
        ];
        let mut daemon = mesh.start_node_with_env("b", Vec::new(), &env);
        let started = Instant::now();
        let mut status = None;
        while status.is_none() && started.elapsed() < EXIT_WITHIN {
            // Traffic both ways and a UAPI request, so that every loop turns.
            let _ = ping(&a.ns, b.tunnel().into(), 1);
            let _ = b.ns.run(&["wg", "show", &b.iface]);
            status = daemon.wait_exit(Duration::from_millis(100));
        }
        let log = daemon.log();
        let status = status.unwrap_or_else(|| {
            panic!("{task}: b still runs {EXIT_WITHIN:?} after the fault; its log:\n{log}")
        });
        assert_eq!(
            status.code(),
            Some(70),
            "{task}: exit status {status}; log:\n{log}"
        );
        for says in [
            "a task panicked".to_owned(),
            format!("fault injected into the {task} task"),
        ] {
            assert!(
                log.contains(&says),
                "{task}: the log does not say {says:?}:\n{log}"
            );
        }
        assert!(
            wait_until(Duration::from_secs(2), || !b.ns.has_link(&b.iface)),
            "{task}: b's tun device outlived the daemon"
        );
        assert!(
            !ping(&a.ns, b.tunnel().into(), 2),
            "{task}: a still reaches b after b's daemon stopped"
        );
        drop(daemon);
    }
}
