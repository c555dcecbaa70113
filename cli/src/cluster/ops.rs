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

/// Restarts PostgreSQL on `member` (or every member) through Patroni.
pub async fn restart(cfg: &Config, engines: &[Engine], member: Option<&str>, timeout: Duration) -> Result<ClusterStatus> {
    // The members there are (a host of hosts.toml may be out: `node remove`).
    let present: Vec<String> = status::fetch(cfg, engines).await?.members.into_iter().map(|m| m.name).collect();
    let expected = present.len();
    let members = match member {
        Some(m) => vec![m.to_string()],
        None => present,
    };
    for m in &members {
        let (code, text) = member::patroni_api(engine_of(engines, cfg, m)?, "POST", "/restart", &serde_json::json!({})).await?;
        check(code, &text, &format!("restart of {m}"))?;
        crate::output::step(format!("{m}: restarted"));
    }
    wait_for(cfg, engines, timeout, "restart", |s| s.healthy(expected, MAX_LAG_BYTES).is_ok()).await
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
