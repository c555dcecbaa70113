//! `pgctl upgrade --pg-major N --image TAG`: the running cluster moves to a new PostgreSQL
//! major in place, with the machinery of `migrate from-volume` (the upgrade image, upgrade.sh,
//! Patroni adopting the result).
//!
//! Pre-flight on the running cluster (nothing changes when it fails): the image with major N is
//! on every host, the cluster is healthy, a backup exists, the new archive prefix is empty, the
//! upgrade image (new image + the old major's binaries) is ready on the leader's host. Then the
//! cluster stops (its current WAL archived first, replicas before the leader), `pg_upgrade
//! --check` runs on the leader's data, and `pg_upgrade --link` (or `--copy`) writes a new data
//! volume generation on the leader's host. Until here a failure starts the old cluster again on
//! its untouched volumes. The point of no return is the new cluster's first start: hosts.toml
//! gets the new image, major and archive prefix (a new archive generation: the old backups
//! cannot restore the new major), the DCS scope is cleared (new system identifier), Patroni
//! adopts the data as leader, the replicas are rebuilt from it on new volume generations, then
//! extensions, statistics, the collation check and a first full backup. The replicas' old
//! volumes keep the old major's data as it was at the stop.

use crate::cluster::status;
use crate::cluster::volumes;
use crate::config::{Config, Role};
use crate::docker::{self, Engine};
use crate::layout::data_volume;
use crate::migrate::from_volume::{self, Migrated, OldCluster, VolumeFacts};
use crate::restore::{self, Phases};
use crate::{error, member, output};
use anyhow::{Context, Result};
use serde::Serialize;
use std::time::{Duration, Instant};

pub struct Options {
    pub image: String,
    pub pg_major: u32,
    pub copy: bool,
    pub reindex: bool,
    pub timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub from_major: u32,
    pub to_major: u32,
    pub from_image: String,
    pub image: String,
    pub leader: String,
    pub leader_volume: String,
    pub new_volume: String,
    pub method: &'static str,
    /// The archive the upgraded cluster starts (backup.s3_prefix after the upgrade).
    pub new_prefix: Option<String>,
    /// The newest backup of the old major: the way back after the point of no return.
    pub newest_backup: Option<String>,
    pub upgrade_image: String,
    pub size_bytes: u64,
}

impl Plan {
    pub fn describe(&self, cfg: &Config) -> String {
        let archive = match &self.new_prefix {
            Some(p) => format!(
                "; archives into the new prefix `{p}` (the old one keeps PostgreSQL {}'s backups, newest {})",
                self.from_major,
                self.newest_backup.as_deref().unwrap_or("none")
            ),
            None => String::new(),
        };
        let way_back = if self.method == "link" {
            "until the new cluster's first start a failure starts PostgreSQL {from} again on the untouched volumes; after it, the leader's old volume shares its files with the new one, and the replicas' old volumes keep PostgreSQL {from}'s data as it was at the stop"
        } else {
            "until the new cluster's first start a failure starts PostgreSQL {from} again; after it, every old volume (the leader's too, with --copy) keeps PostgreSQL {from}'s data as it was at the stop"
        }
        .replace("{from}", &self.from_major.to_string());
        format!(
            "upgrade cluster `{}` from PostgreSQL {} ({}) to {} ({}), {} of data on {}:\n  \
             stop the cluster (downtime starts), pg_upgrade --check, pg_upgrade --{} into {} on {}; \
             then the point of no return: the new cluster starts, the replicas are rebuilt from it{archive}\n  \
             way back: {way_back}",
            cfg.hosts.cluster.name,
            self.from_major,
            self.from_image,
            self.to_major,
            self.image,
            output::size(self.size_bytes),
            self.leader,
            self.method,
            self.new_volume,
            self.leader
        )
    }
}

#[derive(Debug, Serialize)]
pub struct Upgraded {
    #[serde(flatten)]
    pub migrated: Migrated,
    /// From the stop of the cluster to the new leader running (seconds).
    pub downtime_seconds: f64,
    /// `host:volume` of the old major's data volumes, kept.
    pub kept_volumes: Vec<String>,
    pub hosts_file_kept: std::path::PathBuf,
}

fn engine_of<'a>(engines: &'a [Engine], host: &str) -> Result<&'a Engine> {
    engines
        .iter()
        .find(|e| e.host == host)
        .with_context(|| format!("host {host} is not connected"))
}

/// The configuration after the upgrade: new image and major, and the new archive prefix.
fn upgraded_config(cfg: &Config, opts: &Options, new_prefix: Option<&str>) -> Config {
    let mut out = cfg.clone();
    out.hosts.cluster.image = opts.image.clone();
    out.hosts.cluster.postgres_major = opts.pg_major;
    if let (Some(b), Some(p)) = (out.hosts.backup.as_mut(), new_prefix) {
        b.s3_prefix = p.to_string();
    }
    out
}

/// `<prefix>-pg<N>` (a trailing `-pg<old>` replaced).
fn next_prefix(prefix: &str, from: u32, to: u32) -> String {
    let base = prefix.strip_suffix(&format!("-pg{from}")).unwrap_or(prefix);
    format!("{base}-pg{to}")
}

pub async fn plan(cfg: &Config, engines: &[Engine], opts: &Options) -> Result<Plan> {
    let refuse = |why: String| error::refused(format!("pre-flight: {why}; nothing was changed"));
    let from = cfg.hosts.cluster.postgres_major;
    if opts.pg_major <= from {
        return Err(error::usage(format!(
            "--pg-major {}: the cluster runs PostgreSQL {from}; only a newer major is an upgrade",
            opts.pg_major
        )));
    }
    let mut missing = Vec::new();
    for e in engines {
        if docker::image_id(&e.docker, &opts.image).await?.is_none() {
            missing.push(e.host.clone());
        }
    }
    if !missing.is_empty() {
        return Err(refuse(format!(
            "image {} is missing on {}: `pgctl image push --image {}` first",
            opts.image,
            missing.join(", "),
            opts.image
        )));
    }
    let manifest = crate::image::manifest(&engines[0], &opts.image).await?;
    let postgres = manifest.get("postgres").cloned().unwrap_or_default();
    if postgres.split('.').next() != Some(opts.pg_major.to_string().as_str()) {
        return Err(refuse(format!(
            "image {} has PostgreSQL {postgres}, not {}",
            opts.image, opts.pg_major
        )));
    }
    if let Some(why) = crate::image::missing_dcs(cfg, &manifest, &opts.image) {
        return Err(refuse(why));
    }
    let status = status::fetch(cfg, engines).await?;
    if status.paused || status.standby {
        return Err(refuse(
            "the cluster is paused or a standby cluster: upgrade a running primary cluster".into(),
        ));
    }
    let status = status::settled(
        cfg,
        engines,
        status.members.len(),
        crate::layout::MAX_LAG_BYTES,
        super::rolling::PREFLIGHT_SETTLE,
    )
    .await
    .map_err(|u| refuse(format!("the cluster is not healthy ({})", u.why)))?;
    let leader = status.leader.clone().context("a leader")?;
    let engine = engine_of(engines, &leader)?;
    let scope = &cfg.hosts.cluster.name;
    let leader_volume = volumes::current(engine, scope).await?;
    let generation = crate::layout::data_volume_generation(scope, &leader_volume).unwrap_or(1);
    let (new_prefix, newest_backup) = match &cfg.hosts.backup {
        Some(b) => {
            let listing = crate::backup::list::list(cfg).await?;
            let newest = listing.backups.last().map(|b| b.name.clone());
            if newest.is_none() {
                return Err(refuse(format!(
                    "no backup in `{}`: take one first (`pgctl backup now`), it is the way back to PostgreSQL {from}",
                    b.s3_prefix
                )));
            }
            let prefix = next_prefix(&b.s3_prefix, from, opts.pg_major);
            let mut next = cfg.clone();
            if let Some(nb) = next.hosts.backup.as_mut() {
                nb.s3_prefix = prefix.clone();
            }
            let bucket = crate::s3::Bucket::connect(&next, crate::backup::Access::ReadOnly)?;
            if let Some(o) = bucket.list("").await?.first() {
                return Err(refuse(format!(
                    "the new archive prefix `{prefix}` is not empty ({}): the upgraded cluster starts a new archive there",
                    o.key
                )));
            }
            (Some(prefix), newest)
        }
        None => (None, None),
    };
    let new_cfg = upgraded_config(cfg, opts, new_prefix.as_deref());
    output::step(format!(
        "{leader}: the upgrade image (PostgreSQL {} with {from}'s binaries)",
        opts.pg_major
    ));
    let upgrade_image = crate::migrate::upgrade_image::ensure_upgrade_image(&new_cfg, engine, &cfg.hosts.cluster.image, from).await?;
    let size = member::psql(engine, "SELECT sum(pg_database_size(datname)) FROM pg_database").await?;
    Ok(Plan {
        from_major: from,
        to_major: opts.pg_major,
        from_image: cfg.hosts.cluster.image.clone(),
        image: opts.image.clone(),
        leader,
        leader_volume,
        new_volume: data_volume(scope, generation + 1),
        method: if opts.copy { "copy" } else { "link" },
        new_prefix,
        newest_backup,
        upgrade_image,
        size_bytes: size.trim().parse().unwrap_or(0),
    })
}

/// Starts the old cluster again on its volumes (containers were removed at the stop).
async fn start_old(cfg: &Config, opts: &Options, e: anyhow::Error, from: u32) -> anyhow::Error {
    match crate::cluster::up::up(cfg, &crate::cluster::up::UpOptions::new(opts.timeout)).await {
        Ok(_) => e.context(format!("the upgrade stopped before the point of no return: the cluster runs PostgreSQL {from} again, as before")),
        Err(up) => e.context(format!(
            "the upgrade stopped before the point of no return, and starting PostgreSQL {from} again failed too ({up:#}): its data volumes are untouched; run `pgctl up`"
        )),
    }
}

pub async fn execute(cfg: &Config, engines: &[Engine], plan: &Plan, opts: &Options) -> Result<Upgraded> {
    let scope = &cfg.hosts.cluster.name;
    let engine = engine_of(engines, &plan.leader)?;
    let mut phases = Phases::default();
    let stopped_at = Instant::now();
    phases.start("stop the cluster");
    member::psql(engine, "CHECKPOINT").await?;
    restore::archive_current_wal(engine).await;
    restore::stop_members(cfg, engines).await?;

    phases.start("pg_upgrade --check");
    let checked = async {
        let facts: VolumeFacts = from_volume::run_script(
            engine,
            &cfg.hosts.cluster.image,
            &[format!("{}:/old:ro", plan.leader_volume)],
            &["facts", "/old/pgdata"],
            vec![],
        )
        .await?;
        anyhow::ensure!(
            facts.state == "shut down",
            "the leader's data directory is `{}` after the stop, not cleanly shut down",
            facts.state
        );
        let old: OldCluster = from_volume::run_script(
            engine,
            &plan.upgrade_image,
            &[format!("{}:/old", plan.leader_volume)],
            &["check", &plan.from_major.to_string(), &plan.to_major.to_string(), &facts.dir],
            vec![],
        )
        .await?;
        let new_cfg = upgraded_config(cfg, opts, plan.new_prefix.as_deref());
        from_volume::timescaledb_matches(engine, &new_cfg, &old).await?;
        Ok::<_, anyhow::Error>((facts, old))
    };
    let (facts, old) = match checked.await {
        Ok(x) => x,
        Err(e) => return Err(start_old(cfg, opts, e, plan.from_major).await),
    };

    phases.start("pg_upgrade");
    let new_cfg = upgraded_config(cfg, opts, plan.new_prefix.as_deref());
    let job = from_volume::Plan {
        host: plan.leader.clone(),
        volume: plan.leader_volume.clone(),
        method: plan.method,
        facts,
        old: Some(old),
        upgrade_image: Some(plan.upgrade_image.clone()),
        new_volume: plan.new_volume.clone(),
    };
    if let Err(e) = from_volume::pg_upgrade_into(&new_cfg, engines, &job).await {
        return Err(start_old(cfg, opts, e, plan.from_major).await);
    }

    // The point of no return: hosts.toml says what now runs.
    let kept = crate::config::edit::set_string(&cfg.hosts_path, "cluster", "image", &opts.image, "before-major-upgrade")?;
    let text = std::fs::read_to_string(&cfg.hosts_path)?;
    let mut text = crate::config::edit::with_number_value(&text, "cluster", "postgres_major", opts.pg_major)
        .with_context(|| format!("{}: no postgres_major line in [cluster]", cfg.hosts_path.display()))?;
    if let Some(p) = &plan.new_prefix {
        text = crate::config::edit::with_string_value(&text, "backup", "s3_prefix", p)
            .with_context(|| format!("{}: no s3_prefix line in [backup]", cfg.hosts_path.display()))?;
    }
    std::fs::write(&cfg.hosts_path, text)?;
    output::step(format!(
        "{}: image, postgres_major{} updated (the previous file is {})",
        cfg.hosts_path.display(),
        if plan.new_prefix.is_some() { ", backup.s3_prefix" } else { "" },
        kept.display()
    ));

    let mut replicas: Vec<(&Engine, String)> = Vec::new();
    let mut kept_volumes = vec![format!("{}:{}", plan.leader, plan.leader_volume)];
    for h in cfg
        .hosts
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Patroni) && h.name != plan.leader)
    {
        let e = engine_of(engines, &h.name)?;
        let current = volumes::current(e, scope).await?;
        let generation = crate::layout::data_volume_generation(scope, &current).unwrap_or(1);
        kept_volumes.push(format!("{}:{current}", h.name));
        replicas.push((e, data_volume(scope, generation + 1)));
    }
    let replicas: Vec<(&Engine, &str)> = replicas.iter().map(|(e, v)| (*e, v.as_str())).collect();
    let migrated = from_volume::adopt(&new_cfg, engines, &job, &replicas, opts.timeout, opts.reindex, phases).await?;
    let downtime_seconds = downtime(&migrated.phases).unwrap_or_else(|| stopped_at.elapsed().as_secs_f64());
    Ok(Upgraded {
        migrated,
        downtime_seconds,
        kept_volumes,
        hosts_file_kept: kept,
    })
}

/// From the stop to the leader running: the phases up to and including "start the leader".
fn downtime(phases: &[(String, f64)]) -> Option<f64> {
    let end = phases.iter().position(|(p, _)| p == "start the leader")?;
    Some(phases[..=end].iter().filter(|(p, _)| !p.starts_with(' ')).map(|(_, s)| s).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_archive_generation_is_named_after_the_major() {
        assert_eq!(next_prefix("main", 15, 17), "main-pg17");
        assert_eq!(next_prefix("main-pg15", 15, 17), "main-pg17");
        assert_eq!(next_prefix("prod/db-pg15", 15, 16), "prod/db-pg16");
    }

    #[test]
    fn downtime_ends_when_the_leader_runs() {
        let phases: Vec<(String, f64)> = [
            ("stop the cluster", 5.0),
            ("pg_upgrade --check", 3.0),
            ("pg_upgrade", 4.0),
            ("clear the DCS scope", 10.0),
            ("start the leader", 8.0),
            ("rebuild the replicas", 18.0),
        ]
        .iter()
        .map(|(p, s)| (p.to_string(), *s))
        .collect();
        assert_eq!(downtime(&phases), Some(30.0));
    }
}
