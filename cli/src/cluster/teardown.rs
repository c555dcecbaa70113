//! `pgctl down` (stop containers, keep everything) and `pgctl remove` (containers and the
//! DCS scope; data volumes only with --volumes).

use crate::config::Config;
use crate::docker::{self, Engine};
use crate::layout::{CONSUL, ETCD, LABEL_CLUSTER, MONITORING, PATRONI, PROXIES};
use anyhow::{Context, Result};
use futures_util::future::join_all;
use std::collections::HashMap;
use std::time::Duration;

/// Stops the proxies (no new sessions) and monitoring, Patroni on replicas first, then the leader, then the
/// DCS. Containers and volumes stay.
pub async fn down(cfg: &Config, engines: &[Engine]) -> Result<Vec<String>> {
    let scope = &cfg.hosts.cluster.name;
    let mut done = stop_all(engines, scope, &[&PROXIES[..], &MONITORING[..]].concat()).await?;
    done.extend(stop_patroni(cfg, engines).await?);
    // The DCS one member at a time: an etcd leader going down hands its leadership to a live
    // member first, and waits up to 7 s for one that is going down at the same moment.
    for e in engines {
        done.extend(stop_all(std::slice::from_ref(e), scope, &[ETCD, CONSUL]).await?);
    }
    Ok(done)
}

/// Stops the cluster's containers `names` on every host (in parallel per name).
async fn stop_all(engines: &[Engine], scope: &str, names: &[&str]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for name in names {
        for (e, stopped) in engines.iter().zip(join_all(engines.iter().map(|e| stop(e, scope, name))).await) {
            if stopped? {
                done.push(format!("{}: stopped {name}", e.host));
            }
        }
    }
    Ok(done)
}

/// Stops Patroni on the replicas, then on the leader: a leader stopped first would be failed
/// over to a replica, which then writes a new timeline into the archive as it goes down.
pub async fn stop_patroni(cfg: &Config, engines: &[Engine]) -> Result<Vec<String>> {
    let leader = crate::member::leader(cfg, engines).await.ok();
    let (last, replicas): (Vec<&Engine>, Vec<&Engine>) = engines.iter().partition(|e| leader.is_some_and(|l| l.host == e.host));
    let mut done = Vec::new();
    // The replicas together (none depends on another), then the leader, so none takes over.
    for (group, wake) in [(replicas, leader), (last, None)] {
        let stopping = join_all(group.iter().map(|e| stop(e, &cfg.hosts.cluster.name, PATRONI)));
        let stopped = waking_leader(wake, stopping).await;
        for (e, s) in group.iter().zip(stopped) {
            if s? {
                done.push(format!("{}: stopped {PATRONI}", e.host));
            }
        }
    }
    Ok(done)
}

/// Stops Patroni on every member at once before its containers are removed or its data
/// replaced (`remove`, an upgrade of the major, a restore); see `stop_patroni_leaving`. Returns
/// once every member has stopped (a synchronous standby's container is removed by then too).
pub async fn stop_patroni_to_remove(cfg: &Config, engines: &[Engine]) -> Result<Vec<String>> {
    let (mut done, going) = stop_patroni_leaving(cfg, engines).await?;
    done.extend(going.wait().await?);
    Ok(done)
}

/// Stops Patroni on every member at once. The replicas are signalled first, and the leader is
/// stopped once each has left its HA loop, so none can take the leader key the leader releases
/// as it goes down: an asynchronous replica's REST API refuses connections tens of
/// milliseconds after the signal; a synchronous standby's stays up until its leader releases
/// it (it looks every 2 s), so it counts as gone once the leader's view of it shows it going
/// (`standby_going`). A replica not seen leaving within a few seconds is stopped whole before
/// the leader, as `stop_patroni` does.
///
/// Returns once every other replica has stopped and the leader's PostgreSQL has exited (all it
/// wrote archived). Still going down then, their stops and then their containers' removal under
/// way (`Going`): the leader's Patroni, which leaves a second later; and a synchronous standby
/// seen going, which goes down once its next look finds the leader gone (up to 2 s later) and
/// takes over no longer.
pub async fn stop_patroni_leaving(cfg: &Config, engines: &[Engine]) -> Result<(Vec<String>, Going)> {
    let Ok((leader, cluster)) = crate::member::leader_and_cluster(cfg, engines).await else {
        return Ok((stop_patroni(cfg, engines).await?, Going::default()));
    };
    let scope = &cfg.hosts.cluster.name;
    let replicas: Vec<&Engine> = engines.iter().filter(|e| e.host != leader.host).collect();
    let standby = cluster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["role"] == "sync_standby")
        .and_then(|m| m["name"].as_str());
    let leaving = join_all(replicas.iter().map(|e| async move {
        // A signal that fails (the container stopped meanwhile) is judged by the wait.
        if let Err(e) = signal(e, scope, PATRONI).await {
            tracing::debug!("{e:#}");
        }
        let limit = Duration::from_secs(5);
        // (A member is named after its host.)
        let left = match standby.filter(|s| *s == e.host) {
            Some(name) => tokio::select! {
                left = super::wait::wait_member_stopped(e, limit) => left.then_some(Left::Stopped),
                going = standby_going(leader, name, limit) => going.then_some(Left::Going),
            },
            None => super::wait::wait_member_stopped(e, limit).await.then_some(Left::Stopped),
        };
        tracing::debug!("{}: Patroni left its HA loop: {left:?}", e.host);
        left
    }));
    let left = waking_leader(Some(leader), leaving).await;
    let mut done = Vec::new();
    let mut going = Going::default();
    for (e, left) in replicas.iter().zip(&left) {
        match left {
            None => {
                if stop(e, scope, PATRONI).await? {
                    done.push(format!("{}: stopped {PATRONI}", e.host));
                }
            }
            // Its stop starts now, with the leader's: it is not waited for here.
            Some(Left::Going) => going.start(e, scope),
            Some(Left::Stopped) => {}
        }
    }
    // The leader's stop runs on its own too: it counts as down once its PostgreSQL has exited.
    going.start(leader, scope);
    let others: Vec<&Engine> = engines.iter().filter(|e| !going.has(&e.host)).collect();
    let stopping = join_all(others.iter().map(|e| stop(e, scope, PATRONI)));
    let (stopped, exited) = tokio::join!(stopping, postgres_exited(leader));
    for (e, s) in others.iter().zip(stopped) {
        if s? {
            done.push(format!("{}: stopped {PATRONI}", e.host));
        }
    }
    match exited {
        true => done.push(format!("{}: PostgreSQL stopped ({PATRONI} exits meanwhile)", leader.host)),
        false => done.extend(going.wait_for(&leader.host).await?),
    }
    Ok((done, going))
}

/// Waits until the PostgreSQL in `e`'s Patroni container has exited (its postmaster.pid is
/// gone, which PostgreSQL removes last, once the archiver has archived what it had): a
/// stopping Patroni leaves a second later (1.0 s on the lab, after PostgreSQL stopped), having
/// released its DCS key. False when that cannot be seen (the container stopped first).
async fn postgres_exited(e: &Engine) -> bool {
    let watch = format!(
        "while [ -e {}/postmaster.pid ]; do sleep 0.05; done; echo exited",
        crate::layout::PGDATA
    );
    let seen = docker::exec(&e.docker, PATRONI, &["sh", "-c", &watch], None).await;
    tracing::debug!("{}: PostgreSQL exit watched: {seen:?}", e.host);
    seen.is_ok_and(|out| out.stdout.trim() == "exited")
}

/// The end of a stop `Going::start` began: what it did, for the report.
async fn stopped(host: &str, stopping: tokio::task::JoinHandle<Result<bool>>) -> Result<Option<String>> {
    let stopped = stopping.await.with_context(|| format!("{host}: stopping {PATRONI}"))?;
    Ok(stopped
        .with_context(|| format!("{host}: stopping {PATRONI}"))?
        .then(|| format!("{host}: stopped {PATRONI}")))
}

/// How a signalled replica was seen leaving its HA loop.
#[derive(Debug)]
enum Left {
    /// Its Patroni is down.
    Stopped,
    /// A synchronous standby waiting for its leader to release it.
    Going,
}

/// The members whose Patroni is still going down (`stop_patroni_leaving`): each stop runs on
/// its own, so it goes on while the caller does other work, and removes the container as soon
/// as it has stopped (every caller removes them; one left stopped would be recreated by `up`
/// onto whatever volume is newest, so it must not outlive the stop longer than it has to).
#[derive(Default)]
pub struct Going(Vec<(String, tokio::task::JoinHandle<Result<bool>>)>);

impl Going {
    fn start(&mut self, e: &Engine, scope: &str) {
        let (engine, scope) = (e.clone(), scope.to_string());
        let stopping = tokio::spawn(async move {
            let stopped = stop(&engine, &scope, PATRONI).await?;
            if in_scope(&engine, &scope, PATRONI).await.is_some() {
                docker::remove_container(&engine.docker, PATRONI).await?;
            }
            Ok(stopped)
        });
        self.0.push((e.host.clone(), stopping));
    }

    pub fn has(&self, host: &str) -> bool {
        self.0.iter().any(|(h, _)| h == host)
    }

    /// Waits until each has stopped and its container is gone.
    pub async fn wait(self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for (host, stopping) in self.0 {
            done.extend(stopped(&host, stopping).await?);
        }
        Ok(done)
    }

    /// Waits until `host`'s has stopped (it is no longer going).
    async fn wait_for(&mut self, host: &str) -> Result<Option<String>> {
        match self.0.iter().position(|(h, _)| h == host) {
            Some(i) => {
                let (host, stopping) = self.0.remove(i);
                stopped(&host, stopping).await
            }
            None => Ok(None),
        }
    }
}

/// The synchronous standby `name`, signalled, is seen going down: its record (read on the
/// leader) carries the `nosync` tag Patroni adds once it has left its HA loop, while it waits
/// for the leader to release it (up to 2 s more: its own poll). It may take over no longer.
async fn standby_going(leader: &Engine, name: &str, limit: Duration) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if let Ok(c) = crate::member::patroni_get(leader, "/cluster").await {
            let members = c["members"].as_array().cloned().unwrap_or_default();
            match members.iter().find(|m| m["name"] == name) {
                Some(m) if m["tags"]["nosync"] != true && (m["state"] == "running" || m["state"] == "streaming") => {}
                _ => return true,
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Runs `work` (replicas going down) while `leader`'s HA loop is woken every half second. A
/// synchronous standby going down first waits until the leader releases it (its REST API stays
/// up meanwhile), which the leader does at its next HA loop: up to `loop_wait` away; the
/// standby looks every 2 s, for up to 2 x loop_wait. (The first wake's exec takes long enough
/// for the standby to have marked itself as going.)
async fn waking_leader<T>(leader: Option<&Engine>, work: impl std::future::Future<Output = T>) -> T {
    let waking = async {
        match leader {
            Some(leader) => loop {
                if let Err(e) = crate::member::wake_ha_loop(leader).await {
                    tracing::debug!("waking the leader while replicas stop: {e:#}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            },
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        done = work => done,
        never = waking => never,
    }
}

/// Sends SIGTERM to container `name` when it runs and belongs to cluster `scope`.
async fn signal(e: &Engine, scope: &str, name: &str) -> Result<()> {
    if running_in_scope(e, scope, name).await {
        let options = bollard::query_parameters::KillContainerOptions { signal: "SIGTERM".into() };
        e.docker
            .kill_container(name, Some(options))
            .await
            .with_context(|| format!("{}: signalling {name}", e.host))?;
    }
    Ok(())
}

/// Stops container `name` when it runs and belongs to cluster `scope` (a container of that
/// name from another cluster or tool on the same host is left alone).
async fn stop(e: &Engine, scope: &str, name: &str) -> Result<bool> {
    if !running_in_scope(e, scope, name).await {
        return Ok(false);
    }
    let options = bollard::query_parameters::StopContainerOptions {
        t: Some(60),
        ..Default::default()
    };
    e.docker.stop_container(name, Some(options)).await?;
    Ok(true)
}

/// Container `name` runs on the host and belongs to cluster `scope`.
async fn running_in_scope(e: &Engine, scope: &str, name: &str) -> bool {
    in_scope(e, scope, name).await.is_some_and(|running| running)
}

/// Whether container `name` runs, when it exists and belongs to cluster `scope`.
async fn in_scope(e: &Engine, scope: &str, name: &str) -> Option<bool> {
    let info = e.docker.inspect_container(name, None).await.ok()?;
    let labels = info.config.as_ref().and_then(|c| c.labels.as_ref());
    labels.and_then(|l| l.get(LABEL_CLUSTER)).filter(|l| *l == scope)?;
    Some(info.state.as_ref().and_then(|s| s.running).unwrap_or(false))
}

/// Removes the cluster: the scope from the DCS (while it still runs), then every container of
/// the cluster, then (with `volumes`) its volumes. Only objects labeled with this cluster.
pub async fn remove(cfg: &Config, engines: &[Engine], volumes: bool) -> Result<Vec<String>> {
    let scope = &cfg.hosts.cluster.name;
    let mut done = Vec::new();
    let dcs_engine = engines.iter().find(|e| crate::dcs::is_voter(cfg, &e.host));
    // Proxies first, stopped gracefully so they finish what they carry; Patroni must not
    // rewrite the scope while it is being deleted.
    done.extend(stop_all(engines, scope, &[&PROXIES[..], &MONITORING[..]].concat()).await?);
    done.extend(stop_patroni_to_remove(cfg, engines).await?);
    if let Some(e) = dcs_engine {
        match crate::dcs::remove_scope(cfg, e, scope).await {
            Ok(()) => done.push(format!("DCS: removed scope `{scope}`")),
            Err(err) => crate::output::warn(format!(
                "could not remove scope `{scope}` from the DCS ({err:#}); it is gone with the DCS volumes only if --volumes"
            )),
        }
    }
    let label = format!("{LABEL_CLUSTER}={scope}");
    for e in engines {
        for c in docker::containers_with_label(&e.docker, &label).await? {
            let name = docker::container_name(&c);
            docker::remove_container(&e.docker, &name).await?;
            done.push(format!("{}: removed container {name}", e.host));
        }
        if volumes {
            let filters = HashMap::from([("label".to_string(), vec![label.clone()])]);
            let list = e
                .docker
                .list_volumes(Some(bollard::query_parameters::ListVolumesOptions { filters: Some(filters) }))
                .await?;
            for v in list.volumes.unwrap_or_default() {
                e.docker
                    .remove_volume(&v.name, None::<bollard::query_parameters::RemoveVolumeOptions>)
                    .await?;
                done.push(format!("{}: removed volume {}", e.host, v.name));
            }
        }
    }
    Ok(done)
}
