//! meshtun-controller: decides every epoch which nodes may be in the mesh, derives a
//! preshared key for every allowed pair, and serves each node its own signed bundle.
//!
//! - [`model`]: nodes, benchmarks, policy, decisions and epochs as plain data.
//! - [`membership`]: who is allowed, and who peers with whom (pure decisions).
//! - [`schedule`]: when epochs are published, activated and rotated (pure time arithmetic).

pub mod membership;
pub mod model;
pub mod schedule;
