//! `controller_instances`: one row per instance, refreshed at every renewal attempt of its
//! lease keeper, and the cluster's status for `meshtun-controller status`: who leads, in
//! which term, and when each instance was last heard of. Every time is measured by the
//! database's clock.
//!
//! Rows of instances silent for [`FORGET_AFTER`] are deleted at each heartbeat, so instance
//! names that change at every start (hostname and pid) do not pile up.

use serde::Serialize;

use super::{Ctx as _, HaError};

/// Instances silent this long are forgotten.
pub const FORGET_AFTER: &str = "1 day";

/// Most instances listed in a status report.
pub const MAX_LISTED: i64 = 1000;

/// Who leads and each instance's last contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// The instance holding an unexpired lease, if any.
    pub leader: Option<String>,
    /// The newest term granted (the fencing token).
    pub term: u64,
    /// How long the lease runs on, by the database's clock (0: expired).
    pub lease_left_ms: u64,
    /// Every instance heard of in the last [`FORGET_AFTER`], by id.
    pub instances: Vec<InstanceStatus>,
}

/// One instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceStatus {
    /// Its name (`[ha] instance`).
    pub id: String,
    /// The URL it serves nodes on.
    pub url: String,
    /// True if it holds the lease now.
    pub leader: bool,
    /// Milliseconds since its last heartbeat.
    pub last_contact_ms: u64,
    /// Milliseconds since it started.
    pub up_ms: u64,
}

/// Records that `instance`, serving at `url`, is alive (and whether it leads). `first`: the
/// instance has just started (its start time is reset).
pub fn heartbeat(
    client: &mut postgres::Client,
    instance: &str,
    url: &str,
    leader: bool,
    first: bool,
) -> Result<(), HaError> {
    let what = format!("recording the heartbeat of instance {instance}");
    let mut tx = client.transaction().ctx(&what)?;
    tx.execute(
        "INSERT INTO controller_instances (id, url, started_at, last_seen, leader) \
         VALUES ($1, $2, clock_timestamp(), clock_timestamp(), $3) \
         ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, last_seen = EXCLUDED.last_seen, \
             leader = EXCLUDED.leader, \
             started_at = CASE WHEN $4 THEN EXCLUDED.started_at \
                          ELSE controller_instances.started_at END",
        &[&instance, &url, &leader, &first],
    )
    .ctx(&what)?;
    if leader {
        tx.execute(
            "UPDATE controller_instances SET leader = false WHERE id <> $1 AND leader",
            &[&instance],
        )
        .ctx(&what)?;
    }
    tx.execute(
        &format!(
            "DELETE FROM controller_instances \
             WHERE last_seen < clock_timestamp() - interval '{FORGET_AFTER}'"
        ),
        &[],
    )
    .ctx(&what)?;
    tx.commit().ctx(&what)
}

/// The cluster's status, read from the lease row and the instances table.
pub fn cluster_status(client: &mut postgres::Client) -> Result<ClusterStatus, HaError> {
    let what = "reading the cluster's status";
    let lease = client
        .query_one(
            "SELECT holder, term, GREATEST(0, CEIL(EXTRACT(EPOCH FROM \
                 expires_at - clock_timestamp()) * 1000))::bigint \
             FROM leader_lease WHERE id = 1",
            &[],
        )
        .ctx(what)?;
    let holder: String = lease.try_get(0).ctx(what)?;
    let term = non_negative(lease.try_get(1).ctx(what)?);
    let lease_left_ms = non_negative(lease.try_get(2).ctx(what)?);
    let leader = (lease_left_ms > 0).then_some(holder);
    let rows = client
        .query(
            "SELECT id, url, \
                 GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - last_seen) * 1000)::bigint, \
                 GREATEST(0, EXTRACT(EPOCH FROM clock_timestamp() - started_at) * 1000)::bigint \
             FROM controller_instances ORDER BY id LIMIT $1",
            &[&MAX_LISTED],
        )
        .ctx(what)?;
    let instances = rows
        .iter()
        .map(|r| {
            let id: String = r.try_get(0)?;
            Ok(InstanceStatus {
                leader: leader.as_deref() == Some(id.as_str()),
                id,
                url: r.try_get(1)?,
                last_contact_ms: non_negative(r.try_get(2)?),
                up_ms: non_negative(r.try_get(3)?),
            })
        })
        .collect::<Result<Vec<_>, postgres::Error>>()
        .ctx(what)?;
    Ok(ClusterStatus {
        leader,
        term,
        lease_left_ms,
        instances,
    })
}

fn non_negative(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
