//! The macOS host setup, with `ifconfig` and `route` as `wg-quick`'s darwin version uses them
//! (without `route -q`, so that `route`'s error text, which it prints on standard output,
//! can tell "File exists" and "not in table" apart from real failures).
//!
//! This module cannot be built or run on the Linux machines meshtun is developed on; it was
//! type-checked by compiling it in place of the Linux module, and is kept small for that
//! reason.
//!
//! Deliberately small: addresses, MTU, link up and routes through the interface in the main
//! table. A default route (which needs `wg-quick`'s `0/1` + `128/1` split and endpoint
//! exception routes), `table = N` and DNS (which needs `networksetup`) are refused with
//! [`HostError::Unsupported`]. A utun device and everything routed through it vanish when
//! the daemon exits, so a crash cleanup only runs the down hooks and drops the state file.

use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::command::{find_program, run};
use super::hooks::{self, Phase};
use super::routes::{is_default, sorted_routes, MAIN_TABLE};
use super::state::{DownHooks, RouteRecord, State, StateFile};
use super::{collect_failures, validate_ifname, Hooks, HostError, HostPlan, HostSetup, RouteTable};

fn program(ifname: &str, name: &str) -> Result<PathBuf, HostError> {
    find_program(name).ok_or_else(|| HostError::Command {
        ifname: ifname.to_owned(),
        command: name.to_owned(),
        detail: "not found".to_owned(),
    })
}

fn unsupported(ifname: &str, what: &str) -> HostError {
    HostError::Unsupported {
        ifname: ifname.to_owned(),
        what: what.to_owned(),
    }
}

fn family_flag(net: &IpNet) -> &'static str {
    match net {
        IpNet::V4(_) => "-inet",
        IpNet::V6(_) => "-inet6",
    }
}

/// Refuses what this version cannot do, before anything is changed.
fn check_supported(plan: &HostPlan) -> Result<(), HostError> {
    if plan.existing_link {
        return Err(unsupported(&plan.ifname, "an existing tun device"));
    }
    if !plan.dns.is_empty() {
        return Err(unsupported(&plan.ifname, "DNS"));
    }
    if let RouteTable::Id(id) = plan.table {
        return Err(unsupported(&plan.ifname, &format!("table = {id}")));
    }
    check_routes(plan, &plan.routes)
}

fn check_routes(plan: &HostPlan, routes: &[IpNet]) -> Result<(), HostError> {
    if plan.table == RouteTable::Auto && routes.iter().any(is_default) {
        return Err(unsupported(
            &plan.ifname,
            "a default route (0.0.0.0/0 or ::/0)",
        ));
    }
    Ok(())
}

/// Applies the plan to the existing utun interface `plan.ifname` and records it in
/// `STATE_DIR/IFNAME.json`. On failure, what was applied is undone.
pub async fn apply(plan: &HostPlan, state_dir: &Path) -> Result<HostSetup, HostError> {
    validate_ifname(&plan.ifname)?;
    check_supported(plan)?;
    let file = StateFile::new(state_dir, &plan.ifname);
    if file.read().await?.is_some() {
        return Err(HostError::StaleState {
            ifname: plan.ifname.clone(),
            path: file.path().to_owned(),
        });
    }
    let down_hooks = DownHooks {
        pre_down: plan.hooks.pre_down.clone(),
        post_down: plan.hooks.post_down.clone(),
    };
    let state = State::new(&plan.ifname, None, down_hooks);
    let mut setup = HostSetup::new(plan.clone(), state, file);
    setup.save().await?;
    if let Err(e) = setup.bring_up().await {
        for failure in setup.undo_all().await {
            tracing::warn!("while rolling back: {failure}");
        }
        return Err(e);
    }
    Ok(setup)
}

impl HostSetup {
    async fn bring_up(&mut self) -> Result<(), HostError> {
        let ifname = self.plan.ifname.clone();
        let ifconfig = program(&ifname, "ifconfig")?;
        for addr in self.plan.addresses.clone() {
            self.state.addresses.push(addr);
            self.save().await?;
            let cidr = addr.to_string();
            let ip = addr.addr().to_string();
            let args: Vec<&str> = match addr {
                IpNet::V4(_) => vec![&ifname, "inet", &cidr, &ip, "alias"],
                IpNet::V6(_) => vec![&ifname, "inet6", &cidr, "alias"],
            };
            if let Err(e) = run(&ifname, &ifconfig, &args, None).await {
                self.state.addresses.retain(|a| *a != addr);
                self.save().await?;
                return Err(e);
            }
        }
        let mtu = self.plan.mtu.to_string();
        run(&ifname, &ifconfig, &[&ifname, "mtu", &mtu], None).await?;
        run(&ifname, &ifconfig, &[&ifname, "up"], None).await?;
        for dest in sorted_routes(&self.plan.routes) {
            self.add_route(&dest).await?;
        }
        Ok(())
    }

    async fn add_route(&mut self, dest: &IpNet) -> Result<(), HostError> {
        if self.plan.table == RouteTable::Off {
            return Ok(());
        }
        let ifname = self.plan.ifname.clone();
        let route = program(&ifname, "route")?;
        let record = RouteRecord {
            dest: *dest,
            table: MAIN_TABLE,
        };
        self.state.routes.push(record.clone());
        self.save().await?;
        let net = dest.to_string();
        let args = [
            "-q",
            "-n",
            "add",
            family_flag(dest),
            &net,
            "-interface",
            &ifname,
        ];
        match run(&ifname, &route, &args, None).await {
            Ok(_) => Ok(()),
            Err(HostError::Command { detail, .. }) if detail.contains("File exists") => Ok(()),
            Err(e) => {
                self.state.routes.retain(|r| *r != record);
                self.save().await?;
                Err(e)
            }
        }
    }

    /// Replaces the routes after a reload: routes no longer wanted are deleted, new ones
    /// added. A default route is refused, as in [`apply`].
    pub async fn update_routes(&mut self, new_routes: &[IpNet]) -> Result<(), HostError> {
        check_routes(&self.plan, new_routes)?;
        let wanted = sorted_routes(new_routes);
        let stale: Vec<RouteRecord> = self
            .state
            .routes
            .iter()
            .filter(|r| !wanted.contains(&r.dest))
            .cloned()
            .collect();
        for record in stale {
            self.delete_route(&record.dest).await?;
            self.state.routes.retain(|r| *r != record);
            self.save().await?;
        }
        self.plan.routes = new_routes.to_vec();
        for dest in wanted {
            if !self.state.routes.iter().any(|r| r.dest == dest) {
                self.add_route(&dest).await?;
            }
        }
        Ok(())
    }

    async fn delete_route(&self, dest: &IpNet) -> Result<(), HostError> {
        let ifname = &self.plan.ifname;
        let route = program(ifname, "route")?;
        let net = dest.to_string();
        let args = [
            "-q",
            "-n",
            "delete",
            family_flag(dest),
            &net,
            "-interface",
            ifname,
        ];
        match run(ifname, &route, &args, None).await {
            Err(HostError::Command { detail, .. }) if detail.contains("not in table") => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn delete_address(&self, addr: &IpNet) -> Result<(), HostError> {
        let ifname = &self.plan.ifname;
        let ifconfig = program(ifname, "ifconfig")?;
        let ip = addr.addr().to_string();
        let family = match addr {
            IpNet::V4(_) => "inet",
            IpNet::V6(_) => "inet6",
        };
        run(ifname, &ifconfig, &[ifname, family, &ip, "-alias"], None).await?;
        Ok(())
    }

    /// Deletes recorded routes and addresses while the interface exists; once it is gone
    /// they went with it. Removes the state file when nothing is left.
    async fn undo_all(&mut self) -> Vec<HostError> {
        let mut errors = Vec::new();
        let exists = find_program("ifconfig").is_some_and(|ifconfig| {
            std::process::Command::new(ifconfig)
                .arg(&self.plan.ifname)
                .output()
                .is_ok_and(|out| out.status.success())
        });
        for record in self.state.routes.clone().into_iter().rev() {
            if exists {
                if let Err(e) = self.delete_route(&record.dest).await {
                    errors.push(e);
                    continue;
                }
            }
            self.state.routes.retain(|r| *r != record);
            if let Err(e) = self.save().await {
                errors.push(e);
            }
        }
        for addr in self.state.addresses.clone().into_iter().rev() {
            if exists {
                if let Err(e) = self.delete_address(&addr).await {
                    errors.push(e);
                    continue;
                }
            }
            self.state.addresses.retain(|a| *a != addr);
            if let Err(e) = self.save().await {
                errors.push(e);
            }
        }
        if self.state.is_clean() {
            if let Err(e) = self.file.remove().await {
                errors.push(e);
            }
        }
        errors
    }

    /// Undoes everything in reverse order and runs the down hooks, as on Linux.
    pub async fn teardown(mut self) -> Result<(), HostError> {
        let ifname = self.plan.ifname.clone();
        let mut errors = Vec::new();
        if let Err(e) = self.run_pre_down().await {
            errors.push(e);
        }
        errors.extend(self.undo_all().await);
        if self.state.up {
            let post_down = std::mem::take(&mut self.state.down_hooks.post_down);
            errors.extend(hooks::run_all(Phase::PostDown, &post_down, &ifname).await);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(HostError::Teardown { ifname, errors })
        }
    }
}

/// Cleans up after a crashed earlier run: runs the down hooks (if `post_up` had succeeded)
/// and removes the state file. Returns `false` when there is no state file.
///
/// The down hooks are `hooks`' (from the configuration, if the caller has one), never
/// the state file's: see [`State::keep_only_safe`](super::state::State::keep_only_safe).
pub async fn cleanup_stale(
    ifname: &str,
    state_dir: &Path,
    hooks: &Hooks,
) -> Result<bool, HostError> {
    validate_ifname(ifname)?;
    let file = StateFile::new(state_dir, ifname);
    let Some(mut state) = file.read().await? else {
        return Ok(false);
    };
    state.down_hooks = DownHooks {
        pre_down: hooks.pre_down.clone(),
        post_down: hooks.post_down.clone(),
    };
    state.check_undoable(file.path())?;
    let mut errors = Vec::new();
    if state.up {
        errors.extend(hooks::run_all(Phase::PreDown, &state.down_hooks.pre_down, ifname).await);
    }
    if let Err(e) = file.remove().await {
        errors.push(e);
    }
    if state.up {
        errors.extend(hooks::run_all(Phase::PostDown, &state.down_hooks.post_down, ifname).await);
    }
    collect_failures(ifname, errors).map(|()| true)
}
