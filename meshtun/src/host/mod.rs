//! Host setup around the tun device, as `wg-quick` does it: addresses, MTU, routes, policy
//! rules for a default route, DNS and hook commands. Everything applied is recorded so that
//! `down`, a signal or the next start after a crash can undo it.

mod plan;

pub use plan::{Dns, Hooks, HostPlan, RouteTable};
