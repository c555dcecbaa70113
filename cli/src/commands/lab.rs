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
        long_about = "Make (or complete) the lab: N simulated hosts, each a container running its own Docker Engine \
reachable over TCP with mutual TLS (a lab CA made by pgctl), an S3 server (Garage) behind HTTPS, and a ready \
DIR/hosts.toml + DIR/secrets.toml. Safe to re-run: what exists is kept.\n\nExample:\n  pgctl lab up --count 3 && pgctl --hosts lab/hosts.toml check"
    )]
    Up {
        #[command(flatten)]
        lab: LabArgs,
        /// Number of simulated hosts
        #[arg(long, default_value_t = 3)]
        count: usize,
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
            subnet,
            garage,
            base,
            mirror,
        } => {
            let spec = lab::LabSpec {
                name: l.name,
                dir: l.dir,
                hosts: count,
                subnet,
                garage,
                base,
                mirror,
            };
            lab::up(&spec).await?;
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
