//! ansible-free-scripts/prepare-host.sh on a fresh host of the lab network: a container from the
//! lab's host image whose dockerd listens on its unix socket only, as a freshly installed host.
//! Over the network pgctl cannot reach it before the script and can after it (mutual TLS with
//! the certificates `pgctl init --host-certs` wrote); a client without them is refused; the
//! cluster's names are in its /etc/hosts; a second run restarts nothing.

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::time::{Duration, Instant};

pub fn prepared_host_answers_over_mutual_tls(lab: &Lab) -> Result<()> {
    let (first, address) = lab.hosts().into_iter().next().context("a database host")?;
    let image = docker_local(&["inspect", &lab.container(&first), "--format", "{{.Config.Image}}"])?;
    let ip = format!("{}.30", address.rsplit_once('.').context("an IPv4 address")?.0);
    let name = format!("{}-prepared", lab.name);
    let volume = format!("{name}-docker");
    let _ = docker_local(&["rm", "-f", &name]);
    docker_local(&[
        "run",
        "-d",
        "--name",
        &name,
        "--hostname",
        "prepared",
        "--network",
        &lab.name,
        "--ip",
        &ip,
        "--cap-add",
        "ALL",
        "--cap-drop",
        "SYS_RESOURCE",
        "--security-opt",
        "seccomp=unconfined",
        "--security-opt",
        "apparmor=unconfined",
        "--device-cgroup-rule",
        "a *:* rwm",
        "-v",
        "/sys/fs/cgroup:/sys/fs/cgroup:rw",
        "-v",
        &format!("{volume}:/var/lib/docker"),
        "--label",
        &format!("io.pgctl.lab={}", lab.name),
        "--entrypoint",
        "/usr/bin/tini",
        image.trim(),
        "--",
        "sh",
        "-c",
        "dockerd --host=unix:///var/run/docker.sock >/var/log/dockerd.log 2>&1 & exec sleep infinity",
    ])?;
    let result = check(lab, &name, &ip);
    let _ = docker_local(&["rm", "-f", &name]);
    let _ = docker_local(&["volume", "rm", &volume]);
    result
}

fn check(lab: &Lab, name: &str, ip: &str) -> Result<()> {
    let started = Instant::now();
    while docker_local(&["exec", name, "docker", "info"]).is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the plain dockerd did not start");
        std::thread::sleep(Duration::from_secs(1));
    }
    // A cluster of this one host, written by pgctl init; the host with its tls_dir.
    let dir = lab.work.join("prepared");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    pgctl_ok(&dir, &["init", "--name", "prep"])?;
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "[cluster]\nname = \"prep\"\npostgres_major = 15\nimage = \"pgctl/postgres:15\"\ndcs = \"etcd\"\n\n\
             [[host]]\nname = \"prepared\"\nendpoint = \"tcp://{ip}:2376\"\naddress = \"{ip}\"\nroles = [\"etcd\", \"patroni\"]\ntls_dir = \"certs/prepared\"\n"
        ),
    )?;
    pgctl_ok(&dir, &["init", "--host-certs", "prepared"])?;
    let before = pgctl(&dir, &["check", "--online"]);
    assert!(!before.ok, "a plain engine must not answer over mutual TLS before the script");
    let server = dir.join("certs/prepared/server");
    docker_local(&["cp", server.to_str().unwrap(), &format!("{name}:/tmp/pgctl-server")])?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ansible-free-scripts/prepare-host.sh");
    docker_local(&["cp", script.to_str().unwrap(), &format!("{name}:/usr/local/bin/prepare-host.sh")])?;
    docker_local(&["exec", name, "prepare-host.sh", "--certs", "/tmp/pgctl-server"])?;
    let after = pgctl(&dir, &["check", "--online"]);
    assert!(
        after.ok,
        "pgctl reaches the prepared host over mutual TLS:\n{}{}",
        after.stdout, after.stderr
    );
    // The same port refuses a TLS client without a certificate of the engines' CA (curl, so the
    // refusal is the server's), and answers the same request with pgctl's client certificate.
    let url = format!("https://{ip}:2376/version");
    let curl = |args: &[&str]| {
        std::process::Command::new("curl")
            .args(["-s", "--max-time", "10"])
            .args(args)
            .arg(&url)
            .output()
    };
    assert!(!curl(&["-k"])?.status.success(), "a client without a certificate was let in");
    let client = dir.join("certs/prepared");
    let with_cert = curl(&[
        "--cacert",
        client.join("ca.pem").to_str().unwrap(),
        "--cert",
        client.join("cert.pem").to_str().unwrap(),
        "--key",
        client.join("key.pem").to_str().unwrap(),
    ])?;
    assert!(with_cert.status.success(), "pgctl's client certificate is accepted: {with_cert:?}");
    let hosts = docker_local(&["exec", name, "cat", "/etc/hosts"])?;
    assert!(hosts.contains(&format!("{ip} prepared")), "/etc/hosts: {hosts}");
    let again = docker_local(&["exec", name, "prepare-host.sh", "--certs", "/tmp/pgctl-server"])?;
    assert!(again.contains("nothing restarted"), "a second run restarts nothing: {again}");
    report("MEASURED: prepare-host.sh turned a plain engine into one pgctl reaches over mutual TLS (refused before, and without a client certificate)");
    Ok(())
}
