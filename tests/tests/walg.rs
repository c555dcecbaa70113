//! The backup scenarios with WAL-G on etcd, end to end (the Consul test runs WAL-G on Consul):
//! backup, encryption at rest, verification, point-in-time restore and its rollback. Runs when
//! the artifacts directory has wal-g (ansible-free-scripts/build-go-tools.sh builds it from
//! the Go module proxy); otherwise it reports itself skipped.

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::time::Duration;

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn backups_and_restore_with_walg() -> Result<()> {
    require_e2e("backups_and_restore_with_walg");
    if !artifacts_dir().join("wal-g").exists() {
        skipped(
            "backups_and_restore_with_walg",
            &format!(
                "no wal-g in {} (ansible-free-scripts/build-go-tools.sh builds it)",
                artifacts_dir().display()
            ),
        );
        return Ok(());
    }
    let lab = Lab::up_with("pgctl-e2e-walg", "172.30.83.0/24", &["--dcs", "etcd", "--backup-engine", "walg"])?;
    assert_eq!(lab.stack(), ("etcd".to_string(), "walg".to_string()));
    lab.pgctl_ok(&["up"])?;
    // The virtual IP on etcd (vip-manager watching Patroni's leader key in etcd).
    let moved = lab.vip_follows_the_leader(&lab.vip_address())?;
    report(&format!(
        "MEASURED: the VIP (etcd, vip-manager) moved to the new leader's host {:.1} s after the switchover returned; never on two hosts",
        moved.as_secs_f64()
    ));
    let leader = lab.leader()?;
    lab.sql(&leader, "CREATE TABLE marker(id int PRIMARY KEY)")?;
    lab.sql(&leader, "INSERT INTO marker VALUES (1)")?;
    lab.pgbench(&leader, &["-i", "-s", "2"], false)?;
    let (canary, segment) = plant_canary(&lab, &leader)?;
    lab.pgctl_ok(&["backup", "now", "--switch-wal"])?;
    assert_encrypted_in_s3(&lab, &leader, &canary, &segment)?;
    let listing = lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?;
    assert_eq!(listing["backups"].as_array().map(Vec::len), Some(1), "{listing}");

    let v = lab.pgctl_ok(&["verify-backup", "--output", "json"])?.json()?;
    assert!(v["recovered"]["indexes_checked"].as_u64().unwrap() > 0, "{v}");

    lab.sql(&leader, "INSERT INTO marker VALUES (2)")?;
    std::thread::sleep(Duration::from_secs(2));
    let target = lab.sql(&leader, "SELECT clock_timestamp()::text")?;
    std::thread::sleep(Duration::from_secs(2));
    lab.sql(&leader, "INSERT INTO marker VALUES (3)")?;
    lab.sql(&leader, "SELECT pg_switch_wal()")?;
    std::thread::sleep(Duration::from_secs(10));
    lab.pgctl_ok(&["restore", "--target-time", &target, "--yes"])?;
    let leader = lab.leader().context("a leader after the restore")?;
    assert_eq!(lab.sql(&leader, "SELECT string_agg(id::text, ',' ORDER BY id) FROM marker")?, "1,2");
    lab.pgctl_ok(&["restore", "--rollback", "--yes"])?;
    let leader = lab.leader()?;
    assert_eq!(
        lab.sql(&leader, "SELECT string_agg(id::text, ',' ORDER BY id) FROM marker")?,
        "1,2,3"
    );

    // `backup list` reads S3 itself: the same backups, and the archive's end, with every
    // database host stopped.
    let names = |listing: &serde_json::Value| -> Vec<String> {
        let backups = listing["backups"].as_array().cloned().unwrap_or_default();
        backups.iter().filter_map(|b| b["name"].as_str().map(str::to_string)).collect()
    };
    let before = lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?;
    assert!(!names(&before).is_empty(), "{before}");
    for (host, _) in lab.hosts() {
        docker_local(&["stop", "-t", "2", &lab.container(&host)])?;
    }
    let down = lab.pgctl(&["backup", "list", "--output", "json"]);
    for (host, _) in lab.hosts() {
        docker_local(&["start", &lab.container(&host)])?;
    }
    let down = down.json()?;
    assert_eq!(names(&down), names(&before), "the listing with every host stopped: {down}");
    assert!(
        down["wal_max"].as_str().is_some() && down["latest_restorable"].as_i64().is_some(),
        "{down}"
    );

    // The hosts' engines come back within seconds of their start.
    let started = std::time::Instant::now();
    while !lab.pgctl(&["remove", "--i-am-aware", "--volumes", "--yes"]).ok {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(120), "remove after the hosts came back");
        std::thread::sleep(Duration::from_secs(5));
    }
    Ok(())
}

/// A canary text in a table (so in the next base backup) and in a WAL segment that is then
/// archived: (the text, the segment).
fn plant_canary(lab: &Lab, leader: &str) -> Result<(String, String)> {
    let canary = format!("pgctl-plaintext-canary-{}", std::process::id());
    lab.sql(leader, "CREATE TABLE canary(t text)")?;
    lab.sql(
        leader,
        &format!("INSERT INTO canary SELECT '{canary}' FROM generate_series(1, 100)"),
    )?;
    let segment = lab.sql(leader, "SELECT pg_walfile_name(pg_switch_wal())")?;
    lab.wait_archived(leader, &segment, Duration::from_secs(120))?;
    Ok((canary, segment))
}

/// What reaches S3 is encrypted: the canary is in its WAL segment as WAL-G fetches it back
/// (so the check can see it), but neither in that segment's object as S3 stores it nor in any
/// base backup object, and no object is a bare compression frame.
fn assert_encrypted_in_s3(lab: &Lab, leader: &str, canary: &str, segment: &str) -> Result<()> {
    // Positive control: WAL-G's own fetch (decrypting, decompressing) has the canary.
    lab.walg(leader, &["wal-fetch", segment, "/tmp/canary-segment"])?;
    let found = lab.docker(leader, &["exec", "patroni", "grep", "-c", "-a", canary, "/tmp/canary-segment"])?;
    assert!(
        found.trim().parse::<u32>().unwrap_or(0) > 0,
        "the canary is in {segment} as fetched"
    );

    let objects: Vec<String> = lab
        .s3_list("lab/")?
        .into_iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|k| k.contains(segment) || k.contains("/tar_partitions/"))
        .collect();
    assert!(objects.iter().any(|k| k.contains(segment)), "{segment} is in S3: {objects:?}");
    assert!(
        objects.iter().any(|k| k.contains("/tar_partitions/")),
        "a base backup is in S3: {objects:?}"
    );
    const FRAMES: [(&str, &[u8]); 3] = [
        ("lz4", &[0x04, 0x22, 0x4d, 0x18]),
        ("zstd", &[0x28, 0xb5, 0x2f, 0xfd]),
        ("gzip", &[0x1f, 0x8b]),
    ];
    for key in &objects {
        let bytes = lab.s3_object(&format!("pgctl-backups/{key}"))?;
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{key}: the canary in plaintext"
        );
        for (name, magic) in FRAMES {
            assert!(!bytes.starts_with(magic), "{key}: a bare {name} frame, not encrypted");
        }
    }
    report(&format!(
        "S3: {} WAL-G objects checked, none holds plaintext or a bare compression frame",
        objects.len()
    ));
    Ok(())
}
