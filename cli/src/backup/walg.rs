//! WAL-G: configuration in one JSON file (`--config`), backups under `basebackups_005/`.

use super::list::Backup;
use super::{command_line, Engine, S3};
use crate::backup::target::Target;
use crate::config::Config;
use crate::layout;
use crate::s3::Bucket;
use anyhow::{Context, Result};
use futures_util::future::BoxFuture;

pub struct WalG;

impl Engine for WalG {
    fn name(&self) -> &'static str {
        "WAL-G"
    }

    fn config_file(&self, _cfg: &Config, s3: &S3<'_>, _keep_full: u32) -> Result<(&'static str, String)> {
        let text = crate::render::render("walg.json.j2", minijinja::context! { s3 })?;
        Ok((layout::WALG_CONFIG, text))
    }

    fn command(&self, _cfg: &Config, args: &[&str]) -> Vec<String> {
        let base = ["wal-g".to_string(), "--config".into(), layout::WALG_CONFIG.into()];
        command_line(&base, args)
    }

    fn archive_push(&self, cfg: &Config) -> Vec<String> {
        self.command(cfg, &["wal-push", "%p"])
    }

    fn archive_get(&self, cfg: &Config) -> Vec<String> {
        self.command(cfg, &["wal-fetch", "%f", "%p"])
    }

    fn full_backup(&self, cfg: &Config) -> Vec<String> {
        self.command(cfg, &["backup-push", layout::PGDATA])
    }

    // WAL-G does not expire by itself: retention runs right after a successful backup.
    fn scheduled_job(&self, cfg: &Config, keep_full: u32) -> String {
        let backup = self.full_backup(cfg).join(" ");
        let retain = self.retain(cfg, keep_full, false).join(" ");
        format!("sh -c '{backup} && {retain}'")
    }

    fn retain(&self, cfg: &Config, keep_full: u32, dry_run: bool) -> Vec<String> {
        let n = keep_full.to_string();
        let mut args = vec!["delete", "retain", "FULL", n.as_str()];
        // Without --confirm WAL-G only prints what it would delete.
        if !dry_run {
            args.push("--confirm");
        }
        self.command(cfg, &args)
    }

    // WAL-G needs no repository setup; WALG_PREVENT_WAL_OVERWRITE refuses overwriting.
    fn init_repository(&self, _cfg: &Config) -> Option<Vec<String>> {
        None
    }

    fn list_backups(&self, cfg: &Config) -> Vec<String> {
        self.command(cfg, &["backup-list", "--detail", "--json"])
    }

    fn wal_dir(&self, _cfg: &Config) -> String {
        "wal_005/".into()
    }

    // A backup is complete once its stop sentinel exists; its times and sizes are in
    // `<name>/metadata.json` (both plain JSON: WAL-G encrypts data, not its catalog).
    fn read_catalog<'a>(&'a self, _cfg: &'a Config, bucket: &'a Bucket) -> BoxFuture<'a, Result<Vec<Backup>>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for object in bucket.list(BACKUPS).await? {
                let Some(name) = object.key.strip_prefix(BACKUPS).and_then(|k| k.strip_suffix(SENTINEL)) else {
                    continue;
                };
                if name.contains('/') {
                    continue;
                }
                let key = format!("{BACKUPS}{name}/metadata.json");
                let meta = bucket
                    .get(&key)
                    .await?
                    .with_context(|| format!("{}: backup {name} has a stop sentinel but no {key}", bucket.place))?;
                out.push(backup_from_metadata(name, &meta).with_context(|| format!("{}: {key}", bucket.place))?);
            }
            Ok(out)
        })
    }

    // The newest backup's system identifier (backup-list --detail has it from the sentinel).
    // A prefix holding WAL but no backup yet names no system here: pgctl's owner record
    // answers then (owner.rs), and WALG_PREVENT_WAL_OVERWRITE refuses a colliding segment.
    fn system_id(&self, backups: &str) -> Result<Option<String>> {
        let v = backup_list_json(backups)?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| Some((b["finish_time"].as_str()?, b["system_identifier"].as_u64()?)))
            .max()
            .map(|(_, id)| id.to_string()))
    }

    fn replica_fetch(&self, cfg: &Config, backup: &str) -> Vec<String> {
        self.command(cfg, &["backup-fetch", layout::PGDATA, backup])
    }

    fn fetch(&self, cfg: &Config, backup: &str, target: &Target, timeline: &str, _verify: bool) -> (Vec<String>, Option<String>) {
        let restore = self.archive_get(cfg).join(" ");
        (
            self.command(cfg, &["backup-fetch", layout::PGDATA, backup]),
            // backup-fetch writes no recovery settings: the recovery script appends these.
            Some(target.recovery_conf(&restore, timeline)),
        )
    }
}

/// `wal-g backup-list --detail --json` as JSON. An empty repository prints nothing on stdout
/// ("No backups found" goes to stderr): that is an empty list, not bad output.
fn backup_list_json(text: &str) -> Result<serde_json::Value> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Array(Vec::new()));
    }
    serde_json::from_str(text).context("wal-g backup-list output")
}

const BACKUPS: &str = "basebackups_005/";
const SENTINEL: &str = "_backup_stop_sentinel.json";

/// One backup from its `metadata.json` (WAL-G's ExtendedMetadataDto).
fn backup_from_metadata(name: &str, text: &[u8]) -> Result<Backup> {
    let m: serde_json::Value = serde_json::from_slice(text).context("not JSON")?;
    let time = |s: &serde_json::Value| -> Result<i64> {
        let s = s.as_str().context("a time is missing")?;
        Ok(time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("time {s}"))?
            .unix_timestamp())
    };
    // base_<24 hex: the WAL segment the backup starts in>[_D_<its base>] for deltas.
    let wal_start: String = name.strip_prefix("base_").map(|s| s.chars().take(24).collect()).unwrap_or_default();
    let kind = if m["is_permanent"].as_bool().unwrap_or(false) {
        "permanent"
    } else if name.contains("_D_") {
        "delta"
    } else {
        "full"
    };
    Ok(Backup {
        name: name.into(),
        kind: kind.into(),
        start: time(&m["start_time"])?,
        stop: time(&m["finish_time"])?,
        // The database's size (what was backed up, not what is stored).
        size_bytes: m["uncompressed_size"].as_u64().unwrap_or_default(),
        wal_stop: wal_stop(&wal_start, m["finish_lsn"].as_u64()),
        // 150010 -> 15 (server_version_num).
        pg_major: m["pg_version"].as_u64().map(|v| (v / 10000) as u32),
        wal_start,
    })
}

/// The segment holding the backup's finish LSN, on the timeline it started on (a backup does
/// not cross a timeline switch); the start segment when the metadata has no finish LSN.
fn wal_stop(wal_start: &str, finish_lsn: Option<u64>) -> String {
    match (wal_start.get(..8), finish_lsn) {
        (Some(tli), Some(lsn)) => format!(
            "{tli}{:08X}{:08X}",
            lsn >> 32,
            (lsn & 0xFFFF_FFFF) / crate::layout::WAL_SEGMENT_BYTES
        ),
        _ => wal_start.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::backup::Engine;

    #[test]
    fn empty_repository_names_no_system() {
        assert_eq!(super::WalG.system_id("\n").unwrap(), None);
        assert_eq!(super::WalG.system_id("[]").unwrap(), None);
        assert!(super::WalG.system_id("No backups").is_err());
        let text = r#"[{"backup_name":"base_000000010000000000000004","finish_time":"2026-11-21T21:00:09Z","system_identifier":7441234567890123456}]"#;
        assert_eq!(super::WalG.system_id(text).unwrap().as_deref(), Some("7441234567890123456"));
    }

    #[test]
    fn backup_from_walg_metadata() {
        // As WAL-G v1.1.1 writes basebackups_005/<name>/metadata.json.
        let meta =
            br#"{"start_time":"2026-11-21T21:00:00.123456Z","finish_time":"2026-11-21T21:00:09.5Z","date_fmt":"%Y-%m-%dT%H:%M:%S.%fZ",
            "hostname":"host1","data_dir":"/var/lib/postgresql/data/pgdata","pg_version":150020,"start_lsn":67108904,"finish_lsn":67109160,
            "is_permanent":false,"system_identifier":7441234567890123456,"uncompressed_size":56789,"compressed_size":1234}"#;
        let b = super::backup_from_metadata("base_000000010000000000000004", meta).unwrap();
        assert_eq!((b.kind.as_str(), b.size_bytes, b.stop - b.start), ("full", 56789, 9));
        assert_eq!(b.wal_start, "000000010000000000000004");
        assert_eq!(b.pg_major, Some(15));
        // finish_lsn 0/4000128 lies in segment 4; 1/2000000 in segment 2 of log 1.
        assert_eq!(b.wal_stop, "000000010000000000000004");
        assert_eq!(
            super::wal_stop("000000030000000000000004", Some(0x1_0200_0000)),
            "000000030000000100000002"
        );
        assert_eq!(super::wal_stop("000000010000000000000004", None), "000000010000000000000004");
        let delta = super::backup_from_metadata("base_000000010000000000000006_D_000000010000000000000004", meta).unwrap();
        assert_eq!(delta.kind, "delta");
        assert!(
            super::backup_from_metadata("x", b"{}").is_err(),
            "no times: not a backup's metadata"
        );
    }
}
