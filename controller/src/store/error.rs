//! Why a store operation failed.

use std::path::PathBuf;

use meshtun_proto::{EpochId, PublicKey};

/// Why a store operation failed. Every message names the table or object concerned; none
/// ever holds an epoch secret or an invite token.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database's directory could not be created.
    #[error("cannot create the database directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The database file could not be created or its permissions not set.
    #[error("cannot prepare the database file {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// SQLite could not open or configure the database.
    #[error("cannot open the database {location}")]
    Open {
        /// The file, or `:memory:`.
        location: String,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database could not be put in write-ahead-log mode.
    #[error(
        "the database {location} stays in journal mode {mode}; meshtun-controller needs WAL \
         (is it on a network filesystem?)"
    )]
    JournalMode {
        /// The file.
        location: String,
        /// The mode SQLite kept.
        mode: String,
    },
    /// The database was written by a newer meshtun-controller.
    #[error(
        "the database {location} has schema version {found}, but this meshtun-controller \
         knows versions up to {supported}; use a newer meshtun-controller"
    )]
    SchemaTooNew {
        /// The file, or `:memory:`.
        location: String,
        /// The database's `user_version`.
        found: i64,
        /// The newest version this build knows.
        supported: usize,
    },
    /// A `database` URL of a kind the controller cannot keep its state in (`mysql://…`).
    #[error(
        "unknown database scheme {scheme}://: the database is sqlite://PATH (or a path) or \
         postgres://…"
    )]
    UnknownScheme {
        /// The URL's scheme (the rest, which may hold a password, is not repeated).
        scheme: String,
    },
    /// A schema migration failed (it was rolled back).
    #[error("cannot migrate the database {location} to schema version {version}")]
    Migrate {
        /// The file, or `:memory:`.
        location: String,
        /// The version being applied.
        version: usize,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("database error while {what}")]
    Sql {
        /// What was being done, naming the table and object.
        what: String,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// A stored value could not be read back.
    #[error("corrupt {what} in the database: {reason}")]
    Corrupt {
        /// The table, object and column.
        what: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A value could not be encoded as JSON.
    #[error("cannot encode {what} as JSON")]
    Json {
        /// What was being encoded.
        what: String,
        /// What serde_json said.
        source: serde_json::Error,
    },
    /// A number does not fit SQLite's signed 64-bit integers.
    #[error("{what} is {value}, larger than the largest storable value {max}", max = i64::MAX)]
    OutOfRange {
        /// Which number.
        what: String,
        /// Its value.
        value: u64,
    },
    /// A node id is not valid.
    #[error(
        "node id {0:?} is not valid (1 to 64 characters from a-z 0-9 - _ ., starting with a \
         letter or digit)"
    )]
    InvalidNodeId(String),
    /// A node with this id is already enrolled.
    #[error("node {0} already exists")]
    NodeExists(String),
    /// Another node already has this WireGuard key.
    #[error("node {node}: WireGuard key {key} is already used by node {owner}")]
    WgKeyInUse {
        /// The node being added.
        node: String,
        /// The key.
        key: PublicKey,
        /// The node that has it.
        owner: String,
    },
    /// No node with this id.
    #[error("node {0} does not exist")]
    NoSuchNode(String),
    /// An evaluator to add is not valid.
    #[error("evaluator {name:?}: {reason}")]
    InvalidEvaluator {
        /// Its name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An evaluator of this name exists, or existed.
    #[error(
        "evaluator {name} {}",
        if *removed { "was removed; the name of a removed evaluator is not given to another key" }
        else { "already exists" }
    )]
    EvaluatorExists {
        /// The name.
        name: String,
        /// Whether it was removed.
        removed: bool,
    },
    /// No evaluator of this name was ever added.
    #[error("evaluator {0} does not exist")]
    UnknownEvaluator(String),
    /// The evaluator was removed.
    #[error("evaluator {0} was removed")]
    EvaluatorRemoved(String),
    /// A statement scores a dimension its evaluator may not speak for.
    #[error("evaluator {evaluator} may not speak for dimension {dimension} (only for {allowed})")]
    DimensionNotAllowed {
        /// The evaluator.
        evaluator: String,
        /// The dimension.
        dimension: String,
        /// What it may speak for, comma-separated.
        allowed: String,
    },
    /// A statement is out of bounds or does not verify with its evaluator's key.
    #[error("statement of evaluator {evaluator}: {reason}")]
    InvalidStatement {
        /// The evaluator.
        evaluator: String,
        /// What is wrong.
        reason: String,
    },
    /// A node's statement given as an evaluator's: peer observations are stored apart
    /// ([`Store::insert_observation`](super::Store::insert_observation)).
    #[error("node {0}'s statement is a peer observation, not an evaluator's statement")]
    NodeStatement(String),
    /// A peer observation not issued by a node (an evaluator's statement).
    #[error("a peer observation is issued by the observing node, not by {0}")]
    ObservationIssuer(meshtun_proto::statement::Issuer),
    /// A peer observation out of bounds (see [`meshtun_proto::statement::Statement::validate`]).
    #[error("observation of node {node}: {reason}")]
    InvalidObservation {
        /// The observer.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// A peer observation by a node that is not enrolled.
    #[error("observation by node {0}: the observer is not enrolled")]
    UnknownObserver(String),
    /// A peer observation whose signature does not verify with the observer's enrolled
    /// identity key.
    #[error(
        "observation of node {node} about {subject}: the signature does not verify with the \
         node's enrolled identity key"
    )]
    ObservationSignature {
        /// The observer.
        node: String,
        /// The observed node.
        subject: String,
    },
    /// A node's statement about itself.
    #[error(
        "observation of node {0} about itself: a node's statement about itself is not a peer \
         observation"
    )]
    SelfObservation(String),
    /// A peer observation scoring a dimension that is not a peer dimension.
    #[error(
        "observation of node {node}: dimension {dimension} is not a peer dimension (only \
         {allowed})"
    )]
    NotPeerDimension {
        /// The observer.
        node: String,
        /// The dimension.
        dimension: String,
        /// The peer dimensions, comma-separated.
        allowed: String,
    },
    /// An enrollment would leave the node without an overlay address.
    #[error(
        "node {0}: the invite assigns no overlay address and the enrollment asks for none; \
         give one (`meshtun join --address CIDR`)"
    )]
    NoAddresses(String),
    /// Addresses that do not fit the overlay's address plan.
    #[error("node {node}")]
    Addresses {
        /// The node being enrolled.
        node: String,
        /// What is wrong.
        #[source]
        source: crate::network::AddressError,
    },
    /// An address another node (or an outstanding invite) already holds.
    #[error("node {node}: address {address} is already held by {holder}")]
    AddressInUse {
        /// The node being enrolled.
        node: String,
        /// The address.
        address: std::net::IpAddr,
        /// Who holds it: `node NAME` or `the invite for node NAME`.
        holder: String,
    },
    /// An endpoint that is not `host:port`.
    #[error("node {node}: {reason}")]
    Endpoint {
        /// The node being enrolled.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// The enrollment's proof of the invite token does not verify.
    #[error("the enrollment for node {0} does not prove the invite's token")]
    BadInviteProof(String),
    /// A WireGuard key of small order (such as all-zero).
    #[error("node {node}: WireGuard key {key} is of small order; generate a real key")]
    LowOrderKey {
        /// The node.
        node: String,
        /// The key.
        key: PublicKey,
    },
    /// An empty invite token.
    #[error("invite for node {0}: the token must not be empty")]
    EmptyToken(String),
    /// An invite with this token already exists.
    #[error("invite for node {0}: an invite with this token already exists")]
    DuplicateInvite(String),
    /// No invite has this token.
    #[error("invite token not recognised (it was never issued, or was mistyped)")]
    UnknownInvite,
    /// The invite was redeemed before.
    #[error("the invite for node {node} was already used at {used_ms} (invites are one-time)")]
    InviteUsed {
        /// The node the invite was for.
        node: String,
        /// When it was used, Unix milliseconds.
        used_ms: u64,
    },
    /// The invite expired.
    #[error("the invite for node {node} expired at {expires_ms} (now {now_ms}); issue a new one")]
    InviteExpired {
        /// The node the invite was for.
        node: String,
        /// When it expired, Unix milliseconds.
        expires_ms: u64,
        /// The time of the attempt, Unix milliseconds.
        now_ms: u64,
    },
    /// A benchmark's seq is not above the node's newest stored one.
    #[error("benchmark seq {seq} for {node} is not newer than {latest} (replay)")]
    Replay {
        /// The node.
        node: String,
        /// The refused seq.
        seq: u64,
        /// The node's newest stored seq.
        latest: u64,
    },
    /// The request was signed by another node than the benchmark's.
    #[error("benchmark seq {seq} for {node}: the request was signed as node {signer}")]
    SignerMismatch {
        /// The benchmark's node.
        node: String,
        /// The benchmark's seq.
        seq: u64,
        /// The node named in the signature.
        signer: String,
    },
    /// The request signature does not verify with the node's enrolled identity key.
    #[error(
        "benchmark seq {seq} for {node}: the request signature over {method} {path} does not \
         verify with the node's enrolled identity key"
    )]
    BadSignature {
        /// The node.
        node: String,
        /// The benchmark's seq.
        seq: u64,
        /// The signed method.
        method: &'static str,
        /// The signed path.
        path: String,
    },
    /// The raw signed body does not hold the benchmark being stored.
    #[error("benchmark seq {seq} for {node}: the signed body does not match the record: {reason}")]
    BodyMismatch {
        /// The node.
        node: String,
        /// The record's seq.
        seq: u64,
        /// What differs.
        reason: String,
    },
    /// An epoch id is not above the newest stored epoch.
    #[error("epoch {id} is not newer than the latest stored epoch {latest}")]
    EpochNotNewer {
        /// The refused id.
        id: EpochId,
        /// The newest stored id.
        latest: EpochId,
    },
    /// This instance may not publish: it is not the leader, or no longer (its lease was
    /// taken or expired). Nothing was written.
    #[error("this controller instance may not publish epochs")]
    Fenced(#[source] crate::ha::FenceError),
    /// This instance follows another, which publishes the epochs.
    #[error("this controller instance is a follower: the leader publishes epochs")]
    NotLeader,
    /// Announcing a new epoch to the other instances failed; nothing was written.
    #[error("cannot announce the epoch to the other instances")]
    Announce(#[source] Box<crate::ha::HaError>),
    /// The epoch is no longer live, and its secret was erased.
    #[error(
        "epoch {0} is past: its secret was erased once {live} newer epochs existed",
        live = super::LIVE_EPOCHS
    )]
    SecretErased(EpochId),
    /// The PostgreSQL backend failed.
    #[error(transparent)]
    Postgres(Box<PgError>),
    /// The decisions and the inputs of an epoch do not correspond one to one.
    #[error("epoch {epoch}: {reason}")]
    Decisions {
        /// The epoch.
        epoch: EpochId,
        /// What is missing or repeated, naming the node.
        reason: String,
    },
}

/// Why the PostgreSQL backend failed (a part of [`StoreError`] of its own, so that the
/// SQLite variants above stay as they are).
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The `database` setting cannot be used as it is.
    #[error("database {location}: {reason}")]
    Config {
        /// The URL, without any password.
        location: String,
        /// What is wrong.
        reason: String,
    },
    /// The password file cannot be used.
    #[error("database password file {path}: {reason}")]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No connection could be made (or taken from the pool in time).
    #[error("cannot connect to the database {location}: {reason}")]
    Connect {
        /// Host and database, without any password.
        location: String,
        /// What the server or the pool said.
        reason: String,
    },
    /// A schema migration failed (it was rolled back).
    #[error("cannot migrate the database {location} to schema version {version}")]
    Migrate {
        /// Host and database.
        location: String,
        /// The version being applied.
        version: usize,
        /// What PostgreSQL said.
        source: postgres::Error,
    },
    /// A query failed.
    #[error("database error while {what}")]
    Query {
        /// What was being done, naming the table and object.
        what: String,
        /// What PostgreSQL said.
        source: postgres::Error,
    },
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        StoreError::Postgres(Box::new(e))
    }
}

impl<T> SqlContext<T> for Result<T, postgres::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| {
            PgError::Query {
                what: what(),
                source,
            }
            .into()
        })
    }
}

/// Attaches what was being done to a SQLite error.
pub(crate) trait SqlContext<T> {
    /// Wraps the error as [`StoreError::Sql`] with `what`.
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql {
            what: what(),
            source,
        })
    }
}
