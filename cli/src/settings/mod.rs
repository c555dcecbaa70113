//! Patroni's dynamic configuration (`pgctl config show | set | edit | diff`): read from and
//! written to the DCS through the leader's REST API (`GET`/`PATCH /config`), validated before
//! anything is sent, and kept in step with hosts.toml (`[cluster.patroni]` and
//! `[cluster.postgresql_parameters]`), which stays what `up` bootstraps a cluster with.

pub mod edit;
pub mod validate;

use crate::cluster::status;
use crate::config::Config;
use crate::docker::Engine;
use crate::{error, member};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
pub use validate::{Change, Key};

/// The dynamic configuration as the DCS holds it (Patroni's `GET /config`).
pub async fn live(leader: &Engine) -> Result<serde_json::Value> {
    member::patroni_get(leader, "/config").await
}

/// Patroni settings and PostgreSQL parameters of a dynamic configuration, flattened to
/// `key -> value` text (parameters under their own names).
pub fn flatten(config: &serde_json::Value) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let patroni = validate::PATRONI_KEYS
        .iter()
        .filter_map(|(k, _)| config.get(*k).map(|v| (k.to_string(), text(v))))
        .collect();
    let parameters = config["postgresql"]["parameters"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), text(v))).collect())
        .unwrap_or_default();
    (patroni, parameters)
}

/// What hosts.toml would bootstrap a cluster with, flattened like `flatten`.
pub fn from_hosts(cfg: &Config) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let t = &cfg.hosts.cluster.patroni;
    let patroni = BTreeMap::from([
        ("ttl".to_string(), t.ttl.to_string()),
        ("loop_wait".to_string(), t.loop_wait.to_string()),
        ("retry_timeout".to_string(), t.retry_timeout.to_string()),
        ("maximum_lag_on_failover".to_string(), t.maximum_lag_on_failover.to_string()),
        ("synchronous_mode".to_string(), t.synchronous_mode.to_string()),
        ("synchronous_mode_strict".to_string(), t.synchronous_mode_strict.to_string()),
    ]);
    let parameters = crate::cluster::spec::postgresql_parameters(cfg)
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect();
    (patroni, parameters)
}

/// A setting that differs between hosts.toml and the running cluster.
#[derive(Debug, Serialize)]
pub struct Difference {
    pub key: String,
    pub hosts_toml: Option<String>,
    pub cluster: Option<String>,
}

/// Where hosts.toml and the DCS disagree (values compared as PostgreSQL would read them:
/// `on`/`true`, quoting and case of enum words do not count).
pub fn differences(cfg: &Config, live: &serde_json::Value) -> Vec<Difference> {
    let (hp, hq) = from_hosts(cfg);
    let (lp, lq) = flatten(live);
    let mut out = Vec::new();
    for (prefix, ours, theirs) in [("", &hp, &lp), ("postgresql.parameters.", &hq, &lq)] {
        let keys: std::collections::BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
        for k in keys {
            let (a, b) = (ours.get(k), theirs.get(k));
            if a.map(|v| validate::normalized(v)) != b.map(|v| validate::normalized(v)) {
                out.push(Difference {
                    key: format!("{prefix}{k}"),
                    hosts_toml: a.cloned(),
                    cluster: b.cloned(),
                });
            }
        }
    }
    out
}

/// The result of `config set` / `config edit`.
#[derive(Debug, Serialize)]
pub struct Applied {
    pub changes: Vec<Change>,
    /// Parameters among the changes that take effect only after a restart.
    pub need_restart: Vec<String>,
    pub hosts_file_kept: Option<PathBuf>,
}

/// Sends `changes` (already validated) to the DCS and writes them into hosts.toml.
pub async fn apply(cfg: &Config, leader: &Engine, changes: &[Change]) -> Result<Applied> {
    let mut body = serde_json::json!({});
    for c in changes {
        let value = c.json_value();
        match &c.key {
            Key::Patroni(k) => body[k.as_str()] = value,
            Key::Parameter(p) => body["postgresql"]["parameters"][p.as_str()] = value,
        }
    }
    let (code, text) = member::patroni_api(leader, "PATCH", "/config", &body).await?;
    if !(200..300).contains(&code) {
        bail!("Patroni refused the change (HTTP {code}): {text}; nothing was changed");
    }
    let kept = write_hosts(cfg, changes).context("the cluster has the change, but hosts.toml was not updated")?;
    Ok(Applied {
        changes: changes.to_vec(),
        need_restart: changes.iter().filter(|c| c.needs_restart).map(|c| c.key.to_string()).collect(),
        hosts_file_kept: Some(kept),
    })
}

/// The changes written into hosts.toml (`[cluster.patroni]`, `[cluster.postgresql_parameters]`),
/// comments kept; the previous file as hosts.toml.before-config.
fn write_hosts(cfg: &Config, changes: &[Change]) -> Result<PathBuf> {
    let path = &cfg.hosts_path;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut doc: toml_edit::DocumentMut = text.parse().with_context(|| format!("parsing {}", path.display()))?;
    for c in changes {
        let (table, key) = match &c.key {
            Key::Patroni(k) => ("patroni", k.as_str()),
            Key::Parameter(p) => ("postgresql_parameters", p.as_str()),
        };
        let cluster = doc["cluster"].as_table_mut().context("hosts.toml has no [cluster] table")?;
        if !cluster.contains_key(table) {
            let mut t = toml_edit::Table::new();
            t.set_implicit(false);
            cluster.insert(table, toml_edit::Item::Table(t));
        }
        let t = cluster[table]
            .as_table_like_mut()
            .with_context(|| format!("[cluster.{table}] is not a table"))?;
        match &c.value {
            None => {
                t.remove(key);
            }
            Some(_) => {
                t.insert(key, toml_edit::Item::Value(c.toml_value()));
            }
        }
    }
    let kept = PathBuf::from(format!("{}.before-config", path.display()));
    std::fs::write(&kept, &text).with_context(|| format!("writing {}", kept.display()))?;
    std::fs::write(path, doc.to_string()).with_context(|| format!("writing {}", path.display()))?;
    Ok(kept)
}

/// Members whose PostgreSQL waits for a restart, with the parameters it waits for.
#[derive(Debug, Serialize)]
pub struct Pending {
    pub member: String,
    pub parameters: Vec<String>,
}

pub async fn pending(cfg: &Config, engines: &[Engine]) -> Result<Vec<Pending>> {
    let status = status::fetch(cfg, engines).await?;
    let mut out = Vec::new();
    for m in status.members.iter().filter(|m| m.pending_restart) {
        let params = match engines.iter().find(|e| e.host == m.host) {
            Some(e) => member::psql(
                e,
                "SELECT string_agg(name, ',' ORDER BY name) FROM pg_settings WHERE pending_restart",
            )
            .await
            .map(|s| s.trim().split(',').filter(|p| !p.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
            None => vec![],
        };
        out.push(Pending {
            member: m.name.clone(),
            parameters: params,
        });
    }
    Ok(out)
}

/// The leader's engine, or a refusal saying why the configuration cannot be changed now.
pub async fn leader<'a>(cfg: &Config, engines: &'a [Engine]) -> Result<&'a Engine> {
    member::leader(cfg, engines)
        .await
        .map_err(|e| error::refused(format!("{e:#}: the dynamic configuration is read and written through the leader")))
}
