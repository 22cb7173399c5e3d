//! The steps of applying a plan. Each records its object in the state file before touching
//! the system, and drops the record again if the system refused it.

use std::collections::HashSet;

use ipnet::IpNet;

use super::netlink::{self, Netlink};
use super::{firewall, object_error, sysctl, table_label};
use crate::host::command::{find_program, run};
use crate::host::dns;
use crate::host::routes::{
    first_free_table, placement, sorted_routes, Family, Placement, MAIN_TABLE,
};
use crate::host::state::{RouteRecord, RuleKind, RuleRecord, SysctlRecord};
use crate::host::{HostError, HostSetup, RouteTable};

/// How a rule is written by `ip rule`.
pub fn describe_rule(family: Family, kind: RuleKind) -> String {
    let flag = family.flag();
    match kind {
        RuleKind::NotFwmark { fwmark, table } => {
            format!("{flag} rule not fwmark {fwmark:#x} table {table}")
        }
        RuleKind::SuppressMainDefault => format!("{flag} rule table main suppress_prefixlength 0"),
    }
}

impl HostSetup {
    /// Addresses, MTU and link up, DNS, then the routes, in `wg-quick`'s order.
    pub(super) async fn bring_up(&mut self, nl: &Netlink, index: u32) -> Result<(), HostError> {
        for addr in self.plan.addresses.clone() {
            self.add_address(nl, index, addr).await?;
        }
        // A device created beforehand keeps the MTU and link state it was given.
        if !self.plan.existing_link {
            let mtu = u32::from(self.plan.mtu);
            nl.set_mtu_up(index, mtu).await.map_err(|e| {
                object_error(&self.plan.ifname, "set", format!("link mtu {mtu} up"), e)
            })?;
        }
        if !self.plan.dns.is_empty() {
            self.set_dns().await?;
        }
        let covering = self.main_routes_via(nl, index).await?;
        self.add_routes(nl, index, &sorted_routes(&self.plan.routes), &covering)
            .await
    }

    /// Adds `dests` (sorted longest prefix first) as [`HostSetup::add_route`] would, with
    /// one state file write for all the plain routes, before any is added (and one more if
    /// one fails: it and those not tried are forgotten). Policy-routed default routes, which
    /// bring rules and a firewall with them, go one by one after them.
    pub(super) async fn add_routes(
        &mut self,
        nl: &Netlink,
        index: u32,
        dests: &[IpNet],
        covering: &[IpNet],
    ) -> Result<(), HostError> {
        let mut batch = Vec::new();
        let mut defaults = Vec::new();
        for dest in dests {
            match placement(dest, self.plan.table) {
                None => {}
                Some(Placement::Table(table)) => batch.push(RouteRecord { dest: *dest, table }),
                Some(Placement::Main) if covering.iter().any(|net| net.contains(dest)) => {
                    tracing::debug!(interface = %self.plan.ifname, route = %dest, "already routed");
                }
                Some(Placement::Main) => batch.push(RouteRecord {
                    dest: *dest,
                    table: MAIN_TABLE,
                }),
                Some(Placement::PolicyDefault) => defaults.push(*dest),
            }
        }
        if !batch.is_empty() {
            self.state.routes.extend(batch.iter().cloned());
            self.save().await?;
            for (i, record) in batch.iter().enumerate() {
                match nl.add_route(index, &record.dest, record.table).await {
                    Ok(()) => {}
                    Err(e) if netlink::is_exists(&e) => {}
                    Err(e) => {
                        let untried: HashSet<(IpNet, u32)> =
                            batch[i..].iter().map(|r| (r.dest, r.table)).collect();
                        self.state
                            .routes
                            .retain(|r| !untried.contains(&(r.dest, r.table)));
                        self.save().await?;
                        let object =
                            format!("route {} table {}", record.dest, table_label(record.table));
                        return Err(object_error(&self.plan.ifname, "add", object, e));
                    }
                }
            }
        }
        for dest in defaults {
            self.add_route(nl, index, &dest, covering).await?;
        }
        Ok(())
    }

    async fn add_address(
        &mut self,
        nl: &Netlink,
        index: u32,
        addr: IpNet,
    ) -> Result<(), HostError> {
        self.state.addresses.push(addr);
        self.save().await?;
        match nl.add_address(index, &addr).await {
            Ok(()) => Ok(()),
            Err(e) if netlink::is_exists(&e) => Ok(()),
            Err(e) => {
                self.state.addresses.retain(|a| *a != addr);
                self.save().await?;
                Err(object_error(
                    &self.plan.ifname,
                    "add",
                    format!("address {addr}"),
                    e,
                ))
            }
        }
    }

    async fn set_dns(&mut self) -> Result<(), HostError> {
        let record = dns::detect(&self.plan.ifname)?;
        self.state.dns = Some(record.clone());
        self.save().await?;
        // A partial failure keeps the record, so that the rollback reverts what was set.
        dns::apply(&self.plan.ifname, &self.plan.dns, &record).await
    }

    /// Adds one route where [`placement`] puts it. `covering` lists the main-table routes
    /// through the interface (see [`HostSetup::main_routes_via`]): a route inside one of them
    /// is not added again, as `wg-quick` checks with `ip route show dev IF match DEST`.
    pub(super) async fn add_route(
        &mut self,
        nl: &Netlink,
        index: u32,
        dest: &IpNet,
        covering: &[IpNet],
    ) -> Result<(), HostError> {
        match placement(dest, self.plan.table) {
            None => Ok(()),
            Some(Placement::Table(table)) => self.install_route(nl, index, dest, table).await,
            Some(Placement::Main) => {
                if covering.iter().any(|net| net.contains(dest)) {
                    tracing::debug!(interface = %self.plan.ifname, route = %dest, "already routed");
                    return Ok(());
                }
                self.install_route(nl, index, dest, MAIN_TABLE).await
            }
            Some(Placement::PolicyDefault) => {
                let table = self.default_table(nl).await?;
                self.install_route(nl, index, dest, table).await?;
                self.ensure_policy(nl, Family::of(dest), table).await
            }
        }
    }

    /// The main-table routes through the interface (its own prefix routes and routes added
    /// before). Routes are added longest prefix first, so none added in the same pass can
    /// contain a later one: one listing per pass is enough.
    pub(super) async fn main_routes_via(
        &self,
        nl: &Netlink,
        index: u32,
    ) -> Result<Vec<IpNet>, HostError> {
        if self.plan.table != RouteTable::Auto {
            return Ok(Vec::new());
        }
        let routes = nl
            .routes()
            .await
            .map_err(|e| object_error(&self.plan.ifname, "list", "routes", e))?;
        Ok(routes
            .into_iter()
            .filter(|(_, table, oif)| *table == MAIN_TABLE && *oif == Some(index))
            .map(|(net, _, _)| net)
            .collect())
    }

    async fn install_route(
        &mut self,
        nl: &Netlink,
        index: u32,
        dest: &IpNet,
        table: u32,
    ) -> Result<(), HostError> {
        let record = RouteRecord { dest: *dest, table };
        self.state.routes.push(record.clone());
        self.save().await?;
        match nl.add_route(index, dest, table).await {
            Ok(()) => Ok(()),
            Err(e) if netlink::is_exists(&e) => Ok(()),
            Err(e) => {
                self.state.routes.retain(|r| *r != record);
                self.save().await?;
                let object = format!("route {dest} table {}", table_label(table));
                Err(object_error(&self.plan.ifname, "add", object, e))
            }
        }
    }

    /// The table (and fwmark) for default routes: the configured fwmark, or the first table
    /// from 51820 that holds no route.
    async fn default_table(&mut self, nl: &Netlink) -> Result<u32, HostError> {
        if let Some(table) = self.state.default_table {
            return Ok(table);
        }
        let table = match self.plan.fwmark.filter(|m| *m != 0) {
            Some(mark) => mark,
            None => {
                let routes = nl
                    .routes()
                    .await
                    .map_err(|e| object_error(&self.plan.ifname, "list", "routes", e))?;
                first_free_table(routes.iter().map(|(_, table, _)| *table)).ok_or_else(|| {
                    HostError::NoFreeTable {
                        ifname: self.plan.ifname.clone(),
                    }
                })?
            }
        };
        self.state.default_table = Some(table);
        self.save().await?;
        Ok(table)
    }

    /// The rules, sysctl and firewall that go with a default route of `family`.
    async fn ensure_policy(
        &mut self,
        nl: &Netlink,
        family: Family,
        table: u32,
    ) -> Result<(), HostError> {
        if self.state.rules.iter().any(|r| r.family == family) {
            return Ok(());
        }
        let not_fwmark = RuleKind::NotFwmark {
            fwmark: table,
            table,
        };
        self.add_rule(nl, family, not_fwmark).await?;
        self.add_rule(nl, family, RuleKind::SuppressMainDefault)
            .await?;
        if family == Family::V4 {
            self.set_sysctl(sysctl::SRC_VALID_MARK, "1").await?;
        }
        self.refresh_firewall().await
    }

    async fn add_rule(
        &mut self,
        nl: &Netlink,
        family: Family,
        kind: RuleKind,
    ) -> Result<(), HostError> {
        let record = RuleRecord {
            family,
            kind,
            priority: None,
        };
        self.state.rules.push(record.clone());
        self.save().await?;
        if let Err(e) = nl.add_rule(family, kind).await {
            self.state.rules.retain(|r| *r != record);
            self.save().await?;
            return Err(object_error(
                &self.plan.ifname,
                "add",
                describe_rule(family, kind),
                e,
            ));
        }
        // Learn the priority the kernel chose (it gives each new rule the lowest one), so
        // that exactly this rule is deleted later.
        let taken: Vec<Option<u32>> = self
            .state
            .rules
            .iter()
            .filter(|r| r.family == family && r.kind == kind)
            .map(|r| r.priority)
            .collect();
        match nl.rule_priorities(family, kind).await {
            Ok(found) => {
                let priority = found
                    .into_iter()
                    .filter(|p| !taken.contains(&Some(*p)))
                    .min();
                if let Some(slot) = self.state.rules.iter_mut().find(|r| **r == record) {
                    slot.priority = priority;
                }
                self.save().await
            }
            Err(e) => {
                tracing::warn!(interface = %self.plan.ifname, "cannot list rules: {e}");
                Ok(())
            }
        }
    }

    async fn set_sysctl(&mut self, key: &str, value: &str) -> Result<(), HostError> {
        if self.state.sysctls.iter().any(|s| s.key == key) {
            return Ok(());
        }
        let fail = |source| HostError::Sysctl {
            ifname: self.plan.ifname.clone(),
            key: key.to_owned(),
            source,
        };
        let old = sysctl::read(key).map_err(fail)?;
        if old == value {
            return Ok(());
        }
        let record = SysctlRecord {
            key: key.to_owned(),
            old,
            new: value.to_owned(),
        };
        self.state.sysctls.push(record.clone());
        self.save().await?;
        if let Err(source) = sysctl::write(key, value) {
            self.state.sysctls.retain(|s| *s != record);
            self.save().await?;
            return Err(HostError::Sysctl {
                ifname: self.plan.ifname.clone(),
                key: key.to_owned(),
                source,
            });
        }
        Ok(())
    }

    /// Installs (or replaces, or removes) the nftables table for the families that have a
    /// policy-routed default route. Without `nft`, a wanted table is an error.
    pub(super) async fn refresh_firewall(&mut self) -> Result<(), HostError> {
        let ifname = self.plan.ifname.clone();
        let mut families: Vec<Family> = self.state.rules.iter().map(|r| r.family).collect();
        families.sort();
        families.dedup();
        let nft = match find_program("nft") {
            Some(nft) => nft,
            // Nothing to install or remove without it (a table can only come from nft).
            None if families.is_empty() => return Ok(()),
            // `preflight` refuses such a plan first; should nft vanish in between, the
            // default route does not stay up without its rules.
            None => {
                return Err(HostError::MissingProgram {
                    ifname,
                    program: "nft",
                    package: "nftables",
                    needed_by: "the policy-routed default route".to_owned(),
                    alternative: "",
                })
            }
        };
        let (ruleset, table) = match (families.is_empty(), self.state.default_table) {
            (false, Some(mark)) => (
                firewall::ruleset(&ifname, mark, &families, &self.plan.addresses),
                Some(firewall::table_name(&ifname)),
            ),
            _ if self.state.nft_table.is_some() => (firewall::delete(&ifname), None),
            _ => return Ok(()),
        };
        let json = serde_json::to_string(&ruleset).map_err(|e| HostError::Command {
            ifname: ifname.clone(),
            command: "nft -j -f -".to_owned(),
            detail: format!("cannot encode the ruleset: {e}"),
        })?;
        if table.is_some() {
            self.state.nft_table = table;
            self.save().await?;
        }
        run(&ifname, &nft, &["-j", "-f", "-"], Some(json.as_bytes())).await?;
        if self.state.nft_table.is_some() && families.is_empty() {
            self.state.nft_table = None;
            self.save().await?;
        }
        Ok(())
    }
}
