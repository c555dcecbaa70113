//! WAL-G: configuration in one JSON file (`--config`), backups under `basebackups_005/`.

use super::{command_line, Engine, S3};
use crate::backup::target::Target;
use crate::config::Config;
use crate::layout;
use anyhow::{Context, Result};

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

    fn list_archive(&self, _cfg: &Config) -> Option<Vec<String>> {
        None
    }

    fn parse_listing(&self, backups: &str, _archive: Option<&str>) -> Result<super::list::Listing> {
        parse_backup_list(backups)
    }

    // The newest backup's system identifier (backup-list --detail has it from the sentinel).
    // A prefix holding WAL but no backup yet names no system: WALG_PREVENT_WAL_OVERWRITE is
    // then the only guard (a colliding segment is refused, not overwritten).
    fn system_id(&self, backups: &str) -> Result<Option<String>> {
        let v = backup_list_json(backups)?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| Some((b["finish_time"].as_str()?, b["system_identifier"].as_u64()?)))
            .max()
            .map(|(_, id)| id.to_string()))
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

/// `wal-g backup-list --detail --json`.
fn parse_backup_list(text: &str) -> Result<super::list::Listing> {
    let v = backup_list_json(text)?;
    let time = |s: &serde_json::Value| {
        s.as_str()
            .and_then(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok())
            .map(|t| t.unix_timestamp())
            .unwrap_or_default()
    };
    let backups: Vec<super::list::Backup> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| super::list::Backup {
            name: b["backup_name"].as_str().unwrap_or_default().into(),
            kind: if b["is_permanent"].as_bool().unwrap_or(false) {
                "permanent".into()
            } else {
                "full".into()
            },
            start: time(&b["start_time"]),
            stop: time(&b["finish_time"]),
            // The database's size, as pgBackRest reports it (what was backed up, not stored).
            size_bytes: b["uncompressed_size"].as_u64().unwrap_or_default(),
            wal_start: b["wal_file_name"].as_str().unwrap_or_default().into(),
            wal_stop: String::new(),
        })
        .collect();
    Ok(super::list::Listing {
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
    fn empty_repository_is_an_empty_list() {
        let l = super::parse_backup_list("").unwrap();
        assert!(l.backups.is_empty());
        use super::super::Engine;
        assert_eq!(super::WalG.system_id("\n").unwrap(), None);
        assert!(super::parse_backup_list("No backups").is_err());
    }

    #[test]
    fn parses_walg_backup_list() {
        let text = r#"[{"backup_name":"base_000000010000000000000004","start_time":"2026-11-21T21:00:00Z","finish_time":"2026-11-21T21:00:09Z",
            "wal_file_name":"000000010000000000000004","compressed_size":1234,"uncompressed_size":56789,"is_permanent":false,
            "system_identifier":7441234567890123456}]"#;
        let l = super::parse_backup_list(text).unwrap();
        assert_eq!(l.backups[0].size_bytes, 56789);
        assert_eq!(l.backups[0].stop - l.backups[0].start, 9);
        use crate::backup::Engine;
        assert_eq!(super::WalG.system_id(text).unwrap().as_deref(), Some("7441234567890123456"));
        assert_eq!(super::WalG.system_id("[]").unwrap(), None);
    }
}
