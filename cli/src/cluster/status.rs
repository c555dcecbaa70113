//! `pgctl status`: members, roles, timelines, lag, streaming state, DCS health and the image
//! on each host — gathered through the engines, hosts queried concurrently.

use crate::config::Config;
use crate::docker::Engine;
use crate::layout::{self, PATRONI};
use crate::member;
use anyhow::{bail, Context, Result};
use futures_util::future::join_all;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub name: String,
    pub host: String,
    pub role: String,
    pub state: String,
    pub timeline: Option<u64>,
    pub lag_bytes: Option<u64>,
    /// For replicas: whether the leader's pg_stat_replication shows it streaming.
    pub streaming: Option<bool>,
    pub pending_restart: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    pub host: String,
    pub reachable: bool,
    pub container: String,
    pub image: String,
    pub postgres: String,
}

/// The leader's WAL archiver (pg_stat_archiver).
#[derive(Debug, Clone, Serialize)]
pub struct Archiver {
    pub archived_count: u64,
    pub last_archived_wal: String,
    pub last_archived_time: String,
    pub failed_count: u64,
    pub last_failed_wal: String,
    pub last_failed_time: String,
}

/// One run of the scheduled backup, as recorded by the member that ran it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BackupRun {
    pub start: i64,
    pub end: i64,
    pub ok: bool,
    pub host: String,
    /// Size of the data directory that was backed up (bytes); absent in older records.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// The engine's last error line when the run failed; absent in older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Scheduled backups seen on the members' data volumes.
#[derive(Debug, Clone, Serialize)]
pub struct ScheduledBackups {
    pub runs: Vec<BackupRun>,
    pub last_success_end: Option<i64>,
    pub last_success_age_seconds: Option<i64>,
    pub last_failure_end: Option<i64>,
}

/// Where a standby cluster's leader stands against its primary.
#[derive(Debug, Clone, Serialize)]
pub struct StandbyLag {
    /// The WAL receiver's state (`streaming`); `None` while the leader only replays the
    /// primary's archive (the primary is unreachable, or the standby has no `host`).
    pub receiver: Option<String>,
    /// `host:port` it streams from.
    pub sender: Option<String>,
    /// Bytes between the primary's end of WAL (as its sender last reported it) and what the
    /// leader replayed; `None` when not streaming.
    pub streaming_lag_bytes: Option<u64>,
    pub replay_lsn: String,
    /// Seconds since the last replayed transaction committed on the primary (grows while the
    /// primary is idle too).
    pub last_replayed_commit_age_seconds: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub scope: String,
    pub leader: Option<String>,
    pub paused: bool,
    /// A standby cluster: its leader replicates from a server outside the cluster (read-only).
    pub standby: bool,
    /// hosts.toml's `synchronous_mode`: only a synchronous standby may be promoted.
    pub synchronous_mode: bool,
    /// A standby cluster's leader, behind the primary it follows.
    pub standby_lag: Option<StandbyLag>,
    pub members: Vec<Member>,
    pub hosts: Vec<HostInfo>,
    pub dcs: String,
    pub archiver: Option<Archiver>,
    pub scheduled_backups: Option<ScheduledBackups>,
    /// With monitoring: the alerts Alertmanager holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alerts: Option<crate::monitor::alerts::Alerts>,
}

impl ClusterStatus {
    /// One line per member (for messages): `name role state TL`.
    pub fn summary(&self) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "  {} {} {} timeline {}",
                    m.name,
                    m.role,
                    m.state,
                    m.timeline.map(|t| t.to_string()).unwrap_or("?".into())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `Ok` when there is exactly one leader and `expected - 1` replicas streaming under `max_lag`.
    pub fn healthy(&self, expected: usize, max_lag: u64) -> Result<(), String> {
        let leaders: Vec<_> = self.members.iter().filter(|m| m.role == "leader").collect();
        if leaders.len() != 1 {
            return Err(format!("{} leader(s)", leaders.len()));
        }
        // A standby leader's state is `streaming` (from the server outside the cluster).
        if !matches!(leaders[0].state.as_str(), "running" | "streaming") {
            return Err(format!("leader {} is {}", leaders[0].name, leaders[0].state));
        }
        if self.members.len() < expected {
            return Err(format!("{} of {expected} members registered", self.members.len()));
        }
        let timeline = leaders[0].timeline;
        for m in self.members.iter().filter(|m| m.role != "leader") {
            if !matches!(m.state.as_str(), "running" | "streaming") || m.timeline != timeline || m.streaming != Some(true) {
                return Err(format!(
                    "replica {} is {} on timeline {:?} and not streaming from the leader yet",
                    m.name, m.state, m.timeline
                ));
            }
            if m.lag_bytes.unwrap_or(u64::MAX) > max_lag {
                return Err(format!(
                    "replica {} lags {} bytes",
                    m.name,
                    m.lag_bytes.map(|l| l.to_string()).unwrap_or("unknown".into())
                ));
            }
        }
        // In synchronous mode Patroni promotes only the synchronous standby: until it has
        // picked one (a few seconds after a failover or a rejoin), losing the leader leaves
        // no member it may promote.
        let replicas = self.members.len() > 1;
        if self.synchronous_mode && !self.standby && replicas && !self.has_sync_standby() {
            return Err(format!("{NO_SYNC_STANDBY}: a failover now would have no member to promote"));
        }
        Ok(())
    }

    fn has_sync_standby(&self) -> bool {
        self.members.iter().any(|m| m.role == "sync_standby")
    }

    /// In synchronous mode, a replica the leader could pick streams but the leader has not
    /// picked its synchronous standby yet (it does at its next HA loop). The leader picks only
    /// members whose Patroni reported `running` to the DCS: PostgreSQL streams up to a second
    /// before that, and a loop woken then picks no one.
    pub fn awaits_sync_standby(&self) -> bool {
        self.synchronous_mode
            && !self.standby
            && !self.has_sync_standby()
            && self
                .members
                .iter()
                .any(|m| m.role != "leader" && m.state == "running" && m.streaming == Some(true))
    }
}

const NO_SYNC_STANDBY: &str = "no synchronous standby yet";

async fn host_info(engine: &Engine) -> HostInfo {
    let (container, image, postgres) = match engine.docker.inspect_container(PATRONI, None).await {
        Ok(c) => {
            let state = c.state.and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default();
            let image_id = c.image.unwrap_or_default();
            let pg = match engine.docker.inspect_image(&image_id).await {
                Ok(i) => i
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(&format!("{}postgres", layout::LABEL_MANIFEST_PREFIX)).cloned())
                    .unwrap_or_default(),
                Err(_) => String::new(),
            };
            let short = image_id.trim_start_matches("sha256:").chars().take(12).collect();
            (state, short, pg)
        }
        Err(_) => ("absent".into(), String::new(), String::new()),
    };
    HostInfo {
        host: engine.host.clone(),
        reachable: true,
        container,
        image,
        postgres,
    }
}

/// What one host tells in one round: its container, and where Patroni runs, Patroni's view of
/// the cluster, the facts only the leader's answer is used for (who streams from it, its WAL
/// archiver) and its record of scheduled backups. Every host is asked at once, each with one
/// exec, so `status` costs one round whichever host turns out to lead, and little load when
/// `up` or a pre-flight polls it.
struct Probe {
    info: HostInfo,
    cluster: Option<Result<serde_json::Value>>,
    streaming: Option<String>,
    archiver: Option<Archiver>,
    backup_runs: Vec<BackupRun>,
}

const ARCHIVER_SQL: &str = "SELECT archived_count, coalesce(last_archived_wal, ''), coalesce(last_archived_time::text, ''), failed_count, coalesce(last_failed_wal, ''), coalesce(last_failed_time::text, '') FROM pg_stat_archiver";
const STREAMING_SQL: &str = "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'";
/// Separates the probe's sections; a section whose command failed is `FAILED`.
const SECTION: &str = "@@pgctl-section@@";
const FAILED: &str = "@@pgctl-failed@@";

/// The probe's script (as root; SQL as postgres over the socket, peer authentication): Patroni's
/// /cluster, who streams from this member, its archiver, its backup records.
fn probe_script(with_backup: bool) -> String {
    let psql = format!(
        "runuser -u postgres -- psql -h {} -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1",
        layout::PG_SOCKET_DIR
    );
    let mut script = format!(
        "curl -sf --max-time 5 {url} || echo {FAILED}; echo; echo {SECTION}; {psql} -c \"{STREAMING_SQL}\" || echo {FAILED}; echo {SECTION};",
        url = layout::patroni_url("/cluster"),
    );
    if with_backup {
        script.push_str(&format!(
            " {psql} -c \"{ARCHIVER_SQL}\" || echo {FAILED}; echo {SECTION}; cat {} 2>/dev/null; true",
            layout::SCHEDULED_BACKUPS
        ));
    }
    script
}

/// The probe's output, section by section (`None` for a command that failed).
fn probe_sections(out: &str) -> Vec<Option<String>> {
    out.split(SECTION)
        .map(|s| s.trim())
        .map(|s| (!s.contains(FAILED)).then(|| s.to_string()))
        .collect()
}

async fn probe(cfg: &Config, engine: &Engine) -> Probe {
    let info = host_info(engine).await;
    let mut probe = Probe {
        info,
        cluster: None,
        streaming: None,
        archiver: None,
        backup_runs: vec![],
    };
    if probe.info.container != "running" {
        return probe;
    }
    let with_backup = cfg.hosts.backup.is_some();
    let env = [&format!("PGPASSFILE={}", layout::PGPASS) as &str, "PGCONNECT_TIMEOUT=5"];
    let script = probe_script(with_backup);
    let out = match crate::docker::exec_env(&engine.docker, PATRONI, &["sh", "-c", &script], None, &env).await {
        Ok(out) => out.stdout,
        Err(e) => {
            probe.cluster = Some(Err(e));
            return probe;
        }
    };
    let mut sections = probe_sections(&out).into_iter();
    probe.cluster = Some(match sections.next().flatten() {
        Some(body) => serde_json::from_str(&body).with_context(|| format!("Patroni's /cluster on {}: {body}", engine.host)),
        None => Err(anyhow::anyhow!(
            "GET /cluster on {}: Patroni's REST API does not answer",
            engine.host
        )),
    });
    probe.streaming = sections.next().flatten();
    probe.archiver = sections.next().flatten().and_then(|row| parse_archiver(&row).ok());
    probe.backup_runs = sections
        .next()
        .flatten()
        .map(|text| text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default();
    probe
}

/// Current status: Patroni's view from the first host that answers, the leader's own facts.
pub async fn fetch(cfg: &Config, engines: &[Engine]) -> Result<ClusterStatus> {
    let dcs = async {
        match engines.iter().find(|e| crate::dcs::is_voter(cfg, &e.host)) {
            Some(e) => crate::dcs::health(cfg, e).await.unwrap_or_else(|err| format!("UNHEALTHY: {err:#}")),
            None => "no DCS host reachable".into(),
        }
    };
    let (mut probes, dcs, alerts) = tokio::join!(
        join_all(engines.iter().map(|e| probe(cfg, e))),
        dcs,
        crate::monitor::alerts::read(cfg, engines)
    );
    let mut hosts: Vec<HostInfo> = probes.iter().map(|p| p.info.clone()).collect();
    for h in cfg.hosts.hosts.iter().filter(|h| !engines.iter().any(|e| e.host == h.name)) {
        hosts.push(HostInfo {
            host: h.name.clone(),
            reachable: false,
            container: "host unreachable".into(),
            image: String::new(),
            postgres: String::new(),
        });
    }
    let mut cluster = None;
    let mut errors = Vec::new();
    for p in probes.iter_mut() {
        match p.cluster.take() {
            Some(Ok(v)) if cluster.is_none() => cluster = Some(v),
            Some(Err(err)) => errors.push(format!("{}: {err:#}", p.info.host)),
            _ => {}
        }
    }
    let Some(cluster) = cluster else {
        bail!(
            "no Patroni member answers{}",
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        );
    };
    let host_of = |addr: &str| {
        cfg.hosts
            .hosts
            .iter()
            .find(|h| h.address == addr)
            .map(|h| h.name.clone())
            .unwrap_or(addr.to_string())
    };
    let standby = cluster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["role"] == "standby_leader");
    let mut members: Vec<Member> = cluster["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| Member {
            name: m["name"].as_str().unwrap_or_default().into(),
            host: host_of(m["host"].as_str().unwrap_or_default()),
            // Patroni 3.0 says "leader"; older releases and the primary's standby say "master".
            role: match m["role"].as_str().unwrap_or_default() {
                r if member::is_leader_role(r) => "leader".into(),
                r => r.into(),
            },
            state: m["state"].as_str().unwrap_or_default().into(),
            timeline: m["timeline"].as_u64(),
            lag_bytes: if m["role"] == "leader" || m["role"] == "master" {
                Some(0)
            } else {
                m["lag"].as_u64()
            },
            streaming: None,
            pending_restart: m["pending_restart"].as_bool().unwrap_or(false),
        })
        .collect();
    let leader = members.iter().find(|m| m.role == "leader").map(|m| m.name.clone());
    let leader_host = leader
        .as_ref()
        .and_then(|l| members.iter().find(|m| &m.name == l))
        .map(|m| m.host.clone());
    let leader_probe = leader_host.as_ref().and_then(|h| probes.iter_mut().find(|p| &p.info.host == h));
    let (streaming, archiver) = match leader_probe {
        Some(p) => (p.streaming.take(), p.archiver.take()),
        None => (None, None),
    };
    // A standby cluster's leader: its receiver from the primary (the rare case: a second round).
    let standby_lag = match leader_host.as_ref().and_then(|h| engines.iter().find(|e| &e.host == h)) {
        Some(e) if standby => standby_lag(e).await.ok(),
        _ => None,
    };
    if let Some(rows) = streaming {
        let streaming: Vec<&str> = rows.lines().collect();
        for m in members.iter_mut().filter(|m| m.role != "leader") {
            m.streaming = Some(streaming.contains(&m.name.as_str()));
        }
    }
    let scheduled_backups = cfg
        .hosts
        .backup
        .as_ref()
        .map(|_| scheduled_backups(probes.into_iter().flat_map(|p| p.backup_runs).collect()));
    Ok(ClusterStatus {
        scope: cfg.hosts.cluster.name.clone(),
        leader,
        paused: cluster["pause"].as_bool().unwrap_or(false),
        standby,
        synchronous_mode: cfg.hosts.cluster.patroni.synchronous_mode,
        standby_lag,
        members,
        hosts,
        dcs,
        archiver,
        scheduled_backups,
        alerts,
    })
}

/// The standby leader's WAL receiver and replay position. `latest_end_lsn` is the end of WAL
/// the primary's sender last reported.
async fn standby_lag(leader: &Engine) -> Result<StandbyLag> {
    let sql = "SELECT coalesce(r.status, ''), coalesce(r.sender_host || ':' || r.sender_port, ''), \
               coalesce(greatest(0, pg_wal_lsn_diff(r.latest_end_lsn, pg_last_wal_replay_lsn()))::bigint::text, ''), \
               coalesce(pg_last_wal_replay_lsn()::text, ''), \
               coalesce(extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8::text, '') \
               FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true";
    let row = member::psql(leader, sql).await?;
    let f: Vec<&str> = row.trim().split('|').collect();
    let [status, sender, lag, replay, age] = f[..] else {
        bail!("unexpected answer: {row}");
    };
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(StandbyLag {
        receiver: some(status),
        sender: some(sender),
        streaming_lag_bytes: lag.parse().ok(),
        replay_lsn: replay.into(),
        last_replayed_commit_age_seconds: age.parse().ok(),
    })
}

/// Every member's records of scheduled backups together.
fn scheduled_backups(mut runs: Vec<BackupRun>) -> ScheduledBackups {
    runs.sort_by_key(|r| r.start);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let last_success_end = runs.iter().filter(|r| r.ok).map(|r| r.end).max();
    ScheduledBackups {
        last_success_age_seconds: last_success_end.map(|t| now - t),
        last_failure_end: runs.iter().filter(|r| !r.ok).map(|r| r.end).max(),
        last_success_end,
        runs,
    }
}

/// A pg_stat_archiver row as `psql -At` prints it.
fn parse_archiver(row: &str) -> Result<Archiver> {
    let f: Vec<&str> = row.trim().split('|').collect();
    if f.len() != 6 {
        bail!("unexpected pg_stat_archiver row: {row}");
    }
    Ok(Archiver {
        archived_count: f[0].parse().unwrap_or_default(),
        last_archived_wal: f[1].into(),
        last_archived_time: f[2].into(),
        failed_count: f[3].parse().unwrap_or_default(),
        last_failed_wal: f[4].into(),
        last_failed_time: f[5].into(),
    })
}

/// Why the cluster did not settle: the last status read (if any) and what is still wrong.
pub struct Unsettled {
    pub last: Option<ClusterStatus>,
    pub why: String,
}

/// Reads the status until it is healthy (`expected` members, replicas within `max_lag`), for at
/// most `timeout`. A replica a few MB behind right after a burst of writes catches up within a
/// second or two: a pre-flight that judged the first reading alone would refuse a healthy
/// cluster. Hosts that do not answer for a moment count as not healthy yet.
pub async fn settled(
    cfg: &Config,
    engines: &[Engine],
    expected: usize,
    max_lag: u64,
    timeout: std::time::Duration,
) -> Result<ClusterStatus, Unsettled> {
    let started = std::time::Instant::now();
    let mut out = Unsettled {
        last: None,
        why: "no status yet".into(),
    };
    loop {
        match fetch(cfg, engines).await {
            Ok(s) => match s.healthy(expected, max_lag) {
                Ok(()) => return Ok(s),
                Err(w) => {
                    out.why = w;
                    out.last = Some(s);
                }
            },
            Err(e) => out.why = format!("{e:#}"),
        }
        if started.elapsed() >= timeout {
            return Err(out);
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_splits_into_sections() {
        let out = format!(
            "{{\"members\": []}}\n{SECTION}\nhost2\nhost3\n{SECTION}\n7|0000000100000000000000A1|2026-12-06 10:00:00+00|0||\n{SECTION}\n{{\"ok\": true}}\n"
        );
        let s = probe_sections(&out);
        assert_eq!(s[0].as_deref(), Some("{\"members\": []}"));
        assert_eq!(s[1].as_deref(), Some("host2\nhost3"));
        assert_eq!(parse_archiver(s[2].as_deref().unwrap()).unwrap().archived_count, 7);
        assert_eq!(s[3].as_deref(), Some("{\"ok\": true}"));
        // A command that failed is no answer, unlike one that answered nothing.
        let failed = format!("{FAILED}\n\n{SECTION}\n{SECTION}\n");
        let s = probe_sections(&failed);
        assert_eq!(s[0], None);
        assert_eq!(s[1].as_deref(), Some(""));
        assert!(probe_script(true).contains("pg_stat_archiver") && !probe_script(false).contains("pg_stat_archiver"));
    }

    fn member(name: &str, role: &str, streaming: Option<bool>) -> Member {
        Member {
            name: name.into(),
            host: name.into(),
            role: role.into(),
            state: "running".into(),
            timeline: Some(1),
            lag_bytes: Some(0),
            streaming,
            pending_restart: false,
        }
    }

    #[test]
    fn a_streaming_replica_without_a_sync_standby_awaits_one() {
        let mut s = ClusterStatus {
            scope: "c".into(),
            leader: Some("a".into()),
            paused: false,
            standby: false,
            synchronous_mode: true,
            standby_lag: None,
            members: vec![member("a", "leader", None), member("b", "replica", Some(false))],
            hosts: vec![],
            dcs: String::new(),
            archiver: None,
            scheduled_backups: None,
            alerts: None,
        };
        // Nobody streams yet: nothing for the leader to pick.
        assert!(!s.awaits_sync_standby());
        // PostgreSQL streams before its Patroni reports `running`: the leader would pick no one.
        s.members[1].streaming = Some(true);
        s.members[1].state = "creating replica".into();
        assert!(!s.awaits_sync_standby());
        s.members[1].state = "running".into();
        assert!(s.awaits_sync_standby());
        assert!(s.healthy(2, 1 << 20).unwrap_err().starts_with(NO_SYNC_STANDBY));
        s.members[1].role = "sync_standby".into();
        assert!(!s.awaits_sync_standby());
        assert_eq!(s.healthy(2, 1 << 20), Ok(()));
        // Asynchronous clusters pick none.
        s.members[1].role = "replica".into();
        s.synchronous_mode = false;
        assert!(!s.awaits_sync_standby());
    }
}
