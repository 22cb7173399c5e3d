//! The `epochs` and `decisions` tables on PostgreSQL.

use std::collections::HashMap;

use meshtun_proto::EpochId;
use postgres::{Row, Transaction};

use super::super::audit::AuditKind;
use super::super::audit_log::append;
use super::super::backend::Backend as _;
use super::super::codec::{corrupt, from_json, int, to_json};
use super::super::epochs::{
    decision_entries, pair_inputs, rotation_entry, EpochRow, EPOCH_COLUMNS,
};
use super::super::error::SqlContext as _;
use super::super::retention::RetentionSql as _;
use super::super::StoreError;
use super::{get, get_opt_u64, get_u64, PgStore};
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

fn insert_decision(
    tx: &mut Transaction<'_>,
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
    tx.execute(
        "INSERT INTO decisions (epoch_id, node_id, allowed, reason, passing, history_allowed, \
         streak, benchmarked, evidence) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            &int(epoch, || "epoch id".into())?,
            &d.node_id,
            &d.allowed,
            &d.reason,
            &d.passing,
            &d.history.allowed,
            &i64::from(d.history.passing_streak),
            &d.history.benchmarked,
            &evidence,
        ],
    )
    .ctx(what)?;
    Ok(())
}

fn latest_epoch_id(tx: &mut Transaction<'_>) -> Result<Option<EpochId>, StoreError> {
    let row = tx
        .query_one("SELECT MAX(id) FROM epochs", &[])
        .ctx(|| "reading the latest epoch id".to_owned())?;
    get_opt_u64(&row, 0, "epoch id")
}

fn load_decisions(tx: &mut Transaction<'_>, epoch: EpochId) -> Result<Vec<Decision>, StoreError> {
    let what = || format!("reading the decisions of epoch {epoch}");
    let id = int(epoch, || "epoch id".into())?;
    let rows = tx
        .query(
            "SELECT node_id, allowed, reason, passing, history_allowed, streak, evidence, \
             benchmarked FROM decisions WHERE epoch_id = $1 ORDER BY node_id",
            &[&id],
        )
        .ctx(what)?;
    rows.iter().map(|r| decision_from_row(epoch, r)).collect()
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
            if let Some(latest) = latest_epoch_id(tx)?.filter(|l| id <= *l) {
                return Err(StoreError::EpochNotNewer { id, latest });
            }
            tx.execute(
                &format!("INSERT INTO epochs ({EPOCH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"),
                &[
                    &int(id, || "epoch id".into())?,
                    &epoch.secret.to_hex().as_str(),
                    &int(epoch.activation_ms, || format!("epoch {id} activation_ms"))?,
                    &int(epoch.not_after_ms, || format!("epoch {id} not_after_ms"))?,
                    &int(epoch.created_ms, || format!("epoch {id} created_ms"))?,
                    &epoch.cause,
                ],
            )
            .ctx(what)?;
            tx.erase_old_secrets()?;
            for d in decisions {
                insert_decision(tx, id, d)?;
            }
            append(
                tx,
                now,
                AuditKind::Rotation,
                &rotation_entry(epoch, decisions),
            )?;
            for entry in decision_entries(id, &pairs, policy, decided_ms) {
                append(tx, now, AuditKind::Decision, &entry)?;
            }
            Ok(())
        })
    }

    /// See [`Store::epoch`](crate::store::Store::epoch).
    pub fn epoch(&self, id: EpochId) -> Result<Option<EpochRecord>, StoreError> {
        let what = || format!("reading epoch {id}");
        let Ok(key) = i64::try_from(id) else {
            return Ok(None);
        };
        self.read(what, |tx| {
            let row = tx
                .query_opt(
                    &format!("SELECT {EPOCH_COLUMNS} FROM epochs WHERE id = $1"),
                    &[&key],
                )
                .ctx(what)?;
            row.map(|r| epoch_row(&r)?.decode()).transpose()
        })
    }

    /// See [`Store::latest_epochs`](crate::store::Store::latest_epochs).
    pub fn latest_epochs(&self, n: usize) -> Result<Vec<EpochRecord>, StoreError> {
        let what = || "reading the latest epochs".to_owned();
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.read(what, |tx| {
            let rows = tx
                .query(
                    &format!("SELECT {EPOCH_COLUMNS} FROM epochs ORDER BY id DESC LIMIT $1"),
                    &[&n],
                )
                .ctx(what)?;
            rows.iter().map(|r| epoch_row(r)?.decode()).collect()
        })
    }

    /// See [`Store::epoch_ids`](crate::store::Store::epoch_ids).
    pub fn epoch_ids(&self) -> Result<Vec<EpochId>, StoreError> {
        let what = || "listing the stored epochs".to_owned();
        self.read(what, |tx| {
            let rows = tx
                .query("SELECT id FROM epochs ORDER BY id DESC", &[])
                .ctx(what)?;
            rows.iter().map(|r| get_u64(r, 0, "epoch id")).collect()
        })
    }

    /// See [`Store::decisions`](crate::store::Store::decisions).
    pub fn decisions(&self, epoch_id: EpochId) -> Result<Vec<Decision>, StoreError> {
        if i64::try_from(epoch_id).is_err() {
            return Ok(Vec::new());
        }
        self.read(
            || format!("reading the decisions of epoch {epoch_id}"),
            |tx| load_decisions(tx, epoch_id),
        )
    }

    /// See [`Store::last_history`](crate::store::Store::last_history).
    pub fn last_history(&self) -> Result<HashMap<String, History>, StoreError> {
        self.read(
            || "reading the last decisions".to_owned(),
            |tx| {
                let Some(latest) = latest_epoch_id(tx)? else {
                    return Ok(HashMap::new());
                };
                Ok(load_decisions(tx, latest)?
                    .into_iter()
                    .map(|d| (d.node_id, d.history))
                    .collect())
            },
        )
    }
}
