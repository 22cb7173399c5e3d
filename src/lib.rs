//! Types shared by the meshtun daemon and the meshtun controller.
//!
//! This crate holds what both sides must agree on by construction: key newtypes and their
//! encodings, allowed-IP networks, and (as the control plane grows) the wire types and the
//! per-pair PSK derivation. It has no async runtime and no command-line dependencies.
//!
//! Secrets ([`PrivateKey`], [`PresharedKey`]) have a redacted `Debug`, no `Display`, and are
//! zeroized when dropped. Print them only through their explicit `to_base64`/`to_hex` methods.

mod key;

pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
pub use key::{KeyError, PresharedKey, PrivateKey, PublicKey, KEY_LEN};
