//! Undoing a recorded setup, in reverse order of application. Objects already gone count as
//! undone; each undone object leaves the state file at once, except routes, which leave it
//! together once all of them are deleted.

use super::apply::describe_rule;
use super::netlink::{self, Netlink};
use super::{firewall, object_error, sysctl, table_label};
use crate::host::command::{find_program, run};
use crate::host::dns::{self, DnsRecord};
use crate::host::routes::Family;
use crate::host::state::{RuleRecord, State, StateFile, SysctlRecord};
use crate::host::HostError;

/// Undoes everything in `state`. `index` is the interface's index when it still exists (its
/// addresses and routes are then deleted one by one); `None` means they went with the link.
/// Removes the state file once nothing is left; returns the failures.
pub async fn undo_all(
    state: &mut State,
    file: &StateFile,
    nl: &Netlink,
    index: Option<u32>,
) -> Vec<HostError> {
    let ifname = state.ifname.clone();
    let mut errors = Vec::new();

    if state.nft_table.is_some() {
        match delete_firewall(&ifname).await {
            Ok(()) => {
                state.nft_table = None;
                save(file, state, &mut errors).await;
            }
            Err(e) => errors.push(e),
        }
    }

    for record in state.rules.clone().into_iter().rev() {
        match delete_rule(nl, &ifname, &record).await {
            Ok(()) => {
                state.rules.retain(|r| *r != record);
                save(file, state, &mut errors).await;
            }
            Err(e) => errors.push(e),
        }
    }

    // Routes leave the file together, once all are deleted (a crash before that leaves
    // records of deleted routes, which a cleanup finds gone).
    let mut kept = Vec::new();
    for record in state.routes.iter().rev() {
        if let Some(index) = index {
            match nl.delete_route(index, &record.dest, record.table).await {
                Ok(()) => {}
                Err(e) if netlink::is_gone(&e) => {}
                Err(e) => {
                    let object =
                        format!("route {} table {}", record.dest, table_label(record.table));
                    errors.push(object_error(&ifname, "delete", object, e));
                    kept.push(record.clone());
                }
            }
        }
    }
    if kept.len() != state.routes.len() {
        kept.reverse();
        state.routes = kept;
        save(file, state, &mut errors).await;
    }

    for record in state.sysctls.clone().into_iter().rev() {
        match restore_sysctl(nl, &ifname, &record).await {
            Ok(()) => {
                state.sysctls.retain(|s| *s != record);
                save(file, state, &mut errors).await;
            }
            Err(e) => errors.push(e),
        }
    }

    if let Some(record) = state.dns.clone() {
        match revert_dns(&ifname, &record, index.is_some()).await {
            Ok(()) => {
                state.dns = None;
                save(file, state, &mut errors).await;
            }
            Err(e) => errors.push(e),
        }
    }

    for addr in state.addresses.clone().into_iter().rev() {
        if let Some(index) = index {
            match nl.delete_address(index, &addr).await {
                Ok(()) => {}
                Err(e) if netlink::is_gone(&e) => {}
                Err(e) => {
                    errors.push(object_error(
                        &ifname,
                        "delete",
                        format!("address {addr}"),
                        e,
                    ));
                    continue;
                }
            }
        }
        state.addresses.retain(|a| *a != addr);
        save(file, state, &mut errors).await;
    }

    if state.is_clean() {
        if let Err(e) = file.remove().await {
            errors.push(e);
        }
    }
    errors
}

/// Writes `state` to `file`, adding a failure to `errors`.
async fn save(file: &StateFile, state: &State, errors: &mut Vec<HostError>) {
    if let Err(e) = file.save(state).await {
        errors.push(e);
    }
}

/// Deletes one recorded rule; a rule already gone is fine.
pub async fn delete_rule(nl: &Netlink, ifname: &str, record: &RuleRecord) -> Result<(), HostError> {
    match nl
        .delete_rule(record.family, record.kind, record.priority)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if netlink::is_gone(&e) => Ok(()),
        Err(e) => Err(object_error(
            ifname,
            "delete",
            describe_rule(record.family, record.kind),
            e,
        )),
    }
}

async fn delete_firewall(ifname: &str) -> Result<(), HostError> {
    let Some(nft) = find_program("nft") else {
        // The table could only have been made with nft; without it there is nothing to do.
        return Ok(());
    };
    let json =
        serde_json::to_string(&firewall::delete(ifname)).map_err(|e| HostError::Command {
            ifname: ifname.to_owned(),
            command: "nft -j -f -".to_owned(),
            detail: format!("cannot encode the ruleset: {e}"),
        })?;
    run(ifname, &nft, &["-j", "-f", "-"], Some(json.as_bytes())).await?;
    Ok(())
}

/// Restores the old value, unless someone changed it since, or (for `src_valid_mark`) another
/// policy-routed default route still needs it.
async fn restore_sysctl(
    nl: &Netlink,
    ifname: &str,
    record: &SysctlRecord,
) -> Result<(), HostError> {
    let fail = |source| HostError::Sysctl {
        ifname: ifname.to_owned(),
        key: record.key.clone(),
        source,
    };
    let current = sysctl::read(&record.key).map_err(fail)?;
    if current != record.new {
        return Ok(());
    }
    if record.key == sysctl::SRC_VALID_MARK {
        let in_use = nl
            .any_suppress_rule(Family::V4)
            .await
            .map_err(|e| object_error(ifname, "list", "rules", e))?;
        if in_use {
            tracing::info!(
                interface = ifname,
                "leaving {} set: another default route uses it",
                record.key
            );
            return Ok(());
        }
    }
    sysctl::write(&record.key, &record.old).map_err(fail)
}

/// Reverts DNS. systemd-resolved forgets a link that is gone, so `resolvectl revert` failing
/// then is fine.
async fn revert_dns(ifname: &str, record: &DnsRecord, link_exists: bool) -> Result<(), HostError> {
    match dns::revert(ifname, record).await {
        Ok(()) => Ok(()),
        Err(_) if !link_exists && matches!(record, DnsRecord::Resolvectl { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
