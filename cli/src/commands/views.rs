//! Text views shared by several commands (the cluster status table, the leader's timeline).

use crate::cluster::status::ClusterStatus;
use crate::output::{self, size};

/// A table like `patronictl list`, plus streaming state and image per host, then the DCS,
/// WAL archiving and backups.
pub fn status_text(s: &ClusterStatus) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for m in &s.members {
        let h = s.hosts.iter().find(|h| h.host == m.host);
        rows.push(vec![
            m.name.clone(),
            m.host.clone(),
            m.role.clone(),
            m.state.clone(),
            m.timeline.map(|t| t.to_string()).unwrap_or_default(),
            m.lag_bytes.map(size).unwrap_or("?".into()),
            match m.streaming {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => String::new(),
            },
            if m.pending_restart { "*".into() } else { String::new() },
            h.map(|h| h.image.clone()).unwrap_or_default(),
            h.map(|h| h.postgres.clone()).unwrap_or_default(),
        ]);
    }
    for h in s.hosts.iter().filter(|h| !s.members.iter().any(|m| m.host == h.host)) {
        rows.push(vec![
            String::new(),
            h.host.clone(),
            String::new(),
            format!("container {}", h.container),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            h.image.clone(),
            h.postgres.clone(),
        ]);
    }
    let table = output::table(
        &[
            "member",
            "host",
            "role",
            "state",
            "TL",
            "lag",
            "streaming",
            "pending restart",
            "image",
            "postgres",
        ],
        rows,
    );
    let mut extra = String::new();
    if let Some(a) = &s.archiver {
        let failing = !a.last_failed_time.is_empty() && a.last_failed_time > a.last_archived_time;
        // Failures before the last success are history (e.g. the first pushes of a fresh
        // cluster before its repository existed): only failures since then are news.
        let failures = if failing {
            format!("{} failure(s)", a.failed_count)
        } else if a.failed_count > 0 {
            format!("no failure since the last success ({} earlier)", a.failed_count)
        } else {
            "no failure".to_string()
        };
        extra.push_str(&format!(
            "\nWAL archiving: {} archived, last {} at {}; {failures}{}",
            a.archived_count,
            if a.last_archived_wal.is_empty() {
                "none"
            } else {
                &a.last_archived_wal
            },
            if a.last_archived_time.is_empty() {
                "-"
            } else {
                &a.last_archived_time
            },
            if failing {
                format!(" — FAILING since {} ({})", a.last_failed_time, a.last_failed_wal)
            } else {
                String::new()
            }
        ));
    }
    if let Some(l) = &s.standby_lag {
        let source = match (l.receiver.as_deref(), &l.sender) {
            (Some("streaming"), Some(sender)) => format!(
                "streaming from {sender}, {} behind the primary",
                l.streaming_lag_bytes.map(size).unwrap_or_else(|| "?".into())
            ),
            (Some(state), _) => format!("WAL receiver {state}; replaying the primary's archive"),
            (None, _) => "not streaming; replaying the primary's archive".into(),
        };
        let age = l
            .last_replayed_commit_age_seconds
            .map(|a| format!("; last replayed commit {} ago", output::seconds(a)))
            .unwrap_or_default();
        extra.push_str(&format!("\nStandby: {source}; replayed up to {}{age}", l.replay_lsn));
    }
    if let Some(b) = &s.scheduled_backups {
        let data = b
            .runs
            .iter()
            .rfind(|r| r.ok)
            .and_then(|r| r.size_bytes)
            .map(|s| format!(", {} of data", size(s)))
            .unwrap_or_default();
        let last = match b.last_success_age_seconds {
            Some(age) => format!(
                "last successful scheduled backup {}h{:02}m ago{data}",
                age / 3600,
                (age % 3600) / 60
            ),
            None => "no successful scheduled backup yet".into(),
        };
        let newest = b.runs.iter().max_by_key(|r| r.end).filter(|r| !r.ok);
        let failed = match newest {
            Some(r) => format!(
                " — the LAST SCHEDULED BACKUP FAILED on {}: {} (more in `docker logs patroni` there)",
                r.host,
                r.error.as_deref().unwrap_or("no error recorded")
            ),
            None => String::new(),
        };
        extra.push_str(&format!("\nBackups: {last}{failed}"));
    }
    match &s.alerts {
        Some(a) if a.error.is_some() => extra.push_str(&format!("\nAlerts: unknown ({})", a.error.as_deref().unwrap_or_default())),
        Some(a) if a.active.is_empty() => extra.push_str("\nAlerts: none active"),
        Some(a) => {
            extra.push_str(&format!("\nAlerts: {} ACTIVE", a.active.len()));
            for a in &a.active {
                extra.push_str(&format!("\n  {} [{}] since {}: {}", a.name, a.severity, a.since, a.summary));
            }
        }
        None => {}
    }
    format!(
        "cluster {} — leader: {}{}\nDCS: {}{extra}\n{table}",
        s.scope,
        s.leader.as_deref().unwrap_or("NONE"),
        match (s.paused, s.standby) {
            (true, _) => " (maintenance mode: automatic failover is paused)",
            (false, true) =>
                " (a standby cluster: the leader replicates from outside; `pgctl promote` or `pgctl migrate cutover` promotes it)",
            (false, false) => "",
        },
        s.dcs
    )
}

/// The timeline the leader runs on, for reports.
pub fn leader_timeline(status: &ClusterStatus) -> String {
    status
        .members
        .iter()
        .find(|m| m.role == "leader")
        .and_then(|m| m.timeline)
        .map(|t| t.to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// An image ID shortened as the docker CLI does.
pub fn short_id(id: &str) -> &str {
    let id = id.trim_start_matches("sha256:");
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::status::Archiver;

    fn status(archiver: Archiver) -> ClusterStatus {
        ClusterStatus {
            scope: "main".into(),
            leader: None,
            paused: false,
            standby: false,
            standby_lag: None,
            synchronous_mode: true,
            members: vec![],
            hosts: vec![],
            dcs: "etcd: 3 member(s) healthy".into(),
            archiver: Some(archiver),
            scheduled_backups: None,
            alerts: None,
        }
    }

    fn archiver(last_archived: &str, last_failed: &str, failed: u64) -> Archiver {
        Archiver {
            archived_count: 10,
            last_archived_wal: "000000010000000000000009".into(),
            last_archived_time: last_archived.into(),
            failed_count: failed,
            last_failed_wal: "000000010000000000000001".into(),
            last_failed_time: last_failed.into(),
        }
    }

    #[test]
    fn archiving_failures_before_the_last_success_are_history() {
        let old = status_text(&status(archiver("2026-12-04 10:05:00+00", "2026-12-04 10:00:00+00", 6)));
        assert!(old.contains("no failure since the last success (6 earlier)"), "{old}");
        assert!(!old.contains("FAILING"), "{old}");
        let now = status_text(&status(archiver("2026-12-04 10:05:00+00", "2026-12-04 10:06:00+00", 7)));
        assert!(now.contains("7 failure(s) — FAILING since 2026-12-04 10:06:00+00"), "{now}");
    }
}
