//! A disaster-recovery standby cluster in a second lab network (part of the migrate test
//! file: its primary is the migrate lab's cluster).

use super::*;

const DR_LAB: &str = "pgctl-e2e-dr";
const DR_SUBNET: &str = "172.30.87.0/24";

/// A second lab as the other region: a standby cluster of `primary`'s cluster (which archives
/// into `lab2`), reading that archive with the read-only key and streaming from its leader.
/// The primary runs on Consul; the standby on etcd (one voter), so the standby cluster and
/// `promote` are exercised on both DCS.
pub fn disaster_recovery_standby(primary: &Lab) -> Result<()> {
    let dr = Lab::up_with(
        DR_LAB,
        DR_SUBNET,
        &["--count", "2", "--app-hosts", "0", "--dcs", "etcd", "--backup-engine", "walg"],
    )?;
    // The regions are linked: the standby's hosts reach the primary's network (S3, PostgreSQL).
    let primary_net = SUBNET.trim_end_matches("0/24");
    for (i, (h, _)) in dr.hosts().iter().enumerate() {
        let ip = format!("{primary_net}{}", 31 + i);
        docker_local(&["network", "connect", "--ip", &ip, LAB, &dr.container(h)])?;
    }
    // Delivering the image to the second lab loads the machine's disk for a minute: the
    // primary may have failed over meanwhile; `up` returns once it is healthy again.
    primary.pgctl_ok(&["up"])?;
    let primary_leader = primary.leader()?;
    let ca = primary.dir.join("ca.pem");
    let dr_s3 = dr.s3_address()?;
    let primary_s3 = primary.s3_address()?;
    dr.edit_hosts(&[
        ("name = \"lab\"", "name = \"dr\""),
        ("s3_prefix = \"lab\"", "s3_prefix = \"dr\""),
        ("s3_ca_file = \"ca.pem\"", &format!("s3_ca_file = \"{}\"", ca.display())),
        (&format!("s3_address = \"{dr_s3}\""), &format!("s3_address = \"{primary_s3}\"")),
    ])?;
    let mut hosts = std::fs::read_to_string(dr.hosts_toml())?;
    hosts.push_str(&format!(
        "\n[standby]\nhost = \"{}\"\nport = 5432\narchive = \"s3://pgctl-backups/lab2\"\n",
        primary.address(&primary_leader)
    ));
    std::fs::write(dr.hosts_toml(), hosts)?;
    // The standby replays the primary's roles: the same database passwords; the primary's S3
    // and the key its archive is encrypted with.
    let theirs: toml::Table = toml::from_str(&std::fs::read_to_string(primary.dir.join("secrets.toml"))?)?;
    let mut ours: toml::Table = toml::from_str(&std::fs::read_to_string(dr.dir.join("secrets.toml"))?)?;
    for key in [
        "superuser_password",
        "replication_password",
        "rewind_password",
        "s3",
        "backup_encryption_key",
    ] {
        ours.insert(key.into(), theirs[key].clone());
    }
    std::fs::write(dr.dir.join("secrets.toml"), toml::to_string(&ours)?)?;

    primary.sql(
        &primary_leader,
        "CREATE TABLE dr_marks (id int PRIMARY KEY, note text); INSERT INTO dr_marks SELECT g, 'streamed' FROM generate_series(1, 1000) g",
    )?;
    let started = Instant::now();
    dr.pgctl_ok(&["up"])?;
    report(&format!(
        "MEASURED: DR standby cluster up (2 hosts, bootstrapped from the primary's backup in S3): {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let dr_leader = dr.leader()?;
    let made = dr.docker(
        &dr_leader,
        &["exec", "patroni", "cat", "/var/lib/postgresql/data/pgctl-replica-result"],
    )?;
    assert!(
        made.contains("\"method\":\"backup\""),
        "the standby leader was not made from the primary's backup: {made}"
    );
    let wait_rows = |what: &str, n: &str| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let got = dr.sql(&dr_leader, "SELECT count(*) FROM dr_marks").unwrap_or_default();
            if got == n {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{what}: {got} rows on the standby, expected {n}");
            std::thread::sleep(Duration::from_secs(1));
        }
    };
    wait_rows("streamed", "1000")?;
    let s = dr.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert_eq!(s["standby"], true, "{s}");
    assert_eq!(s["standby_lag"]["receiver"], "streaming", "{s}");
    assert!(s["standby_lag"]["streaming_lag_bytes"].as_u64().is_some(), "{s}");
    // Promoting while the primary still streams is refused and changes nothing.
    let refused = dr.pgctl(&["--yes", "promote"]);
    refused.assert_code(exit::REFUSED, "promote while streaming from a live primary");
    assert_eq!(dr.sql(&dr_leader, "SELECT pg_is_in_recovery()")?, "t");

    // Streaming breaks (the link to the primary's PostgreSQL is cut; S3 stays reachable): the
    // standby goes on from the archive alone.
    for (h, _) in dr.hosts() {
        let cut = [
            "exec",
            &dr.container(&h),
            "iptables",
            "-I",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            SUBNET,
            "--dport",
            "5432",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ];
        docker_local(&cut)?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s = dr.pgctl_ok(&["status", "--output", "json"])?.json()?;
        if s["standby_lag"]["receiver"] != "streaming" {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "status still shows streaming with the link cut: {s}");
        std::thread::sleep(Duration::from_secs(2));
    }
    primary.sql(
        &primary_leader,
        "INSERT INTO dr_marks SELECT g, 'archived' FROM generate_series(1001, 1500) g",
    )?;
    let segment = primary.sql(&primary_leader, "SELECT pg_walfile_name(pg_switch_wal())")?;
    primary.wait_archived(&primary_leader, &segment, Duration::from_secs(120))?;
    wait_rows("replayed from the primary's archive", "1500")?;
    let s = dr.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert_ne!(s["standby_lag"]["receiver"], "streaming", "{s}");
    let shown = dr.pgctl_ok(&["status"])?.stdout;
    assert!(shown.contains("Standby: "), "{shown}");

    // The primary region is lost (S3 survives): rows written after the last archived segment
    // may be lost, up to what status showed; every archived row must be there.
    primary.sql(
        &primary_leader,
        "INSERT INTO dr_marks SELECT g, 'unarchived' FROM generate_series(1501, 1600) g",
    )?;
    for (h, _) in primary.hosts().into_iter().chain(primary.app_hosts()) {
        docker_local(&["kill", &primary.container(&h)])?;
    }
    let primary_archive = primary.s3_list("lab2/")?;
    let started = Instant::now();
    let promoted = dr.pgctl_ok(&["--yes", "--output", "json", "promote"])?.json()?;
    report(&format!(
        "MEASURED: DR promote (primary region lost): {:.1} s, writable after {:.1} s; first backup {}",
        started.elapsed().as_secs_f64(),
        promoted["seconds"].as_f64().unwrap_or_default(),
        promoted["first_backup"]
    ));
    let dr_leader = dr.leader()?;
    assert_eq!(dr.sql(&dr_leader, "SELECT pg_is_in_recovery()")?, "f");
    assert_eq!(
        dr.sql(&dr_leader, "SELECT count(*) FROM dr_marks WHERE id <= 1500")?,
        "1500",
        "archived rows lost"
    );
    let unarchived = dr.sql(&dr_leader, "SELECT count(*) FROM dr_marks WHERE id > 1500")?;
    report(&format!(
        "DR: {unarchived} of the 100 rows written after the last archived segment survived (not archived yet at the loss)"
    ));
    assert!(
        dr.sql(&dr_leader, "SELECT (SELECT timeline_id FROM pg_control_checkpoint()) > 1")? == "t",
        "a new timeline"
    );
    // The promoted cluster writes, its replica follows, it archives into its own prefix.
    dr.sql(&dr_leader, "INSERT INTO dr_marks VALUES (100001, 'after the promotion')")?;
    let s = dr.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert_eq!(s["standby"], false, "{s}");
    let replica = dr.host_other_than(&dr_leader)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while dr
        .sql(&replica, "SELECT count(*) FROM dr_marks WHERE id = 100001")
        .unwrap_or_default()
        != "1"
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the standby cluster's replica did not follow the promoted leader"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(!primary.s3_list("dr/")?.is_empty(), "nothing in the promoted cluster's own prefix");
    assert_eq!(
        primary.s3_list("lab2/")?,
        primary_archive,
        "the standby wrote into the primary's archive"
    );
    Ok(())
}
