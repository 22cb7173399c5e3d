//! Moving a running mesh's controller from SQLite to PostgreSQL, as an operator does it:
//! PostgreSQL started beside a [`super::Backend::Sqlite`] mesh, `meshtun-controller migrate`
//! and `audit verify` run as commands, and the controller's configuration pointed at the
//! new database before it is started again at the same address.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::ha::{HaDatabase, DATABASE_HOST};
use super::Mesh;
use crate::run::{try_run, Output};

/// How long `migrate` or `audit verify` may take (the databases are small).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

impl Mesh {
    /// Starts PostgreSQL beside a mesh whose controller runs on SQLite, in a namespace of its
    /// own on the bridge at [`DATABASE_HOST`], with an empty database
    /// ([`HaDatabase::start`]).
    pub fn start_database(&self) -> HaDatabase {
        HaDatabase::start(self.attach(DATABASE_HOST), self.dir())
    }

    /// Points instance `i` at another database from its next start on: puts `lines`
    /// (top-level keys such as [`HaDatabase::config_lines_for`]) at the head of its
    /// `controller.toml`. Its key, admin token and address stay.
    pub fn set_database(&self, i: usize, lines: &str) {
        let file = self.instance(i).home.config_file();
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        assert!(
            !text.contains("\ndatabase ="),
            "{} already names a database:\n{text}",
            file.display()
        );
        std::fs::write(file, format!("{lines}{text}"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
    }

    /// `meshtun-controller migrate --from sqlite://DB --to URL --to-password-file FILE` with
    /// instance `i`'s configuration, in its namespace; what it did, whether it succeeded or
    /// not (fails the test only if it cannot be run or does not end in time).
    pub fn migrate(&self, i: usize, from: &Path, to: &str, password_file: &Path) -> Output {
        let from = format!("sqlite://{}", from.display());
        let password_file = password_file.to_string_lossy();
        let args = [
            "migrate",
            "--from",
            from.as_str(),
            "--to",
            to,
            "--to-password-file",
            &password_file,
        ];
        try_run(&mut self.controller_command(i, &args), COMMAND_TIMEOUT)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// `meshtun-controller audit verify [--database URL --password-file FILE]` with instance
    /// `i`'s configuration, in its namespace; fails the test if it does not succeed.
    pub fn audit_verify(&self, i: usize, database: Option<(&str, &Path)>) -> Verified {
        let mut args = vec!["audit".to_owned(), "verify".to_owned()];
        if let Some((url, password_file)) = database {
            args.extend(["--database".to_owned(), url.to_owned()]);
            args.extend([
                "--password-file".to_owned(),
                password_file.to_string_lossy().into_owned(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = try_run(&mut self.controller_command(i, &args), COMMAND_TIMEOUT)
            .unwrap_or_else(|why| panic!("{why}"));
        assert!(
            out.success(),
            "`{}` failed ({}): {}{}",
            out.command,
            out.status,
            out.stdout,
            out.stderr
        );
        Verified::parse(&out.stdout)
            .unwrap_or_else(|| panic!("`{}` printed {:?}", out.command, out.stdout))
    }
}

/// What a successful `migrate` printed: the rows copied per table and the audit chain
/// verified on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Rows copied, by table.
    pub rows: BTreeMap<String, u64>,
    /// Audit entries verified on the target.
    pub entries: u64,
    /// The hash of the target's last audit entry.
    pub head: String,
}

impl Migrated {
    /// Parses `TABLE: N rows` lines and the closing `… audit log verified there: N entries,
    /// head H` line; `None` if either is missing.
    pub fn parse(out: &str) -> Option<Self> {
        let mut rows = BTreeMap::new();
        let mut chain = None;
        for line in out.lines() {
            if let Some((table, n)) = line.strip_suffix(" rows").and_then(|l| l.split_once(": ")) {
                rows.insert(table.to_owned(), n.parse().ok()?);
            } else if let Some((_, verified)) = line.split_once("audit log verified there: ") {
                chain = Some(entries_and_head(verified)?);
            }
        }
        let (entries, head) = chain?;
        (!rows.is_empty()).then_some(Self {
            rows,
            entries,
            head,
        })
    }

    /// The rows copied of `table` (0 if not reported).
    pub fn rows_of(&self, table: &str) -> u64 {
        self.rows.get(table).copied().unwrap_or(0)
    }
}

/// What a successful `audit verify` printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries in the chain.
    pub entries: u64,
    /// The hash of the last entry.
    pub head: String,
    /// Decisions recomputed from their recorded inputs.
    pub decisions_recomputed: u64,
}

impl Verified {
    /// Parses `audit log verified: N entries…, K benchmark signatures checked, D decisions
    /// recomputed, head H`.
    pub fn parse(out: &str) -> Option<Self> {
        let rest = out.trim().strip_prefix("audit log verified: ")?;
        let (entries, head) = entries_and_head(rest)?;
        let decisions = rest
            .split(", ")
            .find_map(|part| part.strip_suffix(" decisions recomputed"))?
            .parse()
            .ok()?;
        Some(Self {
            entries,
            head,
            decisions_recomputed: decisions,
        })
    }
}

/// `N entries…, head H` → (N, H).
fn entries_and_head(text: &str) -> Option<(u64, String)> {
    let (count, _) = text.split_once(" entries")?;
    let (_, head) = text.rsplit_once(", head ")?;
    Some((count.parse().ok()?, head.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrate_output_is_parsed() {
        let out = "nodes: 3 rows\nnode_addresses: 3 rows\naudit: 41 rows\n\
                   copied sqlite:///x/controller.db into postgres://m@h/db; audit log verified \
                   there: 41 entries, head abc123\n";
        let m = Migrated::parse(out).unwrap();
        assert_eq!(m.rows_of("nodes"), 3);
        assert_eq!(m.rows_of("audit"), 41);
        assert_eq!(m.rows_of("epochs"), 0);
        assert_eq!((m.entries, m.head.as_str()), (41, "abc123"));
        assert_eq!(Migrated::parse("nodes: 3 rows\n"), None);
        assert_eq!(Migrated::parse("nodes: x rows\n"), None);
    }

    #[test]
    fn audit_verify_output_is_parsed() {
        let out = "audit log verified: 41 entries (entries up to 3 pruned behind a signed \
                   checkpoint), 12 benchmark signatures checked, 9 decisions recomputed, head \
                   abc123\n";
        let v = Verified::parse(out).unwrap();
        assert_eq!(
            (v.entries, v.head.as_str(), v.decisions_recomputed),
            (41, "abc123", 9)
        );
        assert_eq!(Verified::parse("audit log does not verify"), None);
    }
}
