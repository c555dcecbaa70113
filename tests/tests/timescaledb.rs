//! TimescaleDB end to end: an image built with a supplied TimescaleDB package, preloaded and
//! created by `up` from hosts.toml `[cluster.extensions]`, and a hypertable brought back by a
//! point-in-time restore (engine pgBackRest). Runs only when the package is supplied
//! (PGCTL_TIMESCALEDB_DEB=/path/to/timescaledb-2-postgresql-15_*.deb; several paths separated by
//! `:` when it needs its loader package too), because TimescaleDB cannot be obtained on this
//! workplace's machines (not in Debian, no internet). Otherwise it reports itself skipped.
//! Without the package, the preloading is covered by golden tests (cli/src/cluster/spec.rs).

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TEST: &str = "hypertable_survives_backup_and_restore";
const DB: &str = "app";

/// SQL as postgres in the host's Patroni container in database `db`, as [`Lab::sql`] does in
/// database postgres (independent of pgctl).
fn sql_in(lab: &Lab, host: &str, db: &str, sql: &str) -> Result<String> {
    lab.docker(
        host,
        &[
            "exec",
            "-u",
            "postgres",
            "-e",
            "PGPASSFILE=/etc/pgctl/pgpass",
            "-e",
            "PGCONNECT_TIMEOUT=3",
            "patroni",
            "psql",
            "-h",
            "/var/run/postgresql",
            "-U",
            "postgres",
            "-d",
            db,
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
    )
}

/// The timescaledb extension's version in database `app` on `host` ("" when it is not there).
fn extversion(lab: &Lab, host: &str) -> Result<String> {
    sql_in(lab, host, DB, "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
}

/// Asserts that every member runs with timescaledb in shared_preload_libraries.
fn assert_preloaded_everywhere(lab: &Lab, when: &str) -> Result<()> {
    for (h, _) in lab.hosts() {
        let preload = lab.sql(&h, "SHOW shared_preload_libraries")?;
        assert!(
            preload.split(',').any(|l| l.trim() == "timescaledb"),
            "{when}: {h} does not preload timescaledb: shared_preload_libraries = '{preload}'"
        );
    }
    Ok(())
}

/// (rows, chunks) of the hypertable on `host`.
fn counts(lab: &Lab, host: &str) -> Result<(u64, u64)> {
    let rows = sql_in(lab, host, DB, "SELECT count(*) FROM metrics")?;
    let chunks = sql_in(lab, host, DB, "SELECT count(*) FROM show_chunks('metrics')")?;
    Ok((
        rows.parse().with_context(|| format!("row count `{rows}`"))?,
        chunks.parse().with_context(|| format!("chunk count `{chunks}`"))?,
    ))
}

/// Rows of `device` on `host`.
fn device_rows(lab: &Lab, host: &str, device: u32) -> Result<u64> {
    let n = sql_in(lab, host, DB, &format!("SELECT count(*) FROM metrics WHERE device = {device}"))?;
    n.parse().with_context(|| format!("device {device} count `{n}`"))
}

/// Hourly rows for `device` from `from` (inclusive) to `to` (exclusive), both UTC.
fn insert_hourly(lab: &Lab, host: &str, device: u32, from: &str, to: &str) -> Result<String> {
    sql_in(
        lab,
        host,
        DB,
        &format!(
            "INSERT INTO metrics(ts, device, value) \
             SELECT t, {device}, random() FROM generate_series(timestamptz '{from}', timestamptz '{to}' - interval '1 hour', interval '1 hour') AS t"
        ),
    )
}

/// Waits until the leader has archived the segment holding everything committed so far.
fn archive_everything(lab: &Lab, leader: &str) -> Result<()> {
    let segment = lab.sql(leader, "SELECT pg_walfile_name(pg_switch_wal())")?;
    lab.wait_archived(leader, &segment, Duration::from_secs(120))?;
    Ok(())
}

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn hypertable_survives_backup_and_restore() -> Result<()> {
    require_e2e(TEST);
    let Some(debs) = std::env::var_os("PGCTL_TIMESCALEDB_DEB").filter(|v| !v.is_empty()) else {
        skipped(
            TEST,
            "no TimescaleDB package here (set PGCTL_TIMESCALEDB_DEB=/path/to/timescaledb-2-postgresql-15_*.deb to run it)",
        );
        return Ok(());
    };
    // Each package keeps its file name: the build takes `timescaledb*15*.deb` from the artifacts.
    let debs: Vec<(String, PathBuf)> = std::env::split_paths(&debs)
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("PGCTL_TIMESCALEDB_DEB: {} has no file name", p.display()))?
                .to_string();
            Ok((name, p))
        })
        .collect::<Result<_>>()?;
    anyhow::ensure!(!debs.is_empty(), "PGCTL_TIMESCALEDB_DEB is set but names no file");
    let lab = Lab::up("pgctl-e2e-tsdb", "172.30.84.0/24")?;

    // An image with TimescaleDB (and pgBackRest, the lab's engine); its manifest says so.
    let tag = "pgctl/postgres:15-tsdb";
    let binaries: Vec<(&str, &Path)> = debs.iter().map(|(n, p)| (n.as_str(), p.as_path())).collect();
    lab.build_with(&binaries, "walg,consul", tag)?;
    let listed = pgctl_ok(&lab.work, &["image", "list", "--output", "json"])?.json()?;
    let image = listed
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["tags"].as_array().into_iter().flatten().any(|t| t == tag))
        .with_context(|| format!("{tag} in image list: {listed}"))?;
    let built_version = image["manifest"]["timescaledb"].as_str().unwrap_or_default().to_string();
    assert!(!built_version.is_empty(), "the manifest of {tag} lists timescaledb: {image}");

    // The image and `[cluster.extensions]` (a sub-table of [cluster]: after its keys).
    lab.edit_hosts(&[
        ("image = \"pgctl/postgres:15-debian\"", &format!("image = \"{tag}\"")),
        (
            "[cluster.postgresql_parameters]",
            "[cluster.extensions]\napp = [\"timescaledb\"]\n\n[cluster.postgresql_parameters]",
        ),
    ])?;
    lab.pgctl_ok(&["up"])?;
    assert_preloaded_everywhere(&lab, "after up")?;
    let leader = lab.leader()?;
    let version = extversion(&lab, &leader)?;
    assert_eq!(
        version, built_version,
        "up created timescaledb in database {DB} on {leader}, at the image's version"
    );
    // A second `up` changes nothing and keeps the extension.
    lab.pgctl_ok(&["up"]).context("a second up (idempotent)")?;
    let leader = lab.leader()?;
    assert_eq!(
        extversion(&lab, &leader)?,
        version,
        "after a second up: timescaledb in database {DB} on {leader}"
    );
    assert_preloaded_everywhere(&lab, "after a second up")?;

    // A hypertable of 10 days of hourly rows, one chunk a day.
    sql_in(
        &lab,
        &leader,
        DB,
        "CREATE TABLE metrics(ts timestamptz NOT NULL, device int, value double precision)",
    )?;
    sql_in(
        &lab,
        &leader,
        DB,
        "SELECT create_hypertable('metrics', 'ts', chunk_time_interval => interval '1 day')",
    )?;
    insert_hourly(&lab, &leader, 1, "2026-01-01 00:00:00+00", "2026-01-11 00:00:00+00")?;
    let (rows, chunks) = counts(&lab, &leader)?;
    assert_eq!(rows, 240, "10 days of hourly rows in metrics");
    assert!(chunks >= 5, "a chunk a day: {chunks} chunks for {rows} rows");
    lab.pgctl_ok(&["backup", "now", "--switch-wal"])?;

    // After the backup: a batch in a new chunk (replayed), the target, then one more (not).
    insert_hourly(&lab, &leader, 1000, "2026-01-15 00:00:00+00", "2026-01-15 06:00:00+00")?;
    let (rows_at_target, chunks_at_target) = counts(&lab, &leader)?;
    assert_eq!(rows_at_target, rows + 6, "the device 1000 batch: {rows} + 6 rows");
    assert_eq!(
        chunks_at_target,
        chunks + 1,
        "the device 1000 batch made one chunk more than {chunks}"
    );
    lab.sql(&leader, "SELECT pg_switch_wal()")?;
    std::thread::sleep(Duration::from_secs(2));
    let target = lab.sql(&leader, "SELECT clock_timestamp()::text")?;
    std::thread::sleep(Duration::from_secs(2));
    insert_hourly(&lab, &leader, 2000, "2026-01-20 00:00:00+00", "2026-01-20 06:00:00+00")?;
    let (rows_after, chunks_after) = counts(&lab, &leader)?;
    assert_eq!(
        (rows_after, chunks_after),
        (rows_at_target + 6, chunks_at_target + 1),
        "the device 2000 batch: 6 rows and one chunk more than ({rows_at_target}, {chunks_at_target})"
    );
    archive_everything(&lab, &leader)?;

    let started = Instant::now();
    lab.pgctl_ok(&["restore", "--target-time", &target, "--yes"])?;
    let took = started.elapsed();
    report(&format!(
        "MEASURED: point-in-time restore of a TimescaleDB hypertable ({rows_at_target} rows, {chunks_at_target} chunks): {:.1}s wall time",
        took.as_secs_f64()
    ));

    // Exactly what was committed before the target: the device 1000 batch and its chunk, not
    // the device 2000 batch nor its chunk; TimescaleDB still preloaded and created.
    let leader = lab.leader().context("a leader after the restore")?;
    let (restored_rows, restored_chunks) = counts(&lab, &leader)?;
    assert_eq!(
        restored_rows, rows_at_target,
        "rows in metrics after the restore to {target} on {leader} (before it: {rows_at_target}, at the end: {rows_after})"
    );
    let marker = device_rows(&lab, &leader, 1000)?;
    assert_eq!(marker, 6, "device 1000 rows (committed before {target}) on {leader}");
    let late = device_rows(&lab, &leader, 2000)?;
    assert_eq!(late, 0, "device 2000 rows (committed after {target}) on {leader}");
    assert_eq!(
        restored_chunks, chunks_at_target,
        "chunks of metrics after the restore to {target} on {leader} (before it: {chunks_at_target}, at the end: {chunks_after})"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_preloaded_everywhere(&lab, "after the restore")?;
    assert_eq!(
        extversion(&lab, &leader)?,
        version,
        "after the restore: timescaledb in database {DB} on {leader}"
    );
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    Ok(())
}
