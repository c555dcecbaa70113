//! The monitoring image: the cluster's image plus Prometheus and Alertmanager (Debian's),
//! built on each monitoring host the first time it is needed and tagged by what defines it, so
//! a new cluster image or recipe gives a new tag and the containers are recreated.

use crate::config::{Config, Role};
use crate::docker::{self, Engine};
use crate::image::build::{run_build, BuildSettings};
use crate::image::context::{file, gzip_tar};
use crate::output;
use anyhow::Result;
use sha2::{Digest, Sha256};

fn dockerfile(cfg: &Config) -> Result<String> {
    crate::render::render(
        "monitoring/Dockerfile.j2",
        minijinja::context! { cluster_image => cfg.hosts.cluster.image },
    )
}

/// `pgctl/monitoring:<hash>` for the cluster image `image_id`.
pub fn image_tag(cfg: &Config, image_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(dockerfile(cfg).unwrap_or_default().as_bytes());
    hash.update(image_id.as_bytes());
    format!("pgctl/monitoring:{}", &hex::encode(hash.finalize())[..12])
}

/// Builds the monitoring image on every targeted monitoring host that lacks it.
pub async fn ensure_images(cfg: &Config, engines: &[&Engine], image_id: &str) -> Result<()> {
    let tag = image_tag(cfg, image_id);
    for engine in engines
        .iter()
        .filter(|e| cfg.host(&e.host).is_some_and(|h| h.has_role(Role::Monitoring)))
    {
        if docker::image_id(&engine.docker, &tag).await?.is_some() {
            continue;
        }
        output::step(format!(
            "{}: building {tag} (the cluster's image with Prometheus and Alertmanager from Debian; needs its apt sources reachable)",
            engine.host
        ));
        let context = gzip_tar(&[file("Dockerfile", dockerfile(cfg)?, 0o644)])?;
        let settings = BuildSettings {
            tag: Some(tag.clone()),
            ..Default::default()
        };
        run_build(engine, context, "monitoring image", &settings).await?;
    }
    Ok(())
}
