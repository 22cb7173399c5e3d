//! Serving a router on a TCP listener, plain or TLS, so that no client can hold more than
//! its share:
//!
//! - connections are counted per source address and in total ([`Slots`]), from the TCP
//!   accept on, the TLS handshake included; one over a cap is closed at once;
//! - a TLS handshake must complete within `tls_handshake_timeout`;
//! - a request's headers must arrive within `header_timeout` of the connection's start or of
//!   the previous answer (hyper's header-read timer, which so also closes idle kept-alive
//!   connections);
//! - a write that makes no progress for `request_timeout` closes the connection (a client
//!   that never reads its answer);
//! - the router itself limits each request's time ([`crate::api::router`]).
//!
//! On shutdown, the listener closes, and requests in flight get [`SHUTDOWN_GRACE`] to end.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use meshtun_proto::report::Chain;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::config::Limits;
use crate::quota::{address_key, Full, Slots};

/// How long requests in flight may take to end once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Largest buffer for a request's head (request line and headers).
const MAX_HEAD_BYTES: usize = 32 * 1024;

/// Pause after a failed accept (out of file descriptors, for one), so the loop does not spin.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// Called with the cap that made the server close a new connection at once.
pub type OnRefused = Arc<dyn Fn(Full) + Send + Sync>;

/// How a listener serves.
#[derive(Clone)]
pub struct ServeOptions {
    /// Connections, timeouts.
    pub limits: Limits,
    /// TLS, if enabled.
    pub tls: Option<TlsAcceptor>,
    /// Told about every connection closed for a cap.
    pub on_refused: OnRefused,
}

struct Context {
    router: Router,
    options: ServeOptions,
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let limits = options.limits;
    let slots = Slots::new(limits.max_connections, limits.max_connections_per_address);
    let context = Arc::new(Context { router, options });
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match slots.try_take(address_key(peer.ip())) {
            Ok(slot) => slot,
            Err(full) => {
                tracing::debug!(%peer, ?full, "connection cap reached; closing at once");
                (context.options.on_refused)(full);
                continue;
            }
        };
        let watcher = graceful.watcher();
        let context = context.clone();
        tokio::spawn(async move {
            connection(stream, peer, &context, watcher).await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("requests still in flight at shutdown were dropped");
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, context: &Context, watcher: Watcher) {
    let _ = stream.set_nodelay(true);
    let limits = &context.options.limits;
    let mut io = TimeoutStream::new(stream);
    io.set_write_timeout(Some(limits.request_timeout));
    let io = Box::pin(io);
    match &context.options.tls {
        None => http(io, peer, context, watcher).await,
        Some(acceptor) => {
            match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls)) => http(tls, peer, context, watcher).await,
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn http<I>(io: I, peer: SocketAddr, context: &Context, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = context.router.clone();
    let service = service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|e| match e {})) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(context.options.limits.header_timeout)
        .keep_alive(true)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %Chain(&error), "connection ended");
    }
}
