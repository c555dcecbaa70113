//! End-to-end: a standalone PostgreSQL (plain `postgres` in a container on a lab host, no
//! Patroni) archives with WAL-G into its own prefix; `pgctl migrate from-backup` makes the
//! cluster from that archive. Checked on data: every member has the source's rows (including
//! those written after its base backup), the source's own role logs in with its own password
//! over the network, the cluster's roles work (replicas stream), the cluster archives and backs
//! up into its own prefix, and the source prefix is byte-identical afterwards.
//!
//! Then, in the same lab with a new prefix, a streaming migration: the cluster follows a
//! standalone primary (TCP, password logins) as a standby cluster, and a cutover under a
//! client write loop switches to it without losing an acknowledged write.
//!
//! Last, that cluster gets a disaster-recovery standby cluster in a second lab network (the
//! other region, whose hosts reach the first region's S3 and database hosts): bootstrapped
//! from the primary's backup, streaming, then replaying the archive alone; every host of the
//! primary is lost, `pgctl promote` makes the standby writable with the rows it had.

use anyhow::Result;
use pgctl_tests::legacy::{start_legacy, Legacy, Serving, PGDATA};
use pgctl_tests::*;
use std::time::{Duration, Instant};

#[path = "migrate/dr.rs"]
mod dr;
#[path = "migrate/major.rs"]
mod major;
#[path = "migrate/volume.rs"]
mod volume;
use dr::disaster_recovery_standby;
use volume::migrate_a_pg13_volume;

const LAB: &str = "pgctl-e2e-migrate";
const SUBNET: &str = "172.30.86.0/24";
const SOURCE_PREFIX: &str = "legacy";
const APP_PASSWORD: &str = "legacy-app-password-7";

/// The size of the PGCTL_FLOW_SCALE data a flow's source got (nothing when unset).
fn report_flow_data(flow: &str, size: &str) {
    if !size.is_empty() {
        report(&format!("MEASURED: {flow}: the source database holds {size} (PGCTL_FLOW_SCALE)"));
    }
}

/// SQL as postgres in database appdb of a cluster member.
fn appdb_sql(lab: &Lab, host: &str, sql: &str) -> Result<String> {
    let socket = ["-h", "/var/run/postgresql", "-U", "postgres", "-d", "appdb", "-XAtqc", sql];
    let exec = ["exec", "-u", "postgres", "-e", "PGPASSFILE=/etc/pgctl/pgpass", "patroni", "psql"];
    lab.docker(host, &[&exec[..], &socket[..]].concat())
}

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn migrate_a_standalone_postgres_through_its_walg_backup() -> Result<()> {
    require_e2e("migrate_a_standalone_postgres_through_its_walg_backup");
    let lab = Lab::up_with(LAB, SUBNET, &["--backup-engine", "walg"])?;
    let host = lab.hosts()[0].0.clone();
    // While developing one phase: PGCTL_MIGRATE_ONLY=dr or =volume runs it alone on a fresh lab.
    match std::env::var("PGCTL_MIGRATE_ONLY").as_deref() {
        Ok("dr") => {
            lab.edit_hosts(&[("s3_prefix = \"lab\"", "s3_prefix = \"lab2\"")])?;
            lab.pgctl_ok(&["up"])?;
            lab.pgctl_ok(&["backup", "now"])?;
            return disaster_recovery_standby(&lab);
        }
        Ok("volume") => {
            lab.edit_hosts(&[("s3_prefix = \"lab\"", "s3_prefix = \"lab-pg13\"")])?;
            return migrate_a_pg13_volume(&lab, &host);
        }
        _ => {}
    }
    let legacy = start_legacy(&lab, &host, "legacy", Serving::WalG { prefix: SOURCE_PREFIX })?;

    // The source's data: its own role and database, rows before and after its base backup.
    legacy.sql("postgres", &format!("CREATE ROLE app_owner LOGIN PASSWORD '{APP_PASSWORD}'"))?;
    legacy.sql("postgres", "CREATE DATABASE appdb OWNER app_owner")?;
    legacy.sql(
        "appdb",
        "CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g; ALTER TABLE items OWNER TO app_owner",
    )?;
    report_flow_data("migrate from-backup", &legacy.add_flow_data("appdb")?);
    legacy.walg(&["backup-push", PGDATA])?;
    legacy.sql(
        "appdb",
        "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(5001, 6000) g",
    )?;
    let checksum_sql = "SELECT md5(string_agg(id::text || note, ',' ORDER BY id)) FROM items";
    let checksum = legacy.sql("appdb", checksum_sql)?;
    legacy.archive_everything()?;
    // Writes stop at the source before the migration (as the help says).
    legacy.stop()?;
    let source_before = lab.s3_list(&format!("{SOURCE_PREFIX}/"))?;
    assert!(!source_before.is_empty());

    // The cluster's own prefix as the source is refused before anything changes.
    let own = lab.pgctl(&["--yes", "migrate", "from-backup", "--prefix", "s3://pgctl-backups/lab"]);
    own.assert_code(exit::REFUSED, "migrate from the cluster's own prefix");

    let started = Instant::now();
    let migrated = lab
        .pgctl_ok(&[
            "--yes",
            "--output",
            "json",
            "migrate",
            "from-backup",
            "--prefix",
            &format!("s3://pgctl-backups/{SOURCE_PREFIX}"),
        ])?
        .json()?;
    report(&format!(
        "MEASURED: migrate from-backup (WAL-G, 6,000 rows): {:.1} s; phases: {}",
        started.elapsed().as_secs_f64(),
        migrated["restore"]["phases"]
    ));

    // Every member has the source's rows, the later ones included.
    let leader = lab.leader()?;
    for (h, _) in lab.hosts() {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let got = appdb_sql(&lab, &h, checksum_sql).unwrap_or_else(|e| format!("{e:#}"));
            if got == checksum {
                break;
            }
            assert!(Instant::now() < deadline, "{h}: items differ from the source ({got} vs {checksum})");
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    // The source's role logs in with its own password over the network (the cluster's
    // pg_hba); a wrong password is refused.
    let login = |password: &str| {
        lab.docker(
            &host,
            &[
                "exec",
                "-e",
                &format!("PGPASSWORD={password}"),
                "patroni",
                "psql",
                "-h",
                &lab.address(&leader),
                "-U",
                "app_owner",
                "-d",
                "appdb",
                "-XAtqc",
                "SELECT count(*) FROM items",
            ],
        )
    };
    assert_eq!(login(APP_PASSWORD)?, "6000");
    assert!(login("not-the-password").is_err(), "a wrong password was accepted");

    // The cluster archives and backs up into its own prefix; the source is untouched.
    let listed = lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?;
    assert!(
        listed["backups"].as_array().is_some_and(|b| !b.is_empty()),
        "no backup in the cluster's own prefix: {listed}"
    );
    lab.archive_check(&leader)?;
    assert_eq!(
        lab.s3_list(&format!("{SOURCE_PREFIX}/"))?,
        source_before,
        "the source prefix changed"
    );

    // A second run is refused: the cluster runs.
    let again = lab.pgctl(&[
        "--yes",
        "migrate",
        "from-backup",
        "--prefix",
        &format!("s3://pgctl-backups/{SOURCE_PREFIX}"),
    ]);
    again.assert_code(exit::REFUSED, "migrate into a running cluster");

    // The same lab, a new cluster (new prefix) from a PostgreSQL 13 + PostGIS data volume.
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    lab.edit_hosts(&[("s3_prefix = \"lab\"", "s3_prefix = \"lab-pg13\"")])?;
    migrate_a_pg13_volume(&lab, &host)?;

    // The same lab, a new cluster (new prefix) for the streaming migration.
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    lab.edit_hosts(&[("s3_prefix = \"lab-pg13-dump\"", "s3_prefix = \"lab2\"")])?;
    migrate_by_streaming(&lab, &host)?;

    // The migrated cluster is now the primary of a disaster-recovery standby in another lab.
    disaster_recovery_standby(&lab)
}

const SOURCE_SUPERUSER_PASSWORD: &str = "source-superuser-password-3";

/// `migrate from-primary` + `cutover` under a client that writes to the source, then (once
/// the source refuses) to the cluster: no acknowledged write is lost, the gap is measured.
fn migrate_by_streaming(lab: &Lab, host: &str) -> Result<()> {
    let serving = Serving::Tcp {
        port: 5433,
        superuser_password: SOURCE_SUPERUSER_PASSWORD,
    };
    let source = start_legacy(lab, host, "primary", serving)?;
    source.sql(
        "postgres",
        "CREATE TABLE before_cutover (id int PRIMARY KEY, note text); INSERT INTO before_cutover SELECT g, md5(g::text) FROM generate_series(1, 20000) g",
    )?;
    source.sql("postgres", "CREATE TABLE moving (id int PRIMARY KEY, at timestamptz DEFAULT now())")?;
    report_flow_data("migrate from-primary", &source.add_flow_data("postgres")?);
    let password_file = lab.hosts_toml().with_file_name("source-superuser.pw");
    std::fs::write(&password_file, SOURCE_SUPERUSER_PASSWORD)?;
    let address = lab.address(host);
    let source_args = [
        "--source-host",
        address.as_str(),
        "--source-port",
        "5433",
        "--source-password-file",
        password_file.to_str().unwrap(),
    ];

    let started = Instant::now();
    lab.pgctl_ok(&[&["--yes", "migrate", "from-primary"][..], &source_args[..]].concat())?;
    report(&format!(
        "MEASURED: migrate from-primary (a standby cluster streaming from the source, 20,000 rows): {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert_eq!(s["standby"], true, "a standby cluster: {s}");
    assert_eq!(s["members"].as_array().map(Vec::len), Some(lab.hosts().len()), "{s}");
    // Writes on the source stream into the cluster.
    source.sql(
        "postgres",
        "INSERT INTO before_cutover SELECT g, 'late' FROM generate_series(20001, 20100) g",
    )?;
    let leader = lab.leader()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while lab.sql(&leader, "SELECT count(*) FROM before_cutover")? != "20100" {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the standby cluster did not receive the source's new rows"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let lag = lab
        .pgctl_ok(&[&["--output", "json", "migrate", "lag"][..], &source_args[..]].concat())?
        .json()?;
    assert!(lag["lag_bytes"].as_u64().is_some(), "{lag}");

    // The cutover under a client writing to the source, then to whichever member takes writes.
    let mut targets: Vec<SqlTarget<'_>> = vec![Box::new(|sql: &str| source.sql("postgres", sql))];
    for (h, _) in lab.hosts() {
        targets.push(Box::new(move |sql: &str| lab.sql(&h, sql)));
    }
    let started = Instant::now();
    let (cut, writes) = write_during(&targets, "moving", || {
        std::thread::sleep(Duration::from_secs(3));
        lab.pgctl_ok(&[&["--yes", "--output", "json", "migrate", "cutover"][..], &source_args[..]].concat())?
            .json()
    })?;
    report(&format!(
        "MEASURED: migrate cutover: {:.1} s; pgctl's write gap {:.1} s; the client wrote {} rows, longest gap between two acknowledged writes {:.1} s",
        started.elapsed().as_secs_f64(),
        cut["write_gap_seconds"].as_f64().unwrap_or_default(),
        writes.acked.len(),
        writes.longest_gap.as_secs_f64()
    ));
    let leader = lab.leader()?;
    assert_eq!(lab.sql(&leader, "SELECT pg_is_in_recovery()")?, "f");
    let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert_eq!(s["standby"], false, "{s}");
    assert_eq!(
        lab.lost_writes(&leader, "moving", &writes)?,
        Vec::<i64>::new(),
        "acknowledged writes lost"
    );
    let on_cluster: usize = lab.sql(&leader, "SELECT count(*) FROM moving")?.parse()?;
    let on_source: usize = source.sql("postgres", "SELECT count(*) FROM moving")?.parse()?;
    assert!(
        on_cluster > on_source,
        "no write landed on the cluster after the cutover ({on_cluster} there, {on_source} on the source)"
    );
    assert_eq!(lab.sql(&leader, "SELECT count(*) FROM before_cutover")?, "20100");
    // The source refuses writes and keeps no slot for the cluster.
    assert!(
        source.sql("postgres", "INSERT INTO moving(id) VALUES (-1)").is_err(),
        "the source still takes writes"
    );
    assert_eq!(source.sql("postgres", "SELECT count(*) FROM pg_replication_slots")?, "0");
    // The cluster backs up and archives into its own, new prefix.
    assert!(!lab.s3_list("lab2/")?.is_empty(), "nothing in the cluster's prefix");
    lab.archive_check(&leader)?;
    Ok(())
}
