//! Where a scenario's state lives: a fresh SQLite file, or a fresh database on PostgreSQL
//! (a throwaway cluster the bench starts itself, or a server the operator names).
//!
//! Both keep their durability promises while measured: SQLite in WAL mode with
//! `synchronous=FULL` (the store sets it), PostgreSQL with `synchronous_commit=on` (the store
//! sets it per connection) and `fsync=on` (the bench starts its own cluster so, and refuses
//! to measure one that does not have it).

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{bail, ensure, Context, Result};
use clap::ValueEnum;
use meshtun_controller::store::pg::PgTarget;
use meshtun_controller::store::Store;
use meshtun_testbed::postgres::{Options, TempCluster};

use crate::setup::TempDir;

/// The store backends the bench can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// An SQLite file in the system's temporary directory.
    Sqlite,
    /// PostgreSQL: a throwaway cluster, or `--database-url`.
    Postgres,
}

/// A backend ready to hand out fresh stores.
pub enum Backend {
    /// A new SQLite file per scenario.
    Sqlite,
    /// A new database per scenario in the bench's own cluster.
    OwnCluster(TempCluster),
    /// The one database the operator named; it must be empty and holds one scenario.
    Server {
        /// The database.
        target: PgTarget,
        /// Scenarios started on it (at most one).
        used: AtomicUsize,
    },
}

/// Keeps a scenario's SQLite file until the scenario ends (a PostgreSQL database stays in
/// its cluster).
pub struct Keep {
    /// The directory of the SQLite file, removed when dropped.
    _dir: Option<TempDir>,
}

impl Backend {
    /// Prepares `kind`; for PostgreSQL, connects to `url` (with its password file) or starts a
    /// throwaway cluster with `fsync` on.
    pub fn start(kind: Kind, url: Option<&str>, password_file: Option<PathBuf>) -> Result<Self> {
        match (kind, url) {
            (Kind::Sqlite, None) => Ok(Self::Sqlite),
            (Kind::Sqlite, Some(_)) => {
                bail!("--database-url names a PostgreSQL server, not SQLite")
            }
            (Kind::Postgres, Some(url)) => Ok(Self::Server {
                target: PgTarget {
                    url: url.to_owned(),
                    password_file,
                },
                used: AtomicUsize::new(0),
            }),
            (Kind::Postgres, None) => {
                eprintln!("== starting a throwaway PostgreSQL cluster (fsync on)");
                let cluster = TempCluster::start_with(Options {
                    durable: true,
                    ..Options::default()
                })
                .context("cannot start a PostgreSQL cluster (or pass --database-url)")?;
                let backend = Self::OwnCluster(cluster);
                backend.check_durable()?;
                Ok(backend)
            }
        }
    }

    /// The backend's name in the tables.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::OwnCluster(_) | Self::Server { .. } => "PostgreSQL",
        }
    }

    /// Where the data lives and how durable its commits are.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite => format!(
                "a new file per scenario in {}, WAL, synchronous=FULL",
                std::env::temp_dir().display()
            ),
            Self::OwnCluster(cluster) => format!(
                "{}, a throwaway cluster in {} (a new database per scenario), {}",
                cluster
                    .psql("postgres", "SHOW server_version")
                    .unwrap_or_else(|e| format!("version unknown ({e})")),
                cluster.socket_dir().display(),
                cluster
                    .psql("postgres", SETTINGS)
                    .unwrap_or_else(|e| format!("settings unknown ({e})")),
            ),
            Self::Server { .. } => "the server of --database-url, as its operator configured it \
                 (synchronous_commit=on per connection)"
                .to_owned(),
        }
    }

    /// Refuses a cluster that does not write its commits to disk: figures without `fsync`
    /// would promise a rate the controller cannot keep durably.
    pub(crate) fn check_durable(&self) -> Result<()> {
        if let Self::OwnCluster(cluster) = self {
            let fsync = cluster
                .psql("postgres", "SHOW fsync")
                .context("cannot read the cluster's fsync setting")?;
            ensure!(fsync == "on", "the bench's cluster runs with fsync={fsync}");
        }
        Ok(())
    }

    /// A fresh, empty store for the scenario `label`, and what keeps it until the scenario
    /// ends.
    pub fn fresh(&self, label: &str) -> Result<(Store, Keep)> {
        match self {
            Self::Sqlite => {
                let dir = TempDir::new(label)?;
                let store = Store::open(dir.path().join("controller.db"))?;
                Ok((store, Keep { _dir: Some(dir) }))
            }
            Self::OwnCluster(cluster) => {
                let name = cluster.create_database(&format!("bench_{label}"))?;
                let target = PgTarget {
                    url: cluster.url(&name),
                    password_file: None,
                };
                Ok((Store::connect_postgres(&target)?, Keep { _dir: None }))
            }
            Self::Server { target, used } => {
                ensure!(
                    used.fetch_add(1, Ordering::Relaxed) == 0,
                    "--database-url holds one scenario: choose it with --only"
                );
                let store = Store::connect_postgres(target)?;
                ensure!(
                    store.nodes()?.is_empty() && store.epoch_ids()?.is_empty(),
                    "the database of --database-url already holds nodes or epochs: \
                     the bench needs an empty one"
                );
                Ok((store, Keep { _dir: None }))
            }
        }
    }
}

/// The settings that decide whether a commit is on disk when acknowledged.
const SETTINGS: &str = "SELECT 'fsync=' || current_setting('fsync') \
     || ', synchronous_commit=' || current_setting('synchronous_commit') \
     || ' (the store sets on), full_page_writes=' || current_setting('full_page_writes') \
     || ', wal_sync_method=' || current_setting('wal_sync_method')";
