//! What root trusts: `sudo meshtun down` acts on the state and pid files in the runtime
//! directory, which the daemon's unprivileged user owns under systemd. A user who can write
//! there (a compromised daemon) must not be able to make root run a command, write a sysctl
//! or signal another process; and root refuses a configuration that user can change.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use meshtun_e2e::config::{write_secret, Node};
use meshtun_e2e::{meshtun_in, require_root, Netns, UNPRIVILEGED_UID};

/// Makes `path` the unprivileged user's, as if that user had written it.
fn give_away(path: &Path) {
    std::os::unix::fs::chown(path, Some(UNPRIVILEGED_UID), Some(UNPRIVILEGED_UID)).unwrap();
}

/// A pid that no process has (the kernel's pid_max is at most 2^22).
const DEAD_PID: u32 = 4_194_305;

/// Private runtime directories owned by the unprivileged user, as systemd's
/// `RuntimeDirectory=` makes them for the daemon's user.
struct Runtime {
    dir: tempfile::TempDir,
    state: PathBuf,
    uapi: PathBuf,
}

impl Runtime {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let (state, uapi) = (dir.path().join("state"), dir.path().join("uapi"));
        for d in [&state, &uapi] {
            std::fs::create_dir(d).unwrap();
            give_away(d);
        }
        Self { dir, state, uapi }
    }

    /// Writes `contents` to `name` in the state directory of namespace `ns`, as the
    /// unprivileged user (who owns the state directory, and so may create that subdirectory).
    fn plant(&self, ns: &Netns, name: &str, contents: &str) {
        let dir = ns.state_dir_under(&self.state);
        if !dir.exists() {
            std::fs::create_dir(&dir).unwrap();
            give_away(&dir);
        }
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        give_away(&path);
    }

    /// Runs `meshtun down IFNAME` as root; returns whether it succeeded and what it said.
    fn down_as_root(&self, ns: &Netns, ifname: &str) -> (bool, String) {
        let out = meshtun_in(
            ns,
            &[
                "--state-dir",
                self.state.to_str().unwrap(),
                "--uapi-dir",
                self.uapi.to_str().unwrap(),
                "down",
                ifname,
            ],
            Duration::from_secs(20),
        );
        (out.success(), format!("{}{}", out.stderr, out.stdout))
    }
}

#[test]
fn a_planted_state_file_makes_root_run_no_hook_and_write_no_sysctl() {
    if !require_root("a_planted_state_file_makes_root_run_no_hook_and_write_no_sysctl") {
        return;
    }
    let ns = Netns::new("planted");
    let run = Runtime::new();
    let ifname = "mt-planted";
    let hook_marker = run.dir.path().join("hook-ran");
    // A per-namespace sysctl that root may write and the user may not.
    let forward = ns.ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(forward.trim(), "0");
    let planted = serde_json::json!({
        "version": 1,
        "ifname": ifname,
        "ifindex": null,
        "owner": {"pid": DEAD_PID, "start_time": null},
        "addresses": [], "routes": [], "rules": [],
        "sysctls": [{"key": "net.ipv4.ip_forward", "old": "1", "new": "0"}],
        "nft_table": null,
        "dns": {"tool": "resolvconf", "program": "/bin/touch", "name": hook_marker.display().to_string()},
        "default_table": null,
        "up": true,
        "down_hooks": {
            "pre_down": [format!("touch {}", hook_marker.display())],
            "post_down": [format!("touch {}", hook_marker.display())],
        },
    });
    run.plant(&ns, &format!("{ifname}.json"), &planted.to_string());

    let (ok, said) = run.down_as_root(&ns, ifname);
    assert!(
        !hook_marker.exists(),
        "root ran a command from the state file:\n{said}"
    );
    let forward = ns.ok(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(
        forward.trim(),
        "0",
        "root wrote a sysctl from the state file:\n{said}"
    );
    for why in [
        "sysctl net.ipv4.ip_forward",
        "only net.ipv4.conf.all.src_valid_mark",
        "DNS record",
    ] {
        assert!(said.contains(why), "`down` does not say {why:?}:\n{said}");
    }
    assert!(ok, "`down` failed:\n{said}");
}

#[test]
fn a_planted_pid_file_makes_root_signal_no_one() {
    if !require_root("a_planted_pid_file_makes_root_signal_no_one") {
        return;
    }
    let ns = Netns::new("plantpid");
    let run = Runtime::new();
    let ifname = "mt-plantpid";
    // A process whose command line says "meshtun", named in a planted pid file.
    let mut victim = Command::new("bash")
        .args(["-c", "exec -a meshtun-victim sleep 30"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    run.plant(&ns, &format!("{ifname}.pid"), &format!("{}\n", victim.id()));
    let (ok, said) = run.down_as_root(&ns, ifname);
    let alive = victim.try_wait().unwrap().is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(
        alive,
        "root killed the process named in a planted pid file:\n{said}"
    );
    assert!(
        said.contains("not a regular file written by this user"),
        "`down` does not say why it ignored the pid file:\n{said}"
    );
    assert!(
        !ok && said.contains("mt-plantpid is not running"),
        "`down` did not report that no daemon runs:\n{said}"
    );
}

#[test]
fn root_refuses_a_configuration_another_user_can_change() {
    if !require_root("root_refuses_a_configuration_another_user_can_change") {
        return;
    }
    let ns = Netns::new("foreigncfg");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let node = Node::new("a", 1);
    let hook_marker = dir.path().join("hook-ran");
    let toml = node.config().to_toml().replacen(
        "[interface]\n",
        &format!(
            "[interface]\npre_up = \"touch {}\"\n",
            hook_marker.display()
        ),
        1,
    );
    let path = write_secret(dir.path(), "a.toml", &toml);
    give_away(&path);
    for command in ["up", "check"] {
        let out = meshtun_in(
            &ns,
            &[command, path.to_str().unwrap()],
            Duration::from_secs(10),
        );
        let said = format!("{}{}", out.stderr, out.stdout);
        assert!(!out.success(), "`{command}` accepted it:\n{said}");
        assert!(
            said.contains(&format!("owned by uid {UNPRIVILEGED_UID}, not root")),
            "`{command}` does not say why:\n{said}"
        );
    }
    assert!(!hook_marker.exists(), "the pre_up hook ran");
    assert!(!ns.has_link(&node.name), "the interface came up");
    // Given back to root, the same file is accepted.
    std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
    let out = meshtun_in(
        &ns,
        &["check", path.to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert!(out.success(), "{}", out.stderr);
}
