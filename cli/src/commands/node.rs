//! `pgctl node add | remove`: grow and shrink a running cluster one host at a time.

use super::views::status_text;
use super::{Ctx, Wait};
use crate::nodes::{self, source::ReplicaFrom};
use crate::output;
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Join a host (already added to hosts.toml) to the running cluster as a replica
    #[command(long_about = "Join a host to the running cluster as a replica.\n\n\
Add the host to hosts.toml first (roles = [\"patroni\"]; on Consul the host runs a Consul client agent unless its \
roles make it a `consul-server`, and pgctl refuses an even number of servers). The replica's data comes from:\n  \
leader  pg_basebackup from the leader\n  \
backup  the newest backup in S3 plus the WAL archived since: the leader is not read from (a failed fetch falls back \
to the basebackup); refused when no backup can serve\n  \
auto    the backup, unless the WAL written since it exceeds 10 GiB or 30% of the database (then the leader); says \
which and why\n\
Safe to re-run: a host that is already a member is only converged.\n\n\
Examples:\n  pgctl node add pg4\n  pgctl node add pg4 --replica-from leader")]
    Add {
        host: String,
        /// Where the replica's data comes from
        #[arg(long, value_enum, default_value_t = ReplicaFrom::Auto)]
        replica_from: ReplicaFrom,
        /// How long to wait for the new member to stream, in seconds
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
    /// Take a member out of the running cluster (its data volume stays unless --volumes)
    #[command(long_about = "Take a member out of the running cluster.\n\n\
Refuses the leader unless --switchover (the leadership moves to another member first). Stops the member's Patroni, \
removes it from the DCS and its replication slot from the leader, and waits until the rest is healthy. A Consul \
client agent on the host leaves too; an etcd member or Consul server keeps running (the DCS keeps its voters). \
Then delete the host from hosts.toml, or the next `pgctl up` adds it back.\n\n\
Examples:\n  pgctl node remove pg4\n  pgctl node remove pg1 --switchover --volumes")]
    Remove {
        host: String,
        /// Move the leadership away first when the host holds it
        #[arg(long)]
        switchover: bool,
        /// Also delete the host's data volumes (its copy of the data is lost)
        #[arg(long)]
        volumes: bool,
        #[command(flatten)]
        wait: Wait,
    },
}

pub async fn run(command: NodeCommand, ctx: &Ctx) -> Result<()> {
    match command {
        NodeCommand::Add {
            host,
            replica_from,
            timeout,
        } => {
            let cfg = ctx.load()?;
            let opts = nodes::AddOptions {
                host,
                from: replica_from,
                timeout: std::time::Duration::from_secs(timeout),
            };
            let added = nodes::add(&cfg, &opts).await?;
            output::result(&added, |a| format!("{} joined: {}\n{}", a.host, a.made_by, status_text(&a.status)))
        }
        NodeCommand::Remove {
            host,
            switchover,
            volumes,
            wait,
        } => {
            let cfg = ctx.load()?;
            let what = if volumes { " and delete its data volumes" } else { "" };
            ctx.confirm(&format!("remove {host} from cluster `{}`{what}", cfg.hosts.cluster.name))?;
            let opts = nodes::RemoveOptions {
                host,
                switchover,
                volumes,
                timeout: wait.duration(),
            };
            let removed = nodes::remove(&cfg, &opts).await?;
            output::result(&removed, |r| {
                let kept = if r.kept_volumes.is_empty() {
                    String::new()
                } else {
                    format!("\nkept on {}: {} (`--volumes` deletes them)", r.host, r.kept_volumes.join(", "))
                };
                format!("{} removed{kept}\nNEXT: {}\n{}", r.host, r.next, status_text(&r.status))
            })
        }
    }
}
