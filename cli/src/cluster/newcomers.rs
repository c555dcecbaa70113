//! Before `up` creates Patroni members: what their data volumes already hold, and whether the
//! DCS scope and the S3 archive prefix fit them (a stale scope or another system's WAL would
//! make Patroni wait forever or mix two clusters' timelines).

use super::host_plan::{Action, HostPlan};
use crate::config::Config;
use crate::dcs;
use crate::docker::spec::ContainerSpec;
use crate::docker::{self, Engine};
use crate::layout::{self, DATA_MOUNT, PATRONI};
use crate::{member, output};
use anyhow::{Context, Result};
use bollard::models::HostConfig as DockerHostConfig;
use futures_util::future::join_all;
use std::time::Duration;

/// System identifier of the data in a Patroni data volume, `None` when it holds no cluster.
pub async fn volume_system_id(engine: &Engine, image: &str, volume: &str) -> Result<Option<String>> {
    // Mounting a missing volume would create it (unlabeled, so `remove --volumes` would miss it).
    match engine.docker.inspect_volume(volume).await {
        Ok(_) => {}
        Err(e) if docker::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("{}: inspecting volume {volume}", engine.host)),
    }
    let script = format!(
        "test -e {marker} -o -e {copy} && {{ echo incomplete; exit 0; }}; test -f {pgdata}/PG_VERSION || exit 0; pg_controldata {pgdata} | sed -n 's/^Database system identifier: *//p'",
        marker = layout::INCOMPLETE_MARKER,
        copy = layout::PREFETCH_MARKER,
        pgdata = layout::PGDATA
    );
    let host_config = DockerHostConfig {
        binds: Some(vec![format!("{volume}:{DATA_MOUNT}")]),
        ..Default::default()
    };
    let out = docker::run_once(&engine.docker, image, &["sh", "-c", &script], host_config, Some("postgres"), &[]).await?;
    let id = out.ok(&format!("reading volume {volume} on {}", engine.host))?.trim().to_string();
    if id == "incomplete" {
        return Err(crate::error::refused(format!(
            "{}: data volume {volume} holds a restore (or a replica's copy for one) that was interrupted; nothing was started. Run the same `pgctl restore` again to retry it (the partial copy is discarded), or `pgctl restore --rollback` to go back to the previous data",
            engine.host
        )));
    }
    Ok((!id.is_empty()).then_some(id))
}

/// An existing member is recreated onto data volume `to`, newer than the `from` it mounts: only
/// when `to` holds data. A restore makes the new generation while the members' containers may
/// still be going down; interrupted there, it leaves a container behind and a volume that is
/// empty (refused here) or partial (refused by `volume_system_id`). Either would otherwise come
/// up as a member without the cluster's data.
async fn check_move(cfg: &Config, p: &HostPlan<'_>, from: &str, to: &str) -> Result<()> {
    if volume_system_id(p.engine, &cfg.hosts.cluster.image, to).await?.is_some() {
        return Ok(());
    }
    let host = &p.host.name;
    Err(crate::error::refused(format!(
        "{host}: its Patroni container mounts data volume {from}, and the newer {to} it would move to is empty: a restore was interrupted before it filled it. Nothing was started. Run the same `pgctl restore` again, or remove the empty volume on {host} (`docker volume rm {to}`) to go on with the data in {from}"
    )))
}

/// The member a `Members::LeaderFirst` converge starts alone first.
#[derive(Debug, Clone)]
pub struct First {
    pub host: String,
    /// Set when it leads (a restore's downtime ends there).
    pub led_at: std::sync::Arc<std::sync::OnceLock<std::time::Instant>>,
    /// Opens once the other members' data volumes are ready to be mounted (a restore's
    /// replicas take their copies of the backup while the leader starts): their containers are
    /// created and started after it (`None`: ready).
    pub others_ready: Option<OthersReady>,
}

/// `Some(Ok)` once the other members' volumes are ready; `Some(Err)` says why they are not.
pub type OthersReady = tokio::sync::watch::Receiver<Option<Result<(), String>>>;

/// Patroni members `up` is about to create, with the system identifier their data volumes
/// already hold (a volume left by `remove` without `--volumes` comes back with its data).
pub(crate) struct NewMembers<'a> {
    /// Each new member's host plan, its data volume, and the system identifier it holds.
    pub volumes: Vec<(&'a HostPlan<'a>, String, Option<String>)>,
    /// Every Patroni member is new: this `up` bootstraps (or brings back) the whole cluster.
    whole_cluster: bool,
}

/// Without `read`, what the volumes hold is not read (a restore in place made them). With it, so
/// is the volume an existing member is recreated onto when it is not the one it mounts (see
/// `check_move`).
pub(crate) async fn new_members<'a>(cfg: &Config, plans: &'a [HostPlan<'a>], read: bool) -> Result<NewMembers<'a>> {
    let mut created = Vec::new();
    let mut moved = Vec::new();
    let mut all_new = true;
    for p in plans {
        let Some((s, action)) = p.items.iter().find(|(s, _)| s.name == PATRONI) else {
            continue;
        };
        let volume = &s.volume.as_ref().expect("Patroni has a data volume").volume;
        match action {
            Action::Create => created.push((p, volume.clone())),
            _ => all_new = false,
        }
        if let Some(mounted) = p.patroni_mounts.as_ref().filter(|m| *m != volume) {
            if matches!(action, Action::Recreate | Action::RecreateStopped) {
                moved.push((p, mounted, volume));
            }
        }
    }
    // Every host's volume is read at once (a short-lived container each).
    let created_ids = join_all(created.iter().map(|(p, volume)| async move {
        match read {
            true => volume_system_id(p.engine, &cfg.hosts.cluster.image, volume).await,
            false => Ok(None),
        }
    }));
    let moves = join_all(moved.iter().filter(|_| read).map(|(p, from, to)| check_move(cfg, p, from, to)));
    let (ids, moves) = tokio::join!(created_ids, moves);
    moves.into_iter().collect::<Result<Vec<_>>>()?;
    let mut volumes = Vec::new();
    for ((p, volume), id) in created.into_iter().zip(ids) {
        volumes.push((p, volume, id?));
    }
    // Hosts outside --limit that already run Patroni make this a partial converge.
    let configured = cfg.hosts.hosts.iter().filter(|h| h.has_role(crate::config::Role::Patroni)).count();
    Ok(NewMembers {
        whole_cluster: all_new && volumes.len() == configured && configured > 0,
        volumes,
    })
}

impl NewMembers<'_> {
    /// A new cluster from initdb: every member new, no volume holding data, not a standby
    /// (whose leader copies a whole primary first). `check_stale_scope` has refused a scope
    /// the DCS already holds.
    fn bootstraps_from_scratch(&self, cfg: &Config) -> bool {
        self.whole_cluster && cfg.hosts.standby.is_none() && self.volumes.iter().all(|(_, _, id)| id.is_none())
    }
}

/// For a new cluster, or with `first` (the new member that holds the data of a restore or a
/// migration), starts that member alone (a new cluster's: the first in hosts.toml) and waits
/// until it holds the leader lock (the others' containers are created meanwhile, not started),
/// then, with `others_ready`, once their volumes are ready, starts them and meanwhile creates their
/// replication slots on it (a member streams a second or more after its start: its Patroni
/// starts, then copies the data); every new member then runs. Returns the first member's host.
/// Started together, the others would find no leader and sleep a `loop_wait` before looking
/// again (or, on empty volumes, race it to bootstrap), and would then retry streaming every
/// `wal_retrieve_retry_interval` (5 s) until the leader's next loop created their slots.
pub(crate) async fn start_leader_first(
    cfg: &Config,
    new: &NewMembers<'_>,
    first: Option<&First>,
    owner: (u64, u64),
    timeout: Duration,
) -> Result<Option<String>> {
    let led_at = first.map(|f| &f.led_at);
    let others_ready = first.and_then(|f| f.others_ready.clone());
    // A named first member holds data; otherwise it bootstraps a new cluster.
    let started_how = if first.is_some() {
        "started on its data"
    } else {
        "bootstrapped the new cluster"
    };
    let first = match first.map(|f| f.host.as_str()) {
        // Only a member this converge creates can be started before the others.
        Some(host) => Some(
            new.volumes
                .iter()
                .position(|(p, ..)| p.host.name == host)
                .with_context(|| format!("{host}: its Patroni container exists, so it cannot be started alone first"))?,
        ),
        None if new.bootstraps_from_scratch(cfg) => Some(0),
        None => None,
    };
    let Some(first) = first else {
        return Ok(None);
    };
    let plan = new.volumes[first].0;
    let others: Vec<_> = new
        .volumes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != first)
        .map(|(_, v)| v)
        .collect();
    let bootstrap = async {
        super::up::apply(cfg, plan, patroni_spec(plan), Action::Create, owner).await?;
        super::up::wait_member_leading(plan.engine, timeout).await?;
        if let Some(at) = led_at {
            let _ = at.set(std::time::Instant::now());
        }
        output::step(format!("{}: {started_how} and leads it", plan.host.name));
        anyhow::Ok(())
    };
    // Created while the first member starts (and their volumes are made ready: a container
    // that is not started reads nothing); started once both are done.
    let created = async {
        let created = join_all(others.iter().map(|(p, ..)| async move {
            output::step(format!(
                "{}: creating `{PATRONI}` (started once the first member leads)",
                p.host.name
            ));
            super::up::create(cfg, p, patroni_spec(p), owner).await
        }));
        created.await.into_iter().collect::<Result<Vec<()>>>()?;
        if let Some(mut ready) = others_ready {
            match ready.wait_for(Option::is_some).await.as_deref() {
                Ok(Some(Ok(()))) => {}
                Ok(Some(Err(why))) => anyhow::bail!("the other members' volumes are not ready: {why}"),
                _ => anyhow::bail!("the other members' volumes were never made ready"),
            }
        }
        anyhow::Ok(())
    };
    // The first error ends both (a leader that never leads is not reported only once the
    // others' volumes are ready).
    tokio::try_join!(bootstrap, created)?;
    let starts = others.iter().map(|(p, ..)| async move {
        output::step(format!("{}: starting `{PATRONI}`", p.host.name));
        p.engine
            .docker
            .start_container(PATRONI, None)
            .await
            .with_context(|| format!("{}: starting {PATRONI}", p.host.name))
    });
    let ((), started) = tokio::join!(create_slots(new, plan.engine), join_all(starts));
    started.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(Some(plan.host.name.clone()))
}

fn patroni_spec<'a>(plan: &'a HostPlan<'_>) -> &'a ContainerSpec {
    plan.items
        .iter()
        .find(|(s, _)| s.name == PATRONI)
        .map(|(s, _)| s)
        .expect("a new member has a Patroni spec")
}

/// The new members' replication slots on the leader, made before they start (see
/// `member::create_slots`). Only a shortcut: without them Patroni makes them a loop later.
pub(crate) async fn create_slots(new: &NewMembers<'_>, leader: &Engine) {
    let members: Vec<&str> = new
        .volumes
        .iter()
        .map(|(p, ..)| p.host.name.as_str())
        .filter(|m| *m != leader.host)
        .collect();
    if let Err(e) = member::create_slots(leader, &members).await {
        tracing::debug!("{e:#}");
    }
}

/// The Compose README's problem 8.1: the DCS remembers an initialized scope but the data is
/// gone (or is another cluster's) — Patroni would wait forever "for leader to bootstrap".
/// `initialized` is the system identifier the DCS scope records (`dcs::initialize_key`).
pub(crate) fn check_stale_scope(cfg: &Config, new: &NewMembers<'_>, initialized: Option<&str>) -> Result<()> {
    let scope = &cfg.hosts.cluster.name;
    let Some(initialized) = initialized else { return Ok(()) };
    for (p, volume, id) in &new.volumes {
        if let Some(id) = id.as_deref().filter(|id| *id != initialized) {
            return Err(crate::error::refused(format!(
                "{}: data volume {volume} holds system identifier {id}, but the DCS scope `{scope}` was initialized by system {initialized}: another cluster's data or a stale scope. Nothing was started. If the DCS entry is stale, clear it with:\n  {}",
                p.host.name,
                dcs::clear_command(scope, &cfg.hosts_path.display().to_string())
            )));
        }
    }
    if new.whole_cluster && new.volumes.iter().all(|(_, _, id)| id.is_none()) {
        return Err(crate::error::refused(format!(
            "the DCS already holds cluster `{scope}` (initialized by system {initialized}) but no host has its data: a previous installation left it behind, and Patroni would log \"waiting for leader to bootstrap\" forever (the Compose README's problem 8.1). Nothing was started. Clear the stale scope with:\n  {}",
            dcs::clear_command(scope, &cfg.hosts_path.display().to_string())
        )));
    }
    Ok(())
}

/// The system identifier whose WAL the backup repository holds (`None`: none, or no backup
/// configured), read from `engine`. Also the S3 pre-flight from the hosts: wrong keys, bucket,
/// endpoint or CA fail here, before Patroni starts. Read while the DCS starts (it needs only S3
/// and the image); `check_archive_prefix` judges it once the new members' volumes are known.
pub(crate) async fn archive_system_id(cfg: &Config, engine: &Engine) -> Result<Option<String>> {
    let Some(b) = cfg.hosts.backup.as_ref() else { return Ok(None) };
    crate::backup::list::repository_system_id(cfg, engine, crate::backup::Access::ReadWrite)
        .await
        .with_context(|| {
            format!(
                "pre-flight: the backup repository {}/{} is not usable; nothing was started",
                b.s3_endpoint, b.s3_bucket
            )
        })
}

/// A cluster incarnation never archives into a prefix holding another system's WAL (two
/// clusters in one prefix corrupt each other's timelines): `repo` is what the prefix holds.
pub(crate) fn check_archive_prefix(cfg: &Config, new: &NewMembers<'_>, repo: Option<&str>) -> Result<()> {
    let (Some(b), Some(repo)) = (cfg.hosts.backup.as_ref(), repo) else {
        return Ok(());
    };
    let refuse = |why: String| {
        crate::error::refused(format!(
            "S3 prefix `{}` already holds the WAL archive of database system {repo}, and {why}. Archiving into it would mix two systems' timelines. Patroni was not started. Use a prefix of this cluster's own (backup.s3_prefix), or remove the old archive if it is no longer needed. If this is the same cluster and its data volumes were lost, bring it back from this archive with `pgctl restore`.",
            b.s3_prefix
        ))
    };
    if let Some((p, _, Some(id))) = new.volumes.iter().find(|(_, _, id)| id.as_deref().is_some_and(|id| id != repo)) {
        return Err(refuse(format!("the data volume on {} belongs to system {id}", p.host.name)));
    }
    if new.whole_cluster && new.volumes.iter().all(|(_, _, id)| id.is_none()) {
        return Err(refuse(
            "this `up` would bootstrap a new cluster with a new system identifier".into(),
        ));
    }
    Ok(())
}
