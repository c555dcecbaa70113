//! Backups end to end through the pgctl binary on the lab (engine pgBackRest, S3 = Garage over
//! HTTPS): archiving from the leader, `backup now` under pgbench load, `backup list` straight
//! from S3 with the read-only key, `verify-backup` (and its key refused a write), archiving
//! continuing after a switchover and through an S3 outage (the engine's own check, and a replay
//! past the outage), scheduled backups with retention, a damaged backup failing verification,
//! and a second cluster refused on the same prefix. (WAL-G cannot be obtained here; its
//! configuration is covered by golden tests, and tests/walg.rs reports itself skipped.)

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn backups_with_pgbackrest() -> Result<()> {
    require_e2e("backups_with_pgbackrest");
    let lab = Lab::up("pgctl-e2e-backup", "172.30.81.0/24")?;
    // Pre-flight: a wrong S3 key, or a bucket that does not exist, stops `up` before Patroni.
    let secrets_path = lab.dir.join("secrets.toml");
    let secrets = std::fs::read_to_string(&secrets_path)?;
    let hosts = std::fs::read_to_string(lab.hosts_toml())?;
    let wrong_key = edited(
        &secrets,
        &[(lab.s3_secret("access_key_id")?.as_str(), "GK0123456789abcdef01234567")],
    )?;
    let no_bucket = edited(&hosts, &[("s3_bucket = \"pgctl-backups\"", "s3_bucket = \"no-such-bucket\"")])?;
    for (file, bad, good) in [(&secrets_path, &wrong_key, &secrets), (&lab.hosts_toml(), &no_bucket, &hosts)] {
        std::fs::write(file, bad)?;
        let refused = lab.pgctl(&["up"]);
        std::fs::write(file, good)?;
        assert!(!refused.ok, "up with an unusable S3 must be refused");
        lab.assert_no_patroni("the S3 pre-flight refused");
        assert!(refused.stderr.contains("is not usable"), "{}", refused.stderr);
    }
    lab.pgctl_ok(&["up"])?;
    let l = lab.leader()?;
    // pgbench data and a load while the backup runs.
    lab.pgbench(&l, &["-i", "-s", "5"], false)?;
    lab.pgbench(&l, &["-T", "20", "-c", "2"], true)?;
    let before = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
    lab.pgctl_ok(&["backup", "now", "--switch-wal"])?;
    let after = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;

    let listing = lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?;
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
    lab.pgbackrest(&l, &["check"])?;
    let status = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert!(status["archiver"]["archived_count"].as_u64().unwrap() > 0, "{status}");

    // verify-backup: restored on a non-leader with the read-only key, read whole, amcheck'd.
    let v = lab.pgctl_ok(&["verify-backup", "--output", "json"])?.json()?;
    assert_eq!(v["backup"], b["name"], "{v}");
    assert_ne!(v["host"].as_str(), Some(l.as_str()), "not on the leader: {v}");
    assert_eq!(v["s3_key_id"].as_str().unwrap(), lab.s3_secret("readonly_access_key_id")?);
    // pgbench's 4 tables bring 3 primary keys, besides the catalogs'.
    assert!(v["recovered"]["indexes_checked"].as_u64().unwrap() > 300, "{v}");
    let host = v["host"].as_str().unwrap();
    assert_eq!(
        lab.docker(host, &["volume", "ls", "-q", "--filter", "name=pgctl-verify"])?,
        "",
        "throwaway volume removed"
    );
    assert_eq!(
        lab.docker(host, &["ps", "-aq", "--filter", "name=pgctl-verify"])?,
        "",
        "throwaway container removed"
    );
    // The key it reads with provably cannot write into the bucket; the read-write one can.
    let (code, body) = lab.s3_request("PUT", "pgctl-backups/lab/pgctl-probe", true, b"probe")?;
    assert_eq!(code, 403, "the read-only key must be refused a write: {body}");
    assert_eq!(lab.s3_request("PUT", "pgctl-backups/pgctl-probe", false, b"probe")?.0, 200);
    assert_eq!(lab.s3_request("DELETE", "pgctl-backups/pgctl-probe", false, b"")?.0, 204);
    // pgctl's own pre-flight says so, and refuses a "read-only" key that can write (leaving
    // no probe object behind).
    let online = lab.pgctl_ok(&["check", "--online"])?;
    assert!(online.stderr.contains("cannot write"), "{}", online.stderr);
    let s3 = lab.s3_container();
    let garage = |args: &[&str]| {
        let cmd = [&["exec", s3.as_str(), "garage", "-c", "/etc/garage.toml"][..], args].concat();
        docker_local(&cmd)
    };
    garage(&["bucket", "allow", "--write", "pgctl-backups", "--key", "pgctl-ro"])?;
    let refused = lab.pgctl(&["check", "--online"]);
    garage(&["bucket", "deny", "--write", "pgctl-backups", "--key", "pgctl-ro"])?;
    refused.assert_code(exit::REFUSED, "check --online with a read-only key that can write");
    assert!(
        refused.stderr.contains("s3.readonly_access_key_id"),
        "names the key: {}",
        refused.stderr
    );
    assert!(
        !lab.s3_list("lab/pgctl-read-only-probe")?
            .iter()
            .any(|k| k.starts_with("lab/pgctl-read-only-probe")),
        "the probe object was removed"
    );

    // Switchover during load: the new leader archives, with no gap (pgBackRest's check).
    lab.pgbench(&l, &["-T", "15", "-c", "2"], true)?;
    std::thread::sleep(Duration::from_secs(3));
    lab.pgctl_ok(&["switchover", "--yes"])?;
    let new_leader = lab.leader()?;
    assert_ne!(new_leader, l);
    lab.pgbackrest(&new_leader, &["check"])?;
    lab.pgctl_ok(&["backup", "now"])?;
    let listing = lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?;
    assert_eq!(listing["backups"].as_array().unwrap().len(), 2, "{listing}");

    // S3 away for a minute under load: the archiver fails and status says so; when S3 is back
    // archiving catches up by itself and no WAL is missing.
    let leader = new_leader;
    let failed_before = lab.pgctl_ok(&["status", "--output", "json"])?.json()?["archiver"]["failed_count"]
        .as_u64()
        .unwrap();
    lab.pgbench(&leader, &["-T", "90", "-c", "2"], true)?;
    let network = lab.name.clone();
    docker_local(&["network", "disconnect", &network, &lab.s3_container()])?;
    let outage = Instant::now();
    let shown = loop {
        let run = lab.pgctl_ok(&["status"])?;
        let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
        if s["archiver"]["failed_count"].as_u64().unwrap() > failed_before && run.stdout.contains("FAILING since") {
            break run.stdout;
        }
        assert!(
            outage.elapsed() < Duration::from_secs(300),
            "status never showed the archiver failing: {s}"
        );
        std::thread::sleep(Duration::from_secs(5));
    };
    report(&format!(
        "S3 outage: status showed the archiver failing {:.0} s after S3 went away",
        outage.elapsed().as_secs_f64()
    ));
    eprintln!("{shown}");
    std::thread::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed()));
    docker_local(&["network", "connect", "--ip", &lab.s3_address()?, &network, &lab.s3_container()])?;
    let switched = lab.sql(&leader, "SELECT pg_switch_wal()")?;
    let segment = lab.sql(&leader, &format!("SELECT pg_walfile_name('{switched}')"))?;
    let caught_up = lab.wait_archived(&leader, &segment, Duration::from_secs(300))?;
    report(&format!(
        "S3 outage: archiving caught up {:.0} s after S3 returned",
        caught_up.as_secs_f64()
    ));
    lab.pgbackrest(&leader, &["check"])?;
    // A replay from the newest backup through every archived segment passes the outage: a
    // missing segment would end recovery before the switch made after it.
    let v = lab.pgctl_ok(&["verify-backup", "--latest", "--output", "json"])?.json()?;
    assert!(
        lsn(v["recovered"]["lsn"].as_str().unwrap()) >= lsn(&switched),
        "replay reached {} but WAL up to {switched} was archived: {v}",
        v["recovered"]["lsn"]
    );

    // Retention: a dry run deletes nothing; then exactly the newest one is kept.
    let count = |lab: &Lab| -> Result<usize> {
        Ok(lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?["backups"]
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
    lab.edit_hosts(&[
        ("schedule = \"20 5 * * *\"", "schedule = \"* * * * *\""),
        ("keep_full = 7", "keep_full = 2"),
    ])?;
    lab.pgctl_ok(&["up"])?;
    let scheduled_leader = lab.leader()?;
    let started = std::time::Instant::now();
    let runs = loop {
        let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
        let runs = s["scheduled_backups"]["runs"].as_array().cloned().unwrap_or_default();
        // Two runs: they show the schedule, no overlap, and retention (1 kept before + 2 = 3
        // backups, pruned to 2).
        if runs.len() >= 2 {
            break runs;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "fewer than 2 scheduled runs in 5 minutes: {s}"
        );
        std::thread::sleep(Duration::from_secs(10));
    };
    for r in &runs {
        assert_eq!(r["ok"], true, "{r}");
        assert!(
            r["size_bytes"].as_u64().unwrap() > 50_000_000,
            "the size backed up is recorded: {r}"
        );
        assert_eq!(r["host"], scheduled_leader.as_str(), "only the leader backs up: {r}");
    }
    for pair in runs.windows(2) {
        assert!(pair[1]["start"].as_i64() >= pair[0]["end"].as_i64(), "never two at once: {pair:?}");
    }
    assert_eq!(count(&lab)?, 2, "retention keeps exactly keep_full");
    let status = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert!(
        status["scheduled_backups"]["last_success_age_seconds"].as_i64().unwrap() < 120,
        "{status}"
    );

    // A damaged backup (one of its files deleted in S3) fails verification, clearly.
    let newest = lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?["backups"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let files = lab.pgbackrest(
        &scheduled_leader,
        &["repo-ls", "--recurse", &format!("backup/lab/{newest}/pg_data/global")],
    )?;
    let victim = files
        .lines()
        .find(|f| f.starts_with("pg_control"))
        .context("pg_control in the backup")?
        .to_string();
    let object = format!("pgctl-backups/lab/backup/lab/{newest}/pg_data/global/{victim}");
    assert_eq!(lab.s3_request("DELETE", &object, false, b"")?.0, 204, "deleting {object}");
    let damaged = lab.pgctl(&["verify-backup", "--backup", &newest]);
    damaged.assert_code(exit::FAILED, "verify-backup of a damaged backup");
    assert!(
        damaged.stderr.contains(&format!("backup {newest} did NOT verify")) && damaged.stderr.contains("missing or damaged"),
        "{}",
        damaged.stderr
    );

    // A second cluster (new system identifier) on the same prefix is refused before it starts.
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    let refused = lab.pgctl(&["up"]);
    assert!(!refused.ok, "a second cluster on the prefix must be refused");
    lab.assert_no_patroni("up refused the occupied prefix");
    assert!(refused.stderr.contains("already holds the WAL archive"), "{}", refused.stderr);
    // The archive of the first cluster is untouched.
    assert_eq!(
        lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?["backups"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    Ok(())
}
