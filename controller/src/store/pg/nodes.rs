//! The `nodes` and `node_addresses` tables on PostgreSQL.

use std::collections::HashSet;
use std::net::IpAddr;

use meshtun_proto::wire::valid_node_id;
use postgres::{Row, Transaction};

use super::super::audit::{AuditKind, EnrollEntry, PinEntry, RemoveEntry};
use super::super::codec::{corrupt, int, pin_text, to_json};
use super::super::error::SqlContext as _;
use super::super::nodes::{NodeRow, NODE_COLUMNS};
use super::super::StoreError;
use super::audit_log::append;
use super::{get, get_u64, PgStore};
use crate::model::{NodeRecord, Pin};

fn node_row(row: &Row) -> Result<NodeRow, StoreError> {
    Ok(NodeRow {
        id: get(row, 0, "node id")?,
        wg_public_key: get(row, 1, "node wg_public_key")?,
        identity_key: get(row, 2, "node identity_key")?,
        addresses: get(row, 3, "node addresses")?,
        endpoint: get(row, 4, "node endpoint")?,
        pin: get(row, 5, "node pin")?,
        enrolled_ms: get_u64(row, 6, "node enrolled_ms")?,
    })
}

/// The node `id`, read inside `tx`.
pub(crate) fn load_node(
    tx: &mut Transaction<'_>,
    id: &str,
) -> Result<Option<NodeRecord>, StoreError> {
    let row = tx
        .query_opt(
            &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1"),
            &[&id],
        )
        .ctx(|| format!("reading node {id}"))?;
    row.map(|r| node_row(&r)?.decode()).transpose()
}

/// Adds `node` inside `tx` with its `enroll` audit entry, refusing an invalid or taken id,
/// a key of small order or one another node has, and an address another node holds.
pub(crate) fn insert_node(
    tx: &mut Transaction<'_>,
    at_ms: u64,
    node: &NodeRecord,
    invite_token_hash: Option<String>,
) -> Result<(), StoreError> {
    if !valid_node_id(&node.id) {
        return Err(StoreError::InvalidNodeId(node.id.clone()));
    }
    if load_node(tx, &node.id)?.is_some() {
        return Err(StoreError::NodeExists(node.id.clone()));
    }
    if node.wg_public_key.is_low_order() {
        return Err(StoreError::LowOrderKey {
            node: node.id.clone(),
            key: node.wg_public_key,
        });
    }
    let what = || format!("adding node {}", node.id);
    let key = node.wg_public_key.to_base64();
    let owner = tx
        .query_opt("SELECT id FROM nodes WHERE wg_public_key = $1", &[&key])
        .ctx(what)?;
    if let Some(owner) = owner {
        return Err(StoreError::WgKeyInUse {
            node: node.id.clone(),
            key: node.wg_public_key,
            owner: get(&owner, 0, "node id")?,
        });
    }
    let addresses = to_json(&node.addresses, || format!("node {} addresses", node.id))?;
    for address in &node.addresses {
        let ip = address.addr();
        if let Some(holder) = address_holder(tx, ip)? {
            return Err(StoreError::AddressInUse {
                node: node.id.clone(),
                address: ip,
                holder: format!("node {holder}"),
            });
        }
    }
    tx.execute(
        &format!("INSERT INTO nodes ({NODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
        &[
            &node.id,
            &key,
            &node.identity_key.to_base64(),
            &addresses,
            &node.endpoint,
            &pin_text(node.pin),
            &int(node.enrolled_ms, || format!("node {} enrolled_ms", node.id))?,
        ],
    )
    .ctx(what)?;
    for address in &node.addresses {
        tx.execute(
            "INSERT INTO node_addresses (address, node_id) VALUES ($1, $2)",
            &[&address.addr().to_string(), &node.id],
        )
        .ctx(what)?;
    }
    let entry = EnrollEntry {
        node: node.clone(),
        invite_token_hash,
    };
    append(tx, at_ms, AuditKind::Enroll, &entry)?;
    Ok(())
}

/// The node holding overlay address `ip`, if any.
pub(crate) fn address_holder(
    tx: &mut Transaction<'_>,
    ip: IpAddr,
) -> Result<Option<String>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT node_id FROM node_addresses WHERE address = $1",
            &[&ip.to_string()],
        )
        .ctx(|| format!("looking up the holder of address {ip}"))?;
    row.map(|r| get(&r, 0, "node_addresses node_id"))
        .transpose()
}

/// Every overlay address a node holds.
pub(crate) fn held_addresses(tx: &mut Transaction<'_>) -> Result<HashSet<IpAddr>, StoreError> {
    let rows = tx
        .query("SELECT address FROM node_addresses", &[])
        .ctx(|| "reading the held addresses".to_owned())?;
    rows.iter()
        .map(|r| {
            let text: String = get(r, 0, "node_addresses address")?;
            text.parse()
                .map_err(|e| corrupt(format!("node_addresses address {text:?}"), e))
        })
        .collect()
}

impl PgStore {
    /// See [`Store::add_node`](crate::store::Store::add_node).
    pub fn add_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        let now = self.now_ms();
        self.write(
            || format!("adding node {}", node.id),
            |tx| insert_node(tx, now, node, None),
        )
    }

    /// See [`Store::remove_node`](crate::store::Store::remove_node).
    pub fn remove_node(&self, id: &str) -> Result<bool, StoreError> {
        let what = || format!("removing node {id}");
        let now = self.now_ms();
        self.write(what, |tx| {
            if tx
                .execute("DELETE FROM nodes WHERE id = $1", &[&id])
                .ctx(what)?
                == 0
            {
                return Ok(false);
            }
            let entry = RemoveEntry {
                node_id: id.to_owned(),
            };
            append(tx, now, AuditKind::Remove, &entry)?;
            Ok(true)
        })
    }

    /// See [`Store::node`](crate::store::Store::node).
    pub fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.read(|| format!("reading node {id}"), |tx| load_node(tx, id))
    }

    /// See [`Store::nodes`](crate::store::Store::nodes).
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let what = || "reading the nodes".to_owned();
        self.read(what, |tx| {
            let rows = tx
                .query(
                    &format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"),
                    &[],
                )
                .ctx(what)?;
            rows.iter().map(|r| node_row(r)?.decode()).collect()
        })
    }

    /// See [`Store::set_pin`](crate::store::Store::set_pin).
    pub fn set_pin(&self, id: &str, pin: Option<Pin>) -> Result<(), StoreError> {
        let what = || format!("setting the pin of node {id}");
        let now = self.now_ms();
        self.write(what, |tx| {
            let previous = load_node(tx, id)?
                .ok_or_else(|| StoreError::NoSuchNode(id.to_owned()))?
                .pin;
            tx.execute(
                "UPDATE nodes SET pin = $2 WHERE id = $1",
                &[&id, &pin_text(pin)],
            )
            .ctx(what)?;
            let entry = PinEntry {
                node_id: id.to_owned(),
                pin,
                previous,
            };
            append(tx, now, AuditKind::Pin, &entry)?;
            Ok(())
        })
    }
}
