//! `pgctl migrate`: bring a standalone PostgreSQL into the cluster.

use super::views::{leader_timeline, status_text};
use super::{Ctx, Wait};
use crate::backup::target::Target;
use crate::config::BackupEngine;
use crate::error::{Classify, Kind};
use crate::migrate::{self, from_primary};
use crate::output;
use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
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
    /// Start the cluster as a standby streaming from a running standalone PostgreSQL (same major)
    #[command(
        long_about = "Start the cluster as a Patroni standby cluster that streams from a running standalone PostgreSQL.\n\n\
Pre-flight: the source answers as a superuser (--source-password-file), is a primary of the cluster's major with wal_level \
replica or logical; the cluster is not running and its own backup.s3_prefix is empty. Then, on the source, pgctl creates \
(or updates) the role `replicator` with the cluster's replication password and the slot `pgctl_migration`, proves that a \
cluster host can open a replication connection (else it prints the pg_hba.conf line to add), and starts the cluster: its \
leader takes a basebackup from the source and keeps streaming; its replicas cascade from it. The source keeps taking writes. \
Watch the lag with `pgctl migrate lag`, then switch with `pgctl migrate cutover`.\n\n\
Example:\n  pgctl migrate from-primary --source-host 10.0.0.5 --source-password-file source-superuser.pw"
    )]
    FromPrimary {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        wait: Wait,
    },
    /// How far the standby cluster is behind the source (bytes of WAL)
    Lag {
        #[command(flatten)]
        source: SourceArgs,
    },
    /// Switch from the source to the standby cluster: source read-only, last byte replayed, cluster promoted
    #[command(long_about = "Switch the applications' writes from the source to the cluster.\n\n\
The source is made read-only (ALTER SYSTEM SET default_transaction_read_only, reloaded) and its client sessions are ended; \
the cluster's standby leader replays up to the source's last WAL position; then Patroni promotes it (standby_cluster leaves \
its dynamic configuration). pgctl reports the time between the source refusing writes and the cluster taking them, drops \
the slot on the source and takes the cluster's first full backup. Point the applications at the cluster. Until the cluster \
takes writes, the way back is `ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf();` on the source.\n\n\
Example:\n  pgctl migrate cutover --source-host 10.0.0.5 --source-password-file source-superuser.pw")]
    Cutover {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        wait: Wait,
    },
}

/// The standalone server a streaming migration follows.
#[derive(Args)]
pub struct SourceArgs {
    /// The source's address, as the cluster's hosts reach it
    #[arg(long)]
    source_host: String,
    #[arg(long, default_value_t = 5432)]
    source_port: u16,
    /// A superuser of the source
    #[arg(long, default_value = "postgres")]
    source_user: String,
    /// A file holding that superuser's password (none: the source trusts the cluster's hosts)
    #[arg(long, value_name = "FILE")]
    source_password_file: Option<PathBuf>,
}

impl SourceArgs {
    fn server(&self) -> Result<from_primary::SourceServer> {
        Ok(from_primary::SourceServer {
            host: self.source_host.clone(),
            port: self.source_port,
            user: self.source_user.clone(),
            password: self
                .source_password_file
                .as_deref()
                .map(migrate::from_backup::read_key)
                .transpose()?,
        })
    }
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
        MigrateCommand::FromPrimary { source, wait } => {
            let server = source.server()?;
            let (cfg, engines) = ctx.connect_all().await?;
            let facts = from_primary::check(&cfg, &engines, &server).await?;
            output::step(format!(
                "source {}:{}: PostgreSQL {}, system {}, wal_level {}",
                server.host, server.port, facts.major, facts.system_id, facts.wal_level
            ));
            ctx.confirm(&format!(
                "create role replicator and slot {} on the source and start cluster `{}` as its standby",
                from_primary::SLOT,
                cfg.hosts.cluster.name
            ))?;
            let following = from_primary::follow(&cfg, &engines, &server, facts, wait.duration().max(MIN_TIMEOUT)).await?;
            output::result(&following, |f| {
                format!(
                    "{}\ncluster `{}` follows {} ({} bytes behind); switch with `pgctl migrate cutover`",
                    status_text(&f.status),
                    cfg.hosts.cluster.name,
                    f.source,
                    f.lag_bytes
                )
            })
        }
        MigrateCommand::Lag { source } => {
            let server = source.server()?;
            let (cfg, engines) = ctx.connect_all().await?;
            let bytes = from_primary::lag(&cfg, &engines, &server).await?;
            output::result(&serde_json::json!({ "lag_bytes": bytes }), |_| {
                format!("{bytes} bytes behind {}:{}", server.host, server.port)
            })
        }
        MigrateCommand::Cutover { source, wait } => {
            let server = source.server()?;
            let (cfg, engines) = ctx.connect_all().await?;
            ctx.confirm_typed("make the source read-only and promote", &cfg.hosts.cluster.name)?;
            let done = from_primary::cutover(&cfg, &engines, &server, wait.duration().max(MIN_TIMEOUT)).await?;
            output::result(&done, |c| {
                format!(
                    "{}\ncut over from {} at {}: the cluster took writes {} after the source stopped{}",
                    status_text(&c.status),
                    c.source,
                    c.final_lsn,
                    output::seconds(c.write_gap_seconds),
                    c.first_backup
                        .as_ref()
                        .map(|b| format!("; first full backup {b}"))
                        .unwrap_or_default()
                )
            })
        }
    }
}
