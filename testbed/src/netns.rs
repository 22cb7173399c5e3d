//! Network namespaces made with `ip netns`, deleted on drop, and the `ip` tool.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::run::{describe, run_ok};
use crate::Error;

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// How long one `ip` command may take.
const IP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `ip args` in the caller's namespace; its standard output.
pub fn ip(args: &[&str]) -> Result<String, Error> {
    run_ok(Command::new("ip").args(args), IP_TIMEOUT)
}

/// Checks that the `ip` tool (iproute2) runs.
pub fn ip_tool() -> Result<(), Error> {
    Command::new("ip")
        .arg("-V")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(drop)
        .map_err(|source| Error::Spawn {
            command: "ip -V (iproute2)".into(),
            source,
        })
}

/// A network namespace this process created; deleted on drop, or by [`Netns::delete`],
/// which reports a failure.
///
/// Processes started with [`Netns::spawn`] are remembered; any still registered when the
/// namespace goes are killed (by pid) first.
#[derive(Debug)]
pub struct Netns {
    name: String,
    pids: Arc<Mutex<Vec<u32>>>,
    deleted: bool,
}

impl Netns {
    /// Creates namespace `name` and brings its loopback up (deleting it again if that fails).
    pub fn create(name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        ip(&["netns", "add", &name])?;
        let ns = Self {
            name,
            pids: Arc::default(),
            deleted: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its file, `/var/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// The inode of the namespace (`net:[INODE]` in `ls -l /proc/PID/ns/net`).
    pub fn inode(&self) -> Result<u64, Error> {
        let path = self.path();
        std::fs::metadata(&path)
            .map(|m| m.ino())
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))
    }

    /// A command that runs `program args` inside the namespace (`ip netns exec`). `ip` execs
    /// the program, so the child's pid is the program's.
    pub fn command<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name])
            .arg(program)
            .args(args);
        cmd
    }

    /// Runs `ip args` inside the namespace; its standard output.
    pub fn ip(&self, args: &[&str]) -> Result<String, Error> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Starts `cmd` (built with [`Netns::command`]) and remembers its pid, to kill it if it
    /// is still registered when the namespace is deleted.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child, Error> {
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            command: describe(cmd),
            source,
        })?;
        self.lock_pids().push(child.id());
        Ok(child)
    }

    /// Forgets a pid registered by [`Netns::spawn`], once its process has been reaped.
    pub fn forget(&self, pid: u32) {
        self.lock_pids().retain(|&p| p != pid);
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns its result.
    /// Sockets created inside `f` belong to the namespace for their whole life; threads
    /// `f` starts are in it too.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        enter_file(&self.path(), f)
    }

    /// Deletes the namespace now (killing the processes still registered), reporting a
    /// failure; nothing is left for drop to do.
    pub fn delete(mut self) -> Result<(), Error> {
        self.remove()
    }

    fn remove(&mut self) -> Result<(), Error> {
        if std::mem::replace(&mut self.deleted, true) {
            return Ok(());
        }
        for pid in self.lock_pids().drain(..) {
            // A registered pid belongs to a child that has not been reaped yet, so it
            // cannot have been reused.
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        ip(&["netns", "delete", &self.name]).map(drop)
    }

    fn lock_pids(&self) -> MutexGuard<'_, Vec<u32>> {
        self.pids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = self.remove() {
            eprintln!("cannot delete namespace {}: {error}", self.name);
        }
    }
}

/// Runs `f` on a new thread that entered the namespace named `name` (in [`NETNS_DIR`]),
/// for code that knows a namespace by name only.
pub fn enter_named<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    enter_file(&PathBuf::from(NETNS_DIR).join(name), f)
}

/// Runs `f` on a new thread that entered the namespace whose file is `path`.
fn enter_file<T: Send>(path: &std::path::Path, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let what = || format!("cannot enter namespace {}", path.display());
            let file = File::open(path).map_err(|e| Error::io(what(), e))?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| Error::io(what(), e.into()))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entering_a_namespace_that_does_not_exist_names_it() {
        let err = enter_file(
            std::path::Path::new("/var/run/netns/mt-testbed-no-such"),
            || (),
        )
        .unwrap_err();
        assert!(err.to_string().contains("mt-testbed-no-such"), "{err}");
    }

    #[test]
    fn commands_run_inside_the_namespace() {
        let ns = Netns {
            name: "mt-x".into(),
            pids: Arc::default(),
            deleted: true,
        };
        let cmd = ns.command("ping", &["-c", "1"]);
        assert_eq!(describe(&cmd), "ip netns exec mt-x ping -c 1");
    }
}
