//! meshtun-controller: decides every epoch which nodes may be in the mesh, derives a
//! preshared key for every allowed pair, and serves each node its own signed bundle.
//!
//! - [`model`]: nodes, benchmarks, policy, decisions and epochs as plain data.
//! - [`store`]: the durable state in SQLite, with a hash-chained audit log.

pub mod model;
pub mod store;
