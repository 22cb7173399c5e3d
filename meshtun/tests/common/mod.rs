//! The real controller served in-process on 127.0.0.1 (over TLS if asked), with nodes
//! enrolled directly in its store: the fixture of the node-side integration tests.

#![allow(dead_code)] // each test binary uses part of it

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshtun::gate::ControllerClient;
use meshtun_controller::api::{router, Api};
use meshtun_controller::clock::Clock;
use meshtun_controller::config::{Limits, TlsFiles};
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::{NodeRecord, Policy};
use meshtun_controller::schedule::Schedule;
use meshtun_controller::server::{serve, ServeOptions};
use meshtun_controller::store::Store;
use meshtun_controller::tls::acceptor;
use meshtun_proto::wire::{Benchmark, Scores};
use meshtun_proto::{IdentityKey, PrivateKey};
use zeroize::Zeroizing;

/// An enrolled node's keys.
pub struct Node {
    /// Its node id.
    pub id: &'static str,
    /// Its WireGuard key.
    pub wg: PrivateKey,
    /// Its Ed25519 identity key.
    pub identity: IdentityKey,
}

/// A running in-process controller.
pub struct Controller {
    /// Its base URL.
    pub url: String,
    /// Its engine (and through it, its store).
    pub engine: Arc<Engine>,
    /// Its signing key.
    pub key: IdentityKey,
    /// The nodes enrolled at start, in order.
    pub nodes: Vec<Node>,
}

/// How to start one.
pub struct Options {
    /// Node ids to enroll: node `i` gets 100.64.0.(i+1)/24 and endpoint 192.0.2.(i+1):51820.
    pub nodes: &'static [&'static str],
    /// Epoch length, milliseconds.
    pub epoch_ms: u64,
    /// Publication lead, milliseconds.
    pub lead_ms: u64,
    /// How long a bundle request waits.
    pub long_poll: Duration,
    /// Serve over TLS with these files (the URL then names `localhost`).
    pub tls: Option<TlsFiles>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: &[],
            epoch_ms: 60_000,
            lead_ms: 10_000,
            long_poll: Duration::from_millis(300),
            tls: None,
        }
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Starts a controller as `options` says.
pub async fn start(options: Options) -> Controller {
    let store = Arc::new(Store::open_in_memory().unwrap());
    let nodes: Vec<Node> = options
        .nodes
        .iter()
        .map(|id| Node {
            id,
            wg: PrivateKey::generate(),
            identity: IdentityKey::generate(),
        })
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        store
            .add_node(&NodeRecord {
                id: n.id.into(),
                wg_public_key: n.wg.public_key(),
                identity_key: n.identity.public(),
                addresses: vec![format!("100.64.0.{}/24", i + 1).parse().unwrap()],
                endpoint: Some(format!("192.0.2.{}:51820", i + 1)),
                pin: None,
                enrolled_ms: 0,
            })
            .unwrap();
    }
    let key = IdentityKey::generate();
    let settings = EngineSettings {
        policy: Policy::default(),
        schedule: Schedule::new(options.epoch_ms, options.lead_ms).unwrap(),
        rotate_on_deny: true,
    };
    let engine = Arc::new(Engine::open(store, key.clone(), settings, Clock::system()).unwrap());
    let api = Arc::new(Api::new(
        engine.clone(),
        Zeroizing::new("admin".into()),
        None,
        Duration::from_secs(30),
        options.long_poll,
        Limits::default(),
    ));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let serve_options = ServeOptions {
        limits: Limits::default(),
        tls: options.tls.as_ref().map(|files| acceptor(files).unwrap()),
        on_refused: Arc::new(|_| {}),
    };
    let url = match &options.tls {
        Some(_) => format!("https://localhost:{port}"),
        None => format!("http://127.0.0.1:{port}"),
    };
    // As the running controller does: a failing benchmark rotates within a moment.
    tokio::spawn(engine.clone().check_on_benchmarks());
    tokio::spawn(serve(
        tcp,
        router(api),
        serve_options,
        std::future::pending(),
    ));
    Controller {
        url,
        engine,
        key,
        nodes,
    }
}

impl Controller {
    /// Node `n`'s client, pinning the controller's real key.
    pub fn client(&self, n: usize) -> ControllerClient {
        let node = &self.nodes[n];
        ControllerClient::new(
            &self.url,
            self.key.public(),
            node.id,
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
