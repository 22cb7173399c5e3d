//! The controller's one entry point: [`serve`] runs a controller on an already-bound
//! listener until a shutdown future completes (the mini-redis shape). The binary
//! (`commands::serve`), the tests' fixture, the bench and the demo all call it; each builds
//! the [`Engine`] it wants and a [`ServeSettings`] around it.
//!
//! What runs, and who stops it:
//! - the API ([`api::router`]) on the listener, plain or TLS, through [`server::serve`];
//! - the status listener ([`api::status_router`]), if one is given: open on loopback, behind
//!   the read token otherwise;
//! - the STUN server ([`stun::serve`]), if a socket is given;
//! - the engine's tasks, as [`Epochs`] says.
//!
//! Every task is supervised: if one ends before the shutdown (a panic, say), the others are
//! stopped and [`serve`] returns an error naming it, so that a controller never keeps
//! answering with half its parts gone.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio::task::{JoinError, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::api::{self, Api, ApiSettings};
use crate::config::Limits;
use crate::engine::Engine;
use crate::ha::{self, KeeperSettings};
use crate::quota::Full;
use crate::server::{self, ServeOptions};
use crate::store::SharedParts;
use crate::stun::{self, StunLimits};
use meshtun_proto::report::Chain;

/// Connections the status listener holds at most (a local Prometheus, `status`).
pub const STATUS_CONNECTIONS: u32 = 64;

/// A future that starts the epoch schedule when it completes.
pub type Begin = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Which of the engine's tasks run.
pub enum Epochs {
    /// [`Engine::run`] from the start: the schedule, the deny check after benchmarks,
    /// prebuilding and pruning (the controller binary).
    Scheduled,
    /// [`Engine::run`] once the future completes; no engine task before (the demo starts
    /// epochs once every node has a score).
    After(Begin),
    /// No schedule, but a deny after a benchmark rotates at once
    /// ([`Engine::check_on_benchmarks`]); other epochs are published by the caller
    /// ([`Engine::step`]) or by `POST /v1/rotate` (the daemon's integration tests).
    DenyChecks,
    /// No engine task: every epoch is published by the caller or `POST /v1/rotate`.
    Manual,
}

/// Everything [`serve`] runs besides the API listener.
pub struct ServeSettings {
    /// The controller's live state, opened by the caller.
    pub engine: Arc<Engine>,
    /// Tokens, request limits and caps of the API.
    pub api: ApiSettings,
    /// TLS on the API listener, if enabled.
    pub tls: Option<TlsAcceptor>,
    /// The status listener (`/health`, `/metrics`, `/v1/status`), if any.
    pub status: Option<TcpListener>,
    /// Which engine tasks run.
    pub epochs: Epochs,
    /// With several instances on one PostgreSQL database: what they share, and this
    /// instance's name and URL for the lease keeper. `None` for a sole instance.
    pub shared: Option<Shared>,
    /// The STUN server's socket and bounds (`[stun]`), if it runs.
    pub stun: Option<(UdpSocket, StunLimits)>,
}

/// What [`serve`] runs for an instance among several on one PostgreSQL database: the lease
/// keeper ([`ha::run_keeper`]) for the engine's [`Leadership`](crate::ha::Leadership), the
/// epoch listener ([`ha::run_listener`]), and the shared replay nonces in the API.
pub struct Shared {
    /// The connector and the nonces ([`crate::store::Store::shared_parts`]).
    pub parts: SharedParts,
    /// This instance's name and URL, as the cluster's status shows them.
    pub keeper: KeeperSettings,
}

/// Why [`serve`] stopped before its shutdown, or failed to stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener handed in has no local address.
    #[error("the {what} listener has no local address")]
    Listener {
        /// Which listener.
        what: &'static str,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A task panicked or was cancelled.
    #[error("the controller's {task} task failed")]
    Task {
        /// Which task: `API server`, `status server` or `engine`.
        task: &'static str,
        /// How it ended.
        #[source]
        source: JoinError,
    },
    /// A task ended before the shutdown, without an error.
    #[error("the controller's {task} task ended before the shutdown")]
    Ended {
        /// Which task.
        task: &'static str,
    },
}

/// Serves the controller `settings` describe on `listener` until `shutdown` completes, then
/// stops every task (requests in flight get [`server::SHUTDOWN_GRACE`]) and returns.
pub async fn serve(
    listener: TcpListener,
    settings: ServeSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let ServeSettings {
        engine,
        api,
        tls,
        status,
        epochs,
        shared,
        stun,
    } = settings;
    let addr = local_addr(&listener, "API")?;
    let limits = api.limits;
    let mut api = Api::new(engine.clone(), api);
    if let Some(shared) = &shared {
        api = api.with_nonces(shared.parts.nonces.clone());
    }
    let api = Arc::new(api);
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let options = ServeOptions {
        limits,
        tls,
        on_refused: refusals(&engine),
    };
    let mut tasks = Tasks::default();
    if let Some(status) = status {
        let open = local_addr(&status, "status")?.ip().is_loopback();
        let status_options = ServeOptions {
            limits: status_limits(limits),
            tls: None,
            ..options.clone()
        };
        let router = api::status_router(api.clone(), open);
        tasks.spawn(
            "status server",
            server::serve(status, router, status_options, stopped()),
        );
    }
    if let Some(shared) = shared {
        let leadership = engine.leadership().clone();
        if let Some(wake) = leadership.wake_sender() {
            let listener = ha::run_listener(shared.parts.connect.clone(), wake);
            let stop = stopped();
            // The listener runs until dropped: the shutdown drops it (its blocking session
            // sees the flag it raises within one poll), or `supervise` would wait forever.
            tasks.spawn("epoch listener", async move {
                tokio::select! {
                    () = listener => {}
                    () = stop => {}
                }
            });
        }
        let keeper = ha::run_keeper(shared.parts.connect, leadership, shared.keeper, stopped());
        tasks.spawn("lease keeper", keeper);
    }
    if let Some((socket, limits)) = stun {
        let metrics = engine.clone();
        let record = move |outcome: stun::Outcome, sources| {
            metrics.metrics.stun(outcome.label(), sources);
        };
        tasks.spawn(
            "STUN server",
            stun::serve(socket, limits, record, stopped()),
        );
    }
    if let Some(run) = engine_task(&engine, epochs, &stopped) {
        tasks.spawn("engine", run);
    }
    tracing::info!(controller_key = %engine.public_key(), "controller key (nodes pin it)");
    tracing::info!(
        %addr,
        "serving the controller API over {}",
        if options.tls.is_some() { "TLS" } else { "plain HTTP" }
    );
    tasks.spawn(
        "API server",
        server::serve(listener, api::router(api), options, stopped()),
    );
    tasks.supervise(shutdown, stop_tx).await
}

fn local_addr(listener: &TcpListener, what: &'static str) -> Result<SocketAddr, ServeError> {
    listener
        .local_addr()
        .map_err(|source| ServeError::Listener { what, source })
}

/// Counts every connection closed for a cap in the engine's metrics.
fn refusals(engine: &Arc<Engine>) -> server::OnRefused {
    let engine = engine.clone();
    Arc::new(move |full: Full| {
        engine.metrics.refused_connection(match full {
            Full::Total => "total",
            Full::PerKey => "address",
        });
    })
}

/// The engine's work as `epochs` says, ending when `stopped` does; `None` for none.
fn engine_task<S, F>(engine: &Arc<Engine>, epochs: Epochs, stopped: S) -> Option<Begin>
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let engine = engine.clone();
    let (first, second) = (stopped(), stopped());
    Some(match epochs {
        Epochs::Manual => return None,
        Epochs::Scheduled => Box::pin(engine.run(first)),
        Epochs::After(begin) => Box::pin(async move {
            tokio::select! {
                () = begin => engine.run(second).await,
                () = first => {}
            }
        }),
        Epochs::DenyChecks => Box::pin(async move {
            tokio::select! {
                () = engine.check_on_benchmarks() => {}
                () = first => {}
            }
        }),
    })
}

/// The status listener's limits: the API's time limits, and a few connections.
pub fn status_limits(limits: Limits) -> Limits {
    Limits {
        max_connections: STATUS_CONNECTIONS,
        max_connections_per_address: STATUS_CONNECTIONS,
        ..limits
    }
}

/// The named tasks of one controller.
#[derive(Default)]
struct Tasks {
    /// Each watcher awaits one task and returns its name and how it ended.
    watchers: JoinSet<(&'static str, Result<(), JoinError>)>,
}

impl Tasks {
    /// Runs `task`; it is aborted if the watchers are dropped ([`serve`] itself dropped).
    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let mut handle = AbortOnDrop(tokio::spawn(task));
        self.watchers
            .spawn(async move { (name, (&mut handle.0).await) });
    }

    /// Waits for `shutdown` or the first task to end, tells every task to stop through
    /// `stop`, and waits for them all; the first failure, if any.
    async fn supervise(
        mut self,
        shutdown: impl Future<Output = ()>,
        stop: watch::Sender<bool>,
    ) -> Result<(), ServeError> {
        let early = tokio::select! {
            () = shutdown => None,
            Some(Ok(ended)) = self.watchers.join_next() => Some(ended),
        };
        let _ = stop.send(true);
        let mut failure = early.map(|(task, how)| match how {
            Ok(()) => ServeError::Ended { task },
            Err(source) => ServeError::Task { task, source },
        });
        if let Some(error) = &failure {
            tracing::error!(error = %Chain(&error), "stopping the controller");
        }
        while let Some(ended) = self.watchers.join_next().await {
            if let Ok((task, Err(source))) = ended {
                failure.get_or_insert(ServeError::Task { task, source });
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// Aborts its task when dropped (a no-op once the task has ended).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
