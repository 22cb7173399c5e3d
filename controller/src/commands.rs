//! What each `meshtun-controller` subcommand does. The binary parses the command line and
//! calls these.

pub mod backup;
pub mod evaluators;
pub mod membership;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use meshtun_proto::private_file::{self, Changeable, Replace};
use meshtun_proto::relay::RelaySecret;
use meshtun_proto::report::describe;
use meshtun_proto::{IdentityKey, IdentityPublic, KeySet};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::api::ApiSettings;
use crate::clock::Clock;
use crate::config::{ConfigError, ControllerConfig, Limits};
use crate::engine::{Engine, EngineSettings};
use crate::ha::{KeeperSettings, Leadership, LeaseTiming};
use crate::keys::ControllerKeys;
use crate::membership::decide_one;
use crate::relay::RelayIssuer;
use crate::schedule::{Schedule, ScheduleError};
use crate::service::{Epochs, ServeError, ServeSettings, Shared, STATUS_CONNECTIONS};
use crate::store::audit::DecisionEntry;
use crate::store::{AuditEntry, AuditError, AuditKind, AuditReport, Database, Store, StoreError};
use crate::tls;

pub use membership::{invite, node_add, node_list, node_pin, node_remove};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log does not verify.
    #[error("the audit log does not verify")]
    Audit(#[from] AuditError),
    /// A key or token file.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A bad argument.
    #[error("{0}")]
    Argument(String),
    /// An external program (`pg_dump`, `pg_restore`) failed.
    #[error("{program}: {reason}")]
    Program {
        /// The program.
        program: String,
        /// What went wrong, with the end of its standard error.
        reason: String,
    },
    /// The epoch schedule is invalid.
    #[error("epoch settings")]
    Schedule(#[from] ScheduleError),
    /// Listening or serving failed.
    #[error("cannot serve on {addr}")]
    Serve {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The running controller failed.
    #[error(transparent)]
    Serving(#[from] ServeError),
    /// Talking to the running controller failed.
    #[error("cannot reach the controller at {url}: {reason}")]
    Remote {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> CommandError {
    CommandError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Writes `contents` to a new file of mode 0600, refusing to overwrite. A missing directory
/// is created with mode 0700, like the database's.
pub(crate) fn write_secret(path: &Path, contents: &str) -> Result<(), CommandError> {
    // The state directory holds secrets: owner only.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_file::create_dir(dir).map_err(|e| file_err(dir, e))?;
    }
    let text = Zeroizing::new(format!("{contents}\n"));
    private_file::write(path, text.as_bytes(), Replace::Never).map_err(|e| file_err(path, e))
}

/// The largest secret file read: a key or token is under 100 characters.
const MAX_SECRET_FILE: usize = 4096;

/// Reads a secret file, warning if group or others have access to it, or if someone other
/// than root and this user could replace it.
pub(crate) fn read_secret(path: &Path) -> Result<Zeroizing<String>, CommandError> {
    let meta = fs::metadata(path)
        .map_err(|e| file_err(path, format!("{e} (run `meshtun-controller init` first)")))?;
    if let Some(mode) = private_file::exposed_mode(&meta) {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:04o}"),
            "secret file is readable by others; fix with chmod 600"
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    match private_file::changeable_by_others(&meta, me) {
        Some(Changeable::Owner(uid)) => tracing::warn!(
            path = %path.display(),
            owner = uid,
            "secret file belongs to another user, who can replace it; chown it to this user"
        ),
        Some(Changeable::Writable(_)) | None => {}
    }
    let bytes = private_file::read_limited(path, MAX_SECRET_FILE)
        .map_err(|e| file_err(path, e))?
        .ok_or_else(|| file_err(path, format!("larger than {MAX_SECRET_FILE} bytes")))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| file_err(path, "not UTF-8 text"))?;
    Ok(Zeroizing::new(text.trim().to_owned()))
}

/// The relays and their shared secret (`[relay]`), if configured; an empty secret would let
/// anyone mint credentials and is refused.
fn relay_issuer(config: &ControllerConfig) -> Result<Option<RelayIssuer>, CommandError> {
    let Some(relay) = &config.relay else {
        return Ok(None);
    };
    let secret = RelaySecret::new(&read_secret(&relay.secret_file)?);
    if secret.is_empty() {
        return Err(file_err(&relay.secret_file, "the relay secret is empty"));
    }
    Ok(Some(RelayIssuer {
        urls: relay.urls.clone(),
        secret,
    }))
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What `init` did.
#[derive(Debug)]
pub struct InitReport {
    /// The controller's public key (nodes pin it).
    pub public_key: IdentityPublic,
    /// Files created (existing ones are kept).
    pub created: Vec<PathBuf>,
}

/// `init`: creates the key, the admin token and the database, keeping what exists.
pub fn init(config: &ControllerConfig) -> Result<InitReport, CommandError> {
    let mut created = Vec::new();
    if !config.key_file.exists() {
        write_secret(&config.key_file, &IdentityKey::generate().to_base64())?;
        created.push(config.key_file.clone());
    }
    if !config.admin_token_file.exists() {
        write_secret(&config.admin_token_file, &random_token())?;
        created.push(config.admin_token_file.clone());
    }
    if let Some(read) = config.read_token_file.as_ref().filter(|f| !f.exists()) {
        write_secret(read, &random_token())?;
        created.push(read.clone());
    }
    let existed = config.database.sqlite_path().is_none_or(Path::exists);
    Store::connect(&config.database)?;
    if !existed {
        created.extend(config.database.sqlite_path().map(Path::to_owned));
    }
    let key = load_key(config)?;
    Ok(InitReport {
        public_key: key.public(),
        created,
    })
}

/// `check`: validates what `serve` would use beyond the file itself (the epoch schedule, the
/// TLS certificate and key, the relay secret), without creating or changing anything.
pub fn check(config: &ControllerConfig) -> Result<(), CommandError> {
    relay_issuer(config)?;
    Schedule::new(
        u64::try_from(config.epoch_length.as_millis()).unwrap_or(u64::MAX),
        u64::try_from(config.epoch_lead.as_millis()).unwrap_or(u64::MAX),
    )?;
    if let Some(files) = &config.tls {
        tls::acceptor(files)?;
    }
    Ok(())
}

fn load_key(config: &ControllerConfig) -> Result<IdentityKey, CommandError> {
    let text = read_secret(&config.key_file)?;
    IdentityKey::from_base64(&text).map_err(|e| file_err(&config.key_file, e))
}

/// `key new`: writes a fresh key to `file` (0600, never over an existing file) and returns
/// its public half.
pub fn key_new(file: &Path) -> Result<IdentityPublic, CommandError> {
    let key = IdentityKey::generate();
    write_secret(file, &key.to_base64())?;
    Ok(key.public())
}

/// `key show`: the configured key's public half, then the previous keys, each checked.
pub fn key_show(config: &ControllerConfig) -> Result<KeySet, CommandError> {
    Ok(load_keys(config)?.answers_to().clone())
}

/// The signing key, with the configuration's `previous_keys`.
fn load_keys(config: &ControllerConfig) -> Result<ControllerKeys, CommandError> {
    ControllerKeys::new(load_key(config)?, &config.previous_keys).map_err(|e| {
        file_err(
            &config.key_file,
            format!("with `previous_keys`: {e} (the signing key is not a previous key)"),
        )
    })
}

/// `serve`: binds the listeners `config` names and runs the controller on them
/// ([`crate::serve`]) until `shutdown` completes.
pub async fn serve(
    config: &ControllerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), CommandError> {
    check(config)?;
    let key = load_keys(config)?;
    let api = ApiSettings {
        admin_token: read_secret(&config.admin_token_file)?,
        read_token: config
            .read_token_file
            .as_deref()
            .map(read_secret)
            .transpose()?,
        clock_skew: config.clock_skew,
        long_poll: config.long_poll,
        limits: fit_file_limit(config.limits),
    };
    let schedule = Schedule::new(
        u64::try_from(config.epoch_length.as_millis()).unwrap_or(u64::MAX),
        u64::try_from(config.epoch_lead.as_millis()).unwrap_or(u64::MAX),
    )?;
    let settings = EngineSettings {
        policy: config.policy.clone(),
        schedule,
        rotate_on_deny: config.rotate_on_deny,
        relay: relay_issuer(config)?,
    };
    // The store blocks (and the PostgreSQL driver must not run inside the runtime).
    crate::enrollment_sig::announce(config.membership_key.as_ref());
    let (database, network, retention, membership_key) = (
        config.database.clone(),
        config.network.clone(),
        config.retention,
        config.membership_key,
    );
    let (ha, window_ms) = (
        config.ha.clone(),
        u64::try_from(config.clock_skew.as_millis()).unwrap_or(u64::MAX),
    );
    let opened = tokio::task::spawn_blocking(move || -> Result<_, CommandError> {
        let store = Arc::new(Store::connect(&database)?);
        let shared = store.shared_parts(window_ms);
        let engine = Engine::open(store, key, settings, Clock::system())?
            .with_network(network)
            .with_membership_key(membership_key)
            .with_retention(retention);
        // On PostgreSQL, any number of instances may share the database: one leads.
        Ok(match shared {
            Some(parts) => (
                engine.with_leadership(Leadership::lease(
                    ha.instance.clone(),
                    LeaseTiming::new(ha.lease),
                )),
                Some((parts, ha.instance)),
            ),
            None => (engine, None),
        })
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    let (engine, shared) = opened;
    let engine = Arc::new(engine);
    let shared = shared.map(|(parts, instance)| Shared {
        parts,
        keeper: KeeperSettings {
            instance,
            url: config.url.clone(),
        },
    });
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| CommandError::Serve { addr, source })
    };
    let listener = bind(config.listen).await?;
    let status = bind(config.status_listen).await?;
    let stun = match config.stun {
        None => None,
        Some(stun) => {
            let socket = tokio::net::UdpSocket::bind(stun.listen)
                .await
                .map_err(|source| CommandError::Serve {
                    addr: stun.listen,
                    source,
                })?;
            Some((socket, stun.limits))
        }
    };
    tracing::info!(
        listen = %config.listen,
        status_listen = %config.status_listen,
        "/metrics and /v1/status on status_listen"
    );
    // The engine's last reference closes its store, whose PostgreSQL driver must not be
    // dropped on a runtime thread (it panics there): it is dropped off the runtime below.
    let last = engine.clone();
    let settings = ServeSettings {
        engine,
        api,
        tls: config.tls.as_ref().map(tls::acceptor).transpose()?,
        status: Some(status),
        epochs: Epochs::Scheduled,
        shared,
        stun,
    };
    let served = crate::serve(listener, settings, shutdown).await;
    let _ = tokio::task::spawn_blocking(move || drop(last)).await;
    Ok(served?)
}

/// File descriptors kept for everything but connections: the database, logs, listeners.
const SPARE_FILES: u64 = 128;

/// Raises the soft limit on open files to what `limits` needs (up to the hard limit), and
/// returns the limits with `max_connections` (and the caps under it) lowered to what the
/// open-file limit allows, with a warning, so that the controller never runs out of file
/// descriptors (which would stop it accepting anyone).
fn fit_file_limit(limits: Limits) -> Limits {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let wanted = u64::from(limits.max_connections) + u64::from(STATUS_CONNECTIONS) + SPARE_FILES;
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return limits;
    };
    let mut have = soft;
    if wanted > soft {
        let target = wanted.min(hard);
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => have = target,
            Err(error) => tracing::warn!(soft, hard, %error, "cannot raise the open-file limit"),
        }
    }
    if have >= wanted {
        return limits;
    }
    let fits = have
        .saturating_sub(u64::from(STATUS_CONNECTIONS) + SPARE_FILES)
        .max(16);
    let max = u32::try_from(fits).unwrap_or(u32::MAX);
    tracing::warn!(
        open_files = have,
        configured = limits.max_connections,
        used = max,
        "the open-file limit is too low for limits.max_connections: using fewer; raise \
         LimitNOFILE (or the hard limit) to serve the configured number"
    );
    Limits {
        max_connections: max,
        max_connections_per_address: limits.max_connections_per_address.min(max),
        max_long_polls: limits.max_long_polls.min(max),
        max_long_polls_per_address: limits.max_long_polls_per_address.min(max),
        ..limits
    }
}

/// What `audit verify` checked.
#[derive(Debug)]
pub struct VerifyReport {
    /// The chain and signature check.
    pub chain: AuditReport,
    /// Decisions recomputed from their recorded inputs, all matching.
    pub decisions_recomputed: u64,
}

/// `audit verify`: the hash chain, every benchmark signature, and every decision recomputed
/// from its recorded inputs with the membership engine.
pub fn audit_verify(config: &ControllerConfig) -> Result<VerifyReport, CommandError> {
    audit_verify_at(config, &config.database)
}

/// `audit verify --database`: [`audit_verify`] on `database`, with the configuration's key.
pub fn audit_verify_at(
    config: &ControllerConfig,
    database: &Database,
) -> Result<VerifyReport, CommandError> {
    let store = Store::connect(database)?;
    let chain = store.verify_audit(load_keys(config)?.answers_to())?;
    let mut recomputed = 0;
    let mut from = 1;
    loop {
        let entries = store.audit_entries(from, 512)?;
        let Some(last) = entries.last() else {
            break;
        };
        from = last.seq + 1;
        for entry in entries
            .iter()
            .filter(|e| e.kind == AuditKind::Decision.as_str())
        {
            recheck_decision(entry)?;
            recomputed += 1;
        }
    }
    Ok(VerifyReport {
        chain,
        decisions_recomputed: recomputed,
    })
}

/// `migrate`: copies the SQLite database `from` into the empty PostgreSQL database `to`,
/// then verifies the audit chain there. Returns the rows copied per table and the report.
pub fn migrate(
    config: &ControllerConfig,
    from: &Database,
    to: &Database,
) -> Result<(crate::store::migrate::CopyReport, VerifyReport), CommandError> {
    let (Database::Sqlite(source), Database::Postgres(target)) = (from, to) else {
        return Err(CommandError::Argument(
            "migrate copies an SQLite database (--from sqlite:///…) into a PostgreSQL one \
             (--to postgres://…)"
                .into(),
        ));
    };
    let copied = crate::store::migrate::sqlite_to_postgres(source, target)?;
    let report = audit_verify_at(config, to)?;
    Ok((copied, report))
}

/// Decides again from a decision entry's recorded input, policy and time.
fn recheck_decision(entry: &AuditEntry) -> Result<(), CommandError> {
    let bad =
        |reason: String| CommandError::Argument(format!("audit entry {}: {reason}", entry.seq));
    let d: DecisionEntry =
        serde_json::from_str(&entry.entry).map_err(|e| bad(format!("unreadable decision: {e}")))?;
    let again = decide_one(&d.input, &d.policy, d.decided_ms);
    if again.allowed != d.decision.allowed || again.reason != d.decision.reason {
        return Err(bad(format!(
            "recorded decision for {} in epoch {} ({}: {}) differs from the recomputed one ({}: {})",
            d.decision.node_id,
            d.epoch,
            if d.decision.allowed { "ALLOW" } else { "DENY" },
            d.decision.reason,
            if again.allowed { "ALLOW" } else { "DENY" },
            again.reason
        )));
    }
    Ok(())
}

fn http_client() -> Result<reqwest::Client, CommandError> {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| CommandError::Remote {
            url: String::new(),
            reason: describe(&e),
        })
}

/// `status`: the running controller's `/v1/status`, from the status listener, as pretty
/// JSON (with the read token, if one is configured).
pub async fn status(config: &ControllerConfig) -> Result<String, CommandError> {
    let url = format!("http://{}/v1/status", config.status_listen);
    let remote = |reason: String| CommandError::Remote {
        url: url.clone(),
        reason,
    };
    let mut request = http_client()?.get(&url);
    if let Some(file) = &config.read_token_file {
        request = request.bearer_auth(read_secret(file)?.as_str());
    }
    let body: serde_json::Value = request
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| remote(describe(&e)))?
        .json()
        .await
        .map_err(|e| remote(describe(&e)))?;
    serde_json::to_string_pretty(&body).map_err(|e| remote(describe(&e)))
}

/// `rotate`: asks the running controller for a new epoch now; returns its id.
pub async fn rotate(config: &ControllerConfig) -> Result<u64, CommandError> {
    let token = read_secret(&config.admin_token_file)?;
    let url = format!("{}/v1/rotate", config.url);
    let remote = |reason: String| CommandError::Remote {
        url: url.clone(),
        reason,
    };
    let body: serde_json::Value = http_client()?
        .post(&url)
        .bearer_auth(token.as_str())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| remote(describe(&e)))?
        .json()
        .await
        .map_err(|e| remote(describe(&e)))?;
    body.get("epoch")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| remote("answer without an epoch".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[relay]`: `check` reads the secret file; a missing or empty one is refused, naming
    /// the file (an empty secret would let anyone mint relay credentials).
    #[test]
    fn check_refuses_a_missing_or_empty_relay_secret() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("controller.toml");
        let text = "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\n\
                    state_dir = \"state\"\n[relay]\nurls = [\"turn:198.51.100.1:3478\"]\n\
                    secret_file = \"relay.secret\"\n";
        let config = ControllerConfig::parse(text, &file).unwrap();
        let secret = dir.path().join("relay.secret");
        let err = check(&config).unwrap_err().to_string();
        assert!(err.contains("relay.secret"), "{err}");
        private_file::write(&secret, b"  \n", Replace::Never).unwrap();
        let err = check(&config).unwrap_err().to_string();
        assert!(
            err.contains("relay.secret") && err.contains("empty"),
            "{err}"
        );
        fs::remove_file(&secret).unwrap();
        private_file::write(&secret, b"north-wind-secret\n", Replace::Never).unwrap();
        check(&config).unwrap();
        let issuer = relay_issuer(&config).unwrap().unwrap();
        assert_eq!(
            issuer.secret.password("61:a"),
            RelaySecret::new("north-wind-secret").password("61:a"),
            "the secret is the file's text, trimmed"
        );
    }

    #[test]
    fn init_keeps_its_secrets_in_a_private_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("controller.toml");
        let text = "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"state/sub\"\n";
        let config = ControllerConfig::parse(text, &file).unwrap();
        let report = init(&config).unwrap();
        assert_eq!(report.created.len(), 3);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("state")), 0o700);
        assert_eq!(mode(&dir.path().join("state/sub")), 0o700);
        let database = config.database.sqlite_path().unwrap().to_owned();
        for secret in [&config.key_file, &config.admin_token_file, &database] {
            assert_eq!(mode(secret), 0o600, "{}", secret.display());
        }
        // A second init keeps everything.
        assert!(init(&config).unwrap().created.is_empty());
        assert_eq!(init(&config).unwrap().public_key, report.public_key);
    }

    /// Key rotation: `key new` writes a private key file it never overwrites, and the
    /// configured key with `previous_keys` is what `key show` lists, the signing key first;
    /// the signing key listed as its own previous key is refused, naming both.
    #[test]
    fn key_new_writes_a_private_key_and_key_show_lists_the_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("controller.toml");
        let text =
            "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"state\"\n";
        let config = ControllerConfig::parse(text, &file).unwrap();
        let old = init(&config).unwrap().public_key;
        let next = dir.path().join("next.key");
        let new = key_new(&next).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&next).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            key_new(&next).is_err(),
            "an existing key file is never overwritten"
        );
        assert_eq!(
            IdentityKey::from_base64(&read_secret(&next).unwrap())
                .unwrap()
                .public(),
            new
        );
        let rotated = format!("key_file = \"next.key\"\nprevious_keys = [\"{old}\"]\n{text}");
        let config = ControllerConfig::parse(&rotated, &file).unwrap();
        assert_eq!(key_show(&config).unwrap().keys(), [new, old]);
        let itself = format!("key_file = \"next.key\"\nprevious_keys = [\"{new}\"]\n{text}");
        let config = ControllerConfig::parse(&itself, &file).unwrap();
        let err = key_show(&config).unwrap_err().to_string();
        assert!(
            err.contains("next.key") && err.contains("listed twice"),
            "{err}"
        );
    }

    #[test]
    fn check_creates_nothing_and_names_a_missing_tls_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("controller.toml");
        let plain =
            "listen = \"127.0.0.1:8700\"\nurl = \"http://127.0.0.1:8700\"\nstate_dir = \"state\"\n";
        check(&ControllerConfig::parse(plain, &file).unwrap()).unwrap();
        assert!(
            !dir.path().join("state").exists(),
            "check created the state directory"
        );

        let tls = format!("{plain}[tls]\ncert = \"missing.crt\"\nkey = \"missing.pem\"\n");
        let error = check(&ControllerConfig::parse(&tls, &file).unwrap()).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("missing.crt"), "{message}");
    }
}
