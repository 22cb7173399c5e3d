//! The `evaluators` table: the Ed25519 identities registered to sign statements about nodes
//! ([`meshtun_proto::statement`]), with the dimensions each may speak for and the group a
//! policy may name. A removed evaluator keeps its row (with `removed_ms`), so the audit and
//! its stored statements still name its key; its name is never given to another key.
//! Adding and removing are audited. The rules are written once ([`EvaluatorRules`]);
//! [`EvaluatorSql`] is the SQL each backend provides (SQLite here, PostgreSQL in
//! `pg::evaluators`).

use meshtun_proto::statement::{check_dimension, check_evaluator_name, MAX_DIMENSIONS};
use meshtun_proto::IdentityPublic;
use rusqlite::{params, OptionalExtension as _, Row, Transaction};
use serde::{Deserialize, Serialize};

use super::audit::{AuditKind, EvaluatorAddEntry, EvaluatorRemoveEntry};
use super::audit_log::append;
use super::backend::{Backend, What};
use super::codec::{corrupt, from_json, int, to_json};
use super::error::SqlContext as _;
use super::StoreError;

/// A registered evaluator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvaluatorRecord {
    /// Its name (the node-id alphabet), unique for ever.
    pub name: String,
    /// Its Ed25519 public key, which its statements and requests are checked against.
    pub key: IdentityPublic,
    /// The dimensions it may score, sorted, without repeats.
    pub dimensions: Vec<String>,
    /// The group a policy may name it by.
    pub group: Option<String>,
    /// When it was added, Unix milliseconds.
    pub added_ms: u64,
    /// When it was removed, if it was.
    pub removed_ms: Option<u64>,
}

impl EvaluatorRecord {
    /// Whether it may still sign statements.
    pub fn active(&self) -> bool {
        self.removed_ms.is_none()
    }

    /// Whether it may score `dimension`.
    pub fn may_score(&self, dimension: &str) -> bool {
        self.dimensions.iter().any(|d| d == dimension)
    }

    /// Checks the name, the dimensions (1 to [`MAX_DIMENSIONS`] valid names; sorts them and
    /// drops repeats) and the group.
    pub fn normalize(mut self) -> Result<Self, StoreError> {
        let invalid = |reason: String| StoreError::InvalidEvaluator {
            name: self.name.clone(),
            reason,
        };
        check_evaluator_name(&self.name).map_err(|e| invalid(e.to_string()))?;
        let mut dimensions = self.dimensions.clone();
        dimensions.sort();
        dimensions.dedup();
        if dimensions.is_empty() || dimensions.len() > MAX_DIMENSIONS {
            return Err(invalid(format!(
                "it must speak for 1 to {MAX_DIMENSIONS} dimensions, not {}",
                dimensions.len()
            )));
        }
        for d in &dimensions {
            check_dimension(d).map_err(|e| invalid(e.to_string()))?;
        }
        if let Some(group) = &self.group {
            check_evaluator_name(group)
                .map_err(|_| invalid(format!("group {group:?} is not a valid name")))?;
        }
        self.dimensions = dimensions;
        Ok(self)
    }
}

/// An evaluator with the time its last statement was received, for `evaluator list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluatorListing {
    /// The evaluator.
    pub evaluator: EvaluatorRecord,
    /// When its newest stored statement was received, Unix milliseconds.
    pub last_statement_ms: Option<u64>,
}

/// An `evaluators` row, in its column types.
pub(crate) struct EvaluatorRow {
    pub(crate) name: String,
    pub(crate) public_key: String,
    pub(crate) dimensions: String,
    pub(crate) group: Option<String>,
    pub(crate) added_ms: i64,
    pub(crate) removed_ms: Option<i64>,
}

impl EvaluatorRow {
    fn new(e: &EvaluatorRecord) -> Result<Self, StoreError> {
        Ok(Self {
            name: e.name.clone(),
            public_key: e.key.to_base64(),
            dimensions: to_json(&e.dimensions, || {
                format!("dimensions of evaluator {}", e.name)
            })?,
            group: e.group.clone(),
            added_ms: int(e.added_ms, || format!("added_ms of evaluator {}", e.name))?,
            removed_ms: None,
        })
    }

    pub(crate) fn decode(self) -> Result<EvaluatorRecord, StoreError> {
        let name = self.name;
        let key = IdentityPublic::from_base64(&self.public_key)
            .map_err(|e| corrupt(format!("public_key of evaluator {name}"), e))?;
        let dimensions = from_json(&self.dimensions, || {
            format!("dimensions of evaluator {name}")
        })?;
        let ms = |v: i64, what: &str| {
            u64::try_from(v).map_err(|_| corrupt(format!("{what} of evaluator {name}"), v))
        };
        Ok(EvaluatorRecord {
            key,
            dimensions,
            group: self.group,
            added_ms: ms(self.added_ms, "added_ms")?,
            removed_ms: self.removed_ms.map(|v| ms(v, "removed_ms")).transpose()?,
            name: name.clone(),
        })
    }

    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            name: row.get(0)?,
            public_key: row.get(1)?,
            dimensions: row.get(2)?,
            group: row.get(3)?,
            added_ms: row.get(4)?,
            removed_ms: row.get(5)?,
        })
    }
}

/// The columns of an evaluator, in [`EvaluatorRow`] order.
pub(crate) const COLUMNS: &str =
    "name, public_key, dimensions, evaluator_group, added_ms, removed_ms";

/// Inserts an evaluator, the same SQL on both backends.
pub(crate) const INSERT: &str = "INSERT INTO evaluators (name, public_key, dimensions, \
     evaluator_group, added_ms, removed_ms) VALUES ($1, $2, $3, $4, $5, $6)";

/// Marks an active evaluator removed, the same SQL on both backends (SQLite numbers `$N`
/// parameters in the order they appear: keep them in order).
pub(crate) const REMOVE: &str =
    "UPDATE evaluators SET removed_ms = $1 WHERE name = $2 AND removed_ms IS NULL";

/// Every evaluator with its last statement's time, the same SQL on both backends.
pub(crate) const LIST: &str = "SELECT e.name, e.public_key, e.dimensions, e.evaluator_group, \
     e.added_ms, e.removed_ms, (SELECT MAX(s.received_ms) FROM statements s \
     WHERE s.evaluator = e.name) FROM evaluators e ORDER BY e.name";

/// The `evaluators` table's queries, on either backend.
pub(crate) trait EvaluatorSql {
    /// The evaluator `name`, removed or not.
    fn evaluator_row(
        &mut self,
        name: &str,
        what: What<'_>,
    ) -> Result<Option<EvaluatorRow>, StoreError>;
    /// Inserts `row`.
    fn insert_evaluator_row(
        &mut self,
        row: &EvaluatorRow,
        what: What<'_>,
    ) -> Result<(), StoreError>;
    /// Marks the active evaluator `name` removed at `at_ms`; false if there is none.
    fn mark_evaluator_removed(
        &mut self,
        name: &str,
        at_ms: i64,
        what: What<'_>,
    ) -> Result<bool, StoreError>;
    /// Every evaluator, by name, with its newest statement's received time.
    fn evaluator_rows(
        &mut self,
        what: What<'_>,
    ) -> Result<Vec<(EvaluatorRow, Option<i64>)>, StoreError>;
}

/// Adding, removing and reading evaluators, on every backend.
pub(crate) trait EvaluatorRules: Backend {
    /// See [`Store::add_evaluator`](crate::store::Store::add_evaluator).
    fn add_evaluator(&self, evaluator: &EvaluatorRecord) -> Result<(), StoreError> {
        let evaluator = evaluator.clone().normalize()?;
        let row = EvaluatorRow::new(&evaluator)?;
        let name = &evaluator.name;
        let what = || format!("adding evaluator {name}");
        self.write_tx(what, |tx| {
            if let Some(old) = tx.evaluator_row(name, &what)? {
                return Err(StoreError::EvaluatorExists {
                    name: name.clone(),
                    removed: old.removed_ms.is_some(),
                });
            }
            tx.insert_evaluator_row(&row, &what)?;
            let entry = EvaluatorAddEntry {
                evaluator: evaluator.clone(),
            };
            append(tx, self.now_ms(), AuditKind::EvaluatorAdd, &entry)?;
            Ok(())
        })
    }

    /// See [`Store::remove_evaluator`](crate::store::Store::remove_evaluator).
    fn remove_evaluator(&self, name: &str) -> Result<bool, StoreError> {
        let what = || format!("removing evaluator {name}");
        let now = self.now_ms();
        let at = int(now, || "removal time".into())?;
        self.write_tx(what, |tx| {
            if !tx.mark_evaluator_removed(name, at, &what)? {
                return Ok(false);
            }
            let entry = EvaluatorRemoveEntry {
                name: name.to_owned(),
                removed_ms: now,
            };
            append(tx, now, AuditKind::EvaluatorRemove, &entry)?;
            Ok(true)
        })
    }

    /// The evaluator `name`, removed or not.
    fn evaluator(&self, name: &str) -> Result<Option<EvaluatorRecord>, StoreError> {
        let what = || format!("reading evaluator {name}");
        let row = self.read_tx(what, |tx| tx.evaluator_row(name, &what))?;
        row.map(EvaluatorRow::decode).transpose()
    }

    /// Every evaluator, removed ones too, by name, with its last statement's time.
    fn evaluators(&self) -> Result<Vec<EvaluatorListing>, StoreError> {
        let what = || "reading the evaluators".to_owned();
        let rows = self.read_tx(what, |tx| tx.evaluator_rows(&what))?;
        rows.into_iter()
            .map(|(row, last)| {
                Ok(EvaluatorListing {
                    evaluator: row.decode()?,
                    last_statement_ms: last.and_then(|v| u64::try_from(v).ok()),
                })
            })
            .collect()
    }
}

impl<B: Backend + ?Sized> EvaluatorRules for B {}

impl EvaluatorSql for Transaction<'_> {
    fn evaluator_row(
        &mut self,
        name: &str,
        what: What<'_>,
    ) -> Result<Option<EvaluatorRow>, StoreError> {
        self.query_row(
            &format!("SELECT {COLUMNS} FROM evaluators WHERE name = ?1"),
            [name],
            EvaluatorRow::read,
        )
        .optional()
        .ctx(what)
    }

    fn insert_evaluator_row(&mut self, r: &EvaluatorRow, what: What<'_>) -> Result<(), StoreError> {
        self.execute(
            INSERT,
            params![
                r.name,
                r.public_key,
                r.dimensions,
                r.group,
                r.added_ms,
                r.removed_ms
            ],
        )
        .ctx(what)?;
        Ok(())
    }

    fn mark_evaluator_removed(
        &mut self,
        name: &str,
        at_ms: i64,
        what: What<'_>,
    ) -> Result<bool, StoreError> {
        Ok(self.execute(REMOVE, params![at_ms, name]).ctx(what)? > 0)
    }

    fn evaluator_rows(
        &mut self,
        what: What<'_>,
    ) -> Result<Vec<(EvaluatorRow, Option<i64>)>, StoreError> {
        let mut stmt = self.prepare(LIST).ctx(what)?;
        let rows = stmt
            .query_map([], |r| Ok((EvaluatorRow::read(r)?, r.get(6)?)))
            .ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }
}

#[cfg(test)]
#[path = "evaluators_tests.rs"]
mod tests;
