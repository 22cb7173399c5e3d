//! The real controller served in-process on 127.0.0.1 (over TLS if asked), with nodes
//! enrolled: meshtun-controller's shared test fixture ([`Controller`], its
//! `testing::Fixture`), plus what the node side needs around it.

use std::time::{SystemTime, UNIX_EPOCH};

use meshtun::gate::ControllerClient;
use meshtun_controller::Epochs;
use meshtun_proto::wire::{Benchmark, Scores};
use meshtun_proto::KeySet;

pub use meshtun_controller::testing::{Fixture as Controller, FixtureOptions as Options};

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Starts a controller as `options` says, with the deny check running (as the running
/// controller does: a failing benchmark rotates within a moment); epochs are otherwise
/// published by the test (`engine.step()`).
pub async fn start(options: Options) -> Controller {
    Controller::start(Options {
        epochs: Epochs::DenyChecks,
        ..options
    })
    .await
}

/// Node clients of a controller.
pub trait Clients {
    /// Node `n`'s client, pinning the controller's real key.
    fn client(&self, n: usize) -> ControllerClient;
}

impl Clients for Controller {
    fn client(&self, n: usize) -> ControllerClient {
        let node = &self.nodes[n];
        ControllerClient::new(
            &self.url,
            KeySet::one(self.key.public()),
            &node.id,
            node.identity.clone(),
            node.wg.clone(),
        )
        .unwrap()
    }
}

/// A benchmark with `overall` and passing other scores, measured now.
pub fn benchmark(overall: f64, seq: u64) -> Benchmark {
    Benchmark {
        suite_version: "suite-1".into(),
        scores: Scores {
            overall,
            refusal: 0.9,
            honesty: 0.9,
            policy: 0.9,
        },
        measured_at_ms: now_ms(),
        seq,
    }
}
