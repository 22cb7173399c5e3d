//! The backup file being written: a temporary file beside it (mode 0600, `O_EXCL`, never
//! through a link), linked to its name only once complete and synced, so that the name
//! never shows a partial backup and never replaces an existing file.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use meshtun_proto::private_file::{self, Changeable, TEMP_ATTEMPTS};

use super::super::{file_err, CommandError};

/// A backup in progress; dropped before [`Output::finish`], it leaves nothing behind.
pub(super) struct Output {
    path: PathBuf,
    temp: PathBuf,
    file: File,
    done: bool,
}

impl Output {
    /// Starts writing `path`, which must not exist, in a directory that only root and this
    /// user can change.
    pub(super) fn create(path: &Path) -> Result<Self, CommandError> {
        if path.symlink_metadata().is_ok() {
            return Err(file_err(
                path,
                "exists; a backup is never written over a file",
            ));
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        check_private_dir(dir)?;
        let name = path
            .file_name()
            .ok_or_else(|| file_err(path, "names no file"))?;
        let mut last = None;
        for n in 0..TEMP_ATTEMPTS {
            let temp = dir.join(private_file::temp_name(name, n));
            match create_new(&temp) {
                Ok(file) => {
                    return Ok(Self {
                        path: path.to_owned(),
                        temp,
                        file,
                        done: false,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(file_err(&temp, e)),
            }
        }
        Err(file_err(
            dir,
            last.map_or("no temporary name was free".to_owned(), |e| e.to_string()),
        ))
    }

    /// The file being written (positioned after what was written so far).
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Where it is written until [`Output::finish`].
    pub(super) fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Appends `bytes`.
    pub(super) fn write_all(&mut self, bytes: &[u8]) -> Result<(), CommandError> {
        self.file
            .write_all(bytes)
            .map_err(|e| file_err(&self.temp, e))
    }

    /// Syncs the file and gives it its name (failing if the name was taken meanwhile);
    /// returns its size.
    pub(super) fn finish(mut self) -> Result<u64, CommandError> {
        self.file.sync_all().map_err(|e| file_err(&self.temp, e))?;
        let bytes = self
            .file
            .metadata()
            .map_err(|e| file_err(&self.temp, e))?
            .len();
        std::fs::hard_link(&self.temp, &self.path).map_err(|e| file_err(&self.path, e))?;
        self.done = true;
        let _ = std::fs::remove_file(&self.temp);
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(handle) = File::open(dir) {
                let _ = handle.sync_all();
            }
        }
        Ok(bytes)
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Creates `path` with mode 0600; fails if anything (a link too) is there.
pub(super) fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// Refuses `dir` if another user than root and this one owns it or may write in it (even
/// with the sticky bit: SQLite's journal beside the copy is not created exclusively), or if
/// a directory above it could be changed by such a user (owned by one, or writable by group
/// or others without the sticky bit): that user could swap the backup, or read it through a
/// file or link planted in time.
pub(super) fn check_private_dir(dir: &Path) -> Result<(), CommandError> {
    let absolute = std::fs::canonicalize(dir).map_err(|e| file_err(dir, e))?;
    let me = nix::unistd::geteuid().as_raw();
    for (i, entry) in absolute.ancestors().enumerate() {
        let meta = std::fs::metadata(entry).map_err(|e| file_err(entry, e))?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
        let shared = i == 0 && mode & 0o022 != 0;
        let changeable = private_file::changeable_by_others(&meta, me)
            .or(shared.then_some(Changeable::Writable(mode)));
        let why = match changeable {
            None => continue,
            Some(Changeable::Owner(uid)) => format!("owned by uid {uid}, who could change it"),
            Some(Changeable::Writable(mode)) => {
                format!("mode {mode:04o}: group or others may write in it")
            }
        };
        return Err(file_err(
            entry,
            format!("{why}; write backups in a directory only root and this user can change"),
        ));
    }
    Ok(())
}
