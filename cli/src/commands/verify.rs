//! `pgctl verify-backup`: prove a backup restores.

use super::Ctx;
use crate::output;
use anyhow::Result;
use clap::Args;

pub const LONG_ABOUT: &str = "Prove a backup restores.\n\n\
The backup is fetched into a throwaway container and volume on one host with the read-only S3 key and archiving off, \
so it can never write into the archive. PostgreSQL recovers it (to the end of the backup, or with --latest through all archived WAL) \
and is promoted; then `pg_dumpall > /dev/null` reads every row and amcheck checks every B-tree index of every database \
(the Compose README's section 5.4). The container and volume are removed afterwards. Exits non-zero on any failure.\n\n\
Examples:\n  pgctl verify-backup\n  pgctl verify-backup --latest --on pg3\n  pgctl verify-backup --backup 20260517-030000F";

#[derive(Args)]
pub struct VerifyArgs {
    /// The backup to verify [default: the newest]
    #[arg(long)]
    backup: Option<String>,
    /// The host to verify on [default: a member that is not the leader]
    #[arg(long)]
    on: Option<String>,
    /// Replay all archived WAL after the backup, not only to its end
    #[arg(long)]
    latest: bool,
}

pub async fn run(a: VerifyArgs, ctx: &Ctx) -> Result<()> {
    let (cfg, engines) = ctx.connect_available().await?;
    let v = crate::verify::verify(&cfg, &engines, a.backup.as_deref(), a.on.as_deref(), a.latest).await?;
    output::result(&v, |v| {
        format!(
            "backup {} verified on {} in {}: recovered to {} (timeline {}), every row readable, {} B-tree indexes intact\n{}",
            v.backup,
            v.host,
            output::seconds(v.seconds),
            v.recovered.lsn,
            v.recovered.timeline,
            v.recovered.indexes_checked,
            output::phases(&v.recovered.phases)
        )
    })
}
