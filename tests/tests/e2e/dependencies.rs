//! The shipping daemon links neither the controller nor SQLite: `meshtun demo` runs the
//! `meshtun-controller` binary instead (issue 13, §2). Checked on the dependency graph that
//! cargo builds `meshtun` from, with its default features (`demo` included) and for every
//! target platform.

use std::process::Command;
use std::time::Duration;

use meshtun_e2e::{cargo, repo_root, run_command};

/// Crates the `meshtun` binary must never link.
const FORBIDDEN: [&str; 3] = ["meshtun-controller", "rusqlite", "libsqlite3-sys"];

/// The packages in `cargo tree -p PACKAGE -e normal`, one name per line.
fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = cargo().expect("cargo runs this test, so it is there ($CARGO or on PATH)");
    let out = run_command(
        Command::new(cargo).current_dir(repo_root()).args([
            "tree", "--locked", "-p", package, "-e", "normal", "--target", "all", "--prefix",
            "none", "--format", "{p}",
        ]),
        Duration::from_secs(120),
    )
    .expect_success();
    out.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_daemon_links_no_controller_and_no_sqlite() {
    let deps = normal_dependencies("meshtun");
    assert!(
        deps.iter().any(|d| d == "meshtun-testbed"),
        "the demo's harness is not in the tree: is the `demo` feature still on by default?\n{deps:?}"
    );
    let linked: Vec<&String> = deps
        .iter()
        .filter(|d| FORBIDDEN.contains(&d.as_str()))
        .collect();
    assert!(
        linked.is_empty(),
        "`cargo tree -p meshtun -e normal` contains {linked:?}: the daemon links the controller or SQLite"
    );
}

#[test]
fn the_shared_harness_links_no_controller_and_no_http_stack() {
    let deps = normal_dependencies("meshtun-testbed");
    for forbidden in FORBIDDEN
        .iter()
        .chain(&["reqwest", "hyper", "axum", "tokio"])
    {
        assert!(
            !deps.iter().any(|d| d == forbidden),
            "meshtun-testbed depends on {forbidden}: it is linked into the shipping daemon\n{deps:?}"
        );
    }
}
