//! `hosts.toml` and `secrets.toml`: loading, environment overrides and validation.
//! Every problem names the file, the line and the key, and says what is allowed.

pub mod cron;
pub mod edit;
pub mod host_certs;
pub mod init;
pub mod locate;
pub mod model;
pub mod syntax;
mod validate;

pub use syntax::is_dns_label as validate_name;
pub use validate::split_s3_url;

pub use model::*;

use locate::{line_of, locate, KeyPath};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a configuration file.
#[derive(Debug, Clone)]
pub struct Problem {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Problems found in the configuration; an `Err` of loading means at least one is an error.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_problems(.0))]
pub struct ConfigError(pub Vec<Problem>);

fn render_problems(problems: &[Problem]) -> String {
    let errors = problems.iter().filter(|p| p.severity == Severity::Error).count();
    let mut out = format!("configuration is invalid ({errors} error(s)); nothing was changed\n");
    for p in problems {
        out.push_str(&format!("  {p}\n"));
    }
    out.trim_end().to_string()
}

/// A loaded, validated configuration: hosts, secrets, and where they came from.
#[derive(Debug, Clone)]
pub struct Config {
    pub hosts_path: PathBuf,
    pub secrets_path: PathBuf,
    pub hosts: HostsFile,
    pub secrets: SecretsFile,
    /// Warnings that did not stop loading (printed by `check` and before changes).
    pub warnings: Vec<Problem>,
}

impl Config {
    /// Directory relative paths in hosts.toml are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.hosts_path.parent().unwrap_or(Path::new("."))
    }

    pub fn host(&self, name: &str) -> Option<&HostConfig> {
        self.hosts.host(name)
    }
}

pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// The default secrets file sits next to hosts.toml.
pub fn default_secrets_path(hosts_path: &Path) -> PathBuf {
    hosts_path.parent().unwrap_or(Path::new(".")).join("secrets.toml")
}

/// hosts.toml parsed but not validated (for writing certificates a valid file will point to).
pub fn load_hosts(hosts_path: &Path) -> Result<HostsFile, ConfigError> {
    parse(hosts_path, &read(hosts_path)?)
}

/// Loads and validates both files. `Err` carries every problem found (not only the first).
pub fn load(hosts_path: &Path, secrets_path: Option<&Path>) -> Result<Config, ConfigError> {
    let secrets_path = secrets_path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_secrets_path(hosts_path));
    let hosts_src = read(hosts_path)?;
    let hosts: HostsFile = parse(hosts_path, &hosts_src)?;
    let secrets = load_secrets(&secrets_path)?;

    let mut problems = Vec::new();
    let base = hosts_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    for (severity, key, message) in validate::hosts(&hosts, &base) {
        let line = locate(&hosts_src, &KeyPath::parse(&key));
        problems.push(Problem {
            severity,
            file: hosts_path.to_path_buf(),
            line,
            key,
            message,
        });
    }
    let secrets_src = std::fs::read_to_string(&secrets_path).unwrap_or_default();
    for (severity, key, message) in validate::secrets(&hosts, &secrets) {
        let line = locate(&secrets_src, &KeyPath::parse(&key));
        let file = secrets_path.clone();
        problems.push(Problem {
            severity,
            file,
            line,
            key,
            message: message.to_string(),
        });
    }
    if problems.iter().any(|p| p.severity == Severity::Error) {
        return Err(ConfigError(problems));
    }
    Ok(Config {
        hosts_path: hosts_path.to_path_buf(),
        secrets_path,
        hosts,
        secrets,
        warnings: problems,
    })
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::NotFound {
            " (run `pgctl init` to write one, or pass --hosts FILE)"
        } else {
            ""
        };
        single(path, None, "", format!("cannot read: {e}{hint}"))
    })
}

fn single(path: &Path, line: Option<usize>, key: &str, message: String) -> ConfigError {
    ConfigError(vec![Problem {
        severity: Severity::Error,
        file: path.to_path_buf(),
        line,
        key: key.into(),
        message,
    }])
}

/// Parses TOML into `T`, turning serde's message (unknown field, missing field, wrong type)
/// into a problem with the line it points at.
pub fn parse<T: serde::de::DeserializeOwned>(path: &Path, src: &str) -> Result<T, ConfigError> {
    toml::from_str(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start));
        let key = e
            .span()
            .map(|s| src[s].trim().trim_matches(|c| c == '[' || c == ']').to_string())
            .filter(|k| !k.is_empty() && !k.contains('\n') && k.len() < 60)
            .unwrap_or_default();
        single(path, line, &key, e.message().trim().replace('\n', " "))
    })
}

/// Environment variables that override (or replace) `secrets.toml`, for CI where secrets come
/// from masked variables.
pub const SECRET_ENV: &[(&str, &str)] = &[
    ("PGCTL_SUPERUSER_PASSWORD", "superuser_password"),
    ("PGCTL_REPLICATION_PASSWORD", "replication_password"),
    ("PGCTL_REWIND_PASSWORD", "rewind_password"),
    ("PGCTL_REST_API_PASSWORD", "rest_api_password"),
    ("PGCTL_CONSUL_GOSSIP_KEY", "consul_gossip_key"),
    ("PGCTL_CONSUL_MANAGEMENT_TOKEN", "consul_management_token"),
    ("PGCTL_CONSUL_AGENT_TOKEN", "consul_agent_token"),
    ("PGCTL_CONSUL_PATRONI_TOKEN", "consul_patroni_token"),
    ("PGCTL_BACKUP_ENCRYPTION_KEY", "backup_encryption_key"),
    ("PGCTL_PGBOUNCER_PASSWORD", "pgbouncer_password"),
    ("PGCTL_MONITORING_PASSWORD", "monitoring_password"),
    ("PGCTL_S3_ACCESS_KEY_ID", "s3.access_key_id"),
    ("PGCTL_S3_SECRET_ACCESS_KEY", "s3.secret_access_key"),
    ("PGCTL_S3_READONLY_ACCESS_KEY_ID", "s3.readonly_access_key_id"),
    ("PGCTL_S3_READONLY_SECRET_ACCESS_KEY", "s3.readonly_secret_access_key"),
    ("PGCTL_REGISTRY_USER", "registry.username"),
    ("PGCTL_REGISTRY_PASSWORD", "registry.password"),
];

/// Reads `secrets.toml` (refusing one readable by group or others), then applies environment
/// overrides. A missing file is fine when the environment supplies what is needed.
pub fn load_secrets(path: &Path) -> Result<SecretsFile, ConfigError> {
    let mut secrets = if path.exists() {
        check_secret_permissions(path)?;
        let src = read(path)?;
        parse::<SecretsFile>(path, &src)?
    } else {
        SecretsFile::default()
    };
    for (var, key) in SECRET_ENV {
        if let Ok(value) = std::env::var(var) {
            if !value.is_empty() {
                *secret_slot(&mut secrets, key) = Some(Secret(value));
            }
        }
    }
    Ok(secrets)
}

fn secret_slot<'a>(s: &'a mut SecretsFile, key: &str) -> &'a mut Option<Secret> {
    match key {
        "superuser_password" => &mut s.superuser_password,
        "replication_password" => &mut s.replication_password,
        "rewind_password" => &mut s.rewind_password,
        "rest_api_password" => &mut s.rest_api_password,
        "consul_gossip_key" => &mut s.consul_gossip_key,
        "consul_management_token" => &mut s.consul_management_token,
        "consul_agent_token" => &mut s.consul_agent_token,
        "consul_patroni_token" => &mut s.consul_patroni_token,
        "backup_encryption_key" => &mut s.backup_encryption_key,
        "pgbouncer_password" => &mut s.pgbouncer_password,
        "monitoring_password" => &mut s.monitoring_password,
        "s3.access_key_id" => &mut s.s3.access_key_id,
        "s3.secret_access_key" => &mut s.s3.secret_access_key,
        "s3.readonly_access_key_id" => &mut s.s3.readonly_access_key_id,
        "s3.readonly_secret_access_key" => &mut s.s3.readonly_secret_access_key,
        "registry.username" => &mut s.registry.username,
        "registry.password" => &mut s.registry.password,
        other => unreachable!("unknown secret key {other}"),
    }
}

#[cfg(unix)]
fn check_secret_permissions(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| single(path, None, "", format!("cannot read: {e}")))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(single(
            path,
            None,
            "",
            format!(
                "secrets file is readable by group or others (mode {:o}); refusing to use it. Fix with: chmod 600 {}",
                mode & 0o777,
                path.display()
            ),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_secret_permissions(_: &Path) -> Result<(), ConfigError> {
    Ok(())
}

#[cfg(test)]
mod tests;
