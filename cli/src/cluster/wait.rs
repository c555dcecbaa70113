//! Waiting for members and the cluster to be ready, without sitting out timers Patroni and
//! PostgreSQL would otherwise wait on (see `Nudges`).

use super::status::{self, ClusterStatus};
use super::up::UpOptions;
use crate::config::Config;
use crate::docker::{self, Engine};
use crate::layout::PATRONI;
use crate::{member, output};
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// Pause between two reads while waiting: a read is one exec per host (0.1-0.3 s on a busy
/// engine), so this keeps the delay between a change and `up` seeing it near one read; the
/// waits it ends (a leader, a standby) are what `up` and restores spend most of their time on.
const POLL: Duration = Duration::from_millis(150);

/// Waits until this host's Patroni answers and reports PostgreSQL running.
pub(crate) async fn wait_member_running(engine: &Engine, timeout: Duration) -> Result<()> {
    wait_member(engine, timeout, false).await
}

/// Waits until this host's Patroni holds the leader lock with PostgreSQL running (a new
/// cluster's bootstrap done).
pub(crate) async fn wait_member_leading(engine: &Engine, timeout: Duration) -> Result<()> {
    wait_member(engine, timeout, true).await
}

/// Waits up to `limit` until this host's Patroni has left its HA loop (after a SIGTERM: its
/// REST API, the first thing it shuts, no longer answers); false when it has not. A container
/// that no longer runs has left it.
pub(crate) async fn wait_member_stopped(engine: &Engine, limit: Duration) -> bool {
    let watched = watch_member(engine, limit, "stopped").await;
    tracing::debug!("{}: watching Patroni leave: {watched:?}", engine.host);
    match watched {
        Ok(out) => out.stdout.trim() == "ready",
        Err(_) => !engine
            .docker
            .inspect_container(PATRONI, None)
            .await
            .is_ok_and(|c| c.state.and_then(|s| s.running).unwrap_or(false)),
    }
}

/// One watch from inside the container (compose-templates/scripts/patroni-wait.py): up to
/// `limit` for `want`.
async fn watch_member(engine: &Engine, limit: Duration, want: &str) -> Result<docker::ExecOutput> {
    let script = crate::render::script("patroni-wait.py");
    let secs = format!("{:.1}", limit.as_secs_f64());
    docker::exec_env(&engine.docker, PATRONI, &["python3", "-c", script, &secs, want], None, &[]).await
}

async fn wait_member(engine: &Engine, timeout: Duration, leading: bool) -> Result<()> {
    let started = Instant::now();
    let want = if leading { "leader" } else { "running" };
    while started.elapsed() < timeout {
        // In stretches of at most a minute; an exec that fails (the container is starting) is
        // tried again.
        let left = timeout.saturating_sub(started.elapsed()).min(Duration::from_secs(60));
        match watch_member(engine, left, want).await {
            Ok(out) if out.stdout.trim() == "ready" => return Ok(()),
            Ok(out) if out.stdout.trim() == "limit" => {}
            Ok(out) => {
                tracing::debug!("{}: waiting for Patroni: {}", engine.host, out.stderr.trim());
                tokio::time::sleep(POLL).await;
            }
            Err(e) => {
                tracing::debug!("{}: waiting for Patroni: {e:#}", engine.host);
                tokio::time::sleep(POLL).await;
            }
        }
    }
    bail!(
        "{}: Patroni did not report PostgreSQL running{} within {}s:\n{}",
        engine.host,
        if leading { " as the leader" } else { "" },
        timeout.as_secs(),
        docker::tail_logs(&engine.docker, PATRONI, 20).await
    )
}

/// Waits Patroni and PostgreSQL would sit out on their own timers while `up` waits for them.
#[derive(Default)]
struct Nudges {
    leader_woken: Option<Instant>,
    slots_made: Option<Instant>,
    replicas_woken: Option<Instant>,
    /// Seconds until slots are made and replicas woken again: each doubles every time (a
    /// replica replaying a long archive is not signalled every second), from 1 to 16.
    slots_every: u64,
    replicas_every: u64,
}

impl Nudges {
    async fn apply(&mut self, s: &ClusterStatus, engines: &[Engine]) {
        let due = |at: Option<Instant>, every: u64| at.is_none_or(|w| w.elapsed() > Duration::from_secs(every));
        let leader = s.leader.as_ref().and_then(|l| engines.iter().find(|e| &e.host == l));
        // A replica streams; the leader picks its synchronous standby at its next HA loop, up
        // to `loop_wait` away: wake it (again after 3 s at most).
        if s.awaits_sync_standby() && due(self.leader_woken, 3) {
            if let Some(leader) = leader {
                if let Err(e) = member::wake_ha_loop(leader).await {
                    tracing::debug!("waking the leader's HA loop: {e:#}");
                }
                self.leader_woken = Some(Instant::now());
            }
        }
        // Registered members that do not stream yet get their slot on the leader: Patroni
        // drops the slots of members not registered yet at its first loop as leader (the ones
        // `up` made before they started) and makes them only at its next loop, while a replica
        // without its slot retries only every 5 s. (A slot made this way reserves no WAL until
        // its replica uses it.)
        let not_streaming: Vec<&str> = s
            .members
            .iter()
            .filter(|m| !member::is_leader_role(&m.role) && m.streaming != Some(true))
            .map(|m| m.name.as_str())
            .collect();
        let slots_due = due(self.slots_made, self.slots_every.max(1));
        if let Some(leader) = leader.filter(|_| !not_streaming.is_empty() && slots_due) {
            if let Err(e) = member::create_slots(leader, &not_streaming).await {
                tracing::debug!("{e:#}");
            }
            self.slots_made = Some(Instant::now());
            self.slots_every = (self.slots_every * 2).clamp(1, 16);
        }
        // A replica that runs but does not stream waits up to 5 s before trying again (its
        // slot was missing, or its leader changed timeline): it is woken.
        if due(self.replicas_woken, self.replicas_every.max(1)) {
            let waiting: Vec<&Engine> = s
                .members
                .iter()
                .filter(|m| m.role != "leader" && m.state == "running" && m.streaming != Some(true))
                .filter_map(|m| engines.iter().find(|e| e.host == m.host))
                .collect();
            for replica in &waiting {
                if let Err(e) = member::wake_recovery(replica).await {
                    tracing::debug!("waking {}'s recovery: {e:#}", replica.host);
                }
            }
            if !waiting.is_empty() {
                self.replicas_woken = Some(Instant::now());
                self.replicas_every = (self.replicas_every * 2).clamp(1, 16);
            }
        }
    }
}

/// `wait_healthy` for a cluster whose first member was just started alone and leads (a new or
/// restored one) when it must pick a synchronous standby: the leader is also watched from
/// inside (`member::wake_for_standby`), so it picks one as soon as a replica runs, and the
/// cluster is read again the moment it has recorded one.
pub async fn wait_healthy_after_first(cfg: &Config, engines: &[Engine], opts: &UpOptions, first: Option<&Engine>) -> Result<ClusterStatus> {
    let synchronous = cfg.hosts.cluster.patroni.synchronous_mode && cfg.hosts.standby.is_none();
    let Some(leader) = first.filter(|_| synchronous) else {
        return wait_healthy(cfg, engines, opts).await;
    };
    let started = Instant::now();
    let healthy = wait_healthy(cfg, engines, opts);
    tokio::pin!(healthy);
    let watched = tokio::select! {
        status = &mut healthy => return status,
        // Two minutes at most (the script stops looking then too): a standby that comes later
        // is picked through the wakes of the regular reads.
        watched = member::wake_for_standby(leader, opts.timeout.min(Duration::from_secs(120))) => watched,
    };
    match watched {
        Ok(seen) if seen == "recorded" => {
            let left = UpOptions {
                max_lag: opts.max_lag,
                ..UpOptions::new(opts.timeout.saturating_sub(started.elapsed()))
            };
            wait_healthy(cfg, engines, &left).await
        }
        other => {
            tracing::debug!("watching {} for a synchronous standby: {other:?}", leader.host);
            healthy.await
        }
    }
}

/// Waits for exactly one leader and every other member streaming with lag under the limit.
pub async fn wait_healthy(cfg: &Config, engines: &[Engine], opts: &UpOptions) -> Result<ClusterStatus> {
    let started = Instant::now();
    // Every member that exists (a staged `up` creates some of them later).
    let inspected = futures_util::future::join_all(
        engines
            .iter()
            .filter(|e| cfg.host(&e.host).is_some_and(|h| h.has_role(crate::config::Role::Patroni)))
            .map(|e| e.docker.inspect_container(PATRONI, None)),
    )
    .await;
    let expected = inspected.iter().filter(|i| i.is_ok()).count();
    let mut last = String::new();
    let mut nudges = Nudges::default();
    while started.elapsed() < opts.timeout {
        let read_at = Instant::now();
        let fetched = status::fetch(cfg, engines).await;
        tracing::debug!("cluster read in {:.2}s", read_at.elapsed().as_secs_f64());
        match fetched {
            Ok(s) => match s.healthy(expected, opts.max_lag) {
                Ok(()) => return Ok(s),
                Err(why) => {
                    nudges.apply(&s, engines).await;
                    if why != last {
                        output::step(format!("waiting: {why}"));
                        last = why;
                    }
                }
            },
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(POLL).await;
    }
    let mut logs = String::new();
    for e in engines {
        logs.push_str(&format!("\n--- {} ---\n{}", e.host, docker::tail_logs(&e.docker, PATRONI, 8).await));
    }
    bail!(
        "the cluster did not become healthy within {}s: {last}{logs}",
        opts.timeout.as_secs()
    )
}
