//! `meshtun-controller` on loopback, for end-to-end tests of the controller binary:
//!
//! - [`ControllerHome`]: a temporary directory with a `controller.toml` listening on a free
//!   loopback port and its state directory; runs the controller's commands there;
//! - [`Controller`]: a running `serve` process, logging to a file, killed on drop;
//! - [`TestNode`]: a node's keys, and [`Client`]: HTTP requests, signed as that node when
//!   the route needs it;
//! - [`StateDb`]: the controller's SQLite database, opened read-only.
//!
//! No namespace and no root are needed. Every wait is bounded in time.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshtun_proto::auth::RequestSignature;
use meshtun_proto::wire::{Benchmark, EpochInfo, Scores};
use meshtun_proto::{IdentityKey, IdentityPublic, PrivateKey};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rusqlite::{Connection, OpenFlags};
use tempfile::TempDir;

use crate::run::{describe, run, wait_timeout, Output};

/// How long a controller command (`init`, `node add`, `audit verify`, …) may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `serve` may take to answer `/v1/epoch` with an epoch after starting.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long `serve` may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Time limit of one HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The current time, Unix milliseconds.
pub fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is before 1970");
    u64::try_from(since.as_millis()).expect("the clock is beyond year 500 million")
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
pub fn free_loopback_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("a bound socket has an address")
        .port()
}

/// A temporary directory holding `controller.toml` and the controller's state directory
/// `state/` (database, key, admin token); removed on drop.
pub struct ControllerHome {
    dir: TempDir,
    config: PathBuf,
    listen: SocketAddr,
    status_listen: SocketAddr,
}

impl ControllerHome {
    /// A new home whose configuration listens on a free loopback port, keeps its state in
    /// `state/`, and ends with `settings`: more TOML, e.g. `"[epoch]\nlength = 60\nlead = 5\n"`.
    pub fn new(settings: &str) -> Self {
        Self::listening_on(
            SocketAddr::from(([127, 0, 0, 1], free_loopback_port())),
            settings,
        )
    }

    /// Like [`ControllerHome::new`], listening on `listen` (an address in the namespace the
    /// controller will run in) with URL `http://LISTEN`; the status listener (`/metrics`,
    /// `/v1/status`) is on another free loopback port.
    pub fn listening_on(listen: SocketAddr, settings: &str) -> Self {
        Self::with_header(listen, "http", "", settings)
    }

    /// Like [`ControllerHome::new`], with URL `SCHEME://LISTEN`, and `top` (top-level keys,
    /// e.g. `read_token_file = "read.token"\n`) before `settings`.
    pub fn with_header(listen: SocketAddr, scheme: &str, top: &str, settings: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("meshtun-controller-")
            .tempdir()
            .expect("cannot create a temporary directory");
        let config = dir.path().join("controller.toml");
        let status_listen = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()));
        let text = format!(
            "listen = \"{listen}\"\nstatus_listen = \"{status_listen}\"\n\
             url = \"{scheme}://{listen}\"\nstate_dir = \"state\"\n{top}{settings}"
        );
        std::fs::write(&config, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", config.display()));
        Self {
            dir,
            config,
            listen,
            status_listen,
        }
    }

    /// The temporary directory (for logs and other files of the test).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file.
    pub fn config_file(&self) -> &Path {
        &self.config
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.root().join("state")
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.state_dir().join("controller.db")
    }

    /// The controller's Ed25519 key file.
    pub fn key_file(&self) -> PathBuf {
        self.state_dir().join("controller.key")
    }

    /// The admin token file.
    pub fn admin_token_file(&self) -> PathBuf {
        self.state_dir().join("admin.token")
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// `meshtun-controller --config FILE args…`, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::controller_bin());
        cmd.arg("--config").arg(&self.config).args(args);
        cmd.env_remove("MESHTUN_LOG")
            .env_remove("MESHTUN_CONTROLLER_CONFIG");
        cmd
    }

    /// Runs a controller command to completion (at most [`COMMAND_TIMEOUT`]).
    pub fn run(&self, args: &[&str]) -> Output {
        run(&mut self.command(args), COMMAND_TIMEOUT)
    }

    /// Runs a controller command and returns its stdout; fails the test if it fails.
    pub fn run_ok(&self, args: &[&str]) -> String {
        self.run(args).expect_success()
    }

    /// `init`: creates the key, the admin token and the database.
    pub fn init(&self) -> String {
        self.run_ok(&["init"])
    }

    /// `node add`: enrolls `node` with its public keys, address and endpoint.
    pub fn enroll(&self, node: &TestNode) -> String {
        let wg = node.wg.public_key().to_base64();
        let identity = node.identity.public().to_base64();
        let mut args = vec![
            "node",
            "add",
            &node.id,
            "--wg-key",
            &wg,
            "--identity-key",
            &identity,
            "--address",
            &node.address,
        ];
        if let Some(endpoint) = &node.endpoint {
            args.extend(["--endpoint", endpoint]);
        }
        self.run_ok(&args)
    }

    /// `audit verify`; returns its report line, failing the test if the log does not verify.
    pub fn audit_verify(&self) -> String {
        self.run_ok(&["audit", "verify"])
    }

    /// Starts `serve` with log filter `log_filter`, its stdout and stderr going to `log`.
    pub fn serve(&self, log_filter: &str, log: &Path) -> Controller {
        self.spawn(self.command(&["--log", log_filter, "serve"]), log)
    }

    /// Like [`ControllerHome::serve`], with at most `open_files` file descriptors (soft and
    /// hard limit, set by util-linux `prlimit`, which then runs the controller as the same
    /// process), as a service with a low `LimitNOFILE` would have.
    pub fn serve_with_file_limit(
        &self,
        log_filter: &str,
        log: &Path,
        open_files: u64,
    ) -> Controller {
        let serve = self.command(&["--log", log_filter, "serve"]);
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={open_files}:{open_files}"))
            .arg("--")
            .arg(serve.get_program())
            .args(serve.get_args());
        cmd.env_remove("MESHTUN_LOG")
            .env_remove("MESHTUN_CONTROLLER_CONFIG");
        self.spawn(cmd, log)
    }

    fn spawn(&self, mut cmd: Command, log: &Path) -> Controller {
        let file =
            File::create(log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let file2 = file.try_clone().expect("cannot duplicate a file handle");
        cmd.stdin(Stdio::null()).stdout(file).stderr(file2);
        let label = describe(&cmd);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{label}`: {e}"));
        Controller {
            child: Some(child),
            log: log.to_owned(),
            label,
            client: self.client(),
        }
    }

    /// An HTTP client for this controller; once `init` has made the controller key, it
    /// signs node requests for it.
    pub fn client(&self) -> Client {
        let client = Client::new(&self.url());
        match self.controller_key() {
            Some(key) => client.for_controller(key),
            None => client,
        }
    }

    /// The controller's public key, once `init` has made its key file.
    pub fn controller_key(&self) -> Option<IdentityPublic> {
        let text = std::fs::read_to_string(self.key_file()).ok()?;
        let key = IdentityKey::from_base64(&text)
            .unwrap_or_else(|e| panic!("{}: {e}", self.key_file().display()));
        Some(key.public())
    }

    /// The address the API listens on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// An HTTP client for the status listener (`/health`, `/metrics`, `/v1/status`).
    pub fn status_client(&self) -> Client {
        Client::new(&format!("http://{}", self.status_listen))
    }

    /// The database, read-only.
    pub fn open_db(&self) -> StateDb {
        StateDb::open_read_only(&self.database())
    }

    /// Restores the database from `backup` (made by [`StateDb::backup_to`]), as the README
    /// tells an operator to with the controller stopped: the write-ahead log and its index
    /// are deleted (they belong to the replaced database), and the copy is put in place,
    /// mode 0600.
    pub fn restore_database(&self, backup: &Path) {
        let db = self.database();
        for suffix in ["-wal", "-shm"] {
            let mut name = db.clone().into_os_string();
            name.push(suffix);
            match std::fs::remove_file(&name) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot delete {}: {e}", Path::new(&name).display()),
            }
        }
        std::fs::copy(backup, &db).unwrap_or_else(|e| {
            panic!("cannot copy {} to {}: {e}", backup.display(), db.display())
        });
        std::fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap_or_else(|e| panic!("cannot chmod {}: {e}", db.display()));
    }
}

/// A running `meshtun-controller serve`; killed with SIGKILL on drop (its log is printed
/// if the test is failing).
pub struct Controller {
    child: Option<Child>,
    log: PathBuf,
    label: String,
    client: Client,
}

impl Controller {
    /// The process id, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `GET /v1/epoch` answers with an epoch in force, and returns it. Fails the
    /// test, with the log, if the process exits first or [`START_TIMEOUT`] passes.
    pub fn wait_ready(&mut self) -> EpochInfo {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::from("no answer yet");
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "`{}` exited ({status}) before it was ready ({last}); its log:\n{}",
                    self.label,
                    self.log()
                );
            }
            match self.client.get("/v1/epoch") {
                Ok(reply) if reply.status == 200 => return reply.json(),
                Ok(reply) => last = format!("/v1/epoch answered {}", reply.status),
                Err(e) => last = format!("/v1/epoch: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "`{}` was not ready within {START_TIMEOUT:?}: {last}; its log:\n{}",
                self.label,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGKILL (by pid) and reaps the process; its exit status, or `None` if it had
    /// already been reaped.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pid = i32::try_from(child.id()).expect("a pid fits in an i32");
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        child.wait().ok()
    }

    /// Sends SIGTERM and waits up to [`STOP_TIMEOUT`]; its exit status, or `None` if it had
    /// to be killed (or had already been reaped).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let pid = i32::try_from(child.id()).expect("a pid fits in an i32");
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        if let Some(status) = wait_timeout(child, STOP_TIMEOUT) {
            self.child = None;
            return Some(status);
        }
        eprintln!(
            "`{}` ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
            self.label
        );
        self.kill();
        None
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- log of `{}` ({}) -----\n{}----- end of log -----",
                self.label,
                self.log.display(),
                self.log()
            );
        }
    }
}

/// A node's keys and what it is enrolled with.
pub struct TestNode {
    /// Node id.
    pub id: String,
    /// WireGuard private key.
    pub wg: PrivateKey,
    /// Ed25519 identity key, which signs its requests.
    pub identity: IdentityKey,
    /// Overlay address (CIDR).
    pub address: String,
    /// Endpoint (`host:port`).
    pub endpoint: Option<String>,
}

impl TestNode {
    /// Fresh keys for node `id`, with address `100.64.0.INDEX/32` and endpoint
    /// `192.0.2.INDEX:51820`.
    pub fn generate(id: &str, index: u8) -> Self {
        Self {
            id: id.to_owned(),
            wg: PrivateKey::generate(),
            identity: IdentityKey::generate(),
            address: format!("100.64.0.{index}/32"),
            endpoint: Some(format!("192.0.2.{index}:51820")),
        }
    }
}

/// A benchmark body: `overall` as given, the other scores 0.9, suite `e2e-1`.
pub fn benchmark_body(seq: u64, overall: f64, measured_at_ms: u64) -> Vec<u8> {
    let bench = Benchmark {
        suite_version: "e2e-1".into(),
        scores: Scores {
            overall,
            refusal: 0.9,
            honesty: 0.9,
            policy: 0.9,
        },
        measured_at_ms,
        seq,
    };
    serde_json::to_vec(&bench).expect("a benchmark serializes")
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header, in seconds, if there is one.
    pub retry_after: Option<u64>,
    /// The body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text (lossily decoded).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON; fails the test if it does not parse.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "answer ({}) is not the expected JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }
}

/// A blocking HTTP client for one controller. Transport errors (refused, reset, timed out)
/// are returned, not panicked on: a killed controller produces them.
#[derive(Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    controller: Option<IdentityPublic>,
}

impl Client {
    /// A client for the controller at `base` (`http://host:port`).
    pub fn new(base: &str) -> Self {
        Self::build(base, None)
    }

    /// A client for the controller at `base` (`https://host:port`) that trusts the PEM
    /// certificate `ca_pem`.
    pub fn trusting(base: &str, ca_pem: &[u8]) -> Self {
        Self::build(base, Some(ca_pem))
    }

    fn build(base: &str, ca_pem: Option<&[u8]>) -> Self {
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .connect_timeout(Duration::from_secs(2));
        if let Some(pem) = ca_pem {
            let cert = reqwest::Certificate::from_pem(pem).expect("a PEM certificate");
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().expect("cannot build an HTTP client");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            controller: None,
        }
    }

    /// This client, signing node requests for the controller whose key is `key`.
    pub fn for_controller(mut self, key: IdentityPublic) -> Self {
        self.controller = Some(key);
        self
    }

    fn send(&self, request: reqwest::blocking::RequestBuilder) -> Result<Reply, reqwest::Error> {
        let response = request.send()?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.bytes()?.to_vec();
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Result<Reply, reqwest::Error> {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: Vec<u8>) -> Result<Reply, reqwest::Error> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
    }

    /// A request signed by `node` now, with a fresh nonce.
    pub fn signed(
        &self,
        node: &TestNode,
        method: &str,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<Reply, reqwest::Error> {
        let sig = self.sign(node, method, path_and_query, &body);
        self.send_signed(&sig, method, path_and_query, body)
    }

    /// `node`'s signature of a request, made now with a fresh nonce (to send, or replay,
    /// with [`Client::send_signed`]).
    pub fn sign(
        &self,
        node: &TestNode,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> RequestSignature {
        let controller = self.controller.expect(
            "a signing client needs the controller key: use ControllerHome::client after init",
        );
        RequestSignature::sign(
            &node.identity,
            &controller,
            &node.id,
            method,
            path_and_query,
            body,
            now_ms(),
        )
    }

    /// Sends a request with the headers of `sig` (made by [`Client::sign`] for the same
    /// method, path and body: or replayed).
    pub fn send_signed(
        &self,
        sig: &RequestSignature,
        method: &str,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<Reply, reqwest::Error> {
        let method =
            reqwest::Method::from_bytes(method.as_bytes()).expect("a valid HTTP method name");
        let mut request = self
            .http
            .request(method, format!("{}{path_and_query}", self.base));
        for (name, value) in sig.headers() {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        self.send(request)
    }

    /// `POST /v1/benchmarks/{node}` with `body`, signed by the node.
    pub fn submit_benchmark(
        &self,
        node: &TestNode,
        body: Vec<u8>,
    ) -> Result<Reply, reqwest::Error> {
        self.signed(node, "POST", &format!("/v1/benchmarks/{}", node.id), body)
    }

    /// `GET /v1/config/{node}` (with `?after=EPOCH` if given), signed by the node.
    pub fn bundle(&self, node: &TestNode, after: Option<u64>) -> Result<Reply, reqwest::Error> {
        let query = after.map_or(String::new(), |e| format!("?after={e}"));
        self.signed(
            node,
            "GET",
            &format!("/v1/config/{}{query}", node.id),
            Vec::new(),
        )
    }
}

/// One row of the `epochs` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEpoch {
    /// Epoch id.
    pub id: u64,
    /// The epoch secret, hex.
    pub secret_hex: String,
    /// Activation, Unix milliseconds.
    pub activation_ms: u64,
    /// End, Unix milliseconds.
    pub not_after_ms: u64,
    /// Why it was created.
    pub cause: String,
}

/// The controller's database, opened read-only: reading it neither checkpoints the
/// write-ahead log nor changes anything the next `serve` finds after a crash.
pub struct StateDb {
    conn: Connection,
    path: PathBuf,
}

impl StateDb {
    /// Opens `path` read-only; fails the test if it cannot.
    pub fn open_read_only(path: &Path) -> Self {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .unwrap_or_else(|e| panic!("cannot open {} read-only: {e}", path.display()));
        Self {
            conn,
            path: path.to_owned(),
        }
    }

    /// Writes a consistent copy of the database to `to` while the controller may be running
    /// (SQLite's `VACUUM INTO`, the online backup the README describes); fails the test if
    /// it cannot.
    pub fn backup_to(&self, to: &Path) {
        let target = to.to_str().expect("a UTF-8 backup path");
        self.conn
            .execute("VACUUM INTO ?1", [target])
            .unwrap_or_else(|e| self.fail(&format!("the database into {target}"), e));
    }

    fn fail(&self, what: &str, e: rusqlite::Error) -> ! {
        panic!("{}: cannot read {what}: {e}", self.path.display())
    }

    /// Every stored benchmark: `(node, seq)` → the raw body as submitted.
    pub fn benchmarks(&self) -> BTreeMap<(String, u64), Vec<u8>> {
        let read = || -> rusqlite::Result<BTreeMap<(String, u64), Vec<u8>>> {
            let mut stmt = self
                .conn
                .prepare("SELECT node_id, seq, raw_body FROM benchmarks")?;
            let rows = stmt.query_map([], |row| Ok(((row.get(0)?, row.get(1)?), row.get(2)?)))?;
            rows.collect()
        };
        read().unwrap_or_else(|e| self.fail("the benchmarks", e))
    }

    /// How many rows `table` holds (a table of the controller's schema).
    pub fn row_count(&self, table: &str) -> u64 {
        self.conn
            .query_row(&format!("SELECT COUNT(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })
            .unwrap_or_else(|e| self.fail(&format!("the rows of {table}"), e))
    }

    /// The hash of audit entry `seq`, if the log holds it.
    pub fn audit_hash(&self, seq: u64) -> Option<String> {
        use rusqlite::OptionalExtension as _;
        self.conn
            .query_row("SELECT hash FROM audit WHERE seq = ?1", [seq], |r| r.get(0))
            .optional()
            .unwrap_or_else(|e| self.fail(&format!("audit entry {seq}"), e))
    }

    /// Every stored epoch, by id.
    pub fn epochs(&self) -> Vec<StoredEpoch> {
        let read = || -> rusqlite::Result<Vec<StoredEpoch>> {
            let mut stmt = self.conn.prepare(
                "SELECT id, secret, activation_ms, not_after_ms, cause FROM epochs ORDER BY id",
            )?;
            let rows = stmt.query_map([], |row| {
                Ok(StoredEpoch {
                    id: row.get(0)?,
                    secret_hex: row.get(1)?,
                    activation_ms: row.get(2)?,
                    not_after_ms: row.get(3)?,
                    cause: row.get(4)?,
                })
            })?;
            rows.collect()
        };
        read().unwrap_or_else(|e| self.fail("the epochs", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_holds_a_loopback_configuration() {
        let home = ControllerHome::new("[epoch]\nlength = 60\nlead = 5\n");
        let text = std::fs::read_to_string(home.config_file()).unwrap();
        assert!(text.starts_with("listen = \"127.0.0.1:"), "{text}");
        assert!(text.contains("\nstatus_listen = \"127.0.0.1:"), "{text}");
        assert!(
            text.contains(&format!("url = \"{}\"", home.url())),
            "{text}"
        );
        assert!(text.ends_with("[epoch]\nlength = 60\nlead = 5\n"), "{text}");
        assert_eq!(home.database(), home.root().join("state/controller.db"));
    }

    #[test]
    fn benchmark_bodies_decode_as_benchmarks() {
        let now = now_ms();
        let body = benchmark_body(7, 0.25, now);
        let bench = Benchmark::decode(&body, now).unwrap();
        assert_eq!(bench.seq, 7);
        assert_eq!(bench.scores.overall, 0.25);
        assert_eq!(bench.measured_at_ms, now);
    }

    #[test]
    fn a_refused_connection_is_an_error_not_a_panic() {
        let client = Client::new(&format!("http://127.0.0.1:{}", free_loopback_port()));
        assert!(client.get("/health").is_err());
    }

    #[test]
    fn test_nodes_have_distinct_keys_and_addresses() {
        let (a, b) = (TestNode::generate("a", 1), TestNode::generate("b", 2));
        assert_ne!(a.wg.public_key(), b.wg.public_key());
        assert_ne!(a.identity.public(), b.identity.public());
        assert_eq!(a.address, "100.64.0.1/32");
        assert_eq!(b.endpoint.as_deref(), Some("192.0.2.2:51820"));
    }
}
