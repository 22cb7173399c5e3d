//! Tests of leadership against a real PostgreSQL ([`TempCluster::shared`], a database per
//! test). Under `CI=true` a missing PostgreSQL fails them.

mod fencing;
mod keeper;
mod lease;
mod nonces;
mod notify;

use std::sync::Arc;
use std::time::Duration;

use meshtun_proto::EpochId;
use postgres::{Client, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use super::{ensure_schema, fence, notify_epoch, Connect, FenceError, LeaseToken};
use crate::temp_cluster::{shared_or_skip, TempCluster};

/// A fresh database with this module's schema and a stand-in `test_epochs` table.
pub(super) struct Db {
    cluster: &'static TempCluster,
    name: String,
}

impl Db {
    /// A new database, or `None` (skipped, outside CI) without PostgreSQL.
    pub fn new(test: &str) -> Option<Self> {
        let cluster = shared_or_skip(test)?;
        let name = cluster.create_database("ha").expect("CREATE DATABASE");
        let db = Self { cluster, name };
        let mut client = db.client();
        ensure_schema(&mut client).expect("ensure_schema");
        // Running it again changes nothing.
        ensure_schema(&mut client).expect("ensure_schema again");
        client
            .batch_execute(
                "CREATE TABLE test_epochs (id bigint PRIMARY KEY, secret bytea NOT NULL, \
                 publisher text NOT NULL, term bigint NOT NULL, \
                 at timestamptz NOT NULL DEFAULT clock_timestamp())",
            )
            .expect("test_epochs");
        Some(db)
    }

    /// The database's URL.
    pub fn url(&self) -> String {
        self.cluster.url(&self.name)
    }

    /// The driver's configuration for this database.
    pub fn config(&self) -> postgres::Config {
        let mut config: postgres::Config = self.url().parse().expect("URL");
        config.connect_timeout(Duration::from_secs(5));
        config
    }

    /// A new connection.
    pub fn client(&self) -> Client {
        self.config().connect(NoTls).expect("connect")
    }

    /// A connection factory, as the keeper and the listener take, naming its sessions
    /// `application`.
    pub fn connect(&self, application: &str) -> Connect {
        let mut config = self.config();
        config.application_name(application);
        Arc::new(move || config.connect(NoTls))
    }

    /// A pool of up to 4 connections.
    pub fn pool(&self) -> r2d2::Pool<PostgresConnectionManager<NoTls>> {
        r2d2::Pool::builder()
            .max_size(4)
            .build(PostgresConnectionManager::new(self.config(), NoTls))
            .expect("pool")
    }

    /// Runs `sql` on a new connection.
    pub fn exec(&self, sql: &str) {
        self.client().batch_execute(sql).expect(sql);
    }

    /// One `bigint` from `sql`.
    pub fn int(&self, sql: &str) -> i64 {
        self.client().query_one(sql, &[]).expect(sql).get(0)
    }
}

/// Why a stand-in publication failed.
#[derive(Debug)]
pub(super) enum PublishError {
    Fence(FenceError),
    Sql(postgres::Error),
}

/// Publishes epoch `id` as the store's `insert_epoch` will: fence, insert, notify, commit,
/// in one transaction.
pub(super) fn publish(
    client: &mut Client,
    token: &LeaseToken,
    id: EpochId,
) -> Result<(), PublishError> {
    let mut tx = client.transaction().map_err(PublishError::Sql)?;
    fence(&mut tx, token).map_err(PublishError::Fence)?;
    let secret: Vec<u8> = format!("{}-{}", token.instance(), token.term()).into_bytes();
    tx.execute(
        "INSERT INTO test_epochs (id, secret, publisher, term) VALUES ($1, $2, $3, $4)",
        &[
            &(id as i64),
            &secret,
            &token.instance(),
            &(token.term() as i64),
        ],
    )
    .map_err(PublishError::Sql)?;
    notify_epoch(&mut tx, id).map_err(|e| match e {
        super::HaError::Sql { source, .. } => PublishError::Sql(source),
        other => panic!("{other}"),
    })?;
    tx.commit().map_err(PublishError::Sql)
}

/// Expires the lease now, behind the holder's back (as if it had been paused for longer).
pub(super) fn expire_lease(db: &Db) {
    db.exec("UPDATE leader_lease SET expires_at = clock_timestamp() - interval '1 ms'");
}
