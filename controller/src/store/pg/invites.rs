//! The `invites` table on PostgreSQL.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use meshtun_proto::enroll::{token_id, EnrollClaim, Enrollment};
use meshtun_proto::wire::{check_endpoint, valid_node_id};
use postgres::Transaction;

use super::super::audit::{AuditKind, InviteEntry};
use super::super::audit_log::append;
use super::super::backend::Backend as _;
use super::super::codec::{from_json, int, to_json};
use super::super::error::SqlContext as _;
use super::super::invites::{check_addresses, invite_token_hash, parse_verifier, Invite};
use super::super::nodes::{insert_node, NodeSql as _};
use super::super::StoreError;
use super::{get, get_opt_u64, get_u64, PgStore};
use crate::model::NodeRecord;
use crate::network::Network;

impl PgStore {
    /// See [`Store::create_invite`](crate::store::Store::create_invite).
    pub fn create_invite(
        &self,
        node_id: &str,
        token: &str,
        expires_ms: u64,
        addresses: Option<&[IpNet]>,
        endpoint: Option<&str>,
    ) -> Result<(), StoreError> {
        if !valid_node_id(node_id) {
            return Err(StoreError::InvalidNodeId(node_id.to_owned()));
        }
        if token.is_empty() {
            return Err(StoreError::EmptyToken(node_id.to_owned()));
        }
        let token_hash = invite_token_hash(token);
        let what = || format!("creating an invite for node {node_id}");
        let addresses_json = addresses
            .map(|a| to_json(a, || format!("invite for node {node_id} addresses")))
            .transpose()?;
        let now = self.now_ms();
        self.write(what, |tx| {
            if tx.load_node(node_id)?.is_some() {
                return Err(StoreError::NodeExists(node_id.to_owned()));
            }
            for net in addresses.unwrap_or_default() {
                if let Some(holder) = tx.address_holder(net.addr())? {
                    return Err(StoreError::AddressInUse {
                        node: node_id.to_owned(),
                        address: net.addr(),
                        holder: format!("node {holder}"),
                    });
                }
            }
            let inserted = tx
                .execute(
                    "INSERT INTO invites (token_hash, node_id, created_ms, expires_ms, addresses, \
                     endpoint) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token_hash) DO NOTHING",
                    &[
                        &token_hash,
                        &node_id,
                        &int(now, || "invite created_ms".into())?,
                        &int(expires_ms, || {
                            format!("invite for node {node_id} expires_ms")
                        })?,
                        &addresses_json,
                        &endpoint,
                    ],
                )
                .ctx(what)?;
            if inserted == 0 {
                return Err(StoreError::DuplicateInvite(node_id.to_owned()));
            }
            let entry = InviteEntry {
                node_id: node_id.to_owned(),
                token_hash: token_hash.clone(),
                expires_ms,
                addresses: addresses.map(<[IpNet]>::to_vec),
                endpoint: endpoint.map(str::to_owned),
            };
            append(tx, now, AuditKind::Invite, &entry)?;
            Ok(())
        })
    }

    /// See [`Store::redeem_invite`](crate::store::Store::redeem_invite).
    pub fn redeem_invite(
        &self,
        enrollment: &Enrollment,
        network: &Network,
        now_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        let request = &enrollment.claim;
        let what = || "redeeming an invite".to_owned();
        let stamp = self.now_ms();
        self.write(what, |tx| {
            let (token_hash, invite) = find_invite(tx, request)?;
            let verifier = parse_verifier(&token_hash)?;
            enrollment
                .verify_token(&verifier)
                .map_err(|_| StoreError::BadInviteProof(invite.node_id.clone()))?;
            let node = invite.node_id.clone();
            if let Some(used_ms) = invite.used_ms {
                return match tx.load_node(&node)? {
                    Some(record)
                        if record.wg_public_key == request.wg_public_key
                            && record.identity_key == request.identity_key =>
                    {
                        Ok(record)
                    }
                    _ => Err(StoreError::InviteUsed { node, used_ms }),
                };
            }
            if now_ms >= invite.expires_ms {
                return Err(StoreError::InviteExpired {
                    node,
                    expires_ms: invite.expires_ms,
                    now_ms,
                });
            }
            let mut held = reserved_by_invites(tx, &token_hash, now_ms)?;
            let addresses = match &invite.addresses {
                Some(json) => from_json(json, || format!("invite for node {node} addresses"))?,
                None => request.addresses.clone(),
            };
            let addresses = if addresses.is_empty() {
                for ip in tx.held_addresses()? {
                    held.insert(ip, "a node".to_owned());
                }
                let taken = held.keys().copied().collect();
                network
                    .assign(&taken)
                    .map_err(|source| StoreError::Addresses {
                        node: node.clone(),
                        source,
                    })?
            } else {
                addresses
            };
            check_addresses(&node, &addresses, network, &held)?;
            let endpoint = invite.endpoint.or_else(|| request.endpoint.clone());
            if let Some(text) = &endpoint {
                check_endpoint(text).map_err(|reason| StoreError::Endpoint {
                    node: node.clone(),
                    reason,
                })?;
            }
            let record = NodeRecord {
                addresses,
                endpoint,
                id: invite.node_id,
                wg_public_key: request.wg_public_key,
                identity_key: request.identity_key,
                pin: None,
                enrolled_ms: now_ms,
            };
            if record.addresses.is_empty() {
                return Err(StoreError::NoAddresses(record.id));
            }
            tx.execute(
                "UPDATE invites SET used_ms = $2 WHERE token_hash = $1",
                &[&token_hash, &int(now_ms, || "invite used_ms".into())?],
            )
            .ctx(what)?;
            insert_node(tx, stamp, &record, Some(token_hash.clone()))?;
            Ok(record)
        })
    }
}

/// The invite for the claim's node id whose token id matches, with its token hash.
fn find_invite(
    tx: &mut Transaction<'_>,
    claim: &EnrollClaim,
) -> Result<(String, Invite), StoreError> {
    let what = || format!("reading the invites for node {}", claim.node_id);
    let rows = tx
        .query(
            "SELECT token_hash, node_id, expires_ms, used_ms, addresses, endpoint FROM invites \
             WHERE node_id = $1",
            &[&claim.node_id],
        )
        .ctx(what)?;
    for row in &rows {
        let hash: String = get(row, 0, "invite token_hash")?;
        if token_id(&parse_verifier(&hash)?) == claim.token_id {
            let invite = Invite {
                node_id: get(row, 1, "invite node_id")?,
                expires_ms: get_u64(row, 2, "invite expires_ms")?,
                used_ms: get_opt_u64(row, 3, "invite used_ms")?,
                addresses: get(row, 4, "invite addresses")?,
                endpoint: get(row, 5, "invite endpoint")?,
            };
            return Ok((hash, invite));
        }
    }
    Err(StoreError::UnknownInvite)
}

/// The addresses that unused, unexpired invites other than `except` assign.
fn reserved_by_invites(
    tx: &mut Transaction<'_>,
    except: &str,
    now_ms: u64,
) -> Result<HashMap<IpAddr, String>, StoreError> {
    let what = || "reading the addresses of outstanding invites".to_owned();
    let now = int(now_ms, || "now_ms".into())?;
    let rows = tx
        .query(
            "SELECT node_id, addresses FROM invites WHERE used_ms IS NULL AND expires_ms > $1 \
             AND addresses IS NOT NULL AND token_hash != $2",
            &[&now, &except],
        )
        .ctx(what)?;
    let mut reserved = HashMap::new();
    for row in &rows {
        let node: String = get(row, 0, "invite node_id")?;
        let json: String = get(row, 1, "invite addresses")?;
        let nets: Vec<IpNet> = from_json(&json, || format!("invite for node {node} addresses"))?;
        for net in nets {
            reserved.insert(net.addr(), format!("the invite for node {node}"));
        }
    }
    Ok(reserved)
}
