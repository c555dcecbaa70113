//! `pgctl restore`: point-in-time restore of the whole cluster, in place or as a clone, in the
//! order the Compose README's 13 manual steps (section 5.3) had to be done by hand — and with a
//! way back. Pre-flight checks everything before anything stops; the old data volumes are never
//! touched (the restore fills a new volume generation, see `cluster::volumes`), so
//! `pgctl restore --rollback` can put them back.

mod plan;
mod replicas;
pub mod rollback;

pub use plan::plan;

use crate::backup::list::Backup;
use crate::backup::target::{self, Target};
use crate::cluster::status::ClusterStatus;
use crate::cluster::up::{self, Members, UpOptions};
use crate::cluster::volumes;
use crate::config::Config;
use crate::docker::{self, Engine};
use crate::layout::PATRONI;
pub use crate::output::Phases;
use crate::recovery::{self as recover, Fetch, Mode, Recovered};
use crate::{member, output};
use anyhow::{Context, Result};
use futures_util::FutureExt;
use serde::Serialize;
use std::time::Duration;

pub struct RestoreOptions {
    pub target: Target,
    /// `latest` or a timeline number.
    pub timeline: String,
    pub backup: Option<String>,
    /// Delete the old generation once the cluster is stopped (no space for two copies).
    pub keep_old: bool,
    pub timeout: Duration,
}

/// What a restore will do, decided by the pre-flight; nothing has changed yet.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// For a clone or a migration: whose backups are restored (a cluster, or an S3 prefix).
    pub clone_of: Option<String>,
    pub backup: Backup,
    pub target: String,
    pub window: String,
    /// Where the backup is fetched and recovered; the first member to start.
    pub restore_host: String,
    /// The leader before the restore (a rollback starts its data first).
    pub previous_leader: Option<String>,
    /// Per Patroni host: the volume in use now (kept) and the one the restore fills.
    pub volumes: Vec<HostVolumes>,
    /// An interrupted restore's partial volume, discarded before this attempt.
    pub discard_incomplete: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct HostVolumes {
    pub host: String,
    pub current: Option<String>,
    pub new: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub plan: Plan,
    pub recovered: Recovered,
    /// Wall time of each phase, in order.
    pub phases: Vec<(String, f64)>,
    pub status: ClusterStatus,
}

impl Plan {
    pub fn describe(&self, cfg: &Config, keep_old: bool) -> String {
        let what = match &self.clone_of {
            Some(source) => format!("restore the backups of {source} into cluster `{}`", cfg.hosts.cluster.name),
            None => format!("restore cluster `{}`", cfg.hosts.cluster.name),
        };
        let others = match self.clone_of {
            None => "the other members fetch the same backup once it has it, and follow it",
            Some(_) => "the other members are rebuilt from it",
        };
        let mut out = format!(
            "{what} to {}\n  from backup {} (finished {}, {:.1} MB)\n  {}\n  fetched and recovered on {}, which becomes the leader; {others}\n",
            self.target,
            self.backup.name,
            target::unix_time(self.backup.stop),
            self.backup.size_bytes as f64 / 1e6,
            self.window,
            self.restore_host,
        );
        for d in &self.discard_incomplete {
            out.push_str(&format!("  discards the partial volume of an interrupted restore: {d}\n"));
        }
        for v in &self.volumes {
            let keep = match (&v.current, keep_old) {
                (Some(c), true) => format!("keeps {c} untouched"),
                (Some(c), false) => format!("DELETES {c} (--no-keep-old)"),
                (None, _) => "has no data volume now".into(),
            };
            out.push_str(&format!("  {}: {keep}; restores into {}\n", v.host, v.new));
        }
        out.push_str("  the cluster is stopped first (Patroni on every member at once, the leader once the signalled replicas have left their HA loops, so that none takes over; the backup is fetched once the leader's PostgreSQL has stopped, while Patroni finishes going down); its DCS scope is cleared\n");
        if keep_old {
            out.push_str("  undo afterwards with: pgctl restore --rollback\n");
        }
        out
    }
}

/// Carries out a plan: every phase timed and reported; a failure says what is intact.
pub async fn execute(source: &Config, cfg: &Config, engines: &[Engine], plan: Plan, opts: &RestoreOptions) -> Result<Report> {
    let mut phases = Phases::default();
    let by_host = |h: &str| engines.iter().find(|e| e.host == h).expect("planned hosts are connected");
    let restore_engine = by_host(&plan.restore_host);

    if plan.clone_of.is_none() {
        phases.start("archive the current WAL");
        if let Some(leader) = plan.previous_leader.as_deref().map(by_host) {
            archive_current_wal(leader).await;
        }
    }

    phases.start("stop the cluster");
    let going = stop_members_leaving(cfg, engines).await?;
    // The leader's new volume is made and filled while its Patroni finishes going down (its
    // PostgreSQL has exited): pgctl killed meanwhile leaves its container, which `up` refuses to
    // move onto a newer volume that is empty or partial (`newcomers::check_move`). An old volume
    // is removed once nothing mounts it.
    let wait_now = !plan.discard_incomplete.is_empty() || !opts.keep_old;
    let gone = async {
        let stopped = going.wait().await.map_err(|e| format!("{e:#}"))?;
        stopped.into_iter().for_each(output::step);
        Ok::<(), String>(())
    }
    .shared();
    if wait_now {
        gone.clone().await.map_err(anyhow::Error::msg)?;
    }
    for (host, volume) in plan.discard_incomplete.iter().filter_map(|d| d.split_once(':')) {
        volumes::remove(by_host(host), volume).await?;
    }
    if !opts.keep_old {
        for v in &plan.volumes {
            if let Some(old) = &v.current {
                volumes::remove(by_host(&v.host), old).await?;
            }
        }
    }

    phases.start("fetch the backup and replay WAL");
    let new_volume = &plan.volumes.iter().find(|v| v.host == plan.restore_host).expect("planned").new;
    volumes::create(cfg, restore_engine, new_volume, plan.previous_leader.as_deref()).await?;
    let replicas: Vec<(&Engine, &str)> = plan
        .volumes
        .iter()
        .filter(|v| v.host != plan.restore_host)
        .map(|v| (by_host(&v.host), v.new.as_str()))
        .collect();
    if plan.clone_of.is_some() {
        // A clone's replicas could not replay the source's archive: they copy the leader.
        let recovered = recover_leader(cfg, source, &plan, restore_engine, opts, None, &mut phases).await?;
        gone.await.map_err(anyhow::Error::msg)?;
        let status = start_cluster(cfg, &plan.restore_host, &replicas, opts.timeout, &mut phases).await?;
        return Ok(Report {
            plan,
            recovered,
            phases: phases.finish(),
            status,
        });
    }
    // In place, the replicas fetch their copies of the same backup once the leader's own fetch
    // has ended (they share disks, network and S3 with it, and its recovery is the downtime),
    // while it replays WAL and starts; they are started with their copies once it leads. Their
    // volumes are made while the leader fetches, once every Patroni still going down has gone.
    let prepared = async {
        gone.await?;
        replicas::create_volumes(cfg, &replicas).await.map_err(|e| format!("{e:#}"))
    }
    .shared();
    let (fetched, leader_fetched) = tokio::sync::oneshot::channel();
    let (history_known, history) = tokio::sync::oneshot::channel::<Vec<(String, String)>>();
    let history: replicas::History = history.map(Result::ok).boxed().shared();
    let (ready, others_ready) = tokio::sync::watch::channel(None);
    let leader_path = async {
        let recovered = recover_leader(cfg, source, &plan, restore_engine, opts, Some(fetched), &mut phases).await;
        // The DCS is cleared once Patroni has gone everywhere (the leader's, a synchronous
        // standby's went down meanwhile), and the members' pre-flight looks for the volumes
        // they mount once each exists.
        let prepared = prepared.clone().await;
        let recovered = recovered?;
        // The copies get the restored timeline's history as soon as the recovery has succeeded
        // (its volume is marked complete by then). It was read before the leader's Patroni
        // starts, so the copies never see the timeline that promotion makes: a copy's recovery
        // must know the restored timeline before it reads the archive, where the abandoned one
        // goes on past the target; the leader's next timeline reaches them by streaming.
        let _ = history_known.send(recovered.history.clone().into_iter().collect());
        prepared.map_err(anyhow::Error::msg)?;
        let up_opts = UpOptions {
            checked: true,
            clear_scope: true,
            ..UpOptions::new(opts.timeout)
        };
        let first = up::First {
            host: plan.restore_host.clone(),
            led_at: Default::default(),
            others_ready: Some(others_ready),
        };
        // The leader not starting on its recovered data: the error as it is; the copies'
        // fetches are stopped and what they left stays (a retried restore discards it, `up`
        // refuses a copy whose fetch was cut short).
        let status = start_first(cfg, first, &up_opts, &mut phases).await?;
        anyhow::Ok((recovered, status))
    };
    // No copies when the leader's fetch fails; not taken when its recovery does.
    let copies = async {
        // (The leader's part reports volumes that could not be made.)
        if prepared.clone().await.is_ok() && leader_fetched.await.is_ok() {
            let taken = async {
                let copies = replicas::fetch_copies(cfg, &replicas, &plan.backup.name, history.clone()).await?;
                match history.await {
                    Some(history) => replicas::take_copies(cfg, &replicas, &copies, &history).await,
                    None => Ok(()),
                }
            };
            ready.send_replace(Some(taken.await.map_err(|e| format!("{e:#}"))));
        }
    };
    // The leader's part ends first when it fails: the error is reported then, not once every
    // copy has been fetched (it ends last otherwise: it waits for the copies to start them).
    let started = {
        tokio::pin!(leader_path, copies);
        tokio::select! {
            started = &mut leader_path => started,
            () = &mut copies => leader_path.await,
        }
    };
    drop(prepared);
    if started.is_err() {
        replicas::stop_fetches(cfg, &replicas).await;
    }
    let (recovered, status) = match started {
        Ok(started) => started,
        Err(e) if e.is::<RecoveryFailed>() => {
            // The recovery failed: the replicas' copies (and empty volumes) go with it.
            for (engine, volume) in &replicas {
                if let Err(e) = volumes::remove(engine, volume).await {
                    output::warn(format!("{}: removing the replica's volume {volume}: {e:#}", engine.host));
                }
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    Ok(Report {
        plan,
        recovered,
        phases: phases.finish(),
        status,
    })
}

/// A recovery that failed, with what is intact and the ways forward (its volume removed).
#[derive(Debug)]
struct RecoveryFailed(String);

impl std::fmt::Display for RecoveryFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RecoveryFailed {}

/// Fetches the backup into the restore host's new volume and recovers it to the target;
/// `fetched` is told when the fetch has ended. A failed recovery removes the volume and is a
/// `RecoveryFailed`. The volume is marked complete once pgctl has read the recovery's summary
/// (recovery::Answer::MarkComplete).
async fn recover_leader(
    cfg: &Config,
    source: &Config,
    plan: &Plan,
    engine: &Engine,
    opts: &RestoreOptions,
    fetched: Option<tokio::sync::oneshot::Sender<()>>,
    phases: &mut Phases,
) -> Result<Recovered> {
    let volume = &plan.volumes.iter().find(|v| v.host == plan.restore_host).expect("planned").new;
    let fetch = Fetch {
        backup: &plan.backup.name,
        target: &opts.target,
        timeline: &opts.timeline,
        fetched,
    };
    let recovered = match recover::run(cfg, source, engine, volume, Mode::Restore, Some(fetch)).await {
        Ok(r) => r,
        Err(e) => {
            let removed = volumes::remove(engine, volume).await.is_ok();
            return Err(RecoveryFailed(format!("{e:#}\n{}", after_failure(cfg, plan, opts, removed))).into());
        }
    };
    phases.sub(&recovered.phases);
    output::step(format!(
        "{}: recovered to {} on timeline {} (last transaction replayed: {})",
        plan.restore_host,
        recovered.lsn,
        recovered.timeline,
        recovered.last_replayed.as_deref().unwrap_or("none")
    ));
    Ok(recovered)
}

/// Starts the cluster on data that exists on `leader_host` only: a clean DCS scope, that
/// member alone until it leads, then the others on new, empty volumes (copying the leader).
pub async fn start_cluster(
    cfg: &Config,
    leader_host: &str,
    replicas: &[(&Engine, &str)],
    timeout: Duration,
    phases: &mut Phases,
) -> Result<ClusterStatus> {
    replicas::create_volumes(cfg, replicas).await?;
    let first = up::First {
        host: leader_host.to_string(),
        led_at: Default::default(),
        others_ready: None,
    };
    let opts = UpOptions {
        clear_scope: true,
        ..UpOptions::new(timeout)
    };
    start_first(cfg, first, &opts, phases).await
}

/// Starts `first` alone on a cleared DCS scope (the DCS started first where it does not run: a
/// migration's new hosts), the others once it leads.
async fn start_first(cfg: &Config, first: up::First, opts: &UpOptions, phases: &mut Phases) -> Result<ClusterStatus> {
    phases.start("start the leader");
    let led_at = first.led_at.clone();
    let status = up::converge_members(cfg, opts, &Members::LeaderFirst(first))
        .await
        .context("the cluster after the restore")?;
    // The downtime ends when the leader leads: the replicas' part is a phase of its own.
    if let Some(at) = led_at.get() {
        phases.split_at(*at, "rebuild the replicas");
    }
    Ok(status)
}

/// What is intact after a failed fetch or recovery, and the ways forward.
fn after_failure(cfg: &Config, plan: &Plan, opts: &RestoreOptions, removed: bool) -> String {
    let hosts = cfg.hosts_path.display();
    let kept: Vec<String> = plan
        .volumes
        .iter()
        .filter_map(|v| v.current.as_ref().filter(|_| opts.keep_old).map(|c| format!("{}:{c}", v.host)))
        .collect();
    let mut out = String::from("The cluster is stopped.");
    if !kept.is_empty() {
        out.push_str(&format!(" The old data volumes are intact ({}).", kept.join(", ")));
    }
    if !removed {
        out.push_str(&format!(
            " The partial restore volume on {} could not be removed; a retry discards it.",
            plan.restore_host
        ));
    }
    out.push_str(&format!("\n  Retry:   pgctl restore --hosts {hosts} ... (the same target)"));
    if opts.keep_old {
        out.push_str(&format!("\n  Go back: pgctl up --hosts {hosts}   (starts the old data as it was)"));
    } else {
        out.push_str("\n  The old data volumes were deleted (--no-keep-old): the backups in S3 are the way back.");
    }
    out
}

/// Asks the leader to finish its WAL segment and waits (briefly) until it is archived, so a
/// restore to the latest point loses nothing committed before it began.
pub(crate) async fn archive_current_wal(leader: &Engine) {
    let switched = member::psql(leader, "SELECT pg_walfile_name(pg_switch_wal())").await;
    let Ok(segment) = switched.map(|s| s.trim().to_string()) else {
        return;
    };
    // Archiving a segment takes a fraction of a second: looked at often, since the cluster
    // stops only after it.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let archived = member::psql(leader, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver").await;
        if archived.is_ok_and(|a| a.trim() >= segment.as_str()) {
            output::step(format!(
                "{}: WAL up to {segment} is archived ({:.1} s)",
                leader.host,
                started.elapsed().as_secs_f64()
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    output::warn(format!(
        "{}: segment {segment} was not archived within 60 s; the restore uses what the archive holds",
        leader.host
    ));
}

/// Stops Patroni on every member and removes the containers (their restart policy would bring
/// them back; `up` recreates them on the new volumes).
pub async fn stop_members(cfg: &Config, engines: &[Engine]) -> Result<()> {
    for line in stop_members_leaving(cfg, engines).await?.wait().await? {
        output::step(line);
    }
    Ok(())
}

/// `stop_members`, returning once the leader's PostgreSQL has exited and the replicas are down
/// but for a synchronous standby, their containers removed: the Patroni still going down (the
/// leader's, a synchronous standby's; see `teardown::stop_patroni_leaving`) is stopped, and
/// its container removed, by what it returns.
async fn stop_members_leaving(cfg: &Config, engines: &[Engine]) -> Result<crate::cluster::teardown::Going> {
    let (done, going) = crate::cluster::teardown::stop_patroni_leaving(cfg, engines).await?;
    for line in done {
        output::step(line);
    }
    let stopped: Vec<&Engine> = engines.iter().filter(|e| !going.has(&e.host)).collect();
    remove_patroni(&stopped).await?;
    Ok(going)
}

async fn remove_patroni(engines: &[&Engine]) -> Result<()> {
    let removed = futures_util::future::join_all(engines.iter().map(|e| docker::remove_container(&e.docker, PATRONI))).await;
    removed.into_iter().collect::<Result<Vec<_>>>()?;
    Ok(())
}
