//! Recovery in a throwaway container on one host: the backup engine fetches a base backup into a
//! data volume, PostgreSQL replays WAL from the archive to the target and is promoted, and the
//! data directory is left cleanly shut down (restore, rollback) or checked (verify). The S3 key
//! is always the read-only one: nothing run here can write into an archive.

use crate::backup::target::Target;
use crate::backup::{self, Access};
use crate::config::Config;
use crate::docker::{self, Engine, FileSpec, Throwaway};
use crate::layout::{self, DATA_MOUNT};
use crate::output;
use anyhow::{bail, Context, Result};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Fetch, recover, promote, pg_dumpall and amcheck; archiving off.
    Verify,
    /// Fetch, recover to the target, promote, stop: a data directory for the cluster.
    Restore,
    /// Existing data: promote it onto a new timeline (after a rollback, so "latest" in later
    /// restores follows this history and not the abandoned restored one).
    Bump,
    /// A restore's replica: the backup fetched beside the data directory, no recovery.
    Prefetch,
}

impl Mode {
    fn arg(self) -> &'static str {
        match self {
            Mode::Verify => "verify",
            Mode::Restore => "restore",
            Mode::Bump => "bump",
            Mode::Prefetch => "prefetch",
        }
    }
}

/// What PostgreSQL reported at the end (the script's summary line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovered {
    pub timeline: u32,
    pub system_id: String,
    pub lsn: String,
    pub last_replayed: Option<String>,
    pub indexes_checked: u64,
    /// The timeline history files in pg_wal (name, contents): a restore's replicas need them.
    #[serde(default, skip_serializing)]
    pub history: BTreeMap<String, String>,
    /// Wall time of each phase (fetch, replay, dump, amcheck, stop), in order.
    #[serde(default)]
    pub phases: Vec<(String, f64)>,
}

/// The base backup to fetch and the point to recover to.
pub struct Fetch<'a> {
    pub backup: &'a str,
    pub target: &'a Target,
    /// `latest` or a timeline number.
    pub timeline: &'a str,
    /// Told once the backup is fetched (the recovery moved on to replaying WAL); dropped
    /// unsent when the fetch fails.
    pub fetched: Option<oneshot::Sender<()>>,
}

/// Runs one recovery on `engine` with `volume` mounted as the data volume: for cluster `cfg`
/// (image, PostgreSQL version), from the backups of `source` (the same cluster, or the one a
/// clone is made from).
pub async fn run(
    cfg: &Config,
    source: &Config,
    engine: &Engine,
    volume: &str,
    mode: Mode,
    mut fetch: Option<Fetch<'_>>,
) -> Result<Recovered> {
    let mut args = vec![];
    let mut env = vec![];
    match (mode, &fetch) {
        (Mode::Bump, _) => args.push(backup::restore_command(source).context("a rollback needs [backup] (restore_command)")?),
        (Mode::Verify | Mode::Restore, Some(f)) => {
            let (fetch_cmd, recovery_conf) = fetch_command(source, f, mode);
            args.extend(fetch_cmd);
            env.extend(recovery_conf.map(|c| format!("RECOVERY_CONF={c}")));
        }
        _ => bail!("internal: {} needs a backup to fetch", mode.arg()),
    }
    let fetched = fetch.as_mut().and_then(|f| f.fetched.take());
    // A restored volume is marked complete once its summary has been read here.
    let answer = match mode {
        Mode::Restore => Answer::MarkComplete,
        _ => Answer::Nothing,
    };
    let script = Script {
        mode,
        args,
        env,
        fetched,
        answer,
    };
    let (summary, phases) = run_script(cfg, source, engine, volume, script).await?;
    let mut recovered = parse_summary(&engine.host, &summary)?;
    recovered.phases = phases;
    Ok(recovered)
}

fn parse_summary(host: &str, summary: &str) -> Result<Recovered> {
    serde_json::from_str(summary).with_context(|| format!("{host}: unexpected summary of the recovery: {summary}"))
}

/// A replica's copy fetched by `prefetch`.
pub struct Prefetched {
    /// The fetch's wall time.
    pub seconds: f64,
    /// The restored timeline's history arrived in time: the copy is ready for Patroni's
    /// replica method (else `nodes::replica::use_prefetched` makes it so).
    pub taken: bool,
}

/// A restore's replica, while its leader recovers: `backup` of the cluster's own repository
/// fetched into `volume` beside the data directory (replica-from-backup.sh moves it into place
/// when Patroni creates the replica). `history` resolves to the restored timeline's history
/// files once the leader's recovery has them (None: it failed); they are handed to the copy if
/// its container still waits for them (a minute after its fetch at most).
pub async fn prefetch<'a>(
    cfg: &'a Config,
    engine: &'a Engine,
    volume: &'a str,
    backup: &'a str,
    history: BoxFuture<'a, Option<Vec<(String, String)>>>,
) -> Result<Prefetched> {
    let fetch = backup::engine(cfg).replica_fetch(cfg, backup);
    let request = crate::nodes::replica::prefetched_copy_request();
    let script = Script {
        mode: Mode::Prefetch,
        args: fetch,
        env: vec![
            format!("COPY_REQUEST={request}"),
            format!("ANSWER_WITHIN={}", COPY_AWAITS_HISTORY.as_secs()),
        ],
        fetched: None,
        answer: Answer::History(history),
    };
    let (summary, phases) = run_script(cfg, cfg, engine, volume, script).await?;
    let taken = serde_json::from_str::<serde_json::Value>(&summary)
        .ok()
        .and_then(|v| v["taken"].as_bool())
        .with_context(|| format!("{}: unexpected summary of the copy's fetch: {summary}", engine.host))?;
    let seconds = phases.iter().filter(|(p, _)| p == "fetch").map(|(_, secs)| secs).sum();
    Ok(Prefetched { seconds, taken })
}

/// How long a fetched copy waits for the restored timeline's history in its container: a
/// leader replaying for longer leaves the copy to be completed later, in a container of its own.
const COPY_AWAITS_HISTORY: Duration = Duration::from_secs(60);

/// One run of recover.sh: its mode and arguments, its environment, who is told when the fetch
/// has ended, and what pgctl answers the script at its end.
struct Script<'a> {
    mode: Mode,
    args: Vec<String>,
    env: Vec<String>,
    fetched: Option<oneshot::Sender<()>>,
    answer: Answer<'a>,
}

/// What pgctl answers a recover.sh that waits for it (`await_pgctl`), by `docker exec` into its
/// container; cheaper than a container of its own once the script has ended.
enum Answer<'a> {
    Nothing,
    /// A restore: the summary read, the incomplete marker goes (pgctl has seen it succeed).
    MarkComplete,
    /// A replica's copy: the restored timeline's history files, once known.
    History(BoxFuture<'a, Option<Vec<(String, String)>>>),
}

/// recover.sh as `script` says, in a throwaway container on `engine` with `volume` mounted and
/// `source`'s repository configured (read-only key); its summary line and phases.
async fn run_script(
    cfg: &Config,
    source: &Config,
    engine: &Engine,
    volume: &str,
    script: Script<'_>,
) -> Result<(String, Vec<(String, f64)>)> {
    let Script {
        mode,
        args,
        env,
        fetched,
        answer,
    } = script;
    let image = &cfg.hosts.cluster.image;
    if docker::image_id(&engine.docker, image).await?.is_none() {
        bail!("{}: image {image} is missing: deliver it first (`pgctl image push`)", engine.host);
    }
    let owner = crate::image::postgres_owner(&crate::image::manifest(engine, image).await?, image)?;
    let mut files = backup::upload_files(source, Access::ReadOnly, owner)?;
    files.push(FileSpec::root(layout::RECOVER_SCRIPT, crate::render::script("recover.sh"), 0o755));
    if mode == Mode::Restore {
        // Data from elsewhere (a migration, a point before a password change) gets the roles
        // Patroni logs in with, as secrets.toml has them.
        files.push(FileSpec {
            path: layout::CLUSTER_ROLES_SQL.into(),
            contents: crate::roles::cluster_roles_sql(cfg)?.into_bytes(),
            mode: 0o600,
            uid: owner.0,
            gid: owner.1,
        });
    }

    let bindir = format!("/usr/lib/postgresql/{}/bin", cfg.hosts.cluster.postgres_major);
    let mut cmd: Vec<String> = vec!["/bin/sh".into(), layout::RECOVER_SCRIPT.into(), mode.arg().into(), bindir];
    cmd.extend(args);
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let extra_hosts = backup::extra_hosts(source);
    let host_config = bollard::models::HostConfig {
        // The host's network: S3 is reached as the cluster reaches it. PostgreSQL here listens
        // on a unix socket only, so it never meets the host's port 5432.
        network_mode: Some("host".into()),
        binds: Some(vec![format!("{volume}:{DATA_MOUNT}")]),
        extra_hosts: (!extra_hosts.is_empty()).then_some(extra_hosts),
        shm_size: Some(256 * 1024 * 1024),
        // A replica's copy is not on the critical path until the leader runs: where they share
        // a machine, the leader's recovery gets the CPU first.
        cpu_shares: (mode == Mode::Prefetch).then_some(256),
        ..Default::default()
    };
    let throwaway = Throwaway {
        image,
        cmd: &cmd,
        host_config,
        user: Some("root"),
        env,
        files: &files,
        name: Some(container_name(cfg, mode)),
    };
    let (started, script_started) = oneshot::channel();
    let (summarized, summary_read) = oneshot::channel();
    let mut progress = Progress::new(&engine.host, fetched, started, summarized);
    let name = container_name(cfg, mode);
    let ended = {
        let run = throwaway.run_streamed(&engine.docker, |line| progress.line(line));
        let answering = give_answer(engine, &name, answer, script_started, summary_read);
        tokio::pin!(run, answering);
        // A script that ends first needs no answer any more; one that cannot be answered is
        // stopped rather than left to wait, and that is its failure, unless it is a copy that
        // had already stopped waiting (its history is then added later).
        tokio::select! {
            ran = &mut run => Ended::Ran(ran),
            answered = &mut answering => match answered {
                Ok(Answered::Done) => Ended::Done,
                Ok(Answered::Given) => Ended::Ran(run.await),
                Err(e) => {
                    docker::remove_container(&engine.docker, &name).await?;
                    match run.await {
                        Ok(out) if out.success() && mode == Mode::Prefetch => Ended::Ran(Ok(out)),
                        _ => return Err(e),
                    }
                }
            }
        }
    };
    let (phases, summary) = progress.finish();
    match ended {
        Ended::Ran(out) => {
            let out = out?;
            if !out.success() {
                bail!("{}", failure(&engine.host, mode, &out.stderr));
            }
            tracing::debug!("{}: {} container ended", engine.host, mode.arg());
            let summary = summary.with_context(|| format!("{}: the recovery printed no summary: {}", engine.host, out.stderr))?;
            Ok((summary, phases))
        }
        Ended::Done => {
            // Its PostgreSQL stopped and its volume marked complete, the script only exits:
            // the data is final, and the container goes meanwhile (a restore's pre-flight
            // removes one that pgctl did not live to remove).
            docker::remove_when_exited(&engine.docker, &name);
            let summary = summary.context("internal: a recovery answered without its summary")?;
            Ok((summary, phases))
        }
    }
}

/// How a run of recover.sh ended for pgctl.
enum Ended {
    /// The container exited (its output), or could not be run.
    Ran(Result<docker::ExecOutput>),
    /// The script was answered and has nothing left to do but exit.
    Done,
}

/// What answering the script left.
enum Answered {
    /// The script has nothing left to do but exit (a restore marked complete).
    Done,
    /// The script goes on with the answer (a copy with its history).
    Given,
}

/// `answer` once the script can take it: a restore's marker removed once its summary is read
/// and parsed, a copy's history written once both the script runs and the history is known.
/// Nothing when the script ends without asking (a failure) or the history never comes.
async fn give_answer(
    engine: &Engine,
    container: &str,
    answer: Answer<'_>,
    started: oneshot::Receiver<()>,
    summary: oneshot::Receiver<String>,
) -> Result<Answered> {
    match answer {
        Answer::Nothing => std::future::pending().await,
        Answer::MarkComplete => {
            let Ok(summary) = summary.await else {
                return std::future::pending().await;
            };
            parse_summary(&engine.host, &summary)?;
            tracing::debug!("{}: recovery summary read", engine.host);
            let rm = ["rm", "-f", layout::INCOMPLETE_MARKER];
            docker::exec(&engine.docker, container, &rm, Some("root"))
                .await?
                .ok(&format!("{}: marking the restored volume complete", engine.host))?;
            tracing::debug!("{}: restored volume marked complete", engine.host);
            Ok(Answered::Done)
        }
        Answer::History(history) => {
            let (Ok(()), Some(history)) = (started.await, history.await) else {
                return std::future::pending().await;
            };
            crate::nodes::replica::deliver_history(engine, container, &history).await?;
            Ok(Answered::Given)
        }
    }
}

/// The throwaway container's fixed name: a leftover of an interrupted run is visible as such.
pub fn container_name(cfg: &Config, mode: Mode) -> String {
    format!("pgctl-{}-{}", mode.arg(), cfg.hosts.cluster.name)
}

/// The engine's fetch command, and recovery settings for engines whose fetch writes none.
fn fetch_command(cfg: &Config, f: &Fetch<'_>, mode: Mode) -> (Vec<String>, Option<String>) {
    backup::engine(cfg).fetch(cfg, f.backup, f.target, f.timeline, mode == Mode::Verify)
}

/// Progress as it streams: phases (with their wall time), the script's own lines, and the
/// fetch's per-file lines thinned to one every few seconds.
struct Progress<'a> {
    host: &'a str,
    fetched: Option<oneshot::Sender<()>>,
    /// Told at the script's first line (it runs: it can be answered).
    started: Option<oneshot::Sender<()>>,
    /// Told the summary line.
    summarized: Option<oneshot::Sender<String>>,
    summary: Option<String>,
    phases: Vec<(String, Instant)>,
    last_fetch_line: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(host: &'a str, fetched: Option<oneshot::Sender<()>>, started: oneshot::Sender<()>, summarized: oneshot::Sender<String>) -> Self {
        Progress {
            host,
            fetched,
            started: Some(started),
            summarized: Some(summarized),
            summary: None,
            phases: vec![],
            last_fetch_line: None,
        }
    }

    fn line(&mut self, line: &str) {
        if let Some(started) = self.started.take() {
            let _ = started.send(());
        }
        if let Some(summary) = line.strip_prefix("pgctl: summary ") {
            if let Some(summarized) = self.summarized.take() {
                let _ = summarized.send(summary.to_string());
            }
            self.summary = Some(summary.to_string());
        } else if let Some(phase) = line.strip_prefix("pgctl: phase ") {
            if self.phases.last().is_some_and(|(p, _)| p == "fetch") {
                if let Some(fetched) = self.fetched.take() {
                    let _ = fetched.send(());
                }
            }
            self.phases.push((phase.to_string(), Instant::now()));
            output::step(format!("{}: {}", self.host, phase_title(phase)));
        } else if let Some(text) = line.strip_prefix("pgctl: ") {
            output::step(format!("{}: {text}", self.host));
        } else if line.contains("restore file ") {
            // "restore file /path (8KB, 45.23%) checksum ...": the percentage is of bytes.
            let due = self.last_fetch_line.is_none_or(|t| t.elapsed() > Duration::from_secs(5));
            if let (true, Some(pct)) = (due, fetch_percent(line)) {
                output::step(format!("{}: fetched {pct} of the backup", self.host));
                self.last_fetch_line = Some(Instant::now());
            }
        } else if line.contains("INFO:") || line.contains("ERROR") || line.contains("WARN") {
            output::step(format!("{}:   {}", self.host, line.trim()));
        }
    }

    /// The phases with their wall time, and the summary line.
    fn finish(self) -> (Vec<(String, f64)>, Option<String>) {
        let now = Instant::now();
        let ends: Vec<Instant> = self.phases.iter().skip(1).map(|(_, t)| *t).chain([now]).collect();
        let phases = self
            .phases
            .into_iter()
            .zip(ends)
            .map(|((name, start), end)| (name, (end - start).as_secs_f64()))
            .collect();
        (phases, self.summary)
    }
}

fn phase_title(phase: &str) -> &str {
    match phase {
        "fetch" => "fetching the base backup from S3 (read-only key)",
        "replay" => "PostgreSQL replays WAL from the archive",
        "dump" => "pg_dumpall > /dev/null (every row readable)",
        "amcheck" => "amcheck over every B-tree index of every database",
        "stop" => "stopping PostgreSQL cleanly",
        "await" => "copy fetched; waiting for the restored timeline's history",
        other => other,
    }
}

fn fetch_percent(line: &str) -> Option<&str> {
    let end = line.find("%)")?;
    let start = line[..end].rfind(", ")? + 2;
    Some(&line[start..=end])
}

/// A message for a failed recovery: what failed, what it means, what was left untouched.
fn failure(host: &str, mode: Mode, stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("FATAL") || l.starts_with("pgctl: "))
        .map(str::trim)
        .collect();
    let hint = if stderr.contains("recovery ended before configured recovery target was reached") {
        "\n  The archive holds no transaction after the target (the target lies beyond the last archived commit): choose an earlier target, or restore to the latest point (no --target-*)."
    } else if stderr.contains("missing") || stderr.contains("unable to open") || stderr.contains("checksum") {
        "\n  A file of the backup or of the WAL archive is missing or damaged in S3: this backup cannot be restored."
    } else {
        ""
    };
    let what = match mode {
        Mode::Verify => "verification",
        Mode::Restore => "restore (fetch and recovery)",
        Mode::Bump => "promotion of the previous data onto a new timeline",
        Mode::Prefetch => "fetch of a replica's copy",
    };
    format!("{host}: the {what} failed:\n  {}{hint}", errors.join("\n  "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn fetch_percentages() {
        let line = "P01 DETAIL: restore file /var/lib/postgresql/data/pgdata/base/5/1249 (456KB, 45.23%) checksum 0a1b";
        assert_eq!(super::fetch_percent(line), Some("45.23%"));
        assert_eq!(super::fetch_percent("P00 INFO: restore command begin"), None);
    }
}
