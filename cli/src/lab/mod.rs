//! `pgctl lab up|down|status`: simulated hosts on this machine. Each host is a container
//! running its own Docker Engine (mutual TLS, lab CA) on a private network with fixed
//! addresses; an S3 server (Garage behind HTTPS) holds backups; a ready hosts.toml and
//! secrets.toml point at all of it. Everything carries the `io.pgctl.lab` label.

mod images;
use crate::pki;
pub mod s3;
mod stack;
pub use stack::Stack;

use crate::config::init::{write_file, HostsTemplate, InitHost, SecretsTemplate};
use crate::docker::{self, Engine, FileSpec};
use crate::layout::LABEL_LAB;
use anyhow::{bail, Context, Result};
use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig,
};
use serde::Serialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `lab up` makes.
#[derive(Debug, Clone)]
pub struct LabSpec {
    pub name: String,
    pub dir: PathBuf,
    /// Database hosts (host1, host2, ...).
    pub hosts: usize,
    /// Application hosts (app1, ...): a Consul client agent and no database, as clients run.
    pub app_hosts: usize,
    pub stack: Stack,
    /// A /24 such as 172.30.77.0/24: database hosts get .11, .12, ..., application hosts .21,
    /// .22, ..., the S3 server .10.
    pub subnet: String,
    pub garage: PathBuf,
    pub base: String,
    pub mirror: String,
}

const MARKER: &str = ".pgctl-lab";
const LABEL_LAB_ROLE: &str = "io.pgctl.lab.role";
/// Fingerprint of the CA that signed a container's certificates: a container made under
/// another CA (its lab directory was deleted and made anew) is recreated, not trusted.
const LABEL_LAB_CA: &str = "io.pgctl.lab.ca";
pub const LAB_IMAGE_TAG: &str = "pgctl/postgres:15-debian";

impl LabSpec {
    fn prefix(&self) -> Result<[u8; 3]> {
        let (net, bits) = self.subnet.split_once('/').unwrap_or((&self.subnet, "24"));
        let ip: Ipv4Addr = net
            .parse()
            .with_context(|| format!("--subnet {}: not an IPv4 network", self.subnet))?;
        if bits != "24" {
            bail!("--subnet {}: the lab uses a /24", self.subnet);
        }
        let o = ip.octets();
        Ok([o[0], o[1], o[2]])
    }
    fn ip(&self, last: u8) -> Result<String> {
        let p = self.prefix()?;
        Ok(format!("{}.{}.{}.{last}", p[0], p[1], p[2]))
    }
    pub fn host_name(i: usize) -> String {
        format!("host{i}")
    }
    fn container(&self, what: &str) -> String {
        format!("{}-{what}", self.name)
    }
    fn labels(&self, role: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_LAB.to_string(), self.name.clone()),
            (LABEL_LAB_ROLE.to_string(), role.to_string()),
        ])
    }
}

/// Brings the lab up, or completes a partial one. Safe to re-run.
pub async fn up(spec: &LabSpec) -> Result<()> {
    if !crate::image::base::is_root() {
        bail!("`pgctl lab up` needs root: it makes a Debian base image with mmdebstrap and runs nested Docker engines");
    }
    if spec.hosts == 0 || spec.hosts > 9 {
        bail!("--count {}: the lab makes 1 to 9 database hosts", spec.hosts);
    }
    if spec.app_hosts > 9 {
        bail!("--app-hosts {}: the lab makes 0 to 9 application hosts", spec.app_hosts);
    }
    if spec.app_hosts > 0 && spec.stack.dcs != "consul" {
        bail!(
            "--app-hosts {}: an application host runs a Consul client agent, and this lab's DCS is {}; use --dcs consul or --app-hosts 0",
            spec.app_hosts,
            spec.stack.dcs
        );
    }
    let local = docker::local().await?;
    claim_dir(spec)?;
    let base = &spec.base;
    crate::image::base::ensure_base(&local, base, "bookworm", &spec.mirror, false).await?;
    let host_image = images::ensure_host_image(&local, base).await?;
    let s3_image = images::ensure_s3_image(&local, base, &spec.garage).await?;
    ensure_network(&local, spec).await?;

    let ca = load_or_create_ca(&spec.dir)?;
    let secrets = load_or_create_secrets(spec)?;
    let mut hosts = Vec::new();
    let db_hosts = (1..=spec.hosts).map(|i| (LabSpec::host_name(i), 10 + i as u8));
    let app_hosts = (1..=spec.app_hosts).map(|i| (format!("app{i}"), 20 + i as u8));
    for (name, last) in db_hosts.chain(app_hosts) {
        let ip = spec.ip(last)?;
        ensure_host(&local, spec, &ca, &host_image, &name, &ip).await?;
        write_client_certs(spec, &ca, &name)?;
        hosts.push((name, ip));
    }
    let s3_ip = spec.ip(10)?;
    ensure_s3(&local, spec, &ca, &s3_image, &s3_ip, &secrets).await?;
    write_hosts_toml(spec, &hosts, &s3_ip)?;

    // Every engine must answer over mutual TLS with the files we just wrote.
    let config = crate::config::load(&spec.dir.join("hosts.toml"), None)?;
    let mut last_err = None;
    for _ in 0..60 {
        match docker::connect_all(&config).await {
            Ok(engines) => {
                for e in &engines {
                    crate::output::step(format!(
                        "  {}: Docker {} (API {}) at {}",
                        e.host, e.version, e.api_version, e.endpoint
                    ));
                }
                last_err = None;
                break;
            }
            Err(e) => last_err = Some(e),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if let Some(e) = last_err {
        let mut logs = String::new();
        for (name, _) in &hosts {
            logs.push_str(&format!(
                "\n--- {name} ---\n{}",
                docker::tail_logs(&local.docker, &spec.container(name), 15).await
            ));
        }
        bail!("lab engines did not come up: {e}{logs}");
    }
    crate::output::step(format!(
        "lab `{}` is up: {} database host(s), {} application host(s), S3 at https://{s3_ip}; DCS {}, backups with {}",
        spec.name, spec.hosts, spec.app_hosts, spec.stack.dcs, spec.stack.backup_engine
    ));
    crate::output::step(format!("  hosts file: {}", spec.dir.join("hosts.toml").display()));
    Ok(())
}

/// The lab directory belongs to one lab; refuse to write into a directory that holds
/// something else.
fn claim_dir(spec: &LabSpec) -> Result<()> {
    let marker = spec.dir.join(MARKER);
    if spec.dir.exists() && std::fs::read_dir(&spec.dir)?.next().is_some() {
        match std::fs::read_to_string(&marker) {
            Ok(name) if name.trim() == spec.name => return Ok(()),
            Ok(name) => bail!(
                "{} belongs to lab `{}`, not `{}`; use another --dir",
                spec.dir.display(),
                name.trim(),
                spec.name
            ),
            Err(_) => bail!("{} exists and is not a pgctl lab directory; use another --dir", spec.dir.display()),
        }
    }
    std::fs::create_dir_all(&spec.dir)?;
    std::fs::write(&marker, &spec.name)?;
    Ok(())
}

fn load_or_create_ca(dir: &Path) -> Result<pki::Ca> {
    let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    if cert.exists() && key.exists() {
        return pki::Ca::load(&std::fs::read_to_string(&cert)?, &std::fs::read_to_string(&key)?);
    }
    let ca = pki::Ca::generate("pgctl lab CA")?;
    write_file(&cert, &ca.cert_pem, 0o644)?;
    write_file(&key, &ca.key_pem, 0o600)?;
    Ok(ca)
}

/// Secrets are made once per lab and kept: the S3 keys must match what Garage holds.
fn load_or_create_secrets(spec: &LabSpec) -> Result<SecretsTemplate> {
    let path = spec.dir.join("secrets.toml");
    if path.exists() {
        let s = crate::config::load_secrets(&path)?;
        let get = |v: &Option<crate::config::Secret>| v.as_ref().map(|s| s.expose().to_string()).unwrap_or_default();
        let fresh = SecretsTemplate::generate();
        // A lab made before a secret existed gets one now (and keeps every other value).
        let or_new = |v: &Option<crate::config::Secret>, new: String| Some(get(v)).filter(|v| !v.is_empty()).unwrap_or(new);
        let secrets = SecretsTemplate {
            superuser_password: get(&s.superuser_password),
            replication_password: get(&s.replication_password),
            rewind_password: get(&s.rewind_password),
            rest_api_password: get(&s.rest_api_password),
            consul_gossip_key: get(&s.consul_gossip_key),
            consul_management_token: or_new(&s.consul_management_token, fresh.consul_management_token),
            consul_agent_token: or_new(&s.consul_agent_token, fresh.consul_agent_token),
            consul_patroni_token: or_new(&s.consul_patroni_token, fresh.consul_patroni_token),
            backup_encryption_key: get(&s.backup_encryption_key),
            pgbouncer_password: or_new(&s.pgbouncer_password, fresh.pgbouncer_password),
            monitoring_password: or_new(&s.monitoring_password, fresh.monitoring_password),
            postgres_ca_cert: or_new(&s.postgres_ca_cert, fresh.postgres_ca_cert),
            postgres_ca_key: or_new(&s.postgres_ca_key, fresh.postgres_ca_key),
            s3_access_key_id: get(&s.s3.access_key_id),
            s3_secret_access_key: get(&s.s3.secret_access_key),
            s3_readonly_access_key_id: get(&s.s3.readonly_access_key_id),
            s3_readonly_secret_access_key: get(&s.s3.readonly_secret_access_key),
        };
        write_file(&path, &crate::render::render("init/secrets.toml.j2", &secrets)?, 0o600)?;
        return Ok(secrets);
    }
    let mut secrets = SecretsTemplate::generate();
    let (rw, ro) = (s3::new_key(), s3::new_key());
    (secrets.s3_access_key_id, secrets.s3_secret_access_key) = rw;
    (secrets.s3_readonly_access_key_id, secrets.s3_readonly_secret_access_key) = ro;
    write_file(&path, &crate::render::render("init/secrets.toml.j2", &secrets)?, 0o600)?;
    Ok(secrets)
}

fn write_client_certs(spec: &LabSpec, ca: &pki::Ca, host: &str) -> Result<()> {
    let dir = spec.dir.join("certs").join(host);
    if dir.join("cert.pem").exists() {
        return Ok(());
    }
    let client = ca.issue("pgctl", &[], false, true)?;
    write_file(&dir.join("ca.pem"), &ca.cert_pem, 0o644)?;
    write_file(&dir.join("cert.pem"), &client.cert_pem, 0o644)?;
    write_file(&dir.join("key.pem"), &client.key_pem, 0o600)?;
    Ok(())
}

fn write_hosts_toml(spec: &LabSpec, hosts: &[(String, String)], s3_ip: &str) -> Result<()> {
    // An odd number of DCS voters among the database hosts; the rest (and every application
    // host) run a Consul client agent, or nothing of etcd.
    let voters = if spec.hosts % 2 == 1 { spec.hosts } else { spec.hosts - 1 };
    let consul = spec.stack.dcs == "consul";
    let roles = |i: usize| -> Vec<String> {
        let r: &[&str] = match (i < voters, i < spec.hosts, consul) {
            (true, _, true) => &["consul-server", "patroni"],
            (true, _, false) => &["etcd", "patroni"],
            (false, true, true) => &["consul-client", "patroni"],
            (false, true, false) => &["patroni"],
            (false, false, _) => &["consul-client"],
        };
        r.iter().map(|s| s.to_string()).collect()
    };
    let template = HostsTemplate {
        name: "lab".into(),
        postgres_major: 15,
        image: LAB_IMAGE_TAG.into(),
        dcs: spec.stack.dcs.clone(),
        backup_engine: spec.stack.backup_engine.clone(),
        ttl: 20,
        loop_wait: 5,
        retry_timeout: 5,
        synchronous_mode: true,
        // The tests turn TLS on where they test it.
        tls: false,
        s3_endpoint: format!("https://{}", s3::HOST_NAME),
        s3_bucket: s3::BUCKET.into(),
        s3_region: s3::REGION.into(),
        s3_ca_file: Some("ca.pem".into()),
        // pgBackRest verifies the certificate by name only: the S3 server is `s3.lab`.
        s3_address: Some(s3_ip.to_string()),
        hosts: hosts
            .iter()
            .enumerate()
            .map(|(i, (name, ip))| InitHost {
                name: name.clone(),
                endpoint: format!("tcp://{ip}:2376"),
                address: ip.clone(),
                roles: roles(i),
            })
            .collect(),
    };
    write_file(
        &spec.dir.join("hosts.toml"),
        &crate::render::render("init/hosts.toml.j2", &template)?,
        0o644,
    )
}

async fn ensure_network(local: &Engine, spec: &LabSpec) -> Result<()> {
    if local
        .docker
        .inspect_network(&spec.name, None::<bollard::query_parameters::InspectNetworkOptions>)
        .await
        .is_ok()
    {
        return Ok(());
    }
    let request = NetworkCreateRequest {
        name: spec.name.clone(),
        driver: Some("bridge".into()),
        labels: Some(spec.labels("network")),
        ipam: Some(Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(spec.subnet.clone()),
                gateway: Some(spec.ip(1)?),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    local.docker.create_network(request).await.with_context(|| {
        format!(
            "creating lab network {} ({}); if the subnet overlaps an existing network, pass --subnet",
            spec.name, spec.subnet
        )
    })?;
    Ok(())
}

fn with_ca(mut labels: HashMap<String, String>, ca: &pki::Ca) -> HashMap<String, String> {
    labels.insert(LABEL_LAB_CA.into(), ca.fingerprint());
    labels
}

/// Starts an existing lab container made under this CA and returns true; removes one made
/// under another CA (returns false, so it is made anew); false when there is none.
async fn reuse(local: &Engine, container: &str, ca: &pki::Ca) -> Result<bool> {
    let Ok(info) = local.docker.inspect_container(container, None).await else {
        return Ok(false);
    };
    let made_under = info.config.and_then(|c| c.labels).and_then(|l| l.get(LABEL_LAB_CA).cloned());
    if made_under.as_deref() != Some(ca.fingerprint().as_str()) {
        crate::output::step(format!(
            "{container} was made under another lab CA: recreating it (its volume is kept)"
        ));
        docker::remove_container(&local.docker, container).await?;
        return Ok(false);
    }
    if !info.state.and_then(|s| s.running).unwrap_or(false) {
        local
            .docker
            .start_container(container, None)
            .await
            .with_context(|| format!("starting {container}"))?;
    }
    Ok(true)
}

fn networking(spec: &LabSpec, ip: &str) -> NetworkingConfig {
    let endpoint = EndpointSettings {
        ipam_config: Some(EndpointIpamConfig {
            ipv4_address: Some(ip.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    NetworkingConfig {
        endpoints_config: Some(HashMap::from([(spec.name.clone(), endpoint)])),
    }
}

/// Creates (if needed) and starts one simulated host. A nested dockerd needs privileges:
/// `--privileged` first; where the engine refuses it ("unable to apply caps"), all
/// capabilities but SYS_RESOURCE, unconfined seccomp/apparmor, all devices and the cgroup fs.
async fn ensure_host(local: &Engine, spec: &LabSpec, ca: &pki::Ca, image: &str, name: &str, ip: &str) -> Result<()> {
    let container = spec.container(name);
    if reuse(local, &container, ca).await? {
        return Ok(());
    }
    let volume = format!("{container}-docker");
    docker::ensure_volume(&local.docker, &volume, spec.labels("volume")).await?;
    let server = ca.issue(
        name,
        &[name.to_string(), ip.to_string(), "localhost".into(), "127.0.0.1".into()],
        true,
        false,
    )?;
    let files = [
        FileSpec::root("etc/docker/tls/ca.pem", ca.cert_pem.clone(), 0o644),
        FileSpec::root("etc/docker/tls/server-cert.pem", server.cert_pem, 0o644),
        FileSpec::root("etc/docker/tls/server-key.pem", server.key_pem, 0o600),
    ];
    let body = |privileged: bool| {
        let mut host_config = HostConfig {
            binds: Some(vec![format!("{volume}:/var/lib/docker")]),
            ..Default::default()
        };
        if privileged {
            host_config.privileged = Some(true);
        } else {
            host_config.cap_add = Some(vec!["ALL".into()]);
            host_config.cap_drop = Some(vec!["SYS_RESOURCE".into()]);
            host_config.security_opt = Some(vec!["seccomp=unconfined".into(), "apparmor=unconfined".into()]);
            host_config.device_cgroup_rules = Some(vec!["a *:* rwm".into()]);
            host_config
                .binds
                .get_or_insert_with(Vec::new)
                .push("/sys/fs/cgroup:/sys/fs/cgroup:rw".into());
        }
        ContainerCreateBody {
            image: Some(image.into()),
            hostname: Some(name.into()),
            labels: Some(with_ca(spec.labels("host"), ca)),
            host_config: Some(host_config),
            networking_config: Some(networking(spec, ip)),
            ..Default::default()
        }
    };
    for privileged in [true, false] {
        docker::create_container(&local.docker, &container, body(privileged)).await?;
        docker::upload(&local.docker, &container, &files).await?;
        match local.docker.start_container(&container, None).await {
            Ok(()) => return Ok(()),
            Err(e) if privileged => {
                tracing::info!("--privileged refused for {container} ({e}); using explicit capabilities instead");
                docker::remove_container(&local.docker, &container).await?;
            }
            Err(e) => return Err(e).with_context(|| format!("starting lab host {container}")),
        }
    }
    unreachable!("the loop returns on its last iteration")
}

async fn ensure_s3(local: &Engine, spec: &LabSpec, ca: &pki::Ca, image: &str, ip: &str, secrets: &SecretsTemplate) -> Result<()> {
    let container = spec.container("s3");
    let volume = format!("{container}-data");
    if !reuse(local, &container, ca).await? {
        // Keys in an old data volume belong to the secrets of a lab directory that is gone.
        let _ = local
            .docker
            .remove_volume(&volume, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await;
        docker::ensure_volume(&local.docker, &volume, spec.labels("volume")).await?;
        let cert = ca.issue("s3", &[ip.to_string(), s3::HOST_NAME.into(), "localhost".into()], true, false)?;
        let garage_toml = crate::render::render(
            "lab-s3/garage.toml.j2",
            minijinja::context! { rpc_secret => s3::rpc_secret(), region => s3::REGION },
        )?;
        let nginx = crate::render::render("lab-s3/nginx.conf.j2", minijinja::context! {})?;
        let body = ContainerCreateBody {
            image: Some(image.into()),
            hostname: Some("s3".into()),
            labels: Some(with_ca(spec.labels("s3"), ca)),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{volume}:/var/lib/garage")]),
                ..Default::default()
            }),
            networking_config: Some(networking(spec, ip)),
            ..Default::default()
        };
        docker::create_container(&local.docker, &container, body).await?;
        let files = [
            FileSpec::root("etc/garage.toml", garage_toml, 0o600),
            FileSpec::root("etc/nginx/pgctl-s3.conf", nginx, 0o644),
            FileSpec::root("etc/pgctl-s3/cert.pem", cert.cert_pem, 0o644),
            FileSpec::root("etc/pgctl-s3/key.pem", cert.key_pem, 0o600),
        ];
        docker::upload(&local.docker, &container, &files).await?;
        local
            .docker
            .start_container(&container, None)
            .await
            .with_context(|| format!("starting {container}"))?;
    }
    s3::setup(
        local,
        &container,
        (&secrets.s3_access_key_id, &secrets.s3_secret_access_key),
        (&secrets.s3_readonly_access_key_id, &secrets.s3_readonly_secret_access_key),
    )
    .await
}

/// Removes every container, volume and network of the lab (by label) and its directory.
pub async fn down(name: &str, dir: &Path, images: bool) -> Result<Vec<String>> {
    let local = docker::local().await?;
    let mut removed = docker::remove_labeled(&local.docker, &format!("{LABEL_LAB}={name}")).await?;
    if images {
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_LAB}=image")])]);
        let list = local
            .docker
            .list_images(Some(bollard::query_parameters::ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await?;
        for image in list {
            local
                .docker
                .remove_image(&image.id, None::<bollard::query_parameters::RemoveImageOptions>, None)
                .await?;
            removed.push(format!("image {}", image.repo_tags.join(",")));
        }
    }
    if std::fs::read_to_string(dir.join(MARKER)).is_ok_and(|n| n.trim() == name) {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        removed.push(format!("directory {}", dir.display()));
    }
    Ok(removed)
}

#[derive(Debug, Serialize)]
pub struct HostStatus {
    pub name: String,
    pub container: String,
    pub state: String,
    pub address: String,
    pub engine: String,
}

#[derive(Debug, Serialize)]
pub struct LabStatus {
    pub name: String,
    pub hosts: Vec<HostStatus>,
    pub s3: String,
}

/// Lab containers, whether each engine answers over mutual TLS, and whether S3 answers HTTPS.
pub async fn status(name: &str, dir: &Path) -> Result<LabStatus> {
    let local = docker::local().await?;
    let containers = docker::containers_with_label(&local.docker, &format!("{LABEL_LAB}={name}")).await?;
    let config = crate::config::load(&dir.join("hosts.toml"), None).ok();
    let mut hosts = Vec::new();
    let mut s3 = "no S3 container".to_string();
    for c in containers {
        let cname = docker::container_name(&c);
        let role = c.labels.as_ref().and_then(|l| l.get(LABEL_LAB_ROLE)).cloned().unwrap_or_default();
        let state = c.state.map(|s| s.to_string()).unwrap_or_default();
        let address = c
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|n| n.get(name).and_then(|e| e.ip_address.clone()))
            .unwrap_or_default();
        if role == "s3" {
            let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap_or_default();
            s3 = match s3::probe(&address, 443, &ca).await {
                Ok(line) => format!("https://{address} answers ({line})"),
                Err(e) => format!("https://{address} NOT reachable: {e:#}"),
            };
            continue;
        }
        let host_name = cname.strip_prefix(&format!("{name}-")).unwrap_or(&cname).to_string();
        let engine = match config.as_ref().and_then(|c| c.host(&host_name).map(|h| (c, h))) {
            Some((config, host)) => match docker::connect::connect(host, config.base_dir()).await {
                Ok(e) => format!("Docker {} (API {})", e.version, e.api_version),
                Err(u) => format!("unreachable: {}", u.cause),
            },
            None => "not in hosts.toml".into(),
        };
        hosts.push(HostStatus {
            name: host_name,
            container: cname,
            state,
            address,
            engine,
        });
    }
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(LabStatus {
        name: name.into(),
        hosts,
        s3,
    })
}
