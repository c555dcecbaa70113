//! The backup scenarios with WAL-G, end to end: run only when a wal-g binary is supplied
//! (PGCTL_WALG_BIN=/path/to/wal-g), because WAL-G cannot be obtained on this workplace's machines
//! (not in Debian, not on PyPI, no GitHub). Otherwise it reports itself skipped. Without the
//! binary, WAL-G's configuration and commands are covered by golden tests (cli/src/backup).

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::time::Duration;

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn backups_and_restore_with_walg() -> Result<()> {
    require_e2e("backups_and_restore_with_walg");
    let Some(walg) = std::env::var_os("PGCTL_WALG_BIN") else {
        skipped(
            "backups_and_restore_with_walg",
            "no wal-g binary here (set PGCTL_WALG_BIN=/path/to/wal-g to run it)",
        );
        return Ok(());
    };
    let lab = Lab::up("pgctl-e2e-walg", "172.30.83.0/24")?;
    let tag = "pgctl/postgres:15-walg";
    lab.build_with(&[("wal-g", walg.as_ref())], "timescaledb,consul", tag)?;
    lab.edit_hosts(&[
        ("backup_engine = \"pgbackrest\"", "backup_engine = \"walg\""),
        ("image = \"pgctl/postgres:15-debian\"", &format!("image = \"{tag}\"")),
    ])?;
    lab.pgctl_ok(&["up"])?;
    let leader = lab.leader()?;
    lab.sql(&leader, "CREATE TABLE marker(id int PRIMARY KEY)")?;
    lab.sql(&leader, "INSERT INTO marker VALUES (1)")?;
    lab.pgbench(&leader, &["-i", "-s", "2"], false)?;
    lab.pgctl_ok(&["backup", "now", "--switch-wal"])?;
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
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    Ok(())
}
