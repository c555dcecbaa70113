//! `pgctl compose export` on the running Consul lab: docker-compose accepts every host's file,
//! and a replica whose containers are replaced by `docker-compose up -d` from its export rejoins
//! as a streaming replica that `pgctl up` then keeps as its own.

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// docker-compose against `host`'s engine (mutual TLS, the lab's client certificate).
fn compose(lab: &Lab, host: &str, args: &[&str]) -> Result<String> {
    // docker-compose's HTTP library prefers REQUESTS_CA_BUNDLE (set on some machines) over
    // DOCKER_CERT_PATH's CA: without removing it the lab CA is never used.
    let out = Command::new("docker-compose")
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env("DOCKER_HOST", format!("tcp://{}:2376", lab.address(host)))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", lab.dir.join("certs").join(host))
        .args(args)
        .output()
        .context("running docker-compose (ansible-free-scripts/install-deps.sh installs it)")?;
    anyhow::ensure!(
        out.status.success(),
        "docker-compose {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

pub fn exported_host_rejoins(lab: &Lab) -> Result<()> {
    let export_root = lab.work.join("compose");
    let mut all: Vec<String> = lab.hosts().into_iter().map(|(h, _)| h).collect();
    all.extend(lab.app_hosts().into_iter().map(|(h, _)| h));
    for host in &all {
        let dir = export_root.join(host);
        let d = dir.to_str().context("a UTF-8 path")?;
        lab.pgctl_ok(&["compose", "export", "--host", host, "--dir", d])?;
        let file = dir.join("docker-compose.yml");
        let f = file.to_str().context("a UTF-8 path")?;
        let services = compose(lab, host, &["-f", f, "config", "--services"])?;
        let running = lab.docker(host, &["ps", "--format", "{{.Names}}", "--filter", "label=io.pgctl.cluster"])?;
        let mut a: Vec<&str> = services.lines().collect();
        let mut b: Vec<&str> = running.lines().collect();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{host}: the export has a service per running container");
    }

    // A replica handed over to compose: pgctl's Patroni container goes (its volume stays), the
    // exported one starts from files copied to the host as they are (owner and mode kept).
    let leader = lab.leader()?;
    let replica = lab.host_other_than(&leader)?;
    let dir = export_root.join(&replica);
    let d = dir.to_str().context("a UTF-8 path")?;
    let container = lab.container(&replica);
    docker_local(&["exec", &container, "mkdir", "-p", export_root.to_str().unwrap()])?;
    docker_local(&["cp", "-a", d, &format!("{container}:{}", export_root.display())])?;
    lab.docker(&replica, &["rm", "-f", "patroni"])?;
    let f = dir.join("docker-compose.yml");
    let started = Instant::now();
    compose(
        lab,
        &replica,
        &["-f", f.to_str().unwrap(), "-p", "pgctl", "up", "-d", "--no-deps", "patroni"],
    )?;
    lab.sql(&leader, "CREATE TABLE via_compose AS SELECT 42 AS answer")?;
    loop {
        if lab.sql(&replica, "SELECT answer FROM via_compose").is_ok_and(|a| a == "42") {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "{replica} did not replay the leader's write"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert!(
        s["members"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == replica.as_str() && m["streaming"] == true),
        "{replica} streams again: {s}"
    );
    report(&format!(
        "MEASURED: {replica}'s Patroni replaced by `docker-compose up -d` from its export: streaming and replaying after {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let up = lab.pgctl_ok(&["up"])?.stderr;
    assert!(
        !up.contains(&format!("{replica}: creating")) && !up.contains(&format!("{replica}: configuration")),
        "pgctl keeps the container compose made:\n{up}"
    );
    Ok(())
}
