//! The host setup's error type.

use std::io;
use std::path::PathBuf;

/// Why applying, updating or undoing the host setup failed. Every variant names the
/// interface and the object (address, route, rule, file, command) concerned.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The interface name cannot be used (empty, too long, or with characters that are unsafe
    /// in paths, firewall table names and hook commands).
    #[error("interface name {ifname:?} is invalid: {reason}")]
    InvalidName {
        /// The rejected name.
        ifname: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The tun device does not exist (it must be created before the setup is applied).
    #[error("interface {ifname}: no such network interface")]
    LinkNotFound {
        /// Interface name.
        ifname: String,
    },
    /// The routing netlink socket could not be opened.
    #[error("interface {ifname}: cannot open a routing netlink socket")]
    Netlink {
        /// Interface name.
        ifname: String,
        /// The socket error.
        source: io::Error,
    },
    /// Adding, deleting or listing one kernel object failed.
    #[error("interface {ifname}: cannot {action} {object}")]
    Object {
        /// Interface name.
        ifname: String,
        /// What was being done: "add", "delete", "list", "set".
        action: &'static str,
        /// The object, as `ip` would print it ("route 0.0.0.0/0 table 51820").
        object: String,
        /// The kernel's (or the tool's) error.
        source: io::Error,
    },
    /// A hook command could not be started or exited unsuccessfully.
    #[error("interface {ifname}: {phase} hook `{command}` failed: {status}")]
    Hook {
        /// Interface name.
        ifname: String,
        /// "pre_up", "post_up", "pre_down" or "post_down".
        phase: &'static str,
        /// The command, with `%i` substituted.
        command: String,
        /// Its exit status, or why it could not run.
        status: String,
    },
    /// DNS settings were configured but no tool to apply them is installed.
    #[error(
        "interface {ifname}: DNS is configured but neither resolvectl (systemd-resolved) nor \
         resolvconf is installed"
    )]
    DnsUnavailable {
        /// Interface name.
        ifname: String,
    },
    /// An external program (resolvectl, resolvconf, nft, ifconfig, route) failed.
    #[error("interface {ifname}: `{command}` failed: {detail}")]
    Command {
        /// Interface name.
        ifname: String,
        /// The command line.
        command: String,
        /// Exit status and standard error, or why it could not run.
        detail: String,
    },
    /// The state file or its directory could not be read or written.
    #[error("interface {ifname}: state file {}", path.display())]
    StateIo {
        /// Interface name.
        ifname: String,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The state file is not valid JSON of the expected shape.
    #[error("interface {ifname}: state file {} is not valid", path.display())]
    StateParse {
        /// Interface name.
        ifname: String,
        /// The file.
        path: PathBuf,
        /// The parse error, with line and column.
        source: serde_json::Error,
    },
    /// A state file from an earlier run exists: it must be cleaned up before a new setup.
    #[error(
        "interface {ifname}: state file {} from an earlier run exists; clean it up first",
        path.display()
    )]
    StaleState {
        /// Interface name.
        ifname: String,
        /// The file.
        path: PathBuf,
    },
    /// The state file belongs to a process that is still running.
    #[error(
        "interface {ifname}: still set up by running process {pid} (state file {})",
        path.display()
    )]
    InUse {
        /// Interface name.
        ifname: String,
        /// The owner's process id.
        pid: u32,
        /// The state file.
        path: PathBuf,
    },
    /// The state file was written in another network namespace (copied or planted into this
    /// namespace's directory, or a shared `--state-dir` of an older version).
    #[error(
        "interface {ifname}: the state file {} was written by process {pid} in network \
         namespace {theirs}, not in this one ({ours}): nothing in it is undone here; run \
         `meshtun down {ifname}` in that namespace, or delete the file if that namespace is gone",
        path.display()
    )]
    OtherNamespace {
        /// Interface name.
        ifname: String,
        /// The state file.
        path: PathBuf,
        /// The process that wrote it.
        pid: u32,
        /// Its namespace (`net:[INODE]`).
        theirs: String,
        /// This process's namespace.
        ours: String,
    },
    /// A program the configuration needs is not installed. Checked before anything is
    /// changed, so nothing is left half applied.
    #[error(
        "interface {ifname}: {needed_by} needs `{program}`, which is not installed (searched \
         PATH and /usr/local/sbin, /usr/sbin, /sbin): install the package {package}{alternative}"
    )]
    MissingProgram {
        /// Interface name.
        ifname: String,
        /// The program (`nft`).
        program: &'static str,
        /// The Debian, Ubuntu and Fedora package that has it (`nftables`).
        package: &'static str,
        /// What in the configuration needs it ("the default route 0.0.0.0/0 (wg-quick's
        /// anti-spoofing and fwmark rules)").
        needed_by: String,
        /// Another way out, starting with ", or " (may be empty).
        alternative: &'static str,
    },
    /// A sysctl could not be read or written.
    #[error("interface {ifname}: sysctl {key}")]
    Sysctl {
        /// Interface name.
        ifname: String,
        /// The sysctl key (`net.ipv4.conf.all.src_valid_mark`).
        key: String,
        /// The I/O error.
        source: io::Error,
    },
    /// No routing table from 51820 upward is free for the default route.
    #[error("interface {ifname}: no free routing table for the default route")]
    NoFreeTable {
        /// Interface name.
        ifname: String,
    },
    /// The setting is not supported on this operating system.
    #[error("interface {ifname}: {what} is not supported on this system")]
    Unsupported {
        /// Interface name.
        ifname: String,
        /// The unsupported setting.
        what: String,
    },
    /// Undoing the setup finished, but some steps failed; their objects may remain.
    #[error("interface {ifname}: teardown incomplete: {}", join(errors))]
    Teardown {
        /// Interface name.
        ifname: String,
        /// Each failure, in the order they happened.
        errors: Vec<HostError>,
    },
}

fn join(errors: &[HostError]) -> String {
    errors
        .iter()
        .map(|e| meshtun_proto::report::describe(e))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_error_names_interface_object_and_cause() {
        let err = HostError::Object {
            ifname: "mt0".into(),
            action: "add",
            object: "route 0.0.0.0/0 table 51820".into(),
            source: io::Error::from_raw_os_error(libc::EEXIST),
        };
        assert_eq!(
            err.to_string(),
            "interface mt0: cannot add route 0.0.0.0/0 table 51820"
        );
        let text = meshtun_proto::report::describe(&err);
        assert!(text.starts_with("interface mt0: cannot add route 0.0.0.0/0 table 51820: "));
        assert!(text.contains("exists"), "{text}");
    }

    #[test]
    fn teardown_error_lists_every_failure() {
        let err = HostError::Teardown {
            ifname: "mt0".into(),
            errors: vec![
                HostError::Hook {
                    ifname: "mt0".into(),
                    phase: "pre_down",
                    command: "false".into(),
                    status: "exit status: 1".into(),
                },
                HostError::LinkNotFound {
                    ifname: "mt0".into(),
                },
                HostError::Object {
                    ifname: "mt0".into(),
                    action: "delete",
                    object: "rule 7".into(),
                    source: io::Error::other("busy"),
                },
            ],
        };
        // Each failure with its cause.
        assert_eq!(
            err.to_string(),
            "interface mt0: teardown incomplete: interface mt0: pre_down hook `false` failed: \
             exit status: 1; interface mt0: no such network interface; interface mt0: cannot \
             delete rule 7: busy"
        );
    }
}
