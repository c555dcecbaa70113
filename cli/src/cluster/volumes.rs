//! Generations of a host's data volume. A restore never overwrites data: it fills a new
//! generation (`<scope>-pgdata-g2`, `-g3`, ...) and the newest generation present on a host is
//! the one its Patroni container mounts. Rolling a restore back removes the newest generation,
//! which makes the previous one current again.

use crate::config::Config;
use crate::docker::{self, Engine};
use crate::output;
use anyhow::{Context, Result};
use std::collections::HashMap;

pub use crate::layout::data_volume;
use crate::layout::{data_volume_generation as generation_of, LABEL_CLUSTER, LABEL_PREVIOUS_LEADER, LABEL_ROLE, PATRONI};

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

/// The data volume an inspected Patroni container mounts.
pub fn mounted(info: &bollard::models::ContainerInspectResponse) -> Option<String> {
    let mounts = info.mounts.iter().flatten();
    mounts
        .filter(|m| m.destination.as_deref() == Some(crate::layout::DATA_MOUNT))
        .find_map(|m| m.name.clone())
}

/// A data volume of this cluster, labeled as `up` labels it (so `remove --volumes` finds it).
pub async fn create(cfg: &Config, engine: &Engine, name: &str, previous_leader: Option<&str>) -> Result<()> {
    let mut labels = HashMap::from([
        (LABEL_CLUSTER.to_string(), cfg.hosts.cluster.name.clone()),
        (LABEL_ROLE.to_string(), PATRONI.to_string()),
    ]);
    if let Some(l) = previous_leader {
        labels.insert(LABEL_PREVIOUS_LEADER.to_string(), l.to_string());
    }
    docker::ensure_volume(&engine.docker, name, labels).await
}

/// Deletes everything a volume holds, in place: the volume stays, so a member planned to mount
/// it (the newest generation) never falls back to an older one meanwhile.
pub async fn empty(cfg: &Config, engine: &Engine, name: &str) -> Result<()> {
    output::step(format!("{}: emptying volume {name}", engine.host));
    let host_config = bollard::models::HostConfig {
        binds: Some(vec![format!("{name}:{}", crate::layout::DATA_MOUNT)]),
        network_mode: Some("none".into()),
        ..Default::default()
    };
    let cmd = ["find", crate::layout::DATA_MOUNT, "-mindepth", "1", "-delete"];
    docker::run_once(&engine.docker, &cfg.hosts.cluster.image, &cmd, host_config, Some("root"), &[])
        .await?
        .ok(&format!("{}: emptying volume {name}", engine.host))?;
    Ok(())
}

/// Removes a volume; one that is not there is already removed.
pub async fn remove(engine: &Engine, name: &str) -> Result<()> {
    output::step(format!("{}: removing volume {name}", engine.host));
    match engine
        .docker
        .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if docker::is_not_found(&e) => Ok(()),
        Err(e) => Err(e).with_context(|| format!("{}: removing volume {name}", engine.host)),
    }
}
