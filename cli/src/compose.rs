//! `pgctl compose export`: the docker-compose.yml (and its files) that runs on one host exactly
//! the containers `pgctl up` runs there — same image, command, files, volumes and labels, so
//! pgctl recognises them as its own — for teams that keep compose files in git (the Compose
//! seed's way). The files are rendered as `up` uploads them, with the same owner and mode.

use crate::cluster::spec::{self, ImageFacts};
use crate::config::Config;
use crate::docker::spec::ContainerSpec;
use crate::layout::{LABEL_CLUSTER, LABEL_CONFIG_HASH, LABEL_ROLE, PATRONI};
use crate::render::render;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Serialize)]
pub struct Export {
    pub host: String,
    pub compose_file: PathBuf,
    pub services: Vec<String>,
    /// Configuration files written under `files/` (they hold secrets).
    pub files: usize,
}

#[derive(Serialize)]
struct Service {
    name: &'static str,
    image: String,
    cmd: Vec<String>,
    patroni: bool,
    labels: BTreeMap<String, String>,
    cap_add: Vec<&'static str>,
    extra_hosts: Vec<String>,
    mounts: Vec<String>,
}

#[derive(Serialize)]
struct Volume {
    key: String,
    name: String,
    role: &'static str,
}

/// Writes `dir/docker-compose.yml` and `dir/files/...` for `host`. The host's engine is asked
/// for what `up` would ask it (the image's id and manifest, the current data volume).
pub async fn export(cfg: &Config, host: &str, dir: &Path) -> Result<Export> {
    let h = cfg
        .host(host)
        .ok_or_else(|| crate::error::usage(format!("--host {host}: no such host in {}", cfg.hosts_path.display())))?;
    let engine = crate::docker::connect::connect(h, cfg.base_dir())
        .await
        .map_err(|u| crate::docker::connect::UnreachableHosts(vec![u]))?;
    let image = &cfg.hosts.cluster.image;
    let image_id = crate::docker::image_id(&engine.docker, image)
        .await?
        .with_context(|| format!("{host} does not have image {image}: `pgctl image push` first"))?;
    let manifest = crate::image::manifest(&engine, image).await?;
    let facts = ImageFacts::from_manifest(&image_id, &manifest);
    let owner = crate::image::postgres_owner(&manifest, image)?;
    let data_volume = crate::cluster::volumes::current(&engine, &cfg.hosts.cluster.name).await?;
    let specs = spec::containers(cfg, h, &facts, &data_volume)?;
    write(cfg, host, &specs, owner, dir)
}

/// The compose file and the files, from the container specs (pure but for the writes).
fn write(cfg: &Config, host: &str, specs: &[ContainerSpec], owner: (u64, u64), dir: &Path) -> Result<Export> {
    let files_dir = dir.join("files");
    std::fs::create_dir_all(&files_dir).with_context(|| format!("creating {}", files_dir.display()))?;
    set_mode(dir, 0o700)?;
    let scope = &cfg.hosts.cluster.name;
    let mut services = Vec::new();
    let mut volumes = Vec::new();
    let mut written = 0;
    for s in specs {
        let mut mounts = Vec::new();
        if let Some(m) = &s.volume {
            let key = m.volume.replace('.', "_");
            mounts.push(format!("{key}:{}", m.target));
            volumes.push(Volume {
                key,
                name: m.volume.clone(),
                role: s.name,
            });
        }
        for f in &s.files {
            let local = files_dir.join(f.path.trim_start_matches('/'));
            write_file(&local, &f.contents, if f.postgres_owned { owner } else { (0, 0) })?;
            written += 1;
            // Writable: pgctl updates some files in place (HAProxy's member list on `up`,
            // Patroni's tags during an upgrade), as in the containers it runs itself.
            mounts.push(format!("./files{}:{}", f.path, f.path));
        }
        services.push(Service {
            name: s.name,
            image: s.image.clone().unwrap_or_else(|| cfg.hosts.cluster.image.clone()),
            cmd: s.cmd.clone(),
            patroni: s.name == PATRONI,
            labels: BTreeMap::from([
                (LABEL_CLUSTER.to_string(), scope.clone()),
                (LABEL_ROLE.to_string(), s.name.to_string()),
                (LABEL_CONFIG_HASH.to_string(), s.hash.clone()),
            ]),
            cap_add: s.cap_add.clone(),
            extra_hosts: s.extra_hosts.clone(),
            mounts,
        });
    }
    let names: Vec<&str> = services.iter().map(|s| s.name).collect();
    let text = render(
        "docker-compose.yml.j2",
        minijinja::context! {
            host, cluster => scope, image => cfg.hosts.cluster.image, names, services, volumes,
            cluster_label => LABEL_CLUSTER, role_label => LABEL_ROLE,
        },
    )?;
    let compose_file = dir.join("docker-compose.yml");
    std::fs::write(&compose_file, text).with_context(|| format!("writing {}", compose_file.display()))?;
    Ok(Export {
        host: host.to_string(),
        compose_file,
        services: names.iter().map(|n| n.to_string()).collect(),
        files: written,
    })
}

/// A configuration file as `up` uploads it: 0600, owned by postgres (the image's uid) when the
/// container reads it as postgres. Ownership needs root; otherwise the file stays the user's
/// and the README says to `chown` it on the host.
fn write_file(path: &Path, contents: &str, (uid, gid): (u64, u64)) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    set_mode(path, 0o600)?;
    if nix_is_root() {
        std::os::unix::fs::chown(path, Some(uid as u32), Some(gid as u32)).with_context(|| format!("chown {}", path.display()))?;
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).with_context(|| format!("chmod {}", path.display()))
}

fn nix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_service_per_container_with_pgctls_labels() {
        let cfg = crate::cluster::spec::tests::config("consul");
        let facts = ImageFacts {
            id: "sha256:abc".into(),
            timescaledb: false,
            patroni_bin_dir: None,
        };
        let pg1 = cfg.host("pg1").unwrap();
        let specs = spec::containers(&cfg, pg1, &facts, "main-pgdata").unwrap();
        let dir = std::env::temp_dir().join(format!("pgctl-compose-test-{}", std::process::id()));
        let export = write(&cfg, "pg1", &specs, (999, 999), &dir).unwrap();
        let text = std::fs::read_to_string(&export.compose_file).unwrap();
        crate::render::golden("docker-compose-pg1.yml", &text);
        let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let patroni = &v["services"]["patroni"];
        assert_eq!(patroni["network_mode"], "host");
        assert_eq!(patroni["labels"][LABEL_CONFIG_HASH], specs[1].hash.as_str());
        assert_eq!(v["volumes"]["main-pgdata"]["name"], "main-pgdata");
        assert!(patroni["volumes"][0] == "main-pgdata:/var/lib/postgresql/data");
        let yml = dir.join("files/etc/pgctl/patroni.yml");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&yml).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(export.services, ["consul", "patroni"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
