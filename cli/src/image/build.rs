//! Running a build through the Docker API with the log streamed live, and the two-step
//! database image build: build, read the manifest the build wrote, tag with it as labels.

use super::{context, BuildPlan, LABEL_IMAGE, LABEL_MANIFEST_PREFIX};
use crate::docker::Engine;
use crate::render::render;
use anyhow::{bail, Context, Result};
use bollard::query_parameters::BuildImageOptions;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// A built and tagged image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltImage {
    pub tag: String,
    pub id: String,
    pub size_bytes: i64,
    pub seconds: f64,
    pub manifest: BTreeMap<String, String>,
}

/// Build settings beyond the context.
#[derive(Debug, Default, Clone)]
pub struct BuildSettings {
    pub tag: Option<String>,
    pub no_cache: bool,
    pub http_proxy: Option<String>,
    pub labels: HashMap<String, String>,
    /// Print the build log as it arrives (otherwise only a failure's tail is shown).
    pub verbose: bool,
}

/// Runs `POST /build` with the classic builder; streams the log to stderr; returns the ID.
/// On failure the error carries the failing step and its last lines of output.
pub async fn run_build(engine: &Engine, context_tar: Vec<u8>, what: &str, s: &BuildSettings) -> Result<String> {
    let mut buildargs = HashMap::new();
    if let Some(proxy) = &s.http_proxy {
        // Predefined build args: used by apt/curl/pip during the build, not kept in the image.
        for k in ["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"] {
            buildargs.insert(k.to_string(), proxy.clone());
        }
    }
    let options = BuildImageOptions {
        dockerfile: "Dockerfile".into(),
        t: s.tag.clone(),
        rm: true,
        forcerm: true,
        nocache: s.no_cache,
        buildargs: Some(buildargs),
        labels: Some(s.labels.clone()),
        ..Default::default()
    };
    let mut stream = engine
        .docker
        .build_image(options, None, Some(bollard::body_full(context_tar.into())));
    let mut step = String::new();
    let mut tail: Vec<String> = Vec::new();
    let mut id = None;
    while let Some(msg) = stream.next().await {
        let info = match msg {
            Ok(info) => info,
            Err(e) => bail!(
                "building {what}: {}\n  during {step}\n  last output:\n{}",
                crate::docker::connect::describe(&e),
                indent(&tail)
            ),
        };
        if let Some(text) = &info.stream {
            for line in text.lines() {
                if line.starts_with("Step ") {
                    step = line.to_string();
                    tail.clear();
                    if !s.verbose {
                        crate::output::step(format!("  [{what}] {line}"));
                    }
                } else {
                    tail.push(line.to_string());
                    if tail.len() > 40 {
                        tail.remove(0);
                    }
                }
                if s.verbose {
                    crate::output::step(format!("  [{what}] {line}"));
                }
            }
        }
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            bail!(
                "building {what} failed at {step}:\n  {err}\n  last output of that step:\n{}",
                indent(&tail)
            );
        }
        if let Some(aux) = info.aux {
            id = aux.id.or(id);
        }
    }
    match id {
        Some(id) => Ok(id),
        None => bail!("building {what}: the engine reported no image ID (last step: {step})"),
    }
}

fn indent(lines: &[String]) -> String {
    lines.iter().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// Builds the database image described by `plan` and tags it with its manifest as labels.
pub async fn build_postgres(engine: &Engine, plan: &BuildPlan, verbose: bool) -> Result<BuiltImage> {
    let started = Instant::now();
    let r = &plan.request;
    let ctx = context::postgres_context(plan)?;
    super::base::warn_if_stale(engine, &r.base).await;
    crate::output::step(format!(
        "building {} from {} (source {:?}, context {} KiB)",
        r.tag,
        r.base,
        r.source,
        ctx.len() / 1024
    ));
    let settings = BuildSettings {
        no_cache: r.no_cache,
        http_proxy: r.http_proxy.clone(),
        verbose,
        ..Default::default()
    };
    let stage1 = run_build(engine, ctx, "image", &settings).await?;

    let manifest_json = read_file_from_image(engine, &stage1, crate::layout::IMAGE_MANIFEST).await?;
    let manifest: BTreeMap<String, String> =
        serde_json::from_slice(&manifest_json).context("parsing the image's /etc/pgctl/manifest.json")?;
    let mut labels: BTreeMap<String, String> = manifest
        .iter()
        .map(|(k, v)| (format!("{LABEL_MANIFEST_PREFIX}{k}"), v.clone()))
        .collect();
    labels.insert(LABEL_IMAGE.into(), "postgres".into());
    labels.insert(format!("{LABEL_MANIFEST_PREFIX}source"), format!("{:?}", r.source).to_lowercase());
    labels.insert(format!("{LABEL_MANIFEST_PREFIX}pg-major"), r.pg_major.to_string());
    labels.insert(
        format!("{LABEL_MANIFEST_PREFIX}built-by"),
        format!("pgctl {}", env!("CARGO_PKG_VERSION")),
    );

    let dockerfile = render(
        "postgres/Dockerfile.labels.j2",
        minijinja::context! { image_id => stage1, labels => labels },
    )?;
    let ctx = context::gzip_tar(&[context::file("Dockerfile", dockerfile, 0o644)])?;
    let settings = BuildSettings {
        tag: Some(r.tag.clone()),
        ..Default::default()
    };
    let id = run_build(engine, ctx, "labels", &settings).await?;
    let size = engine.docker.inspect_image(&id).await?.size.unwrap_or_default();
    Ok(BuiltImage {
        tag: r.tag.clone(),
        id,
        size_bytes: size,
        seconds: started.elapsed().as_secs_f64(),
        manifest,
    })
}

/// Reads one file out of an image without running it (create, archive download, remove).
pub async fn read_file_from_image(engine: &Engine, image: &str, path: &str) -> Result<Vec<u8>> {
    let docker = &engine.docker;
    let body = bollard::models::ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec!["/bin/true".into()]),
        ..Default::default()
    };
    let created = docker
        .create_container(None::<bollard::query_parameters::CreateContainerOptions>, body)
        .await
        .context("creating a container to read the manifest")?;
    let result = async {
        let options = bollard::query_parameters::DownloadFromContainerOptions { path: path.into() };
        let mut tar_bytes = Vec::new();
        let mut stream = docker.download_from_container(&created.id, Some(options));
        while let Some(chunk) = stream.next().await {
            tar_bytes.extend_from_slice(&chunk.with_context(|| format!("reading {path} from image {image}"))?);
        }
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut entry = archive.entries()?.next().context("empty archive")??;
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut out)?;
        Ok::<_, anyhow::Error>(out)
    }
    .await;
    crate::docker::remove_container(docker, &created.id).await?;
    result
}
