//! Types shared by the meshtun daemon and the meshtun controller.
//!
//! This crate holds what both sides must agree on by construction:
//! - [`key`](PublicKey): WireGuard key newtypes and their encodings;
//! - [`psk`]: epoch secrets and the per-pair preshared key derivation;
//! - [`identity`]: Ed25519 identity keys of nodes and of the controller;
//! - [`auth`]: signed requests from nodes to the controller;
//! - [`bundle`]: signed per-node, per-epoch bundles with sealed preshared keys;
//! - [`cutoff`]: signed cut-off notices, served before an epoch's bundles when it denies nodes;
//! - [`enroll`]: enrollment with an invite ticket: proofs of the token and of both keys, and
//!   the signed reply;
//! - [`membership`]: the operator's membership key and its signatures over each node's
//!   enrollment, which nodes check before taking a peer from a bundle;
//! - [`wire`]: the JSON types of the controller's API;
//! - [`private_file`]: the owner-only file writer, the bounded reader, the exposure rule;
//! - [`time`]: wall-clock time in Unix milliseconds;
//! - [`report`]: an error with its chain of causes, for people;
//! - [`paths`]: a node's counts of its peers by path (direct, relayed), for the dashboard;
//! - [`relay`]: TURN relay credentials (the TURN REST API scheme coturn implements);
//! - [`statement`]: statements about a node signed by an evaluator (or a node), with their
//!   canonical signed bytes;
//! - [`stun`]: STUN Binding messages for endpoint discovery, and telling them from WireGuard's.
//!
//! It has no async runtime and no command-line dependencies.
//!
//! Secrets ([`PrivateKey`], [`PresharedKey`], [`EpochSecret`], [`IdentityKey`]) have a
//! redacted `Debug`, no `Display`, and are zeroized when dropped. Print them only through
//! their explicit encoding methods.

pub mod auth;
pub mod bundle;
pub mod candidates;
pub mod cutoff;
pub mod enroll;
pub mod identity;
mod key;
pub mod keyset;
pub mod membership;
pub mod observation;
pub mod paths;
pub mod private_file;
pub mod psk;
pub mod relay;
pub mod report;
pub mod statement;
pub mod stun;
pub mod time;
pub mod wire;

pub use identity::{IdentityKey, IdentityPublic};
pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
pub use key::{KeyError, PresharedKey, PrivateKey, PublicKey, KEY_LEN};
pub use keyset::KeySet;
pub use psk::{derive_pair_psk, EpochId, EpochSecret, PairKeys};
