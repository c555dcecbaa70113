//! `pgctl restore`: point-in-time restore of the whole cluster, in place or as a clone, in the
//! order the Compose README's 13 manual steps (section 5.3) had to be done by hand — and with a
//! way back. Pre-flight checks everything before anything stops; the old data volumes are never
//! touched (the restore fills a new volume generation, see `cluster::volumes`), so
//! `pgctl restore --rollback` can put them back.

mod plan;
mod replicas;
pub mod rollback;

pub use plan::plan;

use crate::backup::list::Backup;
use crate::backup::target::{self, Target};
use crate::cluster::status::ClusterStatus;
use crate::cluster::up::{self, Members, UpOptions};
use crate::cluster::volumes;
use crate::config::Config;
use crate::docker::{self, Engine};
use crate::layout::{DATA_MOUNT, INCOMPLETE_MARKER, PATRONI};
pub use crate::output::Phases;
use crate::recovery::{self as recover, Fetch, Mode, Recovered};
use crate::{member, output};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::time::Duration;

pub struct RestoreOptions {
    pub target: Target,
    /// `latest` or a timeline number.
    pub timeline: String,
    pub backup: Option<String>,
    /// Delete the old generation once the cluster is stopped (no space for two copies).
    pub keep_old: bool,
    pub timeout: Duration,
}

/// What a restore will do, decided by the pre-flight; nothing has changed yet.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// For a clone or a migration: whose backups are restored (a cluster, or an S3 prefix).
    pub clone_of: Option<String>,
    pub backup: Backup,
    pub target: String,
    pub window: String,
    /// Where the backup is fetched and recovered; the first member to start.
    pub restore_host: String,
    /// The leader before the restore (a rollback starts its data first).
    pub previous_leader: Option<String>,
    /// Per Patroni host: the volume in use now (kept) and the one the restore fills.
    pub volumes: Vec<HostVolumes>,
    /// An interrupted restore's partial volume, discarded before this attempt.
    pub discard_incomplete: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HostVolumes {
    pub host: String,
    pub current: Option<String>,
    pub new: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub plan: Plan,
    pub recovered: Recovered,
    /// Wall time of each phase, in order.
    pub phases: Vec<(String, f64)>,
    pub status: ClusterStatus,
}

impl Plan {
    pub fn describe(&self, cfg: &Config, keep_old: bool) -> String {
        let what = match &self.clone_of {
            Some(source) => format!("restore the backups of {source} into cluster `{}`", cfg.hosts.cluster.name),
            None => format!("restore cluster `{}`", cfg.hosts.cluster.name),
        };
        let others = match self.clone_of {
            None => "the other members fetch the same backup meanwhile and follow it",
            Some(_) => "the other members are rebuilt from it",
        };
        let mut out = format!(
            "{what} to {}\n  from backup {} (finished {}, {:.1} MB)\n  {}\n  fetched and recovered on {}, which becomes the leader; {others}\n",
            self.target,
            self.backup.name,
            target::unix_time(self.backup.stop),
            self.backup.size_bytes as f64 / 1e6,
            self.window,
            self.restore_host,
        );
        for d in &self.discard_incomplete {
            out.push_str(&format!("  discards the partial volume of an interrupted restore: {d}\n"));
        }
        for v in &self.volumes {
            let keep = match (&v.current, keep_old) {
                (Some(c), true) => format!("keeps {c} untouched"),
                (Some(c), false) => format!("DELETES {c} (--no-keep-old)"),
                (None, _) => "has no data volume now".into(),
            };
            out.push_str(&format!("  {}: {keep}; restores into {}\n", v.host, v.new));
        }
        out.push_str("  the cluster is stopped meanwhile (Patroni on replicas, then the leader); its DCS scope is cleared\n");
        if keep_old {
            out.push_str("  undo afterwards with: pgctl restore --rollback\n");
        }
        out
    }
}

/// Carries out a plan: every phase timed and reported; a failure says what is intact.
pub async fn execute(source: &Config, cfg: &Config, engines: &[Engine], plan: Plan, opts: &RestoreOptions) -> Result<Report> {
    let mut phases = Phases::default();
    let by_host = |h: &str| engines.iter().find(|e| e.host == h).expect("planned hosts are connected");
    let restore_engine = by_host(&plan.restore_host);

    if plan.clone_of.is_none() {
        phases.start("archive the current WAL");
        if let Some(leader) = plan.previous_leader.as_deref().map(by_host) {
            archive_current_wal(leader).await;
        }
    }

    phases.start("stop the cluster");
    stop_members(cfg, engines).await?;
    for (host, volume) in plan.discard_incomplete.iter().filter_map(|d| d.split_once(':')) {
        volumes::remove(by_host(host), volume).await?;
    }
    if !opts.keep_old {
        for v in &plan.volumes {
            if let Some(old) = &v.current {
                volumes::remove(by_host(&v.host), old).await?;
            }
        }
    }

    phases.start("fetch the backup and replay WAL");
    let new_volume = &plan.volumes.iter().find(|v| v.host == plan.restore_host).expect("planned").new;
    volumes::create(cfg, restore_engine, new_volume, plan.previous_leader.as_deref()).await?;
    let fetch = Fetch {
        backup: &plan.backup.name,
        target: &opts.target,
        timeline: &opts.timeline,
    };
    let replicas: Vec<(&Engine, &str)> = plan
        .volumes
        .iter()
        .filter(|v| v.host != plan.restore_host)
        .map(|v| (by_host(&v.host), v.new.as_str()))
        .collect();
    // In place, the replicas fetch their copies of the same backup while the leader recovers
    // (a clone's replicas could not replay the source's archive: they copy the leader). A
    // failed recovery is reported once the copies have ended, and they are removed.
    let leader_path = async {
        let recovered = recover::run(cfg, source, restore_engine, new_volume, Mode::Restore, Some(fetch)).await;
        let recovered = match recovered {
            Ok(r) => r,
            Err(e) => return Err((e, Some(volumes::remove(restore_engine, new_volume).await.is_ok()))),
        };
        // After the recovery, the recovered volume stays (complete or not, its marker says).
        mark_complete(cfg, restore_engine, new_volume).await.map_err(|e| (e, None))?;
        phases.sub(&recovered.phases);
        output::step(format!(
            "{}: recovered to {} on timeline {} (last transaction replayed: {})",
            plan.restore_host,
            recovered.lsn,
            recovered.timeline,
            recovered.last_replayed.as_deref().unwrap_or("none")
        ));
        Ok(recovered)
    };
    let copies = async {
        match plan.clone_of {
            None => Some(replicas::prefetch(cfg, &replicas, &plan.backup.name, (&plan.restore_host, new_volume)).await),
            Some(_) => None,
        }
    };
    let (recovered, prefetched) = tokio::join!(leader_path, copies);
    let recovered = match recovered {
        Ok(r) => r,
        Err((e, None)) => return Err(e),
        Err((e, Some(removed))) => {
            let copies = prefetched.iter().flat_map(|p| &p.hosts);
            for (engine, volume) in replicas.iter().filter(|(e, _)| copies.clone().any(|h| *h == e.host)) {
                if let Err(e) = volumes::remove(engine, volume).await {
                    output::warn(format!("{}: removing the replica's copy in {volume}: {e:#}", engine.host));
                }
            }
            bail!("{e:#}\n{}", after_failure(cfg, &plan, opts, removed));
        }
    };
    // The leader not starting on its recovered data: the error as it is; the copies stay (a
    // retried restore discards them, an `up` builds its replicas over them).
    let status = start_restored(
        cfg,
        engines,
        &plan.restore_host,
        &replicas,
        prefetched.as_ref(),
        opts.timeout,
        &mut phases,
    )
    .await?;
    let phases = phases.finish();
    Ok(Report {
        plan,
        recovered,
        phases,
        status,
    })
}

/// Starts the cluster on data that exists on `leader_host` only: a clean DCS scope, that
/// member alone until it leads, then the others on new, empty volumes (copying the leader).
pub async fn start_cluster(
    cfg: &Config,
    engines: &[Engine],
    leader_host: &str,
    replicas: &[(&Engine, &str)],
    timeout: Duration,
    phases: &mut Phases,
) -> Result<ClusterStatus> {
    start_restored(cfg, engines, leader_host, replicas, None, timeout, phases).await
}

/// `start_cluster`, the replicas' new volumes prepared while the DCS scope is cleared. After a
/// restore in place (`prefetched`: its plan checked the repository, its data is the archive's
/// own) they hold their copies (see `replicas::prepare`), and `up` skips the checks made.
async fn start_restored(
    cfg: &Config,
    engines: &[Engine],
    leader_host: &str,
    replicas: &[(&Engine, &str)],
    prefetched: Option<&replicas::Prefetched>,
    timeout: Duration,
    phases: &mut Phases,
) -> Result<ClusterStatus> {
    phases.start("clear the DCS scope");
    let opts = UpOptions {
        checked: prefetched.is_some(),
        ..UpOptions::new(timeout)
    };
    let clear = async {
        let dcs_engine = engines
            .iter()
            .find(|e| crate::dcs::is_voter(cfg, &e.host))
            .context("no DCS member reachable")?;
        // The DCS of a stopped cluster still runs; a migration's new hosts may have none yet.
        if crate::dcs::health(cfg, dcs_engine).await.is_err() {
            up::converge_members(cfg, &opts, &Members::None).await?;
        }
        crate::dcs::remove_scope(cfg, dcs_engine, &cfg.hosts.cluster.name).await
    };
    tokio::try_join!(clear, replicas::prepare(cfg, engines, replicas, prefetched))?;
    phases.start("start the leader");
    let led_at = std::sync::Arc::new(std::sync::OnceLock::new());
    let members = Members::LeaderFirst {
        host: leader_host.to_string(),
        led_at: led_at.clone(),
    };
    let status = up::converge_members(cfg, &opts, &members)
        .await
        .context("the cluster after the restore")?;
    // The downtime ends when the leader leads: the replicas' part is a phase of its own.
    if let Some(at) = led_at.get() {
        phases.split_at(*at, "rebuild the replicas");
    }
    status.context("the restore starts Patroni on every member")
}

/// What is intact after a failed fetch or recovery, and the ways forward.
fn after_failure(cfg: &Config, plan: &Plan, opts: &RestoreOptions, removed: bool) -> String {
    let hosts = cfg.hosts_path.display();
    let kept: Vec<String> = plan
        .volumes
        .iter()
        .filter_map(|v| v.current.as_ref().filter(|_| opts.keep_old).map(|c| format!("{}:{c}", v.host)))
        .collect();
    let mut out = String::from("The cluster is stopped.");
    if !kept.is_empty() {
        out.push_str(&format!(" The old data volumes are intact ({}).", kept.join(", ")));
    }
    if !removed {
        out.push_str(&format!(
            " The partial restore volume on {} could not be removed; a retry discards it.",
            plan.restore_host
        ));
    }
    out.push_str(&format!("\n  Retry:   pgctl restore --hosts {hosts} ... (the same target)"));
    if opts.keep_old {
        out.push_str(&format!("\n  Go back: pgctl up --hosts {hosts}   (starts the old data as it was)"));
    } else {
        out.push_str("\n  The old data volumes were deleted (--no-keep-old): the backups in S3 are the way back.");
    }
    out
}

/// Asks the leader to finish its WAL segment and waits (briefly) until it is archived, so a
/// restore to the latest point loses nothing committed before it began.
pub(crate) async fn archive_current_wal(leader: &Engine) {
    let switched = member::psql(leader, "SELECT pg_walfile_name(pg_switch_wal())").await;
    let Ok(segment) = switched.map(|s| s.trim().to_string()) else {
        return;
    };
    for _ in 0..30 {
        let archived = member::psql(leader, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").await;
        if archived.is_ok_and(|a| a.trim() >= segment.as_str()) {
            output::step(format!("{}: WAL up to {segment} is archived", leader.host));
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    output::warn(format!(
        "{}: segment {segment} was not archived within 60 s; the restore uses what the archive holds",
        leader.host
    ));
}

/// Stops Patroni on the replicas, then on the leader, and removes the containers (their restart
/// policy would bring them back; `up` recreates them on the new volumes).
pub async fn stop_members(cfg: &Config, engines: &[Engine]) -> Result<()> {
    for line in crate::cluster::teardown::stop_patroni(cfg, engines).await? {
        output::step(line);
    }
    let removed = futures_util::future::join_all(engines.iter().map(|e| docker::remove_container(&e.docker, PATRONI))).await;
    removed.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(())
}

/// Removes the restore-in-progress mark once pgctl has seen the recovery succeed.
async fn mark_complete(cfg: &Config, engine: &Engine, volume: &str) -> Result<()> {
    let host_config = bollard::models::HostConfig {
        binds: Some(vec![format!("{volume}:{}", DATA_MOUNT)]),
        network_mode: Some("none".into()),
        ..Default::default()
    };
    let cmd = ["rm", "-f", INCOMPLETE_MARKER];
    docker::run_once(&engine.docker, &cfg.hosts.cluster.image, &cmd, host_config, Some("root"), &[])
        .await?
        .ok(&format!("{}: completing volume {volume}", engine.host))?;
    Ok(())
}
