//! Engine-to-engine image delivery without a registry: `GET /images/{name}/get` on the source
//! streamed straight into `POST /images/load` on the destination. Never buffered whole in
//! memory, and a source error aborts the load (a dropped error would give a truncated,
//! "successful" load).

use super::connect::TRANSFER_TIMEOUT_SECS;
use anyhow::{bail, Context, Result};
use bollard::query_parameters::ImportImageOptions;
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use std::time::Duration;

/// Streams `image` from `src` to `dst`, calling `on_bytes` with each chunk's size.
pub async fn stream_image(src: &Docker, dst: &Docker, image: &str, on_bytes: impl Fn(u64) + Send + 'static) -> Result<()> {
    let long = Duration::from_secs(TRANSFER_TIMEOUT_SECS);
    let src = src.clone().with_timeout(long);
    let dst = dst.clone().with_timeout(long);
    let export = src.export_image(image).inspect_ok(move |chunk| on_bytes(chunk.len() as u64));
    let mut load = dst.import_image_stream(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        export,
        None,
    );
    let mut loaded = false;
    while let Some(msg) = load.next().await {
        let info = msg.with_context(|| format!("loading image {image}"))?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            bail!("loading image {image}: {err}");
        }
        if info.stream.as_deref().is_some_and(|s| s.contains("Loaded image")) {
            loaded = true;
        }
    }
    if !loaded {
        // The engine reports every image it loads; silence means it loaded nothing.
        bail!("loading image {image}: the engine reported no loaded image (truncated stream?)");
    }
    Ok(())
}
