//! The lab's own images (simulated host, S3 server), built locally on top of the local base.
//! Each tag carries a hash of its build context, so a changed template rebuilds it.

use crate::docker::{image_id, Engine};
use crate::image::build::{run_build, BuildSettings};
use crate::image::context::{file, gzip_tar};
use crate::render::render;
use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

const HOST_ENTRYPOINT: &[u8] = include_bytes!("../../../images/lab-host/entrypoint.sh");
const S3_ENTRYPOINT: &[u8] = include_bytes!("../../../images/lab-s3/entrypoint.sh");

async fn ensure(engine: &Engine, repo: &str, files: Vec<crate::docker::FileSpec>) -> Result<String> {
    let mut hash = Sha256::new();
    for f in &files {
        hash.update(f.path.as_bytes());
        hash.update(&f.contents);
    }
    let tag = format!("{repo}:{}", &hex::encode(hash.finalize())[..12]);
    if image_id(&engine.docker, &tag).await?.is_some() {
        return Ok(tag);
    }
    crate::output::step(format!("building {tag}..."));
    let settings = BuildSettings {
        tag: Some(tag.clone()),
        labels: [(crate::layout::LABEL_LAB.to_string(), "image".to_string())].into(),
        ..Default::default()
    };
    run_build(engine, gzip_tar(&files)?, repo, &settings).await?;
    Ok(tag)
}

/// The simulated host image: Debian's docker.io started with mutual TLS.
pub async fn ensure_host_image(engine: &Engine, base: &str) -> Result<String> {
    let dockerfile = render("lab-host/Dockerfile.j2", minijinja::context! { base })?;
    ensure(
        engine,
        "pgctl/lab-host",
        vec![file("Dockerfile", dockerfile, 0o644), file("entrypoint.sh", HOST_ENTRYPOINT, 0o755)],
    )
    .await
}

/// The S3 server image: Garage (binary built from crates.io, cached) behind nginx.
pub async fn ensure_s3_image(engine: &Engine, base: &str, garage: &Path) -> Result<String> {
    let binary = std::fs::read(garage).with_context(|| {
        format!(
            "reading the Garage binary {} (build it with ansible-free-scripts/build-garage.sh, or pass --garage PATH)",
            garage.display()
        )
    })?;
    let dockerfile = render("lab-s3/Dockerfile.j2", minijinja::context! { base })?;
    ensure(
        engine,
        "pgctl/lab-s3",
        vec![
            file("Dockerfile", dockerfile, 0o644),
            file("entrypoint.sh", S3_ENTRYPOINT, 0o755),
            file("garage", binary, 0o755),
        ],
    )
    .await
}
