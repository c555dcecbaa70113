//! `pgctl migrate from-primary` and `migrate cutover`: a migration with (almost) no downtime.
//! The cluster starts as a Patroni standby cluster whose leader streams from the running
//! standalone server (same major); its replicas cascade from that leader. At cutover the source
//! is made read-only (and its client sessions ended), the standby leader replays up to the
//! source's last WAL position, and removing `standby_cluster` from Patroni's dynamic
//! configuration promotes it. The source keeps its data; `ALTER SYSTEM RESET
//! default_transaction_read_only` on it is the way back until the cluster takes writes.
//!
//! pgctl reaches the source from a cluster host (a throwaway container in that host's
//! network), as the standby leader will; the source's superuser password comes from a file.

use crate::cluster::spec::pgpass_escape;
use crate::cluster::status::ClusterStatus;
use crate::cluster::up::{self, UpOptions};
use crate::config::{Config, Role, Secret, StandbyConfig};
use crate::docker::{Engine, FileSpec, Throwaway};
use crate::{error, member, output};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::time::{Duration, Instant};

/// The replication slot pgctl keeps on the source while the standby cluster follows it.
pub const SLOT: &str = "pgctl_migration";
const PGPASS: &str = "/tmp/pgctl-source.pgpass";

/// The standalone server, as the cluster's hosts reach it.
pub struct SourceServer {
    pub host: String,
    pub port: u16,
    /// A superuser of the source (pgctl creates the replication role and slot with it).
    pub user: String,
    pub password: Option<Secret>,
}

/// What the source is, read before anything changes.
#[derive(Debug, Serialize)]
pub struct SourceFacts {
    pub major: u32,
    pub system_id: String,
    pub wal_level: String,
}

#[derive(Debug, Serialize)]
pub struct Following {
    pub source: String,
    pub facts: SourceFacts,
    pub lag_bytes: u64,
    pub seconds: f64,
    pub status: ClusterStatus,
}

#[derive(Debug, Serialize)]
pub struct CutOver {
    pub source: String,
    /// The source's last WAL position once it was read-only: the cluster replayed up to it.
    pub final_lsn: String,
    /// From the source refusing writes to the cluster's leader accepting them.
    pub write_gap_seconds: f64,
    pub first_backup: Option<String>,
    pub status: ClusterStatus,
}

impl SourceServer {
    fn describe(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// psql against the source as `user` (password `password`), from `engine`'s network.
    async fn psql(
        &self,
        cfg: &Config,
        engine: &Engine,
        user: &str,
        password: Option<&str>,
        extra: &str,
        commands: &[&str],
    ) -> Result<String> {
        let conninfo = format!(
            "host={} port={} user={user} dbname=postgres connect_timeout=5 application_name=pgctl {extra}",
            self.host, self.port
        );
        let mut cmd = vec!["psql", conninfo.as_str(), "-XAtq", "-v", "ON_ERROR_STOP=1"];
        for c in commands {
            cmd.extend(["-c", c]);
        }
        let image = &cfg.hosts.cluster.image;
        let owner = crate::image::postgres_owner(&crate::image::manifest(engine, image).await?, image)?;
        let line = format!(
            "{}:{}:*:{}:{}\n",
            pgpass_escape(&self.host),
            self.port,
            pgpass_escape(user),
            pgpass_escape(password.unwrap_or_default())
        );
        let files = [FileSpec {
            path: PGPASS.into(),
            contents: line.into_bytes(),
            mode: 0o600,
            uid: owner.0,
            gid: owner.1,
        }];
        let out = Throwaway {
            image,
            cmd: &cmd,
            host_config: bollard::models::HostConfig {
                network_mode: Some("host".into()),
                ..Default::default()
            },
            user: Some("postgres"),
            env: vec![format!("PGPASSFILE={PGPASS}")],
            files: &files,
            name: None,
        }
        .run(&engine.docker)
        .await?;
        if !out.success() {
            bail!("{} (as {user}, from {}): {}", self.describe(), engine.host, out.stderr.trim());
        }
        Ok(out.stdout.trim().to_string())
    }

    async fn superuser(&self, cfg: &Config, engine: &Engine, commands: &[&str]) -> Result<String> {
        let password = self.password.as_ref().map(Secret::expose);
        self.psql(cfg, engine, &self.user, password, "", commands).await
    }

    async fn current_lsn(&self, cfg: &Config, engine: &Engine) -> Result<String> {
        self.superuser(cfg, engine, &["SELECT pg_current_wal_lsn()"]).await
    }
}

/// The engine pgctl reaches the source from: the first database host.
fn first_member<'a>(cfg: &Config, engines: &'a [Engine]) -> Result<&'a Engine> {
    engines
        .iter()
        .find(|e| cfg.host(&e.host).is_some_and(|h| h.has_role(Role::Patroni)))
        .context("no database host reachable")
}

/// Pre-flight: a new cluster (not running, empty prefix) and a source that is a primary of
/// the cluster's major with WAL for replication. Changes nothing.
pub async fn check(cfg: &Config, engines: &[Engine], source: &SourceServer) -> Result<SourceFacts> {
    super::check_new_cluster(cfg, engines).await?;
    let engine = first_member(cfg, engines)?;
    let row = source
        .superuser(
            cfg,
            engine,
            &["SELECT current_setting('server_version_num')::int / 10000, current_setting('wal_level'), (SELECT system_identifier FROM pg_control_system()), pg_is_in_recovery()"],
        )
        .await
        .map_err(|e| error::tagged(error::Kind::Unreachable, format!("pre-flight: the source does not answer: {e:#}; nothing was changed")))?;
    let fields: Vec<&str> = row.split('|').collect();
    let [major, wal_level, system_id, in_recovery] = fields[..] else {
        bail!("unexpected answer from the source: {row}");
    };
    let facts = SourceFacts {
        major: major.parse().context("server_version_num")?,
        system_id: system_id.into(),
        wal_level: wal_level.into(),
    };
    let ours = cfg.hosts.cluster.postgres_major;
    let refuse = |why: String| {
        Err(error::refused(format!(
            "pre-flight: {}: {why}; nothing was changed",
            source.describe()
        )))
    };
    if facts.major != ours {
        return refuse(format!(
            "PostgreSQL {}, the cluster runs {ours}: streaming needs the same major (`pgctl migrate from-volume` upgrades)",
            facts.major
        ));
    }
    if in_recovery == "t" {
        return refuse("it is a standby: point --source-host at the primary".into());
    }
    if facts.wal_level == "minimal" {
        return refuse("wal_level = minimal: set it to replica (needs a restart of the source)".into());
    }
    Ok(facts)
}

/// Prepares the source (the cluster's replication role, a slot), proves a replication
/// connection works from a cluster host, then starts the cluster as its standby.
pub async fn follow(cfg: &Config, engines: &[Engine], source: &SourceServer, facts: SourceFacts, timeout: Duration) -> Result<Following> {
    let started = Instant::now();
    let engine = first_member(cfg, engines)?;
    let verifier = crate::roles::verifier(cfg, &cfg.secrets.replication_password, "replication_password")?;
    let role = format!(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'replicator') THEN CREATE ROLE replicator; END IF; END $$; ALTER ROLE replicator WITH REPLICATION LOGIN PASSWORD '{verifier}'"
    );
    let slot = format!(
        "SELECT pg_create_physical_replication_slot('{SLOT}', true) WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = '{SLOT}')"
    );
    source
        .superuser(cfg, engine, &["SET log_statement = 'none'", &role, &slot])
        .await
        .context("creating the replication role and slot on the source")?;
    output::step(format!(
        "{}: role replicator (the cluster's replication password) and slot {SLOT} are in place",
        source.describe()
    ));
    let replication = cfg.secrets.replication_password.as_ref().map(Secret::expose);
    source
        .psql(cfg, engine, "replicator", replication, "replication=database", &["IDENTIFY_SYSTEM"])
        .await
        .map_err(|e| {
            error::refused(format!(
                "the cluster's hosts cannot open a replication connection to the source ({e:#}).\n  Add to the source's pg_hba.conf (then reload it):\n    host replication replicator <each database host's address>/32 scram-sha-256\n  The role replicator and slot {SLOT} were created on the source; no cluster was started"
            ))
        })?;

    let mut standby = cfg.clone();
    standby.hosts.standby = Some(StandbyConfig {
        host: Some(source.host.clone()),
        port: source.port,
        primary_slot_name: Some(SLOT.into()),
        archive: None,
        archive_engine: None,
        archive_stanza: None,
    });
    output::step(format!(
        "starting cluster `{}` as a standby of {}",
        cfg.hosts.cluster.name,
        source.describe()
    ));
    let status = up::up(&standby, &UpOptions::new(timeout)).await?;
    let lag_bytes = lag(cfg, engines, source).await?;
    Ok(Following {
        source: source.describe(),
        facts,
        lag_bytes,
        seconds: started.elapsed().as_secs_f64(),
        status,
    })
}

/// How far the standby leader's replay is behind the source's current WAL position, in bytes.
pub async fn lag(cfg: &Config, engines: &[Engine], source: &SourceServer) -> Result<u64> {
    let leader = member::leader(cfg, engines).await.context("the standby cluster has no leader")?;
    let lsn = source.current_lsn(cfg, first_member(cfg, engines)?).await?;
    let sql = format!("SELECT greatest(0, pg_wal_lsn_diff('{lsn}', coalesce(pg_last_wal_replay_lsn(), '0/0')))::bigint");
    Ok(member::psql(leader, &sql).await?.trim().parse().unwrap_or(u64::MAX))
}

/// The cutover: source read-only and its sessions ended, the last byte replayed, the standby
/// cluster promoted, the slot dropped, a first full backup taken.
pub async fn cutover(cfg: &Config, engines: &[Engine], source: &SourceServer, timeout: Duration) -> Result<CutOver> {
    crate::standby::standby_status(cfg, engines, "cut over").await?;
    let via = first_member(cfg, engines)?;
    let leader = member::leader(cfg, engines).await?;

    output::step(format!(
        "{}: refusing writes from now on and ending client sessions",
        source.describe()
    ));
    let stopped = Instant::now();
    source
        .superuser(
            cfg,
            via,
            &[
                "ALTER SYSTEM SET default_transaction_read_only = on",
                "SELECT pg_reload_conf()",
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND application_name <> 'pgctl'",
            ],
        )
        .await
        .context("making the source read-only; the cluster is unchanged")?;
    let final_lsn = source.current_lsn(cfg, via).await?;
    output::step(format!("waiting for {} to replay up to {final_lsn}", leader.host));
    let caught_up = format!("SELECT pg_last_wal_replay_lsn() >= '{final_lsn}'::pg_lsn");
    let deadline = Instant::now() + timeout;
    while member::psql(leader, &caught_up).await.unwrap_or_default().trim() != "t" {
        if Instant::now() > deadline {
            bail!(
                "{} did not replay up to {final_lsn} within {} s; the source is read-only and the cluster still a standby.\n  Way back: on the source, ALTER SYSTEM RESET default_transaction_read_only; SELECT pg_reload_conf();",
                leader.host,
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let writable = crate::standby::promote_leader(cfg, engines, timeout).await?;
    let write_gap_seconds = (writable - stopped).as_secs_f64();
    output::step(format!(
        "the cluster takes writes {} after the source stopped taking them",
        output::seconds(write_gap_seconds)
    ));

    let dropped = source
        .superuser(
            cfg,
            via,
            &[&format!(
                "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE slot_name = '{SLOT}'"
            )],
        )
        .await;
    if let Err(e) = dropped {
        output::warn(format!(
            "slot {SLOT} stays on the source ({e:#}): drop it there, or it keeps WAL forever"
        ));
    }
    let status = up::wait_healthy(cfg, engines, &UpOptions::new(timeout)).await?;
    let first_backup = crate::standby::first_backup(cfg, engines).await?;
    Ok(CutOver {
        source: source.describe(),
        final_lsn,
        write_gap_seconds,
        first_backup,
        status,
    })
}
