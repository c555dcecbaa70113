//! Consul as the DCS, end to end: runs only when a Consul binary is supplied
//! (PGCTL_CONSUL_BIN=/path/to/consul), because Consul cannot be obtained on this workplace's
//! machines (not in Debian, not on PyPI, no internet). Otherwise it reports itself skipped.
//! Its configuration is covered without the binary by golden tests and by Patroni's own
//! validator (tests/cluster.rs).

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::time::{Duration, Instant};

#[test]
fn consul_cluster_end_to_end() -> Result<()> {
    if !e2e_enabled("consul_cluster_end_to_end") {
        return Ok(());
    }
    let Some(consul) = std::env::var_os("PGCTL_CONSUL_BIN") else {
        skipped(
            "consul_cluster_end_to_end",
            "no Consul binary here (set PGCTL_CONSUL_BIN=/path/to/consul to run it)",
        );
        return Ok(());
    };
    let lab = Lab::up("pgctl-e2e-consul", "172.30.80.0/24")?;
    let tag = "pgctl/postgres:15-consul";
    lab.build_with(&[("consul", consul.as_ref())], "timescaledb,walg", tag)?;
    let hosts = std::fs::read_to_string(lab.hosts_toml())?
        .replace("dcs = \"etcd\"", "dcs = \"consul\"")
        .replace("\"etcd\", \"patroni\"", "\"consul-server\", \"patroni\"")
        .replace("pgctl/postgres:15-debian", tag);
    std::fs::write(lab.hosts_toml(), hosts)?;
    lab.pgctl_ok(&["up"])?;
    let status = lab.pgctl_ok(&["status", "--json"])?.json()?;
    let leader = status["leader"].as_str().context("a leader")?.to_string();
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
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    Ok(())
}
