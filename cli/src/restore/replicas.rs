//! The replicas of a restored cluster. In place, each replica host fetches the backup its leader
//! restores from S3 into its new volume *while* the leader recovers (the copies arrive at the
//! same time instead of one basebackup after another once the leader runs); Patroni's replica
//! method then moves the copy into place and the replica replays the archive up to the new
//! timeline (when the newest backup on the leader's history is the one fetched). A clone's, a
//! migration's or a rollback's replicas copy the leader.

use crate::cluster::volumes;
use crate::config::Config;
use crate::docker::Engine;
use crate::nodes::replica;
use crate::nodes::source::{Choice, ReplicaFrom, Source};
use crate::output;
use crate::recovery;
use anyhow::{Context, Result};
use futures_util::future::join_all;

/// Replica volumes that hold a fetched copy of `backup` (beside their data directory).
pub struct Prefetched {
    pub backup: String,
    pub hosts: Vec<String>,
}

/// Creates each replica's new volume and fetches `backup` into it, all at once; a host whose
/// fetch fails gets its volume removed again (it is rebuilt the usual way later).
pub async fn prefetch(cfg: &Config, replicas: &[(&Engine, &str)], backup: &str) -> Prefetched {
    let fetches = replicas.iter().map(|(engine, volume)| async move {
        volumes::create(cfg, engine, volume, None).await?;
        recovery::prefetch(cfg, engine, volume, backup).await
    });
    let mut hosts = Vec::new();
    for ((engine, volume), fetched) in replicas.iter().zip(join_all(fetches).await) {
        match fetched {
            Ok(secs) => {
                output::step(format!("{}: fetched its replica's copy of {backup} in {secs:.1} s", engine.host));
                hosts.push(engine.host.clone());
            }
            Err(e) => {
                output::warn(format!(
                    "{}: fetching its replica's copy failed ({e:#}); it is rebuilt once the leader runs",
                    engine.host
                ));
                if let Err(e) = volumes::remove(engine, volume).await {
                    output::warn(format!("{}: removing the partial copy in {volume}: {e:#}", engine.host));
                }
            }
        }
    }
    Prefetched {
        backup: backup.to_string(),
        hosts,
    }
}

/// Prepares every replica's volume for Patroni, the leader running. After a restore in place
/// (`prefetched`), a copy of the newest backup on the leader's history is moved into place by
/// the replica method; a volume without one (or with another backup's) is made empty and that
/// backup (or the leader, when there is none) requested. Otherwise (a migration, a rollback)
/// the volumes are made empty and the replicas copy the leader.
pub async fn prepare(cfg: &Config, leader: &Engine, replicas: &[(&Engine, &str)], prefetched: Option<&Prefetched>) -> Result<()> {
    if replicas.is_empty() {
        return Ok(());
    }
    let Some(prefetched) = prefetched else {
        for (engine, volume) in replicas {
            volumes::create(cfg, engine, volume, None).await?;
        }
        return Ok(());
    };
    let choice = source(cfg, leader).await;
    let copy_usable = matches!(&choice.source, Source::Backup { name } if *name == prefetched.backup);
    // The leader's timeline history files go into each copy's pg_wal, so its recovery finds
    // the leader's timeline even before the leader has archived them: otherwise it could
    // follow the abandoned timeline past the restore's target.
    let history = if copy_usable {
        leader_history_files(leader).await?
    } else {
        Vec::new()
    };
    output::step(format!("replicas from {}: {}", replica::describe(&choice.source), choice.reason));
    let each = replicas.iter().map(|(engine, volume)| {
        let (choice, history) = (&choice, &history);
        let has_copy = prefetched.hosts.contains(&engine.host);
        async move {
            if has_copy && copy_usable {
                return replica::use_prefetched(cfg, engine, volume, history).await;
            }
            if has_copy {
                // A copy of another backup than the one picked: not used.
                volumes::remove(engine, volume).await?;
            }
            replica::prepare_volume(cfg, engine, volume, choice).await
        }
    });
    join_all(each).await.into_iter().collect()
}

/// The newest backup on the leader's timeline history; the leader when there is none or the
/// backups cannot be listed. (No size rule: the copies are fetched already, and they replay
/// the same WAL the leader has just replayed.)
async fn source(cfg: &Config, leader: &Engine) -> Choice {
    match replica::choose(cfg, leader, ReplicaFrom::Backup).await {
        Ok(choice) => choice,
        Err(e) => Choice {
            source: Source::Leader,
            reason: format!("no backup to build them from ({e:#})"),
        },
    }
}

/// (file name, contents) of every timeline history file in the leader's pg_wal.
async fn leader_history_files(leader: &Engine) -> Result<Vec<(String, String)>> {
    let sql = "SELECT coalesce(json_object_agg(name, pg_read_file('pg_wal/' || name)), '{}') FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{8}\\.history$'";
    let text = crate::member::psql(leader, sql).await?;
    let files: std::collections::BTreeMap<String, String> =
        serde_json::from_str(text.trim()).with_context(|| format!("{}: the timeline history files: {text}", leader.host))?;
    Ok(files.into_iter().collect())
}
