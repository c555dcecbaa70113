//! How applications reach the cluster, on the running Consul lab (after the TLS scenario, so
//! members accept application logins over TLS only): HAProxy and PgBouncer on the application
//! host, the virtual IP on the database hosts. Every check goes through the real HAProxy,
//! PgBouncer and vip-manager and looks at what the members say (role, address, rows).

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// SQL as `user` through a port on `app` (HAProxy 5000-5003 or PgBouncer 6432), from a psql in
/// its HAProxy container: an application on that host.
fn through(lab: &Lab, app: &str, port: u16, user: &str, password: &str, sql: &str) -> Result<String> {
    let conninfo = format!("host=127.0.0.1 port={port} dbname=postgres user={user} sslmode=require connect_timeout=5");
    let pw = format!("PGPASSWORD={password}");
    lab.docker(app, &["exec", "-e", &pw, "haproxy", "psql", &conninfo, "-XAtqc", sql])
}

/// A client writing through HAProxy's port 5000 on `app`, as the superuser.
fn writer_through_haproxy<'a>(lab: &'a Lab, app: &'a str, superuser: &'a str) -> Vec<SqlTarget<'a>> {
    vec![Box::new(move |q: &str| through(lab, app, 5000, "postgres", superuser, q))]
}

/// The member that answers (its address) and whether it is in recovery.
const WHO: &str = "SELECT host(inet_server_addr()) || ' ' || pg_is_in_recovery()";

/// Members `status` reports with `role`.
fn members_with_role(lab: &Lab, role: &str) -> Result<Vec<String>> {
    let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    Ok(s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == role)
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect())
}

/// Runs `check` every half second until it returns true, for at most `timeout`.
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if check().unwrap_or(false) {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < timeout, "{what}: not within {}s", timeout.as_secs());
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `cmd` in the lab host container of `host` (its own network namespace: `ip`, iptables).
fn on_host(lab: &Lab, host: &str, cmd: &[&str]) -> Result<String> {
    let container = lab.container(host);
    docker_local(&[&["exec", container.as_str()][..], cmd].concat())
}

pub fn haproxy_pgbouncer_and_vip(lab: &Lab) -> Result<()> {
    let (app, app_address) = lab.app_hosts().into_iter().next().context("an application host")?;
    lab.edit_hosts(&[(
        "roles = [\"consul-client\"]",
        "roles = [\"consul-client\", \"haproxy\", \"pgbouncer\"]",
    )])?;
    let started = Instant::now();
    lab.pgctl_ok(&["up"])?;
    report(&format!(
        "MEASURED: up adding HAProxy + PgBouncer (application host): {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let mut running: Vec<String> = lab
        .docker(&app, &["ps", "--format", "{{.Names}}"])?
        .lines()
        .map(str::to_string)
        .collect();
    running.sort();
    assert_eq!(running, ["consul", "haproxy", "pgbouncer"], "{app} runs the proxies");
    let again = lab.pgctl_ok(&["up"])?.stderr;
    assert!(
        !again.contains("creating") && !again.contains("reloaded"),
        "a second up changes nothing:\n{again}"
    );
    let superuser = lab.secret("superuser_password")?;
    let sql = |port: u16, q: &str| through(lab, &app, port, "postgres", &superuser, q);

    // --- HAProxy: each port leads where Patroni's REST API says ---
    let leader = lab.leader()?;
    let leader_address = lab.address(&leader);
    wait_until("HAProxy 5000 leads to the leader", Duration::from_secs(30), || {
        Ok(sql(5000, WHO)? == format!("{leader_address} false"))
    })?;
    let mut replicas_seen = BTreeSet::new();
    for _ in 0..6 {
        let who = sql(5001, WHO)?;
        assert!(who.ends_with(" true"), "5001 leads to a replica, not {who}");
        assert!(!who.starts_with(&format!("{leader_address} ")), "5001 reached the leader");
        replicas_seen.insert(who);
    }
    assert_eq!(replicas_seen.len(), 2, "5001 balances over both replicas: {replicas_seen:?}");
    let sync = members_with_role(lab, "sync_standby")?;
    let sync = sync.first().context("a synchronous standby (synchronous_mode)")?;
    assert_eq!(sql(5002, WHO)?, format!("{} true", lab.address(sync)), "5002 is the sync standby");
    let asynchronous = members_with_role(lab, "replica")?;
    let asynchronous = asynchronous.first().context("an asynchronous replica")?.clone();
    assert_eq!(
        sql(5003, WHO)?,
        format!("{} true", lab.address(&asynchronous)),
        "5003 is the asynchronous replica"
    );

    // The statistics page lists every member in every listener.
    let stats = lab.docker(&app, &["exec", "haproxy", "curl", "-sf", "http://127.0.0.1:7000/;csv"])?;
    assert_eq!(
        stats.lines().filter(|l| l.starts_with("primary,")).count(),
        lab.hosts().len() + 2,
        "stats: a frontend, a backend and one line per member:\n{stats}"
    );

    // A replica further behind than replica_max_lag_mb leaves 5001 (and comes back). The limit
    // goes to 1 MiB: hosts.toml changes, HAProxy reloads (no container recreated).
    lab.edit_hosts(&[("replica_max_lag_mb = 100", "replica_max_lag_mb = 1")])?;
    let reloaded = lab.pgctl_ok(&["up"])?.stderr;
    assert!(reloaded.contains("`haproxy` configuration changed: reloaded"), "{reloaded}");
    assert!(!reloaded.contains("creating"), "{reloaded}");
    let lagging = asynchronous.clone();
    let lagging_address = lab.address(&lagging);
    // Its WAL receiver stalls: the leader's replication traffic to it is dropped.
    let block = ["-s", leader_address.as_str(), "-p", "tcp", "--sport", "5432", "-j", "DROP"];
    on_host(lab, &lagging, &[&["iptables", "-I", "INPUT"][..], &block[..]].concat())?;
    let unblock = || on_host(lab, &lagging, &[&["iptables", "-D", "INPUT"][..], &block[..]].concat());
    let outcome = (|| -> Result<Duration> {
        lab.sql(
            &leader,
            "CREATE TABLE lag_probe AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 60000) g",
        )?;
        wait_until("the lagging replica leaves 5001", Duration::from_secs(60), || {
            let seen: BTreeSet<String> = (0..4).map(|_| sql(5001, WHO).unwrap_or_default()).collect();
            Ok(seen.iter().all(|w| !w.starts_with(&format!("{lagging_address} "))))
        })
    })();
    unblock()?;
    let left_after = outcome?;
    report(&format!(
        "MEASURED: a replica 5+ MiB behind (limit 1 MiB) leaves HAProxy 5001 after {:.1} s",
        left_after.as_secs_f64()
    ));
    wait_until("the caught-up replica is back on 5001", Duration::from_secs(90), || {
        Ok((0..4).any(|_| sql(5001, WHO).unwrap_or_default().starts_with(&format!("{lagging_address} "))))
    })?;

    // on-marked-down shutdown-sessions: when HAProxy marks the leader down (here: its REST API
    // unreachable from the application host, PostgreSQL untouched), a session through 5000 is
    // cut at once instead of lingering on a server that may no longer be the leader. (The
    // backend checks its client every second, so the cut shows in pg_stat_activity.)
    let pw = format!("PGPASSWORD={superuser}");
    let conninfo = "host=127.0.0.1 port=5000 dbname=postgres user=postgres sslmode=require application_name=held options='-c client_connection_check_interval=1000'";
    lab.docker(
        &app,
        &[
            "exec",
            "-d",
            "-e",
            &pw,
            "haproxy",
            "psql",
            conninfo,
            "-XAtqc",
            "SELECT pg_sleep(120)",
        ],
    )?;
    let held = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'held'";
    wait_until("the held session reaches the leader", Duration::from_secs(20), || {
        Ok(lab.sql(&leader, held)? == "1")
    })?;
    let api = ["-s", app_address.as_str(), "-p", "tcp", "--dport", "8008", "-j", "DROP"];
    on_host(lab, &leader, &[&["iptables", "-I", "INPUT"][..], &api[..]].concat())?;
    let cut = wait_until(
        "HAProxy cuts the session on the marked-down leader",
        Duration::from_secs(40),
        || Ok(lab.sql(&leader, held)? == "0"),
    );
    on_host(lab, &leader, &[&["iptables", "-D", "INPUT"][..], &api[..]].concat())?;
    let cut = cut?;
    assert_eq!(lab.leader()?, leader, "the leader stayed the leader (only HAProxy's view changed)");
    report(&format!(
        "MEASURED: HAProxy marks a leader whose REST API stops answering down and cuts its sessions after {:.1} s (fall 3, fastinter 1s, timeout check 3s)",
        cut.as_secs_f64()
    ));
    wait_until("5000 leads to the leader again (rise 4)", Duration::from_secs(60), || {
        Ok(sql(5000, WHO)? == format!("{leader_address} false"))
    })?;

    // Writes through 5000, one connection each, across a switchover: the longest gap, no
    // acknowledged row lost.
    lab.sql(&leader, "CREATE TABLE via_haproxy(id int PRIMARY KEY)")?;
    let target = writer_through_haproxy(lab, &app, &superuser);
    let (_, writes) = write_during(&target, "via_haproxy", || {
        std::thread::sleep(Duration::from_secs(3));
        lab.pgctl_ok(&["switchover", "--yes"])
    })?;
    let new_leader = lab.leader()?;
    assert_ne!(new_leader, leader);
    assert!(writes.acked.len() > 10, "{writes:?}");
    assert_eq!(lab.lost_writes(&new_leader, "via_haproxy", &writes)?, Vec::<i64>::new());
    assert_eq!(
        sql(5000, WHO)?,
        format!("{} false", lab.address(&new_leader)),
        "5000 follows the new leader"
    );
    report(&format!(
        "MEASURED: writes through HAProxy 5000 across a switchover: longest gap {:.1} s, {} acknowledged, 0 lost",
        writes.longest_gap.as_secs_f64(),
        writes.acked.len()
    ));

    // And across a failover: the leader's host crashes (its lab container killed: everything on
    // it dies at once, nothing shuts down cleanly) while the client keeps writing through 5000.
    let leader = new_leader;
    lab.sql(&leader, "CREATE TABLE via_haproxy_failover(id int PRIMARY KEY)")?;
    let (elected, writes) = write_during(&writer_through_haproxy(lab, &app, &superuser), "via_haproxy_failover", || {
        std::thread::sleep(Duration::from_secs(2));
        docker_local(&["kill", &lab.container(&leader)])?;
        let elected = wait_until("a new leader after the host failure", Duration::from_secs(120), || {
            Ok(lab.leader().is_ok_and(|l| l != leader))
        });
        // Writes go on through the write_during tail (3 s) on the new leader.
        std::thread::sleep(Duration::from_secs(3));
        elected
    })?;
    docker_local(&["start", &lab.container(&leader)])?;
    let new_leader = lab.leader()?;
    assert_eq!(lab.lost_writes(&new_leader, "via_haproxy_failover", &writes)?, Vec::<i64>::new());
    report(&format!(
        "MEASURED: writes through HAProxy 5000 across a failover (leader's host crashed; new leader after {:.1} s): longest gap {:.1} s, {} acknowledged, 0 lost",
        elected.as_secs_f64(),
        writes.longest_gap.as_secs_f64(),
        writes.acked.len()
    ));
    wait_until(
        "the crashed host, started again, rejoins as a streaming replica",
        Duration::from_secs(180),
        || {
            let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
            Ok(s["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["name"] == leader.as_str() && m["role"] != "leader" && m["streaming"] == true))
        },
    )?;
    wait_until("the rejoined member has every acknowledged row", Duration::from_secs(60), || {
        Ok(lab.lost_writes(&leader, "via_haproxy_failover", &writes)?.is_empty())
    })?;

    // --- the virtual IP: on the leader's host only, and it follows a switchover ---
    let vip = lab.vip_address();
    let moved = lab.vip_follows_the_leader(&vip)?;
    let leader = lab.leader()?;
    let pw = format!("PGPASSWORD={superuser}");
    let vip_sql = |q: &str| -> Result<String> {
        let conninfo = format!("host={vip} port=5432 dbname=postgres user=postgres sslmode=require connect_timeout=3");
        lab.docker(&app, &["exec", "-e", &pw, "haproxy", "psql", &conninfo, "-XAtqc", q])
    };
    let answering = wait_until("the VIP answers as the new leader", Duration::from_secs(30), || {
        Ok(vip_sql("SELECT pg_is_in_recovery() || ' ' || host(inet_server_addr())")? == format!("false {vip}"))
    })?;
    assert_eq!(lab.vip_holders(&vip)?, vec![leader]);
    report(&format!(
        "MEASURED: the VIP (Consul, vip-follow) moved to the new leader's host {:.1} s after the switchover returned; a client from {app} reached the new leader through it {:.1} s later; never on two hosts",
        moved.as_secs_f64(),
        answering.as_secs_f64()
    ));

    // --- PgBouncer: TLS only, users looked up in the database, 200 clients pooled ---
    const PASSWORD: &str = "bench-Pa55-word-77";
    lab.pgctl_stdin(
        PASSWORD,
        &["user", "create", "bench_app", "--password-stdin", "--owns-database", "bench"],
    )
    .assert_code(0, "user create bench_app");
    let bouncer = |user: &str, password: &str, db: &str, sslmode: &str, q: &str| -> Result<String> {
        let conninfo = format!("host=127.0.0.1 port=6432 dbname={db} user={user} sslmode={sslmode} connect_timeout=5");
        let pw = format!("PGPASSWORD={password}");
        lab.docker(&app, &["exec", "-e", &pw, "haproxy", "psql", &conninfo, "-XAtqc", q])
    };
    assert_eq!(
        bouncer(
            "bench_app",
            PASSWORD,
            "bench",
            "require",
            "SELECT current_user || ' ' || current_database()"
        )?,
        "bench_app bench",
        "a user made with `pgctl user create` logs in through PgBouncer (database created after up)"
    );
    assert!(
        bouncer("bench_app", "wrong", "bench", "require", "SELECT 1").is_err(),
        "wrong password"
    );
    assert!(
        bouncer("bench_app", PASSWORD, "bench", "disable", "SELECT 1").is_err(),
        "plain text refused"
    );
    assert!(
        bouncer("postgres", &superuser, "postgres", "require", "SELECT 1").is_err(),
        "the superuser is never looked up"
    );
    let users_file = lab.docker(&app, &["exec", "pgbouncer", "cat", "/etc/pgctl/pgbouncer-auth.txt"])?;
    assert_eq!(users_file.lines().count(), 1, "only PgBouncer's own login is in a file");

    // pgbench: initialised through HAProxy, then 200 clients through PgBouncer, then directly.
    let leader = lab.leader()?;
    let pgbench = |port: u16, args: &[&str]| -> Result<String> {
        let pw = format!("PGPASSWORD={PASSWORD}");
        let mut cmd = vec!["exec", "-e", &pw, "-e", "PGSSLMODE=require", "haproxy", "pgbench"];
        let port = port.to_string();
        cmd.extend(["-h", "127.0.0.1", "-p", &port, "-U", "bench_app"]);
        cmd.extend_from_slice(args);
        cmd.push("bench");
        lab.docker(&app, &cmd)
    };
    pgbench(5000, &["-i", "-s", "2", "-q"])?;
    let backends = "SELECT count(*) FROM pg_stat_activity WHERE usename = 'bench_app'";
    let (run, most_backends) = std::thread::scope(|s| -> Result<(String, i64)> {
        let run = s.spawn(|| pgbench(6432, &["-c", "200", "-j", "2", "-T", "20", "-n"]));
        let mut most = 0;
        while !run.is_finished() {
            if let Ok(n) = lab.sql(&leader, backends) {
                most = most.max(n.parse().unwrap_or(0));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok((run.join().expect("pgbench thread")?, most))
    })?;
    let processed = |out: &str| -> Result<i64> {
        out.lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|n| n.split('/').next())
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("pgbench output:\n{out}"))
    };
    let tps = |out: &str| -> String {
        out.lines()
            .find(|l| l.starts_with("tps = "))
            .map(|l| l.trim_start_matches("tps = ").split(' ').next().unwrap_or("?").to_string())
            .unwrap_or_default()
    };
    assert!(run.contains("number of clients: 200"), "{run}");
    let done = processed(&run)?;
    assert!(done > 0, "{run}");
    let history = lab.docker(
        &leader,
        &[
            "exec",
            "-u",
            "postgres",
            "-e",
            "PGPASSFILE=/etc/pgctl/pgpass",
            "patroni",
            "psql",
            "-h",
            "/var/run/postgresql",
            "-d",
            "bench",
            "-XAtqc",
            "SELECT count(*) FROM pgbench_history",
        ],
    )?;
    assert_eq!(
        history,
        done.to_string(),
        "every transaction pgbench counted is a row on the leader"
    );
    assert!(
        most_backends <= 20 + 1,
        "200 clients share PgBouncer's pool of 20 server connections; the leader saw {most_backends}"
    );
    let direct = pgbench(5000, &["-c", "50", "-j", "2", "-T", "20", "-n"])?;
    report(&format!(
        "MEASURED: pgbench (scale 2, TPC-B, 20 s) through PgBouncer with 200 clients: {} tps, at most {most_backends} server connections; through HAProxy 5000 directly with 50 clients: {} tps",
        tps(&run),
        tps(&direct)
    ));
    Ok(())
}
