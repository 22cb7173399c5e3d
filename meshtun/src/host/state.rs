//! The record of everything the host setup applied, kept in a JSON file so that a teardown,
//! or the next start after a crash, can undo it.
//!
//! The file is rewritten atomically (temporary file, then rename) before each step is applied
//! and after each step is undone, so it always lists every object that may exist. A batch of
//! routes is recorded with one write before any of them is added, and forgotten with one
//! write after all of them are deleted.
//!
//! The daemon's async code reads and writes it only through [`StateFile::read`],
//! [`StateFile::save`] and [`StateFile::remove`], which do the file I/O on tokio's blocking
//! pool. Writes are numbered and serialised: one whose caller went away (a cancelled future)
//! never overwrites a newer write or a removal.

// Parts of this module serve only the Linux implementation.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ipnet::IpNet;
use meshtun_proto::private_file::{self, Replace};
use serde::{Deserialize, Serialize};

use super::dns::DnsRecord;
use super::netns::NetnsId;
use super::routes::Family;
use super::HostError;

/// The default directory for state files.
pub const DEFAULT_STATE_DIR: &str = "/run/meshtun";

/// The largest state file read back (a real one is a few KiB).
const MAX_STATE_BYTES: u64 = 1 << 20;

/// The version written in new state files.
const STATE_VERSION: u32 = 1;

/// One route added, by destination and table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRecord {
    /// Destination network.
    pub dest: IpNet,
    /// Routing table number.
    pub table: u32,
}

/// The kind of a policy routing rule added for a default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleKind {
    /// `not fwmark MARK table TABLE`.
    NotFwmark {
        /// The firewall mark.
        fwmark: u32,
        /// The table looked up.
        table: u32,
    },
    /// `table main suppress_prefixlength 0`.
    SuppressMainDefault,
}

/// One policy routing rule added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRecord {
    /// Address family of the rule.
    pub family: Family,
    /// What the rule does.
    #[serde(flatten)]
    pub kind: RuleKind,
    /// The priority the kernel gave it, once known.
    pub priority: Option<u32>,
}

/// One sysctl changed, with the value to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlRecord {
    /// Dotted key, such as `net.ipv4.conf.all.src_valid_mark`.
    pub key: String,
    /// The value before the change.
    pub old: String,
    /// The value written.
    pub new: String,
}

/// The process that owns a state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// The process's start time in clock ticks since boot (Linux), to tell a reused pid apart.
    pub start_time: Option<u64>,
    /// The network namespace it ran in (Linux; absent from files of older versions): what it
    /// set up exists only there, so no other namespace undoes it.
    #[serde(default)]
    pub netns: Option<NetnsId>,
}

impl Owner {
    /// The current process, in the calling thread's network namespace.
    pub fn current() -> Owner {
        Owner {
            netns: NetnsId::current(),
            ..Owner::of(std::process::id())
        }
    }

    /// The running process `pid`.
    pub fn of(pid: u32) -> Owner {
        Owner {
            pid,
            start_time: process_start_time(pid),
            netns: NetnsId::of(pid),
        }
    }

    /// The namespace the owner ran in, when it is known and is not this process's: a state
    /// file that says so is not to be undone here.
    pub fn foreign_netns(&self) -> Option<NetnsId> {
        let theirs = self.netns?;
        let ours = NetnsId::current();
        (!ours.is_some_and(|ours| ours.same(&theirs))).then_some(theirs)
    }

    /// True when this is the current process.
    pub fn is_current(&self) -> bool {
        *self == Owner::current()
    }

    /// True when the owning process is still running.
    pub fn is_alive(&self) -> bool {
        match (self.start_time, process_start_time(self.pid)) {
            (Some(recorded), Some(now)) => recorded == now,
            (Some(_), None) if cfg!(target_os = "linux") => false,
            _ => pid_exists(self.pid),
        }
    }
}

fn pid_exists(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    }
}

/// Field 22 of `/proc/PID/stat`: the start time in clock ticks.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

fn parse_start_time(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may contain spaces or ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at field 3; the start time is field 22.
    after_comm.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The hooks that run when the interface goes down, kept so that a crash cleanup runs them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownHooks {
    /// Commands run before the interface is torn down.
    pub pre_down: Vec<String>,
    /// Commands run after it is removed.
    pub post_down: Vec<String>,
}

/// Everything applied for one interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Interface name.
    pub ifname: String,
    /// The interface's index when the setup was applied.
    pub ifindex: Option<u32>,
    /// The process that applied it.
    pub owner: Owner,
    /// Addresses added to the interface.
    pub addresses: Vec<IpNet>,
    /// Routes added through the interface.
    pub routes: Vec<RouteRecord>,
    /// Policy routing rules added.
    pub rules: Vec<RuleRecord>,
    /// Sysctls changed.
    pub sysctls: Vec<SysctlRecord>,
    /// The nftables table created (family `inet`).
    pub nft_table: Option<String>,
    /// DNS configuration handed to the resolver.
    pub dns: Option<DnsRecord>,
    /// The routing table used for default routes (`table = auto`).
    pub default_table: Option<u32>,
    /// True once the `post_up` hooks have succeeded: the down hooks then run on teardown.
    pub up: bool,
    /// The down hooks, from the configuration. Never written to or read from the file: the
    /// file may be writable by a less privileged user than the one undoing it (the daemon's
    /// user, when root runs `meshtun down`), and root must not run commands taken from it.
    #[serde(skip)]
    pub down_hooks: DownHooks,
    /// The tun device was created beforehand: a crash cleanup leaves it in place.
    #[serde(default)]
    pub existing_link: bool,
}

impl State {
    /// An empty record for `ifname`, owned by the current process.
    pub fn new(ifname: &str, ifindex: Option<u32>, down_hooks: DownHooks) -> State {
        State {
            version: STATE_VERSION,
            ifname: ifname.to_owned(),
            ifindex,
            owner: Owner::current(),
            addresses: Vec::new(),
            routes: Vec::new(),
            rules: Vec::new(),
            sysctls: Vec::new(),
            nft_table: None,
            dns: None,
            default_table: None,
            up: false,
            down_hooks,
            existing_link: false,
        }
    }

    /// Fails unless this process may undo the file at `path`: with
    /// [`HostError::OtherNamespace`] when it was written in another network namespace (its
    /// objects are not in this one, and the owner's namespace must clean up after it), with
    /// [`HostError::InUse`] while the process that wrote it still runs.
    pub fn check_undoable(&self, path: &Path) -> Result<(), HostError> {
        if let Some(theirs) = self.owner.foreign_netns() {
            return Err(HostError::OtherNamespace {
                ifname: self.ifname.clone(),
                path: path.to_owned(),
                pid: self.owner.pid,
                theirs: theirs.to_string(),
                ours: NetnsId::current().map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
            });
        }
        if !self.owner.is_current() && self.owner.is_alive() {
            return Err(HostError::InUse {
                ifname: self.ifname.clone(),
                pid: self.owner.pid,
                path: path.to_owned(),
            });
        }
        Ok(())
    }

    /// True when no applied object is left to undo.
    pub fn is_clean(&self) -> bool {
        self.addresses.is_empty()
            && self.routes.is_empty()
            && self.rules.is_empty()
            && self.sysctls.is_empty()
            && self.nft_table.is_none()
            && self.dns.is_none()
    }
}

/// The only sysctl meshtun ever changes, and so the only one a state file may restore:
/// `net.ipv4.conf.all.src_valid_mark`, for a policy-routed IPv4 default route.
pub const RESTORABLE_SYSCTL: &str = "net.ipv4.conf.all.src_valid_mark";

impl State {
    /// Drops from a state file read back from disk everything meshtun could not have
    /// written for `ifname`, and returns what was dropped and why. The file may have been
    /// written by a less privileged user than the one undoing it (root running `meshtun
    /// down` for a daemon run as `meshtun`), so it must not be able to make that user do
    /// more than its writer could: no commands (hooks are never read from it, and the DNS
    /// tool is looked up by name), no sysctl but [`RESTORABLE_SYSCTL`] back to 0 or 1, and
    /// nothing that belongs to another interface.
    pub fn keep_only_safe(&mut self, ifname: &str) -> Vec<String> {
        let mut dropped = Vec::new();
        if self.ifname != ifname {
            dropped.push(format!(
                "it names interface {:?}: only {ifname} is undone",
                self.ifname
            ));
            self.ifname = ifname.to_owned();
        }
        self.sysctls.retain(|record| {
            let safe = record.key == RESTORABLE_SYSCTL && matches!(record.old.as_str(), "0" | "1");
            if !safe {
                dropped.push(format!(
                    "sysctl {} = {:?} is not restored: only {RESTORABLE_SYSCTL} (to 0 or 1) is \
                     ever changed by meshtun",
                    record.key, record.old
                ));
            }
            safe
        });
        if self.dns.as_ref().is_some_and(|dns| !dns.belongs_to(ifname)) {
            dropped.push(format!(
                "its DNS record {:?} is not {ifname}'s: not reverted",
                self.dns
            ));
            self.dns = None;
        }
        dropped
    }
}

/// The location of one interface's state file, and its writer (shared by clones).
#[derive(Debug, Clone)]
pub struct StateFile {
    ifname: String,
    dir: PathBuf,
    path: PathBuf,
    writer: Arc<Writer>,
}

/// Orders the writes and removals of one state file.
#[derive(Debug, Default)]
struct Writer {
    /// The number of the newest write or removal done; held while the file is changed.
    done: parking_lot::Mutex<u64>,
    /// The number the next write or removal gets.
    next: AtomicU64,
    /// Writes done.
    writes: AtomicU64,
}

impl StateFile {
    /// `DIR/IFNAME.json`.
    pub fn new(dir: &Path, ifname: &str) -> StateFile {
        StateFile {
            ifname: ifname.to_owned(),
            dir: dir.to_owned(),
            path: dir.join(format!("{ifname}.json")),
            writer: Arc::default(),
        }
    }

    /// How many times the file was written through this `StateFile` (and its clones).
    pub fn writes(&self) -> u64 {
        self.writer.writes.load(Ordering::Relaxed)
    }

    /// The number of a new write or removal: later calls get larger numbers.
    fn ticket(&self) -> u64 {
        self.writer.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Runs `op` (a blocking file operation numbered `ticket`) on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&StateFile) -> Result<T, HostError> + Send + 'static,
    ) -> Result<T, HostError> {
        let file = self.clone();
        match tokio::task::spawn_blocking(move || op(&file)).await {
            Ok(result) => result,
            Err(e) => Err(self.io_error(&self.path, io::Error::other(e))),
        }
    }

    /// [`StateFile::load`] on tokio's blocking pool.
    pub async fn read(&self) -> Result<Option<State>, HostError> {
        self.blocking(StateFile::load).await
    }

    /// Writes the state atomically (creating the directory with mode 0700 if needed) on
    /// tokio's blocking pool, also serialising it there.
    pub async fn save(&self, state: &State) -> Result<(), HostError> {
        let ticket = self.ticket();
        let state = state.clone();
        self.blocking(move |file| file.write_numbered(ticket, &state))
            .await
    }

    /// Deletes the file (a missing file is fine) on tokio's blocking pool.
    pub async fn remove(&self) -> Result<(), HostError> {
        let ticket = self.ticket();
        self.blocking(move |file| file.remove_numbered(ticket))
            .await
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, path: &Path, source: io::Error) -> HostError {
        HostError::StateIo {
            ifname: self.ifname.clone(),
            path: path.to_owned(),
            source,
        }
    }

    /// Reads the file; `None` when it does not exist. What it holds is passed through
    /// [`State::keep_only_safe`] (each thing dropped is logged), since it may have been
    /// written by a less privileged user; a symbolic link or anything but a regular file is
    /// refused.
    pub fn load(&self) -> Result<Option<State>, HostError> {
        let file = match fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&self.path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io_error(&self.path, e)),
        };
        let meta = file.metadata().map_err(|e| self.io_error(&self.path, e))?;
        if !meta.is_file() || meta.len() > MAX_STATE_BYTES {
            let why = io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file of at most 1 MiB",
            );
            return Err(self.io_error(&self.path, why));
        }
        let mut text = String::new();
        io::Read::read_to_string(&mut io::Read::take(file, MAX_STATE_BYTES), &mut text)
            .map_err(|e| self.io_error(&self.path, e))?;
        let mut state: State =
            serde_json::from_str(&text).map_err(|source| HostError::StateParse {
                ifname: self.ifname.clone(),
                path: self.path.clone(),
                source,
            })?;
        let writer = std::os::unix::fs::MetadataExt::uid(&meta);
        for dropped in state.keep_only_safe(&self.ifname) {
            tracing::warn!(
                interface = %self.ifname,
                file = %self.path.display(),
                writer_uid = writer,
                "ignoring part of the state file: {dropped}"
            );
        }
        Ok(Some(state))
    }

    /// Writes the state atomically, creating the directory with mode 0700 if needed. Blocks:
    /// async code calls [`StateFile::save`]
    /// (only tests write synchronously).
    #[cfg(test)]
    pub fn save_now(&self, state: &State) -> Result<(), HostError> {
        self.write_numbered(self.ticket(), state)
    }

    /// Writes write number `ticket`, unless a later write or removal is already done.
    fn write_numbered(&self, ticket: u64, state: &State) -> Result<(), HostError> {
        let mut done = self.writer.done.lock();
        if *done > ticket {
            return Ok(());
        }
        self.write(state)?;
        *done = ticket;
        self.writer.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write(&self, state: &State) -> Result<(), HostError> {
        self.ensure_dir()?;
        let text = serde_json::to_vec_pretty(state).map_err(|e| {
            self.io_error(&self.path, io::Error::new(io::ErrorKind::InvalidData, e))
        })?;
        // Always through a new temporary file: whoever else may write the directory (the
        // daemon's user, when root cleans up) must not make this write go through a link
        // they planted.
        let write = || private_file::write(&self.path, &text, Replace::Atomically);
        // A namespace's subdirectory is removed when its last daemon stops: if that happened
        // between the check and the write, create it again, once.
        match write() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.ensure_dir()?;
                write()
            }
            other => other,
        }
        .map_err(|e| self.io_error(&self.path, e))
    }

    /// Deletes the file; a missing file is fine. Blocks: async code calls
    /// [`StateFile::remove`] (only tests remove synchronously).
    #[cfg(test)]
    pub fn remove_now(&self) -> Result<(), HostError> {
        self.remove_numbered(self.ticket())
    }

    /// Removal number `ticket`, unless a later write is already done.
    fn remove_numbered(&self, ticket: u64) -> Result<(), HostError> {
        let mut done = self.writer.done.lock();
        if *done > ticket {
            return Ok(());
        }
        match fs::remove_file(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(self.io_error(&self.path, e))
            }
            _ => {}
        }
        *done = ticket;
        Ok(())
    }

    /// Creates the directory (mode 0700) if needed. A namespace's subdirectory must be a
    /// directory, not a link to one: whoever owns the state directory must not redirect it.
    fn ensure_dir(&self) -> Result<(), HostError> {
        private_file::create_dir(&self.dir).map_err(|e| self.io_error(&self.dir, e))?;
        super::netns::check_subdir(&self.dir).map_err(|e| self.io_error(&self.dir, e))?;
        let meta = fs::metadata(&self.dir).map_err(|e| self.io_error(&self.dir, e))?;
        if private_file::exposed_mode(&meta).is_some() {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| self.io_error(&self.dir, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut state = State::new("mt0", Some(7), DownHooks::default());
        state.addresses = vec![
            "100.64.0.1/24".parse().unwrap(),
            "fd00::1/64".parse().unwrap(),
        ];
        state.routes = vec![RouteRecord {
            dest: "0.0.0.0/0".parse().unwrap(),
            table: 51820,
        }];
        state.rules = vec![
            RuleRecord {
                family: Family::V4,
                kind: RuleKind::NotFwmark {
                    fwmark: 51820,
                    table: 51820,
                },
                priority: Some(32765),
            },
            RuleRecord {
                family: Family::V6,
                kind: RuleKind::SuppressMainDefault,
                priority: None,
            },
        ];
        state.sysctls = vec![SysctlRecord {
            key: "net.ipv4.conf.all.src_valid_mark".into(),
            old: "0".into(),
            new: "1".into(),
        }];
        state.nft_table = Some("meshtun-mt0".into());
        state.dns = Some(DnsRecord::Resolvconf {
            name: "tun.mt0".into(),
        });
        state.default_table = Some(51820);
        state.up = true;
        state
    }

    #[test]
    fn a_state_file_from_before_existing_links_loads_as_a_device_of_our_own() {
        let mut value = serde_json::to_value(sample()).unwrap();
        value.as_object_mut().unwrap().remove("existing_link");
        let state: State = serde_json::from_value(value).unwrap();
        assert!(!state.existing_link);
        assert_eq!(state, sample());
    }

    #[test]
    fn hooks_are_never_written_to_or_read_from_the_file() {
        let mut state = sample();
        state.down_hooks.post_down = vec!["echo down %i".into()];
        let text = serde_json::to_string(&state).unwrap();
        assert!(!text.contains("echo down"), "{text}");
        let mut planted = serde_json::to_value(sample()).unwrap();
        planted["down_hooks"] = serde_json::json!({"pre_down": ["reboot"], "post_down": []});
        let read: State = serde_json::from_value(planted).unwrap();
        assert_eq!(read.down_hooks, DownHooks::default());
    }

    #[test]
    fn only_what_meshtun_could_have_written_for_the_interface_is_kept() {
        let mut state = sample();
        state.ifname = "eth0".into();
        state.sysctls.push(SysctlRecord {
            key: "kernel.core_pattern".into(),
            old: "|/tmp/x".into(),
            new: "core".into(),
        });
        state.sysctls.push(SysctlRecord {
            key: RESTORABLE_SYSCTL.into(),
            old: "2; reboot".into(),
            new: "1".into(),
        });
        state.dns = Some(DnsRecord::Resolvconf {
            name: "tun.eth0".into(),
        });
        let dropped = state.keep_only_safe("mt0");
        assert_eq!(dropped.len(), 4, "{dropped:?}");
        assert_eq!(state.ifname, "mt0");
        assert_eq!(state.sysctls, sample().sysctls);
        assert_eq!(state.dns, None);
        let mut clean = sample();
        assert!(clean.keep_only_safe("mt0").is_empty());
    }

    #[test]
    fn a_symbolic_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere.json");
        fs::write(&target, serde_json::to_vec(&sample()).unwrap()).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("mt0.json")).unwrap();
        assert!(StateFile::new(dir.path(), "mt0").load().is_err());
    }

    /// The daemon's user, who may write the state directory, plants the temporary files as
    /// links (symbolic or hard) to a file of root's: root's next write leaves them alone.
    #[test]
    fn a_planted_temporary_file_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        let file = StateFile::new(&dir.path().join("run"), "mt0");
        file.save_now(&sample()).unwrap();
        let plants: [fn(&Path, &Path) -> io::Result<()>; 2] = [
            |victim, tmp| std::os::unix::fs::symlink(victim, tmp),
            |victim, tmp| fs::hard_link(victim, tmp),
        ];
        // The writer's first temporary name, then its second (the first is still planted).
        for (n, plant) in (0..).zip(plants) {
            let tmp = dir
                .path()
                .join("run")
                .join(private_file::temp_name("mt0.json".as_ref(), n));
            fs::write(&victim, "root's").unwrap();
            plant(&victim, &tmp).unwrap();
            file.save_now(&sample()).unwrap();
            assert_eq!(fs::read_to_string(&victim).unwrap(), "root's");
            assert_eq!(file.load().unwrap(), Some(sample()));
        }
    }

    #[test]
    fn state_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(&dir.path().join("run"), "mt0");
        assert_eq!(file.load().unwrap(), None);
        let state = sample();
        file.save_now(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
        assert_eq!(file.path(), dir.path().join("run/mt0.json"));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("run"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("mt0.json")]);
        file.remove_now().unwrap();
        assert_eq!(file.load().unwrap(), None);
        file.remove_now().unwrap();
    }

    /// A write that was overtaken (its caller cancelled, its blocking task late) never
    /// replaces a newer write, nor brings back a removed file.
    #[test]
    fn an_overtaken_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "mt0");
        let (older, newer) = (file.ticket(), file.ticket());
        let mut state = sample();
        file.write_numbered(newer, &state).unwrap();
        let stale = State::new("mt0", Some(1), DownHooks::default());
        file.write_numbered(older, &stale).unwrap();
        assert_eq!(file.load().unwrap(), Some(state.clone()));
        let late = file.ticket();
        file.remove_now().unwrap();
        state.routes.clear();
        file.write_numbered(late, &state).unwrap();
        assert_eq!(file.load().unwrap(), None);
        assert_eq!(file.writes(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn async_saves_are_done_off_the_runtime_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "mt0");
        let runtime = std::thread::current().id();
        let state = sample();
        file.save(&state).await.unwrap();
        let clone = file.clone();
        let off_thread = file
            .blocking(move |_| Ok(std::thread::current().id() != runtime))
            .await
            .unwrap();
        assert!(off_thread);
        assert_eq!(clone.read().await.unwrap(), Some(state));
        assert_eq!(clone.writes(), 1);
        file.remove().await.unwrap();
        assert_eq!(file.read().await.unwrap(), None);
    }

    #[test]
    fn state_dir_and_file_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let file = StateFile::new(&run, "mt0");
        file.save_now(&sample()).unwrap();
        let dir_mode = fs::metadata(&run).unwrap().permissions().mode() & 0o777;
        let file_mode = fs::metadata(file.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(file_mode, 0o600);
    }

    #[test]
    fn rules_are_stored_as_readable_json() {
        let json = serde_json::to_value(&sample().rules[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "family": "v4", "kind": "not_fwmark", "fwmark": 51820, "table": 51820,
                "priority": 32765
            })
        );
    }

    #[test]
    fn corrupt_state_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "mt0");
        fs::write(file.path(), "{\"version\": 1,").unwrap();
        let err = file.load().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("mt0.json is not valid"), "{text}");
    }

    #[test]
    fn clean_state_has_nothing_to_undo() {
        let state = State::new("mt0", None, DownHooks::default());
        assert!(state.is_clean());
        assert!(!sample().is_clean());
    }

    #[test]
    fn start_time_is_parsed_after_the_command_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 100";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn current_process_is_alive_and_a_dead_pid_is_not() {
        let me = Owner::current();
        assert!(me.is_current());
        assert!(me.is_alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let dead = Owner {
            pid,
            start_time: Some(1),
            netns: me.netns,
        };
        assert!(!dead.is_alive());
        if cfg!(target_os = "linux") {
            let reused = Owner {
                pid: me.pid,
                start_time: me.start_time.map(|t| t + 1),
                ..me
            };
            assert!(
                !reused.is_alive(),
                "a reused pid must not count as the owner"
            );
        }
    }
}
