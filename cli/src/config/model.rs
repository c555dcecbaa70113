//! The typed shape of `hosts.toml` and `secrets.toml`. Unknown keys are errors
//! (`deny_unknown_fields`): a typo must never be silently ignored on a production cluster.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostsFile {
    pub cluster: ClusterConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryConfig>,
    /// A standby cluster: its leader replicates from this PostgreSQL server instead of
    /// bootstrapping (`pgctl migrate from-primary` sets it for the migration's run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<StandbyConfig>,
    /// How applications reach the cluster: HAProxy, PgBouncer and the virtual IP, on the hosts
    /// with roles `haproxy`, `pgbouncer` and `vip`.
    #[serde(default)]
    pub access: AccessConfig,
    /// Prometheus and Alertmanager on the hosts with role `monitoring`.
    #[serde(default)]
    pub monitoring: MonitoringConfig,
    #[serde(rename = "host", default)]
    pub hosts: Vec<HostConfig>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Patroni scope; also the Consul service name, so it must be DNS-safe.
    pub name: String,
    pub postgres_major: u32,
    /// Image reference every host runs (a registry path, or a local tag streamed to hosts).
    pub image: String,
    #[serde(default)]
    pub dcs: Dcs,
    #[serde(default)]
    pub backup_engine: BackupEngine,
    #[serde(default)]
    pub image_delivery: ImageDelivery,
    #[serde(default)]
    pub patroni: PatroniTiming,
    /// PostgreSQL parameters merged over pgctl's defaults (Patroni's bootstrap DCS section).
    #[serde(default)]
    pub postgresql_parameters: BTreeMap<String, toml::Value>,
    /// TLS for client connections: each member gets a server certificate from the CA in
    /// secrets.toml (postgres_ca_cert, postgres_ca_key), ssl = on, and `client_networks`
    /// connect over TLS only.
    #[serde(default)]
    pub tls: bool,
    /// Networks (CIDR) applications connect from: scram-sha-256 logins, `hostssl` with `tls`.
    #[serde(default = "all_networks")]
    pub client_networks: Vec<String>,
    /// Extensions `up` creates (idempotently) per database, e.g. `app = ["postgis", "timescaledb"]`;
    /// a database listed here that does not exist is created.
    #[serde(default)]
    pub extensions: BTreeMap<String, Vec<String>>,
}

fn all_networks() -> Vec<String> {
    vec!["0.0.0.0/0".into()]
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dcs {
    #[default]
    Consul,
    Etcd,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupEngine {
    #[default]
    Walg,
    Pgbackrest,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageDelivery {
    /// Stream the image from the control node's engine to each host (no registry needed).
    #[default]
    Stream,
    /// Hosts pull `cluster.image` from a registry with credentials from secrets.
    Registry,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatroniTiming {
    pub ttl: u32,
    pub loop_wait: u32,
    pub retry_timeout: u32,
    pub maximum_lag_on_failover: u64,
    pub synchronous_mode: bool,
    pub synchronous_mode_strict: bool,
}

impl Default for PatroniTiming {
    fn default() -> Self {
        // Patroni's own defaults; they obey loop_wait + 2 * retry_timeout <= ttl.
        PatroniTiming {
            ttl: 30,
            loop_wait: 10,
            retry_timeout: 10,
            maximum_lag_on_failover: 1_048_576,
            // Safe by default: no acknowledged commit is lost on failover (see hosts.toml.j2).
            synchronous_mode: true,
            synchronous_mode_strict: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// `https://host:port`; pgBackRest only speaks HTTPS to S3.
    pub s3_endpoint: String,
    pub s3_bucket: String,
    /// One prefix per cluster: two clusters archiving into one prefix corrupt each other.
    pub s3_prefix: String,
    #[serde(default = "default_region")]
    pub s3_region: String,
    #[serde(default = "default_true")]
    pub s3_path_style: bool,
    /// CA bundle for an S3 endpoint with a private certificate (relative to hosts.toml).
    #[serde(default)]
    pub s3_ca_file: Option<PathBuf>,
    /// IP address the endpoint's host name resolves to inside the containers, for an endpoint
    /// without DNS (TLS still verifies the name; pgBackRest does not verify IP addresses).
    #[serde(default)]
    pub s3_address: Option<String>,
    #[serde(default = "default_schedule")]
    pub schedule: String,
    #[serde(default = "default_keep_full")]
    pub keep_full: u32,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_true() -> bool {
    true
}
fn default_schedule() -> String {
    // The Compose deployment's nightly full backup (postgres_backup_cron_*).
    "20 5 * * *".into()
}
fn default_keep_full() -> u32 {
    7
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StandbyConfig {
    /// The server the standby leader streams from (its replicas cascade from the standby
    /// leader): a migration's source, or the primary cluster's leader (or its HAProxy).
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// A physical replication slot on that server, so it keeps the WAL the standby still needs.
    #[serde(default)]
    pub primary_slot_name: Option<String>,
    /// A disaster-recovery standby: `s3://BUCKET/PREFIX` of the primary cluster's archive on
    /// this cluster's S3 service ([backup] endpoint, CA and keys), read with the read-only key.
    /// The standby leader bootstraps from its newest backup and replays its WAL whenever
    /// streaming from `host` is not possible.
    #[serde(default)]
    pub archive: Option<String>,
    /// The primary's backup engine [default: this cluster's].
    #[serde(default)]
    pub archive_engine: Option<BackupEngine>,
    /// The primary's pgBackRest stanza (its cluster name) [default: this cluster's name].
    #[serde(default)]
    pub archive_stanza: Option<String>,
}

fn default_pg_port() -> u16 {
    5432
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// HAProxy's port 5001 (and 5003) stops routing to a replica this far behind (MiB).
    pub replica_max_lag_mb: u64,
    /// HAProxy's statistics page (HTTP, read-only).
    pub haproxy_stats_port: u16,
    pub pgbouncer_port: u16,
    /// PgBouncer: `transaction` (default), `session` or `statement`.
    pub pgbouncer_pool_mode: String,
    /// Server connections per database and user.
    pub pgbouncer_pool_size: u32,
    pub pgbouncer_max_client_conn: u32,
    /// The virtual IP the leader holds (role `vip`), with its prefix length: `10.0.0.100/24`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip: Option<String>,
    /// The network interface the virtual IP goes on, on every `vip` host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vip_interface: Option<String>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            replica_max_lag_mb: 100,
            haproxy_stats_port: 7000,
            pgbouncer_port: 6432,
            pgbouncer_pool_mode: "transaction".into(),
            pgbouncer_pool_size: 20,
            pgbouncer_max_client_conn: 1000,
            vip: None,
            vip_interface: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// How often Prometheus scrapes and evaluates its rules (a Prometheus duration).
    pub scrape_interval: String,
    /// WAL archiving failing (or stuck with WAL waiting) this long fires an alert.
    pub archive_alert_after: String,
    /// A member (or the leader) missing this long fires an alert.
    pub member_down_after: String,
    /// The newest full backup in S3 older than this fires an alert (a daily schedule: 26 h).
    pub backup_max_age_hours: u32,
    /// Alertmanager posts alerts here (a webhook receiver); without it they are only shown
    /// (`pgctl status`, Alertmanager's page).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            scrape_interval: "15s".into(),
            archive_alert_after: "5m".into(),
            member_down_after: "1m".into(),
            backup_max_age_hours: 26,
            webhook_url: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Registry host (e.g. `registry.gitlab.com`) used for login when hosts pull.
    pub server: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub name: String,
    /// `unix:///var/run/docker.sock`, `tcp://host:2376` (mutual TLS) or `ssh://user@host`.
    pub endpoint: String,
    /// LAN address the cluster members use to reach each other.
    pub address: String,
    pub roles: Vec<Role>,
    /// CA, client certificate and key for a `tcp://` endpoint (paths relative to hosts.toml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// A directory in the docker CLI's DOCKER_CERT_PATH layout (ca.pem, cert.pem, key.pem).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_dir: Option<PathBuf>,
    /// Allow a plain-text `tcp://` endpoint (anyone on the network then controls the host).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ConsulServer,
    ConsulClient,
    Etcd,
    Patroni,
    /// HAProxy: ports 5000 (leader), 5001 (replicas), 5002 (sync standby), 5003 (async).
    Haproxy,
    /// PgBouncer in front of this host's HAProxy (needs role `haproxy` too).
    Pgbouncer,
    /// vip-manager: the virtual IP follows the leader (on Patroni hosts).
    Vip,
    /// Prometheus + Alertmanager (postgres_exporter then runs on every Patroni host).
    Monitoring,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::ConsulServer => "consul-server",
            Role::ConsulClient => "consul-client",
            Role::Etcd => "etcd",
            Role::Patroni => "patroni",
            Role::Haproxy => "haproxy",
            Role::Pgbouncer => "pgbouncer",
            Role::Vip => "vip",
            Role::Monitoring => "monitoring",
        })
    }
}

impl HostConfig {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

impl HostsFile {
    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// A secret value: never printed by `Debug`, so it cannot leak through logs or error chains.
#[derive(Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsFile {
    #[serde(default)]
    pub superuser_password: Option<Secret>,
    #[serde(default)]
    pub replication_password: Option<Secret>,
    /// pg_rewind user's password (Patroni rewinds a former leader instead of re-cloning it).
    #[serde(default)]
    pub rewind_password: Option<Secret>,
    /// Basic auth for Patroni's REST API write endpoints.
    #[serde(default)]
    pub rest_api_password: Option<Secret>,
    /// Consul gossip encryption key: 32 random bytes, base64 (as `consul keygen`).
    #[serde(default)]
    pub consul_gossip_key: Option<Secret>,
    /// Consul ACL tokens (secret ids, UUIDs). Consul runs default-deny: the management token
    /// bootstraps the servers and is what pgctl uses on them; agents register their node with
    /// the agent token; Patroni reaches only its own KV prefix with the Patroni token.
    #[serde(default)]
    pub consul_management_token: Option<Secret>,
    #[serde(default)]
    pub consul_agent_token: Option<Secret>,
    #[serde(default)]
    pub consul_patroni_token: Option<Secret>,
    /// Client-side encryption of backups and archived WAL (WAL-G's libsodium key, pgBackRest's
    /// repository cipher); at least 25 characters. Without it backups reach S3 unencrypted.
    #[serde(default)]
    pub backup_encryption_key: Option<Secret>,
    /// The CA that signs the members' PostgreSQL server certificates (`tls = true`), PEM.
    #[serde(default)]
    pub postgres_ca_cert: Option<Secret>,
    #[serde(default)]
    pub postgres_ca_key: Option<Secret>,
    /// PgBouncer's own login (role `pgbouncer`): it looks other users up through a
    /// SECURITY DEFINER function, so no list of passwords is kept in a file.
    #[serde(default)]
    pub pgbouncer_password: Option<Secret>,
    /// postgres_exporter's login (role `monitoring`): member of pg_monitor, nothing more.
    #[serde(default)]
    pub monitoring_password: Option<Secret>,
    #[serde(default)]
    pub s3: S3Secrets,
    #[serde(default)]
    pub registry: RegistrySecrets,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Secrets {
    #[serde(default)]
    pub access_key_id: Option<Secret>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Read-only key: used to read backups for verification and clones, which must never write.
    #[serde(default)]
    pub readonly_access_key_id: Option<Secret>,
    #[serde(default)]
    pub readonly_secret_access_key: Option<Secret>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySecrets {
    #[serde(default)]
    pub username: Option<Secret>,
    #[serde(default)]
    pub password: Option<Secret>,
}
