//! `pgctl backup now|list|retain`.

use super::Ctx;
use crate::backup;
use crate::output::{self, size};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum BackupCommand {
    /// A full backup on the current leader, now
    Now {
        /// Switch to a new WAL segment first (pg_switch_wal), so the newest WAL is archived
        #[arg(long)]
        switch_wal: bool,
    },
    /// Keep the newest N full backups (and the WAL they need); --dry-run shows what would go
    Retain {
        #[arg(long)]
        keep_full: u32,
        #[arg(long)]
        dry_run: bool,
    },
    /// Backups in the repository (read from S3 with the read-only key; no running cluster needed)
    List,
}

pub async fn run(command: BackupCommand, ctx: &Ctx) -> Result<()> {
    match command {
        BackupCommand::Now { switch_wal } => {
            let (cfg, engines) = ctx.connect_available().await?;
            let taken = backup::backup_now(&cfg, &engines, switch_wal).await?;
            output::passthrough(&taken.log);
            output::result(&taken, |t| format!("backup of `{}` done on {}", cfg.hosts.cluster.name, t.host))
        }
        BackupCommand::Retain { keep_full, dry_run } => {
            let (cfg, engines) = ctx.connect_available().await?;
            if !dry_run {
                ctx.confirm(&format!(
                    "delete all but the newest {keep_full} full backup(s) of `{}`",
                    cfg.hosts.cluster.name
                ))?;
            }
            let retained = backup::retain(&cfg, &engines, keep_full, dry_run).await?;
            output::passthrough(&retained.log);
            output::result(&retained, |r| {
                format!(
                    "{} {} full backup(s) kept",
                    if r.dry_run { "dry run:" } else { "retention applied:" },
                    r.keep_full
                )
            })
        }
        BackupCommand::List => {
            let cfg = ctx.load()?;
            let listing = backup::list::list(&cfg).await?;
            output::result(&listing, listing_text)
        }
    }
}

fn listing_text(listing: &backup::list::Listing) -> String {
    let time = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map(|d| d.format(&time::format_description::well_known::Rfc3339).unwrap_or_default())
            .unwrap_or_default()
    };
    let rows = listing.backups.iter().map(|b| {
        vec![
            b.name.clone(),
            b.kind.clone(),
            time(b.start),
            time(b.stop),
            size(b.size_bytes),
            b.wal_start.clone(),
        ]
    });
    format!(
        "{}\nearliest restorable point: {}\nlatest restorable point: about {} (newest archived WAL {})",
        output::table(&["backup", "type", "start", "stop", "size", "WAL start"], rows),
        listing
            .earliest_restorable
            .map(time)
            .unwrap_or_else(|| "none (no backup yet)".into()),
        listing.latest_restorable.map(time).unwrap_or_else(|| "unknown".into()),
        listing.wal_max.as_deref().unwrap_or("unknown")
    )
}
