//! The alerts Alertmanager holds right now, read from a monitoring host (for `pgctl status`).

use crate::config::{Config, Role};
use crate::docker::{self, Engine};
use crate::layout::{ALERTMANAGER, ALERTMANAGER_PORT};
use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub name: String,
    pub severity: String,
    /// The member it is about, when it is about one.
    pub member: Option<String>,
    pub summary: String,
    /// Since when (RFC 3339, Alertmanager's startsAt).
    pub since: String,
}

/// What `status` reports: the active alerts, or why they could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct Alerts {
    pub active: Vec<Alert>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Active (not silenced) alerts from the first monitoring host that answers; `None` when the
/// cluster has no monitoring.
pub async fn read(cfg: &Config, engines: &[Engine]) -> Option<Alerts> {
    Some(match active(cfg, engines).await? {
        Ok(active) => Alerts { active, error: None },
        Err(e) => Alerts {
            active: vec![],
            error: Some(format!("{e:#}")),
        },
    })
}

async fn active(cfg: &Config, engines: &[Engine]) -> Option<Result<Vec<Alert>>> {
    let hosts: Vec<&Engine> = engines
        .iter()
        .filter(|e| cfg.host(&e.host).is_some_and(|h| h.has_role(Role::Monitoring)))
        .collect();
    if !super::enabled(cfg) {
        return None;
    }
    let mut last = anyhow::anyhow!("no monitoring host is reachable");
    for engine in hosts {
        match from(engine).await {
            Ok(alerts) => return Some(Ok(alerts)),
            Err(e) => last = e,
        }
    }
    Some(Err(last))
}

async fn from(engine: &Engine) -> Result<Vec<Alert>> {
    let url = format!("http://127.0.0.1:{ALERTMANAGER_PORT}/api/v2/alerts?active=true&silenced=false&inhibited=false");
    let out = docker::exec(&engine.docker, ALERTMANAGER, &["curl", "-sf", "--max-time", "5", &url], None)
        .await?
        .ok(&format!("{}: Alertmanager", engine.host))?;
    parse(&out).with_context(|| format!("{}: Alertmanager's answer", engine.host))
}

fn parse(text: &str) -> Result<Vec<Alert>> {
    let list: Vec<serde_json::Value> = serde_json::from_str(text)?;
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let mut alerts: Vec<Alert> = list
        .iter()
        .map(|a| Alert {
            name: s(&a["labels"]["alertname"]),
            severity: s(&a["labels"]["severity"]),
            member: a["labels"]["member"].as_str().map(str::to_string),
            summary: s(&a["annotations"]["summary"]),
            since: s(&a["startsAt"]),
        })
        .collect();
    alerts.sort_by(|a, b| (&a.name, &a.member).cmp(&(&b.name, &b.member)));
    Ok(alerts)
}

#[cfg(test)]
mod tests {
    #[test]
    fn alertmanager_v2_alerts() {
        let text = r#"[{"labels":{"alertname":"PostgresMemberDown","severity":"critical","member":"pg2","job":"patroni"},
            "annotations":{"summary":"member pg2 is down"},"startsAt":"2026-12-06T10:00:00.000Z","status":{"state":"active"}},
            {"labels":{"alertname":"PostgresArchivingFailing","severity":"critical"},"annotations":{"summary":"archiving fails"},"startsAt":"2026-12-06T09:59:00Z"}]"#;
        let alerts = super::parse(text).unwrap();
        assert_eq!(alerts[0].name, "PostgresArchivingFailing");
        assert_eq!(alerts[1].member.as_deref(), Some("pg2"));
        assert_eq!(alerts[1].summary, "member pg2 is down");
    }
}
