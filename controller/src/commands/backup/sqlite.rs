//! SQLite: the online backup API copies the live database (its WAL included) in one step,
//! so the copy is one consistent snapshot while the controller goes on writing; restoring
//! writes the copy beside the database, verifies it, and only then gives it the
//! database's name.

use std::fs::File;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshtun_proto::private_file;
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::super::{file_err, CommandError, VerifyReport};
use super::output::{create_new, Output};

/// The first bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Removes a file and its `-wal`, `-shm` and `-journal` companions when dropped, unless
/// kept.
struct Scratch {
    path: PathBuf,
    keep: bool,
}

impl Scratch {
    fn companions(path: &Path) -> [PathBuf; 4] {
        let with = |suffix: &str| {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        [
            path.to_owned(),
            with("-wal"),
            with("-shm"),
            with("-journal"),
        ]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            for p in Self::companions(&self.path) {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Copies the database at `db` into `out`, after the header.
pub(super) fn dump(db: &Path, out: &mut Output) -> Result<(), CommandError> {
    if !db.is_file() {
        return Err(file_err(db, "no database here (is `database` right?)"));
    }
    let sql = |e: rusqlite::Error| file_err(db, e);
    let source = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    source.busy_timeout(Duration::from_secs(10)).map_err(sql)?;
    // The copy goes to a scratch database beside the backup, then into it.
    let mut name = out.temp_path().as_os_str().to_owned();
    name.push(".db");
    let scratch = Scratch {
        path: PathBuf::from(name),
        keep: false,
    };
    drop(create_new(&scratch.path).map_err(|e| file_err(&scratch.path, e))?);
    {
        let mut copy = Connection::open(&scratch.path).map_err(|e| file_err(&scratch.path, e))?;
        copy_all(&source, &mut copy).map_err(sql)?;
        // Back to a single file: no WAL to carry beside it.
        copy.pragma_update(None, "journal_mode", "DELETE")
            .map_err(|e| file_err(&scratch.path, e))?;
    }
    let mut copied = File::open(&scratch.path).map_err(|e| file_err(&scratch.path, e))?;
    std::io::copy(&mut copied, &mut out.file()).map_err(|e| file_err(out.temp_path(), e))?;
    Ok(())
}

/// Copies every page of `source` into `copy` in one step: the source is read in one
/// transaction, so the copy is one snapshot (a step that finds the source locked is tried
/// again, for up to a minute).
fn copy_all(source: &Connection, copy: &mut Connection) -> rusqlite::Result<()> {
    let backup = Backup::new(source, copy)?;
    for _ in 0..600 {
        match backup.step(-1)? {
            StepResult::Done => return Ok(()),
            StepResult::More | StepResult::Busy | StepResult::Locked => {
                std::thread::sleep(Duration::from_millis(100));
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Err(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
        Some("the database stayed locked for a minute".into()),
    ))
}

/// Restores the database that `reader` holds into `db`, which must be missing or empty
/// unless `force`; `verify` checks the restored copy before it takes the database's name.
pub(super) fn restore(
    db: &Path,
    reader: &mut impl BufRead,
    force: bool,
    verify: impl FnOnce(&Path) -> Result<VerifyReport, CommandError>,
) -> Result<VerifyReport, CommandError> {
    let existing = std::fs::symlink_metadata(db).ok();
    if let Some(meta) = &existing {
        if !meta.is_file() {
            return Err(file_err(db, "exists and is not a regular file"));
        }
        if meta.len() > 0 && !force {
            return Err(file_err(
                db,
                "holds a database; restore only into a new one, or give --force (with the \
                 controller stopped) to replace it",
            ));
        }
    }
    let dir = match db.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    private_file::create_dir(dir).map_err(|e| file_err(dir, e))?;
    let name = db
        .file_name()
        .ok_or_else(|| file_err(db, "names no file"))?;
    let mut scratch = Scratch {
        path: dir.join(private_file::temp_name(name, 0)),
        keep: false,
    };
    let mut file = create_new(&scratch.path).map_err(|e| file_err(&scratch.path, e))?;
    let mut magic = [0u8; 16];
    reader
        .read_exact(&mut magic)
        .map_err(|e| file_err(db, format!("the backup holds no database: {e}")))?;
    if &magic != SQLITE_MAGIC {
        return Err(file_err(db, "the backup does not hold an SQLite database"));
    }
    std::io::Write::write_all(&mut file, &magic).map_err(|e| file_err(&scratch.path, e))?;
    std::io::copy(reader, &mut file).map_err(|e| file_err(&scratch.path, e))?;
    file.sync_all().map_err(|e| file_err(&scratch.path, e))?;
    drop(file);
    let report = verify(&scratch.path)?;
    // The old database's WAL must not be replayed over the restored one.
    for companion in &Scratch::companions(db)[1..] {
        match std::fs::remove_file(companion) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(file_err(companion, e)),
        }
    }
    std::fs::rename(&scratch.path, db).map_err(|e| file_err(db, e))?;
    scratch.keep = true;
    Ok(report)
}
