//! `pgctl check`: validate the configuration files; touches no host.

use super::Ctx;
use crate::output;
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct CheckArgs {}

pub fn run(_: CheckArgs, ctx: &Ctx) -> Result<()> {
    let cfg = ctx.load()?;
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
