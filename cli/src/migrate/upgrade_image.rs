//! The upgrade image of `migrate from-volume`: the cluster's image plus the old major's
//! binaries, shared files and the libraries they need from the image the standalone server
//! ran, built on the volume's host (images/upgrade/), once per pair of images.

use crate::config::Config;
use crate::docker::{self, Engine};
use crate::image::build::{run_build, BuildSettings};
use crate::image::context::{file, gzip_tar};
use crate::output;
use anyhow::Result;
use sha2::{Digest, Sha256};

const COLLECT_LIBS: &str = include_str!("../../../images/upgrade/collect-libs.sh");
const KEEP_MISSING_LIBS: &str = include_str!("../../../images/upgrade/keep-missing-libs.sh");

/// The upgrade image on the volume's host, built once per (source image, cluster image).
pub async fn ensure_upgrade_image(cfg: &Config, engine: &Engine, source_image: &str, old_major: u32) -> Result<String> {
    let cluster_image = &cfg.hosts.cluster.image;
    let dockerfile = crate::render::render(
        "upgrade/Dockerfile.j2",
        minijinja::context! { source_image, cluster_image, old_major },
    )?;
    let mut hash = Sha256::new();
    for part in [
        dockerfile.as_str(),
        COLLECT_LIBS,
        KEEP_MISSING_LIBS,
        &docker::image_id(&engine.docker, source_image).await?.unwrap_or_default(),
        &docker::image_id(&engine.docker, cluster_image).await?.unwrap_or_default(),
    ] {
        hash.update(part.as_bytes());
    }
    let tag = format!(
        "pgctl/upgrade:{old_major}-to-{}-{}",
        cfg.hosts.cluster.postgres_major,
        &hex::encode(hash.finalize())[..12]
    );
    if docker::image_id(&engine.docker, &tag).await?.is_some() {
        return Ok(tag);
    }
    output::step(format!(
        "{}: building {tag} (the cluster's image with PostgreSQL {old_major} from {source_image})",
        engine.host
    ));
    let context = gzip_tar(&[
        file("Dockerfile", dockerfile, 0o644),
        file("collect-libs.sh", COLLECT_LIBS, 0o755),
        file("keep-missing-libs.sh", KEEP_MISSING_LIBS, 0o755),
    ])?;
    let settings = BuildSettings {
        tag: Some(tag.clone()),
        ..Default::default()
    };
    run_build(engine, context, "upgrade image", &settings).await?;
    Ok(tag)
}
