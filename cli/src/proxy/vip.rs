//! The virtual IP (role `vip`, `[access] vip` and `vip_interface`): on each database host a
//! watcher polls the leader key in the DCS and holds the address on the interface only while
//! the key names this host's member, so the address moves with the leader. With etcd that is
//! vip-manager; with Consul it is pgctl's `vip-follow.py` (same key, same behaviour), because
//! Debian's vip-manager is built without Consul (Debian #1017982) and no other build can be had.
//! Both need NET_ADMIN (add/remove the address) and NET_RAW (gratuitous ARP).

use crate::config::{Config, Dcs, HostConfig, Role};
use crate::docker::spec::{ContainerSpec, File};
use crate::layout::{CONSUL_PORTS, ETCD_PORTS, VIP_FOLLOW_CONFIG, VIP_FOLLOW_SCRIPT, VIP_MANAGER, VIP_MANAGER_CONFIG};
use crate::render::render;
use anyhow::{Context, Result};

/// vip-manager.yml for `host`, or `None` when it has no `vip` role.
pub fn config(cfg: &Config, host: &HostConfig) -> Result<Option<String>> {
    if !host.has_role(Role::Vip) {
        return Ok(None);
    }
    let a = &cfg.hosts.access;
    let vip = a
        .vip
        .as_deref()
        .with_context(|| format!("{}: [access] vip is missing (role vip on {})", cfg.hosts_path.display(), host.name))?;
    let (ip, netmask) = vip
        .split_once('/')
        .with_context(|| format!("{}: [access] vip `{vip}` needs its prefix length", cfg.hosts_path.display()))?;
    let scope = &cfg.hosts.cluster.name;
    // Patroni's namespace is /service/; Consul's KV paths have no leading slash.
    let (dcs, key, endpoints, token) = match cfg.hosts.cluster.dcs {
        Dcs::Consul => (
            "consul",
            format!("service/{scope}/leader"),
            vec![format!("http://127.0.0.1:{}", CONSUL_PORTS[3])],
            cfg.secrets.consul_patroni_token.as_ref().map(|t| t.expose().to_string()),
        ),
        Dcs::Etcd => (
            "etcd",
            format!("/service/{scope}/leader"),
            crate::dcs::addresses_with(cfg, Role::Etcd)
                .iter()
                .map(|a| format!("http://{a}:{}", ETCD_PORTS[0]))
                .collect(),
            None,
        ),
    };
    render(
        "vip-manager.yml.j2",
        minijinja::context! {
            host => host.name,
            cluster => scope,
            member => host.name,
            ip, netmask,
            interface => a.vip_interface.as_deref().unwrap_or("eth0"),
            dcs, key, endpoints,
            consul_token => token,
        },
    )
    .map(Some)
}

pub fn container(cfg: &Config, host: &HostConfig, image_id: &str) -> Result<Option<ContainerSpec>> {
    let Some(text) = config(cfg, host)? else { return Ok(None) };
    let caps = ["NET_ADMIN", "NET_RAW"];
    if cfg.hosts.cluster.dcs == Dcs::Consul {
        let files = vec![
            File::new(VIP_FOLLOW_SCRIPT, crate::render::script("vip-follow.py").into(), false),
            File::new(VIP_FOLLOW_CONFIG, follow_config(cfg, host)?, false),
        ];
        return Ok(Some(ContainerSpec::stateless(
            VIP_MANAGER,
            &["python3", VIP_FOLLOW_SCRIPT, VIP_FOLLOW_CONFIG],
            files,
            image_id,
            &caps,
            None,
        )));
    }
    let arg = format!("--config={VIP_MANAGER_CONFIG}");
    Ok(Some(ContainerSpec::stateless(
        VIP_MANAGER,
        &["vip-manager", &arg],
        vec![File::new(VIP_MANAGER_CONFIG, text, false)],
        image_id,
        &caps,
        None,
    )))
}

/// vip-follow.py's settings (Consul): the same key, member and address vip-manager would use.
fn follow_config(cfg: &Config, host: &HostConfig) -> Result<String> {
    let a = &cfg.hosts.access;
    let vip = a.vip.as_deref().unwrap_or_default();
    let (ip, prefix) = vip.split_once('/').unwrap_or((vip, "32"));
    Ok(serde_json::json!({
        "consul": format!("http://127.0.0.1:{}", CONSUL_PORTS[3]),
        "token": cfg.secrets.consul_patroni_token.as_ref().map(|t| t.expose()).unwrap_or_default(),
        "key": format!("service/{}/leader", cfg.hosts.cluster.name),
        "member": host.name,
        "ip": ip,
        "prefix": prefix.parse::<u8>().with_context(|| format!("[access] vip `{vip}`: the prefix length"))?,
        "interface": a.vip_interface.as_deref().unwrap_or("eth0"),
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_member_triggers_on_its_own_name_in_its_dcs() {
        for dcs in ["consul", "etcd"] {
            let mut cfg = crate::cluster::spec::tests::config(dcs);
            cfg.hosts.access.vip = Some("10.0.0.100/24".into());
            cfg.hosts.access.vip_interface = Some("ens3".into());
            for h in cfg.hosts.hosts.iter_mut().take(3) {
                h.roles.push(Role::Vip);
            }
            let text = config(&cfg, cfg.host("pg2").unwrap()).unwrap().unwrap();
            crate::render::golden(&format!("vip-manager-{dcs}-pg2.yml"), &text);
            let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
            assert_eq!(v["trigger-value"], "pg2");
            assert_eq!(v["ip"], "10.0.0.100");
            assert_eq!(v["netmask"], 24);
            assert_eq!(v["interface"], "ens3");
            assert_eq!(v["dcs-type"], dcs);
            if dcs == "consul" {
                assert_eq!(v["trigger-key"], "service/main/leader");
                assert_eq!(v["consul-token"], "9e8d7c6b-5a49-4382-a716-151413121110");
            } else {
                assert_eq!(v["trigger-key"], "/service/main/leader");
                assert_eq!(v["dcs-endpoints"][2], "http://10.0.0.3:2379");
            }
            let spec = container(&cfg, cfg.host("pg2").unwrap(), "x").unwrap().unwrap();
            assert_eq!(spec.cap_add, vec!["NET_ADMIN", "NET_RAW"]);
            if dcs == "consul" {
                // Debian's vip-manager has no Consul: pgctl's follower watches the same key.
                assert_eq!(spec.cmd[1], VIP_FOLLOW_SCRIPT);
                let c: serde_json::Value = serde_json::from_str(&spec.files[1].contents).unwrap();
                assert_eq!(c["key"], "service/main/leader");
                assert_eq!(c["member"], "pg2");
                assert_eq!(c["prefix"], 24);
            } else {
                assert_eq!(spec.cmd[0], "vip-manager");
            }
            assert!(container(&cfg, cfg.host("app1").unwrap(), "x").unwrap().is_none());
        }
    }
}
