//! The `invites` table's SQL on PostgreSQL (the rules are in [`super::super::invites`]).

use postgres::Transaction;

use super::super::backend::What;
use super::super::error::SqlContext as _;
use super::super::invites::{Invite, InviteSql, NewInvite};
use super::super::StoreError;
use super::{get, get_opt_u64, get_u64};

impl InviteSql for Transaction<'_> {
    fn invites_for(&mut self, node_id: &str) -> Result<Vec<(String, Invite)>, StoreError> {
        let rows = self
            .query(
                "SELECT token_hash, node_id, expires_ms, used_ms, addresses, endpoint \
                 FROM invites WHERE node_id = $1",
                &[&node_id],
            )
            .ctx(|| format!("reading the invites for node {node_id}"))?;
        rows.iter()
            .map(|row| {
                let invite = Invite {
                    node_id: get(row, 1, "invite node_id")?,
                    expires_ms: get_u64(row, 2, "invite expires_ms")?,
                    used_ms: get_opt_u64(row, 3, "invite used_ms")?,
                    addresses: get(row, 4, "invite addresses")?,
                    endpoint: get(row, 5, "invite endpoint")?,
                };
                Ok((get(row, 0, "invite token_hash")?, invite))
            })
            .collect()
    }

    fn insert_invite(&mut self, i: &NewInvite<'_>, what: What<'_>) -> Result<bool, StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO invites (token_hash, node_id, created_ms, expires_ms, addresses, \
                 endpoint) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token_hash) DO NOTHING",
                &[
                    &i.token_hash,
                    &i.node_id,
                    &i.created_ms,
                    &i.expires_ms,
                    &i.addresses,
                    &i.endpoint,
                ],
            )
            .ctx(what)?;
        Ok(inserted > 0)
    }

    fn mark_invite_used(
        &mut self,
        token_hash: &str,
        used_ms: i64,
        what: What<'_>,
    ) -> Result<(), StoreError> {
        self.execute(
            "UPDATE invites SET used_ms = $2 WHERE token_hash = $1",
            &[&token_hash, &used_ms],
        )
        .ctx(what)?;
        Ok(())
    }

    fn outstanding_invites(
        &mut self,
        now_ms: i64,
        except: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .query(
                "SELECT node_id, addresses FROM invites WHERE used_ms IS NULL \
                 AND expires_ms > $1 AND addresses IS NOT NULL AND token_hash != $2",
                &[&now_ms, &except],
            )
            .ctx(|| "reading the addresses of outstanding invites".to_owned())?;
        rows.iter()
            .map(|row| {
                Ok((
                    get(row, 0, "invite node_id")?,
                    get(row, 1, "invite addresses")?,
                ))
            })
            .collect()
    }
}
