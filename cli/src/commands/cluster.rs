//! The cluster's lifecycle and operations: up, status, switchover, failover, reinit, restart,
//! pause, resume, down, remove.

use super::views::status_text;
use super::{Ctx, Wait};
use crate::cluster::{self, status::ClusterStatus};
use crate::{error, output};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::time::Duration;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Converge every host to hosts.toml: DCS, then Patroni; waits until the cluster is healthy. Safe to re-run
    #[command(long_about = "Converge every host to hosts.toml.\n\n\
Pre-flight on all hosts first (engines reachable, image present — delivered if missing —, ports free, no foreign containers, no stale DCS state, \
the S3 repository usable); then the DCS (etcd or Consul), then one Patroni container per `patroni` host (host networking, data on a named volume, \
configuration and secrets uploaded as 0600 files); then waits for one leader and every replica streaming. A second run with nothing changed \
recreates nothing.\n\nExamples:\n  pgctl up\n  pgctl up --limit pg4            (a host just added to hosts.toml)\n  pgctl up --image registry/pg:1.2 (deploy exactly this image)")]
    Up(UpArgs),
    /// Members, roles, timelines, lag, streaming, DCS health, archiving, backups and image per host
    Status,
    /// Planned switchover of the leader role to another member
    Switchover {
        /// The member to become leader [default: Patroni picks a healthy replica]
        #[arg(long)]
        to: Option<String>,
        /// Schedule it (ISO 8601 with time zone, e.g. 2026-05-17T03:00+03:00)
        #[arg(long)]
        at: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Manual failover to a member (also when there is no healthy leader)
    Failover {
        #[arg(long)]
        to: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Rebuild a replica's data from the leader (for a member that no longer starts)
    Reinit {
        member: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Restart PostgreSQL on one member or all, through Patroni
    #[command(
        long_about = "Restart PostgreSQL through Patroni, one member at a time: replicas first, the leader last, \
waiting for a healthy cluster after each.\n\n\
Examples:\n  pgctl restart pg2\n  pgctl restart --pending   (only members whose settings wait for a restart: `pgctl config show`)"
    )]
    Restart {
        /// The member to restart [default: every member, or with --pending those waiting for a restart]
        #[arg(conflicts_with = "pending")]
        member: Option<String>,
        /// Only members with settings waiting for a restart (pending_restart in `pgctl status`)
        #[arg(long)]
        pending: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Make a standby cluster (hosts.toml [standby]) a writable cluster of its own: disaster recovery
    #[command(long_about = "Make a standby cluster a writable cluster of its own (disaster recovery).\n\n\
A standby cluster (hosts.toml [standby]) follows a primary outside it: streaming from `host` and/or replaying the primary's \
archive in S3 (`archive`). `pgctl status` shows how far behind it is. When the primary is lost, `pgctl promote` removes \
standby_cluster from Patroni's dynamic configuration: the standby leader finishes replaying what it has and becomes a leader \
on a new timeline. Then the cluster's superuser, replication and rewind roles are set to match its secrets.toml, its own \
backup repository is prepared and a first full backup goes into its own prefix (backup.s3_prefix).\n\n\
Refused while the standby leader still streams from the primary (the primary is alive: two writable clusters would \
diverge); --force overrides that. For a planned move from a standalone server use `pgctl migrate cutover`.\n\n\
Afterwards remove [standby] from hosts.toml.\n\nExamples:\n  pgctl status            (the Standby: line shows the lag)\n  pgctl promote --yes")]
    Promote {
        /// Promote even though the standby leader still streams from a live primary
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Maintenance mode: stop automatic failover
    Pause,
    /// Leave maintenance mode
    Resume,
    /// Stop the cluster's containers (replicas first, then the leader, then the DCS); keep all data
    Down,
    /// Remove the cluster's containers and its DCS scope; data volumes only with --volumes
    Remove {
        /// Required: this destroys the cluster
        #[arg(long)]
        i_am_aware: bool,
        /// Also delete the data volumes (all data is lost)
        #[arg(long)]
        volumes: bool,
    },
}

#[derive(Args)]
pub struct UpArgs {
    /// Converge only these hosts (repeatable); e.g. a node just added to hosts.toml
    #[arg(long)]
    limit: Vec<String>,
    /// Deploy this image instead of cluster.image from hosts.toml (what a pipeline just built)
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// How long to wait for the cluster to become healthy, in seconds
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

pub async fn run(command: ClusterCommand, ctx: &Ctx) -> Result<()> {
    let status = match command {
        ClusterCommand::Up(a) => {
            let mut cfg = ctx.load()?;
            if let Some(image) = a.image {
                cfg.hosts.cluster.image = image;
            }
            let opts = cluster::up::UpOptions {
                limit: a.limit,
                ..cluster::up::UpOptions::new(Duration::from_secs(a.timeout))
            };
            cluster::up::up(&cfg, &opts).await?
        }
        ClusterCommand::Status => {
            let (cfg, engines) = ctx.connect_available().await?;
            cluster::status::fetch(&cfg, &engines).await?
        }
        ClusterCommand::Switchover { to, at, wait } => {
            let (cfg, engines) = ctx.connect_available().await?;
            ctx.confirm(&format!(
                "switch the leader of `{}` over{}",
                cfg.hosts.cluster.name,
                to.as_deref().map(|t| format!(" to {t}")).unwrap_or_default()
            ))?;
            cluster::ops::switchover(&cfg, &engines, to.as_deref(), at.as_deref(), wait.duration()).await?
        }
        ClusterCommand::Failover { to, wait } => {
            let (cfg, engines) = ctx.connect_available().await?;
            ctx.confirm(&format!("fail `{}` over to {to}", cfg.hosts.cluster.name))?;
            cluster::ops::failover(&cfg, &engines, &to, wait.duration()).await?
        }
        ClusterCommand::Reinit { member, wait } => {
            let (cfg, engines) = ctx.connect_available().await?;
            ctx.confirm(&format!("delete {member}'s data and copy it again from the leader"))?;
            cluster::ops::reinit(&cfg, &engines, &member, wait.duration()).await?
        }
        ClusterCommand::Restart { member, pending, wait } => {
            use cluster::ops::Restart;
            let (cfg, engines) = ctx.connect_available().await?;
            let which = match (&member, pending) {
                (Some(m), _) => Restart::One(m),
                (None, true) => Restart::Pending,
                (None, false) => Restart::All,
            };
            let what = match which {
                Restart::One(m) => m.to_string(),
                Restart::All => "every member, one at a time".into(),
                Restart::Pending => "the members waiting for a restart, one at a time".into(),
            };
            ctx.confirm(&format!("restart PostgreSQL on {what}"))?;
            let (restarted, status) = cluster::ops::restart(&cfg, &engines, which, wait.duration()).await?;
            if restarted.is_empty() {
                output::step("no member waits for a restart: nothing restarted");
            }
            status
        }
        ClusterCommand::Promote { force, wait } => {
            let (cfg, engines) = ctx.connect_available().await?;
            ctx.confirm_typed("promote the standby cluster", &cfg.hosts.cluster.name)?;
            let done = crate::standby::promote(&cfg, &engines, force, wait.duration().max(Duration::from_secs(300))).await?;
            return output::result(&done, |p| {
                format!(
                    "{}\npromoted: writable {} after the request, on timeline {}{}",
                    status_text(&p.status),
                    output::seconds(p.seconds),
                    p.timeline,
                    p.first_backup
                        .as_ref()
                        .map(|b| format!("; first full backup {b}"))
                        .unwrap_or_default()
                )
            });
        }
        ClusterCommand::Pause | ClusterCommand::Resume => {
            let paused = matches!(command, ClusterCommand::Pause);
            let (cfg, engines) = ctx.connect_available().await?;
            cluster::ops::set_pause(&cfg, &engines, paused, Duration::from_secs(60)).await?
        }
        ClusterCommand::Down => return down(ctx).await,
        ClusterCommand::Remove { i_am_aware, volumes } => return remove(ctx, i_am_aware, volumes).await,
    };
    print_status(&status)
}

pub fn print_status(status: &ClusterStatus) -> Result<()> {
    output::result(status, status_text)
}

async fn down(ctx: &Ctx) -> Result<()> {
    let (cfg, engines) = ctx.connect_all().await?;
    ctx.confirm(&format!(
        "stop every container of `{}` (data is kept; `pgctl up` starts it again)",
        cfg.hosts.cluster.name
    ))?;
    let stopped = cluster::teardown::down(&cfg, &engines).await?;
    output::result(&stopped, |lines| lines.join("\n"))
}

async fn remove(ctx: &Ctx, i_am_aware: bool, volumes: bool) -> Result<()> {
    let cfg = ctx.load()?;
    let scope = cfg.hosts.cluster.name.clone();
    if !i_am_aware {
        return Err(error::refused(format!(
            "`pgctl remove` destroys cluster `{scope}` (containers and its DCS scope{}); it only runs with --i-am-aware. To only stop it, use `pgctl down`",
            if volumes {
                ", and with --volumes ALL ITS DATA"
            } else {
                "; data volumes are kept"
            }
        )));
    }
    ctx.confirm_typed(
        &format!("remove cluster `{scope}`{}", if volumes { " AND DELETE ALL ITS DATA" } else { "" }),
        &scope,
    )?;
    let engines = crate::docker::connect_all(&cfg).await?;
    let removed = cluster::teardown::remove(&cfg, &engines, volumes)
        .await
        .with_context(|| format!("removing cluster `{scope}`"))?;
    output::result(&removed, |lines| lines.join("\n"))
}
