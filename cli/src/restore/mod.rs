//! `pgctl restore`: point-in-time restore of the whole cluster, in place or as a clone, in the
//! order the Compose README's 13 manual steps (section 5.3) had to be done by hand — and with a
//! way back. Pre-flight checks everything before anything stops; the old data volumes are never
//! touched (the restore fills a new volume generation, see `cluster::volumes`), so
//! `pgctl restore --rollback` can put them back.

mod replicas;
pub mod rollback;

use crate::backup::list::{self, Backup};
use crate::backup::target::{self, Target};
use crate::cluster::status::{self, ClusterStatus};
use crate::cluster::up::{self, Members, UpOptions};
use crate::cluster::volumes;
use crate::config::{Config, Role};
use crate::docker::{self, Engine};
use crate::error::{Classify, Kind};
use crate::layout::{DATA_MOUNT, INCOMPLETE_MARKER, PATRONI, PGDATA, PREFETCHED_COPY};
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

/// Pre-flight: S3 readable, a backup before the target, the target inside the restorable
/// window, every host reachable with the image, room for a second copy. Changes nothing.
///
/// `source` is whose backups are restored: `cfg` itself, or for a clone (`--into`) the cluster
/// the clone is made from. A clone reads them with the source's read-only key and must archive
/// (if at all) into a prefix of its own.
pub async fn plan(source: &Config, cfg: &Config, engines: &[Engine], opts: &RestoreOptions) -> Result<Plan> {
    let clone_of = is_clone(source, cfg).then(|| source_label(source, cfg));
    if clone_of.is_some() {
        check_clone(source, cfg).kind(Kind::Refused)?;
    }
    if source.hosts.backup.is_none() {
        return Err(crate::error::usage(format!(
            "{} has no [backup] section: there is no archive to restore from",
            source.hosts_path.display()
        )));
    }
    output::step(crate::s3::preflight(source).await.context("pre-flight; nothing was changed")?);
    let listing = list::list(source)
        .await
        .context("pre-flight: reading the backup repository (read-only key)")?;
    let backup = target::choose_backup(&listing, &opts.target, opts.backup.as_deref())
        .kind(Kind::Refused)?
        .clone();
    let major = cfg.hosts.cluster.postgres_major;
    if let Some(m) = backup.pg_major.filter(|m| *m != major) {
        return Err(crate::error::refused(format!(
            "pre-flight: backup {} is of PostgreSQL {m}, the cluster runs {major}: a backup restores into the same major only (`pgctl migrate from-volume` upgrades a data directory); nothing was changed",
            backup.name
        )));
    }
    let scope = &cfg.hosts.cluster.name;
    let members: Vec<&Engine> = engines
        .iter()
        .filter(|e| cfg.host(&e.host).is_some_and(|h| h.has_role(Role::Patroni)))
        .collect();
    for e in &members {
        if docker::image_id(&e.docker, &cfg.hosts.cluster.image).await?.is_none() {
            return Err(crate::error::refused(format!(
                "pre-flight: {} lacks image {}: deliver it first (`pgctl image push`)",
                e.host, cfg.hosts.cluster.image
            )));
        }
    }
    let leader = status::fetch(cfg, engines).await.ok().and_then(|s| s.leader);
    let mut host_volumes = Vec::new();
    let mut discard_incomplete = Vec::new();
    let mut restore_host = leader.clone();
    let mut previous_leader = leader.clone();
    for e in &members {
        // The recovery containers of a restore whose pgctl died hold their volumes: they go.
        for mode in [Mode::Restore, Mode::Prefetch] {
            docker::remove_container(&e.docker, &recover::container_name(cfg, mode)).await?;
        }
        let mut present = volumes::list(e, scope).await?;
        if let Some(newest) = present.last() {
            match leftover_of_restore(cfg, e, &newest.name).await? {
                Leftover::Restore => {
                    // A retry: the partial copy goes; its host and the leader it recorded stay.
                    restore_host = Some(e.host.clone());
                    previous_leader = newest.labels.get(crate::layout::LABEL_PREVIOUS_LEADER).cloned().or(previous_leader);
                    discard_incomplete.push(format!("{}:{}", e.host, newest.name));
                    present.pop();
                }
                // A replica's unused copy is not this host's data: the volume before it is.
                Leftover::ReplicaCopy => {
                    discard_incomplete.push(format!("{}:{}", e.host, newest.name));
                    present.pop();
                }
                Leftover::None => {}
            }
        }
        let next = present.last().map(|v| v.generation + 1).unwrap_or(1);
        host_volumes.push(HostVolumes {
            host: e.host.clone(),
            current: present.last().map(|v| v.name.clone()),
            new: volumes::data_volume(scope, next),
        });
    }
    let restore_host = restore_host
        .or_else(|| members.first().map(|e| e.host.clone()))
        .context("no host with the patroni role")?;
    if opts.keep_old {
        check_free_space(cfg, &members, backup.size_bytes).await?;
    }
    Ok(Plan {
        clone_of,
        target: opts.target.describe(),
        window: target::window(&listing),
        backup,
        restore_host,
        previous_leader,
        volumes: host_volumes,
        discard_incomplete,
    })
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
    // and starts (a clone's replicas could not replay the source's archive: they copy the
    // leader). A failed recovery is reported once the copies have ended, and they are removed.
    let leader_path = async {
        let recovered = recover::run(cfg, source, restore_engine, new_volume, Mode::Restore, Some(fetch)).await;
        let recovered = match recovered {
            Ok(r) => r,
            Err(e) => return Err((e, Some(volumes::remove(restore_engine, new_volume).await.is_ok()))),
        };
        let started = async {
            mark_complete(cfg, restore_engine, new_volume).await?;
            phases.sub(&recovered.phases);
            output::step(format!(
                "{}: recovered to {} on timeline {} (last transaction replayed: {})",
                plan.restore_host,
                recovered.lsn,
                recovered.timeline,
                recovered.last_replayed.as_deref().unwrap_or("none")
            ));
            start_leader(cfg, engines, &plan.restore_host, opts.timeout, &mut phases).await
        };
        // After the recovery, the recovered volume stays (complete or not, its marker says).
        match started.await {
            Ok(()) => Ok(recovered),
            Err(e) => Err((e, None)),
        }
    };
    let copies = async {
        match plan.clone_of {
            None => Some(replicas::prefetch(cfg, &replicas, &plan.backup.name).await),
            Some(_) => None,
        }
    };
    let (recovered, prefetched) = tokio::join!(leader_path, copies);
    let recovered = match recovered {
        Ok(r) => r,
        // The leader did not start on its recovered data: the error as it is; the copies stay
        // (a retried restore discards them, an `up` builds its replicas over them).
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
    let status = start_replicas(
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

/// Whether the backups are another's: a clone's source cluster, or a migration's S3 prefix.
fn is_clone(source: &Config, cfg: &Config) -> bool {
    source.hosts_path != cfg.hosts_path || location(source) != location(cfg)
}

/// (endpoint, bucket, prefix) of a configuration's archive, if it has one.
fn location(cfg: &Config) -> Option<(String, String, String)> {
    let b = cfg.hosts.backup.as_ref()?;
    let trim = |s: &str| s.trim_matches('/').to_string();
    Some((trim(&b.s3_endpoint), b.s3_bucket.clone(), trim(&b.s3_prefix)))
}

/// How the source of a clone or a migration is named in plans and messages.
fn source_label(source: &Config, cfg: &Config) -> String {
    match location(source) {
        Some((_, bucket, prefix)) if source.hosts_path == cfg.hosts_path => format!("s3://{bucket}/{prefix}"),
        _ => format!("cluster `{}`", source.hosts.cluster.name),
    }
}

/// A clone never writes into the source's archive: its own prefix (or no archiving), and the
/// same PostgreSQL major version.
fn check_clone(source: &Config, cfg: &Config) -> Result<()> {
    if source.hosts.cluster.postgres_major != cfg.hosts.cluster.postgres_major {
        bail!(
            "--into {}: PostgreSQL {} there, {} in {}: a clone needs the same major version",
            cfg.hosts_path.display(),
            cfg.hosts.cluster.postgres_major,
            source.hosts.cluster.postgres_major,
            source.hosts_path.display()
        );
    }
    if let (Some(s), Some(c)) = (location(source), &cfg.hosts.backup) {
        if location(cfg) == Some(s) {
            bail!(
                "--into {}: its backup.s3_prefix `{}` is the source's own; a clone must archive into a prefix of its own (or have no [backup]), never into the archive it is made from",
                cfg.hosts_path.display(),
                c.s3_prefix
            );
        }
    }
    Ok(())
}

/// Starts the cluster on data that exists on `leader_host` only: a clean DCS scope, that member
/// alone until it leads, then the others on new, empty volumes (rebuilt from the leader).
pub async fn start_cluster(
    cfg: &Config,
    engines: &[Engine],
    leader_host: &str,
    replicas: &[(&Engine, &str)],
    timeout: Duration,
    phases: &mut Phases,
) -> Result<ClusterStatus> {
    start_leader(cfg, engines, leader_host, timeout, phases).await?;
    start_replicas(cfg, engines, leader_host, replicas, None, timeout, phases).await
}

/// A clean DCS scope, then `leader_host`'s member alone until it leads.
async fn start_leader(cfg: &Config, engines: &[Engine], leader_host: &str, timeout: Duration, phases: &mut Phases) -> Result<()> {
    phases.start("clear the DCS scope");
    let opts = UpOptions::new(timeout);
    up::converge_members(cfg, &opts, &Members::None).await?;
    let dcs_engine = engines
        .iter()
        .find(|e| crate::dcs::is_voter(cfg, &e.host))
        .context("no DCS member reachable")?;
    crate::dcs::remove_scope(cfg, dcs_engine, &cfg.hosts.cluster.name).await?;

    // Alone first: members with empty volumes and no leader in the DCS would race it to
    // bootstrap a new, empty cluster.
    phases.start("start the leader");
    up::converge_members(cfg, &opts, &Members::Only(vec![leader_host.to_string()])).await?;
    Ok(())
}

/// The other members on their new volumes (empty, or holding a prefetched copy), following the
/// leader.
async fn start_replicas(
    cfg: &Config,
    engines: &[Engine],
    leader_host: &str,
    replicas: &[(&Engine, &str)],
    prefetched: Option<&replicas::Prefetched>,
    timeout: Duration,
    phases: &mut Phases,
) -> Result<ClusterStatus> {
    phases.start("rebuild the replicas");
    let leader = engines.iter().find(|e| e.host == leader_host).context("the leader's engine")?;
    replicas::prepare(cfg, leader, replicas, prefetched).await?;
    up::up(cfg, &UpOptions::new(timeout)).await.context("the cluster after the restore")
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
    for e in engines {
        docker::remove_container(&e.docker, PATRONI).await?;
    }
    Ok(())
}

/// What an interrupted restore may have left in a host's newest data volume.
#[derive(Debug, PartialEq, Eq)]
enum Leftover {
    None,
    /// The restore host's partial copy (its marker is still there).
    Restore,
    /// A replica's prefetched copy that no member took into use (no data directory yet).
    ReplicaCopy,
}

async fn leftover_of_restore(cfg: &Config, engine: &Engine, volume: &str) -> Result<Leftover> {
    let host_config = bollard::models::HostConfig {
        binds: Some(vec![format!("{volume}:{}:ro", DATA_MOUNT)]),
        network_mode: Some("none".into()),
        ..Default::default()
    };
    let test = format!(
        "if test -e {INCOMPLETE_MARKER}; then echo restore; elif test -e {PREFETCHED_COPY} && ! test -e {PGDATA}/PG_VERSION; then echo copy; fi"
    );
    let out = docker::run_once(
        &engine.docker,
        &cfg.hosts.cluster.image,
        &["sh", "-c", &test],
        host_config,
        None,
        &[],
    )
    .await?;
    Ok(match out.ok(&format!("{}: reading volume {volume}", engine.host))?.trim() {
        "restore" => Leftover::Restore,
        "copy" => Leftover::ReplicaCopy,
        _ => Leftover::None,
    })
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

/// Room for one more copy of the data on every member's Docker filesystem.
async fn check_free_space(cfg: &Config, members: &[&Engine], size: u64) -> Result<()> {
    let need = size + size / 10;
    let mut short = Vec::new();
    for e in members {
        let host_config = bollard::models::HostConfig {
            network_mode: Some("none".into()),
            ..Default::default()
        };
        let cmd = ["df", "-B1", "--output=avail", "/"];
        let out = docker::run_once(&e.docker, &cfg.hosts.cluster.image, &cmd, host_config, None, &[]).await?;
        let text = out.ok(&format!("{}: free space", e.host))?;
        let avail: u64 = text.lines().last().unwrap_or_default().trim().parse().unwrap_or(u64::MAX);
        if avail < need {
            short.push(format!(
                "{}: {:.1} GB free, {:.1} GB needed",
                e.host,
                avail as f64 / 1e9,
                need as f64 / 1e9
            ));
        }
    }
    if !short.is_empty() {
        return Err(crate::error::refused(format!(
            "pre-flight: not enough free space for a second copy of the data (the old one is kept for --rollback):\n  {}\n  Free space, or pass --no-keep-old to delete the old data volumes once the cluster is stopped (no rollback then).",
            short.join("\n  ")
        )));
    }
    Ok(())
}
