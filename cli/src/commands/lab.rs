//! `pgctl lab up|down|status`: simulated hosts on this machine.

use super::Ctx;
use crate::{image, lab, output};
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Make (or complete) the lab: base image, N hosts with their own engines, S3, hosts.toml
    #[command(
        long_about = "Make (or complete) the lab: N simulated database hosts and application hosts, each a container \
running its own Docker Engine reachable over TCP with mutual TLS (a lab CA made by pgctl), an S3 server (Garage) \
behind HTTPS, and a ready DIR/hosts.toml + DIR/secrets.toml. Safe to re-run: what exists is kept; hosts.toml is \
written anew.\n\nThe stack is the mission's, Consul + WAL-G, when --artifacts supplies their binaries \
(ansible-free-scripts/build-go-tools.sh builds them into /var/cache/pgctl/artifacts); otherwise etcd + pgBackRest \
from Debian. --dcs / --backup-engine choose. With Consul one application host (app1: a Consul client agent, no \
database) is added, so clients resolve master.<name>.service.consul the way production does.\n\nExample:\n  \
pgctl lab up && pgctl image build --source debian --base pgctl/debian:bookworm --artifacts /var/cache/pgctl/artifacts \\\n    \
--without timescaledb --hosts lab/hosts.toml && pgctl image push --hosts lab/hosts.toml && pgctl up --hosts lab/hosts.toml"
    )]
    Up {
        #[command(flatten)]
        lab: LabArgs,
        /// Number of simulated database hosts
        #[arg(long, default_value_t = 3)]
        count: usize,
        /// Number of application hosts (Consul client agent, no database); default 1 with Consul, 0 with etcd
        #[arg(long)]
        app_hosts: Option<usize>,
        /// DCS the lab's hosts.toml names (default: consul when --artifacts has it, else etcd)
        #[arg(long, value_parser = ["consul", "etcd"])]
        dcs: Option<String>,
        /// Backup engine the lab's hosts.toml names (default: walg when --artifacts has it, else pgbackrest)
        #[arg(long, value_parser = ["walg", "pgbackrest"])]
        backup_engine: Option<String>,
        /// Directory of supplied binaries (with SHA256SUMS) the lab's image is built with
        #[arg(long, env = "PGCTL_ARTIFACTS", default_value = "/var/cache/pgctl/artifacts")]
        artifacts: PathBuf,
        /// The lab network (a /24); hosts get .11, .12, ..., S3 gets .10
        #[arg(long, default_value = "172.30.77.0/24")]
        subnet: String,
        /// Garage S3 server binary (`cargo install garage`; ansible-free-scripts/build-garage.sh)
        #[arg(long, env = "PGCTL_GARAGE_BIN", default_value = "/var/cache/pgctl/garage-2.5.0/bin/garage")]
        garage: PathBuf,
        /// Base image for the lab's images (made locally with mmdebstrap if missing)
        #[arg(long, default_value = image::base::DEFAULT_BASE_TAG)]
        base: String,
        #[arg(long, default_value = image::base::DEFAULT_MIRROR)]
        mirror: String,
    },
    /// Remove every container, volume and network of the lab, and its directory
    Down {
        #[command(flatten)]
        lab: LabArgs,
        /// Also remove the lab's own images (simulated host, S3)
        #[arg(long)]
        images: bool,
    },
    /// Show the lab's hosts, whether their engines answer, and whether S3 answers
    Status {
        #[command(flatten)]
        lab: LabArgs,
    },
}

#[derive(Args)]
pub struct LabArgs {
    /// Lab name (label value and network name)
    #[arg(long, default_value = "pgctl-lab")]
    name: String,
    /// Directory for the lab's CA, certificates, hosts.toml and secrets.toml
    #[arg(long, default_value = "lab")]
    dir: PathBuf,
}

pub async fn run(command: LabCommand, ctx: &Ctx) -> Result<()> {
    // `lab up --hosts N` was the number of hosts before --hosts became the global hosts file.
    if ctx
        .global
        .hosts
        .to_str()
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(crate::error::usage(format!(
            "--hosts {} names a hosts file; the number of lab hosts is `--count {}`",
            ctx.global.hosts.display(),
            ctx.global.hosts.display()
        )));
    }
    match command {
        LabCommand::Up {
            lab: l,
            count,
            app_hosts,
            dcs,
            backup_engine,
            artifacts,
            subnet,
            garage,
            base,
            mirror,
        } => {
            let stack = lab::Stack::choose(dcs.as_deref(), backup_engine.as_deref(), &artifacts);
            let spec = lab::LabSpec {
                name: l.name,
                dir: l.dir,
                hosts: count,
                app_hosts: app_hosts.unwrap_or(usize::from(stack.dcs == "consul")),
                stack,
                subnet,
                garage,
                base,
                mirror,
            };
            lab::up(&spec).await?;
            let hosts = spec.dir.join("hosts.toml");
            let from = if spec.stack.dcs != "consul" && spec.stack.backup_engine != "walg" {
                String::new()
            } else {
                format!(" --artifacts {}", artifacts.display())
            };
            output::step(format!(
                "  next: pgctl image build --source debian --base {}{from} --without {} --hosts {h} && pgctl image push --hosts {h} && pgctl up --hosts {h}",
                spec.base,
                spec.stack.without(),
                h = hosts.display()
            ));
            let status = lab::status(&spec.name, &spec.dir).await?;
            output::result(&status, status_text)
        }
        LabCommand::Down { lab: l, images } => {
            let removed = lab::down(&l.name, &l.dir, images).await?;
            output::result(&removed, |removed| {
                let mut text = format!("removed {} object(s) of lab `{}`", removed.len(), l.name);
                for r in removed {
                    text.push_str(&format!("\n  {r}"));
                }
                text
            })
        }
        LabCommand::Status { lab: l } => output::result(&lab::status(&l.name, &l.dir).await?, status_text),
    }
}

fn status_text(status: &lab::LabStatus) -> String {
    if status.hosts.is_empty() {
        return format!("lab `{}` has no hosts (run `pgctl lab up`)\nS3: {}", status.name, status.s3);
    }
    let rows = status.hosts.iter().map(|h| {
        vec![
            h.name.clone(),
            h.container.clone(),
            h.state.clone(),
            h.address.clone(),
            h.engine.clone(),
        ]
    });
    format!(
        "{}\nS3: {}",
        output::table(&["host", "container", "state", "address", "engine"], rows),
        status.s3
    )
}
