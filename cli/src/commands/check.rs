//! `pgctl check`: validate the configuration files; with --online also reach every host's
//! Docker engine and the backup repository (both S3 keys), changing nothing.

use super::Ctx;
use crate::output;
use anyhow::{Context, Result};
use clap::Args;

#[derive(Args)]
pub struct CheckArgs {
    /// Also reach every host's Docker engine and S3: the read-write key lists the cluster's
    /// prefix, the read-only key lists it and is refused a write (a test object it could
    /// write is removed again, and the check fails)
    #[arg(long)]
    online: bool,
}

pub async fn run(args: CheckArgs, ctx: &Ctx) -> Result<()> {
    let cfg = ctx.load()?;
    if args.online {
        online(&cfg).await?;
    }
    let c = &cfg.hosts.cluster;
    let summary = serde_json::json!({
        "hosts_file": cfg.hosts_path,
        "secrets_file": cfg.secrets_path,
        "cluster": c.name,
        "postgres_major": c.postgres_major,
        "hosts": cfg.hosts.hosts.len(),
        "dcs": format!("{:?}", c.dcs).to_lowercase(),
        "backup_engine": cfg.hosts.backup.as_ref().map(|_| format!("{:?}", c.backup_engine).to_lowercase()),
        "warnings": cfg.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    output::result(&summary, |_| {
        format!(
            "{} + {}: OK — cluster `{}`, PostgreSQL {}, {} host(s), dcs {:?}, backups {}",
            cfg.hosts_path.display(),
            cfg.secrets_path.display(),
            c.name,
            c.postgres_major,
            cfg.hosts.hosts.len(),
            c.dcs,
            if cfg.hosts.backup.is_some() {
                format!("{:?}", c.backup_engine)
            } else {
                "off".into()
            }
        )
    })
}

/// What `--online` checks; every problem is an error naming the host or the key.
async fn online(cfg: &crate::config::Config) -> Result<()> {
    let engines = crate::docker::connect_all(cfg).await?;
    output::step(format!("Docker engines: all {} host(s) answer", engines.len()));
    if cfg.hosts.backup.is_some() {
        output::step(crate::s3::preflight(cfg).await.context("check --online")?);
    }
    Ok(())
}
