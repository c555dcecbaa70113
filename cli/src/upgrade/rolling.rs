//! `pgctl upgrade --image TAG`: a new image (a PostgreSQL minor, a Patroni, PostGIS or WAL-G
//! bump) rolled through a running cluster without downtime beyond one switchover.
//!
//! Pre-flight (nothing changes when it fails): the image is on every host and runs the same
//! PostgreSQL major as the cluster, with the same postgres uid; the cluster has a leader, is not
//! paused, every replica streams with lag under the limit. Then host by host, replicas first
//! (asynchronous ones, then the synchronous standby, which first hands its role to another
//! replica with Patroni's `nosync` tag): the host's DCS container, then its Patroni
//! container recreated on the new image, tagged `nofailover` until it streams and has caught
//! up; the cluster must be healthy again (with a synchronous standby in synchronous_mode) before
//! the next host. Then a switchover to an updated replica and the old leader last. Then
//! extensions whose installed version is older than the image's default are updated.
//!
//! hosts.toml gets the new image (the previous file kept as hosts.toml.before-upgrade), so a
//! re-run continues where an interrupted one stopped and `up` keeps what was rolled. When a host
//! fails to come back, it is put back on the old image, hosts.toml is restored, and the command
//! stops: the members not yet reached were never touched.

use crate::cluster::host_plan::{plan_host, Action, HostPlan};
use crate::cluster::ops;
use crate::cluster::spec::ImageFacts;
use crate::cluster::status::{self, ClusterStatus};
use crate::cluster::up;
use crate::config::{Config, HostConfig, Role};
use crate::docker::{self, spec::ContainerSpec, Engine};
use crate::layout::{PATRONI, PATRONI_CONFIG};
use crate::migrate::after::{self, ExtensionUpdate};
use crate::{dcs, error, member, output};
use anyhow::{bail, Context, Result};

/// How long a pre-flight waits for a cluster that is not healthy at first sight (a replica a
/// few MB behind after a burst of writes) before it refuses.
pub(crate) const PREFLIGHT_SETTLE: Duration = Duration::from_secs(30);
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub struct Options {
    pub image: String,
    /// A replica must be within this many bytes of the leader before and after its restart.
    pub max_lag_bytes: u64,
    /// For each wait (a host coming back, the switchover).
    pub timeout: Duration,
}

/// One host's turn.
#[derive(Debug, Serialize)]
pub struct HostStep {
    pub host: String,
    /// Containers to recreate on the new image (empty: already on it).
    pub containers: Vec<String>,
    /// Its member's role when planned (`leader`, `sync_standby`, `replica`; none for a DCS-only host).
    pub role: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Plan {
    pub image: String,
    pub image_id: String,
    pub from_image: String,
    pub postgres: String,
    pub steps: Vec<HostStep>,
    /// Things the user should know before confirming.
    pub notes: Vec<String>,
}

impl Plan {
    pub fn nothing_to_do(&self) -> bool {
        self.steps.iter().all(|s| s.containers.is_empty())
    }
}

#[derive(Debug, Serialize)]
pub struct HostRolled {
    pub host: String,
    pub containers: Vec<String>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Switched {
    pub from: String,
    pub to: String,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Rolled {
    pub image: String,
    pub hosts: Vec<HostRolled>,
    pub switchover: Option<Switched>,
    pub extensions: Vec<ExtensionUpdate>,
    /// The hosts file as it was, when pgctl changed its image.
    pub hosts_file_kept: Option<PathBuf>,
    pub seconds: f64,
    pub status: ClusterStatus,
}

fn engine_of<'a>(engines: &'a [Engine], host: &str) -> Result<&'a Engine> {
    engines
        .iter()
        .find(|e| e.host == host)
        .with_context(|| format!("host {host} is not connected"))
}

/// The configuration with `image` as the cluster's image.
fn with_image(cfg: &Config, image: &str) -> Config {
    let mut out = cfg.clone();
    out.hosts.cluster.image = image.to_string();
    out
}

/// What the image holds, read on one host; refuses an image that cannot replace the current one.
async fn image_facts(cfg: &Config, engines: &[Engine], image: &str) -> Result<(ImageFacts, (u64, u64), String)> {
    let refuse = |why: String| error::refused(format!("pre-flight: {why}; nothing was changed"));
    let mut missing = Vec::new();
    let mut id = None;
    for e in engines {
        match docker::image_id(&e.docker, image).await? {
            Some(i) => id = Some(i),
            None => missing.push(e.host.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(refuse(format!(
            "image {image} is missing on {}: deliver it first (`pgctl image push --image {image}`)",
            missing.join(", ")
        )));
    }
    let id = id.context("no host connected")?;
    let manifest = crate::image::manifest(&engines[0], image).await?;
    let postgres = manifest.get("postgres").cloned().unwrap_or_default();
    let major: u32 = postgres.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major != cfg.hosts.cluster.postgres_major {
        return Err(refuse(format!(
            "image {image} has PostgreSQL {postgres}, the cluster runs {}: a new major needs `pgctl upgrade --pg-major` (pg_upgrade), not a rolling restart",
            cfg.hosts.cluster.postgres_major
        )));
    }
    let owner = crate::image::postgres_owner(&manifest, image)?;
    let old_manifest = crate::image::manifest(&engines[0], &cfg.hosts.cluster.image).await.ok();
    if let Some(old) = old_manifest
        .as_ref()
        .and_then(|m| crate::image::postgres_owner(m, &cfg.hosts.cluster.image).ok())
    {
        if old != owner {
            return Err(refuse(format!(
                "image {image} runs postgres as uid:gid {}:{}, the current image as {}:{}: the data volumes' files would not be readable",
                owner.0, owner.1, old.0, old.1
            )));
        }
    }
    let facts = ImageFacts::from_manifest(&id, &manifest);
    let new_cfg = with_image(cfg, image);
    crate::cluster::extensions::check_image(&new_cfg, &facts).map_err(|e| refuse(format!("{e:#}")))?;
    if let Some(why) = crate::image::missing_dcs(cfg, &manifest, image) {
        return Err(refuse(why));
    }
    Ok((facts, owner, postgres))
}

/// The order hosts are rolled in: hosts without a member, asynchronous replicas, the
/// synchronous standby, the leader.
fn rank(role: Option<&str>) -> u8 {
    match role {
        None => 0,
        Some("replica") => 1,
        Some(r) if member::is_leader_role(r) => 3,
        Some(_) => 2,
    }
}

pub async fn plan(cfg: &Config, engines: &[Engine], opts: &Options) -> Result<Plan> {
    let refuse = |why: String| error::refused(format!("pre-flight: {why}; nothing was changed"));
    let (facts, _, postgres) = image_facts(cfg, engines, &opts.image).await?;
    let status = status::fetch(cfg, engines).await?;
    if status.paused {
        return Err(refuse("the cluster is paused (maintenance mode): `pgctl resume` first".into()));
    }
    if status.standby {
        return Err(refuse(
            "this is a standby cluster: it has no writable leader to switch over; upgrade the primary cluster first and recreate this one with `pgctl up`".into(),
        ));
    }
    let expected = status.members.len();
    let status = status::settled(cfg, engines, expected, opts.max_lag_bytes, PREFLIGHT_SETTLE)
        .await
        .map_err(|u| {
            let summary = u.last.map(|s| s.summary()).unwrap_or_default();
            refuse(format!("the cluster is not healthy ({}); status:\n{summary}", u.why))
        })?;
    let mut notes = Vec::new();
    let pending: Vec<&str> = status
        .members
        .iter()
        .filter(|m| m.pending_restart)
        .map(|m| m.name.as_str())
        .collect();
    if !pending.is_empty() {
        notes.push(format!(
            "{} have settings waiting for a restart: the restart on the new image applies them",
            pending.join(", ")
        ));
    }
    let new_cfg = with_image(cfg, &opts.image);
    let mut steps = Vec::new();
    for host in &cfg.hosts.hosts {
        let engine = engine_of(engines, &host.name)?;
        let plan = plan_host(&new_cfg, host, engine, &facts, host.has_role(Role::Patroni), true)
            .await
            .map_err(|e| refuse(format!("{e:#}")))?;
        let mut containers = Vec::new();
        for (s, action) in &plan.items {
            match action {
                Action::Keep => {}
                Action::Recreate => containers.push(s.name.to_string()),
                Action::Create | Action::Start | Action::RecreateStopped => {
                    return Err(refuse(format!(
                        "{}: container `{}` is not running: bring the cluster to hosts.toml first (`pgctl up`)",
                        host.name, s.name
                    )))
                }
            }
        }
        let role = status
            .members
            .iter()
            .find(|m| m.host == host.name || m.name == host.name)
            .map(|m| m.role.clone());
        steps.push(HostStep {
            host: host.name.clone(),
            containers,
            role,
        });
    }
    steps.sort_by_key(|s| rank(s.role.as_deref()));
    Ok(Plan {
        image: opts.image.clone(),
        image_id: facts.id.clone(),
        from_image: cfg.hosts.cluster.image.clone(),
        postgres,
        steps,
        notes,
    })
}

/// The spec with Patroni's `nofailover` tag on: a member that restarts and catches up must not
/// be promoted meanwhile. Its hash stays the untagged one (what `up` will render).
fn tagged_nofailover(spec: &ContainerSpec) -> ContainerSpec {
    let mut tagged = spec.clone();
    for f in tagged.files.iter_mut().filter(|f| f.path == PATRONI_CONFIG) {
        f.contents = f.contents.replace("\n  nofailover: false\n", "\n  nofailover: true\n");
    }
    tagged
}

/// Waits until Patroni runs in the container, failing fast when the container keeps exiting.
async fn wait_started(engine: &Engine, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        let info = engine.docker.inspect_container(PATRONI, None).await?;
        let restarts = info.restart_count.unwrap_or(0);
        let running = info.state.as_ref().and_then(|s| s.running).unwrap_or(false);
        if restarts > 0 || !running {
            let logs = docker::logs_tail(&engine.docker, PATRONI, 8).await.unwrap_or_default();
            bail!(
                "{}: Patroni on the new image exited (restarted {restarts} time(s)); its last lines:\n{logs}",
                engine.host
            );
        }
        if member::patroni_get(engine, "/patroni").await.is_ok_and(|v| v["state"] == "running") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("{}: Patroni did not report `running` within {}s", engine.host, timeout.as_secs())
}

/// Waits until the cluster is healthy with every member it had (replicas streaming within
/// `max_lag`, a synchronous standby in synchronous_mode).
async fn wait_healthy(cfg: &Config, engines: &[Engine], expected: usize, max_lag: u64, timeout: Duration) -> Result<ClusterStatus> {
    status::settled(cfg, engines, expected, max_lag, timeout)
        .await
        .map_err(|u| anyhow::anyhow!("the cluster was not healthy again within {}s: {}", timeout.as_secs(), u.why))
}

/// Puts back the untagged patroni.yml and has Patroni reload it.
async fn clear_nofailover(spec: &ContainerSpec, engine: &Engine, owner: (u64, u64)) -> Result<()> {
    let files: Vec<_> = spec
        .files
        .iter()
        .filter(|f| f.path == PATRONI_CONFIG)
        .map(|f| f.upload(owner))
        .collect();
    docker::upload(&engine.docker, PATRONI, &files).await?;
    let (code, body) = member::patroni_api(engine, "POST", "/reload", &serde_json::Value::Null).await?;
    if !(200..300).contains(&code) {
        bail!("{}: Patroni refused to reload its configuration (HTTP {code}): {body}", engine.host);
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let tags = member::patroni_get(engine, "/patroni")
            .await
            .map(|v| v["tags"].clone())
            .unwrap_or_default();
        if tags["nofailover"] != true {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("{}: the nofailover tag is still set after the reload", engine.host)
}

/// A synchronous standby about to restart first hands the role to another replica (Patroni's
/// `nosync` tag, set in its running configuration and reloaded), so no commit waits for a member
/// that is down. Skipped when no other replica streams: with no candidate left, the tag would
/// block writes under synchronous_mode_strict (the nosync pitfall).
async fn hand_off_sync(cfg: &Config, engines: &[Engine], engine: &Engine) -> Result<()> {
    let s = status::fetch(cfg, engines).await?;
    if !s.members.iter().any(|m| m.name == engine.host && m.role == "sync_standby") {
        return Ok(());
    }
    let others = s
        .members
        .iter()
        .filter(|m| m.name != engine.host && !member::is_leader_role(&m.role) && m.streaming == Some(true))
        .count();
    if others == 0 {
        output::step(format!(
            "{}: the synchronous standby, and no other replica can take the role: commits wait while it restarts",
            engine.host
        ));
        return Ok(());
    }
    let tag = format!("sed -i 's/^  nosync: false$/  nosync: true/' {PATRONI_CONFIG}");
    docker::exec(&engine.docker, PATRONI, &["sh", "-c", &tag], Some("postgres"))
        .await?
        .ok(&format!("{}: tagging nosync", engine.host))?;
    let (code, body) = member::patroni_api(engine, "POST", "/reload", &serde_json::Value::Null).await?;
    if !(200..300).contains(&code) {
        bail!("{}: Patroni refused to reload its configuration (HTTP {code}): {body}", engine.host);
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(s) = status::fetch(cfg, engines).await {
            let moved = s.members.iter().any(|m| m.name != engine.host && m.role == "sync_standby");
            if moved && !s.members.iter().any(|m| m.name == engine.host && m.role == "sync_standby") {
                output::step(format!("{}: handed the synchronous standby role to another replica", engine.host));
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    output::warn(format!(
        "{}: the synchronous standby role did not move within 60 s; restarting it anyway",
        engine.host
    ));
    Ok(())
}

/// Recreates `plan`'s containers that differ from `cfg` (the DCS first, then Patroni tagged
/// `nofailover` until the cluster is healthy again).
async fn recreate_host(
    cfg: &Config,
    engines: &[Engine],
    plan: &HostPlan<'_>,
    owner: (u64, u64),
    opts: &Options,
    expected: usize,
) -> Result<()> {
    let changed: Vec<&(ContainerSpec, Action)> = plan.items.iter().filter(|(_, a)| *a != Action::Keep).collect();
    if changed.iter().any(|(s, _)| s.name == PATRONI) {
        hand_off_sync(cfg, engines, plan.engine).await?;
    }
    for (spec, action) in changed.iter().filter(|(s, _)| s.name != PATRONI) {
        up::apply(cfg, plan, spec, *action, owner).await?;
        let voters: Vec<&Engine> = engines.iter().filter(|e| dcs::is_voter(cfg, &e.host)).collect();
        dcs::wait_healthy(cfg, &voters, opts.timeout).await?;
    }
    if let Some((spec, action)) = changed.iter().find(|(s, _)| s.name == PATRONI) {
        up::apply(cfg, plan, &tagged_nofailover(spec), *action, owner).await?;
        wait_started(plan.engine, opts.timeout).await?;
        wait_healthy(cfg, engines, expected, opts.max_lag_bytes, opts.timeout).await?;
        clear_nofailover(spec, plan.engine, owner).await?;
    }
    Ok(())
}

/// Rolls `plan`: see the module's comment.
pub async fn execute(cfg: &Config, engines: &[Engine], plan: &Plan, opts: &Options) -> Result<Rolled> {
    let started = Instant::now();
    let (facts, owner, _) = image_facts(cfg, engines, &opts.image).await?;
    let new_cfg = with_image(cfg, &opts.image);
    let expected = status::fetch(cfg, engines).await?.members.len();
    let hosts_file_kept = if cfg.hosts.cluster.image != opts.image {
        let kept = crate::config::edit::set_string(&cfg.hosts_path, "cluster", "image", &opts.image, "before-upgrade")?;
        output::step(format!(
            "{}: image = \"{}\" (the previous file is {})",
            cfg.hosts_path.display(),
            opts.image,
            kept.display()
        ));
        Some(kept)
    } else {
        None
    };
    let mut rolled = Vec::new();
    let mut switched = None;
    for step in plan.steps.iter().filter(|s| !s.containers.is_empty()) {
        let host: &HostConfig = cfg.host(&step.host).context("a planned host")?;
        let engine = engine_of(engines, &host.name)?;
        // The leader moves to an updated replica before its own host is rolled.
        let current = status::fetch(cfg, engines).await?;
        if current.leader.as_deref() == Some(host.name.as_str()) {
            let to = current.members.iter().find(|m| m.role == "sync_standby").map(|m| m.name.clone());
            let moved = Instant::now();
            output::step(format!("{}: switchover to an updated replica before its own turn", host.name));
            let after = ops::switchover(cfg, engines, to.as_deref(), None, opts.timeout)
                .await
                .map_err(|e| stopped(e, &step.host, &rolled, &hosts_file_kept, cfg))?;
            switched = Some(Switched {
                from: host.name.clone(),
                to: after.leader.clone().unwrap_or_default(),
                seconds: moved.elapsed().as_secs_f64(),
            });
        }
        let host_started = Instant::now();
        output::step(format!("{}: {} onto {}", host.name, step.containers.join(" and "), opts.image));
        let host_plan = plan_host(&new_cfg, host, engine, &facts, host.has_role(Role::Patroni), true).await?;
        if let Err(e) = recreate_host(&new_cfg, engines, &host_plan, owner, opts, expected).await {
            output::warn(format!("{}: {e:#}; putting it back on {}", host.name, cfg.hosts.cluster.image));
            let back = async {
                let old_facts = image_facts(cfg, engines, &cfg.hosts.cluster.image).await?.0;
                let old_plan = plan_host(cfg, host, engine, &old_facts, host.has_role(Role::Patroni), true).await?;
                recreate_host(cfg, engines, &old_plan, owner, opts, expected).await
            };
            let restored = back.await;
            return Err(stopped(
                e.context(match restored {
                    Ok(()) => format!("{} is back on {}", host.name, cfg.hosts.cluster.image),
                    Err(r) => format!("{} could not be put back on {} ({r:#})", host.name, cfg.hosts.cluster.image),
                }),
                &step.host,
                &rolled,
                &hosts_file_kept,
                cfg,
            ));
        }
        output::step(format!(
            "{}: on {} in {:.0}s",
            host.name,
            opts.image,
            host_started.elapsed().as_secs_f64()
        ));
        rolled.push(HostRolled {
            host: host.name.clone(),
            containers: step.containers.clone(),
            seconds: host_started.elapsed().as_secs_f64(),
        });
    }
    let leader = member::leader(&new_cfg, engines).await?;
    let extensions = after::update_extensions(leader).await?;
    let status = wait_healthy(&new_cfg, engines, expected, opts.max_lag_bytes, opts.timeout).await?;
    let short: String = facts.id.trim_start_matches("sha256:").chars().take(12).collect();
    let behind: Vec<&str> = status
        .hosts
        .iter()
        .filter(|h| h.reachable && !h.image.is_empty() && h.image != short)
        .map(|h| h.host.as_str())
        .collect();
    if !behind.is_empty() {
        bail!(
            "after the roll, {} still run(s) another image than {}",
            behind.join(", "),
            opts.image
        );
    }
    Ok(Rolled {
        image: opts.image.clone(),
        hosts: rolled,
        switchover: switched,
        extensions,
        hosts_file_kept,
        seconds: started.elapsed().as_secs_f64(),
        status,
    })
}

/// The error a stopped roll ends with: hosts.toml back as it was, and what to do next.
fn stopped(e: anyhow::Error, host: &str, rolled: &[HostRolled], kept: &Option<PathBuf>, cfg: &Config) -> anyhow::Error {
    let restored = match kept {
        Some(k) => match std::fs::copy(k, &cfg.hosts_path) {
            Ok(_) => format!("{} names {} again", cfg.hosts_path.display(), cfg.hosts.cluster.image),
            Err(c) => format!("restoring {} from {} failed: {c}", cfg.hosts_path.display(), k.display()),
        },
        None => String::new(),
    };
    let done: Vec<&str> = rolled.iter().map(|r| r.host.as_str()).collect();
    let before = if done.is_empty() {
        String::new()
    } else {
        format!("; {} already run(s) the new image (`pgctl up` would put it back)", done.join(", "))
    };
    e.context(format!(
        "the rolling upgrade stopped at {host}; the hosts after it were not touched{before}{}{restored}. `pgctl status` shows each host's image; fix the cause and run the same command again",
        if restored.is_empty() { "" } else { "; " }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::spec::File;

    #[test]
    fn replicas_go_before_the_synchronous_standby_and_the_leader_last() {
        let mut roles = vec![Some("leader"), Some("sync_standby"), None, Some("replica")];
        roles.sort_by_key(|r| rank(*r));
        assert_eq!(roles, vec![None, Some("replica"), Some("sync_standby"), Some("leader")]);
    }

    #[test]
    fn the_nofailover_tag_changes_the_file_not_the_hash() {
        let yml = "scope: main\ntags:\n  nofailover: false\n  noloadbalance: false\n".to_string();
        let spec = ContainerSpec::new(
            PATRONI,
            &["patroni", PATRONI_CONFIG],
            "pgdata".into(),
            "/var/lib/postgresql/data",
            vec![File::new(PATRONI_CONFIG, yml, true)],
            "sha256:abc",
            &[],
        );
        let tagged = tagged_nofailover(&spec);
        assert!(tagged.files[0].contents.contains("\n  nofailover: true\n"));
        assert!(spec.files[0].contents.contains("\n  nofailover: false\n"));
        assert_eq!(tagged.hash, spec.hash);
    }
}
