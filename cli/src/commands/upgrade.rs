//! `pgctl upgrade`: move a running cluster to a new image, host by host.

use super::views::status_text;
use super::{Ctx, Wait};
use crate::output;
use crate::upgrade::{major, rolling};
use anyhow::Result;
use clap::Args;

pub const LONG_ABOUT: &str = "Roll a new image (a PostgreSQL minor, a Patroni, PostGIS or WAL-G bump) through the running cluster.\n\n\
Deliver the image first (`pgctl image push --image TAG`). Pre-flight, nothing changes when it fails: the image is on every \
host, has the cluster's PostgreSQL major and postgres uid; the cluster has a leader, is not paused, and every replica \
streams within --max-lag-mb. The plan (hosts in order, what is recreated) is printed and must be confirmed (--yes in scripts).\n\n\
Then hosts.toml gets `image = TAG` (the previous file kept as hosts.toml.before-upgrade) and the hosts are rolled one at \
a time: hosts without a member, asynchronous replicas, the synchronous standby, each one's DCS container and then its \
Patroni container (tagged nofailover until it streams and has caught up; the cluster must be healthy again before the \
next host), then a switchover to an updated replica, then the old leader. Last, extensions whose installed version is \
older than the image's default are updated (ALTER EXTENSION ... UPDATE, postgis_extensions_upgrade()).\n\n\
Clients see one switchover. When a host does not come back on the new image, it is put back on the old one, hosts.toml \
is restored, and the command stops; the hosts after it are untouched. Re-running continues where a run stopped.\n\n\
With --pg-major N the image has a newer PostgreSQL major and the cluster is upgraded in place with pg_upgrade (downtime: \
the stop, pg_upgrade and the new leader's start; the command prints it). Pre-flight on the running cluster, nothing changes \
when it fails: the image on every host, a healthy cluster, a backup of the old major, an empty new archive prefix \
(`<s3_prefix>-pg<N>`: old backups cannot restore the new major), the upgrade image (new image + the old major's binaries) \
built on the leader's host. Then the cluster stops, `pg_upgrade --check` and `pg_upgrade --link` (--copy keeps the \
leader's old files apart) run on the leader's data into a new volume generation. Until the new cluster's first start \
(the point of no return, printed) a failure starts the old major again on its untouched volumes. Then hosts.toml gets the \
new image, postgres_major and s3_prefix (previous file: hosts.toml.before-major-upgrade), Patroni adopts the data (new \
system identifier), the replicas are rebuilt on new volume generations (their old volumes keep the old major's data), \
extensions are updated, statistics rebuilt, indexes under a changed glibc collation listed (--reindex rebuilds them), and \
a first full backup starts the new archive.\n\n\
Examples:\n  pgctl image push --image registry/pg:15.10-2\n  pgctl upgrade --image registry/pg:15.10-2\n  \
pgctl upgrade --pg-major 17 --image registry/pg:17.6-1";

#[derive(Args)]
pub struct UpgradeArgs {
    /// The image to roll out (already delivered with `pgctl image push --image TAG`)
    #[arg(long, value_name = "TAG")]
    image: String,
    /// Replicas must be within this many MiB of the leader before and after each restart
    #[arg(long, default_value_t = 16)]
    max_lag_mb: u64,
    /// Upgrade to this newer PostgreSQL major (the image has it): pg_upgrade in place, with downtime
    #[arg(long, value_name = "N")]
    pg_major: Option<u32>,
    /// With --pg-major: pg_upgrade --copy instead of --link (slower, needs the space twice, keeps the leader's old files)
    #[arg(long, requires = "pg_major")]
    copy: bool,
    /// With --pg-major: rebuild indexes whose collation may have changed with the C library
    #[arg(long, requires = "pg_major")]
    reindex: bool,
    #[command(flatten)]
    wait: Wait,
}

pub async fn run(args: UpgradeArgs, ctx: &Ctx) -> Result<()> {
    let (cfg, engines) = ctx.connect_all().await?;
    if let Some(pg_major) = args.pg_major {
        let opts = major::Options {
            image: args.image,
            pg_major,
            copy: args.copy,
            reindex: args.reindex,
            timeout: args.wait.duration().max(std::time::Duration::from_secs(300)),
        };
        let plan = major::plan(&cfg, &engines, &opts).await?;
        output::step(plan.describe(&cfg));
        ctx.confirm_typed(
            &format!("upgrade cluster `{}` to PostgreSQL {pg_major} (downtime)", cfg.hosts.cluster.name),
            &cfg.hosts.cluster.name,
        )?;
        let done = major::execute(&cfg, &engines, &plan, &opts).await?;
        return output::result(&done, |d| {
            format!(
                "PostgreSQL {} -> {} in {}; downtime {}\nphases: {}\nold volumes kept (delete once you trust the upgrade): {}\n{}",
                d.migrated.old_major,
                d.migrated.new_major,
                output::seconds(d.migrated.phases.iter().filter(|(p, _)| !p.starts_with(' ')).map(|(_, s)| s).sum()),
                output::seconds(d.downtime_seconds),
                output::phases(&d.migrated.phases),
                d.kept_volumes.join(", "),
                status_text(&d.migrated.status)
            )
        });
    }
    let opts = rolling::Options {
        image: args.image,
        max_lag_bytes: args.max_lag_mb * 1024 * 1024,
        timeout: args.wait.duration(),
    };
    let plan = rolling::plan(&cfg, &engines, &opts).await?;
    if plan.nothing_to_do() {
        return output::result(&plan, |p| {
            format!("every host already runs {} ({}): nothing to do", p.image, p.postgres)
        });
    }
    let rows = plan.steps.iter().map(|s| {
        vec![
            s.host.clone(),
            s.role.clone().unwrap_or_else(|| "-".into()),
            if s.containers.is_empty() {
                "already on the image".into()
            } else {
                s.containers.join(", ")
            },
        ]
    });
    output::step(format!(
        "upgrade cluster `{}` from {} to {} (PostgreSQL {}), in this order:\n{}{}",
        cfg.hosts.cluster.name,
        plan.from_image,
        plan.image,
        plan.postgres,
        output::table(&["HOST", "ROLE", "RECREATE"], rows),
        plan.notes.iter().map(|n| format!("\nnote: {n}")).collect::<String>()
    ));
    ctx.confirm(&format!("roll {} through cluster `{}`", plan.image, cfg.hosts.cluster.name))?;
    let rolled = rolling::execute(&cfg, &engines, &plan, &opts).await?;
    output::result(&rolled, |r| {
        let switched = r
            .switchover
            .as_ref()
            .map(|s| format!("\nswitchover {} -> {} in {}", s.from, s.to, output::seconds(s.seconds)))
            .unwrap_or_default();
        let ext = r
            .extensions
            .iter()
            .map(|e| format!("\ndatabase {}: {} {} -> {}", e.database, e.name, e.from, e.to))
            .collect::<String>();
        format!(
            "{} hosts on {} in {}{switched}{ext}\n{}",
            r.hosts.len(),
            r.image,
            output::seconds(r.seconds),
            status_text(&r.status)
        )
    })
}
