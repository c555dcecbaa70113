//! `pgctl node remove HOST`: takes a member out of the running cluster. The leader is moved
//! first (only with --switchover); then the member's Patroni stops, its key leaves the DCS and
//! its replication slot leaves the leader, so nothing waits for it. A DCS voter on the host
//! keeps running (the store's quorum is not this command's to change); a Consul client agent
//! leaves with the member. Data volumes stay unless --volumes.

use super::add::{database_host, member_role};
use super::slot_name;
use crate::cluster::status::{self, ClusterStatus};
use crate::cluster::{ops, volumes};
use crate::config::Config;
use crate::docker::{self, Engine};
use crate::layout::{CONSUL, PATRONI};
use crate::{dcs, error, member, output};
use anyhow::{Context, Result};
use serde::Serialize;
use std::time::{Duration, Instant};

pub struct RemoveOptions {
    pub host: String,
    pub switchover: bool,
    pub volumes: bool,
    pub timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct Removed {
    pub host: String,
    pub done: Vec<String>,
    /// Data volumes left on the host (without --volumes).
    pub kept_volumes: Vec<String>,
    /// What the user still has to do in hosts.toml.
    pub next: String,
    pub status: ClusterStatus,
}

pub async fn remove(cfg: &Config, opts: &RemoveOptions) -> Result<Removed> {
    let host = database_host(cfg, &opts.host)?;
    let name = host.name.clone();
    let (engines, unreachable) = docker::connect::connect_available(cfg).await;
    let target = engines.iter().find(|e| e.host == name);
    if target.is_none() {
        output::warn(format!(
            "{name} is unreachable: its containers are left as they are (remove them when it comes back, or let it stay off); the member leaves the DCS and the leader now"
        ));
    }
    let others: Vec<Engine> = engines.iter().filter(|e| e.host != name).cloned().collect();
    if others.is_empty() || unreachable.len() > 1 {
        return Err(error::refused(format!(
            "{} host(s) unreachable: `node remove` needs the rest of the cluster; nothing was changed",
            unreachable.len()
        )));
    }
    let mut done = Vec::new();
    let leader = member::leader(cfg, &engines)
        .await
        .map_err(|e| error::refused(format!("the cluster has no leader ({e:#}); nothing was changed")))?;
    let leader = if leader.host == name {
        if !opts.switchover {
            return Err(error::refused(format!(
                "{name} is the leader: add --switchover to move the leadership to another member first; nothing was changed"
            )));
        }
        let s = ops::switchover(cfg, &engines, None, None, opts.timeout).await?;
        let new = s.leader.context("no leader after the switchover")?;
        done.push(format!("switched the leader over from {name} to {new}"));
        output::step(done.last().unwrap());
        others.iter().find(|e| e.host == new).context("the new leader's engine")?
    } else {
        others.iter().find(|e| e.host == leader.host).context("the leader's engine")?
    };
    if member_role(leader, &name).await?.is_none() {
        output::step(format!("{name} is not (or no longer) a member: finishing its removal"));
    }

    if let Some(t) = target {
        stop_and_remove(t, PATRONI).await?;
        done.push(format!("{name}: stopped and removed Patroni"));
        output::step(done.last().unwrap());
    }
    let voter = others
        .iter()
        .find(|e| dcs::is_voter(cfg, &e.host))
        .context("no DCS voter reachable besides the host")?;
    dcs::remove_member(cfg, voter, &cfg.hosts.cluster.name, &name).await?;
    done.push(format!("removed member {name} from the DCS"));
    output::step(done.last().unwrap());
    done.push(drop_slot(leader, &slot_name(&name)).await?);
    output::step(done.last().unwrap());

    if let Some(t) = target {
        if dcs::store(cfg).runs_client_agent(host) {
            stop_and_remove(t, CONSUL).await?;
            dcs::forget_agent(cfg, voter, &name).await?;
            done.push(format!("{name}: its Consul client agent left"));
            output::step(done.last().unwrap());
        }
    }
    let mut kept_volumes = Vec::new();
    if let Some(t) = target {
        for v in volumes::list(t, &cfg.hosts.cluster.name).await? {
            if opts.volumes {
                volumes::remove(t, &v.name).await?;
                done.push(format!("{name}: removed volume {}", v.name));
            } else {
                kept_volumes.push(v.name);
            }
        }
    }
    let status = wait_without(cfg, &others, &name, opts.timeout).await?;
    let next = if dcs::is_voter(cfg, &name) {
        format!(
            "{name} keeps its {} (a voter of the DCS): remove `patroni` from its roles in {}, or the next `pgctl up` makes it a member again",
            dcs::store(cfg).container(),
            cfg.hosts_path.display()
        )
    } else {
        format!(
            "delete {name}'s [[host]] entry from {}: the next `pgctl up` would make it a member again",
            cfg.hosts_path.display()
        )
    };
    Ok(Removed {
        host: name,
        done,
        kept_volumes,
        next,
        status,
    })
}

async fn stop_and_remove(engine: &Engine, container: &str) -> Result<()> {
    docker::stop_and_remove(&engine.docker, container)
        .await
        .with_context(|| format!("{}: removing {container}", engine.host))
}

/// Patroni drops a gone member's slot on its next cycle; a slot still there (and inactive)
/// after a while is dropped here, so the leader never keeps WAL for a member that is gone.
async fn drop_slot(leader: &Engine, slot: &str) -> Result<String> {
    let query = format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if member::psql(leader, &query).await?.trim().is_empty() {
            return Ok(format!("{}: no replication slot `{slot}` left", leader.host));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let sql = format!("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}' AND NOT active");
    member::psql(leader, &sql).await?;
    Ok(format!("{}: dropped replication slot `{slot}`", leader.host))
}

/// Waits until the cluster, seen without the host, has a leader and every remaining member
/// healthy, and no longer lists the member.
async fn wait_without(cfg: &Config, engines: &[Engine], name: &str, timeout: Duration) -> Result<ClusterStatus> {
    let started = Instant::now();
    // The members that remain: hosts that still run Patroni.
    let mut expected = 0;
    for e in engines {
        if e.docker.inspect_container(PATRONI, None).await.is_ok() {
            expected += 1;
        }
    }
    let mut last = String::new();
    while started.elapsed() < timeout {
        match status::fetch(cfg, engines).await {
            Ok(s) if s.members.iter().any(|m| m.name == name) => last = format!("{name} is still listed"),
            Ok(s) => match s.healthy(expected, crate::layout::MAX_LAG_BYTES) {
                Ok(()) => return Ok(s),
                Err(why) => last = why,
            },
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    anyhow::bail!(
        "the cluster without {name} did not become healthy within {}s: {last}",
        timeout.as_secs()
    )
}
