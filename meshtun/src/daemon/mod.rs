//! `meshtun up`: bring an interface up from its configuration, serve it until told to stop,
//! and undo everything on the way out. Also `meshtun down` and `meshtun check`.
//!
//! Order of events, as `wg-quick` does it: clean up after a crashed run, `pre_up` hooks,
//! create the tun device and start the WireGuard device, addresses/MTU/routes/DNS,
//! firewall mark, the UAPI socket, `post_up` hooks, then "ready" to systemd. SIGHUP rereads
//! the configuration and applies the difference; SIGTERM and SIGINT stop. Stopping runs the
//! `pre_down` hooks, closes the device, undoes the host setup and runs `post_down`.

mod candidates;
mod down;
mod edit;
mod gating;
mod handler;
mod observe;
mod paths;
mod peers;
mod pidfile;
#[cfg(target_os = "linux")]
mod privileges;
pub mod relay;
mod reresolve;
mod stun;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

pub use down::{down, DownOutcome};
pub use edit::EditRefused;
pub use handler::{Edit, Handler, EDIT_QUEUE};
use meshtun_proto::report::Chain;
#[cfg(target_os = "linux")]
pub use privileges::{PrivilegeError, RunAs};

use crate::config::{Config, ConfigError};
use crate::device::{Device, DeviceError};
use crate::gate::{merge, GateUpdate, GatedLimits};
use crate::host::{self, HostError, HostSetup};
use crate::metrics::{self, MetricsError, MetricsServer, MetricsSource};
use crate::tun::{Tun, TunOptions};
use crate::uapi::{self, UapiError};
use crate::udp::HostUdp;
use crate::wgcfg::{DeviceSettings, DeviceUpdate, PeerUpdate};
use edit::{apply_edit, EditRules};
use gating::Gating;
use pidfile::PidFile;

/// The device type the daemon runs.
type HostDevice = Device<Tun, HostUdp>;

/// Where the daemon keeps its runtime files, and how it gets its tun device.
#[derive(Debug, Clone)]
pub struct Options {
    /// Host-setup state files and pid files (`/run/meshtun`). In a network namespace other
    /// than the initial one, [`up`] and [`down`] use its subdirectory for that namespace
    /// ([`host::netns::state_dir`]), so that interfaces of one name in two namespaces do not
    /// collide.
    pub state_dir: PathBuf,
    /// UAPI sockets (`/var/run/wireguard`, where `wg` looks).
    pub uapi_dir: PathBuf,
    /// Attach to a tun device created beforehand and owned by this user, leaving its MTU
    /// and link state alone and never deleting it (running with no capability at all).
    pub existing_tun: bool,
    /// Started as root, become this user once the UAPI socket, the tun device and the UDP
    /// sockets are open, keeping CAP_NET_ADMIN alone (Linux; `up` must then run on a
    /// current-thread runtime).
    pub user: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(host::DEFAULT_STATE_DIR),
            uapi_dir: PathBuf::from(uapi::SOCKET_DIR),
            existing_tun: false,
            user: None,
        }
    }
}

impl Options {
    /// These options with the state directory of this process's network namespace, which
    /// must not be a link.
    fn in_this_netns(&self) -> Result<Options, DaemonError> {
        let state_dir = host::netns::state_dir(&self.state_dir);
        host::netns::check_subdir(&state_dir).map_err(|source| DaemonError::File {
            path: state_dir.clone(),
            source,
        })?;
        Ok(Options {
            state_dir,
            ..self.clone()
        })
    }
}

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Root was asked to act on a configuration that a less privileged user can change.
    #[error(
        "{}: refusing to use this configuration as root: {why}; as root, meshtun reads its \
         configuration (which holds commands, DNS and routes) only from a file that root owns \
         and only root can write, in directories only root can write: `chown root: FILE`, \
         `chmod 0600 FILE` (0640 with the group of a daemon user that must read it)",
        path.display()
    )]
    UntrustedConfig {
        /// The configuration file.
        path: PathBuf,
        /// Which file or directory is writable by whom.
        why: String,
    },
    /// Host setup (addresses, routes, hooks, DNS) failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The tun device could not be opened.
    #[error("cannot create the tun device {ifname}{}", hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Tun {
        /// The interface name.
        ifname: String,
        /// Why.
        #[source]
        source: std::io::Error,
        /// What to check or do, for a permission error (the device's mode and owner, or
        /// the missing capability).
        hint: Option<String>,
    },
    /// The WireGuard device failed.
    #[error("interface {ifname}")]
    Device {
        /// The interface name.
        ifname: String,
        /// Why.
        #[source]
        source: DeviceError,
    },
    /// The UAPI socket failed.
    #[error(transparent)]
    Uapi(#[from] UapiError),
    /// A runtime file could not be written or read.
    #[error("{path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The device stopped working while running.
    #[error("interface {ifname} failed: {reason}")]
    Failed {
        /// The interface name.
        ifname: String,
        /// What happened.
        reason: String,
    },
    /// Membership gating could not start (identity key, controller settings, benchmark).
    #[error("{}: membership gating", path.display())]
    Gate {
        /// The configuration file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: crate::gate::GateError,
    },
    /// The blocking task that loads the configuration stopped (it panicked).
    #[error("the configuration loader stopped")]
    Loader(#[source] tokio::task::JoinError),
    /// The metrics endpoint could not be served.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Switching to the configured user failed.
    #[cfg(target_os = "linux")]
    #[error(transparent)]
    Privileges(#[from] PrivilegeError),
    /// `down` found a daemon that would not stop.
    #[error("the daemon for {ifname} (pid {pid}) did not stop within {seconds} s")]
    StillRunning {
        /// The interface name.
        ifname: String,
        /// Its process.
        pid: i32,
        /// How long we waited.
        seconds: u64,
    },
}

/// Loads and checks a configuration, resolving endpoints: `meshtun check`. Returns the
/// configuration, its device settings and the warnings to show.
pub async fn check(path: &Path) -> Result<(Config, DeviceSettings, Vec<String>), DaemonError> {
    let owned = path.to_owned();
    let loaded = tokio::task::spawn_blocking(move || -> Result<_, ConfigError> {
        let config = Config::load(&owned)?;
        let settings = config.device_settings()?;
        Ok((config, settings))
    })
    .await
    .map_err(DaemonError::Loader)??;
    let (config, settings) = loaded;
    if let Some(why) = crate::config::untrusted_for_root(path) {
        return Err(DaemonError::UntrustedConfig {
            path: path.to_owned(),
            why,
        });
    }
    host::validate_ifname(&config.interface.name)?;
    let warnings = config.permission_warnings();
    Ok((config, settings, warnings))
}

/// Runs `meshtun up CONFIG` until a signal or a failure stops it.
///
/// `inherited` is the UAPI socket the service manager passed ([`uapi::take_listen_fds`]):
/// when given, it must be a listening Unix stream socket bound to the interface's path in
/// `opts.uapi_dir`, and the daemon neither creates nor removes that file; otherwise the
/// daemon binds the socket itself.
pub async fn up(
    config_path: &Path,
    opts: &Options,
    inherited: Option<uapi::Inherited>,
) -> Result<(), DaemonError> {
    // Chosen once, before privileges are dropped (the initial namespace is pid 1's).
    let ours = opts.in_this_netns()?;
    let result = serve_interface(config_path, &ours, &opts.state_dir, inherited).await;
    host::netns::remove_if_empty(&opts.state_dir, &ours.state_dir);
    result
}

/// [`up`] with the state directory of this namespace (under `base`, the one given).
async fn serve_interface(
    config_path: &Path,
    opts: &Options,
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))] base: &Path,
    inherited: Option<uapi::Inherited>,
) -> Result<(), DaemonError> {
    let (config, settings, warnings) = check(config_path).await?;
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    crate::sched::set(config.interface.scheduling);
    let mut plan = config.host_plan();
    plan.existing_link = opts.existing_tun;
    // Before anything is touched: a missing program fails here, not halfway through.
    host::preflight(&plan)?;
    let ifname = plan.ifname.clone();
    #[cfg_attr(not(target_os = "linux"), allow(unused_variables))]
    let run_as = run_as(opts, &ifname)?;
    // Binding the socket first refuses a second daemon for the same interface before
    // anything is touched.
    let socket = match inherited {
        Some(inherited) => uapi::adopt_in(inherited, &opts.uapi_dir, &ifname)?,
        None => uapi::bind_in(&opts.uapi_dir, &ifname)?,
    };
    let metrics_listener = match config.metrics {
        Some(settings) => Some(metrics::bind(settings.listen).await?),
        None => None,
    };
    if host::cleanup_stale(&ifname, &opts.state_dir, &plan.hooks).await? {
        tracing::warn!(interface = %ifname, "cleaned up after an earlier run that did not stop cleanly");
    }
    host::run_pre_up(&plan).await?;
    let tun = Tun::open(&TunOptions {
        name: ifname.clone(),
        mtu: plan.mtu,
        offload: std::env::var_os("MESHTUN_NO_OFFLOAD").is_none(),
        persistent: opts.existing_tun,
        // After `--user`, every task runs on the one thread that kept CAP_NET_ADMIN.
        lanes: if opts.user.is_some() {
            1
        } else {
            crate::tun::default_lanes()
        },
    })
    .map_err(|source| tun_error(&ifname, source))?;
    let (offload, udp_offload) = (tun.offload(), tun.udp_offload());
    let device = Device::start(&ifname, tun, HostUdp, plan.mtu, &settings).map_err(|source| {
        DaemonError::Device {
            ifname: ifname.clone(),
            source,
        }
    })?;
    let device = Arc::new(device);
    #[cfg(target_os = "linux")]
    if let Some(user) = &run_as {
        // The user needs its way into (and, to remove it at the end, out of) a namespace's
        // subdirectory too, as it had the whole directory before namespaces had their own.
        user.own_dir(base)?;
        user.own_dir(&opts.state_dir)?;
        // The UAPI directory stays root's: the user must not be able to plant a socket for
        // another interface there, where root's `wg` looks. The daemon's own socket is then
        // left behind when it stops, answering nothing: the next start replaces it, and
        // `wg` removes such a socket when it finds it.
        user.switch()?;
    }
    let host = host::apply(&plan, &opts.state_dir).await?;
    // Gating starts once the interface is up: the first update (from the cached bundle, if
    // any) can be applied at once.
    let mut gating = match Gating::start(&config, config_path) {
        Ok(gating) => gating,
        Err(error) => {
            drop(device);
            if !opts.existing_tun {
                wait_for_link_gone(&ifname).await;
            }
            if let Err(undo) = host.teardown().await {
                tracing::warn!(%undo, "undoing the host setup failed");
            }
            return Err(error);
        }
    };
    tracing::info!(
        interface = %ifname,
        port = device.listen_port(),
        peers = settings.peers.len(),
        offload,
        udp_offload,
        "interface is up"
    );
    let mut settings = settings;
    settings.fwmark = host.fwmark().or(settings.fwmark);
    // Served until `up` returns (dropping the handle stops it).
    let _metrics = metrics_listener.map(|l| serve_metrics(l, &device, &config, &gating));
    // Allocates on the TURN relay of the bundle in force, and learns the reflexive address
    // from the WireGuard socket, until `up` returns.
    let (relay, stun_responses) = match &config.controller {
        Some(_) => relay::start(&device, gating.status.clone()).unzip(),
        None => (None, None),
    };
    let (nat_tx, behind_nat) = tokio::sync::watch::channel(false);
    let _stun = config
        .controller
        .as_ref()
        .zip(stun_responses)
        .and_then(|(c, r)| {
            stun::start(&device, r, c.stun_servers(), gating.status.clone(), nat_tx)
        });
    // Tells the controller where this node can be reached, until `up` returns.
    let _candidates = gating.client().map(|client| {
        let overlay = config.interface.addresses.clone();
        candidates::start(&device, client, gating.status.clone(), overlay)
    });
    // Tells the controller the paths to this node's gated peers, until `up` returns.
    let _paths = gating
        .client()
        .map(|client| paths::start(&device, client, gating.status.clone()));
    gating.observe(&device);
    let running = Running {
        ifname: ifname.clone(),
        config_path: config_path.to_owned(),
        device,
        host,
        config,
        settings,
        gating,
        behind_nat,
        reresolving: reresolve::Reresolving::new(),
        relay,
    };
    running.serve(socket, opts).await
}

/// Why the tun device could not be opened, explained for a permission error.
fn tun_error(ifname: &str, source: std::io::Error) -> DaemonError {
    #[cfg(target_os = "linux")]
    let hint = crate::tun::access_hint(&source);
    #[cfg(not(target_os = "linux"))]
    let hint = None;
    DaemonError::Tun {
        ifname: ifname.to_owned(),
        source,
        hint,
    }
}

/// The user to become (`--user`), looked up before anything is touched.
#[cfg(target_os = "linux")]
fn run_as(opts: &Options, ifname: &str) -> Result<Option<RunAs>, DaemonError> {
    let Some(name) = &opts.user else {
        return Ok(None);
    };
    let flavor = tokio::runtime::Handle::current().runtime_flavor();
    if flavor != tokio::runtime::RuntimeFlavor::CurrentThread {
        return Err(DaemonError::Failed {
            ifname: ifname.to_owned(),
            reason: "switching users needs a current-thread runtime".to_owned(),
        });
    }
    Ok(Some(RunAs::lookup(name)?))
}

/// `--user` is refused where capabilities cannot be kept across the switch.
#[cfg(not(target_os = "linux"))]
fn run_as(opts: &Options, ifname: &str) -> Result<Option<()>, DaemonError> {
    match opts.user {
        None => Ok(None),
        Some(_) => Err(DaemonError::Failed {
            ifname: ifname.to_owned(),
            reason: "--user is supported on Linux only".to_owned(),
        }),
    }
}

/// Everything that must be undone once the interface is up.
struct Running {
    ifname: String,
    config_path: PathBuf,
    device: Arc<HostDevice>,
    host: HostSetup,
    config: Config,
    /// The static device settings (the configuration file's), with the fwmark in force.
    settings: DeviceSettings,
    gating: Gating,
    /// Whether STUN shows this node behind a NAT (the STUN task writes it).
    behind_nat: tokio::sync::watch::Receiver<bool>,
    /// Host-name endpoints looked up again when their peers go silent.
    reresolving: reresolve::Reresolving,
    /// The TURN relay task (gated interfaces only).
    relay: Option<relay::RelayTask>,
}

impl Running {
    /// Serves until stopped, then tears down whatever the outcome.
    async fn serve(mut self, socket: uapi::UapiSocket, opts: &Options) -> Result<(), DaemonError> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (edits, mut edited) = tokio::sync::mpsc::channel(EDIT_QUEUE);
        let handler = Arc::new(Handler::new(
            self.device.clone(),
            Some(self.gating.status.clone()),
            edits,
        ));
        let server = tokio::spawn(uapi::serve(socket, handler, async {
            let _ = stopped.await;
        }));
        let outcome = self.run(opts, &mut edited).await;
        // Edits still queued are answered: the daemon is stopping.
        edited.close();
        notify(Notify::Stopping);
        if let Err(error) = self.host.run_pre_down().await {
            tracing::warn!(error = %Chain(&error), "pre_down hook failed");
        }
        let _ = stop.send(());
        let _ = server.await;
        let Running {
            ifname,
            device,
            host,
            ..
        } = self;
        // The UAPI handler held the other reference; dropping the device closes the tun.
        drop(device);
        // A device created beforehand stays; one of our own goes away with its last file.
        if !opts.existing_tun {
            wait_for_link_gone(&ifname).await;
        }
        let teardown = host.teardown().await;
        tracing::info!(interface = %ifname, "interface is down");
        outcome?;
        teardown.map_err(DaemonError::from)
    }

    async fn run(
        &mut self,
        opts: &Options,
        edits: &mut tokio::sync::mpsc::Receiver<Edit>,
    ) -> Result<(), DaemonError> {
        if let Some(mark) = self.host.fwmark() {
            self.set_fwmark(mark).await?;
        }
        self.host.run_post_up().await?;
        let _pid =
            PidFile::create(&opts.state_dir, &self.ifname).map_err(|source| DaemonError::File {
                path: pidfile::path(&opts.state_dir, &self.ifname),
                source,
            })?;
        notify(Notify::Ready);
        let mut hangup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
        let mut silent_check = tokio::time::interval(reresolve::CHECK_EVERY);
        silent_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    notify(Notify::Reloading);
                    if let Err(error) = self.reload().await {
                        tracing::error!(error = %Chain(&error), "reload failed; the running configuration is unchanged");
                    }
                    notify(Notify::Ready);
                }
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM: stopping");
                    return Ok(());
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: stopping");
                    return Ok(());
                }
                Some(edit) = edits.recv() => {
                    let outcome = self.edit(&edit.update).await;
                    // The client may have gone; the change stands either way.
                    let _ = edit.reply.send(outcome);
                }
                reason = self.device.failed() => {
                    return Err(DaemonError::Failed { ifname: self.ifname.clone(), reason });
                }
                _ = silent_check.tick() => {
                    let names = self.reresolving.names(&self.config, &self.gating.applied);
                    if !names.is_empty() {
                        self.reresolving.check(&self.device.status(), &names);
                    }
                }
                looked = self.reresolving.next() => {
                    if self.reresolving.record(looked) {
                        if let Err(error) = self.apply_peers().await {
                            tracing::error!(error = %Chain(&error), "cannot move the peers to their endpoint's new address");
                        }
                    }
                }
                Ok(()) = self.behind_nat.changed() => {
                    if let Err(error) = self.apply_peers().await {
                        tracing::error!(error = %Chain(&error), "cannot apply the gated peers' keepalive");
                    }
                }
                update = self.gating.next_update() => {
                    let update = update.map_err(|reason| DaemonError::Failed {
                        ifname: self.ifname.clone(),
                        reason,
                    })?;
                    if let Err(error) = self.enforce(update).await {
                        tracing::error!(error = %Chain(&error), "cannot enforce the membership update");
                    }
                }
            }
        }
    }

    async fn set_fwmark(&self, mark: u32) -> Result<(), DaemonError> {
        let update = DeviceUpdate {
            fwmark: Some(mark),
            ..DeviceUpdate::default()
        };
        self.device
            .update(update)
            .await
            .map_err(|source| DaemonError::Device {
                ifname: self.ifname.clone(),
                source,
            })
    }

    /// A live edit (`wg set`): folded into the static settings under the rules of
    /// [`edit`], then applied with the gated peers. A failure restores what was in force.
    async fn edit(&mut self, update: &DeviceUpdate) -> Result<(), uapi::UapiError> {
        let rules = EditRules {
            gated: self.config.controller.is_some(),
            controller_peers: &self.gating.applied,
            managed_fwmark: self.host.fwmark(),
        };
        let next = apply_edit(&self.settings, update, &rules)
            .map_err(|refused| uapi::UapiError::Forbidden(refused.to_string()))?;
        let set = update
            .peers
            .iter()
            .filter(|p| !p.remove && p.endpoint.is_some());
        self.reresolving.pin(set.map(|p| p.public_key));
        let previous = std::mem::replace(&mut self.settings, next);
        let refused = match self.apply_peers().await {
            Ok(refused) => refused,
            Err(error) => {
                self.settings = previous;
                if let Err(again) = self.apply_peers().await {
                    tracing::error!(error = %Chain(&again), "restoring the configuration after a refused edit failed");
                }
                return Err(match error {
                    DaemonError::Device { source, .. } => handler::to_uapi(source),
                    other => uapi::UapiError::Daemon(Box::new(other)),
                });
            }
        };
        for reason in refused {
            tracing::warn!("after the edit, a gated peer is refused: {reason}");
        }
        self.force_endpoints(update).await;
        Ok(())
    }

    /// An endpoint set by an edit is used at once, even if the peer had roamed away from the
    /// same configured endpoint.
    async fn force_endpoints(&self, update: &DeviceUpdate) {
        let peers: Vec<PeerUpdate> = update
            .peers
            .iter()
            .filter(|p| !p.remove && p.endpoint.is_some())
            .filter(|p| {
                self.settings
                    .peers
                    .iter()
                    .any(|s| s.public_key == p.public_key)
            })
            .map(|p| PeerUpdate {
                update_only: true,
                endpoint: p.endpoint,
                ..PeerUpdate::new(p.public_key)
            })
            .collect();
        if peers.is_empty() {
            return;
        }
        let forced = DeviceUpdate {
            peers,
            ..DeviceUpdate::default()
        };
        if let Err(error) = self.device.update(forced).await {
            tracing::warn!(error = %Chain(&error), "cannot move the edited peers to their new endpoints");
        }
    }

    /// SIGHUP: reread the configuration and apply only what changed.
    async fn reload(&mut self) -> Result<(), DaemonError> {
        let (config, mut settings, warnings) = check(&self.config_path).await?;
        for warning in warnings {
            tracing::warn!("{warning}");
        }
        // The mark chosen for a default route stays, whatever the file says.
        settings.fwmark = self.host.fwmark().or(settings.fwmark);
        let switched_off = self.gating.reload(&config, &self.config_path)?;
        self.gating.observe(&self.device);
        let peers = settings.peers.len();
        self.settings = settings;
        for what in restart_only_changes(&self.config, &config) {
            tracing::warn!("the {what} changed; it takes effect at the next start");
        }
        crate::sched::set(config.interface.scheduling);
        self.config = config;
        self.reresolving.reloaded();
        self.apply_peers().await?;
        if let Some(update) = switched_off {
            self.enforce(update).await?;
        }
        tracing::info!(interface = %self.ifname, peers, gated = self.gating.applied.len(), "configuration reloaded");
        Ok(())
    }

    /// Configures the device and the routes with the static peers and the gated peers in
    /// force. Returns what was refused from the gated peers.
    async fn apply_peers(&mut self) -> Result<Vec<String>, DaemonError> {
        let routes = self.config.host_plan().routes;
        let limits = GatedLimits::from_config(&self.config);
        let behind_nat = *self.behind_nat.borrow_and_update();
        let moved = |name: &str| self.reresolving.endpoint(name);
        let names = self.reresolving.names(&self.config, &self.gating.applied);
        let statics = peers::statics_in_force(&self.settings, &names, moved);
        let controller = self.config.controller.as_ref();
        let gated = peers::gated_in_force(&self.gating.applied, controller, behind_nat, moved);
        let gated = peers::not_to_self(gated, &crate::probe::target::local_addresses());
        if let Some(relay) = &self.relay {
            relay.permit(peers::candidate_ips(&gated));
        }
        let merged = merge(&statics, &routes, &gated, &limits);
        self.device
            .reconfigure(&merged.settings)
            .await
            .map_err(|source| DaemonError::Device {
                ifname: self.ifname.clone(),
                source,
            })?;
        self.host.update_routes(&merged.routes).await?;
        // A new default route may have chosen a mark.
        if let Some(mark) = self.host.fwmark() {
            self.settings.fwmark = Some(mark);
            self.set_fwmark(mark).await?;
        }
        Ok(merged.refused)
    }

    /// Enforces a membership update from the gating tasks: the device first (the cut-off),
    /// then the routes.
    async fn enforce(&mut self, update: GateUpdate) -> Result<(), DaemonError> {
        if let Some(relay) = &self.relay {
            relay.set_credentials(update.relay.clone());
        }
        // An old preshared key carries traffic for at most one epoch after the next is in use.
        let epoch = update.activation_ms.zip(update.not_after_ms);
        self.device.set_key_handover(
            epoch.map(|(from, to)| Duration::from_millis(to.saturating_sub(from))),
        );
        let previous = std::mem::replace(&mut self.gating.applied, update.peers.clone());
        match self.apply_peers().await {
            Ok(refused) => {
                self.gating.applied = previous;
                self.gating.record(update, refused);
                Ok(())
            }
            Err(error) => {
                self.gating.applied = previous;
                Err(error)
            }
        }
    }
}

/// Interface settings a reload cannot change live.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (a, b) = (&old.interface, &new.interface);
    let mut changed = Vec::new();
    if old.metrics != new.metrics {
        changed.push("metrics listen address");
    }
    if a.name != b.name {
        changed.push("interface name");
    }
    if a.addresses != b.addresses {
        changed.push("address list");
    }
    if a.mtu != b.mtu {
        changed.push("MTU");
    }
    if a.dns != b.dns {
        changed.push("DNS setting");
    }
    if a.table != b.table {
        changed.push("routing table");
    }
    if a.hooks != b.hooks {
        changed.push("hook list");
    }
    changed
}

/// Serves the metrics of `device` (and of its gating, when the configuration has a
/// `[controller]` section) on `listener`. The endpoint holds the device weakly.
fn serve_metrics(
    listener: tokio::net::TcpListener,
    device: &Arc<HostDevice>,
    config: &Config,
    gating: &Gating,
) -> MetricsServer {
    let source = MetricsSource::for_device(device);
    let source = match config.controller {
        Some(_) => source.with_gate(gating.status.clone()),
        None => source,
    };
    metrics::spawn(listener, source)
}

/// After the tun device is closed the kernel removes the link; wait for it (briefly) so that
/// the host teardown and a following start see a clean slate.
async fn wait_for_link_gone(ifname: &str) {
    let path = Path::new("/sys/class/net").join(ifname);
    for _ in 0..50 {
        if !path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A state change reported to systemd.
#[derive(Debug, Clone, Copy)]
enum Notify {
    Ready,
    Reloading,
    Stopping,
}

/// Tells systemd about a state change when running under it (a no-op otherwise).
fn notify(state: Notify) {
    #[cfg(target_os = "linux")]
    {
        use sd_notify::NotifyState;
        let states = match state {
            Notify::Ready => vec![NotifyState::Ready],
            Notify::Stopping => vec![NotifyState::Stopping],
            // Type=notify-reload needs the monotonic time with RELOADING=1.
            Notify::Reloading => {
                let mut v = vec![NotifyState::Reloading];
                v.extend(NotifyState::monotonic_usec_now().ok());
                v
            }
        };
        if let Err(error) = sd_notify::notify(&states) {
            tracing::debug!(error = %Chain(&error), "sd_notify failed");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = state;
}
