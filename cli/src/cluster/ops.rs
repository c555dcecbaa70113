//! Operations on a running cluster through Patroni's REST API, called from inside a host
//! (so they work when only the Docker endpoint is reachable). Write endpoints need the basic
//! auth from patroni.yml; a small Python client in the container reads it there, so the
//! password never appears on a command line.

use super::status::{self, ClusterStatus};
use crate::config::Config;
use crate::docker::Engine;
use crate::layout::MAX_LAG_BYTES;
use crate::member;
use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

fn engine_of<'a>(engines: &'a [Engine], cfg: &Config, member: &str) -> Result<&'a Engine> {
    // Members are named after their hosts.
    if cfg.host(member).is_none() {
        return Err(crate::error::usage(format!(
            "no member `{member}`: members are the hosts with role patroni ({})",
            patroni_hosts(cfg).join(", ")
        )));
    }
    engines
        .iter()
        .find(|e| e.host == member)
        .with_context(|| format!("host {member} is not connected"))
}

fn patroni_hosts(cfg: &Config) -> Vec<String> {
    cfg.hosts
        .hosts
        .iter()
        .filter(|h| h.has_role(crate::config::Role::Patroni))
        .map(|h| h.name.clone())
        .collect()
}

fn check(code: u16, body: &str, what: &str) -> Result<()> {
    if !(200..300).contains(&code) {
        bail!("{what} refused by Patroni (HTTP {code}): {body}");
    }
    Ok(())
}

/// Waits until `done` holds for the cluster status (polling), up to `timeout`.
async fn wait_for(
    cfg: &Config,
    engines: &[Engine],
    timeout: Duration,
    what: &str,
    done: impl Fn(&ClusterStatus) -> bool,
) -> Result<ClusterStatus> {
    let started = Instant::now();
    let mut last = None;
    while started.elapsed() < timeout {
        if let Ok(s) = status::fetch(cfg, engines).await {
            if done(&s) {
                return Ok(s);
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let table = last.map(|s| s.summary()).unwrap_or_default();
    bail!("{what} did not complete within {}s; current state:\n{table}", timeout.as_secs())
}

/// Planned switchover from the current leader, to `to` (or any healthy replica), now or at `at`.
pub async fn switchover(cfg: &Config, engines: &[Engine], to: Option<&str>, at: Option<&str>, timeout: Duration) -> Result<ClusterStatus> {
    let before = status::fetch(cfg, engines).await?;
    let leader = before
        .leader
        .clone()
        .context("the cluster has no leader: use `pgctl failover --to MEMBER`")?;
    if to == Some(leader.as_str()) {
        return Err(crate::error::refused(format!(
            "{leader} is already the leader; nothing was changed"
        )));
    }
    if let Some(t) = to {
        engine_of(engines, cfg, t)?;
        // In synchronous mode only the synchronous standby has every acknowledged commit.
        let sync: Vec<&str> = before
            .members
            .iter()
            .filter(|m| m.role == "sync_standby")
            .map(|m| m.name.as_str())
            .collect();
        if cfg.hosts.cluster.patroni.synchronous_mode && !sync.contains(&t) {
            return Err(crate::error::refused(format!("synchronous_mode is on: a switchover can only go to the synchronous standby ({}), which has every acknowledged commit; {t} is not it", sync.join(", "))));
        }
    }
    let mut body = serde_json::json!({ "leader": leader });
    if let Some(t) = to {
        body["candidate"] = t.into();
    }
    if let Some(at) = at {
        body["scheduled_at"] = at.into();
    }
    let (code, text) = member::patroni_api(engine_of(engines, cfg, &leader)?, "POST", "/switchover", &body).await?;
    check(code, &text, "switchover")?;
    if at.is_some() {
        crate::output::step(format!("switchover scheduled: {text}"));
        return status::fetch(cfg, engines).await;
    }
    // The members there were before (a host of hosts.toml may be out: `node remove`).
    let expected = before.members.len();
    wait_for(cfg, engines, timeout, "switchover", |s| {
        s.leader.as_deref().is_some_and(|l| l != leader && to.is_none_or(|t| t == l)) && s.healthy(expected, u64::MAX).is_ok()
    })
    .await
}

/// Manual failover to `to` (works without a healthy leader).
pub async fn failover(cfg: &Config, engines: &[Engine], to: &str, timeout: Duration) -> Result<ClusterStatus> {
    let target = engine_of(engines, cfg, to)?;
    let (code, text) = member::patroni_api(target, "POST", "/failover", &serde_json::json!({ "candidate": to })).await?;
    check(code, &text, "failover")?;
    wait_for(cfg, engines, timeout, "failover", |s| s.leader.as_deref() == Some(to)).await
}

/// Rebuilds a replica's data from the leader (the fix for a member that fails to start).
pub async fn reinit(cfg: &Config, engines: &[Engine], member: &str, timeout: Duration) -> Result<ClusterStatus> {
    let before = status::fetch(cfg, engines).await?;
    if before.leader.as_deref() == Some(member) {
        return Err(crate::error::refused(format!(
            "{member} is the leader: switch over first (`pgctl switchover`), then reinit it"
        )));
    }
    let (code, text) = member::patroni_api(
        engine_of(engines, cfg, member)?,
        "POST",
        "/reinitialize",
        &serde_json::json!({ "force": true }),
    )
    .await?;
    check(code, &text, "reinit")?;
    // The member goes through "creating replica" before it streams again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let expected = before.members.len();
    wait_for(cfg, engines, timeout, "reinit", |s| s.healthy(expected, MAX_LAG_BYTES).is_ok()).await
}

/// Which members `restart` restarts.
#[derive(Debug, Clone, Copy)]
pub enum Restart<'a> {
    One(&'a str),
    All,
    /// Those whose PostgreSQL has settings waiting for a restart.
    Pending,
}

/// Restarts PostgreSQL through Patroni, one member at a time (replicas first, the leader last),
/// waiting for a healthy cluster after each. Returns the members restarted.
pub async fn restart(cfg: &Config, engines: &[Engine], which: Restart<'_>, timeout: Duration) -> Result<(Vec<String>, ClusterStatus)> {
    // The members there are (a host of hosts.toml may be out: `node remove`).
    let before = status::fetch(cfg, engines).await?;
    let expected = before.members.len();
    let mut members: Vec<&status::Member> = match which {
        Restart::One(m) => {
            engine_of(engines, cfg, m)?;
            before.members.iter().filter(|x| x.name == m).collect()
        }
        Restart::All => before.members.iter().collect(),
        Restart::Pending => before.members.iter().filter(|m| m.pending_restart).collect(),
    };
    // Replicas first, unless a limit a standby must match is being lowered (then the leader).
    let leader_first = matches!(which, Restart::Pending) && lowers_standby_limits(cfg, engines).await;
    members.sort_by_key(|m| member::is_leader_role(&m.role) != leader_first);
    let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    for m in &names {
        let body = serde_json::json!({ "restart_pending": matches!(which, Restart::Pending) });
        let (code, text) = member::patroni_api(engine_of(engines, cfg, m)?, "POST", "/restart", &body).await?;
        check(code, &text, &format!("restart of {m}"))?;
        let after = wait_for(cfg, engines, timeout, &format!("restart of {m}"), |s| {
            s.healthy(expected, MAX_LAG_BYTES).is_ok()
        })
        .await?;
        crate::output::step(format!(
            "{m}: restarted{}",
            if after.members.iter().any(|x| x.name == *m && x.pending_restart) {
                " (still pending: the value may need the leader's restart first)"
            } else {
                ""
            }
        ));
    }
    Ok((names, status::fetch(cfg, engines).await?))
}

/// Parameters a hot standby needs at least as high as its primary's.
const STANDBY_LIMITS: [&str; 5] = [
    "max_connections",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "max_wal_senders",
    "max_worker_processes",
];

/// Whether the dynamic configuration lowers one of `STANDBY_LIMITS` below what the leader runs
/// with: a replica restarted first would then refuse to start (its value below the primary's).
async fn lowers_standby_limits(cfg: &Config, engines: &[Engine]) -> bool {
    let Ok(leader) = member::leader(cfg, engines).await else {
        return false;
    };
    let Ok(config) = member::patroni_get(leader, "/config").await else {
        return false;
    };
    for name in STANDBY_LIMITS {
        let wanted = &config["postgresql"]["parameters"][name];
        let wanted = wanted.as_i64().or_else(|| wanted.as_str().and_then(|s| s.parse().ok()));
        let running = member::psql(leader, &format!("SELECT setting FROM pg_settings WHERE name = '{name}'")).await;
        if let (Some(w), Ok(r)) = (wanted, running) {
            if r.trim().parse::<i64>().is_ok_and(|r| w < r) {
                return true;
            }
        }
    }
    false
}

/// Maintenance mode on/off: Patroni stops (or resumes) automatic failover.
pub async fn set_pause(cfg: &Config, engines: &[Engine], paused: bool, timeout: Duration) -> Result<ClusterStatus> {
    let s = status::fetch(cfg, engines).await?;
    let any = s
        .leader
        .as_deref()
        .or(s.members.first().map(|m| m.name.as_str()))
        .context("no member answers")?
        .to_string();
    let (code, text) = member::patroni_api(
        engine_of(engines, cfg, &any)?,
        "PATCH",
        "/config",
        &serde_json::json!({ "pause": paused }),
    )
    .await?;
    check(code, &text, if paused { "pause" } else { "resume" })?;
    wait_for(cfg, engines, timeout, if paused { "pause" } else { "resume" }, |s| {
        s.paused == paused
    })
    .await
}
