//! The embedded controller: meshtun-controller served by its own entry point
//! ([`meshtun_controller::serve`]), on a thread of its own inside the controller's
//! namespace, with its SQLite database in the demo's directory.
//!
//! The API serves from the start (nodes submit benchmarks), but epochs begin only when
//! [`EmbeddedController::begin_epochs`] is called, so that the first epoch already decides
//! on every node's score.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshtun_controller::api::ApiSettings;
use meshtun_controller::clock::Clock;
use meshtun_controller::config::Limits;
use meshtun_controller::engine::{Engine, EngineSettings};
use meshtun_controller::model::{NodeRecord, Policy};
use meshtun_controller::schedule::Schedule;
use meshtun_controller::store::Store;
use meshtun_controller::{Epochs, ServeSettings};
use meshtun_proto::IdentityKey;
use rand_core::{OsRng, RngCore};
use tokio::sync::{oneshot, watch};
use zeroize::Zeroizing;

use super::netns;
use super::plan::{CONTROLLER_ADDR, CONTROLLER_PORT, LEAD, READMIT_AFTER, THRESHOLD};
use super::DemoError;

/// How long a node's bundle request waits for a newer epoch.
const LONG_POLL: Duration = Duration::from_secs(30);

/// The window within which signed requests are accepted.
const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// How long stopping waits for the controller's thread.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The controller's settings for the demo: the default policy (threshold 0.70, readmission
/// after one passing evaluation) and an immediate epoch when an allowed node fails.
pub fn engine_settings(epoch: Duration) -> Result<EngineSettings, DemoError> {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let schedule = Schedule::new(millis(epoch), millis(LEAD))
        .map_err(|e| DemoError::Controller(format!("epoch settings: {e}")))?;
    Ok(EngineSettings {
        policy: Policy {
            threshold: THRESHOLD,
            readmit_after: READMIT_AFTER,
            ..Policy::default()
        },
        schedule,
        rotate_on_deny: true,
    })
}

/// The controller running on its thread; stopped on drop.
pub struct EmbeddedController {
    engine: Arc<Engine>,
    begin: Option<oneshot::Sender<()>>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

impl EmbeddedController {
    /// Opens the database in `state_dir`, enrolls `nodes`, and starts serving the API in
    /// namespace `ns`, signing with `key`. Returns once the API listens.
    pub fn start(
        ns: &str,
        state_dir: &Path,
        nodes: &[NodeRecord],
        epoch: Duration,
        key: IdentityKey,
    ) -> Result<Self, DemoError> {
        let store = Store::open(state_dir.join("controller.db"))?;
        for node in nodes {
            store.add_node(node)?;
        }
        let settings = engine_settings(epoch)?;
        let engine = Arc::new(Engine::open(
            Arc::new(store),
            key,
            settings,
            Clock::system(),
        )?);
        let (begin_tx, begin_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let served = engine.clone();
        let ns = ns.to_owned();
        let thread = std::thread::Builder::new()
            .name("demo-controller".into())
            .spawn(move || serve(&ns, served, begin_rx, stop_rx, ready_tx))
            .map_err(|source| DemoError::io("cannot start the controller's thread", source))?;
        let mut controller = Self {
            engine,
            begin: Some(begin_tx),
            stop: stop_tx,
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(STOP_WAIT) {
            Ok(()) => Ok(controller),
            Err(_) => {
                controller.stop()?;
                Err(DemoError::Controller(
                    "the controller did not start listening within 5 s".into(),
                ))
            }
        }
    }

    /// An error if the controller's thread has ended while it should be serving.
    pub fn check_alive(&mut self) -> Result<(), DemoError> {
        match &self.thread {
            Some(thread) if thread.is_finished() => {
                let ended = self.stop();
                Err(ended.err().unwrap_or_else(|| {
                    DemoError::Controller("the controller stopped unexpectedly".into())
                }))
            }
            _ => Ok(()),
        }
    }

    /// The controller's engine: epochs, decisions and the store.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// Starts the epoch schedule (the first epoch is published at once).
    pub fn begin_epochs(&mut self) {
        if let Some(begin) = self.begin.take() {
            let _ = begin.send(());
        }
    }

    /// Stops the API and the schedule and waits up to 5 s for the thread; the error it
    /// ended with, if any.
    pub fn stop(&mut self) -> Result<(), DemoError> {
        let _ = self.stop.send(true);
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + STOP_WAIT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !thread.is_finished() {
            return Err(DemoError::Controller(
                "the controller did not stop within 5 s".into(),
            ));
        }
        match thread.join() {
            Ok(result) => result.map_err(DemoError::Controller),
            Err(_) => Err(DemoError::Controller(
                "the controller's thread panicked".into(),
            )),
        }
    }
}

impl Drop for EmbeddedController {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            eprintln!("meshtun demo: {}", meshtun_proto::report::describe(&error));
        }
    }
}

/// An admin token nobody knows: the demo rotates no epoch by hand.
fn random_token() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(bytes.as_mut());
    Zeroizing::new(hex::encode(bytes.as_ref()))
}

/// The controller thread: enters `ns`, listens, reports readiness on `ready`, and serves
/// until `stop` turns true.
fn serve(
    ns: &str,
    engine: Arc<Engine>,
    begin: oneshot::Receiver<()>,
    stop: watch::Receiver<bool>,
    ready: std::sync::mpsc::Sender<()>,
) -> Result<(), String> {
    netns::enter(ns).map_err(|e| format!("cannot enter namespace {ns}: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the controller's runtime: {e}"))?;
    runtime.block_on(async move {
        let addr = SocketAddr::from((CONTROLLER_ADDR, CONTROLLER_PORT));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        // Epochs start when the demo says so; never if it drops the sender.
        let begin = Box::pin(async move {
            if begin.await.is_err() {
                std::future::pending::<()>().await;
            }
        });
        let settings = ServeSettings {
            engine,
            api: ApiSettings {
                admin_token: random_token(),
                read_token: None,
                clock_skew: CLOCK_SKEW,
                long_poll: LONG_POLL,
                limits: Limits::default(),
            },
            tls: None,
            status: None,
            epochs: Epochs::After(begin),
        };
        let _ = ready.send(());
        let mut stop = stop;
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        meshtun_controller::serve(listener, settings, stopped)
            .await
            .map_err(|e| {
                format!(
                    "the controller failed: {}",
                    meshtun_proto::report::describe(&e)
                )
            })
    })
}
