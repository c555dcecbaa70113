//! `pgctl migrate from-volume`: the data volume of a standalone PostgreSQL of an older major
//! becomes the cluster's, upgraded with `pg_upgrade` on the volume's host (README 7.2).
//!
//! Pre-flight (changes no data): what the volume holds (`pg_controldata`: cleanly shut down,
//! the major, checksums, space), an upgrade image built on that host (the cluster's image plus
//! the old major's binaries and the libraries they need, from the image the standalone ran),
//! and `pg_upgrade --check` against a scratch new cluster made like the old one. Then
//! `pg_upgrade --link` (default) or `--copy` into the host's new cluster data volume, Patroni
//! adopts it as leader, the cluster's roles are set, every extension is updated, statistics
//! are rebuilt, indexes whose collation may have changed with glibc are reported (rebuilt with
//! `--reindex`), the replicas are built from the leader and a first full backup starts the
//! cluster's own archive.
//!
//! The way back: with --copy the old directory is never written (only started and stopped
//! cleanly once to read its locale). With --link the old directory is usable again when
//! pg_upgrade fails (its global/pg_control is restored automatically); the point of no return
//! is the new cluster's first start (right after pg_upgrade, to set the cluster's roles), after
//! which the old files belong to the new cluster.

use super::after;
use crate::cluster::status::ClusterStatus;
use crate::cluster::volumes;
use crate::config::{Config, Role};
use crate::docker::{self, Engine, FileSpec, Throwaway};
use crate::restore::{self, Phases};
use crate::{error, member, output};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const SCRIPT: &str = "/tmp/pgctl-upgrade.sh";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// pg_upgrade on the host (--link or --copy).
    Upgrade,
    /// The old server in its own container, pg_dumpall into the running new cluster.
    Dump,
}

pub struct FromVolume {
    pub method: Method,
    /// The database host the volume is on (with --method upgrade it becomes the leader).
    pub host: String,
    pub volume: String,
    /// The image the standalone server ran (its major's binaries, Debian layout).
    pub source_image: String,
    /// `pg_upgrade --copy` instead of `--link`: slower, needs the space twice, keeps the old
    /// directory as it was.
    pub copy: bool,
    /// Rebuild the indexes whose collation may have changed with the C library.
    pub reindex: bool,
    pub timeout: Duration,
}

/// What the volume holds, read without starting anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeFacts {
    /// The data directory inside the volume (mounted at /old).
    pub dir: String,
    pub major: u32,
    pub state: String,
    pub checksums: u32,
    pub uid: u64,
    pub gid: u64,
    pub size_kb: u64,
    pub free_kb: u64,
    pub conf: bool,
    pub glibc: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Extension {
    pub database: String,
    pub name: String,
    pub version: String,
}

/// What the old server said when started once, and the upgrade image's C library.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OldCluster {
    pub install_user: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    pub checksums: bool,
    /// The C library of the upgrade image (the cluster's).
    pub glibc: String,
    pub extensions: Vec<Extension>,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub host: String,
    pub volume: String,
    /// `link`, `copy` (pg_upgrade) or `dump`.
    pub method: &'static str,
    pub facts: VolumeFacts,
    /// From the upgrade pre-flight (not with --method dump).
    pub old: Option<OldCluster>,
    pub upgrade_image: Option<String>,
    /// The leader's new data volume.
    pub new_volume: String,
}

impl Plan {
    pub fn describe(&self, cfg: &Config) -> String {
        let way_back = if self.method == "dump" {
            "the old directory is only read by its own server (started in a container of its image and stopped cleanly): start the standalone server on it again at any time".to_string()
        } else if self.method == "copy" {
            "the old directory stays as it is (only started and stopped once, cleanly): start the standalone server on it again at any time"
                .to_string()
        } else {
            format!(
                "pg_upgrade --link makes the new cluster share the old files: if pg_upgrade fails, the old directory is restored and starts again; \
                 once the new cluster has started (right after pg_upgrade: the point of no return) the old directory is no longer usable. Use --copy to keep it (needs {} more space)",
                output::size(self.facts.size_kb * 1024)
            )
        };
        let how = match &self.old {
            Some(old) => format!(
                "pg_upgrade --{} into {} (encoding {}, checksums {}; extensions {}); then Patroni adopts it as leader, the replicas are rebuilt from it",
                self.method,
                self.new_volume,
                old.encoding,
                if old.checksums { "on" } else { "off" },
                if old.extensions.is_empty() {
                    "none".to_string()
                } else {
                    old.extensions
                        .iter()
                        .map(|e| format!("{}.{} {}", e.database, e.name, e.version))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            None => "the cluster starts empty; the old server runs in a container of its image on the volume and pg_dumpall (PostgreSQL's new client) restores everything into the cluster".to_string(),
        };
        format!(
            "migrate the PostgreSQL {} data directory in volume {} on {} ({}) into cluster `{}` (PostgreSQL {}):\n  \
             {how}; a first full backup starts the cluster's archive\n  way back: {way_back}",
            self.facts.major,
            self.volume,
            self.host,
            output::size(self.facts.size_kb * 1024),
            cfg.hosts.cluster.name,
            cfg.hosts.cluster.postgres_major,
        )
    }
}

#[derive(Debug, Serialize)]
pub struct Migrated {
    pub old_major: u32,
    pub new_major: u32,
    /// `link`, `copy` or `dump`.
    pub method: &'static str,
    pub phases: Vec<(String, f64)>,
    pub extensions: Vec<after::ExtensionUpdate>,
    /// Indexes on collatable columns with a glibc collation, when the C library changed.
    pub collation_indexes: Vec<String>,
    pub reindexed: bool,
    /// Roles whose password is an MD5 hash (password_encryption's default before PostgreSQL
    /// 14): the cluster accepts SCRAM-SHA-256 only, so they log in once their password is set again.
    pub md5_roles: Vec<String>,
    pub first_backup: Option<String>,
    pub status: ClusterStatus,
}

pub(super) fn engine_of<'a>(engines: &'a [Engine], host: &str) -> Result<&'a Engine> {
    engines
        .iter()
        .find(|e| e.host == host)
        .with_context(|| format!("host {host} is not reachable"))
}

/// Pre-flight: nothing on the volume is written but one clean start and stop of the old
/// server (`pg_upgrade --check` starts it too).
pub async fn plan(cfg: &Config, engines: &[Engine], opts: &FromVolume) -> Result<Plan> {
    let refuse = |why: String| error::refused(format!("pre-flight: {why}; nothing was changed"));
    let host = cfg
        .host(&opts.host)
        .filter(|h| h.has_role(Role::Patroni))
        .ok_or_else(|| error::usage(format!("--host {}: not a database host of {}", opts.host, cfg.hosts_path.display())))?;
    super::check_new_cluster(cfg, engines).await?;
    let engine = engine_of(engines, &host.name)?;
    let scope = &cfg.hosts.cluster.name;
    if let Some(v) = volumes::list(engine, scope).await?.first() {
        return Err(refuse(format!(
            "{} already has data volume {} of cluster `{scope}`: remove it first (`pgctl remove --i-am-aware --volumes`)",
            host.name, v.name
        )));
    }
    engine
        .docker
        .inspect_volume(&opts.volume)
        .await
        .map_err(|e| refuse(format!("{}: volume {}: {e}", host.name, opts.volume)))?;
    for image in [&opts.source_image, &cfg.hosts.cluster.image] {
        if docker::image_id(&engine.docker, image).await?.is_none() {
            return Err(refuse(format!(
                "{}: image {image} is missing (pgctl image push --limit {})",
                host.name, host.name
            )));
        }
    }

    output::step(format!("{}: reading volume {} (read-only)", host.name, opts.volume));
    let facts: VolumeFacts = run_script(
        engine,
        &opts.source_image,
        &[format!("{}:/old:ro", opts.volume)],
        &["facts", "/old", "/old/pgdata", "/old/data"],
        vec![],
    )
    .await?;
    let new_major = cfg.hosts.cluster.postgres_major;
    if facts.major >= new_major {
        return Err(refuse(format!(
            "the volume holds PostgreSQL {}, the cluster runs {new_major}: from-volume upgrades an older major (same major: `pgctl migrate from-backup` or `from-primary`)",
            facts.major
        )));
    }
    if facts.state != "shut down" {
        return Err(refuse(format!(
            "the data directory is `{}`, not cleanly shut down: stop the standalone server with `pg_ctl stop -m fast` (after a crash: start it once and stop it cleanly)",
            facts.state
        )));
    }
    // A container still holding the volume could start the old server while its files change.
    let users = docker::running_users_of_volume(&engine.docker, &opts.volume).await?;
    if !users.is_empty() {
        return Err(refuse(format!(
            "{}: container(s) {} still run with volume {} mounted: stop them first (`docker stop`)",
            host.name,
            users.join(", "),
            opts.volume
        )));
    }
    if !facts.conf {
        return Err(refuse(format!(
            "{} has no postgresql.conf (Debian keeps it in /etc/postgresql): copy the server's postgresql.conf into the data directory",
            facts.dir
        )));
    }
    if opts.method == Method::Dump {
        return Ok(Plan {
            host: host.name.clone(),
            volume: opts.volume.clone(),
            method: "dump",
            facts,
            old: None,
            upgrade_image: None,
            new_volume: volumes::current(engine, scope).await?,
        });
    }
    if opts.copy && facts.free_kb < facts.size_kb + facts.size_kb / 10 {
        return Err(refuse(format!(
            "--copy needs {} free on the volume's file system, {} is free (without --copy the files are linked)",
            output::size(facts.size_kb * 1024 * 11 / 10),
            output::size(facts.free_kb * 1024)
        )));
    }

    let upgrade_image = super::upgrade_image::ensure_upgrade_image(cfg, engine, &opts.source_image, facts.major).await?;
    output::step(format!(
        "{}: pg_upgrade --check against a scratch PostgreSQL {new_major} cluster",
        host.name
    ));
    let old: OldCluster = run_script(
        engine,
        &upgrade_image,
        &[format!("{}:/old", opts.volume)],
        &["check", &facts.major.to_string(), &new_major.to_string(), &facts.dir],
        vec![],
    )
    .await
    .map_err(|e| refuse(format!("{e:#}")))?;
    if old.install_user != "postgres" {
        return Err(refuse(format!(
            "the old cluster was made by user `{}`; the cluster's superuser is postgres (pg_upgrade needs the same): use --method dump",
            old.install_user
        )));
    }
    timescaledb_matches(engine, cfg, &old).await.map_err(|e| refuse(format!("{e:#}")))?;
    Ok(Plan {
        host: host.name.clone(),
        volume: opts.volume.clone(),
        method: if opts.copy { "copy" } else { "link" },
        facts,
        old: Some(old),
        upgrade_image: Some(upgrade_image),
        new_volume: volumes::current(engine, scope).await?,
    })
}

/// TimescaleDB's files are per major: pg_upgrade needs the same TimescaleDB version in the new
/// image as the old database has installed.
pub(crate) async fn timescaledb_matches(engine: &Engine, cfg: &Config, old: &OldCluster) -> Result<()> {
    let Some(ts) = old.extensions.iter().find(|e| e.name == "timescaledb") else {
        return Ok(());
    };
    let manifest = crate::image::manifest(engine, &cfg.hosts.cluster.image).await?;
    let ours = manifest.get("timescaledb").map(String::as_str).unwrap_or_default();
    if ours != ts.version {
        bail!(
            "database {} has TimescaleDB {}, the cluster's image has {}: build the image with TimescaleDB {} (pg_upgrade needs the same version on both majors)",
            ts.database,
            ts.version,
            if ours.is_empty() { "none" } else { ours },
            ts.version
        );
    }
    Ok(())
}

/// Runs upgrade.sh in a throwaway container of `image` (as root, no network) with `binds`;
/// progress lines on stderr, the JSON result on stdout.
pub(crate) async fn run_script<T: serde::de::DeserializeOwned>(
    engine: &Engine,
    image: &str,
    binds: &[String],
    args: &[&str],
    extra: Vec<FileSpec>,
) -> Result<T> {
    let mut files = vec![FileSpec::root(SCRIPT, crate::render::script("upgrade.sh"), 0o755)];
    files.extend(extra);
    let mut cmd = vec!["/bin/sh", SCRIPT];
    cmd.extend(args);
    let out = Throwaway {
        image,
        cmd: &cmd,
        host_config: bollard::models::HostConfig {
            network_mode: Some("none".into()),
            binds: Some(binds.to_vec()),
            shm_size: Some(256 * 1024 * 1024),
            ..Default::default()
        },
        user: Some("root"),
        env: vec![],
        files: &files,
        name: Some(format!("pgctl-upgrade-{}", args[0])),
    }
    .run_streamed(&engine.docker, |line| {
        if let Some(phase) = line.strip_prefix("pgctl: phase ") {
            output::step(format!("{}: {phase}", engine.host));
        }
    })
    .await?;
    if !out.success() {
        let said: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("pgctl: ") && !l.starts_with("pgctl: phase"))
            .collect();
        bail!("{}: {}", engine.host, said.join("\n  ").replace("pgctl: ", ""));
    }
    let last = out.stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("{}: unexpected output of upgrade.sh {}: {}", engine.host, args[0], out.stdout))
}

/// Carries out the plan.
pub async fn execute(cfg: &Config, engines: &[Engine], plan: Plan, opts: &FromVolume) -> Result<Migrated> {
    if plan.method == "dump" {
        return super::by_dump::execute(cfg, engines, plan, opts).await;
    }
    let mut phases = Phases::default();
    phases.start("pg_upgrade");
    pg_upgrade_into(cfg, engines, &plan)
        .await
        .map_err(|e| e.context("pg_upgrade failed; nothing was started, and the standalone server starts on its volume again"))?;
    let replicas: Vec<(&Engine, String)> = {
        let mut out = Vec::new();
        for h in cfg.hosts.hosts.iter().filter(|h| h.has_role(Role::Patroni) && h.name != plan.host) {
            let e = engine_of(engines, &h.name)?;
            out.push((e, volumes::current(e, &cfg.hosts.cluster.name).await?));
        }
        out
    };
    let replicas: Vec<(&Engine, &str)> = replicas.iter().map(|(e, v)| (*e, v.as_str())).collect();
    adopt(cfg, engines, &plan, &replicas, opts.timeout, opts.reindex, phases).await
}

/// pg_upgrade of the plan's old directory into its new volume on its host (created here), the
/// cluster's roles set, the new directory handed to the cluster's postgres. On failure the new
/// volume is removed and the old directory is as it was (after --link its global/pg_control is
/// restored); the error says so.
pub async fn pg_upgrade_into(cfg: &Config, engines: &[Engine], plan: &Plan) -> Result<()> {
    let upgrade_image = plan.upgrade_image.clone().expect("an upgrade plan has its image");
    let engine = engine_of(engines, &plan.host)?;
    volumes::create(cfg, engine, &plan.new_volume, None).await?;
    let image = &cfg.hosts.cluster.image;
    let owner = crate::image::postgres_owner(&crate::image::manifest(engine, image).await?, image)?;
    let (binds, old_dir, new_dir) = if plan.method == "link" {
        linked_paths(engine, plan).await?
    } else {
        (
            vec![format!("{}:/old", plan.volume), format!("{}:/new", plan.new_volume)],
            plan.facts.dir.clone(),
            "/new/pgdata".to_string(),
        )
    };
    let (uid, gid) = (owner.0.to_string(), owner.1.to_string());
    let (old_major, new_major) = (plan.facts.major.to_string(), cfg.hosts.cluster.postgres_major.to_string());
    let args = ["upgrade", &old_major, &new_major, &old_dir, &new_dir, plan.method, &uid, &gid];
    // Read by the servers' user (the old directory's owner) inside the container only.
    let roles = FileSpec {
        path: "/tmp/pgctl-roles.sql".into(),
        contents: crate::roles::cluster_roles_sql(cfg)?.into_bytes(),
        mode: 0o600,
        uid: plan.facts.uid,
        gid: plan.facts.gid,
    };
    if let Err(e) = run_script::<OldCluster>(engine, &upgrade_image, &binds, &args, vec![roles]).await {
        let removed = volumes::remove(engine, &plan.new_volume).await;
        bail!(
            "{e:#}\n  The cluster was not started on it; {}. Volume {} on {} is as it was before pg_upgrade",
            if removed.is_ok() {
                "the new data volume is removed"
            } else {
                "remove the new data volume by hand"
            },
            plan.volume,
            plan.host
        );
    }
    output::step(format!(
        "{}: upgraded to PostgreSQL {new_major} in {}; starting the cluster on it (the point of no return{})",
        plan.host,
        plan.new_volume,
        if plan.method == "link" {
            ": the old directory's files are now the new cluster's"
        } else {
            ""
        }
    ));
    Ok(())
}

/// After pg_upgrade: Patroni adopts the new directory on the plan's host as leader, the
/// replicas are built from it on `replicas` (host, empty volume), then extensions, statistics,
/// the collation check, MD5 roles and a first full backup.
pub async fn adopt(
    cfg: &Config,
    engines: &[Engine],
    plan: &Plan,
    replicas: &[(&Engine, &str)],
    timeout: Duration,
    reindex: bool,
    mut phases: Phases,
) -> Result<Migrated> {
    let old = plan.old.clone().expect("an upgrade plan has the old cluster");
    restore::start_cluster(cfg, &plan.host, replicas, timeout, &mut phases).await?;
    let leader = member::leader(cfg, engines).await?;

    phases.start("update extensions");
    let extensions = after::update_extensions(leader).await?;
    phases.start("rebuild statistics");
    after::analyze_in_stages(leader).await?;
    phases.start("collation check");
    let changed_libc = plan.facts.glibc != old.glibc;
    let collation_indexes = if changed_libc {
        after::collation_indexes(leader).await?
    } else {
        vec![]
    };
    let reindexed = reindex && !collation_indexes.is_empty();
    if reindexed {
        for index in &collation_indexes {
            let (db, name) = index.split_once(':').expect("db:index");
            member::psql_in(leader, db, &format!("REINDEX INDEX {name}")).await?;
        }
    } else if !collation_indexes.is_empty() {
        output::warn(format!(
            "the C library changed ({} -> {}): these indexes sort by a glibc collation and may be out of order until rebuilt (REINDEX, or rerun with --reindex): {}",
            plan.facts.glibc,
            old.glibc,
            collation_indexes.join(", ")
        ));
    }
    let md5_roles = after::md5_roles(leader).await?;
    phases.start("first full backup");
    let first_backup = crate::standby::first_backup(cfg, engines).await?;
    let status = crate::cluster::up::wait_healthy(cfg, engines, &crate::cluster::up::UpOptions::new(timeout)).await?;
    Ok(Migrated {
        old_major: plan.facts.major,
        new_major: cfg.hosts.cluster.postgres_major,
        method: plan.method,
        phases: phases.finish(),
        extensions,
        collation_indexes,
        reindexed,
        md5_roles,
        first_backup,
        status,
    })
}

/// --link: hard links need both directories under one mount, so the container gets the
/// engine's volumes directory (local driver) rather than the two volumes apart.
async fn linked_paths(engine: &Engine, plan: &Plan) -> Result<(Vec<String>, String, String)> {
    let mountpoint = |name: String| async move {
        let v = engine
            .docker
            .inspect_volume(&name)
            .await
            .with_context(|| format!("volume {name}"))?;
        if v.driver != "local" {
            bail!("volume {name} uses driver {}: --link needs local volumes (use --copy)", v.driver);
        }
        Ok::<_, anyhow::Error>(v.mountpoint)
    };
    let old = mountpoint(plan.volume.clone()).await?;
    let new = mountpoint(plan.new_volume.clone()).await?;
    let sub = plan.facts.dir.strip_prefix("/old").unwrap_or_default();
    let (root, old_dir, new_dir) = link_layout(&old, &new, sub).ok_or_else(|| {
        anyhow::anyhow!(
            "volumes {} and {} do not live side by side ({old}, {new}): use --copy",
            plan.volume,
            plan.new_volume
        )
    })?;
    Ok((vec![format!("{root}:/volumes")], old_dir, new_dir))
}

/// For the engine's volume mountpoints `<root>/<name>/_data`: the directory to mount at
/// /volumes, and the old and new data directories under it.
fn link_layout(old_mount: &str, new_mount: &str, old_sub: &str) -> Option<(String, String, String)> {
    let split = |m: &str| {
        m.strip_suffix("/_data")
            .and_then(|p| p.rsplit_once('/'))
            .map(|(root, name)| (root.to_string(), name.to_string()))
    };
    let ((old_root, old_name), (new_root, new_name)) = (split(old_mount)?, split(new_mount)?);
    (old_root == new_root && !old_root.is_empty()).then(|| {
        (
            old_root,
            format!("/volumes/{old_name}/_data{old_sub}"),
            format!("/volumes/{new_name}/_data/pgdata"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_directories_share_one_mount() {
        let (root, old, new) = link_layout(
            "/var/lib/docker/volumes/legacy/_data",
            "/var/lib/docker/volumes/main-pgdata/_data",
            "/pgdata",
        )
        .unwrap();
        assert_eq!(root, "/var/lib/docker/volumes");
        assert_eq!(old, "/volumes/legacy/_data/pgdata");
        assert_eq!(new, "/volumes/main-pgdata/_data/pgdata");
        let (_, at_root, _) = link_layout("/d/volumes/v/_data", "/d/volumes/w/_data", "").unwrap();
        assert_eq!(at_root, "/volumes/v/_data");
        assert!(link_layout("/a/v/_data", "/b/w/_data", "").is_none(), "different roots");
        assert!(link_layout("/mnt/nfs/v", "/d/volumes/w/_data", "").is_none(), "not a local volume");
    }
}
