//! End-to-end through the pgctl binary on the lab's default stack (Consul + WAL-G), four
//! database hosts of which the cluster starts with three, a client writing throughout:
//! - a fourth host with only the role `patroni` joins from the newest backup in S3 (`node add
//!   --replica-from backup`): it runs a Consul client agent, the leader serves no basebackup
//!   while it joins (sampled on the leader, and the replica's own backup label says where its
//!   data came from), and it has every acknowledged row;
//! - four Consul servers are refused and nothing changes;
//! - `node remove` takes out a replica (member, slot and volume gone), refuses the leader
//!   without `--switchover` and with it moves the leadership first; no acknowledged write is
//!   lost;
//! - the old leader comes back from the leader (`--replica-from leader`), and its backup label
//!   shows the basebackup this time (the detector's positive control).

use anyhow::{Context, Result};
use pgctl_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const LAB: &str = "pgctl-e2e-nodes";
const SUBNET: &str = "172.30.85.0/24";
const BACKUP_LABEL: &str = "/var/lib/postgresql/data/pgdata/backup_label.old";

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

/// hosts.toml text with `host`'s `[[host]]` block dropped (`roles: None`) or given `roles`.
fn with_host(full: &str, host: &str, roles: Option<&[&str]>) -> String {
    let mut blocks = full.split("[[host]]");
    let mut out = blocks.next().unwrap_or_default().to_string();
    for block in blocks {
        if !block.contains(&format!("name = \"{host}\"")) {
            out.push_str("[[host]]");
            out.push_str(block);
        } else if let Some(roles) = roles {
            let list: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
            let lines: Vec<String> = block
                .lines()
                .map(|l| {
                    if l.starts_with("roles = ") {
                        format!("roles = [{}]", list.join(", "))
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            out.push_str("[[host]]");
            out.push_str(&lines.join("\n"));
            out.push('\n');
        }
    }
    out
}

/// Waits until `host` (a replica) has every acknowledged row of `table`.
fn wait_caught_up(lab: &Lab, host: &str, table: &str, writes: &Writes) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let lost = lab.lost_writes(host, table, writes).unwrap_or_else(|_| writes.acked.clone());
        if lost.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{host} lacks {} acknowledged row(s) of {table}: {lost:?}",
            lost.len()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn report_writes(what: &str, seconds: f64, writes: &Writes) {
    report(&format!(
        "MEASURED: {what}: {seconds:.1} s; a client wrote {} rows meanwhile, longest gap between two acknowledged writes {:.1} s",
        writes.acked.len(),
        writes.longest_gap.as_secs_f64()
    ));
}

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn grow_and_shrink_under_writes() -> Result<()> {
    require_e2e("grow_and_shrink_under_writes");
    let lab = Lab::up_with(LAB, SUBNET, &["--count", "4"])?;
    let full = std::fs::read_to_string(lab.hosts_toml())?;
    let newcomer = lab.hosts().last().context("a fourth host")?.0.clone();
    std::fs::write(lab.hosts_toml(), with_host(&full, &newcomer, None))?;
    lab.pgctl_ok(&["up"])?;
    let leader = lab.leader()?;
    assert_eq!(member_names(&status(&lab)?).len(), 3);
    lab.sql(
        &leader,
        "CREATE TABLE marks (id int PRIMARY KEY); INSERT INTO marks SELECT generate_series(1, 1000)",
    )?;
    if let Some(scale) = flow_scale() {
        lab.pgbench(&leader, &["-i", "-q", "-s", &scale], false)?;
        let size = lab.sql(&leader, "SELECT pg_size_pretty(pg_database_size('postgres'))")?;
        report(&format!(
            "MEASURED: node add: the cluster's database holds {size} (PGCTL_FLOW_SCALE)"
        ));
    }
    lab.pgctl_ok(&["backup", "now", "--switch-wal"])?;

    // 1. The fourth host, with only the role `patroni`, joins from the backup under writes.
    std::fs::write(lab.hosts_toml(), with_host(&full, &newcomer, Some(&["patroni"])))?;
    let started = Instant::now();
    let ((added, samples, basebackups), writes) = lab.writing_during("join_load", || {
        lab.sampling_basebackups(&leader, || {
            lab.pgctl_ok(&["--output", "json", "node", "add", &newcomer, "--replica-from", "backup"])?
                .json()
        })
    })?;
    report_writes("node add from the newest backup", started.elapsed().as_secs_f64(), &writes);
    assert_eq!(added["choice"]["from"], "backup", "{added}");
    let made_by = added["made_by"].as_str().unwrap_or_default();
    assert!(made_by.starts_with("fetched from S3"), "not made from the backup: {added}");
    assert!(samples > 0, "the leader was never sampled");
    assert_eq!(basebackups, 0, "the leader served a basebackup during the join ({samples} samples)");
    let label = lab.docker(&newcomer, &["exec", "patroni", "cat", BACKUP_LABEL])?;
    assert!(
        !label.contains("pg_basebackup"),
        "{newcomer}'s data came from pg_basebackup: {label}"
    );
    assert!(!writes.acked.is_empty(), "no write acknowledged during the join");
    assert_eq!(lab.lost_writes(&leader, "join_load", &writes)?, Vec::<i64>::new());
    wait_caught_up(&lab, &newcomer, "join_load", &writes)?;
    assert_eq!(lab.sql(&newcomer, "SELECT count(*) FROM marks")?, "1000");
    assert_eq!(lab.sql(&newcomer, "SELECT pg_is_in_recovery()")?, "t");
    let members = lab.docker(&leader, &["exec", "consul", "consul", "members"])?;
    assert!(
        members
            .lines()
            .any(|l| l.starts_with(&newcomer) && l.contains(" alive ") && l.contains("client")),
        "{newcomer} runs a Consul client agent: {members}"
    );
    assert_eq!(member_names(&status(&lab)?).len(), 4);

    // 2. Four Consul servers are refused, and nothing changes.
    std::fs::write(lab.hosts_toml(), with_host(&full, &newcomer, Some(&["consul-server", "patroni"])))?;
    let even = lab.pgctl(&["node", "add", &newcomer]);
    even.assert_code(exit::CONFIG, "node add with four Consul servers");
    assert!(
        even.stderr.contains("cluster.dcs") && even.stderr.contains("even"),
        "names the key and the rule: {}",
        even.stderr
    );
    std::fs::write(lab.hosts_toml(), with_host(&full, &newcomer, Some(&["patroni"])))?;
    assert_eq!(member_names(&status(&lab)?).len(), 4);

    // 3. Remove a replica with its volume: member, slot and volume go; writes go on.
    let replica = lab
        .hosts()
        .into_iter()
        .map(|(h, _)| h)
        .find(|h| *h != leader && *h != newcomer)
        .context("a replica")?;
    let started = Instant::now();
    let (_, writes) = lab.writing_during("remove_load", || lab.pgctl_ok(&["--yes", "node", "remove", &replica, "--volumes"]))?;
    report_writes("node remove of a replica", started.elapsed().as_secs_f64(), &writes);
    let left = member_names(&status(&lab)?);
    assert!(!left.contains(&replica), "{replica} still listed: {left:?}");
    assert_eq!(left.len(), 3, "{left:?}");
    let slots = lab.sql(&leader, "SELECT string_agg(slot_name, ',') FROM pg_replication_slots")?;
    assert!(
        !slots.split(',').any(|s| s == replica.to_lowercase()),
        "slot of {replica} left: {slots}"
    );
    let volumes = lab.docker(&replica, &["volume", "ls", "-q", "--filter", "label=io.pgctl.cluster"])?;
    assert!(!volumes.contains("pgdata"), "{replica}'s data volume was kept: {volumes}");
    assert!(!writes.acked.is_empty());
    assert_eq!(lab.lost_writes(&leader, "remove_load", &writes)?, Vec::<i64>::new());

    // 4. The leader: refused without --switchover (nothing changes), moved first with it.
    let refused = lab.pgctl(&["--yes", "node", "remove", &leader]);
    refused.assert_code(exit::REFUSED, "node remove of the leader without --switchover");
    assert_eq!(member_names(&status(&lab)?).len(), 3);
    assert_eq!(lab.leader()?, leader);
    let started = Instant::now();
    let (_, writes) = lab.writing_during("switchover_load", || {
        lab.pgctl_ok(&["--yes", "node", "remove", &leader, "--switchover", "--volumes"])
    })?;
    report_writes("node remove --switchover of the leader", started.elapsed().as_secs_f64(), &writes);
    let new_leader = lab.leader()?;
    assert_ne!(new_leader, leader);
    let left = member_names(&status(&lab)?);
    assert!(!left.contains(&leader) && left.len() == 2, "{left:?}");
    assert!(!writes.acked.is_empty());
    assert_eq!(lab.lost_writes(&new_leader, "switchover_load", &writes)?, Vec::<i64>::new());

    // 5. The old leader's host comes back from the leader: its backup label says so.
    let started = Instant::now();
    let added = lab
        .pgctl_ok(&["--output", "json", "node", "add", &leader, "--replica-from", "leader"])?
        .json()?;
    report(&format!(
        "MEASURED: node add from the leader (basebackup): {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    assert_eq!(added["choice"]["from"], "leader", "{added}");
    let label = lab.docker(&leader, &["exec", "patroni", "cat", BACKUP_LABEL])?;
    assert!(label.contains("pg_basebackup"), "made from the leader, yet: {label}");
    wait_caught_up(&lab, &leader, "switchover_load", &writes)?;
    assert_eq!(lab.sql(&leader, "SELECT count(*) FROM marks")?, "1000");
    assert_eq!(member_names(&status(&lab)?).len(), 3);
    Ok(())
}
