//! The restore's pre-flight: what it will do, decided before anything stops. The repository,
//! the cluster's status and every member are read at once (one short-lived container per
//! member reads its newest volume and its free space), and the problems are then reported in
//! the order a user fixes them: S3, the backup, the image, the volumes, the space.

use super::{HostVolumes, Plan, RestoreOptions};
use crate::backup::{list, target};
use crate::cluster::{status, volumes};
use crate::config::{Config, Role};
use crate::docker::{self, Engine};
use crate::error::{Classify, Kind};
use crate::layout::{DATA_MOUNT, INCOMPLETE_MARKER, PGDATA, PREFETCH_MARKER};
use crate::output;
use crate::recovery::{self as recover, Mode};
use anyhow::{bail, Context, Result};
use futures_util::future::join_all;

/// Pre-flight: S3 readable, a backup before the target, the target inside the restorable
/// window, every host reachable with the image, room for a second copy. Changes nothing but
/// the containers a restore whose pgctl died left behind.
///
/// `source` is whose backups are restored: `cfg` itself, or for a clone (`--into`) the cluster
/// the clone is made from. A clone reads them with the source's read-only key and must archive
/// (if at all) into a prefix of its own.
pub async fn plan(source: &Config, cfg: &Config, engines: &[Engine], opts: &RestoreOptions) -> Result<Plan> {
    let clone_of = is_clone(source, cfg).then(|| source_label(source, cfg));
    if clone_of.is_some() {
        check_clone(source, cfg).kind(Kind::Refused)?;
    }
    if source.hosts.backup.is_none() {
        return Err(crate::error::usage(format!(
            "{} has no [backup] section: there is no archive to restore from",
            source.hosts_path.display()
        )));
    }
    let members: Vec<&Engine> = engines
        .iter()
        .filter(|e| cfg.host(&e.host).is_some_and(|h| h.has_role(Role::Patroni)))
        .collect();
    let (s3, listing, leader, facts) = tokio::join!(
        crate::s3::preflight(source),
        list::list(source),
        status::fetch(cfg, engines),
        join_all(members.iter().map(|e| read_member(cfg, e, opts.keep_old)))
    );
    output::step(s3.context("pre-flight; nothing was changed")?);
    let listing = listing.context("pre-flight: reading the backup repository (read-only key)")?;
    let backup = target::choose_backup(&listing, &opts.target, opts.backup.as_deref())
        .kind(Kind::Refused)?
        .clone();
    let major = cfg.hosts.cluster.postgres_major;
    if let Some(m) = backup.pg_major.filter(|m| *m != major) {
        return Err(crate::error::refused(format!(
            "pre-flight: backup {} is of PostgreSQL {m}, the cluster runs {major}: a backup restores into the same major only (`pgctl migrate from-volume` upgrades a data directory); nothing was changed",
            backup.name
        )));
    }
    let facts = facts.into_iter().collect::<Result<Vec<_>>>()?;
    if opts.keep_old {
        check_free_space(&facts, backup.size_bytes)?;
    }
    let leader = leader.ok().and_then(|s| s.leader);
    let scope = &cfg.hosts.cluster.name;
    let mut host_volumes = Vec::new();
    let mut discard_incomplete = Vec::new();
    let mut restore_host = leader.clone();
    let mut previous_leader = leader;
    for (e, mut f) in members.iter().zip(facts) {
        match f.leftover {
            Leftover::Restore => {
                // A retry: the partial copy goes; its host and the leader it recorded stay.
                let newest = f.volumes.pop().expect("a leftover is in a volume");
                restore_host = Some(e.host.clone());
                previous_leader = newest.labels.get(crate::layout::LABEL_PREVIOUS_LEADER).cloned().or(previous_leader);
                discard_incomplete.push(format!("{}:{}", e.host, newest.name));
            }
            // An unused volume is not this host's data: the volume before it is.
            Leftover::Unused => {
                let newest = f.volumes.pop().expect("a leftover is in a volume");
                discard_incomplete.push(format!("{}:{}", e.host, newest.name));
            }
            Leftover::None => {}
        }
        let next = f.volumes.last().map(|v| v.generation + 1).unwrap_or(1);
        host_volumes.push(HostVolumes {
            host: e.host.clone(),
            current: f.volumes.last().map(|v| v.name.clone()),
            new: volumes::data_volume(scope, next),
        });
    }
    let restore_host = restore_host
        .or_else(|| members.first().map(|e| e.host.clone()))
        .context("no host with the patroni role")?;
    Ok(Plan {
        clone_of,
        target: opts.target.describe(),
        window: target::window(&listing),
        backup,
        restore_host,
        previous_leader,
        volumes: host_volumes,
        discard_incomplete,
    })
}

/// What the pre-flight reads on one member.
struct MemberFacts {
    host: String,
    /// The scope's data volumes, oldest first.
    volumes: Vec<volumes::DataVolume>,
    /// What an interrupted restore left in the newest of them.
    leftover: Leftover,
    /// Bytes free on the Docker filesystem, when asked for.
    available: Option<u64>,
}

/// What an interrupted restore may have left in a host's newest data volume.
#[derive(Debug, PartialEq, Eq)]
enum Leftover {
    None,
    /// The restore host's partial copy (its marker is still there).
    Restore,
    /// Nothing a member ran on: a replica's copy being fetched (its marker is still there) or
    /// fetched but not taken into use, or a volume without a data directory.
    Unused,
}

/// One member: the image present, a dead restore's containers removed, its volumes listed,
/// and (in one short-lived container) its newest volume's leftover and the free space.
async fn read_member(cfg: &Config, e: &Engine, free_space: bool) -> Result<MemberFacts> {
    if docker::image_id(&e.docker, &cfg.hosts.cluster.image).await?.is_none() {
        return Err(crate::error::refused(format!(
            "pre-flight: {} lacks image {}: deliver it first (`pgctl image push`)",
            e.host, cfg.hosts.cluster.image
        )));
    }
    // The recovery containers of a restore whose pgctl died hold their volumes: they go.
    for mode in [Mode::Restore, Mode::Prefetch] {
        docker::remove_container(&e.docker, &recover::container_name(cfg, mode)).await?;
    }
    let volumes = volumes::list(e, &cfg.hosts.cluster.name).await?;
    let newest = volumes.last().map(|v| v.name.as_str());
    let (leftover, available) = match (newest, free_space) {
        (None, false) => (Leftover::None, None),
        _ => read_volume_and_space(cfg, e, newest).await?,
    };
    Ok(MemberFacts {
        host: e.host.clone(),
        volumes,
        leftover,
        available,
    })
}

/// The newest volume tested for an interrupted restore's leftovers, and `df` of the Docker
/// filesystem: in the running Patroni container when it mounts that volume (an exec), in a
/// short-lived container otherwise (one more second on a busy engine).
async fn read_volume_and_space(cfg: &Config, engine: &Engine, volume: Option<&str>) -> Result<(Leftover, Option<u64>)> {
    let script = format!(
        "if test -e {INCOMPLETE_MARKER}; then echo restore; elif test -e {PREFETCH_MARKER} || ! test -e {PGDATA}/PG_VERSION; then echo unused; else echo none; fi; df -B1 --output=avail / | tail -n 1"
    );
    let cmd = ["sh", "-c", script.as_str()];
    let out = match volume {
        Some(v) if running_patroni_mounts(engine).await.as_deref() == Some(v) => {
            docker::exec(&engine.docker, crate::layout::PATRONI, &cmd, None).await?
        }
        _ => {
            let host_config = bollard::models::HostConfig {
                binds: volume.map(|v| vec![format!("{v}:{DATA_MOUNT}:ro")]),
                network_mode: Some("none".into()),
                ..Default::default()
            };
            docker::run_once(&engine.docker, &cfg.hosts.cluster.image, &cmd, host_config, None, &[]).await?
        }
    };
    let text = out.ok(&format!(
        "{}: reading volume {} and free space",
        engine.host,
        volume.unwrap_or("(none)")
    ))?;
    let mut lines = text.lines().map(str::trim);
    let leftover = match (volume, lines.next()) {
        (Some(_), Some("restore")) => Leftover::Restore,
        (Some(_), Some("unused")) => Leftover::Unused,
        _ => Leftover::None,
    };
    Ok((leftover, lines.next().and_then(|l| l.parse().ok())))
}

/// The data volume the host's Patroni container mounts, when it runs.
async fn running_patroni_mounts(engine: &Engine) -> Option<String> {
    let info = engine.docker.inspect_container(crate::layout::PATRONI, None).await.ok()?;
    info.state.as_ref()?.running.filter(|r| *r)?;
    volumes::mounted(&info)
}

/// Room for one more copy of the data on every member's Docker filesystem. A host short of it
/// is named with its older data generations: each restore keeps the one it replaces, so they
/// pile up, and only a second `--rollback` in a row would use any but the newest.
fn check_free_space(facts: &[MemberFacts], size: u64) -> Result<()> {
    let need = size + size / 10;
    let short: Vec<String> = facts
        .iter()
        .filter_map(|f| {
            let avail = f.available.unwrap_or(u64::MAX);
            let mut line = format!("{}: {:.1} GB free, {:.1} GB needed", f.host, avail as f64 / 1e9, need as f64 / 1e9);
            // The newest is in use, or an interrupted restore's (then the one before it is).
            let in_use_and_newer = if f.leftover == Leftover::None { 1 } else { 2 };
            let older = &f.volumes[..f.volumes.len().saturating_sub(in_use_and_newer)];
            if !older.is_empty() {
                let names: Vec<&str> = older.iter().map(|v| v.name.as_str()).collect();
                line.push_str(&format!(
                    "; older data generations there, kept only for further rollbacks: {} (`docker volume rm` on {} frees them)",
                    names.join(", "),
                    f.host
                ));
            }
            (avail < need).then_some(line)
        })
        .collect();
    if !short.is_empty() {
        return Err(crate::error::refused(format!(
            "pre-flight: not enough free space for a second copy of the data (the old one is kept for --rollback):\n  {}\n  Free space, or pass --no-keep-old to delete the old data volumes once the cluster is stopped (no rollback then).",
            short.join("\n  ")
        )));
    }
    Ok(())
}

/// Whether the backups are another's: a clone's source cluster, or a migration's S3 prefix.
fn is_clone(source: &Config, cfg: &Config) -> bool {
    source.hosts_path != cfg.hosts_path || location(source) != location(cfg)
}

/// (endpoint, bucket, prefix) of a configuration's archive, if it has one.
fn location(cfg: &Config) -> Option<(String, String, String)> {
    let b = cfg.hosts.backup.as_ref()?;
    let trim = |s: &str| s.trim_matches('/').to_string();
    Some((trim(&b.s3_endpoint), b.s3_bucket.clone(), trim(&b.s3_prefix)))
}

/// How the source of a clone or a migration is named in plans and messages.
fn source_label(source: &Config, cfg: &Config) -> String {
    match location(source) {
        Some((_, bucket, prefix)) if source.hosts_path == cfg.hosts_path => format!("s3://{bucket}/{prefix}"),
        _ => format!("cluster `{}`", source.hosts.cluster.name),
    }
}

/// A clone never writes into the source's archive: its own prefix (or no archiving), and the
/// same PostgreSQL major version.
fn check_clone(source: &Config, cfg: &Config) -> Result<()> {
    if source.hosts.cluster.postgres_major != cfg.hosts.cluster.postgres_major {
        bail!(
            "--into {}: PostgreSQL {} there, {} in {}: a clone needs the same major version",
            cfg.hosts_path.display(),
            cfg.hosts.cluster.postgres_major,
            source.hosts.cluster.postgres_major,
            source.hosts_path.display()
        );
    }
    if let (Some(s), Some(c)) = (location(source), &cfg.hosts.backup) {
        if location(cfg) == Some(s) {
            bail!(
                "--into {}: its backup.s3_prefix `{}` is the source's own; a clone must archive into a prefix of its own (or have no [backup]), never into the archive it is made from",
                cfg.hosts_path.display(),
                c.s3_prefix
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(host: &str, available: u64, generations: &[&str]) -> MemberFacts {
        MemberFacts {
            host: host.into(),
            volumes: generations
                .iter()
                .zip(1..)
                .map(|(name, generation)| volumes::DataVolume {
                    name: name.to_string(),
                    generation,
                    labels: Default::default(),
                })
                .collect(),
            leftover: Leftover::None,
            available: Some(available),
        }
    }

    #[test]
    fn short_hosts_are_named_with_their_older_generations() {
        let gb = 1_000_000_000;
        let facts = [
            member("host1", 50 * gb, &["lab-pgdata", "lab-pgdata-g2", "lab-pgdata-g3"]),
            member("host2", gb, &["lab-pgdata", "lab-pgdata-g2", "lab-pgdata-g3"]),
            member("host3", gb, &["lab-pgdata"]),
        ];
        assert!(check_free_space(&facts[..1], 10 * gb).is_ok());
        let refused = format!("{:#}", check_free_space(&facts, 10 * gb).unwrap_err());
        assert!(!refused.contains("host1"), "{refused}");
        assert!(
            refused.contains("host2: 1.0 GB free, 11.0 GB needed; older data generations there, kept only for further rollbacks: lab-pgdata, lab-pgdata-g2 (`docker volume rm` on host2 frees them)"),
            "{refused}"
        );
        assert!(!refused.contains("lab-pgdata-g3"), "the volume in use is never offered: {refused}");
        assert!(refused.contains("host3: 1.0 GB free, 11.0 GB needed\n"), "{refused}");
        assert!(refused.contains("--no-keep-old"), "{refused}");

        // After an interrupted restore the newest is its partial volume, the one before in use.
        let mut interrupted = member("host2", gb, &["lab-pgdata", "lab-pgdata-g2", "lab-pgdata-g3"]);
        interrupted.leftover = Leftover::Restore;
        let refused = format!("{:#}", check_free_space(&[interrupted], 10 * gb).unwrap_err());
        assert!(refused.contains("further rollbacks: lab-pgdata (`docker"), "{refused}");
    }
}
