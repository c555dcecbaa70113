//! The PostgreSQL 13 + PostGIS data volume migrated by pg_upgrade and by dump (part of the
//! migrate test file: it runs in the migrate lab).

use super::*;

const PG13_IMAGE: &str = "pgctl/postgres:13-debian-bullseye";
const PG13_BIN: &str = "/usr/lib/postgresql/13/bin";
const GIS_PASSWORD: &str = "gis-owner-password-13";
/// Rows, names, geometries (as text) and total area of the PostGIS table.
pub const GIS_FINGERPRINT: &str = "SELECT count(*) || ':' || md5(string_agg(id || name || ST_AsText(geom), ',' ORDER BY id)) || ':' || round(sum(ST_Area(geom))::numeric, 3) FROM places";

/// A standalone PostgreSQL 13 + PostGIS (Debian bullseye's packages) on `host`, its data in
/// volume `legacy13-data`, with a PostGIS table (geometries, a GiST index) and its own role;
/// then `migrate from-volume` (pg_upgrade --link) makes the PostgreSQL 15 cluster from it.
pub fn migrate_a_pg13_volume(lab: &Lab, host: &str) -> Result<()> {
    let started = Instant::now();
    let mut build = vec!["image", "build", "--source", "debian", "--suite", "bullseye", "--tag", PG13_IMAGE];
    build.extend(["--without", "timescaledb,walg,consul"]);
    lab.pgctl_ok(&build)?;
    lab.pgctl_ok(&["image", "push", "--image", PG13_IMAGE, "--limit", host])?;
    report(&format!(
        "MEASURED: PostgreSQL 13 image (Debian bullseye) built and delivered to one host: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let name = "legacy13";
    // The standalone server's container: its image, the volume, no network, idle until told.
    let run_legacy = |volume: &str| -> Result<String> {
        let mount = format!("{volume}:/var/lib/postgresql/data");
        lab.docker(
            host,
            &[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                "none",
                "-v",
                &mount,
                "--entrypoint",
                "sleep",
                PG13_IMAGE,
                "infinity",
            ],
        )
    };
    run_legacy("legacy13-data")?;
    let legacy = Legacy {
        lab,
        host: host.into(),
        name: name.into(),
        port: 5432,
        bin: PG13_BIN.into(),
    };
    legacy.exec("root", &["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", PGDATA])?;
    legacy.exec(
        "postgres",
        &[&format!("{PG13_BIN}/initdb"), "-D", PGDATA, "--data-checksums", "-A", "peer"],
    )?;
    let start = [
        &format!("{PG13_BIN}/pg_ctl") as &str,
        "-D",
        PGDATA,
        "-o",
        "-c listen_addresses= -c unix_socket_directories=/tmp",
        "-w",
        "start",
    ];
    legacy.exec("postgres", &start)?;
    legacy.sql("postgres", &format!("CREATE ROLE gis_owner LOGIN PASSWORD '{GIS_PASSWORD}'"))?;
    legacy.sql("postgres", "CREATE DATABASE gisdb OWNER gis_owner")?;
    legacy.sql(
        "gisdb",
        "CREATE EXTENSION postgis; \
         CREATE TABLE places (id int PRIMARY KEY, name text, geom geometry(Polygon, 4326)); \
         INSERT INTO places SELECT g, 'place ' || g, ST_MakeEnvelope(g % 360 - 180, g % 170 - 85, g % 360 - 179.5, g % 170 - 84.5, 4326) FROM generate_series(1, 20000) g; \
         CREATE INDEX places_geom_idx ON places USING gist (geom); ALTER TABLE places OWNER TO gis_owner; ANALYZE places",
    )?;
    report_flow_data("migrate from-volume", &legacy.add_flow_data("gisdb")?);
    let fingerprint = legacy.sql("gisdb", GIS_FINGERPRINT)?;
    let postgis_before = legacy.sql("gisdb", "SELECT extversion FROM pg_extension WHERE extname = 'postgis'")?;
    let migrate_args = [
        "migrate",
        "from-volume",
        "--host",
        host,
        "--volume",
        "legacy13-data",
        "--source-image",
        PG13_IMAGE,
    ];

    // A running source is refused by the pre-flight, and nothing changes.
    let refused = lab.pgctl(&[&["--yes"][..], &migrate_args[..]].concat());
    refused.assert_code(exit::REFUSED, "from-volume while the standalone server runs");
    assert!(refused.stderr.contains("not cleanly shut down"), "{}", refused.stderr);
    assert_eq!(
        legacy.sql("gisdb", "SELECT count(*) FROM places")?,
        "20000",
        "the source still serves"
    );
    lab.assert_no_patroni("the refused migration started nothing");

    // A failure inside pg_upgrade (after its --check passed): a view calling a function that
    // PostgreSQL 15 removed (pg_start_backup) breaks the schema restore. The cluster is not
    // started and the volume is as it was: its own server starts on it with every row.
    legacy.sql("gisdb", "CREATE VIEW backup_probe AS SELECT pg_start_backup('probe')")?;
    legacy.stop()?;
    // The stopped server's container still mounts the volume: refused, nothing changes.
    let held = lab.pgctl(&[&["--yes"][..], &migrate_args[..]].concat());
    held.assert_code(exit::REFUSED, "from-volume while a container mounts the volume");
    assert!(held.stderr.contains(name), "the refusal names the container: {}", held.stderr);
    lab.docker(host, &["rm", "-f", name])?;
    let failed = lab.pgctl(&[&["--yes"][..], &migrate_args[..]].concat());
    failed.assert_code(exit::FAILED, "from-volume with a schema pg_upgrade cannot restore");
    assert!(
        failed.stderr.contains("pg_upgrade") && failed.stderr.contains("starts on its volume again"),
        "the failure says what failed and that the volume is usable: {}",
        failed.stderr
    );
    lab.assert_no_patroni("the failed upgrade started no cluster");
    let left = lab.docker(host, &["volume", "ls", "-q", "--filter", "label=io.pgctl.role=patroni"])?;
    assert_eq!(left, "", "the failed upgrade left the cluster's data volume");
    run_legacy("legacy13-data")?;
    legacy.exec("postgres", &start)?;
    assert_eq!(
        legacy.sql("gisdb", GIS_FINGERPRINT)?,
        fingerprint,
        "the volume after the failed upgrade"
    );
    legacy.sql("gisdb", "DROP VIEW backup_probe")?;
    legacy.stop()?;
    lab.docker(host, &["rm", "-f", name])?;
    // A copy for the migration by dump (the upgrade --link below takes the original's files).
    let copy = [
        "run",
        "--rm",
        "-v",
        "legacy13-data:/from",
        "-v",
        "legacy13-copy:/to",
        "--entrypoint",
        "cp",
        PG13_IMAGE,
        "-a",
        "/from/.",
        "/to/",
    ];
    lab.docker(host, &copy)?;
    let started = Instant::now();
    let migrated = lab
        .pgctl_ok(&[&["--yes", "--output", "json"][..], &migrate_args[..]].concat())?
        .json()?;
    report(&format!(
        "MEASURED: migrate from-volume (PostgreSQL 13 -> 15, pg_upgrade --link, 20,000 PostGIS rows): {:.1} s; phases: {}; extensions: {}",
        started.elapsed().as_secs_f64(),
        migrated["phases"],
        migrated["extensions"]
    ));

    let md5: Vec<String> = serde_json::from_value(migrated["md5_roles"].clone())?;
    check_migrated_gis(lab, host, &fingerprint, &postgis_before, &md5)?;
    // The cluster (PostgreSQL 15 now) goes on to 17 in place.
    super::major::upgrade_to_17(lab, &fingerprint)?;

    // The same volume's copy, by dump and restore into a new cluster (new prefix).
    lab.edit_hosts(&[("s3_prefix = \"lab-pg13\"", "s3_prefix = \"lab-pg13-dump\"")])?;
    let started = Instant::now();
    let dump_args = [
        &migrate_args[..5],
        &["legacy13-copy", "--source-image", PG13_IMAGE, "--method", "dump"],
    ]
    .concat();
    let dumped = lab
        .pgctl_ok(&[&["--yes", "--output", "json"][..], &dump_args[..]].concat())?
        .json()?;
    report(&format!(
        "MEASURED: migrate from-volume --method dump (PostgreSQL 13 -> 15, 20,000 PostGIS rows): {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let md5: Vec<String> = serde_json::from_value(dumped["md5_roles"].clone())?;
    check_migrated_gis(lab, host, &fingerprint, &postgis_before, &md5)?;
    // The dumped volume is as it was: its own server starts on it and has every row.
    run_legacy("legacy13-copy")?;
    legacy.exec("postgres", &start)?;
    assert_eq!(legacy.sql("gisdb", GIS_FINGERPRINT)?, fingerprint, "the dumped volume changed");
    lab.docker(host, &["rm", "-f", name])?;
    for v in ["legacy13-data", "legacy13-copy"] {
        lab.docker(host, &["volume", "rm", v])?;
    }
    Ok(())
}

/// After a migration of the PostgreSQL 13 volume: every member runs PostgreSQL 15 with the same
/// rows and geometries, the GiST index answers spatial queries, PostGIS is the new image's, the
/// source's role logs in over the network, and the cluster's archive starts with a backup.
fn check_migrated_gis(lab: &Lab, host: &str, fingerprint: &str, postgis_before: &str, md5_roles: &[String]) -> Result<()> {
    // Every member: PostgreSQL 15, the same rows and geometries; the index is used.
    let gis = |h: &str, sql: &str| -> Result<String> {
        let socket = ["-h", "/var/run/postgresql", "-U", "postgres", "-d", "gisdb", "-XAtqc", sql];
        let exec = ["exec", "-u", "postgres", "patroni", "psql"];
        lab.docker(h, &[&exec[..], &socket[..]].concat())
    };
    let leader = lab.leader()?;
    for (h, _) in lab.hosts() {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let got = gis(&h, GIS_FINGERPRINT).unwrap_or_else(|e| format!("{e:#}"));
            if got == *fingerprint {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{h}: places differ from the source ({got} vs {fingerprint})"
            );
            std::thread::sleep(Duration::from_secs(2));
        }
        assert!(gis(&h, "SHOW server_version_num")?.starts_with("15"), "{h} runs PostgreSQL 15");
    }
    let plan = gis(
        &leader,
        "SET enable_seqscan = off; EXPLAIN SELECT id FROM places WHERE geom && ST_MakeEnvelope(0, 0, 10, 10, 4326)",
    )?;
    assert!(
        plan.contains("places_geom_idx"),
        "the GiST index is not used after the upgrade:\n{plan}"
    );
    assert_eq!(
        gis(
            &leader,
            "SELECT count(*) FROM places WHERE ST_Intersects(geom, ST_MakeEnvelope(0, 0, 10, 10, 4326))"
        )?,
        legacy_intersects_expected(),
        "a spatial query answers as before"
    );
    // PostGIS is the new image's, in the catalog and in the library.
    let postgis_after = gis(&leader, "SELECT extversion FROM pg_extension WHERE extname = 'postgis'")?;
    let library = gis(&leader, "SELECT postgis_lib_version()")?;
    assert_ne!(postgis_after, postgis_before, "PostGIS was not updated");
    assert!(
        postgis_after.starts_with(&library[..3]),
        "extension {postgis_after}, library {library}"
    );
    // The source's role kept its password, hashed with MD5 (PostgreSQL 13's default): the
    // cluster accepts SCRAM only, so pgctl names it, and it logs in once the password is set
    // again (stored as SCRAM).
    let login = || {
        lab.docker(
            host,
            &[
                "exec",
                "-e",
                &format!("PGPASSWORD={GIS_PASSWORD}"),
                "patroni",
                "psql",
                "-h",
                &lab.address(&leader),
                "-U",
                "gis_owner",
                "-d",
                "gisdb",
                "-XAtqc",
                "SELECT count(*) FROM places",
            ],
        )
    };
    assert_eq!(md5_roles, ["gis_owner"], "the MD5 role is reported");
    assert!(login().is_err(), "an MD5 hash logged in to a SCRAM-only cluster");
    gis(&leader, &format!("ALTER ROLE gis_owner PASSWORD '{GIS_PASSWORD}'"))?;
    assert_eq!(login()?, "20000");
    // The cluster's own archive starts with a full backup of the upgraded cluster.
    let listed = lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?;
    assert!(
        listed["backups"].as_array().is_some_and(|b| !b.is_empty()),
        "no backup after the upgrade: {listed}"
    );
    lab.archive_check(&leader)?;
    Ok(())
}

/// Polygons of `places` meeting the envelope (0,0)-(10,10): computed from the generator's
/// formula, so the count does not come from either server.
fn legacy_intersects_expected() -> String {
    let count = (1..=20000)
        .filter(|g: &i32| {
            let (x0, y0) = ((g % 360 - 180) as f64, (g % 170 - 85) as f64);
            let (x1, y1) = (x0 + 0.5, y0 + 0.5);
            x0 <= 10.0 && x1 >= 0.0 && y0 <= 10.0 && y1 >= 0.0
        })
        .count();
    count.to_string()
}
