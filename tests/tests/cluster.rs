//! End-to-end through the pgctl binary on the lab's default stack (Consul + WAL-G with an
//! application host when build-go-tools.sh built them, else etcd + pgBackRest): up, idempotent
//! re-run, node loss with synchronous_mode_strict, rejoin with pg_rewind, switchover, reinit,
//! down/up, a rolling image upgrade under writes (`cluster/upgrade.rs`), remove; stale-scope,
//! unreachable-host and port-in-use refusals; Patroni validating the configuration pgctl
//! renders. (etcd + pgBackRest stay covered by backup.rs/restore.rs.)

use anyhow::{bail, Context, Result};
use pgctl_tests::*;
use serde_json::Value;
use std::time::{Duration, Instant};

#[path = "cluster/upgrade.rs"]
mod upgrade;

const LAB: &str = "pgctl-e2e-cluster";
const SUBNET: &str = "172.30.79.0/24";

fn status(lab: &Lab) -> Result<Value> {
    lab.pgctl_ok(&["status", "--output", "json"])?.json()
}

/// The members `pgctl status` lists; never empty.
fn members_of(s: &Value) -> Result<Vec<Value>> {
    let members = s["members"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(!members.is_empty(), "status lists no members: {s}");
    Ok(members)
}

fn leader(lab: &Lab) -> Result<String> {
    status(lab)?["leader"].as_str().map(str::to_string).context("no leader")
}

/// The cluster's container IDs (etcd, Patroni) per host, through the docker CLI. Every host
/// has some: comparing lists of nothing would prove nothing.
fn container_ids(lab: &Lab) -> Result<Vec<String>> {
    let ids = lab
        .hosts()
        .iter()
        .map(|(h, _)| lab.docker(h, &["ps", "-aq", "--no-trunc", "--filter", "label=io.pgctl.cluster=lab"]))
        .collect::<Result<Vec<_>>>()?;
    anyhow::ensure!(
        ids.iter().all(|i| !i.is_empty()),
        "a host has no containers of the cluster: {ids:?}"
    );
    Ok(ids)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < timeout {
        match f() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    bail!("{what}: not within {}s ({last})", timeout.as_secs())
}

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn cluster_lifecycle_on_real_engines() -> Result<()> {
    require_e2e("cluster_lifecycle_on_real_engines");
    let lab = Lab::up_default(LAB, SUBNET)?;
    // Every acknowledged commit must survive the loss of the leader's host.
    lab.edit_hosts(&[("synchronous_mode_strict = false", "synchronous_mode_strict = true")])?;

    // 1. From an empty lab: one leader and two streaming replicas; rows reach both replicas.
    // The first host of hosts.toml bootstraps alone; the others start once it leads, and `up`
    // returns with the synchronous standby chosen.
    let up = lab.pgctl_ok(&["up"])?;
    let s = status(&lab)?;
    let members = members_of(&s)?;
    assert_eq!(members.len(), lab.hosts().len(), "one member per host: {s}");
    assert_eq!(members.iter().filter(|m| m["role"] == "leader").count(), 1, "{s}");
    assert_eq!(
        members.iter().filter(|m| m["role"] != "leader" && m["streaming"] == true).count(),
        2,
        "{s}"
    );
    assert_eq!(members.iter().filter(|m| m["role"] == "sync_standby").count(), 1, "{s}");
    let l = leader(&lab)?;
    let first = hosts_with(&lab.hosts_toml(), |roles| roles.contains(&"patroni"))?[0].0.clone();
    assert_eq!(l, first, "the first host bootstraps the new cluster: {s}\n{}", up.stderr);
    let bootstrapped = up
        .stderr
        .lines()
        .position(|l| l.contains("bootstrapped the new cluster and leads it"));
    let others_started = up
        .stderr
        .lines()
        .position(|line| line.contains("starting `patroni`") && !line.starts_with(&format!("{first}:")));
    assert!(
        bootstrapped.is_some() && bootstrapped < others_started,
        "the other members start after the first leads:\n{}",
        up.stderr
    );

    lab.sql(
        &l,
        "CREATE TABLE marks (id int PRIMARY KEY, note text); INSERT INTO marks SELECT g, 'before' FROM generate_series(1, 100) g",
    )?;
    for (h, _) in lab.hosts().iter().filter(|(h, _)| *h != l) {
        wait_until(&format!("rows on replica {h}"), Duration::from_secs(30), || {
            Ok(lab.sql(h, "SELECT count(*) FROM marks")? == "100")
        })?;
    }
    assert_eq!(lab.sql(&l, "SHOW data_checksums")?, "on");
    assert_eq!(
        lab.sql(
            &l,
            "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method NOT IN ('scram-sha-256') \
             AND NOT (type = 'local' AND user_name = '{postgres}' AND auth_method = 'peer')"
        )?,
        "0",
        "every rule but the OS user postgres over the local socket asks for a SCRAM password"
    );
    assert_eq!(
        lab.sql(
            &l,
            "SELECT count(*) FROM pg_hba_file_rules WHERE type <> 'local' AND auth_method <> 'scram-sha-256'"
        )?,
        "0",
        "no network rule without a password"
    );
    // Secrets reach the containers as files, never as environment or command line.
    let secrets: toml::Value = toml::from_str(&std::fs::read_to_string(lab.dir.join("secrets.toml"))?)?;
    let inspect = lab.docker(&l, &["inspect", "patroni", &lab.dcs_container()])?;
    let mut keys = vec!["superuser_password", "replication_password", "rewind_password", "rest_api_password"];
    if lab.dcs_container() == "consul" {
        keys.extend([
            "consul_gossip_key",
            "consul_management_token",
            "consul_agent_token",
            "consul_patroni_token",
        ]);
    }
    for key in keys {
        let secret = secrets[key].as_str().unwrap();
        assert!(!inspect.contains(secret), "{key} visible in docker inspect");
    }
    let mode = lab.docker(&l, &["exec", "patroni", "stat", "-c", "%a %U", "/etc/pgctl/patroni.yml"])?;
    assert_eq!(mode, "600 postgres");
    // With the DCS running, Patroni itself validates what pgctl renders.
    patroni_validates_rendered_configs(&lab)?;

    // 2. A second up changes nothing.
    let before = container_ids(&lab)?;
    lab.pgctl_ok(&["up"])?;
    assert_eq!(container_ids(&lab)?, before, "second up recreated containers");

    // 3. Lose the leader's host under a write load.
    let old_leader = leader(&lab)?;
    let acked = node_loss(&lab, &old_leader)?;
    let new_leader = leader(&lab)?;
    assert_ne!(new_leader, old_leader);
    let present: Vec<i64> = lab
        .sql(&new_leader, "SELECT id FROM marks WHERE id > 1000 ORDER BY id")?
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(!acked.is_empty(), "no write was acknowledged around the host loss");
    assert!(!present.is_empty(), "no row of the load on the new leader");
    let lost: Vec<_> = acked.iter().filter(|id| !present.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged rows lost on failover: {lost:?}");

    // 4. The host comes back: the old leader rejoins as a replica and catches up.
    docker_local(&["start", &lab.container(&old_leader)])?;
    wait_until("old leader rejoins", Duration::from_secs(180), || {
        let s = status(&lab)?;
        Ok(members_of(&s)?
            .iter()
            .any(|m| m["name"] == old_leader.as_str() && m["role"] != "leader" && m["streaming"] == true))
    })?;
    let total = lab.sql(&new_leader, "SELECT count(*) FROM marks")?;
    assert!(total.parse::<u64>()? > 100, "the 100 rows and the load: {total}");
    wait_until("old leader caught up", Duration::from_secs(60), || {
        Ok(lab.sql(&old_leader, "SELECT count(*) FROM marks")? == total)
    })?;

    // 5. Switchover to a named member; reinit of a replica; down + up keeps the data.
    // In synchronous mode a switchover may only go to the synchronous standby: pgctl says so.
    let s = status(&lab)?;
    let members = members_of(&s)?;
    let sync = members.iter().find(|m| m["role"] == "sync_standby").context("a sync standby")?["name"]
        .as_str()
        .unwrap()
        .to_string();
    let other = members.iter().find(|m| m["role"] == "replica").context("an async replica")?["name"]
        .as_str()
        .unwrap()
        .to_string();
    let leader_before = leader(&lab)?;
    let refused = lab.pgctl(&["switchover", "--to", &other, "--yes"]);
    assert!(!refused.ok, "a switchover to an asynchronous replica must be refused");
    assert_eq!(leader(&lab)?, leader_before, "the refused switchover changed the leader");
    assert!(refused.stderr.contains("synchronous standby"), "{}", refused.stderr);
    let target = sync;
    lab.pgctl_ok(&["switchover", "--to", &target, "--yes"])?;
    assert_eq!(leader(&lab)?, target);
    let replica = lab.host_other_than(&target)?;
    lab.docker(
        &replica,
        &[
            "exec",
            "-u",
            "postgres",
            "patroni",
            "touch",
            "/var/lib/postgresql/data/pgdata/reinit-marker",
        ],
    )?;
    lab.pgctl_ok(&["reinit", &replica, "--yes"])?;
    let marker = lab.docker(
        &replica,
        &[
            "exec",
            "patroni",
            "sh",
            "-c",
            "test -e /var/lib/postgresql/data/pgdata/reinit-marker && echo present || echo gone",
        ],
    )?;
    assert_eq!(marker, "gone", "reinit rebuilt the data directory");
    wait_until("reinitialized replica has the rows", Duration::from_secs(60), || {
        Ok(lab.sql(&replica, "SELECT count(*) FROM marks")? == total)
    })?;
    lab.pgctl_ok(&["down", "--yes"])?;
    interrupted_restore_under_a_stopped_member(&lab, &replica)?;
    lab.pgctl_ok(&["up"])?;
    assert_eq!(
        lab.sql(&leader(&lab)?, "SELECT count(*) FROM marks")?,
        total,
        "data survives down + up"
    );

    // 6. A new image rolled through the running cluster (and one that cannot run, refused).
    upgrade::rolling_image_upgrade(&lab)?;

    // 7. Refusals: unreachable host, stale scope, busy port — each changes nothing.
    unreachable_host_changes_nothing(&lab)?;
    stale_scope_is_explained(&lab)?;
    // Without the pin, remove is refused (exit 4) and removes nothing of the running cluster.
    let before = container_ids(&lab)?;
    let refused = lab.pgctl(&["remove"]);
    refused.assert_code(exit::REFUSED, "remove without --i-am-aware");
    assert_eq!(container_ids(&lab)?, before, "a refused remove removed containers");
    assert!(refused.stderr.contains("--i-am-aware"), "names the pin: {}", refused.stderr);
    busy_port_is_named(&lab)?;

    // remove --i-am-aware --volumes leaves nothing of the cluster behind.
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    for (h, _) in lab.hosts() {
        assert_eq!(
            lab.docker(&h, &["ps", "-aq", "--filter", "label=io.pgctl.cluster=lab"])?,
            "",
            "{h}: containers left"
        );
        assert_eq!(
            lab.docker(&h, &["volume", "ls", "-q", "--filter", "label=io.pgctl.cluster=lab"])?,
            "",
            "{h}: volumes left"
        );
    }
    Ok(())
}

/// A stopped member whose host holds a newer data volume, empty or with an interrupted restore in
/// it (pgctl killed after making the volume, before the container was gone): `up` would
/// recreate the container onto that volume; it reads it first and refuses, starting nothing.
/// With the volume gone, the member is as it was.
fn interrupted_restore_under_a_stopped_member(lab: &Lab, host: &str) -> Result<()> {
    let image = lab.docker(host, &["inspect", "-f", "{{.Config.Image}}", "patroni"])?;
    let partial = "lab-pgdata-g2";
    let labels = ["--label", "io.pgctl.cluster=lab", "--label", "io.pgctl.role=patroni"];
    lab.docker(host, &[&["volume", "create"], &labels[..], &[partial]].concat())?;
    let before = container_ids(lab)?;
    let refused_up = |why: &str| -> Result<()> {
        let refused = lab.pgctl(&["up"]);
        refused.assert_code(exit::REFUSED, &format!("up onto {why}"));
        assert!(refused.stderr.contains(&format!("{host}: ")), "{}", refused.stderr);
        assert!(refused.stderr.contains(partial), "{}", refused.stderr);
        assert!(refused.stderr.contains("interrupted"), "{}", refused.stderr);
        assert_eq!(container_ids(lab)?, before, "up onto {why} recreated containers");
        for (h, _) in lab.hosts() {
            assert_eq!(
                lab.docker(&h, &["ps", "-q", "--filter", "name=^patroni$"])?,
                "",
                "{h}: Patroni started"
            );
        }
        Ok(())
    };
    refused_up("an empty newer volume")?;
    let mount = format!("{partial}:/var/lib/postgresql/data");
    let marker = "/var/lib/postgresql/data/pgctl-restore-incomplete";
    lab.docker(host, &["run", "--rm", "--network", "none", "-v", &mount, &image, "touch", marker])?;
    refused_up("an interrupted restore's volume")?;
    lab.docker(host, &["volume", "rm", partial])?;
    Ok(())
}

/// Stops the leader's whole host while rows are inserted one by one; returns the ids whose
/// commit was acknowledged. Records the time from the stop to the first accepted write.
fn node_loss(lab: &Lab, leader_host: &str) -> Result<Vec<i64>> {
    let mut acked = Vec::new();
    let mut next = 1001;
    for _ in 0..20 {
        if lab.sql(leader_host, &format!("INSERT INTO marks VALUES ({next}, 'load')")).is_ok() {
            acked.push(next);
        }
        next += 1;
    }
    let stopped = Instant::now();
    docker_local(&["stop", "-t", "0", &lab.container(leader_host)])?;
    // Try every surviving host directly: a replica refuses the write at once (read-only), so
    // the first success marks the new leader accepting writes. With strict synchronous mode
    // the commit returns only once a synchronous standby has it: that is the acknowledgement.
    // (A commit whose wait is cancelled is only local: the generous timeout avoids that.)
    let survivors: Vec<String> = lab.hosts().into_iter().map(|(h, _)| h).filter(|h| h != leader_host).collect();
    let mut first_write = None;
    'outer: while stopped.elapsed() < Duration::from_secs(120) {
        for h in &survivors {
            let sql = format!("SET statement_timeout = '90s'; INSERT INTO marks VALUES ({next}, 'after')");
            if lab.sql(h, &sql).is_ok() {
                acked.push(next);
                first_write = Some(stopped.elapsed());
                break 'outer;
            }
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = first_write.context("no write accepted within 120s of losing the leader's host")?;
    report(&format!(
        "MEASURED: leader host stopped -> first accepted write on the new leader: {:.1}s",
        took.as_secs_f64()
    ));
    Ok(acked)
}

fn unreachable_host_changes_nothing(lab: &Lab) -> Result<()> {
    let before = container_ids(lab)?;
    docker_local(&["stop", "-t", "2", &lab.container("host3")])?;
    let run = lab.pgctl(&["up"]);
    let json = lab.pgctl(&["up", "--output", "json"]);
    docker_local(&["start", &lab.container("host3")])?;
    run.assert_code(exit::UNREACHABLE, "up with host3 stopped");
    json.assert_code(exit::UNREACHABLE, "up --output json with host3 stopped");
    let (kind, message) = json.error_json()?;
    assert!(message.contains("host3"), "the JSON error ({kind}) names the host: {message}");
    assert!(
        run.stderr.contains("host3") && run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!("tcp://{}:2376", lab.address("host3"))),
        "names the endpoint: {}",
        run.stderr
    );
    wait_until("host3 back", Duration::from_secs(60), || {
        Ok(lab.docker("host3", &["ps", "-q"]).is_ok())
    })?;
    assert_eq!(container_ids(lab)?, before, "nothing changed while a host was unreachable");
    lab.pgctl_ok(&["up"])?;
    Ok(())
}

/// The DCS remembers the scope but the data volumes are gone (a reinstall): `up` explains
/// problem 8.1 and names the command that clears it instead of waiting forever.
fn stale_scope_is_explained(lab: &Lab) -> Result<()> {
    for (h, _) in lab.hosts() {
        lab.docker(&h, &["rm", "-f", "patroni"])?;
        lab.docker(&h, &["volume", "rm", "lab-pgdata"])?;
    }
    let started = Instant::now();
    let run = lab.pgctl(&["up"]);
    assert!(!run.ok, "up must refuse a stale scope");
    assert!(started.elapsed() < Duration::from_secs(120), "refused promptly, not after waiting");
    lab.assert_no_patroni("up refused a stale scope");
    assert!(
        run.stderr.contains("waiting for leader to bootstrap") && run.stderr.contains("pgctl remove --i-am-aware"),
        "{}",
        run.stderr
    );
    // The named command clears it. The S3 prefix still holds the wiped cluster's archive: a new
    // cluster (new system identifier) is refused there, and bootstraps on a prefix of its own.
    lab.pgctl_ok(&["remove", "--i-am-aware", "--yes"])?;
    let refused = lab.pgctl(&["up"]);
    assert!(!refused.ok, "a new cluster on the old archive must be refused");
    lab.assert_no_patroni("up refused the occupied archive prefix");
    assert!(refused.stderr.contains("already holds the WAL archive"), "{}", refused.stderr);
    lab.edit_hosts(&[("s3_prefix = \"lab\"", "s3_prefix = \"lab-2\"")])?;
    lab.pgctl_ok(&["up"])?;
    Ok(())
}

fn busy_port_is_named(lab: &Lab) -> Result<()> {
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    // Something else listens on 5432 on host2.
    lab.docker(
        "host2",
        &[
            "run",
            "-d",
            "--name",
            "squatter",
            "--network",
            "host",
            "--entrypoint",
            "python3",
            "pgctl/postgres:15-debian",
            "-m",
            "http.server",
            "5432",
        ],
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let run = lab.pgctl(&["up"]);
    lab.docker("host2", &["rm", "-f", "squatter"])?;
    assert!(!run.ok);
    assert!(
        run.stderr.contains("host2") && run.stderr.contains("5432") && run.stderr.contains("nothing was changed"),
        "{}",
        run.stderr
    );
    for (h, _) in lab.hosts() {
        assert_eq!(
            lab.docker(&h, &["ps", "-aq", "--filter", "label=io.pgctl.cluster=lab"])?,
            "",
            "{h}: nothing created"
        );
    }
    Ok(())
}

/// Patroni itself checks the configuration pgctl renders for the lab's DCS (and, on an etcd
/// lab, the Consul variant too), in a container of the built image; a wrong bin_dir must
/// fail, so the check is real.
fn patroni_validates_rendered_configs(lab: &Lab) -> Result<()> {
    let mut variants = vec![(lab.dcs_container(), lab.hosts_toml())];
    if lab.dcs_container() == "etcd" {
        let consul_hosts = edited(
            &std::fs::read_to_string(lab.hosts_toml())?,
            &[
                ("dcs = \"etcd\"", "dcs = \"consul\""),
                ("\"etcd\", \"patroni\"", "\"consul-server\", \"patroni\""),
            ],
        )?;
        let consul_toml = lab.dir.join("hosts-consul.toml");
        std::fs::write(&consul_toml, consul_hosts)?;
        variants.push(("consul".into(), consul_toml));
    }
    for (variant, hosts) in variants {
        let rendered = pgctl_ok(&lab.work, &["config", "render", "host1", "--hosts", hosts.to_str().unwrap()])?.stdout;
        // Patroni runs the image's own bin_dir (its pg_isready sees a start when it happens).
        let bin_dir = "bin_dir: /usr/lib/pgctl/postgresql/15/bin";
        assert!(rendered.contains(bin_dir), "{variant}: no `{bin_dir}` in:\n{rendered}");
        let result = validate(lab, &rendered)?;
        assert!(result.is_ok(), "{variant}: Patroni rejected the rendered patroni.yml: {result:?}");
        let broken = edited(&rendered, &[(bin_dir, "bin_dir: /usr/lib/postgresql/99/bin")])?;
        assert!(validate(lab, &broken)?.is_err(), "{variant}: a wrong bin_dir must fail validation");
    }
    Ok(())
}

/// `patroni --validate-config` in a throwaway container on host1 (its own network namespace,
/// so the ports Patroni would listen on are free). It connects to the DCS address: the etcd
/// variant reaches the lab's running etcd members; the Consul variant gets a stand-in
/// listener on 127.0.0.1:8500 (the check is about the configuration).
fn validate(lab: &Lab, yml: &str) -> Result<Result<(), String>> {
    let file = lab.work.join("validate.yml");
    std::fs::write(&file, yml)?;
    let script =
        "python3 -m http.server 8500 --bind 127.0.0.1 >/dev/null 2>&1 & sleep 1; patroni --validate-config /tmp/patroni.yml && echo VALID";
    let id = lab.docker("host1", &["create", "--entrypoint", "sh", "pgctl/postgres:15-debian", "-c", script])?;
    lab.docker("host1", &["cp", file.to_str().unwrap(), &format!("{id}:/tmp/patroni.yml")])?;
    let out = lab.docker("host1", &["start", "-a", &id]);
    lab.docker("host1", &["rm", "-f", &id])?;
    Ok(match out {
        Ok(text) if text.contains("VALID") => Ok(()),
        Ok(text) => Err(text),
        Err(e) => Err(format!("{e:#}")),
    })
}
