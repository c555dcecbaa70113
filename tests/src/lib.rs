//! Helpers shared by the end-to-end tests: run the `pgctl` binary as a user would, and check
//! results independently (the docker CLI against the lab's engines).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether end-to-end tests run (`ansible-free-scripts/test.sh` sets PGCTL_E2E=1). When not,
/// each e2e test reports why it is skipped.
pub fn e2e_enabled(test: &str) -> bool {
    if std::env::var("PGCTL_E2E").as_deref() == Ok("1") {
        return true;
    }
    skipped(
        test,
        "end-to-end tests need root, Docker and the lab; run ansible-free-scripts/test.sh (sets PGCTL_E2E=1)",
    );
    false
}

/// Appends a line to target/e2e/report.txt, which test.sh prints after the run (cargo hides
/// a passing test's output): measurements and skipped tests.
pub fn report(line: &str) {
    use std::io::Write;
    eprintln!("{line}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("report.txt")) {
        let _ = writeln!(f, "{line}");
    }
}

/// Reports a test as skipped, with the reason.
pub fn skipped(test: &str, why: &str) {
    report(&format!("SKIPPED {test}: {why}"));
}

/// The pgctl binary under test.
pub fn pgctl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("PGCTL_BIN") {
        return p.into();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/pgctl")
}

/// Result of one pgctl run.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("stdout is not JSON:\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

fn finish(what: &str, out: Output) -> Run {
    let run = Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("$ {what}\n{}{}", indent(&run.stdout), indent(&run.stderr));
    run
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

/// Runs `pgctl ARGS` in `dir`; returns its outcome whatever the exit code.
pub fn pgctl(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(pgctl_bin())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running pgctl");
    finish(&format!("pgctl {}", args.join(" ")), out)
}

/// Runs `pgctl ARGS` and fails the test unless it succeeds.
pub fn pgctl_ok(dir: &Path, args: &[&str]) -> Result<Run> {
    let run = pgctl(dir, args);
    if !run.ok {
        bail!("pgctl {} failed:\n{}", args.join(" "), run.stderr);
    }
    Ok(run)
}

/// The docker CLI pointed at a lab host's engine with the lab's client certificate.
pub fn docker_on(lab_dir: &Path, host: &str, address: &str, args: &[&str]) -> Result<String> {
    let certs = lab_dir.join("certs").join(host);
    let out = Command::new("docker")
        .arg("--tlsverify")
        .arg("-H")
        .arg(format!("tcp://{address}:2376"))
        .arg("--tlscacert")
        .arg(certs.join("ca.pem"))
        .arg("--tlscert")
        .arg(certs.join("cert.pem"))
        .arg("--tlskey")
        .arg(certs.join("key.pem"))
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("docker {} on {host}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The docker CLI against the local engine.
pub fn docker_local(args: &[&str]) -> Result<String> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `pgctl image build` arguments for the offline Debian image every e2e test uses.
pub const BUILD_DEBIAN: &[&str] = &[
    "image",
    "build",
    "--source",
    "debian",
    "--base",
    "pgctl/debian:bookworm",
    "--without",
    "timescaledb,walg,consul",
];

/// A scratch directory under target/e2e, emptied first.
pub fn workdir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/e2e").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

/// (name, address) of every host in a hosts.toml.
pub fn hosts_of(hosts_toml: &Path) -> Result<Vec<(String, String)>> {
    let v: toml::Value = toml::from_str(&std::fs::read_to_string(hosts_toml)?)?;
    Ok(v["host"]
        .as_array()
        .context("no hosts")?
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or_default().to_string(),
                h["address"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

/// A lab of simulated hosts for one test file: brought up with the database image delivered,
/// taken down (everything it made) when dropped.
pub struct Lab {
    pub name: String,
    pub work: PathBuf,
    pub dir: PathBuf,
}

impl Lab {
    pub fn up(name: &str, subnet: &str) -> Result<Lab> {
        let work = workdir(name);
        let dir = work.join("lab");
        let lab = Lab {
            name: name.into(),
            work,
            dir,
        };
        let d = lab.dir.to_str().unwrap().to_string();
        pgctl_ok(&lab.work, &["lab", "up", "--name", name, "--dir", &d, "--subnet", subnet])?;
        let hosts = lab.hosts_arg();
        pgctl_ok(&lab.work, &[BUILD_DEBIAN, &["--hosts", &hosts]].concat())?;
        pgctl_ok(&lab.work, &["image", "push", "--hosts", &lab.hosts_arg()])?;
        Ok(lab)
    }

    pub fn hosts_toml(&self) -> PathBuf {
        self.dir.join("hosts.toml")
    }

    pub fn hosts_arg(&self) -> String {
        self.hosts_toml().to_str().unwrap().to_string()
    }

    /// Runs pgctl with `--hosts` of this lab appended.
    pub fn pgctl(&self, args: &[&str]) -> Run {
        let mut all: Vec<&str> = args.to_vec();
        let hosts = self.hosts_arg();
        all.extend(["--hosts", &hosts]);
        pgctl(&self.work, &all)
    }

    pub fn pgctl_ok(&self, args: &[&str]) -> Result<Run> {
        let run = self.pgctl(args);
        if !run.ok {
            bail!("pgctl {} failed:\n{}", args.join(" "), run.stderr);
        }
        Ok(run)
    }

    /// (name, address) of every host.
    pub fn hosts(&self) -> Vec<(String, String)> {
        hosts_of(&self.hosts_toml()).unwrap()
    }

    pub fn address(&self, host: &str) -> String {
        self.hosts().into_iter().find(|(n, _)| n == host).map(|(_, a)| a).unwrap()
    }

    /// The docker CLI on a lab host's engine.
    pub fn docker(&self, host: &str, args: &[&str]) -> Result<String> {
        docker_on(&self.dir, host, &self.address(host), args)
    }

    /// SQL as postgres in the host's Patroni container (independent of pgctl).
    pub fn sql(&self, host: &str, sql: &str) -> Result<String> {
        self.docker(
            host,
            &[
                "exec",
                "-u",
                "postgres",
                "-e",
                "PGPASSFILE=/etc/pgctl/pgpass",
                "-e",
                "PGCONNECT_TIMEOUT=3",
                "patroni",
                "psql",
                "-h",
                "/var/run/postgresql",
                "-U",
                "postgres",
                "-XAtqc",
                sql,
            ],
        )
    }

    /// The lab host's container on the machine's engine (stopping it is losing the host).
    pub fn container(&self, host: &str) -> String {
        format!("{}-{host}", self.name)
    }

    /// A value from the lab's secrets.toml `[s3]` table.
    pub fn s3_secret(&self, key: &str) -> Result<String> {
        let v: toml::Value = toml::from_str(&std::fs::read_to_string(self.dir.join("secrets.toml"))?)?;
        v["s3"][key]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("secrets.toml: s3.{key}"))
    }

    /// The lab's S3 server: its container on the machine's engine and its address.
    pub fn s3_container(&self) -> String {
        format!("{}-s3", self.name)
    }

    pub fn s3_address(&self) -> Result<String> {
        let v: toml::Value = toml::from_str(&std::fs::read_to_string(self.hosts_toml())?)?;
        v["backup"]["s3_address"]
            .as_str()
            .map(str::to_string)
            .context("hosts.toml: backup.s3_address")
    }

    /// One signed S3 request (curl's SigV4) from this machine with the read-write or the
    /// read-only key: (HTTP status, body). `path` is `bucket/key`, or `bucket?query` with the
    /// query's values already percent-encoded (SigV4 signs them encoded).
    pub fn s3_request(&self, method: &str, path: &str, read_only: bool, body: &[u8]) -> Result<(u16, String)> {
        let (id, secret) = if read_only {
            (
                self.s3_secret("readonly_access_key_id")?,
                self.s3_secret("readonly_secret_access_key")?,
            )
        } else {
            (self.s3_secret("access_key_id")?, self.s3_secret("secret_access_key")?)
        };
        let body_file = self.work.join("s3-request-body");
        std::fs::write(&body_file, body)?;
        use sha2::Digest;
        let digest = hex(&sha2::Sha256::digest(body));
        let mut curl = Command::new("curl");
        if !body.is_empty() {
            curl.args(["--data-binary", &format!("@{}", body_file.display())]);
        }
        let out = curl
            .args(["-s", "-w", "\n%{http_code}", "-X", method])
            .args(["--resolve", &format!("s3.lab:443:{}", self.s3_address()?)])
            .args(["--cacert", self.dir.join("ca.pem").to_str().unwrap()])
            .args(["--aws-sigv4", "aws:amz:garage:s3", "--user", &format!("{id}:{secret}")])
            .args(["-H", &format!("x-amz-content-sha256: {digest}")])
            .arg(format!("https://s3.lab/{path}"))
            .output()
            .context("running curl")?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        Ok((code.trim().parse().unwrap_or(0), body.to_string()))
    }

    /// Builds the Debian image as `tag` with supplied binaries (e.g. a consul or wal-g that
    /// cannot be had here), leaving out `without`.
    pub fn build_with(&self, binaries: &[(&str, &Path)], without: &str, tag: &str) -> Result<()> {
        let artifacts = self.artifacts(binaries)?;
        let args = ["image", "build", "--source", "debian", "--base", "pgctl/debian:bookworm"];
        let rest = ["--artifacts", artifacts.to_str().unwrap(), "--without", without, "--tag", tag];
        pgctl_ok(&self.work, &[&args[..], &rest[..]].concat())?;
        Ok(())
    }

    /// A directory of supplied binaries with the SHA256SUMS `image build --artifacts` checks.
    fn artifacts(&self, binaries: &[(&str, &Path)]) -> Result<PathBuf> {
        use sha2::Digest;
        let dir = self.work.join("artifacts");
        std::fs::create_dir_all(&dir)?;
        let mut sums = String::new();
        for (name, path) in binaries {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            std::fs::write(dir.join(name), &bytes)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755))?;
            sums.push_str(&format!("{}  {name}\n", hex(&sha2::Sha256::digest(&bytes))));
        }
        std::fs::write(dir.join("SHA256SUMS"), sums)?;
        Ok(dir)
    }

    /// Every object under `prefix` in the lab's bucket, one `key etag size last-modified` line
    /// each (ListObjectsV2, all pages), read with the read-only key.
    pub fn s3_list(&self, prefix: &str) -> Result<Vec<String>> {
        let field = |xml: &str, tag: &str| -> Option<String> {
            let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
            let end = xml[start..].find(&format!("</{tag}>"))? + start;
            Some(xml[start..end].to_string())
        };
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = format!("list-type=2&prefix={}", percent_encode(prefix));
            if let Some(t) = &token {
                query = format!("continuation-token={}&{query}", percent_encode(t));
            }
            let (code, body) = self.s3_request("GET", &format!("pgctl-backups?{query}"), true, b"")?;
            anyhow::ensure!(code == 200, "listing {prefix}: {code} {body}");
            for object in body.split("<Contents>").skip(1) {
                let get = |tag| field(object, tag).unwrap_or_default();
                out.push(format!("{} {} {} {}", get("Key"), get("ETag"), get("Size"), get("LastModified")));
            }
            token = field(&body, "NextContinuationToken");
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    /// The cluster's leader, as `pgctl status` reports it.
    pub fn leader(&self) -> Result<String> {
        self.pgctl_ok(&["status", "--json"])?.json()?["leader"]
            .as_str()
            .map(str::to_string)
            .context("no leader")
    }

    /// pgbench against the host's PostgreSQL as postgres; `detached` leaves it running.
    pub fn pgbench(&self, host: &str, args: &[&str], detached: bool) -> Result<String> {
        let mut cmd = vec!["exec"];
        if detached {
            cmd.push("-d");
        }
        cmd.extend(["-u", "postgres", "-e", "PGPASSFILE=/etc/pgctl/pgpass", "patroni", "pgbench"]);
        cmd.extend(["-h", "/var/run/postgresql", "-U", "postgres"]);
        cmd.extend_from_slice(args);
        cmd.push("postgres");
        self.docker(host, &cmd)
    }

    /// Waits until `host`'s archiver has archived `segment` (or a later one); returns how long.
    pub fn wait_archived(&self, host: &str, segment: &str, timeout: std::time::Duration) -> Result<std::time::Duration> {
        let started = std::time::Instant::now();
        loop {
            let last = self.sql(host, "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")?;
            if last.as_str() >= segment {
                return Ok(started.elapsed());
            }
            if started.elapsed() > timeout {
                bail!(
                    "{host}: {segment} not archived within {}s (last archived: {last})",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
    }

    /// pgBackRest by hand in the host's Patroni container, as the Compose README shows.
    pub fn pgbackrest(&self, host: &str, args: &[&str]) -> Result<String> {
        let mut cmd = vec![
            "exec",
            "-u",
            "postgres",
            "-e",
            "PGPASSFILE=/etc/pgctl/pgpass",
            "patroni",
            "pgbackrest",
        ];
        cmd.extend(["--config=/etc/pgctl/pgbackrest.conf", "--stanza=lab"]);
        cmd.extend_from_slice(args);
        self.docker(host, &cmd)
    }
}

/// RFC 3986 percent-encoding of everything but unreserved characters (as SigV4 signs queries).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An LSN (`16/B374D848`) as a number, to compare WAL positions.
pub fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.trim().split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

impl Drop for Lab {
    fn drop(&mut self) {
        let d = self.dir.to_str().unwrap().to_string();
        let _ = pgctl(&self.work, &["lab", "down", "--name", &self.name, "--dir", &d]);
    }
}
