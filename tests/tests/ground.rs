//! End-to-end through the pgctl binary: lab up -> image build --source debian -> image push ->
//! same image ID on every host -> second push transfers nothing -> an image one layer above it
//! sends that layer only (all layers to a host without the base) -> a client certificate from
//! another CA is refused clearly -> an unreachable host is named -> lab down leaves nothing.
//! Also: a malformed hosts.toml or secrets.toml is bad configuration (exit 2).

use anyhow::Result;
use pgctl_tests::*;
use std::path::Path;

const LAB: &str = "pgctl-e2e";
const SUBNET: &str = "172.30.78.0/24";
const IMAGE: &str = "pgctl/postgres:15-debian";

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn lab_image_build_and_registry_free_delivery() -> Result<()> {
    require_e2e("lab_image_build_and_registry_free_delivery");
    let work = workdir("ground");
    let lab_dir = work.join("lab");
    let lab = lab_dir.to_str().unwrap();
    let result = scenario(&work, &lab_dir);
    // Clean up whatever happened, then check that nothing of the lab is left.
    let down = pgctl(&work, &["lab", "down", "--name", LAB, "--dir", lab]);
    result?;
    assert!(down.ok, "lab down failed: {}", down.stderr);
    let label = format!("label=io.pgctl.lab={LAB}");
    assert_eq!(docker_local(&["ps", "-aq", "--filter", &label])?, "", "containers left behind");
    assert_eq!(
        docker_local(&["volume", "ls", "-q", "--filter", &label])?,
        "",
        "volumes left behind"
    );
    assert_eq!(
        docker_local(&["network", "ls", "-q", "--filter", &label])?,
        "",
        "networks left behind"
    );
    assert!(!lab_dir.exists(), "lab directory left behind");
    Ok(())
}

fn scenario(work: &Path, lab_dir: &Path) -> Result<()> {
    let lab = lab_dir.to_str().unwrap();
    let hosts_toml = lab_dir.join("hosts.toml");
    let hosts_arg = hosts_toml.to_str().unwrap();

    pgctl_ok(
        work,
        &["lab", "up", "--name", LAB, "--dir", lab, "--subnet", SUBNET, "--count", "3"],
    )?;
    // Re-running completes nothing new and succeeds (idempotent).
    pgctl_ok(
        work,
        &["lab", "up", "--name", LAB, "--dir", lab, "--subnet", SUBNET, "--count", "3"],
    )?;
    let status = pgctl_ok(work, &["lab", "status", "--name", LAB, "--dir", lab, "--output", "json"])?.json()?;
    let hosts = status["hosts"].as_array().unwrap();
    let in_toml = hosts_of(&hosts_toml)?;
    // Three database hosts, plus the application host a Consul lab (the default when the
    // artifacts have Consul) adds.
    let db_hosts = hosts_with(&hosts_toml, |roles| roles.contains(&"patroni"))?;
    assert_eq!(db_hosts.len(), 3, "{in_toml:?}");
    let apps = if stack_of(&hosts_toml)?.0 == "consul" { 1 } else { 0 };
    assert_eq!(in_toml.len(), 3 + apps, "{in_toml:?}");
    assert_eq!(hosts.len(), in_toml.len(), "{status}");
    for h in hosts {
        assert_eq!(h["state"], "running", "{h}");
        assert!(
            in_toml.iter().any(|(n, a)| h["name"] == n.as_str() && h["address"] == a.as_str()),
            "lab status and hosts.toml agree on the host's address: {h} vs {in_toml:?}"
        );
        assert!(
            h["engine"].as_str().unwrap().contains("API 1.41"),
            "engine reachable over mutual TLS: {h}"
        );
    }
    assert!(
        status["s3"].as_str().unwrap().contains("answers"),
        "S3 answers HTTPS with the lab CA: {}",
        status["s3"]
    );
    pgctl_ok(work, &["check", "--hosts", hosts_arg])?;
    malformed_configuration_is_exit_2(work, lab_dir)?;

    // Build offline from Debian packages; the image records what it contains.
    let built = pgctl_ok(work, &[BUILD_DEBIAN, &["--hosts", hosts_arg, "--output", "json"]].concat())?.json()?;
    assert_eq!(built["tag"], IMAGE);
    let local_id = built["id"].as_str().unwrap().to_string();
    let manifest = &built["manifest"];
    assert!(manifest["postgres"].as_str().unwrap().starts_with("15."), "{manifest}");
    for component in ["postgis", "patroni", "pgbackrest", "etcd"] {
        assert!(
            !manifest[component].as_str().unwrap_or_default().is_empty(),
            "{component} missing: {manifest}"
        );
    }
    assert_eq!(manifest["timescaledb"], "", "left out explicitly");
    let labels = docker_local(&[
        "image",
        "inspect",
        IMAGE,
        "--format",
        "{{index .Config.Labels \"io.pgctl.manifest.patroni\"}}",
    ])?;
    assert_eq!(labels, manifest["patroni"].as_str().unwrap());
    let listed = pgctl_ok(work, &["image", "list", "--output", "json"])?.json()?;
    assert!(
        listed.as_array().unwrap().iter().any(|i| i["id"] == local_id.as_str()),
        "image list shows the build"
    );

    // Deliver without a registry: every host ends with the same image ID.
    let pushed = pgctl_ok(work, &["image", "push", "--hosts", hosts_arg, "--output", "json"])?.json()?;
    let pushed = pushed.as_array().unwrap();
    assert_eq!(pushed.len(), in_toml.len(), "one outcome per host: {pushed:?}");
    for o in pushed {
        assert_ne!(o["result"], "failed", "{o}");
    }
    for (name, address) in hosts_of(&hosts_toml)? {
        let id = docker_on(lab_dir, &name, &address, &["image", "inspect", IMAGE, "--format", "{{.Id}}"])?;
        assert_eq!(id, local_id, "{name} has the same image ID");
    }

    // Second push: nothing transferred.
    let again = pgctl_ok(work, &["image", "push", "--hosts", hosts_arg, "--output", "json"])?.json()?;
    let again = again.as_array().unwrap();
    assert_eq!(again.len(), in_toml.len(), "one outcome per host: {again:?}");
    for o in again {
        assert_eq!(o["result"], "present", "{o}");
        assert_eq!(o["bytes"], 0, "{o}");
    }

    layers_a_host_has_are_not_sent(work, lab_dir, &local_id)?;
    rogue_client_certificate_is_refused(work, lab_dir)?;
    unreachable_host_is_named(work, lab_dir)?;
    Ok(())
}

/// An image built above the cluster's (one more layer): a host with the cluster's image is
/// sent that layer only, a host without it every layer, from the same export; each ends with
/// the exact image and runs it. The cluster's image then goes back to that host at no cost
/// (its layers are all there).
fn layers_a_host_has_are_not_sent(work: &Path, lab_dir: &Path, base_id: &str) -> Result<()> {
    const NEXT: &str = "pgctl/postgres:ground-next";
    let hosts_toml = lab_dir.join("hosts.toml");
    let hosts_arg = hosts_toml.to_str().unwrap();
    let hosts = hosts_of(&hosts_toml)?;
    let context = work.join("next-image");
    std::fs::create_dir_all(&context)?;
    std::fs::write(context.join("Dockerfile"), format!("FROM {IMAGE}\nRUN echo next > /pgctl-next\n"))?;
    docker_local(&["build", "-q", "-t", NEXT, context.to_str().unwrap()])?;
    let next_id = docker_local(&["image", "inspect", NEXT, "--format", "{{.Id}}"])?;
    let size: u64 = docker_local(&["image", "inspect", IMAGE, "--format", "{{.Size}}"])?.parse()?;
    let (bare, bare_address) = hosts.last().unwrap().clone();
    docker_on(lab_dir, &bare, &bare_address, &["image", "rm", IMAGE])?;

    let pushed = pgctl_ok(work, &["image", "push", "--hosts", hosts_arg, "--image", NEXT, "--output", "json"])?.json()?;
    for o in pushed.as_array().unwrap() {
        assert_eq!(o["result"], "transferred", "{o}");
        let sent = o["bytes"].as_u64().unwrap();
        if o["host"] == bare.as_str() {
            assert!(
                sent > size / 2,
                "{bare} lacks every layer: all are sent ({sent} of {size} bytes): {o}"
            );
        } else {
            assert!(
                sent < 5 << 20,
                "only the new layer is sent to a host with the base ({sent} bytes): {o}"
            );
        }
    }
    for (name, address) in &hosts {
        let id = docker_on(lab_dir, name, address, &["image", "inspect", NEXT, "--format", "{{.Id}}"])?;
        assert_eq!(id, next_id, "{name} has the exact image");
    }
    let ran = docker_on(lab_dir, &bare, &bare_address, &["run", "--rm", NEXT, "cat", "/pgctl-next"])?;
    assert_eq!(ran, "next");

    let back = pgctl_ok(work, &["image", "push", "--hosts", hosts_arg, "--output", "json"])?.json()?;
    let back = back
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["host"] == bare.as_str())
        .unwrap()
        .clone();
    assert_eq!(back["result"], "transferred", "{back}");
    assert!(back["bytes"].as_u64().unwrap() < 5 << 20, "its layers were there: {back}");
    let id = docker_on(lab_dir, &bare, &bare_address, &["image", "inspect", IMAGE, "--format", "{{.Id}}"])?;
    assert_eq!(id, base_id);
    for (name, address) in &hosts {
        docker_on(lab_dir, name, address, &["image", "rm", NEXT])?;
    }
    docker_local(&["image", "rm", NEXT])?;
    Ok(())
}

/// A client certificate signed by another CA: the engines refuse it, and pgctl says so per host.
fn rogue_client_certificate_is_refused(work: &Path, lab_dir: &Path) -> Result<()> {
    let rogue = work.join("rogue");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "rogue CA");
    let ca_key = rcgen::KeyPair::generate()?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let mut client_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = rcgen::KeyPair::generate()?;
    let client = client_params.signed_by(&client_key, &issuer)?;
    std::fs::create_dir_all(&rogue)?;
    // The engine's CA is still trusted (so only the client side is wrong).
    std::fs::copy(lab_dir.join("ca.pem"), rogue.join("ca.pem"))?;
    std::fs::write(rogue.join("cert.pem"), client.pem())?;
    std::fs::write(rogue.join("key.pem"), client_key.serialize_pem())?;

    let hosts = std::fs::read_to_string(lab_dir.join("hosts.toml"))?;
    let rogue_hosts = with_tls_dir(&hosts, rogue.to_str().unwrap());
    let rogue_toml = work.join("rogue-hosts.toml");
    std::fs::write(&rogue_toml, rogue_hosts)?;
    // The rest of the configuration (secrets, S3 CA) is the lab's own.
    std::fs::copy(lab_dir.join("secrets.toml"), work.join("secrets.toml"))?;
    std::fs::copy(lab_dir.join("ca.pem"), work.join("ca.pem"))?;
    let run = pgctl(work, &["image", "push", "--hosts", rogue_toml.to_str().unwrap()]);
    assert!(!run.ok, "a rogue client certificate must not be accepted");
    let rogue_hosts = hosts_of(&rogue_toml)?;
    assert!(rogue_hosts.len() >= 3, "{rogue_hosts:?}");
    assert!(
        std::fs::read_to_string(&rogue_toml)?
            .matches(&format!("tls_dir = \"{}\"", rogue.display()))
            .count()
            == rogue_hosts.len(),
        "every host uses the rogue certificate"
    );
    for (name, _) in rogue_hosts {
        let line = run.stderr.lines().find(|l| l.contains(&format!("{name}:"))).unwrap_or_default();
        assert!(line.contains("TLS refused"), "{name}: clear TLS error expected, got: {line}");
    }
    Ok(())
}

fn with_tls_dir(hosts: &str, dir: &str) -> String {
    hosts
        .lines()
        .map(|l| {
            if l.starts_with("tls_dir") {
                format!("tls_dir = \"{dir}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One host stopped: a multi-host command names it (endpoint and cause) and fails.
fn unreachable_host_is_named(work: &Path, lab_dir: &Path) -> Result<()> {
    let hosts_toml = lab_dir.join("hosts.toml");
    docker_local(&["stop", "-t", "2", &format!("{LAB}-host2")])?;
    let run = pgctl(
        work,
        &["image", "push", "--hosts", hosts_toml.to_str().unwrap(), "--output", "json"],
    );
    docker_local(&["start", &format!("{LAB}-host2")])?;
    assert!(!run.ok, "push must fail when a host is down");
    let outcomes = run.json()?;
    let outcomes = outcomes.as_array().unwrap();
    let n = hosts_of(&hosts_toml)?.len();
    assert_eq!(outcomes.len(), n, "one outcome per host: {outcomes:?}");
    let host2 = outcomes.iter().find(|o| o["host"] == "host2").unwrap();
    assert_eq!(host2["result"], "failed");
    let error = host2["error"].as_str().unwrap();
    let address = hosts_of(&hosts_toml)?.into_iter().find(|(n, _)| n == "host2").unwrap().1;
    assert!(error.contains(&format!("tcp://{address}:2376")), "names the endpoint: {error}");
    // The other hosts were still served (one failure does not stop the others).
    assert_eq!(outcomes.iter().filter(|o| o["result"] == "present").count(), n - 1, "{outcomes:?}");
    assert!(
        run.stderr.contains(&format!("not delivered to 1 of {n} host(s): host2")),
        "{}",
        run.stderr
    );
    Ok(())
}

/// A hosts.toml that is not TOML, one with a value that is not allowed, and a secrets.toml that
/// is not TOML: `check` says which file is wrong and exits 2 (bad configuration), and so does
/// a command that would touch hosts (`up`), before touching any.
fn malformed_configuration_is_exit_2(work: &Path, lab_dir: &Path) -> Result<()> {
    let hosts = std::fs::read_to_string(lab_dir.join("hosts.toml"))?;
    // Beside the lab's hosts.toml, so its relative paths (certificates, secrets.toml) resolve.
    let not_toml = lab_dir.join("hosts-not-toml.toml");
    std::fs::write(&not_toml, format!("{hosts}\n[[host]\nname = \"broken\"\n"))?;
    let bad_value = lab_dir.join("hosts-bad-value.toml");
    std::fs::write(&bad_value, edited(&hosts, &[("dcs = \"", "dcs = \"zookeeper-")])?)?;
    for file in [&not_toml, &bad_value] {
        let path = file.to_str().unwrap();
        for command in [&["check"][..], &["up"][..]] {
            let run = pgctl(work, &[command, &["--hosts", path]].concat());
            run.assert_code(exit::CONFIG, &format!("{} with {path}", command[0]));
            let name = file.file_name().unwrap().to_str().unwrap();
            assert!(run.stderr.contains(name), "the error names the file {name}: {}", run.stderr);
        }
    }
    let secrets = work.join("secrets-not-toml.toml");
    std::fs::write(&secrets, "superuser_password = \"unterminated\n")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))?;
    let hosts_arg = lab_dir.join("hosts.toml");
    let run = pgctl(
        work,
        &[
            "check",
            "--hosts",
            hosts_arg.to_str().unwrap(),
            "--secrets",
            secrets.to_str().unwrap(),
        ],
    );
    run.assert_code(exit::CONFIG, "check with a secrets.toml that is not TOML");
    assert!(
        run.stderr.contains("secrets-not-toml.toml"),
        "the error names the secrets file: {}",
        run.stderr
    );
    Ok(())
}
