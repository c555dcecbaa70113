//! Engine-to-engine image delivery without a registry: `GET /images/{name}/get` on the source
//! streamed straight into `POST /images/load` on the destination. Never buffered whole in
//! memory, and a source error aborts the load (a dropped error would give a truncated,
//! "successful" load).

use super::connect::TRANSFER_TIMEOUT_SECS;
use super::save_stream::{Part, Splitter};
use anyhow::{bail, Context, Result};
use bollard::query_parameters::ImportImageOptions;
use bollard::Docker;
use futures_util::{StreamExt, TryStreamExt};
use std::collections::HashSet;
use std::time::Duration;

/// Chunks in flight per destination: the export runs at most this far ahead of the slowest host.
const QUEUE_CHUNKS: usize = 16;

/// One destination of [`stream_image_to_all`].
pub struct Destination {
    pub docker: Docker,
    /// Chain IDs of the layers the host has already (their data is not sent).
    pub has: HashSet<String>,
    pub on_bytes: Box<dyn Fn(u64) + Send + Sync>,
}

/// Streams `image` (layers `diff_ids`) from `src` to every destination at once from a single
/// export: each chunk goes to every destination still loading, through a short queue each, so
/// the export moves at the pace of the slowest host and N hosts cost one `docker save`; a
/// layer a host has already is left out of its stream (`save_stream`). A destination that
/// fails drops out; the others go on. One result per destination, in order.
pub async fn stream_image_to_all(src: &Docker, image: &str, diff_ids: &[String], destinations: Vec<Destination>) -> Vec<Result<()>> {
    let long = Duration::from_secs(TRANSFER_TIMEOUT_SECS);
    let mut senders = Vec::new();
    let mut loads = Vec::new();
    for d in destinations {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(QUEUE_CHUNKS);
        senders.push((tx, d.has));
        let on_bytes = d.on_bytes;
        let body = receiver_stream(rx).inspect_ok(move |chunk| on_bytes(chunk.len() as u64));
        loads.push(load(d.docker.with_timeout(long), body, image));
    }
    let export = src.clone().with_timeout(long).export_image(image);
    let splitter = Splitter::new(diff_ids);
    let (_, results) = tokio::join!(broadcast(export, splitter, senders), futures_util::future::join_all(loads));
    results
}

type Sender = tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>;

/// Copies every part of `source` to every sender that lacks it until the source ends or every
/// receiver is gone; a source error is passed on (so no destination takes a truncated stream
/// as whole).
async fn broadcast<E: std::fmt::Display>(
    source: impl futures_util::Stream<Item = Result<bytes::Bytes, E>>,
    mut splitter: Splitter,
    senders: Vec<(Sender, HashSet<String>)>,
) {
    let mut senders: Vec<_> = senders.into_iter().map(Some).collect();
    futures_util::pin_mut!(source);
    while let Some(item) = source.next().await {
        let parts = match item {
            Ok(chunk) => splitter.feed(chunk).into_iter().map(Ok).collect(),
            Err(e) => vec![Err(format!("exporting the image: {e}"))],
        };
        let failed = parts.iter().any(Result::is_err);
        for part in &parts {
            for slot in senders.iter_mut() {
                let Some((tx, has)) = slot else { continue };
                let copy = match part {
                    Ok((Part::Layer(i), _)) if has.contains(&splitter.chains()[*i]) => continue,
                    Ok((_, bytes)) => Ok(bytes.clone()),
                    Err(e) => Err(std::io::Error::other(e.clone())),
                };
                // A closed queue: that destination failed and stopped reading.
                if tx.send(copy).await.is_err() {
                    *slot = None;
                }
            }
        }
        if failed || senders.iter().all(Option::is_none) {
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

    /// A tar of `n` small files, in 512-byte chunks (the splitter reads tar).
    fn chunks(n: usize) -> Vec<Result<bytes::Bytes, String>> {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..n {
            let mut h = tar::Header::new_ustar();
            h.set_size(4);
            h.set_cksum();
            b.append_data(&mut h, format!("f{i}"), &[i as u8; 4][..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        bytes.chunks(512).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect()
    }

    fn senders(queues: Vec<Sender>) -> Vec<(Sender, HashSet<String>)> {
        queues.into_iter().map(|q| (q, HashSet::new())).collect()
    }

    #[tokio::test]
    async fn every_receiver_gets_every_byte_and_a_dropped_one_does_not_stop_the_rest() {
        let (a, mut ra) = queue(2);
        let (b, rb) = queue(2);
        let (c, mut rc) = queue(2);
        drop(rb);
        let items = chunks(50);
        let total: usize = items.iter().map(|c| c.as_ref().unwrap().len()).sum();
        let source = futures_util::stream::iter(items);
        let reader = async {
            let (mut got_a, mut got_c) = (0, 0);
            loop {
                tokio::select! {
                    x = ra.recv() => match x { Some(x) => got_a += x.unwrap().len(), None => break },
                    x = rc.recv() => match x { Some(x) => got_c += x.unwrap().len(), None => break },
                }
            }
            while let Some(x) = ra.recv().await {
                got_a += x.unwrap().len();
            }
            while let Some(x) = rc.recv().await {
                got_c += x.unwrap().len();
            }
            (got_a, got_c)
        };
        let ((), (got_a, got_c)) = tokio::join!(broadcast(source, Splitter::new(&[]), senders(vec![a, b, c])), reader);
        assert_eq!((got_a, got_c), (total, total));
    }

    #[tokio::test]
    async fn a_source_error_reaches_every_receiver() {
        let (a, mut ra) = queue(64);
        let mut items = chunks(3)[..3].to_vec();
        items.push(Err("disk gone".into()));
        items.extend(chunks(3));
        broadcast(futures_util::stream::iter(items), Splitter::new(&[]), senders(vec![a])).await;
        let mut seen = Vec::new();
        while let Some(x) = ra.recv().await {
            seen.push(x);
        }
        assert_eq!(seen.len(), 4, "the three chunks before the error, the error, nothing after");
        assert!(seen[3].as_ref().unwrap_err().to_string().contains("disk gone"));
    }
}
