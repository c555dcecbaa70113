//! Monitoring on the running Consul lab: Prometheus and Alertmanager on the application host,
//! postgres_exporter on every member, the backup exporter reading S3. Real outages make real
//! alerts: S3 stopped -> WAL archiving fails -> PostgresArchivingFailing; a member stopped ->
//! PostgresMemberDown; both clear after recovery, and `pgctl status` shows them meanwhile.

use anyhow::{Context, Result};
use pgctl_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// A PromQL query against Prometheus on `host`: the result vector.
fn promql(lab: &Lab, host: &str, query: &str) -> Result<Vec<Value>> {
    let q = format!("query={query}");
    let out = lab.docker(
        host,
        &[
            "exec",
            "prometheus",
            "curl",
            "-sfG",
            "--data-urlencode",
            &q,
            "http://127.0.0.1:9090/api/v1/query",
        ],
    )?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("Prometheus answered: {out}"))?;
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// The active alerts `pgctl status` reports: (name, member).
fn active_alerts(lab: &Lab) -> Result<Vec<(String, String)>> {
    let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    anyhow::ensure!(s["alerts"]["error"].is_null(), "status could not read the alerts: {s}");
    Ok(s["alerts"]["active"]
        .as_array()
        .context("status lists alerts")?
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap_or_default().to_string(),
                a["member"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if check().unwrap_or(false) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < timeout, "{what}: not within {}s", timeout.as_secs());
        std::thread::sleep(Duration::from_secs(2));
    }
}

pub fn alerts_from_real_outages(lab: &Lab) -> Result<()> {
    let (app, _) = lab.app_hosts().into_iter().next().context("an application host")?;
    lab.edit_hosts(&[
        (
            "roles = [\"consul-client\", \"haproxy\", \"pgbouncer\"]",
            "roles = [\"consul-client\", \"haproxy\", \"pgbouncer\", \"monitoring\"]",
        ),
        ("scrape_interval = \"15s\"", "scrape_interval = \"5s\""),
        ("archive_alert_after = \"5m\"", "archive_alert_after = \"20s\""),
        ("member_down_after = \"1m\"", "member_down_after = \"15s\""),
    ])?;
    let started = Instant::now();
    let up = lab.pgctl_ok(&["up"])?;
    report(&format!(
        "MEASURED: up adding monitoring (monitoring image built on {app}, exporters on 3 members): {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    assert!(up.stderr.contains("pgctl_monitor"), "{}", up.stderr);

    // Every target answers: Patroni and postgres_exporter on each member, the backups, Consul.
    let members = lab.hosts().len();
    wait_for("every Prometheus target is up", Duration::from_secs(90), || {
        let up = promql(lab, &app, "up")?;
        let healthy = up.iter().filter(|s| s["value"][1] == "1").count();
        Ok(up.len() == 2 * members + 2 && healthy == up.len())
    })
    .with_context(|| format!("targets: {:?}", promql(lab, &app, "up")))?;
    // What the exporters report is the cluster's state: one leader, three volumes, S3 listed.
    assert_eq!(promql(lab, &app, "sum(patroni_primary)")?[0]["value"][1], "1");
    wait_for("the data volume usage of every member", Duration::from_secs(120), || {
        Ok(promql(lab, &app, "pgctl_volume_used_bytes > 0")?.len() == members)
    })?;
    assert_eq!(promql(lab, &app, "pgctl_backup_list_success")?[0]["value"][1], "1");
    assert_eq!(
        active_alerts(lab)?,
        Vec::<(String, String)>::new(),
        "a healthy cluster has no alert"
    );

    // S3 stops: archiving fails (or hangs) while the leader writes; the alert fires, and clears
    // once S3 is back and the archiver caught up.
    let leader = lab.leader()?;
    lab.sql(&leader, "CREATE TABLE outage(id int)")?;
    docker_local(&["stop", &lab.s3_container()])?;
    let stopped = Instant::now();
    let fired = wait_for("PostgresArchivingFailing fires", Duration::from_secs(240), || {
        lab.sql(&leader, "INSERT INTO outage SELECT 1; SELECT pg_switch_wal()")?;
        Ok(active_alerts(lab)?.iter().any(|(n, _)| n == "PostgresArchivingFailing"))
    });
    let shown = lab.pgctl(&["status"]).stdout;
    docker_local(&["start", &lab.s3_container()])?;
    fired?;
    report(&format!(
        "MEASURED: S3 stopped -> PostgresArchivingFailing active in Alertmanager after {:.1} s (archive_alert_after 20s, scrape 5s)",
        stopped.elapsed().as_secs_f64()
    ));
    assert!(shown.contains("PostgresArchivingFailing"), "status shows the alert:\n{shown}");
    let cleared = wait_for("the archiving alert clears", Duration::from_secs(240), || {
        Ok(!active_alerts(lab)?.iter().any(|(n, _)| n == "PostgresArchivingFailing"))
    })?;
    report(&format!(
        "MEASURED: S3 back -> the archiving alert cleared after {:.1} s",
        cleared.as_secs_f64()
    ));

    // A replica's Patroni stops: PostgresMemberDown names it, and clears when it is back.
    let replica = lab
        .hosts()
        .into_iter()
        .map(|(h, _)| h)
        .find(|h| *h != lab.leader().unwrap_or_default())
        .context("a replica")?;
    lab.docker(&replica, &["stop", "patroni"])?;
    let stopped = Instant::now();
    let fired = wait_for("PostgresMemberDown fires", Duration::from_secs(120), || {
        Ok(active_alerts(lab)?.contains(&("PostgresMemberDown".to_string(), replica.clone())))
    });
    lab.docker(&replica, &["start", "patroni"])?;
    fired?;
    report(&format!(
        "MEASURED: a replica's Patroni stopped -> PostgresMemberDown for it after {:.1} s (member_down_after 15s)",
        stopped.elapsed().as_secs_f64()
    ));
    wait_for("the member-down alert clears", Duration::from_secs(180), || {
        Ok(!active_alerts(lab)?.iter().any(|(n, _)| n == "PostgresMemberDown"))
    })?;

    // The role taken away again: `up` removes Prometheus, Alertmanager and the exporters, and
    // `status` no longer reports alerts.
    lab.edit_hosts(&[(
        "roles = [\"consul-client\", \"haproxy\", \"pgbouncer\", \"monitoring\"]",
        "roles = [\"consul-client\", \"haproxy\", \"pgbouncer\"]",
    )])?;
    let up = lab.pgctl_ok(&["up"])?;
    assert!(up.stderr.contains("no longer in hosts.toml"), "{}", up.stderr);
    let running = |host: &str| -> Result<String> { lab.docker(host, &["ps", "-a", "--format", "{{.Names}}"]) };
    let on_app = running(&app)?;
    for gone in ["prometheus", "alertmanager", "backup-exporter"] {
        assert!(!on_app.lines().any(|n| n == gone), "{gone} still on {app}:\n{on_app}");
    }
    assert!(on_app.lines().any(|n| n == "haproxy"), "HAProxy stays on {app}:\n{on_app}");
    for (host, _) in lab.hosts() {
        let names = running(&host)?;
        assert!(
            !names.lines().any(|n| n == "postgres-exporter"),
            "exporter still on {host}:\n{names}"
        );
        assert!(names.lines().any(|n| n == "patroni"), "{host}:\n{names}");
    }
    let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert!(s["alerts"].is_null(), "no monitoring, no alerts section: {}", s["alerts"]);
    Ok(())
}
