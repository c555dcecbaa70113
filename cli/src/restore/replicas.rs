//! The replicas of a restored cluster. In place, each replica host fetches the backup its leader
//! restores from S3 into its new volume *while* the leader recovers (the copies arrive at the
//! same time instead of one basebackup after another once the leader runs); Patroni's replica
//! method then moves the copy into place and the replica replays the archive up to the restored
//! timeline and streams the rest. A clone's, a migration's or a rollback's replicas copy the
//! leader.

use crate::cluster::volumes;
use crate::config::Config;
use crate::docker::Engine;
use crate::nodes::replica;
use crate::output;
use crate::recovery;
use anyhow::{Context, Result};
use futures_util::future::join_all;

/// Replica volumes that hold a fetched copy of the backup the leader restores (beside their
/// data directory).
pub struct Prefetched {
    pub hosts: Vec<String>,
    /// (host, volume) of the restored data the copies follow.
    pub restored: (String, String),
}

/// Creates each replica's new volume and fetches `backup` into it, all at once; a host whose
/// fetch fails gets its volume removed again (it is rebuilt the usual way later).
pub async fn prefetch(cfg: &Config, replicas: &[(&Engine, &str)], backup: &str, restored: (&str, &str)) -> Prefetched {
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
        hosts,
        restored: (restored.0.to_string(), restored.1.to_string()),
    }
}

/// Prepares every replica's new volume before the cluster starts (its leader first, these once
/// it leads). After a restore in place (`prefetched`), each copy gets the restored data's
/// timeline history files in its pg_wal and a request that Patroni's replica method move it
/// into place; the copy is of the backup the leader restored from, so it replays the WAL the
/// leader replayed. A host without a copy (its fetch failed), and every replica of a clone, a
/// migration or a rollback, gets an empty volume and copies the leader once it runs.
pub async fn prepare(cfg: &Config, engines: &[Engine], replicas: &[(&Engine, &str)], prefetched: Option<&Prefetched>) -> Result<()> {
    let copies: &[String] = prefetched.map(|p| p.hosts.as_slice()).unwrap_or_default();
    let history = match prefetched.filter(|p| !p.hosts.is_empty()) {
        Some(p) => {
            let restored = engines
                .iter()
                .find(|e| e.host == p.restored.0)
                .context("the restored leader's engine")?;
            history_files(cfg, restored, &p.restored.1).await?
        }
        None => Vec::new(),
    };
    if !copies.is_empty() {
        output::step(format!(
            "replicas {} take their copies; they replay the archive, then stream from the leader",
            copies.join(", ")
        ));
    }
    let each = replicas.iter().map(|(engine, volume)| {
        let history = &history;
        async move {
            if copies.contains(&engine.host) {
                replica::use_prefetched(cfg, engine, volume, history).await
            } else {
                volumes::create(cfg, engine, volume, None).await
            }
        }
    });
    join_all(each).await.into_iter().collect()
}

/// (file name, contents) of every timeline history file in the restored data's pg_wal (read
/// before its member starts). A copy's recovery must know the restored timeline before it reads
/// the archive, where the abandoned timeline goes on past the restore's target; the timeline
/// Patroni's promotion of the leader then makes reaches the replicas by streaming.
async fn history_files(cfg: &Config, engine: &Engine, volume: &str) -> Result<Vec<(String, String)>> {
    let script = format!(
        "import glob, json, os\nprint(json.dumps({{os.path.basename(f): open(f).read() for f in glob.glob('{}/pg_wal/*.history')}}))",
        crate::layout::PGDATA
    );
    let host_config = bollard::models::HostConfig {
        binds: Some(vec![format!("{volume}:{}:ro", crate::layout::DATA_MOUNT)]),
        network_mode: Some("none".into()),
        ..Default::default()
    };
    let out = crate::docker::run_once(
        &engine.docker,
        &cfg.hosts.cluster.image,
        &["python3", "-c", &script],
        host_config,
        Some("postgres"),
        &[],
    )
    .await?;
    let text = out.ok(&format!("{}: reading the timeline history in {volume}", engine.host))?;
    let files: std::collections::BTreeMap<String, String> =
        serde_json::from_str(text.trim()).with_context(|| format!("{}: the timeline history files: {text}", engine.host))?;
    Ok(files.into_iter().collect())
}
