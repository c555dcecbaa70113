//! `pgctl migrate`: bring a standalone PostgreSQL into the cluster.

use super::views::{leader_timeline, status_text};
use super::{Ctx, Wait};
use crate::backup::target::Target;
use crate::config::BackupEngine;
use crate::error::{Classify, Kind};
use crate::{migrate, output};
use anyhow::Result;
use clap::{Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Make the cluster from a standalone PostgreSQL's WAL-G or pgBackRest archive in S3
    #[command(
        long_about = "Make the cluster from a standalone PostgreSQL's WAL-G or pgBackRest archive in S3.\n\n\
The source archives into its own prefix on the cluster's S3 endpoint. The prefix is only read, with the read-only key from \
secrets.toml. Pre-flight: the source has a backup of the cluster's PostgreSQL major before the target, the cluster is not \
running, and its own backup.s3_prefix is empty (a migrated cluster starts a new archive). The plan is printed and must be \
confirmed by typing the cluster name (--yes in scripts).\n\n\
Then the backup is fetched and replayed to the target (default: the end of the archive) in a throwaway container on one \
host. The cluster's superuser, replication and rewind roles are created or updated to match secrets.toml; every other role \
and its password stays as the source had it. Patroni adopts the data as leader, with the cluster's pg_hba. The replicas are \
built from it, and a first full backup goes into the cluster's own prefix.\n\n\
Stop writes to the source before you migrate to its latest point: what it writes after its last archived segment is not \
in the cluster.\n\n\
Examples:\n  pgctl migrate from-backup --prefix s3://backups/legacy-db\n  \
pgctl migrate from-backup --prefix s3://backups/legacy --engine pgbackrest --stanza main --target-time '2026-12-01 10:00:00+00'\n  \
pgctl migrate from-backup --prefix s3://backups/legacy --encryption-key-file legacy-libsodium.key"
    )]
    FromBackup {
        /// The source's archive: s3://BUCKET/PATH on the cluster's S3 endpoint
        #[arg(long)]
        prefix: String,
        /// The source's backup engine [default: the cluster's]
        #[arg(long, value_enum)]
        engine: Option<EngineArg>,
        /// pgBackRest: the source repository's stanza
        #[arg(long)]
        stanza: Option<String>,
        /// A file holding the source's client-side encryption key (WAL-G libsodium key or pgBackRest cipher pass), if it encrypts
        #[arg(long, value_name = "FILE")]
        encryption_key_file: Option<PathBuf>,
        /// Recover to this time (a time zone is required) instead of the end of the archive
        #[arg(long)]
        target_time: Option<String>,
        /// Recover to this WAL position
        #[arg(long)]
        target_lsn: Option<String>,
        /// The base backup to start from [default: the newest one that ends before the target]
        #[arg(long)]
        backup: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EngineArg {
    Walg,
    Pgbackrest,
}

/// A migration never waits less than this for the cluster to come up.
const MIN_TIMEOUT: Duration = Duration::from_secs(600);

pub async fn run(command: MigrateCommand, ctx: &Ctx) -> Result<()> {
    match command {
        MigrateCommand::FromBackup {
            prefix,
            engine,
            stanza,
            encryption_key_file,
            target_time,
            target_lsn,
            backup,
            wait,
        } => {
            let opts = migrate::FromBackup {
                prefix,
                engine: engine.map(|e| match e {
                    EngineArg::Walg => BackupEngine::Walg,
                    EngineArg::Pgbackrest => BackupEngine::Pgbackrest,
                }),
                stanza,
                encryption_key: encryption_key_file.as_deref().map(migrate::from_backup::read_key).transpose()?,
                target: Target::from_flags(target_time.as_deref(), target_lsn.as_deref(), None).kind(Kind::Config)?,
                backup,
                timeout: wait.duration().max(MIN_TIMEOUT),
            };
            let (cfg, engines) = ctx.connect_all().await?;
            let (source, plan) = migrate::plan_from_backup(&cfg, &engines, &opts).await?;
            output::passthrough(&plan.describe(&cfg, false));
            ctx.confirm_typed("migrate now", &cfg.hosts.cluster.name)?;
            let done = migrate::from_backup(&cfg, &source, &engines, plan, &opts).await?;
            output::result(&done, |m| {
                format!(
                    "{}\nmigrated {} to {}: last transaction replayed {}; the cluster runs on timeline {}; first full backup {}\n{}",
                    status_text(&m.restore.status),
                    m.source,
                    m.restore.plan.target,
                    m.restore.recovered.last_replayed.as_deref().unwrap_or("none"),
                    leader_timeline(&m.restore.status),
                    m.first_backup,
                    output::phases(&m.restore.phases)
                )
            })
        }
    }
}
