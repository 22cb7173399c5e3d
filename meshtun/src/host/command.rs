//! Running the system's own tools (resolver and firewall front ends, hooks).

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::HostError;

/// Directories searched after `PATH`: a daemon's `PATH` often lacks the `sbin` ones.
const EXTRA_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The path of an executable named `name` in `PATH` or the usual system directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs `program args...`, feeding `stdin` if given, and fails with the exit status and
/// standard error (standard output if that is empty) when it does not succeed. Returns its
/// standard output.
pub async fn run(
    ifname: &str,
    program: &Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<String, HostError> {
    let command_line = display_command(program, args);
    let fail = |detail: String| HostError::Command {
        ifname: ifname.to_owned(),
        command: command_line.clone(),
        detail,
    };
    tracing::debug!(interface = ifname, command = %command_line, "running");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    // A program that fails early may exit without reading its input: its exit status and
    // message then say more than the broken pipe.
    let mut write_error = None;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        write_error = pipe.write_all(input).await.err();
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| fail(format!("cannot wait for it: {e}")))?;
    if output.status.success() {
        if let Some(e) = write_error {
            return Err(fail(format!("cannot write its input: {e}")));
        }
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    // Some tools (BSD `route`) print their errors on standard output.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let message = match stderr.trim() {
        "" => stdout.trim(),
        text => text,
    };
    Err(fail(format!("{}: {message}", output.status)))
}

fn display_command(program: &Path, args: &[&str]) -> String {
    let name = program.file_name().unwrap_or(OsStr::new("?"));
    let mut line = name.to_string_lossy().into_owned();
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_a_missing_program() {
        let sh = find_program("sh").expect("sh is installed");
        assert!(sh.ends_with("sh"));
        assert_eq!(find_program("meshtun-no-such-program"), None);
    }

    #[tokio::test]
    async fn run_returns_stdout_and_feeds_stdin() {
        let cat = find_program("cat").unwrap();
        let out = run("mt0", &cat, &[], Some(b"nameserver 192.0.2.1\n"))
            .await
            .unwrap();
        assert_eq!(out, "nameserver 192.0.2.1\n");
    }

    #[tokio::test]
    async fn failure_names_the_command_status_and_stderr() {
        let sh = find_program("sh").unwrap();
        let err = run("mt0", &sh, &["-c", "echo oops >&2; exit 3"], None)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("interface mt0: `sh -c echo oops >&2; exit 3` failed:"),
            "{text}"
        );
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.ends_with("oops"), "{text}");
    }

    #[tokio::test]
    async fn failure_falls_back_to_stdout_when_stderr_is_empty() {
        let sh = find_program("sh").unwrap();
        let err = run(
            "mt0",
            &sh,
            &["-c", "echo 'add net 192.0.2.0: File exists'; exit 1"],
            None,
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("exit status: 1: add net 192.0.2.0: File exists"),
            "{err}"
        );
    }
}
