//! The systemd units in `systemd/`: `systemd-analyze verify` accepts them all without a single
//! warning, and they hold the settings the privilege model relies on: among them, that the
//! daemon's user owns nothing in `/run/wireguard` (finding #6), whose sockets root's `wg`
//! trusts.
//!
//! `verify` checks that `ExecStart=` names an executable file, so the units are verified from
//! a copy whose `/usr/bin/meshtun*` paths point at the binaries under test; nothing else is
//! changed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshtun_e2e::{controller_bin, in_ci, meshtun_bin, run_command};

const DAEMON_UNIT: &str = "meshtun@.service";
const SOCKET_UNIT: &str = "meshtun@.socket";
const CONTROLLER_UNIT: &str = "meshtun-controller.service";

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

fn unit_text(name: &str) -> String {
    let path = units_dir().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether `systemd-analyze` is installed; under CI its absence is a failure.
fn have_systemd_analyze(test: &str) -> bool {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(!in_ci(), "{test}: systemd-analyze is not installed");
        eprintln!("SKIP {test}: systemd-analyze is not installed");
    }
    found
}

/// Copies the units into `dir`, pointing their commands at the binaries under test.
fn copy_units(dir: &Path, units: &[(&str, String)]) -> Vec<PathBuf> {
    let daemon = meshtun_bin();
    let controller = controller_bin();
    units
        .iter()
        .map(|(name, text)| {
            let text = text
                .replace("/usr/bin/meshtun-controller", &controller.to_string_lossy())
                .replace(
                    "/usr/bin/meshtun ",
                    &format!("{} ", daemon.to_string_lossy()),
                );
            let path = dir.join(name);
            fs::write(&path, text).expect("write a unit copy");
            path
        })
        .collect()
}

/// Runs `systemd-analyze verify` on `paths`; returns whether it passed and what it printed.
fn verify(paths: &[PathBuf]) -> (bool, String) {
    let mut cmd = Command::new("systemd-analyze");
    cmd.arg("verify").args(paths);
    let out = run_command(&mut cmd, Duration::from_secs(60));
    let printed = format!("{}{}", out.stdout, out.stderr);
    (out.success() && printed.trim().is_empty(), printed)
}

#[test]
fn systemd_analyze_verify_accepts_every_unit_without_warnings() {
    if !have_systemd_analyze("systemd_analyze_verify_accepts_every_unit_without_warnings") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let units = [
        (DAEMON_UNIT, unit_text(DAEMON_UNIT)),
        (SOCKET_UNIT, unit_text(SOCKET_UNIT)),
        (CONTROLLER_UNIT, unit_text(CONTROLLER_UNIT)),
    ];
    let paths = copy_units(dir.path(), &units);
    let (ok, printed) = verify(&paths);
    assert!(ok, "systemd-analyze verify complained:\n{printed}");
}

#[test]
fn systemd_analyze_verify_reports_an_unknown_setting() {
    if !have_systemd_analyze("systemd_analyze_verify_reports_an_unknown_setting") {
        return;
    }
    // The check above counts a warning as a failure: make sure a mistake does show up.
    let dir = tempfile::tempdir().expect("temporary directory");
    let broken = unit_text(CONTROLLER_UNIT).replace("Type=exec", "Typ=exec");
    let paths = copy_units(dir.path(), &[(CONTROLLER_UNIT, broken)]);
    let (ok, printed) = verify(&paths);
    assert!(!ok, "a misspelt setting went unnoticed");
    assert!(printed.contains("Typ"), "{printed}");
}

#[test]
fn systemd_analyze_verify_reports_a_misspelt_socket_setting() {
    if !have_systemd_analyze("systemd_analyze_verify_reports_a_misspelt_socket_setting") {
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let broken = unit_text(SOCKET_UNIT).replace("SocketMode=", "SockMode=");
    let paths = copy_units(
        dir.path(),
        &[(DAEMON_UNIT, unit_text(DAEMON_UNIT)), (SOCKET_UNIT, broken)],
    );
    let (ok, printed) = verify(&paths);
    assert!(!ok, "a misspelt socket setting went unnoticed");
    assert!(printed.contains("SockMode"), "{printed}");
}

/// The `[Service]` settings of a unit as (key, value) pairs, comments left out.
fn service_settings(text: &str) -> Vec<(String, String)> {
    section_settings(text, "[Service]")
}

/// The settings of one section (`[Unit]`, `[Socket]`...) as (key, value) pairs.
fn section_settings(text: &str, section: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .skip_while(|l| *l != section)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn assert_setting(unit: &str, settings: &[(String, String)], key: &str, value: &str) {
    assert!(
        settings.iter().any(|(k, v)| k == key && v == value),
        "{unit}: expected {key}={value}"
    );
}

#[test]
fn daemon_unit_runs_unprivileged_with_net_admin_only() {
    let text = unit_text(DAEMON_UNIT);
    let s = service_settings(&text);
    for (key, value) in [
        ("Type", "notify"),
        ("ExecStart", "/usr/bin/meshtun up /etc/meshtun/%i.toml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("User", "meshtun"),
        ("AmbientCapabilities", "CAP_NET_ADMIN"),
        ("CapabilityBoundingSet", "CAP_NET_ADMIN"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("RuntimeDirectory", "meshtun"),
        ("RuntimeDirectoryMode", "0700"),
        ("StateDirectory", "meshtun"),
        ("StateDirectoryMode", "0700"),
        ("InaccessiblePaths", "-/var/lib/meshtun-controller"),
        ("Restart", "on-failure"),
    ] {
        assert_setting(DAEMON_UNIT, &s, key, value);
    }
}

/// Finding #6: the daemon's user must own nothing where `wg` looks for sockets, or a
/// compromised daemon could plant `/run/wireguard/wgX.sock` for another interface (even a
/// kernel one) and receive the private key root's `wg set` or `wg-quick` sends there. The
/// socket unit binds the socket as root, 0600, in a root-owned 0755 directory; the service
/// requires it and neither creates nor may write that directory.
#[test]
fn the_daemon_user_owns_nothing_in_run_wireguard_6() {
    let service = unit_text(DAEMON_UNIT);
    let socket = unit_text(SOCKET_UNIT);
    let s = service_settings(&service);
    for (key, value) in &s {
        let names_it = value.contains("wireguard");
        let grants_it = key.starts_with("RuntimeDirectory")
            || key.starts_with("StateDirectory")
            || key == "ReadWritePaths"
            || key == "BindPaths"
            || key.starts_with("ExecStart");
        assert!(
            !(names_it && grants_it),
            "{DAEMON_UNIT}: {key}={value} gives the daemon's user a hand in /run/wireguard"
        );
    }
    assert!(
        !s.iter().any(|(k, _)| k == "PermissionsStartOnly"),
        "{DAEMON_UNIT}: no command may run as root on the user's behalf"
    );
    let unit = section_settings(&service, "[Unit]");
    assert_setting(DAEMON_UNIT, &unit, "Requires", "meshtun@%i.socket");
    assert_setting(DAEMON_UNIT, &unit, "After", "meshtun@%i.socket");

    let sock = section_settings(&socket, "[Socket]");
    for (key, value) in [
        ("ListenStream", "/run/wireguard/%i.sock"),
        ("SocketUser", "root"),
        ("SocketGroup", "root"),
        ("SocketMode", "0600"),
        ("DirectoryMode", "0755"),
        ("RemoveOnStop", "yes"),
    ] {
        assert_setting(SOCKET_UNIT, &sock, key, value);
    }
    assert!(
        !sock.iter().any(|(k, _)| k == "Accept"),
        "{SOCKET_UNIT}: one daemon takes the listening socket (Accept=no, the default)"
    );
    // Stopping the interface stops its socket: no `wg` call starts it again.
    assert_setting(
        SOCKET_UNIT,
        &section_settings(&socket, "[Unit]"),
        "PartOf",
        "meshtun@%i.service",
    );
}

#[test]
fn controller_unit_has_no_capability_and_a_private_state_directory() {
    let text = unit_text(CONTROLLER_UNIT);
    let s = service_settings(&text);
    for (key, value) in [
        // Its own user: not the daemons', whose sockets hold private keys and PSKs.
        ("User", "meshtun-controller"),
        ("Group", "meshtun-controller"),
        (
            "InaccessiblePaths",
            "-/run/wireguard -/run/meshtun -/var/lib/meshtun",
        ),
        ("CapabilityBoundingSet", ""),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("StateDirectory", "meshtun-controller"),
        ("StateDirectoryMode", "0700"),
        ("Restart", "on-failure"),
    ] {
        assert_setting(CONTROLLER_UNIT, &s, key, value);
    }
}

#[test]
fn every_non_default_setting_is_explained_by_a_comment() {
    // Each group of settings is preceded by a comment saying why: no bare block of settings.
    for unit in [DAEMON_UNIT, SOCKET_UNIT, CONTROLLER_UNIT] {
        let text = unit_text(unit);
        let mut commented = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') {
                commented = true;
            } else if line.is_empty() || line.starts_with('[') {
                commented = false;
            } else if !commented && !is_self_explaining(line) {
                panic!("{unit}: `{line}` starts a group of settings with no comment");
            }
        }
    }
}

/// Settings whose meaning needs no comment: descriptions, the command and the install target.
fn is_self_explaining(line: &str) -> bool {
    ["Description=", "Documentation=", "ExecStart=", "WantedBy="]
        .iter()
        .any(|p| line.starts_with(p))
}
