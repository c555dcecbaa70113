//! A new replica's empty data volume, prepared so Patroni builds it from the newest usable
//! backup in S3 (replica-from-backup.sh runs the engine's fetch once) or, when that would copy
//! more than a basebackup, from the leader. `node add` and restores (their replicas) use it.

use super::source::{self, Choice, LeaderFacts, ReplicaFrom, Source};
use crate::cluster::volumes;
use crate::config::Config;
use crate::docker::{self, Engine};
use crate::layout::{self, DATA_MOUNT};
use crate::{error, member};
use anyhow::Result;

/// Creates the member's (empty) data volume and leaves on it the fetch `choice` asks for.
pub async fn prepare_volume(cfg: &Config, engine: &Engine, volume: &str, choice: &Choice) -> Result<()> {
    let fetch = match &choice.source {
        Source::Backup { name } => crate::backup::engine(cfg).replica_fetch(cfg, name),
        Source::Leader => Vec::new(),
    };
    volumes::create(cfg, engine, volume, None).await?;
    write_request(cfg, engine, volume, &fetch).await
}

/// The request (one argument per line) that has Patroni's replica method move a restore's
/// prefetched copy into place (replica-from-backup.sh has made the empty data directory).
pub fn prefetched_copy_request() -> String {
    let take = format!(
        "rmdir {pgdata} && mv {copy} {pgdata}",
        pgdata = layout::PGDATA,
        copy = layout::PREFETCHED_COPY
    );
    ["sh", "-c", &take].join("\n")
}

/// A restore's replica whose volume holds a prefetched copy of the backup that did not get the
/// restored timeline's history while it was fetched (see `recovery::prefetch`): `history`
/// (file name, contents) is written into the copy's pg_wal, then the request that Patroni's
/// replica method take it is left; one short-lived container does both.
pub async fn use_prefetched(cfg: &Config, engine: &Engine, volume: &str, history: &[(String, String)]) -> Result<()> {
    let script = format!(
        "set -e; request=$1; shift; rm -rf {delivered}; cd {copy}/pg_wal; {write_files}; rm -f {result}; printf '%s\\n' \"$request\" >{request}",
        delivered = layout::DELIVERED_HISTORY,
        copy = layout::PREFETCHED_COPY,
        write_files = WRITE_FILES,
        result = layout::REPLICA_RESULT,
        request = layout::REPLICA_REQUEST
    );
    let request = prefetched_copy_request();
    let mut cmd = vec!["sh", "-c", script.as_str(), "sh", request.as_str()];
    cmd.extend(history.iter().flat_map(|(name, contents)| [name.as_str(), contents.as_str()]));
    let host_config = bollard::models::HostConfig {
        binds: Some(vec![format!("{volume}:{DATA_MOUNT}")]),
        network_mode: Some("none".into()),
        ..Default::default()
    };
    docker::run_once(&engine.docker, &cfg.hosts.cluster.image, &cmd, host_config, Some("postgres"), &[])
        .await?
        .ok(&format!(
            "{}: preparing the copy in {volume} (timeline history, replica request)",
            engine.host
        ))?;
    Ok(())
}

/// Hands a copy still being fetched (or waiting, in `container`) the restored timeline's
/// `history`: written beside it, then renamed into place at once, which recover.sh waits for.
pub async fn deliver_history(engine: &Engine, container: &str, history: &[(String, String)]) -> Result<()> {
    let script = format!(
        "set -e; rm -rf {delivered}.tmp; mkdir -m 0700 {delivered}.tmp; cd {delivered}.tmp; {write_files}; mv {delivered}.tmp {delivered}",
        delivered = layout::DELIVERED_HISTORY,
        write_files = WRITE_FILES
    );
    let mut cmd = vec!["sh", "-c", script.as_str(), "sh"];
    cmd.extend(history.iter().flat_map(|(name, contents)| [name.as_str(), contents.as_str()]));
    docker::exec(&engine.docker, container, &cmd, Some("postgres"))
        .await?
        .ok(&format!("{}: handing the copy the restored timeline's history", engine.host))?;
    Ok(())
}

/// Shell: writes the (name, contents) pairs of the remaining arguments into the current directory.
const WRITE_FILES: &str = "while [ $# -gt 1 ]; do printf '%s' \"$2\" >\"$1\"; shift 2; done";

/// The source in words, for progress lines.
pub fn describe(source: &Source) -> String {
    match source {
        Source::Leader => "the leader (pg_basebackup)".into(),
        Source::Backup { name } => format!("backup {name} in S3"),
    }
}

/// Where a new replica's data should come from, given the leader's position and the backups
/// the repository holds (`source::choose`'s rule).
pub async fn choose(cfg: &Config, leader: &Engine, from: ReplicaFrom) -> Result<Choice> {
    if cfg.hosts.backup.is_none() {
        if from == ReplicaFrom::Backup {
            return Err(error::usage(format!(
                "--replica-from backup: {} has no [backup] section",
                cfg.hosts_path.display()
            )));
        }
        return Ok(Choice {
            source: Source::Leader,
            reason: "the cluster has no backup repository".into(),
        });
    }
    let listing = if from == ReplicaFrom::Leader {
        Vec::new()
    } else {
        // A backup of another major version (an archive kept across an upgrade) never makes a
        // replica of this one.
        let mut backups = crate::backup::list::list(cfg).await?.backups;
        backups.retain(|b| b.pg_major.is_none_or(|m| m == cfg.hosts.cluster.postgres_major));
        backups
    };
    let facts = leader_facts(leader).await?;
    source::choose(from, &listing, &facts).map_err(|why| error::refused(format!("{why}; nothing was changed")))
}

async fn leader_facts(leader: &Engine) -> Result<LeaderFacts> {
    let row = member::psql(
        leader,
        "SELECT pg_current_wal_lsn(), (SELECT sum(pg_database_size(oid)) FROM pg_database), \
         ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int",
    )
    .await?;
    let f: Vec<&str> = row.trim().split('|').collect();
    let parse_err = || anyhow::anyhow!("{}: unexpected answer about WAL and size: {row}", leader.host);
    let [lsn, size, timeline] = f[..] else { return Err(parse_err()) };
    let timeline: u32 = timeline.parse().map_err(|_| parse_err())?;
    let history = if timeline > 1 {
        let sql = format!("SELECT pg_read_file('pg_wal/{timeline:08X}.history', 0, 1048576, true)");
        source::parse_history(&member::psql(leader, &sql).await?)
    } else {
        Vec::new()
    };
    Ok(LeaderFacts {
        lsn: source::parse_lsn(lsn).ok_or_else(parse_err)?,
        database_bytes: size.parse().map_err(|_| parse_err())?,
        timeline,
        history,
    })
}

/// Leaves `fetch` (empty: none) on the new member's volume for replica-from-backup.sh, and
/// clears what an earlier, interrupted add may have left.
async fn write_request(cfg: &Config, engine: &Engine, volume: &str, fetch: &[String]) -> Result<()> {
    let script = format!(
        "rm -f {result} {request}; [ $# -eq 0 ] || printf '%s\\n' \"$@\" >{request}",
        result = layout::REPLICA_RESULT,
        request = layout::REPLICA_REQUEST
    );
    let mut cmd = vec!["sh", "-c", script.as_str(), "sh"];
    cmd.extend(fetch.iter().map(String::as_str));
    let host_config = bollard::models::HostConfig {
        binds: Some(vec![format!("{volume}:{DATA_MOUNT}")]),
        ..Default::default()
    };
    docker::run_once(&engine.docker, &cfg.hosts.cluster.image, &cmd, host_config, Some("postgres"), &[])
        .await?
        .ok(&format!("{}: preparing volume {volume}", engine.host))?;
    Ok(())
}
