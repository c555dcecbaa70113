//! `pgctl backup list`: what the repository holds, read straight from S3 by the backup engine
//! itself in a throwaway container on the control node's engine, with the read-only key —
//! so it works without any running cluster and can never write.

use super::{command, Access};
use crate::config::{BackupEngine, Config};
use crate::docker;
use anyhow::{bail, Context, Result};
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
    if cfg.hosts.backup.is_none() {
        bail!("{} has no [backup] section", cfg.hosts_path.display());
    }
    let local = docker::local().await?;
    let text = read_repository(cfg, &local, Access::ReadOnly, Read::Backups).await?;
    match cfg.hosts.cluster.backup_engine {
        BackupEngine::Pgbackrest => {
            let mut listing = parse_pgbackrest(&text)?;
            let archive = read_repository(cfg, &local, Access::ReadOnly, Read::Archive).await?;
            listing.latest_restorable = newest_segment_time(&archive)?;
            Ok(listing)
        }
        BackupEngine::Walg => parse_walg(&text),
    }
}

/// What to read from the repository.
#[derive(Clone, Copy)]
enum Read {
    Backups,
    /// The WAL archive's files with their upload times (pgBackRest).
    Archive,
}

/// The system identifier whose archive the repository (this cluster's prefix) holds, read from
/// `engine` with `access`. `Err` when the repository cannot be read at all (credentials,
/// bucket, endpoint, CA): a pre-flight failure before anything changes.
pub async fn repository_system_id(cfg: &Config, engine: &docker::Engine, access: Access) -> Result<Option<String>> {
    let text = read_repository(cfg, engine, access, Read::Backups).await?;
    match cfg.hosts.cluster.backup_engine {
        BackupEngine::Pgbackrest => {
            let v: serde_json::Value = serde_json::from_str(&text).context("pgbackrest info output")?;
            let stanza = v.as_array().and_then(|a| a.first()).context("no stanza in the repository")?;
            match stanza["status"]["code"].as_i64().unwrap_or(0) {
                // 1: nothing in this prefix yet.
                1 => Ok(None),
                0 | 2 => Ok(stanza["db"].as_array().and_then(|d| d.last()).and_then(|d| d["system-id"].as_u64()).map(|id| id.to_string())),
                code => bail!(
                    "the S3 repository cannot be read (pgBackRest status {code}: {}): check the endpoint, bucket, keys and CA in hosts.toml/secrets.toml",
                    stanza["status"]["message"].as_str().unwrap_or_default()
                ),
            }
        }
        // WAL-G keeps no system identifier in a listing; its WALG_PREVENT_WAL_OVERWRITE guards.
        BackupEngine::Walg => Ok(None),
    }
}

/// Runs the engine's repository listing in a throwaway container on `engine`, in that host's
/// network (it reaches S3 as the cluster does), with the key `access` selects.
async fn read_repository(cfg: &Config, engine: &docker::Engine, access: Access, what: Read) -> Result<String> {
    let image = &cfg.hosts.cluster.image;
    if docker::image_id(&engine.docker, image).await?.is_none() {
        bail!("reading backups runs the backup engine from image {image}, which {} does not have: build it (`pgctl image build`) or deliver it", engine.host);
    }
    let owner = crate::image::postgres_owner(&crate::image::manifest(engine, image).await?, image)?;
    let ro = cfg.secrets.s3.readonly_access_key_id.is_some() && cfg.secrets.s3.readonly_secret_access_key.is_some();
    let access = if access == Access::ReadOnly && !ro {
        eprintln!("warning: no read-only S3 key in secrets; reading with the read-write key");
        Access::ReadWrite
    } else {
        access
    };
    let upload = super::upload_files(cfg, access, owner)?;
    let archive = format!("archive/{}", cfg.hosts.cluster.name);
    let args: Vec<&str> = match (cfg.hosts.cluster.backup_engine, what) {
        (BackupEngine::Pgbackrest, Read::Backups) => vec!["info", "--output=json"],
        (BackupEngine::Pgbackrest, Read::Archive) => vec!["repo-ls", "--output=json", "--recurse", &archive],
        (BackupEngine::Walg, _) => vec!["backup-list", "--detail", "--json"],
    };
    let cmd = command(cfg, &args);
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
        anyhow::anyhow!(
            "reading the backup repository took over 3 minutes: is {} reachable from this machine?",
            cfg.hosts.backup.as_ref().map(|b| b.s3_endpoint.as_str()).unwrap_or_default()
        )
    })??;
    // pgBackRest's info exits non-zero only when it cannot run; repository state is in JSON.
    if out.stdout.trim_start().starts_with(['[', '{']) {
        return Ok(out.stdout);
    }
    out.ok(&format!("reading the backup repository from {}", engine.host))
}

/// `pgbackrest info --output=json`: one stanza with backups and archive ranges.
fn parse_pgbackrest(text: &str) -> Result<Listing> {
    let v: serde_json::Value = serde_json::from_str(text).context("pgbackrest info output")?;
    let stanza = v.as_array().and_then(|a| a.first()).context("no stanza in the repository")?;
    // pgBackRest's status: 0 ok, 2 no valid backups yet; anything else means unreadable.
    match stanza["status"]["code"].as_i64().unwrap_or(0) {
        0 | 2 => {}
        code => {
            let repo_errors: Vec<String> = stanza["repo"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["status"]["message"].as_str().map(str::to_string))
                .collect();
            bail!(
                "the repository cannot be read (pgBackRest status {code}: {}) {}",
                stanza["status"]["message"].as_str().unwrap_or_default(),
                repo_errors.join("; ")
            );
        }
    }
    let backups: Vec<Backup> = stanza["backup"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| Backup {
            name: b["label"].as_str().unwrap_or_default().into(),
            kind: b["type"].as_str().unwrap_or_default().into(),
            start: b["timestamp"]["start"].as_i64().unwrap_or_default(),
            stop: b["timestamp"]["stop"].as_i64().unwrap_or_default(),
            size_bytes: b["info"]["size"].as_u64().unwrap_or_default(),
            wal_start: b["archive"]["start"].as_str().unwrap_or_default().into(),
            wal_stop: b["archive"]["stop"].as_str().unwrap_or_default().into(),
        })
        .collect();
    Ok(Listing {
        earliest_restorable: backups.iter().map(|b| b.stop).min(),
        latest_restorable: None,
        wal_max: wal_max(stanza),
        backups,
    })
}

/// `pgbackrest repo-ls --output=json --recurse archive/<stanza>`: the upload time of the newest
/// WAL segment (names start with 24 hex digits; history files do not count).
fn newest_segment_time(text: &str) -> Result<Option<i64>> {
    let v: serde_json::Value = serde_json::from_str(text).context("pgbackrest repo-ls output")?;
    let Some(files) = v.as_object() else { return Ok(None) };
    Ok(files
        .iter()
        .filter(|(path, f)| {
            let name = path.rsplit('/').next().unwrap_or_default();
            f["type"] == "file" && name.len() > 24 && name[..24].chars().all(|c| c.is_ascii_hexdigit()) && !name.ends_with(".backup")
        })
        .filter_map(|(_, f)| f["time"].as_i64())
        .max())
}

fn wal_max(stanza: &serde_json::Value) -> Option<String> {
    stanza["archive"]
        .as_array()?
        .iter()
        .filter_map(|a| a["max"].as_str())
        .max()
        .map(str::to_string)
}

/// `wal-g backup-list --detail --json`.
fn parse_walg(text: &str) -> Result<Listing> {
    let v: serde_json::Value = serde_json::from_str(text).context("wal-g backup-list output")?;
    let time = |s: &serde_json::Value| {
        s.as_str()
            .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
            .map(|t| t.unix_timestamp())
            .unwrap_or_default()
    };
    let backups: Vec<Backup> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| Backup {
            name: b["backup_name"].as_str().unwrap_or_default().into(),
            kind: if b["is_permanent"].as_bool().unwrap_or(false) {
                "permanent".into()
            } else {
                "full".into()
            },
            start: time(&b["start_time"]),
            stop: time(&b["finish_time"]),
            size_bytes: b["compressed_size"].as_u64().unwrap_or_default(),
            wal_start: b["wal_file_name"].as_str().unwrap_or_default().into(),
            wal_stop: String::new(),
        })
        .collect();
    Ok(Listing {
        earliest_restorable: backups.iter().map(|b| b.stop).min(),
        // WAL-G's backup-list does not show the archive's end.
        latest_restorable: None,
        wal_max: None,
        backups,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_pgbackrest_info() {
        let text = r#"[{"archive":[{"id":"15-1","max":"000000020000000000000009","min":"000000010000000000000001"}],
            "backup":[{"archive":{"start":"000000010000000000000003","stop":"000000010000000000000003"},"info":{"size":31522334},
            "label":"20261121-210000F","timestamp":{"start":1763758800,"stop":1763758805},"type":"full"}],
            "name":"lab","status":{"code":0,"message":"ok"}}]"#;
        let l = super::parse_pgbackrest(text).unwrap();
        assert_eq!(l.backups.len(), 1);
        assert_eq!(l.backups[0].name, "20261121-210000F");
        assert_eq!(l.earliest_restorable, Some(1763758805));
        assert_eq!(l.wal_max.as_deref(), Some("000000020000000000000009"));
    }

    #[test]
    fn newest_archived_segment() {
        let text = r#"{".":{"type":"path"},"15-1/0000000100000000":{"type":"path"},
            "15-1/0000000100000000/000000010000000000000001-25e1b78d.zst":{"type":"file","size":1298723,"time":100},
            "15-1/0000000100000000/000000010000000000000002.00000028.backup":{"type":"file","size":338,"time":900},
            "15-1/0000000100000000/000000010000000000000003-15df1304.zst":{"type":"file","size":679,"time":200},
            "15-1/00000002.history":{"type":"file","size":40,"time":800},
            "archive.info":{"type":"file","size":253,"time":1000}}"#;
        assert_eq!(super::newest_segment_time(text).unwrap(), Some(200));
        assert_eq!(super::newest_segment_time("{}").unwrap(), None);
    }

    #[test]
    fn parses_walg_backup_list() {
        let text = r#"[{"backup_name":"base_000000010000000000000004","start_time":"2026-11-21T21:00:00Z","finish_time":"2026-11-21T21:00:09Z",
            "wal_file_name":"000000010000000000000004","compressed_size":1234,"is_permanent":false}]"#;
        let l = super::parse_walg(text).unwrap();
        assert_eq!(l.backups[0].size_bytes, 1234);
        assert_eq!(l.backups[0].stop - l.backups[0].start, 9);
    }
}
