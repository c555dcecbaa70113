//! `pgctl restore`: point-in-time restore in place, into a clone, or rolled back.

use super::views::{leader_timeline, status_text};
use super::{Ctx, Wait};
use crate::backup::target::Target;
use crate::error::{self, Classify, Kind};
use crate::restore;
use crate::{config, docker, output};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

pub const LONG_ABOUT: &str = "Point-in-time restore of the whole cluster from its backups.\n\n\
Pre-flight first, before anything stops: the repository is read with the read-only key, a base backup before the target must exist \
and the target must lie in the restorable window (both are printed), every host must answer and have the image, and each must have \
room for a second copy of the data. The plan is printed and must be confirmed by typing the cluster name (--yes in scripts).\n\n\
Then: the current WAL segment is archived, Patroni stops on the replicas and then the leader, the backup is fetched into a NEW data \
volume generation on the leader's host (the old volumes are never touched), PostgreSQL replays WAL to the target and is promoted onto a \
new timeline, the DCS scope is cleared, the restored member starts alone and leads, and the other members take copies of the same \
backup, fetched from S3 meanwhile, and follow it (a clone's copy the leader). \
The cluster then archives its new timeline to its own prefix. Progress is shown throughout, and the time of each phase at the end.\n\n\
`pgctl restore --rollback` deletes the restored generation and puts the previous data back.\n\n\
Examples:\n  pgctl restore --target-time '2026-05-17 10:00:00+03'\n  pgctl restore                      (to the latest archived WAL)\n  \
pgctl restore --rollback\n  pgctl restore --into clone/hosts.toml   (a new cluster from this one's backups)";

/// A restore (or a rollback) never waits less than this for the cluster to come back.
const MIN_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Args)]
pub struct RestoreArgs {
    /// Recover to this time; a time zone is required (e.g. '2026-05-17 10:00:00+03', '... UTC')
    #[arg(long)]
    target_time: Option<String>,
    /// Recover to this WAL position (e.g. 0/3000060)
    #[arg(long)]
    target_lsn: Option<String>,
    /// Recover to this restore point (pg_create_restore_point)
    #[arg(long)]
    target_name: Option<String>,
    /// Timeline to follow: latest or a number
    #[arg(long, default_value = "latest")]
    target_timeline: String,
    /// The base backup to start from [default: the newest one that ends before the target]
    #[arg(long)]
    backup: Option<String>,
    /// Delete the old data volumes once the cluster is stopped (when there is no room for two copies; no rollback then)
    #[arg(long)]
    no_keep_old: bool,
    /// Undo the last restore: delete the restored data and put the previous data back
    #[arg(long, conflicts_with_all = ["target_time", "target_lsn", "target_name", "backup", "no_keep_old", "into"])]
    rollback: bool,
    /// Clone: restore this cluster's backups into the cluster of another hosts.toml (read with the read-only key; the clone archives into its own prefix)
    #[arg(long, value_name = "HOSTS_TOML")]
    into: Option<PathBuf>,
    #[command(flatten)]
    wait: Wait,
}

pub async fn run(a: RestoreArgs, ctx: &Ctx) -> Result<()> {
    if a.rollback {
        return rollback(ctx, a.wait).await;
    }
    let target = Target::from_flags(a.target_time.as_deref(), a.target_lsn.as_deref(), a.target_name.as_deref()).kind(Kind::Config)?;
    if a.target_timeline != "latest" && a.target_timeline.parse::<u32>().is_err() {
        return Err(error::usage(format!(
            "--target-timeline {}: expected `latest` or a timeline number",
            a.target_timeline
        )));
    }
    let opts = restore::RestoreOptions {
        target,
        timeline: a.target_timeline,
        backup: a.backup,
        keep_old: !a.no_keep_old,
        timeout: a.wait.duration().max(MIN_TIMEOUT),
    };
    let source = ctx.load()?;
    // A clone's hosts.toml has its own secrets.toml beside it.
    let cfg = match &a.into {
        Some(path) => config::load(path, None)?,
        None => source.clone(),
    };
    let engines = docker::connect_all(&cfg).await?;
    let plan = restore::plan(&source, &cfg, &engines, &opts).await?;
    output::passthrough(&plan.describe(&cfg, opts.keep_old));
    ctx.confirm_typed("restore now", &cfg.hosts.cluster.name)?;
    let report = restore::execute(&source, &cfg, &engines, plan, &opts).await?;
    output::result(&report, |r| {
        format!(
            "{}\nrestored to {} from backup {}: last transaction replayed {}; the cluster runs on timeline {}\n{}{}",
            status_text(&r.status),
            r.plan.target,
            r.plan.backup.name,
            r.recovered.last_replayed.as_deref().unwrap_or("none"),
            leader_timeline(&r.status),
            output::phases(&r.phases),
            if opts.keep_old {
                "the previous data is kept; `pgctl restore --rollback` puts it back"
            } else {
                ""
            }
        )
    })
}

async fn rollback(ctx: &Ctx, wait: Wait) -> Result<()> {
    let (cfg, engines) = ctx.connect_all().await?;
    let plan = restore::rollback::plan(&cfg, &engines).await?;
    output::passthrough(&plan.describe(&cfg));
    ctx.confirm_typed("roll back now", &cfg.hosts.cluster.name)?;
    let report = restore::rollback::execute(&cfg, &engines, plan, wait.duration().max(MIN_TIMEOUT)).await?;
    output::result(&report, |r| {
        format!(
            "{}\nrolled back: the previous data runs again, on timeline {}\n{}",
            status_text(&r.status),
            leader_timeline(&r.status),
            output::phases(&r.phases)
        )
    })
}
