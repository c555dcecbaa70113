//! HAProxy on hosts with role `haproxy`: TCP ports 5000-5003 to the members Patroni's REST API
//! marks as leader, replica (within the lag limit), synchronous or asynchronous standby.
//! Its configuration is a live file: a changed member list is uploaded and HAProxy reloads
//! (master-worker mode, SIGUSR2) without dropping the sessions it carries.

use crate::config::{Config, HostConfig, Role};
use crate::docker::spec::{ContainerSpec, File};
use crate::layout::{HAPROXY, HAPROXY_CONFIG, HAPROXY_PORTS, PATRONI_API_PORT};
use crate::render::render;
use anyhow::Result;
use serde::Serialize;

#[derive(Serialize)]
struct Listener {
    name: &'static str,
    port: u16,
    check: String,
    balance: bool,
}

#[derive(Serialize)]
struct Member<'a> {
    name: &'a str,
    address: &'a str,
}

/// haproxy.cfg for `host`.
pub fn config(cfg: &Config, host: &HostConfig) -> Result<String> {
    let a = &cfg.hosts.access;
    let lag = a.replica_max_lag_mb * 1024 * 1024;
    let listeners = [
        ("primary", "/primary".to_string(), false),
        ("replicas", format!("/replica?lag={lag}"), true),
        ("sync", "/sync".to_string(), true),
        ("async", format!("/async?lag={lag}"), true),
    ]
    .into_iter()
    .zip(HAPROXY_PORTS)
    .map(|((name, check, balance), port)| Listener {
        name,
        port,
        check,
        balance,
    })
    .collect::<Vec<_>>();
    let members: Vec<Member> = cfg
        .hosts
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Patroni))
        .map(|h| Member {
            name: &h.name,
            address: &h.address,
        })
        .collect();
    render(
        "haproxy.cfg.j2",
        minijinja::context! {
            host => host.name,
            cluster => cfg.hosts.cluster.name,
            max_lag_mb => a.replica_max_lag_mb,
            stats_port => a.haproxy_stats_port,
            maxconn => a.pgbouncer_max_client_conn.max(1000) * 2,
            listeners,
            members,
            api_port => PATRONI_API_PORT,
        },
    )
}

pub fn container(cfg: &Config, host: &HostConfig, image_id: &str) -> Result<Option<ContainerSpec>> {
    if !host.has_role(Role::Haproxy) {
        return Ok(None);
    }
    let file = File::new(HAPROXY_CONFIG, config(cfg, host)?, false).live();
    // -W: master-worker, so SIGUSR2 reloads; -db: stay in the foreground (tini is PID 1).
    Ok(Some(ContainerSpec::stateless(
        HAPROXY,
        &["haproxy", "-W", "-db", "-f", HAPROXY_CONFIG],
        vec![file],
        image_id,
        &[],
        Some("SIGUSR2"),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::golden;

    fn cfg() -> Config {
        let mut cfg = crate::cluster::spec::tests::config("consul");
        cfg.hosts.hosts[3].roles.push(Role::Haproxy);
        cfg
    }

    #[test]
    fn ports_route_by_patroni_health() {
        let cfg = cfg();
        let text = config(&cfg, cfg.host("app1").unwrap()).unwrap();
        golden("haproxy-app1.cfg", &text);
        assert!(text.contains("bind *:5000\n    option httpchk OPTIONS /primary\n"), "{text}");
        assert!(text.contains("OPTIONS /replica?lag=104857600"), "{text}");
        assert!(text.contains("inter 3s fastinter 1s fall 3 rise 4 on-marked-down shutdown-sessions"));
        // Every database host is a server of every listener, checked on Patroni's port.
        assert_eq!(text.matches("server pg2 10.0.0.2:5432 check port 8008").count(), 4);
        assert!(!text.contains("app1 10.0.0.9"), "application hosts are no servers");
    }

    #[test]
    fn a_new_member_changes_the_file_not_the_container() {
        let cfg = cfg();
        let app1 = cfg.host("app1").unwrap();
        let before = container(&cfg, app1, "sha256:abc").unwrap().unwrap();
        let mut grown = cfg.clone();
        let mut pg4 = grown.hosts.hosts[2].clone();
        pg4.name = "pg4".into();
        pg4.address = "10.0.0.4".into();
        grown.hosts.hosts.push(pg4);
        let after = container(&grown, grown.host("app1").unwrap(), "sha256:abc").unwrap().unwrap();
        assert_eq!(before.hash, after.hash, "reloaded, not recreated");
        assert!(after.files[0].contents.contains("server pg4 10.0.0.4:5432"));
        assert!(after.files[0].live);
        assert!(
            container(&cfg, cfg.host("pg1").unwrap(), "x").unwrap().is_none(),
            "no role, no HAProxy"
        );
    }
}
