//! Hook commands (`pre_up`, `post_up`, `pre_down`, `post_down`), run as `wg-quick` runs them:
//! with `sh -c`, `%i` replaced by the interface name, in order, output inherited.

use std::process::Stdio;

use tokio::process::Command;

use super::HostError;
use meshtun_proto::report::Chain;

/// A hook phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the tun device is created.
    PreUp,
    /// After the interface is configured.
    PostUp,
    /// Before the interface is torn down.
    PreDown,
    /// After it is removed.
    PostDown,
}

impl Phase {
    /// The configuration key of the phase.
    pub fn name(self) -> &'static str {
        match self {
            Phase::PreUp => "pre_up",
            Phase::PostUp => "post_up",
            Phase::PreDown => "pre_down",
            Phase::PostDown => "post_down",
        }
    }
}

/// The command with every `%i` replaced by the interface name.
pub fn substitute(command: &str, ifname: &str) -> String {
    command.replace("%i", ifname)
}

async fn run_one(phase: Phase, command: &str, ifname: &str) -> Result<(), HostError> {
    let command = substitute(command, ifname);
    tracing::info!(interface = ifname, hook = phase.name(), "[#] {command}");
    let status = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(Stdio::null())
        .status()
        .await;
    let status = match status {
        Ok(status) if status.success() => return Ok(()),
        Ok(status) => status.to_string(),
        Err(e) => format!("cannot run sh: {e}"),
    };
    Err(HostError::Hook {
        ifname: ifname.to_owned(),
        phase: phase.name(),
        command,
        status,
    })
}

/// Runs the commands in order and stops at the first failure (`pre_up`, `post_up`).
pub async fn run_strict(phase: Phase, commands: &[String], ifname: &str) -> Result<(), HostError> {
    for command in commands {
        run_one(phase, command, ifname).await?;
    }
    Ok(())
}

/// Runs every command even when some fail (`pre_down`, `post_down`); returns the failures,
/// each also logged.
pub async fn run_all(phase: Phase, commands: &[String], ifname: &str) -> Vec<HostError> {
    let mut failures = Vec::new();
    for command in commands {
        if let Err(e) = run_one(phase, command, ifname).await {
            tracing::warn!("{}", Chain(&e));
            failures.push(e);
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_percent_i_is_replaced() {
        assert_eq!(
            substitute("iptables -A FORWARD -i %i -j ACCEPT; echo %i%i", "mt0"),
            "iptables -A FORWARD -i mt0 -j ACCEPT; echo mt0mt0"
        );
        assert_eq!(substitute("echo 100%", "mt0"), "echo 100%");
    }

    #[tokio::test]
    async fn strict_hooks_run_in_order_and_stop_at_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let log = log.display();
        let commands = vec![
            format!("echo first %i >> {log}"),
            format!("echo second >> {log}; exit 4"),
            format!("echo never >> {log}"),
        ];
        let err = run_strict(Phase::PostUp, &commands, "mt0")
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "interface mt0: post_up hook `echo second >> {log}; exit 4` failed: exit status: 4"
            )
        );
        let written = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(written, "first mt0\nsecond\n");
    }

    #[tokio::test]
    async fn down_hooks_continue_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let log = log.display();
        let commands = vec!["exit 1".to_owned(), format!("echo after %i >> {log}")];
        let failures = run_all(Phase::PreDown, &commands, "mt0").await;
        assert_eq!(failures.len(), 1);
        assert!(failures[0]
            .to_string()
            .contains("pre_down hook `exit 1` failed"));
        let written = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(written, "after mt0\n");
    }
}
