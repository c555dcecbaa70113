//! `pgctl backup list`: what the repository holds, read straight from S3 by pgctl itself (the
//! engine's own catalog and the archived WAL's upload times) with the read-only key — so it
//! works with every database host down and can never write. The up pre-flight still asks the
//! engine (`repository_system_id`) on a host, in that host's network.

use super::{engine, Access};
use crate::config::Config;
use crate::{docker, output};
use anyhow::{bail, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Backup {
    pub name: String,
    pub kind: String,
    /// Unix seconds.
    pub start: i64,
    pub stop: i64,
    pub size_bytes: u64,
    pub wal_start: String,
    pub wal_stop: String,
    /// The PostgreSQL major version the backup was taken from, when the catalog says.
    pub pg_major: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Listing {
    pub backups: Vec<Backup>,
    /// The end of the oldest backup: nothing before it can be restored.
    pub earliest_restorable: Option<i64>,
    /// When the newest WAL segment reached the archive (Unix seconds): no later point in time
    /// can be restored. (Only transactions before it, in fact: WAL still being written is not
    /// archived yet.)
    pub latest_restorable: Option<i64>,
    /// The newest WAL segment in the archive (latest restorable point lies in it).
    pub wal_max: Option<String>,
}

pub async fn list(cfg: &Config) -> Result<Listing> {
    super::require_backup(cfg)?;
    let bucket = crate::s3::Bucket::connect(cfg, Access::ReadOnly)?;
    let e = engine(cfg);
    let mut backups = e.read_catalog(cfg, &bucket).await?;
    backups.sort_by_key(|b| b.stop);
    let wal = bucket.list(&e.wal_dir(cfg)).await?;
    let segments: Vec<(&str, i64)> = wal.iter().filter_map(|o| Some((segment_name(&o.key)?, o.modified))).collect();
    Ok(Listing {
        earliest_restorable: backups.iter().map(|b| b.stop).min(),
        latest_restorable: segments.iter().map(|s| s.1).max(),
        wal_max: segments.iter().map(|s| s.0).max().map(str::to_string),
        backups,
    })
}

/// The WAL segment an archived object holds: its file name starts with the segment's 24 hex
/// digits (WAL-G `<seg>.lz4`, pgBackRest `<seg>-<sha1>.zst`). History files and backup labels
/// (`<seg>.<offset>.backup`) are not segments.
fn segment_name(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    let segment = name.get(..24)?;
    let rest = &name[24..];
    (segment.chars().all(|c| c.is_ascii_hexdigit()) && !rest.ends_with(".backup") && !rest.contains(".partial")).then_some(segment)
}

/// The system identifier whose archive the repository (this cluster's prefix) holds, read from
/// `engine` with `access`. `Err` when the repository cannot be read at all (credentials,
/// bucket, endpoint, CA): a pre-flight failure before anything changes.
pub async fn repository_system_id(cfg: &Config, engine: &docker::Engine, access: Access) -> Result<Option<String>> {
    let e = super::engine(cfg);
    let text = read_repository(cfg, engine, access, &e.list_backups(cfg)).await?;
    match e.system_id(&text)? {
        Some(id) => Ok(Some(id)),
        None => super::owner::recorded(cfg).await,
    }
}

/// Runs the engine's repository command `cmd` in a throwaway container on `engine`, in that
/// host's network (it reaches S3 as the cluster does), with the key `access` selects.
async fn read_repository(cfg: &Config, engine: &docker::Engine, access: Access, cmd: &[String]) -> Result<String> {
    let image = &cfg.hosts.cluster.image;
    if docker::image_id(&engine.docker, image).await?.is_none() {
        bail!("reading backups runs the backup engine from image {image}, which {} does not have: build it (`pgctl image build`) or deliver it", engine.host);
    }
    let owner = crate::image::postgres_owner(&crate::image::manifest(engine, image).await?, image)?;
    let ro = cfg.secrets.s3.readonly_access_key_id.is_some() && cfg.secrets.s3.readonly_secret_access_key.is_some();
    let access = if access == Access::ReadOnly && !ro {
        output::warn("no read-only S3 key in secrets; reading with the read-write key");
        Access::ReadWrite
    } else {
        access
    };
    let upload = super::upload_files(cfg, access, owner)?;
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    // The control node's own network (it reaches S3 the way the user does), not a bridge.
    let extra_hosts = super::extra_hosts(cfg);
    let host_config = bollard::models::HostConfig {
        network_mode: Some("host".into()),
        extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
        ..Default::default()
    };
    let run = docker::run_once(&engine.docker, image, &cmd, host_config, Some("postgres"), &upload);
    let out = tokio::time::timeout(std::time::Duration::from_secs(180), run).await.map_err(|_| {
        crate::error::tagged(
            crate::error::Kind::Unreachable,
            format!(
                "reading the backup repository took over 3 minutes: is {} reachable from this machine?",
                cfg.hosts.backup.as_ref().map(|b| b.s3_endpoint.as_str()).unwrap_or_default()
            ),
        )
    })??;
    // pgBackRest's info exits non-zero only when it cannot run; repository state is in JSON.
    if out.stdout.trim_start().starts_with(['[', '{']) {
        return Ok(out.stdout);
    }
    out.ok(&format!("reading the backup repository from {}", engine.host))
}

#[cfg(test)]
mod tests {
    #[test]
    fn segment_names() {
        assert_eq!(
            super::segment_name("wal_005/000000010000000000000004.lz4"),
            Some("000000010000000000000004")
        );
        assert_eq!(
            super::segment_name("archive/lab/15-1/0000000100000000/000000010000000000000003-15df1304.zst"),
            Some("000000010000000000000003")
        );
        assert_eq!(
            super::segment_name("archive/lab/15-1/0000000100000000/000000010000000000000002.00000028.backup"),
            None
        );
        assert_eq!(super::segment_name("wal_005/00000002.history.lz4"), None);
        assert_eq!(super::segment_name("archive/lab/archive.info"), None);
    }
}
