//! Point-in-time restore end to end through the pgctl binary on the lab (engine pgBackRest):
//! refused targets leaving the cluster untouched, a restore interrupted midway and retried, the
//! marker test across a backup and a switchover, `--rollback`, a clone into a second cluster,
//! and restore to latest after losing every data volume.

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::time::Duration;

/// Marker rows with their commit times, as pgBackRest's own suite checks PITR.
fn marker(lab: &Lab, host: &str, id: u32) -> Result<String> {
    lab.sql(host, &format!("INSERT INTO marker(id) VALUES ({id}) RETURNING at::text"))
}

fn markers(lab: &Lab, host: &str) -> Result<String> {
    lab.sql(host, "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM marker")
}

/// Every member's markers (replicas have the same rows as the leader once they caught up).
fn markers_everywhere(lab: &Lab) -> Result<Vec<String>> {
    std::thread::sleep(Duration::from_secs(2));
    lab.hosts().iter().map(|(h, _)| markers(lab, h)).collect()
}

/// Container IDs of Patroni on every host; each host runs one (a list of nothing compared
/// with a list of nothing would prove nothing).
fn patroni_ids(lab: &Lab) -> Result<Vec<String>> {
    let ids = lab
        .hosts()
        .iter()
        .map(|(h, _)| lab.docker(h, &["ps", "-q", "--no-trunc", "--filter", "name=^patroni$"]))
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(ids.iter().all(|i| !i.is_empty()), "a host runs no Patroni: {ids:?}");
    Ok(ids)
}

/// Waits until the leader has archived the segment holding everything committed so far.
fn archive_everything(lab: &Lab, leader: &str) -> Result<()> {
    let segment = lab.sql(leader, "SELECT pg_walfile_name(pg_switch_wal())")?;
    lab.wait_archived(leader, &segment, Duration::from_secs(120))?;
    Ok(())
}

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn point_in_time_restore() -> Result<()> {
    require_e2e("point_in_time_restore");
    let lab = Lab::up("pgctl-e2e-restore", "172.30.82.0/24")?;
    lab.pgctl_ok(&["up"])?;
    let first = lab.leader()?;
    lab.sql(
        &first,
        "CREATE TABLE marker(id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )?;
    marker(&lab, &first, 1)?;
    lab.pgctl_ok(&["backup", "now", "--switch-wal"])?;
    marker(&lab, &first, 2)?;
    // A switchover: the target lies on a later timeline than the backup.
    lab.pgctl_ok(&["switchover", "--yes"])?;
    let leader = lab.leader()?;
    marker(&lab, &leader, 3)?;
    std::thread::sleep(Duration::from_secs(2));
    let target = lab.sql(&leader, "SELECT clock_timestamp()::text")?;
    std::thread::sleep(Duration::from_secs(2));
    marker(&lab, &leader, 4)?;
    archive_everything(&lab, &leader)?;

    // Refused targets: nothing stops, nothing changes. A target outside the restorable window
    // is refused by the pre-flight (exit 4); one that is not a time or an LSN is bad usage (2).
    let ids = patroni_ids(&lab)?;
    for (args, why, code) in [
        (
            vec!["--target-time", "2001-01-01 00:00:00+00"],
            "before the end of the oldest backup",
            exit::REFUSED,
        ),
        (
            vec!["--target-time", "2099-01-01 00:00:00+00"],
            "after the newest archived WAL",
            exit::REFUSED,
        ),
        (vec!["--target-time", "2026-05-17 10:00:00"], "no time zone", exit::CONFIG),
        (vec!["--target-lsn", "nonsense"], "expected an LSN", exit::CONFIG),
    ] {
        let run = lab.pgctl(&[&["restore", "--yes"], args.as_slice()].concat());
        run.assert_code(code, &format!("restore {args:?}"));
        assert!(run.stderr.contains(why), "{args:?}: {}", run.stderr);
        if why.contains("backup") || why.contains("WAL") {
            assert!(run.stderr.contains("restorable window"), "the window is printed: {}", run.stderr);
        }
    }
    assert_eq!(patroni_ids(&lab)?, ids, "refused restores leave the containers alone");
    assert_eq!(lab.leader()?, leader, "and the leader");

    // A restore interrupted midway (pgctl killed as the fetch begins, with the leader's Patroni
    // container still going down, then its recovery container, as when the host dies): `up`
    // refuses the partial volume (it would have moved that container onto it), and the same
    // restore run again discards it and picks up cleanly.
    let host = interrupt_restore(&lab, &target)?;
    let refused = lab.pgctl(&["up"]);
    assert!(!refused.ok, "up must refuse the partial volume of an interrupted restore");
    assert_eq!(
        lab.docker(&host, &["ps", "-q", "--filter", "name=^patroni$"])?,
        "",
        "nothing started"
    );
    assert!(refused.stderr.contains("interrupted"), "{}", refused.stderr);

    // The marker test: exactly the markers committed before the target, on every member.
    // Meanwhile one replica's copy is cut short (its fetch container killed as it runs): its
    // volume is emptied, that replica copies the leader instead, and the restore goes on.
    let cut = lab.host_other_than(&host)?;
    let cutter = cut_fetch_short(&lab, &cut);
    let restored = lab.pgctl(&["restore", "--target-time", &target, "--yes"]);
    let cut_short = cutter.finish();
    anyhow::ensure!(restored.ok, "the retried restore failed:\n{}", restored.stderr);
    assert!(cut_short, "{cut}: the copy's fetch was never seen running\n{}", restored.stderr);
    assert!(
        restored.stderr.contains("discards the partial volume of an interrupted restore"),
        "{}",
        restored.stderr
    );
    report(&format!("PITR (small database): {}", restore_phases(&restored.stdout)));
    assert_eq!(markers_everywhere(&lab)?, vec!["1,2,3"; 3], "markers before {target} only");
    let leader = lab.leader()?;
    // The replicas were made from the copies they fetched while the leader recovered (Patroni's
    // replica method moved them into place), not by a basebackup from the new leader; the one
    // whose copy was cut short by a basebackup (no request, so no result of the method).
    assert!(
        restored.stderr.contains(&format!("{cut}: fetching its replica's copy failed")),
        "{}",
        restored.stderr
    );
    let cut_made = lab.docker(&cut, &["exec", "patroni", "ls", "/var/lib/postgresql/data"])?;
    assert!(!cut_made.contains("pgctl-replica-result"), "{cut}: {cut_made}");
    for (replica, _) in lab.hosts().into_iter().filter(|(h, _)| *h != leader && *h != cut) {
        let made = lab.docker(
            &replica,
            &["exec", "patroni", "cat", "/var/lib/postgresql/data/pgctl-replica-result"],
        )?;
        assert!(made.contains(r#""method":"backup""#), "{replica}: {made}\n{}", restored.stderr);
        // Handed the restored timeline's history while its container waited (no container of
        // its own to add it afterwards).
        assert!(
            restored.stderr.contains(&format!("{replica}: fetched its replica's copy"))
                && restored.stderr.contains("with the restored timeline's history"),
            "{}",
            restored.stderr
        );
    }
    marker(&lab, &leader, 5)?;
    archive_everything(&lab, &leader)?;
    lab.pgbackrest(&leader, &["check"])?;
    let status = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    let timeline = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "leader")
        .with_context(|| format!("a leader among the members: {status}"))?["timeline"]
        .as_u64()
        .unwrap();
    assert!(timeline >= 3, "a new timeline after backup (1) and switchover (2): {status}");

    // Rollback: the data from before the restore (marker 4, not 5) on a new timeline.
    lab.pgctl_ok(&["restore", "--rollback", "--yes"])?;
    assert_eq!(markers_everywhere(&lab)?, vec!["1,2,3,4"; 3]);
    let leader = lab.leader()?;
    marker(&lab, &leader, 6)?;
    archive_everything(&lab, &leader)?;

    // A clone into a second cluster, with its own name and prefix (here on the same hosts, once
    // the source's containers are gone): it gets the data, archives into its own prefix, and
    // the source's prefix is byte-identical before and after.
    let clone = lab.dir.join("clone.toml");
    std::fs::write(
        &clone,
        edited(
            &std::fs::read_to_string(lab.hosts_toml())?,
            &[
                ("name = \"lab\"", "name = \"clone\""),
                ("s3_prefix = \"lab\"", "s3_prefix = \"clone\""),
            ],
        )?,
    )?;
    let clone = clone.to_str().unwrap().to_string();
    let source_listing = || -> Result<Vec<String>> {
        let objects = lab.s3_list("lab/")?;
        anyhow::ensure!(
            objects.iter().any(|o| o.starts_with("lab/backup/lab/")) && objects.iter().any(|o| o.starts_with("lab/archive/lab/")),
            "the source's backups and archive: {objects:?}"
        );
        Ok(objects)
    };
    lab.pgctl_ok(&["remove", "--i-am-aware", "--yes"])?;
    // Taken once the source is stopped: its leader's shutdown switches and archives a last
    // segment, which is the source's own doing, not the clone's.
    let before = source_listing()?;
    let same_prefix = lab.dir.join("clone-same-prefix.toml");
    std::fs::write(
        &same_prefix,
        edited(
            &std::fs::read_to_string(lab.hosts_toml())?,
            &[("name = \"lab\"", "name = \"clone\"")],
        )?,
    )?;
    let refused = pgctl(
        &lab.work,
        &[
            "restore",
            "--hosts",
            &lab.hosts_arg(),
            "--into",
            same_prefix.to_str().unwrap(),
            "--yes",
        ],
    );
    assert!(!refused.ok, "a clone onto the source's prefix must be refused");
    lab.assert_no_patroni("the clone onto the source's prefix was refused");
    assert_eq!(source_listing()?, before, "the refused clone wrote into the source's prefix");
    assert!(
        refused.stderr.contains("a prefix of its own"),
        "a clone onto the source's prefix is refused: {}",
        refused.stderr
    );
    let cloned = pgctl(&lab.work, &["restore", "--hosts", &lab.hosts_arg(), "--into", &clone, "--yes"]);
    assert!(cloned.ok, "{}", cloned.stderr);
    assert_eq!(markers_everywhere(&lab)?, vec!["1,2,3,4,6"; 3], "the clone has the source's data");
    let clone_status = pgctl_ok(&lab.work, &["status", "--hosts", &clone, "--output", "json"])?.json()?;
    let clone_leader = clone_status["leader"].as_str().context("the clone has a leader")?.to_string();
    assert_eq!(clone_status["scope"], "clone");
    marker(&lab, &clone_leader, 100)?;
    archive_everything(&lab, &clone_leader)?;
    assert_eq!(source_listing()?, before, "the clone wrote nothing into the source's prefix");
    let own = lab.s3_list("clone/")?;
    assert!(
        own.iter().any(|o| o.starts_with("clone/archive/clone/15-1/0")),
        "the clone archives WAL into its own prefix: {own:?}"
    );
    pgctl_ok(&lab.work, &["remove", "--i-am-aware", "--volumes", "--yes", "--hosts", &clone])?;

    // Every data volume lost (and the DCS with them): `up` refuses to bootstrap an empty
    // cluster onto the archive; restore to latest brings back every archived row.
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    let refused = lab.pgctl(&["up"]);
    assert!(!refused.ok, "up must not bootstrap an empty cluster onto the archive");
    lab.assert_no_patroni("up refused to bootstrap onto the archive");
    assert!(refused.stderr.contains("pgctl restore"), "{}", refused.stderr);
    lab.pgctl_ok(&["restore", "--yes"])?;
    assert_eq!(markers_everywhere(&lab)?, vec!["1,2,3,4,6"; 3], "every archived row is back");
    let leader = lab.leader()?;
    marker(&lab, &leader, 7).context("the restored cluster accepts writes")?;

    // Growing and shrinking on this stack (etcd + pgBackRest): a replica removed with its
    // volume, then added back from the newest pgBackRest backup; the leader serves no
    // basebackup meanwhile.
    lab.pgctl_ok(&["backup", "now", "--switch-wal"])?;
    let replica = lab.host_other_than(&leader)?;
    lab.pgctl_ok(&["--yes", "node", "remove", &replica, "--volumes"])?;
    let status = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert_eq!(status["members"].as_array().map(Vec::len), Some(2), "{replica} removed: {status}");
    let (added, samples, basebackups) = lab.sampling_basebackups(&leader, || {
        lab.pgctl_ok(&["--output", "json", "node", "add", &replica, "--replica-from", "backup"])?
            .json()
    })?;
    let made_by = added["made_by"].as_str().unwrap_or_default();
    assert!(
        made_by.starts_with("fetched from S3"),
        "{replica} not made from the backup: {added}"
    );
    assert!(
        samples > 0 && basebackups == 0,
        "the leader served a basebackup ({basebackups}/{samples} samples)"
    );
    assert_eq!(
        markers_everywhere(&lab)?,
        vec!["1,2,3,4,6,7"; 3],
        "the re-added replica has every row"
    );

    migrate_an_encrypted_pgbackrest_source(&lab)
}

/// `migrate from-backup` of a standalone PostgreSQL that archives with pgBackRest, encrypted
/// (its own stanza and cipher pass), into this cluster under a new prefix: the source's rows,
/// role and password arrive on every member, the cluster archives into its own prefix, and the
/// source's repository is byte-identical afterwards.
fn migrate_an_encrypted_pgbackrest_source(lab: &Lab) -> Result<()> {
    use pgctl_tests::legacy::{start_legacy, Serving};
    const CIPHER: &str = "legacy-cipher-pass-0f3b";
    const PASSWORD: &str = "legacy-shop-password-5";
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    lab.edit_hosts(&[("s3_prefix = \"lab\"", "s3_prefix = \"lab-from-pgbackrest\"")])?;
    let host = lab.hosts()[0].0.clone();
    let serving = Serving::PgBackRest {
        prefix: "legacy-pgbr",
        stanza: "legacy",
        cipher_pass: Some(CIPHER),
    };
    let legacy = start_legacy(lab, &host, "legacy-pgbr", serving)?;
    legacy.sql("postgres", &format!("CREATE ROLE shop LOGIN PASSWORD '{PASSWORD}'"))?;
    legacy.sql("postgres", "CREATE DATABASE shop OWNER shop")?;
    legacy.sql(
        "shop",
        "CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 3000) g; ALTER TABLE orders OWNER TO shop",
    )?;
    legacy.pgbackrest("legacy", &["backup", "--type=full"])?;
    legacy.sql(
        "shop",
        "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(3001, 3500) g",
    )?;
    let fingerprint_sql = "SELECT count(*) || ':' || md5(string_agg(id || note, ',' ORDER BY id)) FROM orders";
    let fingerprint = legacy.sql("shop", fingerprint_sql)?;
    legacy.archive_everything()?;
    legacy.stop()?;
    let source_before = lab.s3_list("legacy-pgbr/")?;
    assert!(!source_before.is_empty());
    // The cipher pass only ever travels in a file.
    let key_file = lab.dir.join("legacy-pgbr.cipher");
    std::fs::write(&key_file, CIPHER)?;

    let started = std::time::Instant::now();
    let args = [
        "--yes",
        "migrate",
        "from-backup",
        "--prefix",
        "s3://pgctl-backups/legacy-pgbr",
        "--engine",
        "pgbackrest",
        "--stanza",
        "legacy",
        "--encryption-key-file",
        key_file.to_str().context("key file path")?,
    ];
    lab.pgctl_ok(&args)?;
    report(&format!(
        "MEASURED: migrate from-backup (pgBackRest, encrypted, 3,500 rows) into an etcd + pgBackRest cluster: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let leader = lab.leader()?;
    for (h, _) in lab.hosts() {
        let on = |sql: &str| {
            let exec = [
                "exec",
                "-u",
                "postgres",
                "patroni",
                "psql",
                "-h",
                "/var/run/postgresql",
                "-d",
                "shop",
                "-XAtqc",
                sql,
            ];
            lab.docker(&h, &exec)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while on(fingerprint_sql).ok().as_deref() != Some(fingerprint.as_str()) {
            assert!(std::time::Instant::now() < deadline, "{h}: orders differ from the source");
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let login = lab.docker(
        &host,
        &[
            "exec",
            "-e",
            &format!("PGPASSWORD={PASSWORD}"),
            "patroni",
            "psql",
            "-h",
            &lab.address(&leader),
            "-U",
            "shop",
            "-d",
            "shop",
            "-XAtqc",
            "SELECT count(*) FROM orders",
        ],
    )?;
    assert_eq!(login, "3500", "the source's role logs in with its password");
    lab.pgbackrest(&leader, &["check"])?;
    let listed = lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?;
    assert!(
        listed["backups"].as_array().is_some_and(|b| !b.is_empty()),
        "no backup in the cluster's own prefix: {listed}"
    );
    assert_eq!(lab.s3_list("legacy-pgbr/")?, source_before, "the source's repository changed");
    lab.docker(&host, &["rm", "-f", "legacy-pgbr"])?;
    Ok(())
}

/// Kills `host`'s fetch of a restore's replica copy as soon as it runs (looking every 50 ms),
/// from another thread, until `finish` says whether it did.
fn cut_fetch_short(lab: &Lab, host: &str) -> Cutter {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (dir, address, host, stopped) = (lab.dir.clone(), lab.address(host), host.to_string(), stop.clone());
    let thread = std::thread::spawn(move || {
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            if docker_on(&dir, &host, &address, &["kill", "pgctl-prefetch-lab"]).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    });
    Cutter { stop, thread }
}

struct Cutter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<bool>,
}

impl Cutter {
    fn finish(self) -> bool {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(false)
    }
}

/// Starts `pgctl restore` to `target` and kills it as the backup's fetch begins (the leader's
/// Patroni is still going down then: its container stays behind, stopped), then its recovery
/// container (as when the host dies); returns the host the restore ran on.
fn interrupt_restore(lab: &Lab, target: &str) -> Result<String> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(pgctl_bin())
        .args(["restore", "--target-time", target, "--yes", "--hosts", &lab.hosts_arg()])
        .current_dir(&lab.work)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let stderr = std::io::BufReader::new(child.stderr.take().context("stderr")?);
    let mut host = None;
    for line in stderr.lines() {
        let line = line?;
        eprintln!("    {line}");
        if let Some(h) = line.strip_suffix(": fetching the base backup from S3 (read-only key)") {
            host = Some(h.to_string());
            break;
        }
    }
    child.kill()?;
    child.wait()?;
    let host = host.context("the restore never reached its fetch")?;
    // (It may have finished on its own already: its volume stays marked incomplete.)
    let killed = lab.docker(&host, &["kill", "pgctl-restore-lab"]);
    eprintln!("    recovery container killed: {killed:?}");
    let left = lab.docker(&host, &["ps", "-a", "--filter", "name=^patroni$", "--format", "{{.Status}}"])?;
    eprintln!("    {host}: Patroni container left behind: {left:?}");
    Ok(host)
}
