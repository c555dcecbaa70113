//! The replicas of a restored cluster. In place, each replica host fetches the backup its leader
//! restores from S3 into its new volume once the leader's own fetch has ended, while the leader
//! replays WAL and starts (the copies are there when it leads, instead of one basebackup after
//! another from it). Each copy gets the restored timeline's history in its pg_wal, usually
//! while it is fetched; Patroni's replica method then moves it into place and the replica
//! replays the archive up to the restored timeline and streams the rest. A clone's, a
//! migration's or a rollback's replicas copy the leader.

use crate::cluster::volumes;
use crate::config::Config;
use crate::docker::Engine;
use crate::nodes::replica;
use crate::output;
use crate::recovery;
use anyhow::{Context, Result};
use futures_util::future::{join_all, BoxFuture, FutureExt, Shared};

/// Creates each replica's new, empty volume: it must exist before the cluster's pre-flight
/// looks for the volume each member mounts.
pub async fn create_volumes(cfg: &Config, replicas: &[(&Engine, &str)]) -> Result<()> {
    let each = replicas.iter().map(|(engine, volume)| volumes::create(cfg, engine, volume, None));
    join_all(each).await.into_iter().collect()
}

/// The restored timeline's history files, once the leader's recovery has them (None: it failed).
pub type History<'a> = Shared<BoxFuture<'a, Option<Vec<(String, String)>>>>;

/// The copies `fetch_copies` made: those that got the history while fetched (`taken`) are ready
/// for Patroni's replica method, the `untaken` ones still need `take_copies`.
#[derive(Default)]
pub struct Copies {
    pub taken: Vec<String>,
    pub untaken: Vec<String>,
}

/// Fetches `backup` into each replica's new volume (see `create_volumes`), all at once, each
/// handed the restored timeline's `history` while it is fetched. A host whose fetch fails gets
/// its volume emptied: its replica copies the leader once it runs.
pub async fn fetch_copies(cfg: &Config, replicas: &[(&Engine, &str)], backup: &str, history: History<'_>) -> Result<Copies> {
    let fetches = replicas
        .iter()
        .map(|(engine, volume)| recovery::prefetch(cfg, engine, volume, backup, history.clone().boxed()));
    let mut copies = Copies::default();
    for ((engine, volume), fetched) in replicas.iter().zip(join_all(fetches).await) {
        match fetched {
            Ok(copy) => {
                let (history, list) = match copy.taken {
                    true => ("with the restored timeline's history", &mut copies.taken),
                    false => ("(the restored timeline's history is added once known)", &mut copies.untaken),
                };
                output::step(format!(
                    "{}: fetched its replica's copy of {backup} in {:.1} s, {history}",
                    engine.host, copy.seconds
                ));
                list.push(engine.host.clone());
            }
            Err(e) => give_up_copy(cfg, engine, volume, &format!("fetching its replica's copy failed ({e:#})")).await?,
        }
    }
    Ok(copies)
}

/// After a restore in place: each copy that did not get the restored data's timeline `history`
/// files while fetched (`copies.untaken`) gets them in its pg_wal and a request that Patroni's
/// replica method move it into place; the copy is of the backup the leader restored from, so it
/// replays the WAL the leader replayed. The other replicas' volumes stay empty, as does one
/// whose copy cannot be prepared: they copy the leader once it runs.
pub async fn take_copies(cfg: &Config, replicas: &[(&Engine, &str)], copies: &Copies, history: &[(String, String)]) -> Result<()> {
    let ready: Vec<&str> = copies.taken.iter().chain(&copies.untaken).map(String::as_str).collect();
    if ready.is_empty() {
        return Ok(());
    }
    output::step(format!(
        "replicas {} take their copies; they replay the archive, then stream from the leader",
        ready.join(", ")
    ));
    let copies: Vec<_> = replicas
        .iter()
        .filter(|(engine, _)| copies.untaken.contains(&engine.host))
        .collect();
    let taken = join_all(
        copies
            .iter()
            .map(|&&(engine, volume)| replica::use_prefetched(cfg, engine, volume, history)),
    )
    .await;
    for ((engine, volume), taken) in copies.into_iter().zip(taken) {
        if let Err(e) = taken {
            give_up_copy(cfg, engine, volume, &format!("{e:#}")).await?;
        }
    }
    Ok(())
}

/// A copy that cannot be used: its volume is emptied (its replica then copies the leader).
/// Only when that fails too is the replica not started.
async fn give_up_copy(cfg: &Config, engine: &Engine, volume: &str, why: &str) -> Result<()> {
    output::warn(format!("{}: {why}; its replica copies the leader once it runs", engine.host));
    volumes::empty(cfg, engine, volume)
        .await
        .with_context(|| format!("{}: volume {volume} holds an unusable copy", engine.host))
}

/// Stops the copies being fetched (the leader's recovery failed: they would never be used).
pub async fn stop_fetches(cfg: &Config, replicas: &[(&Engine, &str)]) {
    let name = recovery::container_name(cfg, recovery::Mode::Prefetch);
    let removed = join_all(
        replicas
            .iter()
            .map(|(engine, _)| crate::docker::remove_container(&engine.docker, &name)),
    )
    .await;
    for ((engine, _), removed) in replicas.iter().zip(removed) {
        if let Err(e) = removed {
            output::warn(format!("{}: stopping the copy's fetch: {e:#}", engine.host));
        }
    }
}
