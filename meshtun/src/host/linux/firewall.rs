//! The nftables rules that go with a policy-routed default route, as `wg-quick` installs
//! them, in one table `inet meshtun-IFNAME`:
//!
//! ```text
//! table inet meshtun-IF {
//!   chain preraw     { type filter hook prerouting  priority -300; }
//!   chain premangle  { type filter hook prerouting  priority -150; }
//!   chain postmangle { type filter hook postrouting priority -150; }
//!   # for each interface address of a family that has a default route:
//!   preraw:     iifname != "IF" ip daddr ADDR fib saddr type != local drop
//!   postmangle: meta l4proto udp mark MARK ct mark set mark
//!   premangle:  meta l4proto udp meta mark set ct mark
//! }
//! ```
//!
//! The first rule drops packets from elsewhere addressed to the tunnel's own addresses
//! (anti-spoofing); the other two copy the UDP socket's mark to the connection and back, so
//! that replies to the encrypted traffic also bypass the tunnel table. The ruleset is
//! applied with `nft -j -f -`; without `nft` it is skipped with a warning.

use std::borrow::Cow;
use std::collections::HashSet;

use ipnet::IpNet;
use nftables::batch::Batch;
use nftables::expr::{
    Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression, Payload, PayloadField, CT,
};
use nftables::schema::{Chain, NfListObject, Nftables, Rule, Table};
use nftables::stmt::{Mangle, Match, Operator, Statement};
use nftables::types::{NfChainType, NfFamily, NfHook};

use crate::host::routes::Family;

/// The table name for an interface.
pub fn table_name(ifname: &str) -> String {
    format!("meshtun-{ifname}")
}

fn table(name: &str) -> NfListObject<'static> {
    NfListObject::Table(Table {
        family: NfFamily::INet,
        name: Cow::Owned(name.to_owned()),
        handle: None,
    })
}

fn base_chain(table: &str, name: &'static str, hook: NfHook, prio: i32) -> NfListObject<'static> {
    NfListObject::Chain(Chain {
        family: NfFamily::INet,
        table: Cow::Owned(table.to_owned()),
        name: Cow::Borrowed(name),
        _type: Some(NfChainType::Filter),
        hook: Some(hook),
        prio: Some(prio),
        ..Chain::default()
    })
}

fn rule(table: &str, chain: &'static str, expr: Vec<Statement<'static>>) -> NfListObject<'static> {
    NfListObject::Rule(Rule {
        family: NfFamily::INet,
        table: Cow::Owned(table.to_owned()),
        chain: Cow::Borrowed(chain),
        expr: Cow::Owned(expr),
        ..Rule::default()
    })
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn ct_mark() -> Expression<'static> {
    Expression::Named(NamedExpression::CT(CT {
        key: Cow::Borrowed("mark"),
        family: None,
        dir: None,
    }))
}

fn matches(
    left: Expression<'static>,
    op: Operator,
    right: Expression<'static>,
) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn udp() -> Statement<'static> {
    matches(
        meta(MetaKey::L4proto),
        Operator::EQ,
        Expression::String(Cow::Borrowed("udp")),
    )
}

/// `iifname != "IF" ip daddr ADDR fib saddr type != local drop`.
fn anti_spoof(ifname: &str, addr: &IpNet) -> Vec<Statement<'static>> {
    let protocol = match addr {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    };
    let daddr = Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: Cow::Borrowed(protocol),
            field: Cow::Borrowed("daddr"),
        },
    )));
    let fib = Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: HashSet::from([FibFlag::Saddr]),
    }));
    vec![
        matches(
            meta(MetaKey::Iifname),
            Operator::NEQ,
            Expression::String(Cow::Owned(ifname.to_owned())),
        ),
        matches(
            daddr,
            Operator::EQ,
            Expression::String(Cow::Owned(addr.addr().to_string())),
        ),
        matches(
            fib,
            Operator::NEQ,
            Expression::String(Cow::Borrowed("local")),
        ),
        Statement::Drop(None),
    ]
}

/// The whole table for the families that have a default route, replacing any earlier
/// version of it atomically (`add table; delete table; add table; ...` in one batch).
pub fn ruleset(
    ifname: &str,
    fwmark: u32,
    families: &[Family],
    addresses: &[IpNet],
) -> Nftables<'static> {
    let name = table_name(ifname);
    let mut batch = Batch::new();
    batch.add(table(&name));
    batch.delete(table(&name));
    batch.add(table(&name));
    batch.add(base_chain(&name, "preraw", NfHook::Prerouting, -300));
    batch.add(base_chain(&name, "premangle", NfHook::Prerouting, -150));
    batch.add(base_chain(&name, "postmangle", NfHook::Postrouting, -150));
    for addr in addresses
        .iter()
        .filter(|a| families.contains(&Family::of(a)))
    {
        batch.add(rule(&name, "preraw", anti_spoof(ifname, addr)));
    }
    batch.add(rule(
        &name,
        "postmangle",
        vec![
            udp(),
            matches(
                meta(MetaKey::Mark),
                Operator::EQ,
                Expression::Number(fwmark),
            ),
            Statement::Mangle(Mangle {
                key: ct_mark(),
                value: meta(MetaKey::Mark),
            }),
        ],
    ));
    batch.add(rule(
        &name,
        "premangle",
        vec![
            udp(),
            Statement::Mangle(Mangle {
                key: meta(MetaKey::Mark),
                value: ct_mark(),
            }),
        ],
    ));
    batch.to_nftables()
}

/// Deletes the table; succeeds whether or not it exists (`add table; delete table`).
pub fn delete(ifname: &str) -> Nftables<'static> {
    let name = table_name(ifname);
    let mut batch = Batch::new();
    batch.add(table(&name));
    batch.delete(table(&name));
    batch.to_nftables()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn commands(nft: &Nftables) -> Vec<Value> {
        let value = serde_json::to_value(nft).unwrap();
        value["nftables"].as_array().unwrap().clone()
    }

    #[test]
    fn ruleset_recreates_the_table_with_three_base_chains() {
        let addrs: Vec<IpNet> = vec![
            "100.64.0.1/24".parse().unwrap(),
            "fd00::1/64".parse().unwrap(),
        ];
        let cmds = commands(&ruleset("mt0", 51820, &[Family::V4], &addrs));
        let table = json!({"table": {"family": "inet", "name": "meshtun-mt0"}});
        assert_eq!(cmds[0], json!({"add": table.clone()}));
        assert_eq!(cmds[1], json!({"delete": table.clone()}));
        assert_eq!(cmds[2], json!({"add": table}));
        assert_eq!(
            cmds[3],
            json!({"add": {"chain": {"family": "inet", "table": "meshtun-mt0", "name": "preraw",
                "type": "filter", "hook": "prerouting", "prio": -300}}})
        );
        assert_eq!(cmds[5]["add"]["chain"]["hook"], "postrouting");
        // Only the IPv4 address is protected: IPv6 has no default route here.
        let raw_rules: Vec<&Value> = cmds
            .iter()
            .filter(|c| c["add"]["rule"]["chain"] == "preraw")
            .collect();
        assert_eq!(raw_rules.len(), 1);
        assert_eq!(
            raw_rules[0]["add"]["rule"]["expr"],
            json!([
                {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "mt0"}},
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                    "right": "100.64.0.1"}},
                {"match": {"op": "!=", "left": {"fib": {"result": "type", "flags": ["saddr"]}},
                    "right": "local"}},
                {"drop": null}
            ])
        );
    }

    #[test]
    fn mark_rules_save_and_restore_the_connection_mark() {
        let cmds = commands(&ruleset("mt0", 51821, &[Family::V4, Family::V6], &[]));
        let post = cmds
            .iter()
            .find(|c| c["add"]["rule"]["chain"] == "postmangle")
            .unwrap();
        assert_eq!(
            post["add"]["rule"]["expr"],
            json!([
                {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "udp"}},
                {"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 51821}},
                {"mangle": {"key": {"ct": {"key": "mark"}}, "value": {"meta": {"key": "mark"}}}}
            ])
        );
        let pre = cmds
            .iter()
            .find(|c| c["add"]["rule"]["chain"] == "premangle")
            .unwrap();
        assert_eq!(
            pre["add"]["rule"]["expr"][1],
            json!({"mangle": {"key": {"meta": {"key": "mark"}}, "value": {"ct": {"key": "mark"}}}})
        );
    }

    #[test]
    fn delete_tolerates_a_missing_table() {
        let cmds = commands(&delete("mt0"));
        assert_eq!(cmds.len(), 2);
        assert!(cmds[0].get("add").is_some());
        assert!(cmds[1].get("delete").is_some());
    }
}
