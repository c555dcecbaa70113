//! pgBackRest: one stanza per cluster in the cluster's own S3 prefix.

use super::list::Backup;
use super::{command_line, last_error, Engine, S3};
use crate::backup::target::{pg_time, Target};
use crate::config::Config;
use crate::layout;
use crate::s3::Bucket;
use anyhow::{bail, Context, Result};
use futures_util::future::BoxFuture;

pub struct PgBackRest;

impl Engine for PgBackRest {
    fn name(&self) -> &'static str {
        "pgBackRest"
    }

    fn config_file(&self, cfg: &Config, s3: &S3<'_>, keep_full: u32) -> Result<(&'static str, String)> {
        let scope = &cfg.hosts.cluster.name;
        let text = crate::render::render("pgbackrest.conf.j2", minijinja::context! { scope, s3, keep_full })?;
        Ok((layout::PGBACKREST_CONFIG, text))
    }

    fn command(&self, cfg: &Config, args: &[&str]) -> Vec<String> {
        let base = [
            "pgbackrest".to_string(),
            format!("--config={}", layout::PGBACKREST_CONFIG),
            format!("--stanza={}", cfg.hosts.cluster.name),
        ];
        command_line(&base, args)
    }

    fn archive_push(&self, cfg: &Config) -> Vec<String> {
        self.command(cfg, &["archive-push", "%p"])
    }

    fn archive_get(&self, cfg: &Config) -> Vec<String> {
        self.command(cfg, &["archive-get", "%f", "\"%p\""])
    }

    fn full_backup(&self, cfg: &Config) -> Vec<String> {
        self.command(cfg, &["backup", "--type=full"])
    }

    // pgBackRest expires old backups by itself after each backup (repo1-retention-full).
    fn scheduled_job(&self, cfg: &Config, _keep_full: u32) -> String {
        self.full_backup(cfg).join(" ")
    }

    fn retain(&self, cfg: &Config, keep_full: u32, dry_run: bool) -> Vec<String> {
        let retention = format!("--repo1-retention-full={keep_full}");
        let mut args = vec!["expire", retention.as_str()];
        if dry_run {
            args.push("--dry-run");
        }
        self.command(cfg, &args)
    }

    fn init_repository(&self, cfg: &Config) -> Option<Vec<String>> {
        Some(self.command(cfg, &["stanza-create"]))
    }

    fn repository_files(&self, cfg: &Config) -> Vec<String> {
        let stanza = &cfg.hosts.cluster.name;
        vec![format!("archive/{stanza}/archive.info"), format!("backup/{stanza}/backup.info")]
    }

    // [050] is pgBackRest's lock error: a backup (or expire) of this stanza is running, so the
    // stanza exists and belongs to this cluster (stanza-create would have had nothing to do).
    fn init_busy(&self, output: &str) -> bool {
        output.contains("ERROR: [050]") && output.contains("unable to acquire lock")
    }

    fn init_failure(&self, cfg: &Config, text: &str) -> anyhow::Error {
        if text.contains("do not match") || text.contains("system-id") || text.contains("system identifier") {
            return crate::error::refused(format!(
                "S3 prefix `{}` already holds the archive of another database system; refusing to archive this cluster into it (two clusters in one prefix corrupt each other's timelines). Use a prefix of this cluster's own (backup.s3_prefix).\n  pgBackRest said: {}",
                cfg.hosts.backup.as_ref().map(|b| b.s3_prefix.as_str()).unwrap_or_default(),
                last_error(text)
            ));
        }
        anyhow::anyhow!("preparing the backup repository failed: {}", last_error(text))
    }

    fn list_backups(&self, cfg: &Config) -> Vec<String> {
        self.command(cfg, &["info", "--output=json"])
    }

    fn wal_dir(&self, cfg: &Config) -> String {
        format!("archive/{}/", cfg.hosts.cluster.name)
    }

    // backup.info lists every backup of the stanza; with repository encryption it is
    // encrypted with backup_encryption_key (the repository's cipher pass).
    fn read_catalog<'a>(&'a self, cfg: &'a Config, bucket: &'a Bucket) -> BoxFuture<'a, Result<Vec<Backup>>> {
        Box::pin(async move {
            let key = format!("backup/{}/backup.info", cfg.hosts.cluster.name);
            let Some(mut data) = bucket.get(&key).await? else {
                return Ok(Vec::new());
            };
            if super::cipher::is_encrypted(&data) {
                let pass = cfg
                    .secrets
                    .backup_encryption_key
                    .as_ref()
                    .with_context(|| format!("{}: {key} is encrypted and secrets.toml has no backup_encryption_key", bucket.place))?;
                data = super::cipher::decrypt(&data, pass.expose(), b"[backrest]").with_context(|| format!("{}: {key}", bucket.place))?;
            }
            parse_backup_info(&String::from_utf8_lossy(&data)).with_context(|| format!("{}: {key}", bucket.place))
        })
    }

    fn system_id(&self, backups: &str) -> Result<Option<String>> {
        let v: serde_json::Value = serde_json::from_str(backups).context("pgbackrest info output")?;
        let stanza = v.as_array().and_then(|a| a.first()).context("no stanza in the repository")?;
        match stanza["status"]["code"].as_i64().unwrap_or(0) {
            // 1: nothing in this prefix yet.
            1 => Ok(None),
            0 | 2 => Ok(stanza["db"]
                .as_array()
                .and_then(|d| d.last())
                .and_then(|d| d["system-id"].as_u64())
                .map(|id| id.to_string())),
            code => bail!(
                "the S3 repository cannot be read (pgBackRest status {code}: {}): check the endpoint, bucket, keys and CA in hosts.toml/secrets.toml",
                stanza["status"]["message"].as_str().unwrap_or_default()
            ),
        }
    }

    // --type=none: pgBackRest writes no recovery settings; Patroni writes the standby's.
    fn replica_fetch(&self, cfg: &Config, backup: &str) -> Vec<String> {
        let pg1 = format!("--pg1-path={}", layout::PGDATA);
        let set = format!("--set={backup}");
        self.command(cfg, &["restore", &pg1, &set, "--type=none"])
    }

    fn fetch(&self, cfg: &Config, backup: &str, target: &Target, timeline: &str, verify: bool) -> (Vec<String>, Option<String>) {
        let pg1 = format!("--pg1-path={}", layout::PGDATA);
        let set = format!("--set={backup}");
        let mut args: Vec<String> = vec!["restore".into(), pg1, set, "--log-level-console=detail".into()];
        let promote = "--target-action=promote".to_string();
        let tl = format!("--target-timeline={timeline}");
        args.extend(match target {
            Target::Latest => vec!["--type=default".into(), tl],
            Target::Time(t) => vec!["--type=time".into(), format!("--target={}", pg_time(*t)), promote, tl],
            Target::Lsn(l) => vec!["--type=lsn".into(), format!("--target={l}"), promote, tl],
            Target::Name(n) => vec!["--type=name".into(), format!("--target={n}"), promote, tl],
            Target::EndOfBackup => vec!["--type=immediate".into(), promote],
        });
        if verify {
            args.push("--archive-mode=off".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        // pgBackRest writes the recovery settings itself.
        (self.command(cfg, &args), None)
    }
}

/// pgBackRest's backup.info: an INI file whose `[backup:current]` section has one line per
/// backup, `<label>=<JSON>`.
fn parse_backup_info(text: &str) -> Result<Vec<Backup>> {
    if !text.starts_with("[backrest]") {
        bail!("not a pgBackRest info file");
    }
    let mut section = "";
    let mut out = Vec::new();
    // [db:history] maps each db-id to its PostgreSQL version; backups name their db-id.
    let mut versions = std::collections::HashMap::new();
    let mut db_ids = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
            continue;
        }
        let Some((label, json)) = line.split_once('=') else {
            continue;
        };
        if section == "db:history" {
            let d: serde_json::Value = serde_json::from_str(json).with_context(|| format!("db:history {label}"))?;
            let major = d["db-version"].as_str().and_then(|v| v.split('.').next()?.parse::<u32>().ok());
            versions.insert(label.to_string(), major);
            continue;
        }
        if section != "backup:current" {
            continue;
        }
        let b: serde_json::Value = serde_json::from_str(json).with_context(|| format!("backup {label}"))?;
        db_ids.push(b["db-id"].as_u64().map(|id| id.to_string()).unwrap_or_default());
        out.push(Backup {
            name: label.into(),
            kind: b["backup-type"].as_str().unwrap_or_default().into(),
            start: b["backup-timestamp-start"].as_i64().unwrap_or_default(),
            stop: b["backup-timestamp-stop"].as_i64().unwrap_or_default(),
            size_bytes: b["backup-info-size"].as_u64().unwrap_or_default(),
            wal_start: b["backup-archive-start"].as_str().unwrap_or_default().into(),
            wal_stop: b["backup-archive-stop"].as_str().unwrap_or_default().into(),
            pg_major: None,
        });
    }
    for (backup, id) in out.iter_mut().zip(db_ids) {
        backup.pg_major = versions.get(&id).copied().flatten();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::backup::target::Target;
    use crate::backup::Engine;

    #[test]
    fn a_running_backup_is_not_a_failed_stanza_create() {
        let busy = "ERROR: [050]: unable to acquire lock on file '/tmp/pgbackrest/lab-backup.lock': Resource temporarily unavailable";
        assert!(super::PgBackRest.init_busy(busy));
        assert!(!super::PgBackRest.init_busy("ERROR: [028]: backup and archive info files exist but do not match the database"));
    }

    #[test]
    fn fetch_to_a_time() {
        let cfg = crate::backup::tests::config("pgbackrest");
        let t = Target::from_flags(Some("2026-05-17 10:00:00+03"), None, None).unwrap();
        let (cmd, conf) = super::PgBackRest.fetch(&cfg, "20260517-000000F", &t, "latest", false);
        assert_eq!(
            cmd[3..],
            [
                "restore",
                "--pg1-path=/var/lib/postgresql/data/pgdata",
                "--set=20260517-000000F",
                "--log-level-console=detail",
                "--type=time",
                "--target=2026-05-17 07:00:00.000000+00",
                "--target-action=promote",
                "--target-timeline=latest"
            ]
        );
        assert!(conf.is_none(), "pgBackRest writes its own recovery settings");
    }

    #[test]
    fn parses_backup_info() {
        // As pgBackRest 2.45 writes backup/<stanza>/backup.info (decrypted).
        let text = r#"[backrest]
backrest-format=5
backrest-version="2.45"

[backup:current]
20261121-210000F={"backrest-format":5,"backrest-version":"2.45","backup-archive-start":"000000010000000000000003","backup-archive-stop":"000000010000000000000003","backup-info-repo-size":3152233,"backup-info-repo-size-delta":3152233,"backup-info-size":31522334,"backup-info-size-delta":31522334,"backup-timestamp-start":1763758800,"backup-timestamp-stop":1763758805,"backup-type":"full","db-id":1,"option-archive-check":true}

[db]
db-catalog-version=202209061
db-control-version=1300
db-id=1
db-system-id=7441234567890123456
db-version="15"

[db:history]
1={"db-catalog-version":202209061,"db-control-version":1300,"db-system-id":7441234567890123456,"db-version":"15"}
"#;
        let b = super::parse_backup_info(text).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(
            (b[0].name.as_str(), b[0].kind.as_str(), b[0].stop, b[0].size_bytes),
            ("20261121-210000F", "full", 1763758805, 31522334)
        );
        assert_eq!(b[0].wal_stop, "000000010000000000000003");
        assert_eq!(b[0].pg_major, Some(15));
        assert!(super::parse_backup_info("garbage").is_err());
        assert!(super::parse_backup_info("[backrest]\nbackrest-format=5\n").unwrap().is_empty());
    }
}
