//! The `nodes` and `node_addresses` tables' SQL on PostgreSQL (the rules are in
//! [`super::super::nodes`]).

use std::collections::HashSet;
use std::net::IpAddr;

use postgres::{Row, Transaction};

use super::super::backend::What;
use super::super::codec::corrupt;
use super::super::error::SqlContext as _;
use super::super::nodes::{NodeRow, NodeSql, NODE_COLUMNS};
use super::super::StoreError;
use super::{get, get_u64};
use crate::model::NodeRecord;

fn node_row(row: &Row) -> Result<NodeRow, StoreError> {
    Ok(NodeRow {
        id: get(row, 0, "node id")?,
        wg_public_key: get(row, 1, "node wg_public_key")?,
        identity_key: get(row, 2, "node identity_key")?,
        addresses: get(row, 3, "node addresses")?,
        endpoint: get(row, 4, "node endpoint")?,
        pin: get(row, 5, "node pin")?,
        enrolled_ms: get_u64(row, 6, "node enrolled_ms")?,
        membership_sig: get(row, 7, "node membership_sig")?,
    })
}

impl NodeSql for Transaction<'_> {
    fn load_node(&mut self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let row = self
            .query_opt(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1"),
                &[&id],
            )
            .ctx(|| format!("reading node {id}"))?;
        row.map(|r| node_row(&r)?.decode()).transpose()
    }

    fn all_nodes(&mut self, what: What<'_>) -> Result<Vec<NodeRecord>, StoreError> {
        let rows = self
            .query(
                &format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"),
                &[],
            )
            .ctx(what)?;
        rows.iter().map(|r| node_row(r)?.decode()).collect()
    }

    fn wg_key_owner(&mut self, key: &str, what: What<'_>) -> Result<Option<String>, StoreError> {
        let owner = self
            .query_opt("SELECT id FROM nodes WHERE wg_public_key = $1", &[&key])
            .ctx(what)?;
        owner.map(|r| get(&r, 0, "node id")).transpose()
    }

    fn address_holder(&mut self, ip: IpAddr) -> Result<Option<String>, StoreError> {
        let row = self
            .query_opt(
                "SELECT node_id FROM node_addresses WHERE address = $1",
                &[&ip.to_string()],
            )
            .ctx(|| format!("looking up the holder of address {ip}"))?;
        row.map(|r| get(&r, 0, "node_addresses node_id"))
            .transpose()
    }

    fn held_addresses(&mut self) -> Result<HashSet<IpAddr>, StoreError> {
        let rows = self
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

    fn insert_node_rows(
        &mut self,
        row: &NodeRow,
        enrolled_ms: i64,
        addresses: &[IpAddr],
        what: What<'_>,
    ) -> Result<(), StoreError> {
        self.execute(
            &format!("INSERT INTO nodes ({NODE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"),
            &[
                &row.id,
                &row.wg_public_key,
                &row.identity_key,
                &row.addresses,
                &row.endpoint,
                &row.pin,
                &enrolled_ms,
                &row.membership_sig,
            ],
        )
        .ctx(what)?;
        for ip in addresses {
            self.execute(
                "INSERT INTO node_addresses (address, node_id) VALUES ($1, $2)",
                &[&ip.to_string(), &row.id],
            )
            .ctx(what)?;
        }
        Ok(())
    }

    fn delete_node(&mut self, id: &str, what: What<'_>) -> Result<u64, StoreError> {
        self.execute("DELETE FROM nodes WHERE id = $1", &[&id])
            .ctx(what)
    }

    fn update_pin(
        &mut self,
        id: &str,
        pin: Option<&str>,
        what: What<'_>,
    ) -> Result<(), StoreError> {
        self.execute("UPDATE nodes SET pin = $2 WHERE id = $1", &[&id, &pin])
            .ctx(what)?;
        Ok(())
    }
}
