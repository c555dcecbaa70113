//! `pgctl image list`: pgctl-built images on the local engine with their manifests, and
//! (with a hosts file) which hosts have the cluster's image.

use super::{LABEL_IMAGE, LABEL_MANIFEST_PREFIX};
use crate::docker::Engine;
use anyhow::Result;
use bollard::query_parameters::ListImagesOptions;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub tags: Vec<String>,
    pub id: String,
    pub created: i64,
    pub size_bytes: i64,
    pub manifest: BTreeMap<String, String>,
    /// With `--layers`: the layers that hold bytes, oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Layer>,
}

/// One layer of an image: its size and the build step that made it.
#[derive(Debug, Clone, Serialize)]
pub struct Layer {
    pub size_bytes: i64,
    pub step: String,
}

/// Images carrying pgctl's image label on `engine`; with `layers`, each one's layers too.
pub async fn list(engine: &Engine, layers: bool) -> Result<Vec<ImageInfo>> {
    let filters = HashMap::from([("label".to_string(), vec![LABEL_IMAGE.to_string()])]);
    let images = engine
        .docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    let mut out: Vec<ImageInfo> = images
        .into_iter()
        .map(|i| ImageInfo {
            tags: i.repo_tags,
            id: i.id,
            created: i.created,
            size_bytes: i.size,
            manifest: i
                .labels
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(LABEL_MANIFEST_PREFIX).map(|k| (k.to_string(), v)))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            layers: vec![],
        })
        .collect();
    if layers {
        for image in out.iter_mut() {
            image.layers = history(engine, &image.id).await?;
        }
    }
    Ok(out)
}

/// The layers of `image` that hold bytes, oldest first, each with its build step.
async fn history(engine: &Engine, image: &str) -> Result<Vec<Layer>> {
    let mut layers: Vec<Layer> = engine
        .docker
        .image_history(image)
        .await?
        .into_iter()
        .filter(|h| h.size > 0)
        .map(|h| Layer {
            size_bytes: h.size,
            step: step_of(&h.created_by),
        })
        .collect();
    layers.reverse();
    Ok(layers)
}

/// A build step as written in the Dockerfile (`RUN ...`, `COPY ...`), on one line.
fn step_of(created_by: &str) -> String {
    let step = created_by.trim();
    let step = match step.strip_prefix("/bin/sh -c #(nop) ") {
        Some(instruction) => instruction.trim().to_string(),
        None => match step.strip_prefix("/bin/sh -c ") {
            Some(command) => format!("RUN {command}"),
            None if step.is_empty() => "base image".to_string(),
            None => step.to_string(),
        },
    };
    step.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn steps_read_as_the_dockerfile() {
        assert_eq!(
            super::step_of("/bin/sh -c apt-get update  && apt-get install -y x"),
            "RUN apt-get update && apt-get install -y x"
        );
        assert_eq!(
            super::step_of("/bin/sh -c #(nop) COPY file:abc in /usr/local/bin/consul "),
            "COPY file:abc in /usr/local/bin/consul"
        );
        assert_eq!(super::step_of(""), "base image");
    }
}
