//! `pgctl verify-backup`: prove a backup restores. It is fetched into a throwaway volume on one
//! host with the read-only S3 key and archiving off (it can never write into the archive),
//! recovered and promoted, then read whole (`pg_dumpall > /dev/null`) and checked with amcheck
//! over every B-tree index of every database. The volume is removed afterwards, pass or fail.

use crate::backup::target::{self, Target};
use crate::cluster::volumes;
use crate::config::Config;
use crate::docker::{self, Engine};
use crate::recovery::{self as recover, Fetch, Mode, Recovered};
use crate::{layout, member, output};
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, Serialize)]
pub struct Verified {
    pub backup: String,
    pub host: String,
    pub target: String,
    /// The S3 key the verification read with (the read-only one); the secret is never shown.
    pub s3_key_id: String,
    pub recovered: Recovered,
    pub seconds: f64,
}

pub async fn verify(cfg: &Config, engines: &[Engine], backup: Option<&str>, on: Option<&str>, latest: bool) -> Result<Verified> {
    if cfg.hosts.backup.is_none() {
        return Err(crate::error::usage(format!("{} has no [backup] section", cfg.hosts_path.display())));
    }
    let s3_key_id = cfg
        .secrets
        .s3
        .readonly_access_key_id
        .as_ref()
        .map(|k| k.expose().to_string())
        .with_context(|| {
            format!(
                "{}: s3.readonly_access_key_id is missing: verify-backup reads with a read-only key only, so it can never write into the archive",
                cfg.secrets_path.display()
            )
        })?;
    let started = std::time::Instant::now();
    let listing = crate::backup::list::list(cfg).await?;
    let target = if latest { Target::Latest } else { Target::EndOfBackup };
    let chosen = target::choose_backup(&listing, &Target::Latest, backup)?;
    let engine = pick_host(cfg, engines, on).await?;
    output::step(format!(
        "verifying backup {} on {} (recovery to {}; read-only S3 key {s3_key_id}; archiving off)",
        chosen.name,
        engine.host,
        target.describe()
    ));
    let volume = layout::verify_volume(&cfg.hosts.cluster.name);
    // What an interrupted verification left is discarded: it only ever holds a copy.
    docker::remove_container(&engine.docker, &recover::container_name(cfg, Mode::Verify)).await?;
    volumes::remove(engine, &volume).await?;
    let labels = HashMap::from([(layout::LABEL_THROWAWAY.to_string(), "true".to_string())]);
    docker::ensure_volume(&engine.docker, &volume, labels).await?;
    let fetch = Fetch {
        backup: &chosen.name,
        target: &target,
        timeline: "latest",
        fetched: None,
    };
    let result = recover::run(cfg, cfg, engine, &volume, Mode::Verify, Some(fetch)).await;
    let removed = volumes::remove(engine, &volume).await;
    let recovered = result.with_context(|| format!("backup {} did NOT verify", chosen.name))?;
    removed?;
    Ok(Verified {
        backup: chosen.name.clone(),
        host: engine.host.clone(),
        target: target.describe(),
        s3_key_id,
        recovered,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The chosen host, or a member that is not the leader (the check's I/O stays off the primary).
async fn pick_host<'a>(cfg: &Config, engines: &'a [Engine], on: Option<&str>) -> Result<&'a Engine> {
    if let Some(name) = on {
        return engines
            .iter()
            .find(|e| e.host == name)
            .ok_or_else(|| crate::error::usage(format!("--on {name}: no such (reachable) host in {}", cfg.hosts_path.display())));
    }
    let leader = member::leader(cfg, engines).await.ok().map(|e| e.host.clone());
    let patroni = |e: &&Engine| cfg.host(&e.host).is_some_and(|h| h.has_role(crate::config::Role::Patroni));
    engines
        .iter()
        .filter(patroni)
        .find(|e| Some(&e.host) != leader.as_ref())
        .or_else(|| engines.iter().find(patroni))
        .context("no reachable host with the patroni role to verify on")
}
