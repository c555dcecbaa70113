//! Another system's archive on the cluster's S3 service, always read with the read-only key:
//! the source of `migrate from-backup`, and the primary cluster of a disaster-recovery standby
//! cluster (hosts.toml `[standby] archive`). For the standby, the engine's configuration for
//! that archive lives in the Patroni container beside the cluster's own under another name:
//! the standby leader's restore_command and its bootstrap fetch read the primary's prefix,
//! while archive_command (once promoted) writes into the cluster's own.

use super::{engine, files, Access};
use crate::config::{split_s3_url, BackupEngine, Config, Secret};
use crate::docker::spec::File;
use crate::error;
use anyhow::Result;

/// An archive that is not the cluster's own.
pub struct Archive {
    /// `s3://BUCKET/PREFIX` on the cluster's S3 endpoint.
    pub url: String,
    /// Its engine [default: the cluster's].
    pub engine: Option<BackupEngine>,
    /// Its pgBackRest stanza.
    pub stanza: Option<String>,
    /// Its client-side encryption key [default: none].
    pub encryption_key: Option<Secret>,
}

/// The configuration that reads `archive`: the cluster's S3 endpoint, CA and keys with the
/// archive's bucket, prefix, engine, stanza and encryption key.
pub fn config_for(cfg: &Config, archive: &Archive) -> Result<Config> {
    let (bucket, prefix) = split_s3_url(&archive.url).ok_or_else(|| error::usage(format!("{}: expected s3://BUCKET/PATH", archive.url)))?;
    let mut out = cfg.clone();
    let Some(b) = out.hosts.backup.as_mut() else {
        return Err(error::usage(format!(
            "{} has no [backup] section: reading {} needs the cluster's S3 (endpoint, keys)",
            cfg.hosts_path.display(),
            archive.url
        )));
    };
    b.s3_bucket = bucket.to_string();
    b.s3_prefix = prefix.to_string();
    let engine = archive.engine.unwrap_or(cfg.hosts.cluster.backup_engine);
    out.hosts.cluster.backup_engine = engine;
    if engine == BackupEngine::Pgbackrest {
        out.hosts.cluster.name = archive
            .stanza
            .clone()
            .ok_or_else(|| error::usage(format!("{}: a pgBackRest archive needs its stanza name", archive.url)))?;
    }
    out.secrets.backup_encryption_key = archive.encryption_key.clone();
    Ok(out)
}

/// The primary cluster's archive a standby cluster reads, if hosts.toml names one. The same
/// encryption key as the cluster's own (secrets.toml); a pgBackRest stanza named like this
/// cluster unless `archive_stanza` says otherwise.
pub fn standby_archive(cfg: &Config) -> Result<Option<Config>> {
    let Some(s) = &cfg.hosts.standby else { return Ok(None) };
    let Some(url) = &s.archive else { return Ok(None) };
    let archive = Archive {
        url: url.clone(),
        engine: s.archive_engine,
        stanza: Some(s.archive_stanza.clone().unwrap_or_else(|| cfg.hosts.cluster.name.clone())),
        encryption_key: cfg.secrets.backup_encryption_key.clone(),
    };
    config_for(cfg, &archive).map(Some)
}

/// Where the primary's engine configuration lives: beside the cluster's own.
fn relocated(path: &str) -> String {
    match path.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/primary-{name}"),
        None => format!("primary-{path}"),
    }
}

/// The engine's configuration path of `primary` replaced by its relocated one.
fn relocate_command(primary: &Config, cmd: Vec<String>) -> Result<Vec<String>> {
    let (path, _) = config_file(primary)?;
    let to = relocated(&path);
    Ok(cmd.into_iter().map(|a| a.replace(&path, &to)).collect())
}

fn config_file(primary: &Config) -> Result<(String, String)> {
    let ours = files(primary, Access::ReadOnly)?;
    let first = ours
        .into_iter()
        .next()
        .expect("an archive's files start with the engine's configuration");
    Ok((first.path, first.contents))
}

/// restore_command reading the primary's archive (`%f`, `%p`).
pub fn standby_restore_command(primary: &Config) -> Result<String> {
    Ok(relocate_command(primary, engine(primary).archive_get(primary))?.join(" "))
}

/// Patroni's bootstrap method for the standby leader: the primary's newest backup.
pub const FETCH_REQUEST: &str = "/etc/pgctl/primary-fetch";

/// Files for the Patroni container of a standby cluster that reads an archive: the engine's
/// configuration for it (read-only key) and the fetch the bootstrap method runs.
pub fn standby_files(cfg: &Config) -> Result<Vec<File>> {
    let Some(primary) = standby_archive(cfg)? else { return Ok(vec![]) };
    let (path, contents) = config_file(&primary)?;
    let newest = match primary.hosts.cluster.backup_engine {
        BackupEngine::Walg => "LATEST",
        BackupEngine::Pgbackrest => "latest",
    };
    let fetch = relocate_command(&primary, engine(&primary).replica_fetch(&primary, newest))?;
    Ok(vec![
        File::new(&relocated(&path), contents, true),
        File::new(FETCH_REQUEST, fetch.join("\n") + "\n", true),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relocation_keeps_the_directory() {
        assert_eq!(relocated("/etc/pgctl/walg.json"), "/etc/pgctl/primary-walg.json");
        assert_eq!(relocated("/etc/pgctl/pgbackrest.conf"), "/etc/pgctl/primary-pgbackrest.conf");
    }
}
