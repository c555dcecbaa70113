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

/// Chunks in flight per destination: the export runs at most this far ahead of the slowest host.
const QUEUE_CHUNKS: usize = 16;

/// One destination of [`stream_image_to_all`].
pub struct Destination {
    pub docker: Docker,
    pub on_bytes: Box<dyn Fn(u64) + Send + Sync>,
}

/// Streams `image` from `src` to every destination at once from a single export: each chunk
/// goes to every destination still loading, through a short queue each, so the export moves at
/// the pace of the slowest host and N hosts cost one `docker save`. A destination that fails
/// drops out; the others go on. One result per destination, in order.
pub async fn stream_image_to_all(src: &Docker, image: &str, destinations: Vec<Destination>) -> Vec<Result<()>> {
    let long = Duration::from_secs(TRANSFER_TIMEOUT_SECS);
    let mut senders = Vec::new();
    let mut loads = Vec::new();
    for d in destinations {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(QUEUE_CHUNKS);
        senders.push(tx);
        let on_bytes = d.on_bytes;
        let body = receiver_stream(rx).inspect_ok(move |chunk| on_bytes(chunk.len() as u64));
        loads.push(load(d.docker.with_timeout(long), body, image));
    }
    let export = src.clone().with_timeout(long).export_image(image);
    let (_, results) = tokio::join!(broadcast(export, senders), futures_util::future::join_all(loads));
    results
}

/// Copies every item of `source` to every sender until the source ends or every receiver is
/// gone; a source error is passed on (so no destination takes a truncated stream as whole).
async fn broadcast<E: std::fmt::Display>(
    source: impl futures_util::Stream<Item = Result<bytes::Bytes, E>>,
    senders: Vec<tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>>,
) {
    let mut senders: Vec<_> = senders.into_iter().map(Some).collect();
    futures_util::pin_mut!(source);
    while let Some(item) = source.next().await {
        let failed = item.as_ref().err().map(|e| format!("exporting the image: {e}"));
        for slot in senders.iter_mut() {
            let Some(tx) = slot else { continue };
            let copy = match &item {
                Ok(chunk) => Ok(chunk.clone()),
                Err(_) => Err(std::io::Error::other(failed.clone().unwrap_or_default())),
            };
            // A closed queue: that destination failed and stopped reading.
            if tx.send(copy).await.is_err() {
                *slot = None;
            }
        }
        if failed.is_some() || senders.iter().all(Option::is_none) {
            break;
        }
    }
}

fn receiver_stream<T>(rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// `POST /images/load` of `body`; fails unless the engine reports the image loaded.
async fn load<E>(dst: Docker, body: impl futures_util::Stream<Item = Result<bytes::Bytes, E>> + Send + 'static, image: &str) -> Result<()>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let mut load = dst.import_image_stream(
        ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        body,
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

#[cfg(test)]
mod tests {
    use super::*;

    type Queue = (
        tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
        tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    );

    fn queue(n: usize) -> Queue {
        tokio::sync::mpsc::channel(n)
    }

    fn chunks(n: usize) -> Vec<Result<bytes::Bytes, String>> {
        (0..n).map(|i| Ok(bytes::Bytes::from(vec![i as u8; 4]))).collect()
    }

    #[tokio::test]
    async fn every_receiver_gets_every_chunk_and_a_dropped_one_does_not_stop_the_rest() {
        let (a, mut ra) = queue(2);
        let (b, rb) = queue(2);
        let (c, mut rc) = queue(2);
        drop(rb);
        let source = futures_util::stream::iter(chunks(50));
        let reader = async {
            let (mut got_a, mut got_c) = (0, 0);
            loop {
                tokio::select! {
                    x = ra.recv() => match x { Some(x) => { x.unwrap(); got_a += 1 } None => break },
                    x = rc.recv() => match x { Some(x) => { x.unwrap(); got_c += 1 } None => break },
                }
            }
            while ra.recv().await.is_some() {
                got_a += 1;
            }
            while rc.recv().await.is_some() {
                got_c += 1;
            }
            (got_a, got_c)
        };
        let ((), (got_a, got_c)) = tokio::join!(broadcast(source, vec![a, b, c]), reader);
        assert_eq!((got_a, got_c), (50, 50));
    }

    #[tokio::test]
    async fn a_source_error_reaches_every_receiver() {
        let (a, mut ra) = queue(64);
        let mut items = chunks(3);
        items.push(Err("disk gone".into()));
        items.extend(chunks(3));
        broadcast(futures_util::stream::iter(items), vec![a]).await;
        let mut seen = Vec::new();
        while let Some(x) = ra.recv().await {
            seen.push(x);
        }
        assert_eq!(seen.len(), 4, "stops after the error");
        assert!(seen[3].as_ref().unwrap_err().to_string().contains("disk gone"));
    }
}
