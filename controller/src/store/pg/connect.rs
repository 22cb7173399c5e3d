//! From the `database` URL to a pool of connections: the password from its own file, TLS
//! with rustls whenever the server is reached over a network, and error messages that name
//! the host and database but never the password.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use postgres::config::{Host, SslMode};
use postgres::Config;
use r2d2_postgres::PostgresConnectionManager;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::super::error::PgError;

/// The pool's connection manager: TLS by rustls where the connection asks for it.
pub(crate) type Manager = PostgresConnectionManager<MakeRustlsConnect>;

/// The system's CA bundle, trusted when the URL names no `sslrootcert`.
pub(crate) const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A password file larger than this is not a password file.
const MAX_PASSWORD_BYTES: u64 = 4096;

/// How long to wait for a connection, to the server or from the pool.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings every connection gets: commits are durable before they are acknowledged, no
/// statement or lock wait is unbounded.
const SESSION_OPTIONS: &str = "-c synchronous_commit=on -c lock_timeout=10s \
     -c statement_timeout=120s -c idle_in_transaction_session_timeout=60s";

/// A PostgreSQL database as the configuration names it.
#[derive(Clone, PartialEq, Eq)]
pub struct PgTarget {
    /// The URL as written (it holds no password: one is refused).
    pub url: String,
    /// The file holding the password, if the server asks for one.
    pub password_file: Option<PathBuf>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.url)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// What [`prepare`] made of a target: the driver's configuration, the TLS connector and a
/// description for messages.
pub(crate) struct Prepared {
    pub config: Config,
    pub tls: MakeRustlsConnect,
    pub location: String,
    /// The URL's `sslrootcert`, if any (else the system's roots are trusted).
    pub rootcert: Option<PathBuf>,
}

/// Parses and checks the target's URL, reads its password file and builds the TLS
/// connector. Refuses: a password in the URL; plain TCP to a host that is not loopback
/// unless the URL says `sslmode=disable`; a password file others can read or that belongs
/// to another user.
pub(crate) fn prepare(target: &PgTarget) -> Result<Prepared, PgError> {
    let (url, params) = split_params(&target.url);
    let config_err = |reason: String| PgError::Config {
        location: redact(&target.url),
        reason,
    };
    let mut kept = Vec::new();
    let mut sslmode = None;
    let mut rootcert = None;
    for (key, value) in &params {
        match key.as_str() {
            "sslrootcert" => rootcert = Some(PathBuf::from(value)),
            "sslmode" => sslmode = Some(value.clone()),
            "password" => return Err(config_err(password_in_url())),
            _ => kept.push(format!("{key}={value}")),
        }
    }
    let text = if kept.is_empty() {
        url.to_owned()
    } else {
        format!("{url}?{}", kept.join("&"))
    };
    let mut config = Config::from_str(&text).map_err(|e| config_err(e.to_string()))?;
    if config.get_password().is_some() {
        return Err(config_err(password_in_url()));
    }
    let location = describe(&config);
    let network = needs_tls(&config);
    let mode = match sslmode.as_deref() {
        Some("disable") => SslMode::Disable,
        // rustls always checks the certificate and the host name: verify-full, for all.
        Some("require" | "verify-ca" | "verify-full") => SslMode::Require,
        Some("prefer") | None if network.is_some() => SslMode::Require,
        Some("prefer") | None => SslMode::Prefer,
        Some(other) => {
            return Err(config_err(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    config.ssl_mode(mode);
    if let Some(path) = &target.password_file {
        let password = read_password_file(path)?;
        config.password(password.as_bytes());
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    let options = match config.get_options() {
        Some(own) => format!("{own} {SESSION_OPTIONS}"),
        None => SESSION_OPTIONS.to_owned(),
    };
    config.options(&options);
    if config.get_application_name().is_none() {
        config.application_name("meshtun-controller");
    }
    let tls = tls_connector(rootcert.as_deref()).map_err(config_err)?;
    Ok(Prepared {
        config,
        tls,
        location,
        rootcert,
    })
}

fn password_in_url() -> String {
    "the URL holds a password; put it in the file named by database_password_file \
     (mode 0600) instead"
        .to_owned()
}

/// The URL before its `?`, and its query parameters.
fn split_params(url: &str) -> (&str, Vec<(String, String)>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url, Vec::new());
    };
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    (base, params)
}

/// The URL with anything between `://` and `@` other than the user name removed, for
/// messages about a URL that did not parse.
pub(crate) fn redact(url: &str) -> String {
    let url = url.split_once('?').map_or(url, |(base, _)| base);
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".to_owned();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}@{host}")
        }
        None => format!("{scheme}://{rest}"),
    }
}

/// `postgres://user@host:port/dbname`, never with a password.
pub(crate) fn describe(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{}:{port}/{}",
        config.get_user().unwrap_or("(default user)"),
        if hosts.is_empty() {
            "(default socket)".to_owned()
        } else {
            hosts.join(",")
        },
        config.get_dbname().unwrap_or("(default database)")
    )
}

/// The first host reached over a network that is not loopback, if any.
fn needs_tls(config: &Config) -> Option<String> {
    let loopback = |name: &str| {
        name == "localhost"
            || name
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let by_name = config.get_hosts().iter().find_map(|h| match h {
        Host::Tcp(name) if !loopback(name) => Some(name.clone()),
        _ => None,
    });
    let by_addr = config
        .get_hostaddrs()
        .iter()
        .find(|ip| !ip.is_loopback())
        .map(ToString::to_string);
    by_name.or(by_addr)
}

/// Checks the refusal of plain TCP to a remote host once the mode is known.
pub(crate) fn check_transport(config: &Config, location: &str) -> Result<(), PgError> {
    if let (Some(host), SslMode::Disable) = (needs_tls(config), config.get_ssl_mode()) {
        tracing::warn!(
            database = location,
            host,
            "sslmode=disable: the database connection is not encrypted"
        );
    }
    Ok(())
}

/// Reads the password, refusing a file others can read or write, owned by another user than
/// root or this process's.
fn read_password_file(path: &Path) -> Result<Zeroizing<String>, PgError> {
    let bad = |reason: String| PgError::PasswordFile {
        path: path.to_owned(),
        reason,
    };
    let meta = fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "mode {mode:o} lets others read it; chmod 600 it"
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(bad(format!(
            "owned by uid {}, neither root nor this process's uid {me}",
            meta.uid()
        )));
    }
    if meta.len() > MAX_PASSWORD_BYTES {
        return Err(bad(format!("larger than {MAX_PASSWORD_BYTES} bytes")));
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| bad(e.to_string()))?);
    let password = Zeroizing::new(text.trim_end_matches(['\n', '\r']).to_owned());
    if password.is_empty() {
        return Err(bad("empty".into()));
    }
    Ok(password)
}

/// A rustls connector trusting `rootcert` (PEM), or the system's CA bundle.
fn tls_connector(rootcert: Option<&Path>) -> Result<MakeRustlsConnect, String> {
    let mut roots = RootCertStore::empty();
    let file = rootcert.unwrap_or(Path::new(SYSTEM_ROOTS));
    match CertificateDer::pem_file_iter(file) {
        Ok(certs) => {
            for cert in certs {
                let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", file.display()))?;
            }
        }
        // Without the system bundle, only a server reached without TLS can be used.
        Err(_) if rootcert.is_none() => {}
        Err(e) => return Err(format!("sslrootcert {}: {e}", file.display())),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> PgTarget {
        PgTarget {
            url: url.into(),
            password_file: None,
        }
    }

    #[test]
    fn remote_tcp_gets_tls_unless_disabled_explicitly() {
        let p = prepare(&target("postgres://meshtun@db.example/mesh")).unwrap();
        assert_eq!(p.config.get_ssl_mode(), SslMode::Require);
        let p = prepare(&target("postgres://meshtun@192.0.2.5/mesh?sslmode=prefer")).unwrap();
        assert_eq!(p.config.get_ssl_mode(), SslMode::Require);
        let p = prepare(&target(
            "postgres://meshtun@db.example/mesh?sslmode=verify-full",
        ))
        .unwrap();
        assert_eq!(p.config.get_ssl_mode(), SslMode::Require);
        let p = prepare(&target(
            "postgres://meshtun@db.example/mesh?sslmode=disable",
        ))
        .unwrap();
        assert_eq!(p.config.get_ssl_mode(), SslMode::Disable);
        let p = prepare(&target("postgres://meshtun@127.0.0.1:5433/mesh")).unwrap();
        assert_eq!(p.config.get_ssl_mode(), SslMode::Prefer);
        let p = prepare(&target("postgres://meshtun@%2Frun%2Fpostgresql/mesh")).unwrap();
        assert_eq!(p.location, "postgres://meshtun@/run/postgresql:5432/mesh");
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_echoing_it() {
        for url in [
            "postgres://meshtun:hunter2@db.example/mesh",
            "postgres://meshtun@db.example/mesh?password=hunter2",
        ] {
            let err = prepare(&target(url)).err().unwrap().to_string();
            assert!(err.contains("database_password_file"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        fs::write(&file, "hunter2\n").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        let t = PgTarget {
            url: "postgres://meshtun@127.0.0.1/mesh".into(),
            password_file: Some(file.clone()),
        };
        let err = prepare(&t).err().unwrap().to_string();
        assert!(err.contains("mode 640"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let p = prepare(&t).unwrap();
        assert_eq!(p.config.get_password(), Some(&b"hunter2"[..]));
        assert!(!format!("{:?}", p.config).contains("hunter2"));
    }

    #[test]
    fn an_unknown_sslmode_is_refused_by_name() {
        let err = prepare(&target("postgres://m@db.example/mesh?sslmode=allow"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("sslmode \"allow\""), "{err}");
    }
}
