//! `pgctl init`: writes a commented `hosts.toml` and a `secrets.toml` (0600) with strong
//! random secrets. Also used by the lab to write its ready-to-use pair.

use crate::render::render;
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use rand::distr::{Alphanumeric, SampleString};
use rand::RngCore;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct InitHost {
    pub name: String,
    pub endpoint: String,
    pub address: String,
    pub roles: Vec<String>,
}

/// Values for the hosts.toml template.
#[derive(Debug, Clone, Serialize)]
pub struct HostsTemplate {
    pub name: String,
    pub postgres_major: u32,
    pub image: String,
    pub dcs: String,
    pub backup_engine: String,
    pub ttl: u32,
    pub loop_wait: u32,
    pub retry_timeout: u32,
    pub synchronous_mode: bool,
    /// TLS for client connections (the CA is in secrets.toml).
    pub tls: bool,
    pub s3_endpoint: String,
    pub s3_bucket: String,
    pub s3_region: String,
    pub s3_ca_file: Option<String>,
    pub s3_address: Option<String>,
    pub hosts: Vec<InitHost>,
}

impl HostsTemplate {
    /// A starting point for a real site: three hosts to edit, Consul + WAL-G.
    pub fn example(name: &str) -> Self {
        let hosts = (1..=3)
            .map(|i| InitHost {
                name: format!("pg{i}"),
                endpoint: format!("tcp://10.0.0.{i}:2376"),
                address: format!("10.0.0.{i}"),
                roles: vec!["consul-server".into(), "patroni".into()],
            })
            .collect();
        HostsTemplate {
            name: name.into(),
            postgres_major: 16,
            image: "pgctl/postgres:16".to_string(),
            dcs: "consul".into(),
            backup_engine: "walg".into(),
            ttl: 30,
            loop_wait: 10,
            retry_timeout: 10,
            synchronous_mode: true,
            tls: true,
            s3_endpoint: "https://s3.example.com".into(),
            s3_bucket: "pg-backups".into(),
            s3_region: "us-east-1".into(),
            s3_ca_file: None,
            s3_address: None,
            hosts,
        }
    }
}

/// Values for the secrets.toml template.
#[derive(Debug, Clone, Serialize)]
pub struct SecretsTemplate {
    pub superuser_password: String,
    pub replication_password: String,
    pub rewind_password: String,
    pub rest_api_password: String,
    pub consul_gossip_key: String,
    pub consul_management_token: String,
    pub consul_agent_token: String,
    pub consul_patroni_token: String,
    pub backup_encryption_key: String,
    pub pgbouncer_password: String,
    pub monitoring_password: String,
    /// The CA of the members' PostgreSQL server certificates (PEM).
    pub postgres_ca_cert: String,
    pub postgres_ca_key: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: String,
    pub s3_readonly_access_key_id: String,
    pub s3_readonly_secret_access_key: String,
}

impl SecretsTemplate {
    /// Fresh random passwords and gossip key; S3 keys are left for the user to fill in.
    pub fn generate() -> Self {
        let ca = fresh_ca();
        SecretsTemplate {
            superuser_password: password(),
            replication_password: password(),
            rewind_password: password(),
            rest_api_password: password(),
            consul_gossip_key: gossip_key(),
            consul_management_token: token_uuid(),
            consul_agent_token: token_uuid(),
            consul_patroni_token: token_uuid(),
            backup_encryption_key: password(),
            pgbouncer_password: password(),
            monitoring_password: password(),
            postgres_ca_cert: ca.cert_pem,
            postgres_ca_key: ca.key_pem,
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_readonly_access_key_id: String::new(),
            s3_readonly_secret_access_key: String::new(),
        }
    }
}

/// A new CA for the members' PostgreSQL server certificates.
pub fn fresh_ca() -> crate::pki::Ca {
    crate::pki::Ca::generate("pgctl PostgreSQL CA").expect("generating a CA key and certificate")
}

/// `secrets.toml` text with a fresh PostgreSQL CA added; `None` when it has one already.
pub fn with_tls_ca(secrets_text: &str) -> Result<Option<String>> {
    let parsed: toml::Value = toml::from_str(secrets_text)?;
    if parsed.get("postgres_ca_cert").is_some() || parsed.get("postgres_ca_key").is_some() {
        return Ok(None);
    }
    let ca = fresh_ca();
    let block = format!(
        "# The CA that signs each member's PostgreSQL server certificate (hosts.toml tls = true).\n\
         # Clients verify the server with the certificate (sslmode=verify-full sslrootcert=...).\n\
         postgres_ca_cert = '''\n{}'''\npostgres_ca_key = '''\n{}'''\n",
        ca.cert_pem, ca.key_pem
    );
    // Top-level keys must come before the first [table].
    Ok(Some(match secrets_text.find("\n[") {
        Some(i) => format!("{}\n{block}{}", &secrets_text[..i], &secrets_text[i..]),
        None => format!("{secrets_text}\n{block}"),
    }))
}

/// 32 alphanumeric characters from the OS RNG: ~190 bits, and safe in any config syntax.
pub fn password() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 32)
}

/// 32 random bytes, base64 — the format `consul keygen` prints.
pub fn gossip_key() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}

/// A random (version 4) UUID: the form Consul requires of a token's secret id.
pub fn token_uuid() -> String {
    let mut b = [0u8; 16];
    rand::rng().fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Writes both files; refuses to overwrite either unless `force`.
pub fn write_files(hosts_path: &Path, secrets_path: &Path, hosts: &HostsTemplate, secrets: &SecretsTemplate, force: bool) -> Result<()> {
    if !force {
        for p in [hosts_path, secrets_path] {
            if p.exists() {
                bail!("{} already exists; not overwriting it (pass --force to replace it)", p.display());
            }
        }
    }
    let hosts_text = render("init/hosts.toml.j2", hosts)?;
    let secrets_text = render("init/secrets.toml.j2", secrets)?;
    write_file(hosts_path, &hosts_text, 0o644)?;
    write_file(secrets_path, &secrets_text, 0o600)?;
    Ok(())
}

/// Writes a file with `mode` from the moment it exists (no window where a secret is 0644).
pub fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its old mode through open(): set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
