//! Harness for meshtun's end-to-end tests.
//!
//! Each test builds its own small network out of Linux network namespaces joined by veth
//! pairs, runs real `meshtun` daemons (and, for interoperability, Debian's `wireguard-go`)
//! inside them, and checks the tunnel with `ping`, TCP transfers and the `wg` tool.
//!
//! - [`Netns`] and [`Veth`]: namespaces and the links between them (outer addresses come from
//!   the documentation ranges);
//! - [`Daemon`] and [`WgGo`]: a meshtun daemon or a wireguard-go process in a namespace;
//! - [`config`]: keys and configuration files for both;
//! - [`activation`]: a daemon handed a UAPI socket by `systemd-socket-activate`;
//! - [`traffic`]: ping, verified TCP transfers and iperf3;
//! - [`wg`]: running the `wg` tool and parsing what it prints;
//! - [`controller`]: `meshtun-controller` on loopback (its state directory, its commands, a
//!   running `serve`, signed node requests, its database), and [`secrets`]: looking for
//!   secrets where they must not be;
//! - the namespace guard, processes, the controller's commands and the gate log parser are
//!   [`meshtun_testbed`]'s, which `meshtun demo` shares;
//! - [`gating`]: a gated mesh: the controller and gated daemons in namespaces joined by a
//!   bridge, background pings at a fixed rate, and the daemons' gate log lines;
//! - [`coturn`]: Debian's coturn as the TURN relay, in a namespace;
//! - [`nat`]: a NAT router (nftables masquerade, endpoint-independent or fully random) put
//!   in front of a node, with its conntrack table.
//!
//! Every guard cleans up on drop, also when the test panics. Every wait is bounded in time.
//! Tests call [`require_root`] first: without root and network namespaces they are skipped
//! with a `SKIP` line on stderr, or fail when `CI=true`.

pub mod activation;
pub mod browser;
pub mod config;
pub mod controller;
pub mod coturn;
mod daemon;
pub mod gating;
pub mod nat;
mod netns;
mod process;
mod run;
pub mod secrets;
pub mod threads;
pub mod traffic;
pub mod wg;
mod wggo;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub use daemon::{Daemon, Privilege, Stopped, UNPRIVILEGED_UID, UNPRIVILEGED_USER};
pub use netns::{add_outer_addr, del_outer_addr, Family, Netns, Veth};
pub use process::uapi_answers;
pub use run::{run as run_command, try_run, Output};
pub use wggo::WgGo;

/// Where the userspace WireGuard implementations put their UAPI sockets. This is a path in the
/// file system, shared by every namespace: interface names must be unique across tests.
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// The UAPI socket path of interface `name`.
pub fn uapi_socket(name: &str) -> PathBuf {
    PathBuf::from(UAPI_DIR).join(format!("{name}.sock"))
}

/// Where meshtun keeps its pid files and host-setup state files: the files of a namespace
/// other than the initial one go to a subdirectory of it ([`Netns::state_dir_under`]).
pub const STATE_DIR: &str = "/run/meshtun";

/// The pid file of the daemon serving interface `name` in `ns`.
pub fn pid_file(ns: &Netns, name: &str) -> PathBuf {
    ns.state_dir_under(Path::new(STATE_DIR))
        .join(format!("{name}.pid"))
}

/// The host-setup state file of interface `name` in `ns` (what to undo after a crash).
pub fn state_file(ns: &Netns, name: &str) -> PathBuf {
    ns.state_dir_under(Path::new(STATE_DIR))
        .join(format!("{name}.json"))
}

/// Whether this run is under CI (`CI=true`), where a skipped test counts as a failure: the
/// one rule, [`meshtun_testbed::in_ci`], which `meshtun`'s own tests use too.
pub use meshtun_testbed::in_ci;

/// Checks that the test can create network namespaces (root, `ip netns add` works).
///
/// Returns `true` if it can. Otherwise, under CI it panics (the test fails with a clear
/// message); elsewhere it prints `SKIP <test>: needs root and network namespaces` to stderr
/// and returns `false`, and the test returns early.
pub fn require_root(test: &str) -> bool {
    let problem = if nix::unistd::geteuid().is_root() {
        netns::probe().err()
    } else {
        Some("not running as root".to_owned())
    };
    let Some(why) = problem else {
        return true;
    };
    if in_ci() {
        panic!("{test}: needs root and network namespaces ({why}); CI=true, so this fails");
    }
    // Written to the stderr handle rather than with `eprintln!`, which the test harness
    // captures and hides for passing tests: a skip must always be visible.
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: needs root and network namespaces ({why})"
    );
    false
}

/// Checks a property of the host that a test needs beyond root (a device's mode, a kernel
/// feature, a sysctl), before the test does anything. `holds` is `Err(what is found)` when
/// the property does not hold.
///
/// Returns `true` if it holds. Otherwise, under CI it panics naming the property and what was
/// found; elsewhere it prints `SKIP <test>: ...` to stderr and returns `false`.
pub fn require_host(test: &str, property: &str, holds: Result<(), String>) -> bool {
    let Err(found) = holds else {
        return true;
    };
    if in_ci() {
        panic!("{test}: needs {property}, but {found}; CI=true, so this fails");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIP {test}: needs {property}, but {found}"
    );
    false
}

/// Whether `/dev/net/tun` is mode 0666 as distributions ship it, so that a process that is
/// not root but holds CAP_NET_ADMIN can open it. `Err` says what it is instead.
pub fn tun_device_open_to_all() -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata("/dev/net/tun")
        .map_err(|e| format!("/dev/net/tun cannot be inspected ({e})"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o666 == 0o666 {
        Ok(())
    } else {
        Err(format!(
            "/dev/net/tun is mode {mode:04o} (.ci/run sets 0666, the distributions' mode)"
        ))
    }
}

/// The repository's root directory (the e2e crate lives in its `tests/` directory).
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives in the repository's tests/ directory")
}

/// The cargo running this test (`$CARGO`), or `cargo` on the PATH; `None` if neither runs.
pub fn cargo() -> Option<PathBuf> {
    let candidate = std::env::var_os("CARGO").map_or_else(|| PathBuf::from("cargo"), PathBuf::from);
    let works = Command::new(&candidate)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    works.then_some(candidate)
}

/// `command` (a packaging script that runs `cargo build --release`) with the release profile
/// made quick to build: not optimised, no debug information, no LTO, 16 codegen units (on
/// two cores, 289 s for both binaries from scratch against 580 s optimised). The tests check
/// what the packages hold, how the binaries link and what they do, none of which depends on
/// the optimiser; a release made by hand with `packaging/build` keeps the workspace's release
/// profile (thin LTO).
pub fn quick_release(command: &mut Command) -> &mut Command {
    command
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
}

/// The meshtun binary under test: `$MESHTUN_BIN`, or `meshtun` in the cargo target directory
/// this test was built into (`target/<profile>/deps/<test>` → `target/<profile>/meshtun`).
///
/// Panics with "build it first: cargo build -p meshtun" if it does not exist.
pub fn meshtun_bin() -> PathBuf {
    binary("MESHTUN_BIN", "meshtun")
}

/// The controller binary under test: `$MESHTUN_CONTROLLER_BIN`, or `meshtun-controller` in
/// the cargo target directory this test was built into.
///
/// Panics with "build it first: cargo build -p meshtun-controller" if it does not exist.
pub fn controller_bin() -> PathBuf {
    binary("MESHTUN_CONTROLLER_BIN", "meshtun-controller")
}

/// `$env_var`, or the binary `name` of package `name` beside this test's `deps` directory.
fn binary(env_var: &str, name: &str) -> PathBuf {
    let path = match std::env::var_os(env_var) {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().expect("cannot find the test executable's path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("test executable is not in target/<profile>/deps");
            profile_dir.join(name)
        }
    };
    assert!(
        path.is_file(),
        "{name} binary not found at {}: build it first: cargo build -p {name} \
         (or set {env_var})",
        path.display()
    );
    path
}

/// Runs `meshtun args` in the test's own namespace with `input` on stdin, for commands that
/// touch no network (`genkey`, `pubkey`, `check`, `import`); at most 30 s.
pub fn meshtun(args: &[&str], input: &str) -> Output {
    let mut cmd = std::process::Command::new(meshtun_bin());
    cmd.args(args);
    run::run_with_input(&mut cmd, input, netns::COMMAND_TIMEOUT)
}

/// Runs `meshtun args` inside `ns`, waiting at most `timeout`.
pub fn meshtun_in(ns: &Netns, args: &[&str], timeout: Duration) -> Output {
    let bin = meshtun_bin();
    let mut full = vec![bin.to_str().expect("the meshtun path is UTF-8")];
    full.extend_from_slice(args);
    ns.run_timeout(&full, timeout)
}

/// Taken by [`exclusive`].
static EXCLUSIVE: Mutex<()> = Mutex::new(());

/// Held for the whole of an end-to-end test that asserts on real time (no ping lost across
/// key rotations or a controller restart, a cut-off within a deadline) or that loads the CPU
/// (floods, bulk transfers, connection abuse). The e2e tests share one binary and run two at
/// a time; no two holders ever run at once, so a timing assertion never shares the machine
/// with another such test or with a CPU hog, only with light tests. Not reentrant: take it
/// once per test ([`gating::Mesh::new`] takes it). A holder that panicked leaves it usable.
pub fn exclusive() -> MutexGuard<'static, ()> {
    EXCLUSIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A short suffix unique within this machine for as long as this process runs: the process id
/// (6 hex digits, fixed width) followed by a per-process counter.
pub fn unique_suffix() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:06x}{n:x}", std::process::id())
}

/// A unique interface name, `mt` + [`unique_suffix`] + `role` (a letter or two, e.g. "a").
///
/// Interface names are limited to 15 bytes; this panics if the result would be longer.
pub fn iface_name(role: &str) -> String {
    let name = format!("mt{}{role}", unique_suffix());
    assert!(
        name.len() <= 15,
        "interface name {name:?} is longer than 15 bytes"
    );
    name
}

/// Polls `cond` every 100 ms until it returns `true` or `timeout` has passed; returns whether
/// it became true. `cond` runs at least once.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes `text` to the new file `path`, readable by its owner only (0600), as a secret
/// file a daemon or the controller refuses otherwise.
pub fn write_0600(path: &std::path::Path, text: &str) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_unique_and_fit() {
        let a = iface_name("a");
        let b = iface_name("a");
        assert_ne!(a, b);
        assert!(a.len() <= 15 && a.starts_with("mt") && a.ends_with('a'));
    }

    #[test]
    fn wait_until_reports_success_and_timeout() {
        let mut calls = 0;
        assert!(wait_until(Duration::from_secs(1), || {
            calls += 1;
            calls == 3
        }));
        assert_eq!(calls, 3);
        let start = Instant::now();
        assert!(!wait_until(Duration::from_millis(250), || false));
        assert!(start.elapsed() >= Duration::from_millis(250));
    }

    #[test]
    fn uapi_socket_is_in_the_shared_directory() {
        assert_eq!(
            uapi_socket("mt0"),
            PathBuf::from("/var/run/wireguard/mt0.sock")
        );
    }
}
