//! The distributed configuration store Patroni keeps its leader lock in: etcd or Consul, both
//! reached through the engines (exec in the DCS container), never by assuming its ports are
//! reachable from the control node.

use crate::cluster::spec::{CONSUL, ETCD};
use crate::config::Dcs;
use crate::docker::{exec, exec_env, Engine};
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

fn container(dcs: Dcs) -> &'static str {
    match dcs {
        Dcs::Etcd => ETCD,
        Dcs::Consul => CONSUL,
    }
}

/// Whether `host` runs a voting member of the DCS (an etcd member or a Consul server).
pub fn is_voter(cfg: &crate::config::Config, host: &str) -> bool {
    let role = match cfg.hosts.cluster.dcs {
        Dcs::Etcd => crate::config::Role::Etcd,
        Dcs::Consul => crate::config::Role::ConsulServer,
    };
    cfg.host(host).is_some_and(|h| h.has_role(role))
}

/// Patroni's key for a scope, in the DCS's own syntax.
fn key(dcs: Dcs, scope: &str, name: &str) -> String {
    match dcs {
        Dcs::Etcd => format!("/service/{scope}/{name}"),
        Dcs::Consul => format!("service/{scope}/{name}"),
    }
}

/// Health summary of the DCS as seen from `engine`'s member: `Ok(description)` when it has
/// quorum (etcd: every member healthy; Consul: a Raft leader and every member alive).
pub async fn health(dcs: Dcs, engine: &Engine) -> Result<String> {
    let c = container(dcs);
    match dcs {
        Dcs::Etcd => {
            let out = exec(
                &engine.docker,
                c,
                &["etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "health", "--cluster"],
                None,
            )
            .await?;
            let text = format!("{}{}", out.stdout, out.stderr);
            let healthy = text.lines().filter(|l| l.contains("is healthy")).count();
            let unhealthy = text.lines().filter(|l| l.contains("is unhealthy")).count();
            if !out.success() || unhealthy > 0 || healthy == 0 {
                bail!(
                    "etcd: {healthy} healthy, {unhealthy} unhealthy member(s): {}",
                    text.trim().lines().last().unwrap_or_default()
                );
            }
            Ok(format!("etcd: {healthy} member(s) healthy"))
        }
        Dcs::Consul => {
            let peers = exec(&engine.docker, c, &["consul", "operator", "raft", "list-peers"], None)
                .await?
                .ok("consul operator raft list-peers")?;
            if !peers.contains("leader") {
                bail!("consul: no Raft leader yet");
            }
            let members = exec(&engine.docker, c, &["consul", "members"], None).await?.ok("consul members")?;
            let alive = members.lines().filter(|l| l.contains(" alive ")).count();
            let total = members.lines().count().saturating_sub(1);
            if alive < total {
                bail!("consul: {alive} of {total} members alive");
            }
            Ok(format!("consul: leader elected, {alive} member(s) alive"))
        }
    }
}

/// Waits until `health` passes on some engine, up to `timeout`.
pub async fn wait_healthy(dcs: Dcs, engines: &[&Engine], timeout: Duration) -> Result<String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        for e in engines {
            match health(dcs, e).await {
                Ok(s) => return Ok(s),
                Err(err) => last = format!("{}: {err:#}", e.host),
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    bail!("the DCS did not become healthy within {}s; last: {last}", timeout.as_secs())
}

/// Patroni uses etcd's v2 API (Debian's etcd 3.4 has no gRPC gateway for its v3 client), so
/// its keys live in etcd's v2 store and are read with etcdctl's v2 mode.
async fn etcdctl_v2(engine: &Engine, args: &[&str]) -> Result<crate::docker::ExecOutput> {
    let mut cmd = vec!["etcdctl", "--endpoints=http://127.0.0.1:2379"];
    cmd.extend_from_slice(args);
    exec_env(&engine.docker, ETCD, &cmd, None, &["ETCDCTL_API=2"]).await
}

/// The system identifier Patroni recorded when the scope was initialized, if any.
pub async fn initialize_key(dcs: Dcs, engine: &Engine, scope: &str) -> Result<Option<String>> {
    let k = key(dcs, scope, "initialize");
    let out = match dcs {
        Dcs::Etcd => etcdctl_v2(engine, &["get", &k]).await?,
        Dcs::Consul => exec(&engine.docker, CONSUL, &["consul", "kv", "get", &k], None).await?,
    };
    let value = out.stdout.trim().to_string();
    Ok((out.success() && !value.is_empty()).then_some(value))
}

/// Deletes every key of `scope` (what `patronictl remove` does), so a new cluster can bootstrap.
pub async fn remove_scope(dcs: Dcs, engine: &Engine, scope: &str) -> Result<()> {
    let prefix = key(dcs, scope, "");
    match dcs {
        Dcs::Etcd => {
            let out = etcdctl_v2(engine, &["rm", "--recursive", prefix.trim_end_matches('/')]).await?;
            // A scope that is not there is already removed.
            if !out.success() && !out.stderr.contains("Key not found") {
                out.ok("etcdctl rm")?;
            }
        }
        Dcs::Consul => {
            exec(&engine.docker, CONSUL, &["consul", "kv", "delete", "-recurse", &prefix], None)
                .await?
                .ok("consul kv delete")?;
        }
    }
    Ok(())
}

/// The command a user runs to clear a stale scope by hand.
pub fn clear_command(scope: &str, hosts: &str) -> String {
    format!("pgctl remove --i-am-aware --hosts {hosts}   (removes the containers and the scope `{scope}` from the DCS; data volumes are kept unless --volumes)")
}
