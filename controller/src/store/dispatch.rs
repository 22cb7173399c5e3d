//! [`Store`]: one interface over the two backends, SQLite (embedded, the default) and
//! PostgreSQL. Callers see the same methods with the same semantics on both: every mutating
//! method is one transaction, committed (durably) before it returns, that appends its audit
//! entries to the same hash chain.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use meshtun_proto::auth::RequestSignature;
use meshtun_proto::enroll::Enrollment;
use meshtun_proto::statement::SignedStatement;
use meshtun_proto::{EpochId, IdentityPublic, KeySet};

use crate::keys::ControllerKeys;

use super::audit::{AuditEntry, AuditError, AuditReport};
use super::audit_log::AuditRules as _;
use super::benchmarks::BenchmarkRules as _;
use super::candidates::{CandidateRules as _, Candidates};
use super::epochs::EpochRules as _;
use super::evaluators::{EvaluatorListing, EvaluatorRecord, EvaluatorRules as _};
use super::invites::InviteRules as _;
use super::nodes::NodeRules as _;
use super::observations::{ObservationRules as _, ObservationScore};
use super::pg::{PgStore, PgTarget};
use super::retention::RetentionRules as _;
use super::statements::{StatementRules as _, StatementScore};
use super::{PruneReport, Retention, SqliteStore, StoreError, TableRows};
use crate::clock::Clock;
use crate::ha::LeaseToken;
use crate::model::{
    BenchmarkRecord, Decision, EpochRecord, History, NodeInput, NodeRecord, Pin, Policy,
};
use crate::network::Network;

/// Where the controller's state lives: the configuration's `database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file (`sqlite:///path`, or a bare path).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://…`), with the password file if any.
    Postgres(PgTarget),
}

impl Database {
    /// Parses the `database` setting: `postgres://…` or `postgresql://…`, `sqlite://PATH`, or
    /// a bare path. A relative path is taken relative to `base`. Any other `SCHEME://…` is
    /// refused rather than taken for a file name.
    pub fn parse(
        text: &str,
        base: &Path,
        password_file: Option<PathBuf>,
    ) -> Result<Self, StoreError> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(PgTarget {
                url: text.to_owned(),
                password_file,
            }));
        }
        if let Some(path) = text.strip_prefix("sqlite://") {
            return Ok(Self::Sqlite(base.join(path)));
        }
        if let Some(scheme) = url_scheme(text) {
            return Err(StoreError::UnknownScheme {
                scheme: scheme.to_owned(),
            });
        }
        Ok(Self::Sqlite(base.join(text)))
    }

    /// The SQLite file, if that is the backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Self::Sqlite(path) => Some(path),
            Self::Postgres(_) => None,
        }
    }
}

/// The scheme of `text` if it starts as a URL does: `SCHEME://`, the scheme a letter followed
/// by letters, digits, `+`, `-` or `.` (RFC 3986).
fn url_scheme(text: &str) -> Option<&str> {
    let (scheme, _) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first.is_ascii_alphabetic() && rest_ok).then_some(scheme)
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Self::Postgres(t) => f.write_str(&super::pg::connect::redact(&t.url)),
        }
    }
}

/// The controller's durable state, on either backend. See the module documentation of `store`.
pub struct Store {
    inner: Inner,
}

/// What the instances on one PostgreSQL database share ([`Store::shared_parts`]).
pub struct SharedParts {
    /// Dedicated connections for the lease keeper and the epoch listener.
    pub connect: crate::ha::Connect,
    /// The shared replay nonces.
    pub nonces: std::sync::Arc<dyn crate::auth::NonceStore>,
}

enum Inner {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Sqlite(s) => s.fmt(f),
            Inner::Postgres(p) => p.fmt(f),
        }
    }
}

/// Calls the same method on whichever backend this is.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match &$self.inner {
            Inner::Sqlite(s) => s.$method($($arg),*),
            Inner::Postgres(p) => p.$method($($arg),*),
        }
    };
}

impl Store {
    /// Opens `database`: see [`Store::open`] for SQLite and [`Store::connect_postgres`].
    pub fn connect(database: &Database) -> Result<Self, StoreError> {
        match database {
            Database::Sqlite(path) => Self::open(path),
            Database::Postgres(target) => Self::connect_postgres(target),
        }
    }

    /// Opens the SQLite database at `path`, creating it (mode 0600) and its directory (mode
    /// 0700) if missing, and migrating its schema to the newest version. An existing file
    /// readable by others is narrowed to 0600. A database written by a newer controller is
    /// refused.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Ok(Self::from(SqliteStore::open(path)?))
    }

    /// A private in-memory SQLite database, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Ok(Self::from(SqliteStore::open_in_memory()?))
    }

    /// For PostgreSQL, what several instances share: a connector for the lease keeper and
    /// the epoch listener, and the replay nonces for a window of `window_ms`. `None` for
    /// SQLite (one instance).
    pub fn shared_parts(&self, window_ms: u64) -> Option<SharedParts> {
        match &self.inner {
            Inner::Sqlite(_) => None,
            Inner::Postgres(p) => Some(SharedParts {
                connect: p.connector(),
                nonces: std::sync::Arc::new(p.nonces(window_ms)),
            }),
        }
    }

    /// Connects to a PostgreSQL database and migrates its schema to the newest version,
    /// refusing one newer than this build. See [`super::pg`].
    pub fn connect_postgres(target: &PgTarget) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Inner::Postgres(PgStore::connect(target)?),
        })
    }

    /// Where the database lives: a path or `:memory:`, or `postgres://user@host:port/db`.
    pub fn location(&self) -> &str {
        dispatch!(self.location())
    }

    /// Whether this is the PostgreSQL backend.
    pub fn is_postgres(&self) -> bool {
        matches!(self.inner, Inner::Postgres(_))
    }

    /// The same store, stamping audit entries and invites with `clock` rather than the
    /// system's wall clock (for simulations and tests).
    pub fn with_clock(self, clock: Clock) -> Self {
        let inner = match self.inner {
            Inner::Sqlite(s) => Inner::Sqlite(s.with_clock(clock)),
            Inner::Postgres(p) => Inner::Postgres(p.with_clock(clock)),
        };
        Self { inner }
    }

    /// The database's size in bytes.
    pub fn size_bytes(&self) -> Result<u64, StoreError> {
        dispatch!(self.size_bytes())
    }

    /// The SQLite backend, for its own tests.
    #[cfg(test)]
    pub(crate) fn sqlite(&self) -> Option<&SqliteStore> {
        match &self.inner {
            Inner::Sqlite(s) => Some(s),
            Inner::Postgres(_) => None,
        }
    }

    /// The PostgreSQL backend, for its own tests.
    #[cfg(test)]
    pub(crate) fn postgres(&self) -> Option<&PgStore> {
        match &self.inner {
            Inner::Sqlite(_) => None,
            Inner::Postgres(p) => Some(p),
        }
    }

    /// Enrolls a node directly (without an invite). Refuses an invalid id, an id already
    /// enrolled and a WireGuard key another node has.
    pub fn add_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        dispatch!(self.add_node(node))
    }

    /// Removes a node with its stored benchmarks, the statements about it and the peer
    /// observations by or about it (the audit log keeps them). `false` if no such node was
    /// enrolled.
    pub fn remove_node(&self, id: &str) -> Result<bool, StoreError> {
        dispatch!(self.remove_node(id))
    }

    /// The node `id`, if enrolled.
    pub fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        dispatch!(self.node(id))
    }

    /// Every enrolled node, sorted by id.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        dispatch!(self.nodes())
    }

    /// Records node `id`'s candidate endpoints (its latest report replaces the last);
    /// [`StoreError::NoSuchNode`] if it is not enrolled.
    pub fn set_candidates(&self, id: &str, candidates: &Candidates) -> Result<(), StoreError> {
        dispatch!(self.set_candidates(id, candidates))
    }

    /// Every node's latest candidate report, by node id.
    pub fn candidates(&self) -> Result<HashMap<String, Candidates>, StoreError> {
        dispatch!(self.candidates())
    }

    /// Sets (`Some`) or clears (`None`) a node's pin.
    pub fn set_pin(&self, id: &str, pin: Option<Pin>) -> Result<(), StoreError> {
        dispatch!(self.set_pin(id, pin))
    }

    /// Issues an invite for `node_id`, valid until `expires_ms`. `addresses` and `endpoint`,
    /// if given, are what the node gets whatever it asks for. Refuses an empty or repeated
    /// token and an id already enrolled.
    pub fn create_invite(
        &self,
        node_id: &str,
        token: &str,
        expires_ms: u64,
        addresses: Option<&[IpNet]>,
        endpoint: Option<&str>,
    ) -> Result<(), StoreError> {
        dispatch!(self.create_invite(node_id, token, expires_ms, addresses, endpoint))
    }

    /// Enrolls the node an invite was issued for, in one transaction. The invite is the
    /// one for the claim's node id whose token id matches, and the claim must carry the proof
    /// of its token; it must be unused and unexpired at `now_ms`, and the node id free. (The
    /// proofs of the keys are the caller's: [`Enrollment::verify_possession`].) Marks the
    /// invite used and stores the node with the admin's addresses and endpoint where the
    /// invite has them, the request's otherwise, and when neither names an address, the next
    /// free address of each `network` prefix. The addresses must fit `network` and be held
    /// by no other node nor reserved by another outstanding invite; the endpoint must be
    /// `host:port`. Nothing changes if any check fails.
    ///
    /// A used invite redeemed again by the keys it enrolled (a retry, or a replay of the
    /// same request) returns the node it made, so a replay gains nothing and a node whose
    /// answer was lost can ask again.
    pub fn redeem_invite(
        &self,
        enrollment: &Enrollment,
        network: &Network,
        now_ms: u64,
    ) -> Result<NodeRecord, StoreError> {
        dispatch!(self.redeem_invite(enrollment, network, now_ms))
    }

    /// Stores an accepted benchmark with the signed request it came in (`raw_body`, `sig`,
    /// and the `path` it was signed over with [`BENCHMARK_METHOD`](super::BENCHMARK_METHOD), for the controller whose
    /// key is `controller`), and appends a
    /// `benchmark` audit entry, in one transaction committed before returning.
    ///
    /// Refuses, storing nothing: an unknown node; a signature by another node or one that
    /// does not verify with the node's enrolled identity key; a body that does not hold the
    /// record; a seq not greater than the node's newest stored seq ([`StoreError::Replay`]).
    pub fn insert_benchmark(
        &self,
        controller: &IdentityPublic,
        record: &BenchmarkRecord,
        raw_body: &[u8],
        sig: &RequestSignature,
        path: &str,
    ) -> Result<(), StoreError> {
        dispatch!(self.insert_benchmark(controller, record, raw_body, sig, path))
    }

    /// Registers an evaluator (its dimensions sorted, repeats dropped) and appends an
    /// `evaluator_add` audit entry. Refuses an invalid name, group or dimension list, and a
    /// name that exists or existed: a removed evaluator's name is never given to another key.
    pub fn add_evaluator(&self, evaluator: &EvaluatorRecord) -> Result<(), StoreError> {
        dispatch!(self.add_evaluator(evaluator))
    }

    /// Removes an evaluator: its row stays, marked removed, with its statements; later
    /// statements are refused. Appends an `evaluator_remove` audit entry. `false` if no
    /// active evaluator has that name.
    pub fn remove_evaluator(&self, name: &str) -> Result<bool, StoreError> {
        dispatch!(self.remove_evaluator(name))
    }

    /// The evaluator `name`, removed or not.
    pub fn evaluator(&self, name: &str) -> Result<Option<EvaluatorRecord>, StoreError> {
        dispatch!(self.evaluator(name))
    }

    /// Every evaluator, removed ones too, by name, with the time its newest stored
    /// statement was received.
    pub fn evaluators(&self) -> Result<Vec<EvaluatorListing>, StoreError> {
        dispatch!(self.evaluators())
    }

    /// Stores an evaluator's signed statement, received at `received_ms`, and appends a
    /// `statement` audit entry, in one transaction committed before returning; returns the
    /// statement's id (ids are never reused).
    ///
    /// Refuses, storing nothing: a statement issued by a node
    /// ([`StoreError::NodeStatement`]); an unknown ([`StoreError::UnknownEvaluator`]) or
    /// removed ([`StoreError::EvaluatorRemoved`]) evaluator; a statement out of bounds or
    /// whose signature does not verify with the evaluator's registered key
    /// ([`StoreError::InvalidStatement`]); a dimension the evaluator may not speak for
    /// ([`StoreError::DimensionNotAllowed`]); a subject that is not enrolled
    /// ([`StoreError::NoSuchNode`]). Freshness and replay are the API's to check
    /// ([`crate::auth::authenticate`]).
    pub fn insert_statement(
        &self,
        signed: &SignedStatement,
        received_ms: u64,
    ) -> Result<u64, StoreError> {
        dispatch!(self.insert_statement(signed, received_ms))
    }

    /// What the policy engine reads: for every (evaluator, subject, dimension), the score
    /// of the newest statement (by `evaluated_at_ms`, then id) evaluated at or after
    /// `since_ms`, from evaluators that are not removed, about nodes still enrolled. Sorted
    /// by subject, dimension, evaluator.
    pub fn latest_statement_scores(
        &self,
        since_ms: u64,
    ) -> Result<Vec<StatementScore>, StoreError> {
        dispatch!(self.latest_statement_scores(since_ms))
    }

    /// Stores a node's signed observation of a peer, received at `received_ms`, and appends
    /// an `observation` audit entry, in one transaction committed before returning; returns
    /// the observation's id, from the same counter as statement ids (so an id names one
    /// statement or one observation, never both).
    ///
    /// Refuses, storing nothing: a statement not issued by a node
    /// ([`StoreError::ObservationIssuer`]); one out of bounds
    /// ([`StoreError::InvalidObservation`]); an observer that is not enrolled
    /// ([`StoreError::UnknownObserver`]); a signature that does not verify with the
    /// observer's enrolled identity key ([`StoreError::ObservationSignature`]); a node's
    /// statement about itself ([`StoreError::SelfObservation`]); a dimension outside
    /// [`PEER_DIMENSIONS`](meshtun_proto::observation::PEER_DIMENSIONS)
    /// ([`StoreError::NotPeerDimension`]); a subject that is not enrolled
    /// ([`StoreError::NoSuchNode`]). Freshness, replay and quotas are the API's to check.
    pub fn insert_observation(
        &self,
        signed: &SignedStatement,
        received_ms: u64,
    ) -> Result<u64, StoreError> {
        dispatch!(self.insert_observation(signed, received_ms))
    }

    /// What the policy engine reads of peer observations: for every (observer, subject,
    /// dimension), the score of the newest observation (by `evaluated_at_ms`, then id)
    /// evaluated at or after `since_ms`, by and about nodes still enrolled. Sorted by
    /// subject, dimension, observer.
    pub fn latest_observation_scores(
        &self,
        since_ms: u64,
    ) -> Result<Vec<ObservationScore>, StoreError> {
        dispatch!(self.latest_observation_scores(since_ms))
    }

    /// The newest stored benchmark of every enrolled node that has one.
    pub fn latest_benchmarks(&self) -> Result<HashMap<String, BenchmarkRecord>, StoreError> {
        dispatch!(self.latest_benchmarks())
    }

    /// Up to `limit` of a node's stored benchmarks, newest first.
    pub fn benchmarks(
        &self,
        node_id: &str,
        limit: usize,
    ) -> Result<Vec<BenchmarkRecord>, StoreError> {
        dispatch!(self.benchmarks(node_id, limit))
    }

    /// Stores a new epoch with its decisions and their audit entries; refuses an id not
    /// greater than the newest stored epoch's. See [`SqliteStore::insert_epoch`].
    pub fn insert_epoch(
        &self,
        epoch: &EpochRecord,
        decisions: &[Decision],
        inputs: &[NodeInput],
        policy: &Policy,
        decided_ms: u64,
    ) -> Result<(), StoreError> {
        self.insert_epoch_fenced(epoch, decisions, inputs, policy, decided_ms, None)
    }

    /// [`Store::insert_epoch`] by a leader holding `fence`: on PostgreSQL, the insert
    /// commits only if that lease still holds by the database's clock, in the same
    /// transaction ([`crate::ha::fence()`]), and every instance is notified on commit. A
    /// deposed leader's late publication fails with [`StoreError::Fenced`]. SQLite has one
    /// instance and no lease: `fence` is `None` there.
    pub fn insert_epoch_fenced(
        &self,
        epoch: &EpochRecord,
        decisions: &[Decision],
        inputs: &[NodeInput],
        policy: &Policy,
        decided_ms: u64,
        fence: Option<&LeaseToken>,
    ) -> Result<(), StoreError> {
        match &self.inner {
            Inner::Sqlite(s) => s.insert_epoch(epoch, decisions, inputs, policy, decided_ms),
            Inner::Postgres(p) => {
                p.insert_epoch(epoch, decisions, inputs, policy, decided_ms, fence)
            }
        }
    }

    /// The epoch `id`, if stored.
    pub fn epoch(&self, id: EpochId) -> Result<Option<EpochRecord>, StoreError> {
        dispatch!(self.epoch(id))
    }

    /// The `n` newest epochs, newest first.
    pub fn latest_epochs(&self, n: usize) -> Result<Vec<EpochRecord>, StoreError> {
        dispatch!(self.latest_epochs(n))
    }

    /// The ids of every stored epoch, newest first.
    pub fn epoch_ids(&self) -> Result<Vec<EpochId>, StoreError> {
        dispatch!(self.epoch_ids())
    }

    /// The decisions of epoch `epoch_id`, sorted by node id (empty for an unknown epoch).
    pub fn decisions(&self, epoch_id: EpochId) -> Result<Vec<Decision>, StoreError> {
        dispatch!(self.decisions(epoch_id))
    }

    /// Every node's hysteresis state after the newest epoch (empty before the first).
    pub fn last_history(&self) -> Result<HashMap<String, History>, StoreError> {
        dispatch!(self.last_history())
    }

    /// Up to `limit` audit entries from `from_seq` on, oldest first.
    pub fn audit_entries(
        &self,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        dispatch!(self.audit_entries(from_seq, limit))
    }

    /// Recomputes the whole chain and checks every benchmark request's, statement's and
    /// peer observation's signature (see [`ChainVerifier`](super::audit::ChainVerifier)),
    /// then every row of the `statements` table against the evaluators' keys in the chain
    /// and every row of the `observations` table against the observers' identity keys in
    /// the chain; reports the first broken link. A pruned chain starts from its
    /// newest checkpoint, whose signature must verify with one of `controller`, the
    /// controller's public keys (its own, then its `previous_keys`). Reads in short pages, so
    /// it can run while the controller serves.
    pub fn verify_audit(&self, controller: &KeySet) -> Result<AuditReport, AuditError> {
        dispatch!(self.verify_audit(controller))
    }

    /// How many rows each table holds.
    pub fn table_rows(&self) -> Result<TableRows, StoreError> {
        dispatch!(self.table_rows())
    }

    /// Deletes what `retention` no longer keeps, by the store's clock, signing the audit
    /// checkpoint with the controller's signing key (the previous checkpoint may be signed
    /// by any of its keys). Refuses to prune an audit chain that does not verify (the error
    /// names the broken entry); benchmarks and epochs are pruned first.
    pub fn prune(
        &self,
        retention: &Retention,
        keys: &ControllerKeys,
    ) -> Result<PruneReport, AuditError> {
        dispatch!(self.prune(retention, keys))
    }
}

impl From<SqliteStore> for Store {
    fn from(store: SqliteStore) -> Self {
        Self {
            inner: Inner::Sqlite(store),
        }
    }
}
