//! `meshtun-controller backup FILE` and `restore FILE`: a consistent snapshot of the
//! database taken while the controller runs, and its restoration into a stopped
//! controller's new database, checked with `audit verify` before it is declared good.
//!
//! A backup file is a short text header, then the database itself:
//!
//! ```text
//! meshtun-controller backup v1
//! backend: sqlite                       (or postgres: the rest is `pg_dump --format=custom`)
//! created_ms: 1765000000000
//! controller_key: <base64 Ed25519 public key of the controller that wrote it>
//! secrets: <what in it is secret, and how to keep it>
//!                                       (an empty line ends the header)
//! ```
//!
//! The header says the file holds secrets where anyone looks first (`head FILE`); the file
//! is created with mode 0600, never over an existing one, and only in a directory no less
//! privileged user can change.

mod output;
mod pg;
mod sqlite;

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use meshtun_proto::IdentityPublic;

use super::{audit_verify_at, file_err, load_keys, CommandError, VerifyReport};
use crate::clock::Clock;
use crate::config::ControllerConfig;
use crate::store::Database;

/// The first line of every backup file.
pub const MAGIC: &str = "meshtun-controller backup v1";

/// What the header says about the secrets the file holds.
pub const SECRETS_NOTICE: &str = "SECRET: this file holds the controller's epoch secrets \
     (every preshared key of the mesh derives from them), the nodes' keys, addresses and \
     endpoints, invite token hashes and every signed benchmark and statement; keep it as \
     private as controller.key (mode 0600, owner only, never on shared storage)";

/// The longest header read.
const MAX_HEADER: u64 = 4096;

/// Which backend's database a backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite database file.
    Sqlite,
    /// A `pg_dump --format=custom` archive.
    Postgres,
}

impl Backend {
    fn of(database: &Database) -> Self {
        match database {
            Database::Sqlite(_) => Self::Sqlite,
            Database::Postgres(_) => Self::Postgres,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }
}

/// A backup file's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The backend of the database that follows.
    pub backend: Backend,
    /// When the backup began, Unix milliseconds.
    pub created_ms: u64,
    /// The signing key of the controller that wrote it.
    pub controller_key: IdentityPublic,
}

impl Header {
    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// The header as written, its closing empty line included.
    pub fn encode(&self) -> String {
        format!(
            "{MAGIC}\nbackend: {}\ncreated_ms: {}\ncontroller_key: {}\nsecrets: {SECRETS_NOTICE}\n\n",
            self.backend.name(),
            self.created_ms,
            self.controller_key.to_base64()
        )
    }

    /// Reads a header from `reader`, leaving it at the first byte of the database.
    pub fn read(reader: &mut impl BufRead) -> Result<Self, String> {
        let mut limited = reader.take(MAX_HEADER);
        let mut line = String::new();
        let mut fields = Vec::new();
        loop {
            line.clear();
            let n = limited
                .read_line(&mut line)
                .map_err(|e| format!("unreadable header: {e}"))?;
            if fields.is_empty() && line.trim_end_matches('\n') != MAGIC {
                return Err(format!(
                    "not a meshtun-controller backup (no {MAGIC:?} line)"
                ));
            }
            if n == 0 || !line.ends_with('\n') {
                return Err("the header does not end (no empty line in its first 4 KiB)".into());
            }
            match line.trim_end_matches('\n') {
                "" => break,
                text => fields.push(text.to_owned()),
            }
        }
        Self::parse(&fields)
    }

    fn parse(lines: &[String]) -> Result<Self, String> {
        if lines.first().map(String::as_str) != Some(MAGIC) {
            return Err(format!(
                "not a meshtun-controller backup (no {MAGIC:?} line)"
            ));
        }
        let field = |key: &str| {
            lines[1..]
                .iter()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
                .ok_or_else(|| format!("the header has no {key}"))
        };
        let backend = match field("backend")? {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => return Err(format!("unknown backend {other:?}")),
        };
        let created_ms = field("created_ms")?
            .parse()
            .map_err(|e| format!("created_ms: {e}"))?;
        let controller_key = IdentityPublic::from_base64(field("controller_key")?)
            .map_err(|e| format!("controller_key: {e}"))?;
        Ok(Self {
            backend,
            created_ms,
            controller_key,
        })
    }
}

/// What `backup` wrote.
#[derive(Debug)]
pub struct BackupReport {
    /// The header written.
    pub header: Header,
    /// The file's size, bytes.
    pub bytes: u64,
}

/// `backup FILE`: a consistent snapshot of the configured database, taken while the
/// controller runs, into the new file `file` (mode 0600). Refuses an existing file (a link
/// too) and a directory that a user other than root and this one could change.
pub fn backup(config: &ControllerConfig, file: &Path) -> Result<BackupReport, CommandError> {
    let keys = load_keys(config)?;
    let header = Header {
        backend: Backend::of(&config.database),
        created_ms: Clock::system().now_ms(),
        controller_key: keys.signing().public(),
    };
    let mut out = output::Output::create(file)?;
    out.write_all(header.encode().as_bytes())?;
    match &config.database {
        Database::Sqlite(db) => sqlite::dump(db, &mut out)?,
        Database::Postgres(target) => pg::dump(target, &mut out)?,
    }
    let bytes = out.finish()?;
    Ok(BackupReport { header, bytes })
}

/// `restore FILE [--force]`: restores a backup into the configured database, which must be
/// new (a missing or empty SQLite file, a PostgreSQL database without tables) unless
/// `force`, then verifies its audit chain with the configured key. The controller must be
/// stopped.
pub fn restore(
    config: &ControllerConfig,
    file: &Path,
    force: bool,
) -> Result<(Header, VerifyReport), CommandError> {
    let mut reader = BufReader::new(File::open(file).map_err(|e| file_err(file, e))?);
    let header = Header::read(&mut reader).map_err(|e| file_err(file, e))?;
    let keys = load_keys(config)?;
    if !keys.answers_to().contains(&header.controller_key) {
        return Err(file_err(
            file,
            format!(
                "written by the controller with key {}, which is not this controller's key \
                 nor one of its previous_keys: nodes would refuse its bundles",
                header.controller_key
            ),
        ));
    }
    let configured = Backend::of(&config.database);
    if header.backend != configured {
        return Err(file_err(
            file,
            format!(
                "a {} backup cannot be restored into the configured {} database (restore it \
                 into SQLite, then `meshtun-controller migrate`)",
                header.backend.name(),
                configured.name()
            ),
        ));
    }
    let report = match &config.database {
        Database::Sqlite(db) => sqlite::restore(db, &mut reader, force, |temp| {
            audit_verify_at(config, &Database::Sqlite(temp.to_owned()))
        })?,
        Database::Postgres(target) => {
            pg::restore(target, &mut reader, force)?;
            audit_verify_at(config, &config.database)?
        }
    };
    Ok((header, report))
}

#[cfg(test)]
mod tests;
