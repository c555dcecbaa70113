//! `pgctl upgrade`: move a running cluster to a new image, host by host.

use super::views::status_text;
use super::{Ctx, Wait};
use crate::output;
use crate::upgrade::rolling;
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
Examples:\n  pgctl image push --image registry/pg:15.10-2\n  pgctl upgrade --image registry/pg:15.10-2";

#[derive(Args)]
pub struct UpgradeArgs {
    /// The image to roll out (already delivered with `pgctl image push --image TAG`)
    #[arg(long, value_name = "TAG")]
    image: String,
    /// Replicas must be within this many MiB of the leader before and after each restart
    #[arg(long, default_value_t = 16)]
    max_lag_mb: u64,
    #[command(flatten)]
    wait: Wait,
}

pub async fn run(args: UpgradeArgs, ctx: &Ctx) -> Result<()> {
    let (cfg, engines) = ctx.connect_all().await?;
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
