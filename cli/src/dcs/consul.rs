//! Consul: servers on the hosts with `consul-server`, client agents on `consul-client` hosts;
//! Patroni talks to its local agent.

use super::{addresses_with, Member, Store};
use crate::config::{Config, HostConfig, Role};
use crate::docker::spec::{ContainerSpec, File};
use crate::docker::{exec, Engine};
use crate::layout::{self, CONSUL};
use anyhow::{bail, Result};
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;

pub struct Consul;

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
        if !host.has_role(Role::ConsulServer) && !host.has_role(Role::ConsulClient) {
            return Ok(None);
        }
        let gossip_key = cfg
            .secrets
            .consul_gossip_key
            .as_ref()
            .map(|s| s.expose().to_string())
            .unwrap_or_default();
        let text = crate::render::render(
            "consul.json.j2",
            minijinja::context! {
                datacenter => "dc1",
                member => Member { name: &host.name, address: &host.address },
                server => host.has_role(Role::ConsulServer),
                servers => addresses_with(cfg, Role::ConsulServer),
                secrets => BTreeMap::from([("consul_gossip_key", gossip_key)]),
            },
        )?;
        Ok(Some(text))
    }

    fn container_spec(&self, cfg: &Config, host: &HostConfig, image_id: &str) -> Result<Option<ContainerSpec>> {
        let Some(config) = self.config_file(cfg, host)? else {
            return Ok(None);
        };
        let config_arg = format!("-config-file={}", layout::CONSUL_CONFIG);
        Ok(Some(ContainerSpec::new(
            CONSUL,
            &["consul", "agent", &config_arg],
            layout::dcs_volume(&cfg.hosts.cluster.name, CONSUL),
            layout::CONSUL_DATA,
            vec![File::new(layout::CONSUL_CONFIG, config, false)],
            image_id,
            &[],
        )))
    }

    fn health<'a>(&'a self, engine: &'a Engine) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let peers = exec(&engine.docker, CONSUL, &["consul", "operator", "raft", "list-peers"], None)
                .await?
                .ok("consul operator raft list-peers")?;
            if !peers.contains("leader") {
                bail!("consul: no Raft leader yet");
            }
            let members = exec(&engine.docker, CONSUL, &["consul", "members"], None)
                .await?
                .ok("consul members")?;
            let alive = members.lines().filter(|l| l.contains(" alive ")).count();
            let total = members.lines().count().saturating_sub(1);
            if alive < total {
                bail!("consul: {alive} of {total} members alive");
            }
            Ok(format!("consul: leader elected, {alive} member(s) alive"))
        })
    }

    fn key(&self, scope: &str, name: &str) -> String {
        format!("service/{scope}/{name}")
    }

    fn get<'a>(&'a self, engine: &'a Engine, key: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let out = exec(&engine.docker, CONSUL, &["consul", "kv", "get", key], None).await?;
            let value = out.stdout.trim().to_string();
            Ok((out.success() && !value.is_empty()).then_some(value))
        })
    }

    fn delete_prefix<'a>(&'a self, engine: &'a Engine, prefix: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            exec(&engine.docker, CONSUL, &["consul", "kv", "delete", "-recurse", prefix], None)
                .await?
                .ok("consul kv delete")?;
            Ok(())
        })
    }
}
