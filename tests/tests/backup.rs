//! Backups end to end through the pgctl binary on the lab (engine pgBackRest, S3 = Garage over
//! HTTPS): archiving from the leader, `backup now` under pgbench load, `backup list` straight
//! from S3 with the read-only key, archiving continuing after a switchover (the engine's own
//! check), and a second cluster refused on the same prefix. (WAL-G cannot be obtained here; its
//! configuration is covered by golden tests.)

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn pgbackrest(lab: &Lab, host: &str, args: &[&str]) -> Result<String> {
    let mut cmd = vec![
        "exec",
        "-u",
        "postgres",
        "-e",
        "PGPASSFILE=/etc/pgctl/pgpass",
        "patroni",
        "pgbackrest",
        "--config=/etc/pgctl/pgbackrest.conf",
        "--stanza=lab",
    ];
    cmd.extend_from_slice(args);
    lab.docker(host, &cmd)
}

/// pgbench against the host's PostgreSQL as postgres; `detached` leaves it running.
fn pgbench(lab: &Lab, host: &str, args: &[&str], detached: bool) -> Result<String> {
    let mut cmd = vec!["exec"];
    if detached {
        cmd.push("-d");
    }
    cmd.extend([
        "-u",
        "postgres",
        "-e",
        "PGPASSFILE=/etc/pgctl/pgpass",
        "patroni",
        "pgbench",
        "-h",
        "/var/run/postgresql",
        "-U",
        "postgres",
    ]);
    cmd.extend_from_slice(args);
    cmd.push("postgres");
    lab.docker(host, &cmd)
}

fn leader(lab: &Lab) -> Result<String> {
    lab.pgctl_ok(&["status", "--json"])?.json()?["leader"]
        .as_str()
        .map(str::to_string)
        .context("no leader")
}

#[test]
fn backups_with_pgbackrest() -> Result<()> {
    if !e2e_enabled("backups_with_pgbackrest") {
        return Ok(());
    }
    let lab = Lab::up("pgctl-e2e-backup", "172.30.81.0/24")?;
    lab.pgctl_ok(&["up"])?;
    let l = leader(&lab)?;
    // pgbench data and a load while the backup runs.
    pgbench(&lab, &l, &["-i", "-s", "5"], false)?;
    pgbench(&lab, &l, &["-T", "20", "-c", "2"], true)?;
    let before = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    lab.pgctl_ok(&["backup", "now", "--switch-wal"])?;
    let after = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;

    let listing = lab.pgctl_ok(&["backup", "list", "--json"])?.json()?;
    let backups = listing["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{listing}");
    let b = &backups[0];
    let (start, stop) = (b["start"].as_i64().unwrap(), b["stop"].as_i64().unwrap());
    assert!(
        before - 5 <= start && start <= stop && stop <= after + 5,
        "plausible times: {b} within [{before}, {after}]"
    );
    assert!(b["size_bytes"].as_u64().unwrap() > 50_000_000, "pgbench scale 5 is ~75 MB: {b}");
    assert!(
        listing["wal_max"].as_str().is_some_and(|w| w.len() == 24),
        "WAL segments arrived in S3: {listing}"
    );
    pgbackrest(&lab, &l, &["check"])?;
    let status = lab.pgctl_ok(&["status", "--json"])?.json()?;
    assert!(status["archiver"]["archived_count"].as_u64().unwrap() > 0, "{status}");

    // Switchover during load: the new leader archives, with no gap (pgBackRest's check).
    pgbench(&lab, &l, &["-T", "15", "-c", "2"], true)?;
    std::thread::sleep(Duration::from_secs(3));
    lab.pgctl_ok(&["switchover", "--yes"])?;
    let new_leader = leader(&lab)?;
    assert_ne!(new_leader, l);
    pgbackrest(&lab, &new_leader, &["check"])?;
    lab.pgctl_ok(&["backup", "now"])?;
    let listing = lab.pgctl_ok(&["backup", "list", "--json"])?.json()?;
    assert_eq!(listing["backups"].as_array().unwrap().len(), 2, "{listing}");

    // Retention: a dry run deletes nothing; then exactly the newest one is kept.
    let count = |lab: &Lab| -> Result<usize> {
        Ok(lab.pgctl_ok(&["backup", "list", "--json"])?.json()?["backups"]
            .as_array()
            .unwrap()
            .len())
    };
    lab.pgctl_ok(&["backup", "retain", "--keep-full", "1", "--dry-run"])?;
    assert_eq!(count(&lab)?, 2, "a dry run deletes nothing");
    lab.pgctl_ok(&["backup", "retain", "--keep-full", "1", "--yes"])?;
    assert_eq!(count(&lab)?, 1);

    // A schedule of every minute, keeping 2: it fires on the leader only, never overlapping,
    // and retention keeps exactly 2. (Changing the schedule recreates members one by one.)
    let hosts = std::fs::read_to_string(lab.hosts_toml())?;
    std::fs::write(
        lab.hosts_toml(),
        hosts
            .replace("schedule = \"20 5 * * *\"", "schedule = \"* * * * *\"")
            .replace("keep_full = 7", "keep_full = 2"),
    )?;
    lab.pgctl_ok(&["up"])?;
    let scheduled_leader = leader(&lab)?;
    let started = std::time::Instant::now();
    let runs = loop {
        let s = lab.pgctl_ok(&["status", "--json"])?.json()?;
        let runs = s["scheduled_backups"]["runs"].as_array().cloned().unwrap_or_default();
        if runs.len() >= 3 {
            break runs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "fewer than 3 scheduled runs in 5 minutes: {s}"
        );
        std::thread::sleep(Duration::from_secs(10));
    };
    for r in &runs {
        assert_eq!(r["ok"], true, "{r}");
        assert_eq!(r["host"], scheduled_leader.as_str(), "only the leader backs up: {r}");
    }
    for pair in runs.windows(2) {
        assert!(pair[1]["start"].as_i64() >= pair[0]["end"].as_i64(), "never two at once: {pair:?}");
    }
    assert_eq!(count(&lab)?, 2, "retention keeps exactly keep_full");
    let status = lab.pgctl_ok(&["status", "--json"])?.json()?;
    assert!(
        status["scheduled_backups"]["last_success_age_seconds"].as_i64().unwrap() < 120,
        "{status}"
    );

    // A second cluster (new system identifier) on the same prefix is refused before it starts.
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    let refused = lab.pgctl(&["up"]);
    assert!(
        !refused.ok && refused.stderr.contains("already holds the WAL archive"),
        "{}",
        refused.stderr
    );
    for (h, _) in lab.hosts() {
        assert_eq!(
            lab.docker(&h, &["ps", "-aq", "--filter", "name=^patroni$"])?,
            "",
            "{h}: Patroni not started"
        );
    }
    // The archive of the first cluster is untouched.
    assert_eq!(
        lab.pgctl_ok(&["backup", "list", "--json"])?.json()?["backups"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    Ok(())
}
