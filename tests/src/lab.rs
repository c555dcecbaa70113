//! The lab of simulated hosts a test file runs on (`pgctl lab up`), and what the tests do on
//! it: pgctl with its hosts.toml, docker and SQL on its hosts, its S3 server, writes under load.

use super::*;

/// A lab of simulated hosts for one test file: brought up with the database image delivered,
/// taken down (everything it made) when dropped.
pub struct Lab {
    pub name: String,
    pub work: PathBuf,
    pub dir: PathBuf,
}

impl Lab {
    /// A lab on etcd + pgBackRest, its image built and delivered. (The scenarios written for
    /// that stack; moving them to the default stack is issue 11's next step.)
    pub fn up(name: &str, subnet: &str) -> Result<Lab> {
        Self::up_with(name, subnet, &["--dcs", "etcd", "--backup-engine", "pgbackrest"])
    }

    /// A lab of the default stack `pgctl lab up` chooses (Consul + WAL-G and one application
    /// host when their binaries are in [`artifacts_dir`]), its image built and delivered.
    pub fn up_default(name: &str, subnet: &str) -> Result<Lab> {
        Self::up_with(name, subnet, &[])
    }

    /// A lab made with extra `pgctl lab up` arguments (`--dcs etcd`, ...).
    pub fn up_with(name: &str, subnet: &str, lab_args: &[&str]) -> Result<Lab> {
        let work = workdir(name);
        let dir = work.join("lab");
        let lab = Lab {
            name: name.into(),
            work,
            dir,
        };
        let d = lab.dir.to_str().unwrap().to_string();
        let up = ["lab", "up", "--name", name, "--dir", &d, "--subnet", subnet];
        pgctl_ok(&lab.work, &[&up[..], lab_args].concat())?;
        let hosts = lab.hosts_arg();
        let build = build_args(&lab.hosts_toml())?;
        let build: Vec<&str> = build.iter().map(String::as_str).collect();
        pgctl_ok(&lab.work, &[&build[..], &["--hosts", &hosts]].concat())?;
        pgctl_ok(&lab.work, &["image", "push", "--hosts", &lab.hosts_arg()])?;
        Ok(lab)
    }

    pub fn hosts_toml(&self) -> PathBuf {
        self.dir.join("hosts.toml")
    }

    pub fn hosts_arg(&self) -> String {
        self.hosts_toml().to_str().unwrap().to_string()
    }

    /// `pgctl` with `--hosts` of this lab appended and environment variables set.
    pub fn pgctl_env(&self, env: &[(&str, &str)], args: &[&str]) -> Run {
        let hosts = self.hosts_arg();
        pgctl_env(&self.work, env, &[args, &["--hosts", &hosts]].concat())
    }

    /// `pgctl` with `--hosts` of this lab appended, reading `input` on stdin.
    pub fn pgctl_stdin(&self, input: &str, args: &[&str]) -> Run {
        let hosts = self.hosts_arg();
        pgctl_stdin(&self.work, input, &[args, &["--hosts", &hosts]].concat())
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

    /// Applies `edits` to the lab's hosts.toml (see [`edited`]: each must match).
    pub fn edit_hosts(&self, edits: &[(&str, &str)]) -> Result<()> {
        let text = std::fs::read_to_string(self.hosts_toml())?;
        std::fs::write(self.hosts_toml(), edited(&text, edits)?)?;
        Ok(())
    }

    /// (name, address) of every database host (role patroni); never empty.
    pub fn hosts(&self) -> Vec<(String, String)> {
        hosts_with(&self.hosts_toml(), |roles| roles.contains(&"patroni")).unwrap()
    }

    /// A Patroni host other than `host` (a replica, when `host` leads).
    pub fn host_other_than(&self, host: &str) -> Result<String> {
        self.hosts()
            .into_iter()
            .map(|(h, _)| h)
            .find(|h| h != host)
            .with_context(|| format!("a Patroni host other than {host}"))
    }

    /// (name, address) of every application host (no database); empty on an etcd lab.
    pub fn app_hosts(&self) -> Vec<(String, String)> {
        hosts_with(&self.hosts_toml(), |roles| !roles.contains(&"patroni")).unwrap_or_default()
    }

    /// The DCS and backup engine of the lab's hosts.toml (`consul`/`etcd`, `walg`/`pgbackrest`).
    pub fn stack(&self) -> (String, String) {
        stack_of(&self.hosts_toml()).unwrap()
    }

    /// The name of the DCS container on a database host (`consul` or `etcd`).
    pub fn dcs_container(&self) -> String {
        self.stack().0
    }

    /// Asserts that no host runs (or has) a Patroni container: a refusal started nothing.
    #[track_caller]
    pub fn assert_no_patroni(&self, why: &str) {
        for (h, _) in self.hosts() {
            let ids = self.docker(&h, &["ps", "-aq", "--filter", "name=^patroni$"]).unwrap();
            assert_eq!(ids, "", "{h}: a Patroni container exists: {why}");
        }
    }

    /// Runs `work` while sampling the leader for a basebackup being served (a walsender in state
    /// `backup`, or a row of `pg_stat_progress_basebackup`) every 250 ms: (result, samples taken,
    /// samples that saw one).
    pub fn sampling_basebackups<T>(&self, leader: &str, work: impl FnOnce() -> Result<T>) -> Result<(T, usize, usize)> {
        let query = "SELECT (SELECT count(*) FROM pg_stat_replication WHERE state = 'backup') \
                     + (SELECT count(*) FROM pg_stat_progress_basebackup)";
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let sampler = scope.spawn(|| {
                let (mut taken, mut seen) = (0, 0);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(n) = self.sql(leader, query) {
                        taken += 1;
                        if n != "0" {
                            seen += 1;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                (taken, seen)
            });
            let result = work();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let (taken, seen) = sampler.join().expect("the sampler panicked");
            result.map(|r| (r, taken, seen))
        })
    }

    /// The address of a database or application host.
    pub fn address(&self, host: &str) -> String {
        let hosts = hosts_of(&self.hosts_toml()).unwrap();
        hosts
            .iter()
            .find(|(n, _)| n == host)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("{host} is not in the lab's hosts.toml: {hosts:?}"))
    }

    /// The docker CLI on a lab host's engine.
    pub fn docker(&self, host: &str, args: &[&str]) -> Result<String> {
        docker_on(&self.dir, host, &self.address(host), args)
    }

    /// SQL as postgres in the host's Patroni container (independent of pgctl).
    pub fn sql(&self, host: &str, sql: &str) -> Result<String> {
        self.docker(host, &psql_exec(sql))
    }

    /// The lab host's container on the machine's engine (stopping it is losing the host).
    pub fn container(&self, host: &str) -> String {
        format!("{}-{host}", self.name)
    }

    /// A top-level value from the lab's secrets.toml.
    pub fn secret(&self, key: &str) -> Result<String> {
        let v: toml::Value = toml::from_str(&std::fs::read_to_string(self.dir.join("secrets.toml"))?)?;
        v[key].as_str().map(str::to_string).with_context(|| format!("secrets.toml: {key}"))
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
        let (code, body) = self.s3_bytes(method, path, read_only, body)?;
        Ok((code, String::from_utf8_lossy(&body).to_string()))
    }

    /// The raw bytes of the object `bucket/key`, as S3 stores them (read-only key).
    pub fn s3_object(&self, path: &str) -> Result<Vec<u8>> {
        let (code, body) = self.s3_bytes("GET", path, true, b"")?;
        anyhow::ensure!(code == 200, "GET {path}: {code} {}", String::from_utf8_lossy(&body));
        Ok(body)
    }

    /// `s3_request` with the response body as bytes.
    fn s3_bytes(&self, method: &str, path: &str, read_only: bool, body: &[u8]) -> Result<(u16, Vec<u8>)> {
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
        let response = self.work.join("s3-response-body");
        let out = curl
            .args(["-s", "-w", "%{http_code}", "-X", method, "-o", response.to_str().unwrap()])
            .args(["--resolve", &format!("s3.lab:443:{}", self.s3_address()?)])
            .args(["--cacert", self.dir.join("ca.pem").to_str().unwrap()])
            .args(["--aws-sigv4", "aws:amz:garage:s3", "--user", &format!("{id}:{secret}")])
            .args(["-H", &format!("x-amz-content-sha256: {digest}")])
            .arg(format!("https://s3.lab/{path}"))
            .output()
            .context("running curl")?;
        let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        Ok((code, std::fs::read(&response).unwrap_or_default()))
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

    /// Runs `work` while a client inserts one row at a time into `table` (created here, `id int
    /// PRIMARY KEY`) on whichever member accepts writes: a replica refuses at once and the
    /// client moves on to the next host, as a multi-host connection string does.
    pub fn writing_during<T>(&self, table: &str, work: impl FnOnce() -> Result<T>) -> Result<(T, Writes)> {
        let hosts: Vec<String> = self.hosts().into_iter().map(|(h, _)| h).collect();
        self.sql(
            &self.leader()?,
            &format!("CREATE TABLE {table}(id int PRIMARY KEY, at timestamptz DEFAULT now())"),
        )?;
        let members: Vec<SqlTarget<'_>> = hosts
            .iter()
            .map(|h| Box::new(move |sql: &str| self.sql(h, sql)) as SqlTarget)
            .collect();
        write_during(&members, table, work)
    }

    /// The ids of `writes` missing from `table` on `host`.
    pub fn lost_writes(&self, host: &str, table: &str, writes: &Writes) -> Result<Vec<i64>> {
        let present: std::collections::HashSet<i64> = self
            .sql(host, &format!("SELECT id FROM {table}"))?
            .lines()
            .map(|l| l.parse().context("an id"))
            .collect::<Result<_>>()?;
        Ok(writes.acked.iter().copied().filter(|id| !present.contains(id)).collect())
    }

    /// A free address for a virtual IP on the lab network (.100 of its /24).
    pub fn vip_address(&self) -> String {
        let (_, a) = self.hosts().into_iter().next().expect("a database host");
        format!("{}.100", a.rsplit_once('.').expect("an IPv4 address").0)
    }

    /// Database hosts whose eth0 carries `ip` (looked at in each lab host's network namespace).
    pub fn vip_holders(&self, ip: &str) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (h, _) in self.hosts() {
            let addrs = docker_local(&["exec", &self.container(&h), "ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
            if addrs.split_whitespace().any(|w| w.split('/').next() == Some(ip)) {
                out.push(h);
            }
        }
        Ok(out)
    }

    /// Gives the database hosts role `vip` with `ip`/24 on eth0 and runs `up`; then checks the
    /// address is on the leader's host only, switches over, and follows the address until it is
    /// on the new leader's host only, looking at every host all the while. Returns how long the
    /// move took after the switchover returned; fails if two hosts ever held it at once.
    pub fn vip_follows_the_leader(&self, ip: &str) -> Result<Duration> {
        let text = std::fs::read_to_string(self.hosts_toml())?;
        let mut edits: Vec<(String, String)> = text
            .lines()
            .filter(|l| l.starts_with("roles = [") && l.contains("\"patroni\""))
            .map(|l| (l.to_string(), l.replace("\"patroni\"", "\"patroni\", \"vip\"")))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        edits.push(("# vip = \"10.0.0.100/24\"".into(), format!("vip = \"{ip}/24\"")));
        edits.push(("# vip_interface = \"eth0\"".into(), "vip_interface = \"eth0\"".into()));
        let edits: Vec<(&str, &str)> = edits.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        self.edit_hosts(&edits)?;
        self.pgctl_ok(&["up"])?;
        let leader = self.leader()?;
        let started = Instant::now();
        while self.vip_holders(ip)? != [leader.clone()] {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(30),
                "the VIP is not (only) on the leader {leader}: {:?}",
                self.vip_holders(ip)?
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        self.pgctl_ok(&["switchover", "--yes"])?;
        let switched = Instant::now();
        let next = self.leader()?;
        anyhow::ensure!(next != leader, "the switchover kept {leader} as leader");
        loop {
            let holders = self.vip_holders(ip)?;
            anyhow::ensure!(holders.len() <= 1, "two hosts held the VIP at once: {holders:?}");
            if holders == [next.clone()] {
                return Ok(switched.elapsed());
            }
            anyhow::ensure!(
                switched.elapsed() < Duration::from_secs(30),
                "the VIP did not move to {next}: {holders:?}"
            );
        }
    }

    /// The cluster's leader, as `pgctl status` reports it.
    pub fn leader(&self) -> Result<String> {
        self.pgctl_ok(&["status", "--output", "json"])?.json()?["leader"]
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

    /// WAL-G by hand in the host's Patroni container, with the configuration pgctl wrote.
    pub fn walg(&self, host: &str, args: &[&str]) -> Result<String> {
        let cmd = ["exec", "-u", "postgres", "patroni", "wal-g", "--config", "/etc/pgctl/walg.json"];
        self.docker(host, &[&cmd[..], args].concat())
    }

    /// The backup engine's own word that `host` (the leader) archives WAL with no gap:
    /// `pgbackrest check`; with WAL-G, a switched segment reaches the archive and
    /// `wal-g wal-verify integrity` finds no segment lost since the oldest backup (segments
    /// still uploading at the edge are a warning, not a failure).
    pub fn archive_check(&self, host: &str) -> Result<()> {
        if self.stack().1 != "walg" {
            self.pgbackrest(host, &["check"])?;
            return Ok(());
        }
        let segment = self.sql(host, "SELECT pg_walfile_name(pg_switch_wal())")?;
        self.wait_archived(host, &segment, std::time::Duration::from_secs(120))?;
        let out = self.walg(host, &["wal-verify", "integrity", "--json"])?;
        let json = out.lines().find(|l| l.trim_start().starts_with('{')).unwrap_or_default();
        let report: serde_json::Value = serde_json::from_str(json).with_context(|| format!("wal-g wal-verify output: {out}"))?;
        let status = report["integrity"]["status"].as_str().unwrap_or_default();
        anyhow::ensure!(
            status == "OK" || status == "WARNING",
            "wal-g wal-verify integrity on {host}: {status}: {report}"
        );
        Ok(())
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

impl Lab {
    /// Every container's log on every host, to `<work>/logs/<host>-<container>.log`: what a
    /// failed run leaves to read once its lab is gone.
    fn save_logs(&self) {
        let logs = self.work.join("logs");
        let _ = std::fs::create_dir_all(&logs);
        for (host, address) in hosts_of(&self.hosts_toml()).unwrap_or_default() {
            let names = docker_on(&self.dir, &host, &address, &["ps", "-a", "--format", "{{.Names}}"]).unwrap_or_default();
            for name in names.lines() {
                let out = docker_command(&self.dir, &host, &address)
                    .args(["logs", "--timestamps", name])
                    .output();
                if let Ok(out) = out {
                    let _ = std::fs::write(logs.join(format!("{host}-{name}.log")), [out.stdout, out.stderr].concat());
                }
            }
        }
    }
}

/// The lab goes when its test ends, its logs kept; with PGCTL_KEEP_LABS=1 the lab stays too
/// (for a look at a failure; `pgctl lab down --name NAME --dir DIR` removes it).
impl Drop for Lab {
    fn drop(&mut self) {
        self.save_logs();
        let d = self.dir.to_str().unwrap().to_string();
        if std::env::var_os("PGCTL_KEEP_LABS").is_some_and(|v| v == "1") {
            eprintln!(
                "PGCTL_KEEP_LABS=1: lab {} kept (pgctl lab down --name {} --dir {d})",
                self.name, self.name
            );
            return;
        }
        let _ = pgctl(&self.work, &["lab", "down", "--name", &self.name, "--dir", &d]);
    }
}
