//! The `epochs` and `decisions` tables' SQL on PostgreSQL (the rules are in
//! [`super::super::epochs`]), and the fenced epoch insert.

use meshtun_proto::EpochId;
use postgres::{Row, Transaction};

use super::super::backend::What;
use super::super::codec::{corrupt, from_json, int};
use super::super::epochs::{
    insert_epoch_in, pair_inputs, EpochRow, EpochSql, NewDecision, NewEpoch, EPOCH_COLUMNS,
};
use super::super::error::SqlContext as _;
use super::super::StoreError;
use super::{get, get_opt_u64, get_u64, Backend as _, PgStore};
use crate::ha::LeaseToken;
use crate::model::{Decision, EpochRecord, History, NodeInput, Policy};

fn epoch_row(row: &Row) -> Result<EpochRow, StoreError> {
    Ok(EpochRow {
        id: get_u64(row, 0, "epoch id")?,
        secret: get(row, 1, "epoch secret")?,
        activation_ms: get_u64(row, 2, "epoch activation_ms")?,
        not_after_ms: get_u64(row, 3, "epoch not_after_ms")?,
        created_ms: get_u64(row, 4, "epoch created_ms")?,
        cause: get(row, 5, "epoch cause")?,
    })
}

fn decision_from_row(epoch: EpochId, row: &Row) -> Result<Decision, StoreError> {
    let node_id: String = get(row, 0, "decision node_id")?;
    let col = |c: &str| format!("epoch {epoch} decision for {node_id} {c}");
    let evidence: String = get(row, 6, &col("evidence"))?;
    let streak = get_u64(row, 5, &col("streak"))?;
    Ok(Decision {
        evidence: from_json(&evidence, || col("evidence"))?,
        allowed: get(row, 1, &col("allowed"))?,
        reason: get(row, 2, &col("reason"))?,
        passing: get(row, 3, &col("passing"))?,
        history: History {
            allowed: get(row, 4, &col("history_allowed"))?,
            passing_streak: u32::try_from(streak)
                .map_err(|_| corrupt(col("streak"), format!("{streak} is out of range")))?,
            benchmarked: get(row, 7, &col("benchmarked"))?,
        },
        node_id: node_id.clone(),
    })
}

impl PgStore {
    /// See [`Store::insert_epoch`](crate::store::Store::insert_epoch). The id is checked
    /// against the newest under the writer lock, and `epochs.id` is the primary key: two
    /// instances can never both store one epoch id.
    pub fn insert_epoch(
        &self,
        epoch: &EpochRecord,
        decisions: &[Decision],
        inputs: &[NodeInput],
        policy: &Policy,
        decided_ms: u64,
        fence: Option<&LeaseToken>,
    ) -> Result<(), StoreError> {
        let id = epoch.id;
        let pairs = pair_inputs(id, decisions, inputs)?;
        let what = || format!("storing epoch {id}");
        let now = self.now_ms();
        self.write(what, |tx| {
            // First: a deposed leader learns it here, whatever else it would write.
            if let Some(token) = fence {
                crate::ha::fence(tx, token).map_err(StoreError::Fenced)?;
            }
            // Delivered on commit only: every instance loads the epoch and wakes its polls.
            crate::ha::notify_epoch(tx, id).map_err(|e| StoreError::Announce(Box::new(e)))?;
            insert_epoch_in(tx, epoch, decisions, &pairs, policy, decided_ms, now)
        })
    }
}

impl EpochSql for Transaction<'_> {
    fn latest_epoch_id(&mut self) -> Result<Option<EpochId>, StoreError> {
        let row = self
            .query_one("SELECT MAX(id) FROM epochs", &[])
            .ctx(|| "reading the latest epoch id".to_owned())?;
        get_opt_u64(&row, 0, "epoch id")
    }

    fn insert_epoch_row(&mut self, e: &NewEpoch<'_>, what: What<'_>) -> Result<(), StoreError> {
        self.execute(
            &format!("INSERT INTO epochs ({EPOCH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
            &[
                &e.id,
                &e.secret,
                &e.activation_ms,
                &e.not_after_ms,
                &e.created_ms,
                &e.cause,
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
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                &r.epoch_id,
                &d.node_id,
                &d.allowed,
                &d.reason,
                &d.passing,
                &d.history.allowed,
                &r.streak,
                &d.history.benchmarked,
                &r.evidence,
            ],
        )
        .ctx(what)?;
        Ok(())
    }

    fn epoch_row(&mut self, id: i64, what: What<'_>) -> Result<Option<EpochRow>, StoreError> {
        let row = self
            .query_opt(
                &format!("SELECT {EPOCH_COLUMNS} FROM epochs WHERE id = $1"),
                &[&id],
            )
            .ctx(what)?;
        row.map(|r| epoch_row(&r)).transpose()
    }

    fn latest_epoch_rows(&mut self, n: i64, what: What<'_>) -> Result<Vec<EpochRow>, StoreError> {
        let rows = self
            .query(
                &format!("SELECT {EPOCH_COLUMNS} FROM epochs ORDER BY id DESC LIMIT $1"),
                &[&n],
            )
            .ctx(what)?;
        rows.iter().map(epoch_row).collect()
    }

    fn all_epoch_ids(&mut self, what: What<'_>) -> Result<Vec<EpochId>, StoreError> {
        let rows = self
            .query("SELECT id FROM epochs ORDER BY id DESC", &[])
            .ctx(what)?;
        rows.iter().map(|r| get_u64(r, 0, "epoch id")).collect()
    }

    fn load_decisions(&mut self, epoch: EpochId) -> Result<Vec<Decision>, StoreError> {
        let what = || format!("reading the decisions of epoch {epoch}");
        let id = int(epoch, || "epoch id".into())?;
        let rows = self
            .query(
                "SELECT node_id, allowed, reason, passing, history_allowed, streak, evidence, \
                 benchmarked FROM decisions WHERE epoch_id = $1 ORDER BY node_id",
                &[&id],
            )
            .ctx(what)?;
        rows.iter().map(|r| decision_from_row(epoch, r)).collect()
    }
}
