//! PostgreSQL: `pg_dump --format=custom` (one repeatable-read snapshot, taken while the
//! controller writes) and `pg_restore`, reached with the configured URL's settings. The
//! password goes through a `PGPASSFILE` written with mode 0600 in a new private directory,
//! never on the command line nor in the environment; TLS is required and verified as the
//! controller's own connections require it.

use std::io::{BufRead, Read as _};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use meshtun_proto::private_file::{self, Replace};
use postgres::config::{Host, SslMode};
use rand_core::{OsRng, RngCore as _};

use super::super::{file_err, CommandError};
use super::output::Output;
use crate::store::pg::connect::{self, Prepared, SYSTEM_ROOTS};
use crate::store::pg::PgTarget;
use crate::store::StoreError;

/// The most of a program's standard error kept for a message.
const MAX_STDERR: usize = 4096;

/// A private directory holding the password file, removed on drop.
struct PassDir(PathBuf);

impl Drop for PassDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `pg_dump`'s archive of `target`, appended to `out`.
pub(super) fn dump(target: &PgTarget, out: &mut Output) -> Result<(), CommandError> {
    let prepared = connect::prepare(target).map_err(StoreError::from)?;
    let (mut cmd, _pass) = command("pg_dump", &prepared)?;
    let stdout = out
        .file()
        .try_clone()
        .map_err(|e| file_err(out.temp_path(), e))?;
    cmd.args(["--format=custom", "--no-password"])
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped());
    let output = cmd.output().map_err(|e| program_err("pg_dump", e))?;
    if !output.status.success() {
        return Err(program_err(
            "pg_dump",
            format!(
                "{} on {}: {}",
                output.status,
                prepared.location,
                tail(&output.stderr)
            ),
        ));
    }
    Ok(())
}

/// Restores the archive `reader` holds into `target`, which must hold no table unless
/// `force` (then the archive's objects are dropped first).
pub(super) fn restore(
    target: &PgTarget,
    reader: &mut impl BufRead,
    force: bool,
) -> Result<(), CommandError> {
    let prepared = connect::prepare(target).map_err(StoreError::from)?;
    let tables = count_tables(&prepared)?;
    if tables > 0 && !force {
        return Err(CommandError::Argument(format!(
            "{} holds {tables} tables; restore only into a new, empty database, or give \
             --force (with every controller stopped) to replace what the backup holds",
            prepared.location
        )));
    }
    let (mut cmd, _pass) = command("pg_restore", &prepared)?;
    let dbname = prepared
        .config
        .get_dbname()
        .unwrap_or("postgres")
        .to_owned();
    cmd.args([
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        "--no-password",
    ])
    .arg(format!("--dbname={dbname}"));
    if force {
        cmd.args(["--clean", "--if-exists"]);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| program_err("pg_restore", e))?;
    let mut stderr = child.stderr.take();
    let errors = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(pipe) = stderr.as_mut() {
            let _ = pipe.read_to_end(&mut text);
        }
        text
    });
    let fed = child
        .stdin
        .take()
        .map(|mut stdin| std::io::copy(reader, &mut stdin));
    let status = child.wait().map_err(|e| program_err("pg_restore", e))?;
    let stderr = errors.join().unwrap_or_default();
    if !status.success() {
        return Err(program_err(
            "pg_restore",
            format!("{status} on {}: {}", prepared.location, tail(&stderr)),
        ));
    }
    if let Some(Err(e)) = fed {
        return Err(program_err(
            "pg_restore",
            format!("feeding the archive: {e}"),
        ));
    }
    Ok(())
}

/// Tables in the database outside PostgreSQL's own schemas.
fn count_tables(prepared: &Prepared) -> Result<i64, CommandError> {
    let fail = |e: postgres::Error| {
        CommandError::Argument(format!("cannot inspect {}: {e}", prepared.location))
    };
    let mut client = prepared
        .config
        .connect(prepared.tls.clone())
        .map_err(fail)?;
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
            &[],
        )
        .map_err(fail)?;
    Ok(row.get(0))
}

/// `program` set to reach the prepared database: the connection in `PG*` variables of an
/// otherwise empty environment, the password in a private `PGPASSFILE` (kept while the
/// returned directory lives).
fn command(program: &str, prepared: &Prepared) -> Result<(Command, Option<PassDir>), CommandError> {
    let config = &prepared.config;
    let mut cmd = Command::new(find_program(program)?);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .env("PGCONNECT_TIMEOUT", "5")
        .env("PGAPPNAME", "meshtun-controller-backup");
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if !hosts.is_empty() {
        cmd.env("PGHOST", hosts.join(","));
    }
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    if !ports.is_empty() {
        cmd.env("PGPORT", ports.join(","));
    }
    if let Some(user) = config.get_user() {
        cmd.env("PGUSER", user);
    }
    if let Some(db) = config.get_dbname() {
        cmd.env("PGDATABASE", db);
    }
    match config.get_ssl_mode() {
        SslMode::Disable => drop(cmd.env("PGSSLMODE", "disable")),
        SslMode::Prefer => drop(cmd.env("PGSSLMODE", "prefer")),
        // The controller's connections check the certificate and the name: so does libpq.
        _ => {
            let roots = prepared
                .rootcert
                .clone()
                .unwrap_or_else(|| PathBuf::from(SYSTEM_ROOTS));
            cmd.env("PGSSLMODE", "verify-full")
                .env("PGSSLROOTCERT", roots);
        }
    }
    let pass = match config.get_password() {
        Some(password) => Some(pass_file(&mut cmd, password)?),
        None => None,
    };
    Ok((cmd, pass))
}

/// Writes `password` to a `PGPASSFILE` (mode 0600) in a new directory (mode 0700) and
/// points `cmd` at it.
fn pass_file(cmd: &mut Command, password: &[u8]) -> Result<PassDir, CommandError> {
    let mut random = [0u8; 8];
    OsRng.fill_bytes(&mut random);
    let dir = std::env::temp_dir().join(format!(
        "meshtun-backup-{}-{}",
        std::process::id(),
        hex::encode(random)
    ));
    // Not recursive: a directory planted under this name is refused.
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| file_err(&dir, e))?;
    let guard = PassDir(dir.clone());
    let text = String::from_utf8_lossy(password);
    let escaped = zeroize::Zeroizing::new(text.replace('\\', "\\\\").replace(':', "\\:"));
    let line = zeroize::Zeroizing::new(format!("*:*:*:*:{}\n", escaped.as_str()));
    let file = dir.join("pgpass");
    private_file::write(&file, line.as_bytes(), Replace::Never).map_err(|e| file_err(&file, e))?;
    cmd.env("PGPASSFILE", &file);
    Ok(guard)
}

/// `program` from `$MESHTUN_PG_BIN`, the `PATH`, or the newest `/usr/lib/postgresql/*/bin`.
fn find_program(program: &str) -> Result<PathBuf, CommandError> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("MESHTUN_PG_BIN")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    dirs.extend(versions.into_iter().rev().map(|(_, bin)| bin));
    dirs.iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            program_err(
                program,
                "not found in $MESHTUN_PG_BIN, PATH or /usr/lib/postgresql/*/bin \
                 (Debian: apt install postgresql-client)",
            )
        })
}

fn program_err(program: &str, reason: impl std::fmt::Display) -> CommandError {
    CommandError::Program {
        program: program.to_owned(),
        reason: reason.to_string(),
    }
}

/// The end of a program's standard error, as text.
fn tail(stderr: &[u8]) -> String {
    let start = stderr.len().saturating_sub(MAX_STDERR);
    String::from_utf8_lossy(&stderr[start..]).trim().to_owned()
}
