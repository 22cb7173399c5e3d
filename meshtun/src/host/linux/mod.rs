//! The Linux host setup, through routing netlink.

mod apply;
mod firewall;
mod netlink;
mod sysctl;
mod undo;

use std::collections::HashSet;
use std::fmt::Display;
use std::io;
use std::path::Path;

use ipnet::IpNet;

use super::hooks::{self, Phase};
use super::routes::{placement, sorted_routes, Family, Placement, MAIN_TABLE};
use super::state::{DownHooks, State, StateFile};
use super::{collect_failures, validate_ifname, Hooks, HostError, HostPlan, HostSetup};
use netlink::Netlink;

fn connect(ifname: &str) -> Result<Netlink, HostError> {
    Netlink::connect().map_err(|source| HostError::Netlink {
        ifname: ifname.to_owned(),
        source,
    })
}

fn object_error(
    ifname: &str,
    action: &'static str,
    object: impl Display,
    source: io::Error,
) -> HostError {
    HostError::Object {
        ifname: ifname.to_owned(),
        action,
        object: object.to_string(),
        source,
    }
}

/// How `ip` names a table.
fn table_label(table: u32) -> String {
    match table {
        MAIN_TABLE => "main".to_owned(),
        other => other.to_string(),
    }
}

/// Applies the plan to the existing interface `plan.ifname` and records it in
/// `STATE_DIR/IFNAME.json`. On failure, everything applied so far is undone.
///
/// Fails with [`HostError::StaleState`] when a state file from an earlier run exists: call
/// [`cleanup_stale`] first (before creating the tun device).
pub async fn apply(plan: &HostPlan, state_dir: &Path) -> Result<HostSetup, HostError> {
    super::preflight(plan)?;
    let ifname = plan.ifname.as_str();
    let file = StateFile::new(state_dir, ifname);
    if file.read().await?.is_some() {
        return Err(HostError::StaleState {
            ifname: ifname.to_owned(),
            path: file.path().to_owned(),
        });
    }
    let nl = connect(ifname)?;
    let link = nl
        .link(ifname)
        .await
        .map_err(|e| object_error(ifname, "look up", "link", e))?
        .ok_or_else(|| HostError::LinkNotFound {
            ifname: ifname.to_owned(),
        })?;
    let down_hooks = DownHooks {
        pre_down: plan.hooks.pre_down.clone(),
        post_down: plan.hooks.post_down.clone(),
    };
    let mut state = State::new(ifname, Some(link.index), down_hooks);
    state.existing_link = plan.existing_link;
    let mut setup = HostSetup::new(plan.clone(), state, file);
    setup.save().await?;
    if let Err(e) = setup.bring_up(&nl, link.index).await {
        let failures = undo::undo_all(&mut setup.state, &setup.file, &nl, Some(link.index)).await;
        for failure in failures {
            tracing::warn!("while rolling back: {failure}");
        }
        return Err(e);
    }
    Ok(setup)
}

impl HostSetup {
    /// Replaces the routes (the union of the peers' allowed IPs) after a reload: routes no
    /// longer wanted are deleted, new ones added, exactly as [`apply`] would place them. A
    /// new default route may choose a table and fwmark: read [`HostSetup::fwmark`] again
    /// afterwards and update the socket's mark if it changed.
    pub async fn update_routes(&mut self, new_routes: &[IpNet]) -> Result<(), HostError> {
        let ifname = self.plan.ifname.clone();
        // A new default route without nft would go in without its anti-spoofing rules:
        // refuse the whole update before touching anything.
        super::preflight(&HostPlan {
            routes: new_routes.to_vec(),
            ..self.plan.clone()
        })?;
        let nl = connect(&ifname)?;
        let index = self.current_index(&nl).await?;
        let wanted: Vec<IpNet> = sorted_routes(new_routes)
            .into_iter()
            .filter(|dest| placement(dest, self.plan.table).is_some())
            .collect();
        self.delete_stale_routes(&nl, index, &wanted).await?;
        self.drop_unused_policy(&nl).await?;
        self.plan.routes = new_routes.to_vec();
        let covering = self.main_routes_via(&nl, index).await?;
        let recorded: HashSet<IpNet> = self.state.routes.iter().map(|r| r.dest).collect();
        let new: Vec<IpNet> = wanted
            .into_iter()
            .filter(|dest| !recorded.contains(dest))
            .collect();
        self.add_routes(&nl, index, &new, &covering).await
    }

    /// Deletes the recorded routes not in `wanted`, then forgets them with one state file
    /// write (also when one fails: those deleted before it are forgotten, and the error
    /// returned).
    async fn delete_stale_routes(
        &mut self,
        nl: &Netlink,
        index: u32,
        wanted: &[IpNet],
    ) -> Result<(), HostError> {
        let wanted: HashSet<&IpNet> = wanted.iter().collect();
        let stale: Vec<_> = self
            .state
            .routes
            .iter()
            .filter(|r| !wanted.contains(&r.dest))
            .cloned()
            .collect();
        let mut deleted = HashSet::new();
        let mut failure = None;
        for record in stale {
            match nl.delete_route(index, &record.dest, record.table).await {
                Ok(()) => {}
                Err(e) if netlink::is_gone(&e) => {}
                Err(e) => {
                    let object =
                        format!("route {} table {}", record.dest, table_label(record.table));
                    failure = Some(object_error(&self.plan.ifname, "delete", object, e));
                    break;
                }
            }
            deleted.insert((record.dest, record.table));
        }
        if !deleted.is_empty() {
            self.state
                .routes
                .retain(|r| !deleted.contains(&(r.dest, r.table)));
            self.save().await?;
        }
        failure.map_or(Ok(()), Err)
    }

    /// Removes the policy rules of a family whose default route is no longer wanted, and
    /// refreshes the firewall table to match.
    async fn drop_unused_policy(&mut self, nl: &Netlink) -> Result<(), HostError> {
        let mut changed = false;
        for family in [Family::V4, Family::V6] {
            let still_wanted = self.has_policy_default_route(family);
            if still_wanted || !self.state.rules.iter().any(|r| r.family == family) {
                continue;
            }
            let records: Vec<_> = self
                .state
                .rules
                .iter()
                .filter(|r| r.family == family)
                .cloned()
                .collect();
            for record in records {
                undo::delete_rule(nl, &self.plan.ifname, &record).await?;
                self.state.rules.retain(|r| *r != record);
                self.save().await?;
            }
            changed = true;
        }
        if changed {
            self.refresh_firewall().await?;
        }
        Ok(())
    }

    fn has_policy_default_route(&self, family: Family) -> bool {
        self.state.routes.iter().any(|r| {
            Family::of(&r.dest) == family
                && placement(&r.dest, self.plan.table) == Some(Placement::PolicyDefault)
        })
    }

    /// The interface's index, checked against the one recorded at [`apply`].
    async fn current_index(&self, nl: &Netlink) -> Result<u32, HostError> {
        let ifname = &self.plan.ifname;
        let link = nl
            .link(ifname)
            .await
            .map_err(|e| object_error(ifname, "look up", "link", e))?;
        match link {
            Some(link) if Some(link.index) == self.state.ifindex => Ok(link.index),
            _ => Err(HostError::LinkNotFound {
                ifname: ifname.clone(),
            }),
        }
    }

    /// Undoes everything in reverse order, tolerating objects that are already gone, and
    /// removes the state file. Runs the `pre_down` hooks first if [`HostSetup::run_pre_down`]
    /// has not run, and the `post_down` hooks last (both only after a successful `post_up`).
    /// The tun device may already be closed. Every failure is collected and returned; the
    /// state file then stays, listing what is left.
    pub async fn teardown(mut self) -> Result<(), HostError> {
        let ifname = self.plan.ifname.clone();
        let mut errors = Vec::new();
        if let Err(e) = self.run_pre_down().await {
            errors.push(e);
        }
        match connect(&ifname) {
            Ok(nl) => {
                let index = match nl.link(&ifname).await {
                    Ok(Some(link)) if Some(link.index) == self.state.ifindex => Some(link.index),
                    Ok(_) => None,
                    Err(e) => {
                        errors.push(object_error(&ifname, "look up", "link", e));
                        self.state.ifindex
                    }
                };
                errors.extend(undo::undo_all(&mut self.state, &self.file, &nl, index).await);
            }
            Err(e) => errors.push(e),
        }
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

/// Undoes what a crashed earlier run left for `ifname`, as listed in its state file:
/// policy rules, routes in other tables, sysctls, DNS, the nftables table, and the down hooks
/// (if `post_up` had succeeded). A leftover tun device of that name with no process attached
/// is deleted. Returns `false` when there is no state file.
///
/// Fails with [`HostError::InUse`] when the process that wrote the file is still running, and
/// with [`HostError::OtherNamespace`] when it ran in another network namespace.
///
/// The down hooks are `hooks`' (from the configuration, if the caller has one), never
/// the state file's: see `State::keep_only_safe`.
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
    tracing::info!(interface = ifname, "cleaning up after an earlier run");
    let mut errors = Vec::new();
    if state.up {
        errors.extend(hooks::run_all(Phase::PreDown, &state.down_hooks.pre_down, ifname).await);
    }
    let nl = connect(ifname)?;
    let index = match stale_link(&nl, ifname, &state).await {
        Ok(index) => index,
        Err(e) => {
            errors.push(e);
            state.ifindex
        }
    };
    errors.extend(undo::undo_all(&mut state, &file, &nl, index).await);
    if state.up {
        errors.extend(hooks::run_all(Phase::PostDown, &state.down_hooks.post_down, ifname).await);
    }
    collect_failures(ifname, errors).map(|()| true)
}

/// Deals with the link named `ifname` during a crash cleanup; returns the index of a link
/// whose addresses and routes are still to be removed one by one.
async fn stale_link(nl: &Netlink, ifname: &str, state: &State) -> Result<Option<u32>, HostError> {
    let link = nl
        .link(ifname)
        .await
        .map_err(|e| object_error(ifname, "look up", "link", e))?;
    match link {
        None => Ok(None),
        // A device created beforehand keeps existing; only what was added to it is removed.
        Some(link) if state.existing_link && Some(link.index) == state.ifindex => {
            Ok(Some(link.index))
        }
        Some(link) if link.is_tun && !link.attached && !state.existing_link => {
            tracing::info!(interface = ifname, "deleting the leftover tun device");
            match nl.delete_link(link.index).await {
                Ok(()) => Ok(None),
                Err(e) if netlink::is_gone(&e) => Ok(None),
                Err(e) => Err(object_error(ifname, "delete", "link", e)),
            }
        }
        Some(link) if Some(link.index) == state.ifindex && state.owner.is_current() => {
            Ok(Some(link.index))
        }
        Some(_) => {
            tracing::warn!(
                interface = ifname,
                "an interface of that name is in use by something else; leaving it alone"
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::state::Owner;
    use super::*;

    #[tokio::test]
    async fn cleanup_refuses_the_state_of_a_running_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut state = State::new("mt0", Some(1), DownHooks::default());
        state.owner = Owner::of(child.id());
        let file = StateFile::new(dir.path(), "mt0");
        file.save_now(&state).unwrap();
        let result = cleanup_stale("mt0", dir.path(), &Hooks::default()).await;
        child.kill().unwrap();
        child.wait().unwrap();
        match result {
            Err(HostError::InUse { ifname, pid, path }) => {
                assert_eq!((ifname.as_str(), pid), ("mt0", child.id()));
                assert_eq!(path, file.path());
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        assert!(
            file.load().unwrap().is_some(),
            "the file of a running owner stays"
        );
    }

    /// A state file whose (dead) owner ran in another network namespace, copied or planted
    /// into this namespace's directory, is neither undone here nor removed: its objects
    /// exist only in that namespace, which must clean up after it.
    #[tokio::test]
    async fn cleanup_leaves_the_state_of_another_namespace_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::new("mt0", Some(1), DownHooks::default());
        let ours = crate::host::netns::NetnsId::current().unwrap();
        state.owner = Owner {
            pid: u32::MAX,
            start_time: Some(1),
            netns: Some(crate::host::netns::NetnsId {
                ino: ours.ino.wrapping_add(1),
                ..ours
            }),
        };
        let reused_inode = Owner {
            netns: Some(crate::host::netns::NetnsId {
                cookie: ours.cookie.map(|c| c.wrapping_add(1)),
                ..ours
            }),
            ..state.owner
        };
        // Nothing recorded: were the file undone after all, it must not change this host.
        let file = StateFile::new(dir.path(), "mt0");
        file.save_now(&state).unwrap();
        let err = cleanup_stale("mt0", dir.path(), &Hooks::default())
            .await
            .unwrap_err();
        assert!(matches!(err, HostError::OtherNamespace { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(&format!("net:[{}]", ours.ino + 1)), "{text}");
        assert!(text.contains("mt0.json"), "{text}");
        assert_eq!(
            file.load().unwrap(),
            Some(state.clone()),
            "the file was changed"
        );
        // A file of an earlier namespace with this one's inode (reused) is not ours either.
        state.owner = reused_inode;
        file.save_now(&state).unwrap();
        let err = cleanup_stale("mt0", dir.path(), &Hooks::default())
            .await
            .unwrap_err();
        assert!(matches!(err, HostError::OtherNamespace { .. }), "{err}");
        assert_eq!(file.load().unwrap(), Some(state), "the file was changed");
    }

    #[tokio::test]
    async fn apply_refuses_while_a_stale_state_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), "mt0");
        file.save_now(&State::new("mt0", Some(1), DownHooks::default()))
            .unwrap();
        let plan = HostPlan {
            ifname: "mt0".into(),
            addresses: vec![],
            mtu: 1420,
            table: super::super::RouteTable::Auto,
            fwmark: None,
            routes: vec![],
            dns: super::super::Dns::default(),
            hooks: super::super::Hooks::default(),
            existing_link: false,
        };
        let err = apply(&plan, dir.path()).await.unwrap_err();
        assert!(matches!(err, HostError::StaleState { .. }), "{err}");
        assert!(err.to_string().contains("clean it up first"), "{err}");
    }

    #[tokio::test]
    async fn names_are_checked_before_any_file_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let err = cleanup_stale("../x", dir.path(), &Hooks::default())
            .await
            .unwrap_err();
        assert!(matches!(err, HostError::InvalidName { .. }), "{err}");
    }
}
