//! End-to-end through the pgctl binary on the lab's default stack: `node remove` takes a
//! replica out (member, slot and volume gone, the rest healthy), then `node add
//! --replica-from backup` brings the host back from the newest backup in S3 (the member itself
//! records that the fetch made it, so Patroni took no basebackup from the leader) and it
//! streams the rows written while it was away.

use anyhow::{Context, Result};
use pgctl_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const LAB: &str = "pgctl-e2e-nodes";
const SUBNET: &str = "172.30.85.0/24";

fn status(lab: &Lab) -> Result<Value> {
    lab.pgctl_ok(&["status", "--output", "json"])?.json()
}

fn member_names(s: &Value) -> Vec<String> {
    s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn remove_a_replica_and_add_it_back_from_a_backup() -> Result<()> {
    require_e2e("remove_a_replica_and_add_it_back_from_a_backup");
    let lab = Lab::up_default(LAB, SUBNET)?;
    lab.pgctl_ok(&["up"])?;
    let leader = lab.leader()?;
    let replica = lab
        .hosts()
        .into_iter()
        .map(|(h, _)| h)
        .find(|h| *h != leader)
        .context("a replica")?;
    let members = member_names(&status(&lab)?);
    assert_eq!(members.len(), lab.hosts().len(), "one member per host: {members:?}");
    lab.sql(
        &leader,
        "CREATE TABLE marks (id int PRIMARY KEY); INSERT INTO marks SELECT generate_series(1, 1000)",
    )?;
    lab.pgctl_ok(&["backup", "now", "--switch-wal"])?;

    // The leader is refused without --switchover; nothing changes.
    let refused = lab.pgctl(&["--yes", "node", "remove", &leader]);
    refused.assert_code(exit::REFUSED, "node remove of the leader without --switchover");
    assert_eq!(member_names(&status(&lab)?).len(), members.len());

    // Remove a replica with its volume: it leaves the member list and the leader's slots.
    lab.pgctl_ok(&["--yes", "node", "remove", &replica, "--volumes"])?;
    let s = status(&lab)?;
    let left = member_names(&s);
    assert!(!left.is_empty() && !left.contains(&replica), "{replica} still listed: {s}");
    assert_eq!(left.len(), members.len() - 1, "{s}");
    let slots = lab.sql(&leader, "SELECT string_agg(slot_name, ',') FROM pg_replication_slots")?;
    assert!(
        !slots.split(',').any(|s| s == replica.to_lowercase()),
        "slot of {replica} left: {slots}"
    );
    let volumes = lab.docker(&replica, &["volume", "ls", "-q", "--filter", "label=io.pgctl.cluster"])?;
    assert!(!volumes.contains("pgdata"), "{replica}'s data volume was kept: {volumes}");

    // Rows written while it is away, after the backup: it must get them from the archive/leader.
    lab.sql(&leader, "INSERT INTO marks SELECT generate_series(1001, 1500)")?;

    let started = Instant::now();
    let added = lab
        .pgctl_ok(&["--output", "json", "node", "add", &replica, "--replica-from", "backup"])?
        .json()?;
    report(&format!("node add from a backup: {:.1} s", started.elapsed().as_secs_f64()));
    assert_eq!(added["choice"]["from"], "backup", "{added}");
    let made_by = added["made_by"].as_str().unwrap_or_default();
    assert!(made_by.starts_with("fetched from S3"), "not made from the backup: {added}");
    let s = status(&lab)?;
    assert_eq!(member_names(&s).len(), members.len(), "{s}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = lab.sql(&replica, "SELECT count(*) FROM marks").unwrap_or_default();
        if n == "1500" {
            break;
        }
        assert!(Instant::now() < deadline, "{replica} has {n} rows, not 1500");
        std::thread::sleep(Duration::from_secs(2));
    }
    assert_eq!(lab.sql(&replica, "SELECT pg_is_in_recovery()")?, "t");
    Ok(())
}
