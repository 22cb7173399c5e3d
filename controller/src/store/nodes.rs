//! The `nodes` and `node_addresses` tables: enrolled nodes, their addresses and pins. The
//! rules are written once ([`insert_node`], [`NodeRules`]); [`NodeSql`] is the SQL each
//! backend provides (SQLite here, PostgreSQL in `pg::nodes`).

use std::collections::HashSet;
use std::net::IpAddr;

use meshtun_proto::membership::MembershipSig;
use meshtun_proto::wire::valid_node_id;
use meshtun_proto::{IdentityPublic, PublicKey};
use rusqlite::{params, OptionalExtension as _, Row, Transaction};

use super::audit::{AuditKind, EnrollEntry, PinEntry, RemoveEntry};
use super::audit_log::{append, AuditSql};
use super::backend::{Backend, What};
use super::codec::{corrupt, from_json, int, parse_pin, pin_text, to_json};
use super::error::SqlContext as _;
use super::StoreError;
use crate::model::{NodeRecord, Pin};

pub(super) const NODE_COLUMNS: &str =
    "id, wg_public_key, identity_key, addresses, endpoint, pin, enrolled_ms, membership_sig";

/// A `nodes` row as stored, before decoding (and as inserted, `enrolled_ms` aside).
pub(super) struct NodeRow {
    pub(super) id: String,
    pub(super) wg_public_key: String,
    pub(super) identity_key: String,
    pub(super) addresses: String,
    pub(super) endpoint: Option<String>,
    pub(super) pin: Option<String>,
    pub(super) enrolled_ms: u64,
    /// Base64, as [`MembershipSig::to_base64`] writes it.
    pub(super) membership_sig: Option<String>,
}

impl NodeRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            wg_public_key: row.get(1)?,
            identity_key: row.get(2)?,
            addresses: row.get(3)?,
            endpoint: row.get(4)?,
            pin: row.get(5)?,
            enrolled_ms: row.get(6)?,
            membership_sig: row.get(7)?,
        })
    }

    pub(super) fn decode(self) -> Result<NodeRecord, StoreError> {
        let id = self.id;
        let col = |c: &str| format!("node {id} {c}");
        Ok(NodeRecord {
            wg_public_key: PublicKey::from_base64(&self.wg_public_key)
                .map_err(|e| corrupt(col("wg_public_key"), e))?,
            identity_key: IdentityPublic::from_base64(&self.identity_key)
                .map_err(|e| corrupt(col("identity_key"), e))?,
            addresses: from_json(&self.addresses, || col("addresses"))?,
            endpoint: self.endpoint,
            pin: parse_pin(self.pin.as_deref(), || col("pin"))?,
            enrolled_ms: self.enrolled_ms,
            membership_sig: self
                .membership_sig
                .as_deref()
                .map(MembershipSig::from_base64)
                .transpose()
                .map_err(|e| corrupt(col("membership_sig"), e))?,
            id,
        })
    }
}

/// The node tables' queries, on either backend.
pub(crate) trait NodeSql {
    /// The node `id`.
    fn load_node(&mut self, id: &str) -> Result<Option<NodeRecord>, StoreError>;
    /// Every node, sorted by id.
    fn all_nodes(&mut self, what: What<'_>) -> Result<Vec<NodeRecord>, StoreError>;
    /// The node whose WireGuard key is `key` (base64).
    fn wg_key_owner(&mut self, key: &str, what: What<'_>) -> Result<Option<String>, StoreError>;
    /// The node holding overlay address `ip`, if any.
    fn address_holder(&mut self, ip: IpAddr) -> Result<Option<String>, StoreError>;
    /// Every overlay address a node holds.
    fn held_addresses(&mut self) -> Result<HashSet<IpAddr>, StoreError>;
    /// Inserts a `nodes` row (the row's `enrolled_ms` is `enrolled_ms`) and one
    /// `node_addresses` row per address in `addresses`.
    fn insert_node_rows(
        &mut self,
        row: &NodeRow,
        enrolled_ms: i64,
        addresses: &[IpAddr],
        what: What<'_>,
    ) -> Result<(), StoreError>;
    /// Deletes the node `id` (its addresses and benchmarks go with it); how many rows.
    fn delete_node(&mut self, id: &str, what: What<'_>) -> Result<u64, StoreError>;
    /// Sets the node's pin column.
    fn update_pin(&mut self, id: &str, pin: Option<&str>, what: What<'_>)
        -> Result<(), StoreError>;
}

/// Adds `node` inside `tx` with its `enroll` audit entry, refusing an invalid or taken id,
/// a key of small order or one another node has, and an address another node holds.
pub(crate) fn insert_node(
    tx: &mut (impl NodeSql + AuditSql + ?Sized),
    at_ms: u64,
    node: &NodeRecord,
    invite_token_hash: Option<String>,
) -> Result<(), StoreError> {
    if !valid_node_id(&node.id) {
        return Err(StoreError::InvalidNodeId(node.id.clone()));
    }
    if tx.load_node(&node.id)?.is_some() {
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
    if let Some(owner) = tx.wg_key_owner(&key, &what)? {
        return Err(StoreError::WgKeyInUse {
            node: node.id.clone(),
            key: node.wg_public_key,
            owner,
        });
    }
    let addresses = to_json(&node.addresses, || format!("node {} addresses", node.id))?;
    for address in &node.addresses {
        let ip = address.addr();
        if let Some(holder) = tx.address_holder(ip)? {
            return Err(StoreError::AddressInUse {
                node: node.id.clone(),
                address: ip,
                holder: format!("node {holder}"),
            });
        }
    }
    let row = NodeRow {
        id: node.id.clone(),
        wg_public_key: key,
        identity_key: node.identity_key.to_base64(),
        addresses,
        endpoint: node.endpoint.clone(),
        pin: pin_text(node.pin).map(str::to_owned),
        enrolled_ms: node.enrolled_ms,
        membership_sig: node.membership_sig.map(|s| s.to_base64()),
    };
    let enrolled = int(node.enrolled_ms, || format!("node {} enrolled_ms", node.id))?;
    let ips: Vec<IpAddr> = node.addresses.iter().map(|a| a.addr()).collect();
    tx.insert_node_rows(&row, enrolled, &ips, &what)?;
    let entry = EnrollEntry {
        node: node.clone(),
        invite_token_hash,
    };
    append(tx, at_ms, AuditKind::Enroll, &entry)?;
    Ok(())
}

/// Adding, removing, reading and pinning nodes, on every backend.
pub(crate) trait NodeRules: Backend {
    /// Enrolls a node directly (without an invite). Refuses an invalid id, an id already
    /// enrolled and a WireGuard key another node has.
    fn add_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.write_tx(
            || format!("adding node {}", node.id),
            |tx| insert_node(tx, self.now_ms(), node, None),
        )
    }

    /// Removes a node and its stored benchmarks (the audit log keeps them). `false` if no
    /// such node was enrolled.
    fn remove_node(&self, id: &str) -> Result<bool, StoreError> {
        let what = || format!("removing node {id}");
        self.write_tx(what, |tx| {
            if tx.delete_node(id, &what)? == 0 {
                return Ok(false);
            }
            let entry = RemoveEntry {
                node_id: id.to_owned(),
            };
            append(tx, self.now_ms(), AuditKind::Remove, &entry)?;
            Ok(true)
        })
    }

    /// The node `id`, if enrolled.
    fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.read_tx(|| format!("reading node {id}"), |tx| tx.load_node(id))
    }

    /// Every enrolled node, sorted by id.
    fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let what = || "reading the nodes".to_owned();
        self.read_tx(what, |tx| tx.all_nodes(&what))
    }

    /// Sets (`Some`) or clears (`None`) a node's pin.
    fn set_pin(&self, id: &str, pin: Option<Pin>) -> Result<(), StoreError> {
        let what = || format!("setting the pin of node {id}");
        self.write_tx(what, |tx| {
            let previous = tx
                .load_node(id)?
                .ok_or_else(|| StoreError::NoSuchNode(id.to_owned()))?
                .pin;
            tx.update_pin(id, pin_text(pin), &what)?;
            let entry = PinEntry {
                node_id: id.to_owned(),
                pin,
                previous,
            };
            append(tx, self.now_ms(), AuditKind::Pin, &entry)?;
            Ok(())
        })
    }
}

impl<B: Backend + ?Sized> NodeRules for B {}

impl NodeSql for Transaction<'_> {
    fn load_node(&mut self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let what = || format!("reading node {id}");
        self.query_row(
            &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = ?1"),
            [id],
            NodeRow::read,
        )
        .optional()
        .ctx(what)?
        .map(NodeRow::decode)
        .transpose()
    }

    fn all_nodes(&mut self, what: What<'_>) -> Result<Vec<NodeRecord>, StoreError> {
        let mut stmt = self
            .prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"))
            .ctx(what)?;
        let rows = stmt.query_map([], NodeRow::read).ctx(what)?;
        let rows = rows.collect::<Result<Vec<_>, _>>().ctx(what)?;
        rows.into_iter().map(NodeRow::decode).collect()
    }

    fn wg_key_owner(&mut self, key: &str, what: What<'_>) -> Result<Option<String>, StoreError> {
        self.query_row(
            "SELECT id FROM nodes WHERE wg_public_key = ?1",
            [key],
            |r| r.get(0),
        )
        .optional()
        .ctx(what)
    }

    fn address_holder(&mut self, ip: IpAddr) -> Result<Option<String>, StoreError> {
        self.query_row(
            "SELECT node_id FROM node_addresses WHERE address = ?1",
            [ip.to_string()],
            |r| r.get(0),
        )
        .optional()
        .ctx(|| format!("looking up the holder of address {ip}"))
    }

    fn held_addresses(&mut self) -> Result<HashSet<IpAddr>, StoreError> {
        let what = || "reading the held addresses".to_owned();
        let mut stmt = self
            .prepare_cached("SELECT address FROM node_addresses")
            .ctx(what)?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0)).ctx(what)?;
        let mut held = HashSet::new();
        for row in rows {
            let text = row.ctx(what)?;
            let ip = text
                .parse()
                .map_err(|e| corrupt(format!("node_addresses address {text:?}"), e))?;
            held.insert(ip);
        }
        Ok(held)
    }

    fn insert_node_rows(
        &mut self,
        row: &NodeRow,
        enrolled_ms: i64,
        addresses: &[IpAddr],
        what: What<'_>,
    ) -> Result<(), StoreError> {
        self.execute(
            &format!("INSERT INTO nodes ({NODE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
            params![
                row.id,
                row.wg_public_key,
                row.identity_key,
                row.addresses,
                row.endpoint,
                row.pin,
                enrolled_ms,
                row.membership_sig,
            ],
        )
        .ctx(what)?;
        for ip in addresses {
            // The primary key refuses a second holder even if the check were skipped.
            self.execute(
                "INSERT INTO node_addresses (address, node_id) VALUES (?1, ?2)",
                params![ip.to_string(), row.id],
            )
            .ctx(what)?;
        }
        Ok(())
    }

    fn delete_node(&mut self, id: &str, what: What<'_>) -> Result<u64, StoreError> {
        let n = self
            .execute("DELETE FROM nodes WHERE id = ?1", [id])
            .ctx(what)?;
        Ok(n as u64)
    }

    fn update_pin(
        &mut self,
        id: &str,
        pin: Option<&str>,
        what: What<'_>,
    ) -> Result<(), StoreError> {
        self.execute("UPDATE nodes SET pin = ?2 WHERE id = ?1", params![id, pin])
            .ctx(what)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{bench_path, benchmark, node};
    use super::*;
    use crate::store::Store;

    fn audit_kinds(store: &Store) -> Vec<String> {
        store
            .audit_entries(1, 100)
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    fn nodes_are_added_read_back_and_listed_by_id(store: Store) {
        let (b, _) = node("node-b", 2);
        let (a, _) = node("node-a", 1);
        store.add_node(&b).unwrap();
        store.add_node(&a).unwrap();
        assert_eq!(store.node("node-a").unwrap(), Some(a.clone()));
        assert_eq!(store.node("node-c").unwrap(), None);
        assert_eq!(store.nodes().unwrap(), vec![a, b]);
        assert_eq!(audit_kinds(&store), ["enroll", "enroll"]);
    }

    fn duplicate_ids_and_keys_are_refused_and_nothing_changes(store: Store) {
        let (a, _) = node("node-a", 1);
        store.add_node(&a).unwrap();
        let (mut again, _) = node("node-a", 2);
        let err = store.add_node(&again).unwrap_err();
        assert_eq!(err.to_string(), "node node-a already exists");
        again.id = "node-z".into();
        again.wg_public_key = a.wg_public_key;
        let err = store.add_node(&again).unwrap_err().to_string();
        assert!(err.starts_with("node node-z: WireGuard key"), "{err}");
        assert!(err.ends_with("is already used by node node-a"), "{err}");
        assert_eq!(store.nodes().unwrap(), vec![a]);
        assert_eq!(audit_kinds(&store), ["enroll"]);
    }

    fn an_address_held_by_one_node_is_refused_to_another_and_freed_on_removal(store: Store) {
        let (a, _) = node("node-a", 1);
        store.add_node(&a).unwrap();
        let (mut b, _) = node("node-b", 2);
        // The same address with another prefix length is the same address.
        b.addresses = vec![ipnet::IpNet::new(a.addresses[0].addr(), 24).unwrap()];
        let err = store.add_node(&b).unwrap_err().to_string();
        assert!(err.ends_with("is already held by node node-a"), "{err}");
        assert_eq!(store.nodes().unwrap(), vec![a.clone()]);
        // The database itself refuses a second holder.
        let dup = crate::store::testutil::execute(
            &store,
            &format!(
                "INSERT INTO node_addresses (address, node_id) VALUES ('{}', 'node-a')",
                a.addresses[0].addr()
            ),
        );
        assert!(dup.is_err());
        store.remove_node("node-a").unwrap();
        store.add_node(&b).unwrap();
    }

    fn attack_19_a_wireguard_key_of_small_order_is_never_stored(store: Store) {
        let (mut a, _) = node("node-a", 1);
        for key in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            a.wg_public_key = PublicKey::from_bytes(key);
            let err = store.add_node(&a).unwrap_err().to_string();
            assert!(err.contains("is of small order"), "{err}");
        }
        assert!(store.nodes().unwrap().is_empty());
    }

    fn invalid_ids_are_refused(store: Store) {
        let (bad, _) = node("Node A", 1);
        let err = store.add_node(&bad).unwrap_err().to_string();
        assert!(err.starts_with("node id \"Node A\" is not valid"), "{err}");
    }

    fn removing_a_node_drops_its_benchmarks_but_not_their_audit(store: Store) {
        let (a, key) = node("node-a", 1);
        store.add_node(&a).unwrap();
        let (rec, body, sig) = benchmark(&key, "node-a", 1, 0.9);
        store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &rec,
                &body,
                &sig,
                &bench_path("node-a"),
            )
            .unwrap();
        assert!(store.remove_node("node-a").unwrap());
        assert!(!store.remove_node("node-a").unwrap());
        assert_eq!(store.node("node-a").unwrap(), None);
        assert!(store.benchmarks("node-a", 10).unwrap().is_empty());
        assert_eq!(audit_kinds(&store), ["enroll", "benchmark", "remove"]);
        store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
    }

    fn a_removed_id_can_enroll_again_with_new_keys(store: Store) {
        let (a, _) = node("node-a", 1);
        store.add_node(&a).unwrap();
        store.remove_node("node-a").unwrap();
        let (fresh, key) = node("node-a", 9);
        store.add_node(&fresh).unwrap();
        let (rec, body, sig) = benchmark(&key, "node-a", 1, 0.9);
        store
            .insert_benchmark(
                &crate::store::testutil::controller(),
                &rec,
                &body,
                &sig,
                &bench_path("node-a"),
            )
            .unwrap();
        // The benchmark verifies against the key of the second enrollment.
        assert_eq!(
            store
                .verify_audit(&crate::store::testutil::trusted())
                .unwrap()
                .signatures_verified,
            1
        );
    }

    fn pins_are_set_cleared_and_audited(store: Store) {
        let (a, _) = node("node-a", 1);
        store.add_node(&a).unwrap();
        store.set_pin("node-a", Some(Pin::Allow)).unwrap();
        assert_eq!(store.node("node-a").unwrap().unwrap().pin, Some(Pin::Allow));
        store.set_pin("node-a", None).unwrap();
        assert_eq!(store.node("node-a").unwrap().unwrap().pin, None);
        let err = store.set_pin("node-x", Some(Pin::Deny)).unwrap_err();
        assert_eq!(err.to_string(), "node node-x does not exist");
        let last = store.audit_entries(3, 1).unwrap().remove(0);
        let entry: PinEntry = serde_json::from_str(&last.entry).unwrap();
        assert_eq!(entry.previous, Some(Pin::Allow));
        assert_eq!(entry.pin, None);
    }

    fn corrupt_rows_are_reported_by_node_and_column(store: Store) {
        let (a, _) = node("node-a", 1);
        store.add_node(&a).unwrap();
        crate::store::testutil::execute(
            &store,
            "UPDATE nodes SET identity_key = 'zz' WHERE id = 'node-a'",
        )
        .unwrap();
        let err = store.node("node-a").unwrap_err().to_string();
        assert!(err.starts_with("corrupt node node-a identity_key"), "{err}");
    }

    fn membership_signatures_round_trip_and_a_corrupt_one_is_named(store: Store) {
        let key = meshtun_proto::membership::MembershipKey::generate();
        let (mut a, _) = node("node-a", 1);
        a.membership_sig = key.sign("node-a", &a.wg_public_key, &a.identity_key).ok();
        assert!(a.membership_sig.is_some());
        let (b, _) = node("node-b", 2);
        store.add_node(&a).unwrap();
        store.add_node(&b).unwrap();
        assert_eq!(store.nodes().unwrap(), vec![a, b]);
        crate::store::testutil::execute(
            &store,
            "UPDATE nodes SET membership_sig = 'zz' WHERE id = 'node-a'",
        )
        .unwrap();
        let err = store.node("node-a").unwrap_err().to_string();
        assert!(
            err.starts_with("corrupt node node-a membership_sig"),
            "{err}"
        );
    }

    crate::store::testutil::on_both_backends!(
        membership_signatures_round_trip_and_a_corrupt_one_is_named,
        nodes_are_added_read_back_and_listed_by_id,
        duplicate_ids_and_keys_are_refused_and_nothing_changes,
        an_address_held_by_one_node_is_refused_to_another_and_freed_on_removal,
        attack_19_a_wireguard_key_of_small_order_is_never_stored,
        invalid_ids_are_refused,
        removing_a_node_drops_its_benchmarks_but_not_their_audit,
        a_removed_id_can_enroll_again_with_new_keys,
        pins_are_set_cleared_and_audited,
        corrupt_rows_are_reported_by_node_and_column,
    );
}
