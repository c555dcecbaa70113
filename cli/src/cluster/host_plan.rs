//! What `up` does on one host: each of the host's containers in hosts.toml classified against
//! what runs there (keep, start, create, recreate), a foreign container of the same name
//! refused, and the ports of the containers to create checked free. Nothing is changed here.

use super::spec;
use crate::config::{Config, HostConfig};
use crate::docker::{self, spec::ContainerSpec, Engine};
use crate::layout::{self, LABEL_CLUSTER, LABEL_CONFIG_HASH, PATRONI};
use anyhow::{bail, Context, Result};
use bollard::models::HostConfig as DockerHostConfig;

/// What `up` will do with one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Keep,
    Start,
    Create,
    /// Configuration changed on a running container: replaced one host at a time.
    Recreate,
    /// Configuration changed on a stopped container (e.g. after `pgctl down`): nothing runs
    /// that a rolling replacement would protect, so these are replaced together.
    RecreateStopped,
}

pub(crate) struct HostPlan<'a> {
    pub host: &'a HostConfig,
    pub engine: &'a Engine,
    pub items: Vec<(ContainerSpec, Action)>,
    /// Access and monitoring containers of this cluster on the host whose role hosts.toml no
    /// longer gives it: `up` removes them (their volumes are kept).
    pub dropped: Vec<String>,
    /// The data volume the host's existing Patroni container mounts.
    pub patroni_mounts: Option<String>,
}

impl HostPlan<'_> {
    /// This converge creates the container `name` on the host.
    pub(crate) fn creates(&self, name: &str) -> bool {
        self.items.iter().any(|(s, a)| s.name == name && *a == Action::Create)
    }
}

/// `host`'s plan: every container hosts.toml gives it (without Patroni unless `with_patroni`),
/// with what `up` will do to it; `check_ports` checks the ports of those to create.
pub(crate) async fn plan_host<'a>(
    cfg: &Config,
    host: &'a HostConfig,
    engine: &'a Engine,
    image: &spec::ImageFacts,
    with_patroni: bool,
    check_ports: bool,
) -> Result<HostPlan<'a>> {
    let scope = &cfg.hosts.cluster.name;
    let data_volume = super::volumes::current(engine, scope).await?;
    let mut specs = spec::containers(cfg, host, image, &data_volume)?;
    specs.retain(|s| with_patroni || s.name != PATRONI);
    let dropped = docker::containers_with_label(&engine.docker, &format!("{LABEL_CLUSTER}={scope}"))
        .await
        .with_context(|| format!("{}: listing the cluster's containers", host.name))?
        .iter()
        .map(docker::container_name)
        .filter(|n| is_access_or_monitoring(n) && !specs.iter().any(|s| s.name == n))
        .collect();
    let mut items = Vec::new();
    let mut need_ports = Vec::new();
    let mut patroni_mounts = None;
    for s in specs {
        let action = match engine.docker.inspect_container(s.name, None).await {
            Ok(info) => {
                if s.name == PATRONI {
                    patroni_mounts = super::volumes::mounted(&info);
                }
                let labels = info.config.as_ref().and_then(|c| c.labels.clone()).unwrap_or_default();
                if labels.get(LABEL_CLUSTER) != Some(scope) {
                    bail!(
                        "{}: a container named `{}` exists and is not part of cluster `{scope}` (label {LABEL_CLUSTER}={}); remove or rename it",
                        host.name,
                        s.name,
                        labels.get(LABEL_CLUSTER).map(String::as_str).unwrap_or("none")
                    );
                }
                let running = info.state.and_then(|st| st.running).unwrap_or(false);
                match (labels.get(LABEL_CONFIG_HASH) == Some(&s.hash), running) {
                    (true, true) => Action::Keep,
                    (true, false) => Action::Start,
                    (false, true) => Action::Recreate,
                    (false, false) => Action::RecreateStopped,
                }
            }
            Err(e) if docker::is_not_found(&e) => {
                if layout::PROXIES.contains(&s.name) {
                    need_ports.extend(crate::proxy::ports(cfg, s.name));
                } else if layout::MONITORING.contains(&s.name) {
                    need_ports.extend(crate::monitor::ports(s.name));
                } else {
                    need_ports.extend_from_slice(layout::ports(s.name));
                }
                Action::Create
            }
            Err(e) => return Err(e).with_context(|| format!("{}: inspecting container {}", host.name, s.name)),
        };
        items.push((s, action));
    }
    if check_ports && !need_ports.is_empty() {
        let busy = busy_ports(engine, &cfg.hosts.cluster.image, &need_ports).await?;
        if !busy.is_empty() {
            bail!(
                "{}: port(s) {} already in use on the host (another PostgreSQL, Patroni or DCS?); free them or move the role",
                host.name,
                busy.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
            );
        }
    }
    Ok(HostPlan {
        host,
        engine,
        items,
        dropped,
        patroni_mounts,
    })
}

/// Which of `ports` something already listens on, checked from the host's network namespace.
async fn busy_ports(engine: &Engine, image: &str, ports: &[u16]) -> Result<Vec<u16>> {
    let mut cmd = vec!["python3".to_string(), "-c".into(), crate::render::script("port-check.py").into()];
    cmd.extend(ports.iter().map(u16::to_string));
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let host_config = DockerHostConfig {
        network_mode: Some("host".into()),
        ..Default::default()
    };
    let out = docker::run_once(&engine.docker, image, &cmd, host_config, None, &[]).await?;
    let out = out.ok(&format!("port check on {}", engine.host))?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// HAProxy, PgBouncer, the virtual IP and monitoring: the containers a host's roles may drop.
pub(super) fn is_access_or_monitoring(name: &str) -> bool {
    layout::PROXIES.contains(&name) || layout::MONITORING.contains(&name)
}
