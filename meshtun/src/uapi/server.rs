//! The UAPI server: accepts connections, reads requests, asks the handler, answers.
//!
//! At most [`MAX_CONNECTIONS`] clients are served at once; each must send every request
//! within [`Limits::request_timeout`] and stays within the other [`Limits`]. `set` requests
//! run one at a time and never alongside a `get`, as in wireguard-go, so a handler sees a
//! consistent sequence of changes.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, RwLock, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};
use zeroize::Zeroizing;

use super::error::UapiError;
use super::get::{write_errno, write_get};
use super::request::{Limits, Request, RequestReader, READ_CHUNK};
use super::set::parse_set;
use super::socket::UapiSocket;
use super::UapiHandler;
use meshtun_proto::report::Chain;

/// Most clients served at the same time; further ones wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;

/// Pause after a failed `accept` (for example when out of file descriptors).
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Serves `handler` on `socket` with the default [`Limits`] until `shutdown` completes.
///
/// See [`serve_with_limits`].
pub async fn serve<H: UapiHandler>(
    socket: UapiSocket,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), UapiError> {
    serve_with_limits(socket, handler, shutdown, Limits::default()).await
}

/// Serves `handler` on `socket` until `shutdown` completes.
///
/// On shutdown it stops accepting, removes the socket file (unless the service manager
/// created it, or the directory is not the daemon's to write), lets each open connection
/// finish the request it is reading (within its timeout) and returns once all have closed.
/// It fails only if the socket cannot be registered with the runtime; problems with one
/// client are logged and end only that client's connection.
pub async fn serve_with_limits<H: UapiHandler>(
    socket: UapiSocket,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) -> Result<(), UapiError> {
    let (listener, file, ifname) = socket.into_parts();
    let listener = UnixListener::from_std(listener).map_err(|source| UapiError::Socket {
        path: file.path().to_owned(),
        action: "register with the async runtime",
        source,
    })?;
    let shared = Arc::new(Shared {
        handler,
        limits,
        ifname,
        path: file.path().to_owned(),
        apply_lock: RwLock::new(()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        crate::supervise::fault_point("uapi");
        while let Some(done) = connections.try_join_next() {
            log_task_end(done, &shared.ifname);
        }
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _addr)) => stream,
                Err(err) => {
                    tracing::warn!(interface = %shared.ifname, err = %Chain(&err), "UAPI accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let shared = Arc::clone(&shared);
        let stop = stop_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            shared.connection(stream, stop).await;
        });
    }
    drop(listener);
    drop(file);
    // Ignoring the error is right: it only means no connection is left to tell.
    let _ = stop_tx.send(true);
    while let Some(done) = connections.join_next().await {
        log_task_end(done, &shared.ifname);
    }
    tracing::debug!(interface = %shared.ifname, "UAPI server stopped");
    Ok(())
}

fn log_task_end(done: Result<(), tokio::task::JoinError>, ifname: &str) {
    if let Err(err) = done {
        tracing::error!(interface = %ifname, err = %Chain(&err), "a UAPI connection task failed");
    }
}

/// What every connection of one server shares.
struct Shared<H> {
    handler: Arc<H>,
    limits: Limits,
    ifname: String,
    path: PathBuf,
    /// Held for writing while a `set` is applied, for reading during a `get`.
    apply_lock: RwLock<()>,
}

impl<H: UapiHandler> Shared<H> {
    async fn connection(&self, mut stream: UnixStream, stop: watch::Receiver<bool>) {
        match self.requests(&mut stream, stop).await {
            Ok(()) => tracing::trace!(interface = %self.ifname, "UAPI connection closed"),
            Err(err) => {
                tracing::debug!(interface = %self.ifname, err = %Chain(&err), "UAPI connection ended")
            }
        }
    }

    /// Answers requests until the client closes, a framing error, a timeout or shutdown.
    async fn requests(
        &self,
        stream: &mut UnixStream,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), UapiError> {
        let mut reader = RequestReader::new(self.limits);
        let mut chunk = Zeroizing::new(vec![0u8; READ_CHUNK]);
        loop {
            let deadline = Instant::now() + self.limits.request_timeout;
            let request = loop {
                match reader.next_request() {
                    Ok(Some(request)) => break request,
                    Ok(None) => {}
                    Err(err) => return self.refuse(stream, &err).await,
                }
                let idle = reader.is_idle();
                let read = tokio::select! {
                    biased;
                    _ = stop.wait_for(|stopped| *stopped), if idle => return Ok(()),
                    read = timeout_at(deadline, stream.read(chunk.as_mut_slice())) => read,
                };
                let count = read
                    .map_err(|_| self.timeout())?
                    .map_err(|source| self.io_error("read", source))?;
                if count == 0 {
                    return match reader.finish() {
                        Ok(Some(request)) => self.answer(stream, request).await,
                        Ok(None) => Ok(()),
                        Err(err) => self.refuse(stream, &err).await,
                    };
                }
                reader.feed(chunk.get(..count).unwrap_or_default());
            };
            self.answer(stream, request).await?;
        }
    }

    async fn answer(&self, stream: &mut UnixStream, request: Request) -> Result<(), UapiError> {
        let mut reply = Zeroizing::new(String::new());
        match request {
            Request::Get => {
                let status = {
                    let _shared = self.apply_lock.read().await;
                    self.handler.get().await
                };
                write_get(&status, &mut reply);
            }
            Request::Set(body) => {
                let result = match parse_set(body.lines()) {
                    Ok(update) => {
                        drop(body);
                        let peers = update.peers.len();
                        let _exclusive = self.apply_lock.write().await;
                        self.handler.set(update).await.map(|()| peers)
                    }
                    Err(err) => Err(err),
                };
                match &result {
                    Ok(peers) => tracing::info!(
                        interface = %self.ifname,
                        peer_sections = peers,
                        "applied a UAPI set request"
                    ),
                    Err(err) => tracing::warn!(
                        interface = %self.ifname,
                        errno = err.errno(),
                        err = %Chain(&err),
                        "UAPI set request refused"
                    ),
                }
                write_errno(result.err().map_or(0, |err| err.errno()), &mut reply);
            }
        }
        self.send(stream, reply.as_bytes()).await
    }

    /// Answers a framing error with its errno; the connection then ends.
    async fn refuse(&self, stream: &mut UnixStream, err: &UapiError) -> Result<(), UapiError> {
        tracing::warn!(interface = %self.ifname, errno = err.errno(), err = %Chain(&err), "UAPI request refused");
        let mut reply = String::new();
        write_errno(err.errno(), &mut reply);
        self.send(stream, reply.as_bytes()).await
    }

    /// Writes an answer; the client gets a fresh time limit to take it.
    async fn send(&self, stream: &mut UnixStream, bytes: &[u8]) -> Result<(), UapiError> {
        let deadline = Instant::now() + self.limits.request_timeout;
        timeout_at(deadline, stream.write_all(bytes))
            .await
            .map_err(|_| self.timeout())?
            .map_err(|source| self.io_error("write", source))
    }

    fn timeout(&self) -> UapiError {
        UapiError::Timeout {
            path: self.path.clone(),
            timeout: self.limits.request_timeout,
        }
    }

    fn io_error(&self, action: &'static str, source: std::io::Error) -> UapiError {
        UapiError::Socket {
            path: self.path.clone(),
            action,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use meshtun_proto::PublicKey;
    use parking_lot::Mutex;
    use tokio::sync::oneshot;

    use super::*;
    use crate::uapi::{bind_in, parse_get_reply, request_get, request_set};
    use crate::wgcfg::{DeviceStatus, DeviceUpdate};

    const PEER: &str = "29e5ad6ebcc90ceb765cb6b4936e745a9f8a9ac708212394a0e88632ee236b6f";

    /// Records every update; refuses listen port 1 as taken.
    struct Recorder {
        status: DeviceStatus,
        updates: Mutex<Vec<DeviceUpdate>>,
    }

    impl UapiHandler for Recorder {
        async fn get(&self) -> DeviceStatus {
            self.status.clone()
        }

        async fn set(&self, update: DeviceUpdate) -> Result<(), UapiError> {
            if update.listen_port == Some(1) {
                return Err(UapiError::PortInUse {
                    port: 1,
                    source: std::io::Error::from_raw_os_error(libc::EADDRINUSE),
                });
            }
            self.updates.lock().push(update);
            Ok(())
        }
    }

    struct Running {
        _dir: tempfile::TempDir,
        path: PathBuf,
        handler: Arc<Recorder>,
        stop: Option<oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<Result<(), UapiError>>,
    }

    impl Running {
        async fn stop(mut self) -> PathBuf {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            let done = tokio::time::timeout(Duration::from_secs(5), self.task).await;
            done.expect("serve stops").expect("task").expect("serve");
            self.path
        }
    }

    fn start(limits: Limits) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let socket = bind_in(dir.path(), "wgtest").unwrap();
        let path = socket.path().to_owned();
        let handler = Arc::new(Recorder {
            status: DeviceStatus {
                name: "wgtest".into(),
                private_key: None,
                listen_port: 51820,
                fwmark: 0,
                peers: vec![],
                gate: None,
            },
            updates: Mutex::new(vec![]),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(serve_with_limits(
            socket,
            Arc::clone(&handler),
            shutdown,
            limits,
        ));
        Running {
            _dir: dir,
            path,
            handler,
            stop: Some(stop),
            task,
        }
    }

    fn quick() -> Limits {
        Limits {
            request_timeout: Duration::from_millis(300),
            ..Limits::default()
        }
    }

    /// Sends `request`, then half-closes if `end` is set, and reads until the server closes.
    async fn exchange(path: &Path, request: &[u8], end: bool) -> Vec<u8> {
        let mut stream = UnixStream::connect(path).await.unwrap();
        stream.write_all(request).await.unwrap();
        if end {
            stream.shutdown().await.unwrap();
        }
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
            .await
            .expect("the server closes the connection")
            .unwrap();
        reply
    }

    #[tokio::test]
    async fn answers_get_and_set() {
        let server = start(Limits::default());
        let reply = request_get(&server.path).await.unwrap();
        assert_eq!(reply.as_str(), "listen_port=51820\nerrno=0\n\n");
        let status = parse_get_reply("wgtest", &reply).unwrap();
        assert_eq!(status.listen_port, 51820);

        request_set(
            &server.path,
            &format!("listen_port=7\npublic_key={PEER}\nallowed_ip=10.0.0.0/8"),
        )
        .await
        .unwrap();
        {
            let updates = server.handler.updates.lock();
            assert_eq!(updates.len(), 1);
            assert_eq!(updates[0].listen_port, Some(7));
            assert_eq!(
                updates[0].peers[0].public_key,
                PublicKey::from_hex(PEER).unwrap()
            );
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn errors_come_back_as_negative_errno() {
        let server = start(Limits::default());
        let err = request_set(&server.path, "bogus=1").await.unwrap_err();
        assert!(matches!(err, UapiError::Remote { errno: 22 }), "{err}");
        let err = request_set(&server.path, "listen_port").await.unwrap_err();
        assert!(matches!(err, UapiError::Remote { errno: 71 }), "{err}");
        let err = request_set(&server.path, "listen_port=1")
            .await
            .unwrap_err();
        assert!(matches!(err, UapiError::Remote { errno: 98 }), "{err}");
        assert!(server.handler.updates.lock().is_empty());
        assert_eq!(
            exchange(&server.path, b"get=1\nx\n", false).await,
            b"errno=-22\n\n"
        );
        assert_eq!(
            exchange(&server.path, b"foo=1\n\n", false).await,
            b"errno=-71\n\n"
        );
        server.stop().await;
    }

    #[tokio::test]
    async fn serves_several_requests_on_one_connection() {
        let server = start(Limits::default());
        let requests = b"get=1\n\nset=1\nfwmark=3\n\nset=1\nbogus=1\n\nget=1\n\nset=1\nfwmark=4";
        // The last set is ended by the end of the stream, which wireguard-go accepts too.
        let reply = exchange(&server.path, requests, true).await;
        let expected = "listen_port=51820\nerrno=0\n\nerrno=0\n\nerrno=-22\n\n\
                        listen_port=51820\nerrno=0\n\nerrno=0\n\n";
        assert_eq!(String::from_utf8(reply).unwrap(), expected);
        let fwmarks: Vec<_> = server
            .handler
            .updates
            .lock()
            .iter()
            .map(|u| u.fwmark)
            .collect();
        assert_eq!(fwmarks, [Some(3), Some(4)]);
        server.stop().await;
    }

    #[tokio::test]
    async fn survives_probes_and_drops_slow_or_oversized_clients() {
        let server = start(quick());
        // `wg` first connects and closes at once to see whether the interface exists.
        drop(UnixStream::connect(&server.path).await.unwrap());
        // A client that never finishes its request is cut off after the timeout.
        let started = std::time::Instant::now();
        assert_eq!(
            exchange(&server.path, b"set=1\nlisten_port=5", false).await,
            b""
        );
        assert!(started.elapsed() >= Duration::from_millis(250));
        // An endless line is refused as soon as it passes the limit.
        let mut stream = UnixStream::connect(&server.path).await.unwrap();
        stream.write_all(b"set=1\n").await.unwrap();
        stream.write_all(&[b'a'; 5000]).await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"errno=-71\n\n");
        assert!(server.handler.updates.lock().is_empty());
        // And the server still answers.
        assert!(request_get(&server.path).await.is_ok());
        server.stop().await;
    }

    #[tokio::test]
    async fn limits_concurrent_connections() {
        let server = start(Limits::default());
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(UnixStream::connect(&server.path).await.unwrap());
        }
        // Let the server accept them all.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let waiting =
            tokio::time::timeout(Duration::from_millis(300), request_get(&server.path)).await;
        assert!(waiting.is_err(), "a 17th client was served");
        idle.pop();
        assert!(request_get(&server.path).await.is_ok());
        drop(idle);
        server.stop().await;
    }

    #[tokio::test]
    async fn shutdown_closes_idle_clients_and_removes_the_socket() {
        let server = start(Limits::default());
        let mut idle = UnixStream::connect(&server.path).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let path = server.stop().await;
        assert!(!path.exists());
        let mut rest = Vec::new();
        assert_eq!(idle.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
