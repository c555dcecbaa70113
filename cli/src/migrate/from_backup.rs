//! `pgctl migrate from-backup --prefix s3://bucket/path`: the cluster bootstraps from a
//! standalone PostgreSQL's archive. It is a restore whose source is another prefix: the backup
//! is fetched and replayed in a throwaway container (the source prefix only read, with the
//! read-only key), the cluster's superuser, replication and rewind roles are set to match
//! secrets.toml (every other role and password stays as the source had it), Patroni adopts the
//! data as leader with the cluster's own pg_hba, the replicas are built from it, and a first
//! full backup goes into the cluster's own, empty, prefix.

use crate::backup::elsewhere::{self, Archive};
use crate::backup::{self, target::Target};
use crate::config::{BackupEngine, Config, Secret};
use crate::docker::Engine;
use crate::restore::{self, Plan, Report, RestoreOptions};
use crate::{error, output};
use anyhow::Result;
use serde::Serialize;
use std::time::Duration;

pub struct FromBackup {
    /// `s3://bucket/path` of the source's archive (on the cluster's S3 endpoint).
    pub prefix: String,
    /// The source's engine [default: the cluster's].
    pub engine: Option<BackupEngine>,
    /// pgBackRest's stanza of the source.
    pub stanza: Option<String>,
    /// The source's client-side encryption key (WAL-G libsodium key, pgBackRest cipher pass).
    pub encryption_key: Option<Secret>,
    pub target: Target,
    pub backup: Option<String>,
    pub timeout: Duration,
}

#[derive(Debug, Serialize)]
pub struct Migrated {
    pub source: String,
    pub restore: Report,
    /// The first full backup into the cluster's own prefix.
    pub first_backup: String,
}

/// The configuration that reads the source's archive: the cluster's S3 endpoint, CA and keys,
/// the source's bucket, prefix, engine, stanza and encryption key.
pub fn source_config(cfg: &Config, opts: &FromBackup) -> Result<Config> {
    let engine = opts.engine.unwrap_or(cfg.hosts.cluster.backup_engine);
    if engine == BackupEngine::Pgbackrest && opts.stanza.is_none() {
        return Err(error::usage(
            "--engine pgbackrest needs --stanza: the source repository's stanza name",
        ));
    }
    let archive = Archive {
        url: opts.prefix.clone(),
        engine: Some(engine),
        stanza: opts.stanza.clone(),
        encryption_key: opts.encryption_key.clone(),
    };
    elsewhere::config_for(cfg, &archive).map_err(|e| error::usage(format!("--prefix: {e:#}")))
}

/// Pre-flight: a source prefix that is not the cluster's, a cluster that is not running, the
/// cluster's own prefix empty, and the restore's own pre-flight (a backup of the same major
/// before the target, every host with the image). Changes nothing.
pub async fn plan_from_backup(cfg: &Config, engines: &[Engine], opts: &FromBackup) -> Result<(Config, Plan)> {
    let source = source_config(cfg, opts)?;
    let own = cfg.hosts.backup.as_ref().expect("source_config checked [backup]");
    let theirs = source.hosts.backup.as_ref().expect("copied from the cluster's");
    if (own.s3_bucket.as_str(), own.s3_prefix.trim_matches('/')) == (theirs.s3_bucket.as_str(), theirs.s3_prefix.as_str()) {
        return Err(error::refused(format!(
            "--prefix {} is the cluster's own backup.s3_prefix: the source's archive must stay apart from the one the cluster writes; nothing was changed",
            opts.prefix
        )));
    }
    super::check_new_cluster(cfg, engines).await?;
    let ropts = restore_options(opts);
    let plan = restore::plan(&source, cfg, engines, &ropts).await?;
    Ok((source, plan))
}

/// Carries out the plan, then takes the first full backup into the cluster's own prefix.
pub async fn from_backup(cfg: &Config, source: &Config, engines: &[Engine], plan: Plan, opts: &FromBackup) -> Result<Migrated> {
    let label = plan.clone_of.clone().unwrap_or_default();
    let report = restore::execute(source, cfg, engines, plan, &restore_options(opts)).await?;
    output::step("first full backup into the cluster's own prefix");
    let taken = backup::backup_now(cfg, engines, true).await.map_err(|e| {
        anyhow::anyhow!("the cluster runs on the migrated data, but its first full backup failed: {e:#}\n  Take it with: pgctl backup now")
    })?;
    Ok(Migrated {
        source: label,
        restore: report,
        first_backup: format!("on {} in {}", taken.host, output::seconds(taken.seconds)),
    })
}

fn restore_options(opts: &FromBackup) -> RestoreOptions {
    RestoreOptions {
        target: opts.target.clone(),
        timeline: "latest".into(),
        backup: opts.backup.clone(),
        keep_old: true,
        timeout: opts.timeout,
    }
}

/// Reads the source's encryption key from a file (never from argv or the environment).
pub fn read_key(path: &std::path::Path) -> Result<Secret> {
    let text = std::fs::read_to_string(path).map_err(|e| error::usage(format!("{}: {e}", path.display())))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(error::usage(format!("{}: empty", path.display())));
    }
    Ok(Secret(key.to_string()))
}
