//! The `invites` table: one-time enrollment tokens, stored only as their SHA-256. The rules
//! are written once ([`InviteRules`]); [`InviteSql`] is the SQL each backend provides
//! (SQLite here, PostgreSQL in `pg::invites`).

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use meshtun_proto::enroll::{invite_verifier, token_id, EnrollClaim, Enrollment};
use meshtun_proto::wire::{check_endpoint, valid_node_id};
use rusqlite::{params, Transaction};
use subtle::ConstantTimeEq;

use super::audit::{AuditKind, InviteEntry};
use super::audit_log::append;
use super::backend::{Backend, Tx, What};
use super::codec::{corrupt, from_json, int, to_json};
use super::error::SqlContext as _;
use super::nodes::insert_node;
use super::StoreError;
use crate::model::NodeRecord;
use crate::network::Network;

/// The hex SHA-256 of an invite token (its verifier,
/// [`invite_verifier`](meshtun_proto::enroll::invite_verifier)): the only form the store
/// keeps.
pub fn invite_token_hash(token: &str) -> String {
    hex::encode(invite_verifier(token))
}

/// An `invites` row.
pub(super) struct Invite {
    pub(super) node_id: String,
    pub(super) expires_ms: u64,
    pub(super) used_ms: Option<u64>,
    pub(super) addresses: Option<String>,
    pub(super) endpoint: Option<String>,
}

/// A new `invites` row, in its column types.
pub(super) struct NewInvite<'a> {
    pub(super) token_hash: &'a str,
    pub(super) node_id: &'a str,
    pub(super) created_ms: i64,
    pub(super) expires_ms: i64,
    pub(super) addresses: Option<&'a str>,
    pub(super) endpoint: Option<&'a str>,
}

/// The `invites` table's queries, on either backend.
pub(crate) trait InviteSql {
    /// Every invite issued for `node_id`, with its token hash.
    fn invites_for(&mut self, node_id: &str) -> Result<Vec<(String, Invite)>, StoreError>;
    /// Inserts `invite` unless its token hash exists; whether it was inserted.
    fn insert_invite(&mut self, invite: &NewInvite<'_>, what: What<'_>)
        -> Result<bool, StoreError>;
    /// Marks the invite used at `used_ms`.
    fn mark_invite_used(
        &mut self,
        token_hash: &str,
        used_ms: i64,
        what: What<'_>,
    ) -> Result<(), StoreError>;
    /// The node id and the addresses (JSON) of every unused invite other than `except`
    /// that expires after `now_ms` and assigns addresses.
    fn outstanding_invites(
        &mut self,
        now_ms: i64,
        except: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;
}

/// Issuing and redeeming invites, on every backend.
pub(crate) trait InviteRules: Backend {
    /// See [`Store::create_invite`](crate::store::Store::create_invite).
    fn create_invite(
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
        self.write_tx(what, |tx| {
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
            let now = self.now_ms();
            let row = NewInvite {
                token_hash: &token_hash,
                node_id,
                created_ms: int(now, || "invite created_ms".into())?,
                expires_ms: int(expires_ms, || {
                    format!("invite for node {node_id} expires_ms")
                })?,
                addresses: addresses_json.as_deref(),
                endpoint,
            };
            if !tx.insert_invite(&row, &what)? {
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
    fn redeem_invite(
        &self,
        enrollment: &Enrollment,
        network: &Network,
        now_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        let what = || "redeeming an invite".to_owned();
        self.write_tx(what, |tx| {
            redeem(tx, enrollment, network, now_ms, self.now_ms())
        })
    }
}

impl<B: Backend + ?Sized> InviteRules for B {}

/// [`InviteRules::redeem_invite`] inside `tx`, stamping the audit entry `stamp_ms`.
fn redeem(
    tx: &mut dyn Tx,
    enrollment: &Enrollment,
    network: &Network,
    now_ms: u64,
    stamp_ms: u64,
) -> Result<NodeRecord, StoreError> {
    let request = &enrollment.claim;
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
    let addresses = invite_addresses(tx, &invite, &token_hash, request, network, now_ms)?;
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
        membership_sig: request.membership_sig,
    };
    if record.addresses.is_empty() {
        return Err(StoreError::NoAddresses(record.id));
    }
    let used = int(now_ms, || "invite used_ms".into())?;
    tx.mark_invite_used(&token_hash, used, &|| "redeeming an invite".to_owned())?;
    insert_node(tx, stamp_ms, &record, Some(token_hash.clone()))?;
    Ok(record)
}

/// The addresses the redeemed invite's node gets: the admin's, or the request's, or the
/// next free one of each `network` prefix; checked against the plan and the addresses
/// other outstanding invites reserve (held node addresses are refused by [`insert_node`]).
fn invite_addresses(
    tx: &mut dyn Tx,
    invite: &Invite,
    token_hash: &str,
    request: &EnrollClaim,
    network: &Network,
    now_ms: u64,
) -> Result<Vec<IpNet>, StoreError> {
    let node = &invite.node_id;
    let mut held = reserved_by_invites(tx, token_hash, now_ms)?;
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
    check_addresses(node, &addresses, network, &held)?;
    Ok(addresses)
}

/// The invite for the claim's node id whose token id matches, with its token hash. A node
/// has few invites, and the token id is derived from the stored hash, so no column is
/// needed.
fn find_invite(tx: &mut dyn Tx, claim: &EnrollClaim) -> Result<(String, Invite), StoreError> {
    for (hash, invite) in tx.invites_for(&claim.node_id)? {
        // The token id is derived from the verifier: compared without a timing signal.
        let id = token_id(&parse_verifier(&hash)?);
        if bool::from(id.as_bytes().ct_eq(claim.token_id.as_bytes())) {
            return Ok((hash, invite));
        }
    }
    Err(StoreError::UnknownInvite)
}

/// The invite's verifier from its stored hex form.
pub(super) fn parse_verifier(hash: &str) -> Result<[u8; 32], StoreError> {
    let mut verifier = [0u8; 32];
    hex::decode_to_slice(hash, &mut verifier)
        .map_err(|e| corrupt("invite token_hash".to_owned(), e))?;
    Ok(verifier)
}

/// Checks `addresses` of `node` against the plan and the addresses outstanding invites
/// reserve (`reserved`: address → holder). Held node addresses are refused by
/// [`insert_node`].
pub(super) fn check_addresses(
    node: &str,
    addresses: &[IpNet],
    network: &Network,
    reserved: &HashMap<IpAddr, String>,
) -> Result<(), StoreError> {
    network
        .check(addresses)
        .map_err(|source| StoreError::Addresses {
            node: node.to_owned(),
            source,
        })?;
    if let Some((ip, holder)) = addresses
        .iter()
        .find_map(|a| reserved.get(&a.addr()).map(|h| (a.addr(), h)))
    {
        return Err(StoreError::AddressInUse {
            node: node.to_owned(),
            address: ip,
            holder: holder.clone(),
        });
    }
    Ok(())
}

/// The addresses that unused, unexpired invites other than `except` assign, with their
/// holder for messages.
fn reserved_by_invites(
    tx: &mut dyn Tx,
    except: &str,
    now_ms: u64,
) -> Result<HashMap<IpAddr, String>, StoreError> {
    let now = int(now_ms, || "now_ms".into())?;
    let mut reserved = HashMap::new();
    for (node, json) in tx.outstanding_invites(now, except)? {
        let nets: Vec<IpNet> = from_json(&json, || format!("invite for node {node} addresses"))?;
        for net in nets {
            reserved.insert(net.addr(), format!("the invite for node {node}"));
        }
    }
    Ok(reserved)
}

impl InviteSql for Transaction<'_> {
    fn invites_for(&mut self, node_id: &str) -> Result<Vec<(String, Invite)>, StoreError> {
        let what = || format!("reading the invites for node {node_id}");
        let mut stmt = self
            .prepare_cached(
                "SELECT token_hash, node_id, expires_ms, used_ms, addresses, endpoint \
                 FROM invites WHERE node_id = ?1",
            )
            .ctx(what)?;
        let rows = stmt
            .query_map([node_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Invite {
                        node_id: r.get(1)?,
                        expires_ms: r.get(2)?,
                        used_ms: r.get(3)?,
                        addresses: r.get(4)?,
                        endpoint: r.get(5)?,
                    },
                ))
            })
            .ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }

    fn insert_invite(&mut self, i: &NewInvite<'_>, what: What<'_>) -> Result<bool, StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO invites (token_hash, node_id, created_ms, expires_ms, addresses, \
                 endpoint) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (token_hash) DO NOTHING",
                params![
                    i.token_hash,
                    i.node_id,
                    i.created_ms,
                    i.expires_ms,
                    i.addresses,
                    i.endpoint
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
            "UPDATE invites SET used_ms = ?2 WHERE token_hash = ?1",
            params![token_hash, used_ms],
        )
        .ctx(what)?;
        Ok(())
    }

    fn outstanding_invites(
        &mut self,
        now_ms: i64,
        except: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let what = || "reading the addresses of outstanding invites".to_owned();
        let mut stmt = self
            .prepare_cached(
                "SELECT node_id, addresses FROM invites WHERE used_ms IS NULL \
                 AND expires_ms > ?1 AND addresses IS NOT NULL AND token_hash != ?2",
            )
            .ctx(what)?;
        let rows = stmt
            .query_map(params![now_ms, except], |r| Ok((r.get(0)?, r.get(1)?)))
            .ctx(what)?;
        rows.collect::<Result<Vec<_>, _>>().ctx(what)
    }
}

#[cfg(test)]
mod tests {
    use super::super::audit::EnrollEntry;
    use super::super::testutil::node;
    use super::*;
    use crate::store::Store;
    use meshtun_proto::enroll::{enrollment_key, EnrollRequest, Ticket};
    use meshtun_proto::report::describe;
    use meshtun_proto::{IdentityKey, PrivateKey};

    /// What a test node asks for; its keys are derived from `seed`.
    struct Req {
        seed: u8,
        addresses: Vec<IpNet>,
        endpoint: Option<String>,
    }

    fn wg_key(seed: u8) -> PrivateKey {
        PrivateKey::from_bytes([seed; 32])
    }

    fn request(seed: u8) -> Req {
        let (n, _) = node("ignored", seed);
        Req {
            seed,
            addresses: n.addresses,
            endpoint: n.endpoint,
        }
    }

    /// Redeems `token` as `meshtun join` would, with the proofs it computes.
    fn redeem(
        store: &Store,
        token: &str,
        req: &Req,
        now_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        let enrollment = EnrollRequest::decode(&serde_json::to_vec(&build(token, req)).unwrap());
        store.redeem_invite(&enrollment.unwrap(), &net(), now_ms)
    }

    /// The request `meshtun join` sends to redeem `token`.
    fn build(token: &str, req: &Req) -> EnrollRequest {
        let node_id = match token {
            "tok-c" => "node-c",
            "tok-d" => "node-d",
            _ => "node-a",
        };
        let controller = IdentityKey::from_bytes([99; 32]);
        let ticket = Ticket {
            url: "http://192.0.2.10:8700".into(),
            controller_key: controller.public(),
            enroll_key: enrollment_key(&controller).public_key(),
            node_id: node_id.into(),
            token: token.into(),
            expires_ms: 0,
            membership_key: None,
        };
        let (request, _) = EnrollRequest::build(
            &ticket,
            &wg_key(req.seed),
            &IdentityKey::from_bytes([req.seed; 32]),
            req.addresses.clone(),
            req.endpoint.clone(),
        )
        .unwrap();
        request
    }

    /// The tests' overlay: the test nodes' addresses are 10.0.0.SEED/32.
    fn net() -> Network {
        Network {
            ipv4: Some("10.0.0.0/24".parse().unwrap()),
            ipv6: Some("fd00:64::/64".parse().unwrap()),
        }
    }

    fn invite_rows(store: &Store) -> Vec<(String, Option<u64>)> {
        let sql = "SELECT token_hash || ' ' || COALESCE(CAST(used_ms AS TEXT), '-') \
                   FROM invites ORDER BY node_id";
        crate::store::testutil::query_strings(store, sql)
            .into_iter()
            .map(|row| {
                let (hash, used) = row.split_once(' ').unwrap();
                (hash.to_owned(), used.parse().ok())
            })
            .collect()
    }

    fn an_invite_enrolls_once_with_the_requests_addresses(store: Store) {
        store
            .create_invite("node-a", "secret-token", 5_000, None, None)
            .unwrap();
        let req = request(1);
        let node = redeem(&store, "secret-token", &req, 4_000).unwrap();
        assert_eq!(node.id, "node-a");
        assert_eq!(node.addresses, req.addresses);
        assert_eq!(node.endpoint, req.endpoint);
        assert_eq!(node.enrolled_ms, 4_000);
        assert_eq!(store.node("node-a").unwrap(), Some(node.clone()));
        let err = redeem(&store, "secret-token", &request(2), 4_001).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the invite for node node-a was already used at 4000 (invites are one-time)"
        );
        // The same keys again (a retry, or a replayed request) get the same node, and
        // nothing changes.
        let again = redeem(&store, "secret-token", &req, 4_002).unwrap();
        assert_eq!(again, node);
        assert_eq!(store.nodes().unwrap(), vec![node]);
    }

    fn only_the_tokens_hash_is_stored_and_audited(store: Store) {
        store
            .create_invite("node-a", "secret-token", 5_000, None, None)
            .unwrap();
        redeem(&store, "secret-token", &request(1), 4_000).unwrap();
        let hash = invite_token_hash("secret-token");
        assert_eq!(invite_rows(&store), vec![(hash.clone(), Some(4_000))]);
        let entries = store.audit_entries(1, 10).unwrap();
        assert!(entries.iter().all(|e| !e.entry.contains("secret-token")));
        assert_eq!(entries[0].kind, "invite");
        let enroll: EnrollEntry = serde_json::from_str(&entries[1].entry).unwrap();
        assert_eq!(enroll.invite_token_hash, Some(hash));
        store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
    }

    fn the_admins_addresses_and_endpoint_win(store: Store) {
        let assigned: Vec<IpNet> = vec!["10.0.0.9/32".parse().unwrap()];
        store
            .create_invite(
                "node-a",
                "tok",
                5_000,
                Some(&assigned),
                Some("203.0.113.1:51820"),
            )
            .unwrap();
        let node = redeem(&store, "tok", &request(1), 1).unwrap();
        assert_eq!(node.addresses, assigned);
        assert_eq!(node.endpoint.as_deref(), Some("203.0.113.1:51820"));
    }

    fn an_enrollment_without_any_address_gets_the_next_free_one_of_each_prefix(store: Store) {
        let (b, _) = node("node-b", 1);
        store.add_node(&b).unwrap();
        // An outstanding invite reserves 10.0.0.2 for node-c.
        let reserved: Vec<IpNet> = vec!["10.0.0.2/24".parse().unwrap()];
        store
            .create_invite("node-c", "tok-c", 5_000, Some(&reserved), None)
            .unwrap();
        store
            .create_invite("node-a", "tok", 5_000, None, None)
            .unwrap();
        let bare = Req {
            addresses: Vec::new(),
            ..request(3)
        };
        let a = redeem(&store, "tok", &bare, 1).unwrap();
        assert_eq!(
            a.addresses,
            vec![
                "10.0.0.3/24".parse::<IpNet>().unwrap(),
                "fd00:64::1/64".parse().unwrap()
            ]
        );
        // Nobody else may ask for the reserved address; its invite still gets it.
        store
            .create_invite("node-d", "tok-d", 5_000, None, None)
            .unwrap();
        let err = redeem(
            &store,
            "tok-d",
            &Req {
                addresses: reserved.clone(),
                ..request(4)
            },
            2,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "node node-d: address 10.0.0.2 is already held by the invite for node node-c"
        );
        let c = redeem(&store, "tok-c", &request(5), 3).unwrap();
        assert_eq!(c.addresses, reserved);
    }

    fn addresses_outside_the_plan_held_or_bad_endpoints_are_refused_and_nothing_changes(
        store: Store,
    ) {
        let (b, _) = node("node-b", 1);
        store.add_node(&b).unwrap();
        store
            .create_invite("node-a", "tok", 5_000, None, None)
            .unwrap();
        let asking = |addresses: &[&str], endpoint: Option<&str>| Req {
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            endpoint: endpoint.map(str::to_owned),
            ..request(2)
        };
        for (req, why) in [
            (
                asking(&["10.0.0.1/24"], None),
                "already held by node node-b",
            ),
            (asking(&["0.0.0.0/1"], None), "outside the overlay"),
            (asking(&["10.0.0.7/8"], None), "outside the overlay"),
        ] {
            let err = redeem(&store, "tok", &req, 1).unwrap_err();
            assert!(describe(&err).contains(why), "{err}");
        }
        assert_eq!(store.node("node-a").unwrap(), None);
        assert_eq!(invite_rows(&store)[0].1, None);
        store
            .verify_audit(&crate::store::testutil::trusted())
            .unwrap();
    }

    fn an_expired_invite_is_refused_and_stays_unused(store: Store) {
        store
            .create_invite("node-a", "tok", 5_000, None, None)
            .unwrap();
        let err = redeem(&store, "tok", &request(1), 5_000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the invite for node node-a expired at 5000 (now 5000); issue a new one"
        );
        assert_eq!(store.node("node-a").unwrap(), None);
        assert_eq!(invite_rows(&store)[0].1, None);
    }

    fn unknown_tokens_are_refused_without_echoing_them(store: Store) {
        store
            .create_invite("node-a", "tok", 5_000, None, None)
            .unwrap();
        let err = redeem(&store, "guess-123", &request(1), 1).unwrap_err();
        assert!(matches!(err, StoreError::UnknownInvite));
        assert!(!err.to_string().contains("guess-123"));
    }

    fn a_taken_wg_key_leaves_the_invite_usable(store: Store) {
        let (mut b, _) = node("node-b", 1);
        b.wg_public_key = wg_key(1).public_key();
        store.add_node(&b).unwrap();
        store
            .create_invite("node-a", "tok", 5_000, None, None)
            .unwrap();
        let err = redeem(&store, "tok", &request(1), 1).unwrap_err();
        assert!(
            err.to_string().contains("already used by node node-b"),
            "{err}"
        );
        assert_eq!(invite_rows(&store).iter().find(|r| r.1.is_some()), None);
        redeem(&store, "tok", &request(2), 2).unwrap();
    }

    fn invites_for_enrolled_or_invalid_ids_and_repeated_tokens_are_refused(store: Store) {
        let (a, _) = node("node-a", 1);
        store.add_node(&a).unwrap();
        let err = store
            .create_invite("node-a", "tok", 5_000, None, None)
            .unwrap_err();
        assert_eq!(err.to_string(), "node node-a already exists");
        let err = store
            .create_invite("../x", "tok", 5_000, None, None)
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidNodeId(_)));
        let err = store
            .create_invite("node-b", "", 5_000, None, None)
            .unwrap_err();
        assert!(matches!(err, StoreError::EmptyToken(_)));
        store
            .create_invite("node-b", "tok", 5_000, None, None)
            .unwrap();
        let err = store
            .create_invite("node-c", "tok", 5_000, None, None)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invite for node node-c: an invite with this token already exists"
        );
    }

    fn attack_a_claim_naming_an_invite_without_the_proof_of_its_token_is_refused(store: Store) {
        store
            .create_invite("node-a", "tok", 5_000, None, None)
            .unwrap();
        // The claim names the invite (its token id), but the proof is of another token.
        let mut forged = build("tok", &request(1));
        forged.token_mac = build("guess", &request(1)).token_mac;
        let enrollment = EnrollRequest::decode(&serde_json::to_vec(&forged).unwrap()).unwrap();
        let err = store.redeem_invite(&enrollment, &net(), 1).unwrap_err();
        assert!(
            matches!(&err, StoreError::BadInviteProof(node) if node == "node-a"),
            "{err}"
        );
        assert_eq!(store.node("node-a").unwrap(), None);
        assert_eq!(invite_rows(&store)[0].1, None);
        // The invite stays usable by whoever holds the token.
        redeem(&store, "tok", &request(1), 2).unwrap();
    }

    fn a_second_invite_for_an_id_enrolled_meanwhile_is_refused(store: Store) {
        store
            .create_invite("node-a", "one", 5_000, None, None)
            .unwrap();
        store
            .create_invite("node-a", "two", 5_000, None, None)
            .unwrap();
        redeem(&store, "one", &request(1), 1).unwrap();
        let err = redeem(&store, "two", &request(2), 2).unwrap_err();
        assert_eq!(err.to_string(), "node node-a already exists");
    }

    crate::store::testutil::on_both_backends!(
        an_invite_enrolls_once_with_the_requests_addresses,
        only_the_tokens_hash_is_stored_and_audited,
        the_admins_addresses_and_endpoint_win,
        an_enrollment_without_any_address_gets_the_next_free_one_of_each_prefix,
        addresses_outside_the_plan_held_or_bad_endpoints_are_refused_and_nothing_changes,
        an_expired_invite_is_refused_and_stays_unused,
        unknown_tokens_are_refused_without_echoing_them,
        a_taken_wg_key_leaves_the_invite_usable,
        invites_for_enrolled_or_invalid_ids_and_repeated_tokens_are_refused,
        a_second_invite_for_an_id_enrolled_meanwhile_is_refused,
        attack_a_claim_naming_an_invite_without_the_proof_of_its_token_is_refused,
    );
}
