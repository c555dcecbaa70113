//! pgBackRest: one stanza per cluster in the cluster's own S3 prefix.

use super::{command_line, last_error, Engine, S3};
use crate::backup::target::{pg_time, Target};
use crate::config::Config;
use crate::layout;
use anyhow::{bail, Context, Result};

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

    fn list_archive(&self, cfg: &Config) -> Option<Vec<String>> {
        let archive = format!("archive/{}", cfg.hosts.cluster.name);
        Some(self.command(cfg, &["repo-ls", "--output=json", "--recurse", &archive]))
    }

    fn parse_listing(&self, backups: &str, archive: Option<&str>) -> Result<super::list::Listing> {
        let mut listing = parse_info(backups)?;
        if let Some(archive) = archive {
            listing.latest_restorable = newest_segment_time(archive)?;
        }
        Ok(listing)
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

/// `pgbackrest info --output=json`: one stanza with backups and archive ranges.
fn parse_info(text: &str) -> Result<super::list::Listing> {
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
    let backups: Vec<super::list::Backup> = stanza["backup"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| super::list::Backup {
            name: b["label"].as_str().unwrap_or_default().into(),
            kind: b["type"].as_str().unwrap_or_default().into(),
            start: b["timestamp"]["start"].as_i64().unwrap_or_default(),
            stop: b["timestamp"]["stop"].as_i64().unwrap_or_default(),
            size_bytes: b["info"]["size"].as_u64().unwrap_or_default(),
            wal_start: b["archive"]["start"].as_str().unwrap_or_default().into(),
            wal_stop: b["archive"]["stop"].as_str().unwrap_or_default().into(),
        })
        .collect();
    let wal_max = stanza["archive"]
        .as_array()
        .and_then(|a| a.iter().filter_map(|a| a["max"].as_str()).max())
        .map(str::to_string);
    Ok(super::list::Listing {
        earliest_restorable: backups.iter().map(|b| b.stop).min(),
        latest_restorable: None,
        wal_max,
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
    fn parses_pgbackrest_info() {
        let text = r#"[{"archive":[{"id":"15-1","max":"000000020000000000000009","min":"000000010000000000000001"}],
            "backup":[{"archive":{"start":"000000010000000000000003","stop":"000000010000000000000003"},"info":{"size":31522334},
            "label":"20261121-210000F","timestamp":{"start":1763758800,"stop":1763758805},"type":"full"}],
            "name":"lab","status":{"code":0,"message":"ok"}}]"#;
        let l = super::parse_info(text).unwrap();
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
}
