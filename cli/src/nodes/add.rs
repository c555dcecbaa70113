//! `pgctl node add HOST`: a host already added to hosts.toml joins the running cluster as a
//! replica. Its data comes from the leader (pg_basebackup) or from a backup in S3 (the engine's
//! fetch, run once by Patroni's `pgctl_backup` replica method; see replica-from-backup.sh).

use super::replica;
use super::source::{Choice, ReplicaFrom};
use crate::cluster::status::ClusterStatus;
use crate::cluster::{up, volumes};
use crate::config::{Config, HostConfig, Role};
use crate::docker::{self, Engine};
use crate::layout::{self, PATRONI};
use crate::{error, member, output};
use anyhow::{Context, Result};
use serde::Serialize;
use std::time::{Duration, Instant};

pub struct AddOptions {
    pub host: String,
    pub from: ReplicaFrom,
    pub timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct Added {
    pub host: String,
    /// The source chosen for an empty volume (`None`: the member already existed or had data).
    pub choice: Option<Choice>,
    /// How the member's data was made, as the member itself recorded it.
    pub made_by: String,
    pub seconds: f64,
    pub status: ClusterStatus,
}

pub async fn add(cfg: &Config, opts: &AddOptions) -> Result<Added> {
    let started = Instant::now();
    let host = database_host(cfg, &opts.host)?;
    let engines = docker::connect_all(cfg).await?;
    let engine = engines.iter().find(|e| e.host == host.name).context("the host's engine")?;
    let leader = member::leader(cfg, &engines).await.map_err(|e| {
        error::refused(format!(
            "the cluster has no leader ({e:#}): `node add` joins a running cluster; nothing was changed"
        ))
    })?;
    let up_opts = up::UpOptions {
        limit: vec![host.name.clone()],
        ..up::UpOptions::new(opts.timeout)
    };
    if let Some(role) = member_role(leader, &host.name).await? {
        output::step(format!("{} is already a member ({role}): converging it only", host.name));
        let status = up::up(cfg, &up_opts).await?;
        return Ok(Added {
            host: host.name.clone(),
            choice: None,
            made_by: "already a member".into(),
            seconds: started.elapsed().as_secs_f64(),
            status,
        });
    }

    up::ensure_image(cfg, &engines, &[host]).await?;
    let scope = &cfg.hosts.cluster.name;
    let volume = volumes::current(engine, scope).await?;
    let choice = if up::volume_system_id(engine, &cfg.hosts.cluster.image, &volume).await?.is_some() {
        output::step(format!(
            "{}: volume {volume} already holds data: the member rejoins with it (Patroni rewinds it, or `pgctl reinit {}` rebuilds it)",
            host.name, host.name
        ));
        None
    } else {
        let choice = replica::choose(cfg, leader, opts.from).await?;
        output::step(format!(
            "{}: replica from {}: {}",
            host.name,
            replica::describe(&choice.source),
            choice.reason
        ));
        replica::prepare_volume(cfg, engine, &volume, &choice).await?;
        Some(choice)
    };

    let status = up::up(cfg, &up_opts).await?;
    let made_by = made_by(engine, choice.as_ref()).await;
    output::step(format!(
        "{} joined in {}: {made_by}",
        host.name,
        output::seconds(started.elapsed().as_secs_f64())
    ));
    Ok(Added {
        host: host.name.clone(),
        choice,
        made_by,
        seconds: started.elapsed().as_secs_f64(),
        status,
    })
}

/// `name` from hosts.toml, which must run a database.
pub(super) fn database_host<'a>(cfg: &'a Config, name: &str) -> Result<&'a HostConfig> {
    let host = cfg.host(name).ok_or_else(|| {
        error::usage(format!(
            "{name}: no such host in {}: add a [[host]] entry for it first (name, endpoint, address, roles = [\"patroni\", ...])",
            cfg.hosts_path.display()
        ))
    })?;
    if !host.has_role(Role::Patroni) {
        return Err(error::usage(format!(
            "{name} has no role `patroni` in {}: it runs no database member",
            cfg.hosts_path.display()
        )));
    }
    Ok(host)
}

/// The member's role in the leader's view of the cluster, if it is a member.
pub(super) async fn member_role(leader: &Engine, name: &str) -> Result<Option<String>> {
    let cluster = member::patroni_get(leader, "/cluster").await?;
    Ok(cluster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == name)
        .map(|m| format!("{}, {}", m["role"].as_str().unwrap_or("?"), m["state"].as_str().unwrap_or("?"))))
}

/// What the member recorded about how it was made (replica-from-backup.sh), in words.
async fn made_by(engine: &Engine, choice: Option<&Choice>) -> String {
    let cmd = ["cat", layout::REPLICA_RESULT];
    let recorded = docker::exec(&engine.docker, PATRONI, &cmd, Some("postgres"))
        .await
        .ok()
        .filter(|o| o.success())
        .and_then(|o| serde_json::from_str::<serde_json::Value>(&o.stdout).ok());
    match (recorded, choice) {
        (Some(r), _) if r["method"] == "backup" => format!("fetched from S3 in {} s, then streaming from the leader", r["seconds"]),
        (Some(r), _) => format!(
            "the fetch from S3 failed (exit {}): Patroni took a basebackup from the leader instead",
            r["fetch_exit"]
        ),
        (None, Some(_)) => "basebackup from the leader".into(),
        (None, None) => "its existing data".into(),
    }
}
