//! `meshtun show` for humans, on a gated mesh of two nodes admitted by a real controller:
//!
//! - `show_is_plain_in_a_pipe_coloured_when_asked_and_names_each_psk_epoch`: piped, the text
//!   has no escape code, and each gated peer's `psk age` line names the epoch its key came
//!   from (the one `--json` gives as `psk_epoch`, between the admitting epoch and the epoch
//!   in force) and its path `direct`; with `--color always` the membership and the path are
//!   painted green, and `--color never` paints nothing. On a terminal (a pty, through
//!   `script`) the default `--color auto` paints, unless `NO_COLOR` is set or `TERM` is
//!   `dumb`.
//! - `watch_redraws_every_second_and_stops_on_ctrl_c`: `show --watch --color always` clears
//!   the screen and draws a frame about every second; piped without `--color` it draws the
//!   same frames with no escape code; both exit 0 on SIGINT (Ctrl-C).

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use meshtun_e2e::gating::observe::show_gate;
use meshtun_e2e::gating::{Mesh, Timing};
use meshtun_e2e::{meshtun_bin, meshtun_in, require_root, run_command};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The longest a `meshtun show` may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

const ESC: char = '\u{1b}';
const GREEN: &str = "\u{1b}[32m";
const RESET: &str = "\u{1b}[0m";
/// What `--watch` writes before each frame on a terminal (or with `--color always`).
const CLEAR: &str = "\u{1b}[H\u{1b}[2J";
const HEADER: &str = "meshtun show --watch: every 1s, Ctrl-C stops";

/// How long the watch runs before Ctrl-C.
const WATCHED: Duration = Duration::from_millis(3_500);

/// `meshtun show IFACE --no-probe ARGS` in `ns`, piped.
fn show(mesh: &Mesh, id: &str, args: &[&str]) -> String {
    let node = mesh.node(id);
    let mut all = vec!["show", node.iface.as_str(), "--no-probe"];
    all.extend_from_slice(args);
    meshtun_in(&node.ns, &all, COMMAND_TIMEOUT).expect_success()
}

#[test]
fn show_is_plain_in_a_pipe_coloured_when_asked_and_names_each_psk_epoch() {
    if !require_root("show_is_plain_in_a_pipe_coloured_when_asked_and_names_each_psk_epoch") {
        return;
    }
    let mesh = Mesh::new("show_colour", Timing::default(), &["a", "b"]);
    let ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    let admitted = mesh.admit_all(&ctl, &daemons);

    let plain = show(&mesh, "a", &[]);
    assert!(!plain.contains(ESC), "escape codes in a pipe:\n{plain:?}");
    assert!(plain.contains("  path: direct"), "{plain}");
    let gate = show_gate(&mesh.node("a").ns, &mesh.node("a").iface);
    let in_force = gate["epoch"].as_u64().expect("an epoch in force");
    let json = show(&mesh, "a", &["--json"]);
    let views: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let b_key = mesh.node("b").public_b64();
    let peer = views[0]["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["public_key"] == b_key.as_str()))
        .unwrap_or_else(|| panic!("node b is not a peer of a:\n{json}"));
    let psk_epoch = peer["gate"]["psk_epoch"].as_u64();
    let psk_epoch = psk_epoch.unwrap_or_else(|| panic!("no psk_epoch:\n{json}"));
    // Keys rotate with each bundle: the epoch is the admitting one or a later one.
    assert!(
        (admitted..=in_force + 1).contains(&psk_epoch),
        "psk_epoch {psk_epoch}, admitted in {admitted}, {in_force} in force:\n{json}"
    );
    let again = show(&mesh, "a", &[]);
    assert!(
        again.contains(" (epoch ") && again.contains("  psk age: "),
        "no epoch on the psk age line:\n{again}"
    );

    let coloured = show(&mesh, "a", &["--color", "always"]);
    for painted in [
        format!("membership: {GREEN}ALLOWED{RESET}"),
        format!("  path: {GREEN}direct{RESET}"),
    ] {
        assert!(
            coloured.contains(&painted),
            "{painted:?} not in:\n{coloured:?}"
        );
    }
    let never = show(&mesh, "a", &["--color", "never"]);
    assert!(!never.contains(ESC), "{never:?}");

    let terminal = show_on_pty(&mesh, "a", &[]);
    let allowed = format!("{GREEN}ALLOWED{RESET}");
    assert!(
        terminal.contains(&allowed),
        "no colour on a terminal:\n{terminal:?}"
    );
    for env in [("NO_COLOR", "1"), ("TERM", "dumb")] {
        let shown = show_on_pty(&mesh, "a", &[env]);
        assert!(shown.contains("ALLOWED"), "{shown:?}");
        assert!(
            !shown.contains(ESC),
            "colour on a terminal with {env:?}:\n{shown:?}"
        );
    }
    drop(daemons);
    drop(ctl);
}

/// `meshtun show IFACE --no-probe` in node `id`'s namespace with a pty as its stdout (run
/// by `script`), with `TERM=xterm`, no colour variable, and `env` added.
fn show_on_pty(mesh: &Mesh, id: &str, env: &[(&str, &str)]) -> String {
    let node = mesh.node(id);
    let line = format!("{} show {} --no-probe", meshtun_bin().display(), node.iface);
    let mut cmd = node.ns.command("script", &["-qec", &line, "/dev/null"]);
    cmd.env_remove("NO_COLOR")
        .env_remove("CLICOLOR")
        .env_remove("CLICOLOR_FORCE")
        .env("TERM", "xterm");
    cmd.envs(env.iter().copied());
    run_command(&mut cmd, COMMAND_TIMEOUT).expect_success()
}

/// Starts `meshtun show IFACE --watch --no-probe ARGS` in node `id`'s namespace, piped.
fn start_watch(mesh: &Mesh, id: &str, args: &[&str]) -> Child {
    let node = mesh.node(id);
    let bin = meshtun_bin();
    let mut all = vec!["show", node.iface.as_str(), "--watch", "--no-probe"];
    all.extend_from_slice(args);
    let mut cmd = node.ns.command(bin.to_str().expect("UTF-8 path"), &all);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    node.ns.spawn(&mut cmd)
}

/// Sends SIGINT to `child`, waits for it (at most 10 s) and returns its output; it must
/// exit 0.
fn interrupt(mut child: Child) -> String {
    let pid = i32::try_from(child.id()).expect("a pid");
    kill(Pid::from_raw(pid), Signal::SIGINT).expect("SIGINT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "show --watch did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    let _ = child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    let _ = child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    assert!(status.success(), "show --watch: {status} on SIGINT:\n{err}");
    out
}

#[test]
fn watch_redraws_every_second_and_stops_on_ctrl_c() {
    if !require_root("watch_redraws_every_second_and_stops_on_ctrl_c") {
        return;
    }
    let mesh = Mesh::new("show_watch", Timing::default(), &["a", "b"]);
    let ctl = mesh.start_controller();
    let daemons = mesh.start_nodes();
    mesh.admit_all(&ctl, &daemons);

    let coloured = start_watch(&mesh, "a", &["--color", "always"]);
    let piped = start_watch(&mesh, "a", &[]);
    std::thread::sleep(WATCHED);
    let coloured = interrupt(coloured);
    let piped = interrupt(piped);

    // A frame at once, then one a second: 4 in 3.5 s, 3 at least on a loaded machine.
    let frames = coloured.matches(CLEAR).count();
    assert!((3..=5).contains(&frames), "{frames} frames:\n{coloured:?}");
    assert_eq!(coloured.matches(HEADER).count(), frames, "{coloured:?}");
    assert!(
        coloured.contains(&format!("  path: {GREEN}direct{RESET}")),
        "{coloured:?}"
    );
    let last = coloured.rsplit(CLEAR).next().unwrap_or_default();
    assert!(
        last.contains(&format!("interface: {}", mesh.node("a").iface)),
        "{last:?}"
    );

    assert!(!piped.contains(ESC), "escape codes in a pipe:\n{piped:?}");
    let frames = piped.matches(HEADER).count();
    assert!((3..=5).contains(&frames), "{frames} frames:\n{piped}");
    assert_eq!(piped.matches("  path: direct").count(), frames, "{piped}");
    drop(daemons);
    drop(ctl);
}
