//! `pgctl upgrade --image` on the cluster test's lab (part of the cluster test file): images
//! derived from the lab's image on this machine's engine, delivered with `pgctl image push`.

use super::*;

const NEXT: &str = "pgctl/postgres:15-debian-next";
const BROKEN: &str = "pgctl/postgres:15-debian-broken";

/// Builds `tag` on this machine's engine from the lab's image plus `steps` (Dockerfile lines).
fn derive_image(base: &str, tag: &str, steps: &str) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("pgctl-derive-{}", tag.replace([':', '/'], "-")));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("Dockerfile"), format!("FROM {base}\n{steps}\n"))?;
    let out = std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args(["build", "-q", "-t", tag])
        .arg(&dir)
        .output()?;
    anyhow::ensure!(out.status.success(), "docker build {tag}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// (host, image ID of its Patroni container) for every database host.
fn patroni_images(lab: &Lab) -> Result<Vec<(String, String)>> {
    lab.hosts()
        .into_iter()
        .map(|(h, _)| Ok((h.clone(), lab.docker(&h, &["inspect", "-f", "{{.Image}}", "patroni"])?)))
        .collect()
}

fn image_id_on(lab: &Lab, host: &str, image: &str) -> Result<String> {
    lab.docker(host, &["image", "inspect", "-f", "{{.Id}}", image])
}

fn hosts_image(lab: &Lab) -> Result<String> {
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(lab.hosts_toml())?)?;
    Ok(v["cluster"]["image"].as_str().unwrap_or_default().to_string())
}

/// A refused image, an image whose Patroni does not start (its host goes back, nothing else
/// is touched), then the rolling upgrade under a client writing: no acknowledged write lost,
/// every host on the new image, the old extension version updated, `up` afterwards a no-op.
pub fn rolling_image_upgrade(lab: &Lab) -> Result<()> {
    let old_image = hosts_image(lab)?;
    derive_image(
        &old_image,
        NEXT,
        "LABEL io.pgctl.test.generation=next\nRUN echo next > /etc/pgctl-generation",
    )?;
    derive_image(
        &old_image,
        BROKEN,
        "RUN p=$(command -v patroni) && printf '#!/bin/sh\\necho this patroni is broken >&2\\nexit 1\\n' > \"$p\"",
    )?;
    for tag in [NEXT, BROKEN] {
        lab.pgctl_ok(&["image", "push", "--image", tag])?;
    }
    let before = patroni_images(lab)?;
    let old_id = image_id_on(lab, &before[0].0, &old_image)?;
    assert!(before.iter().all(|(_, id)| *id == old_id), "{before:?}");

    // Not delivered: refused, nothing changes.
    let missing = lab.pgctl(&["--yes", "upgrade", "--image", "pgctl/postgres:not-delivered"]);
    missing.assert_code(exit::REFUSED, "upgrade to an image no host has");
    assert!(missing.stderr.contains("image push"), "{}", missing.stderr);

    // Patroni does not start on the image: the first host goes back, hosts.toml too.
    let leader_before = lab.leader()?;
    let broken = lab.pgctl(&["--yes", "upgrade", "--image", BROKEN, "--timeout", "60"]);
    broken.assert_code(exit::FAILED, "upgrade to an image whose Patroni exits");
    assert!(
        broken.stderr.contains("back on") && broken.stderr.contains("run the same command again"),
        "{}",
        broken.stderr
    );
    assert_eq!(hosts_image(lab)?, old_image, "hosts.toml after the stopped upgrade");
    assert_eq!(patroni_images(lab)?, before, "every host is on the old image again");
    assert_eq!(lab.leader()?, leader_before, "the stopped upgrade moved the leader");
    let s = lab.pgctl_ok(&["status", "--output", "json"])?.json()?;
    assert_eq!(s["members"].as_array().map(Vec::len), Some(3), "{s}");

    // An extension behind the image's default version, for the last step to update.
    lab.sql(&leader_before, "CREATE EXTENSION hstore VERSION '1.7'")?;
    let default = lab.sql(
        &leader_before,
        "SELECT default_version FROM pg_available_extensions WHERE name = 'hstore'",
    )?;
    assert_ne!(default, "1.7");

    let started = Instant::now();
    let (rolled, writes) = lab.writing_during("upgrade_load", || {
        lab.pgctl_ok(&["--yes", "--output", "json", "upgrade", "--image", NEXT])?.json()
    })?;
    report(&format!(
        "MEASURED: upgrade --image on 3 members (+{} app host(s)): {:.1} s, switchover {} s; a client wrote {} rows, longest gap between two acknowledged writes {:.1} s",
        lab.app_hosts().len(),
        started.elapsed().as_secs_f64(),
        rolled["switchover"]["seconds"],
        writes.acked.len(),
        writes.longest_gap.as_secs_f64()
    ));
    let leader = lab.leader()?;
    assert_ne!(leader, leader_before, "the leader's host went last, after a switchover");
    assert!(!writes.acked.is_empty());
    assert_eq!(lab.lost_writes(&leader, "upgrade_load", &writes)?, Vec::<i64>::new());
    for (h, id) in patroni_images(lab)? {
        assert_eq!(id, image_id_on(lab, &h, NEXT)?, "{h} runs the new image");
        let tags = lab.docker(&h, &["exec", "patroni", "curl", "-s", "http://localhost:8008/patroni"])?;
        assert!(!tags.contains("\"nofailover\": true"), "{h} kept the nofailover tag: {tags}");
        assert_eq!(lab.docker(&h, &["exec", "patroni", "cat", "/etc/pgctl-generation"])?, "next");
    }
    assert_eq!(hosts_image(lab)?, NEXT, "hosts.toml names the new image");
    assert_eq!(
        lab.sql(&leader, "SELECT extversion FROM pg_extension WHERE extname = 'hstore'")?,
        default,
        "the extension was updated"
    );

    // Done: a re-run has nothing to do, and `up` recreates nothing.
    let ids = |lab: &Lab| -> Result<Vec<String>> {
        lab.hosts()
            .iter()
            .map(|(h, _)| lab.docker(h, &["ps", "-q", "--no-trunc", "--filter", "label=io.pgctl.cluster"]))
            .collect()
    };
    let containers = ids(lab)?;
    let again = lab.pgctl_ok(&["--yes", "upgrade", "--image", NEXT])?;
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    lab.pgctl_ok(&["up"])?;
    assert_eq!(ids(lab)?, containers, "up after the upgrade recreated containers");
    Ok(())
}
