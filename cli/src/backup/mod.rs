//! Backups to S3 behind one interface (`Engine`), with one implementation per engine
//! (`walg.rs`, `pgbackrest.rs`), chosen once from hosts.toml by `engine()`. Each engine renders
//! its own native configuration (a 0600 file in the Patroni container) and gives the archive,
//! restore, backup, retention, listing and fetch commands; this module holds what they share.

mod cipher;
pub mod elsewhere;
pub mod list;
pub mod owner;
mod pgbackrest;
pub mod target;
mod walg;

use crate::config::{BackupConfig, BackupEngine, Config};
use crate::docker::{self, spec::File};
use crate::{layout, member, output};
use anyhow::{bail, Context, Result};
use futures_util::future::BoxFuture;
use serde::Serialize;
use target::Target;

/// What differs between WAL-G and pgBackRest. Commands are argument vectors run as postgres in
/// a container of the cluster's image, with the engine's configuration file in place.
pub trait Engine: Send + Sync {
    /// The engine's name for messages.
    fn name(&self) -> &'static str;
    /// The engine's configuration file (path, contents) for S3 access `s3`.
    fn config_file(&self, cfg: &Config, s3: &S3<'_>, keep_full: u32) -> Result<(&'static str, String)>;
    /// The engine's command line with `args`.
    fn command(&self, cfg: &Config, args: &[&str]) -> Vec<String>;
    /// archive_command (with `%p`).
    fn archive_push(&self, cfg: &Config) -> Vec<String>;
    /// restore_command (with `%f` and `%p`).
    fn archive_get(&self, cfg: &Config) -> Vec<String>;
    /// A full backup of the running leader.
    fn full_backup(&self, cfg: &Config) -> Vec<String>;
    /// The scheduled job: a full backup, then retention where the engine does not expire itself.
    fn scheduled_job(&self, cfg: &Config, keep_full: u32) -> String;
    /// Keep the newest `keep_full` full backups (and the WAL they need).
    fn retain(&self, cfg: &Config, keep_full: u32, dry_run: bool) -> Vec<String>;
    /// What prepares the repository for a new cluster, if anything (pgctl records the prefix's
    /// owner either way: `owner.rs`).
    fn init_repository(&self, cfg: &Config) -> Option<Vec<String>>;
    /// Objects of the prefix whose presence shows `init_repository` already ran there.
    fn repository_files(&self, _cfg: &Config) -> Vec<String> {
        Vec::new()
    }
    /// Whether a failed `init_repository` only met another command of the engine holding the
    /// repository's lock (a scheduled backup running right then): the repository exists.
    fn init_busy(&self, _output: &str) -> bool {
        false
    }
    /// The error for a failed `init_repository`, from its output.
    fn init_failure(&self, _cfg: &Config, output: &str) -> anyhow::Error {
        anyhow::anyhow!("preparing the backup repository failed: {}", last_error(output))
    }
    /// Lists the backups (JSON on stdout).
    fn list_backups(&self, cfg: &Config) -> Vec<String>;
    /// Where, under the cluster's prefix, the engine archives WAL.
    fn wal_dir(&self, cfg: &Config) -> String;
    /// The backups the engine's own metadata in S3 describes, read by pgctl itself.
    fn read_catalog<'a>(&'a self, cfg: &'a Config, bucket: &'a crate::s3::Bucket) -> BoxFuture<'a, Result<Vec<list::Backup>>>;
    /// The system identifier whose archive the repository holds, from `list_backups` output.
    fn system_id(&self, backups: &str) -> Result<Option<String>>;
    /// Fetches `backup` into the (empty) data directory of a new replica; Patroni writes the
    /// standby settings and the replica follows the leader from there.
    fn replica_fetch(&self, cfg: &Config, backup: &str) -> Vec<String>;
    /// Fetches `backup` into the data directory for recovery to `target`; also the recovery
    /// settings to append when the engine writes none.
    fn fetch(&self, cfg: &Config, backup: &str, target: &Target, timeline: &str, verify: bool) -> (Vec<String>, Option<String>);
}

/// The backup engine hosts.toml chooses: the one place the choice is made.
pub fn engine(cfg: &Config) -> &'static dyn Engine {
    match cfg.hosts.cluster.backup_engine {
        BackupEngine::Pgbackrest => &pgbackrest::PgBackRest,
        BackupEngine::Walg => &walg::WalG,
    }
}

fn command_line(base: &[String], args: &[&str]) -> Vec<String> {
    base.iter().cloned().chain(args.iter().map(|a| a.to_string())).collect()
}

pub use crate::s3::Access;

/// S3 settings as the engines' templates see them.
#[derive(Debug, Serialize)]
pub struct S3<'a> {
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
    /// Client-side encryption key, when secrets have one.
    encryption_key: Option<String>,
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
    let (key, secret, key_name, secret_name) = match access {
        Access::ReadWrite => (&s.access_key_id, &s.secret_access_key, "access_key_id", "secret_access_key"),
        Access::ReadOnly => (
            &s.readonly_access_key_id,
            &s.readonly_secret_access_key,
            "readonly_access_key_id",
            "readonly_secret_access_key",
        ),
    };
    let get = |v: &Option<crate::config::Secret>, name: &str| {
        v.as_ref()
            .map(|s| s.expose().to_string())
            .with_context(|| format!("secrets: s3.{name} is missing"))
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
        ca_file: b.s3_ca_file.as_ref().map(|_| layout::S3_CA),
        encryption_key: cfg.secrets.backup_encryption_key.as_ref().map(|k| k.expose().to_string()),
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

fn require_backup(cfg: &Config) -> Result<&BackupConfig> {
    backup_config(cfg).ok_or_else(|| crate::error::usage(format!("{} has no [backup] section", cfg.hosts_path.display())))
}

/// Files the backup engine needs in a container (config, CA), all 0600 postgres.
pub fn files(cfg: &Config, access: Access) -> Result<Vec<File>> {
    let Some(b) = backup_config(cfg) else { return Ok(vec![]) };
    let s3 = s3_context(cfg, b, access)?;
    let (path, contents) = engine(cfg).config_file(cfg, &s3, b.keep_full)?;
    let mut out = vec![File::new(path, contents, true)];
    if let Some(ca) = &b.s3_ca_file {
        let path = crate::config::resolve(cfg.base_dir(), ca);
        let pem = std::fs::read_to_string(&path).with_context(|| format!("backup.s3_ca_file: reading {}", path.display()))?;
        out.push(File::new(layout::S3_CA, pem, true));
    }
    Ok(out)
}

/// `files` ready to upload into a container of an image whose postgres user is `owner`.
pub fn upload_files(cfg: &Config, access: Access, owner: (u64, u64)) -> Result<Vec<docker::FileSpec>> {
    Ok(files(cfg, access)?.iter().map(|f| f.upload(owner)).collect())
}

/// PostgreSQL settings for continuous archiving (only the leader archives: archive_mode=on).
pub fn archive_parameters(cfg: &Config) -> Vec<(&'static str, String)> {
    if backup_config(cfg).is_none() {
        return vec![];
    }
    vec![
        ("archive_mode", "on".into()),
        ("archive_command", engine(cfg).archive_push(cfg).join(" ")),
        ("archive_timeout", "60s".into()),
    ]
}

/// restore_command for replicas and recovery.
pub fn restore_command(cfg: &Config) -> Option<String> {
    backup_config(cfg)?;
    Some(engine(cfg).archive_get(cfg).join(" "))
}

/// The scheduled full backup: hosts.toml's schedule and the job `pgctl-scheduled-backup`
/// (images/postgres/scheduled-backup.sh) runs then; `None` without a [backup] section.
pub fn scheduled_backup(cfg: &Config) -> Option<(String, String)> {
    let b = backup_config(cfg)?;
    Some((b.schedule.clone(), engine(cfg).scheduled_job(cfg, b.keep_full)))
}

/// Patroni's replica method from a backup (see replica-from-backup.sh), with a repository.
pub fn replica_script(cfg: &Config) -> Option<File> {
    backup_config(cfg)?;
    Some(File::new(
        layout::REPLICA_SCRIPT,
        crate::render::script("replica-from-backup.sh").into(),
        true,
    ))
}

/// Prepares the repository for this cluster; refuses a prefix that holds another database
/// system's archive (two clusters in one prefix corrupt each other's timelines).
pub async fn init_repository(cfg: &Config, leader: &docker::Engine) -> Result<()> {
    if backup_config(cfg).is_none() {
        return Ok(());
    }
    let e = engine(cfg);
    let Some(cmd) = e.init_repository(cfg) else {
        return owner::record(cfg, leader).await;
    };
    // A re-run leaves an existing repository alone: preparing it again would take the
    // repository's lock, and a scheduled backup starting right then would fail.
    if repository_exists(cfg, e).await? {
        return owner::record(cfg, leader).await;
    }
    let out = member::as_postgres(leader, &cmd).await?;
    let text = format!("{}{}", out.stdout, out.stderr);
    if !out.success() {
        if e.init_busy(&text) {
            output::step(format!(
                "{}: a {} command holds the repository's lock (a scheduled backup): the repository exists",
                leader.host,
                e.name()
            ));
            return owner::record(cfg, leader).await;
        }
        return Err(e.init_failure(cfg, &text));
    }
    owner::record(cfg, leader).await
}

async fn repository_exists(cfg: &Config, e: &dyn Engine) -> Result<bool> {
    let files = e.repository_files(cfg);
    if files.is_empty() {
        return Ok(false);
    }
    let bucket = crate::s3::Bucket::connect(cfg, Access::ReadOnly)?;
    for key in &files {
        if bucket.get(key).await?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn last_error(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| l.contains("ERROR"))
        .unwrap_or(text.lines().last().unwrap_or_default())
        .trim()
        .to_string()
}

/// A backup taken by `backup now`.
#[derive(Debug, Serialize)]
pub struct Taken {
    /// The host whose member led and was backed up.
    pub host: String,
    pub seconds: f64,
    /// What the engine printed.
    #[serde(skip)]
    pub log: String,
}

/// `pgctl backup now`: optionally switch WAL, then a full backup on the current leader.
pub async fn backup_now(cfg: &Config, engines: &[docker::Engine], switch_wal: bool) -> Result<Taken> {
    require_backup(cfg)?;
    let started = std::time::Instant::now();
    output::step(crate::s3::preflight(cfg).await.context("pre-flight; no backup was started")?);
    let leader = member::leader(cfg, engines).await.context("a backup runs on the leader")?;
    if switch_wal {
        member::psql(leader, "SELECT pg_switch_wal()").await?;
    }
    output::step(format!("full backup with {} on the leader {}...", engine(cfg).name(), leader.host));
    let out = member::as_postgres(leader, &engine(cfg).full_backup(cfg)).await?;
    if !out.success() {
        bail!(
            "backup on {} failed (exit {}): {}",
            leader.host,
            out.exit_code,
            last_error(&format!("{}{}", out.stdout, out.stderr))
        );
    }
    Ok(Taken {
        host: leader.host.clone(),
        seconds: started.elapsed().as_secs_f64(),
        log: format!("{}{}", out.stdout, out.stderr),
    })
}

/// What `backup retain` did (or, with a dry run, would do).
#[derive(Debug, Serialize)]
pub struct Retained {
    pub keep_full: u32,
    pub dry_run: bool,
    /// What the engine printed: the backups it deleted or would delete.
    pub log: String,
}

/// `pgctl backup retain`: keep the newest `keep_full` full backups (and the WAL they need);
/// with `dry_run`, only show what would be deleted. Runs on the leader's container.
pub async fn retain(cfg: &Config, engines: &[docker::Engine], keep_full: u32, dry_run: bool) -> Result<Retained> {
    require_backup(cfg)?;
    if keep_full == 0 {
        return Err(crate::error::refused(
            "--keep-full 0 would delete every backup; keep at least 1 (2 or more recommended)",
        ));
    }
    // On the leader, or on any member when there is none: retention only talks to S3.
    let host = match member::leader(cfg, engines).await {
        Ok(leader) => leader,
        Err(_) => engines.first().context("no member answers")?,
    };
    let out = member::as_postgres(host, &engine(cfg).retain(cfg, keep_full, dry_run)).await?;
    let log = format!("{}{}", out.stdout, out.stderr);
    if !out.success() {
        bail!("retention failed on {}: {}", host.host, last_error(&log));
    }
    Ok(Retained { keep_full, dry_run, log })
}

#[cfg(test)]
pub(crate) mod tests {
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

    pub(crate) fn config(engine: &str) -> Config {
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
        assert!(v["WALG_LIBSODIUM_KEY"].is_null(), "no key in secrets, no encryption");

        // With a key in secrets, both engines encrypt client-side.
        for (engine, expect) in [("walg", "\"WALG_LIBSODIUM_KEY\": \"k"), ("pgbackrest", "repo1-cipher-pass=k")] {
            let mut cfg = config(engine);
            cfg.secrets.backup_encryption_key = Some(crate::config::Secret("k".repeat(32)));
            let f = files(&cfg, Access::ReadOnly).unwrap();
            assert!(f[0].contents.contains(expect), "{engine}: {}", f[0].contents);
        }
        let mut cfg = config("pgbackrest");
        cfg.secrets.backup_encryption_key = Some(crate::config::Secret("k".repeat(32)));
        assert!(files(&cfg, Access::ReadWrite).unwrap()[0]
            .contents
            .contains("repo1-cipher-type=aes-256-cbc\n"));
    }
}
