//! End-to-end: a standalone PostgreSQL (plain `postgres` in a container on a lab host, no
//! Patroni) archives with WAL-G into its own prefix; `pgctl migrate from-backup` makes the
//! cluster from that archive. Checked on data: every member has the source's rows (including
//! those written after its base backup), the source's own role logs in with its own password
//! over the network, the cluster's roles work (replicas stream), the cluster archives and backs
//! up into its own prefix, and the source prefix is byte-identical afterwards.

use anyhow::{Context, Result};
use pgctl_tests::*;
use std::time::{Duration, Instant};

const LAB: &str = "pgctl-e2e-migrate";
const SUBNET: &str = "172.30.86.0/24";
const SOURCE_PREFIX: &str = "legacy";
const APP_PASSWORD: &str = "legacy-app-password-7";
const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The standalone server: container `legacy` on `host`, unix socket in /tmp only.
struct Legacy<'a> {
    lab: &'a Lab,
    host: String,
}

impl Legacy<'_> {
    fn exec(&self, user: &str, cmd: &[&str]) -> Result<String> {
        self.lab.docker(&self.host, &[&["exec", "-u", user, "legacy"][..], cmd].concat())
    }

    fn sql(&self, db: &str, sql: &str) -> Result<String> {
        self.exec(
            "postgres",
            &[
                &format!("{BIN}/psql"),
                "-h",
                "/tmp",
                "-d",
                db,
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        )
    }

    fn walg(&self, args: &[&str]) -> Result<String> {
        self.exec("postgres", &[&["wal-g", "--config", "/tmp/walg.json"][..], args].concat())
    }

    fn write_file(&self, path: &str, contents: &str) -> Result<()> {
        self.exec(
            "root",
            &["sh", "-c", "printf '%s' \"$1\" > \"$2\" && chmod 644 \"$2\"", "sh", contents, path],
        )?;
        Ok(())
    }
}

/// Starts the standalone server with WAL-G archiving into `s3://<bucket>/legacy`.
fn start_legacy<'a>(lab: &'a Lab, host: &str) -> Result<Legacy<'a>> {
    let hosts: toml::Value = toml::from_str(&std::fs::read_to_string(lab.hosts_toml())?)?;
    let backup = &hosts["backup"];
    let field = |k: &str| {
        backup[k]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("hosts.toml backup.{k}"))
    };
    let image = hosts["cluster"]["image"].as_str().context("cluster.image")?.to_string();
    let s3_host = format!("{}:{}", field("s3_endpoint")?.trim_start_matches("https://"), lab.s3_address()?);
    lab.docker(
        host,
        &[
            "run",
            "-d",
            "--name",
            "legacy",
            "--network",
            "host",
            "--add-host",
            &s3_host,
            "-v",
            "legacy-data:/var/lib/postgresql/data",
            "--entrypoint",
            "sleep",
            &image,
            "infinity",
        ],
    )?;
    let legacy = Legacy { lab, host: host.into() };
    let walg = serde_json::json!({
        "WALG_S3_PREFIX": format!("s3://{}/{SOURCE_PREFIX}", field("s3_bucket")?),
        "AWS_ENDPOINT": field("s3_endpoint")?,
        "AWS_REGION": field("s3_region")?,
        "AWS_S3_FORCE_PATH_STYLE": "true",
        "AWS_ACCESS_KEY_ID": lab.s3_secret("access_key_id")?,
        "AWS_SECRET_ACCESS_KEY": lab.s3_secret("secret_access_key")?,
        "WALG_S3_CA_CERT_FILE": "/tmp/s3-ca.pem",
        "WALG_COMPRESSION_METHOD": "lz4",
        "PGDATA": PGDATA,
        "PGHOST": "/tmp",
        "PGUSER": "postgres",
    });
    legacy.write_file("/tmp/walg.json", &walg.to_string())?;
    let ca = std::fs::read_to_string(lab.hosts_toml().with_file_name(field("s3_ca_file")?))?;
    legacy.write_file("/tmp/s3-ca.pem", &ca)?;
    legacy.exec("root", &["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", PGDATA])?;
    legacy.exec(
        "postgres",
        &[&format!("{BIN}/initdb"), "-D", PGDATA, "--data-checksums", "-A", "peer"],
    )?;
    let archive = "archive_command=wal-g --config /tmp/walg.json wal-push %p";
    lab.docker(
        host,
        &[
            "exec",
            "-d",
            "-u",
            "postgres",
            "legacy",
            &format!("{BIN}/postgres"),
            "-D",
            PGDATA,
            "-c",
            "listen_addresses=",
            "-c",
            "unix_socket_directories=/tmp",
            "-c",
            "archive_mode=on",
            "-c",
            archive,
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while legacy.sql("postgres", "SELECT 1").is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the standalone PostgreSQL did not start");
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(legacy)
}

/// SQL as postgres in database appdb of a cluster member.
fn appdb_sql(lab: &Lab, host: &str, sql: &str) -> Result<String> {
    let cmd = [
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
        sql,
    ];
    lab.docker(host, &cmd)
}

#[test]
#[ignore = "needs the lab: run ansible-free-scripts/test.sh (PGCTL_E2E=1)"]
fn migrate_a_standalone_postgres_through_its_walg_backup() -> Result<()> {
    require_e2e("migrate_a_standalone_postgres_through_its_walg_backup");
    let lab = Lab::up_with(LAB, SUBNET, &["--backup-engine", "walg"])?;
    let host = lab.hosts()[0].0.clone();
    let legacy = start_legacy(&lab, &host)?;

    // The source's data: its own role and database, rows before and after its base backup.
    legacy.sql("postgres", &format!("CREATE ROLE app_owner LOGIN PASSWORD '{APP_PASSWORD}'"))?;
    legacy.sql("postgres", "CREATE DATABASE appdb OWNER app_owner")?;
    legacy.sql(
        "appdb",
        "CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g; ALTER TABLE items OWNER TO app_owner",
    )?;
    legacy.walg(&["backup-push", PGDATA])?;
    legacy.sql(
        "appdb",
        "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(5001, 6000) g",
    )?;
    let checksum_sql = "SELECT md5(string_agg(id::text || note, ',' ORDER BY id)) FROM items";
    let checksum = legacy.sql("appdb", checksum_sql)?;
    let segment = legacy.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while legacy.sql("postgres", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")? < segment {
        anyhow::ensure!(Instant::now() < deadline, "the source did not archive {segment}");
        std::thread::sleep(Duration::from_secs(2));
    }
    // Writes stop at the source before the migration (as the help says).
    legacy.exec("postgres", &[&format!("{BIN}/pg_ctl"), "-D", PGDATA, "-m", "fast", "-w", "stop"])?;
    let source_before = lab.s3_list(&format!("{SOURCE_PREFIX}/"))?;
    assert!(!source_before.is_empty());

    // The cluster's own prefix as the source is refused before anything changes.
    let own = lab.pgctl(&["--yes", "migrate", "from-backup", "--prefix", "s3://pgctl-backups/lab"]);
    own.assert_code(exit::REFUSED, "migrate from the cluster's own prefix");

    let started = Instant::now();
    let migrated = lab
        .pgctl_ok(&[
            "--yes",
            "--output",
            "json",
            "migrate",
            "from-backup",
            "--prefix",
            &format!("s3://pgctl-backups/{SOURCE_PREFIX}"),
        ])?
        .json()?;
    report(&format!(
        "MEASURED: migrate from-backup (WAL-G, 6,000 rows): {:.1} s; phases: {}",
        started.elapsed().as_secs_f64(),
        migrated["restore"]["phases"]
    ));

    // Every member has the source's rows, the later ones included.
    let leader = lab.leader()?;
    for (h, _) in lab.hosts() {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let got = appdb_sql(&lab, &h, checksum_sql).unwrap_or_default();
            if got == checksum {
                break;
            }
            assert!(Instant::now() < deadline, "{h}: items differ from the source ({got} vs {checksum})");
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    // The source's role logs in with its own password over the network (the cluster's
    // pg_hba); a wrong password is refused.
    let login = |password: &str| {
        lab.docker(
            &host,
            &[
                "exec",
                "-e",
                &format!("PGPASSWORD={password}"),
                "patroni",
                "psql",
                "-h",
                &lab.address(&leader),
                "-U",
                "app_owner",
                "-d",
                "appdb",
                "-XAtqc",
                "SELECT count(*) FROM items",
            ],
        )
    };
    assert_eq!(login(APP_PASSWORD)?, "6000");
    assert!(login("not-the-password").is_err(), "a wrong password was accepted");

    // The cluster archives and backs up into its own prefix; the source is untouched.
    let listed = lab.pgctl_ok(&["backup", "list", "--output", "json"])?.json()?;
    assert!(
        listed["backups"].as_array().is_some_and(|b| !b.is_empty()),
        "no backup in the cluster's own prefix: {listed}"
    );
    lab.archive_check(&leader)?;
    assert_eq!(
        lab.s3_list(&format!("{SOURCE_PREFIX}/"))?,
        source_before,
        "the source prefix changed"
    );

    // A second run is refused: the cluster runs.
    let again = lab.pgctl(&[
        "--yes",
        "migrate",
        "from-backup",
        "--prefix",
        &format!("s3://pgctl-backups/{SOURCE_PREFIX}"),
    ]);
    again.assert_code(exit::REFUSED, "migrate into a running cluster");
    Ok(())
}
