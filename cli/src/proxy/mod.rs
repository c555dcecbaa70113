//! How applications reach the cluster: HAProxy (role `haproxy`: one port that always leads to
//! the leader, others for replicas), PgBouncer in front of it (role `pgbouncer`) and a virtual
//! IP that follows the leader (role `vip`, vip-manager). They run from the cluster's own image
//! (the packages cost a few MiB, and every host already receives that image), keep no state,
//! and are rendered here like the members' files, so `up` creates, recreates and reloads them.

pub mod haproxy;
pub mod pgbouncer;
pub mod vip;

use crate::config::{Config, HostConfig};
use crate::docker::spec::ContainerSpec;
use crate::layout;
use anyhow::Result;

/// The proxy containers `host` runs, per its roles.
pub fn containers(cfg: &Config, host: &HostConfig, image_id: &str) -> Result<Vec<ContainerSpec>> {
    Ok([
        haproxy::container(cfg, host, image_id)?,
        pgbouncer::container(cfg, host, image_id)?,
        vip::container(cfg, host, image_id)?,
    ]
    .into_iter()
    .flatten()
    .collect())
}

/// Ports a proxy container listens on (host networking), for `up`'s pre-flight.
pub fn ports(cfg: &Config, container: &str) -> Vec<u16> {
    let a = &cfg.hosts.access;
    match container {
        layout::HAPROXY => [&layout::HAPROXY_PORTS[..], &[a.haproxy_stats_port]].concat(),
        layout::PGBOUNCER => vec![a.pgbouncer_port],
        _ => vec![],
    }
}
