//! etcd: one member per host with the `etcd` role. Patroni uses etcd's v2 API (Debian's etcd
//! 3.4 has no gRPC gateway for its v3 client), so its keys live in the v2 store and are read
//! with etcdctl's v2 mode.

use super::{Member, Store};
use crate::config::{Config, HostConfig, Role};
use crate::docker::spec::{ContainerSpec, File};
use crate::docker::{exec, exec_env, Engine, ExecOutput};
use crate::layout::{self, ETCD};
use anyhow::{bail, Result};
use futures_util::future::BoxFuture;

pub struct Etcd;

const ENDPOINT: &str = "--endpoints=http://127.0.0.1:2379";

impl Store for Etcd {
    fn container(&self) -> &'static str {
        ETCD
    }

    fn voter_role(&self) -> Role {
        Role::Etcd
    }

    fn config_name(&self) -> &'static str {
        "etcd.yml"
    }

    fn config_file(&self, cfg: &Config, host: &HostConfig) -> Result<Option<String>> {
        if !host.has_role(Role::Etcd) {
            return Ok(None);
        }
        let initial_cluster = cfg
            .hosts
            .hosts
            .iter()
            .filter(|h| h.has_role(Role::Etcd))
            .map(|h| format!("{}=http://{}:{}", h.name, h.address, layout::ETCD_PORTS[1]))
            .collect::<Vec<_>>()
            .join(",");
        let text = crate::render::render(
            "etcd.yml.j2",
            minijinja::context! {
                cluster => minijinja::context! { name => cfg.hosts.cluster.name },
                member => Member { name: &host.name, address: &host.address },
                initial_cluster,
            },
        )?;
        Ok(Some(text))
    }

    fn container_spec(&self, cfg: &Config, host: &HostConfig, image_id: &str) -> Result<Option<ContainerSpec>> {
        let Some(config) = self.config_file(cfg, host)? else {
            return Ok(None);
        };
        Ok(Some(ContainerSpec::new(
            ETCD,
            &["etcd", "--config-file", layout::ETCD_CONFIG],
            layout::dcs_volume(&cfg.hosts.cluster.name, ETCD),
            layout::ETCD_DATA,
            vec![File::new(layout::ETCD_CONFIG, config, false)],
            image_id,
            &[],
        )))
    }

    fn health<'a>(&'a self, _cfg: &'a Config, engine: &'a Engine) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let out = exec(
                &engine.docker,
                ETCD,
                &["etcdctl", ENDPOINT, "endpoint", "health", "--cluster"],
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
        })
    }

    fn key(&self, scope: &str, name: &str) -> String {
        format!("/service/{scope}/{name}")
    }

    fn get<'a>(&'a self, engine: &'a Engine, key: &'a str) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            let out = etcdctl_v2(engine, &["get", key]).await?;
            let value = out.stdout.trim().to_string();
            Ok((out.success() && !value.is_empty()).then_some(value))
        })
    }

    fn delete_prefix<'a>(&'a self, engine: &'a Engine, prefix: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let out = etcdctl_v2(engine, &["rm", "--recursive", prefix.trim_end_matches('/')]).await?;
            // A scope that is not there is already removed.
            if !out.success() && !out.stderr.contains("Key not found") {
                out.ok("etcdctl rm")?;
            }
            Ok(())
        })
    }

    fn delete_key<'a>(&'a self, engine: &'a Engine, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let out = etcdctl_v2(engine, &["rm", key]).await?;
            if !out.success() && !out.stderr.contains("Key not found") {
                out.ok("etcdctl rm")?;
            }
            Ok(())
        })
    }
}

async fn etcdctl_v2(engine: &Engine, args: &[&str]) -> Result<ExecOutput> {
    let mut cmd = vec!["etcdctl", ENDPOINT];
    cmd.extend_from_slice(args);
    exec_env(&engine.docker, ETCD, &cmd, None, &["ETCDCTL_API=2"]).await
}
