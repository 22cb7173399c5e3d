//! One static binary: `packaging/build-controller-static` builds `meshtun-controller` for
//! x86_64-unknown-linux-gnu with `-C target-feature=+crt-static -C relocation-model=static` and
//! checks it. This test runs the script, then checks its result again on its own:
//!
//! - `file` reports a statically linked executable (not a PIE) and `ldd` says it is "not a
//!   dynamic executable";
//! - `--version` runs, and `init` creates the key, the admin token and the database;
//! - the controller's dependency graph has rustls and no openssl or native-tls crate.
//!
//! Needs cargo (the release build takes minutes the first time) but neither root nor
//! namespaces. Without cargo it is skipped with a `SKIP` line on stderr, or fails when
//! `CI=true`.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshtun_e2e::{cargo, in_ci, repo_root, run_command};

/// The script builds a release binary for another target directory: all dependencies, once.
const BUILD_TIMEOUT: Duration = Duration::from_secs(40 * 60);
/// Any other command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const TARGET: &str = "x86_64-unknown-linux-gnu";

fn output_of(program: &Path, args: &[&str]) -> String {
    let out = run_command(Command::new(program).args(args), COMMAND_TIMEOUT);
    format!("{}{}", out.stdout, out.stderr)
}

#[test]
fn the_controller_builds_as_one_static_binary_without_openssl() {
    let Some(cargo) = cargo() else {
        let why = "cargo is not available to build the controller";
        if in_ci() {
            panic!("controller_static: {why}; CI=true, so this fails");
        }
        let _ = writeln!(std::io::stderr(), "SKIP controller_static: {why}");
        return;
    };
    let script = repo_root().join("packaging/build-controller-static");
    let built = run_command(
        meshtun_e2e::quick_release(Command::new(&script).env("CARGO", &cargo)),
        BUILD_TIMEOUT,
    );
    let stdout = built.expect_success();
    let bin = stdout
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("built "))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("the script did not print `built <path>` last:\n{stdout}"));
    assert!(bin.is_file(), "{} does not exist", bin.display());

    let file = output_of(Path::new("file"), &["-L", &bin.to_string_lossy()]);
    assert!(
        file.contains("LSB executable") && file.contains("statically linked"),
        "file does not call it a static, non-PIE executable: {file}"
    );
    let ldd = output_of(Path::new("ldd"), &[&bin.to_string_lossy()]);
    assert!(ldd.contains("not a dynamic executable"), "ldd: {ldd}");
    assert!(!ldd.contains("=>"), "ldd lists shared libraries: {ldd}");

    let version = run_command(Command::new(&bin).arg("--version"), COMMAND_TIMEOUT);
    assert_eq!(
        version.expect_success().trim(),
        format!("meshtun-controller {}", env!("CARGO_PKG_VERSION"))
    );

    let home = tempfile::tempdir().expect("cannot create a temporary directory");
    let config = home.path().join("controller.toml");
    std::fs::write(
        &config,
        "listen = \"127.0.0.1:9\"\nurl = \"http://127.0.0.1:9\"\nstate_dir = \"state\"\n",
    )
    .expect("cannot write controller.toml");
    let init = run_command(
        Command::new(&bin).arg("--config").arg(&config).arg("init"),
        COMMAND_TIMEOUT,
    )
    .expect_success();
    assert!(init.contains("controller key: "), "init printed: {init}");
    for file in ["controller.db", "controller.key", "admin.token"] {
        let path = home.path().join("state").join(file);
        let meta = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("init did not create {}: {e}", path.display()));
        assert_eq!(
            meta.permissions().mode() & 0o077,
            0,
            "{} is readable by others",
            path.display()
        );
    }

    let tree = run_command(
        Command::new(&cargo)
            .current_dir(repo_root())
            .args([
                "tree",
                "-p",
                "meshtun-controller",
                "-e",
                "normal",
                "--prefix",
                "none",
            ])
            .args(["--target", TARGET]),
        COMMAND_TIMEOUT,
    )
    .expect_success();
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"rustls"),
        "rustls is missing from:\n{tree}"
    );
    let openssl: Vec<&&str> = crates
        .iter()
        .filter(|c| c.starts_with("openssl") || **c == "native-tls")
        .collect();
    assert!(openssl.is_empty(), "the controller depends on {openssl:?}");
}
