//! The packet workers' priority (`[interface] scheduling`, README "Latency under load"): a
//! daemon run as root with `scheduling = "realtime"` raises its runtime's worker threads to
//! `threads::SCHED_RR` 1 once traffic wakes them, and says so; one with the default (`normal`) keeps
//! every thread at normal priority, and a reload to `normal` drops the raised ones; a daemon
//! with CAP_NET_ADMIN alone is refused real time, says so once, and carries traffic at
//! normal priority. (That a worker kept busy past the limit drops to
//! normal priority is tested with the real system calls in `meshtun::sched`, and against a
//! member's flood in `realtime_flood`.)

use meshtun_e2e::config::{pair, Node};
use meshtun_e2e::threads;
use meshtun_e2e::traffic::{assert_ping, tcp_transfer};
use meshtun_e2e::{
    require_host, require_root, tun_device_open_to_all, wait_until, Daemon, Family, Netns,
    Privilege, Veth,
};
use std::time::Duration;

#[test]
fn packet_workers_run_at_real_time_only_when_configured() {
    if !require_root("packet_workers_run_at_real_time_only_when_configured") {
        return;
    }
    let (ns_a, ns_b) = (Netns::new("rt"), Netns::new("rt"));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let (mut ca, cb) = pair(&a, veth.a_addr(Family::V4), &b, veth.b_addr(Family::V4));
    ca.interface.scheduling = Some("realtime".into());
    let mut da = Daemon::start(&ns_a, &ca);
    let mut db = Daemon::start(&ns_b, &cb);
    assert_ping(&ns_a, b.v4.into());
    tcp_transfer(&ns_a, a.v4.into(), &ns_b, 4 << 20).expect("TCP through the tunnel");

    let (pa, pb) = (da.pid().expect("a runs"), db.pid().expect("b runs"));
    assert!(
        wait_until(Duration::from_secs(5), || threads::realtime(pa) >= 1),
        "no thread of the daemon with scheduling = \"realtime\" runs threads::SCHED_RR: {:?}",
        threads::policies(pa)
    );
    for (policy, priority) in threads::policies(pa) {
        assert!(
            policy != threads::SCHED_RR || priority == 1,
            "a real-time thread runs at priority {priority}, above the lowest"
        );
    }
    assert!(
        da.log()
            .contains("packet workers run at real-time priority"),
        "the daemon does not say its workers run at real time:\n{}",
        da.log()
    );
    assert_eq!(
        threads::realtime(pb),
        0,
        "the default (normal) left a real-time thread: {:?}",
        threads::policies(pb)
    );
    assert!(!db.log().contains("real-time priority"), "{}", db.log());

    // SIGHUP with `normal`: the raised workers drop back at their next batch.
    let mut normal = ca.clone();
    normal.interface.scheduling = Some("normal".into());
    da.reload(&normal);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let _ = tcp_transfer(&ns_a, a.v4.into(), &ns_b, 1 << 20);
            threads::realtime(pa) == 0
        }),
        "after a reload with scheduling = \"normal\", threads still run threads::SCHED_RR: {:?}",
        threads::policies(pa)
    );
    da.assert_running();
    db.assert_running();
    da.stop_cleanly();
    db.stop_cleanly();
}

#[test]
fn a_daemon_refused_real_time_says_so_and_carries_traffic() {
    let test = "a_daemon_refused_real_time_says_so_and_carries_traffic";
    if !require_root(test)
        || !require_host(
            test,
            "/dev/net/tun open to every user",
            tun_device_open_to_all(),
        )
    {
        return;
    }
    let (ns_a, ns_b) = (Netns::new("rtno"), Netns::new("rtno"));
    let veth = Veth::connect(&ns_a, &ns_b, 0);
    let (a, b) = (Node::new("a", 1), Node::new("b", 2));
    let (ca, mut cb) = pair(&a, veth.a_addr(Family::V4), &b, veth.b_addr(Family::V4));
    cb.interface.scheduling = Some("realtime".into());
    let da = Daemon::start(&ns_a, &ca);
    // An unprivileged user with CAP_NET_ADMIN alone (as the systemd unit runs it, without
    // its LimitRTPRIO): no CAP_SYS_NICE, RLIMIT_RTPRIO 0.
    let mut db = Daemon::start_unprivileged(&ns_b, &cb, Privilege::NetAdmin);
    assert_ping(&ns_a, b.v4.into());
    tcp_transfer(&ns_a, a.v4.into(), &ns_b, 4 << 20).expect("TCP through the tunnel");
    let pb = db.pid().expect("b runs");
    let log = db.log();
    assert_eq!(
        log.matches("packet workers stay at normal priority")
            .count(),
        1,
        "the daemon refused real time must say so once:\n{log}"
    );
    assert!(!log.contains("run at real-time priority"), "{log}");
    assert_eq!(threads::realtime(pb), 0, "{:?}", threads::policies(pb));
    db.assert_running();
    da.stop_cleanly();
}
