//! `pgctl config render`: the files `up` uploads, for review.

use super::Ctx;
use crate::cluster::spec::{self, ImageFacts};
use crate::{docker, error, image, output};
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

pub async fn run(command: ConfigCommand, ctx: &Ctx) -> Result<()> {
    let ConfigCommand::Render { host, file } = command;
    let cfg = ctx.load()?;
    let h = cfg
        .host(&host)
        .ok_or_else(|| error::usage(format!("no host `{host}` in {}", cfg.hosts_path.display())))?;
    let facts = local_image_facts(&cfg.hosts.cluster.image).await;
    let text = spec::render_file(&cfg, h, &facts, &file)?
        .ok_or_else(|| error::usage(format!("--file {file}: allowed are {}", spec::RENDERABLE.join(", "))))?;
    output::raw(&text)
}

/// What the image holds, from the local engine's copy; without one, rendered as for an image
/// with no optional components (and said so).
async fn local_image_facts(image: &str) -> ImageFacts {
    let local = match docker::local().await {
        Ok(l) => l,
        Err(_) => return facts_unknown(image),
    };
    match (docker::image_id(&local.docker, image).await, image::manifest(&local, image).await) {
        (Ok(Some(id)), Ok(manifest)) => ImageFacts::from_manifest(&id, &manifest),
        _ => facts_unknown(image),
    }
}

fn facts_unknown(image: &str) -> ImageFacts {
    output::warn(format!(
        "image {image} is not in the local engine: rendered as for an image without TimescaleDB"
    ));
    ImageFacts::default()
}
