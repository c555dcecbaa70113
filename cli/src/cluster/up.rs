//! `pgctl up`: converge every host to hosts.toml. Pre-flight on all hosts first (engines,
//! image, ports, foreign containers, stale DCS state); then the DCS; then Patroni; then wait
//! for one leader and streaming replicas. A second run with nothing changed recreates nothing:
//! each container carries a hash of what defines it.

use super::host_plan::{is_access_or_monitoring, plan_host, Action, HostPlan};
use super::newcomers;
pub use super::newcomers::{volume_system_id, First};
use super::spec;
use super::status::ClusterStatus;
pub use super::wait::wait_healthy;
pub(crate) use super::wait::{wait_member_leading, wait_member_running};
use crate::config::{Config, HostConfig};
use crate::docker::{self, spec::ContainerSpec, Engine, FileSpec};
use crate::layout::{self, LABEL_CLUSTER, LABEL_CONFIG_HASH, LABEL_ROLE, PATRONI};
use crate::{dcs, member, output};
use anyhow::{bail, Context, Result};
use bollard::models::{ContainerCreateBody, HostConfig as DockerHostConfig, RestartPolicy, RestartPolicyNameEnum};
use futures_util::future::join_all;
use std::collections::HashMap;
use std::time::{Duration, Instant};

pub struct UpOptions {
    /// Converge only these hosts (the others must still be reachable: they hold the DCS).
    pub limit: Vec<String>,
    pub timeout: Duration,
    /// Replication lag (bytes) under which a replica counts as caught up.
    pub max_lag: u64,
    /// The caller has just checked the backup repository, emptied the DCS scope, stopped the
    /// members whose ports new containers take and made their volumes itself (a restore in
    /// place): the S3 pre-flight, the port check, the volume reads and the stale-scope and
    /// archive checks are skipped.
    pub checked: bool,
    /// The cluster's DCS scope is emptied once the DCS is healthy, before any Patroni starts
    /// (a restore's: neither the old members' keys nor their leader lock meet the restored
    /// data). Meanwhile the pre-flight reads the hosts.
    pub clear_scope: bool,
}

impl UpOptions {
    pub fn new(timeout: Duration) -> UpOptions {
        UpOptions {
            limit: vec![],
            timeout,
            max_lag: layout::MAX_LAG_BYTES,
            checked: false,
            clear_scope: false,
        }
    }
}

/// Which Patroni members a converge starts, and in which order. A restore starts the restored
/// leader first and the rest once it leads; `up` starts every member at once.
#[derive(Debug, Clone)]
pub enum Members {
    All,
    /// Patroni everywhere: this host's new member alone first (it holds the data: a restore's
    /// or a migration's), the other new members once it leads. Started together, members with
    /// empty volumes and no leader in the DCS would race it to bootstrap a new, empty cluster.
    LeaderFirst(First),
}

impl Members {
    /// The member started alone first.
    fn first(&self) -> Option<&First> {
        match self {
            Members::LeaderFirst(first) => Some(first),
            _ => None,
        }
    }
}

/// `pgctl up`: converges every member and waits for a healthy cluster.
pub async fn up(cfg: &Config, opts: &UpOptions) -> Result<ClusterStatus> {
    converge_members(cfg, opts, &Members::All).await
}

/// Converges the DCS and the Patroni `members`, then waits until they are healthy.
pub async fn converge_members(cfg: &Config, opts: &UpOptions, members: &Members) -> Result<ClusterStatus> {
    let started = Instant::now();
    let mut phases = output::Phases::quiet();
    phases.start("pre-flight (engines, image, containers, ports, S3)");
    let engines = docker::connect_all(cfg).await?;
    let by_host: HashMap<&str, &Engine> = engines.iter().map(|e| (e.host.as_str(), e)).collect();
    let targets: Vec<&HostConfig> = cfg
        .hosts
        .hosts
        .iter()
        .filter(|h| opts.limit.is_empty() || opts.limit.contains(&h.name))
        .collect();
    for name in &opts.limit {
        if cfg.host(name).is_none() {
            bail!("--limit {name}: no such host in {}", cfg.hosts_path.display());
        }
    }

    tracing::debug!("engines connected at {:.2}s", started.elapsed().as_secs_f64());
    // A scope to clear goes while the hosts are read, where the DCS runs already (a stopped
    // cluster's does); otherwise (a migration's new hosts) once the DCS has started.
    let early_clear = engines
        .iter()
        .find(|e| dcs::is_voter(cfg, &e.host))
        .filter(|_| opts.clear_scope)
        .map(|engine| {
            let (cfg, engine) = (cfg.clone(), engine.clone());
            tokio::spawn(async move { dcs::remove_scope(&cfg, &engine, &cfg.hosts.cluster.name).await })
        });
    let image_id = ensure_image(cfg, &engines, &targets).await?;
    let manifest = crate::image::manifest(&engines[0], &cfg.hosts.cluster.image).await?;
    let image = spec::ImageFacts::from_manifest(&image_id, &manifest);
    let target_engines: Vec<&Engine> = targets.iter().map(|h| by_host[h.name.as_str()]).collect();
    crate::monitor::ensure_images(cfg, &target_engines, &image_id).await?;
    super::extensions::check_image(cfg, &image)?;
    let owner = crate::image::postgres_owner(&manifest, &cfg.hosts.cluster.image)?;
    if let Some(why) = crate::image::missing_dcs(cfg, &manifest, &cfg.hosts.cluster.image) {
        bail!(why);
    }
    tracing::debug!("images checked at {:.2}s", started.elapsed().as_secs_f64());

    // Pre-flight: classify every container on every target host; collect every problem.
    let mut plans = Vec::new();
    let mut problems = Vec::new();
    let checks = targets
        .iter()
        .map(|h| plan_host(cfg, h, by_host[h.name.as_str()], &image, true, !opts.checked));
    // The backup repository, from this machine with both keys, meanwhile.
    let s3_check = async {
        match cfg.hosts.backup.is_some() && !opts.checked {
            true => crate::s3::preflight(cfg).await.map(Some),
            false => Ok(None),
        }
    };
    let (results, s3) = tokio::join!(join_all(checks), s3_check);
    tracing::debug!("hosts planned at {:.2}s", started.elapsed().as_secs_f64());
    for result in results {
        match result {
            Ok(plan) => plans.push(plan),
            Err(e) => problems.push(format!("{e:#}")),
        }
    }
    if !problems.is_empty() {
        return Err(crate::error::refused(format!(
            "pre-flight failed; nothing was changed:\n  {}",
            problems.join("\n  ")
        )));
    }

    if let Some(line) = s3.context("pre-flight; nothing was changed")? {
        output::step(line);
    }
    phases.start("DCS converged and healthy; new members' volumes, the DCS scope and the archive checked");

    // The DCS first, on every host that has a member of it; what the new members' data volumes
    // hold, and which system's WAL the archive holds, are read meanwhile.
    let dcs_engines: Vec<&Engine> = engines.iter().filter(|e| dcs::is_voter(cfg, &e.host)).collect();
    let dcs_ready = async {
        converge(cfg, &plans, owner, |_, s| layout::is_dcs(s.name), &[]).await?;
        output::step(dcs::wait_healthy(cfg, &dcs_engines, opts.timeout).await?);
        tracing::debug!("DCS healthy at {:.2}s", started.elapsed().as_secs_f64());
        let prepared = dcs::prepare(cfg, &dcs_engines).await?;
        if !prepared.is_empty() {
            output::step(&prepared);
        }
        if opts.clear_scope {
            let cleared_early = match early_clear {
                Some(clearing) => match clearing.await {
                    Ok(Ok(())) => true,
                    failed => {
                        tracing::debug!("clearing the DCS scope before the DCS converged: {failed:?}");
                        false
                    }
                },
                None => false,
            };
            if !cleared_early {
                let engine = dcs_engines.first().context("no DCS member to clear the cluster's scope in")?;
                dcs::remove_scope(cfg, engine, &cfg.hosts.cluster.name).await?;
            }
            output::step(format!("DCS scope `{}` cleared", cfg.hosts.cluster.name));
        }
        // What the scope records, for the stale-scope check once the volumes are read.
        match dcs_engines.first().filter(|_| !opts.checked) {
            Some(engine) => dcs::initialize_key(cfg, engine, &cfg.hosts.cluster.name).await,
            None => Ok(None),
        }
    };
    let volumes_read = newcomers::new_members(cfg, &plans, !opts.checked);
    let gets_new_member = plans.iter().find(|p| p.creates(PATRONI)).map(|p| p.engine);
    let archive_read = async {
        match gets_new_member.filter(|_| !opts.checked) {
            Some(engine) => {
                let read = newcomers::archive_system_id(cfg, engine).await;
                tracing::debug!("archive read at {:.1}s", started.elapsed().as_secs_f64());
                read
            }
            None => Ok(None),
        }
    };
    // All three end before any error is reported: none is dropped halfway through a change.
    let (initialized, new, archive) = tokio::join!(dcs_ready, volumes_read, archive_read);
    let initialized = initialized?;
    let new = new?;
    let archive = archive?;

    if !opts.checked {
        // A stale scope is the problem named first when both are found.
        newcomers::check_stale_scope(cfg, &new, initialized.as_deref())?;
        newcomers::check_archive_prefix(cfg, &new, archive.as_deref())?;
    }
    phases.start("Patroni, access and monitoring containers");

    // A new cluster (or a restored one): one member leads before the others start, so they
    // find its leader key at their first loop instead of waiting a `loop_wait` for it.
    let first = newcomers::start_leader_first(cfg, &new, members.first(), owner, opts.timeout).await?;
    // A new cluster's leader is known before its replicas join: its backup repository,
    // extensions and database objects are set up while they do. Not in strict synchronous
    // mode: there the leader's writes wait for a synchronous standby.
    let strict = cfg.hosts.cluster.patroni.synchronous_mode_strict;
    let early = first
        .as_ref()
        .filter(|_| !strict)
        .and_then(|h| engines.iter().find(|e| &e.host == h));
    let leader_setup = async {
        match early {
            Some(leader) => set_up_leader(cfg, leader).await.map(Some),
            None => Ok(None),
        }
    };
    let rest = async {
        // Patroni: replicas before the leader when containers must be recreated.
        let leader = member::leader(cfg, &engines).await.ok();
        if let Some(leader) = leader.filter(|_| first.is_none()) {
            newcomers::create_slots(&new, leader).await;
        }
        let leader = leader.map(|e| e.host.clone());
        // Every member is new when one was started first (a new or restored cluster): all run.
        let others = |_: &HostPlan, s: &ContainerSpec| s.name == PATRONI && first.is_none();
        converge(cfg, &plans, owner, others, &leader.into_iter().collect::<Vec<_>>()).await?;
        // How applications reach the members (HAProxy, PgBouncer, the virtual IP) and monitoring.
        converge(cfg, &plans, owner, |_, s| is_access_or_monitoring(s.name), &[]).await?;
        reload_live_files(&plans, owner).await?;
        remove_dropped(&plans).await?;
        phases.start("leader elected, replicas streaming");
        // (A member alone has no standby to wait for.)
        let first = first.as_ref().filter(|_| new.volumes.len() > 1);
        let first = first.and_then(|h| engines.iter().find(|e| &e.host == h));
        super::wait::wait_healthy_after_first(cfg, &engines, opts, first).await
    };
    // Either failing ends `up` at once (a re-run converges what is left).
    let (set_up_early, status) = tokio::try_join!(leader_setup, rest)?;
    if set_up_early.is_none() {
        phases.start("backup repository, extensions, database objects");
        // A standby cluster is read-only until promoted: no repository to create, no extensions.
        let writable = status.leader.as_ref().filter(|_| !status.standby);
        if let Some(leader) = writable.and_then(|l| engines.iter().find(|e| &e.host == l)) {
            set_up_leader(cfg, leader).await?;
        }
    }
    output::step(format!(
        "cluster `{}` converged in {:.1}s ({})",
        cfg.hosts.cluster.name,
        started.elapsed().as_secs_f64(),
        output::phases_inline(&phases.finish())
    ));
    Ok(status)
}

/// On a writable leader: the backup repository, the extensions of hosts.toml, and the
/// database objects PgBouncer and monitoring log in with.
async fn set_up_leader(cfg: &Config, leader: &Engine) -> Result<()> {
    crate::backup::init_repository(cfg, leader).await?;
    for line in super::extensions::ensure(cfg, leader).await? {
        output::step(line);
    }
    if let Some(line) = crate::proxy::pgbouncer::ensure_database_objects(cfg, leader).await? {
        output::step(line);
    }
    if let Some(line) = crate::monitor::ensure_database_objects(cfg, leader).await? {
        output::step(line);
    }
    Ok(())
}

/// Every target host must have the cluster's image; missing ones get it as `image push` does.
pub async fn ensure_image(cfg: &Config, engines: &[Engine], targets: &[&HostConfig]) -> Result<String> {
    let image = &cfg.hosts.cluster.image;
    let ids = join_all(engines.iter().map(|e| docker::image_id(&e.docker, image))).await;
    let mut missing = Vec::new();
    let mut seen = None;
    for (engine, id) in engines.iter().zip(ids) {
        match id? {
            Some(id) => seen = Some(id),
            None if targets.iter().any(|t| t.name == engine.host) => {
                missing.push(cfg.host(&engine.host).expect("connected hosts are configured"))
            }
            None => {}
        }
    }
    if !missing.is_empty() {
        output::step(format!("delivering {image} to {} host(s) that lack it", missing.len()));
        let outcomes = crate::image::push::push(cfg, image, &missing).await?;
        if let Some(bad) = outcomes.iter().find(|o| o.result == "failed") {
            bail!(
                "image {image} could not be delivered to {}: {}; nothing else was changed",
                bad.host,
                bad.error.clone().unwrap_or_default()
            );
        }
        seen = docker::image_id(
            &engines.iter().find(|e| e.host == missing[0].name).expect("connected").docker,
            image,
        )
        .await?;
    }
    seen.with_context(|| format!("no host has image {image}"))
}

/// Removes the access and monitoring containers whose role was taken away in hosts.toml
/// (stopped gracefully first, so HAProxy and PgBouncer finish what they carry).
async fn remove_dropped(plans: &[HostPlan<'_>]) -> Result<()> {
    for plan in plans {
        for name in &plan.dropped {
            output::step(format!(
                "{}: `{name}` is no longer in hosts.toml: removing it (volumes kept)",
                plan.host.name
            ));
            docker::stop_and_remove(&plan.engine.docker, name)
                .await
                .with_context(|| format!("{}: removing {name}", plan.host.name))?;
        }
    }
    Ok(())
}

/// Running containers whose `live` files changed (HAProxy's member list): the new files are
/// uploaded and the program reloads them on its signal, keeping the sessions it carries.
async fn reload_live_files(plans: &[HostPlan<'_>], owner: (u64, u64)) -> Result<()> {
    for plan in plans {
        for (s, action) in &plan.items {
            let Some(signal) = s.reload_signal.filter(|_| *action == Action::Keep) else {
                continue;
            };
            let mut changed = Vec::new();
            for f in s.files.iter().filter(|f| f.live) {
                let current = docker::exec(&plan.engine.docker, s.name, &["cat", &f.path], None).await?;
                if current.stdout != f.contents {
                    changed.push(f.upload(owner));
                }
            }
            if changed.is_empty() {
                continue;
            }
            docker::upload(&plan.engine.docker, s.name, &changed).await?;
            docker::signal(&plan.engine.docker, s.name, signal).await?;
            output::step(format!(
                "{}: `{}` configuration changed: reloaded ({signal})",
                plan.host.name, s.name
            ));
        }
    }
    Ok(())
}

/// Creates/recreates/starts the containers `select` picks, host by host. Recreations of
/// Patroni go one host at a time with the current leader last.
async fn converge(
    cfg: &Config,
    plans: &[HostPlan<'_>],
    owner: (u64, u64),
    select: impl Fn(&HostPlan, &ContainerSpec) -> bool,
    leader_last: &[String],
) -> Result<()> {
    let mut fresh = Vec::new();
    let mut rolling = Vec::new();
    for plan in plans {
        for (s, action) in plan.items.iter().filter(|(s, _)| select(plan, s)) {
            match action {
                Action::Keep => {}
                Action::Recreate => rolling.push((plan, s, *action)),
                _ => fresh.push((plan, s, *action)),
            }
        }
    }
    // New etcd members are created together and started one after another: etcd 3.4 asks each
    // peer of a new cluster whether it was already bootstrapped, and a peer that listens but
    // does not serve yet (it is asking too) keeps it waiting a second: 2 s when all start at once.
    let (new_etcd, fresh): (Vec<_>, Vec<_>) = fresh
        .into_iter()
        .partition(|(_, s, action)| s.name == layout::ETCD && *action == Action::Create);
    let created = join_all(new_etcd.iter().map(|(plan, s, _)| async move {
        output::step(format!("{}: creating `{}`", plan.host.name, s.name));
        create(cfg, plan, s, owner).await
    }));
    let applied = join_all(fresh.iter().map(|(plan, s, action)| apply(cfg, plan, s, *action, owner)));
    let (created, applied) = tokio::join!(created, applied);
    created.into_iter().chain(applied).collect::<Result<Vec<()>>>()?;
    for (plan, s, _) in &new_etcd {
        start(plan, s).await?;
    }
    rolling.sort_by_key(|(plan, ..)| leader_last.contains(&plan.host.name));
    for (plan, s, action) in rolling {
        output::step(format!(
            "{}: configuration of `{}` changed: recreating it (data volume kept)",
            plan.host.name, s.name
        ));
        apply(cfg, plan, s, action, owner).await?;
        if s.name == PATRONI {
            wait_member_running(plan.engine, Duration::from_secs(180)).await?;
        }
    }
    Ok(())
}

pub(crate) async fn apply(cfg: &Config, plan: &HostPlan<'_>, s: &ContainerSpec, action: Action, owner: (u64, u64)) -> Result<()> {
    let docker = &plan.engine.docker;
    let host = &plan.host.name;
    if action == Action::Start {
        output::step(format!("{host}: starting `{}`", s.name));
        // Files rendered from other hosts' state (HAProxy's member list) may have changed
        // while the container was stopped; its hash does not cover them.
        let live: Vec<FileSpec> = s.files.iter().filter(|f| f.live).map(|f| f.upload(owner)).collect();
        if !live.is_empty() {
            docker::upload(docker, s.name, &live).await?;
        }
        return start(plan, s).await;
    }
    match action {
        Action::Recreate | Action::RecreateStopped => {
            if action == Action::RecreateStopped {
                output::step(format!(
                    "{host}: configuration of stopped `{}` changed: recreating it (data volume kept)",
                    s.name
                ));
            }
            docker::stop_and_remove(docker, s.name).await?;
        }
        _ => output::step(format!("{host}: creating `{}`", s.name)),
    }
    create(cfg, plan, s, owner).await?;
    start(plan, s).await
}

async fn start(plan: &HostPlan<'_>, s: &ContainerSpec) -> Result<()> {
    plan.engine
        .docker
        .start_container(s.name, None)
        .await
        .with_context(|| format!("{}: starting {}", plan.host.name, s.name))
}

/// Creates the container `s` (and its volume) on the plan's host with its files, not started.
pub(crate) async fn create(cfg: &Config, plan: &HostPlan<'_>, s: &ContainerSpec, owner: (u64, u64)) -> Result<()> {
    let docker = &plan.engine.docker;
    let scope = &cfg.hosts.cluster.name;
    let labels = HashMap::from([
        (LABEL_CLUSTER.to_string(), scope.clone()),
        (LABEL_ROLE.to_string(), s.name.to_string()),
    ]);
    if let Some(m) = &s.volume {
        docker::ensure_volume(docker, &m.volume, labels.clone()).await?;
    }
    let mut container_labels = labels;
    container_labels.insert(LABEL_CONFIG_HASH.into(), s.hash.clone());
    let is_patroni = s.name == PATRONI;
    let body = ContainerCreateBody {
        image: Some(s.image.clone().unwrap_or_else(|| cfg.hosts.cluster.image.clone())),
        cmd: Some(s.cmd.clone()),
        labels: Some(container_labels),
        // PostgreSQL needs time for a clean shutdown checkpoint.
        stop_timeout: is_patroni.then_some(60),
        host_config: Some(DockerHostConfig {
            network_mode: Some("host".into()),
            binds: s.volume.as_ref().map(|m| vec![format!("{}:{}", m.volume, m.target)]),
            cap_add: (!s.cap_add.is_empty()).then(|| s.cap_add.iter().map(|c| c.to_string()).collect()),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                ..Default::default()
            }),
            shm_size: is_patroni.then_some(256 * 1024 * 1024),
            extra_hosts: (!s.extra_hosts.is_empty()).then(|| s.extra_hosts.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    docker::create_container(docker, s.name, body).await?;
    let files: Vec<FileSpec> = s.files.iter().map(|f| f.upload(owner)).collect();
    docker::upload(docker, s.name, &files).await
}
