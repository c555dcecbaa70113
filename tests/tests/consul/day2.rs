//! Day-2 operations on the Consul lab's running cluster (part of the consul test file, which
//! has a cluster up anyway): Patroni's dynamic configuration through `pgctl config` and
//! `pgctl restart --pending`.

use super::*;
use serde_json::Value;

fn dynamic_config(lab: &Lab) -> Result<Value> {
    Ok(lab.pgctl_ok(&["config", "show", "--output", "json"])?.json()?["dynamic_configuration"].clone())
}

/// Waits until `sql` answers `want` on every database host.
fn everywhere(lab: &Lab, sql: &str, want: &str) -> Result<()> {
    let started = Instant::now();
    for (h, _) in lab.hosts() {
        loop {
            let got = lab.sql(&h, sql).unwrap_or_else(|e| format!("{e:#}"));
            if got == want {
                break;
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(90),
                "{h}: `{sql}` is {got}, expected {want}"
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(())
}

fn pending_members(lab: &Lab) -> Result<Vec<String>> {
    let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    Ok(s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["pending_restart"] == true)
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect())
}

/// Refused changes change nothing; a reload parameter applies everywhere; a restart parameter
/// shows pending_restart on every member until `restart --pending`; `config edit` and
/// `config diff` see the same values as hosts.toml.
pub fn configuration_through_the_dcs(lab: &Lab) -> Result<()> {
    let before = dynamic_config(lab)?;
    let hosts: toml::Value = toml::from_str(&std::fs::read_to_string(lab.hosts_toml())?)?;
    let ttl = hosts["cluster"]["patroni"]["ttl"].as_integer().unwrap_or(30);
    assert_eq!(before["ttl"], ttl, "the DCS has hosts.toml's ttl: {before}");
    let agree = lab.pgctl_ok(&["config", "diff"])?;
    assert!(
        agree.stdout.contains("agree"),
        "a fresh cluster agrees with hosts.toml: {}",
        agree.stdout
    );

    // Refused, each naming its key; the DCS is as it was.
    for (assignment, says) in [
        ("no_such_parameter=1", "not a PostgreSQL parameter"),
        ("work_mem=10", "out of range"),
        ("wal_level=archive", "expected one of"),
        ("retry_timeout=20", "loop_wait + 2 * retry_timeout <= ttl"),
        ("archive_command=/bin/true", "backup engine"),
    ] {
        let refused = lab.pgctl(&["--yes", "config", "set", assignment]);
        refused.assert_code(exit::CONFIG, assignment);
        let key = assignment.split('=').next().unwrap();
        assert!(
            refused.stderr.contains(key) && refused.stderr.contains(says),
            "{assignment}: {}",
            refused.stderr
        );
    }
    assert_eq!(dynamic_config(lab)?, before, "a refused change reached the DCS");

    // work_mem applies on reload; max_connections waits for a restart on every member.
    let set = lab.pgctl_ok(&["--yes", "config", "set", "work_mem=16MB", "max_connections=250"])?;
    assert!(set.stdout.contains("restart --pending"), "{}", set.stdout);
    everywhere(lab, "SHOW work_mem", "16MB")?;
    let started = Instant::now();
    while pending_members(lab)?.len() < lab.hosts().len() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not every member shows pending_restart"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    everywhere(lab, "SHOW max_connections", "200")?;
    let shown = lab.pgctl_ok(&["config", "show", "--output", "json"])?.json()?;
    let pending = shown["pending_restart"].as_array().cloned().unwrap_or_default();
    assert!(
        pending.iter().all(|p| p["parameters"]
            .as_array()
            .is_some_and(|a| a.contains(&Value::from("max_connections")))),
        "config show names the pending parameter: {shown}"
    );
    let hosts: toml::Value = toml::from_str(&std::fs::read_to_string(lab.hosts_toml())?)?;
    let params = &hosts["cluster"]["postgresql_parameters"];
    assert_eq!(params["max_connections"].as_integer(), Some(250), "hosts.toml: {params}");
    assert_eq!(params["work_mem"].as_str(), Some("16MB"), "hosts.toml: {params}");

    let leader = lab.leader()?;
    let restarted = lab.pgctl_ok(&["--yes", "--output", "json", "restart", "--pending"])?;
    assert!(
        pending_members(lab)?.is_empty(),
        "pending after restart --pending: {}",
        restarted.stdout
    );
    everywhere(lab, "SHOW max_connections", "250")?;
    assert_eq!(lab.leader()?, leader, "restart --pending moved the leader");
    let again = lab.pgctl_ok(&["--yes", "restart", "--pending"])?;
    assert!(again.stderr.contains("nothing restarted"), "{}", again.stderr);

    // config edit through $EDITOR; config diff sees a hand edit of hosts.toml.
    let editor = "sed -i 's/^work_mem = .*/work_mem = \"32MB\"/'";
    let edit = lab.pgctl_env(&[("VISUAL", editor), ("EDITOR", editor)], &["--yes", "config", "edit"]);
    assert!(edit.ok, "config edit: {}", edit.stderr);
    everywhere(lab, "SHOW work_mem", "32MB")?;
    lab.edit_hosts(&[("work_mem = \"32MB\"", "work_mem = \"8MB\"")])?;
    let diff = lab.pgctl_ok(&["--output", "json", "config", "diff"])?.json()?;
    assert_eq!(
        diff,
        serde_json::json!([{ "key": "postgresql.parameters.work_mem", "hosts_toml": "8MB", "cluster": "32MB" }]),
        "config diff"
    );
    lab.edit_hosts(&[("work_mem = \"8MB\"", "work_mem = \"32MB\"")])?;
    Ok(())
}

/// `psql` as `user` with `password` from `host`'s Patroni container to `conninfo`.
fn login(lab: &Lab, host: &str, conninfo: &str, password: &str, sql: &str) -> Result<String> {
    let pw = format!("PGPASSWORD={password}");
    lab.docker(host, &["exec", "-e", &pw, "patroni", "psql", conninfo, "-XAtqc", sql])
}

/// Roles through `pgctl user`: a login through the multi-host connection string on the leader
/// and on a replica after a switchover, a wrong password refused, the password nowhere in logs,
/// `docker inspect` or the process list; drop refused while the role owns objects.
pub fn users_without_psql(lab: &Lab) -> Result<()> {
    const PASSWORD: &str = "app-rw-Pa55-word-91";
    const NEW_PASSWORD: &str = "app-rw-second-Pa55-17";
    let file = lab.work.join("app_rw.pw");
    std::fs::write(&file, format!("{PASSWORD}\n"))?;
    let created = lab
        .pgctl_ok(&[
            "--output",
            "json",
            "user",
            "create",
            "app_rw",
            "--password-file",
            file.to_str().unwrap(),
            "--owns-database",
            "appdb",
            "--connection-limit",
            "20",
        ])?
        .json()?;
    assert_eq!(created["password"], "scram-sha-256", "{created}");
    assert_eq!(created["owns_databases"], serde_json::json!(["appdb"]), "{created}");
    assert_eq!(created["connection_limit"], 20);
    let again = lab.pgctl(&["user", "create", "app_rw", "--password-file", file.to_str().unwrap()]);
    again.assert_code(exit::REFUSED, "creating an existing role");
    let managed = lab.pgctl(&["user", "alter", "replicator", "--no-login"]);
    managed.assert_code(exit::REFUSED, "altering the cluster's replication role");

    let hosts: Vec<String> = lab.hosts().iter().map(|(_, a)| a.clone()).collect();
    let multi = format!(
        "host={} dbname=appdb user=app_rw target_session_attrs=read-write connect_timeout=5",
        hosts.join(",")
    );
    let client = lab.hosts()[0].0.clone();
    login(
        lab,
        &client,
        &multi,
        PASSWORD,
        "CREATE TABLE owned (id int); INSERT INTO owned VALUES (1), (2)",
    )?;
    assert!(
        login(lab, &client, &multi, "not-the-password", "SELECT 1").is_err(),
        "a wrong password logged in"
    );

    // The new password from stdin, while the leader's process list is sampled.
    let leader = lab.leader()?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (altered, seen) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(ps) = lab.docker(&leader, &["exec", "patroni", "ps", "-eo", "args"]) {
                    seen.push(ps);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        });
        let altered = lab.pgctl_stdin(NEW_PASSWORD, &["user", "alter", "app_rw", "--password-stdin"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (altered, sampler.join().expect("sampler"))
    });
    assert!(altered.ok, "user alter: {}", altered.stderr);
    assert!(!seen.is_empty(), "the process list was never sampled");
    assert!(
        seen.iter().all(|ps| !ps.contains(NEW_PASSWORD)),
        "the password was in the process list"
    );
    assert!(
        login(lab, &client, &multi, PASSWORD, "SELECT 1").is_err(),
        "the old password still works"
    );

    // After a switchover: the multi-host string finds the new leader; a replica serves reads.
    lab.pgctl_ok(&["switchover", "--yes"])?;
    let new_leader = lab.leader()?;
    assert_ne!(new_leader, leader);
    assert_eq!(
        login(lab, &client, &multi, NEW_PASSWORD, "INSERT INTO owned VALUES (3) RETURNING 3")?,
        "3"
    );
    let replica_address = lab.address(&leader);
    let on_replica = format!("host={replica_address} dbname=appdb user=app_rw connect_timeout=5");
    let started = Instant::now();
    loop {
        let got = login(
            lab,
            &client,
            &on_replica,
            NEW_PASSWORD,
            "SELECT count(*) || ':' || pg_is_in_recovery() FROM owned",
        );
        if got.as_deref().ok() == Some("3:true") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the replica {leader}: {got:?}");
        std::thread::sleep(Duration::from_secs(1));
    }

    // Neither password in any container's log or configuration.
    for (h, _) in lab.hosts() {
        let logs = lab.docker(&h, &["logs", "patroni"]).unwrap_or_default() + &lab.docker(&h, &["logs", "consul"]).unwrap_or_default();
        let inspect = lab.docker(&h, &["inspect", "patroni"])?;
        let pg_logs = lab
            .docker(
                &h,
                &[
                    "exec",
                    "patroni",
                    "sh",
                    "-c",
                    "cat /var/lib/postgresql/data/pgdata/log/* 2>/dev/null || true",
                ],
            )
            .unwrap_or_default();
        for p in [PASSWORD, NEW_PASSWORD] {
            assert!(
                !logs.contains(p) && !inspect.contains(p) && !pg_logs.contains(p),
                "{h}: a password leaked"
            );
        }
    }

    // Dropping a role that owns a database and a table: refused, then handed to postgres.
    let refused = lab.pgctl(&["--yes", "user", "drop", "app_rw"]);
    refused.assert_code(exit::REFUSED, "dropping a role that owns objects");
    assert!(
        refused.stderr.contains("appdb") && refused.stderr.contains("--reassign-to"),
        "{}",
        refused.stderr
    );
    lab.pgctl_ok(&["--yes", "user", "drop", "app_rw", "--reassign-to", "postgres"])?;
    let leader = lab.leader()?;
    assert_eq!(lab.sql(&leader, "SELECT count(*) FROM pg_roles WHERE rolname = 'app_rw'")?, "0");
    assert_eq!(
        lab.sql(&leader, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'appdb'")?,
        "postgres"
    );
    let owner = lab.docker(
        &leader,
        &[
            "exec",
            "-u",
            "postgres",
            "patroni",
            "psql",
            "-h",
            "/var/run/postgresql",
            "-d",
            "appdb",
            "-XAtqc",
            "SELECT tableowner FROM pg_tables WHERE tablename = 'owned'",
        ],
    )?;
    assert_eq!(owner, "postgres");
    let listed = lab.pgctl_ok(&["--output", "json", "user", "list"])?.json()?;
    assert!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|r| r["name"] == "replicator" && r["cluster_role"] == true)),
        "{listed}"
    );
    Ok(())
}

/// `tls = true`: after `up`, an application host connects with `sslmode=verify-full` through
/// the Consul name of the leader (checked against the cluster's CA), before and after a
/// switchover; a plain connection from it is refused.
pub fn tls_for_clients(lab: &Lab) -> Result<()> {
    let (app, _) = lab.app_hosts().into_iter().next().context("an application host")?;
    lab.edit_hosts(&[("tls = false", "tls = true")])?;
    let started = Instant::now();
    lab.pgctl_ok(&["up"])?;
    report(&format!(
        "MEASURED: up turning TLS on (3 members recreated one at a time): {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let secrets: toml::Value = toml::from_str(&std::fs::read_to_string(lab.dir.join("secrets.toml"))?)?;
    let ca = secrets["postgres_ca_cert"].as_str().context("postgres_ca_cert")?;
    lab.docker(
        &app,
        &["exec", "consul", "sh", "-c", "printf '%s' \"$1\" > /tmp/pg-ca.crt", "sh", ca],
    )?;
    let superuser = lab.secret("superuser_password")?;
    let connect = |leader: &str, sslmode: &str| -> Result<String> {
        let conninfo = format!(
            "host=master.lab.service.consul hostaddr={} dbname=postgres user=postgres sslmode={sslmode} sslrootcert=/tmp/pg-ca.crt connect_timeout=5",
            lab.address(leader)
        );
        let pw = format!("PGPASSWORD={superuser}");
        let sql = "SELECT s.ssl || ':' || pg_is_in_recovery() || ':' || host(inet_server_addr()) FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()";
        lab.docker(&app, &["exec", "-e", &pw, "consul", "psql", &conninfo, "-XAtqc", sql])
    };
    for round in ["before", "after"] {
        let leader = lab.leader()?;
        wait_for_dns(
            lab,
            &app,
            "master.lab.service.consul",
            &lab.address(&leader),
            Duration::from_secs(60),
        )?;
        assert_eq!(
            connect(&leader, "verify-full")?,
            format!("true:false:{}", lab.address(&leader)),
            "verify-full through the Consul name {round} the switchover"
        );
        let plain = connect(&leader, "disable");
        assert!(
            plain.is_err(),
            "a plain connection from {app} was accepted {round} the switchover: {plain:?}"
        );
        if round == "before" {
            lab.pgctl_ok(&["switchover", "--yes"])?;
        }
    }
    Ok(())
}
