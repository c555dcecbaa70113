//! Consul: servers on the hosts with `consul-server`, client agents on `consul-client` hosts
//! and on every other database host (a node added later joins as a client unless hosts.toml
//! makes it a server); Patroni talks to its local agent.

use super::{addresses_with, Member, Store};
use crate::config::{Config, HostConfig, Role};
use crate::docker::spec::{ContainerSpec, File};
use crate::docker::{exec_env, Engine, ExecOutput};
use crate::layout::{self, CONSUL};
use anyhow::{bail, Result};
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;

pub struct Consul;

#[derive(Clone, Copy, PartialEq)]
enum Agent {
    Server,
    Client,
}

/// The agent `host` runs, if any. Patroni needs a local agent, so a database host without a
/// Consul role gets a client one.
fn agent(host: &HostConfig) -> Option<Agent> {
    if host.has_role(Role::ConsulServer) {
        Some(Agent::Server)
    } else if host.has_role(Role::ConsulClient) || host.has_role(Role::Patroni) {
        Some(Agent::Client)
    } else {
        None
    }
}

impl Store for Consul {
    fn container(&self) -> &'static str {
        CONSUL
    }

    fn voter_role(&self) -> Role {
        Role::ConsulServer
    }

    fn config_name(&self) -> &'static str {
        "consul.json"
    }

    fn config_file(&self, cfg: &Config, host: &HostConfig) -> Result<Option<String>> {
        let Some(agent) = agent(host) else {
            return Ok(None);
        };
        let s = &cfg.secrets;
        let text = crate::render::render(
            "consul.json.j2",
            minijinja::context! {
                datacenter => "dc1",
                member => Member { name: &host.name, address: &host.address },
                server => agent == Agent::Server,
                servers => addresses_with(cfg, Role::ConsulServer),
                secrets => BTreeMap::from([
                    ("consul_gossip_key", expose(&s.consul_gossip_key)),
                    ("consul_management_token", expose(&s.consul_management_token)),
                    ("consul_agent_token", expose(&s.consul_agent_token)),
                ]),
            },
        )?;
        Ok(Some(text))
    }

    fn container_spec(&self, cfg: &Config, host: &HostConfig, image_id: &str) -> Result<Option<ContainerSpec>> {
        let Some(config) = self.config_file(cfg, host)? else {
            return Ok(None);
        };
        let config_arg = format!("-config-file={}", layout::CONSUL_CONFIG);
        let mut files = vec![File::new(layout::CONSUL_CONFIG, config, false)];
        if host.has_role(Role::ConsulServer) {
            let acl = serde_json::json!({
                "scope": cfg.hosts.cluster.name,
                "agent": expose(&cfg.secrets.consul_agent_token),
                "patroni": expose(&cfg.secrets.consul_patroni_token),
            });
            files.push(File::new(
                layout::CONSUL_MANAGEMENT_TOKEN,
                expose(&cfg.secrets.consul_management_token),
                false,
            ));
            files.push(File::new(layout::CONSUL_ACL, acl.to_string(), false));
        }
        Ok(Some(ContainerSpec::new(
            CONSUL,
            &["consul", "agent", &config_arg],
            layout::dcs_volume(&cfg.hosts.cluster.name, CONSUL),
            layout::CONSUL_DATA,
            files,
            image_id,
            &[],
        )))
    }

    fn prepare<'a>(&'a self, cfg: &'a Config, engine: &'a Engine) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let script = crate::render::script("consul-acl.py");
            let out = consul(
                engine,
                &["python3", "-c", script, layout::CONSUL_MANAGEMENT_TOKEN, layout::CONSUL_ACL],
            )
            .await?;
            let acl = out.ok("consul ACL setup")?.trim().to_string();
            // Autopilot would otherwise prune a server that is down for a while from the Raft
            // peers; when it comes back it is not a voter at once, and losing one more server
            // then loses quorum. The config file sets this only when the servers bootstrap.
            let servers = addresses_with(cfg, Role::ConsulServer).len().to_string();
            consul(engine, &["consul", "operator", "autopilot", "set-config", "-min-quorum", &servers])
                .await?
                .ok("consul operator autopilot set-config")?;
            Ok(format!("{acl}; autopilot keeps {servers} servers (min-quorum)"))
        })
    }

    fn health<'a>(&'a self, cfg: &'a Config, engine: &'a Engine) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            // Both views at once: each is a CLI start inside the container.
            let (peers, members) = tokio::join!(
                consul(engine, &["consul", "operator", "raft", "list-peers"]),
                consul(engine, &["consul", "members"])
            );
            let peers = peers?.ok("consul operator raft list-peers")?;
            if !peers.contains("leader") {
                bail!("consul: no Raft leader yet");
            }
            // Every server of hosts.toml must vote: one that is back but not (yet) a voter
            // does not count for quorum.
            let voters: Vec<&str> = peers
                .lines()
                .skip(1)
                .filter(|l| l.split_whitespace().nth(4) == Some("true"))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            let not_voting: Vec<&str> = cfg
                .hosts
                .hosts
                .iter()
                .filter(|h| agent(h) == Some(Agent::Server))
                .map(|h| h.name.as_str())
                .filter(|n| !voters.contains(n))
                .collect();
            if !not_voting.is_empty() {
                bail!("consul: server(s) not a Raft voter: {}", not_voting.join(", "));
            }
            let members = members?.ok("consul members")?;
            let alive: Vec<&str> = members
                .lines()
                .filter(|l| l.contains(" alive "))
                .filter_map(|l| l.split_whitespace().next())
                .collect();
            let total = members.lines().count().saturating_sub(1);
            // An agent of hosts.toml that has not joined (yet) is not healthy, even if every
            // member Consul knows of is alive.
            let missing: Vec<&str> = cfg
                .hosts
                .hosts
                .iter()
                .filter(|h| agent(h).is_some())
                .map(|h| h.name.as_str())
                .filter(|n| !alive.contains(n))
                .collect();
            if !missing.is_empty() {
                bail!(
                    "consul: not a live member: {} ({} of {total} members alive)",
                    missing.join(", "),
                    alive.len()
                );
            }
            let alive = alive.len();
            Ok(format!("consul: leader elected, {alive} member(s) alive"))
        })
    }

    fn key(&self, scope: &str, name: &str) -> String {
        format!("service/{scope}/{name}")
    }

    fn get<'a>(&'a self, engine: &'a Engine, key: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let out = consul(engine, &["consul", "kv", "get", key]).await?;
            let value = out.stdout.trim().to_string();
            Ok((out.success() && !value.is_empty()).then_some(value))
        })
    }

    fn delete_prefix<'a>(&'a self, engine: &'a Engine, prefix: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            consul(engine, &["consul", "kv", "delete", "-recurse", prefix])
                .await?
                .ok("consul kv delete")?;
            Ok(())
        })
    }

    fn runs_client_agent(&self, host: &HostConfig) -> bool {
        agent(host) == Some(Agent::Client)
    }

    fn forget_agent<'a>(&'a self, engine: &'a Engine, node: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            consul(engine, &["consul", "force-leave", "-prune", node])
                .await?
                .ok("consul force-leave")?;
            Ok(())
        })
    }

    fn delete_key<'a>(&'a self, engine: &'a Engine, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            consul(engine, &["consul", "kv", "delete", key]).await?.ok("consul kv delete")?;
            Ok(())
        })
    }
}

/// `cmd` in the consul container of a server, with the management token (from its file: the
/// token itself is never in an argument or the exec's environment).
async fn consul(engine: &Engine, cmd: &[&str]) -> Result<ExecOutput> {
    let token_file = format!("CONSUL_HTTP_TOKEN_FILE={}", layout::CONSUL_MANAGEMENT_TOKEN);
    exec_env(&engine.docker, CONSUL, cmd, None, &[&token_file]).await
}

fn expose(secret: &Option<crate::config::Secret>) -> String {
    secret.as_ref().map(|s| s.expose().to_string()).unwrap_or_default()
}
