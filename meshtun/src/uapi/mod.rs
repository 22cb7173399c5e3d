//! The cross-platform WireGuard configuration protocol (UAPI), which `wg` speaks.
//!
//! `wg show`, `wg showconf`, `wg set`, `wg setconf` and `wg syncconf` find a userspace
//! WireGuard daemon through the Unix socket `/var/run/wireguard/<ifname>.sock` and exchange
//! newline-separated `key=value` text with it (<https://www.wireguard.com/xplatform/>).
//! meshtun answers exactly as wireguard-go does, so the unmodified `wg` works against it.
//!
//! The layer is split so that everything but the socket handling is plain data in, plain
//! data out:
//! - [`RequestReader`] splits a client's bytes into [`Request`]s within fixed [`Limits`];
//! - [`parse_set`] turns a `set` body into a [`DeviceUpdate`];
//! - [`write_get`] writes a [`DeviceStatus`] as the answer to `get`, and [`parse_get_reply`]
//!   reads such an answer back (for `meshtun show`, through [`request_get`]), with a gated
//!   interface's own keys ([`gate_keys`]);
//! - [`bind`] creates the socket, or [`adopt_in`] takes the one systemd created
//!   ([`take_listen_fds`]), and [`serve`] answers on it through a [`UapiHandler`],
//!   which the device implements.
//!
//! Errors are answered with wireguard-go's negative errno values: `-22` (`EINVAL`) for an
//! unknown key or a bad value, `-71` (`EPROTO`) for broken framing, `-5` (`EIO`) when
//! applying fails and `-98` (`EADDRINUSE`) when the listen port is taken. wireguard-go uses
//! the same negative form for `get`; `wg` then reports any failed `get` as a protocol error.

mod activation;
mod client;
mod error;
pub mod gate_keys;
mod get;
mod request;
mod server;
mod set;
mod socket;

use std::future::Future;

pub use activation::{adopt_in, take_listen_fds, Inherited};
pub use client::{request_get, request_set, CLIENT_TIMEOUT};
pub use error::UapiError;
pub use get::{parse_get_reply, write_errno, write_get};
pub use request::{Limits, Request, RequestReader, SetBody};
pub use server::{serve, serve_with_limits, MAX_CONNECTIONS};
pub use set::parse_set;
pub use socket::{bind, bind_in, socket_path, socket_path_in, UapiSocket, SOCKET_DIR};

use crate::wgcfg::{DeviceStatus, DeviceUpdate};

/// What the UAPI server needs from the device.
///
/// Both methods are async so that a device running as a task can answer through a channel;
/// a device behind a lock can simply return a ready future. The server never runs two `set`
/// calls at once, nor a `get` during a `set`; `get` calls may overlap each other.
pub trait UapiHandler: Send + Sync + 'static {
    /// A snapshot of the device, for `get`.
    fn get(&self) -> impl Future<Output = DeviceStatus> + Send;

    /// Applies a `set` request: device fields first, then each peer section in order (see
    /// [`DeviceUpdate`]).
    ///
    /// Return [`UapiError::Rejected`] for a change the device refuses (`EINVAL`),
    /// [`UapiError::Forbidden`] for one the daemon's rules forbid (`EPERM`),
    /// [`UapiError::PortInUse`] when the listen port cannot be bound (`EADDRINUSE`), and
    /// [`UapiError::Apply`] for any other failure (`EIO`). As in wireguard-go, a peer
    /// section for the device's own public key should be ignored.
    fn set(&self, update: DeviceUpdate) -> impl Future<Output = Result<(), UapiError>> + Send;
}
