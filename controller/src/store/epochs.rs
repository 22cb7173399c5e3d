//! The `epochs` and `decisions` tables. The rules are written once ([`insert_epoch_in`],
//! [`EpochRules`]); [`EpochSql`] is the SQL each backend provides (SQLite here, PostgreSQL
//! in `pg::epochs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use meshtun_proto::{EpochId, EpochSecret};
use rusqlite::{params, OptionalExtension as _, Row, Transaction};
use zeroize::Zeroizing;

use super::audit::{AuditKind, DecisionEntry, RotationEntry};
use super::audit_log::{append, AuditSql};
use super::backend::{Backend, What};
use super::codec::{corrupt, from_json, int, to_json};
use super::error::SqlContext as _;
use super::retention::RetentionSql;
use super::{SqliteStore, StoreError};
use crate::model::{Decision, EpochRecord, History, NodeInput, Policy};

pub(super) const EPOCH_COLUMNS: &str = "id, secret, activation_ms, not_after_ms, created_ms, cause";

pub(super) struct EpochRow {
    pub(super) id: u64,
    pub(super) secret: String,
    pub(super) activation_ms: u64,
    pub(super) not_after_ms: u64,
    pub(super) created_ms: u64,
    pub(super) cause: String,
}

impl EpochRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            secret: row.get(1)?,
            activation_ms: row.get(2)?,
            not_after_ms: row.get(3)?,
            created_ms: row.get(4)?,
            cause: row.get(5)?,
        })
    }

    pub(super) fn decode(self) -> Result<EpochRecord, StoreError> {
        if self.secret.is_empty() {
            return Err(StoreError::SecretErased(self.id));
        }
        // The key error names only the length or the alphabet, never the secret.
        let secret = EpochSecret::from_hex(&self.secret)
            .map_err(|e| corrupt(format!("epoch {} secret", self.id), e))?;
        Ok(EpochRecord {
            id: self.id,
            secret,
            activation_ms: self.activation_ms,
            not_after_ms: self.not_after_ms,
            created_ms: self.created_ms,
            cause: self.cause,
        })
    }
}

fn decision_from_row(epoch: EpochId, row: &Row<'_>) -> Result<Decision, StoreError> {
    let what = || format!("reading the decisions of epoch {epoch}");
    let node_id: String = row.get(0).ctx(what)?;
    let evidence: String = row.get(6).ctx(what)?;
    Ok(Decision {
        evidence: from_json(&evidence, || {
            format!("epoch {epoch} decision for {node_id} evidence")
        })?,
        allowed: row.get(1).ctx(what)?,
        reason: row.get(2).ctx(what)?,
        passing: row.get(3).ctx(what)?,
        history: History {
            allowed: row.get(4).ctx(what)?,
            passing_streak: row.get(5).ctx(what)?,
            benchmarked: row.get(7).ctx(what)?,
        },
        node_id,
    })
}

/// The `rotation` audit entry of `epoch` (without its secret): who is allowed and denied,
/// each list sorted. Both backends write it.
pub(super) fn rotation_entry(epoch: &EpochRecord, decisions: &[Decision]) -> RotationEntry {
    let (mut allowed, mut denied) = (Vec::new(), Vec::new());
    for d in decisions {
        let list = if d.allowed { &mut allowed } else { &mut denied };
        list.push(d.node_id.clone());
    }
    allowed.sort();
    denied.sort();
    RotationEntry {
        epoch: epoch.id,
        activation_ms: epoch.activation_ms,
        not_after_ms: epoch.not_after_ms,
        created_ms: epoch.created_ms,
        cause: epoch.cause.clone(),
        allowed,
        denied,
    }
}

/// The `decision` audit entries of epoch `id`: each decision with the input it was made
/// from, the policy and the clock it was evaluated at, so it can be recomputed.
pub(super) fn decision_entries<'a>(
    id: EpochId,
    pairs: &'a [(&'a Decision, &'a NodeInput)],
    policy: &'a Policy,
    decided_ms: u64,
) -> impl Iterator<Item = DecisionEntry> + 'a {
    pairs.iter().map(move |(decision, input)| DecisionEntry {
        epoch: id,
        decided_ms,
        decision: (*decision).clone(),
        input: (*input).clone(),
        policy: policy.clone(),
    })
}

/// Pairs every decision with the input it was made from, refusing a decision without an
/// input, an input without a decision, and a node decided twice.
pub(super) fn pair_inputs<'a>(
    epoch: EpochId,
    decisions: &'a [Decision],
    inputs: &'a [NodeInput],
) -> Result<Vec<(&'a Decision, &'a NodeInput)>, StoreError> {
    let err = |reason: String| StoreError::Decisions { epoch, reason };
    let mut by_node: BTreeMap<&str, &NodeInput> = BTreeMap::new();
    for input in inputs {
        if by_node.insert(&input.node_id, input).is_some() {
            return Err(err(format!("two inputs for node {}", input.node_id)));
        }
    }
    let mut decided = BTreeSet::new();
    let mut pairs = Vec::with_capacity(decisions.len());
    for d in decisions {
        if !decided.insert(d.node_id.as_str()) {
            return Err(err(format!("two decisions for node {}", d.node_id)));
        }
        let input = by_node
            .remove(d.node_id.as_str())
            .ok_or_else(|| err(format!("the decision for node {} has no input", d.node_id)))?;
        pairs.push((d, input));
    }
    if let Some(node) = by_node.keys().next() {
        return Err(err(format!("the input for node {node} has no decision")));
    }
    Ok(pairs)
}

/// A new `epochs` row, in its column types.
pub(super) struct NewEpoch<'a> {
    pub(super) id: i64,
    pub(super) secret: &'a str,
    pub(super) activation_ms: i64,
    pub(super) not_after_ms: i64,
    pub(super) created_ms: i64,
    pub(super) cause: &'a str,
}

/// An epoch without its secret, for displays: readable whether or not the secret is
/// erased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochSummary {
    /// Its id.
    pub id: EpochId,
    /// Start, Unix milliseconds.
    pub activation_ms: u64,
    /// End, Unix milliseconds.
    pub not_after_ms: u64,
    /// When it was decided, Unix milliseconds.
    pub created_ms: u64,
    /// Why it was created.
    pub cause: String,
}

impl From<EpochRow> for EpochSummary {
    fn from(row: EpochRow) -> Self {
        // The secret (hex, or empty once erased) is dropped here, zeroized.
        drop(Zeroizing::new(row.secret));
        Self {
            id: row.id,
            activation_ms: row.activation_ms,
            not_after_ms: row.not_after_ms,
            created_ms: row.created_ms,
            cause: row.cause,
        }
    }
}

/// A new `decisions` row, in its column types.
pub(super) struct NewDecision<'a> {
    pub(super) epoch_id: i64,
    pub(super) decision: &'a Decision,
    pub(super) streak: i64,
    pub(super) evidence: &'a str,
}

/// The `epochs` and `decisions` tables' queries, on either backend.
pub(crate) trait EpochSql {
    /// The newest stored epoch's id.
    fn latest_epoch_id(&mut self) -> Result<Option<EpochId>, StoreError>;
    /// Inserts an `epochs` row.
    fn insert_epoch_row(&mut self, row: &NewEpoch<'_>, what: What<'_>) -> Result<(), StoreError>;
    /// Inserts a `decisions` row.
    fn insert_decision_row(
        &mut self,
        row: &NewDecision<'_>,
        what: What<'_>,
    ) -> Result<(), StoreError>;
    /// The epoch `id`'s row.
    fn epoch_row(&mut self, id: i64, what: What<'_>) -> Result<Option<EpochRow>, StoreError>;
    /// The `n` newest epochs' rows, newest first.
    fn latest_epoch_rows(&mut self, n: i64, what: What<'_>) -> Result<Vec<EpochRow>, StoreError>;
    /// Every stored epoch id, newest first.
    fn all_epoch_ids(&mut self, what: What<'_>) -> Result<Vec<EpochId>, StoreError>;
    /// The decisions of epoch `epoch`, sorted by node id.
    fn load_decisions(&mut self, epoch: EpochId) -> Result<Vec<Decision>, StoreError>;
}

/// Stores epoch `epoch` with its `decisions` (paired with their inputs in `pairs`) inside
/// `tx`, stamping the audit entries `now_ms`: refuses an id not greater than the newest
/// stored one, erases the secrets past the live window, and appends one `rotation` entry
/// and one `decision` entry per decision. Each backend runs it in its write transaction
/// (PostgreSQL after its fencing checks).
pub(super) fn insert_epoch_in(
    tx: &mut (impl EpochSql + RetentionSql + AuditSql + ?Sized),
    epoch: &EpochRecord,
    decisions: &[Decision],
    pairs: &[(&Decision, &NodeInput)],
    policy: &Policy,
    decided_ms: u64,
    now_ms: u64,
) -> Result<(), StoreError> {
    let id = epoch.id;
    if let Some(latest) = tx.latest_epoch_id()?.filter(|l| id <= *l) {
        return Err(StoreError::EpochNotNewer { id, latest });
    }
    let secret = Zeroizing::new(epoch.secret.to_hex());
    let row = NewEpoch {
        id: int(id, || "epoch id".into())?,
        secret: &secret,
        activation_ms: int(epoch.activation_ms, || format!("epoch {id} activation_ms"))?,
        not_after_ms: int(epoch.not_after_ms, || format!("epoch {id} not_after_ms"))?,
        created_ms: int(epoch.created_ms, || format!("epoch {id} created_ms"))?,
        cause: &epoch.cause,
    };
    tx.insert_epoch_row(&row, &|| format!("storing epoch {id}"))?;
    tx.erase_old_secrets()?;
    for d in decisions {
        insert_decision(tx, id, d)?;
    }
    append(
        tx,
        now_ms,
        AuditKind::Rotation,
        &rotation_entry(epoch, decisions),
    )?;
    for entry in decision_entries(id, pairs, policy, decided_ms) {
        append(tx, now_ms, AuditKind::Decision, &entry)?;
    }
    Ok(())
}

fn insert_decision(
    tx: &mut (impl EpochSql + ?Sized),
    epoch: EpochId,
    d: &Decision,
) -> Result<(), StoreError> {
    let what = || {
        format!(
            "storing the decision for node {} in epoch {epoch}",
            d.node_id
        )
    };
    let evidence = to_json(&d.evidence, || {
        format!("epoch {epoch} decision for {} evidence", d.node_id)
    })?;
    let row = NewDecision {
        epoch_id: int(epoch, || "epoch id".into())?,
        decision: d,
        streak: i64::from(d.history.passing_streak),
        evidence: &evidence,
    };
    tx.insert_decision_row(&row, &what)
}

/// Reading epochs and decisions, on every backend.
pub(crate) trait EpochRules: Backend {
    /// The epoch `id`, if stored.
    fn epoch(&self, id: EpochId) -> Result<Option<EpochRecord>, StoreError> {
        let what = || format!("reading epoch {id}");
        let Ok(key) = i64::try_from(id) else {
            return Ok(None);
        };
        let row = self.read_tx(what, |tx| tx.epoch_row(key, &what))?;
        row.map(EpochRow::decode).transpose()
    }

    /// The `n` newest epochs, newest first.
    fn latest_epochs(&self, n: usize) -> Result<Vec<EpochRecord>, StoreError> {
        let what = || "reading the latest epochs".to_owned();
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = self.read_tx(what, |tx| tx.latest_epoch_rows(n, &what))?;
        rows.into_iter().map(EpochRow::decode).collect()
    }

    /// The `n` newest epochs without their secrets, newest first, those whose secrets are
    /// erased too.
    fn latest_epoch_summaries(&self, n: usize) -> Result<Vec<EpochSummary>, StoreError> {
        let what = || "reading the latest epochs".to_owned();
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        let rows = self.read_tx(what, |tx| tx.latest_epoch_rows(n, &what))?;
        Ok(rows.into_iter().map(EpochSummary::from).collect())
    }

    /// The ids of every stored epoch, newest first (those past the live window too, whose
    /// secrets are erased).
    fn epoch_ids(&self) -> Result<Vec<EpochId>, StoreError> {
        let what = || "listing the stored epochs".to_owned();
        self.read_tx(what, |tx| tx.all_epoch_ids(&what))
    }

    /// The decisions of epoch `epoch_id`, sorted by node id (empty for an unknown epoch).
    fn decisions(&self, epoch_id: EpochId) -> Result<Vec<Decision>, StoreError> {
        if i64::try_from(epoch_id).is_err() {
            return Ok(Vec::new());
        }
        self.read_tx(
            || format!("reading the decisions of epoch {epoch_id}"),
            |tx| tx.load_decisions(epoch_id),
        )
    }

    /// Every node's hysteresis state after the newest epoch (empty before the first).
    fn last_history(&self) -> Result<HashMap<String, History>, StoreError> {
        self.read_tx(
            || "reading the last decisions".to_owned(),
            |tx| {
                let Some(latest) = tx.latest_epoch_id()? else {
                    return Ok(HashMap::new());
                };
                Ok(tx
                    .load_decisions(latest)?
                    .into_iter()
                    .map(|d| (d.node_id, d.history))
                    .collect())
            },
        )
    }
}

impl<B: Backend + ?Sized> EpochRules for B {}

impl SqliteStore {
    /// Stores a new epoch with its decisions, in one transaction that also appends one
    /// `rotation` audit entry (without the secret) and one `decision` entry per decision,
    /// holding the decision, the [`NodeInput`] it was made from, the `policy` and the clock
    /// `decided_ms` it was evaluated at, so it can be recomputed.
    ///
    /// Refuses an id not greater than the newest stored epoch's, and decisions and inputs
    /// that do not correspond one to one by node.
    pub fn insert_epoch(
        &self,
        epoch: &EpochRecord,
        decisions: &[Decision],
        inputs: &[NodeInput],
        policy: &Policy,
        decided_ms: u64,
    ) -> Result<(), StoreError> {
        let pairs = pair_inputs(epoch.id, decisions, inputs)?;
        let now = self.now_ms();
        self.write_tx(
            || format!("storing epoch {}", epoch.id),
            |tx| insert_epoch_in(tx, epoch, decisions, &pairs, policy, decided_ms, now),
        )
    }
}

impl EpochSql for Transaction<'_> {
    fn latest_epoch_id(&mut self) -> Result<Option<EpochId>, StoreError> {
        self.query_row("SELECT MAX(id) FROM epochs", [], |r| r.get(0))
            .ctx(|| "reading the latest epoch id".to_owned())
    }

    fn insert_epoch_row(&mut self, e: &NewEpoch<'_>, what: What<'_>) -> Result<(), StoreError> {
        self.execute(
            &format!("INSERT INTO epochs ({EPOCH_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                e.id,
                e.secret,
                e.activation_ms,
                e.not_after_ms,
                e.created_ms,
                e.cause
            ],
        )
        .ctx(what)?;
        Ok(())
    }

    fn insert_decision_row(
        &mut self,
        r: &NewDecision<'_>,
        what: What<'_>,
    ) -> Result<(), StoreError> {
        let d = r.decision;
        self.execute(
            "INSERT INTO decisions (epoch_id, node_id, allowed, reason, passing, \
             history_allowed, streak, benchmarked, evidence) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                r.epoch_id,
                d.node_id,
                d.allowed,
                d.reason,
                d.passing,
                d.history.allowed,
                r.streak,
                d.history.benchmarked,
                r.evidence
            ],
        )
        .ctx(what)?;
        Ok(())
    }

    fn epoch_row(&mut self, id: i64, what: What<'_>) -> Result<Option<EpochRow>, StoreError> {
        self.query_row(
            &format!("SELECT {EPOCH_COLUMNS} FROM epochs WHERE id = ?1"),
            [id],
            EpochRow::read,
        )
        .optional()
        .ctx(what)
    }

    fn latest_epoch_rows(&mut self, n: i64, what: What<'_>) -> Result<Vec<EpochRow>, StoreError> {
        let mut stmt = self
            .prepare_cached(&format!(
                "SELECT {EPOCH_COLUMNS} FROM epochs ORDER BY id DESC LIMIT ?1"
            ))
            .ctx(what)?;
        let rows = stmt.query_map([n], EpochRow::read).ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }

    fn all_epoch_ids(&mut self, what: What<'_>) -> Result<Vec<EpochId>, StoreError> {
        let mut stmt = self
            .prepare_cached("SELECT id FROM epochs ORDER BY id DESC")
            .ctx(what)?;
        let rows = stmt.query_map([], |r| r.get(0)).ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }

    fn load_decisions(&mut self, epoch: EpochId) -> Result<Vec<Decision>, StoreError> {
        let what = || format!("reading the decisions of epoch {epoch}");
        let id = int(epoch, || "epoch id".into())?;
        let mut stmt = self
            .prepare_cached(
                "SELECT node_id, allowed, reason, passing, history_allowed, streak, evidence, \
                 benchmarked FROM decisions WHERE epoch_id = ?1 ORDER BY node_id",
            )
            .ctx(what)?;
        let mut rows = stmt.query([id]).ctx(what)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().ctx(what)? {
            out.push(decision_from_row(epoch, row)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{bench_path, benchmark, node};
    use super::*;
    use crate::model::Evidence;
    use crate::store::Store;

    fn epoch(id: EpochId) -> EpochRecord {
        EpochRecord {
            id,
            secret: EpochSecret::from_bytes([id as u8; 32]),
            activation_ms: id * 1000,
            not_after_ms: id * 1000 + 1000,
            created_ms: id * 1000 - 10,
            cause: "schedule".into(),
        }
    }

    fn decided(node_id: &str, allowed: bool, streak: u32) -> (Decision, NodeInput) {
        let decision = Decision {
            node_id: node_id.into(),
            allowed,
            reason: if allowed {
                "overall score 0.90 meets the threshold 0.70".into()
            } else {
                "no benchmark received".into()
            },
            passing: allowed,
            history: History {
                allowed,
                passing_streak: streak,
                benchmarked: true,
            },
            evidence: Evidence {
                score: allowed.then_some(0.9),
                threshold: 0.7,
                age_ms: allowed.then_some(5),
                max_age_ms: 120_000,
                seq: allowed.then_some(3),
                sources: Vec::new(),
            },
        };
        let input = NodeInput {
            node_id: node_id.into(),
            latest: None,
            pin: None,
            history: None,
            statements: Vec::new(),
        };
        (decision, input)
    }

    fn two_decisions() -> (Vec<Decision>, Vec<NodeInput>) {
        let (a, ia) = decided("node-a", true, 2);
        let (b, ib) = decided("node-b", false, 0);
        (vec![b, a], vec![ia, ib])
    }

    fn epochs_and_decisions_round_trip(store: Store) {
        let (decisions, inputs) = two_decisions();
        store
            .insert_epoch(&epoch(1), &decisions, &inputs, &Policy::default(), 990)
            .unwrap();
        store
            .insert_epoch(&epoch(2), &[], &[], &Policy::default(), 1990)
            .unwrap();
        assert_eq!(store.epoch(1).unwrap(), Some(epoch(1)));
        assert_eq!(store.epoch(3).unwrap(), None);
        assert_eq!(store.epoch(u64::MAX).unwrap(), None);
        assert_eq!(store.latest_epochs(5).unwrap(), vec![epoch(2), epoch(1)]);
        assert_eq!(store.latest_epochs(1).unwrap(), vec![epoch(2)]);
        let mut sorted = decisions.clone();
        sorted.sort_by(|x, y| x.node_id.cmp(&y.node_id));
        assert_eq!(store.decisions(1).unwrap(), sorted);
        assert!(store.decisions(2).unwrap().is_empty());
    }

    fn epoch_ids_must_increase(store: Store) {
        store
            .insert_epoch(&epoch(5), &[], &[], &Policy::default(), 0)
            .unwrap();
        for id in [5, 4] {
            let err = store
                .insert_epoch(&epoch(id), &[], &[], &Policy::default(), 0)
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("epoch {id} is not newer than the latest stored epoch 5")
            );
        }
        assert_eq!(store.latest_epochs(10).unwrap(), vec![epoch(5)]);
        assert_eq!(store.audit_entries(1, 10).unwrap().len(), 1);
    }

    fn last_history_comes_from_the_newest_epoch(store: Store) {
        assert!(store.last_history().unwrap().is_empty());
        let (decisions, inputs) = two_decisions();
        store
            .insert_epoch(&epoch(1), &decisions, &inputs, &Policy::default(), 0)
            .unwrap();
        let (a, ia) = decided("node-a", false, 0);
        store
            .insert_epoch(&epoch(2), &[a], &[ia], &Policy::default(), 0)
            .unwrap();
        let history = store.last_history().unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(
            history["node-a"],
            History {
                allowed: false,
                passing_streak: 0,
                benchmarked: true
            }
        );
    }

    fn audit_has_rotation_without_secret_and_recomputable_decisions(store: Store) {
        let (n, key) = node("node-a", 1);
        store.add_node(&n).unwrap();
        let (bench, body, sig) = benchmark(&key, "node-a", 3, 0.9);
        store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &bench,
                &body,
                &sig,
                &bench_path("node-a"),
            )
            .unwrap();
        let (decisions, mut inputs) = two_decisions();
        inputs[0].latest = Some(bench);
        let policy = Policy {
            threshold: 0.65,
            ..Policy::default()
        };
        let e = epoch(7);
        store
            .insert_epoch(&e, &decisions, &inputs, &policy, 6_990)
            .unwrap();
        let entries = store.audit_entries(3, 10).unwrap();
        assert!(entries
            .iter()
            .all(|x| !x.entry.contains(&e.secret.to_hex())));
        assert_eq!(entries[0].kind, "rotation");
        let rotation: RotationEntry = serde_json::from_str(&entries[0].entry).unwrap();
        assert_eq!(
            (rotation.allowed, rotation.denied),
            (vec!["node-a".into()], vec!["node-b".into()])
        );
        let logged: Vec<DecisionEntry> = entries[1..]
            .iter()
            .map(|x| serde_json::from_str(&x.entry).unwrap())
            .collect();
        assert_eq!(logged.len(), 2);
        for entry in &logged {
            assert_eq!(entry.policy, policy);
            assert_eq!(entry.decided_ms, 6_990);
            assert_eq!(entry.input.node_id, entry.decision.node_id);
        }
        assert_eq!(logged[1].input, inputs[0]);
        assert_eq!(
            store
                .verify_audit(&crate::store::testutil::trusted())
                .unwrap()
                .counts[&AuditKind::Decision],
            2
        );
    }

    fn decisions_and_inputs_must_match_one_to_one(store: Store) {
        let (decisions, inputs) = two_decisions();
        let p = Policy::default();
        let err = store
            .insert_epoch(&epoch(1), &decisions, &inputs[..1], &p, 0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "epoch 1: the decision for node node-b has no input"
        );
        let err = store
            .insert_epoch(&epoch(1), &decisions[..1], &inputs, &p, 0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "epoch 1: the input for node node-a has no decision"
        );
        let twice = [decisions[0].clone(), decisions[0].clone()];
        let err = store
            .insert_epoch(&epoch(1), &twice, &inputs, &p, 0)
            .unwrap_err();
        assert_eq!(err.to_string(), "epoch 1: two decisions for node node-b");
        assert!(store.latest_epochs(1).unwrap().is_empty());
    }

    fn a_corrupt_secret_is_reported_without_its_value(store: Store) {
        store
            .insert_epoch(&epoch(1), &[], &[], &Policy::default(), 0)
            .unwrap();
        let leaked = "ab".repeat(31) + "zz";
        crate::store::testutil::execute(&store, &format!("UPDATE epochs SET secret = '{leaked}'"))
            .unwrap();
        let err = store.epoch(1).unwrap_err().to_string();
        assert!(err.starts_with("corrupt epoch 1 secret"), "{err}");
        assert!(!err.contains(&leaked) && !err.contains("abab"), "{err}");
        assert!(!format!("{:?}", epoch(1)).contains(&epoch(1).secret.to_hex()));
    }

    crate::store::testutil::on_both_backends!(
        epochs_and_decisions_round_trip,
        epoch_ids_must_increase,
        last_history_comes_from_the_newest_epoch,
        audit_has_rotation_without_secret_and_recomputable_decisions,
        decisions_and_inputs_must_match_one_to_one,
        a_corrupt_secret_is_reported_without_its_value,
    );
}
