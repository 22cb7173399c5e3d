//! The in-process controller of the tests (feature `test-support`): the controller's own
//! integration tests and the daemon's use the same [`Fixture`], a real engine on a
//! temporary database with nodes enrolled, served on 127.0.0.1 through [`crate::serve`] and
//! stopped when dropped. [`enroll`] seeds a store for tests that drive an [`Engine`]
//! without serving it.
//!
//! Setup failures panic with what failed: this is test support, never linked into the
//! binary.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use meshtun_proto::membership::MembershipPublic;
use meshtun_proto::{IdentityKey, PrivateKey};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use crate::api::ApiSettings;
use crate::clock::Clock;
use crate::config::{Limits, TlsFiles};
use crate::engine::{Engine, EngineSettings};
use crate::model::{NodeRecord, Policy};
use crate::network::Network;
use crate::schedule::Schedule;
use crate::service::{Epochs, ServeError, ServeSettings};
use crate::store::Store;

/// Largest answer [`Fixture::request`] reads.
const MAX_ANSWER: usize = 1 << 24;

/// An enrolled test node's private keys.
#[derive(Clone)]
pub struct TestNode {
    /// Its node id.
    pub id: String,
    /// Its WireGuard key.
    pub wg: PrivateKey,
    /// Its Ed25519 identity key.
    pub identity: IdentityKey,
}

impl TestNode {
    /// A node `id` with fresh keys.
    pub fn new(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            wg: PrivateKey::generate(),
            identity: IdentityKey::generate(),
        }
    }

    /// Its record as the `i`-th node enrolled: address 100.64.0.(i+1)/24, endpoint
    /// 192.0.2.(i+1):51820.
    pub fn record(&self, i: usize) -> NodeRecord {
        let host = u8::try_from(i + 1).expect("at most 254 test nodes");
        NodeRecord {
            id: self.id.clone(),
            wg_public_key: self.wg.public_key(),
            identity_key: self.identity.public(),
            addresses: vec![format!("100.64.0.{host}/24").parse().expect("an address")],
            endpoint: Some(format!("192.0.2.{host}:51820")),
            pin: None,
            enrolled_ms: 0,
            membership_sig: None,
        }
    }
}

/// Enrolls nodes `ids` in `store`, in order (node `i` as [`TestNode::record`] says).
pub fn enroll(store: &Store, ids: &[&str]) -> Vec<TestNode> {
    let nodes: Vec<TestNode> = ids.iter().map(|id| TestNode::new(id)).collect();
    for (i, node) in nodes.iter().enumerate() {
        store
            .add_node(&node.record(i))
            .unwrap_or_else(|e| panic!("cannot enroll test node {}: {e}", node.id));
    }
    nodes
}

/// How a [`Fixture`] starts.
pub struct FixtureOptions {
    /// Nodes to enroll ([`enroll`]).
    pub nodes: &'static [&'static str],
    /// The controller's signing key.
    pub key: IdentityKey,
    /// Epoch length, milliseconds.
    pub epoch_ms: u64,
    /// Publication lead, milliseconds.
    pub lead_ms: u64,
    /// The membership policy.
    pub policy: Policy,
    /// Rotate at once when an allowed node fails.
    pub rotate_on_deny: bool,
    /// The overlay's address plan enrollments follow.
    pub network: Network,
    /// The admin token.
    pub admin_token: &'static str,
    /// The read token, if any.
    pub read_token: Option<&'static str>,
    /// How long a bundle request waits.
    pub long_poll: Duration,
    /// Caps and time limits.
    pub limits: Limits,
    /// Serve over TLS with these files (the URL then names `localhost`).
    pub tls: Option<TlsFiles>,
    /// Which engine tasks run.
    pub epochs: Epochs,
    /// The membership key enrollments must be signed with (`[membership] public_key`).
    pub membership_key: Option<MembershipPublic>,
}

impl Default for FixtureOptions {
    /// No node, a fresh key, 60 s epochs published 10 s ahead, the default policy with
    /// `rotate_on_deny`, admin token `admin`, 300 ms long-polls, no engine task.
    fn default() -> Self {
        Self {
            nodes: &[],
            key: IdentityKey::generate(),
            epoch_ms: 60_000,
            lead_ms: 10_000,
            policy: Policy::default(),
            rotate_on_deny: true,
            network: Network::default(),
            admin_token: "admin",
            read_token: None,
            long_poll: Duration::from_millis(300),
            limits: Limits::default(),
            tls: None,
            epochs: Epochs::Manual,
            membership_key: None,
        }
    }
}

/// A controller served in-process on 127.0.0.1 (API and status listener); stopped on drop.
pub struct Fixture {
    /// The API's base URL.
    pub url: String,
    /// The status listener's base URL (open: it is on loopback).
    pub status_url: String,
    /// The engine (and through it, the store).
    pub engine: Arc<Engine>,
    /// The controller's signing key.
    pub key: IdentityKey,
    /// The nodes enrolled at start, in order.
    pub nodes: Vec<TestNode>,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<Result<(), ServeError>>>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    /// Starts a controller as `options` says.
    pub async fn start(options: FixtureOptions) -> Self {
        let dir = tempfile::tempdir().expect("cannot create the fixture's directory");
        let store = Store::open(dir.path().join("controller.db")).expect("cannot open the store");
        let nodes = enroll(&store, options.nodes);
        let settings = EngineSettings {
            policy: options.policy,
            schedule: Schedule::new(options.epoch_ms, options.lead_ms).expect("bad schedule"),
            rotate_on_deny: options.rotate_on_deny,
            relay: None,
        };
        let engine = Engine::open(
            Arc::new(store),
            options.key.clone(),
            settings,
            Clock::system(),
        )
        .expect("cannot open the engine")
        .with_network(options.network)
        .with_membership_key(options.membership_key);
        let engine = Arc::new(engine);
        let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
        let listener = bind().await.expect("cannot bind the API listener");
        let status = bind().await.expect("cannot bind the status listener");
        let port = listener.local_addr().expect("API address").port();
        let status_url = format!("http://{}", status.local_addr().expect("status address"));
        let url = match &options.tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let settings = ServeSettings {
            stun: None,
            shared: None,
            engine: engine.clone(),
            api: ApiSettings {
                admin_token: Zeroizing::new(options.admin_token.to_owned()),
                read_token: options.read_token.map(|t| Zeroizing::new(t.to_owned())),
                clock_skew: Duration::from_secs(30),
                long_poll: options.long_poll,
                limits: options.limits,
            },
            tls: options
                .tls
                .as_ref()
                .map(|files| crate::tls::acceptor(files).expect("bad TLS files")),
            status: Some(status),
            epochs: options.epochs,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(crate::serve(listener, settings, async move {
            let _ = stopped.await;
        }));
        Self {
            url,
            status_url,
            engine,
            key: options.key,
            nodes,
            client: reqwest::Client::new(),
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
        }
    }

    /// Sends `request` (its path and query relative to the API) over HTTP to the API;
    /// the status and the body of the answer.
    pub async fn request(&self, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        self.send(&self.url, request).await
    }

    /// [`Fixture::request`] to the status listener.
    pub async fn status_request(&self, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        self.send(&self.status_url, request).await
    }

    async fn send(&self, base: &str, request: Request<Body>) -> (StatusCode, Vec<u8>) {
        let (parts, body) = request.into_parts();
        let body = to_bytes(body, MAX_ANSWER)
            .await
            .expect("unreadable request body");
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let answer = self
            .client
            .request(parts.method, format!("{base}{path}"))
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{base}{path}: {e}"));
        let status = answer.status();
        let bytes = answer.bytes().await.expect("unreadable answer");
        (status, bytes.to_vec())
    }

    /// Stops the controller and waits for it; how [`crate::serve`] ended.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.served.take() {
            Some(served) => served.await.expect("the fixture's serve task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Dropping the runtime would stop it too; aborting stops it now.
        if let Some(served) = self.served.take() {
            served.abort();
        }
    }
}
