//! `pgctl image push`: deliver the cluster's image to every host, concurrently.
//! Stream mode: hosts that already have the exact image ID are skipped; the others receive it
//! engine-to-engine, all from one export (fan-out), without the layers each already has (an
//! image rebuilt above its PostgreSQL layer sends the layers above it only), and the ID is
//! verified afterwards. A push that failed on a host is run again for that host alone: the
//! others have the image.
//! Registry mode: hosts pull it with the registry credentials from secrets. One host failing
//! does not stop the others.

use crate::config::{Config, HostConfig, ImageDelivery};
use crate::docker::{self, connect, save_stream, transfer, Engine};
use anyhow::{bail, Context, Result};
use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptions;
use futures_util::future::join_all;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Instant;

/// What happened on one host.
#[derive(Debug, Clone, Serialize)]
pub struct HostOutcome {
    pub host: String,
    /// `present` (already had it), `transferred`, `pulled` or `failed`.
    pub result: String,
    pub bytes: u64,
    pub seconds: f64,
    pub error: Option<String>,
}

/// Delivers `image` to `hosts` (all of hosts.toml unless limited).
pub async fn push(config: &Config, image: &str, hosts: &[&HostConfig]) -> Result<Vec<HostOutcome>> {
    let base = config.base_dir();
    let progress = crate::output::multi_progress();
    let started = Instant::now();
    let bars: Vec<ProgressBar> = hosts
        .iter()
        .map(|host| {
            let bar = progress.add(ProgressBar::new_spinner());
            bar.set_style(ProgressStyle::with_template("{prefix:>10} {spinner} {msg} {bytes} ({bytes_per_sec})").expect("valid template"));
            bar.set_prefix(host.name.clone());
            bar
        })
        .collect();
    let connected = join_all(hosts.iter().map(|host| async move {
        connect::connect(host, base)
            .await
            .map_err(|u| anyhow::anyhow!("unreachable ({}): {}", u.endpoint, u.cause))
    }))
    .await;
    let results: Vec<(Result<&'static str>, f64)> = match config.hosts.cluster.image_delivery {
        ImageDelivery::Stream => stream_to_all(image, &connected, &bars, started).await?,
        ImageDelivery::Registry => {
            join_all(connected.iter().zip(&bars).map(|(engine, bar)| async move {
                let result = match engine {
                    Ok(engine) => pull(config, engine, image, bar).await,
                    Err(e) => Err(anyhow::anyhow!("{e:#}")),
                };
                (result, started.elapsed().as_secs_f64())
            }))
            .await
        }
    };
    let mut outcomes = Vec::new();
    for ((host, bar), (result, seconds)) in hosts.iter().zip(&bars).zip(results) {
        let bytes = bar.position();
        bar.finish_and_clear();
        let outcome = match result {
            Ok(kind) => {
                progress.suspend(|| {
                    crate::output::step(format!(
                        "{:>10}: {kind} ({} in {})",
                        host.name,
                        crate::output::size(bytes),
                        crate::output::seconds(seconds)
                    ))
                });
                HostOutcome {
                    host: host.name.clone(),
                    result: kind.into(),
                    bytes,
                    seconds,
                    error: None,
                }
            }
            Err(e) => {
                progress.suspend(|| crate::output::step(format!("{:>10}: FAILED: {e:#}", host.name)));
                HostOutcome {
                    host: host.name.clone(),
                    result: "failed".into(),
                    bytes,
                    seconds,
                    error: Some(format!("{e:#}")),
                }
            }
        };
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// Stream mode: hosts that already have the exact image ID are skipped; the others receive it
/// together from one export of the local engine (a host costs its network share, not a second
/// `docker save`), and each is checked for the exact ID afterwards. One result (and the
/// seconds it took) per host, in order.
async fn stream_to_all(
    image: &str,
    connected: &[Result<Engine>],
    bars: &[ProgressBar],
    started: Instant,
) -> Result<Vec<(Result<&'static str>, f64)>> {
    let local = docker::local().await?;
    let local_id = docker::image_id(&local.docker, image)
        .await?
        .with_context(|| format!("image {image} is not in the local engine: build it with `pgctl image build --tag {image}`"))?;
    let diff_ids = local
        .docker
        .inspect_image(image)
        .await
        .with_context(|| format!("inspecting image {image}"))?
        .root_fs
        .and_then(|r| r.layers)
        .unwrap_or_default();
    // Each host: whether it has the image, and which layers it has (those are not sent).
    let present = join_all(connected.iter().map(|engine| async {
        match engine {
            Ok(engine) => {
                let (id, layers) = tokio::join!(docker::image_id(&engine.docker, image), layers_on(engine));
                id.map(|id| (id.as_deref() == Some(local_id.as_str()), layers))
            }
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        }
    }))
    .await;
    let mut results: Vec<Option<(Result<&'static str>, f64)>> = Vec::new();
    let mut wanted = Vec::new();
    for (i, p) in present.into_iter().enumerate() {
        match p {
            Ok((true, _)) => results.push(Some((Ok("present"), started.elapsed().as_secs_f64()))),
            Ok((false, layers)) => {
                results.push(None);
                wanted.push((i, layers));
            }
            Err(e) => results.push(Some((Err(e), started.elapsed().as_secs_f64()))),
        }
    }
    let destinations = wanted
        .iter_mut()
        .map(|(i, layers)| {
            bars[*i].set_message("streaming");
            let bar = bars[*i].clone();
            transfer::Destination {
                docker: connected[*i].as_ref().expect("connected").docker.clone(),
                has: std::mem::take(layers),
                on_bytes: Box::new(move |n| bar.inc(n)),
            }
        })
        .collect();
    let wanted: Vec<usize> = wanted.into_iter().map(|(i, _)| i).collect();
    let loaded = transfer::stream_image_to_all(&local.docker, image, &diff_ids, destinations).await;
    let checked = join_all(wanted.iter().zip(loaded).map(|(&i, loaded)| {
        let engine = connected[i].as_ref().expect("connected");
        let local_id = &local_id;
        async move {
            loaded?;
            match docker::image_id(&engine.docker, image).await? {
                Some(id) if id == *local_id => Ok("transferred"),
                Some(id) => bail!("after the transfer the host has {image} as {id}, expected {local_id}"),
                None => bail!("after the transfer the host does not have {image}"),
            }
        }
    }))
    .await;
    for (&i, result) in wanted.iter().zip(checked) {
        results[i] = Some((result, started.elapsed().as_secs_f64()));
    }
    Ok(results.into_iter().map(|r| r.expect("every host has a result")).collect())
}

/// The chain IDs of every layer of every image on the host. Empty when they cannot be read:
/// the host is then sent every layer, which is always right.
async fn layers_on(engine: &Engine) -> HashSet<String> {
    let Ok(images) = engine
        .docker
        .list_images(None::<bollard::query_parameters::ListImagesOptions>)
        .await
    else {
        return HashSet::new();
    };
    futures_util::stream::iter(images)
        .map(|summary| async move { engine.docker.inspect_image(&summary.id).await.ok() })
        .buffer_unordered(8)
        .filter_map(|info| async move { info?.root_fs?.layers })
        .fold(HashSet::new(), |mut chains, diff_ids| async move {
            chains.extend(save_stream::chain_ids(&diff_ids));
            chains
        })
        .await
}

async fn pull(config: &Config, host: &Engine, image: &str, bar: &ProgressBar) -> Result<&'static str> {
    let s = &config.secrets.registry;
    let credentials = DockerCredentials {
        username: s.username.as_ref().map(|s| s.expose().to_string()),
        password: s.password.as_ref().map(|s| s.expose().to_string()),
        serveraddress: config.hosts.registry.as_ref().map(|r| r.server.clone()),
        ..Default::default()
    };
    bar.set_message("pulling");
    let options = CreateImageOptions {
        from_image: Some(image.into()),
        ..Default::default()
    };
    let mut stream = host.docker.create_image(Some(options), None, Some(credentials));
    while let Some(msg) = stream.next().await {
        let info = msg.map_err(|e| anyhow::anyhow!("pulling {image}: {}", connect::describe(&e)))?;
        if let Some(detail) = info.progress_detail {
            if let (Some(cur), Some(_)) = (detail.current, detail.total) {
                bar.set_position(cur as u64);
            }
        }
    }
    Ok("pulled")
}

/// Tags the local image as `target` and pushes it to its registry (GitLab CI's build stage).
pub async fn publish(image: &str, target: &str, username: Option<String>, password: Option<String>) -> Result<()> {
    let local = docker::local().await?;
    docker::image_id(&local.docker, image)
        .await?
        .with_context(|| format!("image {image} is not in the local engine"))?;
    let (repo, tag) = split_reference(target);
    local
        .docker
        .tag_image(
            image,
            Some(bollard::query_parameters::TagImageOptions {
                repo: Some(repo.clone()),
                tag: Some(tag.clone()),
            }),
        )
        .await
        .with_context(|| format!("tagging {image} as {target}"))?;
    let server = repo.split('/').next().unwrap_or_default().to_string();
    let credentials = DockerCredentials {
        username,
        password,
        serveraddress: Some(server),
        ..Default::default()
    };
    let options = bollard::query_parameters::PushImageOptions {
        tag: Some(tag),
        ..Default::default()
    };
    let mut stream = local.docker.push_image(&repo, Some(options), Some(credentials));
    while let Some(msg) = stream.next().await {
        let info = msg.map_err(|e| anyhow::anyhow!("pushing {target}: {}", connect::describe(&e)))?;
        if let Some(status) = info.status {
            tracing::debug!("{status}");
        }
    }
    Ok(())
}

/// `registry/path/name:tag` -> (`registry/path/name`, `tag`); a port colon is not a tag.
pub fn split_reference(reference: &str) -> (String, String) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (reference.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_reference() {
        assert_eq!(super::split_reference("reg:5000/a/b:15"), ("reg:5000/a/b".into(), "15".into()));
        assert_eq!(super::split_reference("reg:5000/a/b"), ("reg:5000/a/b".into(), "latest".into()));
        assert_eq!(super::split_reference("pgctl/postgres:15"), ("pgctl/postgres".into(), "15".into()));
    }
}
