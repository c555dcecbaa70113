//! `pgctl config render`: the files `up` uploads, for review.

use super::Ctx;
use crate::{cluster, error, output};
use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print a file exactly as `up` uploads it to HOST (it contains secrets: mind where it goes)
    Render {
        host: String,
        /// patroni.yml, etcd.yml or consul.json
        #[arg(long, default_value = "patroni.yml")]
        file: String,
    },
}

pub fn run(command: ConfigCommand, ctx: &Ctx) -> Result<()> {
    let ConfigCommand::Render { host, file } = command;
    let cfg = ctx.load()?;
    let h = cfg
        .host(&host)
        .ok_or_else(|| error::usage(format!("no host `{host}` in {}", cfg.hosts_path.display())))?;
    let text = cluster::spec::render_file(&cfg, h, &file)?
        .ok_or_else(|| error::usage(format!("--file {file}: allowed are {}", cluster::spec::RENDERABLE.join(", "))))?;
    output::raw(&text)
}
