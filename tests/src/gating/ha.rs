//! Several controller instances on one PostgreSQL database, for the high-availability tests.
//!
//! PostgreSQL runs in a namespace of its own on the mesh's bridge, at
//! [`DATABASE_HOST`]`:5432`, with password authentication over plain TCP (`sslmode=disable`,
//! explicit in every URL): the controllers reach it as they would reach a database server
//! over a network, so a test can cut one instance off from it with nftables in that
//! instance's namespace while it still reaches the nodes. The test reads the database over
//! the cluster's Unix socket (every namespace shares the file system).
//!
//! Each instance names itself in its connections (`application_name`), and a trigger the
//! harness adds to the `epochs` table records, in the publishing transaction, which
//! instance inserted each epoch and when ([`HaDatabase::publications`]): so a test can tell
//! who published what, and that a deposed instance published nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshtun_testbed::postgres::{TempCluster, SUPERUSER, TEST_PASSWORD};

use super::{ControllerProc, Mesh, Timing};
use crate::netns::Netns;

/// The timing of the HA tests: a 6 s epoch published 4 s ahead (longer than a failover:
/// the lease plus a third of it), 3 s long polls, 3 s grace, a benchmark every second.
pub const HA_TIMING: Timing = Timing {
    epoch: 6,
    lead: 4,
    long_poll: 3,
    grace: 3,
    interval: 1,
};

/// The HA tests' `[ha] lease`, seconds.
pub const LEASE: u64 = 2;

/// Two instances with [`LEASE`].
pub const TWO_INSTANCES: Backend = Backend::Postgres {
    instances: 2,
    lease: LEASE,
};

/// How long a takeover may take after the leader stops renewing: the lease, plus the
/// acquirer's poll (a third of it), plus scheduling slack.
pub fn takeover_bound(lease: u64) -> Duration {
    Duration::from_millis(lease * 1000 + lease * 1000 / 3 + 700)
}

/// PostgreSQL's host number in 192.0.2.0/24.
pub const DATABASE_HOST: u8 = 240;

/// PostgreSQL's TCP port.
pub const DATABASE_PORT: u16 = 5432;

/// How a [`super::Mesh`]'s controller is deployed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One instance on its own SQLite database (the default).
    Sqlite,
    /// `instances` instances (at most 9) on one PostgreSQL database, with `[ha] lease`
    /// seconds.
    Postgres {
        /// How many instances.
        instances: u8,
        /// Their `[ha] lease`, seconds.
        lease: u64,
    },
}

/// One publication of an epoch, as the harness's trigger recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The epoch id inserted.
    pub epoch: u64,
    /// The instance that inserted it (its connection's `application_name`).
    pub instance: String,
    /// When, by the database's clock (the machine's clock), Unix milliseconds.
    pub at_ms: u64,
}

/// One row of the `epochs` table, as far as the tests need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochRow {
    /// Epoch id.
    pub id: u64,
    /// The secret, hex (or its erased form).
    pub secret: String,
    /// Activation, Unix milliseconds.
    pub activation_ms: u64,
    /// End, Unix milliseconds.
    pub not_after_ms: u64,
}

/// The lease row: who leads, in which term, and whether it is unexpired now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The holder's instance name ("" before the first acquisition).
    pub holder: String,
    /// The term.
    pub term: u64,
    /// Whether the lease is unexpired by the database's clock.
    pub live: bool,
}

/// The PostgreSQL server of an HA mesh: its namespace, the cluster and the database.
pub struct HaDatabase {
    /// First: the server stops before its namespace is deleted.
    cluster: TempCluster,
    ns: Netns,
    database: String,
    password_file: PathBuf,
}

/// The trigger recording who inserted each epoch (see the module documentation).
const PUBLICATION_TRIGGER: &str = "
CREATE TABLE e2e_publications (
    epoch_id bigint NOT NULL,
    instance text NOT NULL,
    at_ms bigint NOT NULL
);
CREATE FUNCTION e2e_record_publication() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO e2e_publications VALUES (NEW.id, current_setting('application_name'),
        (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint);
    RETURN NEW;
END $$;
CREATE TRIGGER e2e_record_publication AFTER INSERT ON epochs
    FOR EACH ROW EXECUTE FUNCTION e2e_record_publication();
";

impl HaDatabase {
    /// Starts PostgreSQL in `ns` (already on the bridge at [`DATABASE_HOST`]) and creates a
    /// database; writes the password file (0600) into `dir`. Under `CI=true` a missing
    /// PostgreSQL fails the test; elsewhere too (a test asking for it cannot run without).
    pub fn start(ns: Netns, dir: &Path) -> Self {
        let listen = SocketAddr::from(([192, 0, 2, DATABASE_HOST], DATABASE_PORT));
        let cluster = TempCluster::start_in(ns.name(), listen)
            .unwrap_or_else(|e| panic!("PostgreSQL in namespace {} did not start: {e}", ns.name()));
        let database = cluster
            .create_database("ha")
            .unwrap_or_else(|e| panic!("cannot create the database: {e}"));
        let password_file = crate::config::write_secret(dir, "db.password", TEST_PASSWORD);
        Self {
            cluster,
            ns,
            database,
            password_file,
        }
    }

    /// The database's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.cluster.log_file()
    }

    /// The `database = …` and `database_password_file = …` lines of instance `name`'s
    /// configuration.
    pub fn config_lines(&self, name: &str) -> String {
        self.config_lines_for(&self.database, name)
    }

    /// Like [`HaDatabase::config_lines`], for another `database` of the cluster.
    pub fn config_lines_for(&self, database: &str, name: &str) -> String {
        format!(
            "database = \"{}\"\ndatabase_password_file = \"{}\"\n",
            self.url(database, name),
            self.password_file.display()
        )
    }

    /// The URL of `database` over TCP, as instance `name` connects to it (the password is in
    /// [`HaDatabase::password_file`]).
    pub fn url(&self, database: &str, name: &str) -> String {
        format!(
            "postgres://{SUPERUSER}@192.0.2.{DATABASE_HOST}:{DATABASE_PORT}/{database}\
             ?sslmode=disable&application_name={name}"
        )
    }

    /// The database made by [`HaDatabase::start`].
    pub fn name(&self) -> &str {
        &self.database
    }

    /// The file holding the password (mode 0600).
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// Creates another, empty database in the cluster and returns its name.
    pub fn create_database(&self, prefix: &str) -> String {
        self.cluster
            .create_database(prefix)
            .unwrap_or_else(|e| panic!("cannot create a database {prefix}_…: {e}"))
    }

    /// Runs `sql` in the database (psql over the Unix socket); fails the test on an error.
    pub fn sql(&self, sql: &str) -> String {
        self.sql_in(&self.database, sql)
    }

    /// Runs `sql` in `database` of the cluster; fails the test on an error.
    pub fn sql_in(&self, database: &str, sql: &str) -> String {
        self.cluster
            .psql(database, sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} in {database}: {e}"))
    }

    /// Adds the trigger that records each epoch's publisher (after `init` made the schema).
    pub fn record_publications(&self) {
        self.sql(PUBLICATION_TRIGGER);
    }

    /// Every recorded publication, in the order of insertion time.
    pub fn publications(&self) -> Vec<Publication> {
        rows(
            &self.sql(
                "SELECT epoch_id, instance, at_ms FROM e2e_publications ORDER BY at_ms, epoch_id",
            ),
        )
        .map(|f| Publication {
            epoch: num(&f, 0),
            instance: f[1].to_owned(),
            at_ms: num(&f, 2),
        })
        .collect()
    }

    /// Every stored epoch, by id.
    pub fn epochs(&self) -> Vec<EpochRow> {
        rows(&self.sql("SELECT id, secret, activation_ms, not_after_ms FROM epochs ORDER BY id"))
            .map(|f| EpochRow {
                id: num(&f, 0),
                secret: f[1].to_owned(),
                activation_ms: num(&f, 2),
                not_after_ms: num(&f, 3),
            })
            .collect()
    }

    /// The lease row.
    pub fn lease(&self) -> Lease {
        let out = self.sql(
            "SELECT holder, term, expires_at > clock_timestamp() FROM leader_lease WHERE id = 1",
        );
        let f: Vec<&str> = out.split('|').collect();
        assert_eq!(f.len(), 3, "unexpected lease row {out:?}");
        Lease {
            holder: f[0].to_owned(),
            term: num(&f, 1),
            live: f[2] == "t",
        }
    }

    /// The ids of the nodes with at least one stored benchmark.
    pub fn benchmarked_nodes(&self) -> Vec<String> {
        self.sql("SELECT DISTINCT node_id FROM benchmarks ORDER BY node_id")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Mesh {
    /// Starts every instance, instance 0 first, and waits until it leads before starting
    /// the others: so instance 0 leads, and the nodes, which use their first URL, use the
    /// leader.
    pub fn start_cluster(&self) -> Vec<ControllerProc<'_>> {
        let first = self.start_instance(0);
        let leader = self.wait_leader(takeover_bound(LEASE) * 3);
        assert_eq!(leader, 0, "instance 0, alone, did not become the leader");
        let mut all = vec![first];
        all.extend((1..self.instances().len()).map(|i| self.start_instance(i)));
        all
    }

    /// Waits until an instance holds an unexpired lease, and returns its index; fails the
    /// test if none does within `timeout`.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let mut last = None;
        let found = crate::wait_until(timeout, || {
            let lease = self.database().lease();
            let live = lease.live && self.instances().iter().any(|i| i.name == lease.holder);
            last = Some(lease);
            live
        });
        let lease = last.expect("wait_until runs its condition at least once");
        assert!(
            found,
            "no instance held a live lease within {timeout:?}; last lease row: {lease:?}"
        );
        self.instance_index(&lease.holder)
    }

    /// Waits until instance `name` holds an unexpired lease; the Unix ms time it was first
    /// seen to, or `None` after `timeout`.
    pub fn wait_lease_holder(&self, name: &str, timeout: Duration) -> Option<u64> {
        super::observe::first_time(timeout, Duration::from_millis(20), || {
            let lease = self.database().lease();
            lease.live && lease.holder == name
        })
    }

    /// When the next epoch is due to be published, Unix milliseconds: `lead` before the end
    /// of the epoch that ends last.
    pub fn next_publication_due(&self) -> u64 {
        let newest = self
            .database()
            .epochs()
            .into_iter()
            .map(|e| e.not_after_ms)
            .max()
            .expect("the database holds no epoch");
        newest.saturating_sub(self.timing().lead * 1000)
    }
}

/// psql's unaligned rows, split at `|`.
fn rows(out: &str) -> impl Iterator<Item = Vec<&str>> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').collect())
}

fn num(fields: &[&str], i: usize) -> u64 {
    fields
        .get(i)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("field {i} of {fields:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_split_psql_output() {
        let all: Vec<Vec<&str>> = rows("1|a|2\n3|b|4\n").collect();
        assert_eq!(all, vec![vec!["1", "a", "2"], vec!["3", "b", "4"]]);
        assert_eq!(num(&all[1], 2), 4);
    }
}
