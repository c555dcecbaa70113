//! Standby clusters (hosts.toml `[standby]`): the leader follows a server outside the cluster
//! (a migration's source, or the primary cluster of another region, by streaming and/or from
//! its S3 archive) and the replicas cascade from it. `promote` makes it a writable cluster of
//! its own: shared by `pgctl promote` (disaster recovery) and `pgctl migrate cutover`.

use crate::cluster::status::{self, ClusterStatus};
use crate::cluster::up::{self, UpOptions};
use crate::config::Config;
use crate::docker::Engine;
use crate::{error, member, output};
use anyhow::{bail, Result};
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct Promoted {
    /// From the request to the leader accepting writes.
    pub seconds: f64,
    /// The timeline the promoted leader writes on.
    pub timeline: String,
    pub first_backup: Option<String>,
    pub status: ClusterStatus,
}

/// `pgctl promote`: pre-flight (a standby cluster, no longer streaming from its primary unless
/// `force`), then the promotion, the cluster's own repository and a first full backup.
pub async fn promote(cfg: &Config, engines: &[Engine], force: bool, timeout: Duration) -> Result<Promoted> {
    let before = standby_status(cfg, engines, "promote").await?;
    if let Some(lag) = &before.standby_lag {
        if lag.receiver.as_deref() == Some("streaming") && !force {
            return Err(error::refused(format!(
                "the standby leader still streams from {}: the primary is alive, and promoting now makes two writable clusters (split brain). \
                 Stop the primary first (or `pgctl migrate cutover` for a planned move), or pass --force; nothing was changed",
                lag.sender.as_deref().unwrap_or("its primary")
            )));
        }
    }
    let started = Instant::now();
    let seconds = (promote_leader(cfg, engines, timeout).await? - started).as_secs_f64();
    let status = up::wait_healthy(cfg, engines, &UpOptions::new(timeout)).await?;
    let first_backup = first_backup(cfg, engines).await?;
    output::step(format!(
        "cluster `{}` is writable: remove [standby] from {} (a later bootstrap from empty volumes would make it a standby again)",
        cfg.hosts.cluster.name,
        cfg.hosts_path.display()
    ));
    Ok(Promoted {
        seconds,
        timeline: status
            .members
            .iter()
            .find(|m| m.role == "leader")
            .and_then(|m| m.timeline)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "unknown".into()),
        first_backup,
        status,
    })
}

/// The cluster's status, refused (nothing changed) unless it is a standby cluster.
pub async fn standby_status(cfg: &Config, engines: &[Engine], what: &str) -> Result<ClusterStatus> {
    let status = status::fetch(cfg, engines).await?;
    if !status.standby {
        return Err(error::refused(format!(
            "cluster `{}` is not a standby cluster (leader: {}): nothing to {what}; nothing was changed",
            cfg.hosts.cluster.name,
            status.leader.as_deref().unwrap_or("none")
        )));
    }
    Ok(status)
}

/// Removes `standby_cluster` from Patroni's dynamic configuration, waits for the leader to
/// accept writes, sets the cluster's own roles (the data came from elsewhere) and prepares its
/// own backup repository. Returns when the leader first accepted writes.
pub async fn promote_leader(cfg: &Config, engines: &[Engine], timeout: Duration) -> Result<Instant> {
    let leader = member::leader(cfg, engines).await?;
    output::step(format!("promoting the standby cluster (leader {})", leader.host));
    let (code, body) = member::patroni_api(leader, "PATCH", "/config", &serde_json::json!({ "standby_cluster": null })).await?;
    if code != 200 {
        bail!("Patroni refused the promotion (HTTP {code}): {body}");
    }
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(l) = member::leader(cfg, engines).await {
            if member::psql(l, "SELECT pg_is_in_recovery()").await.unwrap_or_default().trim() == "f" {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the cluster did not leave recovery within {} s after the promotion",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let writable = Instant::now();
    let leader = member::leader(cfg, engines).await?;
    adopt_cluster_roles(cfg, leader).await?;
    output::step(format!(
        "{}: the cluster's superuser, replication and rewind roles match secrets.toml",
        leader.host
    ));
    crate::backup::init_repository(cfg, leader).await?;
    Ok(writable)
}

/// The first full backup into the cluster's own prefix, when it has one.
pub async fn first_backup(cfg: &Config, engines: &[Engine]) -> Result<Option<String>> {
    if cfg.hosts.backup.is_none() {
        return Ok(None);
    }
    let taken = crate::backup::backup_now(cfg, engines, true).await.map_err(|e| {
        anyhow::anyhow!("the cluster takes writes, but its first full backup failed: {e:#}\n  Take it with: pgctl backup now")
    })?;
    Ok(Some(format!("on {} in {}", taken.host, output::seconds(taken.seconds))))
}

/// The data came from elsewhere with its roles: the cluster's three roles are set to match
/// secrets.toml on the promoted leader (the SQL goes as a 0600 file, never on a command line).
pub async fn adopt_cluster_roles(cfg: &Config, leader: &Engine) -> Result<()> {
    let sql = crate::roles::cluster_roles_sql(cfg)?;
    crate::member::psql_file(cfg, leader, "postgres", &sql, "setting the cluster's roles").await?;
    Ok(())
}
