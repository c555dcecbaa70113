//! `pgctl restore --rollback`: back to the data from before the last restore. The restored
//! generation is removed (with what was written since the restore) and the previous one is
//! current again. The old leader's data is promoted onto a new timeline first: the restore
//! left a newer timeline in the archive, and a later restore "to latest" must follow this
//! history, not the abandoned one.

use super::{start_cluster, stop_members, Phases};
use crate::cluster::status::ClusterStatus;
use crate::cluster::volumes;
use crate::config::{Config, Role};
use crate::docker::Engine;
use crate::recovery::{self as recover, Mode, Recovered};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::time::Duration;

#[derive(Debug, Serialize)]
pub struct RollbackPlan {
    /// Per Patroni host: the generation removed and the one that becomes current again.
    pub hosts: Vec<HostRollback>,
    /// Whose previous data starts first (the leader before the restore).
    pub leader_host: String,
}

#[derive(Debug, Serialize)]
pub struct HostRollback {
    pub host: String,
    pub remove: String,
    pub back_to: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RollbackReport {
    pub plan: RollbackPlan,
    pub recovered: Recovered,
    pub phases: Vec<(String, f64)>,
    pub status: ClusterStatus,
}

pub async fn plan(cfg: &Config, engines: &[Engine]) -> Result<RollbackPlan> {
    let scope = &cfg.hosts.cluster.name;
    let mut hosts = Vec::new();
    let mut leader_host = None;
    for e in engines
        .iter()
        .filter(|e| cfg.host(&e.host).is_some_and(|h| h.has_role(Role::Patroni)))
    {
        let present = volumes::list(e, scope).await?;
        let [.., previous, newest] = present.as_slice() else {
            continue;
        };
        if let Some(l) = newest.labels.get(crate::layout::LABEL_PREVIOUS_LEADER) {
            leader_host = Some(l.clone());
        }
        hosts.push(HostRollback {
            host: e.host.clone(),
            remove: newest.name.clone(),
            back_to: Some(previous.name.clone()),
        });
    }
    if hosts.is_empty() {
        bail!("no host holds an older data volume generation of cluster `{scope}`: there is no restore to roll back (a restore with --no-keep-old cannot be rolled back)");
    }
    let leader_host = leader_host
        .filter(|l| hosts.iter().any(|h| &h.host == l))
        .unwrap_or_else(|| hosts[0].host.clone());
    Ok(RollbackPlan { hosts, leader_host })
}

impl RollbackPlan {
    pub fn describe(&self, cfg: &Config) -> String {
        let mut out = format!(
            "roll cluster `{}` back to its data from before the last restore\n",
            cfg.hosts.cluster.name
        );
        for h in &self.hosts {
            out.push_str(&format!(
                "  {}: DELETES {} (the restored data and everything written since the restore); {} becomes current\n",
                h.host,
                h.remove,
                h.back_to.as_deref().unwrap_or("nothing")
            ));
        }
        out.push_str(&format!(
            "  {}'s previous data starts first, promoted onto a new timeline; the other members are rebuilt from it\n",
            self.leader_host
        ));
        out
    }
}

pub async fn execute(cfg: &Config, engines: &[Engine], plan: RollbackPlan, timeout: Duration) -> Result<RollbackReport> {
    let mut phases = Phases::default();
    let by_host = |h: &str| engines.iter().find(|e| e.host == h).expect("planned hosts are connected");
    phases.start("stop the cluster");
    stop_members(cfg, engines).await?;
    for h in &plan.hosts {
        // An interrupted restore's recovery container would hold the volume.
        crate::docker::remove_container(&by_host(&h.host).docker, &recover::container_name(cfg, Mode::Restore)).await?;
        volumes::remove(by_host(&h.host), &h.remove).await?;
    }
    phases.start("promote the previous data onto a new timeline");
    let leader_engine = by_host(&plan.leader_host);
    let back_to = plan
        .hosts
        .iter()
        .find(|h| h.host == plan.leader_host)
        .and_then(|h| h.back_to.clone())
        .context("the leader's previous volume")?;
    let recovered = recover::run(cfg, cfg, leader_engine, &back_to, Mode::Bump, None).await?;
    phases.sub(&recovered.phases);
    // The other members' previous data is older than the leader's: they are rebuilt from it,
    // on fresh volumes of their previous generation's name.
    let mut replicas = Vec::new();
    for h in plan.hosts.iter().filter(|h| h.host != plan.leader_host) {
        if let Some(old) = &h.back_to {
            volumes::remove(by_host(&h.host), old).await?;
            replicas.push((by_host(&h.host), old.as_str()));
        }
    }
    let status = start_cluster(cfg, &plan.leader_host, &replicas, timeout, &mut phases).await?;
    Ok(RollbackReport {
        recovered,
        phases: phases.finish(),
        status,
        plan,
    })
}
