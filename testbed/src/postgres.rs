//! A throwaway PostgreSQL cluster for tests: `initdb` and `postgres` in a temporary
//! directory, run as an unprivileged user when the caller is root (PostgreSQL refuses to run
//! as root), listening on a Unix socket in that directory (and, if asked, on 127.0.0.1 at a
//! free port, or on a given address inside a network namespace: [`TempCluster::start_in`]).
//! Stopped and removed when dropped.
//!
//! The controller's tests, the end-to-end tests and `meshtun demo --ha` use it. The server
//! binaries come from `$MESHTUN_PG_BIN`, or else the newest
//! `/usr/lib/postgresql/*/bin` (Debian's `postgresql` package).

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chown, Gid, Pid, Uid, User};

/// The cluster's superuser, which every test connects as.
pub const SUPERUSER: &str = "meshtun";

/// The superuser's password, for clusters started with [`Options::tcp_password`].
pub const TEST_PASSWORD: &str = "meshtun-test-password";

/// The unprivileged account the server runs as when the caller is root.
const RUN_AS: &str = "nobody";

/// The Unix socket's port number (only its file name: `.s.PGSQL.5432`).
const SOCKET_PORT: u16 = 5432;

/// Longest wait for the server to accept connections, and for it to stop.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a cluster could not be started or used.
#[derive(Debug)]
pub struct ClusterError(pub String);

impl std::fmt::Display for ClusterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClusterError {}

fn err(what: impl Into<String>) -> ClusterError {
    ClusterError(what.into())
}

/// How to start a cluster.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Also listen on 127.0.0.1 at a free port, where the superuser needs
    /// [`TEST_PASSWORD`] (SCRAM); the Unix socket stays trusted.
    pub tcp_password: bool,
    /// Listen on this address and port instead of 127.0.0.1 at a free port (implies
    /// [`Options::tcp_password`]); with [`TempCluster::start_in`], an address of that
    /// namespace.
    pub tcp_listen: Option<SocketAddr>,
    /// Keep PostgreSQL's durability: `fsync` on and the default shared buffers, for
    /// measurements (`meshtun-controller-bench`). Tests run without `fsync`, faster.
    pub durable: bool,
}

/// A running temporary cluster. See the [module documentation](self).
#[derive(Debug)]
pub struct TempCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    server: Child,
    tcp_port: Option<u16>,
    tcp_listen: Option<SocketAddr>,
    /// With [`TempCluster::start_in`]: the thread that started the server, which must live
    /// as long as it (the server's parent-death signal follows that thread), and the sender
    /// whose drop ends it.
    keeper: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
}

impl TempCluster {
    /// Starts a cluster listening only on its Unix socket.
    pub fn start() -> Result<Self, ClusterError> {
        Self::start_with(Options::default())
    }

    /// Starts a cluster with `options`.
    pub fn start_with(options: Options) -> Result<Self, ClusterError> {
        let bin = bin_dir().ok_or_else(|| {
            err(
                "no PostgreSQL server binaries: install Debian's postgresql package \
                 (/usr/lib/postgresql/*/bin) or set MESHTUN_PG_BIN",
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("meshtun-pg-")
            .tempdir()
            .map_err(|e| err(format!("cannot create a temporary directory: {e}")))?;
        let owner = run_as()?;
        if let Some((uid, gid)) = owner {
            chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| err(format!("cannot chown {}: {e}", dir.path().display())))?;
        }
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
            .map_err(|e| err(format!("cannot chmod {}: {e}", dir.path().display())))?;
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, TEST_PASSWORD).map_err(|e| err(format!("pwfile: {e}")))?;
        if let Some((uid, gid)) = owner {
            chown(&pwfile, Some(uid), Some(gid)).map_err(|e| err(format!("pwfile: {e}")))?;
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        let out = run(initdb, owner)?;
        if !out.status.success() {
            return Err(err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if options.tcp_listen.is_some() {
            // initdb allows TCP from loopback only; clients on the listening address's own
            // networks authenticate with the password too.
            let hba = data.join("pg_hba.conf");
            let mut text =
                fs::read_to_string(&hba).map_err(|e| err(format!("pg_hba.conf: {e}")))?;
            text.push_str("\nhost all all samenet scram-sha-256\n");
            fs::write(&hba, text).map_err(|e| err(format!("pg_hba.conf: {e}")))?;
        }
        let tcp_port = match options.tcp_listen {
            Some(addr) => Some(addr.port()),
            None => options.tcp_password.then(free_port).transpose()?,
        };
        let listen_addresses = match (options.tcp_listen, tcp_port) {
            (Some(addr), _) => format!("listen_addresses={}", addr.ip()),
            (None, Some(_)) => "listen_addresses=127.0.0.1".to_owned(),
            (None, None) => "listen_addresses=".to_owned(),
        };
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .args(["-p", &tcp_port.unwrap_or(SOCKET_PORT).to_string()])
            .args(["-c", "max_connections=200"])
            .args(if options.durable {
                ["-c", "fsync=on"]
            } else {
                ["-c", "fsync=off"]
            })
            .args(if options.durable {
                ["-c", "shared_buffers=128MB"]
            } else {
                ["-c", "shared_buffers=32MB"]
            })
            .args(["-c", &listen_addresses])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                fs::File::create(dir.path().join("server.log"))
                    .map_err(|e| err(format!("server.log: {e}")))?,
            ));
        let server = spawn_server(postgres, owner)?;
        let cluster = Self {
            dir,
            bin,
            server,
            tcp_port,
            tcp_listen: options.tcp_listen,
            keeper: None,
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// Starts a cluster inside the network namespace `netns` (its name under
    /// `/var/run/netns`), listening on `listen` there with password authentication (and on
    /// its Unix socket, which every namespace reaches through the file system). The server is
    /// started from a thread that entered the namespace and lives until the cluster is
    /// dropped.
    pub fn start_in(netns: &str, listen: SocketAddr) -> Result<Self, ClusterError> {
        let path = Path::new(crate::netns::NETNS_DIR).join(netns);
        let (started_tx, started_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let handle = thread::Builder::new()
            .name(format!("temp-cluster-{netns}"))
            .spawn(move || {
                let entered = fs::File::open(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|f| {
                        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| e.to_string())
                    })
                    .map_err(|e| err(format!("cannot enter namespace {}: {e}", path.display())));
                let options = Options {
                    tcp_password: true,
                    tcp_listen: Some(listen),
                    durable: false,
                };
                let started = entered.and_then(|()| TempCluster::start_with(options));
                let ok = started.is_ok();
                let _ = started_tx.send(started);
                if ok {
                    // Until the cluster is dropped (which drops the sender).
                    let _ = stop_rx.recv();
                }
            })
            .map_err(|e| err(format!("cannot start the cluster thread: {e}")))?;
        let mut cluster = started_rx
            .recv()
            .map_err(|_| err("the cluster thread ended early"))??;
        cluster.keeper = Some((stop_tx, handle));
        Ok(cluster)
    }

    /// A cluster shared by every test of this process, started on first use and stopped
    /// when the process exits (also when it is killed: the server gets SIGQUIT then).
    pub fn shared() -> Result<&'static TempCluster, ClusterError> {
        static SHARED: OnceLock<Result<TempCluster, ClusterError>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                // The server's parent-death signal follows the thread that started it, so
                // it is started from a thread that lives as long as the process.
                let (tx, rx) = std::sync::mpsc::channel();
                thread::Builder::new()
                    .name("temp-cluster".into())
                    .spawn(move || {
                        let _ = tx.send(TempCluster::start());
                        loop {
                            thread::park();
                        }
                    })
                    .map_err(|e| err(format!("cannot start the cluster thread: {e}")))?;
                let cluster = rx
                    .recv()
                    .map_err(|_| err("the cluster thread ended early"))??;
                // SAFETY: `stop_shared` is a plain function that only reads a static.
                unsafe { nix::libc::atexit(stop_shared) };
                Ok(cluster)
            })
            .as_ref()
            .map_err(|e| err(e.0.clone()))
    }

    /// The directory holding the Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.server.id()
    }

    /// The TCP port on 127.0.0.1, if started with [`Options::tcp_password`].
    pub fn tcp_port(&self) -> Option<u16> {
        self.tcp_port
    }

    /// The TCP address given by [`Options::tcp_listen`].
    pub fn tcp_listen(&self) -> Option<SocketAddr> {
        self.tcp_listen
    }

    /// A `postgres://` URL for `database` over the Unix socket, as the superuser.
    pub fn url(&self, database: &str) -> String {
        let host: String = self
            .socket_dir()
            .display()
            .to_string()
            .replace('%', "%25")
            .replace('/', "%2F");
        format!("postgres://{SUPERUSER}@{host}:{}/{database}", self.port())
    }

    /// Creates a new, empty database with a name unique in this cluster, and returns it.
    pub fn create_database(&self, prefix: &str) -> Result<String, ClusterError> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(name)
    }

    /// Runs `sql` in `database` with `psql` as the superuser; returns what it printed
    /// (unaligned, tuples only), or its error message.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String, ClusterError> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port().to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
            ])
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("cannot run psql: {e}")))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()))
        }
    }

    /// The port in the socket's name (`.s.PGSQL.PORT`), or the TCP port.
    pub fn port(&self) -> u16 {
        self.tcp_port.unwrap_or(SOCKET_PORT)
    }

    /// Waits for `postmaster.pid` to say `ready`.
    fn wait_ready(&self) -> Result<(), ClusterError> {
        let pid_file = self.dir.path().join("data/postmaster.pid");
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            let ready = fs::read_to_string(&pid_file)
                .map(|t| t.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        let log = fs::read_to_string(self.log_file()).unwrap_or_default();
        Err(err(format!("postgres did not become ready: {log}")))
    }

    fn stop(&mut self) {
        let pid = Pid::from_raw(self.server.id() as i32);
        // Fast shutdown: roll back open transactions, disconnect, stop.
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.server.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        self.stop();
        if let Some((stop, handle)) = self.keeper.take() {
            drop(stop);
            let _ = handle.join();
        }
    }
}

extern "C" fn stop_shared() {
    // `shared()` registered this only after storing a cluster.
    static STOPPING: OnceLock<()> = OnceLock::new();
    if STOPPING.set(()).is_err() {
        return;
    }
    if let Ok(cluster) = TempCluster::shared() {
        let pid = Pid::from_raw(cluster.pid() as i32);
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => thread::sleep(Duration::from_millis(20)),
                _ => break,
            }
        }
        let _ = fs::remove_dir_all(cluster.socket_dir());
    }
}

/// Whether a test must fail, rather than skip, when PostgreSQL is missing: in CI ([`crate::in_ci`]).
pub fn required() -> bool {
    crate::in_ci()
}

/// The [shared](TempCluster::shared) cluster; when it cannot start, panics under `CI=true`
/// and otherwise prints why `test` is skipped and returns `None`.
pub fn shared_or_skip(test: &str) -> Option<&'static TempCluster> {
    match TempCluster::shared() {
        Ok(cluster) => Some(cluster),
        Err(e) if required() => panic!("{test}: PostgreSQL is required under CI=true: {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: no PostgreSQL: {e}");
            None
        }
    }
}

/// A new cluster with `options`; when it cannot start, panics under `CI=true` and otherwise
/// prints why `test` is skipped and returns `None`.
pub fn start_or_skip(test: &str, options: Options) -> Option<TempCluster> {
    match TempCluster::start_with(options) {
        Ok(cluster) => Some(cluster),
        Err(e) if required() => panic!("{test}: PostgreSQL is required under CI=true: {e}"),
        Err(e) => {
            eprintln!("SKIPPED {test}: no PostgreSQL: {e}");
            None
        }
    }
}

/// `$MESHTUN_PG_BIN`, or the newest `/usr/lib/postgresql/*/bin` holding `postgres`.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("MESHTUN_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The uid and gid the server runs as: [`RUN_AS`] when we are root, ourselves otherwise.
fn run_as() -> Result<Option<(Uid, Gid)>, ClusterError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name(RUN_AS)
        .map_err(|e| err(format!("cannot look up user {RUN_AS}: {e}")))?
        .ok_or_else(|| err(format!("no user {RUN_AS} to run postgres as")))?;
    Ok(Some((user.uid, user.gid)))
}

fn as_user(cmd: &mut Command, owner: Option<(Uid, Gid)>) {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
    // The server's locale and environment are its own.
    cmd.env_remove("PGDATA").env("LC_ALL", "C.UTF-8");
}

fn run(mut cmd: Command, owner: Option<(Uid, Gid)>) -> Result<Output, ClusterError> {
    as_user(&mut cmd, owner);
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run {:?}: {e}", cmd.get_program())))
}

fn spawn_server(mut cmd: Command, owner: Option<(Uid, Gid)>) -> Result<Child, ClusterError> {
    as_user(&mut cmd, owner);
    // SAFETY: only an async-signal-safe system call between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGQUIT).map_err(io::Error::from));
    }
    cmd.spawn()
        .map_err(|e| err(format!("cannot start postgres: {e}")))
}

/// A port on 127.0.0.1 that nothing listens on now.
fn free_port() -> Result<u16, ClusterError> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("no free port: {e}")))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| err(format!("no free port: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_answers_and_is_gone_after_drop() {
        let Some(own) = start_or_skip("temp_cluster", Options::default()) else {
            return;
        };
        let db = own.create_database("t").unwrap();
        assert_eq!(own.psql(&db, "SELECT 1 + 1").unwrap(), "2");
        let dir = own.socket_dir().to_owned();
        let pid = Pid::from_raw(own.pid() as i32);
        drop(own);
        assert!(!dir.exists());
        assert!(kill(pid, None).is_err(), "postgres still runs");
    }
}
