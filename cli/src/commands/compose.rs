//! `pgctl compose export`: one host's containers as a docker-compose.yml.

use super::Ctx;
use crate::output;
use anyhow::Result;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ComposeCommand {
    /// Write the docker-compose.yml (and its configuration files) running this host's containers
    #[command(
        long_about = "Write the docker-compose.yml that runs on one host exactly the containers `pgctl up` runs there.\n\n\
Same image, commands, volumes and labels (so `pgctl up` keeps containers made by compose), host networking, restart \
unless-stopped; their configuration files go to DIR/files/ with the mode and owner they have in the containers (owner \
only when run as root). The files hold secrets (passwords, keys): keep DIR out of git or encrypt it. Copy DIR to the \
host (`cp -a` / `rsync -a`: ownership matters) and run `docker-compose up -d` there, after removing the containers \
pgctl made (volumes stay). The host's engine must answer: the export reads its image and current data volume.\n\n\
Examples:\n  pgctl compose export --host pg1\n  pgctl compose export --host app1 --dir deploy/app1"
    )]
    Export(ExportArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    /// The host whose containers to export (a [[host]] name)
    #[arg(long)]
    host: String,
    /// Where to write docker-compose.yml and files/ [default: compose/HOST next to hosts.toml]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub async fn run(c: ComposeCommand, ctx: &Ctx) -> Result<()> {
    match c {
        ComposeCommand::Export(a) => {
            let cfg = ctx.load()?;
            let dir = a.dir.unwrap_or_else(|| cfg.base_dir().join("compose").join(&a.host));
            let export = crate::compose::export(&cfg, &a.host, &dir).await?;
            output::result(&export, |e| {
                format!(
                    "wrote {} ({} service(s): {}) and {} file(s) under {}/files — they hold secrets; next: copy the directory to {} and `docker-compose up -d` there",
                    e.compose_file.display(),
                    e.services.len(),
                    e.services.join(", "),
                    e.files,
                    dir.display(),
                    e.host
                )
            })
        }
    }
}
