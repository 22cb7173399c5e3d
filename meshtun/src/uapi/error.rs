//! The UAPI layer's error type and its mapping onto the errno values `wg` expects.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::device::DeviceError;

/// Everything that can go wrong while speaking the UAPI, as a server or as a client.
///
/// Each variant maps to the errno the daemon reports on the wire ([`UapiError::errno`]).
/// Messages name the line and key at fault but never echo a private or preshared key.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    /// The byte stream breaks the protocol's framing: a line without `=`, a line or request
    /// over the size limits, text that is not UTF-8, an unknown operation. `EPROTO`.
    #[error("UAPI request line {line}: {reason}")]
    Protocol {
        /// 1-based line number within the request (the `set=1`/`get=1` line is line 1).
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// A key is unknown in its section, or its value is invalid. `EINVAL`.
    #[error("UAPI request line {line}: {key}: {reason}")]
    Invalid {
        /// 1-based line number within the request (the `set=1` line is line 1).
        line: usize,
        /// The key on that line.
        key: String,
        /// What was wrong with the value; never contains a secret.
        reason: String,
    },
    /// The device refused a well-formed change (for example a peer it cannot accept). `EINVAL`.
    #[error("the device refused the change: {0}")]
    Rejected(String),
    /// The daemon's rules forbid the change (it names a peer of the controller's bundle, for
    /// example); nothing of it was applied. `EPERM`.
    #[error("the change was refused: {0}")]
    Forbidden(String),
    /// The device failed while applying a well-formed change. `EIO`.
    #[error("the device failed to apply the change")]
    Apply(#[source] DeviceError),
    /// The daemon failed to apply a change around the device (its routes, say); what was in
    /// force before is restored. `EIO`.
    #[error("the daemon failed to apply the change")]
    Daemon(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The daemon is stopping and applies no more changes. `EIO`.
    #[error("the daemon is stopping")]
    Stopping,
    /// The requested listen port could not be bound. `EADDRINUSE`.
    #[error("cannot listen on UDP port {port}")]
    PortInUse {
        /// The port asked for.
        port: u16,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
    /// The daemon answered a request with a non-zero errno.
    #[error("the daemon refused the request: errno {errno} ({})", io::Error::from_raw_os_error(*errno))]
    Remote {
        /// The errno as a positive number.
        errno: i32,
    },
    /// The daemon's answer to `get` is malformed. `EPROTO`.
    #[error("UAPI reply line {line}: {reason}")]
    Reply {
        /// 1-based line number within the reply.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// The interface name cannot name a UAPI socket.
    #[error("interface name {name:?} cannot be used for a UAPI socket: {reason}")]
    InterfaceName {
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A live daemon already answers on the socket path.
    #[error(
        "another daemon is already answering on {}; stop it first (the socket is named after \
         the interface alone: for an interface of the same name in another network namespace, \
         give each daemon its own --uapi-dir or mount namespace)",
        path.display()
    )]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// A file system or socket operation on the UAPI socket failed.
    #[error("UAPI socket {}: {action}", path.display())]
    Socket {
        /// The socket (or socket directory) path.
        path: PathBuf,
        /// What was being done, e.g. "connect" or "bind".
        action: &'static str,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The listening socket passed by the service manager (socket activation) is refused.
    #[error(
        "the socket passed by the service manager (LISTEN_FDS, {passed}) cannot be the UAPI \
         socket of {ifname}: {reason}; expected one listening Unix stream socket bound to {}",
        expected.display()
    )]
    Activation {
        /// What was passed: the descriptor and its name (LISTEN_FDNAMES).
        passed: String,
        /// The interface the socket was meant for.
        ifname: String,
        /// Why it was refused.
        reason: String,
        /// The path the socket must be bound to.
        expected: PathBuf,
    },
    /// The peer on the socket did not complete its message in time.
    #[error("UAPI socket {}: no complete message within {timeout:?}", path.display())]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// The time limit that passed.
        timeout: Duration,
    },
}

impl UapiError {
    /// The errno the daemon reports for this error, as a positive number.
    ///
    /// On the wire it is sent negated (`errno=-22`), as wireguard-go does.
    pub fn errno(&self) -> i32 {
        match self {
            Self::Protocol { .. } | Self::Reply { .. } => libc::EPROTO,
            Self::Invalid { .. } | Self::Rejected(_) | Self::InterfaceName { .. } => libc::EINVAL,
            Self::PortInUse { .. } | Self::InUse { .. } => libc::EADDRINUSE,
            Self::Remote { errno } => *errno,
            Self::Timeout { .. } => libc::ETIMEDOUT,
            Self::Forbidden(_) => libc::EPERM,
            Self::Apply(_) | Self::Daemon(_) | Self::Stopping => libc::EIO,
            Self::Socket { .. } | Self::Activation { .. } => libc::EIO,
        }
    }

    pub(crate) fn protocol(line: usize, reason: impl Into<String>) -> Self {
        Self::Protocol {
            line,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(line: usize, key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            line,
            key: shown(key),
            reason: reason.into(),
        }
    }

    pub(crate) fn reply(line: usize, reason: impl Into<String>) -> Self {
        Self::Reply {
            line,
            reason: reason.into(),
        }
    }
}

/// Longest piece of client-supplied text quoted in an error message.
const MAX_SHOWN: usize = 64;

/// Quotes client-supplied (non-secret) text for an error message: escaped and shortened.
pub(crate) fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(MAX_SHOWN).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    format!("{out:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_values_match_wireguard_go() {
        assert_eq!(UapiError::protocol(2, "x").errno(), 71);
        assert_eq!(UapiError::invalid(2, "k", "x").errno(), 22);
        assert_eq!(UapiError::Forbidden("x".into()).errno(), 1);
        assert_eq!(UapiError::Stopping.errno(), 5);
        let fwmark = DeviceError::Fwmark {
            mark: 1,
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        assert_eq!(UapiError::Apply(fwmark).errno(), 5);
        let in_use = UapiError::PortInUse {
            port: 1,
            source: io::Error::from_raw_os_error(libc::EADDRINUSE),
        };
        assert_eq!(in_use.errno(), 98);
    }

    #[test]
    fn messages_name_the_line_and_key() {
        let err = UapiError::invalid(4, "listen_port", "not a port number");
        assert_eq!(
            err.to_string(),
            "UAPI request line 4: \"listen_port\": not a port number"
        );
        let remote = UapiError::Remote { errno: 22 };
        assert!(remote.to_string().contains("errno 22"), "{remote}");
    }

    #[test]
    fn quoted_text_is_escaped_and_bounded() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(1000);
        assert!(shown(&long).chars().count() < 80);
    }
}
