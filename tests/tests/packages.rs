//! The packages: `packaging/build` makes the .deb and .rpm of meshtun and meshtun-controller,
//! once for all the tests here (release builds in this run's cargo target directory: minutes
//! the first time), and each test checks them with the distributions' own tools:
//!
//! - `dpkg-deb --info`, `--contents` and `-e`: names, versions, dependencies, files, modes,
//!   conffiles and maintainer scripts; `lintian` reports no error;
//! - `rpm -qp` (`--qf`, `--dump`, `--requires`, `--scripts`): the same for the .rpm;
//! - each package unpacked into a temporary directory (`dpkg-deb -x`, `rpm2archive | tar`;
//!   never into this machine's root): the daemon runs `--version` and `check` on the example
//!   configuration, the controller runs `--version` and `check` on its own, `ldd` calls the
//!   controller "not a dynamic executable", and the units are the ones in `systemd/`;
//! - the Homebrew formula is valid Ruby (`ruby -c`; Homebrew itself is not available here).
//!
//! Needs the tools above (`.ci/run` installs them) but not root. Without one of them the tests
//! print a `SKIP` line on stderr and pass, or fail when `CI=true`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use meshtun_e2e::{cargo, in_ci, repo_root, run_command};

/// `packaging/build` from scratch: two release builds, and possibly installing cargo-deb and
/// cargo-generate-rpm.
const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);
/// Any other command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// What `packaging/build` needs besides cargo, and what the checks run.
const TOOLS: &[&str] = &[
    "dpkg-deb",
    "dpkg-shlibdeps",
    "lintian",
    "rpm",
    "rpm2archive",
    "file",
    "ldd",
    "strip",
    "ruby",
];

/// The four packages `packaging/build` made.
#[derive(Debug)]
struct Packages {
    daemon_deb: PathBuf,
    controller_deb: PathBuf,
    daemon_rpm: PathBuf,
    controller_rpm: PathBuf,
}

static BUILT: OnceLock<Result<Packages, String>> = OnceLock::new();

/// The packages, built on first use; `None` (after a `SKIP` line) if a tool is missing outside
/// CI. A failed build fails every test, with the script's output.
fn packages(test: &str) -> Option<&'static Packages> {
    if !have_tools(test) {
        return None;
    }
    match BUILT.get_or_init(build) {
        Ok(packages) => Some(packages),
        Err(why) => panic!("{test}: {why}"),
    }
}

/// Whether cargo and every tool in [`TOOLS`] run; under CI a missing one is a failure.
fn have_tools(test: &str) -> bool {
    let mut missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !on_path(t)).collect();
    if cargo().is_none() {
        missing.push("cargo");
    }
    if missing.is_empty() {
        return true;
    }
    let why = format!("{} not installed", missing.join(", "));
    assert!(!in_ci(), "{test}: {why}; CI=true, so this fails");
    let _ = writeln!(std::io::stderr(), "SKIP {test}: {why}");
    false
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()))
}

/// Runs `packaging/build` and reads the package paths it prints after `packages:`.
fn build() -> Result<Packages, String> {
    let cargo = cargo().ok_or("cargo does not run")?;
    let script = repo_root().join("packaging/build");
    let out = meshtun_e2e::try_run(
        meshtun_e2e::quick_release(Command::new(&script).env("CARGO", &cargo)),
        BUILD_TIMEOUT,
    )?;
    if !out.success() {
        return Err(format!(
            "`{}` failed ({}):\n{}{}",
            out.command, out.status, out.stdout, out.stderr
        ));
    }
    let listed: Vec<PathBuf> = out
        .stdout
        .lines()
        .skip_while(|l| *l != "packages:")
        .skip(1)
        .map(PathBuf::from)
        .collect();
    let find = |name: &str| {
        listed
            .iter()
            .find(|p| p.file_name().is_some_and(|f| f.to_string_lossy() == name))
            .cloned()
            .ok_or_else(|| format!("packaging/build listed no {name}:\n{}", out.stdout))
    };
    Ok(Packages {
        daemon_deb: find(&format!("meshtun_{VERSION}-1_amd64.deb"))?,
        controller_deb: find(&format!("meshtun-controller_{VERSION}-1_amd64.deb"))?,
        daemon_rpm: find(&format!("meshtun-{VERSION}-1.x86_64.rpm"))?,
        controller_rpm: find(&format!("meshtun-controller-{VERSION}-1.x86_64.rpm"))?,
    })
}

/// Runs `program args` and returns its stdout; panics with its output if it fails.
fn run(program: impl AsRef<Path>, args: &[&str]) -> String {
    run_command(Command::new(program.as_ref()).args(args), COMMAND_TIMEOUT).expect_success()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("paths here are UTF-8")
}

/// `-rwxr-xr-x` → 0o755 (permission bits only).
fn mode_of_ls(perm: &str) -> u32 {
    perm.chars()
        .skip(1)
        .take(9)
        .fold(0, |mode, c| (mode << 1) | u32::from(c != '-'))
}

/// `dpkg-deb --contents`: each path (as installed, with a leading `/`) and its mode and owner.
fn deb_contents(deb: &Path) -> BTreeMap<String, (u32, String)> {
    run("dpkg-deb", &["--contents", path_str(deb)])
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (perm, owner, path) = (fields.first()?, fields.get(1)?, fields.last()?);
            let path = path.strip_prefix('.')?.trim_end_matches('/');
            Some((path.to_owned(), (mode_of_ls(perm), (*owner).to_owned())))
        })
        .collect()
}

/// `rpm -qp --dump`: each path and its mode (permission bits), owner, group and config flag.
fn rpm_dump(rpm: &Path) -> BTreeMap<String, (u32, String, bool)> {
    run("rpm", &["-qp", "--dump", path_str(rpm)])
        .lines()
        .filter_map(|line| {
            // path size mtime digest mode owner group isconfig isdoc rdev symlink
            let f: Vec<&str> = line.split_whitespace().collect();
            let mode = u32::from_str_radix(f.get(4)?, 8).ok()? & 0o7777;
            let entry = (mode, f.get(5)?.to_string(), *f.get(7)? == "1");
            Some((f.first()?.to_string(), entry))
        })
        .collect()
}

/// The files both formats ship for one package, as (path, mode); man pages without `.gz`.
fn expected_files(name: &str, config: &str, unit: &str, pages: &[&str]) -> Vec<(String, u32)> {
    let mut files = vec![
        (format!("/usr/bin/{name}"), 0o755),
        (format!("/etc/meshtun/{config}"), 0o600),
        (format!("/usr/lib/systemd/system/{unit}"), 0o644),
        (
            format!("/usr/share/bash-completion/completions/{name}"),
            0o644,
        ),
        (
            format!("/usr/share/fish/vendor_completions.d/{name}.fish"),
            0o644,
        ),
        (format!("/usr/share/doc/{name}/README.md"), 0o644),
    ];
    files.extend(
        pages
            .iter()
            .map(|p| (format!("/usr/share/man/man1/{p}.1"), 0o644)),
    );
    files
}

fn daemon_files() -> Vec<(String, u32)> {
    let mut files = expected_files(
        "meshtun",
        "example.toml",
        "meshtun@.service",
        &["meshtun", "meshtun-up", "meshtun-down", "meshtun-check"],
    );
    // The UAPI socket, bound by systemd as root (finding #6).
    files.push(("/usr/lib/systemd/system/meshtun@.socket".to_owned(), 0o644));
    // The Grafana dashboard and the Prometheus alert rules, with their tests.
    for file in [
        "grafana-meshtun.json",
        "meshtun.rules.yml",
        "meshtun.rules.test.yml",
    ] {
        files.push((format!("/usr/share/meshtun/monitoring/{file}"), 0o644));
    }
    files
}

fn controller_files() -> Vec<(String, u32)> {
    expected_files(
        "meshtun-controller",
        "controller.toml",
        "meshtun-controller.service",
        &[
            "meshtun-controller",
            "meshtun-controller-serve",
            "meshtun-controller-check",
            "meshtun-controller-init",
        ],
    )
}

fn check_deb_files(deb: &Path, mut expected: Vec<(String, u32)>, zsh: &str) {
    expected.push((format!("/usr/share/zsh/vendor-completions/{zsh}"), 0o644));
    let contents = deb_contents(deb);
    for (path, mode) in expected {
        // Debian compresses man pages.
        let path = if path.ends_with(".1") {
            format!("{path}.gz")
        } else {
            path
        };
        let (got, owner) = contents
            .get(&path)
            .unwrap_or_else(|| panic!("{}: no {path} in {:#?}", deb.display(), contents.keys()));
        assert_eq!(*got, mode, "{}: {path} has mode {got:o}", deb.display());
        assert_eq!(
            owner,
            "0/0",
            "{}: {path} is owned by {owner}",
            deb.display()
        );
    }
}

#[test]
fn deb_packages_are_named_versioned_and_depend_on_adduser() {
    let Some(p) = packages("deb_packages_are_named_versioned_and_depend_on_adduser") else {
        return;
    };
    let field = |deb: &Path, name: &str| run("dpkg-deb", &["--field", path_str(deb), name]);
    for (deb, name) in [
        (&p.daemon_deb, "meshtun"),
        (&p.controller_deb, "meshtun-controller"),
    ] {
        let info = run("dpkg-deb", &["--info", path_str(deb)]);
        assert!(info.contains(&format!(" Package: {name}\n")), "{info}");
        assert_eq!(field(deb, "Version").trim(), format!("{VERSION}-1"));
        assert_eq!(field(deb, "Architecture").trim(), "amd64");
        let depends = field(deb, "Depends");
        assert!(depends.contains("adduser"), "{name}: Depends: {depends}");
    }
    // The daemon links glibc; the static controller depends on no library.
    let daemon = field(&p.daemon_deb, "Depends");
    assert!(daemon.contains("libc6"), "meshtun: Depends: {daemon}");
    assert_eq!(field(&p.controller_deb, "Depends").trim(), "adduser");
}

#[test]
fn deb_packages_hold_their_files_with_the_right_modes() {
    let Some(p) = packages("deb_packages_hold_their_files_with_the_right_modes") else {
        return;
    };
    check_deb_files(&p.daemon_deb, daemon_files(), "_meshtun");
    check_deb_files(&p.controller_deb, controller_files(), "_meshtun-controller");
    // Each package holds its own binary's files only.
    let daemon = deb_contents(&p.daemon_deb);
    let stray: Vec<&String> = daemon
        .keys()
        .filter(|k| k.contains("meshtun-controller"))
        .collect();
    assert!(stray.is_empty(), "the meshtun package holds {stray:?}");
}

#[test]
fn deb_conffiles_and_maintainer_scripts_create_the_user() {
    let Some(p) = packages("deb_conffiles_and_maintainer_scripts_create_the_user") else {
        return;
    };
    for (deb, conffile) in [
        (&p.daemon_deb, "/etc/meshtun/example.toml"),
        (&p.controller_deb, "/etc/meshtun/controller.toml"),
    ] {
        let control = tempfile::tempdir().expect("temporary directory");
        run("dpkg-deb", &["-e", path_str(deb), path_str(control.path())]);
        let read = |file: &str| {
            std::fs::read_to_string(control.path().join(file))
                .unwrap_or_else(|e| panic!("{}: no {file}: {e}", deb.display()))
        };
        assert_eq!(read("conffiles").trim(), conffile, "{}", deb.display());
        let postinst = read("postinst");
        assert!(
            postinst.contains("adduser --system --group") && postinst.contains(" meshtun"),
            "{}: postinst does not create the meshtun user:\n{postinst}",
            deb.display()
        );
    }
}

#[test]
fn lintian_reports_no_error_on_either_deb() {
    let Some(p) = packages("lintian_reports_no_error_on_either_deb") else {
        return;
    };
    for deb in [&p.daemon_deb, &p.controller_deb] {
        let out = run_command(
            Command::new("lintian").arg(deb).env("LC_ALL", "C.UTF-8"),
            Duration::from_secs(300),
        );
        let printed = format!("{}{}", out.stdout, out.stderr);
        let errors: Vec<&str> = printed.lines().filter(|l| l.starts_with("E:")).collect();
        assert!(
            errors.is_empty() && out.success(),
            "lintian {}:\n{printed}",
            deb.display()
        );
        let _ = writeln!(std::io::stderr(), "lintian {}:\n{printed}", deb.display());
    }
}

#[test]
fn rpm_packages_hold_their_files_modes_owners_and_requirements() {
    let Some(p) = packages("rpm_packages_hold_their_files_modes_owners_and_requirements") else {
        return;
    };
    for (rpm, name, mut files, zsh, config) in [
        (
            &p.daemon_rpm,
            "meshtun",
            daemon_files(),
            "_meshtun",
            "/etc/meshtun/example.toml",
        ),
        (
            &p.controller_rpm,
            "meshtun-controller",
            controller_files(),
            "_meshtun-controller",
            "/etc/meshtun/controller.toml",
        ),
    ] {
        let what = run(
            "rpm",
            &[
                "-qp",
                "--qf",
                "%{NAME} %{VERSION} %{RELEASE}",
                path_str(rpm),
            ],
        );
        assert_eq!(what, format!("{name} {VERSION} 1"));
        files.push((format!("/usr/share/zsh/site-functions/{zsh}"), 0o644));
        let listed = run("rpm", &["-qpl", path_str(rpm)]);
        let dump = rpm_dump(rpm);
        for (path, mode) in files {
            assert!(
                listed.lines().any(|l| l == path),
                "{name}: rpm -qpl: no {path}"
            );
            let (got, _, is_config) = &dump[&path];
            assert_eq!(*got, mode, "{name}: {path} has mode {got:o}");
            assert_eq!(*is_config, path == config, "{name}: {path}: config flag");
        }
        let scripts = run("rpm", &["-qp", "--scripts", path_str(rpm)]);
        assert!(
            scripts.contains("preinstall scriptlet") && scripts.contains("useradd --system"),
            "{name}: no pre-install scriptlet creating the user:\n{scripts}"
        );
        let requires = run("rpm", &["-qp", "--requires", path_str(rpm)]);
        assert!(requires.contains("/usr/sbin/useradd"), "{name}: {requires}");
    }
    // The service reads its configuration as its own user, not the daemons' `meshtun`; the
    // daemon's example is root's until it is copied into place.
    let controller = rpm_dump(&p.controller_rpm);
    let (_, owner, _) = &controller["/etc/meshtun/controller.toml"];
    assert_eq!(owner, "meshtun-controller");
    let scripts = run("rpm", &["-qp", "--scripts", path_str(&p.controller_rpm)]);
    assert!(
        scripts.contains("useradd --system --gid meshtun-controller"),
        "meshtun-controller: its pre-install scriptlet does not create its user:\n{scripts}"
    );
    // The daemon requires glibc; the static controller no shared library at all.
    let daemon = run("rpm", &["-qp", "--requires", path_str(&p.daemon_rpm)]);
    assert!(
        daemon.lines().any(|l| l.starts_with("libc.so.6")),
        "{daemon}"
    );
    let controller = run("rpm", &["-qp", "--requires", path_str(&p.controller_rpm)]);
    assert!(!controller.contains(".so"), "{controller}");
}

/// Unpacks `deb` into a new temporary directory with `dpkg-deb -x`.
fn unpack_deb(deb: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temporary directory");
    run("dpkg-deb", &["-x", path_str(deb), path_str(root.path())]);
    root
}

/// Unpacks `rpm` into a new temporary directory with `rpm2archive | tar`, as files owned by
/// whoever runs the test. (`rpm2cpio` extracts the same files, but exits with status 1 on
/// packages that, like cargo-generate-rpm's, carry no archive size tag; `rpm2archive` reads
/// the payload file by file, as `rpm` does, and its status counts.)
fn unpack_rpm(rpm: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temporary directory");
    let script = "set -o pipefail; rpm2archive - <\"$0\" | tar -xz --no-same-owner -C \"$1\"";
    run(
        "bash",
        &["-c", script, path_str(rpm), path_str(root.path())],
    );
    root
}

fn assert_unit_is_the_repository_one(root: &Path, unit: &str) {
    let shipped = std::fs::read(root.join("usr/lib/systemd/system").join(unit))
        .unwrap_or_else(|e| panic!("no {unit} unpacked: {e}"));
    let source = std::fs::read(repo_root().join("systemd").join(unit)).expect("systemd/ unit");
    assert!(
        shipped == source,
        "the packaged {unit} differs from systemd/{unit}"
    );
}

/// The unpacked daemon prints its version and accepts the example configuration once the key
/// file it names exists (its first comment says how to create it).
fn check_unpacked_daemon(root: &Path) {
    let bin = root.join("usr/bin/meshtun");
    assert_eq!(
        run(&bin, &["--version"]).trim(),
        format!("meshtun {VERSION}")
    );
    let example = root.join("etc/meshtun/example.toml");
    let without_key = run_command(
        Command::new(&bin).arg("check").arg(&example),
        COMMAND_TIMEOUT,
    );
    assert!(
        !without_key.success() && without_key.stderr.contains("wg0.key"),
        "check without the key file: {without_key:?}"
    );
    let key = run(&bin, &["genkey"]);
    let key_file = root.join("etc/meshtun/wg0.key");
    std::fs::write(&key_file, key).expect("write wg0.key");
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod wg0.key");
    let checked = run_command(
        Command::new(&bin).arg("check").arg(&example),
        COMMAND_TIMEOUT,
    );
    assert!(
        checked.success(),
        "check {}: {checked:?}",
        example.display()
    );
    assert!(
        checked.stdout.contains("valid (interface example, 1 peer)"),
        "{checked:?}"
    );
    assert!(
        !checked.stderr.contains("warning"),
        "check warned: {}",
        checked.stderr
    );
    assert_unit_is_the_repository_one(root, "meshtun@.service");
    assert_unit_is_the_repository_one(root, "meshtun@.socket");
}

/// The unpacked controller is one static executable that prints its version and accepts its
/// example configuration.
fn check_unpacked_controller(root: &Path) {
    let bin = root.join("usr/bin/meshtun-controller");
    let ldd = run_command(Command::new("ldd").arg(&bin), COMMAND_TIMEOUT);
    assert!(
        format!("{}{}", ldd.stdout, ldd.stderr).contains("not a dynamic executable"),
        "ldd {}: {ldd:?}",
        bin.display()
    );
    let file = run("file", &["-L", path_str(&bin)]);
    assert!(file.contains("statically linked"), "{file}");
    assert_eq!(
        run(&bin, &["--version"]).trim(),
        format!("meshtun-controller {VERSION}")
    );
    let config = root.join("etc/meshtun/controller.toml");
    let checked = run(&bin, &["--config", path_str(&config), "check"]);
    assert!(
        checked.contains("valid (listen 0.0.0.0:8700"),
        "check {}: {checked}",
        config.display()
    );
    assert_unit_is_the_repository_one(root, "meshtun-controller.service");
}

#[test]
fn the_unpacked_deb_packages_run_and_accept_their_example_configurations() {
    let test = "the_unpacked_deb_packages_run_and_accept_their_example_configurations";
    let Some(p) = packages(test) else {
        return;
    };
    check_unpacked_daemon(unpack_deb(&p.daemon_deb).path());
    check_unpacked_controller(unpack_deb(&p.controller_deb).path());
}

#[test]
fn the_unpacked_rpm_packages_run_and_accept_their_example_configurations() {
    let test = "the_unpacked_rpm_packages_run_and_accept_their_example_configurations";
    let Some(p) = packages(test) else {
        return;
    };
    check_unpacked_daemon(unpack_rpm(&p.daemon_rpm).path());
    check_unpacked_controller(unpack_rpm(&p.controller_rpm).path());
}

#[test]
fn the_homebrew_formula_is_valid_ruby_with_a_launchd_service() {
    let test = "the_homebrew_formula_is_valid_ruby_with_a_launchd_service";
    if !on_path("ruby") {
        assert!(
            !in_ci(),
            "{test}: ruby is not installed; CI=true, so this fails"
        );
        let _ = writeln!(std::io::stderr(), "SKIP {test}: ruby is not installed");
        return;
    }
    let formula = repo_root().join("packaging/homebrew/meshtun.rb");
    let syntax = run("ruby", &["-c", path_str(&formula)]);
    assert_eq!(syntax.trim(), "Syntax OK");
    let text = std::fs::read_to_string(&formula).expect("read the formula");
    for needed in [
        "class Meshtun < Formula",
        "depends_on \"rust\" => :build",
        "std_cargo_args(path: \"meshtun\")",
        "service do",
        "run [opt_bin/\"meshtun\", \"up\"",
        "require_root true",
        "keep_alive true",
        "test do",
    ] {
        assert!(text.contains(needed), "the formula lacks `{needed}`");
    }
}
