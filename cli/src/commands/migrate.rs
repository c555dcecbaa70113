//! `pgctl migrate`: bring a standalone PostgreSQL into the cluster.

use super::views::{leader_timeline, status_text};
use super::{Ctx, Wait};
use crate::backup::target::Target;
use crate::config::BackupEngine;
use crate::error::{Classify, Kind};
use crate::migrate::{self, from_primary, from_volume};
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
    /// Make the cluster from a standalone PostgreSQL's data volume of an older major, upgraded with pg_upgrade
    #[command(
        long_about = "Make the cluster from the data volume of a standalone PostgreSQL of an older major (pg_upgrade).\n\n\
The volume is on one of the cluster's database hosts (--host; it becomes the leader); --source-image is the image the \
standalone server ran (Debian layout: /usr/lib/postgresql/N), present on that host. Stop the standalone server cleanly first.\n\n\
Pre-flight (no data changes): pg_controldata (cleanly shut down, the major, checksums, free space); an upgrade image built on \
that host (the cluster's image plus the old major's binaries and the libraries they need, resolved with ldd); one clean \
start and stop of the old server to read its locale, install user and extensions; `pg_upgrade --check` against a scratch \
cluster made like the old one; the cluster is not running, has no data volume on that host, and its own backup.s3_prefix \
is empty. The plan is printed and must be confirmed by typing the cluster name (--yes in scripts).\n\n\
Then pg_upgrade --link (default: the new cluster shares the old files, fast, no extra space) or --copy (keeps the old \
directory as it was, needs the space twice) into the host's new cluster volume; Patroni adopts it as leader; the \
cluster's superuser, replication and rewind roles are set to match secrets.toml (every other role keeps its password); \
every extension is updated (postgis_extensions_upgrade(), ALTER EXTENSION ... UPDATE); vacuumdb --analyze-in-stages \
rebuilds the statistics; indexes under a glibc collation are reported when the C library changed (--reindex rebuilds \
them); the replicas are built from the leader and a first full backup starts the cluster's own archive.\n\n\
The way back: if pg_upgrade fails, the old directory is restored and starts again (after --link its global/pg_control is \
renamed back). The point of no return is the new cluster's first start, right after pg_upgrade (pgctl sets the cluster's \
roles in it before Patroni starts): after --link the old files are the new cluster's.\n\n\
--method dump (slower, always possible: another install user, a locale the new image lacks): the cluster starts empty, \
the old server runs in a container of its image on the volume (loopback only, archiving off), PostgreSQL's new pg_dumpall \
reads it and psql restores everything (roles with their passwords, databases, extensions at the new image's versions) \
into the leader; the old directory stays usable.\n\n\
Examples:\n  pgctl migrate from-volume --host pg1 --volume legacy-pgdata --source-image postgis/postgis:13-3.4\n  \
pgctl migrate from-volume --host pg1 --volume legacy-pgdata --source-image postgis/postgis:13-3.4 --method dump"
    )]
    FromVolume {
        /// The database host the volume is on (it becomes the leader)
        #[arg(long)]
        host: String,
        /// The standalone server's data volume on that host
        #[arg(long)]
        volume: String,
        /// The image the standalone server ran (present on that host)
        #[arg(long, value_name = "IMAGE")]
        source_image: String,
        /// upgrade: pg_upgrade on the host (fast); dump: the old server in its own container, pg_dumpall into the cluster (slower, always possible)
        #[arg(long, value_enum, default_value_t = MethodArg::Upgrade)]
        method: MethodArg,
        /// With --method upgrade: pg_upgrade --copy instead of --link, keeping the old directory as it was (needs the space twice)
        #[arg(long)]
        copy: bool,
        /// Rebuild the indexes whose collation may have changed with the C library
        #[arg(long)]
        reindex: bool,
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
pub enum MethodArg {
    Upgrade,
    Dump,
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
        MigrateCommand::FromVolume {
            host,
            volume,
            source_image,
            method,
            copy,
            reindex,
            wait,
        } => {
            let opts = from_volume::FromVolume {
                method: match method {
                    MethodArg::Upgrade => from_volume::Method::Upgrade,
                    MethodArg::Dump => from_volume::Method::Dump,
                },
                host,
                volume,
                source_image,
                copy,
                reindex,
                timeout: wait.duration().max(MIN_TIMEOUT),
            };
            let (cfg, engines) = ctx.connect_all().await?;
            let plan = from_volume::plan(&cfg, &engines, &opts).await?;
            output::passthrough(&plan.describe(&cfg));
            ctx.confirm_typed("upgrade and migrate now", &cfg.hosts.cluster.name)?;
            let done = from_volume::execute(&cfg, &engines, plan, &opts).await?;
            output::result(&done, |m| {
                let extensions = m
                    .extensions
                    .iter()
                    .map(|e| format!("{}.{} {} -> {}", e.database, e.name, e.from, e.to))
                    .collect::<Vec<_>>();
                format!(
                    "{}\nmigrated PostgreSQL {} to {} (pg_upgrade --{}); extensions updated: {}; first full backup {}\n{}",
                    status_text(&m.status),
                    m.old_major,
                    m.new_major,
                    m.method,
                    if extensions.is_empty() {
                        "none".into()
                    } else {
                        extensions.join(", ")
                    },
                    m.first_backup.as_deref().unwrap_or("none (no [backup])"),
                    output::phases(&m.phases)
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
