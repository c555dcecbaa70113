//! `pgctl migrate`: bring a standalone PostgreSQL into the cluster.
//! - `from_backup`: its WAL-G or pgBackRest archive in S3 becomes the cluster's data (the
//!   restore machinery, reading another prefix with the read-only key);
//! - `from_primary`: the cluster starts as a Patroni standby cluster streaming from it, and
//!   `cutover` makes the source read-only, waits for the last byte and promotes the cluster;
//! - `from_volume`: its data volume of an older major, upgraded with pg_upgrade on its host.

pub mod after;
mod by_dump;
pub mod from_backup;
pub mod from_primary;
pub mod from_volume;
pub mod upgrade_image;

pub use from_backup::{from_backup, plan_from_backup, FromBackup};

use crate::backup::Access;
use crate::config::Config;
use crate::docker::Engine;
use crate::{error, member, s3};
use anyhow::Result;

/// Both migrations make a new cluster: it must not be running, and its own prefix (if it
/// archives) must be empty, since the migrated system starts a new archive there.
pub async fn check_new_cluster(cfg: &Config, engines: &[Engine]) -> Result<()> {
    if let Ok(leader) = member::leader(cfg, engines).await {
        return Err(error::refused(format!(
            "cluster `{}` is running (leader {}): a migration makes a new cluster from the source; remove this one first (`pgctl remove --i-am-aware`, its volumes are kept) or use another hosts.toml; nothing was changed",
            cfg.hosts.cluster.name, leader.host
        )));
    }
    if cfg.hosts.backup.is_none() {
        return Ok(());
    }
    let bucket = s3::Bucket::connect(cfg, Access::ReadOnly)?;
    if let Some(object) = bucket.list("").await?.first() {
        return Err(error::refused(format!(
            "{}: the cluster's own prefix is not empty ({} and more): a migrated cluster starts a new archive; set backup.s3_prefix in {} to a new prefix; nothing was changed",
            bucket.place,
            object.key,
            cfg.hosts_path.display()
        )));
    }
    Ok(())
}
