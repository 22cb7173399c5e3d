//! Finding #6: the daemon's user owns nothing in `/run/wireguard`. As `meshtun@.socket` does,
//! root binds the UAPI socket and passes it to the daemon (`sd_listen_fds`), here through
//! `systemd-socket-activate`: the daemon, unprivileged, serves `wg` on a socket it could not
//! have created and does not remove, and refuses any socket that is not a listening Unix
//! stream socket at its own interface's path, saying why, before touching anything.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::time::Duration;

use nix::sys::signal::Signal;

use meshtun_e2e::activation::{run_with_passed_socket, Passed};
use meshtun_e2e::config::Node;
use meshtun_e2e::wg::{dump, wg};
use meshtun_e2e::{
    require_host, require_root, tun_device_open_to_all, uapi_socket, Daemon, Netns, UAPI_DIR,
    UNPRIVILEGED_UID,
};

/// Whether the tools and the host allow the test (under CI, their absence fails it). Creates
/// the socket directory on a fresh machine, as systemd's `DirectoryMode=0755` would.
fn can_run(test: &str) -> bool {
    let can = require_root(test)
        && require_host(
            test,
            "systemd-socket-activate (package systemd)",
            installed("systemd-socket-activate"),
        );
    if can {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(UAPI_DIR)
            .expect("create the UAPI directory");
    }
    can
}

fn installed(program: &str) -> Result<(), String> {
    match std::process::Command::new(program)
        .arg("--version")
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`{program} --version` failed: {}", out.status)),
        Err(e) => Err(format!("cannot run {program}: {e}")),
    }
}

/// The identity of a file, to tell whether it was replaced.
fn dev_ino(path: &std::path::Path) -> (u64, u64) {
    let meta = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.dev(), meta.ino())
}

#[test]
fn a_socket_activated_daemon_serves_wg_on_a_root_socket_it_cannot_recreate_6() {
    let test = "a_socket_activated_daemon_serves_wg_on_a_root_socket_it_cannot_recreate_6";
    if !can_run(test) || !require_host(test, "/dev/net/tun mode 0666", tun_device_open_to_all()) {
        return;
    }
    // The property the units rely on: the socket directory is root's and no one else's.
    let dir = fs::metadata(UAPI_DIR).expect("the UAPI directory exists");
    assert_eq!(dir.uid(), 0, "{UAPI_DIR} must be owned by root");
    assert_eq!(
        dir.permissions().mode() & 0o022,
        0,
        "{UAPI_DIR} must not be writable by group or others"
    );
    let ns = Netns::new("sockact");
    let node = Node::new("s", 1);
    let daemon = Daemon::start_socket_activated(&ns, &node.config());
    let socket = uapi_socket(&node.name);
    let created = dev_ino(&socket);
    let pid = daemon.pid().expect("the daemon runs");
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("its status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    assert!(
        uid_line.split_whitespace().nth(1) == Some(&UNPRIVILEGED_UID.to_string()),
        "the daemon must run as uid {UNPRIVILEGED_UID}: {uid_line}"
    );

    // Root's `wg` reaches the daemon through the socket root created.
    let shown = dump(&ns, &node.name);
    assert_eq!(shown.interface.public_key, node.keys.public);
    assert_eq!(shown.interface.listen_port, node.port);
    assert!(wg(&ns, &["show", "interfaces"]).contains(&node.name));

    // The daemon's user cannot plant a socket (or anything) beside it.
    let planted = format!("{UAPI_DIR}/.planted-by-{}", node.name);
    let out = ns.run(&[
        "setpriv",
        &format!("--reuid={UNPRIVILEGED_UID}"),
        &format!("--regid={UNPRIVILEGED_UID}"),
        "--clear-groups",
        "sh",
        "-c",
        &format!(": > {planted}"),
    ]);
    let leaked = std::path::Path::new(&planted).exists();
    let _ = fs::remove_file(&planted);
    assert!(
        !out.success() && !leaked,
        "uid {UNPRIVILEGED_UID} could create {planted}"
    );

    // Stopping leaves the socket to its creator: the same file, untouched by the daemon.
    let mut daemon = daemon;
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()) && !ns.has_link(&node.name),
        "the daemon did not stop cleanly ({status:?}); log:\n{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("passed by the service manager"),
        "the daemon did not say it serves the passed socket:\n{}",
        daemon.log()
    );
    assert_eq!(
        dev_ino(&socket),
        created,
        "the daemon replaced or removed the socket"
    );
    // The harness removes the socket systemd-socket-activate left, once nothing answers.
    drop(daemon);
    assert!(!socket.exists());
}

/// Each socket, passed for interface `node`, is refused: the daemon exits with a failure,
/// names what was wrong, and creates no interface.
fn assert_refused(ns: &Netns, node: &Node, passed: Passed, why: &str) {
    let (status, log) = run_with_passed_socket(ns, &node.config(), &passed);
    assert!(
        !status.success(),
        "meshtun accepted {passed:?}; log:\n{log}"
    );
    assert!(
        log.contains("cannot be the UAPI socket of") && log.contains(why),
        "meshtun refused {passed:?} without saying {why:?}; log:\n{log}"
    );
    assert!(
        !ns.has_link(&node.name),
        "an interface was created for {passed:?}"
    );
}

#[test]
fn a_daemon_refuses_a_passed_socket_of_the_wrong_kind_or_path_6() {
    let test = "a_daemon_refuses_a_passed_socket_of_the_wrong_kind_or_path_6";
    if !can_run(test) {
        return;
    }
    let ns = Netns::new("sockbad");
    let node = Node::new("r", 1);
    let own = uapi_socket(&node.name);

    // Another interface's socket: a daemon must never answer for an interface not its own.
    let other = Node::new("o", 2);
    let other_path = uapi_socket(&other.name);
    assert_refused(
        &ns,
        &node,
        Passed::Stream(other_path.clone()),
        "it is bound to",
    );
    let _ = fs::remove_file(&other_path);

    // The right path, the wrong kind: a datagram socket.
    assert_refused(&ns, &node, Passed::Datagram(own.clone()), "Datagram");
    let _ = fs::remove_file(&own);

    // Not a Unix socket at all.
    ns.ip(&["link", "set", "lo", "up"]);
    let tcp = SocketAddr::from((Ipv4Addr::LOCALHOST, 51999));
    assert_refused(&ns, &node, Passed::Tcp(tcp), "not a Unix socket");
}

/// Under systemd the service manager, not the daemon, listens on the socket: `meshtun down`
/// must neither take it for a dead daemon (and clean up under a live one) nor signal it, but
/// say who holds the socket and how to stop the interface.
#[test]
fn down_names_the_process_holding_the_socket_and_signals_no_one_6() {
    let test = "down_names_the_process_holding_the_socket_and_signals_no_one_6";
    if !can_run(test) {
        return;
    }
    let ns = Netns::new("sockdown");
    let node = Node::new("d", 1);
    let socket = uapi_socket(&node.name);
    let path = socket.to_string_lossy().into_owned();
    let mut cmd = ns.command("systemd-socket-activate", &["-l", &path, "sleep", "30"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut holder = ns.spawn(&mut cmd);
    let bound = meshtun_e2e::wait_until(Duration::from_secs(10), || socket.exists());
    let bin = meshtun_e2e::meshtun_bin();
    let out = bound.then(|| ns.run(&[&bin.to_string_lossy(), "down", &node.name]));
    let still_running = holder.try_wait().ok().flatten().is_none();
    let _ = holder.kill();
    let _ = holder.wait();
    ns.forget(holder.id());
    let _ = fs::remove_file(&socket);
    let out = out.expect("systemd-socket-activate did not bind the socket within 10 s");
    assert!(!out.success(), "`meshtun down` succeeded: {out:?}");
    let wanted = format!("systemctl stop meshtun@{}", node.name);
    assert!(
        out.stderr.contains("not by a meshtun daemon") && out.stderr.contains(&wanted),
        "`meshtun down` did not say who holds the socket: {out:?}"
    );
    assert!(still_running, "`meshtun down` stopped the socket's holder");
}
