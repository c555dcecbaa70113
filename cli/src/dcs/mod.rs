//! The distributed configuration store Patroni keeps its leader lock in, behind one interface
//! (`Store`), with one implementation per store (`etcd.rs`, `consul.rs`), chosen once from
//! hosts.toml by `store()`. Stores are reached through the engines (exec in the DCS
//! container), never by assuming their ports are reachable from the control node.

mod consul;
mod etcd;

use crate::config::{Config, Dcs, HostConfig, Role};
use crate::docker::{spec::ContainerSpec, Engine};
use anyhow::{bail, Context, Result};
use futures_util::future::BoxFuture;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What differs between etcd and Consul.
pub trait Store: Send + Sync {
    /// The store's container (and config) name.
    fn container(&self) -> &'static str;
    /// The role a host needs to run a voting member of the store.
    fn voter_role(&self) -> Role;
    /// The configuration file `pgctl config render --file NAME` shows.
    fn config_name(&self) -> &'static str;
    /// That file's contents for `host`, if the host runs the store.
    fn config_file(&self, cfg: &Config, host: &HostConfig) -> Result<Option<String>>;
    /// The container `host` runs for the store, if any.
    fn container_spec(&self, cfg: &Config, host: &HostConfig, image_id: &str) -> Result<Option<ContainerSpec>>;
    /// Makes the running store ready for Patroni (Consul: its ACL policies and tokens);
    /// idempotent. `Ok(description)` of what is in place.
    fn prepare<'a>(&'a self, _cfg: &'a Config, _engine: &'a Engine) -> BoxFuture<'a, Result<String>> {
        Box::pin(async { Ok(String::new()) })
    }
    /// `Ok(description)` when the store has quorum and every host of hosts.toml that runs a
    /// member (or agent) of it is in, as seen from `engine`'s member.
    fn health<'a>(&'a self, cfg: &'a Config, engine: &'a Engine) -> BoxFuture<'a, Result<String>>;
    /// Patroni's key `name` of `scope`, in the store's own syntax.
    fn key(&self, scope: &str, name: &str) -> String;
    /// The value of `key`, if set.
    fn get<'a>(&'a self, engine: &'a Engine, key: &'a str) -> BoxFuture<'a, Result<Option<String>>>;
    /// Deletes every key under `prefix` (nothing there is fine).
    fn delete_prefix<'a>(&'a self, engine: &'a Engine, prefix: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Whether `host` runs an agent of the store that is not a voter (a Consul client), which
    /// leaves with the host's database member.
    fn runs_client_agent(&self, _host: &HostConfig) -> bool {
        false
    }
    /// Forgets the agent of a host that left for good (Consul: force-leave and prune).
    fn forget_agent<'a>(&'a self, _engine: &'a Engine, _node: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Deletes exactly `key` (not there is fine).
    fn delete_key<'a>(&'a self, engine: &'a Engine, key: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// The store hosts.toml chooses: the one place the choice is made.
pub fn store(cfg: &Config) -> &'static dyn Store {
    match cfg.hosts.cluster.dcs {
        Dcs::Etcd => &etcd::Etcd,
        Dcs::Consul => &consul::Consul,
    }
}

/// Whether `host` runs a voting member of the DCS (an etcd member or a Consul server).
pub fn is_voter(cfg: &Config, host: &str) -> bool {
    let role = store(cfg).voter_role();
    cfg.host(host).is_some_and(|h| h.has_role(role))
}

/// Health summary of the DCS as seen from `engine`'s member.
pub async fn health(cfg: &Config, engine: &Engine) -> Result<String> {
    store(cfg).health(cfg, engine).await
}

/// Makes the healthy store ready for Patroni from the first of `engines` (a voter).
pub async fn prepare(cfg: &Config, engines: &[&Engine]) -> Result<String> {
    let engine = engines.first().context("no DCS member reachable")?;
    store(cfg)
        .prepare(cfg, engine)
        .await
        .with_context(|| format!("{}: preparing the DCS", engine.host))
}

/// Waits until `health` passes on some engine, up to `timeout`.
pub async fn wait_healthy(cfg: &Config, engines: &[&Engine], timeout: Duration) -> Result<String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        for e in engines {
            match health(cfg, e).await {
                Ok(s) => return Ok(s),
                Err(err) => {
                    last = format!("{}: {err:#}", e.host);
                    tracing::debug!("DCS not healthy yet after {:.1}s: {last}", started.elapsed().as_secs_f64());
                }
            }
        }
        // A fresh DCS elects its leader within a second or two.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the DCS did not become healthy within {}s; last: {last}", timeout.as_secs())
}

/// The system identifier Patroni recorded when the scope was initialized, if any.
pub async fn initialize_key(cfg: &Config, engine: &Engine, scope: &str) -> Result<Option<String>> {
    let s = store(cfg);
    s.get(engine, &s.key(scope, "initialize")).await
}

/// Deletes every key of `scope` (what `patronictl remove` does), so a new cluster can bootstrap.
pub async fn remove_scope(cfg: &Config, engine: &Engine, scope: &str) -> Result<()> {
    let s = store(cfg);
    s.delete_prefix(engine, &s.key(scope, "")).await
}

/// Deletes member `name`'s key of `scope` now instead of when its TTL runs out.
pub async fn remove_member(cfg: &Config, engine: &Engine, scope: &str, name: &str) -> Result<()> {
    let s = store(cfg);
    s.delete_key(engine, &s.key(scope, &format!("members/{name}"))).await
}

/// Forgets `node`'s agent, as seen from the voter `engine`.
pub async fn forget_agent(cfg: &Config, engine: &Engine, node: &str) -> Result<()> {
    store(cfg).forget_agent(engine, node).await
}

/// The command a user runs to clear a stale scope by hand.
pub fn clear_command(scope: &str, hosts: &str) -> String {
    format!("pgctl remove --i-am-aware --hosts {hosts}   (removes the containers and the scope `{scope}` from the DCS; data volumes are kept unless --volumes)")
}

/// A member of the store, for its configuration templates.
#[derive(Serialize)]
struct Member<'a> {
    name: &'a str,
    address: &'a str,
}

/// The addresses of the hosts with `role`.
pub fn addresses_with(cfg: &Config, role: Role) -> Vec<String> {
    cfg.hosts
        .hosts
        .iter()
        .filter(|h| h.has_role(role))
        .map(|h| h.address.clone())
        .collect()
}
