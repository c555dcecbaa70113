//! A standalone PostgreSQL in a container on a lab host (plain `postgres`, no Patroni): the
//! source of the migration tests. It archives with WAL-G or pgBackRest into its own prefix,
//! or serves TCP for streaming.

use crate::Lab;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
/// The cluster image's major's binaries.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// A standalone server: container `name` on `host`, its unix socket in /tmp (port `port`).
pub struct Legacy<'a> {
    pub lab: &'a Lab,
    pub host: String,
    pub name: String,
    pub port: u16,
    /// Its major's binaries.
    pub bin: String,
}

impl Legacy<'_> {
    pub fn exec(&self, user: &str, cmd: &[&str]) -> Result<String> {
        self.lab
            .docker(&self.host, &[&["exec", "-u", user, self.name.as_str()][..], cmd].concat())
    }

    pub fn sql(&self, db: &str, sql: &str) -> Result<String> {
        let (psql, port) = (format!("{}/psql", self.bin), self.port.to_string());
        let cmd = [
            psql.as_str(),
            "-h",
            "/tmp",
            "-p",
            &port,
            "-d",
            db,
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ];
        self.exec("postgres", &cmd)
    }

    pub fn walg(&self, args: &[&str]) -> Result<String> {
        self.exec("postgres", &[&["wal-g", "--config", "/tmp/walg.json"][..], args].concat())
    }

    pub fn pgbackrest(&self, stanza: &str, args: &[&str]) -> Result<String> {
        let stanza = format!("--stanza={stanza}");
        let base = ["pgbackrest", "--config=/tmp/pgbackrest.conf", stanza.as_str()];
        self.exec("postgres", &[&base[..], args].concat())
    }

    /// A file readable by postgres only.
    pub fn write_file(&self, path: &str, contents: &str) -> Result<()> {
        let script = "umask 077 && printf '%s' \"$1\" > \"$2\" && chown postgres:postgres \"$2\"";
        self.exec("root", &["sh", "-c", script, "sh", contents, path])?;
        Ok(())
    }

    /// With PGCTL_FLOW_SCALE set: pgbench tables of that scale in `db`; returns the database's
    /// size (empty when unset).
    pub fn add_flow_data(&self, db: &str) -> Result<String> {
        let Some(scale) = crate::flow_scale() else {
            return Ok(String::new());
        };
        let (pgbench, port) = (format!("{}/pgbench", self.bin), self.port.to_string());
        self.exec("postgres", &[&pgbench, "-i", "-q", "-s", &scale, "-h", "/tmp", "-p", &port, db])?;
        self.sql(db, "SELECT pg_size_pretty(pg_database_size(current_database()))")
    }

    /// Stops the server cleanly.
    pub fn stop(&self) -> Result<()> {
        let pg_ctl = format!("{}/pg_ctl", self.bin);
        self.exec("postgres", &[&pg_ctl, "-D", PGDATA, "-m", "fast", "-w", "stop"])?;
        Ok(())
    }

    /// Switches WAL and waits until the segment holding everything committed so far is archived.
    pub fn archive_everything(&self) -> Result<()> {
        let segment = self.sql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.sql("postgres", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")? < segment {
            anyhow::ensure!(Instant::now() < deadline, "{}: the source did not archive {segment}", self.name);
            std::thread::sleep(Duration::from_secs(2));
        }
        Ok(())
    }
}

/// How a standalone server is started: archiving into `s3://<bucket>/<prefix>` of the lab's
/// S3 (unix socket only) with WAL-G, or with pgBackRest (stanza, optional cipher pass), or
/// reachable over TCP for streaming (password logins, replication).
pub enum Serving {
    WalG {
        prefix: &'static str,
    },
    PgBackRest {
        prefix: &'static str,
        stanza: &'static str,
        cipher_pass: Option<&'static str>,
    },
    Tcp {
        port: u16,
        superuser_password: &'static str,
    },
}

/// Starts a standalone server in container `name` on `host` (the cluster's image, plain
/// `postgres`, no Patroni). A pgBackRest source has its stanza created.
pub fn start_legacy<'a>(lab: &'a Lab, host: &str, name: &str, serving: Serving) -> Result<Legacy<'a>> {
    let hosts: toml::Value = toml::from_str(&std::fs::read_to_string(lab.hosts_toml())?)?;
    let backup = &hosts["backup"];
    let field = |k: &str| {
        backup[k]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("hosts.toml backup.{k}"))
    };
    let image = hosts["cluster"]["image"].as_str().context("cluster.image")?.to_string();
    let endpoint = field("s3_endpoint")?.trim_start_matches("https://").to_string();
    let (s3_name, s3_port) = endpoint.split_once(':').unwrap_or((endpoint.as_str(), "443"));
    let s3_host = format!("{s3_name}:{}", lab.s3_address()?);
    let volume = format!("{name}-data:/var/lib/postgresql/data");
    let run = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "--add-host",
        &s3_host,
        "-v",
        &volume,
    ];
    lab.docker(host, &[&run[..], &["--entrypoint", "sleep", &image, "infinity"]].concat())?;
    let port = match serving {
        Serving::Tcp { port, .. } => port,
        _ => 5432,
    };
    let legacy = Legacy {
        lab,
        host: host.into(),
        name: name.into(),
        port,
        bin: BIN.into(),
    };
    legacy.exec("root", &["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", PGDATA])?;
    let initdb = format!("{BIN}/initdb");
    legacy.exec("postgres", &[&initdb, "-D", PGDATA, "--data-checksums", "-A", "peer"])?;
    let postgres = format!("{BIN}/postgres");
    let port_setting = format!("port={port}");
    let mut cmd = vec![
        "exec",
        "-d",
        "-u",
        "postgres",
        name,
        &postgres,
        "-D",
        PGDATA,
        "-c",
        "unix_socket_directories=/tmp",
    ];
    let ca = std::fs::read_to_string(lab.hosts_toml().with_file_name(field("s3_ca_file")?))?;
    let archive_command;
    match serving {
        Serving::WalG { prefix } => {
            let walg = serde_json::json!({
                "WALG_S3_PREFIX": format!("s3://{}/{prefix}", field("s3_bucket")?),
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
            legacy.write_file("/tmp/s3-ca.pem", &ca)?;
            cmd.extend(["-c", "listen_addresses=", "-c", "archive_mode=on"]);
            cmd.extend(["-c", "archive_command=wal-g --config /tmp/walg.json wal-push %p"]);
        }
        Serving::PgBackRest {
            prefix,
            stanza,
            cipher_pass,
        } => {
            let mut conf = format!(
                "[global]\nrepo1-type=s3\nrepo1-s3-endpoint={s3_name}\nrepo1-storage-port={s3_port}\nrepo1-s3-bucket={}\n\
                 repo1-s3-region={}\nrepo1-s3-key={}\nrepo1-s3-key-secret={}\nrepo1-s3-uri-style=path\n\
                 repo1-storage-ca-file=/tmp/s3-ca.pem\nrepo1-path=/{prefix}\nstart-fast=y\nlog-level-console=warn\n\
                 log-level-file=off\nlock-path=/tmp/pgbackrest\n",
                field("s3_bucket")?,
                field("s3_region")?,
                lab.s3_secret("access_key_id")?,
                lab.s3_secret("secret_access_key")?,
            );
            if let Some(pass) = cipher_pass {
                conf.push_str(&format!("repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={pass}\n"));
            }
            conf.push_str(&format!("\n[{stanza}]\npg1-path={PGDATA}\npg1-socket-path=/tmp\n"));
            legacy.write_file("/tmp/pgbackrest.conf", &conf)?;
            legacy.write_file("/tmp/s3-ca.pem", &ca)?;
            archive_command = format!("archive_command=pgbackrest --config=/tmp/pgbackrest.conf --stanza={stanza} archive-push %p");
            cmd.extend(["-c", "listen_addresses=", "-c", "archive_mode=on", "-c", &archive_command]);
        }
        Serving::Tcp { .. } => {
            let hba = "host all all 0.0.0.0/0 scram-sha-256\nhost replication all 0.0.0.0/0 scram-sha-256\n";
            legacy.exec("postgres", &["sh", "-c", &format!("printf '{hba}' >> {PGDATA}/pg_hba.conf")])?;
            cmd.extend(["-c", "listen_addresses=*", "-c", &port_setting]);
        }
    }
    lab.docker(host, &cmd)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while legacy.sql("postgres", "SELECT 1").is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the standalone PostgreSQL {name} did not start");
        std::thread::sleep(Duration::from_secs(1));
    }
    match serving {
        Serving::Tcp { superuser_password, .. } => {
            legacy.sql("postgres", &format!("ALTER ROLE postgres PASSWORD '{superuser_password}'"))?;
        }
        Serving::PgBackRest { stanza, .. } => {
            legacy.pgbackrest(stanza, &["stanza-create"])?;
        }
        Serving::WalG { .. } => {}
    }
    Ok(legacy)
}
