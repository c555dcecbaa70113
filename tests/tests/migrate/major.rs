//! `pgctl upgrade --pg-major 17` of the PostgreSQL 15 cluster the volume migration made (part
//! of the migrate test file: it runs on that cluster, with its PostGIS data).

use super::volume::GIS_FINGERPRINT;
use super::*;

pub const PG17_IMAGE: &str = "pgctl/postgres:17-debian-trixie";

/// The running PostgreSQL 15 cluster (PostGIS table `places` in gisdb, `fingerprint` of it)
/// goes to 17 under a client writing: every acknowledged row and geometry survives on every
/// member, PostGIS is updated, the new archive's first backup restores (`verify-backup`), and
/// the replicas' old volumes are kept. hosts.toml is put back afterwards for the next phases.
pub fn upgrade_to_17(lab: &Lab, fingerprint: &str) -> Result<()> {
    let started = Instant::now();
    let mut build = vec!["image", "build", "--source", "debian", "--suite", "trixie", "--tag", PG17_IMAGE];
    let artifacts = artifacts_dir();
    build.extend(["--artifacts", artifacts.to_str().unwrap(), "--without", "timescaledb"]);
    lab.pgctl_ok(&build)?;
    lab.pgctl_ok(&["image", "push", "--image", PG17_IMAGE])?;
    report(&format!(
        "MEASURED: PostgreSQL 17 image (Debian trixie) built and delivered to 3 hosts: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let before_toml = std::fs::read_to_string(lab.hosts_toml())?;
    let down = lab.pgctl(&["--yes", "upgrade", "--pg-major", "13", "--image", PG17_IMAGE]);
    down.assert_code(exit::CONFIG, "upgrade to an older major");
    let wrong = lab.pgctl(&["--yes", "upgrade", "--pg-major", "16", "--image", PG17_IMAGE]);
    wrong.assert_code(exit::REFUSED, "an image without the requested major");
    assert_eq!(
        std::fs::read_to_string(lab.hosts_toml())?,
        before_toml,
        "a refused upgrade changed hosts.toml"
    );

    let started = Instant::now();
    let (upgraded, writes) = lab.writing_during("upgrade17_load", || {
        lab.pgctl_ok(&["--yes", "--output", "json", "upgrade", "--pg-major", "17", "--image", PG17_IMAGE])?
            .json()
    })?;
    report(&format!(
        "MEASURED: upgrade --pg-major 15 -> 17 (pg_upgrade --link, 3 members, 20,000 PostGIS rows): {:.1} s, downtime {} s; phases: {}; a client wrote {} rows, longest gap between two acknowledged writes {:.1} s",
        started.elapsed().as_secs_f64(),
        upgraded["downtime_seconds"],
        upgraded["phases"],
        writes.acked.len(),
        writes.longest_gap.as_secs_f64()
    ));
    let leader = lab.leader()?;
    assert!(!writes.acked.is_empty());
    assert_eq!(lab.lost_writes(&leader, "upgrade17_load", &writes)?, Vec::<i64>::new());
    let gis = |h: &str, sql: &str| -> Result<String> {
        let exec = [
            "exec",
            "-u",
            "postgres",
            "patroni",
            "psql",
            "-h",
            "/var/run/postgresql",
            "-d",
            "gisdb",
            "-XAtqc",
            sql,
        ];
        lab.docker(h, &exec)
    };
    for (h, _) in lab.hosts() {
        let deadline = Instant::now() + Duration::from_secs(90);
        while gis(&h, GIS_FINGERPRINT).ok().as_deref() != Some(fingerprint) {
            assert!(Instant::now() < deadline, "{h}: places differ after the upgrade");
            std::thread::sleep(Duration::from_secs(2));
        }
        assert!(gis(&h, "SHOW server_version_num")?.starts_with("17"), "{h} runs PostgreSQL 17");
    }
    let postgis = gis(&leader, "SELECT extversion FROM pg_extension WHERE extname = 'postgis'")?;
    let library = gis(&leader, "SELECT postgis_lib_version()")?;
    assert!(postgis.starts_with(&library[..3]), "extension {postgis}, library {library}");
    let hosts: toml::Value = toml::from_str(&std::fs::read_to_string(lab.hosts_toml())?)?;
    assert_eq!(hosts["cluster"]["postgres_major"].as_integer(), Some(17));
    assert_eq!(hosts["cluster"]["image"].as_str(), Some(PG17_IMAGE));
    assert_eq!(hosts["backup"]["s3_prefix"].as_str(), Some("lab-pg13-pg17"));
    let kept: Vec<String> = serde_json::from_value(upgraded["kept_volumes"].clone())?;
    assert_eq!(kept.len(), 3, "{kept:?}");
    // The new archive's first backup restores (fetched into a throwaway, pg_dumpall + amcheck).
    let verified = lab.pgctl_ok(&["--output", "json", "verify-backup"])?.json()?;
    assert!(
        verified["recovered"]["indexes_checked"].as_u64().is_some_and(|n| n > 0),
        "{verified}"
    );

    // The later phases of this file run PostgreSQL 15 again.
    lab.pgctl_ok(&["remove", "--i-am-aware", "--volumes", "--yes"])?;
    std::fs::write(lab.hosts_toml(), before_toml)?;
    Ok(())
}
