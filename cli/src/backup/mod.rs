//! Backups to S3 behind one interface, two engines (WAL-G, pgBackRest), chosen in hosts.toml.
//! Each engine renders its own native configuration (a 0600 file in the Patroni container),
//! and gives the archive/restore commands Patroni sets and the commands pgctl runs.

pub mod list;
pub mod verify;

use crate::cluster::spec::File;
use crate::config::{BackupConfig, BackupEngine, Config};
use crate::render::render;
use anyhow::{bail, Context, Result};
use serde::Serialize;

pub const PGBACKREST_CONFIG: &str = "/etc/pgctl/pgbackrest.conf";
pub const WALG_CONFIG: &str = "/etc/pgctl/walg.json";
pub const S3_CA: &str = "/etc/pgctl/s3-ca.pem";
pub const CRONTAB: &str = "/etc/pgctl/crontab";
/// Outcomes of scheduled backups (JSON lines), on the data volume so they outlive containers.
pub const SCHEDULED_STATUS: &str = "/var/lib/postgresql/data/pgctl-backups.jsonl";

/// Which S3 key a configuration carries: read-write for the cluster, read-only for anything
/// that must never write into the cluster's archive (listing, verification, clones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    ReadOnly,
}

#[derive(Debug, Serialize)]
struct S3<'a> {
    endpoint: &'a str,
    host: String,
    port: u16,
    bucket: &'a str,
    prefix: &'a str,
    region: &'a str,
    path_style: bool,
    key: String,
    secret: String,
    ca_file: Option<&'static str>,
}

fn s3_context<'a>(cfg: &'a Config, b: &'a BackupConfig, access: Access) -> Result<S3<'a>> {
    let (scheme, rest) = b.s3_endpoint.split_once("://").context("backup.s3_endpoint needs a scheme")?;
    let hostport = rest.trim_end_matches('/');
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse().with_context(|| format!("backup.s3_endpoint: bad port `{p}`"))?,
        ),
        None => (hostport.to_string(), if scheme == "https" { 443 } else { 80 }),
    };
    let s = &cfg.secrets.s3;
    let (key, secret) = match access {
        Access::ReadWrite => (&s.access_key_id, &s.secret_access_key),
        Access::ReadOnly => (&s.readonly_access_key_id, &s.readonly_secret_access_key),
    };
    let get = |v: &Option<crate::config::Secret>, name: &str| {
        v.as_ref()
            .map(|s| s.expose().to_string())
            .with_context(|| format!("secrets: s3.{name} is missing"))
    };
    let (key_name, secret_name) = match access {
        Access::ReadWrite => ("access_key_id", "secret_access_key"),
        Access::ReadOnly => ("readonly_access_key_id", "readonly_secret_access_key"),
    };
    Ok(S3 {
        endpoint: &b.s3_endpoint,
        host,
        port,
        bucket: &b.s3_bucket,
        prefix: b.s3_prefix.trim_matches('/'),
        region: &b.s3_region,
        path_style: b.s3_path_style,
        key: get(key, key_name)?,
        secret: get(secret, secret_name)?,
        ca_file: b.s3_ca_file.as_ref().map(|_| S3_CA),
    })
}

/// `/etc/hosts` entries for containers that talk to S3: the endpoint's name mapped to
/// `backup.s3_address` when the endpoint has no DNS entry.
pub fn extra_hosts(cfg: &Config) -> Vec<String> {
    let Some(b) = backup_config(cfg) else { return vec![] };
    let Some(addr) = &b.s3_address else { return vec![] };
    let host = b.s3_endpoint.split_once("://").map(|(_, r)| r).unwrap_or(&b.s3_endpoint);
    let host = host
        .trim_end_matches('/')
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(host.trim_end_matches('/'));
    vec![format!("{host}:{addr}")]
}

/// The configured backup, if any.
pub fn backup_config(cfg: &Config) -> Option<&BackupConfig> {
    cfg.hosts.backup.as_ref()
}

/// Files the backup engine needs in the Patroni container (config, CA), all 0600 postgres.
pub fn files(cfg: &Config, access: Access) -> Result<Vec<File>> {
    let Some(b) = backup_config(cfg) else { return Ok(vec![]) };
    let scope = &cfg.hosts.cluster.name;
    let s3 = s3_context(cfg, b, access)?;
    let mut out = vec![match cfg.hosts.cluster.backup_engine {
        BackupEngine::Pgbackrest => File {
            path: PGBACKREST_CONFIG.into(),
            contents: render("pgbackrest.conf.j2", minijinja::context! { scope, s3, keep_full => b.keep_full })?,
            postgres_owned: true,
        },
        BackupEngine::Walg => File {
            path: WALG_CONFIG.into(),
            contents: render("walg.json.j2", minijinja::context! { s3 })?,
            postgres_owned: true,
        },
    }];
    if let Some(ca) = &b.s3_ca_file {
        let path = crate::config::resolve(cfg.base_dir(), ca);
        let pem = std::fs::read_to_string(&path).with_context(|| format!("backup.s3_ca_file: reading {}", path.display()))?;
        out.push(File {
            path: S3_CA.into(),
            contents: pem,
            postgres_owned: true,
        });
    }
    Ok(out)
}

/// `files` ready to upload into a container of an image whose postgres user is `owner`.
pub fn upload_files(cfg: &Config, access: Access, owner: (u64, u64)) -> Result<Vec<crate::docker::FileSpec>> {
    Ok(files(cfg, access)?
        .into_iter()
        .map(|f| crate::docker::FileSpec {
            path: f.path,
            contents: f.contents.into_bytes(),
            mode: 0o600,
            uid: owner.0,
            gid: owner.1,
        })
        .collect())
}

/// The engine's command line, as run by postgres inside the Patroni container.
pub fn command(cfg: &Config, args: &[&str]) -> Vec<String> {
    let scope = &cfg.hosts.cluster.name;
    let mut cmd: Vec<String> = match cfg.hosts.cluster.backup_engine {
        BackupEngine::Pgbackrest => vec![
            "pgbackrest".into(),
            format!("--config={PGBACKREST_CONFIG}"),
            format!("--stanza={scope}"),
        ],
        BackupEngine::Walg => vec!["wal-g".into(), "--config".into(), WALG_CONFIG.into()],
    };
    cmd.extend(args.iter().map(|a| a.to_string()));
    cmd
}

/// PostgreSQL settings for continuous archiving (only the leader archives: archive_mode=on).
pub fn archive_parameters(cfg: &Config) -> Vec<(&'static str, String)> {
    if backup_config(cfg).is_none() {
        return vec![];
    }
    let push = match cfg.hosts.cluster.backup_engine {
        BackupEngine::Pgbackrest => command(cfg, &["archive-push", "%p"]),
        BackupEngine::Walg => command(cfg, &["wal-push", "%p"]),
    };
    vec![
        ("archive_mode", "on".into()),
        ("archive_command", push.join(" ")),
        ("archive_timeout", "60s".into()),
    ]
}

/// restore_command for replicas and recovery.
pub fn restore_command(cfg: &Config) -> Option<String> {
    backup_config(cfg)?;
    Some(
        match cfg.hosts.cluster.backup_engine {
            BackupEngine::Pgbackrest => command(cfg, &["archive-get", "%f", "\"%p\""]),
            BackupEngine::Walg => command(cfg, &["wal-fetch", "%f", "%p"]),
        }
        .join(" "),
    )
}

/// Root's crontab in every Patroni container: the full backup on the schedule from hosts.toml,
/// run by `pgctl-scheduled-backup`, which acts only on the leader and never twice at once;
/// retention follows each backup (pgBackRest expires by itself after a backup).
pub fn crontab(cfg: &Config) -> Option<File> {
    let b = backup_config(cfg)?;
    let backup = full_backup_command(cfg).join(" ");
    let job = match cfg.hosts.cluster.backup_engine {
        BackupEngine::Pgbackrest => backup,
        BackupEngine::Walg => {
            let retain = command(cfg, &["delete", "retain", "FULL", &b.keep_full.to_string(), "--confirm"]).join(" ");
            format!("sh -c '{backup} && {retain}'")
        }
    };
    let contents = format!(
        "# pgctl: full backup on the leader ({schedule}), from hosts.toml [backup] schedule\nSHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n{schedule} /usr/local/bin/pgctl-scheduled-backup {job}\n",
        schedule = b.schedule
    );
    Some(File {
        path: CRONTAB.into(),
        contents,
        postgres_owned: false,
    })
}

/// The command that takes a full backup on the leader.
pub fn full_backup_command(cfg: &Config) -> Vec<String> {
    match cfg.hosts.cluster.backup_engine {
        BackupEngine::Pgbackrest => command(cfg, &["backup", "--type=full"]),
        BackupEngine::Walg => command(cfg, &["backup-push", crate::cluster::spec::PGDATA]),
    }
}

/// Prepares the repository for this cluster; refuses a prefix that holds another database
/// system's archive (two clusters in one prefix corrupt each other's timelines).
pub async fn init_repository(cfg: &Config, leader: &crate::docker::Engine) -> Result<()> {
    if backup_config(cfg).is_none() {
        return Ok(());
    }
    match cfg.hosts.cluster.backup_engine {
        BackupEngine::Pgbackrest => {
            let cmd = command(cfg, &["stanza-create"]);
            let out = run(leader, &cmd).await?;
            if !out.success() {
                let text = format!("{}{}", out.stdout, out.stderr);
                if text.contains("do not match") || text.contains("system-id") || text.contains("system identifier") {
                    bail!(
                        "S3 prefix `{}` already holds the archive of another database system; refusing to archive this cluster into it (two clusters in one prefix corrupt each other's timelines). Use a prefix of this cluster's own (backup.s3_prefix).\n  pgBackRest said: {}",
                        backup_config(cfg).map(|b| b.s3_prefix.as_str()).unwrap_or_default(),
                        last_error(&text)
                    );
                }
                bail!("preparing the backup repository failed: {}", last_error(&text));
            }
            Ok(())
        }
        // WAL-G needs no repository setup; WALG_PREVENT_WAL_OVERWRITE refuses overwriting.
        BackupEngine::Walg => Ok(()),
    }
}

fn last_error(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| l.contains("ERROR"))
        .unwrap_or(text.lines().last().unwrap_or_default())
        .trim()
        .to_string()
}

/// `pgctl backup now`: optionally switch WAL, then a full backup on the current leader.
pub async fn backup_now(cfg: &Config, engines: &[crate::docker::Engine], switch_wal: bool) -> Result<String> {
    if backup_config(cfg).is_none() {
        bail!("{} has no [backup] section", cfg.hosts_path.display());
    }
    let status = crate::cluster::status::fetch(cfg, engines).await?;
    let leader = status.leader.context("the cluster has no leader: a backup runs on the leader")?;
    let engine = engines
        .iter()
        .find(|e| e.host == leader)
        .context("the leader's host is not reachable")?;
    if switch_wal {
        crate::cluster::psql(engine, "SELECT pg_switch_wal()").await?;
    }
    eprintln!("full backup on the leader {leader}...");
    let out = run(engine, &full_backup_command(cfg)).await?;
    if !out.success() {
        bail!(
            "backup on {leader} failed (exit {}): {}",
            out.exit_code,
            last_error(&format!("{}{}", out.stdout, out.stderr))
        );
    }
    Ok(format!("{}{}", out.stdout, out.stderr))
}

/// `pgctl backup retain`: keep the newest `keep_full` full backups (and the WAL they need);
/// with `dry_run`, only show what would be deleted. Runs on the leader's container.
pub async fn retain(cfg: &Config, engines: &[crate::docker::Engine], keep_full: u32, dry_run: bool) -> Result<String> {
    if backup_config(cfg).is_none() {
        bail!("{} has no [backup] section", cfg.hosts_path.display());
    }
    if keep_full == 0 {
        bail!("--keep-full 0 would delete every backup; keep at least 1 (2 or more recommended)");
    }
    let status = crate::cluster::status::fetch(cfg, engines).await?;
    let host = status
        .leader
        .or_else(|| status.members.first().map(|m| m.name.clone()))
        .context("no member answers")?;
    let engine = engines
        .iter()
        .find(|e| e.host == host)
        .context("the leader's host is not reachable")?;
    let n = keep_full.to_string();
    let retention = format!("--repo1-retention-full={n}");
    let mut args: Vec<&str> = match cfg.hosts.cluster.backup_engine {
        BackupEngine::Pgbackrest => vec!["expire", &retention],
        // Without --confirm WAL-G only prints what it would delete.
        BackupEngine::Walg => vec!["delete", "retain", "FULL", &n],
    };
    match (cfg.hosts.cluster.backup_engine, dry_run) {
        (BackupEngine::Pgbackrest, true) => args.push("--dry-run"),
        (BackupEngine::Walg, false) => args.push("--confirm"),
        _ => {}
    }
    let out = run(engine, &command(cfg, &args)).await?;
    let text = format!("{}{}", out.stdout, out.stderr);
    if !out.success() {
        bail!("retention failed on {host}: {}", last_error(&text));
    }
    Ok(text)
}

/// Runs a backup-engine command as postgres in `engine`'s Patroni container.
pub async fn run(engine: &crate::docker::Engine, cmd: &[String]) -> Result<crate::docker::ExecOutput> {
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let env = [&format!("PGPASSFILE={}", crate::cluster::spec::PGPASS) as &str];
    crate::docker::exec_env(&engine.docker, crate::cluster::spec::PATRONI, &cmd, Some("postgres"), &env).await
}

#[cfg(test)]
mod tests {
    //! Golden files of both engines' configuration and the archiving Patroni gets.
    use super::*;
    use crate::render::golden;

    const HOSTS: &str = r#"
[cluster]
name = "main"
postgres_major = 16
image = "pgctl/postgres:16"
dcs = "etcd"
backup_engine = "ENGINE"
[backup]
s3_endpoint = "https://s3.example.com:9443"
s3_bucket = "pg-backups"
s3_prefix = "/main/"
s3_region = "eu-central-1"
keep_full = 5
[[host]]
name = "pg1"
endpoint = "unix:///var/run/docker.sock"
address = "10.0.0.1"
roles = ["etcd", "patroni"]
"#;

    fn config(engine: &str) -> Config {
        let hosts: crate::config::HostsFile = toml::from_str(&HOSTS.replace("ENGINE", engine)).unwrap();
        let secret = |s: &str| Some(crate::config::Secret(s.into()));
        let mut secrets = crate::config::SecretsFile::default();
        secrets.s3.access_key_id = secret("RWKEY");
        secrets.s3.secret_access_key = secret("rw-secret");
        secrets.s3.readonly_access_key_id = secret("ROKEY");
        secrets.s3.readonly_secret_access_key = secret("ro-secret");
        Config {
            hosts_path: "hosts.toml".into(),
            secrets_path: "secrets.toml".into(),
            hosts,
            secrets,
            warnings: vec![],
        }
    }

    #[test]
    fn golden_backup_configs() {
        let pgbackrest = config("pgbackrest");
        let f = files(&pgbackrest, Access::ReadWrite).unwrap();
        golden("pgbackrest.conf", &f[0].contents);
        assert!(f[0].contents.contains("repo1-path=/main\n") && f[0].contents.contains("repo1-storage-port=9443"));
        let ro = files(&pgbackrest, Access::ReadOnly).unwrap();
        assert!(
            ro[0].contents.contains("repo1-s3-key=ROKEY") && !ro[0].contents.contains("RWKEY"),
            "read-only access carries only the read-only key"
        );

        let walg = config("walg");
        let f = files(&walg, Access::ReadWrite).unwrap();
        golden("walg.json", &f[0].contents);
        let v: serde_json::Value = serde_json::from_str(&f[0].contents).unwrap();
        assert_eq!(v["WALG_S3_PREFIX"], "s3://pg-backups/main");
        assert_eq!(v["WALG_PREVENT_WAL_OVERWRITE"], "true");
        assert_eq!(v["AWS_S3_FORCE_PATH_STYLE"], "true");

        // Patroni archives with the engine (leader only: archive_mode=on) and restores with it.
        let yml = crate::cluster::spec::patroni_yml(&pgbackrest, pgbackrest.host("pg1").unwrap()).unwrap();
        golden("patroni-pgbackrest.yml", &yml);
        let v: serde_json::Value = serde_saphyr::from_str(&yml).unwrap();
        assert_eq!(v["postgresql"]["parameters"]["archive_mode"], "on");
        assert_eq!(
            v["postgresql"]["parameters"]["archive_command"],
            "pgbackrest --config=/etc/pgctl/pgbackrest.conf --stanza=main archive-push %p"
        );
        assert!(v["postgresql"]["recovery_conf"]["restore_command"]
            .as_str()
            .unwrap()
            .contains("archive-get %f \"%p\""));
        let walg_yml = crate::cluster::spec::patroni_yml(&walg, walg.host("pg1").unwrap()).unwrap();
        assert!(walg_yml.contains("wal-g --config /etc/pgctl/walg.json wal-push %p"));
    }
}
