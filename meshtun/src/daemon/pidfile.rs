//! The pid file that lets `meshtun down` find the daemon serving an interface.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where the pid file for `ifname` lives.
pub fn path(dir: &Path, ifname: &str) -> PathBuf {
    dir.join(format!("{ifname}.pid"))
}

/// The pid recorded for `ifname`, if any, and only from a regular file that this user
/// wrote: root must not signal a process named in a file that the daemon's user (who owns
/// the runtime directory under systemd) could have planted.
pub fn read(dir: &Path, ifname: &str) -> Option<i32> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let path = path(dir, ifname);
    // Opened without following a link, then checked on the open file: no swap in between.
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.uid() != nix::unistd::geteuid().as_raw() {
        tracing::info!(
            file = %path.display(),
            uid = meta.uid(),
            "ignoring a pid file that is not a regular file written by this user"
        );
        return None;
    }
    let mut text = String::new();
    file.take(32).read_to_string(&mut text).ok()?;
    // Never 0 or negative: kill(2) would take those for a process group or every process.
    text.trim().parse().ok().filter(|pid: &i32| *pid > 0)
}

/// A pid file owned by this process, removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Records this process as the daemon for `ifname`.
    pub fn create(dir: &Path, ifname: &str) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = path(dir, ifname);
        let tmp = dir.join(format!(".{ifname}.pid.tmp"));
        // Always a new file, never one reached through a link planted in the directory.
        match fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        writeln!(file, "{}", std::process::id())?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(Self { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            == Some(std::process::id());
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_is_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = PidFile::create(dir.path(), "mt0").unwrap();
        assert_eq!(read(dir.path(), "mt0"), Some(std::process::id() as i32));
        drop(file);
        assert_eq!(read(dir.path(), "mt0"), None);
    }

    #[test]
    fn a_foreign_pid_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = PidFile::create(dir.path(), "mt0").unwrap();
        fs::write(path(dir.path(), "mt0"), "1\n").unwrap();
        drop(file);
        assert_eq!(read(dir.path(), "mt0"), Some(1));
    }

    #[test]
    fn a_planted_temporary_file_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "root's").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".mt0.pid.tmp")).unwrap();
        let file = PidFile::create(dir.path(), "mt0").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "root's");
        assert_eq!(read(dir.path(), "mt0"), Some(std::process::id() as i32));
        drop(file);
    }

    #[test]
    fn a_pid_that_kill_would_take_for_a_group_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for planted in ["-1\n", "0\n", "-4242\n"] {
            fs::write(path(dir.path(), "mt0"), planted).unwrap();
            assert_eq!(read(dir.path(), "mt0"), None, "{planted:?}");
        }
    }
}
