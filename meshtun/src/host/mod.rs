//! Host setup around the tun device, as `wg-quick` does it: addresses, MTU, routes, policy
//! rules for a default route, DNS and hook commands. Everything applied is recorded so that
//! `down`, a signal or the next start after a crash can undo it.
//!
//! # Lifecycle
//!
//! The daemon drives the phases in this order:
//!
//! 1. [`cleanup_stale`] undoes what a crashed earlier run left behind (before the tun exists);
//! 2. [`run_pre_up`] runs the `pre_up` hooks;
//! 3. the daemon creates the tun device named [`HostPlan::ifname`];
//! 4. [`apply`] sets the MTU, adds the addresses, brings the link up, hands DNS to the
//!    resolver and adds the routes (sorted longest prefix first, as `wg-quick` does). A
//!    default route with `table = auto` goes to a table of its own, selected by a fwmark
//!    (the configured one, or the first free table from 51820), with the rules
//!    `not fwmark M table M` and `table main suppress_prefixlength 0`,
//!    `net.ipv4.conf.all.src_valid_mark = 1` and an nftables table `inet meshtun-IFNAME`.
//!    If any step fails, what was applied is undone and the error returned;
//! 5. the daemon sets [`HostSetup::fwmark`] as `SO_MARK` on its UDP socket;
//! 6. [`HostSetup::run_post_up`] runs the `post_up` hooks (on failure, call
//!    [`HostSetup::teardown`], which then skips the down hooks, as `wg-quick` does);
//! 7. on a reload, [`HostSetup::update_routes`] adds and removes routes;
//! 8. on shutdown, [`HostSetup::run_pre_down`] (optional: [`HostSetup::teardown`] runs it if
//!    it has not run), then the daemon may close the tun, then [`HostSetup::teardown`] undoes
//!    everything in reverse order and runs the `post_down` hooks.
//!
//! # State file
//!
//! Each object is recorded in `STATE_DIR/IFNAME.json` ([`DEFAULT_STATE_DIR`] by default,
//! directory mode 0700; in a network namespace other than the initial one, the daemon picks
//! the subdirectory [`netns::state_dir`] of it, and the file records the namespace) before it is applied, so a crash leaves an accurate list (a batch of
//! routes is recorded with one write before any is added). The file is written on tokio's
//! blocking pool, never on the async threads. It is
//! removed once everything is undone; when some object could not be removed it stays, and a
//! later [`cleanup_stale`] tries again.
//!
//! # Platforms
//!
//! On Linux everything goes through routing netlink; `resolvectl`/`resolvconf` and `nft` are
//! the only programs run (the system's own DNS and firewall interfaces). On macOS a smaller
//! version uses `ifconfig` and `route`: addresses, MTU and routes through the interface, but
//! no policy-routed default route and no DNS (both are refused with
//! [`HostError::Unsupported`]).

mod command;
mod dns;
mod error;
mod hooks;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "macos")]
mod macos;
pub mod netns;
mod plan;
mod routes;
mod state;

use std::path::Path;

pub use error::HostError;
#[cfg(target_os = "linux")]
pub use linux::{apply, cleanup_stale};
#[cfg(target_os = "macos")]
pub use macos::{apply, cleanup_stale};
pub use plan::{Dns, Hooks, HostPlan, RouteTable};
pub use routes::FIRST_AUTO_TABLE;
pub use state::DEFAULT_STATE_DIR;

use hooks::Phase;
use state::{State, StateFile};

/// The host setup applied for one interface; undo it with [`HostSetup::teardown`].
///
/// Dropping it without a teardown leaves everything in place (and the state file, for
/// [`cleanup_stale`]).
#[derive(Debug)]
pub struct HostSetup {
    plan: HostPlan,
    state: State,
    file: StateFile,
    pre_down_done: bool,
}

impl HostSetup {
    fn new(plan: HostPlan, state: State, file: StateFile) -> HostSetup {
        HostSetup {
            plan,
            state,
            file,
            pre_down_done: false,
        }
    }

    /// The interface name.
    pub fn ifname(&self) -> &str {
        &self.plan.ifname
    }

    /// The firewall mark the daemon's UDP socket must carry (`SO_MARK`): the routing table
    /// chosen for a default route, or else the configured mark. `None` when there is none.
    pub fn fwmark(&self) -> Option<u32> {
        self.state
            .default_table
            .or(self.plan.fwmark)
            .filter(|mark| *mark != 0)
    }

    /// The state file recording what was applied.
    pub fn state_file(&self) -> &Path {
        self.file.path()
    }

    /// How many times the state file was written since [`apply`] (a bundle's routes cost
    /// one write to add and one to remove, however many there are).
    pub fn state_writes(&self) -> u64 {
        self.file.writes()
    }

    /// Writes the state file, on tokio's blocking pool.
    async fn save(&self) -> Result<(), HostError> {
        self.file.save(&self.state).await
    }

    /// Runs the `post_up` hooks in order; the first failure stops them and is returned.
    /// Once they succeed, the down hooks run on teardown.
    pub async fn run_post_up(&mut self) -> Result<(), HostError> {
        hooks::run_strict(Phase::PostUp, &self.plan.hooks.post_up, &self.plan.ifname).await?;
        self.state.up = true;
        self.save().await
    }

    /// Runs the `pre_down` hooks (once, and only after a successful `post_up`), all of them
    /// even when some fail. Failures are logged and returned together.
    pub async fn run_pre_down(&mut self) -> Result<(), HostError> {
        if self.pre_down_done || !self.state.up {
            return Ok(());
        }
        self.pre_down_done = true;
        let failures = hooks::run_all(
            Phase::PreDown,
            &self.state.down_hooks.pre_down,
            &self.plan.ifname,
        )
        .await;
        collect_failures(&self.plan.ifname, failures)
    }
}

fn collect_failures(ifname: &str, mut failures: Vec<HostError>) -> Result<(), HostError> {
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => Err(HostError::Teardown {
            ifname: ifname.to_owned(),
            errors: failures,
        }),
    }
}

/// Runs the `pre_up` hooks in order, before the tun device is created; the first failure
/// stops them and is returned.
pub async fn run_pre_up(plan: &HostPlan) -> Result<(), HostError> {
    validate_ifname(&plan.ifname)?;
    hooks::run_strict(Phase::PreUp, &plan.hooks.pre_up, &plan.ifname).await
}

/// Checks, before anything is changed, that the programs the plan needs are installed:
/// `nft` for a policy-routed default route (`table = auto` with `0.0.0.0/0` or `::/0`: its
/// anti-spoofing and fwmark rules), and `resolvectl` or `resolvconf` for DNS. Without this
/// a missing program would surface halfway through [`apply`], or (for `nft`) leave a full
/// tunnel without its anti-spoofing rules.
pub fn preflight(plan: &HostPlan) -> Result<(), HostError> {
    preflight_with(plan, |name| command::find_program(name).is_some())
}

/// [`preflight`] with `installed` telling whether a program is present.
fn preflight_with(plan: &HostPlan, installed: impl Fn(&str) -> bool) -> Result<(), HostError> {
    validate_ifname(&plan.ifname)?;
    if !cfg!(target_os = "linux") {
        // Elsewhere a policy-routed default route and DNS are refused by `apply` itself.
        return Ok(());
    }
    if let Some(route) = firewalled_route(plan) {
        if !installed("nft") {
            return Err(HostError::MissingProgram {
                ifname: plan.ifname.clone(),
                program: "nft",
                package: "nftables",
                needed_by: format!(
                    "the default route {route} (wg-quick's anti-spoofing and fwmark rules)"
                ),
                alternative: ", or route it yourself with `table = off`",
            });
        }
    }
    if !plan.dns.is_empty() && !installed("resolvectl") && !installed("resolvconf") {
        return Err(HostError::DnsUnavailable {
            ifname: plan.ifname.clone(),
        });
    }
    Ok(())
}

/// The first route that the plan policy-routes, and so protects with nftables rules.
fn firewalled_route(plan: &HostPlan) -> Option<ipnet::IpNet> {
    plan.routes
        .iter()
        .find(|r| routes::placement(r, plan.table) == Some(routes::Placement::PolicyDefault))
        .copied()
}

/// Checks that an interface name is usable: 1 to 15 characters from `A-Z a-z 0-9 _ = + . -`
/// (the names `wg-quick` accepts), and not `.` or `..`. The name appears in file names,
/// firewall table names and hook commands.
pub fn validate_ifname(ifname: &str) -> Result<(), HostError> {
    let reason = if ifname.is_empty() {
        Some("it is empty")
    } else if ifname.len() > 15 {
        Some("it is longer than 15 characters")
    } else if ifname == "." || ifname == ".." {
        Some("it is a relative directory name")
    } else if !ifname
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_=+.-".contains(c))
    {
        Some("only letters, digits and _ = + . - are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(HostError::InvalidName {
            ifname: ifname.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(routes: &[&str], table: RouteTable, dns: bool) -> HostPlan {
        HostPlan {
            routes: routes.iter().map(|r| r.parse().unwrap()).collect(),
            table,
            dns: if dns {
                Dns {
                    servers: vec!["100.64.0.53".parse().unwrap()],
                    search: Vec::new(),
                }
            } else {
                Dns::default()
            },
            ifname: "mt0".to_owned(),
            addresses: Vec::new(),
            mtu: 1420,
            fwmark: None,
            hooks: Hooks::default(),
            existing_link: false,
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_full_tunnel_without_nft_is_refused_naming_the_package() {
        let full = plan(&["100.64.0.0/10", "0.0.0.0/0"], RouteTable::Auto, false);
        let err = preflight_with(&full, |p| p != "nft")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nft`"), "{err}");
        assert!(err.contains("package nftables"), "{err}");
        assert!(err.contains("0.0.0.0/0"), "{err}");
        assert!(err.contains("mt0"), "{err}");
        preflight_with(&full, |_| true).unwrap();
        // The default route is only policy-routed (and firewalled) with `table = auto`.
        for table in [RouteTable::Off, RouteTable::Id(1234)] {
            preflight_with(&plan(&["0.0.0.0/0"], table, false), |_| false).unwrap();
        }
        // A split tunnel needs no nft.
        preflight_with(&plan(&["100.64.0.0/10"], RouteTable::Auto, false), |_| {
            false
        })
        .unwrap();
        let v6 = plan(&["::/0"], RouteTable::Auto, false);
        assert!(preflight_with(&v6, |p| p != "nft").is_err());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn dns_without_a_resolver_manager_is_refused_before_anything_is_applied() {
        let with_dns = plan(&[], RouteTable::Auto, true);
        let err = preflight_with(&with_dns, |_| false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("resolvconf"), "{err}");
        preflight_with(&with_dns, |p| p == "resolvconf").unwrap();
        preflight_with(&with_dns, |p| p == "resolvectl").unwrap();
    }

    #[test]
    fn interface_names_are_checked_like_wg_quick() {
        for good in ["mt0", "wg-home", "a.b_c=d+e", "utun7", "abcdefghijklmno"] {
            validate_ifname(good).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("abcdefghijklmnop", "longer than 15"),
            ("..", "relative"),
            ("../etc", "only letters"),
            ("mt 0", "only letters"),
            ("mt0;reboot", "only letters"),
        ] {
            let err = validate_ifname(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    fn setup(fwmark: Option<u32>, default_table: Option<u32>) -> HostSetup {
        let plan = HostPlan {
            ifname: "mt0".into(),
            addresses: vec![],
            mtu: 1420,
            table: RouteTable::Auto,
            fwmark,
            routes: vec![],
            dns: Dns::default(),
            hooks: Hooks::default(),
            existing_link: false,
        };
        let dir = std::env::temp_dir();
        let mut state = State::new("mt0", None, state::DownHooks::default());
        state.default_table = default_table;
        HostSetup::new(plan, state, StateFile::new(&dir, "mt0"))
    }

    #[test]
    fn fwmark_is_the_default_route_table_or_the_configured_mark() {
        assert_eq!(setup(None, None).fwmark(), None);
        assert_eq!(setup(Some(0), None).fwmark(), None);
        assert_eq!(setup(Some(0x1234), None).fwmark(), Some(0x1234));
        assert_eq!(setup(None, Some(51821)).fwmark(), Some(51821));
    }

    #[tokio::test]
    async fn pre_down_hooks_run_only_after_a_successful_post_up() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut s = setup(None, None);
        s.file = StateFile::new(dir.path(), "mt0");
        s.plan.hooks.post_up = vec![format!("echo up %i >> {}", log.display())];
        s.state.down_hooks.pre_down = vec![format!("echo down %i >> {}", log.display())];
        s.run_pre_down().await.unwrap();
        assert!(
            !log.exists(),
            "pre_down must not run before post_up succeeded"
        );
        s.run_post_up().await.unwrap();
        assert!(
            s.file.load().unwrap().unwrap().up,
            "the state file records post_up"
        );
        s.run_pre_down().await.unwrap();
        s.run_pre_down().await.unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "up mt0\ndown mt0\n");
    }
}
