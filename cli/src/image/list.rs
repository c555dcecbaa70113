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
}

/// Images carrying pgctl's image label on `engine`.
pub async fn list(engine: &Engine) -> Result<Vec<ImageInfo>> {
    let filters = HashMap::from([("label".to_string(), vec![LABEL_IMAGE.to_string()])]);
    let images = engine
        .docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await?;
    Ok(images
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
        })
        .collect())
}
