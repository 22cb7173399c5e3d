//! `meshtun join TICKET`: enrolling this node at a controller with an invite ticket, and
//! writing a configuration file that brings it into the gated mesh.
//!
//! The steps, in an order that leaves nothing half done:
//! 1. the ticket is checked locally (well-formed, not expired), then the options, the target
//!    file (it must not exist unless `force`) and the configuration to be written, which is
//!    rendered and parsed back before anything is sent;
//! 2. a WireGuard private key is generated, and the Ed25519 identity key file beside the
//!    configuration is created with mode 0600, or reused if an earlier attempt left it;
//! 3. the node enrolls ([`gate::enroll`]): its public keys, addresses and endpoint. The
//!    controller decides the addresses and endpoint: the invite's where the admin set them,
//!    the request's otherwise, and it refuses a node that would have no address;
//! 4. only then is the configuration written, with mode 0600, with the addresses the
//!    controller recorded (or assigned, when neither the invite nor `--address` named one)
//!    and, in `[controller] allowed_prefixes`, the overlay prefixes it sent: the node
//!    accepts routes from the controller only inside them.
//!
//! A failure before step 4 writes no configuration; the identity key file stays so that the
//! next attempt enrolls the same identity.

mod args;
mod membership;
mod render;

use std::io;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use meshtun_proto::membership::MembershipSig;
use meshtun_proto::report::Chain;
use meshtun_proto::wire::{valid_node_id, EnrollResponse, Ticket, TicketError};
use meshtun_proto::{IdentityPublic, PrivateKey, PublicKey};

use meshtun_proto::private_file::{self, Replace};

use crate::config::{
    check_allowed_prefixes, controller_url, load_or_create_identity, BenchmarkSourceConfig,
    ControllerSettings, IdentityFileError, InterfaceConfig, LoadedIdentity, LossPolicy,
    DEFAULT_CACHE_DIR, DEFAULT_GRACE_SECS, DEFAULT_MTU,
};
use crate::gate::unix_ms;
use crate::gate::{self, ClientError};
use crate::host::{self, Dns, Hooks, RouteTable};
use crate::sched::Scheduling;

pub use args::{benchmark_command, benchmark_source, simulated_scores};
use render::Draft;

/// The interface name when none is given.
pub const DEFAULT_INTERFACE: &str = "wg0";

/// The UDP port when none is given.
pub const DEFAULT_LISTEN_PORT: u16 = 51820;

/// Where configurations go by default: `/etc/meshtun/INTERFACE.toml`.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/meshtun";

/// Why `meshtun join` failed. Never carries a key or the ticket's token.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The ticket does not decode.
    #[error(transparent)]
    Ticket(#[from] TicketError),
    /// The ticket names a node id that is not valid.
    #[error("the ticket is for node id `{0}`, which is not a valid node id")]
    TicketNode(String),
    /// The ticket's controller URL cannot be used.
    #[error("the ticket for node {node} names the controller URL {reason}")]
    TicketUrl {
        /// The ticket's node id.
        node: String,
        /// What is wrong with the URL.
        reason: String,
    },
    /// The ticket expired; checked before anything is created or sent.
    #[error(
        "the ticket for node {node} (controller {url}) expired {ago_secs} s ago; ask the \
         controller's admin for a new one (`meshtun-controller invite {node}`)"
    )]
    Expired {
        /// The ticket's node id.
        node: String,
        /// The controller.
        url: String,
        /// Seconds since it expired.
        ago_secs: u64,
    },
    /// `--interface` is not a usable interface name.
    #[error("--interface: {0}")]
    Interface(String),
    /// `--endpoint` is not `host:port`.
    #[error("--endpoint: {reason}")]
    Endpoint {
        /// What is wrong.
        reason: String,
    },
    /// `--benchmark-command` cannot be used.
    #[error("--benchmark-command `{command}`: {reason}")]
    BenchmarkCommand {
        /// The command as given, escaped.
        command: String,
        /// What is wrong.
        reason: String,
    },
    /// `--simulated` cannot be used.
    #[error("--simulated `{text}`: {reason}")]
    Simulated {
        /// The value as given, escaped.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// Both benchmark sources were given.
    #[error("give either --benchmark-command or --simulated, not both")]
    BenchmarkChoice,
    /// The configuration file exists and `force` was not given.
    #[error(
        "{}: the file already exists; pass --force to replace it, or choose another file \
         with --config",
        .path.display()
    )]
    ConfigExists {
        /// The configuration file.
        path: PathBuf,
    },
    /// The configuration file cannot be written there.
    #[error("cannot write the configuration {}: {reason}", .path.display())]
    Unwritable {
        /// The configuration file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The configuration to be written would not load; nothing was sent.
    #[error(
        "the configuration for node {node} would not load, so nothing was sent to the \
         controller: {reason}"
    )]
    Invalid {
        /// The ticket's node id.
        node: String,
        /// Why, naming the file, line and key.
        reason: String,
    },
    /// The identity key file could not be read or created.
    #[error(transparent)]
    Identity(#[from] IdentityFileError),
    /// The ticket's mesh needs the operator's membership signature and none was given:
    /// the keys are kept for the next run, nothing was sent.
    #[error(
        "the mesh of node {node} requires the operator's membership signature over this \
         node's keys; nothing was sent. On the machine with the membership key, run \
         `meshtun-controller membership sign --key MEMBERSHIP_KEY_FILE --node {node} \
         --wg-key {wg_key} --identity-key {identity}`, then run this `meshtun join` again \
         with `--membership-sig SIGNATURE` (the keys are kept: the WireGuard key in {}, \
         the identity key in its file)",
        .pending.display()
    )]
    SignatureNeeded {
        /// The ticket's node id.
        node: String,
        /// The WireGuard public key to sign.
        wg_key: PublicKey,
        /// The identity key to sign.
        identity: IdentityPublic,
        /// The pending WireGuard key file.
        pending: PathBuf,
    },
    /// `--membership-sig` does not verify with the ticket's membership key; nothing was sent.
    #[error("--membership-sig for node {node} is refused (nothing was sent): {reason}")]
    MembershipSig {
        /// The ticket's node id.
        node: String,
        /// Why.
        reason: String,
    },
    /// The pending WireGuard key file could not be read or written.
    #[error("the pending WireGuard key file {}: {reason}", .file.display())]
    PendingKey {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The controller refused the enrollment, or could not be reached. The message holds the
    /// whole chain of `error` (not a `source`: the advice must come last).
    #[error(
        "enrolling node {node} at {url} failed: {}. No configuration was written; the \
         identity key file {} is kept, and running `meshtun join` again reuses it",
        Chain(&**.error),
        .identity_file.display()
    )]
    Enroll {
        /// The ticket's node id.
        node: String,
        /// The controller.
        url: String,
        /// The identity key file, kept for the next attempt.
        identity_file: PathBuf,
        /// What the controller or the connection said.
        error: Box<ClientError>,
    },
    /// The controller's answer assigns what a node must not use; nothing was written.
    #[error(
        "node {node} enrolled at {url}, but the answer is refused and no configuration was \
         written: {reason}"
    )]
    Assignment {
        /// The node id.
        node: String,
        /// The controller.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The node enrolled, but its configuration could not be written.
    #[error(
        "node {node} is enrolled at {url}, but its configuration {} could not be written: \
         {reason}. Its WireGuard private key is lost with it: ask the controller's admin to \
         remove the node (`meshtun-controller node remove {node}`) and issue a new invite",
        .path.display()
    )]
    NotSaved {
        /// The node id.
        node: String,
        /// The controller.
        url: String,
        /// The configuration file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What to join with.
#[derive(Clone)]
pub struct JoinOptions {
    /// The invite ticket.
    pub ticket: Ticket,
    /// Where to write the configuration; `None` for `/etc/meshtun/INTERFACE.toml`.
    pub config: Option<PathBuf>,
    /// The interface name.
    pub interface: String,
    /// The UDP port to listen on.
    pub listen_port: u16,
    /// The overlay addresses to ask for; the invite's win if the admin set some.
    pub addresses: Vec<IpNet>,
    /// Where other nodes reach this node (`host:port`); the invite's wins if set.
    pub endpoint: Option<String>,
    /// Where benchmark scores come from; `None` writes `[benchmark]` commented out.
    pub benchmark: Option<BenchmarkSourceConfig>,
    /// Replace an existing configuration file.
    pub force: bool,
    /// The operator's membership signature over this node's id and keys (`--membership-sig`),
    /// for a mesh with a membership key (see `join::membership`).
    pub membership_sig: Option<MembershipSig>,
}

impl std::fmt::Debug for JoinOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ticket's token is a credential: left out.
        f.debug_struct("JoinOptions")
            .field("url", &self.ticket.url)
            .field("node_id", &self.ticket.node_id)
            .field("config", &self.config)
            .field("interface", &self.interface)
            .field("listen_port", &self.listen_port)
            .field("addresses", &self.addresses)
            .field("endpoint", &self.endpoint)
            .field("benchmark", &self.benchmark)
            .field("force", &self.force)
            .field("membership_sig", &self.membership_sig)
            .finish_non_exhaustive()
    }
}

/// What `meshtun join` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The configuration file written.
    pub path: PathBuf,
    /// The node id.
    pub node_id: String,
    /// The controller.
    pub url: String,
    /// The overlay addresses the controller recorded (in the configuration).
    pub addresses: Vec<IpNet>,
    /// The endpoint the controller recorded, if any.
    pub endpoint: Option<String>,
    /// The interface's WireGuard public key, as enrolled.
    pub wg_public_key: PublicKey,
    /// The node's identity key, as enrolled.
    pub identity_public: IdentityPublic,
    /// The identity key file.
    pub identity_file: PathBuf,
    /// True if the identity key file was created now; false if an earlier attempt left it.
    pub identity_created: bool,
    /// True if the configuration has a `[benchmark]` section.
    pub benchmark: bool,
    /// Things the operator should know, one sentence each.
    pub notes: Vec<String>,
}

/// The default configuration file of `interface`: `/etc/meshtun/INTERFACE.toml`.
pub fn default_config_path(interface: &str) -> PathBuf {
    Path::new(DEFAULT_CONFIG_DIR).join(format!("{interface}.toml"))
}

/// Enrolls this node with `options.ticket` and writes its configuration; see the module
/// documentation for the order of the steps.
pub async fn join(options: &JoinOptions) -> Result<Joined, JoinError> {
    let prepared = prepare(options, unix_ms())?;
    let keys = (
        &prepared.draft.interface.private_key,
        &prepared.identity.key.public(),
    );
    let sig = membership::check(
        &options.ticket,
        options.membership_sig,
        keys,
        &prepared.pending,
    )?;
    let enrolled = gate::enroll_signed(
        &options.ticket,
        (
            &prepared.draft.interface.private_key,
            &prepared.identity.key,
        ),
        options.addresses.clone(),
        prepared.draft.endpoint.clone(),
        sig,
    )
    .await
    .map_err(|error| JoinError::Enroll {
        node: options.ticket.node_id.clone(),
        url: prepared.draft.controller.urls[0].clone(),
        identity_file: prepared.draft.controller.identity_key_file.clone(),
        error: Box::new(error),
    })?;
    prepared.save(enrolled, options)
}

/// Everything checked and created before enrolling.
struct Prepared {
    path: PathBuf,
    draft: Draft,
    identity: LoadedIdentity,
    /// The pending WireGuard key file (used only with a ticket naming a membership key).
    pending: PathBuf,
}

/// Step 1 and 2: checks, then the keys. `now_ms` is the time the ticket is checked against.
fn prepare(options: &JoinOptions, now_ms: u64) -> Result<Prepared, JoinError> {
    let url = check_ticket(&options.ticket, now_ms)?;
    host::validate_ifname(&options.interface).map_err(|e| JoinError::Interface(e.to_string()))?;
    let endpoint = options
        .endpoint
        .as_deref()
        .map(args::endpoint)
        .transpose()?;
    let path = options
        .config
        .clone()
        .unwrap_or_else(|| default_config_path(&options.interface));
    check_target(&path, options.force)?;
    let draft = draft(options, &path, url, endpoint);
    draft
        .render_checked(&path)
        .map_err(|reason| JoinError::Invalid {
            node: options.ticket.node_id.clone(),
            reason,
        })?;
    prepare_directory(&path)?;
    let identity = load_or_create_identity(&draft.controller.identity_key_file)?;
    let pending = membership::pending_key_path(&path);
    let mut draft = draft;
    if let Some(key) = membership::pending_key(&options.ticket, &pending)? {
        draft.interface.private_key = key;
    }
    Ok(Prepared {
        path,
        draft,
        identity,
        pending,
    })
}

/// Checks the ticket's node id, URL and expiry; returns the URL in canonical form.
fn check_ticket(ticket: &Ticket, now_ms: u64) -> Result<String, JoinError> {
    if !valid_node_id(&ticket.node_id) {
        return Err(JoinError::TicketNode(
            ticket.node_id.escape_debug().to_string(),
        ));
    }
    let url = controller_url(&ticket.url).map_err(|reason| JoinError::TicketUrl {
        node: ticket.node_id.clone(),
        reason,
    })?;
    if now_ms >= ticket.expires_ms {
        return Err(JoinError::Expired {
            node: ticket.node_id.clone(),
            url,
            ago_secs: (now_ms - ticket.expires_ms) / 1000,
        });
    }
    Ok(url)
}

/// Refuses an existing file unless `force`, and anything but a regular file.
fn check_target(path: &Path, force: bool) -> Result<(), JoinError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !force {
        return Err(JoinError::ConfigExists {
            path: path.to_owned(),
        });
    }
    if !meta.is_file() {
        return Err(JoinError::Unwritable {
            path: path.to_owned(),
            reason: "it exists and is not a regular file".into(),
        });
    }
    Ok(())
}

/// Creates the configuration's directory (mode 0700) if it is missing, and checks that the
/// file can be created there, so that writing it after enrolling does not fail.
fn prepare_directory(path: &Path) -> Result<(), JoinError> {
    let unwritable = |reason: String| JoinError::Unwritable {
        path: path.to_owned(),
        reason,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if !dir.exists() {
        create_private_dir(dir)
            .map_err(|e| unwritable(format!("cannot create {}: {e}", dir.display())))?;
    }
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .map_err(|e| {
        unwritable(format!(
            "the directory {} is not writable: {e}",
            dir.display()
        ))
    })
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The configuration as it will be written, before the controller's answer.
fn draft(options: &JoinOptions, path: &Path, url: String, endpoint: Option<String>) -> Draft {
    let name = &options.interface;
    let dir = path.parent().unwrap_or(Path::new(""));
    Draft {
        interface: InterfaceConfig {
            name: name.clone(),
            private_key: PrivateKey::generate(),
            addresses: options.addresses.clone(),
            listen_port: Some(options.listen_port),
            mtu: DEFAULT_MTU,
            fwmark: None,
            dns: Dns::default(),
            table: RouteTable::Auto,
            hooks: Hooks::default(),
            scheduling: Scheduling::default(),
        },
        controller: ControllerSettings {
            urls: vec![url],
            public_keys: meshtun_proto::KeySet::one(options.ticket.controller_key),
            node_id: options.ticket.node_id.clone(),
            identity_key_file: dir.join(format!("{name}.identity")),
            on_controller_loss: LossPolicy::FailClosed,
            grace: std::time::Duration::from_secs(DEFAULT_GRACE_SECS),
            cache_file: Path::new(DEFAULT_CACHE_DIR).join(format!("{name}.bundle")),
            ca_file: None,
            allowed_prefixes: None,
            stun: None,
            keepalive: Default::default(),
            membership_key: options.ticket.membership_key,
            observe: Default::default(),
        },
        benchmark: options.benchmark.clone().map(args::benchmark_settings),
        endpoint,
    }
}

impl Prepared {
    /// Step 4: the configuration with what the controller recorded, written with mode 0600.
    fn save(
        mut self,
        enrolled: EnrollResponse,
        options: &JoinOptions,
    ) -> Result<Joined, JoinError> {
        let node = enrolled.node_id.clone();
        let url = self.draft.controller.urls[0].clone();
        let not_saved = |reason: String| JoinError::NotSaved {
            node: node.clone(),
            url: url.clone(),
            path: self.path.clone(),
            reason,
        };
        let mut notes = self.notes(&enrolled, options);
        check_assignment(&enrolled).map_err(|reason| JoinError::Assignment {
            node: node.clone(),
            url: url.clone(),
            reason,
        })?;
        // A controller that does not report addresses recorded the requested ones.
        if !enrolled.addresses.is_empty() {
            self.draft.interface.addresses = enrolled.addresses.clone();
        }
        if !enrolled.network.is_empty() {
            self.draft.controller.allowed_prefixes = Some(enrolled.network.clone());
        }
        if enrolled.endpoint.is_some() {
            self.draft.endpoint = enrolled.endpoint.clone();
        }
        let text = self.draft.render_checked(&self.path).map_err(&not_saved)?;
        let replace = if options.force {
            Replace::Atomically
        } else {
            Replace::Never
        };
        private_file::write(&self.path, text.as_bytes(), replace)
            .map_err(|e| not_saved(e.to_string()))?;
        // The key is in the configuration now; a later join makes a new one.
        match std::fs::remove_file(&self.pending) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => notes.push(format!(
                "{} could not be removed ({e}): it holds the key now in the configuration; \
                 delete it",
                self.pending.display()
            )),
        }
        if let Some(warning) = self.identity.warning.take() {
            notes.push(warning);
        }
        Ok(Joined {
            path: self.path.clone(),
            node_id: node.clone(),
            url: url.clone(),
            addresses: self.draft.interface.addresses.clone(),
            endpoint: self.draft.endpoint.clone(),
            wg_public_key: self.draft.interface.private_key.public_key(),
            identity_public: self.identity.key.public(),
            identity_file: self.draft.controller.identity_key_file.clone(),
            identity_created: self.identity.created,
            benchmark: self.draft.benchmark.is_some(),
            notes,
        })
    }

    /// What the operator should know about the outcome.
    fn notes(&self, enrolled: &EnrollResponse, options: &JoinOptions) -> Vec<String> {
        let mut notes = Vec::new();
        let requested = &options.addresses;
        if !requested.is_empty()
            && !enrolled.addresses.is_empty()
            && enrolled.addresses != *requested
        {
            notes.push(format!(
                "the invite sets this node's overlay addresses: the controller recorded {}, not \
                 the requested {}; the configuration has the controller's",
                list(&enrolled.addresses),
                list(requested)
            ));
        }
        if let (Some(asked), Some(recorded)) = (&self.draft.endpoint, &enrolled.endpoint) {
            if asked != recorded {
                notes.push(format!(
                    "the invite sets this node's endpoint: other nodes are told to reach it at \
                     {}, not {asked}",
                    recorded.escape_debug()
                ));
            }
        }
        if let Some(BenchmarkSourceConfig::Command(argv)) = &options.benchmark {
            if let Some(program) = argv.first().filter(|p| p.contains('/')) {
                if !Path::new(program).is_file() {
                    notes.push(format!(
                        "the benchmark program {program} does not exist yet; install it before \
                         starting the node"
                    ));
                }
            }
        }
        if options.benchmark.is_none() {
            notes.push(format!(
                "no benchmark source was given: until it submits benchmarks the controller \
                 denies this node membership; set [benchmark] in {} (a commented example is \
                 there)",
                self.path.display()
            ));
        }
        notes
    }
}

/// Checks what the controller assigned before it goes into the configuration: the overlay
/// prefixes must be ones a node accepts (no default route or pieces of one), and every
/// address, with the network its prefix length makes, must lie inside them, so that the
/// interface's connected route cannot capture anything outside the overlay.
fn check_assignment(enrolled: &EnrollResponse) -> Result<(), String> {
    if enrolled.network.is_empty() {
        return Ok(());
    }
    check_allowed_prefixes(&enrolled.network)
        .map_err(|reason| format!("the overlay prefixes it sent are refused: {reason}"))?;
    if let Some(outside) = enrolled
        .addresses
        .iter()
        .find(|a| !enrolled.network.iter().any(|p| p.contains(&a.trunc())))
    {
        return Err(format!(
            "it assigned the address {outside}, which is outside the overlay prefixes it sent \
             ({})",
            list(&enrolled.network)
        ));
    }
    Ok(())
}

fn list(nets: &[IpNet]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
