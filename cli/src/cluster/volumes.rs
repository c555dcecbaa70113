//! Generations of a host's data volume. A restore never overwrites data: it fills a new
//! generation (`<scope>-pgdata-g2`, `-g3`, ...) and the newest generation present on a host is
//! the one its Patroni container mounts. Rolling a restore back removes the newest generation,
//! which makes the previous one current again.

use crate::docker::Engine;
use anyhow::{Context, Result};
use std::collections::HashMap;

/// Host whose data was the leader's before a restore (a label on the volume the restore made),
/// so a rollback starts that host first.
pub const LABEL_PREVIOUS_LEADER: &str = "io.pgctl.previous-leader";

/// The name of generation `generation` (1 is the original volume, named as it always was).
pub fn data_volume(scope: &str, generation: u32) -> String {
    if generation <= 1 {
        format!("{scope}-pgdata")
    } else {
        format!("{scope}-pgdata-g{generation}")
    }
}

/// The generation a volume name denotes, if it is one of `scope`'s data volumes.
pub fn generation_of(scope: &str, name: &str) -> Option<u32> {
    let rest = name.strip_prefix(scope)?.strip_prefix("-pgdata")?;
    if rest.is_empty() {
        return Some(1);
    }
    rest.strip_prefix("-g")?.parse().ok().filter(|g| *g >= 2)
}

/// A data volume present on a host.
#[derive(Debug, Clone)]
pub struct DataVolume {
    pub name: String,
    pub generation: u32,
    pub labels: HashMap<String, String>,
}

/// `scope`'s data volumes on a host, oldest generation first.
pub async fn list(engine: &Engine, scope: &str) -> Result<Vec<DataVolume>> {
    let filters = HashMap::from([("name".to_string(), vec![format!("{scope}-pgdata")])]);
    let listed = engine
        .docker
        .list_volumes(Some(bollard::query_parameters::ListVolumesOptions { filters: Some(filters) }))
        .await
        .with_context(|| format!("{}: listing volumes", engine.host))?;
    let mut out: Vec<DataVolume> = listed
        .volumes
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| {
            generation_of(scope, &v.name).map(|generation| DataVolume {
                name: v.name,
                generation,
                labels: v.labels,
            })
        })
        .collect();
    out.sort_by_key(|v| v.generation);
    Ok(out)
}

/// The volume a host's Patroni container mounts: its newest generation (the first one when
/// there is none yet).
pub async fn current(engine: &Engine, scope: &str) -> Result<String> {
    Ok(list(engine, scope)
        .await?
        .last()
        .map(|v| v.name.clone())
        .unwrap_or_else(|| data_volume(scope, 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_round_trip() {
        assert_eq!(data_volume("lab", 1), "lab-pgdata");
        assert_eq!(data_volume("lab", 3), "lab-pgdata-g3");
        for g in 1..5 {
            assert_eq!(generation_of("lab", &data_volume("lab", g)), Some(g));
        }
        // Other clusters' volumes, and names that merely share a prefix, are not ours.
        assert_eq!(generation_of("lab", "lab2-pgdata"), None);
        assert_eq!(generation_of("lab", "lab-pgdata-old"), None);
        assert_eq!(generation_of("lab", "lab-pgdata-g1"), None);
        assert_eq!(generation_of("lab", "lab-etcd"), None);
    }
}
