//! Consul as the DCS, end to end, on the lab exactly as `pgctl lab up` makes it by default:
//! Consul + WAL-G, three database hosts running Consul servers and one application host
//! (app1) running only a Consul client agent. Runs when the lab's default stack is Consul
//! (ansible-free-scripts/build-go-tools.sh built it into the artifacts directory); otherwise
//! it reports itself skipped. The same running cluster then serves the day-2 scenarios of
//! `consul/day2.rs` (`pgctl config`, `restart --pending`, `pgctl user`, TLS for clients) and
//! of `consul/access.rs` (HAProxy, PgBouncer, the virtual IP) and `consul/monitoring.rs`
//! (Prometheus, Alertmanager, alerts from real outages), `consul/compose.rs` (compose export)
//! and `consul/prepare.rs` (prepare-host.sh).

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::time::{Duration, Instant};

#[path = "consul/access.rs"]
mod access;
#[path = "consul/compose.rs"]
mod compose;
#[path = "consul/day2.rs"]
mod day2;
#[path = "consul/monitoring.rs"]
mod monitoring;
#[path = "consul/prepare.rs"]
mod prepare;

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn consul_cluster_end_to_end() -> Result<()> {
    require_e2e("consul_cluster_end_to_end");
    let lab = Lab::up_default("pgctl-e2e-consul", "172.30.80.0/24")?;
    if lab.stack() != ("consul".to_string(), "walg".to_string()) {
        skipped(
            "consul_cluster_end_to_end",
            &format!(
                "the lab's default stack is {:?}: no consul and wal-g in {} (ansible-free-scripts/build-go-tools.sh builds them)",
                lab.stack(),
                artifacts_dir().display()
            ),
        );
        return Ok(());
    }
    let (app, _) = lab
        .app_hosts()
        .into_iter()
        .next()
        .context("the default lab has an application host")?;
    lab.pgctl_ok(&["up"])?;
    // Scenarios in order; PGCTL_CONSUL_SCENARIOS="tls access" runs only those (while working on
    // one: the later ones build on what the earlier ones leave, e.g. access needs tls).
    let wanted = |name: &str| std::env::var("PGCTL_CONSUL_SCENARIOS").map_or(true, |list| list.split([' ', ',']).any(|s| s == name));
    if wanted("consul") {
        consul_itself(&lab, &app)?;
    }
    if wanted("config") {
        day2::configuration_through_the_dcs(&lab)?;
    }
    if wanted("users") {
        day2::users_without_psql(&lab)?;
    }
    if wanted("tls") {
        day2::tls_for_clients(&lab)?;
    }
    if wanted("access") {
        access::haproxy_pgbouncer_and_vip(&lab)?;
    }
    if wanted("monitoring") {
        monitoring::alerts_from_real_outages(&lab)?;
    }
    if wanted("compose") {
        compose::exported_host_rejoins(&lab)?;
    }
    if wanted("prepare") {
        prepare::prepared_host_answers_over_mutual_tls(&lab)?;
    }
    // How long `pgctl status` takes on this lab (3 members, an application host, monitoring).
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let started = Instant::now();
            lab.pgctl_ok(&["status"]).map(|_| started.elapsed().as_secs_f64())
        })
        .collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    report(&format!(
        "MEASURED: pgctl status on 4 hosts: median {:.2} s (min {:.2}, max {:.2}) of 5",
        times[2], times[0], times[4]
    ));
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    Ok(())
}

/// Consul itself: the client agent on the application host, the service catalog, ACLs
/// (default deny), gossip encryption and DNS across a switchover.
fn consul_itself(lab: &Lab, app: &str) -> Result<()> {
    let app = app.to_string();
    // The application host runs the Consul client agent and nothing of the database.
    assert_eq!(
        lab.docker(&app, &["ps", "--format", "{{.Names}}"])?,
        "consul",
        "{app} runs only Consul"
    );
    let members = lab.docker(&lab.hosts()[0].0, &["exec", "consul", "consul", "members"])?;
    assert!(
        members
            .lines()
            .any(|l| l.starts_with(&app) && l.contains("alive") && l.contains("client")),
        "{app} joined as a client: {members}"
    );
    let status = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    let leader = status["leader"].as_str().context("a leader")?.to_string();
    let members = status["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), lab.hosts().len(), "one member per host: {status}");
    assert!(
        members.iter().filter(|m| m["role"] != "leader").all(|m| m["streaming"] == true),
        "every replica streams: {status}"
    );
    assert!(status["dcs"].as_str().unwrap().contains("leader elected"), "{status}");
    // register_service: the leader is what Consul serves as master.<scope>.service.consul.
    let started = Instant::now();
    loop {
        let catalog = lab.docker(
            &leader,
            &[
                "exec",
                "consul",
                "curl",
                "-s",
                "http://127.0.0.1:8500/v1/catalog/service/lab?tag=master",
            ],
        )?;
        if catalog.contains(&lab.address(&leader)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "master.lab.service.consul does not point at the leader: {catalog}"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // Consul denies by default. Without a token the KV store is closed (Patroni's leader key
    // above all), from an application host as from a server; Patroni's token reaches its own
    // scope's keys and nothing else; the management token (on the servers only) reads all.
    let leader_key = "/v1/kv/service/lab/leader?raw";
    assert_eq!(consul_http(lab, &app, "GET", leader_key, None)?.0, 403, "anonymous read from {app}");
    assert_eq!(
        consul_http(lab, &leader, "GET", leader_key, None)?.0,
        403,
        "anonymous read on {leader}"
    );
    let patroni = lab.secret("consul_patroni_token")?;
    assert_eq!(
        consul_http(lab, &app, "GET", leader_key, Some(&patroni))?,
        (200, leader.clone()),
        "Patroni's token reads the leader key"
    );
    assert_eq!(
        consul_http(lab, &app, "PUT", "/v1/kv/service/other-cluster/leader", Some(&patroni))?.0,
        403,
        "Patroni's token writes another scope's keys"
    );
    assert!(
        !lab.docker(&app, &["exec", "consul", "ls", "/etc/pgctl"])?.contains("management"),
        "the management token stays on the servers"
    );
    let management = lab.secret("consul_management_token")?;
    assert_eq!(
        consul_http(lab, &leader, "GET", leader_key, Some(&management))?,
        (200, leader.clone())
    );

    // Gossip is encrypted with the key from secrets: an agent without it cannot join, and the
    // same agent with the key can (so the check can tell the two apart).
    let key = lab.secret("consul_gossip_key")?;
    let wrong = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let (joined, log) = rogue_agent_joins(lab, &leader, "rogue-wrong-key", wrong, Duration::from_secs(20))?;
    assert!(!joined, "an agent with a wrong gossip key joined:\n{log}");
    let (joined, log) = rogue_agent_joins(lab, &leader, "rogue-right-key", &key, Duration::from_secs(60))?;
    assert!(joined, "an agent with the cluster's gossip key did not join:\n{log}");

    // DNS through the application host's local agent (port 8600), as clients resolve it:
    // master.lab.service.consul is the leader, before a switchover and, within seconds, after.
    let other = app;
    wait_for_dns(
        lab,
        &other,
        "master.lab.service.consul",
        &lab.address(&leader),
        Duration::from_secs(60),
    )?;
    lab.pgctl_ok(&["switchover", "--yes"])?;
    let switched = Instant::now();
    let new_leader = lab.leader()?;
    assert_ne!(new_leader, leader, "the switchover moved the leader");
    wait_for_dns(
        lab,
        &other,
        "master.lab.service.consul",
        &lab.address(&new_leader),
        Duration::from_secs(60),
    )?;
    report(&format!(
        "MEASURED: switchover -> master.lab.service.consul answers the new leader after {:.1}s (consul DNS, service_ttl 5s)",
        switched.elapsed().as_secs_f64()
    ));
    wait_for_dns(
        lab,
        &other,
        "replica.lab.service.consul",
        &lab.address(&leader),
        Duration::from_secs(60),
    )?;

    // A partitioned leader under writes (no acknowledged commit lost, the old leader rejoins):
    // consul/access.rs does it with the client writing through HAProxy.
    Ok(())
}

/// `method path` against `host`'s local Consul agent, with `token` if given (passed to the
/// exec's environment: a lab secret, in a test). The status and the body.
fn consul_http(lab: &Lab, host: &str, method: &str, path: &str, token: Option<&str>) -> Result<(u16, String)> {
    const CLIENT: &str = r#"
import os, sys, urllib.request, urllib.error
req = urllib.request.Request("http://127.0.0.1:8500" + sys.argv[2], method=sys.argv[1],
                             data=b"x" if sys.argv[1] == "PUT" else None)
if os.environ.get("TOKEN"):
    req.add_header("X-Consul-Token", os.environ["TOKEN"])
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
"#;
    let env = format!("TOKEN={}", token.unwrap_or_default());
    let out = lab.docker(host, &["exec", "-e", &env, "consul", "python3", "-c", CLIENT, method, path])?;
    let (code, body) = out.split_once(' ').unwrap_or((out.as_str(), ""));
    Ok((
        code.trim().parse().with_context(|| format!("HTTP status from {host}: {out}"))?,
        body.trim().to_string(),
    ))
}

/// Starts a Consul client agent `node` on `host` (its own ports, beside the cluster's agent,
/// no ACL token: gossip membership does not need one) with gossip key `key`; reports whether
/// the servers list it as alive within `wait`, and the agent's last log lines. The agent is
/// removed (and pruned from the member list) afterwards.
fn rogue_agent_joins(lab: &Lab, host: &str, node: &str, key: &str, wait: Duration) -> Result<(bool, String)> {
    // With the port: a bare address would mean the rogue's own serf port (18301).
    let servers: Vec<String> = lab.hosts().into_iter().map(|(_, a)| format!("{a}:8301")).collect();
    let hcl = format!("ports {{ serf_lan = 18301, http = 18500, dns = -1, grpc = -1, server = 18300 }} retry_join = {servers:?} retry_interval = \"3s\" encrypt = \"{key}\"");
    let image = lab.docker(host, &["inspect", "consul", "--format", "{{.Config.Image}}"])?;
    let address = lab.address(host);
    let data_dir = format!("/tmp/{node}");
    let _ = lab.docker(host, &["rm", "-f", node]);
    lab.docker(
        host,
        &[
            "run",
            "-d",
            "--name",
            node,
            "--network",
            "host",
            "--entrypoint",
            "consul",
            image.trim(),
            "agent",
            "-node",
            node,
            "-data-dir",
            &data_dir,
            "-bind",
            &address,
            "-client",
            "127.0.0.1",
            "-hcl",
            &hcl,
        ],
    )?;
    let started = Instant::now();
    let mut joined = false;
    while started.elapsed() < wait {
        let members = lab.docker(host, &["exec", "consul", "consul", "members"])?;
        if members
            .lines()
            .any(|l| l.split_whitespace().next() == Some(node) && l.contains(" alive "))
        {
            joined = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let log = lab.docker(host, &["logs", "--tail", "15", node]).unwrap_or_default();
    lab.docker(host, &["rm", "-f", node])?;
    let management = "CONSUL_HTTP_TOKEN_FILE=/etc/pgctl/consul-management.token";
    let _ = lab.docker(host, &["exec", "-e", management, "consul", "consul", "force-leave", "-prune", node]);
    Ok((joined, log))
}

/// A-record addresses of `name` from `host`'s Consul agent (DNS on 127.0.0.1:8600), with a
/// minimal DNS client in the image's Python (the image has no dig).
fn resolve(lab: &Lab, host: &str, name: &str) -> Result<Vec<String>> {
    const CLIENT: &str = r#"
import socket, struct, sys
name = sys.argv[1]
q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(q, ("127.0.0.1", 8600))
r = s.recv(4096)
answers = struct.unpack(">H", r[6:8])[0]
i = len(q)
for _ in range(answers):
    if r[i] & 0xC0 == 0xC0:
        i += 2
    else:
        while r[i]:
            i += r[i] + 1
        i += 1
    rtype, _, _, size = struct.unpack(">HHIH", r[i:i + 10])
    i += 10
    if rtype == 1:
        print(socket.inet_ntoa(r[i:i + size]))
    i += size
"#;
    let out = lab.docker(host, &["exec", "consul", "python3", "-c", CLIENT, name])?;
    Ok(out.lines().map(str::to_string).collect())
}

fn wait_for_dns(lab: &Lab, host: &str, name: &str, address: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let answers = resolve(lab, host, name).unwrap_or_default();
        if answers.iter().any(|a| a == address) && (!name.starts_with("master.") || answers.len() == 1) {
            return Ok(());
        }
        anyhow::ensure!(started.elapsed() < timeout, "{name} from {host} answers {answers:?}, not {address}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
