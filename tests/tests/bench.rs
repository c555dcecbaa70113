//! Benchmarks on the lab, not tests: `ansible-free-scripts/bench.sh` runs them (the default test
//! run leaves them out). PGCTL_BENCH_RUNS runs of each (default 5);
//! PGCTL_BENCH_SCALE is the pgbench scale of the backup/PITR database (default 68, ~1 GB).
//! Every figure goes to the closing report as a MEASURED line, each run and the median, and
//! to the table `ansible-free-scripts/bench.sh` prints (tests/src/bench.rs).

use anyhow::{Context, Result};
use pgctl_tests::bench::{figure, Baseline};
use pgctl_tests::*;
use std::time::{Duration, Instant};

fn runs() -> usize {
    std::env::var("PGCTL_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5)
}

/// Per DCS (both with WAL-G, so only the DCS differs): the longest gap between two writes a
/// client sees across `pgctl switchover`, then the leader's host stopped -> first write
/// accepted on the new leader; the host comes back and rejoins between runs.
#[test]
#[ignore = "a benchmark: ansible-free-scripts/bench.sh"]
fn failover_consul_vs_etcd() -> Result<()> {
    require_e2e("failover_consul_vs_etcd");
    for (dcs, subnet) in [("consul", "172.30.90.0/24"), ("etcd", "172.30.91.0/24")] {
        let lab = Lab::up_with(&format!("pgctl-bench-{dcs}"), subnet, &["--dcs", dcs, "--backup-engine", "walg"])?;
        lab.pgctl_ok(&["up"])?;
        lab.sql(
            &lab.leader()?,
            "CREATE TABLE bench(id bigserial PRIMARY KEY, at timestamptz DEFAULT now())",
        )?;
        let mut gaps = Vec::new();
        for run in 1..=runs() {
            wait_all_streaming(&lab, Duration::from_secs(240))?;
            let gap = switchover_write_gap(&lab)?;
            report(&format!("MEASURED: switchover ({dcs}) run {run}: longest write gap {gap:.1}s"));
            gaps.push(gap);
        }
        figure(&format!("switchover, longest write gap ({dcs})"), "s", &gaps, Baseline::None, "");
        let mut times = Vec::new();
        wait_all_streaming(&lab, Duration::from_secs(240))?;
        for _ in 0..runs() {
            let leader = lab.leader()?;
            let stopped = Instant::now();
            docker_local(&["stop", "-t", "0", &lab.container(&leader)])?;
            let survivors: Vec<String> = lab.hosts().into_iter().map(|(h, _)| h).filter(|h| *h != leader).collect();
            let took = loop {
                if survivors.iter().any(|h| lab.sql(h, "INSERT INTO bench DEFAULT VALUES").is_ok()) {
                    break stopped.elapsed();
                }
                if stopped.elapsed() > Duration::from_secs(180) {
                    anyhow::bail!(
                        "{dcs}: no new leader within 180 s of stopping {leader}\n{}",
                        diagnose(&lab, &survivors)
                    );
                }
                std::thread::sleep(Duration::from_millis(250));
            };
            times.push(took.as_secs_f64());
            report(&format!(
                "MEASURED: failover ({dcs}) run {}: {:.1}s",
                times.len(),
                took.as_secs_f64()
            ));
            docker_local(&["start", &lab.container(&leader)])?;
            wait_all_streaming(&lab, Duration::from_secs(240))?;
        }
        figure(
            &format!("failover, leader host stopped -> first write ({dcs})"),
            "s",
            &times,
            Baseline::Text("Patroni ttl 20 s, loop_wait 5 s in the lab"),
            "",
        );
        lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    }
    Ok(())
}

/// A client writes (one row per statement, to whichever member accepts it) while `pgctl
/// switchover` runs; returns the longest time between two accepted writes, from the last
/// write before the switchover to the first one after it at least.
fn switchover_write_gap(lab: &Lab) -> Result<f64> {
    let hosts: Vec<String> = hosts_with(&lab.hosts_toml(), |roles| roles.contains(&"patroni"))?
        .into_iter()
        .map(|(h, _)| h)
        .collect();
    let mut writer_at = lab.leader()?;
    let insert = "INSERT INTO bench DEFAULT VALUES";
    lab.sql(&writer_at, insert)?;
    let mut last_write = Instant::now();
    let mut longest = 0f64;
    std::thread::scope(|scope| -> Result<f64> {
        let switchover = scope.spawn(|| lab.pgctl_ok(&["switchover", "--yes"]));
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let done = switchover.is_finished();
            // The member that took the last write first, then the others.
            let accepted = std::iter::once(&writer_at)
                .chain(hosts.iter().filter(|h| **h != writer_at))
                .find(|h| lab.sql(h, insert).is_ok())
                .cloned();
            let wrote = accepted.is_some();
            if let Some(h) = accepted {
                writer_at = h;
            }
            if wrote {
                longest = longest.max(last_write.elapsed().as_secs_f64());
                last_write = Instant::now();
                // The switchover is over and a write has gone through after it.
                if done {
                    break;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no write accepted within 120 s of the switchover");
        }
        switchover.join().expect("the switchover thread")?;
        Ok(longest)
    })
}

/// `backup now` and a point-in-time restore of a ~1 GB database, WAL-G vs pgBackRest (both
/// on etcd), with the restore's own time per phase.
#[test]
#[ignore = "a benchmark: ansible-free-scripts/bench.sh"]
fn backup_and_pitr_walg_vs_pgbackrest() -> Result<()> {
    require_e2e("backup_and_pitr_walg_vs_pgbackrest");
    let scale = std::env::var("PGCTL_BENCH_SCALE").unwrap_or_else(|_| "68".into());
    for (engine, subnet) in [("walg", "172.30.92.0/24"), ("pgbackrest", "172.30.93.0/24")] {
        let lab = Lab::up_with(
            &format!("pgctl-bench-{engine}"),
            subnet,
            &["--dcs", "etcd", "--backup-engine", engine],
        )?;
        lab.pgctl_ok(&["up"])?;
        let leader = lab.leader()?;
        lab.pgbench(&leader, &["-i", "-q", "-s", &scale], false)?;
        let size = lab.sql(&leader, "SELECT pg_size_pretty(pg_database_size('postgres'))")?;
        report(&format!("MEASURED: {engine}: database of {size} (pgbench scale {scale})"));
        let (mut backups, mut restores, mut phases) = (Vec::new(), Vec::new(), Vec::new());
        for run in 0..runs() {
            let started = Instant::now();
            lab.pgctl_ok(&["backup", "now", "--switch-wal"])?;
            backups.push(started.elapsed().as_secs_f64());
            let leader = lab.leader()?;
            lab.sql(
                &leader,
                &format!("CREATE TABLE IF NOT EXISTS pitr(run int); INSERT INTO pitr VALUES ({run})"),
            )?;
            std::thread::sleep(Duration::from_secs(2));
            let target = lab.sql(&leader, "SELECT clock_timestamp()::text")?;
            std::thread::sleep(Duration::from_secs(2));
            lab.sql(&leader, "INSERT INTO pitr VALUES (-1)")?;
            let segment = lab.sql(&leader, "SELECT pg_walfile_name(pg_switch_wal())")?;
            lab.wait_archived(&leader, &segment, Duration::from_secs(120))?;
            let started = Instant::now();
            let restored = lab.pgctl_ok(&["restore", "--target-time", &target, "--yes"])?;
            restores.push(started.elapsed().as_secs_f64());
            phases.push(restore_phases(&restored.stdout));
            report(&format!(
                "MEASURED: {engine} run {}: backup now {:.1}s, PITR {:.1}s ({})",
                run + 1,
                backups[run],
                restores[run],
                phases[run]
            ));
            let leader = lab.leader().context("a leader after the restore")?;
            let expected: Vec<String> = (0..=run).map(|r| r.to_string()).collect();
            assert_eq!(
                lab.sql(&leader, "SELECT string_agg(run::text, ',' ORDER BY run) FROM pitr")?,
                expected.join(",")
            );
        }
        figure(&format!("backup now ({engine}, {size})"), "s", &backups, Baseline::None, "");
        let filed = if engine == "pgbackrest" {
            "48 s; 36 s in an earlier note"
        } else {
            "45.3 s (stop 21)"
        };
        figure(
            &format!("point-in-time restore ({engine}, {size})"),
            "s",
            &restores,
            Baseline::Filed(filed),
            "<= 20 s",
        );
        for (name, runs) in phase_columns(&phases) {
            figure(&format!("  PITR phase ({engine}): {name}"), "s", &runs, Baseline::None, "");
        }
        lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    }
    Ok(())
}

/// `image build` of the default stack (cold: no build cache; cached: nothing changed) and the
/// image's size; `image push` of the cluster's image to 1 host and to 3 hosts (one export
/// streamed to all at once) beside the naive `docker save | docker load` to each host in turn
/// (the image is removed from every host before each delivery). Then `up` from empty volumes
/// (time per phase) and `status` on the running cluster.
#[test]
#[ignore = "a benchmark: ansible-free-scripts/bench.sh"]
fn image_build_push_up_and_status() -> Result<()> {
    require_e2e("image_build_push_up_and_status");
    let lab = Lab::up_with(
        "pgctl-bench-push",
        "172.30.94.0/24",
        &["--dcs", "etcd", "--backup-engine", "pgbackrest"],
    )?;
    image_build(&lab)?;
    let hosts_toml: toml::Value = toml::from_str(&std::fs::read_to_string(lab.hosts_toml())?)?;
    let image = hosts_toml["cluster"]["image"].as_str().context("cluster.image")?.to_string();
    let hosts: Vec<String> = lab.hosts().into_iter().map(|(h, _)| h).collect();
    let size: f64 = docker_local(&["image", "inspect", &image, "--format", "{{.Size}}"])?.parse::<f64>()? / 1e6;
    let clear = || -> Result<()> {
        for h in &hosts {
            lab.docker(h, &["image", "rm", "-f", &image])?;
        }
        Ok(())
    };
    let timed = |what: &dyn Fn() -> Result<()>| -> Result<f64> {
        clear()?;
        let started = Instant::now();
        what()?;
        Ok(started.elapsed().as_secs_f64())
    };
    let (mut one, mut three, mut naive_one, mut naive) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // This lab's floor for any fan-out: its hosts are engines on one machine, so their loads
    // share its cores and disk. Loads from one saved file (no export in the time): 1 host,
    // then every host at once.
    let saved = lab.hosts_toml().parent().unwrap().join("image.tar");
    docker_local(&["save", "-o", &saved.display().to_string(), &image])?;
    let (mut load_one, mut load_all) = (Vec::new(), Vec::new());
    for run in 1..=runs() {
        load_one.push(timed(&|| load_file(&lab, &hosts[0], &saved))?);
        load_all.push(timed(&|| {
            std::thread::scope(|scope| {
                let loads: Vec<_> = hosts.iter().map(|h| scope.spawn(|| load_file(&lab, h, &saved))).collect();
                loads.into_iter().try_for_each(|l| l.join().expect("load thread"))
            })
        })?);
        report(&format!(
            "MEASURED: floor run {run}: docker load of the saved image, 1 host {:.1}s, {} hosts at once {:.1}s",
            load_one[run - 1],
            hosts.len(),
            load_all[run - 1]
        ));
    }
    std::fs::remove_file(&saved)?;
    for run in 1..=runs() {
        one.push(timed(&|| lab.pgctl_ok(&["image", "push", "--limit", &hosts[0]]).map(drop))?);
        three.push(timed(&|| lab.pgctl_ok(&["image", "push"]).map(drop))?);
        naive_one.push(timed(&|| save_load(&lab, &hosts[0], &image))?);
        naive.push(timed(&|| {
            for h in &hosts {
                save_load(&lab, h, &image)?;
            }
            Ok(())
        })?);
        report(&format!(
            "MEASURED: push run {run}: 1 host {:.1}s, {} hosts {:.1}s; naive save|load 1 host {:.1}s, {} hosts one after another {:.1}s",
            one[run - 1],
            hosts.len(),
            three[run - 1],
            naive_one[run - 1],
            hosts.len(),
            naive[run - 1]
        ));
    }
    let median = |v: &[f64]| pgctl_tests::bench::stats(v).0;
    let n = hosts.len();
    figure(
        &format!("image push, {size:.0} MB, to 1 host"),
        "s",
        &one,
        Baseline::Measured("docker save | docker load", naive_one.clone()),
        "",
    );
    figure(
        &format!("image push to {n} hosts"),
        "s",
        &three,
        Baseline::Measured("docker save | docker load to each in turn", naive.clone()),
        &format!("<= 1.3 x 1 host = {:.1} s", 1.3 * median(&one)),
    );
    let ratios: Vec<f64> = three.iter().zip(&one).map(|(t, o)| t / o).collect();
    let naive_ratios: Vec<f64> = naive.iter().zip(&one).map(|(t, o)| t / o).collect();
    figure(
        &format!("push to {n} hosts / push to 1 host"),
        "x",
        &ratios,
        Baseline::Measured("naive to 3 / push to 1", naive_ratios),
        "<= 1.3 x",
    );
    let floor: Vec<f64> = load_all.iter().zip(&load_one).map(|(a, o)| a / o).collect();
    figure(
        &format!("lab floor: docker load of a saved file, {n} hosts at once / 1 host"),
        "x",
        &floor,
        Baseline::Text("the hosts share this machine's cores and disk"),
        "",
    );
    // Every host ends with the image (the last delivery was the naive one; push checks nothing
    // is left to send).
    let again = lab.pgctl_ok(&["image", "push", "--output", "json"])?.json()?;
    for o in again.as_array().context("outcomes")? {
        assert_eq!(o["result"], "present", "{o}");
    }

    // `up` on 3 hosts with the image present, from empty volumes, with its time per phase; then
    // `status` on the running cluster.
    let (mut ups, mut statuses) = (Vec::new(), Vec::new());
    for run in 1..=runs() {
        // A new cluster needs an archive prefix of its own (`up` refuses to mix two systems).
        if run > 1 {
            lab.edit_hosts(&[(
                &format!("s3_prefix = \"{}\"", prefix(run - 1)),
                &format!("s3_prefix = \"{}\"", prefix(run)),
            )])?;
        }
        let started = Instant::now();
        let up = lab.pgctl_ok(&["up"])?;
        ups.push(started.elapsed().as_secs_f64());
        let phases = up
            .stderr
            .lines()
            .find(|l| l.contains("converged in"))
            .unwrap_or_default()
            .to_string();
        report(&format!(
            "MEASURED: up run {run} (image present, empty volumes): {:.1}s: {phases}",
            ups[run - 1]
        ));
        let status = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
        assert!(status["leader"].is_string(), "{status}");
        let synchronous = status["members"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["role"] == "sync_standby");
        assert!(synchronous, "up returned before the leader picked a synchronous standby: {status}");
        for _ in 0..10 {
            let started = Instant::now();
            lab.pgctl_ok(&["status"])?;
            statuses.push(started.elapsed().as_secs_f64());
        }
        lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    }
    figure(
        &format!("up on {n} hosts, image present, empty volumes"),
        "s",
        &ups,
        Baseline::Filed("18.5-20 s"),
        "<= 10 s",
    );
    figure(
        &format!("status, {n} members ({} calls)", statuses.len()),
        "s",
        &statuses,
        Baseline::Filed("1.2-1.4 s"),
        "<= 0.5 s",
    );
    Ok(())
}

/// `image build` of the default stack (Consul + WAL-G, no etcd, no TimescaleDB: not available
/// here) under a tag of its own: once without the build cache, then again with it.
fn image_build(lab: &Lab) -> Result<()> {
    let artifacts = artifacts_dir().to_str().context("artifacts path")?.to_string();
    let tag = "pgctl/postgres:bench-default-stack";
    let mut args: Vec<&str> = BUILD_DEBIAN[..6].to_vec();
    args.extend(["--artifacts", &artifacts, "--without", "timescaledb,etcd", "--tag", tag]);
    let timed = |extra: &[&str]| -> Result<f64> {
        let started = Instant::now();
        lab.pgctl_ok(&[&args[..], extra].concat())?;
        Ok(started.elapsed().as_secs_f64())
    };
    let cold = timed(&["--no-cache"])?;
    let mut cached = Vec::new();
    for _ in 0..runs() {
        cached.push(timed(&[])?);
    }
    figure("image build, default stack, no build cache", "s", &[cold], Baseline::None, "");
    figure(
        "image build, default stack, nothing changed",
        "s",
        &cached,
        Baseline::Measured("cold build", vec![cold]),
        "",
    );
    let size: f64 = docker_local(&["image", "inspect", tag, "--format", "{{.Size}}"])?.parse::<f64>()? / 1e6;
    figure(
        "image size, default stack (PostgreSQL, PostGIS, Patroni, WAL-G, pgBackRest, Consul)",
        "MB",
        &[size],
        Baseline::Filed("1,078 MB without WAL-G and Consul"),
        "<= 900 MB",
    );
    docker_local(&["image", "rm", tag])?;
    Ok(())
}

/// The lab's archive prefix for the `run`-th new cluster of the up benchmark.
fn prefix(run: usize) -> String {
    match run {
        1 => "lab".into(),
        n => format!("lab-up{n}"),
    }
}

/// `docker save IMAGE | docker -H HOST load`, the way without pgctl.
fn save_load(lab: &Lab, host: &str, image: &str) -> Result<()> {
    let certs = lab.hosts_toml().parent().unwrap().join("certs").join(host);
    let script = format!(
        "docker save {image} | docker --tlsverify -H tcp://{}:2376 --tlscacert {ca} --tlscert {cert} --tlskey {key} load -q",
        lab.address(host),
        ca = certs.join("ca.pem").display(),
        cert = certs.join("cert.pem").display(),
        key = certs.join("key.pem").display(),
    );
    let out = std::process::Command::new("bash")
        .args(["-o", "pipefail", "-c", &script])
        .output()?;
    anyhow::ensure!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// `docker -H HOST load -i FILE`: a load alone, without an export.
fn load_file(lab: &Lab, host: &str, file: &std::path::Path) -> Result<()> {
    let lab_dir = lab.hosts_toml().parent().unwrap().to_path_buf();
    docker_on(
        &lab_dir,
        host,
        &lab.address(host),
        &["load", "-q", "-i", &file.display().to_string()],
    )
    .map(drop)
}

/// What the survivors' Patroni and DCS say, for a failed run.
fn diagnose(lab: &Lab, survivors: &[String]) -> String {
    let mut out = String::new();
    for h in survivors {
        // Inside the lab host, where `2>&1` keeps Patroni's log (it writes to stderr).
        let inside = |cmd: &str| docker_local(&["exec", &lab.container(h), "sh", "-c", cmd]).unwrap_or_else(|e| format!("{e:#}"));
        let logs = inside("docker logs --tail 25 patroni 2>&1");
        let dcs = if lab.stack().0 == "consul" {
            let token = "CONSUL_HTTP_TOKEN_FILE=/etc/pgctl/consul-management.token";
            let peers = lab.docker(h, &["exec", "-e", token, "consul", "consul", "operator", "raft", "list-peers"]);
            let members = lab.docker(h, &["exec", "-e", token, "consul", "consul", "members"]);
            let tail = inside("docker logs --tail 15 consul 2>&1");
            format!("{peers:?}\n{members:?}\n{tail}")
        } else {
            String::new()
        };
        out.push_str(&format!("--- {h}: patroni ---\n{logs}\n--- {h}: dcs ---\n{dcs}\n"));
    }
    out
}

fn wait_all_streaming(lab: &Lab, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
        let members = s["members"].as_array().cloned().unwrap_or_default();
        let streaming = members.iter().filter(|m| m["role"] != "leader" && m["streaming"] == true).count();
        // The next failover needs a synchronous standby to promote (synchronous_mode).
        let sync = members.iter().any(|m| m["role"] == "sync_standby");
        if s["leader"].is_string() && streaming == lab.hosts().len() - 1 && sync {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < timeout, "not every replica streams again: {s}");
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// The restore's phases of every run (`name 1.2 s; name 3.4 s` each, from [`restore_phases`])
/// as one column of times per phase, in the order the first run had them.
fn phase_columns(runs: &[String]) -> Vec<(String, Vec<f64>)> {
    let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
    for run in runs {
        for entry in run.split("; ") {
            let Some((name, secs)) = entry.trim_end_matches(" s").rsplit_once(' ') else {
                continue;
            };
            let Ok(secs) = secs.parse::<f64>() else { continue };
            match columns.iter_mut().find(|(n, _)| n == name) {
                Some((_, times)) => times.push(secs),
                None => columns.push((name.to_string(), vec![secs])),
            }
        }
    }
    columns
}

#[test]
fn phases_become_columns() {
    let runs = [
        "stop the cluster 1.5 s; start the leader 2.0 s".to_string(),
        "stop the cluster 1.0 s; start the leader 3.0 s".into(),
    ];
    let columns = phase_columns(&runs);
    assert_eq!(columns[0], ("stop the cluster".to_string(), vec![1.5, 1.0]));
    assert_eq!(columns[1], ("start the leader".to_string(), vec![2.0, 3.0]));
}
