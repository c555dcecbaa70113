//! TLS for client connections to PostgreSQL and PgBouncer (hosts.toml `[cluster] tls = true`): every member
//! gets a server certificate signed by the cluster's CA (secrets.toml `postgres_ca_cert` /
//! `postgres_ca_key`) naming its address, its host name and the Consul service names, so a
//! client with `sslmode=verify-full` can connect through any of them. The certificate is
//! issued when `up` renders the member; the container's hash covers what the certificate says
//! (names, CA, renewal period), not its bytes, so an unchanged member keeps its certificate and
//! `up` issues a new one when an address changes, the CA changes, or the renewal period turns
//! (every RENEW_DAYS of a VALID_DAYS validity).

use crate::config::{Config, HostConfig};
use crate::docker::spec::File;
use crate::pki::Ca;
use anyhow::{Context, Result};
use std::collections::BTreeMap;

pub const CERT: &str = "/etc/pgctl/tls/server.crt";
pub const KEY: &str = "/etc/pgctl/tls/server.key";
pub const CA_CERT: &str = "/etc/pgctl/tls/ca.crt";
const VALID_DAYS: i64 = 397;
const RENEW_DAYS: i64 = 180;

/// The cluster's CA from secrets.toml, when TLS is on.
pub fn ca(cfg: &Config) -> Result<Option<Ca>> {
    if !cfg.hosts.cluster.tls {
        return Ok(None);
    }
    ca_from_secrets(cfg, "tls = true").map(Some)
}

/// The cluster's CA from secrets.toml; `needed_by` says what asked for it when it is missing.
pub fn ca_from_secrets(cfg: &Config, needed_by: &str) -> Result<Ca> {
    let s = &cfg.secrets;
    let (Some(cert), Some(key)) = (&s.postgres_ca_cert, &s.postgres_ca_key) else {
        return Err(crate::error::usage(format!(
            "{}: {needed_by} needs postgres_ca_cert and postgres_ca_key (`pgctl init --add-tls-ca` adds a fresh CA)",
            cfg.secrets_path.display()
        )));
    };
    Ca::load(cert.expose(), key.expose()).with_context(|| format!("{}: postgres_ca_cert / postgres_ca_key", cfg.secrets_path.display()))
}

/// The names a member's certificate carries: its address, its host name, and the Consul
/// service names of the cluster (leader and replicas).
pub fn names(cfg: &Config, host: &HostConfig) -> Vec<String> {
    let scope = &cfg.hosts.cluster.name;
    let mut out = vec![host.address.clone(), host.name.clone(), "localhost".into(), "127.0.0.1".into()];
    for role in ["master", "primary", "replica"] {
        out.push(format!("{role}.{scope}.service.consul"));
    }
    out.push(format!("{scope}.service.consul"));
    out
}

/// The member's certificate, key and the CA certificate as container files; none without TLS.
pub fn files(cfg: &Config, host: &HostConfig) -> Result<Vec<File>> {
    let Some(ca) = ca(cfg)? else { return Ok(vec![]) };
    issued_files(&ca, &host.name, &names(cfg, host), [CERT, KEY, CA_CERT])
}

/// A certificate for `names` from `ca`, its key and the CA certificate, at `paths` (cert, key,
/// CA), owned by postgres; hashed by what the certificate says, not by its bytes.
pub fn issued_files(ca: &Ca, common_name: &str, names: &[String], paths: [&str; 3]) -> Result<Vec<File>> {
    let issued = ca.issue_for_days(common_name, names, VALID_DAYS)?;
    let period = time::OffsetDateTime::now_utc().unix_timestamp() / (RENEW_DAYS * 86_400);
    let what = format!("{} ca {} period {period}", names.join(","), ca.fingerprint());
    Ok(vec![
        File::new(paths[0], issued.cert_pem, true).hashing_only(what.clone()),
        File::new(paths[1], issued.key_pem, true).hashing_only(what),
        File::new(paths[2], ca.cert_pem.clone(), true),
    ])
}

/// PostgreSQL parameters of a member with TLS (in its own patroni.yml).
pub fn parameters(cfg: &Config) -> BTreeMap<String, toml::Value> {
    if !cfg.hosts.cluster.tls {
        return BTreeMap::new();
    }
    [
        ("ssl", "on"),
        ("ssl_cert_file", CERT),
        ("ssl_key_file", KEY),
        ("ssl_ca_file", CA_CERT),
        ("ssl_min_protocol_version", "TLSv1.2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), toml::Value::from(v)))
    .collect()
}

/// pg_hba lines: the OS user postgres over the socket (Patroni, pgctl), password logins on the
/// socket and loopback, replication and pg_rewind between members, then the application
/// networks: `hostssl` only when TLS is on (a plain connection from them matches no line and
/// is refused).
pub fn pg_hba(cfg: &Config) -> Vec<String> {
    let mut out = vec![
        "local all postgres peer".to_string(),
        "local all all scram-sha-256".into(),
        "host all all 127.0.0.1/32 scram-sha-256".into(),
        "host replication replicator 0.0.0.0/0 scram-sha-256".into(),
    ];
    let kind = if cfg.hosts.cluster.tls { "hostssl" } else { "host" };
    if cfg.hosts.cluster.tls {
        // Members reach each other (pg_rewind, pgctl's checks) with or without TLS.
        for h in cfg.hosts.hosts.iter().filter(|h| h.has_role(crate::config::Role::Patroni)) {
            out.push(format!("host all all {}/32 scram-sha-256", h.address));
        }
    }
    for net in &cfg.hosts.cluster.client_networks {
        out.push(format!("{kind} all all {net} scram-sha-256"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(tls: bool) -> Config {
        let mut cfg = crate::cluster::spec::tests::config("consul");
        cfg.hosts.cluster.tls = tls;
        cfg.hosts.cluster.client_networks = vec!["10.20.0.0/16".into()];
        if tls {
            let ca = Ca::generate("test CA").unwrap();
            cfg.secrets.postgres_ca_cert = Some(crate::config::Secret(ca.cert_pem));
            cfg.secrets.postgres_ca_key = Some(crate::config::Secret(ca.key_pem));
        }
        cfg
    }

    #[test]
    fn application_networks_need_tls_when_it_is_on() {
        let plain = pg_hba(&cfg(false));
        assert_eq!(plain.last().unwrap(), "host all all 10.20.0.0/16 scram-sha-256");
        let tls = pg_hba(&cfg(true));
        assert_eq!(tls.last().unwrap(), "hostssl all all 10.20.0.0/16 scram-sha-256");
        assert!(!tls.iter().any(|l| l.starts_with("host all all 10.20.")), "{tls:?}");
        assert!(parameters(&cfg(false)).is_empty());
        assert_eq!(parameters(&cfg(true))["ssl"].as_str(), Some("on"));
    }

    #[test]
    fn a_member_keeps_its_hash_until_its_names_change() {
        let c = cfg(true);
        let host = c.hosts.hosts[0].clone();
        let (a, b) = (files(&c, &host).unwrap(), files(&c, &host).unwrap());
        assert_ne!(a[0].contents, b[0].contents, "a fresh certificate each time");
        assert_eq!(a[0].hashed, b[0].hashed, "the same hash while the names stay");
        let mut moved = host.clone();
        moved.address = "10.0.9.9".into();
        assert_ne!(files(&c, &moved).unwrap()[0].hashed, a[0].hashed);
        assert!(a[0]
            .hashed
            .as_ref()
            .unwrap()
            .contains(&format!("master.{}.service.consul", c.hosts.cluster.name)));
        assert!(files(&cfg(false), &host).unwrap().is_empty());
    }
}
