//! `pgctl migrate from-volume --method dump`: the slower way that always works (another
//! install user, another layout, a locale the new image lacks). The cluster starts empty; the
//! old server runs in a container of its own image on the volume (loopback only, trust for
//! local connections by a pg_hba.conf of pgctl's, archiving off); PostgreSQL's new pg_dumpall
//! reads it from inside that container's network namespace into a dump volume, and psql
//! restores the dump into the cluster's leader. The old directory is only used by its own
//! server, started and stopped cleanly.

use super::after::{analyze_in_stages, md5_roles};
use super::from_volume::{engine_of, FromVolume, Migrated, Plan};
use crate::cluster::spec::pgpass_escape;
use crate::cluster::up::{self, UpOptions};
use crate::config::{Config, Secret};
use crate::docker::{self, Engine, FileSpec, Throwaway};
use crate::restore::Phases;
use crate::{member, output};
use anyhow::{bail, Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig};
use std::time::{Duration, Instant};

const SOURCE_CONTAINER: &str = "pgctl-dump-source";
const HBA: &str = "/tmp/pgctl-dump-hba.conf";
const PGPASS: &str = "/tmp/pgctl-dump.pgpass";
const DUMP: &str = "/dump/all.sql";

pub async fn execute(cfg: &Config, engines: &[Engine], plan: Plan, opts: &FromVolume) -> Result<Migrated> {
    let engine = engine_of(engines, &plan.host)?;
    let mut phases = Phases::default();
    phases.start("start the new cluster");
    let up_opts = UpOptions::new(opts.timeout);
    up::up(cfg, &up_opts).await?;

    phases.start("dump the old server");
    let dump_volume = format!("pgctl-dump-{}", cfg.hosts.cluster.name);
    docker::ensure_volume(&engine.docker, &dump_volume, Default::default()).await?;
    let dumped = async {
        start_source(engine, &plan, &opts.source_image).await?;
        let result = dump(cfg, engine, &dump_volume).await;
        docker::stop_and_remove(&engine.docker, SOURCE_CONTAINER).await?;
        result
    }
    .await;
    if let Err(e) = dumped {
        docker::remove_container(&engine.docker, SOURCE_CONTAINER).await.ok();
        bail!(
            "{e:#}\n  Volume {} on {} is as before (its server was stopped cleanly). The cluster runs, empty: remove it (`pgctl remove --i-am-aware --volumes`) before another try.",
            plan.volume,
            plan.host
        );
    }

    phases.start("restore into the cluster");
    let leader = member::leader(cfg, engines).await?;
    restore(cfg, engine, leader, &dump_volume).await?;
    engine
        .docker
        .remove_volume(&dump_volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
        .await
        .ok();
    // The dump set the source's password on postgres: the cluster's roles as secrets.toml says.
    crate::standby::adopt_cluster_roles(cfg, leader).await?;
    phases.start("rebuild statistics");
    analyze_in_stages(leader).await?;
    let md5_roles = md5_roles(leader).await?;
    phases.start("first full backup");
    let first_backup = crate::standby::first_backup(cfg, engines).await?;
    let status = up::wait_healthy(cfg, engines, &up_opts).await?;
    Ok(Migrated {
        old_major: plan.facts.major,
        new_major: cfg.hosts.cluster.postgres_major,
        method: "dump",
        phases: phases.finish(),
        extensions: vec![],
        collation_indexes: vec![],
        reindexed: false,
        md5_roles,
        first_backup,
        status,
    })
}

/// The old server in a container of its image, as the data directory's owner, on loopback.
async fn start_source(engine: &Engine, plan: &Plan, image: &str) -> Result<()> {
    docker::remove_container(&engine.docker, SOURCE_CONTAINER).await?;
    let bin = format!("/usr/lib/postgresql/{}/bin", plan.facts.major);
    let cmd = [
        format!("{bin}/postgres"),
        "-D".into(),
        plan.facts.dir.clone(),
        "-c".into(),
        "listen_addresses=127.0.0.1".into(),
        "-c".into(),
        "unix_socket_directories=/tmp".into(),
        "-c".into(),
        format!("hba_file={HBA}"),
        "-c".into(),
        "archive_mode=off".into(),
    ];
    let body = ContainerCreateBody {
        image: Some(image.into()),
        entrypoint: Some(vec![]),
        cmd: Some(cmd.to_vec()),
        user: Some(format!("{}:{}", plan.facts.uid, plan.facts.gid)),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{}:/old", plan.volume)]),
            shm_size: Some(256 * 1024 * 1024),
            ..Default::default()
        }),
        labels: Some([(crate::layout::LABEL_THROWAWAY.to_string(), "true".to_string())].into()),
        ..Default::default()
    };
    docker::create_container(&engine.docker, SOURCE_CONTAINER, body).await?;
    let hba = FileSpec {
        path: HBA.into(),
        contents: b"local all all trust\nhost all all 127.0.0.1/32 trust\n".to_vec(),
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    docker::upload(&engine.docker, SOURCE_CONTAINER, &[hba]).await?;
    engine.docker.start_container(SOURCE_CONTAINER, None).await?;
    output::step(format!(
        "{}: the old PostgreSQL {} runs on volume {} (loopback only)",
        engine.host, plan.facts.major, plan.volume
    ));
    let ready = [format!("{bin}/pg_isready"), "-h".into(), "127.0.0.1".into(), "-q".into()];
    let ready: Vec<&str> = ready.iter().map(String::as_str).collect();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if docker::exec(&engine.docker, SOURCE_CONTAINER, &ready, None)
            .await
            .is_ok_and(|o| o.success())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            let logs = docker::tail_logs(&engine.docker, SOURCE_CONTAINER, 10).await;
            bail!("{}: the old server did not start on volume {}:\n{logs}", engine.host, plan.volume);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// pg_dumpall of the new major, in the old server's network namespace, into the dump volume.
async fn dump(cfg: &Config, engine: &Engine, dump_volume: &str) -> Result<()> {
    let script = format!("pg_dumpall -h 127.0.0.1 -U postgres -f {DUMP} && du -h {DUMP} | cut -f1");
    let out = Throwaway {
        image: &cfg.hosts.cluster.image,
        cmd: &["sh", "-c", &script],
        host_config: HostConfig {
            network_mode: Some(format!("container:{SOURCE_CONTAINER}")),
            binds: Some(vec![format!("{dump_volume}:/dump")]),
            ..Default::default()
        },
        user: Some("root"),
        env: vec![],
        files: &[],
        name: Some("pgctl-dump".into()),
    }
    .run(&engine.docker)
    .await?;
    if !out.success() {
        bail!("{}: pg_dumpall of the old server failed: {}", engine.host, out.stderr.trim());
    }
    output::step(format!("{}: dumped the old server ({})", engine.host, out.stdout.trim()));
    Ok(())
}

/// psql restores the dump into the leader over the network (the cluster's superuser from a
/// 0600 pgpass file). The source's `postgres` role statements are left out (the restore's own
/// `\connect`s log in with the cluster's password). Errors are fatal except the cluster's own
/// roles already existing.
async fn restore(cfg: &Config, engine: &Engine, leader: &Engine, dump_volume: &str) -> Result<()> {
    let address = &cfg.host(&leader.host).context("the leader is in hosts.toml")?.address;
    let image = &cfg.hosts.cluster.image;
    let owner = crate::image::postgres_owner(&crate::image::manifest(engine, image).await?, image)?;
    let password = cfg.secrets.superuser_password.as_ref().map(Secret::expose).unwrap_or_default();
    let files = [FileSpec {
        path: PGPASS.into(),
        contents: format!("{}:5432:*:postgres:{}\n", pgpass_escape(address), pgpass_escape(password)).into_bytes(),
        mode: 0o600,
        uid: owner.0,
        gid: owner.1,
    }];
    let script = format!(
        "grep -v -E '^(CREATE ROLE postgres;|ALTER ROLE postgres WITH )' {DUMP} | psql -h {address} -U postgres -d postgres -X -q >/dev/null 2>/tmp/errors; \
         grep 'ERROR:' /tmp/errors | grep -v -E 'role \"(postgres|replicator|rewinder)\" already exists' >&2; \
         [ $? -eq 1 ]"
    );
    output::step(format!("{}: restoring the dump into the leader {}", engine.host, leader.host));
    let out = Throwaway {
        image,
        cmd: &["sh", "-c", &script],
        host_config: HostConfig {
            network_mode: Some("host".into()),
            binds: Some(vec![format!("{dump_volume}:/dump:ro")]),
            ..Default::default()
        },
        user: Some("postgres"),
        env: vec![format!("PGPASSFILE={PGPASS}")],
        files: &files,
        name: Some("pgctl-dump-restore".into()),
    }
    .run(&engine.docker)
    .await?;
    if !out.success() {
        bail!(
            "{}: restoring the dump into the cluster failed:\n{}",
            engine.host,
            out.stderr.trim()
        );
    }
    Ok(())
}
