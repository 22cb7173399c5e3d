//! The audit log on PostgreSQL: appending inside a caller's transaction (which holds the
//! writer lock, so the chain's head cannot move under it), reading and verifying it.

use meshtun_proto::IdentityPublic;
use postgres::{Row, Transaction};
use serde::Serialize;

use super::super::audit::{chain_hash, AuditEntry, AuditError, AuditKind, AuditReport};
use super::super::audit::{ChainVerifier, SignedCheckpoint, GENESIS_HASH};
use super::super::audit_log::VERIFY_PAGE;
use super::super::codec::{int, to_json};
use super::super::error::SqlContext as _;
use super::super::StoreError;
use super::{get, get_u64, PgStore};

/// Appends one entry to the chain inside `tx`, stamped `at_ms`.
pub(crate) fn append(
    tx: &mut Transaction<'_>,
    at_ms: u64,
    kind: AuditKind,
    entry: &impl Serialize,
) -> Result<u64, StoreError> {
    let json = to_json(entry, || format!("the {kind} audit entry"))?;
    let what = || format!("appending a {kind} audit entry");
    let head = tx
        .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])
        .ctx(what)?;
    let (last, prev_hash) = match head {
        Some(row) => (get_u64(&row, 0, "audit seq")?, get(&row, 1, "audit hash")?),
        None => (0, GENESIS_HASH.to_owned()),
    };
    let seq = last + 1;
    let hash = chain_hash(&prev_hash, seq, at_ms, kind.as_str(), &json);
    tx.execute(
        "INSERT INTO audit (seq, at_ms, kind, entry, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &int(seq, || "audit seq".into())?,
            &int(at_ms, || "audit time".into())?,
            &kind.as_str(),
            &json,
            &prev_hash,
            &hash,
        ],
    )
    .ctx(what)?;
    Ok(seq)
}

/// The newest checkpoint, with the entry it covers, if the log was ever pruned.
pub(crate) fn latest_checkpoint(
    tx: &mut Transaction<'_>,
) -> Result<Option<(u64, SignedCheckpoint)>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT seq, body, signature FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
            &[],
        )
        .ctx(|| "reading the newest audit checkpoint".to_owned())?;
    row.map(|r| {
        Ok((
            get_u64(&r, 0, "audit checkpoint seq")?,
            SignedCheckpoint {
                body: get(&r, 1, "audit checkpoint body")?,
                signature: get(&r, 2, "audit checkpoint signature")?,
            },
        ))
    })
    .transpose()
}

fn entry_from_row(row: &Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        seq: get_u64(row, 0, "audit seq")?,
        at_ms: get_u64(row, 1, "audit at_ms")?,
        kind: get(row, 2, "audit kind")?,
        entry: get(row, 3, "audit entry")?,
        prev_hash: get(row, 4, "audit prev_hash")?,
        hash: get(row, 5, "audit hash")?,
    })
}

impl PgStore {
    /// Up to `limit` audit entries from `from_seq` on, oldest first.
    pub fn audit_entries(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let what = || format!("reading audit entries from {from_seq}");
        let from = i64::try_from(from_seq).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(what, |tx| {
            let rows = tx
                .query(
                    "SELECT seq, at_ms, kind, entry, prev_hash, hash FROM audit \
                     WHERE seq >= $1 ORDER BY seq LIMIT $2",
                    &[&from, &limit],
                )
                .ctx(what)?;
            rows.iter().map(entry_from_row).collect()
        })
    }

    /// Recomputes the whole chain and checks every benchmark request's signature, from the
    /// newest checkpoint (checked with `controller`) or the genesis.
    pub fn verify_audit(&self, controller: &IdentityPublic) -> Result<AuditReport, AuditError> {
        let mut verifier = self.verifier_at_checkpoint(controller)?;
        self.verify_from(&mut verifier, u64::MAX)?;
        Ok(verifier.finish())
    }

    /// A verifier at the newest checkpoint (checked with `controller`), or at the genesis.
    pub(crate) fn verifier_at_checkpoint(
        &self,
        controller: &IdentityPublic,
    ) -> Result<ChainVerifier, AuditError> {
        let what = || "reading the newest audit checkpoint".to_owned();
        match self.read(what, latest_checkpoint)? {
            None => Ok(ChainVerifier::new()),
            Some((seq, signed)) => Ok(ChainVerifier::resume(&signed.verify(seq, controller)?)),
        }
    }

    /// Pushes the entries after the verifier's position, up to `through`, page by page.
    pub(crate) fn verify_from(
        &self,
        verifier: &mut ChainVerifier,
        through: u64,
    ) -> Result<(), AuditError> {
        let mut next = verifier.position().saturating_add(1);
        while next <= through {
            let want =
                usize::try_from(through - next + 1).map_or(VERIFY_PAGE, |n| n.min(VERIFY_PAGE));
            let page = self.audit_entries(next, want)?;
            let Some(last) = page.last() else { break };
            next = last.seq.saturating_add(1);
            for e in &page {
                verifier.push(e)?;
            }
        }
        Ok(())
    }
}
