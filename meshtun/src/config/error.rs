//! Errors of the configuration layer. None of them ever carries a secret.

use std::io;
use std::path::PathBuf;

use meshtun_proto::PublicKey;

/// Why a configuration file could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The configuration file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file is larger than [`super::MAX_CONFIG_SIZE`].
    #[error("{}: the file is larger than {limit} bytes; this is not a meshtun configuration", .path.display())]
    TooLarge {
        /// The configuration file.
        path: PathBuf,
        /// The size limit in bytes.
        limit: usize,
    },
    /// The file is not UTF-8 text.
    #[error("{}: the file is not valid UTF-8 text", .path.display())]
    NotUtf8 {
        /// The configuration file.
        path: PathBuf,
    },
    /// The text is not valid TOML at a place where no key can be named.
    #[error("{}: line {line}: {reason}", .path.display())]
    Syntax {
        /// The configuration file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A key is unknown, missing, or has a bad value.
    #[error("{}: line {line}: `{key}`: {reason}", .path.display())]
    Invalid {
        /// The configuration file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The key, as a path such as `interface.mtu` or `peer#2.allowed_ips`.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A key file named by the configuration could not be read.
    #[error("{}: line {line}: `{key}`: cannot read {}", .path.display(), .file.display())]
    KeyFile {
        /// The configuration file.
        path: PathBuf,
        /// 1-based line number of the key naming the file.
        line: usize,
        /// The key naming the file.
        key: String,
        /// The key file.
        file: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file holds no configuration at all.
    #[error("{}: the configuration is empty; it needs an [interface] section", .path.display())]
    Empty {
        /// The configuration file.
        path: PathBuf,
    },
    /// The file has peers but no `[interface]` section.
    #[error("{}: there is no [interface] section", .path.display())]
    MissingInterface {
        /// The configuration file.
        path: PathBuf,
    },
    /// A peer's endpoint did not resolve to an address.
    #[error("{}: peer #{peer} ({public_key}): cannot resolve endpoint `{endpoint}`", .path.display())]
    Resolve {
        /// The configuration file.
        path: PathBuf,
        /// 1-based position of the peer in the file.
        peer: usize,
        /// The peer's public key.
        public_key: PublicKey,
        /// The endpoint as configured.
        endpoint: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
}

/// Why a `wg-quick` configuration could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A line is neither a section header, a `Key = Value` pair, a comment nor empty.
    #[error("{}: line {line}: {reason}", .path.display())]
    Syntax {
        /// The `wg-quick` file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A key that `wg-quick` does not know, or that does not belong in its section.
    #[error("{}: line {line}: unknown key `{key}` in [{section}]", .path.display())]
    UnknownKey {
        /// The `wg-quick` file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The key as written.
        key: String,
        /// The section it appeared in.
        section: String,
    },
    /// A value is invalid, or the configuration as a whole is (duplicate peers, ...).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}
