//! Semantic checks on parsed configuration. Each finding is (severity, key path, message);
//! `mod.rs` maps the key path to a line of the file.

use super::cron;
use super::model::*;
use super::syntax::{in_network, is_cidr, is_dns_label, is_prometheus_duration, is_sql_identifier, is_uuid};
use super::Severity::{self, Error, Warning};
use base64::Engine as _;
use std::collections::HashMap;
use std::path::Path;

type Finding = (Severity, String, String);

pub const SUPPORTED_MAJORS: std::ops::RangeInclusive<u32> = 13..=17;

pub fn hosts(cfg: &HostsFile, base: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut err = |key: String, msg: String| out.push((Error, key, msg));

    let c = &cfg.cluster;
    if !is_dns_label(&c.name) {
        err("cluster.name".into(), format!("`{}` is not DNS-safe: use 1-63 lowercase letters, digits and '-', not starting or ending with '-' (it becomes the Patroni scope and the Consul service name)", c.name));
    }
    if !SUPPORTED_MAJORS.contains(&c.postgres_major) {
        err(
            "cluster.postgres_major".into(),
            format!("PostgreSQL {} is not supported; allowed: 13, 14, 15, 16, 17", c.postgres_major),
        );
    }
    if c.image.trim().is_empty() || c.image.contains(char::is_whitespace) {
        err(
            "cluster.image".into(),
            "must be an image reference such as `registry.example.com/db/pgctl-postgres:15`".into(),
        );
    }
    timing(&c.patroni, &mut err);
    for net in &c.client_networks {
        if !is_cidr(net) {
            err(
                "cluster.client_networks".into(),
                format!("`{net}` is not a network in CIDR form such as 10.20.0.0/16 (or 0.0.0.0/0 for any IPv4 client)"),
            );
        }
    }
    for (db, extensions) in &c.extensions {
        if !is_sql_identifier(db) {
            err(
                format!("cluster.extensions.{db}"),
                format!("`{db}` is not a plain database name: use lowercase letters, digits and '_'"),
            );
        }
        for e in extensions.iter().filter(|e| !is_sql_identifier(e)) {
            err(
                format!("cluster.extensions.{db}"),
                format!("`{e}` is not an extension name: use lowercase letters, digits and '_' (e.g. postgis, timescaledb)"),
            );
        }
    }
    if c.image_delivery == ImageDelivery::Registry && cfg.registry.is_none() {
        err(
            "cluster.image_delivery".into(),
            "`registry` delivery needs a [registry] section with `server`".into(),
        );
    }
    if let Some(b) = &cfg.backup {
        backup(b, c.backup_engine, base, &mut err);
    }
    if let Some(s) = &cfg.standby {
        standby(s, cfg, &mut err);
    }
    hosts_list(cfg, base, &mut err);
    access(cfg, &mut err);

    // Warnings: allowed, but a DBA should know.
    let dcs_role = match c.dcs {
        Dcs::Consul => Role::ConsulServer,
        Dcs::Etcd => Role::Etcd,
    };
    let voters = cfg.hosts.iter().filter(|h| h.has_role(dcs_role)).count();
    if voters > 0 && voters % 2 == 1 && voters < 3 {
        out.push((
            Warning,
            "host".into(),
            format!("only {voters} `{dcs_role}` host: the DCS has no fault tolerance (3 or 5 recommended)"),
        ));
    }
    if cfg.backup.is_none() {
        out.push((
            Warning,
            "backup".into(),
            "no [backup] section: no WAL archiving, no point-in-time restore".into(),
        ));
    } else if let Some(b) = &cfg.backup {
        if b.keep_full < 2 {
            out.push((
                Warning,
                "backup.keep_full".into(),
                "keeping fewer than 2 full backups leaves nothing to fall back on if the newest is damaged".into(),
            ));
        }
    }
    out
}

/// [access] and the roles that use it: PgBouncer sits in front of its host's HAProxy, the
/// virtual IP goes to a Patroni host's interface.
fn access(cfg: &HostsFile, err: &mut impl FnMut(String, String)) {
    let a = &cfg.access;
    if a.replica_max_lag_mb == 0 {
        err("access.replica_max_lag_mb".into(), "must be at least 1 (MiB)".into());
    }
    if !["transaction", "session", "statement"].contains(&a.pgbouncer_pool_mode.as_str()) {
        err(
            "access.pgbouncer_pool_mode".into(),
            format!("`{}`: allowed are transaction, session, statement", a.pgbouncer_pool_mode),
        );
    }
    if a.pgbouncer_pool_size == 0 || a.pgbouncer_max_client_conn == 0 {
        err(
            "access".into(),
            "pgbouncer_pool_size and pgbouncer_max_client_conn must be at least 1".into(),
        );
    }
    let taken = [5000, 5001, 5002, 5003, 5432, 8008];
    for (key, port) in [("haproxy_stats_port", a.haproxy_stats_port), ("pgbouncer_port", a.pgbouncer_port)] {
        if taken.contains(&port) || port < 1024 {
            err(
                format!("access.{key}"),
                format!("{port} is PostgreSQL's, Patroni's, HAProxy's or a privileged port: pick another"),
            );
        }
    }
    if a.haproxy_stats_port == a.pgbouncer_port {
        err("access.pgbouncer_port".into(), "is the same as haproxy_stats_port".into());
    }
    let m = &cfg.monitoring;
    for (key, value) in [
        ("scrape_interval", &m.scrape_interval),
        ("archive_alert_after", &m.archive_alert_after),
        ("member_down_after", &m.member_down_after),
    ] {
        if !is_prometheus_duration(value) {
            err(
                format!("monitoring.{key}"),
                format!("`{value}` is not a duration such as 30s, 5m or 1h"),
            );
        }
    }
    if m.backup_max_age_hours == 0 {
        err("monitoring.backup_max_age_hours".into(), "must be at least 1".into());
    }
    if let Some(url) = &m.webhook_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            err(
                "monitoring.webhook_url".into(),
                format!("`{url}`: expected an http:// or https:// URL"),
            );
        }
    }
    let mut vip_hosts = 0;
    for (i, h) in cfg.hosts.iter().enumerate() {
        // PostgreSQL sees connections through HAProxy as coming from HAProxy's host: pg_hba
        // (client_networks; the members' own addresses with `tls`) must let them in.
        let hba_covers =
            (cfg.cluster.tls && h.has_role(Role::Patroni)) || cfg.cluster.client_networks.iter().any(|n| in_network(&h.address, n));
        if h.has_role(Role::Haproxy) && h.address.parse::<std::net::IpAddr>().is_ok() && !hba_covers {
            err(
                "cluster.client_networks".into(),
                format!(
                    "does not include {} (`{}`, role `haproxy`): PostgreSQL sees connections through HAProxy as coming from that host and would refuse them; add its network",
                    h.address, h.name
                ),
            );
        }
        if h.has_role(Role::Pgbouncer) && !h.has_role(Role::Haproxy) {
            err(
                format!("host[{i}].roles"),
                format!("`{}` has role `pgbouncer` without `haproxy`: PgBouncer sends its connections through the host's HAProxy (port 5000, always the leader); add `haproxy`", h.name),
            );
        }
        if h.has_role(Role::Vip) {
            vip_hosts += 1;
            if !h.has_role(Role::Patroni) {
                err(
                    format!("host[{i}].roles"),
                    format!(
                        "`{}` has role `vip` without `patroni`: the virtual IP moves between the database hosts with the leader",
                        h.name
                    ),
                );
            }
        }
    }
    match (&a.vip, &a.vip_interface) {
        (Some(vip), _) if !vip.contains('/') || !is_cidr(vip) => err(
            "access.vip".into(),
            format!("`{vip}`: expected the address with its prefix length, such as 10.0.0.100/24"),
        ),
        // vip-manager announces the address with gratuitous ARP, which IPv6 does not have.
        (Some(vip), _) if vip.split('/').next().is_none_or(|a| a.parse::<std::net::Ipv4Addr>().is_err()) => err(
            "access.vip".into(),
            format!("`{vip}`: the virtual IP must be an IPv4 address (vip-manager announces it with ARP)"),
        ),
        (Some(_), None) => err(
            "access.vip_interface".into(),
            "missing: the interface the virtual IP goes on (e.g. eth0)".into(),
        ),
        (None, _) if vip_hosts > 0 => err(
            "access.vip".into(),
            "missing: hosts have role `vip`; set the virtual IP with its prefix length, such as 10.0.0.100/24".into(),
        ),
        _ => {}
    }
}

fn standby(s: &StandbyConfig, cfg: &HostsFile, err: &mut impl FnMut(String, String)) {
    if s.host.is_none() && s.archive.is_none() {
        err(
            "standby".into(),
            "a standby cluster needs `host` (the primary to stream from), `archive` (the primary's s3://BUCKET/PREFIX), or both".into(),
        );
    }
    if let Some(archive) = &s.archive {
        if split_s3_url(archive).is_none() {
            err("standby.archive".into(), format!("`{archive}`: expected s3://BUCKET/PREFIX"));
        } else if cfg.backup.is_none() {
            err(
                "standby.archive".into(),
                "reading the primary's archive needs a [backup] section (this cluster's S3 endpoint, CA and keys, and its own prefix for after the promotion)".into(),
            );
        } else if let Some(b) = &cfg.backup {
            if split_s3_url(archive) == Some((b.s3_bucket.as_str(), b.s3_prefix.trim_matches('/'))) {
                err(
                    "standby.archive".into(),
                    "is this cluster's own backup.s3_prefix: a standby cluster archives into a prefix of its own once promoted".into(),
                );
            }
        }
    }
    if s.archive.is_none() && (s.archive_engine.is_some() || s.archive_stanza.is_some()) {
        err("standby.archive".into(), "archive_engine and archive_stanza need `archive`".into());
    }
}

/// `s3://BUCKET/PREFIX` as (bucket, prefix without surrounding slashes).
pub fn split_s3_url(url: &str) -> Option<(&str, &str)> {
    let (bucket, prefix) = url.strip_prefix("s3://")?.split_once('/')?;
    let prefix = prefix.trim_matches('/');
    (!bucket.is_empty() && !prefix.is_empty()).then_some((bucket, prefix))
}

fn timing(t: &PatroniTiming, err: &mut impl FnMut(String, String)) {
    if t.ttl < 20 {
        err(
            "cluster.patroni.ttl".into(),
            format!("ttl = {} is below Patroni's minimum of 20", t.ttl),
        );
    }
    if t.loop_wait < 1 {
        err("cluster.patroni.loop_wait".into(), "loop_wait must be at least 1 second".into());
    }
    if t.loop_wait + 2 * t.retry_timeout > t.ttl {
        err(
            "cluster.patroni.ttl".into(),
            format!(
                "Patroni requires loop_wait + 2 * retry_timeout <= ttl, but {} + 2 * {} = {} > {}; e.g. ttl = 30, loop_wait = 10, retry_timeout = 10",
                t.loop_wait,
                t.retry_timeout,
                t.loop_wait + 2 * t.retry_timeout,
                t.ttl
            ),
        );
    }
    if t.synchronous_mode_strict && !t.synchronous_mode {
        err(
            "cluster.patroni.synchronous_mode_strict".into(),
            "synchronous_mode_strict needs synchronous_mode = true".into(),
        );
    }
}

fn backup(b: &BackupConfig, engine: BackupEngine, base: &Path, err: &mut impl FnMut(String, String)) {
    match b.s3_endpoint.split_once("://") {
        Some(("https", rest)) if !rest.is_empty() => {}
        Some(("http", rest)) if !rest.is_empty() => {
            if engine == BackupEngine::Pgbackrest {
                err(
                    "backup.s3_endpoint".into(),
                    "pgBackRest only speaks HTTPS to S3; use an https:// endpoint".into(),
                );
            }
        }
        _ => err(
            "backup.s3_endpoint".into(),
            format!("`{}` is not an http(s) URL such as `https://s3.example.com`", b.s3_endpoint),
        ),
    }
    if b.s3_bucket.is_empty() {
        err("backup.s3_bucket".into(), "must not be empty".into());
    }
    if b.s3_prefix.trim_matches('/').is_empty() {
        err(
            "backup.s3_prefix".into(),
            "must name a prefix of this cluster's own (e.g. the cluster name): two clusters in one prefix corrupt each other's archives"
                .into(),
        );
    }
    if let Err(e) = cron::validate(&b.schedule) {
        err("backup.schedule".into(), format!("invalid cron expression `{}`: {e}", b.schedule));
    }
    if b.keep_full == 0 {
        err("backup.keep_full".into(), "must be at least 1 (2 or more recommended)".into());
    }
    if let Some(addr) = &b.s3_address {
        if addr.parse::<std::net::IpAddr>().is_err() {
            err("backup.s3_address".into(), format!("`{addr}` is not an IP address"));
        }
    }
    if let Some(ca) = &b.s3_ca_file {
        let p = super::resolve(base, ca);
        if !p.is_file() {
            err("backup.s3_ca_file".into(), format!("file {} does not exist", p.display()));
        }
    }
}

fn hosts_list(cfg: &HostsFile, base: &Path, err: &mut impl FnMut(String, String)) {
    if cfg.hosts.is_empty() {
        err("host".into(), "no [[host]] entries: list at least one host".into());
        return;
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<&str, usize> = HashMap::new();
    for (i, h) in cfg.hosts.iter().enumerate() {
        let key = |k: &str| format!("host[{i}].{k}");
        if !is_dns_label(&h.name) {
            err(
                key("name"),
                format!("`{}` is not a valid host name (lowercase letters, digits, '-')", h.name),
            );
        }
        if let Some(first) = names.insert(&h.name, i) {
            err(key("name"), format!("duplicate host name `{}` (also host[{first}])", h.name));
        }
        if h.address.trim().is_empty() || h.address.contains(char::is_whitespace) {
            err(key("address"), "must be the host's LAN IP address or DNS name".into());
        } else if let Some(first) = addresses.insert(&h.address, i) {
            err(
                key("address"),
                format!("duplicate address {} (also host[{first}] `{}`)", h.address, cfg.hosts[first].name),
            );
        }
        if h.roles.is_empty() {
            err(
                key("roles"),
                "no roles: allowed are consul-server, consul-client, etcd, patroni, haproxy, pgbouncer, vip, monitoring".into(),
            );
        }
        endpoint(h, base, &key, err);
    }
    let count = |r: Role| cfg.hosts.iter().filter(|h| h.has_role(r)).count();
    if count(Role::Patroni) == 0 {
        err("host".into(), "no host has role `patroni`: nothing would run PostgreSQL".into());
    }
    let (role, dcs) = match cfg.cluster.dcs {
        Dcs::Consul => (Role::ConsulServer, "consul"),
        Dcs::Etcd => (Role::Etcd, "etcd"),
    };
    let n = count(role);
    if n == 0 {
        err(
            "cluster.dcs".into(),
            format!("dcs = \"{dcs}\" but no host has role `{role}`: give 3 (or 5) hosts that role"),
        );
    } else if n % 2 == 0 {
        err("cluster.dcs".into(), format!("{n} hosts have role `{role}`: an even number gains no fault tolerance over {} and risks split votes; use an odd number (3 or 5)", n - 1));
    }
    if cfg.cluster.dcs == Dcs::Etcd && count(Role::ConsulServer) + count(Role::ConsulClient) > 0 {
        err("cluster.dcs".into(), "hosts have consul roles but dcs = \"etcd\"".into());
    }
    if cfg.cluster.dcs == Dcs::Consul && count(Role::Etcd) > 0 {
        err("cluster.dcs".into(), "hosts have role `etcd` but dcs = \"consul\"".into());
    }
}

fn endpoint(h: &HostConfig, base: &Path, key: &dyn Fn(&str) -> String, err: &mut impl FnMut(String, String)) {
    let has_tls_files = h.tls_ca.is_some() || h.tls_cert.is_some() || h.tls_key.is_some();
    match h.endpoint.split_once("://") {
        Some(("unix", path)) if path.starts_with('/') => {}
        Some(("tcp", rest)) if !rest.is_empty() => {
            if !rest.contains(':') {
                err(key("endpoint"), format!("`{}` has no port (Docker's TLS port is 2376)", h.endpoint));
            }
            if h.tls_dir.is_none() && !has_tls_files && !h.insecure {
                err(key("endpoint"), "a tcp:// endpoint needs mutual TLS: set tls_ca, tls_cert and tls_key (or tls_dir); `insecure = true` allows plain text".into());
            }
        }
        Some(("ssh", rest)) if !rest.is_empty() => {
            // A port inside the ssh URI is broken in bollard 0.21; an ssh config alias works.
            if rest.rsplit('@').next().is_some_and(|hp| hp.contains(':')) {
                err(key("endpoint"), "a port in an ssh:// endpoint is not supported: define a Host alias with Port in ~/.ssh/config and use ssh://user@alias".into());
            }
        }
        _ => err(
            key("endpoint"),
            format!(
                "`{}` is not a Docker endpoint: allowed are unix:///path/docker.sock, tcp://host:port (mutual TLS), ssh://user@host",
                h.endpoint
            ),
        ),
    }
    if has_tls_files && h.tls_dir.is_some() {
        err(key("tls_dir"), "set either tls_dir or tls_ca/tls_cert/tls_key, not both".into());
    }
    if has_tls_files && !(h.tls_ca.is_some() && h.tls_cert.is_some() && h.tls_key.is_some()) {
        err(key("tls_ca"), "mutual TLS needs all three of tls_ca, tls_cert and tls_key".into());
    }
    let files: Vec<(&str, std::path::PathBuf)> = match (&h.tls_dir, &h.tls_ca, &h.tls_cert, &h.tls_key) {
        (Some(d), ..) => ["ca.pem", "cert.pem", "key.pem"]
            .iter()
            .map(|f| ("tls_dir", super::resolve(base, d).join(f)))
            .collect(),
        (None, ca, cert, k) => [("tls_ca", ca), ("tls_cert", cert), ("tls_key", k)]
            .into_iter()
            .filter_map(|(n, p)| p.as_ref().map(|p| (n, super::resolve(base, p))))
            .collect(),
    };
    for (field, path) in files {
        if !path.is_file() {
            err(key(field), format!("file {} does not exist", path.display()));
        }
    }
}

pub fn secrets(hosts: &HostsFile, s: &SecretsFile) -> Vec<(Severity, String, &'static str)> {
    let set = |v: &Option<Secret>| v.as_ref().is_some_and(|s| !s.0.is_empty());
    // (present, key, why) for every secret this configuration needs.
    let mut required = vec![
        (
            set(&s.superuser_password),
            "superuser_password",
            "missing: the postgres superuser's password (or set PGCTL_SUPERUSER_PASSWORD)",
        ),
        (
            set(&s.replication_password),
            "replication_password",
            "missing: the replication user's password (or set PGCTL_REPLICATION_PASSWORD)",
        ),
        (
            set(&s.rewind_password),
            "rewind_password",
            "missing: the pg_rewind user's password (or set PGCTL_REWIND_PASSWORD)",
        ),
        (
            set(&s.rest_api_password),
            "rest_api_password",
            "missing: basic-auth password for Patroni's REST API (or set PGCTL_REST_API_PASSWORD)",
        ),
    ];
    if hosts.cluster.dcs == Dcs::Consul {
        required.push((
            set(&s.consul_gossip_key),
            "consul_gossip_key",
            "missing: Consul gossip key, 32 random bytes in base64 as `consul keygen` prints (or set PGCTL_CONSUL_GOSSIP_KEY)",
        ));
        for (slot, key, why) in consul_tokens(s) {
            required.push((set(slot), key, why));
        }
    }
    if hosts.cluster.tls {
        let why = "missing: tls = true needs the CA of the members' certificates (`pgctl init --add-tls-ca` adds one)";
        required.push((set(&s.postgres_ca_cert), "postgres_ca_cert", why));
        required.push((set(&s.postgres_ca_key), "postgres_ca_key", why));
    }
    if hosts.hosts.iter().any(|h| h.has_role(Role::Pgbouncer)) {
        required.push((
            set(&s.pgbouncer_password),
            "pgbouncer_password",
            "missing: PgBouncer's own login (role `pgbouncer`); add a random ASCII password of 24+ characters, e.g. from `openssl rand -hex 16`",
        ));
        let why = "missing: PgBouncer serves TLS with a certificate from the cluster's CA (`pgctl init --add-tls-ca` adds one)";
        if !hosts.cluster.tls {
            required.push((set(&s.postgres_ca_cert), "postgres_ca_cert", why));
            required.push((set(&s.postgres_ca_key), "postgres_ca_key", why));
        }
    }
    if hosts.hosts.iter().any(|h| h.has_role(Role::Monitoring)) {
        required.push((
            set(&s.monitoring_password),
            "monitoring_password",
            "missing: postgres_exporter's login (role `monitoring`); add a random ASCII password of 24+ characters, e.g. from `openssl rand -hex 16`",
        ));
    }
    if hosts.backup.is_some() {
        required.push((
            set(&s.s3.access_key_id),
            "s3.access_key_id",
            "missing: S3 read-write key id for archiving and backups (or set PGCTL_S3_ACCESS_KEY_ID)",
        ));
        required.push((
            set(&s.s3.secret_access_key),
            "s3.secret_access_key",
            "missing: S3 read-write secret key (or set PGCTL_S3_SECRET_ACCESS_KEY)",
        ));
    }
    if hosts.cluster.image_delivery == ImageDelivery::Registry {
        required.push((
            set(&s.registry.username),
            "registry.username",
            "missing: registry user (e.g. a GitLab deploy token) for hosts to pull the image",
        ));
        required.push((
            set(&s.registry.password),
            "registry.password",
            "missing: registry password or token",
        ));
    }
    let mut out: Vec<_> = required
        .into_iter()
        .filter(|(present, ..)| !present)
        .map(|(_, key, why)| (Error, key.to_string(), why))
        .collect();

    if let Some(k) = s.consul_gossip_key.as_ref().filter(|k| !k.0.is_empty()) {
        if !base64::engine::general_purpose::STANDARD
            .decode(k.expose())
            .is_ok_and(|b| b.len() == 32)
        {
            out.push((
                Error,
                "consul_gossip_key".into(),
                "not valid: must be 32 bytes encoded in base64 (as `consul keygen` prints)",
            ));
        }
    }
    for (slot, key, _) in consul_tokens(s) {
        if slot.as_ref().is_some_and(|t| !t.0.is_empty() && !is_uuid(t.expose())) {
            out.push((
                Error,
                key.into(),
                "not valid: a Consul token's secret id is a UUID (as `uuidgen` prints)",
            ));
        }
    }
    if let Some(k) = s.backup_encryption_key.as_ref().filter(|k| !k.0.is_empty()) {
        // WAL-G's libsodium crypter refuses shorter keys.
        if k.expose().len() < 25 {
            out.push((
                Error,
                "backup_encryption_key".into(),
                "too short: the backup encryption key needs at least 25 characters",
            ));
        }
    } else if hosts.backup.is_some() {
        out.push((
            Warning,
            "backup_encryption_key".into(),
            "none: backups and WAL go to S3 unencrypted (anyone who can read the bucket reads the data); `pgctl init` generates one. Set it only for a new, empty prefix: a repository written unencrypted cannot be read with a key",
        ));
    }
    let readonly_key = set(&s.s3.readonly_access_key_id) && set(&s.s3.readonly_secret_access_key);
    if hosts.backup.is_some() && !readonly_key && hosts.hosts.iter().any(|h| h.has_role(Role::Monitoring)) {
        out.push((
            Error,
            "s3.readonly_access_key_id".into(),
            "missing: monitoring reads the age of the newest backup from S3 with the read-only key (role `monitoring` with [backup]); add s3.readonly_access_key_id and s3.readonly_secret_access_key",
        ));
    } else if hosts.backup.is_some() && !readonly_key {
        out.push((
            Warning,
            "s3.readonly_access_key_id".into(),
            "no read-only S3 key: backup verification and clones will be refused (they must not be able to write)",
        ));
    }
    out
}

/// The Consul ACL tokens secrets.toml holds, with their keys and what a missing one is for.
fn consul_tokens(s: &SecretsFile) -> [(&Option<Secret>, &'static str, &'static str); 3] {
    [
        (
            &s.consul_management_token,
            "consul_management_token",
            "missing: Consul's initial management token, a UUID (or set PGCTL_CONSUL_MANAGEMENT_TOKEN)",
        ),
        (
            &s.consul_agent_token,
            "consul_agent_token",
            "missing: the token Consul agents register their node with, a UUID (or set PGCTL_CONSUL_AGENT_TOKEN)",
        ),
        (
            &s.consul_patroni_token,
            "consul_patroni_token",
            "missing: the token Patroni reaches its Consul KV prefix with, a UUID (or set PGCTL_CONSUL_PATRONI_TOKEN)",
        ),
    ]
}
